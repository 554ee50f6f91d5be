//! Kernels the CLI itself declares with the tessera macros (the ones `tessera demo` runs), so the
//! registry `tessera list` prints is never empty and the macros are exercised by the binary.

#![allow(dead_code)]

/// The demo's causal GQA attention.
#[tessera::attention(dtype = bf16, head_dim = 128, heads_q = 16, heads_kv = 4, causal)]
pub struct DemoAttention;

/// A serving-style LoRA projection with per-row adapters.
#[tessera::lora(dtype = bf16, rank = 16, adapters = per_row)]
pub struct DemoLora;

/// GELU (tanh form) rounded to bf16: an elementwise kernel and a GEMM epilogue.
#[tessera::elementwise]
pub fn gelu_bf16(x: f32) -> half::bf16 {
    let u = 0.7978846 * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + u.tanh())) as bf16
}
