//! Fused LoRA, multi-adapter LoRA and the bottleneck adapter on the CPU simulator (`tessera-sim`
//! interprets the PTX NVRTC generates) against the f64 references: property tests over shapes
//! (M, N, K from 1, non-multiples of every tile), ranks 8-128, dtypes, output types, X/W layouts,
//! epilogues, column-tile groups, and adapter mixes (every row on one adapter, every row
//! different, sorted segments, some rows without an adapter, random). Needs NVRTC
//! (`bash .ci/provision`), no GPU.
//!
//! Every case goes through `run_lora`, which poisons Y with NaN before the launch (an unwritten
//! element fails `compare`), with the simulator's checks on (out-of-bounds accesses, shared-memory
//! races, reads of in-flight cp.async data). `TESSERA_SIM_LORA_CASES` sets the number of cases
//! (default 24; each is a distinct kernel, about a second of NVRTC).
//!
//! The sm_90a kernel (TMA ring, wgmma with X A on the main loop's X descriptors, T' B with T' from
//! registers, column-tile groups) runs the same checks on an sm_90a simulator, which also checks
//! TMA / wgmma operands in flight, async-proxy fences and mbarrier use; every such case asserts
//! that the sm_90a kernel ran (`TESSERA_SIM_LORA_HOPPER_CASES`, default 12).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::{Activation, AdapterMode, Epilogue, GemmTile, Layout, LoraSpec, ElemType, LORA_RANKS};
use tessera::runtime::reference::{self, LoraOperands};
use tessera::runtime::{run_lora, LoraInputs, LoraOutput, LoraProblem, SimBackend};
use tessera::Arch;

mod common;
use common::{backend, compiler, hopper_backend};

const ARCH: Arch = Arch::SM80;

/// Tiles small enough to simulate quickly; each must be in `LoraSpec::space` for every rank.
const TILES: [GemmTile; 3] =
    [GemmTile::new(64, 64, 32, 4, 2), GemmTile::new(64, 32, 32, 4, 1), GemmTile::new(128, 64, 32, 8, 3)];

fn cases() -> u32 {
    std::env::var("TESSERA_SIM_LORA_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

/// Relative L2 tolerance by output type. Inputs and T' are rounded identically for kernel and
/// reference, so what is left is f32 accumulation order, T' elements whose f32 and f64 values
/// round to neighbouring 16-bit values (one ulp of a few elements), ex2.approx in activations and
/// the final rounding to the output type.
fn tolerance(out: ElemType) -> f64 {
    match out {
        ElemType::BF16 => 1e-2,
        ElemType::F16 => 3e-3,
        ElemType::F32 => 2e-3,
        other => unreachable!("{other} is not a LoRA output type"),
    }
}

/// How rows are assigned to adapters in a per-row case.
#[derive(Clone, Copy, Debug)]
enum Mix {
    /// Every row on adapter `n - 1`.
    AllOne,
    /// Row m on adapter m % n (with n >= M: every row different).
    EveryRowDifferent,
    /// Contiguous segments per adapter, as a prefill batch sorted by adapter.
    Segments,
    /// Random ids, about a quarter of them -1.
    RandomWithNone,
}

#[derive(Clone, Debug)]
struct Case {
    spec: LoraSpec,
    m: usize,
    n: usize,
    k: usize,
    adapters: usize,
    mix: Mix,
    scale: f32,
    n_group: Option<usize>,
    seed: u64,
}

fn random(rng: &mut StdRng, n: usize, range: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-range..range)).collect()
}

fn ids_for(mix: Mix, m: usize, adapters: usize, rng: &mut StdRng) -> Vec<i64> {
    let n = adapters as i64;
    (0..m as i64)
        .map(|row| match mix {
            Mix::AllOne => n - 1,
            Mix::EveryRowDifferent => row % n,
            Mix::Segments => row * n / m as i64,
            Mix::RandomWithNone => {
                if rng.random_range(0..4) == 0 {
                    -1
                } else {
                    rng.random_range(0..n)
                }
            }
        })
        .collect()
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    check_on(case, backend(), ARCH).map(|_| ())
}

