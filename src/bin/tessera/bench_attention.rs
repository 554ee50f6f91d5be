//! `tessera bench attention`: device time of one attention forward on random inputs, plain or with
//! the decode / local variants (sliding window, soft-capping, ALiBi, paged KV cache, GQA packing,
//! split-KV).
//!
//! Every flag is checked before the CUDA backend is opened, so a bad value is a one-line error
//! naming its flag even on a machine without a GPU. Without a variant flag this is plain attention
//! (the tuning database's tile applies, as before).
//!
//! Reported beyond the common fields: `features` (the spec's variants, `plain` without any),
//! `num_splits` (1 without split-KV), `kv_bytes` (the K and V bytes the kernel must read at least
//! once: every key some query of a sequence sees, per batch entry and KV head, both tensors) and
//! `kv_gbps` (`kv_bytes` over the median time), plus `page_size` with a paged cache, and `path`:
//! which kernel ran (`sm90a`, the TMA + wgmma kernel, or `mma.sync`), read from the name of the
//! kernel actually launched (also the reported `kernel`).
//!
//! `--path mma-sync` gives the spec the default mma.sync tile (unless a tile flag already gave one),
//! so the two kernels of plain attention on an sm_90a GPU can be timed side by side.

use clap::{Args, ValueEnum};
use tessera::codegen::AttentionFeatures;
use tessera::runtime::attention::{default_num_splits, prepare_attention_variant, split_workspace_bytes, PagedLayout, TensorStrides, VariantArgs, VariantBuffers, Window, MAX_SPLITS, MIN_PAGE_SIZE};
use tessera::runtime::common::buffers::encode;
use tessera::runtime::{AttentionBuffers, AttentionProblem, AttentionStrides, BackendKind, Compiler};
use tessera::{Arch, AttentionSpec, ElemType, TesseraError, TileConfig};

use crate::backend::open_for_spec;
use crate::flags::{parse_dtype, TileFlags};
use crate::measure::{check_run_args, report, DeviceMemory, RandomData, Timing};
use crate::Result;

/// The grid's z dimension (batch x splits) limit.
const MAX_GRID_Z: usize = 65_535;

/// Which attention kernel `--path` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AttentionPath {
    /// The launcher's choice: the TMA + wgmma kernel where it applies (plain attention, head_dim
    /// 64/128/256 on sm_90a, no tile flag), else the mma.sync kernel (with the tuned tile, if any).
    #[default]
    Auto,
    /// The mma.sync kernel, with the default tile unless a tile flag gives one.
    MmaSync,
}

/// The `path` field: `sm90a` for the TMA + wgmma kernel (its name carries `_sm90a_`), else `mma.sync`.
fn path_of(kernel_name: &str) -> &'static str {
    if kernel_name.contains("_sm90a_") {
        "sm90a"
    } else {
        "mma.sync"
    }
}

#[derive(Args)]
pub struct BenchAttentionArgs {
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: tessera::ElemType,
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
    /// Sliding window (local attention): keys at most L positions before each query's diagonal.
    #[arg(long)]
    pub window_left: Option<usize>,
    /// Sliding window (local attention): keys at most R positions after each query's diagonal.
    #[arg(long)]
    pub window_right: Option<usize>,
    /// Logit soft-capping: score = CAP * tanh(score / CAP).
    #[arg(long)]
    pub softcap: Option<f32>,
    /// ALiBi with random slopes in [0, 0.5): score -= slope * |qpos - kpos|.
    #[arg(long)]
    pub alibi: bool,
    /// Paged KV cache with pages of P keys (a power of two >= 16): batch * ceil(seq_k / P) pages,
    /// handed to the sequences through a shuffled block table; every sequence has seq_k keys.
    #[arg(long)]
    pub page_size: Option<usize>,
    /// One CTA for all query heads of a KV head (GQA packing; decode).
    #[arg(long)]
    pub pack_gqa: bool,
    /// Split each query tile's keys across N CTAs (1..=128), merged through the LSE; 0: the
    /// automatic count for this GPU.
    #[arg(long)]
    pub num_splits: Option<usize>,
    /// Which attention kernel to time; the one that ran is reported as `path` (sm90a or mma.sync).
    #[arg(long, value_enum, default_value_t = AttentionPath::Auto)]
    pub path: AttentionPath,
}

