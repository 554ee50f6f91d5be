//! `tessera tune`: time every candidate tile of a spec for some shapes on the GPU, verify each
//! against the default tile's output, and store the winners in the tuning database that launches
//! consult. `--dry-run` lists the pruned space; without a GPU every candidate is still compiled
//! (NVRTC + ptxas) so the space is known to be valid.

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use tessera::codegen::{AdamWSpec, AdapterMode, Arch, CastSpec, ElemType, GemmSpec, KernelSpec, LoraSpec, TileChoice, UnscaleSpec};
use tessera::runtime::amp::{adamw_target, cast_target, unscale_target, ElementsTuneShape};
use tessera::runtime::attention::{attention_target, AttentionTuneShape};
use tessera::runtime::check_spec_with;
use tessera::runtime::gemm::{gemm_target, GemmTuneShape};
use tessera::runtime::lora::{lora_target, LoraTuneShape};
use tessera::runtime::tuning::{self, db, space, CandidateStatus, DbEntry, TileFilter, TuneOptions, TuningKey};
use tessera::runtime::{open_backend, AttentionProblem, Backend, BackendKind, Compiler, GemmProblem, LoraProblem};
use tessera::{AttentionSpec, TesseraError};

use crate::flags::{parse_arch, parse_dtype, parse_layout, parse_out_type};
use crate::run_amp::parse_elem;
use crate::Result;

#[derive(Args, Clone, Debug)]
pub struct TuneCommon {
    /// Shapes, comma-separated, dimensions joined by `x` (attention: BATCHxSEQ_QxSEQ_K; gemm:
    /// MxNxK; lora: MxNxK[xADAPTERS]; cast: N; unscale/adamw: ELEMENTS[xTENSORS], 100 tensors by
    /// default).
    #[arg(long, value_delimiter = ',', required = true)]
    pub shapes: Vec<String>,
    /// List the pruned candidate space and exit (no GPU needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Tuning database file (default: TESSERA_TUNING_DB, else tuning.json in the kernel cache).
    #[arg(long)]
    pub tuning_db: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
    /// Time at most this many candidates per shape (the default tile is always one of them).
    #[arg(long)]
    pub max_candidates: Option<usize>,
    /// Architecture for --dry-run and for compiling without a GPU (with a GPU: the GPU's).
    #[arg(long, default_value = "sm_90", value_parser = parse_arch)]
    pub arch: Arch,
}

#[derive(Subcommand)]
pub enum TuneFamily {
    /// Attention forward.
    Attention {
        #[arg(long, value_parser = parse_dtype)]
        dtype: ElemType,
        #[arg(long)]
        head_dim: u32,
        #[arg(long)]
        causal: bool,
        #[arg(long, default_value_t = 16)]
        heads_q: u32,
        #[arg(long)]
        heads_kv: Option<u32>,
        #[command(flatten)]
        common: TuneCommon,
    },
    /// GEMM (no epilogue tensors).
    Gemm {
        #[arg(long, value_parser = parse_dtype)]
        dtype: ElemType,
        #[arg(long, value_parser = parse_out_type)]
        out_type: Option<ElemType>,
        #[arg(long, default_value = "row", value_parser = parse_layout)]
        w_layout: tessera::codegen::Layout,
        #[command(flatten)]
        common: TuneCommon,
    },
    /// Fused LoRA.
    Lora {
        #[arg(long, value_parser = parse_dtype)]
        dtype: ElemType,
        #[arg(long, value_parser = parse_out_type)]
        out_type: Option<ElemType>,
        #[arg(long)]
        rank: u32,
        #[arg(long)]
        per_row: bool,
        #[command(flatten)]
        common: TuneCommon,
    },
    /// Element type conversion.
    Cast {
        #[arg(long, value_parser = parse_elem)]
        from: ElemType,
        #[arg(long, value_parser = parse_elem)]
        to: ElemType,
        #[command(flatten)]
        common: TuneCommon,
    },
    /// Gradient unscale.
    Unscale {
        #[command(flatten)]
        common: TuneCommon,
    },
    /// Fused AdamW.
    Adamw {
        #[command(flatten)]
        common: TuneCommon,
    },
}

fn parse_shape(s: &str, min: usize, max: usize) -> Result<Vec<usize>> {
    let dims: std::result::Result<Vec<usize>, _> = s.split('x').map(str::parse::<usize>).collect();
    match dims {
        Ok(d) if (min..=max).contains(&d.len()) && d.iter().all(|&v| v > 0) => Ok(d),
        _ => Err(TesseraError::input("--shapes", format!("`{s}`: expected {min} to {max} positive integers joined by `x`"))),
    }
}

