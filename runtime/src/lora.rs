//! The LoRA / bottleneck launcher: argument checks, the kernel's parameter struct, the column-tile
//! grouping, and a host convenience ([`run_lora`]) that uploads `f32` tensors and downloads Y.
//!
//! `Y = act(X W + s (X A_i) B_i + bias) + residual` (LoRA) or `Y = X + s f(X A) B` (bottleneck),
//! see `tessera_codegen::LoraSpec`. A `[K, r]` / `[n, K, r]` and B `[r, N]` / `[n, r, N]` are
//! contiguous and row-major; X, W, residual and Y take row strides in elements, as for GEMM.
//!
//! Adapter ids (per-row specs) are int32 on the device. [`run_lora`] checks every id against the
//! adapter count before anything is launched; on the device-buffer path ([`prepare_lora`]) the
//! ids are not visible to the host, and the kernel treats an id outside `[-1, n_adapters)` as -1
//! (no adapter) rather than read out of bounds.

use tessera_codegen::{AdapterMode, Arch, Layout, LoraSpec};

use crate::attention::{encode, BufferSpan};
use crate::backend::{Backend, DeviceBuffer, LaunchConfig};
use crate::compiler::Compiler;
use crate::error::{Result, RuntimeError};
use crate::gemm::{check_matrices, decode_out, encode_out, poison_out, stored_shape, CHUNK_ELEMS, MAX_DIM};
use crate::launch::{kernel_params, HostUploads, PreparedLaunch};
use crate::lora_hopper::hopper_lora_params;
pub use crate::lora_hopper::{HopperLoraParams, LoraLaunchParams};

const MAX_GRID_Y: usize = 65_535;

/// The shape of one LoRA call. `adapters` is the number of stacked adapters (1 for a
/// single-adapter spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoraProblem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub adapters: usize,
}

impl LoraProblem {
    pub fn new(m: usize, n: usize, k: usize, adapters: usize) -> Self {
        LoraProblem { m, n, k, adapters }
    }
    pub fn a_elements(&self, rank: usize) -> usize {
        self.adapters.saturating_mul(self.k).saturating_mul(rank)
    }
    pub fn b_elements(&self, rank: usize) -> usize {
        self.adapters.saturating_mul(rank).saturating_mul(self.n)
    }
}

/// Row strides (elements) of X, W, residual and Y in their stored layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoraStrides {
    pub x: usize,
    pub w: usize,
    pub residual: usize,
    pub y: usize,
}

impl LoraStrides {
    pub fn contiguous(spec: &LoraSpec, p: &LoraProblem) -> Self {
        LoraStrides {
            x: stored_shape(spec.layout_x, p.m, p.k).1,
            w: stored_shape(spec.layout_w, p.k, p.n).1,
            residual: p.n,
            y: p.n,
        }
    }
}

/// Device buffers of one launch. `w` is absent for the bottleneck, `ids` for single-adapter specs.
#[derive(Clone, Copy, Debug)]
pub struct LoraBuffers<'a> {
    pub x: &'a DeviceBuffer,
    pub w: Option<&'a DeviceBuffer>,
    pub a: &'a DeviceBuffer,
    pub b: &'a DeviceBuffer,
    pub ids: Option<&'a DeviceBuffer>,
    pub bias: Option<&'a DeviceBuffer>,
    pub residual: Option<&'a DeviceBuffer>,
    pub y: &'a DeviceBuffer,
}

impl LoraBuffers<'_> {
    fn all(&self) -> impl Iterator<Item = &DeviceBuffer> {
        [Some(self.x), self.w, Some(self.a), Some(self.b), self.ids, self.bias, self.residual, Some(self.y)]
            .into_iter()
            .flatten()
    }
}