/// Runs `case` on `backend` (rendering for `arch`) and compares with the f64 reference.
fn check_on(case: &Case, backend: &SimBackend, arch: Arch) -> Result<LoraOutput, TestCaseError> {
    let spec = case.spec;
    let p = LoraProblem::new(case.m, case.n, case.k, case.adapters);
    let r = spec.rank as usize;
    let label = format!("{} {p:?} {:?} scale={} n_group={:?}", spec.kernel_name(arch), case.mix, case.scale, case.n_group);
    let mut rng = StdRng::seed_from_u64(case.seed);
    let x = random(&mut rng, p.m * p.k, 1.0);
    let w = (!spec.is_bottleneck()).then(|| random(&mut rng, p.k * p.n, 1.0));
    let a = random(&mut rng, p.a_elements(r), 1.0);
    let b = random(&mut rng, p.b_elements(r), 1.0);
    let ids = (spec.adapters == AdapterMode::PerRow).then(|| ids_for(case.mix, p.m, p.adapters, &mut rng));
    let bias = spec.epilogue.bias.then(|| random(&mut rng, p.n, 1.0));
    let residual = spec.epilogue.residual.then(|| random(&mut rng, p.m * p.n, 1.0));
    let inputs = LoraInputs {
        x: &x,
        w: w.as_deref(),
        a: &a,
        b: &b,
        ids: ids.as_deref(),
        bias: bias.as_deref(),
        residual: residual.as_deref(),
    };
    let ran = run_lora(backend, compiler(), &spec, &p, &inputs, case.scale, case.n_group)
        .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    let got = &ran.y;

    let rin = |v: &[f32]| reference::round_to_dtype(v, spec.dtype);
    let rout = |v: &Option<Vec<f32>>| {
        v.as_ref().map(|v| reference::round_to_dtype(v, spec.out))
    };
    let (xr, ar, br) = (rin(&x), rin(&a), rin(&b));
    let ops = LoraOperands {
        x: &xr,
        layout_x: spec.layout_x,
        a: &ar,
        b: &br,
        ids: ids.as_deref(),
        m: p.m,
        n: p.n,
        k: p.k,
        rank: r,
        dtype: spec.dtype,
        scale: f64::from(case.scale),
    };
    let want = match spec.variant {
        tessera::codegen::LoraVariant::Bottleneck { activation } => reference::bottleneck(&ops, activation),
        tessera::codegen::LoraVariant::Lora => {
            let wr = rin(w.as_deref().unwrap_or_default());
            let (bias, residual) = (rout(&bias), rout(&residual));
            reference::lora(&ops, &wr, spec.layout_w, bias.as_deref(), spec.epilogue.activation, residual.as_deref())
        }
    };
    let cmp = reference::compare(got, &want);
    prop_assert!(cmp.passes(tolerance(spec.out)), "{} ({}): {:?}", label, ran.kernel, cmp);

    // The L2 check above can hide a few wrong elements in a large output: bound each one. The
    // f32 rounding bound of a matmul over K + r products (on the same expression in absolute
    // values), plus, for the entries of T' that the kernel may round to a neighbouring value of
    // the reference's, that difference times |B|.
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let (xa, aa, ba) = (abs(&xr), abs(&ar), abs(&br));
    let abs_ops = LoraOperands { x: &xa, a: &aa, b: &ba, scale: ops.scale.abs(), ..ops };
    let (magnitude, t_activation) = match spec.variant {
        tessera::codegen::LoraVariant::Bottleneck { activation } => (reference::bottleneck(&abs_ops, Activation::None), activation),
        tessera::codegen::LoraVariant::Lora => {
            let wa = abs(&rin(w.as_deref().unwrap_or_default()));
            let (bias, residual) = (rout(&bias).map(|v| abs(&v)), rout(&residual).map(|v| abs(&v)));
            (reference::lora(&abs_ops, &wa, spec.layout_w, bias.as_deref(), Activation::None, residual.as_deref()), Activation::None)
        }
    };
    let slack = t_prime_slack(&ops, t_activation);
    let bound = |i: usize| {
        let (row, col) = (i / p.n, i % p.n);
        let adapter = match ops.ids {
            None => Some(0),
            Some(ids) => usize::try_from(ids[row]).ok(),
        };
        let t_prime: f64 = adapter.map_or(0.0, |a| (0..r).map(|j| slack[row * r + j] * f64::from(br[(a * r + j) * p.n + col].abs())).sum());
        common::matmul_element_bound(spec.out, p.k + r, want[i], magnitude[i]) + ACTIVATION_SLOPE * t_prime
    };
    common::within_bounds(got, &want, bound).map_err(|e| TestCaseError::fail(format!("{label} ({}): Y {e}", ran.kernel)))?;
    Ok(ran)
}

