//! Attention variants on the CPU simulator against the f64 reference: sliding window, prefix-KV,
//! tree masks, varlen, paged KV with GQA packing and split-KV, ALiBi and soft-capping, alone and
//! combined. Needs NVRTC (`bash .ci/provision`), no GPU.
//!
//! Every case draws fresh inputs (the seed is in the printed case), goes through
//! `run_attention_variant` (which poisons O and LSE with NaN before the launch) and runs with the
//! simulator's checks on (bounds, shared-memory races, cp.async hazards). The expected result is
//! computed one sequence at a time by `reference::attention_sequence` from the same rounded inputs,
//! gathered by this harness from the packed / paged layouts, so a layout bug in the kernel cannot be
//! mirrored by the reference.
//!
//! `tiles_outside_the_mask_are_never_loaded` counts the bytes the kernel copies from global memory
//! (simulator statistics) and checks them against the tiles a window / causal mask allows.
//!
//! Set `TESSERA_SIM_CASES=N` for N cases per scenario (default 12; the whole file takes about 20 s).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tessera::codegen::AttentionFeatures;
use tessera::runtime::attention::{run_attention_variant, AttentionInputs, PagedKv, PrefixInputs, TreeInputs, VarlenInputs, Window};
use tessera::runtime::reference::{self, PrefixKv, SequenceDims, VariantOptions};
use tessera::runtime::simulator::SimOptions;
use tessera::runtime::{open_backend, AttentionProblem, Backend, BackendKind, RuntimeError, SimBackend};
use tessera::{Arch, AttentionSpec, ElemType};

mod common;
use common::{backend, compiler, hopper_backend};

const ARCH: Arch = Arch::SM80;
/// See `sim_attention.rs`: the kernel's LSE is f32 (m + log2 l) ln 2.
const LSE_TOL: f64 = 1e-4;

/// One variant case: everything needed to rebuild it, including the input seed.
#[derive(Clone, Debug)]
struct VariantCase {
    dtype: ElemType,
    head_dim: u32,
    heads: (u32, u32),
    causal: bool,
    features: AttentionFeatures,
    /// Queries and keys of each sequence (dense layouts use the same values for every sequence).
    seq_q: Vec<usize>,
    seq_k: Vec<usize>,
    window: Window,
    softcap: Option<f32>,
    prefix_len: usize,
    n_tree: usize,
    tree_per_sequence: bool,
    page_size: usize,
    num_splits: Option<usize>,
    seed: u64,
}

