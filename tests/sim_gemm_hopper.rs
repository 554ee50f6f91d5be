//! The sm_90a GEMM kernel (TMA into an mbarrier ring, wgmma from 128-byte-swizzled shared memory,
//! producer/consumer warpgroups) on the simulator against the f64 reference: fresh random cases
//! (M, N, K from 1 to 300, off every tile; K, or M / N, rounded up to a multiple of 8 only where the
//! stored rows of X or W need whole 16-byte chunks; both layouts of X and W; f16/bf16 inputs;
//! f16/bf16/f32 output; bias, activation, residual, beta C; row strides padded or not), Y
//! poisoned with NaN (padding included, which must stay NaN), simulator checks on (bounds, races,
//! in-flight TMA and wgmma operands, async-proxy fences, mbarrier misuse, deadlock). Every case
//! asserts that the sm_90a kernel ran. `TESSERA_SIM_GEMM_HOPPER_CASES=N` sets the number of random
//! cases (default 16).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::{Activation, Epilogue, GemmSpec, GemmTile, HopperGemmTile, Layout, ElemType};
use tessera::runtime::common::buffers::{decode, encode, poison};
use tessera::runtime::gemm::{stored_shape, GemmBuffers, GemmStrides};
use tessera::runtime::reference;
use tessera::runtime::{prepare_gemm, run_gemm, Backend, DeviceBuffer, GemmProblem};
use tessera::Arch;

mod common;
use common::{compiler, hopper_backend};

/// One case; Debug holds everything needed to rerun it.
#[derive(Clone, Debug)]
struct Case {
    spec: GemmSpec,
    m: usize,
    n: usize,
    k: usize,
    with_c: bool,
    alpha: f32,
    beta: f32,
    /// Extra elements per stored row of X and W (a multiple of 8); C, residual and Y get 1, 2 and 3
    /// times `pad_out` (different strides, so one read with another's stride shows).
    pad_in: usize,
    pad_out: usize,
    seed: u64,
}

/// Which kernel ran, and its note.
struct Ran {
    name: String,
    note: Option<String>,
    y: Vec<f32>,
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// `rows x cols` contiguous values laid out with row stride `stride` (the gap filled with `fill`).
fn pad_rows(values: &[f32], rows: usize, cols: usize, stride: usize, fill: f32) -> Vec<f32> {
    let mut out = vec![fill; rows * stride];
    for r in 0..rows {
        out[r * stride..r * stride + cols].copy_from_slice(&values[r * cols..(r + 1) * cols]);
    }
    out
}

/// Device buffers of one case, freed however it ends.
struct Buffers<'a> {
    backend: &'a dyn Backend,
    list: Vec<DeviceBuffer>,
}

impl Buffers<'_> {
    fn upload(&mut self, bytes: &[u8]) -> usize {
        let buffer = self.backend.alloc(bytes.len().max(16)).expect("alloc");
        self.backend.write(&buffer, bytes).expect("write");
        self.list.push(buffer);
        self.list.len() - 1
    }
}

impl Drop for Buffers<'_> {
    fn drop(&mut self) {
        for b in self.list.drain(..) {
            let _ = self.backend.free(b);
        }
    }
}

/// Uploads the case's tensors with its strides, prepares through `prepare_gemm`, runs, and returns
/// Y (contiguous) after checking that every padding element of Y is still NaN.
fn launch(case: &Case, x: &[f32], w: &[f32], c: Option<&[f32]>, bias: Option<&[f32]>, residual: Option<&[f32]>) -> Result<Ran, String> {
    let (spec, backend) = (case.spec, hopper_backend());
    let p = GemmProblem::new(case.m, case.n, case.k);
    let (x_rows, x_cols) = stored_shape(spec.layout_x, p.m, p.k);
    let (w_rows, w_cols) = stored_shape(spec.layout_w, p.k, p.n);
    let strides = GemmStrides {
        x: x_cols + case.pad_in,
        w: w_cols + case.pad_in,
        c: p.n + case.pad_out,
        residual: p.n + 2 * case.pad_out,
        y: p.n + 3 * case.pad_out,
    };
    let mut mem = Buffers { backend, list: Vec::new() };
    let xi = mem.upload(&encode(&pad_rows(x, x_rows, x_cols, strides.x, 0.0), spec.dtype));
    let wi = mem.upload(&encode(&pad_rows(w, w_rows, w_cols, strides.w, 0.0), spec.dtype));
    let out_rows = |v: &[f32], stride| encode(&pad_rows(v, p.m, p.n, stride, 0.0), spec.out);
    let ci = c.map(|c| mem.upload(&out_rows(c, strides.c)));
    let bi = bias.map(|b| mem.upload(&encode(b, spec.out)));
    let ri = residual.map(|r| mem.upload(&out_rows(r, strides.residual)));
    let y_elems = p.m * strides.y;
    let yi = mem.upload(&poison(y_elems, spec.out));
    let b = &mem.list;
    let buffers = GemmBuffers {
        x: &b[xi],
        w: &b[wi],
        c: ci.map(|i| &b[i]),
        bias: bi.map(|i| &b[i]),
        residual: ri.map(|i| &b[i]),
        y: &b[yi],
        workspace: None,
    };
    let launch = prepare_gemm(backend, compiler(), &spec, &p, &strides, &buffers, case.alpha, case.beta).map_err(|e| e.to_string())?;
    let name = launch.kernel_name().unwrap_or_default().to_string();
    launch.run(backend).map_err(|e| format!("{name}: {e}"))?;
    let mut bytes = vec![0u8; y_elems * spec.out.size_bytes()];
    if !bytes.is_empty() {
        backend.read(&b[yi], &mut bytes).map_err(|e| e.to_string())?;
    }
    let all = decode(&bytes, spec.out);
    let mut y = Vec::with_capacity(p.m * p.n);
    for r in 0..p.m {
        let row = &all[r * strides.y..(r + 1) * strides.y];
        if let Some(j) = row[p.n..].iter().position(|v| !v.is_nan()) {
            return Err(format!("{name}: padding element ({r}, {}) of Y was written", p.n + j));
        }
        y.extend_from_slice(&row[..p.n]);
    }
    Ok(Ran { name, note: launch.note().map(str::to_string), y })
}

