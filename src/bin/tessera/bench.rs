//! `tessera bench attention|gemm|lora|cast|unscale|adamw`: device time of one kernel with CUDA
//! events (median of repetitions) on random inputs. Attention (plain and its variants) is in
//! `bench_attention.rs`; the mixed-precision training kernels (cast, unscale, AdamW) are in
//! `bench_amp.rs` and report bandwidth instead of FLOP/s. What the families share (device
//! buffers, random inputs, timing, the FLOP/s report) is in `measure.rs`.

use clap::{Args, Subcommand, ValueEnum};
use tessera::codegen::{AdapterMode, GemmSpec, Layout, LoraSpec, ElemType};
use tessera::runtime::common::buffers::encode;
use tessera::runtime::gemm::fits_aligned as gemm_fits_aligned;
use tessera::runtime::lora::fits_aligned as lora_fits_aligned;
use tessera::runtime::{prepare_gemm, prepare_lora, BackendKind, Compiler, GemmBuffers, GemmProblem, GemmStrides, LoraBuffers, LoraProblem, LoraStrides};
use tessera::TesseraError;

use crate::backend::open_for_spec;
use crate::bench_amp::{bench_adamw, bench_cast, bench_unscale, BenchAdamWArgs, BenchCastArgs, BenchUnscaleArgs};
use crate::bench_attention::{bench_attention, BenchAttentionArgs};
use crate::flags::{parse_dtype, parse_layout, parse_out_type, GemmTileFlags};
use crate::measure::{check_run_args, report, DeviceMemory, RandomData, Timing};
use crate::Result;

#[derive(Subcommand)]
pub enum BenchFamily {
    /// Attention forward on random inputs of the given shape.
    Attention(BenchAttentionArgs),
    /// GEMM `Y[M,N] = X[M,K] @ W[K,N]` on random inputs (no epilogue); FLOPs = 2 M N K.
    Gemm(BenchGemmArgs),
    /// Fused LoRA `Y = X W + s (X A_i) B_i` on random inputs; FLOPs = 2 M N K + 2 M K r + 2 M r N.
    Lora(BenchLoraArgs),
    /// Element type conversion of one tensor of n random values (optionally scaled, with amax);
    /// bytes = n (size_from + size_to) [+ 4 scale read] [+ 4 amax write].
    Cast(BenchCastArgs),
    /// In-place gradient unscale + non-finite check over a list of tensors; bytes = 2 n size.
    Unscale(BenchUnscaleArgs),
    /// Fused AdamW step (f32 master weights and moments) over a list of tensors; bytes per
    /// element = size_grad + 24 (master, m, v read and written) + size_model.
    Adamw(BenchAdamWArgs),
    /// Every family at a representative shape, as one table.
    All(crate::bench_all::BenchAllArgs),
}

#[derive(Args)]
pub struct BenchGemmArgs {
    /// X and W element type: f16 or bf16 (f32 accumulation).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: ElemType,
    /// Rows of X and Y.
    #[arg(long)]
    pub m: usize,
    /// Columns of W and Y.
    #[arg(long)]
    pub n: usize,
    /// Columns of X, rows of W (the reduction).
    #[arg(long)]
    pub k: usize,
    /// Y element type: f16, bf16 or f32 (default: the input dtype).
    #[arg(long, value_parser = parse_out_type)]
    pub out_type: Option<ElemType>,
    /// W layout: row (stored [K, N]) or col (stored [N, K], an nn.Linear weight).
    #[arg(long, default_value = "row", value_parser = parse_layout)]
    pub w_layout: Layout,
    #[command(flatten)]
    pub tile: GemmTileFlags,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// How per-row adapter ids are assigned to the rows of X.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AdapterMix {
    /// Every row uses adapter 0.
    Same,
    /// Row i uses adapter i mod adapters: neighbouring rows differ (decode batches, BGMV).
    Distinct,
    /// Contiguous, nearly equal segments of rows per adapter (prefill batches, SGMV).
    Segments,
}

impl AdapterMix {
    fn name(self) -> &'static str {
        match self {
            AdapterMix::Same => "same",
            AdapterMix::Distinct => "distinct",
            AdapterMix::Segments => "segments",
        }
    }

    /// The adapter id of each of `m` rows.
    fn ids(self, m: usize, adapters: usize) -> Vec<i32> {
        (0..m)
            .map(|row| {
                let id = match self {
                    AdapterMix::Same => 0,
                    AdapterMix::Distinct => row % adapters,
                    AdapterMix::Segments => row * adapters / m,
                };
                // adapters <= i32::MAX is checked before this is called.
                id as i32
            })
            .collect()
    }
}

