//! GEMM on the CPU simulator (`tessera-sim`, which interprets the PTX NVRTC generates) against the
//! f64 reference: property tests over shapes (M, N, K up to 80, non-multiples of every tile),
//! input dtypes, output types, W layouts, epilogues, C/beta, and default and non-default tiles;
//! plus deterministic cases that wrap the cp.async ring and span several CTAs in both directions.
//! Needs NVRTC (`bash .ci/provision`), no GPU.
//!
//! Every case goes through `run_gemm`, which poisons Y with NaN before the launch, so an element
//! the kernel never writes fails `compare` (NaN never passes). The simulator runs with its checks
//! on (out-of-bounds accesses, shared-memory races, reads of in-flight cp.async data).
//!
//! Compile cost: NVRTC takes about half a second per distinct kernel; one `Compiler` with a disk
//! cache under `CARGO_TARGET_TMPDIR` is shared, and each run draws `TESSERA_SIM_GEMM_CASES`
//! (default 24) cases, so at most that many distinct specs.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::{Activation, Epilogue, GemmSpec, GemmTile, Layout, ElemType};
use tessera::runtime::reference;
use tessera::runtime::{run_gemm, GemmProblem};
use tessera::Arch;

mod common;
use common::{backend, compiler};

const ARCH: Arch = Arch::SM80;

/// Non-default tiles drawn by the property test; each must be in `GemmSpec::space`.
const TILES: [GemmTile; 6] = [
    GemmTile::new(32, 32, 32, 4, 1),
    GemmTile::new(64, 32, 64, 4, 2),
    GemmTile::new(32, 64, 32, 8, 3),
    // 64 x 64 warp tiles: 128 accumulators per thread.
    GemmTile::new(128, 256, 32, 8, 2),
    // Split-K: partial tiles reduced by the last CTA of each output tile (some splits get no K).
    GemmTile::new(32, 32, 32, 4, 2).with_split_k(4),
    GemmTile::new(64, 32, 64, 4, 1).with_split_k(2),
];

