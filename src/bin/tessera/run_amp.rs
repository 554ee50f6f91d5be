//! `tessera run cast|unscale|adamw`: the mixed-precision training kernels on .npy files.
//!
//! Inputs are f32 or f16 .npy of any shape, rounded to the kernel's element type first (round to
//! nearest even; fp8 saturating). Outputs are f32 .npy of the same shape holding the exact values
//! the kernel stored. Lists are comma-separated and must have equal lengths.

use std::path::{Path, PathBuf};

use clap::Args;
use tessera::codegen::{AdamWSpec, CastSpec, ElemType, ElementwiseTile, UnscaleSpec};
use tessera::npy::{read_npy, NpyArray};
use tessera::outputs::{OutputSet, Slot};
use tessera::runtime::amp::adamw::{run_adamw, GradScaling, HostParam};
use tessera::runtime::amp::cast::run_cast;
use tessera::runtime::common::buffers::{decode, encode};
use tessera::runtime::reference::AdamWHyper;
use tessera::runtime::amp::unscale::run_unscale;
use tessera::runtime::amp::HostTensor;
use tessera::runtime::{open_backend, BackendKind, Compiler};
use tessera::TesseraError;

use crate::Result;

pub fn parse_elem(s: &str) -> std::result::Result<ElemType, String> {
    s.parse::<ElemType>().map_err(|e| e.to_string())
}

/// Elementwise tile overrides; any subset, the rest from the spec's default.
#[derive(Args, Clone, Debug, Default)]
pub struct ElementwiseTileFlags {
    /// Threads per CTA: 128, 256, 512.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Elements per thread: 4, 8, 16, 32.
    #[arg(long)]
    pub elems_per_thread: Option<u32>,
    /// Elements per vector access: 1, 2, 4, 8 (at most 16 bytes).
    #[arg(long)]
    pub vector: Option<u32>,
}

impl ElementwiseTileFlags {
    pub fn tile(&self, default: ElementwiseTile) -> Option<ElementwiseTile> {
        let any = self.threads.is_some() || self.elems_per_thread.is_some() || self.vector.is_some();
        any.then(|| ElementwiseTile {
            threads: self.threads.unwrap_or(default.threads),
            elems_per_thread: self.elems_per_thread.unwrap_or(default.elems_per_thread),
            vector: self.vector.unwrap_or(default.vector),
        })
    }
}

#[derive(Args)]
pub struct RunCastArgs {
    /// Element type the input is rounded to and the kernel reads: f32, f16, bf16, e4m3, e5m2.
    #[arg(long, value_parser = parse_elem)]
    pub from: ElemType,
    /// Element type the kernel writes.
    #[arg(long, value_parser = parse_elem)]
    pub to: ElemType,
    #[arg(long)]
    pub x: PathBuf,
    /// Multiply by this scale before converting (finite, > 0).
    #[arg(long)]
    pub scale: Option<f32>,
    /// Also write max |x| (NaN ignored) as f32 [1].
    #[arg(long)]
    pub amax_out: Option<PathBuf>,
    /// The converted values, as f32, in x's shape.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    #[command(flatten)]
    pub tile: ElementwiseTileFlags,
}

#[derive(Args)]
pub struct RunUnscaleArgs {
    /// Gradient files, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub grads: Vec<PathBuf>,
    /// Element type per gradient (f32, f16, bf16), comma-separated; one value applies to all.
    #[arg(long, value_delimiter = ',', value_parser = parse_elem, default_value = "f32")]
    pub dtypes: Vec<ElemType>,
    /// 1 / loss scale (finite, > 0).
    #[arg(long)]
    pub inv_scale: f32,
    /// Output files, one per gradient.
    #[arg(long, value_delimiter = ',', required = true)]
    pub out: Vec<PathBuf>,
    /// Also write the found-inf flag as f32 [1].
    #[arg(long)]
    pub found_inf_out: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    #[command(flatten)]
    pub tile: ElementwiseTileFlags,
}

#[derive(Args)]
pub struct RunAdamWArgs {
    /// f32 master weights, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub params: Vec<PathBuf>,
    /// Gradients, one per parameter.
    #[arg(long, value_delimiter = ',', required = true)]
    pub grads: Vec<PathBuf>,
    /// First moments (default zeros).
    #[arg(long, value_delimiter = ',')]
    pub exp_avg: Vec<PathBuf>,
    /// Second moments (default zeros).
    #[arg(long, value_delimiter = ',')]
    pub exp_avg_sq: Vec<PathBuf>,
    /// Gradient element type: f32, f16, bf16.
    #[arg(long, value_parser = parse_elem, default_value = "bf16")]
    pub grad_dtype: ElemType,
    /// Model-weight element type written next to the master weights: f16, bf16.
    #[arg(long, value_parser = parse_elem, default_value = "bf16")]
    pub model_dtype: ElemType,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f32,
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f32,
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f32,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// Steps taken before this one.
    #[arg(long, default_value_t = 0)]
    pub step: i32,
    /// Unscale the gradients in the same pass.
    #[arg(long)]
    pub inv_scale: Option<f32>,
    /// Simulate a found-inf flag: the step is skipped and the outputs equal the inputs.
    #[arg(long)]
    pub found_inf: bool,
    /// Writes master{i}.npy, exp_avg{i}.npy, exp_avg_sq{i}.npy and model{i}.npy (f32) here.
    #[arg(long)]
    pub out_dir: PathBuf,
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    #[command(flatten)]
    pub tile: ElementwiseTileFlags,
}

