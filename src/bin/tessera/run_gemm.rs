//! `tessera run gemm` and `tessera run lora`: .npy in, f32 .npy out.
//!
//! Shapes (C order): X `[M, K]` (`--x-layout col`: `[K, M]`), W `[K, N]` (`--w-layout col`:
//! `[N, K]`), C and residual `[M, N]`, bias `[N]`; LoRA A `[K, r]` or `[n, K, r]`, B `[r, N]` or
//! `[n, r, N]`, adapter ids int32/int64 `[M]` (-1: no adapter). Y is written as f32 `[M, N]`.

use std::path::PathBuf;

use clap::Args;
use tessera::codegen::{Activation, AdapterMode, Epilogue, GemmSpec, Layout, LoraSpec, ElemType};
use tessera::npy::{read_npy, read_npy_indices, NpyArray};
use tessera::outputs::OutputSet;
use tessera::runtime::{run_gemm, run_lora, BackendKind, Compiler, GemmProblem, LoraInputs, LoraProblem};
use tessera::TesseraError;

use crate::backend::open_for_spec;
use crate::flags::{parse_activation, parse_dtype, parse_layout, parse_out_type, GemmTileFlags};
use crate::Result;

/// Flags `run gemm` and `run lora` share.
#[derive(Args)]
pub struct RunMatmulArgs {
    /// Input element type; inputs are rounded to it (round-to-nearest-even).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: ElemType,
    /// Output element type: f16, bf16 or f32 (default: the input type). The .npy is f32 either way.
    #[arg(long, value_parser = parse_out_type)]
    pub out_type: Option<ElemType>,
    /// X, [M, K] (row) or [K, M] (--x-layout col).
    #[arg(long)]
    pub x: PathBuf,
    #[arg(long, default_value = "row", value_parser = parse_layout)]
    pub x_layout: Layout,
    /// W, [K, N] (row) or [N, K] (--w-layout col).
    #[arg(long)]
    pub w: Option<PathBuf>,
    #[arg(long, default_value = "row", value_parser = parse_layout)]
    pub w_layout: Layout,
    /// Bias [N], added before the activation.
    #[arg(long)]
    pub bias: Option<PathBuf>,
    /// none, relu, gelu_tanh, silu.
    #[arg(long, default_value = "none", value_parser = parse_activation)]
    pub activation: Activation,
    /// Residual [M, N], added after the activation.
    #[arg(long)]
    pub residual: Option<PathBuf>,
    /// Output Y as f32 .npy [M, N].
    #[arg(long)]
    pub out: PathBuf,
    /// auto (GPU, then simulator), cuda or sim.
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    #[command(flatten)]
    pub tile: GemmTileFlags,
}

#[derive(Args)]
pub struct RunGemmArgs {
    #[command(flatten)]
    pub common: RunMatmulArgs,
    /// C [M, N], added as beta * C.
    #[arg(long)]
    pub c: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f32,
    /// Scale of --c (default 1). Without --c there is no beta term, so a value here is an error.
    #[arg(long)]
    pub beta: Option<f32>,
}

/// beta when --beta is not given: C is added as it is.
const DEFAULT_BETA: f32 = 1.0;

#[derive(Args)]
pub struct RunLoraArgs {
    #[command(flatten)]
    pub common: RunMatmulArgs,
    /// A, [K, r] or stacked [n, K, r].
    #[arg(long)]
    pub a: PathBuf,
    /// B, [r, N] or stacked [n, r, N].
    #[arg(long)]
    pub b: PathBuf,
    /// Adapter id per row of X, int32 or int64 [M]; -1 = no adapter. Required with stacked A/B.
    #[arg(long)]
    pub adapter_ids: Option<PathBuf>,
    /// LoRA scale s (alpha / r in the LoRA paper's terms).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
    /// The bottleneck adapter Y = X + s f(X A) B with f = this activation (no --w; N = K).
    #[arg(long, value_parser = parse_activation)]
    pub bottleneck: Option<Activation>,
    /// Column tiles per CTA (default: sized to the device).
    #[arg(long)]
    pub n_group: Option<usize>,
}