impl VariantCase {
    fn spec(&self) -> AttentionSpec {
        AttentionSpec::new(self.dtype, self.head_dim, self.causal, self.heads.0, self.heads.1).with_features(self.features)
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Inputs of a case, on the host, in the kernel's layouts.
struct Built {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    slopes: Vec<f32>,
    prefix_k: Vec<f32>,
    prefix_v: Vec<f32>,
    trees: Vec<Vec<i32>>,
    cu_q: Vec<i64>,
    cu_k: Vec<i64>,
    block_table: Vec<i64>,
    max_pages: usize,
    seq_lens: Vec<i64>,
}

fn cumulative(lens: &[usize]) -> Vec<i64> {
    std::iter::once(0).chain(lens.iter().scan(0i64, |acc, &l| {
        *acc += l as i64;
        Some(*acc)
    })).collect()
}

fn build(case: &VariantCase, rng: &mut StdRng) -> Built {
    let f = case.features;
    let (hq, hkv, d) = (case.heads.0 as usize, case.heads.1 as usize, case.head_dim as usize);
    let batch = case.seq_q.len();
    let q_rows: usize = case.seq_q.iter().sum();
    let q = random(rng, q_rows * hq * d);
    let (mut block_table, mut max_pages) = (Vec::new(), 0);
    let kv_rows = if f.paged {
        // Each sequence's pages, plus spare pages, shuffled through the cache; unused table entries
        // hold -1, which the kernel must never read.
        let page = case.page_size;
        let used: Vec<usize> = case.seq_k.iter().map(|&s| s.div_ceil(page)).collect();
        max_pages = used.iter().copied().max().unwrap_or(0) + rng.random_range(0..2);
        let total: usize = used.iter().sum::<usize>() + rng.random_range(1..3);
        let mut order: Vec<usize> = (0..total).collect();
        order.shuffle(rng);
        let mut next = order.into_iter();
        block_table = vec![-1i64; batch * max_pages.max(1)];
        max_pages = max_pages.max(1);
        for (b, &n) in used.iter().enumerate() {
            for i in 0..n {
                block_table[b * max_pages + i] = next.next().expect("enough pages") as i64;
            }
        }
        total * page
    } else {
        case.seq_k.iter().sum()
    };
    let k = random(rng, kv_rows * hkv * d);
    let v = random(rng, kv_rows * hkv * d);
    let slopes = (0..hq).map(|_| rng.random_range(0.0f32..0.5)).collect();
    let prefix_k = random(rng, case.prefix_len * hkv * d);
    let prefix_v = random(rng, case.prefix_len * hkv * d);
    let trees = (0..if case.tree_per_sequence { batch } else { 1 })
        .map(|_| (0..case.n_tree).map(|t| rng.random_range(-1..t as i32)).collect())
        .collect();
    Built {
        q,
        k,
        v,
        slopes,
        prefix_k,
        prefix_v,
        trees,
        cu_q: cumulative(&case.seq_q),
        cu_k: cumulative(&case.seq_k),
        block_table,
        max_pages,
        seq_lens: case.seq_k.iter().map(|&s| s as i64).collect(),
    }
}

/// The expected output and LSE, in the kernel's layouts, one sequence at a time.
fn expected(case: &VariantCase, b: &Built, scale: f64) -> (Vec<f64>, Vec<f64>) {
    expected_of(case, b, scale, false)
}

/// `expected`, or with `abs_v` the same attention of |V| (and |prefix V|): per output element
/// `sum_j p_j |v_j|`, what rounding the probabilities can move it by (in half ulps).
fn expected_of(case: &VariantCase, b: &Built, scale: f64, abs_v: bool) -> (Vec<f64>, Vec<f64>) {
    let f = case.features;
    let round = |x: &[f32]| reference::round_to_dtype(x, case.dtype);
    let (q, k, v, pk, pv) = (round(&b.q), round(&b.k), round(&b.v), round(&b.prefix_k), round(&b.prefix_v));
    let abs = |x: Vec<f32>| if abs_v { x.into_iter().map(f32::abs).collect() } else { x };
    let (v, pv) = (abs(v), abs(pv));
    let (hq, hkv, d) = (case.heads.0 as usize, case.heads.1 as usize, case.head_dim as usize);
    let opts = VariantOptions {
        causal: case.causal,
        window_left: case.window.left,
        window_right: case.window.right,
        softcap: case.softcap.map(f64::from),
        alibi_slopes: f.alibi.then_some(&b.slopes[..]),
        prefix: f.prefix.then_some(PrefixKv { k: &pk, v: &pv, len: case.prefix_len }),
        tree: None,
    };
    let total_q: usize = case.seq_q.iter().sum();
    let mut out = vec![0.0f64; total_q * hq * d];
    let mut lse = vec![0.0f64; total_q * hq];
    let (kv_row, q_row) = (hkv * d, hq * d);
    for (s, (&sq, &sk)) in case.seq_q.iter().zip(&case.seq_k).enumerate() {
        let q0 = b.cu_q[s] as usize;
        let seq_q = &q[q0 * q_row..(q0 + sq) * q_row];
        let (seq_k, seq_v) = if f.paged {
            let (mut ks, mut vs) = (Vec::with_capacity(sk * kv_row), Vec::with_capacity(sk * kv_row));
            for j in 0..sk {
                let page = b.block_table[s * b.max_pages + j / case.page_size] as usize;
                let at = (page * case.page_size + j % case.page_size) * kv_row;
                ks.extend_from_slice(&k[at..at + kv_row]);
                vs.extend_from_slice(&v[at..at + kv_row]);
            }
            (ks, vs)
        } else {
            let k0 = b.cu_k[s] as usize;
            (k[k0 * kv_row..(k0 + sk) * kv_row].to_vec(), v[k0 * kv_row..(k0 + sk) * kv_row].to_vec())
        };
        let dims = SequenceDims { seq_q: sq, seq_k: sk, heads_q: hq, heads_kv: hkv, head_dim: d };
        let parents = f.tree.then(|| &b.trees[if case.tree_per_sequence { s } else { 0 }][..]);
        let r = reference::attention_sequence(seq_q, &seq_k, &seq_v, &dims, &opts, parents, scale);
        out[q0 * q_row..(q0 + sq) * q_row].copy_from_slice(&r.out);
        for h in 0..hq {
            for i in 0..sq {
                // varlen: [heads_q, total_q]; dense: [batch, heads_q, seq_q].
                let at = if f.varlen { h * total_q + q0 + i } else { (s * hq + h) * sq + i };
                lse[at] = r.lse[h * sq + i];
            }
        }
    }
    (out, lse)
}

fn run_case(case: &VariantCase, backend: &dyn Backend) -> Result<(Built, tessera::runtime::AttentionOutput), RuntimeError> {
    let f = case.features;
    let mut rng = StdRng::seed_from_u64(case.seed);
    let b = build(case, &mut rng);
    let spec = case.spec();
    let batch = case.seq_q.len();
    let problem = AttentionProblem {
        batch: if f.varlen { 0 } else { batch },
        seq_q: if f.varlen { 0 } else { case.seq_q[0] },
        seq_k: if f.varlen || f.paged { 0 } else { case.seq_k[0] },
        heads_q: case.heads.0 as usize,
        heads_kv: case.heads.1 as usize,
        head_dim: case.head_dim as usize,
    };
    let problem = if f.paged && !f.varlen { AttentionProblem { seq_k: 0, ..problem } } else { problem };
    let parents: Vec<i64> = b.trees.iter().flatten().map(|&p| i64::from(p)).collect();
    let mut inputs = AttentionInputs::dense(problem, &b.q, &b.k, &b.v);
    inputs.window = case.window;
    inputs.softcap = case.softcap;
    inputs.alibi_slopes = f.alibi.then_some(&b.slopes[..]);
    inputs.prefix = f.prefix.then_some(PrefixInputs { k: &b.prefix_k, v: &b.prefix_v, len: case.prefix_len });
    inputs.tree = f.tree.then_some(TreeInputs { parents: &parents, per_sequence: case.tree_per_sequence });
    inputs.varlen = f.varlen.then_some(VarlenInputs { cu_seqlens_q: &b.cu_q, cu_seqlens_k: (!f.paged).then_some(&b.cu_k[..]) });
    inputs.paged = f.paged.then_some(PagedKv {
        page_size: case.page_size,
        block_table: &b.block_table,
        max_pages: b.max_pages,
        seq_lens: &b.seq_lens,
    });
    inputs.num_splits = case.num_splits;
    let got = run_attention_variant(backend, compiler(), &spec, &inputs, None, true)?;
    Ok((b, got))
}

fn check(case: &VariantCase) -> Result<(), TestCaseError> {
    check_on(case, backend()).map(|_| ())
}

/// Runs `case` on `backend` and compares O and LSE with the reference; returns the kernel that ran.
fn check_on(case: &VariantCase, backend: &dyn Backend) -> Result<String, TestCaseError> {
    let spec = case.spec();
    let label = spec.kernel_name(backend.arch());
    let (b, got) = run_case(case, backend).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    let scale = 1.0 / (case.head_dim as f64).sqrt();
    let (out, lse) = expected(case, &b, f64::from(scale as f32));
    let cmp = reference::compare(&got.out, &out);
    prop_assert!(cmp.passes(reference::tolerance(case.dtype)), "{}: output {:?}", label, cmp);
    // The L2 check above can hide a few wrong elements in a large output: bound each one.
    let (mass, _) = expected_of(case, &b, f64::from(scale as f32), true);
    common::within_bounds(&got.out, &out, |i| common::attention_element_bound(case.dtype, out[i], mass[i]))
        .map_err(|e| TestCaseError::fail(format!("{label}: output {e}")))?;
    let got_lse = got.lse.expect("lse requested");
    prop_assert_eq!(got_lse.len(), lse.len());
    for (i, (&g, &w)) in got_lse.iter().zip(&lse).enumerate() {
        if w == f64::NEG_INFINITY {
            prop_assert!(g == f32::NEG_INFINITY, "{}: lse[{}] = {} for a row that sees no key", label, i, g);
        } else {
            prop_assert!((f64::from(g) - w).abs() <= LSE_TOL * w.abs().max(1.0), "{}: lse[{}] = {}, want {}", label, i, g, w);
        }
    }
    Ok(got.kernel)
}

fn features(list: &str) -> AttentionFeatures {
    AttentionFeatures::parse(list).expect("feature names")
}

/// Sequence lengths for packed batches: 0 and 1 often, tile edges, anything up to 90.
fn seq_len() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 2 => Just(1usize), 1 => prop::sample::select(vec![63usize, 64, 65]), 4 => 2usize..=90]
}

