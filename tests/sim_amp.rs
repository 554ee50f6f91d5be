//! The mixed-precision training kernels on the CPU simulator against the Rust references, bit for
//! bit: casts between every pair of element types (scaled, with amax), gradient unscale over
//! mixed-dtype tensor lists with inf / NaN injected at random positions, several AdamW steps with
//! skipped (found-inf) steps in between, and the loss-scale and fp8-scale updates. Lengths from 0,
//! never multiples of the chunk only; outputs poisoned before each launch; the simulator's checks
//! on. `TESSERA_SIM_AMP_CASES` sets the cases per property (default 12). Needs NVRTC.

use half::{bf16, f16};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::{AdamWSpec, CastSpec, ElemType, ElementwiseTile, UnscaleSpec};
use tessera::runtime::amp::adamw::{run_adamw, GradScaling, HostParam};
use tessera::runtime::amp::cast::run_cast;
use tessera::runtime::common::buffers::{decode, encode, fp8_format};
use tessera::runtime::reference::{self, AdamWHyper, AmpFloat, LossScaler};
use tessera::runtime::amp::unscale::run_unscale;
use tessera::runtime::amp::HostTensor;

mod common;
use common::{backend, compiler};

fn cases() -> u32 {
    std::env::var("TESSERA_SIM_AMP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// Small tiles so that a few thousand elements span several chunks (and partial ones).
const TILES: [ElementwiseTile; 3] =
    [ElementwiseTile::new(128, 4, 2), ElementwiseTile::new(128, 8, 4), ElementwiseTile::new(256, 4, 1)];

/// Values that exercise rounding: normal, tiny (fp8 and f16 subnormal range), huge (saturation),
/// exact zeros of both signs, and, with `specials`, inf and NaN.
fn values(rng: &mut StdRng, n: usize, specials: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let r: f32 = rng.random_range(-1.0..1.0);
            match rng.random_range(0..20) {
                0 => r * 1e-6,
                1 => r * 1e5,
                2 => -0.0,
                3 if specials => f32::INFINITY,
                4 if specials => f32::NAN,
                5 if specials => f32::NEG_INFINITY,
                6 => r * 600.0,
                _ => r * 4.0,
            }
        })
        .collect()
}

/// The NaN the kernels store in `t`, where the ISA fixes it: fp8 results come from the saturating
/// conversion (`cvt.rn.satfinite.{e4m3x2,e5m2x2}.f32` semantics: 0x7f in both formats, which the
/// reference also produces, so fp8 is compared bit for bit), f16 and bf16 results from
/// `cvt.rn.{f16,bf16}x2.f32` (the canonical NaN, all ones but the sign). None for f32: the payload
/// of an f32 operation's NaN is not defined, so any NaN is accepted there.
fn canonical_nan(t: ElemType) -> Option<u32> {
    const CANONICAL_NAN_16: u32 = 0x7fff;
    match t {
        ElemType::E4M3 | ElemType::E5M2 => Some(u32::from(reference::FP8_NAN)),
        ElemType::F16 | ElemType::BF16 => Some(CANONICAL_NAN_16),
        ElemType::F32 => None,
    }
}

/// Stored elements equal bit for bit; where the reference is NaN, the kernel's element must be
/// the canonical NaN of `t` (any NaN for f32).
fn same_elems(got: &[u8], want: &[u8], t: ElemType) -> Result<(), String> {
    let s = t.size_bytes();
    let (g, w) = (decode(got, t), decode(want, t));
    if got.len() != want.len() {
        return Err(format!("{} bytes, want {}", got.len(), want.len()));
    }
    let raw = |bytes: &[u8], i: usize| bytes[i * s..(i + 1) * s].iter().rev().fold(0u32, |v, &b| v << 8 | u32::from(b));
    for i in 0..g.len() {
        let same = if w[i].is_nan() {
            g[i].is_nan() && !matches!(canonical_nan(t), Some(nan) if raw(got, i) != nan)
        } else {
            raw(got, i) == raw(want, i)
        };
        if !same {
            let wanted = match canonical_nan(t) {
                Some(nan) if w[i].is_nan() => format!("the canonical NaN {nan:#x}"),
                _ => format!("{} ({:02x?})", w[i], &want[i * s..(i + 1) * s]),
            };
            return Err(format!("element {i}: {} ({:02x?}), want {wanted}", g[i], &got[i * s..(i + 1) * s]));
        }
    }
    Ok(())
}