impl BenchAttentionArgs {
    fn seq_k(&self) -> usize {
        self.seq_k.unwrap_or(self.seq_q)
    }

    /// The spec's tile on `arch`: the tile flags' if any, else the default mma.sync tile with
    /// `--path mma-sync`, else none (the launcher chooses).
    fn tile(&self, spec: &AttentionSpec, arch: Arch) -> Option<TileConfig> {
        self.tile.tile(spec, arch).or_else(|| match self.path {
            AttentionPath::Auto => None,
            AttentionPath::MmaSync => Some(spec.default_tile_for(arch)),
        })
    }

    fn features(&self) -> AttentionFeatures {
        AttentionFeatures {
            local: self.window_left.is_some() || self.window_right.is_some(),
            alibi: self.alibi,
            softcap: self.softcap.is_some(),
            paged: self.page_size.is_some(),
            pack_gqa: self.pack_gqa,
            split_kv: self.num_splits.is_some(),
            ..AttentionFeatures::default()
        }
    }

    /// The variant flags' values, checked without a device.
    fn check_variant_flags(&self) -> Result<()> {
        if let Some(cap) = self.softcap {
            if !cap.is_finite() || cap <= 0.0 {
                return Err(TesseraError::input("--softcap", format!("{cap}: must be a finite positive cap")));
            }
        }
        if let Some(page) = self.page_size {
            if !page.is_power_of_two() || page < MIN_PAGE_SIZE {
                return Err(TesseraError::input("--page-size", format!("{page}: must be a power of two >= {MIN_PAGE_SIZE}")));
            }
            if self.seq_k() == 0 || self.batch == 0 {
                return Err(TesseraError::input("--page-size", "a paged cache needs --batch and --seq-k of at least 1"));
            }
            let pages = self.batch.saturating_mul(self.seq_k().div_ceil(page));
            if pages > i32::MAX as usize {
                return Err(TesseraError::input("--page-size", format!("{pages} pages do not fit an int32 block table")));
            }
        }
        if let Some(splits) = self.num_splits {
            if splits > MAX_SPLITS {
                return Err(TesseraError::input("--num-splits", format!("{splits}: must be 0 (automatic) or 1..={MAX_SPLITS}")));
            }
            if self.batch.saturating_mul(splits) > MAX_GRID_Z {
                return Err(TesseraError::input(
                    "--num-splits",
                    format!("batch {} x {splits} splits exceeds the grid's {MAX_GRID_Z}", self.batch),
                ));
            }
        }
        Ok(())
    }
}

/// Which keys the queries of one sequence see, counted on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Visibility {
    /// Visible (query, key) pairs of one sequence and head.
    pairs: u64,
    /// Keys visible to at least one query of the sequence: the rows that must be read once.
    keys: u64,
}

/// With `diag = seq_k - seq_q`, query `i` sits at `qpos = i + diag` and sees own keys
/// `max(0, qpos - left) ..= min(seq_k - 1, causal ? qpos : qpos + right)` (an absent bound is
/// unbounded; a causal window's right side is the diagonal). Both ends grow with `i`, so the union
/// of the ranges is counted in the same sweep.
fn visibility(seq_q: usize, seq_k: usize, causal: bool, window: Window) -> Visibility {
    let (sq, sk) = (seq_q as i64, seq_k as i64);
    let clamp = |w: Option<usize>| w.map(|w| w.min(1 << 40) as i64);
    let (left, right) = (clamp(window.left), clamp(window.right));
    let mut pairs = 0u64;
    let mut keys = 0u64;
    let mut covered = -1i64; // the highest key counted in `keys` so far
    for i in 0..sq {
        let qpos = i + sk - sq;
        let lo = left.map_or(0, |l| (qpos - l).max(0));
        let hi_rule = if causal { Some(qpos) } else { right.map(|r| qpos + r) };
        let hi = hi_rule.map_or(sk - 1, |h| h.min(sk - 1));
        if hi < lo {
            continue;
        }
        pairs += (hi - lo + 1) as u64;
        let from = lo.max(covered + 1);
        if hi >= from {
            keys += (hi - from + 1) as u64;
        }
        covered = covered.max(hi);
    }
    Visibility { pairs, keys }
}

