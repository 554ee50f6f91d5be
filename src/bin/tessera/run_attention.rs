//! `tessera run attention`: Q/K/V (and the variants' inputs) as .npy in, O (and LSE) as f32 .npy out.
//!
//! Shapes: dense Q `[batch, seq_q, heads_q, head_dim]`, K/V `[batch, seq_k, heads_kv, head_dim]`;
//! with `--cu-seqlens-q/-k` (varlen) Q/O are `[total_q, heads_q, head_dim]` and K/V
//! `[total_k, heads_kv, head_dim]`; with `--block-table/--seq-lens` (paged) K/V are
//! `[num_pages, page_size, heads_kv, head_dim]`. Each variant flag turns on its kernel feature.

use std::path::{Path, PathBuf};

use clap::Args;
use tessera::codegen::AttentionFeatures;
use tessera::npy::{read_npy, read_npy_indices, NpyArray, NpyIndices};
use tessera::outputs::OutputSet;
use tessera::runtime::attention::{run_attention_variant, AttentionInputs, AttentionProblem, PagedKv, PrefixInputs, TreeInputs, VarlenInputs, Window, MAX_SPLITS};
use tessera::runtime::{BackendKind, Compiler};
use tessera::{AttentionSpec, ElemType, TesseraError};

use crate::backend::open_for_spec;
use crate::flags::{parse_dtype, TileFlags};
use crate::Result;

#[derive(Args)]
pub struct RunAttentionArgs {
    /// Kernel element type; inputs are rounded to it (round-to-nearest-even).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: ElemType,
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
    /// Optional log-sum-exp output, f32 [batch, heads_q, seq_q] ([heads_q, total_q] with varlen).
    #[arg(long)]
    pub lse: Option<PathBuf>,
    /// auto (GPU, then simulator), cuda or sim.
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    #[command(flatten)]
    pub tile: TileFlags,
    /// Sliding window: keys at most L positions before each query's diagonal (local attention).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_window)]
    pub window_left: Option<usize>,
    /// Sliding window: keys at most R positions after each query's diagonal.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_window)]
    pub window_right: Option<usize>,
    /// Logit soft-capping: score = CAP * tanh(score / CAP).
    #[arg(long)]
    pub softcap: Option<f32>,
    /// ALiBi slopes, f32 [heads_q]: score -= slope * |qpos - kpos|.
    #[arg(long)]
    pub alibi_slopes: Option<PathBuf>,
    /// Prefix keys [prefix_len, heads_kv, head_dim], visible to every query (with --prefix-v).
    #[arg(long, requires = "prefix_v")]
    pub prefix_k: Option<PathBuf>,
    /// Prefix values [prefix_len, heads_kv, head_dim].
    #[arg(long, requires = "prefix_k")]
    pub prefix_v: Option<PathBuf>,
    /// Tree attention: parents int32/int64 [n_tree] (one tree) or [batch, n_tree], -1 for a root,
    /// each parent before its node; the last n_tree queries and keys are the candidates. Needs --causal.
    #[arg(long)]
    pub tree_parents: Option<PathBuf>,
    /// Varlen: int32/int64 [batch + 1] offsets of each sequence's rows in Q.
    #[arg(long)]
    pub cu_seqlens_q: Option<PathBuf>,
    /// Varlen: int32/int64 [batch + 1] offsets of each sequence's rows in K/V (not with a paged cache).
    #[arg(long)]
    pub cu_seqlens_k: Option<PathBuf>,
    /// Paged K/V: int32/int64 [batch, max_pages] page indices (with --seq-lens).
    #[arg(long, requires = "seq_lens")]
    pub block_table: Option<PathBuf>,
    /// Paged K/V: int32/int64 [batch] keys per sequence.
    #[arg(long, requires = "block_table")]
    pub seq_lens: Option<PathBuf>,
    /// One CTA for all query heads of a KV head (GQA packing; decode).
    #[arg(long)]
    pub pack_gqa: bool,
    /// Split each query tile's keys across N CTAs and merge through the LSE (0: automatic).
    #[arg(long)]
    pub num_splits: Option<usize>,
}