fn positive(name: &str, v: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(TesseraError::input(name, format!("{v} must be finite and positive")))
    }
}

fn same_length(name: &str, got: usize, want: usize, of: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(TesseraError::input(name, format!("{got} entries, but {of} has {want}")))
    }
}

pub fn run_cast_cmd(args: RunCastArgs) -> Result<()> {
    if let Some(s) = args.scale {
        positive("--scale", s)?;
    }
    let mut spec = CastSpec { scaled: args.scale.is_some(), amax: args.amax_out.is_some(), ..CastSpec::new(args.from, args.to) };
    spec.tile = args.tile.tile(spec.tile());
    spec.validate(tessera::Arch::SM90)?;
    let mut outputs = OutputSet::new();
    let out_slot = outputs.reserve("--out", &args.out)?;
    let amax_slot = args.amax_out.as_deref().map(|p| outputs.reserve("--amax-out", p)).transpose()?;
    let x = read_npy(&args.x)?;
    let backend = open_backend(args.backend)?;
    let compiler = Compiler::with_default_cache()?;
    let out = run_cast(backend.as_ref(), &compiler, &spec, &encode(&x.data, args.from), args.scale)?;
    let y = decode(&out.y, args.to);
    if let (Some(slot), Some(amax)) = (amax_slot, out.amax) {
        outputs.write_npy_f32(slot, &[1], &[amax])?;
    }
    outputs.write_npy_f32(out_slot, &x.shape, &y)?;
    outputs.commit()?;
    eprintln!("cast {} on {} ({}): {:?} -> {}", spec.kernel_name(), backend.device_name(), backend.kind(), x.shape, args.out.display());
    Ok(())
}

pub fn run_unscale_cmd(args: RunUnscaleArgs) -> Result<()> {
    positive("--inv-scale", args.inv_scale)?;
    let n = args.grads.len();
    same_length("--out", args.out.len(), n, "--grads")?;
    let dtypes = if args.dtypes.len() == 1 { vec![args.dtypes[0]; n] } else { args.dtypes.clone() };
    same_length("--dtypes", dtypes.len(), n, "--grads")?;
    if let Some(t) = dtypes.iter().find(|t| !ElemType::FLOAT.contains(t)) {
        return Err(TesseraError::input("--dtypes", format!("{t} is not supported for gradients; allowed: f32, f16, bf16")));
    }
    let spec = UnscaleSpec { tile: args.tile.tile(UnscaleSpec::default().tile()) };
    spec.validate(tessera::Arch::SM90)?;
    let mut outputs = OutputSet::new();
    let out_slots: Vec<Slot> = args.out.iter().enumerate().map(|(i, p)| outputs.reserve(&format!("--out[{i}]"), p)).collect::<Result<_>>()?;
    let found_slot = args.found_inf_out.as_deref().map(|p| outputs.reserve("--found-inf-out", p)).transpose()?;
    let arrays: Vec<NpyArray> = args.grads.iter().map(|p| read_npy(p)).collect::<Result<_>>()?;
    let mut grads: Vec<HostTensor> = arrays.iter().zip(&dtypes).map(|(a, &t)| HostTensor::from_f32(&a.data, t)).collect();
    let backend = open_backend(args.backend)?;
    let compiler = Compiler::with_default_cache()?;
    let found = run_unscale(backend.as_ref(), &compiler, &spec, &mut grads, args.inv_scale)?;
    for ((g, a), &slot) in grads.iter().zip(&arrays).zip(&out_slots) {
        outputs.write_npy_f32(slot, &a.shape, &g.to_f32())?;
    }
    if let Some(slot) = found_slot {
        outputs.write_npy_f32(slot, &[1], &[if found { 1.0 } else { 0.0 }])?;
    }
    outputs.commit()?;
    eprintln!("unscale {} on {} ({}): {n} tensors, found_inf = {found}", spec.kernel_name(), backend.device_name(), backend.kind());
    Ok(())
}

fn read_list(name: &str, paths: &[PathBuf], shapes: &[Vec<usize>]) -> Result<Option<Vec<Vec<f32>>>> {
    if paths.is_empty() {
        return Ok(None);
    }
    same_length(name, paths.len(), shapes.len(), "--params")?;
    let mut out = Vec::new();
    for (p, shape) in paths.iter().zip(shapes) {
        let a = read_npy(p)?;
        if &a.shape != shape {
            return Err(TesseraError::input(name, format!("{}: shape {:?} differs from its parameter's {shape:?}", p.display(), a.shape)));
        }
        out.push(a.data);
    }
    Ok(Some(out))
}

