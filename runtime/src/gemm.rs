//! The GEMM launcher: argument checks, the kernel's parameter struct, the launch, and a host
//! convenience ([`run_gemm`]) that uploads `f32` tensors and downloads the result.
//!
//! `Y[M,N] = act(alpha * X[M,K] @ W[K,N] + beta * C[M,N] + bias[N]) + residual[M,N]`, in that order
//! (see `tessera_codegen::GemmSpec`). X and W are in the spec's 16-bit dtype; C, bias, residual and
//! Y in its output type. Row strides ("leading dimensions") are in elements.
//!
//! Alignment contract: an aligned spec (`GemmSpec::aligned`, the default) moves X and W rows in
//! 16-byte `cp.async` chunks, so every stored row must be whole chunks: K for row-major X and
//! column-major W, M for column-major X, N for row-major W, and the X and W row strides must be
//! multiples of 8 elements, with X and W 16-byte aligned. [`check`] rejects anything else with an
//! error naming the field; [`fits_aligned`] tells whether a problem qualifies, and [`run_gemm`]
//! picks the element-wise kernel (`aligned: false`, any shape) when it does not.
//!
//! On sm_90a, an aligned spec without a user epilogue or an explicit tile runs the TMA + wgmma
//! kernel (`tessera_codegen::gemm_hopper_route`); [`prepare_gemm`] builds its tensor maps, and
//! when a map cannot describe the operands (K = 0, say) runs the mma.sync kernel instead, with the
//! reason in the launch's note and on standard error.

use half::{bf16, f16};
use tessera_codegen::{Arch, GemmSpec, Layout, OutType};

use crate::attention::{encode, BufferSpan, POISON_16, POISON_F32};
use crate::backend::{Backend, DeviceBuffer, LaunchConfig};
use crate::compiler::Compiler;
use crate::error::{Result, RuntimeError};
use crate::gemm_hopper::hopper_gemm_params;
pub use crate::gemm_hopper::{GemmLaunchParams, HopperGemmParams};
use crate::launch::{kernel_params, HostUploads, PreparedLaunch};
pub(crate) use crate::tensor_list::check_matrices;

/// Elements per 16-byte cp.async chunk of a 16-bit tensor.
pub const CHUNK_ELEMS: usize = 8;
/// M, N and K are `int` in the kernel; leave room for rounding up to a whole tile.
pub const MAX_DIM: usize = i32::MAX as usize - 1024;
const MAX_GRID_Y: usize = 65_535;
const MAX_GRID_X: usize = i32::MAX as usize;

/// The shape of one GEMM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmProblem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl GemmProblem {
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmProblem { m, n, k }
    }
    pub fn x_elements(&self) -> usize {
        self.m.saturating_mul(self.k)
    }
    pub fn w_elements(&self) -> usize {
        self.k.saturating_mul(self.n)
    }
    /// Elements of C, residual and Y when contiguous.
    pub fn y_elements(&self) -> usize {
        self.m.saturating_mul(self.n)
    }
}

/// Row strides in elements. For column-major W (`[N, K]` storage) `w` is the stride between its
/// N-rows, i.e. at least K.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmStrides {
    pub x: usize,
    pub w: usize,
    pub c: usize,
    pub residual: usize,
    pub y: usize,
}

impl GemmStrides {
    pub fn contiguous(spec: &GemmSpec, p: &GemmProblem) -> Self {
        let (_, x) = stored_shape(spec.layout_x, p.m, p.k);
        let (_, w) = stored_shape(spec.layout_w, p.k, p.n);
        GemmStrides { x, w, c: p.n, residual: p.n, y: p.n }
    }
}

/// `(rows, row length)` of a logical `[rows, cols]` operand as stored in `layout`.
pub fn stored_shape(layout: Layout, rows: usize, cols: usize) -> (usize, usize) {
    match layout {
        Layout::RowMajor => (rows, cols),
        Layout::ColMajor => (cols, rows),
    }
}

