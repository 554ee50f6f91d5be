//! GEMM and LoRA on a real GPU against the f64 CPU references, with default tiles at sizes the
//! simulator cannot reach. Run with `cargo test -p tessera-runtime --test gpu_matmul -- --ignored`
//! on a machine with a CUDA GPU.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_runtime::codegen::{Activation, AdapterMode, Arch, ElemType, Epilogue, GemmSpec, Layout, LoraSpec};
use tessera_runtime::reference::{self, LoraOperands};
use tessera_runtime::{open_backend, run_gemm, run_lora, Backend, BackendKind, Compiler, GemmProblem, KernelCache, LoraInputs, LoraProblem};

/// On an H100/H200 (sm_90a), a launch whose spec routes to the TMA + wgmma kernel (with K > 0, so a
/// tensor map can describe it) must have run that kernel, and nothing else may have. An empty
/// problem launches nothing.
fn assert_path(arch: Arch, routed: bool, kernel: &str, label: &str) {
    if arch.has_wgmma() && !kernel.is_empty() {
        assert_eq!(kernel.contains("_sm90a_"), routed, "{label}: ran {kernel}");
    }
}

fn backend() -> Box<dyn Backend> {
    open_backend(BackendKind::Cuda).unwrap_or_else(|e| panic!("these tests need a CUDA GPU: {e}"))
}