/// Reference cast of stored bytes: widen exactly, scale (one f32 multiply), round into `to`.
fn reference_cast(x: &[u8], from: ElemType, to: ElemType, scale: Option<f32>) -> (Vec<u8>, f32) {
    let v = decode(x, from);
    let amax = v.iter().filter(|x| !x.is_nan()).fold(0.0f32, |m, x| m.max(x.abs()));
    let scaled: Vec<f32> = v.iter().map(|&x| scale.map_or(x, |s| x * s)).collect();
    let y = match fp8_format(to) {
        Some(f) => scaled.iter().map(|&x| reference::f32_to_fp8(x, f)).collect(),
        None => encode(&scaled, to),
    };
    (y, amax)
}

fn check_cast(from: ElemType, to: ElemType, scaled: bool, tile: ElementwiseTile, n: usize, seed: u64) -> Result<(), TestCaseError> {
    let spec = CastSpec { scaled, amax: scaled, tile: Some(tile), ..CastSpec::new(from, to) };
    let mut rng = StdRng::seed_from_u64(seed);
    let x = encode(&values(&mut rng, n, true), from);
    let scale = scaled.then(|| [0.5f32, 3.0, 1.0 / 7.0, 1024.0][rng.random_range(0..4)]);
    let label = format!("{} n={n} scale={scale:?} seed={seed}", spec.kernel_name());
    let out = run_cast(backend(), compiler(), &spec, &x, scale).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    let (want, amax) = reference_cast(&x, from, to, scale);
    same_elems(&out.y, &want, to).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    if scaled {
        prop_assert_eq!(out.amax.map(f32::to_bits), Some(amax.to_bits()), "{}: amax", label);
    }
    Ok(())
}

fn elem() -> impl Strategy<Value = ElemType> {
    (0usize..5).prop_map(|i| ElemType::ALL[i])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 8, ..ProptestConfig::default() })]

    #[test]
    fn casts_match_the_reference_bit_for_bit(
        from in elem(), to in elem(), scaled in any::<bool>(), tile in 0usize..3, n in 0usize..1500, seed in any::<u64>()
    ) {
        prop_assume!(from != to);
        check_cast(from, to, scaled || to.is_fp8(), TILES[tile], n, seed)?;
    }

    #[test]
    fn unscale_matches_the_reference_bit_for_bit(
        dtypes in prop::collection::vec(0usize..3, 0..7), tile in 0usize..3, inject in any::<bool>(), seed in any::<u64>()
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut grads: Vec<HostTensor> = dtypes.iter().map(|&d| {
            let n = [0usize, 1, 7, 513, 1100][rng.random_range(0..5)] + rng.random_range(0..3);
            let mut v = values(&mut rng, n, false);
            if inject && n > 0 && rng.random_range(0..2) == 0 {
                v[rng.random_range(0..n)] = if rng.random_range(0..2) == 0 { f32::NAN } else { f32::NEG_INFINITY };
            }
            HostTensor::from_f32(&v, ElemType::FLOAT[d])
        }).collect();
        let inv = [1.0f32 / 65536.0, 0.37, 8.0][rng.random_range(0..3)];
        let mut want = grads.clone();
        let mut want_found = false;
        for g in want.iter_mut() {
            want_found |= reference_unscale(g, inv);
        }
        let spec = UnscaleSpec { tile: Some(TILES[tile]) };
        let found = run_unscale(backend(), compiler(), &spec, &mut grads, inv).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(found, want_found);
        for (i, (g, w)) in grads.iter().zip(&want).enumerate() {
            same_elems(&g.bytes, &w.bytes, g.dtype).map_err(|e| TestCaseError::fail(format!("tensor {i} ({}): {e}", g.dtype)))?;
        }
    }

    #[test]
    fn adamw_steps_match_the_reference_bit_for_bit(
        kinds in prop::collection::vec((0usize..3, 0usize..3), 1..5), tile in 0usize..3, seed in any::<u64>()
    ) {
        check_adamw(&kinds, TILES[tile], seed)?;
    }
}

