//! `tessera run attention|gemm|lora|cast|unscale|adamw|window-*`: .npy in, f32 .npy out (attention
//! in `run_attention.rs`, GEMM and LoRA in `run_gemm.rs`, the mixed-precision training kernels in
//! `run_amp.rs`).

use clap::Subcommand;

use crate::run_attention::{run_attention_cmd, RunAttentionArgs};
use crate::run_amp::{run_adamw_cmd, run_cast_cmd, run_unscale_cmd, RunAdamWArgs, RunCastArgs, RunUnscaleArgs};
use crate::run_gemm::{run_gemm_cmd, run_lora_cmd, RunGemmArgs, RunLoraArgs};
use crate::run_window::{run_window_cmd, RunWindowArgs};
use crate::Result;

#[derive(Subcommand)]
pub enum RunFamily {
    /// Q [batch, seq_q, heads_q, head_dim], K/V [batch, seq_k, heads_kv, head_dim] -> O like Q.
    Attention(RunAttentionArgs),
    /// Y = act(alpha X W + beta C + bias) + residual; X [M, K], W [K, N] -> Y [M, N].
    Gemm(RunGemmArgs),
    /// Y = act(X W + s (X A_i) B_i + bias) + residual in one launch (or --bottleneck: Y = X + s f(X A) B).
    Lora(RunLoraArgs),
    /// Convert a tensor between f32, f16, bf16, e4m3, e5m2 (optionally scaled, with amax).
    Cast(RunCastArgs),
    /// Unscale a list of gradients in place and report whether any value was inf or NaN.
    Unscale(RunUnscaleArgs),
    /// One fused AdamW step over a list of parameters with f32 master weights.
    Adamw(RunAdamWArgs),
    /// Max over every width-k window; NaN is skipped (fmaxf) unless the whole window is NaN.
    WindowMax(RunWindowArgs),
    /// Min over every width-k window; NaN is skipped (fminf) unless the whole window is NaN.
    WindowMin(RunWindowArgs),
    /// Sum over every width-k window; a NaN in the window (or +inf with -inf) gives NaN.
    WindowSum(RunWindowArgs),
}

pub fn run(family: RunFamily) -> Result<()> {
    match family {
        RunFamily::Attention(args) => run_attention_cmd(args),
        RunFamily::Gemm(args) => run_gemm_cmd(args),
        RunFamily::Lora(args) => run_lora_cmd(args),
        RunFamily::Cast(args) => run_cast_cmd(args),
        RunFamily::Unscale(args) => run_unscale_cmd(args),
        RunFamily::Adamw(args) => run_adamw_cmd(args),
        RunFamily::WindowMax(args) => run_window_cmd(tessera::codegen::WindowOp::Max, args),
        RunFamily::WindowMin(args) => run_window_cmd(tessera::codegen::WindowOp::Min, args),
        RunFamily::WindowSum(args) => run_window_cmd(tessera::codegen::WindowOp::Sum, args),
    }
}
