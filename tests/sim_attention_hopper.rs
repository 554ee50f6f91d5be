//! The sm_90a attention kernel (TMA + mbarrier ring + wgmma, producer/consumer warpgroups) on the
//! simulator against the f64 reference: fresh random cases (head_dim 64/128/256, f16/bf16, causal
//! or not, MHA/GQA, sequence lengths off the 128-row and key tiles), outputs poisoned with NaN,
//! simulator checks on (bounds, races, in-flight TMA and wgmma operands, async-proxy fences,
//! mbarrier misuse, deadlock). `TESSERA_SIM_HOPPER_CASES=N` sets the cases per head_dim (default 4).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::HopperTile;
use tessera::runtime::common::buffers::{encode, POISON_16};
use tessera::runtime::reference;
use tessera::runtime::{prepare_attention, run_attention, AttentionBuffers, AttentionProblem, AttentionStrides, Backend};
use tessera::{Arch, AttentionSpec, ElemType};

mod common;
use common::{compiler, hopper_backend};

const LSE_TOL: f64 = 1e-4;

#[derive(Clone, Debug)]
struct Case {
    dtype: ElemType,
    head_dim: u32,
    causal: bool,
    heads: (u32, u32),
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    seed: u64,
    /// An explicit sm_90a tile (a tuned one); `None` runs the head_dim's default.
    tile: Option<HopperTile>,
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let mut spec = AttentionSpec::new(case.dtype, case.head_dim, case.causal, case.heads.0, case.heads.1);
    spec.hopper_tile = case.tile;
    let routed = spec.hopper_tile(Arch::SM90A);
    prop_assert!(routed.is_ok() && case.tile.map_or(true, |t| routed == Ok(t)), "{:?}", routed);
    let p = AttentionProblem::for_spec(&spec, case.batch, case.seq_q, case.seq_k);
    let mut rng = StdRng::seed_from_u64(case.seed);
    let (q, k, v) = (random(&mut rng, p.q_elements()), random(&mut rng, p.kv_elements()), random(&mut rng, p.kv_elements()));
    let label = spec.kernel_name(Arch::SM90A);
    let got = run_attention(hopper_backend(), compiler(), &spec, &p, &q, &k, &v, None, true)
        .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    let round = |x: &[f32]| reference::round_to_dtype(x, spec.dtype);
    let want = reference::attention(&round(&q), &round(&k), &round(&v), &p, spec.causal, f64::from(p.default_scale()));
    let cmp = reference::compare(&got.out, &want.out);
    prop_assert!(cmp.passes(reference::tolerance(spec.dtype)), "{}: output {:?}", label, cmp);
    let lse = got.lse.expect("lse requested");
    for (i, (&g, &w)) in lse.iter().zip(&want.lse).enumerate() {
        if w == f64::NEG_INFINITY {
            prop_assert!(g == f32::NEG_INFINITY, "{}: lse[{}] = {} for a row that sees no key", label, i, g);
        } else {
            prop_assert!((f64::from(g) - w).abs() <= LSE_TOL * w.abs().max(1.0), "{}: lse[{}] = {}, want {}", label, i, g, w);
        }
    }
    Ok(())
}

fn seq_len() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(1usize), 2 => prop::sample::select(vec![63usize, 64, 127, 128, 129, 200]), 3 => 2usize..=260]
}

fn cases(head_dim: u32) -> impl Strategy<Value = Case> {
    let heads = prop::sample::select(vec![(1u32, 1u32), (2, 2), (4, 2), (2, 1)]);
    (prop::sample::select(ElemType::MMA_INPUTS.to_vec()), any::<bool>(), heads, 1usize..=2, seq_len(), seq_len(), any::<u64>()).prop_map(
        move |(dtype, causal, heads, batch, seq_q, seq_k, seed)| Case { dtype, head_dim, causal, heads, batch, seq_q, seq_k, seed, tile: None },
    )
}