/// Bounds the slope of every activation (GELU-tanh's is at most 1.13).
const ACTIVATION_SLOPE: f64 = 2.0;

/// Per entry of T' (`[m, r]`), how far the kernel's value may be from the reference's: the kernel
/// rounds an f32 evaluation of `s f(X A)` to the dtype, the reference the exact value, and the two
/// differ (by the distance to the neighbouring dtype value) only where the f32 error bound
/// straddles a rounding boundary; zero elsewhere.
fn t_prime_slack(ops: &LoraOperands<'_>, f: Activation) -> Vec<f64> {
    let (m, k, r) = (ops.m, ops.k, ops.rank);
    let x_at = |row: usize, l: usize| {
        f64::from(match ops.layout_x {
            Layout::RowMajor => ops.x[row * k + l],
            Layout::ColMajor => ops.x[l * m + row],
        })
    };
    let mut slack = vec![0.0f64; m * r];
    for row in 0..m {
        let adapter = match ops.ids {
            None => Some(0),
            Some(ids) => usize::try_from(ids[row]).ok(),
        };
        let Some(adapter) = adapter else { continue };
        let a = &ops.a[adapter * k * r..(adapter + 1) * k * r];
        for j in 0..r {
            let (dot, magnitude) = (0..k).fold((0.0f64, 0.0f64), |(d, s), l| {
                let product = x_at(row, l) * f64::from(a[l * r + j]);
                (d + product, s + product.abs())
            });
            let t = ops.scale * reference::activate(f, dot);
            let err = common::matmul_element_bound(ElemType::F32, k, 0.0, ops.scale.abs() * magnitude);
            let ends = reference::round_to_dtype(&[(t - err) as f32, (t + err) as f32], ops.dtype);
            slack[row * r + j] = f64::from(ends[1] - ends[0]).abs();
        }
    }
    slack
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (0usize..2, 0usize..3, any::<bool>(), any::<bool>(), 0usize..LORA_RANKS.len(), 0usize..3, 0usize..TILES.len()),
        (any::<bool>(), 0usize..4, any::<bool>(), 0usize..4, 0usize..4, 1usize..=5),
        (1usize..=80, 1usize..=80, 1usize..=90, 0usize..3, 0usize..3, any::<u64>()),
    )
        .prop_map(
            |(
                (dtype, out, x_col, w_col, rank, variant, tile),
                (bias, act, residual, mix, group, drawn_adapters),
                (m, n, k, shape, scale, seed),
            )| {
                let mut spec = LoraSpec {
                    layout_x: if x_col { Layout::ColMajor } else { Layout::RowMajor },
                    layout_w: if w_col { Layout::ColMajor } else { Layout::RowMajor },
                    ..LoraSpec::new(ElemType::MMA_INPUTS[dtype], ElemType::MMA_OUTPUTS[out], LORA_RANKS[rank])
                }
                .with_tile(TILES[tile]);
                let mut n = n;
                let mut adapters = 1;
                match variant {
                    // Single-adapter LoRA with a random epilogue.
                    0 => spec.epilogue = Epilogue { user: None, bias, activation: Activation::ALL[act], residual },
                    // Per-row adapters.
                    1 => {
                        spec.adapters = AdapterMode::PerRow;
                        spec.epilogue = Epilogue { user: None, bias, activation: Activation::ALL[act], residual };
                        adapters = adapters_for(mix, drawn_adapters, m);
                    }
                    // Bottleneck: N = K.
                    _ => {
                        spec = LoraSpec { tile: spec.tile, layout_x: spec.layout_x, ..LoraSpec::bottleneck(spec.dtype, spec.out, spec.rank, Activation::ALL[act]) };
                        n = k;
                    }
                }
                // Two thirds of the cases round stored row lengths up to whole 16-byte chunks (the
                // aligned cp.async kernel); the rest keep any shape (element-wise kernel).
                let (m, n, k) = if shape > 0 {
                    let up = |v: usize| v.div_ceil(8) * 8;
                    let m = if x_col { up(m) } else { m };
                    let k = up(k);
                    (m, if spec.is_bottleneck() { k } else { up(n) }, k)
                } else {
                    (m, n, k)
                };
                let mix = [Mix::AllOne, Mix::EveryRowDifferent, Mix::Segments, Mix::RandomWithNone][mix];
                let n_group = [None, Some(1), Some(2), Some(3)][group];
                Case { spec, m, n, k, adapters, mix, scale: [1.0, 0.5, 2.0][scale], n_group, seed }
            },
        )
}

