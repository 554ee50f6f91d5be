//! `tessera bench attention`: device time of the kernel with CUDA events (median of repetitions).

use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::runtime::attention::encode;
use tessera::runtime::{
    open_backend, prepare_attention, AttentionBuffers, AttentionProblem, AttentionStrides, BackendKind, Compiler,
};
use tessera::TesseraError;

use crate::flags::{parse_dtype, TileFlags};
use crate::Result;

#[derive(Subcommand)]
pub enum BenchFamily {
    /// Attention forward on random inputs of the given shape.
    Attention(BenchAttentionArgs),
}

#[derive(Args)]
pub struct BenchAttentionArgs {
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: tessera::DType,
    #[arg(long)]
    pub head_dim: u32,
    #[arg(long)]
    pub causal: bool,
    #[arg(long, default_value_t = 16)]
    pub heads_q: u32,
    /// Default: heads_q (MHA).
    #[arg(long)]
    pub heads_kv: Option<u32>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long)]
    pub seq_q: usize,
    /// Default: seq_q.
    #[arg(long)]
    pub seq_k: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tile: TileFlags,
}

pub fn run(family: BenchFamily) -> Result<()> {
    match family {
        BenchFamily::Attention(args) => bench_attention(args),
    }
}

fn bench_attention(args: BenchAttentionArgs) -> Result<()> {
    if args.reps == 0 {
        return Err(TesseraError::input("--reps", "must be at least 1"));
    }
    let backend = open_backend(BackendKind::Cuda)?;
    let arch = backend.arch();
    let heads_kv = args.heads_kv.unwrap_or(args.heads_q);
    let mut spec = tessera::AttentionSpec::new(args.dtype, args.head_dim, args.causal, args.heads_q, heads_kv);
    spec.tile = args.tile.tile(&spec, arch);
    spec.validate(arch)?;
    let problem = AttentionProblem::for_spec(&spec, args.batch, args.seq_q, args.seq_k.unwrap_or(args.seq_q));

    // Random data, not zeros: zeros can run faster than real inputs and hide unwritten outputs.
    let mut rng = StdRng::seed_from_u64(0x7e55e7a);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
    let upload = |data: Vec<f32>| -> Result<tessera::runtime::DeviceBuffer> {
        let bytes = encode(&data, spec.dtype);
        let buf = backend.alloc(bytes.len())?;
        backend.write(&buf, &bytes)?;
        Ok(buf)
    };
    let q = upload(random(problem.q_elements()))?;
    let k = upload(random(problem.kv_elements()))?;
    let v = upload(random(problem.kv_elements()))?;
    let o = upload(random(problem.q_elements()))?;
    let buffers = AttentionBuffers { q: &q, k: &k, v: &v, o: &o, lse: None };
    let compiler = Compiler::with_default_cache()?;
    let launch = prepare_attention(
        backend.as_ref(),
        &compiler,
        &spec,
        &problem,
        &AttentionStrides::contiguous(&problem),
        &buffers,
        None,
    )?;
    let mut times = launch.time(backend.as_ref(), args.warmup, args.reps)?;
    for b in [q, k, v, o] {
        backend.free(b)?;
    }
    times.sort_by(f32::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f32::NAN) as f64;
    let causal_factor = if args.causal { 0.5 } else { 1.0 };
    let flops = 4.0
        * problem.batch as f64
        * problem.heads_q as f64
        * problem.seq_q as f64
        * problem.seq_k as f64
        * problem.head_dim as f64
        * causal_factor;
    let tflops = flops / (median * 1e-3) / 1e12;
    let name = spec.kernel_name(arch);
    if args.json {
        let value = serde_json::json!({
            "kernel": name,
            "device": backend.device_name(),
            "median_ms": median,
            "min_ms": times.first(),
            "max_ms": times.last(),
            "tflops": tflops,
            "reps": args.reps,
        });
        println!("{value}");
    } else {
        println!("{name} on {}: median {median:.3} ms over {} reps, {tflops:.1} TFLOP/s", backend.device_name(), args.reps);
    }
    Ok(())
}