/// Why an aligned (16-byte chunk) kernel cannot run this problem, if it cannot: the first stored
/// row length of X or W that is not a whole number of chunks. Strides and addresses are checked
/// by [`check`].
pub fn unaligned_reason(spec: &GemmSpec, problem: &GemmProblem) -> Option<String> {
    let p = problem;
    let x_row = stored_shape(spec.layout_x, p.m, p.k).1;
    let w_row = stored_shape(spec.layout_w, p.k, p.n).1;
    let x_dim = if spec.layout_x == Layout::RowMajor { "problem.k" } else { "problem.m" };
    let w_dim = if spec.layout_w == Layout::RowMajor { "problem.n" } else { "problem.k" };
    [(x_dim, x_row, "x", spec.layout_x), (w_dim, w_row, "w", spec.layout_w)].into_iter().find_map(
        |(dim, len, name, layout)| {
            (len % CHUNK_ELEMS != 0).then(|| {
                format!("{dim} = {len} is not a multiple of {CHUNK_ELEMS}: an aligned kernel loads {layout} `{name}` rows in 16-byte cp.async chunks (use a spec with aligned: false)")
            })
        },
    )
}

/// Whether the aligned kernel can run a contiguous problem whose buffers are 16-byte aligned.
pub fn fits_aligned(spec: &GemmSpec, problem: &GemmProblem) -> bool {
    unaligned_reason(&GemmSpec { aligned: true, ..*spec }, problem).is_none()
}

impl GemmStrides {
}

/// Device address ranges of a GEMM's tensors, as [`check`] sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmSpans {
    pub x: BufferSpan,
    pub w: BufferSpan,
    pub c: Option<BufferSpan>,
    pub bias: Option<BufferSpan>,
    pub residual: Option<BufferSpan>,
    pub y: BufferSpan,
    /// Split-K partial tiles and tile counters ([`split_workspace_bytes`]).
    pub workspace: Option<BufferSpan>,
}

/// Device buffers of one GEMM launch.
#[derive(Clone, Copy, Debug)]
pub struct GemmBuffers<'a> {
    pub x: &'a DeviceBuffer,
    pub w: &'a DeviceBuffer,
    pub c: Option<&'a DeviceBuffer>,
    pub bias: Option<&'a DeviceBuffer>,
    pub residual: Option<&'a DeviceBuffer>,
    pub y: &'a DeviceBuffer,
    /// Required by split-K tiles: at least [`split_workspace_bytes`], its counter part zeroed
    /// before the first launch (every launch leaves it zeroed).
    pub workspace: Option<&'a DeviceBuffer>,
}

impl GemmBuffers<'_> {
    pub fn spans(&self) -> GemmSpans {
        GemmSpans {
            x: self.x.into(),
            w: self.w.into(),
            c: self.c.map(BufferSpan::from),
            bias: self.bias.map(BufferSpan::from),
            residual: self.residual.map(BufferSpan::from),
            y: self.y.into(),
            workspace: self.workspace.map(BufferSpan::from),
        }
    }

    fn all(&self) -> impl Iterator<Item = &DeviceBuffer> {
        [Some(self.x), Some(self.w), self.c, self.bias, self.residual, Some(self.y), self.workspace].into_iter().flatten()
    }
}

/// Bytes of the split-K workspace a launch of `spec` on `arch` needs, 0 without split-K: first
/// one u32 counter per output tile of the smallest tile (so the layout does not depend on the tile
/// and one workspace serves every split-K tile of a problem), zero before the first launch and
/// left zero by every launch; then `split_k` f32 partial M x N tiles.
pub fn split_workspace_bytes(spec: &GemmSpec, problem: &GemmProblem, arch: Arch) -> usize {
    let split = spec.tile_for(arch).split_k as usize;
    if split <= 1 {
        return 0;
    }
    split_counter_bytes(problem) + split * problem.m * problem.n * 4
}

/// The counters' part of the workspace: one u32 per 32 x 32 tile, rounded to 16 bytes.
fn split_counter_bytes(problem: &GemmProblem) -> usize {
    (problem.m.div_ceil(32) * problem.n.div_ceil(32) * 4).div_ceil(16) * 16
}

