//! Kernels declared with the macros, covering their options and the whole elementwise subset:
//! every one registers, compiles through NVRTC for sm_80 and sm_90, and the elementwise kernels
//! agree with the Rust functions they were generated from on the simulator (bit for bit, apart
//! from exp / tanh, which may differ by an ulp before the final rounding).

use tessera::half::{bf16, f16};
use tessera::runtime::simulator::SimOptions;
use tessera::runtime::{Compiler, SimBackend, Target};
use tessera::Arch;

#[tessera::attention(dtype = f16, head_dim = 256, heads_q = 4, heads_kv = 1, tile(block_n = 32, warps = 4))]
struct Mqa;

#[tessera::gemm(dtype = f16, out = f32, layout_x = col, layout_w = col, bias, activation = silu, residual, unaligned)]
struct FullGemm;

#[tessera::lora(dtype = bf16, out = bf16, rank = 128, adapters = per_row, bias, epilogue = clamp_f16, tile(block_m = 64, block_n = 64, warps = 4, stages = 2))]
struct BigLora;

#[tessera::lora(dtype = f16, rank = 8, bottleneck = gelu_tanh)]
struct Bottleneck;

/// Every operation of the subset once.
#[tessera::elementwise(tile(threads = 128, elems_per_thread = 8, vector = 2))]
fn kitchen_sink(x: f32, y: f16, z: bf16) -> f16 {
    let a = x * 2.0 - x / 3.0 + (-x);
    let b = if a > 0.5 && !(a >= 10.0) || a == -1.0 { a.sqrt() } else { a.abs().min(4.0).max(0.25) };
    let c: f16 = y * (b as f16) + 1.5;
    let d = (z as f32).exp().tanh();
    let e = if c != y { c } else { (d as f16) - y };
    e
}

/// Clamps to f16's finite range and rounds: an epilogue for the f32 accumulator.
#[tessera::elementwise]
fn clamp_f16(x: f32) -> f32 {
    let c = x.min(65504.0).max(-65504.0);
    (c as f16) as f32
}

#[test]
fn declared_kernels_register_and_compile_for_every_arch() {
    let names: Vec<&str> = tessera::registry::kernels().iter().map(|k| k.name).collect();
    for want in ["Mqa", "FullGemm", "BigLora", "Bottleneck", "kitchen_sink", "clamp_f16"] {
        assert!(names.contains(&want), "{want} not registered: {names:?}");
    }
    assert!(Mqa::SOURCE.contains("attention_fwd<tessera::f16, 256,"));
    assert!(FullGemm::SOURCE.contains("_unaligned_"));
    let compiler = Compiler::new();
    for k in tessera::registry::kernels() {
        for arch in [Arch::SM80, Arch::SM90] {
            let source = k.spec.render(arch).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            compiler.compile(&source, Target::ptx(arch)).unwrap_or_else(|e| panic!("{} on {arch}: {e}", k.name));
        }
    }
}

#[test]
fn elementwise_kernels_agree_with_their_rust_functions() {
    let backend = SimBackend::with_options(Arch::SM80, SimOptions { checks: true, ..SimOptions::default() });
    let compiler = Compiler::new();
    let n = 3001;
    let special = [0.0f32, -0.0, 0.5, -1.0, 10.0, 1e-30, 70000.0, f32::INFINITY, f32::NAN];
    let x: Vec<f32> = (0..n).map(|i| if i < special.len() { special[i] } else { ((i * 7919) % 2003) as f32 / 97.0 - 10.0 }).collect();
    let y: Vec<f16> = (0..n).map(|i| f16::from_f32(((i * 31) % 211) as f32 / 17.0 - 6.0)).collect();
    let z: Vec<bf16> = (0..n).map(|i| bf16::from_f32(((i * 13) % 97) as f32 / 29.0 - 1.5)).collect();
    let got = kitchen_sink::run(&backend, &compiler, &x, &y, &z).unwrap();
    let mut off_by_ulp = 0;
    for i in 0..n {
        let want = kitchen_sink(x[i], y[i], z[i]);
        if got[i].to_bits() == want.to_bits() || (got[i].is_nan() && want.is_nan()) {
            continue;
        }
        // exp / tanh differ by at most an f32 ulp or two, which can move an f16 rounding by one.
        assert!((got[i].to_bits() as i32 - want.to_bits() as i32).abs() <= 1, "{i}: {} vs {} for ({}, {}, {})", got[i], want, x[i], y[i], z[i]);
        off_by_ulp += 1;
    }
    assert!(off_by_ulp * 100 <= n, "{off_by_ulp} of {n} results differ by an ulp");
    let got = clamp_f16::run(&backend, &compiler, &x).unwrap();
    for i in 0..n {
        let want = clamp_f16(x[i]);
        assert!(got[i].to_bits() == want.to_bits() || (got[i].is_nan() && want.is_nan()), "{i}: {} vs {want}", got[i]);
    }
}

/// A LoRA with a user epilogue, on the simulator: the epilogue applies after the bias, before the
/// output rounding, exactly as the Rust function computes it.
#[test]
fn lora_with_a_user_epilogue_matches_the_reference() {
    use tessera::codegen::{Activation, Layout};
    use tessera::runtime::reference::{self, LoraOperands};
    use tessera::runtime::LoraProblem;
    let backend = SimBackend::with_options(Arch::SM80, SimOptions { checks: true, ..SimOptions::default() });
    let compiler = Compiler::new();
    let (m, n, k, r) = (20, 72, 24, 128);
    let v = |len: usize, s: usize| -> Vec<bf16> { (0..len).map(|i| bf16::from_f32((((i * 37 + s) % 101) as f32 - 50.0) / 40.0)).collect() };
    let (x, w, a, b, bias) = (v(m * k, 1), v(k * n, 2), v(2 * k * r, 3), v(2 * r * n, 4), v(n, 5));
    let ids: Vec<i64> = (0..m as i64).map(|i| i % 3 - 1).collect();
    let y = BigLora::run(&backend, &compiler, LoraProblem::new(m, n, k, 2), &x, Some(&w), &a, &b, Some(&ids), Some(&bias), None, 0.25).unwrap();
    let f = |s: &[bf16]| s.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    let (xf, af, bf) = (f(&x), f(&a), f(&b));
    let ops = LoraOperands { x: &xf, layout_x: Layout::RowMajor, a: &af, b: &bf, ids: Some(&ids), m, n, k, rank: r, dtype: tessera::ElemType::BF16, scale: 0.25 };
    let pre = reference::lora(&ops, &f(&w), Layout::RowMajor, Some(&f(&bias)), Activation::None, None);
    let want: Vec<f64> = pre.iter().map(|&p| f64::from(clamp_f16(p as f32))).collect();
    let cmp = reference::compare(&f(&y), &want);
    assert!(cmp.passes(1e-2), "{cmp:?}");
}
