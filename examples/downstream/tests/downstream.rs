//! The declared kernels on the CPU simulator (checks on) against CPU references, through nothing
//! but the public API a downstream crate sees.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::{Activation, Layout};
use tessera::half::bf16;
use tessera::runtime::reference::{self, LoraOperands};
use tessera::runtime::simulator::SimOptions;
use tessera::runtime::{Compiler, LoraProblem, SimBackend};
use tessera::{Arch, ElemType};
use tessera_downstream_example::{gelu_bf16, max3, sliding_max3, AdapterProjection, CausalGqa, GeluProjection};

fn sim() -> SimBackend {
    SimBackend::with_options(Arch::SM80, SimOptions { checks: true, ..SimOptions::default() })
}

fn bf16s(rng: &mut StdRng, n: usize) -> Vec<bf16> {
    (0..n).map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0))).collect()
}

fn widen(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

#[test]
fn attention_matches_the_reference() {
    let (backend, compiler) = (sim(), Compiler::new());
    let mut rng = StdRng::seed_from_u64(1);
    for (seq_q, seq_k) in [(1, 1), (37, 70), (70, 37)] {
        let (q, k, v) = (bf16s(&mut rng, seq_q * 4 * 64), bf16s(&mut rng, seq_k * 2 * 64), bf16s(&mut rng, seq_k * 2 * 64));
        let o = CausalGqa::run(&backend, &compiler, 1, seq_q, seq_k, &q, &k, &v).unwrap();
        let p = tessera::runtime::AttentionProblem::for_spec(&CausalGqa::SPEC, 1, seq_q, seq_k);
        let want = reference::attention(&widen(&q), &widen(&k), &widen(&v), &p, true, f64::from(p.default_scale()));
        let cmp = reference::compare(&widen(&o), &want.out);
        assert!(cmp.passes(2e-2), "seq {seq_q}x{seq_k}: {cmp:?}");
    }
}

#[test]
fn lora_matches_the_reference() {
    let (backend, compiler) = (sim(), Compiler::new());
    let mut rng = StdRng::seed_from_u64(2);
    let (m, n, k, r) = (21, 72, 40, 8);
    let (x, w, a, b) = (bf16s(&mut rng, m * k), bf16s(&mut rng, k * n), bf16s(&mut rng, 3 * k * r), bf16s(&mut rng, 3 * r * n));
    let ids: Vec<i64> = (0..m as i64).map(|i| i % 4 - 1).collect();
    let y = AdapterProjection::run(&backend, &compiler, LoraProblem::new(m, n, k, 3), &x, Some(&w), &a, &b, Some(&ids), None, None, 0.5).unwrap();
    let (xw, aw, bw) = (widen(&x), widen(&a), widen(&b));
    let ops = LoraOperands { x: &xw, layout_x: Layout::RowMajor, a: &aw, b: &bw, ids: Some(&ids), m, n, k, rank: r, dtype: ElemType::BF16, scale: 0.5 };
    let want = reference::lora(&ops, &widen(&w), Layout::RowMajor, None, Activation::None, None);
    let cmp = reference::compare(&y, &want);
    assert!(cmp.passes(2e-3), "{cmp:?}");
    // An out-of-range id is refused before anything runs.
    let bad: Vec<i64> = vec![3; m];
    let err = AdapterProjection::run(&backend, &compiler, LoraProblem::new(m, n, k, 3), &x, Some(&w), &a, &b, Some(&bad), None, None, 0.5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("adapter_ids"), "{err}");
}

#[test]
fn gemm_with_the_user_epilogue_matches_the_rust_function() {
    let (backend, compiler) = (sim(), Compiler::new());
    let mut rng = StdRng::seed_from_u64(3);
    let (m, n, k) = (40, 48, 32);
    let (x, w, bias) = (bf16s(&mut rng, m * k), bf16s(&mut rng, k * n), bf16s(&mut rng, n));
    let y = GeluProjection::run(&backend, &compiler, (m, n, k), &x, &w, None, Some(&bias), None, 1.0, 0.0).unwrap();
    let pre = reference::gemm(&widen(&x), Layout::RowMajor, &widen(&w), Layout::RowMajor, (m, n, k), None, Some(&widen(&bias)), Activation::None, None, 1.0, 0.0);
    // The epilogue is the Rust function itself, applied to the f64 pre-activation.
    let want: Vec<f64> = pre.iter().map(|&v| f64::from(gelu_bf16(v as f32).to_f32())).collect();
    let cmp = reference::compare(&widen(&y), &want);
    assert!(cmp.passes(1e-2), "{cmp:?}");
}

#[test]
fn elementwise_kernels_match_the_rust_functions() {
    let (backend, compiler) = (sim(), Compiler::new());
    let mut rng = StdRng::seed_from_u64(4);
    // GELU: the kernel's tanhf may differ from Rust's tanh by an ulp before the bf16 rounding.
    let x: Vec<f32> = (0..5000).map(|_| rng.random_range(-6.0f32..6.0)).collect();
    let got = gelu_bf16::run(&backend, &compiler, &x).unwrap();
    for (i, (&g, &xi)) in got.iter().zip(&x).enumerate() {
        let want = gelu_bf16(xi);
        assert!((g.to_f32() - want.to_f32()).abs() <= 1e-2 * want.to_f32().abs().max(1e-3), "gelu({xi}) [{i}]: {g} vs {want}");
    }
    // max3 and the sliding window built on it: exact.
    let (a, b, c) = (x[..1000].to_vec(), x[1000..2000].to_vec(), x[2000..3000].to_vec());
    let got = max3::run(&backend, &compiler, &a, &b, &c).unwrap();
    for i in 0..1000 {
        assert_eq!(got[i], max3(a[i], b[i], c[i]), "{i}");
    }
    let signal: Vec<f32> = x[..777].to_vec();
    let got = sliding_max3(&backend, &compiler, &signal).unwrap();
    for i in 0..signal.len() {
        let window = &signal[i.saturating_sub(1)..=(i + 1).min(signal.len() - 1)];
        assert_eq!(got[i], window.iter().copied().fold(f32::MIN, f32::max), "{i}");
    }
    assert!(max3::run(&backend, &compiler, &a, &b, &c[..10]).is_err(), "unequal lengths are refused");
}

/// Every kernel this crate declared is in the registry and compiles through NVRTC for sm_80 and
/// sm_90.
#[test]
fn every_declared_kernel_is_registered_and_compiles() {
    let names: Vec<&str> = tessera::registry::kernels().iter().map(|k| k.name).collect();
    for want in ["CausalGqa", "AdapterProjection", "gelu_bf16", "GeluProjection", "max3"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let compiler = Compiler::new();
    for k in tessera::registry::kernels() {
        for arch in [Arch::SM80, Arch::SM90] {
            let source = k.spec.render(arch).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            compiler.compile(&source, tessera::runtime::Target::ptx(arch)).unwrap_or_else(|e| panic!("{} {arch}: {e}", k.name));
        }
    }
}