/// The kernel's by-value parameter; mirrors `tessera::LoraParams` in `templates/lora.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraParams {
    pub x: u64,
    pub w: u64,
    pub a: u64,
    pub b: u64,
    pub bias: u64,
    pub residual: u64,
    pub ids: u64,
    pub y: u64,
    pub ldx: i64,
    pub ldw: i64,
    pub ldr: i64,
    pub ldy: i64,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub rank: i32,
    pub n_adapters: i32,
    pub n_group: i32,
    pub scale: f32,
    pub reserved: i32,
}

const PARAMS_BYTES: usize = 8 * 8 + 4 * 8 + 8 * 4;

kernel_params!(LoraParams, PARAMS_BYTES);

/// Why the aligned (16-byte chunk) kernel cannot run this problem, if it cannot.
pub fn unaligned_reason(spec: &LoraSpec, p: &LoraProblem) -> Option<String> {
    let mut rows = vec![(
        if spec.layout_x == Layout::RowMajor { "problem.k" } else { "problem.m" },
        stored_shape(spec.layout_x, p.m, p.k).1,
        "x",
    )];
    if !spec.is_bottleneck() {
        let dim = if spec.layout_w == Layout::RowMajor { "problem.n" } else { "problem.k" };
        rows.push((dim, stored_shape(spec.layout_w, p.k, p.n).1, "w"));
    }
    rows.push(("problem.n", p.n, "b"));
    rows.into_iter().find(|r| r.1 % CHUNK_ELEMS != 0).map(|(dim, len, name)| {
        format!("{dim} = {len} is not a multiple of {CHUNK_ELEMS}: an aligned kernel loads `{name}` rows in 16-byte cp.async chunks (use a spec with aligned: false)")
    })
}

/// Whether the aligned kernel can run a contiguous problem with 16-byte aligned buffers.
pub fn fits_aligned(spec: &LoraSpec, problem: &LoraProblem) -> bool {
    unaligned_reason(&LoraSpec { aligned: true, ..*spec }, problem).is_none()
}

/// The shape part of [`check`]: sizes, adapter count, finite scale, the bottleneck's N == K,
/// alignment, and the spec's own fields. Needs no buffers.
pub fn check_problem(spec: &LoraSpec, p: &LoraProblem, scale: f32) -> Result<()> {
    for (name, v) in [("problem.m", p.m), ("problem.n", p.n), ("problem.k", p.k)] {
        if v > MAX_DIM {
            return Err(RuntimeError::invalid(name, format!("{v} exceeds the kernel's limit of {MAX_DIM}")));
        }
    }
    match spec.adapters {
        AdapterMode::Single if p.adapters != 1 => {
            return Err(RuntimeError::invalid(
                "problem.adapters",
                format!("{} stacked adapters, but a single-adapter spec takes A [K, r] and B [r, N] (use adapters: per_row)", p.adapters),
            ))
        }
        AdapterMode::PerRow if p.adapters == 0 || p.adapters > i32::MAX as usize => {
            return Err(RuntimeError::invalid("problem.adapters", format!("{} is not a usable adapter count", p.adapters)))
        }
        _ => {}
    }
    if spec.is_bottleneck() && p.n != p.k {
        return Err(RuntimeError::invalid(
            "problem.n",
            format!("{} differs from K = {}: the bottleneck adds X to its output", p.n, p.k),
        ));
    }
    if !scale.is_finite() {
        return Err(RuntimeError::invalid("scale", format!("{scale} is not finite")));
    }
    if spec.aligned {
        if let Some(reason) = unaligned_reason(spec, p) {
            let field = reason.split(' ').next().unwrap_or("problem").to_string();
            return Err(RuntimeError::invalid(field, reason));
        }
    }
    spec.validate(Arch::SM80).or_else(|e| match e {
        tessera_codegen::SpecError::SharedMemory { .. } => Ok(()),
        e => Err(e),
    })?;
    Ok(())
}