/// Typed reference unscale of a host tensor in place; returns found-inf.
fn reference_unscale(g: &mut HostTensor, inv: f32) -> bool {
    fn typed<T: AmpFloat>(bytes: &[u8], size: usize, from_le: impl Fn(&[u8]) -> T) -> Vec<T> {
        bytes.chunks_exact(size).map(from_le).collect()
    }
    match g.dtype {
        ElemType::F32 => {
            let mut v = typed(&g.bytes, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            let found = reference::unscale_grads(&mut v, inv);
            g.bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            found
        }
        ElemType::F16 => {
            let mut v = typed(&g.bytes, 2, |c| f16::from_le_bytes([c[0], c[1]]));
            let found = reference::unscale_grads(&mut v, inv);
            g.bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            found
        }
        _ => {
            let mut v = typed(&g.bytes, 2, |c| bf16::from_le_bytes([c[0], c[1]]));
            let found = reference::unscale_grads(&mut v, inv);
            g.bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            found
        }
    }
}

/// The reference step on one host parameter (no found-inf: the caller skips instead).
fn reference_adamw(p: &mut HostParam, hyper: &AdamWHyper, step: u32, inv: Option<f32>) {
    let grad: Vec<f32> = p.grad.to_f32();
    match p.model.as_mut() {
        Some(model) if model.dtype == ElemType::F16 => {
            let mut m: Vec<f16> = model.to_f32().iter().map(|&x| f16::from_f32(x)).collect();
            reference::adamw_step(&mut p.master, &mut p.exp_avg, &mut p.exp_avg_sq, &grad, inv, &mut m, hyper, step);
            model.bytes = m.iter().flat_map(|x| x.to_le_bytes()).collect();
        }
        Some(model) => {
            let mut m: Vec<bf16> = model.to_f32().iter().map(|&x| bf16::from_f32(x)).collect();
            reference::adamw_step(&mut p.master, &mut p.exp_avg, &mut p.exp_avg_sq, &grad, inv, &mut m, hyper, step);
            model.bytes = m.iter().flat_map(|x| x.to_le_bytes()).collect();
        }
        None => {
            let mut m = vec![0f32; p.master.len()];
            reference::adamw_step(&mut p.master, &mut p.exp_avg, &mut p.exp_avg_sq, &grad, inv, &mut m, hyper, step);
        }
    }
}

fn check_adamw(kinds: &[(usize, usize)], tile: ElementwiseTile, seed: u64) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let hyper = AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let mut params: Vec<HostParam> = kinds
        .iter()
        .map(|&(g, m)| {
            let n = [0usize, 1, 300, 1029][rng.random_range(0..4)];
            let master: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let model = match m {
                0 => None,
                1 => Some(HostTensor::from_f32(&master, ElemType::F16)),
                _ => Some(HostTensor::from_f32(&master, ElemType::BF16)),
            };
            HostParam {
                grad: HostTensor::from_f32(&[], ElemType::FLOAT[g]),
                master,
                exp_avg: vec![0.0; n],
                exp_avg_sq: vec![0.0; n],
                model,
            }
        })
        .collect();
    let spec = AdamWSpec { tile: Some(tile) };
    let mut want = params.clone();
    let mut step = 0i32;
    let mut want_step = 0u32;
    // Four launches: the third is skipped (found-inf) and must change nothing.
    for launch in 0..4 {
        let inv = (launch % 2 == 1).then_some(0.25f32);
        let skip = launch == 2;
        for (p, w) in params.iter_mut().zip(want.iter_mut()) {
            let n = p.master.len();
            let g: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            p.grad = HostTensor::from_f32(&g, p.grad.dtype);
            w.grad = p.grad.clone();
        }
        let before = params.clone();
        run_adamw(backend(), compiler(), &spec, &mut params, &hyper, &mut step, GradScaling { found_inf: skip, inv_scale: inv })
            .map_err(|e| TestCaseError::fail(format!("launch {launch}: {e}")))?;
        if skip {
            prop_assert_eq!(&params, &before, "a skipped step changed something");
            prop_assert_eq!(step as u32, want_step);
            continue;
        }
        want_step += 1;
        for w in want.iter_mut() {
            reference_adamw(w, &hyper, want_step, inv);
        }
        prop_assert_eq!(step as u32, want_step);
        for (i, (p, w)) in params.iter().zip(&want).enumerate() {
            for (what, got, exp) in [("master", &p.master, &w.master), ("exp_avg", &p.exp_avg, &w.exp_avg), ("exp_avg_sq", &p.exp_avg_sq, &w.exp_avg_sq)] {
                for (j, (a, b)) in got.iter().zip(exp.iter()).enumerate() {
                    prop_assert!(a.to_bits() == b.to_bits(), "launch {} param {} {}[{}]: {} want {}", launch, i, what, j, a, b);
                }
            }
            if let (Some(a), Some(b)) = (&p.model, &w.model) {
                same_elems(&a.bytes, &b.bytes, a.dtype).map_err(|e| TestCaseError::fail(format!("launch {launch} param {i} model: {e}")))?;
            }
        }
    }
    Ok(())
}

