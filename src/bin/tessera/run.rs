//! `tessera run attention|gemm|lora|cast|unscale|adamw`: .npy in, f32 .npy out (GEMM and LoRA in
//! `run_gemm.rs`, the mixed-precision training kernels in `run_amp.rs`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tessera::npy::{read_npy, write_npy_f32, NpyArray};
use tessera::runtime::attention::{run_attention, AttentionProblem};
use tessera::runtime::{open_backend, BackendKind, Compiler};
use tessera::{Arch, AttentionSpec, DType, TesseraError};

use crate::flags::{parse_dtype, TileFlags};
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
    WindowMax(RunWindowArgs),
    WindowMin(RunWindowArgs),
    WindowSum(RunWindowArgs),
}

#[derive(Args)]
pub struct RunAttentionArgs {
    /// Kernel element type; inputs are rounded to it (round-to-nearest-even).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: DType,
    #[arg(long)]
    pub causal: bool,
    /// Softmax scale (default 1/sqrt(head_dim)).
    #[arg(long)]
    pub scale: Option<f32>,
    #[arg(long)]
    pub q: PathBuf,
    #[arg(long)]
    pub k: PathBuf,
    #[arg(long)]
    pub v: PathBuf,
    /// Output O as f32 .npy, shape of Q.
    #[arg(long)]
    pub out: PathBuf,
    /// Optional log-sum-exp output, f32 [batch, heads_q, seq_q].
    #[arg(long)]
    pub lse: Option<PathBuf>,
    /// auto (GPU, then simulator), cuda or sim.
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    #[command(flatten)]
    pub tile: TileFlags,
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

fn dims4(name: &str, a: &NpyArray) -> Result<[usize; 4]> {
    match a.shape.as_slice() {
        &[b, s, h, d] => Ok([b, s, h, d]),
        other => Err(TesseraError::input(
            format!("--{name}"),
            format!("expected rank 4 [batch, seq, heads, head_dim], got shape {other:?}"),
        )),
    }
}

/// Derives the problem from the three shapes, rejecting every mismatch before anything runs.
pub fn attention_problem(q: &NpyArray, k: &NpyArray, v: &NpyArray) -> Result<AttentionProblem> {
    let [bq, sq, hq, dq] = dims4("q", q)?;
    let [bk, sk, hk, dk] = dims4("k", k)?;
    let vd = dims4("v", v)?;
    if vd != [bk, sk, hk, dk] {
        return Err(TesseraError::input("--v", format!("shape {:?} must equal K's shape {:?}", v.shape, k.shape)));
    }
    if bk != bq {
        return Err(TesseraError::input("--k", format!("batch {bk} differs from Q's batch {bq}")));
    }
    if dk != dq {
        return Err(TesseraError::input("--k", format!("head_dim {dk} differs from Q's head_dim {dq}")));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(TesseraError::input("--k", format!("heads_kv {hk} must divide Q's heads {hq}")));
    }
    Ok(AttentionProblem { batch: bq, seq_q: sq, seq_k: sk, heads_q: hq, heads_kv: hk, head_dim: dq })
}

fn run_attention_cmd(args: RunAttentionArgs) -> Result<()> {
    if let Some(scale) = args.scale {
        if !scale.is_finite() || scale <= 0.0 {
            return Err(TesseraError::input("--scale", format!("must be a finite positive number, got {scale}")));
        }
    }
    let q = read_npy(&args.q)?;
    let k = read_npy(&args.k)?;
    let v = read_npy(&args.v)?;
    let problem = attention_problem(&q, &k, &v)?;
    let head_dim = u32::try_from(problem.head_dim).map_err(|_| TesseraError::input("--q", "head_dim too large"))?;
    let heads_q = u32::try_from(problem.heads_q).map_err(|_| TesseraError::input("--q", "too many heads"))?;
    let heads_kv = u32::try_from(problem.heads_kv).map_err(|_| TesseraError::input("--k", "too many heads"))?;

    // Spec fields (head_dim, heads, tile values) are checked before looking for a device, against
    // the most permissive architecture; the device's own limits are checked once it is known.
    let mut spec = AttentionSpec::new(args.dtype, head_dim, args.causal, heads_q, heads_kv);
    spec.tile = args.tile.tile(&spec, Arch::SM90);
    spec.validate(Arch::SM90)?;
    let backend = open_backend(args.backend)?;
    let arch = backend.arch();
    spec.tile = args.tile.tile(&spec, arch);
    spec.validate(arch)?;

    let compiler = Compiler::with_default_cache()?;
    let result = run_attention(backend.as_ref(), &compiler, &spec, &problem, &q.data, &k.data, &v.data, args.scale, args.lse.is_some())?;
    // Both outputs are complete before either is moved into place.
    write_npy_f32(&args.out, &q.shape, &result.out)?;
    if let (Some(path), Some(lse)) = (&args.lse, &result.lse) {
        write_npy_f32(path, &[problem.batch, problem.heads_q, problem.seq_q], lse)?;
    }
    eprintln!(
        "attention {} on {} ({}): O {:?} -> {}",
        spec.kernel_name(arch),
        backend.device_name(),
        backend.kind(),
        q.shape,
        args.out.display()
    );
    Ok(())
}