/// Per-row cases use up to 5 adapters, or one per row (up to 12) when every row differs.
fn adapters_for(mix: usize, drawn: usize, m: usize) -> usize {
    if mix == 1 {
        m.clamp(1, 12)
    } else {
        drawn
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 16, ..ProptestConfig::default() })]
    #[test]
    fn lora_matches_reference(case in case_strategy()) {
        check(&case)?;
    }
}

#[test]
fn test_tiles_are_in_the_space() {
    for rank in LORA_RANKS {
        let spec = LoraSpec::new(ElemType::F16, ElemType::F16, rank);
        let space: Vec<_> = spec.space(ARCH).collect();
        for t in TILES {
            assert!(space.contains(&t), "r{rank} {t}");
        }
    }
}

/// Deterministic cases the property test may not draw: a decode batch with every row on a
/// different adapter and rows without one (BGMV shape: the CUDA-core gathered path), sorted
/// prefill segments spanning several row tiles (SGMV shape) with column-tile groups, a second
/// adapter large enough for tensor-core passes, rank 128's two low-rank passes, and size 1.
#[test]
fn decode_prefill_and_edge_shapes() {
    let per_row = |rank| LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::new(ElemType::BF16, ElemType::F32, rank) };
    let cases = [
        Case { spec: per_row(16).with_tile(TILES[0]), m: 7, n: 72, k: 64, adapters: 7, mix: Mix::EveryRowDifferent, scale: 0.5, n_group: None, seed: 1 },
        Case { spec: per_row(16).with_tile(TILES[0]), m: 9, n: 40, k: 48, adapters: 3, mix: Mix::RandomWithNone, scale: 1.0, n_group: None, seed: 2 },
        Case { spec: per_row(32).with_tile(TILES[1]), m: 150, n: 96, k: 72, adapters: 3, mix: Mix::Segments, scale: 2.0, n_group: Some(2), seed: 3 },
        Case { spec: per_row(128).with_tile(TILES[2]), m: 70, n: 64, k: 40, adapters: 2, mix: Mix::Segments, scale: 0.25, n_group: Some(1), seed: 4 },
        // Two 64-row segments in one 128-row tile: the second adapter's rows are too many for the
        // CUDA-core path, so it gets tensor-core passes of its own.
        Case { spec: per_row(64).with_tile(TILES[2]), m: 128, n: 72, k: 64, adapters: 2, mix: Mix::Segments, scale: 0.5, n_group: None, seed: 7 },
        Case { spec: LoraSpec::new(ElemType::F16, ElemType::F16, 8).with_tile(TILES[0]), m: 1, n: 1, k: 1, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 5 },
        Case { spec: LoraSpec::bottleneck(ElemType::BF16, ElemType::BF16, 64, Activation::GeluTanh).with_tile(TILES[0]), m: 33, n: 136, k: 136, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 6 },
    ];
    for case in &cases {
        check(case).unwrap();
    }
}

