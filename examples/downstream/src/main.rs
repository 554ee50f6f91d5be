//! Runs the declared kernels once on random inputs (on the GPU when one is present, otherwise on
//! the CPU simulator) and prints how far each result is from its CPU reference.

use tessera::half::bf16;
use tessera::runtime::reference;
use tessera::runtime::{open_backend, BackendKind, Compiler, LoraProblem};
use tessera_downstream_example::{gelu_bf16, sliding_max3, AdapterProjection, CausalGqa, GeluProjection};

fn main() -> Result<(), tessera::TesseraError> {
    let backend = open_backend(BackendKind::Auto)?;
    let compiler = Compiler::with_default_cache()?;
    println!("device: {}", backend.device_name());
    for k in tessera::registry::kernels() {
        println!("registered: {} ({})", k.name, k.spec.family());
    }
    let mut seed = 1u32;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    };
    let to_bf16 = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let widen = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();

    // Attention: batch 1, 70 queries over 70 keys.
    let (q, k, v) = (to_bf16(&random(70 * 4 * 64)), to_bf16(&random(70 * 2 * 64)), to_bf16(&random(70 * 2 * 64)));
    let o = CausalGqa::run(backend.as_ref(), &compiler, 1, 70, 70, &q, &k, &v)?;
    let p = tessera::runtime::AttentionProblem::for_spec(&CausalGqa::SPEC, 1, 70, 70);
    let want = reference::attention(&widen(&q), &widen(&k), &widen(&v), &p, true, f64::from(p.default_scale()));
    println!("attention: {:?}", reference::compare(&widen(&o), &want.out));

    // LoRA with 3 adapters, some rows without one.
    let (m, n, kk, r) = (24, 72, 64, 8);
    let (x, w, a, b) = (to_bf16(&random(m * kk)), to_bf16(&random(kk * n)), to_bf16(&random(3 * kk * r)), to_bf16(&random(3 * r * n)));
    let ids: Vec<i64> = (0..m as i64).map(|i| i % 4 - 1).collect();
    let y = AdapterProjection::run(backend.as_ref(), &compiler, LoraProblem::new(m, n, kk, 3), &x, Some(&w), &a, &b, Some(&ids), None, None, 0.5)?;
    let ops = reference::LoraOperands {
        x: &widen(&x),
        layout_x: tessera::codegen::Layout::RowMajor,
        a: &widen(&a),
        b: &widen(&b),
        ids: Some(&ids),
        m,
        n,
        k: kk,
        rank: r,
        dtype: tessera::ElemType::BF16,
        scale: 0.5,
    };
    let want = reference::lora(&ops, &widen(&w), tessera::codegen::Layout::RowMajor, None, tessera::codegen::Activation::None, None);
    println!("lora: {:?}", reference::compare(&y, &want));

    // GEMM with the user-defined GELU epilogue.
    let (m, n, kk) = (40, 48, 32);
    let (x, w, bias) = (to_bf16(&random(m * kk)), to_bf16(&random(kk * n)), to_bf16(&random(n)));
    let y = GeluProjection::run(backend.as_ref(), &compiler, (m, n, kk), &x, &w, None, Some(&bias), None, 1.0, 0.0)?;
    let pre = reference::gemm(&widen(&x), tessera::codegen::Layout::RowMajor, &widen(&w), tessera::codegen::Layout::RowMajor, (m, n, kk), None, Some(&widen(&bias)), tessera::codegen::Activation::None, None, 1.0, 0.0);
    let want: Vec<f64> = pre.iter().map(|&v| f64::from(gelu_bf16(v as f32).to_f32())).collect();
    println!("gemm + gelu epilogue: {:?}", reference::compare(&widen(&y), &want));

    // Sliding-window maximum.
    let signal = random(1000);
    let got = sliding_max3(backend.as_ref(), &compiler, &signal)?;
    let wrong = (0..signal.len()).filter(|&i| {
        let lo = i.saturating_sub(1);
        let hi = (i + 1).min(signal.len() - 1);
        got[i] != signal[lo..=hi].iter().copied().fold(f32::MIN, f32::max)
    });
    println!("sliding max3: {} of {} wrong", wrong.count(), signal.len());
    Ok(())
}