/// The kernel's single by-value parameter; mirrors `tessera::GemmParams` in `templates/gemm.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmParams {
    pub x: u64,
    pub w: u64,
    /// 0 when there is no C term.
    pub c: u64,
    pub bias: u64,
    pub residual: u64,
    pub y: u64,
    /// Split-K partials (f32), or 0.
    pub workspace: u64,
    /// Split-K tile counters, or 0.
    pub counters: u64,
    pub ldx: i64,
    pub ldw: i64,
    pub ldc: i64,
    pub ldr: i64,
    pub ldy: i64,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub beta: f32,
    pub reserved: i32,
}

/// 8 pointers, 5 strides, 6 four-byte fields: no padding, which [`GemmParams::as_bytes`] relies on.
const PARAMS_BYTES: usize = 8 * 8 + 5 * 8 + 6 * 4;

impl GemmParams {
    /// Builds the parameters from arguments that passed [`check`].
    pub fn new(problem: &GemmProblem, strides: &GemmStrides, spans: &GemmSpans, alpha: f32, beta: f32) -> Result<Self> {
        let int = |arg: &str, v: usize| {
            i32::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i32")))
        };
        let long = |arg: &str, v: usize| {
            i64::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i64")))
        };
        Ok(GemmParams {
            x: spans.x.addr,
            w: spans.w.addr,
            c: spans.c.map_or(0, |s| s.addr),
            bias: spans.bias.map_or(0, |s| s.addr),
            residual: spans.residual.map_or(0, |s| s.addr),
            y: spans.y.addr,
            workspace: 0,
            counters: 0,
            ldx: long("x.stride", strides.x)?,
            ldw: long("w.stride", strides.w)?,
            ldc: long("c.stride", strides.c)?,
            ldr: long("residual.stride", strides.residual)?,
            ldy: long("y.stride", strides.y)?,
            m: int("problem.m", problem.m)?,
            n: int("problem.n", problem.n)?,
            k: int("problem.k", problem.k)?,
            alpha,
            beta,
            reserved: 0,
        })
    }
}

kernel_params!(GemmParams, PARAMS_BYTES);

/// The shape part of [`check`]: sizes, the kernel's integer and grid limits, the chunk alignment
/// of K and N, and finite alpha / beta. Needs no buffers.
pub fn check_problem(spec: &GemmSpec, problem: &GemmProblem, alpha: f32, beta: f32) -> Result<()> {
    for (name, v) in [("problem.m", problem.m), ("problem.n", problem.n), ("problem.k", problem.k)] {
        if v > MAX_DIM {
            return Err(RuntimeError::invalid(name, format!("{v} exceeds the kernel's limit of {MAX_DIM}")));
        }
    }
    if spec.aligned {
        if let Some(reason) = unaligned_reason(spec, problem) {
            let field = reason.split(' ').next().unwrap_or("problem").to_string();
            return Err(RuntimeError::invalid(field, reason));
        }
    }
    if !alpha.is_finite() {
        return Err(RuntimeError::invalid("alpha", format!("{alpha} is not finite")));
    }
    if !beta.is_finite() {
        return Err(RuntimeError::invalid("beta", format!("{beta} is not finite")));
    }
    spec.validate(Arch::SM80).or_else(|e| match e {
        // Shared-memory limits depend on the device; render() checks those for the real arch.
        tessera_codegen::SpecError::SharedMemory { .. } => Ok(()),
        e => Err(e),
    })?;
    Ok(())
}

