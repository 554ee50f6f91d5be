//! `tessera bench cast|unscale|adamw`: device time of the mixed-precision training kernels with
//! CUDA events (median of repetitions) on random finite inputs, reported as effective bandwidth.
//!
//! Effective bandwidth = (bytes read + bytes written) / median time, with these byte counts (the
//! data the kernel must move at least once, not what the hardware moved):
//! - cast: `n (size_from + size_to)`, plus 4 for the scale read (`--scaled`) and 4 for the amax
//!   written (`--amax`);
//! - unscale (in place): `2 n size` (every element read and written back);
//! - AdamW, per element: `size_grad` (read) + `3 * 4 * 2` (f32 master, exp_avg, exp_avg_sq read
//!   and written) + `size_model` (written; 0 with `--model-dtype none`). The device scalars (lr,
//!   step, found-inf, inv_scale, the CTA counter) and the tensor tables are not counted.
//!
//! The multi-tensor benches split `--total` elements over `--tensors` tensors of unequal lengths
//! ([`split_sizes`], reproduced by `benches/gpu/amp.py`), each its own allocation.

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use tessera::codegen::{AdamWSpec, CastSpec, ElemType, ElementwiseTile, UnscaleSpec};
use tessera::runtime::amp::adamw::{prepare_adamw, AdamWState, ParamTensors};
use tessera::runtime::amp::cast::{prepare_cast, CastBuffers};
use tessera::runtime::common::buffers::encode;
use tessera::runtime::reference::AdamWHyper;
use tessera::runtime::amp::unscale::{prepare_unscale, GradTensor};
use tessera::runtime::{BackendKind, Compiler, LaunchConfig};
use tessera::TesseraError;

use crate::backend::open_for_spec;
use crate::measure::{check_run_args, print_result, DeviceMemory, Timing};
use crate::Result;

/// Scale of the scaled casts: inputs are uniform in [-4, 4), so scaled values stay finite (and
/// below the fp8 saturation limits) in every element type.
const CAST_SCALE: f32 = 1.5;
const CAST_RANGE: f32 = 4.0;

fn parse_elem(s: &str) -> std::result::Result<ElemType, String> {
    s.parse::<ElemType>().map_err(|e| e.to_string())
}

/// f32, f16 or bf16: the gradient types of the multi-tensor kernels.
fn parse_float_elem(s: &str) -> std::result::Result<ElemType, String> {
    let t = parse_elem(s)?;
    if ElemType::FLOAT.contains(&t) {
        Ok(t)
    } else {
        Err(format!("unsupported element type `{s}`: allowed values are f32, f16, bf16"))
    }
}

/// The model-weight copy written by AdamW: f16, bf16, or none (a newtype: clap reads a bare
/// `Option` field as an optional flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelType(Option<ElemType>);

fn parse_model_elem(s: &str) -> std::result::Result<ModelType, String> {
    match s {
        "none" => Ok(ModelType(None)),
        "f16" => Ok(ModelType(Some(ElemType::F16))),
        "bf16" => Ok(ModelType(Some(ElemType::BF16))),
        _ => Err(format!("unsupported model type `{s}`: allowed values are f16, bf16, none")),
    }
}

/// Element-wise tile overrides; any subset, the rest from the spec's default tile.
#[derive(Args, Clone, Debug, Default)]
pub struct ElemTileFlags {
    /// Threads per CTA: 128, 256, 512.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Elements per thread (a CTA's chunk is threads x elems-per-thread): 4, 8, 16, 32.
    #[arg(long)]
    pub elems_per_thread: Option<u32>,
    /// Elements per vector access: 1, 2, 4, 8, dividing elems-per-thread, at most 16 bytes.
    #[arg(long)]
    pub vector: Option<u32>,
}