/// Checks every argument of a launch against the spec and the buffers, without touching a device.
pub fn check(spec: &LoraSpec, p: &LoraProblem, strides: &LoraStrides, buffers: &LoraBuffers<'_>, scale: f32) -> Result<()> {
    check_problem(spec, p, scale)?;
    let e = spec.epilogue;
    let presence = [
        ("w", !spec.is_bottleneck(), buffers.w.is_some(), "the LoRA variant needs W; the bottleneck takes none"),
        ("adapter_ids", spec.adapters == AdapterMode::PerRow, buffers.ids.is_some(), "per-row specs need adapter ids; single-adapter specs take none"),
        ("bias", e.bias, buffers.bias.is_some(), "spec.epilogue.bias decides whether a bias is given"),
        ("residual", e.residual, buffers.residual.is_some(), "spec.epilogue.residual decides whether a residual is given"),
    ];
    for (name, wanted, given, why) in presence {
        if wanted != given {
            let what = if given { "was given" } else { "is missing" };
            return Err(RuntimeError::invalid(name, format!("the buffer {what}: {why}")));
        }
    }
    let elem = spec.dtype.size_bytes();
    let out = spec.out.size_bytes();
    let r = spec.rank as usize;
    let (align, chunked) = if spec.aligned { (16, true) } else { (elem, false) };
    let (x_rows, x_cols) = stored_shape(spec.layout_x, p.m, p.k);
    let (w_rows, w_cols) = stored_shape(spec.layout_w, p.k, p.n);
    let span = |b: Option<&DeviceBuffer>| b.map(BufferSpan::from);
    // (name, rows, cols, stride, span, element bytes, alignment, chunked stride)
    let tensors = [
        ("x", x_rows, x_cols, strides.x, span(Some(buffers.x)), elem, align, chunked),
        ("w", w_rows, w_cols, strides.w, span(buffers.w), elem, align, chunked),
        ("a", p.adapters * p.k, r, r, span(Some(buffers.a)), elem, align, false),
        ("b", p.adapters * r, p.n, p.n, span(Some(buffers.b)), elem, align, false),
        ("adapter_ids", 1, p.m, p.m, span(buffers.ids), 4, 4, false),
        ("bias", 1, p.n, p.n, span(buffers.bias), out, out, false),
        ("residual", p.m, p.n, strides.residual, span(buffers.residual), out, out, false),
        ("y", p.m, p.n, strides.y, span(Some(buffers.y)), out, out, false),
    ];
    check_matrices(tensors.to_vec(), "y")
}

/// Column tiles per CTA. Every CTA computes `X A` for its row tile once per group (about
/// `r / block_n` of one column tile's work), so larger groups cost less low-rank work but give fewer
/// CTAs. The group minimises the time in column-tile units with about one CTA per multiprocessor
/// at a time: `waves(g) x (g + r / block_n)`, where `waves(g)` is the number of rounds the
/// `row tiles x ceil(column tiles / g)` CTAs take; ties go to the smaller group.
pub fn default_n_group(spec: &LoraSpec, p: &LoraProblem, arch: Arch, multiprocessors: u32) -> usize {
    let (_, block_m, block_n) = spec.cta_shape(arch);
    let m_tiles = p.m.div_ceil(block_m as usize).max(1);
    let n_tiles = p.n.div_ceil(block_n as usize).max(1);
    let slots = multiprocessors.max(1) as usize;
    let low_rank = f64::from(spec.padded_rank()) / f64::from(block_n);
    let cost = |g: usize| (m_tiles * n_tiles.div_ceil(g)).div_ceil(slots) as f64 * (g as f64 + low_rank);
    (1..=n_tiles).fold(1, |best, g| if cost(g) < cost(best) { g } else { best })
}