#[derive(Args)]
pub struct BenchLoraArgs {
    /// X, W, A and B element type: f16 or bf16 (f32 accumulation).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: ElemType,
    /// Rows of X and Y.
    #[arg(long)]
    pub m: usize,
    /// Columns of W and Y.
    #[arg(long)]
    pub n: usize,
    /// Columns of X, rows of W (the reduction).
    #[arg(long)]
    pub k: usize,
    /// Adapter rank: 8, 16, 32, 64 or 128.
    #[arg(long)]
    pub rank: u32,
    /// Stacked adapters: 1 runs the single-adapter spec (A [K, r], B [r, N]); more run the
    /// per-row spec (A [n, K, r], B [n, r, N], an int32 adapter id per row).
    #[arg(long, default_value_t = 1)]
    pub adapters: usize,
    /// How rows are assigned to adapters (per-row spec only; ignored with --adapters 1).
    #[arg(long, value_enum, default_value_t = AdapterMix::Segments)]
    pub mix: AdapterMix,
    /// Column tiles per CTA (default: the launcher's choice for this device).
    #[arg(long)]
    pub n_group: Option<usize>,
    /// The adapter scale s.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
    /// Y element type: f16, bf16 or f32 (default: the input dtype).
    #[arg(long, value_parser = parse_out_type)]
    pub out_type: Option<ElemType>,
    /// W layout: row (stored [K, N]) or col (stored [N, K], an nn.Linear weight).
    #[arg(long, default_value = "row", value_parser = parse_layout)]
    pub w_layout: Layout,
    #[command(flatten)]
    pub tile: GemmTileFlags,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(family: BenchFamily) -> Result<()> {
    match family {
        BenchFamily::Attention(args) => bench_attention(args),
        BenchFamily::Gemm(args) => bench_gemm(args),
        BenchFamily::Lora(args) => bench_lora(args),
        BenchFamily::Cast(args) => bench_cast(args),
        BenchFamily::Unscale(args) => bench_unscale(args),
        BenchFamily::Adamw(args) => bench_adamw(args),
        BenchFamily::All(args) => crate::bench_all::run(args),
    }
}

fn bench_gemm(args: BenchGemmArgs) -> Result<()> {
    check_run_args(args.reps, &[("--m", args.m), ("--n", args.n), ("--k", args.k)])?;
    let out = args.out_type.unwrap_or(args.dtype);
    let problem = GemmProblem::new(args.m, args.n, args.k);
    let mut base = GemmSpec { layout_w: args.w_layout, ..GemmSpec::new(args.dtype, out) };
    // As `tessera run gemm`: the element-wise kernel when rows are not whole 16-byte chunks.
    base.aligned = gemm_fits_aligned(&base, &problem);
    let (backend, spec) = open_for_spec(BackendKind::Cuda, |arch| {
        let spec = GemmSpec { tile: args.tile.tile(GemmSpec::default_tile(arch)), ..base };
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let arch = backend.arch();

    let mut rng = RandomData::new();
    let mut memory = DeviceMemory::new(backend.as_ref());
    let x = memory.upload(&encode(&rng.values(problem.x_elements(), 1.0), spec.dtype))?;
    let w = memory.upload(&encode(&rng.values(problem.w_elements(), 1.0), spec.dtype))?;
    let y = memory.alloc(problem.y_elements() * spec.out.size_bytes())?;
    let ws_bytes = tessera::runtime::gemm::split_workspace_bytes(&spec, &problem, arch);
    let ws = if ws_bytes > 0 { Some(memory.upload(&vec![0u8; ws_bytes])?) } else { None };
    let b = &memory.buffers;
    let buffers = GemmBuffers { x: &b[x], w: &b[w], c: None, bias: None, residual: None, y: &b[y], workspace: ws.map(|i| &b[i]) };
    let compiler = Compiler::with_default_cache()?;
    let strides = GemmStrides::contiguous(&spec, &problem);
    let launch = prepare_gemm(backend.as_ref(), &compiler, &spec, &problem, &strides, &buffers, 1.0, 0.0)?;
    let timing = Timing::of(launch.time(backend.as_ref(), args.warmup, args.reps)?);
    // The kernel that ran: the launcher may have taken a tuned tile or fallen back from sm_90a.
    let name = launch.kernel_name().map_or_else(|| spec.kernel_name(arch), str::to_string);
    memory.free_all()?;
    let flops = 2.0 * args.m as f64 * args.n as f64 * args.k as f64;
    report(args.json, &name, &backend.device_name(), &timing, flops, args.reps, serde_json::Map::new());
    Ok(())
}

fn bench_lora(args: BenchLoraArgs) -> Result<()> {
    check_run_args(
        args.reps,
        &[("--m", args.m), ("--n", args.n), ("--k", args.k), ("--adapters", args.adapters)],
    )?;
    if args.adapters > i32::MAX as usize {
        return Err(TesseraError::input("--adapters", format!("{} does not fit in an int32 id", args.adapters)));
    }
    if args.n_group == Some(0) {
        return Err(TesseraError::input("--n-group", "must be at least 1"));
    }
    if !args.scale.is_finite() {
        return Err(TesseraError::input("--scale", format!("{} is not finite", args.scale)));
    }
    let out = args.out_type.unwrap_or(args.dtype);
    let per_row = args.adapters > 1;
    let problem = LoraProblem::new(args.m, args.n, args.k, args.adapters);
    let mut base = LoraSpec {
        layout_w: args.w_layout,
        adapters: if per_row { AdapterMode::PerRow } else { AdapterMode::Single },
        ..LoraSpec::new(args.dtype, out, args.rank)
    };
    base.aligned = lora_fits_aligned(&base, &problem);
    let (backend, spec) = open_for_spec(BackendKind::Cuda, |arch| {
        let spec = LoraSpec { tile: args.tile.tile(base.default_tile(arch)), ..base };
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let arch = backend.arch();
    let r = spec.rank as usize;

    let mut rng = RandomData::new();
    let mut memory = DeviceMemory::new(backend.as_ref());
    let x = memory.upload(&encode(&rng.values(problem.m * problem.k, 1.0), spec.dtype))?;
    let w = memory.upload(&encode(&rng.values(problem.k * problem.n, 1.0), spec.dtype))?;
    let a = memory.upload(&encode(&rng.values(problem.a_elements(r), 1.0), spec.dtype))?;
    let b = memory.upload(&encode(&rng.values(problem.b_elements(r), 1.0), spec.dtype))?;
    let ids = if per_row {
        let bytes: Vec<u8> = args.mix.ids(args.m, args.adapters).iter().flat_map(|id| id.to_le_bytes()).collect();
        Some(memory.upload(&bytes)?)
    } else {
        None
    };
    let y = memory.alloc(problem.m * problem.n * spec.out.size_bytes())?;
    let mem = &memory.buffers;
    let buffers = LoraBuffers {
        x: &mem[x],
        w: Some(&mem[w]),
        a: &mem[a],
        b: &mem[b],
        ids: ids.map(|i| &mem[i]),
        bias: None,
        residual: None,
        y: &mem[y],
    };
    let compiler = Compiler::with_default_cache()?;
    let strides = LoraStrides::contiguous(&spec, &problem);
    let launch =
        prepare_lora(backend.as_ref(), &compiler, &spec, &problem, &strides, &buffers, args.scale, args.n_group)?;
    let n_group = launch.params().base().n_group;
    let grid = launch.config().map(|c| c.grid);
    let timing = Timing::of(launch.time(backend.as_ref(), args.warmup, args.reps)?);
    let name = launch.kernel_name().map_or_else(|| spec.kernel_name(arch), str::to_string);
    memory.free_all()?;
    let (m, n, k, rank) = (args.m as f64, args.n as f64, args.k as f64, f64::from(spec.rank));
    // Useful work: the base product and both low-rank products (not the padding of rank 8).
    let flops = 2.0 * m * n * k + 2.0 * m * k * rank + 2.0 * m * rank * n;
    let mut extra = serde_json::Map::new();
    extra.insert("n_group".into(), n_group.into());
    if let Some(grid) = grid {
        extra.insert("grid".into(), serde_json::json!(grid));
    }
    extra.insert("adapters".into(), args.adapters.into());
    if per_row {
        extra.insert("mix".into(), args.mix.name().into());
    }
    report(args.json, &name, &backend.device_name(), &timing, flops, args.reps, extra);
    Ok(())
}
