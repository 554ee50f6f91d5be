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

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::{Activation, AdapterMode, Epilogue, GemmTile, Layout, LoraSpec, OutType, LORA_RANKS};
use tessera::runtime::reference::{self, LoraOperands};
use tessera::runtime::{run_lora, LoraInputs, LoraProblem};
use tessera::{Arch, DType};

mod common;
use common::{backend, compiler};

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
fn tolerance(out: OutType) -> f64 {
    match out {
        OutType::BF16 => 1e-2,
        OutType::F16 => 3e-3,
        OutType::F32 => 2e-3,
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
    let spec = case.spec;
    let p = LoraProblem::new(case.m, case.n, case.k, case.adapters);
    let r = spec.rank as usize;
    let label = format!("{} {p:?} {:?} scale={} n_group={:?}", spec.kernel_name(ARCH), case.mix, case.scale, case.n_group);
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
    let got = run_lora(backend(), compiler(), &spec, &p, &inputs, case.scale, case.n_group)
        .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;

    let rin = |v: &[f32]| reference::round_to_dtype(v, spec.dtype);
    let rout = |v: &Option<Vec<f32>>| {
        v.as_ref().map(|v| match spec.out.as_dtype() {
            Some(d) => reference::round_to_dtype(v, d),
            None => v.clone(),
        })
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
    let cmp = reference::compare(&got, &want);
    prop_assert!(cmp.passes(tolerance(spec.out)), "{}: {:?}", label, cmp);
    Ok(())
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
                    ..LoraSpec::new(DType::ALL[dtype], OutType::ALL[out], LORA_RANKS[rank])
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
        let spec = LoraSpec::new(DType::F16, OutType::F16, rank);
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
    let per_row = |rank| LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::new(DType::BF16, OutType::F32, rank) };
    let cases = [
        Case { spec: per_row(16).with_tile(TILES[0]), m: 7, n: 72, k: 64, adapters: 7, mix: Mix::EveryRowDifferent, scale: 0.5, n_group: None, seed: 1 },
        Case { spec: per_row(16).with_tile(TILES[0]), m: 9, n: 40, k: 48, adapters: 3, mix: Mix::RandomWithNone, scale: 1.0, n_group: None, seed: 2 },
        Case { spec: per_row(32).with_tile(TILES[1]), m: 150, n: 96, k: 72, adapters: 3, mix: Mix::Segments, scale: 2.0, n_group: Some(2), seed: 3 },
        Case { spec: per_row(128).with_tile(TILES[2]), m: 70, n: 64, k: 40, adapters: 2, mix: Mix::Segments, scale: 0.25, n_group: Some(1), seed: 4 },
        // Two 64-row segments in one 128-row tile: the second adapter's rows are too many for the
        // CUDA-core path, so it gets tensor-core passes of its own.
        Case { spec: per_row(64).with_tile(TILES[2]), m: 128, n: 72, k: 64, adapters: 2, mix: Mix::Segments, scale: 0.5, n_group: None, seed: 7 },
        Case { spec: LoraSpec::new(DType::F16, OutType::F16, 8).with_tile(TILES[0]), m: 1, n: 1, k: 1, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 5 },
        Case { spec: LoraSpec::bottleneck(DType::BF16, OutType::BF16, 64, Activation::GeluTanh).with_tile(TILES[0]), m: 33, n: 136, k: 136, adapters: 1, mix: Mix::AllOne, scale: 1.0, n_group: None, seed: 6 },
    ];
    for case in &cases {
        check(case).unwrap();
    }
}

/// Bad ids and mismatched operands are refused before anything runs, with the argument named.
#[test]
fn bad_input_is_a_clear_error() {
    let spec = LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::new(DType::F16, OutType::F32, 8) };
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