/// Bad ids and mismatched operands are refused before anything runs, with the argument named.
#[test]
fn bad_input_is_a_clear_error() {
    let spec = LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::new(ElemType::F16, ElemType::F32, 8) };
    let p = LoraProblem::new(2, 8, 8, 2);
    let zeros = |n: usize| vec![0.0f32; n];
    let (x, w, a, b) = (zeros(16), zeros(64), zeros(2 * 8 * 8), zeros(2 * 8 * 8));
    let run = |ids: &[i64], a: &[f32]| {
        let inputs = LoraInputs { x: &x, w: Some(&w), a, b: &b, ids: Some(ids), bias: None, residual: None };
        run_lora(backend(), compiler(), &spec, &p, &inputs, 1.0, None).unwrap_err().to_string()
    };
    let msg = run(&[0, 2], &a);
    assert!(msg.contains("adapter_ids") && msg.contains("row 1 has adapter 2"), "{msg}");
    let msg = run(&[0, -2], &a);
    assert!(msg.contains("adapter_ids"), "{msg}");
    let msg = run(&[0, 1], &a[..64]);
    assert!(msg.contains("`a`") || msg.contains("a:") || msg.contains(" a "), "{msg}");
}

// ---- the sm_90a kernel ----

/// A case that must run on the sm_90a kernel.
fn check_hopper(case: &Case) -> Result<(), TestCaseError> {
    prop_assert!(case.spec.hopper_tile(Arch::SM90A).is_ok(), "{:?}", case.spec);
    let ran = check_on(case, hopper_backend(), Arch::SM90A)?;
    prop_assert!(ran.kernel.contains("_sm90a_"), "{} is not the sm_90a kernel", ran.kernel);
    prop_assert!(ran.note.is_none(), "{}: unexpected note {:?}", ran.kernel, ran.note);
    Ok(())
}

/// Sizes off the tiles: around the 128-row and 128/256-column tiles and the 64-deep k-slices.
fn hopper_dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => prop::sample::select(vec![1usize, 8, 63, 64, 65, 127, 128, 129, 200, 255, 256, 257, 300]),
        3 => 1usize..=300,
    ]
}

/// Single-adapter LoRA with the default tile (so sm_90a routes it): every rank, layout, epilogue,
/// type, scale and column-tile group; stored rows of X, W and B rounded up to whole 16-byte chunks.
fn hopper_case_strategy() -> impl Strategy<Value = Case> {
    (
        (0usize..2, 0usize..3, any::<bool>(), any::<bool>(), 0usize..LORA_RANKS.len()),
        (any::<bool>(), 0usize..4, any::<bool>(), 0usize..4, 0usize..3),
        (hopper_dim(), hopper_dim(), hopper_dim(), any::<u64>()),
    )
        .prop_map(|((dtype, out, x_col, w_col, rank), (bias, act, residual, group, scale), (m, n, k, seed))| {
            let spec = LoraSpec {
                layout_x: if x_col { Layout::ColMajor } else { Layout::RowMajor },
                layout_w: if w_col { Layout::ColMajor } else { Layout::RowMajor },
                epilogue: Epilogue { user: None, bias, activation: Activation::ALL[act], residual },
                ..LoraSpec::new(ElemType::MMA_INPUTS[dtype], ElemType::MMA_OUTPUTS[out], LORA_RANKS[rank])
            };
            let up = |v: usize| v.div_ceil(8) * 8;
            let (m, n, k) = (if x_col { up(m) } else { m }, up(n), up(k));
            let n_group = [None, Some(1), Some(2), Some(3)][group];
            Case { spec, m, n, k, adapters: 1, mix: Mix::AllOne, scale: [1.0, 0.5, 2.0][scale], n_group, seed }
        })
}