impl ElemTileFlags {
    /// `None` when no flag is given; otherwise `default` with the given fields replaced.
    fn tile(&self, default: ElementwiseTile) -> Option<ElementwiseTile> {
        let any = [self.threads, self.elems_per_thread, self.vector].iter().any(Option::is_some);
        any.then(|| {
            ElementwiseTile::new(
                self.threads.unwrap_or(default.threads),
                self.elems_per_thread.unwrap_or(default.elems_per_thread),
                self.vector.unwrap_or(default.vector),
            )
        })
    }
}

#[derive(Args)]
pub struct BenchCastArgs {
    /// Input element type: f32, f16, bf16, e4m3, e5m2.
    #[arg(long, value_parser = parse_elem)]
    pub from: ElemType,
    /// Output element type (not `--from`): f32, f16, bf16, e4m3, e5m2.
    #[arg(long, value_parser = parse_elem)]
    pub to: ElemType,
    /// Elements of the tensor.
    #[arg(long)]
    pub n: usize,
    /// Multiply by a device scale (1.5) before converting.
    #[arg(long)]
    pub scaled: bool,
    /// Also reduce max |x| into a device scalar.
    #[arg(long)]
    pub amax: bool,
    #[command(flatten)]
    pub tile: ElemTileFlags,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchUnscaleArgs {
    /// Number of gradient tensors (unequal lengths summing to --total).
    #[arg(long)]
    pub tensors: usize,
    /// Elements over all tensors (at least --tensors).
    #[arg(long)]
    pub total: usize,
    /// Gradient element type: f16, bf16 or f32.
    #[arg(long, default_value = "f16", value_parser = parse_float_elem)]
    pub dtype: ElemType,
    /// The device inv_scale. The update is in place and every repetition sees the previous one's
    /// output: the default 1 keeps the data the same from launch to launch.
    #[arg(long, default_value_t = 1.0)]
    pub inv_scale: f32,
    #[command(flatten)]
    pub tile: ElemTileFlags,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchAdamWArgs {
    /// Number of parameter tensors (unequal lengths summing to --total).
    #[arg(long)]
    pub tensors: usize,
    /// Elements over all tensors (at least --tensors).
    #[arg(long)]
    pub total: usize,
    /// Gradient element type: f16, bf16 or f32.
    #[arg(long, default_value = "bf16", value_parser = parse_float_elem)]
    pub grad_dtype: ElemType,
    /// Model-weight copy written by the step: f16, bf16, or none.
    #[arg(long, default_value = "bf16", value_parser = parse_model_elem)]
    pub model_dtype: ModelType,
    /// Learning rate (a device scalar).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// Unscale the gradients inside the step by this device scalar (default: already unscaled).
    #[arg(long)]
    pub inv_scale: Option<f32>,
    #[command(flatten)]
    pub tile: ElemTileFlags,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// `total` elements split over `tensors` tensors of unequal lengths, the same for the same
/// arguments (`benches/gpu/amp.py` reproduces it): every tensor gets one element, and the other
/// `total - tensors` are shared in proportion to the weights `w_i = 500 + (7919 i + 13) mod 1000`
/// (rounded down), the remainder one element each to the first tensors.
pub(crate) fn split_sizes(tensors: usize, total: usize) -> Vec<usize> {
    let weights: Vec<u128> = (0..tensors as u128).map(|i| 500 + (7919 * i + 13) % 1000).collect();
    let sum: u128 = weights.iter().sum();
    let rest = (total - tensors) as u128;
    let mut sizes: Vec<usize> = weights.iter().map(|w| 1 + (rest * w / sum) as usize).collect();
    let remainder = total - sizes.iter().sum::<usize>();
    for size in sizes.iter_mut().take(remainder) {
        *size += 1;
    }
    sizes
}

fn check_split(tensors: usize, total: usize) -> Result<()> {
    if tensors == 0 {
        return Err(TesseraError::input("--tensors", "must be at least 1"));
    }
    if total < tensors {
        return Err(TesseraError::input("--total", format!("{total} is fewer elements than --tensors ({tensors})")));
    }
    if tensors > i32::MAX as usize {
        return Err(TesseraError::input("--tensors", "must fit in an int32"));
    }
    Ok(())
}

/// Random values uniform in `range`, stored as `t`, in parallel blocks each seeded from `seed`
/// and the block index: the data depend only on the arguments.
fn random_elems(n: usize, t: ElemType, range: std::ops::Range<f32>, seed: u64) -> Vec<u8> {
    const BLOCK: usize = 1 << 16;
    let size = t.size_bytes();
    let mut out = vec![0u8; n * size];
    out.par_chunks_mut(BLOCK * size).enumerate().for_each(|(b, chunk)| {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b as u64);
        let values: Vec<f32> = (0..chunk.len() / size).map(|_| rng.random_range(range.clone())).collect();
        chunk.copy_from_slice(&encode(&values, t));
    });
    out
}

/// A distinct seed per (array, tensor).
fn seed(array: u64, tensor: usize) -> u64 {
    0x7e55_e7a0_0000_0000 ^ (array << 40) ^ tensor as u64
}

/// Prints one JSON object (with `extra` merged in) or one line of text.
fn report(
    json: bool,
    kernel: &str,
    device: &str,
    timing: &Timing,
    bytes: u64,
    reps: usize,
    extra: serde_json::Map<String, serde_json::Value>,
) {
    let gbps = bytes as f64 / (timing.median * 1e-3) / 1e9;
    let fields = serde_json::json!({
        "kernel": kernel,
        "device": device,
        "median_ms": timing.median,
        "min_ms": timing.min,
        "max_ms": timing.max,
        "bytes": bytes,
        "gbps": gbps,
        "reps": reps,
    });
    print_result(json, fields, extra, |extra| {
        format!("{kernel} on {device}: median {:.3} ms over {reps} reps, {bytes} bytes, {gbps:.0} GB/s{extra}", timing.median)
    });
}

fn launch_extra(tile: ElementwiseTile, config: Option<LaunchConfig>) -> serde_json::Map<String, serde_json::Value> {
    let mut extra = serde_json::Map::new();
    extra.insert("tile".into(), tile.to_string().into());
    if let Some(c) = config {
        extra.insert("ctas".into(), c.grid[0].into());
    }
    extra
}

fn list_extra(extra: &mut serde_json::Map<String, serde_json::Value>, sizes: &[usize]) {
    extra.insert("tensors".into(), sizes.len().into());
    extra.insert("total".into(), sizes.iter().sum::<usize>().into());
    extra.insert("min_len".into(), sizes.iter().min().copied().unwrap_or(0).into());
    extra.insert("max_len".into(), sizes.iter().max().copied().unwrap_or(0).into());
}

fn check_positive(name: &str, v: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(TesseraError::input(name, format!("{v} must be finite and positive")))
    }
}

pub fn bench_cast(args: BenchCastArgs) -> Result<()> {
    check_run_args(args.reps, &[("--n", args.n)])?;
    let mut spec = CastSpec { scaled: args.scaled, amax: args.amax, ..CastSpec::new(args.from, args.to) };
    spec.tile = args.tile.tile(spec.tile());
    let (backend, spec) = open_for_spec(BackendKind::Cuda, |arch| {
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let n = args.n;

    let mut memory = DeviceMemory::new(backend.as_ref());
    let x = memory.upload(&random_elems(n, spec.from, -CAST_RANGE..CAST_RANGE, seed(0, 0)))?;
    let y = memory.alloc(n * spec.to.size_bytes())?;
    let scale = if spec.scaled { Some(memory.upload(&CAST_SCALE.to_le_bytes())?) } else { None };
    let amax = if spec.amax { Some(memory.upload(&0u32.to_le_bytes())?) } else { None };
    let b = &memory.buffers;
    let buffers = CastBuffers { x: &b[x], y: &b[y], scale: scale.map(|i| &b[i]), amax: amax.map(|i| &b[i]) };
    let compiler = Compiler::with_default_cache()?;
    let launch = prepare_cast(backend.as_ref(), &compiler, &spec, n, &buffers)?;
    let config = launch.config();
    let timing = Timing::of(launch.time(backend.as_ref(), args.warmup, args.reps)?);
    drop(launch);
    memory.free_all()?;

    let bytes = n as u64 * (spec.from.size_bytes() + spec.to.size_bytes()) as u64
        + if spec.scaled { 4 } else { 0 }
        + if spec.amax { 4 } else { 0 };
    let mut extra = launch_extra(spec.tile(), config);
    extra.insert("n".into(), n.into());
    extra.insert("from".into(), spec.from.name().into());
    extra.insert("to".into(), spec.to.name().into());
    extra.insert("scaled".into(), spec.scaled.into());
    extra.insert("amax".into(), spec.amax.into());
    report(args.json, &spec.kernel_name(), &backend.device_name(), &timing, bytes, args.reps, extra);
    Ok(())
}

pub fn bench_unscale(args: BenchUnscaleArgs) -> Result<()> {
    check_run_args(args.reps, &[])?;
    check_split(args.tensors, args.total)?;
    check_positive("--inv-scale", args.inv_scale)?;
    let mut spec = UnscaleSpec::default();
    spec.tile = args.tile.tile(spec.tile());
    let (backend, spec) = open_for_spec(BackendKind::Cuda, |arch| {
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let sizes = split_sizes(args.tensors, args.total);
    let dtype = args.dtype;

    let mut memory = DeviceMemory::new(backend.as_ref());
    let found_inf = memory.upload(&0f32.to_le_bytes())?;
    let inv_scale = memory.upload(&args.inv_scale.to_le_bytes())?;
    let mut grads = Vec::with_capacity(sizes.len());
    for (i, &len) in sizes.iter().enumerate() {
        grads.push(memory.upload(&random_elems(len, dtype, -1.0..1.0, seed(1, i)))?);
    }
    let b = &memory.buffers;
    let tensors: Vec<GradTensor<'_>> =
        sizes.iter().zip(&grads).map(|(&len, &g)| GradTensor { buffer: &b[g], len, dtype }).collect();
    let compiler = Compiler::with_default_cache()?;
    let launch = prepare_unscale(backend.as_ref(), &compiler, &spec, &tensors, &b[found_inf], &b[inv_scale])?;
    let config = launch.launch().config();
    let timing = Timing::of(launch.time(args.warmup, args.reps)?);
    drop(launch);
    drop(tensors);
    memory.free_all()?;

    let bytes = 2 * args.total as u64 * dtype.size_bytes() as u64;
    let mut extra = launch_extra(spec.tile(), config);
    list_extra(&mut extra, &sizes);
    extra.insert("dtype".into(), dtype.name().into());
    report(args.json, &spec.kernel_name(), &backend.device_name(), &timing, bytes, args.reps, extra);
    Ok(())
}

pub fn bench_adamw(args: BenchAdamWArgs) -> Result<()> {
    check_run_args(args.reps, &[])?;
    check_split(args.tensors, args.total)?;
    if let Some(s) = args.inv_scale {
        check_positive("--inv-scale", s)?;
    }
    let hyper = AdamWHyper { lr: args.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: args.weight_decay };
    tessera::runtime::amp::adamw::check_hyper(&hyper)?;
    let mut spec = AdamWSpec::default();
    spec.tile = args.tile.tile(spec.tile());
    let (backend, spec) = open_for_spec(BackendKind::Cuda, |arch| {
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let sizes = split_sizes(args.tensors, args.total);
    let (grad_dtype, model_dtype) = (args.grad_dtype, args.model_dtype.0);

    let mut memory = DeviceMemory::new(backend.as_ref());
    let lr = memory.upload(&args.lr.to_le_bytes())?;
    let step = memory.upload(&0i32.to_le_bytes())?;
    let done = memory.upload(&0u32.to_le_bytes())?;
    // Zero: the step runs (a set flag would skip every launch).
    let found_inf = memory.upload(&0f32.to_le_bytes())?;
    let inv_scale = args.inv_scale.map(|s| memory.upload(&s.to_le_bytes())).transpose()?;
    let mut index = Vec::with_capacity(sizes.len());
    for (i, &len) in sizes.iter().enumerate() {
        let grad = memory.upload(&random_elems(len, grad_dtype, -1.0..1.0, seed(2, i)))?;
        let master = memory.upload(&random_elems(len, ElemType::F32, -1.0..1.0, seed(3, i)))?;
        let exp_avg = memory.upload(&random_elems(len, ElemType::F32, -0.1..0.1, seed(4, i)))?;
        // The second moment is a running mean of squares: non-negative.
        let exp_avg_sq = memory.upload(&random_elems(len, ElemType::F32, 0.0..0.01, seed(5, i)))?;
        // Only written by the step.
        let model = model_dtype.map(|t| memory.alloc(len * t.size_bytes())).transpose()?;
        index.push((grad, master, exp_avg, exp_avg_sq, model));
    }
    let b = &memory.buffers;
    let params: Vec<ParamTensors<'_>> = sizes
        .iter()
        .zip(&index)
        .map(|(&len, &(grad, master, exp_avg, exp_avg_sq, model))| ParamTensors {
            len,
            grad: &b[grad],
            grad_dtype,
            master: &b[master],
            exp_avg: &b[exp_avg],
            exp_avg_sq: &b[exp_avg_sq],
            model: model.zip(model_dtype).map(|(i, t)| (&b[i], t)),
        })
        .collect();
    let state = AdamWState {
        lr: &b[lr],
        step: &b[step],
        done: &b[done],
        found_inf: Some(&b[found_inf]),
        inv_scale: inv_scale.map(|i| &b[i]),
    };
    let compiler = Compiler::with_default_cache()?;
    let launch = prepare_adamw(backend.as_ref(), &compiler, &spec, &params, &state, &hyper)?;
    let config = launch.launch().config();
    let timing = Timing::of(launch.time(args.warmup, args.reps)?);
    drop(launch);
    drop(params);
    memory.free_all()?;

    let per_elem = grad_dtype.size_bytes() + 3 * 4 * 2 + model_dtype.map_or(0, ElemType::size_bytes);
    let bytes = args.total as u64 * per_elem as u64;
    let mut extra = launch_extra(spec.tile(), config);
    list_extra(&mut extra, &sizes);
    extra.insert("grad_dtype".into(), grad_dtype.name().into());
    extra.insert("model_dtype".into(), model_dtype.map_or("none", ElemType::name).into());
    extra.insert("fused_unscale".into(), args.inv_scale.is_some().into());
    report(args.json, &spec.kernel_name(), &backend.device_name(), &timing, bytes, args.reps, extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sums_and_is_unequal() {
        for (tensors, total) in [(1, 1), (1, 7), (3, 3), (5, 17), (1000, 1 << 30), (1000, 1_000_003)] {
            let sizes = split_sizes(tensors, total);
            assert_eq!(sizes.len(), tensors);
            assert_eq!(sizes.iter().sum::<usize>(), total);
            assert!(sizes.iter().all(|&s| s >= 1));
        }
        let sizes = split_sizes(1000, 1 << 30);
        assert!(sizes.iter().any(|&s| s % 4096 != 0));
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max > &(2 * min));
        assert_eq!(split_sizes(4, 10), vec![2, 3, 3, 2]);
    }

    #[test]
    fn random_elems_are_deterministic_and_finite() {
        let a = random_elems(100_000, ElemType::BF16, -1.0..1.0, 3);
        assert_eq!(a, random_elems(100_000, ElemType::BF16, -1.0..1.0, 3));
        assert_ne!(a, random_elems(100_000, ElemType::BF16, -1.0..1.0, 4));
        let v =
            tessera::runtime::common::buffers::decode(&random_elems(10_000, ElemType::E4M3, -4.0..4.0, 1), ElemType::E4M3);
        assert!(v.iter().all(|x| x.is_finite() && x.abs() <= 4.0));
    }
}