fn window() -> impl Strategy<Value = Window> {
    let side = prop::option::weighted(0.7, 0usize..40);
    (side.clone(), side).prop_map(|(left, right)| Window { left, right })
}

fn dtype() -> impl Strategy<Value = ElemType> {
    prop::sample::select(ElemType::MMA_INPUTS.to_vec())
}

fn base(features: AttentionFeatures, causal: bool, head_dim: u32, heads: (u32, u32), dtype: ElemType, seed: u64) -> VariantCase {
    VariantCase {
        dtype,
        head_dim,
        heads,
        causal,
        features,
        seq_q: vec![],
        seq_k: vec![],
        window: Window::default(),
        softcap: None,
        prefix_len: 0,
        n_tree: 0,
        tree_per_sequence: false,
        page_size: 16,
        num_splits: None,
        seed,
    }
}

/// Window + GQA + varlen: per-sequence windows, causal or not, packed GQA or not.
fn window_gqa_varlen() -> impl Strategy<Value = VariantCase> {
    let lens = prop::collection::vec((seq_len(), seq_len()), 1..=4);
    (dtype(), any::<bool>(), any::<bool>(), window(), lens, any::<u64>()).prop_map(|(dtype, causal, pack, window, lens, seed)| {
        let list = if pack { "local,varlen,pack_gqa" } else { "local,varlen" };
        let mut c = base(features(list), causal, 64, (8, 2), dtype, seed);
        c.window = window;
        (c.seq_q, c.seq_k) = lens.into_iter().unzip();
        c
    })
}