/// The launch shape: `(row tiles, column-tile groups, 1)`. `None` when Y is empty.
pub fn launch_config(spec: &LoraSpec, p: &LoraProblem, arch: Arch, n_group: usize) -> Result<Option<LaunchConfig>> {
    if p.m == 0 || p.n == 0 {
        return Ok(None);
    }
    if n_group == 0 {
        return Err(RuntimeError::invalid("n_group", "must be at least 1"));
    }
    let (threads, block_m, block_n) = spec.cta_shape(arch);
    let gx = p.m.div_ceil(block_m as usize);
    let gy = p.n.div_ceil(block_n as usize).div_ceil(n_group);
    if gy > MAX_GRID_Y {
        return Err(RuntimeError::invalid("problem.n", format!("needs {gy} CTAs in grid y; the limit is {MAX_GRID_Y}")));
    }
    let gx = u32::try_from(gx).map_err(|_| RuntimeError::invalid("problem.m", "too many row tiles"))?;
    Ok(Some(LaunchConfig {
        grid: [gx, gy as u32, 1],
        block: [threads, 1, 1],
        dynamic_shared_bytes: spec.shared_memory_bytes_for(arch),
    }))
}

/// A checked, compiled and loaded LoRA launch.
pub type LoraLaunch = PreparedLaunch<LoraLaunchParams>;

/// Checks the arguments, renders for the backend's architecture, compiles and loads. `n_group`
/// `None` picks [`default_n_group`]. Nothing is launched. On sm_90a a single-adapter spec takes
/// the TMA + wgmma kernel (`tessera_codegen::lora_hopper_route`); when a tensor map cannot
/// describe an operand it runs the mma.sync kernel instead, and the launch's note says why.
#[allow(clippy::too_many_arguments)]
pub fn prepare_lora(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &LoraSpec,
    problem: &LoraProblem,
    strides: &LoraStrides,
    buffers: &LoraBuffers<'_>,
    scale: f32,
    n_group: Option<usize>,
) -> Result<LoraLaunch> {
    for buffer in buffers.all() {
        backend.check_buffer(buffer)?;
    }
    // A spec that leaves its tile to the default takes the tuned one, if the database has it.
    let shape = [problem.m, problem.n, problem.k, problem.adapters];
    let tuned = match crate::tuning::tuned_spec(backend, (*spec).into(), &shape) {
        tessera_codegen::KernelSpec::Lora(s) => s,
        _ => *spec,
    };
    let spec = &tuned;
    check(spec, problem, strides, buffers, scale)?;
    let arch = backend.arch();
    let given_n_group = n_group;
    let n_group = given_n_group.unwrap_or_else(|| default_n_group(spec, problem, arch, backend.multiprocessors()));
    let int = |arg: &str, v: usize| {
        i32::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i32")))
    };
    let long = |arg: &str, v: usize| {
        i64::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i64")))
    };
    let addr = |b: Option<&DeviceBuffer>| b.map_or(0, DeviceBuffer::addr);
    let mut params = LoraParams {
        x: buffers.x.addr(),
        w: addr(buffers.w),
        a: buffers.a.addr(),
        b: buffers.b.addr(),
        bias: addr(buffers.bias),
        residual: addr(buffers.residual),
        ids: addr(buffers.ids),
        y: buffers.y.addr(),
        ldx: long("x.stride", strides.x)?,
        ldw: long("w.stride", strides.w)?,
        ldr: long("residual.stride", strides.residual)?,
        ldy: long("y.stride", strides.y)?,
        m: int("problem.m", problem.m)?,
        n: int("problem.n", problem.n)?,
        k: int("problem.k", problem.k)?,
        rank: spec.rank as i32,
        n_adapters: int("problem.adapters", problem.adapters)?,
        n_group: int("n_group", n_group.min(i32::MAX as usize))?,
        scale,
        reserved: 0,
    };
    let mut spec = *spec;
    let mut note = None;
    if let (Ok(tile), Some(config)) = (spec.hopper_tile(arch), launch_config(&spec, problem, arch, n_group)?) {
        match hopper_lora_params(backend, &spec, tile, problem, strides, params) {
            Ok(hopper) => {
                let source = spec.render(arch)?;
                let params = LoraLaunchParams::Hopper(hopper);
                return PreparedLaunch::new(backend, compiler, &source, Some(config), params, buffers.all());
            }
            Err(reason) => {
                note = Some(crate::launch::sm90a_fallback_note("LoRA", &reason));
                spec = spec.with_tile(spec.default_tile(arch));
                if given_n_group.is_none() {
                    params.n_group = int("n_group", default_n_group(&spec, problem, arch, backend.multiprocessors()))?;
                }
            }
        }
    }
    let config = launch_config(&spec, problem, arch, params.n_group as usize)?;
    let source = spec.render(arch)?;
    let launch = PreparedLaunch::new(backend, compiler, &source, config, LoraLaunchParams::MmaSync(params), buffers.all())?;
    Ok(launch.with_note(note))
}