/// At most this many fresh random values per tensor; a larger tensor repeats the block (a
/// 64 GB paged cache would otherwise take minutes of host random numbers; the kernel's memory
/// traffic does not depend on the values).
const FRESH_VALUES: usize = 1 << 24;

/// `n` random values in (-range, range), encoded in `dtype`.
fn random_tensor(rng: &mut RandomData, n: usize, range: f32, dtype: ElemType) -> Vec<u8> {
    repeated_random(rng, n, range, dtype, FRESH_VALUES)
}

/// `n` values: `fresh` random ones, repeated (all of them fresh when `n <= fresh`).
fn repeated_random(rng: &mut RandomData, n: usize, range: f32, dtype: ElemType, fresh: usize) -> Vec<u8> {
    if n <= fresh {
        return encode(&rng.values(n, range), dtype);
    }
    let block = encode(&rng.values(fresh, range), dtype);
    let bytes = n * dtype.size_bytes();
    let mut out = Vec::with_capacity(bytes);
    while out.len() < bytes {
        let take = block.len().min(bytes - out.len());
        out.extend_from_slice(&block[..take]);
    }
    out
}

fn i32_bytes(values: impl IntoIterator<Item = usize>) -> Vec<u8> {
    // Page indices and lengths were bounded by `check_variant_flags` / the problem check.
    values.into_iter().flat_map(|v| (v.min(i32::MAX as usize) as i32).to_le_bytes()).collect()
}