/// Prefix tuning with causal own keys (and ALiBi on some): dense batches.
fn prefix_causal() -> impl Strategy<Value = VariantCase> {
    (dtype(), any::<bool>(), 1usize..=2, 1usize..=70, 1usize..=70, 1usize..=70, any::<u64>()).prop_map(
        |(dtype, alibi, batch, sq, sk, prefix_len, seed)| {
            let mut c = base(features(if alibi { "prefix,alibi" } else { "prefix" }), true, 64, (4, 2), dtype, seed);
            c.seq_q = vec![sq; batch];
            c.seq_k = vec![sk; batch];
            c.prefix_len = prefix_len;
            c
        },
    )
}

/// Tree verification over a paged cache: n_tree candidates after a context, split-KV and GQA
/// packing, one tree for all or one per sequence.
fn tree_paged() -> impl Strategy<Value = VariantCase> {
    let ctx = prop::collection::vec(0usize..=120, 1..=3);
    (dtype(), 1usize..=24, ctx, 0usize..=3, any::<bool>(), prop::sample::select(vec![16usize, 32]), prop::option::of(1usize..=4), any::<u64>())
        .prop_map(|(dtype, n_tree, ctx, extra_q, per_seq, page, splits, seed)| {
            let mut c = base(features("tree,paged,split_kv,pack_gqa"), true, 64, (8, 2), dtype, seed);
            c.n_tree = n_tree;
            c.tree_per_sequence = per_seq;
            c.seq_q = vec![n_tree + extra_q; ctx.len()];
            c.seq_k = ctx.iter().map(|&k| k + n_tree + extra_q).collect();
            c.page_size = page;
            c.num_splits = splits;
            c
        })
}

/// ALiBi + soft-capping, with and without a window, at head_dim 128.
fn alibi_softcap() -> impl Strategy<Value = VariantCase> {
    (dtype(), any::<bool>(), any::<bool>(), window(), 1usize..=2, 1usize..=80, 1usize..=80, 5.0f32..50.0, any::<u64>()).prop_map(
        |(dtype, causal, local, window, batch, sq, sk, cap, seed)| {
            let list = if local { "alibi,softcap,local" } else { "alibi,softcap" };
            let mut c = base(features(list), causal, 128, (4, 1), dtype, seed);
            if local {
                c.window = window;
            }
            c.seq_q = vec![sq; batch];
            c.seq_k = vec![sk; batch];
            // A small cap with a large scale makes the tanh saturate: scores well past the cap.
            c.softcap = Some(cap / 10.0);
            c
        },
    )
}

