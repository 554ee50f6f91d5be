//! What the simulator test files share: one simulator backend (sm_80, checks on) and one compiler
//! with a disk cache, per test binary.
#![allow(dead_code)]

use std::sync::OnceLock;

use tessera::runtime::simulator::SimOptions;
use tessera::runtime::{Compiler, KernelCache, SimBackend};
use tessera::Arch;

/// The architecture every simulator test renders for.
pub const SIM_ARCH: Arch = Arch::SM80;

/// The simulator with its checks on (bounds, shared-memory races, in-flight cp.async reads):
/// every simulator test is also a sanitizer run.
pub fn backend() -> &'static SimBackend {
    static BACKEND: OnceLock<SimBackend> = OnceLock::new();
    BACKEND.get_or_init(|| SimBackend::with_options(SIM_ARCH, SimOptions { checks: true, ..SimOptions::default() }))
}

/// An sm_90a simulator with its checks on (also TMA / wgmma in-flight operands, async-proxy fences,
/// mbarrier misuse, deadlock), for the Hopper kernels.
pub fn hopper_backend() -> &'static SimBackend {
    static BACKEND: OnceLock<SimBackend> = OnceLock::new();
    BACKEND.get_or_init(|| SimBackend::with_options(Arch::SM90A, SimOptions { checks: true, ..SimOptions::default() }))
}

/// A compiler whose cache (under `CARGO_TARGET_TMPDIR`) is shared by the test binaries, so a
/// kernel is compiled by NVRTC once per build tree.
pub fn compiler() -> &'static Compiler {
    static COMPILER: OnceLock<Compiler> = OnceLock::new();
    COMPILER.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-sim-kernels");
        Compiler::new().with_cache(KernelCache::open(dir).expect("kernel cache folder"))
    })
}

/// The f64 GEMM reference on the kernel's view of the inputs: X and W rounded to the input dtype,
/// C / bias / residual to the output dtype (f32 outputs take them as given).
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference(
    spec: &tessera::codegen::GemmSpec,
    (m, n, k): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    c: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    alpha: f32,
    beta: f32,
) -> Vec<f64> {
    use tessera::runtime::reference;
    let rin = |v: &[f32]| reference::round_to_dtype(v, spec.dtype);
    let rout = |v: Option<&[f32]>| v.map(|v| reference::round_to_dtype(v, spec.out));
    let (c, bias, residual) = (rout(c), rout(bias), rout(residual));
    reference::gemm(
        &rin(x),
        spec.layout_x,
        &rin(w),
        spec.layout_w,
        (m, n, k),
        c.as_deref(),
        bias.as_deref(),
        spec.epilogue.activation,
        residual.as_deref(),
        f64::from(alpha),
        f64::from(beta),
    )
}