pub fn run(family: TuneFamily) -> Result<()> {
    let (spec, common, dims): (KernelSpec, TuneCommon, (usize, usize)) = match family {
        TuneFamily::Attention { dtype, head_dim, causal, heads_q, heads_kv, common } => {
            (AttentionSpec::new(dtype, head_dim, causal, heads_q, heads_kv.unwrap_or(heads_q)).into(), common, (3, 3))
        }
        TuneFamily::Gemm { dtype, out_type, w_layout, common } => (
            GemmSpec { layout_w: w_layout, ..GemmSpec::new(dtype, out_type.unwrap_or(dtype)) }.into(),
            common,
            (3, 3),
        ),
        TuneFamily::Lora { dtype, out_type, rank, per_row, common } => {
            let mut s = LoraSpec::new(dtype, out_type.unwrap_or(dtype), rank);
            if per_row {
                s.adapters = AdapterMode::PerRow;
            }
            (s.into(), common, (3, 4))
        }
        TuneFamily::Cast { from, to, common } => (CastSpec::new(from, to).into(), common, (1, 1)),
        TuneFamily::Unscale { common } => (UnscaleSpec::default().into(), common, (1, 2)),
        TuneFamily::Adamw { common } => (AdamWSpec::default().into(), common, (1, 2)),
    };
    spec.validate(common.arch)?;
    let shapes: Vec<Vec<usize>> = common.shapes.iter().map(|s| parse_shape(s, dims.0, dims.1)).collect::<Result<_>>()?;
    if common.dry_run {
        for shape in &shapes {
            let candidates = limited(space::candidates(&spec, common.arch, tune_shape_of(&spec, shape)?.as_ref()), common.max_candidates);
            println!("{} on {} for shape {}: {} candidates", spec.kernel_name(common.arch), common.arch, join(shape), candidates.len());
            for (i, t) in candidates.iter().enumerate() {
                println!("  {t}{}", if i == 0 { "  (default)" } else { "" });
            }
        }
        return Ok(());
    }
    if let Some(path) = &common.tuning_db {
        // The winners are saved there after all the timing: refuse an unusable file up front.
        tessera::outputs::check_output_path("--tuning-db", path)?;
        if let Some(w) = db::use_global_path(path) {
            eprintln!("warning: {w}");
        }
    }
    let compiler = Compiler::with_default_cache()?;
    let backend = match open_backend(BackendKind::Cuda) {
        Ok(b) => b,
        Err(e) => return compile_only(&spec, &shapes, &common, &compiler, &e.to_string()),
    };
    for shape in &shapes {
        tune_shape(backend.as_ref(), &compiler, &spec, shape, &common)?;
    }
    if let Some(path) = db::global_path() {
        eprintln!("tuning database: {}", path.display());
    }
    Ok(())
}