/// Paged decode: seq_q 1..16, GQA 8:1 or 4:1 packed into one CTA per KV head, split-KV.
fn paged_decode() -> impl Strategy<Value = VariantCase> {
    let lens = prop::collection::vec(0usize..=300, 1..=3);
    (dtype(), 1usize..=16, lens, prop::sample::select(vec![(8u32, 1u32), (8, 2)]), prop::sample::select(vec![16usize, 64]), prop::option::of(1usize..=8), any::<bool>(), any::<u64>())
        .prop_map(|(dtype, sq, lens, heads, page, splits, causal, seed)| {
            let mut c = base(features("paged,pack_gqa,split_kv"), causal, 128, heads, dtype, seed);
            c.seq_q = vec![sq; lens.len()];
            c.seq_k = lens;
            c.page_size = page;
            c.num_splits = splits;
            c
        })
}

/// Every feature at once, on packed sequences over a paged cache.
fn everything() -> impl Strategy<Value = VariantCase> {
    let lens = prop::collection::vec((1usize..=40, 0usize..=60), 1..=3);
    (dtype(), window(), lens, 1usize..=8, 1usize..=30, any::<u64>()).prop_map(|(dtype, window, lens, n_tree, prefix_len, seed)| {
        let mut c = base(features("local,alibi,softcap,prefix,tree,varlen,paged,pack_gqa,split_kv"), true, 64, (4, 2), dtype, seed);
        c.window = window;
        // The candidates are the last n_tree queries and keys of every sequence.
        let n = n_tree.min(lens.iter().map(|&(q, _)| q).min().unwrap_or(1));
        c.n_tree = n;
        c.tree_per_sequence = true;
        c.seq_q = lens.iter().map(|&(q, _)| q).collect();
        c.seq_k = lens.iter().map(|&(q, k)| q + k).collect();
        c.softcap = Some(8.0);
        c.prefix_len = prefix_len;
        c.page_size = 16;
        c
    })
}

/// The score-side variants on the sm_90a kernel (TMA + wgmma, 128-row CTAs, 128-key tiles at
/// head_dim 64/128): any non-empty mix of window, ALiBi and softcap, causal or not, GQA or not,
/// lengths up to 300 (several m_blocks and key tiles, windows that skip tiles on both sides).
fn sm90a_score_variants() -> impl Strategy<Value = VariantCase> {
    let side = prop::option::weighted(0.7, 0usize..200);
    let window = (side.clone(), side).prop_map(|(left, right)| Window { left, right });
    let heads = prop::sample::select(vec![(4u32, 1u32), (2, 2)]);
    (dtype(), any::<bool>(), 1usize..8, prop::sample::select(vec![64u32, 128]), heads, window, (1usize..=2, 1usize..=300, 1usize..=300), 5.0f32..50.0, any::<u64>())
        .prop_map(|(dtype, causal, mask, head_dim, heads, window, (batch, sq, sk), cap, seed)| {
            let names: Vec<&str> = ["local", "alibi", "softcap"].into_iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, n)| n).collect();
            let mut c = base(features(&names.join(",")), causal, head_dim, heads, dtype, seed);
            if c.features.local {
                c.window = window;
            }
            if c.features.softcap {
                c.softcap = Some(cap / 10.0);
            }
            c.seq_q = vec![sq; batch];
            c.seq_k = vec![sk; batch];
            c
        })
}

/// A case that must run on the sm_90a kernel.
fn check_sm90a(case: &VariantCase) -> Result<(), TestCaseError> {
    prop_assert!(case.spec().hopper_tile(Arch::SM90A).is_ok(), "{:?}", case.spec());
    let kernel = check_on(case, hopper_backend())?;
    prop_assert!(kernel.contains("_sm90a_"), "{} is not the sm_90a kernel", kernel);
    Ok(())
}