/// Checks every argument of a GEMM launch against the spec and the buffers, without touching a
/// device. Each error names the tensor and field.
pub fn check(
    spec: &GemmSpec,
    problem: &GemmProblem,
    strides: &GemmStrides,
    spans: &GemmSpans,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    check_problem(spec, problem, alpha, beta)?;
    let p = problem;
    let e = spec.epilogue;
    if e.bias != spans.bias.is_some() {
        return Err(RuntimeError::invalid(
            "bias",
            if e.bias {
                "spec.epilogue.bias is set but no bias buffer was given"
            } else {
                "a bias buffer was given but spec.epilogue.bias is false"
            },
        ));
    }
    if e.residual != spans.residual.is_some() {
        return Err(RuntimeError::invalid(
            "residual",
            if e.residual {
                "spec.epilogue.residual is set but no residual buffer was given"
            } else {
                "a residual buffer was given but spec.epilogue.residual is false"
            },
        ));
    }
    let elem = spec.dtype.size_bytes();
    let out = spec.out.size_bytes();
    let (x_rows, x_cols) = stored_shape(spec.layout_x, p.m, p.k);
    let (w_rows, w_cols) = stored_shape(spec.layout_w, p.k, p.n);
    let (align, chunked) = if spec.aligned { (16, true) } else { (elem, false) };
    // (name, rows, cols, stride, span, element bytes, alignment, chunked)
    let mut tensors = vec![
        ("x", x_rows, x_cols, strides.x, Some(spans.x), elem, align, chunked),
        ("w", w_rows, w_cols, strides.w, Some(spans.w), elem, align, chunked),
        ("c", p.m, p.n, strides.c, spans.c, out, out, false),
        ("residual", p.m, p.n, strides.residual, spans.residual, out, out, false),
        ("y", p.m, p.n, strides.y, Some(spans.y), out, out, false),
    ];
    tensors.push(("bias", 1, p.n, p.n, spans.bias, out, out, false));
    // Y must not overlap any input: other CTAs may still be reading it.
    check_matrices(tensors, "y")
}


/// The launch shape: `(ceil(M / block_m), ceil(N / block_n), split_k)` for the kernel the spec
/// renders on `arch` (the sm_90a kernel's tile is 128 x 256). `None` when Y is empty.
pub fn launch_config(spec: &GemmSpec, problem: &GemmProblem, arch: Arch) -> Result<Option<LaunchConfig>> {
    if problem.m == 0 || problem.n == 0 {
        return Ok(None);
    }
    let (threads, block_m, block_n) = spec.cta_shape(arch);
    let split_k = spec.tile_for(arch).split_k.max(1);
    let gx = problem.m.div_ceil(block_m as usize);
    let gy = problem.n.div_ceil(block_n as usize);
    if gx > MAX_GRID_X {
        return Err(RuntimeError::invalid("problem.m", format!("needs {gx} CTAs; the grid allows {MAX_GRID_X}")));
    }
    if gy > MAX_GRID_Y {
        return Err(RuntimeError::invalid(
            "problem.n",
            format!("needs {gy} CTAs in grid y; the limit is {MAX_GRID_Y}"),
        ));
    }
    Ok(Some(LaunchConfig {
        grid: [gx as u32, gy as u32, split_k],
        block: [threads, 1, 1],
        dynamic_shared_bytes: spec.shared_memory_bytes_for(arch),
    }))
}

/// A checked, compiled and loaded GEMM launch.
pub type GemmLaunch = PreparedLaunch<GemmLaunchParams>;