fn compiler() -> Compiler {
    let dir = std::env::temp_dir().join("tessera-gpu-test-cache");
    Compiler::new().with_cache(KernelCache::open(dir).expect("cache folder"))
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn tolerance(out: ElemType) -> f64 {
    match out {
        ElemType::BF16 => 1e-2,
        ElemType::F16 => 3e-3,
        ElemType::F32 => 2e-3,
        other => panic!("{other} is not a GEMM output type"),
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gemm_matches_the_reference() {
    let (backend, compiler) = (backend(), compiler());
    let shapes = [(1, 1, 1), (255, 257, 129), (512, 384, 1000), (33, 4096, 64), (1000, 72, 13)];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for (j, layout_x) in Layout::ALL.into_iter().enumerate() {
            let spec = GemmSpec {
                layout_x,
                layout_w: Layout::ALL[(i + j) % 2],
                epilogue: Epilogue { user: None, bias: true, activation: Activation::ALL[i % 4], residual: j == 1 },
                ..GemmSpec::new(ElemType::MMA_INPUTS[i % 2], ElemType::MMA_OUTPUTS[(i + j) % 3])
            };
            let p = GemmProblem::new(m, n, k);
            let mut rng = StdRng::seed_from_u64((i * 10 + j) as u64);
            let x = random(&mut rng, m * k);
            let w = random(&mut rng, k * n);
            let bias = random(&mut rng, n);
            let residual = spec.epilogue.residual.then(|| random(&mut rng, m * n));
            let label = format!("{} {p:?}", spec.kernel_name(backend.arch()));
            let ran = run_gemm(backend.as_ref(), &compiler, &spec, &p, &x, &w, None, Some(&bias), residual.as_deref(), 1.0, 0.0)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let aligned = GemmSpec { aligned: tessera_runtime::gemm::fits_aligned(&spec, &p), ..spec };
            assert_path(backend.arch(), aligned.hopper_tile(backend.arch()).is_ok(), &ran.kernel, &label);
            let got = ran.y;
            let rin = |v: &[f32]| reference::round_to_dtype(v, spec.dtype);
            let rout = |v: &[f32]| reference::round_to_dtype(v, spec.out);
            let residual = residual.map(|r| rout(&r));
            let want = reference::gemm(&rin(&x), layout_x, &rin(&w), spec.layout_w, (m, n, k), None, Some(&rout(&bias)), spec.epilogue.activation, residual.as_deref(), 1.0, 0.0);
            let cmp = reference::compare(&got, &want);
            assert!(cmp.passes(tolerance(spec.out)), "{label}: {cmp:?}");
        }
    }
}

/// Split-K on real hardware: CTAs of one output tile run concurrently and the last one reduces.
#[test]
#[ignore = "needs a CUDA GPU"]
fn split_k_gemm_matches_the_reference() {
    use tessera_runtime::codegen::GemmTile;
    let (backend, compiler) = (backend(), compiler());
    for split in [2, 4, 8] {
        let spec = GemmSpec::new(ElemType::BF16, ElemType::F32).with_tile(GemmTile::new(64, 64, 32, 4, 3).with_split_k(split));
        let (m, n, k) = (96, 160, 4096 + 40);
        let mut rng = StdRng::seed_from_u64(split as u64);
        let x = random(&mut rng, m * k);
        let w = random(&mut rng, k * n);
        let got = run_gemm(backend.as_ref(), &compiler, &spec, &GemmProblem::new(m, n, k), &x, &w, None, None, None, 1.0, 0.0).unwrap().y;
        let rin = |v: &[f32]| reference::round_to_dtype(v, spec.dtype);
        let want = reference::gemm(&rin(&x), Layout::RowMajor, &rin(&w), Layout::RowMajor, (m, n, k), None, None, Activation::None, None, 1.0, 0.0);
        let cmp = reference::compare(&got, &want);
        assert!(cmp.passes(tolerance(spec.out)), "split {split}: {cmp:?}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn lora_matches_the_reference() {
    let (backend, compiler) = (backend(), compiler());
    // (m, n, k, rank, adapters: 0 = single, bottleneck)
    let cases = [
        (1, 4096, 512, 16, 0, false),
        (300, 512, 384, 64, 0, false),
        (257, 640, 256, 128, 4, false),
        (16, 1024, 512, 16, 16, false),
        (200, 264, 264, 32, 0, true),
        (77, 130, 90, 8, 3, false),
    ];
    for (i, &(m, n, k, rank, adapters, bottleneck)) in cases.iter().enumerate() {
        let mut spec = if bottleneck {
            LoraSpec::bottleneck(ElemType::BF16, ElemType::F32, rank, Activation::GeluTanh)
        } else {
            LoraSpec::new(ElemType::MMA_INPUTS[i % 2], ElemType::F32, rank)
        };
        if adapters > 0 {
            spec.adapters = AdapterMode::PerRow;
        }
        let p = LoraProblem::new(m, n, k, adapters.max(1));
        let mut rng = StdRng::seed_from_u64(100 + i as u64);
        let x = random(&mut rng, m * k);
        let w = (!bottleneck).then(|| random(&mut rng, k * n));
        let a = random(&mut rng, p.a_elements(rank as usize));
        let b = random(&mut rng, p.b_elements(rank as usize));
        let ids: Option<Vec<i64>> = (adapters > 0).then(|| (0..m as i64).map(|r| if r % 5 == 4 { -1 } else { r % adapters as i64 }).collect());
        let inputs = LoraInputs { x: &x, w: w.as_deref(), a: &a, b: &b, ids: ids.as_deref(), bias: None, residual: None };
        let label = format!("{} {p:?}", spec.kernel_name(backend.arch()));
        let ran = run_lora(backend.as_ref(), &compiler, &spec, &p, &inputs, 0.5, None).unwrap_or_else(|e| panic!("{label}: {e}"));
        let aligned = LoraSpec { aligned: tessera_runtime::lora::fits_aligned(&spec, &p), ..spec };
        assert_path(backend.arch(), aligned.hopper_tile(backend.arch()).is_ok(), &ran.kernel, &label);
        let got = ran.y;
        let rin = |v: &[f32]| reference::round_to_dtype(v, spec.dtype);
        let (xr, ar, br) = (rin(&x), rin(&a), rin(&b));
        let ops = LoraOperands { x: &xr, layout_x: Layout::RowMajor, a: &ar, b: &br, ids: ids.as_deref(), m, n, k, rank: rank as usize, dtype: spec.dtype, scale: 0.5 };
        let want = if bottleneck {
            reference::bottleneck(&ops, Activation::GeluTanh)
        } else {
            reference::lora(&ops, &rin(w.as_deref().unwrap_or_default()), Layout::RowMajor, None, Activation::None, None)
        };
        let cmp = reference::compare(&got, &want);
        assert!(cmp.passes(tolerance(spec.out)), "{label}: {cmp:?}");
    }
}