/// Window edges on the sm_90a kernel's 128-key tiles: a left window of 1 or 129 puts the first
/// visible key of the m_blocks at rows 128 and 256 on key 127, the last key of a tile the window
/// otherwise skips; left 100 with a right window of 40 skips tiles on both sides; 600 queries make
/// five m_blocks whose key ranges start past tile 0 and span two or three tiles.
#[test]
fn sm90a_window_edges_and_skipped_tiles() {
    let mut seed = 70;
    for (causal, left, right) in [(true, Some(1), None), (true, Some(129), None), (false, Some(100), Some(40)), (false, None, Some(3))] {
        for head_dim in [64u32, 128] {
            let mut c = base(features("local"), causal, head_dim, (2, 1), ElemType::BF16, seed);
            c.window = Window { left, right };
            c.seq_q = vec![600];
            c.seq_k = vec![600];
            if let Err(e) = check_sm90a(&c) {
                panic!("{e}\n{c:?}");
            }
            seed += 1;
        }
    }
}

proptest! {
    #![proptest_config(config_from("TESSERA_SIM_SM90A_CASES", 10))]
    #[test]
    fn sm90a_score_variants_match_reference(case in sm90a_score_variants()) { check_sm90a(&case)?; }
}

/// `default` cases, or the number in the environment variable `var`.
fn config_from(var: &str, default: u32) -> ProptestConfig {
    let cases = std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, max_shrink_iters: 8, failure_persistence: None, ..ProptestConfig::default() }
}

fn config() -> ProptestConfig {
    config_from("TESSERA_SIM_CASES", 12)
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn window_gqa_varlen_matches_reference(case in window_gqa_varlen()) { check(&case)?; }
    #[test]
    fn prefix_causal_matches_reference(case in prefix_causal()) { check(&case)?; }
    #[test]
    fn tree_paged_matches_reference(case in tree_paged()) { check(&case)?; }
    #[test]
    fn alibi_softcap_matches_reference(case in alibi_softcap()) { check(&case)?; }
    #[test]
    fn paged_decode_matches_reference(case in paged_decode()) { check(&case)?; }
    #[test]
    fn all_features_together_match_reference(case in everything()) { check(&case)?; }
}

fn run(case: VariantCase) {
    if let Err(e) = check(&case) {
        panic!("{e}\n{case:?}");
    }
}

#[test]
fn varlen_with_empty_and_single_token_sequences() {
    let mut c = base(features("varlen"), true, 64, (2, 1), ElemType::BF16, 11);
    c.seq_q = vec![0, 1, 5, 0, 1, 70];
    c.seq_k = vec![3, 0, 1, 0, 1, 66];
    run(c.clone());
    c.features = features("varlen,pack_gqa,split_kv");
    c.num_splits = Some(3);
    run(c);
}

#[test]
fn trees_wider_than_one_mask_word() {
    // 70 and 130 candidates: two and three 64-bit ancestor words per node, one tree per sequence.
    for (n_tree, context, seed) in [(70usize, 30usize, 21u64), (130, 5, 22)] {
        let mut c = base(features("tree"), true, 64, (2, 1), ElemType::BF16, seed);
        c.n_tree = n_tree;
        c.tree_per_sequence = true;
        c.seq_q = vec![n_tree; 2];
        c.seq_k = vec![n_tree + context; 2];
        run(c);
    }
}

#[test]
fn fully_masked_rows_are_zero_with_neg_inf_lse() {
    // A window of (0, 0) without causal: each query sees exactly its diagonal key, and with
    // seq_q > seq_k the first queries have a diagonal before key 0 and see nothing.
    let mut c = base(features("local"), false, 64, (2, 2), ElemType::F16, 5);
    c.seq_q = vec![40];
    c.seq_k = vec![17];
    c.window = Window { left: Some(0), right: Some(0) };
    run(c);
}