/// Host tensors of one [`run_lora`] call, contiguous, as f32 (rounded to the spec's types on
/// upload). Shapes as in the module docs; `ids` has one entry per row of X.
#[derive(Clone, Copy, Debug)]
pub struct LoraInputs<'a> {
    pub x: &'a [f32],
    pub w: Option<&'a [f32]>,
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub ids: Option<&'a [i64]>,
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
}

/// What [`run_lora`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraOutput {
    /// Y `[M, N]`, widened to f32.
    pub y: Vec<f32>,
    /// The entry point that ran (empty when nothing was launched).
    pub kernel: String,
    /// Why the launcher chose that kernel, when it fell back from its first choice.
    pub note: Option<String>,
}

/// Runs a LoRA or bottleneck spec on host tensors: checks every length and adapter id, picks the
/// element-wise kernel when the shape's rows are not whole 16-byte chunks, poisons Y with NaN,
/// launches, and returns Y `[M, N]` widened to f32 with the kernel that ran.
pub fn run_lora(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &LoraSpec,
    problem: &LoraProblem,
    inputs: &LoraInputs<'_>,
    scale: f32,
    n_group: Option<usize>,
) -> Result<LoraOutput> {
    let spec = &LoraSpec { aligned: spec.aligned && fits_aligned(spec, problem), ..*spec };
    check_problem(spec, problem, scale)?;
    let p = problem;
    let r = spec.rank as usize;
    let lengths = [
        ("x", Some(inputs.x.len()), p.m * p.k),
        ("w", inputs.w.map(<[f32]>::len), p.k * p.n),
        ("a", Some(inputs.a.len()), p.a_elements(r)),
        ("b", Some(inputs.b.len()), p.b_elements(r)),
        ("adapter_ids", inputs.ids.map(<[i64]>::len), p.m),
        ("bias", inputs.bias.map(<[f32]>::len), p.n),
        ("residual", inputs.residual.map(<[f32]>::len), p.m * p.n),
    ];
    for (name, len, expected) in lengths {
        if let Some(len) = len {
            if len != expected {
                return Err(RuntimeError::invalid(
                    name,
                    format!("{len} elements, but a contiguous tensor of this problem has {expected}"),
                ));
            }
        }
    }
    let ids32 = match inputs.ids {
        Some(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for (row, &id) in ids.iter().enumerate() {
                if id < -1 || id >= p.adapters as i64 {
                    return Err(RuntimeError::invalid(
                        "adapter_ids",
                        format!("row {row} has adapter {id}; valid ids are -1 (none) and 0..{}", p.adapters),
                    ));
                }
                out.push(id as i32);
            }
            Some(out)
        }
        None => None,
    };

    let mut memory = HostUploads::new(backend);
    let upload = |memory: &mut HostUploads<'_>, mut bytes: Vec<u8>| {
        if bytes.is_empty() {
            bytes = vec![0u8; 16];
        }
        memory.upload(&bytes)
    };
    let xi = upload(&mut memory, encode(inputs.x, spec.dtype))?;
    let wi = inputs.w.map(|w| upload(&mut memory, encode(w, spec.dtype))).transpose()?;
    let ai = upload(&mut memory, encode(inputs.a, spec.dtype))?;
    let bi = upload(&mut memory, encode(inputs.b, spec.dtype))?;
    let ii = ids32.map(|ids| upload(&mut memory, ids.iter().flat_map(|v| v.to_le_bytes()).collect())).transpose()?;
    let biasi = inputs.bias.map(|v| upload(&mut memory, encode_out(v, spec.out))).transpose()?;
    let ri = inputs.residual.map(|v| upload(&mut memory, encode_out(v, spec.out))).transpose()?;
    let yi = upload(&mut memory, poison_out(p.m * p.n, spec.out))?;

    let b = &memory.buffers;
    let buffers = LoraBuffers {
        x: &b[xi],
        w: wi.map(|i| &b[i]),
        a: &b[ai],
        b: &b[bi],
        ids: ii.map(|i| &b[i]),
        bias: biasi.map(|i| &b[i]),
        residual: ri.map(|i| &b[i]),
        y: &b[yi],
    };
    let strides = LoraStrides::contiguous(spec, problem);
    let launch = prepare_lora(backend, compiler, spec, problem, &strides, &buffers, scale, n_group)?;
    launch.run(backend)?;
    let mut out = vec![0u8; p.m * p.n * spec.out.size_bytes()];
    if !out.is_empty() {
        backend.read(&b[yi], &mut out)?;
    }
    Ok(LoraOutput {
        y: decode_out(&out, spec.out),
        kernel: launch.kernel_name().unwrap_or_default().to_string(),
        note: launch.note().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{Activation, DType, OutType};

    #[test]
    fn params_have_no_padding() {
        assert_eq!(std::mem::size_of::<LoraParams>(), 128);
    }

    #[test]
    fn problem_checks_name_the_field() {
        let s = LoraSpec::new(DType::F16, OutType::F32, 16);
        let msg = check_problem(&s, &LoraProblem::new(4, 8, 8, 3), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.adapters") && msg.contains("per_row"), "{msg}");
        let msg = check_problem(&s, &LoraProblem::new(4, 8, 12, 1), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.k") && msg.contains("aligned: false"), "{msg}");
        let msg = check_problem(&s, &LoraProblem::new(4, 12, 8, 1), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.n"), "{msg}");
        assert!(check_problem(&s, &LoraProblem::new(4, 8, 8, 1), f32::INFINITY).unwrap_err().to_string().contains("scale"));
        let b = LoraSpec::bottleneck(DType::F16, OutType::F16, 8, Activation::Relu);
        let msg = check_problem(&b, &LoraProblem::new(4, 16, 8, 1), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.n") && msg.contains("K = 8"), "{msg}");
        let bad_rank = LoraSpec { rank: 12, ..s };
        assert!(check_problem(&bad_rank, &LoraProblem::new(4, 8, 8, 1), 1.0).unwrap_err().to_string().contains("rank"));
    }

    #[test]
    fn group_sizes_follow_the_device() {
        let s = LoraSpec::new(DType::BF16, OutType::BF16, 16);
        let p = LoraProblem::new(4096, 4096, 4096, 1);
        // 32 x 32 tiles of 128 x 128 over 132 SMs: groups of 8 column tiles make 128 CTAs, one
        // round (groups of 7 would make 160 CTAs: two rounds of 7 tiles, 14 tile-times for 8).
        assert_eq!(default_n_group(&s, &p, Arch::SM90, 132), 8);
        let cfg = launch_config(&s, &p, Arch::SM90, 8).unwrap().unwrap();
        assert_eq!(cfg.grid, [32, 4, 1]);
        // sm_90a, 128 x 256 tiles: 32 x 16; groups of 4 make 128 CTAs.
        assert_eq!(default_n_group(&s, &p, Arch::SM90A, 132), 4);
        // A few row tiles: the CTAs fit in one round with single column tiles.
        assert_eq!(default_n_group(&s, &LoraProblem::new(256, 4096, 4096, 1), Arch::SM90, 132), 1);
        // Decode: one row tile, every column tile its own CTA.
        assert_eq!(default_n_group(&s, &LoraProblem::new(1, 4096, 4096, 1), Arch::SM90, 132), 1);
        assert!(launch_config(&s, &LoraProblem::new(0, 8, 8, 1), Arch::SM90, 1).unwrap().is_none());
    }
}