/// Per-element bound `|got - want| <= rel |want| + abs` for output type `out`: half an ulp of the
/// output type (with slack) plus the f32 accumulation-order error of K <= ~1000 products of
/// magnitude <= 4.
fn element_tolerance(out: ElemType) -> (f64, f64) {
    match out {
        ElemType::BF16 => (1.0 / 256.0, 1e-2),
        ElemType::F16 => (1.0 / 1024.0, 2e-3),
        ElemType::F32 => (1e-5, 2e-3),
        other => unreachable!("{other} is not an MMA output type"),
    }
}

/// Relative L2 error accepted (as `sim_gemm.rs`).
fn tolerance(out: ElemType) -> f64 {
    match out {
        ElemType::BF16 => 1e-2,
        ElemType::F16 => 1.5e-3,
        ElemType::F32 => 2e-5,
        other => unreachable!("{other} is not an MMA output type"),
    }
}

/// Runs the case and compares with the reference; returns what ran.
fn run_and_compare(case: &Case) -> Result<Ran, TestCaseError> {
    let spec = case.spec;
    let p = GemmProblem::new(case.m, case.n, case.k);
    let label = format!("{} {p:?} C={} alpha={} beta={} pad={}/{}", spec.kernel_name(Arch::SM90A), case.with_c, case.alpha, case.beta, case.pad_in, case.pad_out);
    let mut rng = StdRng::seed_from_u64(case.seed);
    let x = random(&mut rng, p.x_elements());
    let w = random(&mut rng, p.w_elements());
    let c = case.with_c.then(|| random(&mut rng, p.y_elements()));
    let bias = spec.epilogue.bias.then(|| random(&mut rng, p.n));
    let residual = spec.epilogue.residual.then(|| random(&mut rng, p.y_elements()));
    let ran = launch(case, &x, &w, c.as_deref(), bias.as_deref(), residual.as_deref())
        .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;

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
    let cmp = reference::compare(&ran.y, &want);
    prop_assert!(cmp.passes(tolerance(spec.out)), "{} ({}): {:?}", label, ran.name, cmp);
    let (rel, abs) = element_tolerance(spec.out);
    for (i, (&g, &r)) in ran.y.iter().zip(&want).enumerate() {
        let ok = (f64::from(g) - r).abs() <= rel * r.abs() + abs;
        prop_assert!(ok, "{} ({}): Y[{}, {}] = {}, want {}", label, ran.name, i / p.n, i % p.n, g, r);
    }
    Ok(ran)
}