/// A window bound: a count of positions, so never negative (leave the flag out for unbounded).
fn parse_window(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<i64>() {
        Ok(v) if v < 0 => Err(format!("{v} is negative: a window bound counts positions (leave the flag out for no bound)")),
        Ok(v) => usize::try_from(v).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn dims(flag: &str, a: &NpyArray, rank: usize, what: &str) -> Result<Vec<usize>> {
    if a.shape.len() != rank {
        return Err(TesseraError::input(format!("--{flag}"), format!("expected rank {rank} {what}, got shape {:?}", a.shape)));
    }
    Ok(a.shape.clone())
}

fn indices(flag: &str, path: &Option<PathBuf>) -> Result<Option<NpyIndices>> {
    path.as_deref()
        .map(|p: &Path| {
            read_npy_indices(p).map_err(|e| TesseraError::input(format!("--{flag}"), e.to_string()))
        })
        .transpose()
}

fn rank1(flag: &str, a: &NpyIndices) -> Result<()> {
    if a.shape.len() != 1 {
        return Err(TesseraError::input(format!("--{flag}"), format!("expected rank 1, got shape {:?}", a.shape)));
    }
    Ok(())
}

fn check_heads(dq: usize, dk: usize, hq: usize, hk: usize) -> Result<()> {
    if dk != dq {
        return Err(TesseraError::input("--k", format!("head_dim {dk} differs from Q's head_dim {dq}")));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(TesseraError::input("--k", format!("heads_kv {hk} must divide Q's heads {hq}")));
    }
    Ok(())
}

fn to_u32(flag: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| TesseraError::input(format!("--{flag}"), format!("{value} is too large")))
}

pub fn run_attention_cmd(args: RunAttentionArgs) -> Result<()> {
    if let Some(scale) = args.scale {
        if !scale.is_finite() || scale <= 0.0 {
            return Err(TesseraError::input("--scale", format!("must be a finite positive number, got {scale}")));
        }
    }
    // Before any input is read or anything is sized from it.
    if let Some(splits) = args.num_splits.filter(|&n| n > MAX_SPLITS) {
        return Err(TesseraError::input("--num-splits", format!("{splits}: must be 0 (automatic) or 1..={MAX_SPLITS}")));
    }
    let mut outputs = OutputSet::new();
    let out_slot = outputs.reserve("--out", &args.out)?;
    let lse_slot = args.lse.as_deref().map(|p| outputs.reserve("--lse", p)).transpose()?;
    let q = read_npy(&args.q)?;
    let k = read_npy(&args.k)?;
    let v = read_npy(&args.v)?;
    let cu_q = indices("cu-seqlens-q", &args.cu_seqlens_q)?;
    let cu_k = indices("cu-seqlens-k", &args.cu_seqlens_k)?;
    let table = indices("block-table", &args.block_table)?;
    let lens = indices("seq-lens", &args.seq_lens)?;
    let parents = indices("tree-parents", &args.tree_parents)?;
    let varlen = cu_q.is_some() || cu_k.is_some();
    let paged = table.is_some();
    if varlen && cu_q.is_none() {
        return Err(TesseraError::input("--cu-seqlens-q", "required with --cu-seqlens-k"));
    }

    // Shapes: heads and head_dim from Q and K in whichever layout they come.
    let (hq, dq) = if varlen {
        let qd = dims("q", &q, 3, "[total_q, heads_q, head_dim] (varlen)")?;
        (qd[1], qd[2])
    } else {
        let qd = dims("q", &q, 4, "[batch, seq_q, heads_q, head_dim]")?;
        (qd[2], qd[3])
    };
    if v.shape != k.shape {
        return Err(TesseraError::input("--v", format!("shape {:?} must equal K's shape {:?}", v.shape, k.shape)));
    }
    let (hk, dk, page_size) = if paged {
        let kd = dims("k", &k, 4, "[num_pages, page_size, heads_kv, head_dim] (paged)")?;
        (kd[2], kd[3], kd[1])
    } else if varlen {
        let kd = dims("k", &k, 3, "[total_k, heads_kv, head_dim] (varlen)")?;
        (kd[1], kd[2], 0)
    } else {
        let kd = dims("k", &k, 4, "[batch, seq_k, heads_kv, head_dim]")?;
        (kd[2], kd[3], 0)
    };
    check_heads(dq, dk, hq, hk)?;
    let mut problem = AttentionProblem { batch: 0, seq_q: 0, seq_k: 0, heads_q: hq, heads_kv: hk, head_dim: dq };
    if !varlen {
        problem.batch = q.shape[0];
        problem.seq_q = q.shape[1];
        if !paged {
            if k.shape[0] != q.shape[0] {
                return Err(TesseraError::input("--k", format!("batch {} differs from Q's batch {}", k.shape[0], q.shape[0])));
            }
            problem.seq_k = k.shape[1];
        }
    }
    let batch_of_table = lens.as_ref().map(|l| l.data.len());
    if let Some(l) = &lens {
        rank1("seq-lens", l)?;
    }
    let max_pages = match &table {
        Some(t) => {
            if t.shape.len() != 2 || Some(t.shape[0]) != batch_of_table {
                return Err(TesseraError::input(
                    "--block-table",
                    format!("shape {:?} must be [batch, max_pages] with batch = len(seq_lens) {:?}", t.shape, batch_of_table),
                ));
            }
            t.shape[1]
        }
        None => 0,
    };
    for (flag, a) in [("cu-seqlens-q", &cu_q), ("cu-seqlens-k", &cu_k)] {
        if let Some(a) = a {
            rank1(flag, a)?;
        }
    }
    let slopes = args.alibi_slopes.as_deref().map(read_npy).transpose()?;
    let prefix_k = args.prefix_k.as_deref().map(read_npy).transpose()?;
    let prefix_v = args.prefix_v.as_deref().map(read_npy).transpose()?;
    let prefix_len = match (&prefix_k, &prefix_v) {
        (Some(pk), Some(pv)) => {
            let pd = dims("prefix-k", pk, 3, "[prefix_len, heads_kv, head_dim]")?;
            if pv.shape != pk.shape {
                return Err(TesseraError::input("--prefix-v", format!("shape {:?} must equal --prefix-k's {:?}", pv.shape, pk.shape)));
            }
            if pd[1] != hk || pd[2] != dk {
                return Err(TesseraError::input("--prefix-k", format!("shape {:?} must be [prefix_len, {hk}, {dk}]", pk.shape)));
            }
            pd[0]
        }
        _ => 0,
    };
    let per_sequence_tree = match &parents {
        Some(p) if p.shape.len() == 2 => true,
        Some(p) if p.shape.len() == 1 => false,
        Some(p) => {
            return Err(TesseraError::input("--tree-parents", format!("expected [n_tree] or [batch, n_tree], got shape {:?}", p.shape)))
        }
        None => false,
    };

    let features = AttentionFeatures {
        local: args.window_left.is_some() || args.window_right.is_some(),
        alibi: slopes.is_some(),
        softcap: args.softcap.is_some(),
        prefix: prefix_k.is_some(),
        tree: parents.is_some(),
        varlen,
        paged,
        pack_gqa: args.pack_gqa,
        split_kv: args.num_splits.is_some(),
    };
    let base =
        AttentionSpec::new(args.dtype, to_u32("q", dq)?, args.causal, to_u32("q", hq)?, to_u32("k", hk)?).with_features(features);
    let (backend, spec) = open_for_spec(args.backend, |arch| {
        let spec = AttentionSpec { tile: args.tile.tile(&base, arch), ..base };
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let arch = backend.arch();

    let empty = Vec::new();
    let mut inputs = AttentionInputs::dense(problem, &q.data, &k.data, &v.data);
    inputs.window = Window { left: args.window_left, right: args.window_right };
    inputs.softcap = args.softcap;
    inputs.alibi_slopes = slopes.as_ref().map(|s| &s.data[..]);
    inputs.prefix = match (&prefix_k, &prefix_v) {
        (Some(pk), Some(pv)) => Some(PrefixInputs { k: &pk.data, v: &pv.data, len: prefix_len }),
        _ => None,
    };
    inputs.tree = parents.as_ref().map(|p| TreeInputs { parents: &p.data, per_sequence: per_sequence_tree });
    inputs.varlen = cu_q.as_ref().map(|c| VarlenInputs { cu_seqlens_q: &c.data, cu_seqlens_k: cu_k.as_ref().map(|c| &c.data[..]) });
    inputs.paged = table.as_ref().map(|t| PagedKv {
        page_size,
        block_table: &t.data,
        max_pages,
        seq_lens: lens.as_ref().map_or(&empty[..], |l| &l.data[..]),
    });
    inputs.num_splits = args.num_splits.filter(|&n| n > 0);

    let compiler = Compiler::with_default_cache()?;
    let result = run_attention_variant(backend.as_ref(), &compiler, &spec, &inputs, args.scale, args.lse.is_some())?;
    // Both outputs are complete before either is moved into place.
    outputs.write_npy_f32(out_slot, &q.shape, &result.out)?;
    if let (Some(slot), Some(lse)) = (lse_slot, &result.lse) {
        let shape = if varlen { vec![hq, q.shape[0]] } else { vec![q.shape[0], hq, q.shape[1]] };
        outputs.write_npy_f32(slot, &shape, lse)?;
    }
    outputs.commit()?;
    eprintln!(
        "attention {} on {} ({}): O {:?} -> {}",
        if result.kernel.is_empty() { spec.kernel_name(arch) } else { result.kernel.clone() },
        backend.device_name(),
        backend.kind(),
        q.shape,
        args.out.display()
    );
    Ok(())
}
