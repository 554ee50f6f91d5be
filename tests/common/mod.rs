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

/// The relative rounding error of storing in `ty`: half an ulp at the bottom of a binade,
/// 2^-(p+1) for p stored mantissa bits.
pub fn half_ulp(ty: tessera::ElemType) -> f64 {
    use tessera::ElemType;
    match ty {
        ElemType::BF16 => 2f64.powi(-8),
        ElemType::F16 => 2f64.powi(-11),
        ElemType::F32 => 2f64.powi(-24),
        ElemType::E4M3 => 2f64.powi(-4),
        ElemType::E5M2 => 2f64.powi(-3),
    }
}

/// FlashAttention's acceptance rule: at most twice the error of a naive implementation.
const NAIVE_ERROR_FACTOR: f64 = 2.0;

/// Per-element bound on an attention output computed in `dtype`: twice (FlashAttention's rule)
/// the worst case of a naive 16-bit implementation, which rounds the probabilities before `P V`
/// (each by at most half an ulp, so the output moves by at most `half_ulp * sum_j p_j |v_j|`,
/// `mass`: the reference attention of |V|) and the output itself (`half_ulp * |want|`), plus a
/// small absolute term for what a naive implementation does in f32 as well (ex2, the f32 `Q K`
/// and `P V` accumulations) and f16's subnormal probabilities.
pub fn attention_element_bound(dtype: tessera::ElemType, want: f64, mass: f64) -> f64 {
    const F32_ARITHMETIC: f64 = 1e-4;
    NAIVE_ERROR_FACTOR * half_ulp(dtype) * (want.abs() + mass) + F32_ARITHMETIC
}

/// Per-element bound on a matmul with an f32 accumulator and a fused epilogue, stored in `out`:
/// twice the worst case of a round-to-nearest f32 evaluation (`(steps) 2^-24 magnitude`, with
/// `steps` the K products plus the epilogue's operations, `magnitude` the same expression on
/// absolute values: sum |x w| + |beta c| + |bias| + |residual|), doubled again for the
/// activation's slope (at most 1.13) and ex2.approx (2^-22), plus twice the final rounding to `out`
/// and f16's subnormal spacing (a relative bound does not cover rounding there).
pub fn matmul_element_bound(out: tessera::ElemType, steps: usize, want: f64, magnitude: f64) -> f64 {
    const ACTIVATION_SLACK: f64 = 2.0;
    const EPILOGUE_STEPS: usize = 16;
    const F16_SUBNORMAL_SPACING: f64 = 5.960_464_477_539_063e-8; // 2^-24
    let accumulation = NAIVE_ERROR_FACTOR * ACTIVATION_SLACK * (steps + EPILOGUE_STEPS) as f64 * 2f64.powi(-24) * magnitude;
    NAIVE_ERROR_FACTOR * half_ulp(out) * want.abs() + accumulation + F16_SUBNORMAL_SPACING
}

/// Checks `|got[i] - want[i]| <= bound(i)` for every element (a NaN fails); the error names the
/// first element outside.
pub fn within_bounds(got: &[f32], want: &[f64], bound: impl Fn(usize) -> f64) -> Result<(), String> {
    assert_eq!(got.len(), want.len(), "output and reference lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (err, limit) = ((f64::from(g) - w).abs(), bound(i));
        // Written so that a NaN error or bound fails.
        let inside = err <= limit;
        if !inside {
            return Err(format!("element {i}: got {g}, want {w} (error {err:.3e} > bound {limit:.3e})"));
        }
    }
    Ok(())
}