/// A case that must run on the sm_90a kernel; returns what ran.
fn check(case: &Case) -> Result<Ran, TestCaseError> {
    prop_assert!(case.spec.hopper_tile(Arch::SM90A).is_ok(), "{:?}", case.spec);
    let ran = run_and_compare(case)?;
    prop_assert!(ran.name.contains("_sm90a_"), "{} is not the sm_90a kernel", ran.name);
    prop_assert!(ran.note.is_none(), "{}: unexpected note {:?}", ran.name, ran.note);
    Ok(ran)
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => prop::sample::select(vec![1usize, 8, 63, 64, 65, 127, 128, 129, 200, 255, 256, 257, 300]),
        3 => 1usize..=300,
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (0usize..2, 0usize..3, any::<bool>(), any::<bool>(), any::<bool>(), 0usize..4, any::<bool>()),
        (dim(), dim(), dim(), any::<bool>(), 0usize..4, any::<u64>()),
    )
        .prop_map(|((dtype, out, x_col, w_col, bias, act, residual), (m, n, k, with_c, pad, seed))| {
            let layout_x = if x_col { Layout::ColMajor } else { Layout::RowMajor };
            let layout_w = if w_col { Layout::ColMajor } else { Layout::RowMajor };
            let spec = GemmSpec {
                layout_x,
                layout_w,
                epilogue: Epilogue { user: None, bias, activation: Activation::ALL[act], residual },
                ..GemmSpec::new(ElemType::MMA_INPUTS[dtype], ElemType::MMA_OUTPUTS[out])
            };
            // Only the stored row lengths of X and W must be whole 16-byte chunks.
            let up = |v: usize| v.div_ceil(8) * 8;
            let k = if !x_col || w_col { up(k) } else { k };
            let m = if x_col { up(m) } else { m };
            let n = if w_col { n } else { up(n) };
            let (alpha, beta) = if with_c { (0.75, -1.25) } else { (1.0, 0.0) };
            // A quarter of the cases pad every row stride (inputs by whole chunks).
            let (pad_in, pad_out) = if pad == 0 { (8 * (1 + seed as usize % 3), 1 + seed as usize % 5) } else { (0, 0) };
            Case { spec, m, n, k, with_c, alpha, beta, pad_in, pad_out, seed }
        })
}

