//! The mixed-precision training kernels on a real GPU against the Rust references, bit for bit,
//! at sizes the simulator cannot reach. Run with
//! `cargo test -p tessera-runtime --test gpu_amp -- --ignored` on a machine with a CUDA GPU.

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_runtime::amp::adamw::{run_adamw, GradScaling, HostParam};
use tessera_runtime::amp::cast::run_cast;
use tessera_runtime::codegen::{AdamWSpec, CastSpec, ElemType, UnscaleSpec};
use tessera_runtime::common::buffers::{decode, encode, fp8_format};
use tessera_runtime::reference::{self, AdamWHyper};
use tessera_runtime::amp::unscale::run_unscale;
use tessera_runtime::amp::HostTensor;
use tessera_runtime::{open_backend, Backend, BackendKind, Compiler};

fn backend() -> Box<dyn Backend> {
    open_backend(BackendKind::Cuda).unwrap_or_else(|e| panic!("these tests need a CUDA GPU: {e}"))
}

fn values(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|i| if i % 9973 == 5 { f32::NAN } else { rng.random_range(-600.0f32..600.0) * rng.random_range(0.0f32..1.0).powi(8) }).collect()
}

fn same(got: &[u8], want: &[u8], t: ElemType) -> bool {
    let s = t.size_bytes();
    let (g, w) = (decode(got, t), decode(want, t));
    g.len() == w.len() && (0..g.len()).all(|i| (g[i].is_nan() && w[i].is_nan()) || got[i * s..(i + 1) * s] == want[i * s..(i + 1) * s])
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn casts_unscale_and_adamw_match_the_references() {
    let (b, compiler) = (backend(), Compiler::new());
    let mut rng = StdRng::seed_from_u64(7);
    let n = 1_000_003;
    for from in [ElemType::F32, ElemType::BF16, ElemType::F16] {
        for to in ElemType::ALL {
            if from == to {
                continue;
            }
            let spec = CastSpec { scaled: to.is_fp8(), amax: true, ..CastSpec::new(from, to) };
            let x = encode(&values(&mut rng, n), from);
            let scale = to.is_fp8().then_some(0.75f32);
            let out = run_cast(b.as_ref(), &compiler, &spec, &x, scale).unwrap();
            let v: Vec<f32> = decode(&x, from).iter().map(|&x| scale.map_or(x, |s| x * s)).collect();
            let want = match fp8_format(to) {
                Some(f) => v.iter().map(|&x| reference::f32_to_fp8(x, f)).collect(),
                None => encode(&v, to),
            };
            assert!(same(&out.y, &want, to), "{}", spec.kernel_name());
        }
    }

    let mut grads: Vec<HostTensor> = (0..100).map(|i| HostTensor::from_f32(&values(&mut rng, 1 + i * 977), ElemType::FLOAT[i % 3])).collect();
    let want: Vec<HostTensor> = grads
        .iter()
        .map(|g| {
            let v: Vec<f32> = g.to_f32().iter().map(|&x| x * (1.0 / 1024.0)).collect();
            HostTensor::from_f32(&v, g.dtype)
        })
        .collect();
    let found = run_unscale(b.as_ref(), &compiler, &UnscaleSpec::default(), &mut grads, 1.0 / 1024.0).unwrap();
    assert!(found, "NaNs were injected");
    for (g, w) in grads.iter().zip(&want) {
        assert!(same(&g.bytes, &w.bytes, g.dtype));
    }

    let hyper = AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let mut params: Vec<HostParam> = (0..20)
        .map(|i| {
            let master: Vec<f32> = (0..(i * 4099 + 3)).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let grad: Vec<f32> = master.iter().map(|_| rng.random_range(-1.0f32..1.0)).collect();
            HostParam {
                grad: HostTensor::from_f32(&grad, ElemType::BF16),
                model: Some(HostTensor::from_f32(&master, ElemType::BF16)),
                exp_avg: vec![0.0; master.len()],
                exp_avg_sq: vec![0.0; master.len()],
                master,
            }
        })
        .collect();
    let mut want = params.clone();
    let mut step = 0;
    for s in 1..=3u32 {
        run_adamw(b.as_ref(), &compiler, &AdamWSpec::default(), &mut params, &hyper, &mut step, GradScaling::default()).unwrap();
        for w in want.iter_mut() {
            let g: Vec<bf16> = w.grad.to_f32().iter().map(|&x| bf16::from_f32(x)).collect();
            let mut model = vec![bf16::ZERO; w.master.len()];
            reference::adamw_step(&mut w.master, &mut w.exp_avg, &mut w.exp_avg_sq, &g, None, &mut model, &hyper, s);
        }
        assert_eq!(step, s as i32);
    }
    for (p, w) in params.iter().zip(&want) {
        assert_eq!(p.master, w.master);
        assert_eq!(p.exp_avg_sq, w.exp_avg_sq);
    }
}