fn dims2(name: &str, a: &NpyArray, what: &str) -> Result<[usize; 2]> {
    match a.shape.as_slice() {
        &[r, c] => Ok([r, c]),
        other => Err(TesseraError::input(format!("--{name}"), format!("expected rank 2 {what}, got shape {other:?}"))),
    }
}

/// Reads an optional tensor and checks its shape.
fn read_shaped(name: &str, path: &Option<PathBuf>, shape: &[usize]) -> Result<Option<Vec<f32>>> {
    let Some(path) = path else { return Ok(None) };
    let t = read_npy(path)?;
    if t.shape != shape {
        return Err(TesseraError::input(format!("--{name}"), format!("shape {:?} must be {shape:?}", t.shape)));
    }
    Ok(Some(t.data))
}

/// (M, K) of X and (K, N) of W from their stored shapes and layouts.
fn x_dims(x: &NpyArray, layout: Layout) -> Result<(usize, usize)> {
    let [r, c] = dims2("x", x, "[M, K] (row) or [K, M] (col)")?;
    Ok(if layout == Layout::RowMajor { (r, c) } else { (c, r) })
}

fn w_dims(w: &NpyArray, layout: Layout, k: usize) -> Result<usize> {
    let [r, c] = dims2("w", w, "[K, N] (row) or [N, K] (col)")?;
    let (wk, n) = if layout == Layout::RowMajor { (r, c) } else { (c, r) };
    if wk != k {
        return Err(TesseraError::input("--w", format!("K = {wk} (shape {:?}) differs from X's K = {k}", w.shape)));
    }
    Ok(n)
}

