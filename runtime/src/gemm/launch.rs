//! The GEMM family's entry points: [`prepare_gemm`] checks a call, takes the tuned tile and picks
//! the kernel (the sm_90a one where the spec routes there and tensor maps can describe X and W,
//! else the mma.sync one); [`gemm_forward`] also runs it; [`run_gemm`] does the same on host
//! tensors.

use tessera_codegen::{ElemType, GemmSpec};

use super::check::check_problem;
use super::family::{GemmArgs, GemmFamily};
use super::problem::{fits_aligned, split_counter_bytes, split_workspace_bytes, GemmBuffers, GemmProblem, GemmStrides, GemmTuneShape};
use crate::common::buffers::{byte_len, decode, encode, poisoned_bytes, zeroed_bytes};
use crate::common::error::{Result, RuntimeError};
use crate::family::{prepare, FamilyLaunch};
use crate::common::launch::{HostOutput, HostUploads};
use crate::compile::compiler::Compiler;
use crate::device::backend::Backend;

/// A checked, compiled and loaded GEMM launch.
pub type GemmLaunch = FamilyLaunch<GemmFamily>;

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
    prepare::<GemmFamily>(backend, compiler, spec, problem, strides, buffers, GemmArgs { alpha, beta })
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

/// What [`run_gemm`] returns: Y `[M, N]` widened to f32, with the kernel that ran.
pub type GemmOutput = HostOutput;

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
    let y_bytes = byte_len("y", p.y_elements(), spec.out)?;
    let yi = upload(&mut memory, poisoned_bytes("y", p.y_elements(), spec.out)?)?;
    // Split-K: counters zeroed, partials poisoned (every one is written before it is read).
    let ws_bytes = split_workspace_bytes(spec, problem, backend.arch());
    let wsi = if ws_bytes > 0 {
        let counters = split_counter_bytes(problem);
        let mut bytes = zeroed_bytes("workspace", counters)?;
        bytes.extend(poisoned_bytes("workspace", (ws_bytes - counters) / ElemType::F32.size_bytes(), ElemType::F32)?);
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
    let mut out = zeroed_bytes("y", y_bytes)?;
    if y_bytes > 0 {
        backend.read(&b[yi], &mut out)?;
    }
    Ok(HostOutput {
        y: decode(&out, spec.out),
        kernel: launch.kernel_name().unwrap_or_default().to_string(),
        note: launch.note().map(str::to_string),
    })
}