fn config() -> ProptestConfig {
    let cases = std::env::var("TESSERA_SIM_HOPPER_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    ProptestConfig { cases, max_shrink_iters: 4, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn hopper_d64_matches_reference(case in cases(64)) { check(&case)?; }
    #[test]
    fn hopper_d128_matches_reference(case in cases(128)) { check(&case)?; }
    #[test]
    fn hopper_d256_matches_reference(case in cases(256)) { check(&case)?; }
}

#[test]
fn causal_rows_without_keys_and_single_rows() {
    for (seq_q, seq_k) in [(300, 20), (1, 1), (129, 1)] {
        let case = Case { dtype: ElemType::BF16, head_dim: 64, causal: true, heads: (2, 1), batch: 1, seq_q, seq_k, seed: 9, tile: None };
        if let Err(e) = check(&case) {
            panic!("{e}\n{case:?}");
        }
    }
}

/// Tiles other than the defaults (as the tuner may store them): 64-key tiles in a 3-deep ring at
/// d128 and 96-key tiles in a 4-deep ring at d64; 500 keys are 8 and 6 key tiles, so both rings
/// wrap within one work tile and the last key tile is partial. The launch runs the tile's own kernel.
#[test]
fn non_default_tiles_match_reference() {
    let tiles = [(128, HopperTile { block_n: 64, stages: 3 }, false), (64, HopperTile { block_n: 96, stages: 4 }, true)];
    for (i, (head_dim, tile, causal)) in tiles.into_iter().enumerate() {
        let case = Case { dtype: ElemType::F16, head_dim, causal, heads: (2, 1), batch: 1, seq_q: 150, seq_k: 500, seed: 20 + i as u64, tile: Some(tile) };
        if let Err(e) = check(&case) {
            panic!("{e}\n{case:?}");
        }
        let spec = AttentionSpec::new(case.dtype, head_dim, causal, 2, 1).with_hopper_tile(tile);
        let p = AttentionProblem::for_spec(&spec, 1, 150, 500);
        let b = buffers(hopper_backend(), &spec, &p);
        let bufs = AttentionBuffers { q: &b[0], k: &b[1], v: &b[2], o: &b[3], lse: None };
        let launch = prepare_attention(hopper_backend(), compiler(), &spec, &p, &AttentionStrides::contiguous(&p), &bufs, None).unwrap();
        let name = launch.kernel().unwrap().name().to_string();
        assert!(name.ends_with(&format!("_sm90a_{tile}")), "{name}");
    }
}

/// Device buffers for `p`, Q/K/V random, O poisoned.
fn buffers(backend: &dyn Backend, spec: &AttentionSpec, p: &AttentionProblem) -> Vec<tessera::runtime::DeviceBuffer> {
    let mut rng = StdRng::seed_from_u64(4);
    let upload = |data: Vec<u8>| {
        let b = backend.alloc(data.len().max(16)).expect("alloc");
        backend.write(&b, &data).expect("write");
        b
    };
    let q = upload(encode(&random(&mut rng, p.q_elements()), spec.dtype));
    let k = upload(encode(&random(&mut rng, p.kv_elements()), spec.dtype));
    let v = upload(encode(&random(&mut rng, p.kv_elements()), spec.dtype));
    let o = upload(POISON_16.to_le_bytes().repeat(p.q_elements()));
    vec![q, k, v, o]
}

#[test]
fn plain_specs_route_to_sm90a_and_fall_back_with_a_reason() {
    let backend = hopper_backend();
    let spec = AttentionSpec::new(ElemType::BF16, 128, true, 2, 1);
    // Routed: the launch runs the sm_90a kernel.
    let p = AttentionProblem::for_spec(&spec, 1, 70, 90);
    let b = buffers(backend, &spec, &p);
    let bufs = AttentionBuffers { q: &b[0], k: &b[1], v: &b[2], o: &b[3], lse: None };
    let launch = prepare_attention(backend, compiler(), &spec, &p, &AttentionStrides::contiguous(&p), &bufs, None).unwrap();
    assert!(launch.kernel().unwrap().name().contains("_sm90a_"), "{}", launch.kernel().unwrap().name());
    assert!(launch.note().is_none());
    // seq_k = 0 cannot be a tensor map: the mma.sync kernel runs, and the note says why.
    let p = AttentionProblem::for_spec(&spec, 1, 70, 0);
    let b = buffers(backend, &spec, &p);
    let bufs = AttentionBuffers { q: &b[0], k: &b[1], v: &b[2], o: &b[3], lse: None };
    let launch = prepare_attention(backend, compiler(), &spec, &p, &AttentionStrides::contiguous(&p), &bufs, None).unwrap();
    assert!(!launch.kernel().unwrap().name().contains("_sm90a_"));
    assert!(launch.note().unwrap().contains("seq_k is 0"), "{:?}", launch.note());
    launch.run(backend).unwrap();
    // A variant that changes addressing runs the mma.sync kernel (routing is static: no note
    // needed); the score-side ones take the sm_90a kernel.
    let paged = spec.with_features(tessera::AttentionFeatures { paged: true, ..Default::default() });
    assert!(paged.hopper_tile(Arch::SM90A).unwrap_err().contains("paged"));
    let local = spec.with_features(tessera::AttentionFeatures { local: true, ..Default::default() });
    assert!(local.hopper_tile(Arch::SM90A).is_ok());
}