pub fn bench_attention(args: BenchAttentionArgs) -> Result<()> {
    check_run_args(args.reps, &[])?;
    args.check_variant_flags()?;
    let heads_kv = args.heads_kv.unwrap_or(args.heads_q);
    let features = args.features();
    let base = AttentionSpec::new(args.dtype, args.head_dim, args.causal, args.heads_q, heads_kv).with_features(features);
    let (backend, spec) = open_for_spec(BackendKind::Cuda, |arch| {
        let spec = AttentionSpec { tile: args.tile(&base, arch), ..base };
        spec.validate(arch)?;
        Ok(spec)
    })?;
    let arch = backend.arch();
    let seq_k = args.seq_k();
    let problem = AttentionProblem::for_spec(&spec, args.batch, args.seq_q, seq_k);
    let window = Window { left: args.window_left, right: args.window_right };
    let paged = args.page_size.map(|page_size| {
        let max_pages = seq_k.div_ceil(page_size);
        PagedLayout { page_size, num_pages: problem.batch * max_pages, max_pages }
    });
    let mut vargs = VariantArgs { window, softcap: args.softcap, paged, ..VariantArgs::default() };
    vargs.num_splits = match args.num_splits {
        Some(0) => default_num_splits(&spec, &problem, 0, arch, backend.multiprocessors()),
        Some(n) => n,
        None => 0,
    };

    let mut strides = AttentionStrides::contiguous(&problem);
    let kv_elements = match paged {
        Some(layout) => {
            let row = problem.heads_kv * problem.head_dim;
            let kv = TensorStrides { batch: layout.page_size * row, seq: row, head: problem.head_dim, dim: 1 };
            strides.k = kv;
            strides.v = kv;
            layout.num_pages * layout.page_size * row
        }
        None => problem.kv_elements(),
    };

    let mut rng = RandomData::new();
    let mut memory = DeviceMemory::new(backend.as_ref());
    let q = memory.upload(&random_tensor(&mut rng, problem.q_elements(), 2.0, spec.dtype))?;
    let k = memory.upload(&random_tensor(&mut rng, kv_elements, 2.0, spec.dtype))?;
    let v = memory.upload(&random_tensor(&mut rng, kv_elements, 2.0, spec.dtype))?;
    let o = memory.upload(&random_tensor(&mut rng, problem.q_elements(), 2.0, spec.dtype))?;
    let slopes = if features.alibi {
        let slopes: Vec<u8> = rng.values(problem.heads_q, 0.5).iter().flat_map(|s| s.abs().to_le_bytes()).collect();
        Some(memory.upload(&slopes)?)
    } else {
        None
    };
    let (table, lens) = match paged {
        Some(layout) => {
            // Every page once, in a random order: a sequence's pages are scattered over the cache.
            let mut pages: Vec<usize> = (0..layout.num_pages).collect();
            rng.shuffle(&mut pages);
            let table = memory.upload(&i32_bytes(pages))?;
            let lens = memory.upload(&i32_bytes(vec![seq_k; problem.batch]))?;
            (Some(table), Some(lens))
        }
        None => (None, None),
    };
    let workspace = if features.split_kv {
        // Zeroed: the split counters start at 0 (every launch leaves them 0 again).
        let bytes = split_workspace_bytes(&spec, &problem, &vargs, arch).max(16);
        Some(memory.upload(&vec![0u8; bytes])?)
    } else {
        None
    };
    let b = &memory.buffers;
    let at = |i: Option<usize>| i.map(|i| &b[i]);
    let buffers = AttentionBuffers { q: &b[q], k: &b[k], v: &b[v], o: &b[o], lse: None };
    let extra = VariantBuffers {
        alibi_slopes: at(slopes),
        block_table: at(table),
        seq_lens: at(lens),
        workspace: at(workspace),
        ..VariantBuffers::default()
    };
    let compiler = Compiler::with_default_cache()?;
    let launch =
        prepare_attention_variant(backend.as_ref(), &compiler, &spec, &problem, &strides, &buffers, &vargs, &extra, None)?;
    let timing = Timing::of(launch.time(backend.as_ref(), args.warmup, args.reps)?);
    // The kernel that ran: the launcher may have taken a tuned tile or fallen back from sm_90a.
    let name = launch.kernel_name().map_or_else(|| spec.kernel_name(arch), str::to_string);
    memory.free_all()?;

    let (batch, heads_q, d) = (problem.batch as f64, problem.heads_q as f64, problem.head_dim as f64);
    let seen = visibility(problem.seq_q, problem.seq_k, args.causal, window);
    let flops = if features.local {
        // Only the visible (query, key) pairs: a window skips the rest.
        4.0 * batch * heads_q * seen.pairs as f64 * d
    } else {
        let causal_factor = if args.causal { 0.5 } else { 1.0 };
        4.0 * batch * heads_q * problem.seq_q as f64 * problem.seq_k as f64 * d * causal_factor
    };
    // K and V rows some query sees, once per batch entry and KV head.
    let kv_bytes = problem.batch as u64
        * seen.keys
        * problem.heads_kv as u64
        * problem.head_dim as u64
        * 2
        * spec.dtype.size_bytes() as u64;
    let kv_gbps = kv_bytes as f64 / (timing.median * 1e-3) / 1e9;
    let mut extra = serde_json::Map::new();
    extra.insert("features".into(), spec.features.to_string().into());
    extra.insert("num_splits".into(), (if features.split_kv { vargs.num_splits } else { 1 }).into());
    if let Some(page) = args.page_size {
        extra.insert("page_size".into(), page.into());
    }
    extra.insert("kv_bytes".into(), kv_bytes.into());
    extra.insert("kv_gbps".into(), ((kv_gbps * 100.0).round() / 100.0).into());
    extra.insert("path".into(), path_of(&name).into());
    report(args.json, &name, &backend.device_name(), &timing, flops, args.reps, extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count by brute force over every (query, key) pair.
    fn brute(seq_q: usize, seq_k: usize, causal: bool, window: Window) -> Visibility {
        let mut pairs = 0;
        let mut seen = vec![false; seq_k];
        for i in 0..seq_q as i64 {
            let qpos = i + seq_k as i64 - seq_q as i64;
            for j in 0..seq_k as i64 {
                let ok = (!causal || j <= qpos)
                    && window.left.map_or(true, |l| j >= qpos - l as i64)
                    && window.right.map_or(true, |r| j <= qpos + r as i64);
                if ok {
                    pairs += 1;
                    seen[j as usize] = true;
                }
            }
        }
        Visibility { pairs, keys: seen.iter().filter(|&&s| s).count() as u64 }
    }

    #[test]
    fn visibility_matches_brute_force() {
        let bounds = [None, Some(0), Some(1), Some(3), Some(40)];
        for (sq, sk) in [(1, 1), (1, 37), (7, 7), (20, 5), (5, 20), (33, 64)] {
            for causal in [false, true] {
                for left in bounds {
                    for right in bounds {
                        let w = Window { left, right };
                        assert_eq!(visibility(sq, sk, causal, w), brute(sq, sk, causal, w), "{sq} {sk} {causal} {w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn decode_reads_every_key_once() {
        let v = visibility(1, 4096, true, Window::default());
        assert_eq!(v, Visibility { pairs: 4096, keys: 4096 });
        let local = visibility(32768, 32768, true, Window { left: Some(1024), right: None });
        assert_eq!(local.keys, 32768);
        assert_eq!(local.pairs, (0..32768u64).map(|i| i.min(1024) + 1).sum::<u64>());
    }

    #[test]
    fn path_comes_from_the_kernel_name() {
        let spec = AttentionSpec::new(ElemType::BF16, 128, false, 16, 16);
        assert_eq!(path_of(&spec.kernel_name(Arch::SM90A)), "sm90a");
        assert_eq!(path_of(&spec.kernel_name(Arch::SM90)), "mma.sync");
        let tiled = spec.with_tile(spec.default_tile_for(Arch::SM90A));
        assert_eq!(path_of(&tiled.kernel_name(Arch::SM90A)), "mma.sync");
    }

    #[test]
    fn mma_sync_path_forces_a_tile_unless_one_is_given() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchAttentionArgs,
        }
        let parse = |extra: &[&str]| {
            let base = ["bench", "--dtype", "bf16", "--head-dim", "128", "--seq-q", "256"];
            Cli::parse_from(base.iter().chain(extra)).args
        };
        let spec = AttentionSpec::new(ElemType::BF16, 128, false, 16, 16);
        let arch = Arch::SM90A;
        assert_eq!(parse(&[]).path, AttentionPath::Auto);
        assert_eq!(parse(&[]).tile(&spec, arch), None);
        assert_eq!(parse(&["--path", "auto"]).tile(&spec, arch), None);
        assert_eq!(parse(&["--path", "mma-sync"]).tile(&spec, arch), Some(spec.default_tile_for(arch)));
        let given = parse(&["--path", "mma-sync", "--block-n", "32"]).tile(&spec, arch).unwrap();
        assert_eq!(given.block_n, 32);
        assert_eq!(parse(&["--block-n", "32"]).tile(&spec, arch), Some(given));
    }

    #[test]
    fn large_tensors_repeat_a_random_block() {
        let mut rng = RandomData::new();
        let t = repeated_random(&mut rng, 1000 + 3, 2.0, ElemType::BF16, 1000);
        assert_eq!(t.len(), (1000 + 3) * 2);
        assert_eq!(t[..6], t[1000 * 2..]);
        assert_ne!(t[..6], t[6..12]);
        let small = repeated_random(&mut RandomData::new(), 10, 2.0, ElemType::F16, 1000);
        assert_eq!(small, encode(&RandomData::new().values(10, 2.0), ElemType::F16), "small tensors: all fresh, as before");
    }
}