fn cases() -> u32 {
    std::env::var("TESSERA_SIM_GEMM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

/// Largest relative L2 error accepted for output type `out` with inputs in `dtype`. Inputs are
/// rounded identically for kernel and reference and 16-bit products are exact in f32, so what is
/// left is the f32 accumulation order (~K x 2^-24), ex2.approx in the activations (2^-22) and the
/// final rounding to `out` (half an ulp: 2^-9 bf16, 2^-12 f16, 2^-24 f32), mostly independent per
/// element.
fn tolerance(out: ElemType) -> f64 {
    match out {
        ElemType::BF16 => 1e-2,
        ElemType::F16 => 1.5e-3,
        ElemType::F32 => 2e-5,
        other => unreachable!("{other} is not an MMA output type"),
    }
}

/// One GEMM case; Debug holds everything needed to rerun it.
#[derive(Clone, Debug)]
struct Case {
    spec: GemmSpec,
    m: usize,
    n: usize,
    k: usize,
    with_c: bool,
    alpha: f32,
    beta: f32,
    seed: u64,
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let spec = case.spec;
    let p = GemmProblem::new(case.m, case.n, case.k);
    let label = format!("{} {p:?} C={} alpha={} beta={}", spec.kernel_name(ARCH), case.with_c, case.alpha, case.beta);
    let mut rng = StdRng::seed_from_u64(case.seed);
    let x = random(&mut rng, p.x_elements());
    let w = random(&mut rng, p.w_elements());
    let c = case.with_c.then(|| random(&mut rng, p.y_elements()));
    let bias = spec.epilogue.bias.then(|| random(&mut rng, p.n));
    let residual = spec.epilogue.residual.then(|| random(&mut rng, p.y_elements()));
    let got = run_gemm(
        backend(),
        compiler(),
        &spec,
        &p,
        &x,
        &w,
        c.as_deref(),
        bias.as_deref(),
        residual.as_deref(),
        case.alpha,
        case.beta,
    )
    .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?
    .y;

    let want = common::gemm_reference(
        &spec,
        (p.m, p.n, p.k),
        &x,
        &w,
        c.as_deref(),
        bias.as_deref(),
        residual.as_deref(),
        case.alpha,
        case.beta,
    );
    let cmp = reference::compare(&got, &want);
    prop_assert!(cmp.passes(tolerance(spec.out)), "{}: {:?}", label, cmp);
    // The L2 check above can hide a few wrong elements in a large output: bound each one.
    let magnitude = gemm_magnitude(case, &x, &w, c.as_deref(), bias.as_deref(), residual.as_deref());
    common::within_bounds(&got, &want, |i| common::matmul_element_bound(spec.out, p.k, want[i], magnitude[i]))
        .map_err(|e| TestCaseError::fail(format!("{label}: Y {e}")))?;
    Ok(())
}

/// Per element, the epilogue's expression on absolute values without the activation
/// (`|alpha| sum |x w| + |beta c| + |bias| + |residual|`): what f32 rounding errors scale with.
fn gemm_magnitude(case: &Case, x: &[f32], w: &[f32], c: Option<&[f32]>, bias: Option<&[f32]>, residual: Option<&[f32]>) -> Vec<f64> {
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let abs_opt = |v: Option<&[f32]>| v.map(abs);
    let spec = GemmSpec { epilogue: Epilogue { activation: Activation::None, ..case.spec.epilogue }, ..case.spec };
    let (c, bias, residual) = (abs_opt(c), abs_opt(bias), abs_opt(residual));
    common::gemm_reference(
        &spec,
        (case.m, case.n, case.k),
        &abs(x),
        &abs(w),
        c.as_deref(),
        bias.as_deref(),
        residual.as_deref(),
        case.alpha.abs(),
        case.beta.abs(),
    )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (0usize..2, 0usize..3, any::<bool>(), any::<bool>(), 0usize..4, any::<bool>(), 0usize..=TILES.len()),
        (1usize..=80, 1usize..=80, 1usize..=90, any::<bool>(), any::<u64>(), any::<bool>(), 0usize..3),
    )
        .prop_map(|((dtype, out, w_col, bias, act, residual, tile), (m, n, k, with_c, seed, x_col, shape))| {
            let layout_w = if w_col { Layout::ColMajor } else { Layout::RowMajor };
            let layout_x = if x_col { Layout::ColMajor } else { Layout::RowMajor };
            let mut spec = GemmSpec {
                layout_x,
                layout_w,
                epilogue: Epilogue { user: None, bias, activation: Activation::ALL[act], residual },
                ..GemmSpec::new(ElemType::MMA_INPUTS[dtype], ElemType::MMA_OUTPUTS[out])
            };
            if tile > 0 {
                spec = spec.with_tile(TILES[tile - 1]);
            }
            // Two thirds of the cases round the stored row lengths up to whole 16-byte chunks, so
            // the aligned (cp.async) kernel runs; the rest keep any shape (size 1 included) and
            // run the element-wise kernel that run_gemm picks for them.
            let (m, n, k) = if shape > 0 {
                let up = |v: usize| v.div_ceil(8) * 8;
                (if x_col { up(m) } else { m }, if w_col { n } else { up(n) }, up(k))
            } else {
                (m, n, k)
            };
            let (alpha, beta) = if with_c { (0.75, -1.25) } else { (1.0, 0.0) };
            Case { spec, m, n, k, with_c, alpha, beta, seed }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 16, ..ProptestConfig::default() })]
    #[test]
    fn gemm_matches_reference(case in case_strategy()) {
        check(&case)?;
    }
}

#[test]
fn test_tiles_are_in_the_space() {
    let spec = GemmSpec::new(ElemType::F16, ElemType::F16);
    let space: Vec<_> = spec.space(ARCH).collect();
    for t in TILES {
        assert!(space.contains(&t), "{t}");
    }
}

/// K = 160 is five 32-deep k-tiles: the 3-stage ring of the default tile wraps, and the 1-stage
/// tile reloads its single slot. M and N past one tile launch several CTAs in both directions.
#[test]
fn ring_wraps_and_grid_spans_several_ctas() {
    let full = Epilogue { user: None, bias: true, activation: Activation::Silu, residual: true };
    let cases = [
        (GemmSpec { epilogue: full, ..GemmSpec::new(ElemType::BF16, ElemType::F32) }, 33, 24, 160),
        (
            GemmSpec { layout_w: Layout::ColMajor, ..GemmSpec::new(ElemType::F16, ElemType::F16) }.with_tile(TILES[0]),
            70,
            67,
            104,
        ),
    ];
    let cases = [
        cases[0],
        cases[1],
        // Split-K over several output tiles with the full epilogue and C.
        (GemmSpec { epilogue: full, ..GemmSpec::new(ElemType::F16, ElemType::BF16) }.with_tile(TILES[4]), 70, 67, 300),
    ];
    for (i, (spec, m, n, k)) in cases.into_iter().enumerate() {
        check(&Case { spec, m, n, k, with_c: true, alpha: 0.5, beta: 2.0, seed: 100 + i as u64 }).unwrap();
    }
}