pub fn run_gemm_cmd(args: RunGemmArgs) -> Result<()> {
    let c = &args.common;
    let w_path = c.w.as_ref().ok_or_else(|| TesseraError::input("--w", "required for gemm"))?;
    if let (Some(beta), None) = (args.beta, &args.c) {
        return Err(TesseraError::input("--beta", format!("{beta} scales C, but no --c was given")));
    }
    let mut outputs = OutputSet::new();
    let out_slot = outputs.reserve("--out", &c.out)?;
    let x = read_npy(&c.x)?;
    let w = read_npy(w_path)?;
    let (m, k) = x_dims(&x, c.x_layout)?;
    let n = w_dims(&w, c.w_layout, k)?;
    let cc = read_shaped("c", &args.c, &[m, n])?;
    let bias = read_shaped("bias", &c.bias, &[n])?;
    let residual = read_shaped("residual", &c.residual, &[m, n])?;
    let base = GemmSpec {
        layout_x: c.x_layout,
        layout_w: c.w_layout,
        epilogue: Epilogue { user: None, bias: bias.is_some(), activation: c.activation, residual: residual.is_some() },
        ..GemmSpec::new(c.dtype, c.out_type.unwrap_or(c.dtype))
    };
    let (backend, spec) = open_for_spec(c.backend, |arch| {
        let spec = GemmSpec { tile: c.tile.tile(GemmSpec::default_tile(arch)), ..base };
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let compiler = Compiler::with_default_cache()?;
    let arch = backend.arch();
    let problem = GemmProblem::new(m, n, k);
    let beta = if cc.is_some() { args.beta.unwrap_or(DEFAULT_BETA) } else { 0.0 };
    let out = run_gemm(backend.as_ref(), &compiler, &spec, &problem, &x.data, &w.data, cc.as_deref(), bias.as_deref(), residual.as_deref(), args.alpha, beta)?;
    outputs.write_npy_f32(out_slot, &[m, n], &out.y)?;
    outputs.commit()?;
    let kernel = if out.kernel.is_empty() { spec.kernel_name(arch) } else { out.kernel };
    eprintln!("gemm {kernel} on {} ({}): Y [{m}, {n}] -> {}", backend.device_name(), backend.kind(), c.out.display());
    Ok(())
}

pub fn run_lora_cmd(args: RunLoraArgs) -> Result<()> {
    let c = &args.common;
    let mut outputs = OutputSet::new();
    let out_slot = outputs.reserve("--out", &c.out)?;
    let x = read_npy(&c.x)?;
    let (m, k) = x_dims(&x, c.x_layout)?;
    let a = read_npy(&args.a)?;
    let b = read_npy(&args.b)?;
    let (adapters, a_k, rank) = match a.shape.as_slice() {
        &[ak, r] => (None, ak, r),
        &[n, ak, r] => (Some(n), ak, r),
        other => return Err(TesseraError::input("--a", format!("expected [K, r] or [n, K, r], got shape {other:?}"))),
    };
    if a_k != k {
        return Err(TesseraError::input("--a", format!("K = {a_k} (shape {:?}) differs from X's K = {k}", a.shape)));
    }
    let (b_adapters, b_r, n) = match b.shape.as_slice() {
        &[r, n] => (None, r, n),
        &[na, r, n] => (Some(na), r, n),
        other => return Err(TesseraError::input("--b", format!("expected [r, N] or [n, r, N], got shape {other:?}"))),
    };
    if b_adapters != adapters || b_r != rank {
        return Err(TesseraError::input("--b", format!("shape {:?} does not match A's {:?} (same adapters and rank r)", b.shape, a.shape)));
    }
    let w = match (&c.w, args.bottleneck) {
        (Some(_), Some(_)) => return Err(TesseraError::input("--w", "the bottleneck adapter takes no W")),
        (None, None) => return Err(TesseraError::input("--w", "required for LoRA (or pass --bottleneck ACT)")),
        (Some(path), None) => {
            let w = read_npy(path)?;
            let wn = w_dims(&w, c.w_layout, k)?;
            if wn != n {
                return Err(TesseraError::input("--w", format!("N = {wn} differs from B's N = {n}")));
            }
            Some(w.data)
        }
        (None, Some(_)) => None,
    };
    let ids = match &args.adapter_ids {
        Some(path) => {
            let ids = read_npy_indices(path)?;
            if ids.shape != [m] {
                return Err(TesseraError::input("--adapter-ids", format!("shape {:?} must be [M] = [{m}]", ids.shape)));
            }
            Some(ids.data)
        }
        None if adapters.is_some() => {
            return Err(TesseraError::input("--adapter-ids", "required with stacked adapters A [n, K, r]"))
        }
        None => None,
    };
    let bias = read_shaped("bias", &c.bias, &[n])?;
    let residual = read_shaped("residual", &c.residual, &[m, n])?;
    let rank = u32::try_from(rank).map_err(|_| TesseraError::input("--a", "rank too large"))?;
    let out = c.out_type.unwrap_or(c.dtype);
    let mut base = match args.bottleneck {
        Some(f) => LoraSpec::bottleneck(c.dtype, out, rank, f),
        None => LoraSpec {
            layout_w: c.w_layout,
            epilogue: Epilogue { user: None, bias: bias.is_some(), activation: c.activation, residual: residual.is_some() },
            ..LoraSpec::new(c.dtype, out, rank)
        },
    };
    base.layout_x = c.x_layout;
    if ids.is_some() {
        base.adapters = AdapterMode::PerRow;
    }
    let (backend, spec) = open_for_spec(c.backend, |arch| {
        let spec = LoraSpec { tile: c.tile.tile(base.default_tile(arch)), ..base };
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let compiler = Compiler::with_default_cache()?;
    let arch = backend.arch();
    let problem = LoraProblem::new(m, n, k, adapters.unwrap_or(1));
    let inputs = LoraInputs {
        x: &x.data,
        w: w.as_deref(),
        a: &a.data,
        b: &b.data,
        ids: ids.as_deref(),
        bias: bias.as_deref(),
        residual: residual.as_deref(),
    };
    let out = run_lora(backend.as_ref(), &compiler, &spec, &problem, &inputs, args.scale, args.n_group)?;
    outputs.write_npy_f32(out_slot, &[m, n], &out.y)?;
    outputs.commit()?;
    let kernel = if out.kernel.is_empty() { spec.kernel_name(arch) } else { out.kernel };
    eprintln!("lora {kernel} on {} ({}): Y [{m}, {n}] -> {}", backend.device_name(), backend.kind(), c.out.display());
    Ok(())
}