/// The files `run adamw` writes per tensor, in this order: `{stem}{i}.npy` in --out-dir.
const ADAMW_OUTPUTS: [&str; 4] = ["master", "exp_avg", "exp_avg_sq", "model"];

pub fn run_adamw_cmd(args: RunAdamWArgs) -> Result<()> {
    if let Some(s) = args.inv_scale {
        positive("--inv-scale", s)?;
    }
    if args.step < 0 {
        return Err(TesseraError::input("--step", format!("{} must be >= 0", args.step)));
    }
    // The kernel counts steps in an i32; the largest count cannot be stepped past.
    if !args.found_inf && args.step.checked_add(1).is_none() {
        return Err(TesseraError::input("--step", format!("{} is the largest step count; one more step would overflow it", args.step)));
    }
    if !ElemType::FLOAT.contains(&args.grad_dtype) {
        return Err(TesseraError::input("--grad-dtype", format!("{} is not supported; allowed: f32, f16, bf16", args.grad_dtype)));
    }
    if args.model_dtype != ElemType::F16 && args.model_dtype != ElemType::BF16 {
        return Err(TesseraError::input("--model-dtype", format!("{} is not supported; allowed: f16, bf16", args.model_dtype)));
    }
    let hyper = AdamWHyper { lr: args.lr, beta1: args.beta1, beta2: args.beta2, eps: args.eps, weight_decay: args.weight_decay };
    tessera::runtime::amp::adamw::check_hyper(&hyper)?;
    let spec = AdamWSpec { tile: args.tile.tile(AdamWSpec::default().tile()) };
    spec.validate(tessera::Arch::SM90)?;
    // Every tensor's master, moments and model weights are replaced together or not at all.
    let mut outputs = OutputSet::new();
    outputs.create_dir("--out-dir", &args.out_dir)?;
    let file = |stem: &str, i: usize| -> PathBuf { Path::new(&args.out_dir).join(format!("{stem}{i}.npy")) };
    let mut slots: Vec<[Slot; ADAMW_OUTPUTS.len()]> = Vec::with_capacity(args.params.len());
    for i in 0..args.params.len() {
        let mut reserve = |stem: &str| outputs.reserve("--out-dir", &file(stem, i));
        slots.push([reserve(ADAMW_OUTPUTS[0])?, reserve(ADAMW_OUTPUTS[1])?, reserve(ADAMW_OUTPUTS[2])?, reserve(ADAMW_OUTPUTS[3])?]);
    }
    let masters: Vec<NpyArray> = args.params.iter().map(|p| read_npy(p)).collect::<Result<_>>()?;
    let shapes: Vec<Vec<usize>> = masters.iter().map(|a| a.shape.clone()).collect();
    let grads = read_list("--grads", &args.grads, &shapes)?.unwrap_or_default();
    let m = read_list("--exp-avg", &args.exp_avg, &shapes)?;
    let v = read_list("--exp-avg-sq", &args.exp_avg_sq, &shapes)?;
    let mut params: Vec<HostParam> = masters
        .iter()
        .enumerate()
        .map(|(i, a)| HostParam {
            grad: HostTensor::from_f32(&grads[i], args.grad_dtype),
            master: a.data.clone(),
            exp_avg: m.as_ref().map_or_else(|| vec![0.0; a.data.len()], |m| m[i].clone()),
            exp_avg_sq: v.as_ref().map_or_else(|| vec![0.0; a.data.len()], |v| v[i].clone()),
            model: Some(HostTensor::from_f32(&a.data, args.model_dtype)),
        })
        .collect();
    let backend = open_backend(args.backend)?;
    let compiler = Compiler::with_default_cache()?;
    let mut step = args.step;
    let scaling = GradScaling { found_inf: args.found_inf, inv_scale: args.inv_scale };
    run_adamw(backend.as_ref(), &compiler, &spec, &mut params, &hyper, &mut step, scaling)?;
    for ((p, shape), &[master, exp_avg, exp_avg_sq, model_slot]) in params.iter().zip(&shapes).zip(&slots) {
        outputs.write_npy_f32(master, shape, &p.master)?;
        outputs.write_npy_f32(exp_avg, shape, &p.exp_avg)?;
        outputs.write_npy_f32(exp_avg_sq, shape, &p.exp_avg_sq)?;
        if let Some(model) = &p.model {
            outputs.write_npy_f32(model_slot, shape, &model.to_f32())?;
        }
    }
    outputs.commit()?;
    eprintln!(
        "adamw {} on {} ({}): {} tensors, step {} -> {step}{}",
        spec.kernel_name(),
        backend.device_name(),
        backend.kind(),
        params.len(),
        args.step,
        if args.found_inf { " (skipped: found_inf)" } else { "" }
    );
    Ok(())
}