#[test]
fn bad_inputs_are_rejected_before_launch() {
    let spec = AttentionSpec::new(ElemType::BF16, 64, true, 2, 1);
    let problem = AttentionProblem { batch: 0, seq_q: 0, seq_k: 0, heads_q: 2, heads_kv: 1, head_dim: 64 };
    let q = vec![0.0f32; 5 * 2 * 64];
    let k = vec![0.0f32; 5 * 64];
    let arg = |spec: &AttentionSpec, inputs: &AttentionInputs| match run_attention_variant(backend(), compiler(), spec, inputs, None, false) {
        Err(RuntimeError::InvalidArgument { arg, message }) => format!("{arg}: {message}"),
        other => panic!("expected an argument error, got {other:?}"),
    };
    // cu_seqlens not monotone, or not matching the packed length.
    let varlen = spec.with_features(features("varlen"));
    let mut inputs = AttentionInputs::dense(problem, &q, &k, &k);
    inputs.varlen = Some(VarlenInputs { cu_seqlens_q: &[0, 3, 2, 5], cu_seqlens_k: Some(&[0, 1, 2, 5]) });
    assert!(arg(&varlen, &inputs).starts_with("cu_seqlens_q[2]: 2 is below"), "{}", arg(&varlen, &inputs));
    inputs.varlen = Some(VarlenInputs { cu_seqlens_q: &[0, 2, 4], cu_seqlens_k: Some(&[0, 1, 5]) });
    assert!(arg(&varlen, &inputs).starts_with("cu_seqlens_q: ends at 4"), "{}", arg(&varlen, &inputs));
    // A page index out of range.
    let paged = spec.with_features(features("paged"));
    let cache = vec![0.0f32; 2 * 16 * 64];
    let q1 = vec![0.0f32; 2 * 2 * 64];
    let dense = AttentionProblem { batch: 2, seq_q: 1, ..problem };
    let mut inputs = AttentionInputs::dense(dense, &q1, &cache, &cache);
    inputs.paged = Some(PagedKv { page_size: 16, block_table: &[0, -1, 1, 7], max_pages: 2, seq_lens: &[10, 20] });
    assert!(arg(&paged, &inputs).starts_with("block_table[1][1]: page 7 is out of range"), "{}", arg(&paged, &inputs));
    inputs.paged = Some(PagedKv { page_size: 8, block_table: &[0, 1, 1, 0], max_pages: 2, seq_lens: &[10, 3] });
    assert!(arg(&paged, &inputs).contains("page_size"), "{}", arg(&paged, &inputs));
    // Parents that do not form a tree.
    let tree = spec.with_features(features("tree"));
    let dense = AttentionProblem { batch: 1, seq_q: 5, seq_k: 5, ..problem };
    let mut inputs = AttentionInputs::dense(dense, &q, &k, &k);
    inputs.tree = Some(TreeInputs { parents: &[-1, 0, 3, 1], per_sequence: false });
    assert!(arg(&tree, &inputs).starts_with("tree.parents[2]"), "{}", arg(&tree, &inputs));
    // A feature's input without the feature, and the feature without its input.
    let mut inputs = AttentionInputs::dense(dense, &q, &k, &k);
    inputs.softcap = Some(30.0);
    assert!(arg(&spec, &inputs).starts_with("softcap: given, but the kernel spec lacks"), "{}", arg(&spec, &inputs));
    let alibi = spec.with_features(features("alibi"));
    let inputs = AttentionInputs::dense(dense, &q, &k, &k);
    assert!(arg(&alibi, &inputs).starts_with("alibi_slopes: required"), "{}", arg(&alibi, &inputs));
}

/// Bytes the kernel copies with cp.async: every Q row once, and for each CTA the valid rows of the
/// K and V tiles between the window's left edge and the causal edge of its last row.
fn expected_copy_bytes(seq: usize, block_m: usize, block_n: usize, left: Option<usize>, d: usize) -> u64 {
    let row_bytes = (d * 2) as u64;
    let mut bytes = seq as u64 * row_bytes;
    for row0 in (0..seq).step_by(block_m) {
        let last = (row0 + block_m).min(seq) - 1;
        let lo = left.map_or(0, |l| row0.saturating_sub(l));
        let hi = last + 1;
        for t in lo / block_n..hi.div_ceil(block_n) {
            let rows = ((t + 1) * block_n).min(seq) - t * block_n;
            bytes += 2 * rows as u64 * row_bytes;
        }
    }
    bytes
}