fn hopper_config() -> ProptestConfig {
    let cases = std::env::var("TESSERA_SIM_LORA_HOPPER_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    ProptestConfig { cases, max_shrink_iters: 8, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(hopper_config())]
    #[test]
    fn hopper_lora_matches_reference(case in hopper_case_strategy()) { check_hopper(&case)?; }
}

/// One CTA walking three column tiles (X A once, T' reused, B reloaded per tile) while the ring
/// wraps (K = 520: nine 64-deep slices through 3 stages, continuing across the column tiles), for
/// every layout pair; rank 128 (two A boxes, the 128-column tile) the same way; rank 8 (zero-filled
/// to 16) and single rows.
#[test]
fn hopper_groups_wrap_the_ring_across_column_tiles() {
    let epilogue = Epilogue { user: None, bias: true, activation: Activation::GeluTanh, residual: true };
    let mut seed = 900;
    let mut cases = Vec::new();
    for layout_x in Layout::ALL {
        for layout_w in Layout::ALL {
            let spec = LoraSpec { layout_x, layout_w, epilogue, ..LoraSpec::new(ElemType::BF16, ElemType::F32, 32) };
            cases.push(Case { spec, m: 136, n: 600, k: 520, adapters: 1, mix: Mix::AllOne, scale: 0.5, n_group: Some(3), seed });
            seed += 1;
        }
    }
    let rank = |r| LoraSpec { epilogue, ..LoraSpec::new(ElemType::F16, ElemType::F16, r) };
    cases.push(Case { spec: rank(128), m: 70, n: 392, k: 200, adapters: 1, mix: Mix::AllOne, scale: 2.0, n_group: Some(4), seed });
    cases.push(Case { spec: rank(8), m: 1, n: 8, k: 8, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: seed + 1 });
    cases.push(Case { spec: rank(16), m: 3, n: 264, k: 72, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: Some(2), seed: seed + 2 });
    for case in &cases {
        if let Err(e) = check_hopper(case) {
            panic!("{e}\n{case:?}");
        }
    }
}

/// Routing on sm_90a: per-row adapters, the bottleneck, an explicit tile and unaligned shapes run
/// the mma.sync kernel (and still match the reference); K = 0 cannot be a tensor map, so the
/// launcher falls back with a note.
#[test]
fn hopper_routes_the_rest_to_mma_sync() {
    let per_row = LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::new(ElemType::BF16, ElemType::F32, 16) };
    let bottleneck = LoraSpec::bottleneck(ElemType::F16, ElemType::F16, 16, Activation::Relu);
    let single = LoraSpec::new(ElemType::F16, ElemType::F32, 16);
    assert!(per_row.hopper_tile(Arch::SM90A).unwrap_err().contains("per-row"));
    let cases = [
        (Case { spec: per_row, m: 20, n: 40, k: 48, adapters: 3, mix: Mix::RandomWithNone, scale: 1.0, n_group: None, seed: 950 }, None),
        (Case { spec: bottleneck, m: 20, n: 48, k: 48, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 951 }, None),
        (Case { spec: single.with_tile(TILES[0]), m: 20, n: 40, k: 48, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 952 }, None),
        // K = 13: rows of X are not whole chunks; run_lora takes the element-wise spec.
        (Case { spec: single, m: 20, n: 40, k: 13, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 953 }, None),
        (Case { spec: single, m: 20, n: 40, k: 0, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 954 }, Some("problem.k is 0")),
    ];
    for (case, note) in &cases {
        let ran = check_on(case, hopper_backend(), Arch::SM90A).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
        assert!(!ran.kernel.contains("_sm90a_"), "{}", ran.kernel);
        match note {
            Some(n) => assert!(ran.note.as_deref().is_some_and(|got| got.contains(n)), "{:?}", ran.note),
            None => assert!(ran.note.is_none(), "{}: {:?}", ran.kernel, ran.note),
        }
    }
}