fn config() -> ProptestConfig {
    let cases = std::env::var("TESSERA_SIM_GEMM_HOPPER_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    ProptestConfig { cases, max_shrink_iters: 8, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn hopper_gemm_matches_reference(case in case_strategy()) { check(&case)?; }
}

fn full_epilogue() -> Epilogue {
    Epilogue { user: None, bias: true, activation: Activation::GeluTanh, residual: true }
}

/// Every layout pair once with the whole epilogue, beta C and padded strides: K = 520 is nine
/// 64-deep slices, so the 4-stage ring wraps twice; M = 200 and N = 296 take 2 x 2 CTAs, the
/// second of each partly outside Y (N = 296 keeps row-major W rows whole chunks).
#[test]
fn every_layout_wraps_the_ring_across_several_ctas() {
    let mut seed = 500;
    for layout_x in Layout::ALL {
        for layout_w in Layout::ALL {
            let spec = GemmSpec { layout_x, layout_w, epilogue: full_epilogue(), ..GemmSpec::new(ElemType::BF16, ElemType::F32) };
            let case = Case { spec, m: 200, n: 296, k: 520, with_c: true, alpha: 0.5, beta: 2.0, pad_in: 8, pad_out: 3, seed };
            if let Err(e) = check(&case) {
                panic!("{e}\n{case:?}");
            }
            seed += 1;
        }
    }
}

/// Persistent CTAs: M = 1100 is nine row tiles, so the rasterised order has a full band of 8 and a
/// band of 1; with N = 264 (two column tiles) that is 18 tiles for the simulator's 4 CTAs, each
/// walking 4-5 tiles with the ring (K = 136: three slices, 4 stages) running on from tile to tile.
#[test]
fn persistent_ctas_walk_the_tiles_in_bands() {
    let spec = GemmSpec { epilogue: full_epilogue(), ..GemmSpec::new(ElemType::F16, ElemType::BF16) };
    let case = Case { spec, m: 1100, n: 264, k: 136, with_c: true, alpha: 1.0, beta: -0.5, pad_in: 0, pad_out: 1, seed: 650 };
    if let Err(e) = check(&case) {
        panic!("{e}\n{case:?}");
    }
}

/// Tiles other than the default (as the tuner may store them): 128 columns in a 3-deep ring and
/// 192 columns in a 5-deep ring. K = 520 is nine 64-deep slices, so both rings wrap; N = 296 takes
/// 3 and 2 CTAs, the last partly outside Y. The launch runs the tile's own kernel.
#[test]
fn non_default_tiles_wrap_their_rings() {
    let tiles = [
        (Layout::RowMajor, Layout::ColMajor, HopperGemmTile { block_n: 128, stages: 3 }),
        (Layout::ColMajor, Layout::RowMajor, HopperGemmTile { block_n: 192, stages: 5 }),
    ];
    for (i, (layout_x, layout_w, tile)) in tiles.into_iter().enumerate() {
        let spec = GemmSpec { layout_x, layout_w, epilogue: full_epilogue(), ..GemmSpec::new(ElemType::BF16, ElemType::F32) }.with_hopper_tile(tile);
        let case = Case { spec, m: 200, n: 296, k: 520, with_c: true, alpha: 0.5, beta: 2.0, pad_in: 8, pad_out: 3, seed: 800 + i as u64 };
        let ran = check(&case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
        assert!(ran.name.ends_with(&format!("_sm90a_{tile}")), "{}", ran.name);
    }
}

/// Single rows, columns and k-slices: boxes almost entirely outside the tensors.
#[test]
fn tiny_shapes() {
    let mut seed = 600;
    for (m, n, k) in [(1usize, 8usize, 8usize), (8, 1, 8), (1, 1, 8), (3, 8, 16)] {
        for layout_w in Layout::ALL {
            let n = if layout_w == Layout::RowMajor { n.div_ceil(8) * 8 } else { n };
            let spec = GemmSpec { layout_w, epilogue: full_epilogue(), ..GemmSpec::new(ElemType::F16, ElemType::F16) };
            let case = Case { spec, m, n, k, with_c: true, alpha: 1.5, beta: 0.5, pad_in: 0, pad_out: 0, seed };
            if let Err(e) = check(&case) {
                panic!("{e}\n{case:?}");
            }
            seed += 1;
        }
    }
}

/// Routing: aligned default specs take the sm_90a kernel; the rest name their reason, and a
/// launch whose tensors a map cannot describe runs the mma.sync kernel with a note.
#[test]
fn specs_route_to_sm90a_and_fall_back_with_a_reason() {
    let spec = GemmSpec { epilogue: full_epilogue(), ..GemmSpec::new(ElemType::BF16, ElemType::BF16) };
    assert!(spec.kernel_name(Arch::SM90A).contains("_sm90a_m128n256k64s4"), "{}", spec.kernel_name(Arch::SM90A));
    assert!(!spec.kernel_name(Arch::SM90).contains("sm90a"));
    assert!(spec.hopper_tile(Arch::SM90).unwrap_err().contains("wgmma"));
    let unaligned = GemmSpec { aligned: false, ..spec };
    assert!(unaligned.hopper_tile(Arch::SM90A).unwrap_err().contains("unaligned"));
    let tiled = spec.with_tile(GemmTile::new(64, 64, 32, 4, 2));
    assert!(tiled.hopper_tile(Arch::SM90A).unwrap_err().contains("mma.sync tile"));
    assert!(spec.with_tile(GemmTile::new(64, 64, 32, 4, 2).with_split_k(2)).hopper_tile(Arch::SM90A).unwrap_err().contains("split-K"));

    // K = 0 cannot be a tensor map: the mma.sync kernel runs (Y = act(beta C + bias) + residual),
    // and the note says why.
    let case = Case { spec, m: 70, n: 40, k: 0, with_c: true, alpha: 1.0, beta: 0.5, pad_in: 0, pad_out: 0, seed: 700 };
    let ran = run_and_compare(&case).unwrap_or_else(|e| panic!("{e}"));
    assert!(!ran.name.contains("_sm90a_"), "{}", ran.name);
    assert!(ran.note.as_deref().is_some_and(|n| n.contains("problem.k is 0")), "{:?}", ran.note);

    // An explicit tile runs the mma.sync kernel with no note (a static choice).
    let case = Case { spec: tiled, k: 24, ..case };
    let ran = run_and_compare(&case).unwrap_or_else(|e| panic!("{e}"));
    assert!(ran.name.ends_with("m64n64k32w4s2") && ran.note.is_none(), "{} {:?}", ran.name, ran.note);

    // run_gemm on sm_90a: an aligned shape runs the sm_90a kernel; K = 13 (rows of X that are not
    // whole chunks) runs the element-wise mma.sync kernel. Both match the reference.
    for (k, seed) in [(40, 701), (13, 702)] {
        let p = GemmProblem::new(33, 24, k);
        let mut rng = StdRng::seed_from_u64(seed);
        let (x, w) = (random(&mut rng, p.x_elements()), random(&mut rng, p.w_elements()));
        let got = run_gemm(hopper_backend(), compiler(), &GemmSpec::new(ElemType::F16, ElemType::F32), &p, &x, &w, None, None, None, 1.0, 0.0)
            .unwrap_or_else(|e| panic!("k={k}: {e}"));
        // An aligned K takes the sm_90a kernel; K = 13 cannot.
        assert_eq!(got.kernel.contains("_sm90a_"), k == 40, "k={k}: {}", got.kernel);
        let got = got.y;
        let r = |v: &[f32]| reference::round_to_dtype(v, ElemType::F16);
        let want = reference::gemm(&r(&x), Layout::RowMajor, &r(&w), Layout::RowMajor, (p.m, p.n, p.k), None, None, Activation::None, None, 1.0, 0.0);
        let cmp = reference::compare(&got, &want);
        assert!(cmp.passes(tolerance(ElemType::F32)), "k={k}: {cmp:?}");
    }
}
