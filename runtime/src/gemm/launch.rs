//! The GEMM family's entry points: [`prepare_gemm`] checks a call, takes the tuned tile and picks
//! the kernel (the sm_90a one where the spec routes there and tensor maps can describe X and W,
//! else the mma.sync one); [`gemm_forward`] also runs it; [`run_gemm`] does the same on host
//! tensors.

use tessera_codegen::{DevicePtrMut, GemmSpec, ElemType};

use super::check::{check, check_problem};
use super::problem::{fits_aligned, split_counter_bytes, split_workspace_bytes, GemmBuffers, GemmProblem, GemmStrides, GemmTuneShape};
use super::sm80::{gemm_params, launch_config};
use super::sm90a::{hopper_gemm_params, GemmLaunchParams};
use crate::common::buffers::{decode, encode, poison};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::{HostUploads, PreparedLaunch};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, LaunchConfig};

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
    let tuned = match crate::tuning::tuned_spec(backend, (*spec).into(), &GemmTuneShape::of(problem)) {
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
    let mut params = gemm_params(problem, strides, &spans, alpha, beta)?;
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
        params.counters = DevicePtrMut::new(ws.addr());
        params.workspace = DevicePtrMut::new(ws.addr() + split_counter_bytes(problem) as u64);
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
                note = Some(crate::common::launch::sm90a_fallback_note("GEMM", &reason));
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
    let spec = &match crate::tuning::tuned_spec(backend, (*spec).into(), &GemmTuneShape::of(problem)) {
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
    let ci = c.map(|c| upload(&mut memory, encode(c, spec.out))).transpose()?;
    let bi = bias.map(|b| upload(&mut memory, encode(b, spec.out))).transpose()?;
    let ri = residual.map(|r| upload(&mut memory, encode(r, spec.out))).transpose()?;
    let y_bytes = p.y_elements() * spec.out.size_bytes();
    let yi = upload(&mut memory, poison(p.y_elements(), spec.out))?;
    // Split-K: counters zeroed, partials poisoned (every one is written before it is read).
    let ws_bytes = split_workspace_bytes(spec, problem, backend.arch());
    let wsi = if ws_bytes > 0 {
        let counters = split_counter_bytes(problem);
        let mut bytes = vec![0u8; counters];
        bytes.extend(poison((ws_bytes - counters) / 4, ElemType::F32));
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
        y: decode(&out, spec.out),
        kernel: launch.kernel_name().unwrap_or_default().to_string(),
        note: launch.note().map(str::to_string),
    })
}