fn join(shape: &[usize]) -> String {
    shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

fn limited(mut c: Vec<TileChoice>, max: Option<usize>) -> Vec<TileChoice> {
    if let Some(m) = max {
        c.truncate(m.max(1));
    }
    c
}

/// The family's tuning shape for the CLI's shape (attention: BATCHxSEQ_QxSEQ_K, keyed by batch x
/// heads; LoRA's adapters default to 1; the list kernels are keyed by one tensor's elements).
fn tune_shape_of(spec: &KernelSpec, shape: &[usize]) -> Result<Box<dyn TileFilter>> {
    let dim = |i: usize| shape.get(i).copied().unwrap_or(1);
    Ok(match spec {
        KernelSpec::Attention(a) => {
            let batch_heads = dim(0).checked_mul(a.heads_q as usize).ok_or_else(|| {
                TesseraError::input("--shapes", format!("batch {} x {} heads does not fit in 64 bits", dim(0), a.heads_q))
            })?;
            Box::new(AttentionTuneShape { batch_heads, seq_q: dim(1), seq_k: dim(2) })
        }
        KernelSpec::Gemm(_) => Box::new(GemmTuneShape { m: dim(0), n: dim(1), k: dim(2) }),
        KernelSpec::Lora(_) => Box::new(LoraTuneShape { m: dim(0), n: dim(1), k: dim(2), adapters: dim(3) }),
        KernelSpec::Cast(_) | KernelSpec::Unscale(_) | KernelSpec::AdamW(_) => Box::new(ElementsTuneShape { elements: dim(0) }),
        other => return Err(TesseraError::input("family", format!("{} kernels have no tile to tune", other.family()))),
    })
}

/// No GPU: compile every candidate (NVRTC + ptxas) and report; timing needs a GPU.
fn compile_only(spec: &KernelSpec, shapes: &[Vec<usize>], common: &TuneCommon, compiler: &Compiler, why: &str) -> Result<()> {
    eprintln!("timing needs a CUDA GPU ({why}); compiling every candidate for {} instead", common.arch);
    let mut tiles: Vec<TileChoice> = Vec::new();
    for shape in shapes {
        for t in limited(space::candidates(spec, common.arch, tune_shape_of(spec, shape)?.as_ref()), common.max_candidates) {
            if !tiles.contains(&t) {
                tiles.push(t);
            }
        }
    }
    let results: Vec<(TileChoice, std::result::Result<String, String>)> = tiles
        .par_iter()
        .map(|t| {
            let s = spec.with_tile_choice(*t).expect("a tile of the spec's own space");
            let r = check_spec_with(compiler, s, common.arch).map_err(|e| e.to_string()).and_then(|c| {
                let problems = c.problems();
                let regs = c.report.as_ref().map_or("-".to_string(), |r| r.registers.to_string());
                if problems.is_empty() {
                    Ok(regs)
                } else {
                    Err(problems.join("; "))
                }
            });
            (*t, r)
        })
        .collect();
    println!("{:<24} {:>5}  status", "tile", "regs");
    let mut failed = 0;
    for (t, r) in &results {
        match r {
            Ok(regs) => println!("{:<24} {regs:>5}  compiled", t.to_string()),
            Err(e) => {
                failed += 1;
                println!("{:<24} {:>5}  FAILED: {e}", t.to_string(), "-");
            }
        }
    }
    println!("{} candidates compiled, {failed} failed; nothing timed, the tuning database is unchanged", results.len());
    if failed > 0 {
        return Err(TesseraError::Check(format!("{failed} of {} candidates failed to compile", results.len())));
    }
    Ok(())
}

fn tune_shape(backend: &dyn Backend, compiler: &Compiler, spec: &KernelSpec, shape: &[usize], common: &TuneCommon) -> Result<()> {
    let arch = backend.arch();
    let key_shape = tune_shape_of(spec, shape)?;
    let candidates = limited(space::candidates(spec, arch, key_shape.as_ref()), common.max_candidates);
    let target: Box<dyn tuning::TuneTarget + '_> = match spec {
        KernelSpec::Attention(a) => Box::new(attention_target(
            backend,
            compiler,
            a,
            AttentionProblem::for_spec(a, shape[0], shape[1], shape[2]),
        )?),
        KernelSpec::Gemm(g) => Box::new(gemm_target(backend, compiler, g, GemmProblem::new(shape[0], shape[1], shape[2]))?),
        KernelSpec::Lora(l) => Box::new(lora_target(
            backend,
            compiler,
            l,
            LoraProblem::new(shape[0], shape[1], shape[2], shape.get(3).copied().unwrap_or(1)),
        )?),
        KernelSpec::Cast(c) => Box::new(cast_target(backend, compiler, c, shape[0])?),
        KernelSpec::Unscale(u) => Box::new(unscale_target(backend, compiler, u, shape[0], shape.get(1).copied().unwrap_or(100))?),
        KernelSpec::AdamW(a) => Box::new(adamw_target(backend, compiler, a, shape[0], shape.get(1).copied().unwrap_or(100))?),
        other => {
            return Err(TesseraError::input("family", format!("{} kernels have no tile to tune", other.family())));
        }
    };
    let bar = ProgressBar::new(candidates.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("{} {}", spec.family(), join(shape)));
    let opts = TuneOptions { warmup: common.warmup, reps: common.reps, ..TuneOptions::default() };
    let report = tuning::tune(target.as_ref(), &candidates, &opts, &|done, _, r| {
        bar.set_position(done as u64);
        bar.set_message(r.tile.to_string());
    });
    bar.finish_and_clear();
    println!("{} on {} for shape {}:", spec.kernel_name(arch), backend.device_name(), join(shape));
    println!("  {:<24} {:>10} {:>10}  status", "tile", "ms", target.unit());
    for (i, r) in report.results.iter().enumerate() {
        let mark = if Some(i) == report.best { "  <- best" } else if i == 0 { "  (default)" } else { "" };
        match &r.status {
            CandidateStatus::Timed { median_ms, throughput } => {
                println!("  {:<24} {median_ms:>10.4} {throughput:>10.1}  ok{mark}", r.tile.to_string())
            }
            CandidateStatus::Compiled => println!("  {:<24} {:>10} {:>10}  compiled", r.tile.to_string(), "-", "-"),
            CandidateStatus::CompileFailed(e) => println!("  {:<24} {:>10} {:>10}  compile failed: {e}", r.tile.to_string(), "-", "-"),
            CandidateStatus::LaunchFailed(e) => println!("  {:<24} {:>10} {:>10}  launch failed: {e}", r.tile.to_string(), "-", "-"),
            CandidateStatus::VerifyFailed(e) => println!("  {:<24} {:>10} {:>10}  wrong result: {e}", r.tile.to_string(), "-", "-"),
        }
    }
    if let Some(winner) = report.winner() {
        if let CandidateStatus::Timed { median_ms, throughput } = winner.status {
            let timed = report.results.iter().filter(|r| matches!(r.status, CandidateStatus::Timed { .. })).count();
            let entry = DbEntry {
                key: TuningKey::new(spec, key_shape.as_ref(), backend.device_fingerprint()),
                tile: winner.tile,
                median_ms,
                throughput,
                unit: target.unit().to_string(),
                candidates: timed,
            };
            db::global_insert(vec![entry])?;
        }
    }
    Ok(())
}