#[test]
fn tiles_outside_the_mask_are_never_loaded() {
    // One head, seq 700, window 64 / 65 to the left of a causal diagonal: each 128-row CTA reads at
    // most 4 key tiles of 64 instead of up to 11. With 65, the CTA at row 128 starts exactly at the
    // last key of tile 0 (128 - 65 = 63): one tile more, which an off-by-one at the window's edge
    // would skip. A backend of its own, so the statistics are this launch's.
    let sim = SimBackend::with_options(ARCH, SimOptions { checks: true, ..SimOptions::default() });
    let (seq, d) = (700usize, 64usize);
    let mut measured = Vec::new();
    for (list, left) in [("", None), ("local", Some(64usize)), ("local", Some(65))] {
        let mut c = base(features(list), true, d as u32, (1, 1), ElemType::BF16, 3);
        c.seq_q = vec![seq];
        c.seq_k = vec![seq];
        c.window = Window { left, right: None };
        let tile = c.spec().tile_for(ARCH);
        let (b, got) = run_case(&c, &sim).unwrap_or_else(|e| panic!("{list}: {e}"));
        let stats = sim.last_stats().expect("a launch ran");
        let want = expected_copy_bytes(seq, tile.block_m as usize, tile.block_n as usize, left, d);
        assert_eq!(stats.async_copy_bytes, want, "{list}: bytes copied from global memory");
        let (out, _) = expected(&c, &b, f64::from((1.0 / (d as f64).sqrt()) as f32));
        assert!(reference::compare(&got.out, &out).passes(reference::tolerance(ElemType::BF16)));
        measured.push(stats.async_copy_bytes);
    }
    // Full causal reads ~ seq^2/2 keys; the window reads ~ seq * (64 + tile).
    assert!(measured[1] * 2 < measured[0], "window {} vs causal {}", measured[1], measured[0]);
    // Without causal skipping the plain kernel would copy every tile for every CTA.
    let dense = (seq as u64) * 128 + 6 * 2 * (seq as u64) * 128;
    assert!(measured[0] < dense, "causal {} vs all tiles {dense}", measured[0]);
}

/// The sm_90a kernel's TMA loads (the simulator counts the in-tensor bytes of each box) cover
/// exactly the key tiles a causal window allows: seq 700 in 128-row m_blocks and 128-key tiles;
/// a left window of 128 starts the m_block at row 256 on tile 1, one of 129 on key 127 of tile 0.
#[test]
fn sm90a_loads_only_the_tiles_inside_the_window() {
    let sim = SimBackend::with_options(Arch::SM90A, SimOptions { checks: true, ..SimOptions::default() });
    let (seq, d) = (700usize, 64usize);
    let mut measured = Vec::new();
    for (list, left) in [("", None), ("local", Some(128usize)), ("local", Some(129))] {
        let mut c = base(features(list), true, d as u32, (1, 1), ElemType::BF16, 4);
        c.seq_q = vec![seq];
        c.seq_k = vec![seq];
        c.window = Window { left, right: None };
        let tile = c.spec().hopper_tile(Arch::SM90A).unwrap_or_else(|e| panic!("{list}: {e}"));
        let (b, got) = run_case(&c, &sim).unwrap_or_else(|e| panic!("{list}: {e}"));
        assert!(got.kernel.contains("_sm90a_"), "{}", got.kernel);
        let stats = sim.last_stats().expect("a launch ran");
        let want = expected_copy_bytes(seq, 128, tile.block_n as usize, left, d);
        assert_eq!(stats.async_copy_bytes, want, "{list} {left:?}: bytes copied from global memory");
        let (out, _) = expected(&c, &b, f64::from((1.0 / (d as f64).sqrt()) as f32));
        assert!(reference::compare(&got.out, &out).passes(reference::tolerance(ElemType::BF16)));
        measured.push(stats.async_copy_bytes);
    }
    assert!(measured[1] < measured[2] && measured[2] < measured[0], "{measured:?}");
}

/// The same scenarios on a real GPU (NVRTC to CUBIN, the CUDA driver): 8 cases each, fresh inputs.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_every_scenario_matches_reference() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let gpu = open_backend(BackendKind::Cuda).unwrap_or_else(|e| panic!("this test needs a CUDA GPU: {e}"));
    let mut runner = TestRunner::default();
    let scenarios: Vec<(&str, BoxedStrategy<VariantCase>)> = vec![
        ("window_gqa_varlen", window_gqa_varlen().boxed()),
        ("prefix_causal", prefix_causal().boxed()),
        ("tree_paged", tree_paged().boxed()),
        ("alibi_softcap", alibi_softcap().boxed()),
        ("paged_decode", paged_decode().boxed()),
        ("everything", everything().boxed()),
    ];
    for (name, strategy) in scenarios {
        for _ in 0..8 {
            let case = strategy.new_tree(&mut runner).expect("a case").current();
            if let Err(e) = check_on(&case, gpu.as_ref()) {
                panic!("{name}: {e}\n{case:?}");
            }
        }
    }
}