/// Shapes with rows that are not whole 16-byte chunks (K = 1, odd K, M, N) run the element-wise
/// kernel, for every operand layout; the aligned spec itself refuses them with the field named.
#[test]
fn any_shape_runs_unaligned() {
    let layouts = [Layout::RowMajor, Layout::ColMajor];
    let mut seed = 300;
    for (m, n, k) in [(1, 1, 1), (5, 3, 13), (17, 9, 41)] {
        for layout_x in layouts {
            for layout_w in layouts {
                let spec = GemmSpec { layout_x, layout_w, ..GemmSpec::new(ElemType::BF16, ElemType::F32) }.with_tile(TILES[0]);
                check(&Case { spec, m, n, k, with_c: true, alpha: 1.5, beta: 0.5, seed }).unwrap();
                seed += 1;
            }
        }
    }
    let spec = GemmSpec::new(ElemType::F16, ElemType::F32);
    let p = GemmProblem::new(4, 8, 12);
    let err = tessera::runtime::gemm::check_problem(&spec, &p, 1.0, 0.0).unwrap_err().to_string();
    assert!(err.contains("problem.k") && err.contains("multiple of 8") && err.contains("aligned: false"), "{err}");
}

/// A split-K launch prepared once and run three times gives the same result each time: the last
/// CTA of every tile re-arms its counter.
#[test]
fn split_k_launches_rearm_their_counters() {
    use tessera::runtime::common::buffers::{decode, encode, poison};
    use tessera::runtime::gemm::{prepare_gemm, split_workspace_bytes, GemmBuffers, GemmStrides};
    use tessera::runtime::Backend;
    let b = backend();
    let spec = GemmSpec::new(ElemType::BF16, ElemType::F32).with_tile(TILES[4]);
    let p = GemmProblem::new(40, 72, 256);
    let mut rng = StdRng::seed_from_u64(77);
    let (x, w) = (random(&mut rng, p.x_elements()), random(&mut rng, p.w_elements()));
    let up = |bytes: Vec<u8>| {
        let buf = b.alloc(bytes.len()).unwrap();
        b.write(&buf, &bytes).unwrap();
        buf
    };
    let (xb, wb) = (up(encode(&x, spec.dtype)), up(encode(&w, spec.dtype)));
    let yb = up(encode(&vec![0.0; p.y_elements()], spec.out));
    let ws = up(vec![0u8; split_workspace_bytes(&spec, &p, ARCH)]);
    let buffers = GemmBuffers { x: &xb, w: &wb, c: None, bias: None, residual: None, y: &yb, workspace: Some(&ws) };
    let launch = prepare_gemm(b, compiler(), &spec, &p, &GemmStrides::contiguous(&spec, &p), &buffers, 1.0, 0.0).unwrap();
    let mut outputs = Vec::new();
    for _ in 0..3 {
        b.write(&yb, &poison(p.y_elements(), spec.out)).unwrap();
        launch.run(b).unwrap();
        let mut bytes = vec![0u8; p.y_elements() * 4];
        b.read(&yb, &mut bytes).unwrap();
        outputs.push(decode(&bytes, spec.out));
    }
    // Each launch against the reference, not only against each other: a launch that left the
    // counters armed would reduce too early (or never) every time after the first.
    let want = common::gemm_reference(&spec, (p.m, p.n, p.k), &x, &w, None, None, None, 1.0, 0.0);
    let case = Case { spec, m: p.m, n: p.n, k: p.k, with_c: false, alpha: 1.0, beta: 0.0, seed: 77 };
    let magnitude = gemm_magnitude(&case, &x, &w, None, None, None);
    for (run, y) in outputs.iter().enumerate() {
        let cmp = reference::compare(y, &want);
        assert!(cmp.passes(tolerance(spec.out)), "launch {run}: {cmp:?}");
        common::within_bounds(y, &want, |i| common::matmul_element_bound(spec.out, p.k, want[i], magnitude[i]))
            .unwrap_or_else(|e| panic!("launch {run}: Y {e}"));
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[1], outputs[2]);
    // Without a workspace the split tile is refused before launch.
    let no_ws = GemmBuffers { workspace: None, ..buffers };
    let err = prepare_gemm(b, compiler(), &spec, &p, &GemmStrides::contiguous(&spec, &p), &no_ws, 1.0, 0.0).unwrap_err().to_string();
    assert!(err.contains("workspace"), "{err}");
}
