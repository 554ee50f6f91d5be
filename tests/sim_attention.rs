//! Attention on the CPU simulator (`tessera-sim`, which interprets the PTX NVRTC generates) against
//! the f64 reference: property tests over shapes, dtypes, head counts, masks and tile configs, plus
//! deterministic edge cases. Needs NVRTC (`bash .ci/provision`), no GPU.
//!
//! Every case goes through `run_attention`, which poisons both outputs with NaN before the launch,
//! so an element the kernel never writes fails `compare` (NaN never passes). The simulator runs with
//! its checks on: an out-of-bounds access, a shared-memory race, a read of shared memory still in
//! flight or a deadlock makes the launch fail with the simulator's report, which fails the case.
//!
//! Compile cost: NVRTC takes about half a second per distinct kernel. One `Compiler` with a disk
//! cache under `CARGO_TARGET_TMPDIR` is shared by every case, and each run draws a bounded number
//! of specs: 12 cases per head dimension (72 in all, about 40 s of a debug test run on two cores,
//! most of it NVRTC). Set `TESSERA_SIM_CASES=N` for N per head dimension.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::ATTENTION_HEAD_DIMS;
use tessera::runtime::attention::{attention_params, launch_config};
use tessera::runtime::common::buffers::{decode, encode, POISON_16};
use tessera::runtime::reference;
use tessera::runtime::KernelParams;
use tessera::runtime::{attention_forward, run_attention, AttentionBuffers, AttentionProblem, AttentionStrides, Backend, TensorStrides};
use tessera::{Arch, AttentionSpec, ElemType, KernelSource, TileConfig};

mod common;
use common::{backend, compiler};

const ARCH: Arch = Arch::SM80;
/// Largest |lse - reference| accepted, relative to max(1, |reference|). The kernel's LSE is
/// (m + log2 l) ln 2 in f32; the host emulation measures 1.6e-7, so this leaves ample margin for
/// the simulator's ex2/lg2 while still catching any real error.
const LSE_TOL: f64 = 1e-4;

