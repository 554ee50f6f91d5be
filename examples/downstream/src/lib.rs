//! What a downstream crate writes to use Tessera: kernel declarations, checked when this crate
//! compiles, with typed launchers. No build script, no nvcc, nothing compiled ahead of time: each
//! kernel is generated and JIT-compiled (and cached) the first time it runs.

use tessera::half::bf16;

/// Causal grouped-query attention: 4 query heads sharing 2 key/value heads, head_dim 64.
#[tessera::attention(dtype = bf16, head_dim = 64, heads_q = 4, heads_kv = 2, causal)]
pub struct CausalGqa;

/// A multi-adapter LoRA projection (one adapter per row of X, -1 for none), f32 output; a small
/// tile, because the tests run it on the CPU simulator.
#[tessera::lora(dtype = bf16, out = f32, rank = 8, adapters = per_row, tile(block_m = 64, block_n = 64, warps = 4, stages = 2))]
pub struct AdapterProjection;

/// GELU (tanh form), rounded to bf16: usable on its own and as a GEMM epilogue.
#[tessera::elementwise]
pub fn gelu_bf16(x: f32) -> bf16 {
    let u = 0.7978846 * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + u.tanh())) as bf16
}

/// A GEMM whose epilogue is [`gelu_bf16`]: `Y = gelu(X W + bias)` stored as bf16.
#[tessera::gemm(dtype = bf16, out = bf16, bias, epilogue = gelu_bf16, tile(block_m = 32, block_n = 32, block_k = 32, warps = 4, stages = 2))]
pub struct GeluProjection;

/// The maximum of three values: with the signal shifted by -1, 0 and +1 it is the sliding-window
/// maximum of width 3 (see [`sliding_max3`]).
#[tessera::elementwise]
pub fn max3(a: f32, b: f32, c: f32) -> f32 {
    a.max(b).max(c)
}

/// Sliding-window maximum of width 3 over a 1-D signal (the edges see a window of 2), on the
/// device: the three shifted views go to the [`max3`] kernel.
pub fn sliding_max3(
    backend: &dyn tessera::runtime::Backend,
    compiler: &tessera::runtime::Compiler,
    x: &[f32],
) -> Result<Vec<f32>, tessera::TesseraError> {
    let n = x.len();
    let left: Vec<f32> = (0..n).map(|i| x[i.saturating_sub(1)]).collect();
    let right: Vec<f32> = (0..n).map(|i| x[(i + 1).min(n.saturating_sub(1))]).collect();
    max3::run(backend, compiler, &left, x, &right)
}