/// Every special value through every conversion, one chunk, with and without vectors.
#[test]
fn special_values_convert_exactly() {
    let specials = [0.0, -0.0, 1.0, -1.0, 448.0, 464.0, 480.0, 57344.0, 61440.0, 1e-10, -1e-10, f32::MIN_POSITIVE, 1.0e-45,
        f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.001953125, 0.0009765625, 0.0029296875, 65504.0, 65520.0, 3.0e38,
        // Exact ties of each format (ties go to the even neighbour): e4m3, e5m2, f16, bf16.
        1.0625, 1.1875, -1.0625, 1.125, 1.375, 1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0,
        // Ties in the fp8 subnormal ranges: 1.5 and 2.5 quanta of e4m3 (2^-9) and e5m2 (2^-16).
        0.0029296875, 0.0048828125, 1.5 / 65536.0, 2.5 / 65536.0];
    for from in [ElemType::F32, ElemType::BF16] {
        for to in ElemType::ALL {
            if from == to {
                continue;
            }
            for tile in [TILES[0], TILES[2]] {
                let spec = CastSpec { scaled: to.is_fp8(), amax: true, tile: Some(tile), ..CastSpec::new(from, to) };
                let x = encode(&specials, from);
                let scale = to.is_fp8().then_some(1.0);
                let out = run_cast(backend(), compiler(), &spec, &x, scale).unwrap();
                let (want, amax) = reference_cast(&x, from, to, scale);
                same_elems(&out.y, &want, to).unwrap_or_else(|e| panic!("{}: {e}", spec.kernel_name()));
                assert_eq!(out.amax.map(f32::to_bits), Some(amax.to_bits()), "{}", spec.kernel_name());
            }
        }
    }
}

/// The loss-scale rules over a sequence of steps, and fp8 delayed scaling over a window, on the
/// device, against the references.
#[test]
fn scale_updates_follow_the_references() {
    use tessera::runtime::amp::scale::{prepare_fp8_scale_update, prepare_loss_scale_update, Fp8ScaleBuffers, LossScaleRules};
    use tessera::runtime::Backend;
    let b = backend();
    let scalar = |bytes: [u8; 4]| {
        let buf = b.alloc(4).unwrap();
        b.write(&buf, &bytes).unwrap();
        buf
    };
    let read = |buf: &tessera::runtime::DeviceBuffer| {
        let mut v = [0u8; 4];
        b.read(buf, &mut v).unwrap();
        v
    };
    let rules = LossScaleRules { growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 3 };
    let (scale, tracker, found) = (scalar(65536f32.to_le_bytes()), scalar(0i32.to_le_bytes()), scalar(0f32.to_le_bytes()));
    let launch = prepare_loss_scale_update(b, compiler(), &scale, &tracker, &found, &rules).unwrap();
    let mut want = LossScaler { scale: 65536.0, growth_tracker: 0 };
    for (i, inf) in [false, false, false, true, false, false, false, false, true, true].into_iter().enumerate() {
        b.write(&found, &(if inf { 1f32 } else { 0f32 }).to_le_bytes()).unwrap();
        launch.run(b).unwrap();
        reference::update_scale(&mut want, inf, 2.0, 0.5, 3);
        assert_eq!(f32::from_le_bytes(read(&scale)), want.scale, "step {i}");
        assert_eq!(i32::from_le_bytes(read(&tracker)), want.growth_tracker, "step {i}");
        assert_eq!(f32::from_le_bytes(read(&found)), 0.0, "found_inf is cleared");
    }
    // Growth that would overflow is not applied.
    b.write(&scale, &f32::MAX.to_le_bytes()).unwrap();
    b.write(&tracker, &2i32.to_le_bytes()).unwrap();
    launch.run(b).unwrap();
    assert_eq!(f32::from_le_bytes(read(&scale)), f32::MAX);
    assert!(prepare_loss_scale_update(b, compiler(), &scale, &tracker, &found, &LossScaleRules { growth_factor: 0.5, ..rules })
        .unwrap_err()
        .to_string()
        .contains("growth_factor"));

    // fp8: four windows of amax through a history of 3, margin 1.
    let history = b.alloc(12).unwrap();
    b.write(&history, &[0u8; 12]).unwrap();
    let (amax, s, s_inv) = (scalar(0f32.to_le_bytes()), scalar(1f32.to_le_bytes()), scalar(1f32.to_le_bytes()));
    let buffers = Fp8ScaleBuffers { amax: &amax, history: &history, scale: &s, scale_inv: &s_inv };
    let update = prepare_fp8_scale_update(b, compiler(), &buffers, 3, ElemType::E4M3, 1).unwrap();
    let mut want_history = [0f32; 3];
    let mut want_scale = 1f32;
    // 1e-37 would overflow the scale (kept instead) once it is the history's largest entry.
    for window_amax in [3.5f32, 0.0, 100.0, 7.25, 0.0, 0.0, 0.0, 1e-37, f32::NAN] {
        b.write(&amax, &window_amax.to_le_bytes()).unwrap();
        update.run(b).unwrap();
        want_scale = reference::next_fp8_scale(&mut want_history, window_amax, want_scale, reference::Fp8Format::E4M3, 1);
        assert_eq!(f32::from_le_bytes(read(&s)), want_scale, "amax {window_amax}");
        assert_eq!(f32::from_le_bytes(read(&s_inv)), 1.0 / want_scale);
        assert_eq!(f32::from_le_bytes(read(&amax)), 0.0, "the amax accumulator is zeroed");
    }
}