fn cases_per_head_dim() -> u32 {
    std::env::var("TESSERA_SIM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// One attention case; Debug is what proptest prints for a failure, so it holds everything needed
/// to rerun it (including the input seed).
#[derive(Clone, Debug)]
struct Case {
    dtype: ElemType,
    head_dim: u32,
    causal: bool,
    heads_q: u32,
    heads_kv: u32,
    tile: Option<TileConfig>,
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    /// Multiplies the default 1/sqrt(head_dim) softmax scale.
    scale_factor: f32,
    seed: u64,
}

impl Case {
    fn spec(&self) -> AttentionSpec {
        let spec = AttentionSpec::new(self.dtype, self.head_dim, self.causal, self.heads_q, self.heads_kv);
        match self.tile {
            Some(tile) => spec.with_tile(tile),
            None => spec,
        }
    }

    fn problem(&self) -> AttentionProblem {
        AttentionProblem::for_spec(&self.spec(), self.batch, self.seq_q, self.seq_k)
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Runs the case on the simulator and checks output and LSE against the f64 reference.
fn check(case: &Case) -> Result<(), TestCaseError> {
    let spec = case.spec();
    let p = case.problem();
    let label = format!("{} {p:?} scale x{}", spec.kernel_name(ARCH), case.scale_factor);
    let mut rng = StdRng::seed_from_u64(case.seed);
    let (q, k, v) = (random(&mut rng, p.q_elements()), random(&mut rng, p.kv_elements()), random(&mut rng, p.kv_elements()));
    let scale = p.default_scale() * case.scale_factor;
    let got = run_attention(backend(), compiler(), &spec, &p, &q, &k, &v, Some(scale), true)
        .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;

    let round = |x: &[f32]| reference::round_to_dtype(x, spec.dtype);
    let (q, k, v) = (round(&q), round(&k), round(&v));
    let want = reference::attention(&q, &k, &v, &p, spec.causal, f64::from(scale));
    let cmp = reference::compare(&got.out, &want.out);
    prop_assert!(cmp.passes(reference::tolerance(spec.dtype)), "{}: output {:?}", label, cmp);
    // The L2 check above can hide a few wrong elements in a large output: bound each one.
    let abs_v: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let mass = reference::attention(&q, &k, &abs_v, &p, spec.causal, f64::from(scale)).out;
    common::within_bounds(&got.out, &want.out, |i| common::attention_element_bound(spec.dtype, want.out[i], mass[i]))
        .map_err(|e| TestCaseError::fail(format!("{label}: output {e}")))?;

    let lse = got.lse.expect("lse requested");
    prop_assert_eq!(lse.len(), want.lse.len());
    for (i, (&g, &w)) in lse.iter().zip(&want.lse).enumerate() {
        if w == f64::NEG_INFINITY {
            prop_assert!(g == f32::NEG_INFINITY, "{}: lse[{}] = {} for a row that sees no key", label, i, g);
        } else {
            prop_assert!(
                (f64::from(g) - w).abs() <= LSE_TOL * w.abs().max(1.0),
                "{}: lse[{}] = {}, want {}",
                label,
                i,
                g,
                w
            );
        }
    }
    Ok(())
}

fn run(case: Case) {
    if let Err(e) = check(&case) {
        panic!("{e}\n{case:?}");
    }
}

/// Sequence lengths up to 150: 1, tile boundaries and their neighbours, and anything in between.
fn seq_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(1usize),
        3 => prop::sample::select(vec![31usize, 32, 33, 63, 64, 65, 127, 128, 129]),
        5 => 2usize..=150,
    ]
}

/// Cases for one head dimension: both dtypes, causal or not, MHA/GQA/MQA, the default tile or any
/// other valid tile for sm_80.
fn cases(head_dim: u32) -> impl Strategy<Value = Case> {
    let space: Vec<TileConfig> = AttentionSpec::new(ElemType::BF16, head_dim, false, 1, 1).space(ARCH).collect();
    assert!(!space.is_empty(), "head_dim {head_dim} has tiles");
    let heads = prop::sample::select(vec![(1u32, 1u32), (2, 2), (4, 2), (4, 1), (3, 1)]);
    let tile = prop::option::weighted(0.5, prop::sample::select(space));
    let scale = prop_oneof![3 => Just(1.0f32), 1 => 0.25f32..4.0];
    (prop::sample::select(ElemType::MMA_INPUTS.to_vec()), any::<bool>(), heads, tile, 1usize..=2, seq_len(), seq_len(), scale, any::<u64>())
        .prop_map(move |(dtype, causal, (heads_q, heads_kv), tile, batch, seq_q, seq_k, scale_factor, seed)| Case {
            dtype,
            head_dim,
            causal,
            heads_q,
            heads_kv,
            tile,
            batch,
            seq_q,
            seq_k,
            scale_factor,
            seed,
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases_per_head_dim(),
        // Each case is a simulated kernel launch: shrink briefly, the printed case is enough.
        max_shrink_iters: 8,
        // Fresh inputs every run; the failing case (with its seed) is printed instead of stored.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

macro_rules! head_dim_properties {
    ($($name:ident => $head_dim:expr),* $(,)?) => {
        $(
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn $name(case in cases($head_dim)) {
                    check(&case)?;
                }
            }
        )*
    };
}

head_dim_properties! {
    matches_reference_d32 => 32,
    matches_reference_d64 => 64,
    matches_reference_d96 => 96,
    matches_reference_d128 => 128,
    matches_reference_d192 => 192,
    matches_reference_d256 => 256,
}

#[test]
fn the_property_tests_cover_every_head_dim() {
    // The macro above lists the head dims by hand; fail if the codegen grows one.
    assert_eq!(ATTENTION_HEAD_DIMS, [32, 64, 96, 128, 192, 256]);
}

fn edge(dtype: ElemType, head_dim: u32, causal: bool, heads: (u32, u32), shape: (usize, usize, usize), seed: u64) -> Case {
    Case {
        dtype,
        head_dim,
        causal,
        heads_q: heads.0,
        heads_kv: heads.1,
        tile: None,
        batch: shape.0,
        seq_q: shape.1,
        seq_k: shape.2,
        scale_factor: 1.0,
        seed,
    }
}

#[test]
fn single_query_decode_step() {
    run(edge(ElemType::BF16, 128, true, (4, 1), (2, 1, 77), 1));
    run(edge(ElemType::F16, 64, false, (2, 2), (1, 1, 1), 2));
}

#[test]
fn single_key() {
    // Causal with one key: only the last query row sees it; every other row gets 0 and -inf.
    run(edge(ElemType::F16, 64, true, (2, 1), (1, 70, 1), 3));
    run(edge(ElemType::BF16, 32, false, (2, 2), (2, 70, 1), 4));
}

#[test]
fn causal_with_more_queries_than_keys_masks_whole_rows() {
    run(edge(ElemType::F16, 64, true, (2, 1), (1, 90, 30), 5));
    // A fully masked first query tile: 128-row CTAs, the first 100 rows see nothing.
    run(edge(ElemType::BF16, 96, true, (1, 1), (1, 140, 40), 6));
}

#[test]
fn no_keys_gives_zero_and_minus_infinity() {
    run(edge(ElemType::F16, 64, false, (2, 1), (1, 20, 0), 7));
}

#[test]
fn empty_problems_launch_nothing() {
    let spec = AttentionSpec::new(ElemType::F16, 64, false, 2, 1);
    for (batch, seq_q, seq_k) in [(0, 10, 10), (1, 0, 10), (0, 0, 0)] {
        let p = AttentionProblem::for_spec(&spec, batch, seq_q, seq_k);
        let zeros = |n: usize| vec![0.0f32; n];
        let out = run_attention(
            backend(),
            compiler(),
            &spec,
            &p,
            &zeros(p.q_elements()),
            &zeros(p.kv_elements()),
            &zeros(p.kv_elements()),
            None,
            true,
        )
        .unwrap();
        assert!(out.out.is_empty() && out.lse.unwrap().is_empty(), "{p:?}");
    }
}

#[test]
fn strided_layouts_match_contiguous_ones_and_leave_padding_alone() {
    let spec = AttentionSpec::new(ElemType::BF16, 64, true, 4, 2);
    let p = AttentionProblem::for_spec(&spec, 2, 70, 90);
    let b = backend();
    let mut rng = StdRng::seed_from_u64(11);
    let (q, k, v) = (random(&mut rng, p.q_elements()), random(&mut rng, p.kv_elements()), random(&mut rng, p.kv_elements()));
    let contiguous = run_attention(b, compiler(), &spec, &p, &q, &k, &v, None, false).unwrap();

    // Heads padded to 72 elements, rows by one extra head.
    let pad = |seq: usize, heads: usize| TensorStrides { batch: seq * (heads + 1) * 72, seq: (heads + 1) * 72, head: 72, dim: 1 };
    let strides = AttentionStrides { q: pad(p.seq_q, 4), k: pad(p.seq_k, 2), v: pad(p.seq_k, 2), o: pad(p.seq_q, 4) };
    let scatter = |data: &[f32], seq: usize, heads: usize, s: TensorStrides| {
        let mut out = vec![0.0f32; p.batch * s.batch];
        for bi in 0..p.batch {
            for t in 0..seq {
                for h in 0..heads {
                    for d in 0..p.head_dim {
                        out[bi * s.batch + t * s.seq + h * s.head + d] = data[((bi * seq + t) * heads + h) * p.head_dim + d];
                    }
                }
            }
        }
        out
    };
    let upload = |data: &[f32]| {
        let buf = b.alloc(data.len() * 2).unwrap();
        b.write(&buf, &encode(data, spec.dtype)).unwrap();
        buf
    };
    let qb = upload(&scatter(&q, p.seq_q, 4, strides.q));
    let kb = upload(&scatter(&k, p.seq_k, 2, strides.k));
    let vb = upload(&scatter(&v, p.seq_k, 2, strides.v));
    let ob = b.alloc(p.batch * strides.o.batch * 2).unwrap();
    b.write(&ob, &POISON_16.to_le_bytes().repeat(p.batch * strides.o.batch)).unwrap();
    let buffers = AttentionBuffers { q: &qb, k: &kb, v: &vb, o: &ob, lse: None };
    attention_forward(b, compiler(), &spec, &p, &strides, &buffers, None).unwrap();
    let mut raw = vec![0u8; ob.bytes()];
    b.read(&ob, &mut raw).unwrap();
    let strided = decode(&raw, spec.dtype);
    let expected = scatter(&contiguous.out, p.seq_q, 4, strides.o);
    for bi in 0..p.batch {
        for t in 0..p.seq_q {
            for h in 0..4 {
                let at = bi * strides.o.batch + t * strides.o.seq + h * strides.o.head;
                assert_eq!(&strided[at..at + p.head_dim], &expected[at..at + p.head_dim], "b{bi} t{t} h{h}");
                assert!(strided[at + p.head_dim..at + 72].iter().all(|x| x.is_nan()), "b{bi} t{t} h{h}: padding written");
            }
        }
    }
    for buf in [qb, kb, vb, ob] {
        b.free(buf).unwrap();
    }
}

/// Renders `spec`, applies `edit` (a `(from, to)` replacement that must match the template),
/// launches the result on the simulator with contiguous buffers and returns the launch's outcome.
fn run_broken(spec: &AttentionSpec, p: &AttentionProblem, from: &str, to: &str) -> tessera::runtime::Result<()> {
    let b = backend();
    let good = spec.render(ARCH).unwrap();
    assert!(good.cuda_src.contains(from), "the template changed: {from:?} is gone; update this test");
    let name = format!("{}_broken", good.name);
    let src = good.cuda_src.replace(from, to).replace(&format!("{}(", good.name), &format!("{name}("));
    let source = KernelSource::new(name, src, good.geometry);
    let kernel = b.load(&compiler().compile(&source, b.target()).unwrap()).unwrap();
    let mut rng = StdRng::seed_from_u64(99);
    let upload = |data: &[f32]| {
        let buf = b.alloc(data.len() * 2).unwrap();
        b.write(&buf, &encode(data, spec.dtype)).unwrap();
        buf
    };
    let (q, k, v) = (upload(&random(&mut rng, p.q_elements())), upload(&random(&mut rng, p.kv_elements())), upload(&random(&mut rng, p.kv_elements())));
    let o = b.alloc(p.q_elements() * 2).unwrap();
    let buffers = AttentionBuffers { q: &q, k: &k, v: &v, o: &o, lse: None };
    let params = attention_params(p, &AttentionStrides::contiguous(p), &buffers.spans(), p.default_scale()).unwrap();
    let config = launch_config(p, spec.rows_per_cta(ARCH), good.geometry).unwrap();
    // SAFETY: the parameters describe live buffers of this backend sized for the problem; the
    // edited kernel addresses the same memory as the original (the simulator checks it anyway).
    let result = unsafe { b.launch(&kernel, &config, params.as_bytes()) };
    for buf in [q, k, v, o] {
        b.free(buf).unwrap();
    }
    result
}

/// The clean runs above prove little about synchronisation unless the simulator stops a kernel
/// that gets it wrong: each edit below removes one barrier or wait the kernel needs, and the launch
/// must fail with a report naming the problem.
#[test]
fn the_simulator_reports_broken_synchronisation() {
    let spec = AttentionSpec::new(ElemType::F16, 64, false, 1, 1).with_tile(TileConfig::new(64, 32, 4, 2));
    let p = AttentionProblem::for_spec(&spec, 1, 64, 128);
    let cases: [(&str, &str, &str, &[&str]); 3] = [
        (
            "no barrier before reusing a K/V slot",
            "    // Tile t has landed for every thread, and every warp is done with tile t-1's slot.\n    sync_threads();",
            "",
            &["race", "cp.async is still copying", "never written"],
        ),
        (
            "waiting for one cp.async group too few",
            "cp_async_wait<(STAGES > 1 ? STAGES - 2 : 0)>();",
            "cp_async_wait<(STAGES > 1 ? STAGES - 1 : 0)>();",
            &["cp.async is still copying", "never written", "race"],
        ),
        (
            "a barrier only some warps reach",
            "    // Tile t has landed for every thread, and every warp is done with tile t-1's slot.\n    sync_threads();",
            "    if (threadIdx.x < 64) sync_threads();",
            &["barrier", "deadlock", "race"],
        ),
    ];
    let mut missed = Vec::new();
    for (what, from, to, words) in cases {
        match run_broken(&spec, &p, from, to) {
            Ok(()) => missed.push(format!("{what}: the launch succeeded")),
            Err(e) => {
                let msg = e.to_string();
                eprintln!("{what}: {msg}");
                if e.sim_report().is_none() || !words.iter().any(|w| msg.contains(w)) {
                    missed.push(format!("{what}: unexpected error {msg}"));
                }
            }
        }
    }
    assert!(missed.is_empty(), "broken kernels the simulator did not report:\n{}", missed.join("\n"));
}