/// Checks the arguments, renders for the backend's architecture, compiles and loads. Nothing is
/// launched. On sm_90a the TMA + wgmma kernel is prepared where the spec routes there and tensor
/// maps can describe X and W; otherwise the mma.sync kernel, with the reason for a fallback in the
/// launch's note (and on standard error).
#[allow(clippy::too_many_arguments)]
pub fn prepare_gemm(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &GemmSpec,
    problem: &GemmProblem,
    strides: &GemmStrides,
    buffers: &GemmBuffers<'_>,
    alpha: f32,
    beta: f32,
) -> Result<GemmLaunch> {
    for buffer in buffers.all() {
        backend.check_buffer(buffer)?;
    }
    // A spec that leaves its tile to the default takes the tuned one, if the database has it.
    // A tuned split-K tile needs a workspace the caller did not give: keep the default then.
    let arch = backend.arch();
    let tuned = match crate::tuning::tuned_spec(backend, (*spec).into(), &[problem.m, problem.n, problem.k]) {
        tessera_codegen::KernelSpec::Gemm(s)
            if buffers.workspace.is_some_and(|w| w.bytes() >= split_workspace_bytes(&s, problem, arch)) =>
        {
            s
        }
        tessera_codegen::KernelSpec::Gemm(s) if s.tile_for(arch).split_k <= 1 => s,
        _ => *spec,
    };
    let spec = &tuned;
    let spans = buffers.spans();
    check(spec, problem, strides, &spans, alpha, beta)?;
    let mut params = GemmParams::new(problem, strides, &spans, alpha, beta)?;
    let needed = split_workspace_bytes(spec, problem, arch);
    if needed > 0 {
        let ws = buffers.workspace.ok_or_else(|| {
            RuntimeError::invalid("workspace", format!("tile {} splits K and needs a workspace of {needed} bytes (see split_workspace_bytes)", spec.tile_for(arch)))
        })?;
        if ws.bytes() < needed || ws.addr() % 4 != 0 {
            return Err(RuntimeError::invalid("workspace", format!("{} bytes at {:#x}; the split needs {needed}, 4-byte aligned", ws.bytes(), ws.addr())));
        }
        let (y, y_len) = (spans.y.addr, problem.y_elements() * spec.out.size_bytes());
        if ws.addr() < y + y_len as u64 && y < ws.addr() + needed as u64 {
            return Err(RuntimeError::invalid("workspace", "overlaps `y`"));
        }
        params.counters = ws.addr();
        params.workspace = ws.addr() + split_counter_bytes(problem) as u64;
    }
    let mut spec = *spec;
    let mut note = None;
    if let (Ok(tile), Some(config)) = (spec.hopper_tile(arch), launch_config(&spec, problem, arch)?) {
        match hopper_gemm_params(backend, &spec, tile, problem, strides, params) {
            Ok(hopper) => {
                let source = spec.render(arch)?;
                let params = GemmLaunchParams::Hopper(hopper);
                // Persistent: at most one CTA per SM, each walking its share of the tiles.
                let tiles = config.grid[0] * config.grid[1];
                let config = LaunchConfig { grid: [tiles.min(backend.multiprocessors().max(1)), 1, 1], ..config };
                return PreparedLaunch::new(backend, compiler, &source, Some(config), params, buffers.all());
            }
            Err(reason) => {
                note = Some(crate::launch::sm90a_fallback_note("GEMM", &reason));
                spec = spec.with_tile(GemmSpec::default_tile(arch));
            }
        }
    }
    let config = launch_config(&spec, problem, arch)?;
    let source = spec.render(arch)?;
    let launch = PreparedLaunch::new(backend, compiler, &source, config, GemmLaunchParams::MmaSync(params), buffers.all())?;
    Ok(launch.with_note(note))
}

/// Runs the GEMM on device buffers and waits for it.
#[allow(clippy::too_many_arguments)]
pub fn gemm_forward(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &GemmSpec,
    problem: &GemmProblem,
    strides: &GemmStrides,
    buffers: &GemmBuffers<'_>,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    prepare_gemm(backend, compiler, spec, problem, strides, buffers, alpha, beta)?.run(backend)
}

/// Encodes f32 values in the output type (round to nearest even for 16-bit types).
pub fn encode_out(values: &[f32], out: OutType) -> Vec<u8> {
    match out.as_dtype() {
        Some(dtype) => encode(values, dtype),
        None => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

pub fn decode_out(bytes: &[u8], out: OutType) -> Vec<f32> {
    match out {
        OutType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        OutType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        OutType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    }
}

/// NaN bytes for `elements` outputs of type `out`.
pub fn poison_out(elements: usize, out: OutType) -> Vec<u8> {
    match out {
        OutType::F32 => POISON_F32.to_le_bytes().repeat(elements),
        _ => POISON_16.to_le_bytes().repeat(elements),
    }
}

/// What [`run_gemm`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmOutput {
    /// Y `[M, N]`, widened to f32.
    pub y: Vec<f32>,
    /// The entry point that ran (empty when nothing was launched).
    pub kernel: String,
    /// Why the launcher chose that kernel, when it fell back from its first choice.
    pub note: Option<String>,
}

/// Runs the GEMM on contiguous host tensors: X `[M, K]` (row-major spec) or `[K, M]` (column-major),
/// W `[K, N]` (row-major spec) or `[N, K]` (column-major), C and residual `[M, N]`, bias `[N]`.
/// When the shape has rows that are not whole 16-byte chunks the element-wise kernel
/// (`aligned: false`) runs instead of an aligned spec. X and W are rounded to the spec dtype,
/// C / bias / residual to the output type (round to nearest even); Y is filled with NaN before the
/// launch so unwritten elements show. Returns Y `[M, N]` widened to f32, with the kernel that ran.
/// Device memory is freed on every path.
#[allow(clippy::too_many_arguments)]
pub fn run_gemm(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &GemmSpec,
    problem: &GemmProblem,
    x: &[f32],
    w: &[f32],
    c: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    alpha: f32,
    beta: f32,
) -> Result<GemmOutput> {
    let spec = &GemmSpec { aligned: spec.aligned && fits_aligned(spec, problem), ..*spec };
    // The tile a launch would take from the tuning database, so a tuned split-K tile gets its workspace.
    let spec = &match crate::tuning::tuned_spec(backend, (*spec).into(), &[problem.m, problem.n, problem.k]) {
        tessera_codegen::KernelSpec::Gemm(s) => s,
        _ => *spec,
    };
    check_problem(spec, problem, alpha, beta)?;
    let p = problem;
    let inputs = [
        ("x", Some(x), p.x_elements()),
        ("w", Some(w), p.w_elements()),
        ("c", c, p.y_elements()),
        ("bias", bias, p.n),
        ("residual", residual, p.y_elements()),
    ];
    for (name, data, expected) in inputs {
        if let Some(data) = data {
            if data.len() != expected {
                return Err(RuntimeError::invalid(
                    name,
                    format!("{} elements, but a contiguous tensor of this problem has {expected}", data.len()),
                ));
            }
        }
    }
    let mut memory = HostUploads::new(backend);
    // Zero-size allocations are avoided: an empty tensor still gets one chunk.
    let upload = |memory: &mut HostUploads<'_>, mut bytes: Vec<u8>| {
        if bytes.is_empty() {
            bytes = vec![0u8; 16];
        }
        memory.upload(&bytes)
    };
    let xi = upload(&mut memory, encode(x, spec.dtype))?;
    let wi = upload(&mut memory, encode(w, spec.dtype))?;
    let ci = c.map(|c| upload(&mut memory, encode_out(c, spec.out))).transpose()?;
    let bi = bias.map(|b| upload(&mut memory, encode_out(b, spec.out))).transpose()?;
    let ri = residual.map(|r| upload(&mut memory, encode_out(r, spec.out))).transpose()?;
    let y_bytes = p.y_elements() * spec.out.size_bytes();
    let yi = upload(&mut memory, poison_out(p.y_elements(), spec.out))?;
    // Split-K: counters zeroed, partials poisoned (every one is written before it is read).
    let ws_bytes = split_workspace_bytes(spec, problem, backend.arch());
    let wsi = if ws_bytes > 0 {
        let counters = split_counter_bytes(problem);
        let mut bytes = vec![0u8; counters];
        bytes.extend(poison_out((ws_bytes - counters) / 4, OutType::F32));
        Some(upload(&mut memory, bytes)?)
    } else {
        None
    };

    let b = &memory.buffers;
    let buffers = GemmBuffers {
        x: &b[xi],
        w: &b[wi],
        c: ci.map(|i| &b[i]),
        bias: bi.map(|i| &b[i]),
        residual: ri.map(|i| &b[i]),
        y: &b[yi],
        workspace: wsi.map(|i| &b[i]),
    };
    let strides = GemmStrides::contiguous(spec, problem);
    let launch = prepare_gemm(backend, compiler, spec, problem, &strides, &buffers, alpha, beta)?;
    launch.run(backend)?;
    let mut out = vec![0u8; y_bytes];
    if y_bytes > 0 {
        backend.read(&b[yi], &mut out)?;
    }
    Ok(GemmOutput {
        y: decode_out(&out, spec.out),
        kernel: launch.kernel_name().unwrap_or_default().to_string(),
        note: launch.note().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{DType, Epilogue};

    fn spec() -> GemmSpec {
        GemmSpec::new(DType::F16, OutType::F32)
    }

    fn spans(p: &GemmProblem, s: &GemmSpec) -> GemmSpans {
        let span = |addr: u64, bytes: usize| BufferSpan { addr, bytes };
        GemmSpans {
            x: span(0x10000, p.x_elements() * 2),
            w: span(0x200000, p.w_elements() * 2),
            c: None,
            bias: None,
            residual: None,
            y: span(0x400000, p.y_elements() * s.out.size_bytes()),
            workspace: None,
        }
    }

    fn arg_of(result: Result<()>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn params_have_no_padding() {
        assert_eq!(std::mem::size_of::<GemmParams>(), 128);
    }

    #[test]
    fn contiguous_problems_pass() {
        let s = spec();
        let p = GemmProblem::new(37, 24, 40);
        check(&s, &p, &GemmStrides::contiguous(&s, &p), &spans(&p, &s), 1.0, 0.0).unwrap();
    }

    #[test]
    fn k_and_n_must_be_whole_chunks() {
        let s = spec();
        let p = GemmProblem::new(4, 24, 20);
        let msg = arg_of(check(&s, &p, &GemmStrides::contiguous(&s, &p), &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("problem.k") && msg.contains("multiple of 8"), "{msg}");
        let p = GemmProblem::new(4, 20, 16);
        let msg = arg_of(check(&s, &p, &GemmStrides::contiguous(&s, &p), &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("problem.n"), "{msg}");
        // Column-major W allows any N.
        let col = GemmSpec { layout_w: Layout::ColMajor, ..s };
        check(&col, &p, &GemmStrides::contiguous(&col, &p), &spans(&p, &col), 1.0, 0.0).unwrap();
    }

    #[test]
    fn strides_buffers_and_epilogue_tensors_are_checked() {
        let s = spec();
        let p = GemmProblem::new(8, 16, 16);
        let st = GemmStrides::contiguous(&s, &p);
        let msg = arg_of(check(&s, &p, &GemmStrides { x: 12, ..st }, &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("x.stride"), "{msg}");
        let msg = arg_of(check(&s, &p, &GemmStrides { x: 20, ..st }, &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("x.stride") && msg.contains("multiple of 8"), "{msg}");
        let mut sp = spans(&p, &s);
        sp.w.bytes -= 2;
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains('w'));
        let mut sp = spans(&p, &s);
        sp.x.addr += 8;
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains("aligned"));
        let biased = GemmSpec { epilogue: Epilogue { bias: true, ..Epilogue::NONE }, ..s };
        assert!(arg_of(check(&biased, &p, &st, &spans(&p, &s), 1.0, 0.0)).contains("bias"));
        let mut sp = spans(&p, &s);
        sp.residual = Some(BufferSpan { addr: 0x800000, bytes: 1 << 20 });
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains("residual"));
        let mut sp = spans(&p, &s);
        sp.c = Some(sp.y);
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains("overlaps"));
        assert!(arg_of(check(&s, &p, &st, &spans(&p, &s), f32::NAN, 0.0)).contains("alpha"));
    }

    #[test]
    fn grid_covers_every_output_tile() {
        let s = spec();
        let cfg = launch_config(&s, &GemmProblem::new(129, 257, 8), Arch::SM80).unwrap().unwrap();
        assert_eq!(cfg.grid, [2, 3, 1]);
        assert!(launch_config(&s, &GemmProblem::new(0, 8, 8), Arch::SM80).unwrap().is_none());
    }

    #[test]
    fn poison_is_nan_in_every_output_type() {
        for out in OutType::ALL {
            assert!(decode_out(&poison_out(3, out), out).iter().all(|v| v.is_nan()), "{out}");
        }
    }
}
