//! Bit-exact references for mixed-precision training: gradient unscaling with the non-finite
//! check, the dynamic loss-scale update (both as PyTorch's `torch.amp.GradScaler` does them on the
//! GPU), and one AdamW step on f32 master weights that also writes the 16-bit model copy.
//!
//! Every operation is a single IEEE-754 binary32 operation with round-to-nearest-even, in the
//! order documented on each function, with no fused multiply-add: a GPU kernel that uses
//! `__fmul_rn` / `__fadd_rn` / `__fsub_rn` / `__fdiv_rn` / `__fsqrt_rn` in the same order (and
//! `__float2half_rn` / `__float2bfloat16_rn` for the narrowing) reproduces these results bit for
//! bit. (Rust never contracts `a * b + c` into an FMA, so the code below is that order literally.)
//!
//! A training step with loss scaling is:
//! 1. `found = unscale_grads(grads, 1 / scale)` for every gradient tensor (OR the flags);
//! 2. if `!found`, [`adamw_step`] for every parameter tensor; if `found`, the step is skipped:
//!    `adamw_step` is simply not called, so master weights, moments, model weights and the step
//!    count all stay as they were;
//! 3. `update_scale(&mut scaler, found, ..)`.
//!
//! Kept beside the mixed-precision family's launchers; [`crate::reference`] re-exports it with the
//! other references.

use half::{bf16, f16};

/// Element types a gradient or model tensor may be stored in: f32, f16 or bf16.
///
/// `widen` is exact; `round_from_f32` is round-to-nearest-even (the `half` crate's `from_f32`,
/// i.e. `__float2half_rn` / `__float2bfloat16_rn`: overflow gives ±inf, NaN stays NaN), and the
/// identity for f32.
pub trait AmpFloat: Copy {
    /// Exact widening to f32.
    fn widen(self) -> f32;
    /// Round-to-nearest-even narrowing from f32.
    fn round_from_f32(x: f32) -> Self;
}

impl AmpFloat for f32 {
    fn widen(self) -> f32 {
        self
    }
    fn round_from_f32(x: f32) -> Self {
        x
    }
}

impl AmpFloat for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn round_from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl AmpFloat for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn round_from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// Unscales gradients in place and reports whether any of them was non-finite, as PyTorch's
/// `_amp_foreach_non_finite_check_and_unscale_`.
///
/// For each element: `v = widen(g)`; if `!v.is_finite()` (inf or NaN) the returned flag is set;
/// the element becomes `round_from_f32(v * inv_scale)`, the product being one f32 multiply (RNE).
/// The check looks at the value **before** the multiply: a finite gradient whose product overflows
/// does not set the flag, a non-finite one sets it whatever `inv_scale` is. Every element is
/// written, including non-finite ones and those after the first non-finite one. An empty slice
/// returns `false`.
pub fn unscale_grads<T: AmpFloat>(grad: &mut [T], inv_scale: f32) -> bool {
    let mut found = false;
    for g in grad.iter_mut() {
        let v = g.widen();
        if !v.is_finite() {
            found = true;
        }
        *g = T::round_from_f32(v * inv_scale);
    }
    found
}

/// Dynamic loss-scale state (`GradScaler`'s `_scale` and `_growth_tracker`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaler {
    /// Current loss scale.
    pub scale: f32,
    /// Consecutive steps without a non-finite gradient since the last growth or backoff.
    pub growth_tracker: i32,
}

/// One loss-scale update, exactly PyTorch's `_amp_update_scale_` (all arithmetic in f32, RNE):
///
/// ```text
/// if found_inf { scale = scale * backoff_factor; growth_tracker = 0 }
/// else {
///     successful = growth_tracker + 1
///     if successful == growth_interval {
///         new_scale = scale * growth_factor
///         if new_scale is finite { scale = new_scale }   // a non-finite growth is dropped
///         growth_tracker = 0
///     } else { growth_tracker = successful }
/// }
/// ```
///
/// `growth_tracker + 1` wraps at `i32::MAX` instead of panicking (unreachable in practice).
pub fn update_scale(
    state: &mut LossScaler,
    found_inf: bool,
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: i32,
) {
    if found_inf {
        state.scale *= backoff_factor;
        state.growth_tracker = 0;
    } else {
        let successful = state.growth_tracker.wrapping_add(1);
        if successful == growth_interval {
            let new_scale = state.scale * growth_factor;
            if new_scale.is_finite() {
                state.scale = new_scale;
            }
            state.growth_tracker = 0;
        } else {
            state.growth_tracker = successful;
        }
    }
}

/// `b^n` in f64 by square-and-multiply in this fixed order, so a GPU kernel can replicate it bit
/// for bit:
///
/// ```text
/// result = 1.0; base = b
/// while n != 0 {
///     if n & 1 == 1 { result = result * base }   // one f64 multiply, RNE
///     n >>= 1
///     if n != 0 { base = base * base }           // one f64 multiply, RNE
/// }
/// ```
///
/// i.e. the exponent's bits from the least significant one; e.g. `b^3 = b * (b*b)` and
/// `b^5 = b * ((b*b)*(b*b))`. `n = 0` gives 1.0 (also for NaN `b`).
pub fn powi_exact(b: f64, n: u32) -> f64 {
    let mut result = 1.0f64;
    let mut base = b;
    let mut n = n;
    while n != 0 {
        if n & 1 == 1 {
            result *= base;
        }
        n >>= 1;
        if n != 0 {
            base *= base;
        }
    }
    result
}

/// AdamW hyper-parameters (f32, as the kernel receives them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the bias-corrected RMS of the gradients.
    pub eps: f32,
    /// Decoupled weight decay (multiplied by `lr`).
    pub weight_decay: f32,
}

/// The per-step scalars of [`adamw_step`], identical for every element (a launcher computes them
/// on the host exactly like this and passes them to the kernel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    /// `(1.0f64 - powi_exact(beta1 as f64, step)) as f32`
    pub bc1: f32,
    /// `(1.0f64 - powi_exact(beta2 as f64, step)) as f32`
    pub bc2: f32,
    /// `lr / bc1` (f32 division)
    pub step_size: f32,
    /// `bc2.sqrt()` (f32, correctly rounded)
    pub bc2_sqrt: f32,
    /// `lr * weight_decay` (f32)
    pub lr_wd: f32,
    /// `1.0f32 - beta1`
    pub omb1: f32,
    /// `1.0f32 - beta2`
    pub omb2: f32,
}

impl AdamWScalars {
    /// Computes the scalars for `step`, the step count **after** this step (1 for the first one).
    /// The bias corrections go through f64 ([`powi_exact`], one f64 subtraction, one RNE
    /// narrowing to f32); everything else is single f32 operations. `step = 0` would give
    /// `bc1 = 0` and an infinite step size; [`adamw_step`] rejects it.
    pub fn new(hyper: &AdamWHyper, step: u32) -> Self {
        let bc1 = (1.0f64 - powi_exact(f64::from(hyper.beta1), step)) as f32;
        let bc2 = (1.0f64 - powi_exact(f64::from(hyper.beta2), step)) as f32;
        AdamWScalars {
            bc1,
            bc2,
            step_size: hyper.lr / bc1,
            bc2_sqrt: bc2.sqrt(),
            lr_wd: hyper.lr * hyper.weight_decay,
            omb1: 1.0f32 - hyper.beta1,
            omb2: 1.0f32 - hyper.beta2,
        }
    }
}

/// One AdamW step on f32 master weights, writing the rounded model copy.
///
/// With the scalars of [`AdamWScalars::new`]`(hyper, step)`, per element `i`, every line one f32
/// operation with RNE, in exactly this order:
///
/// ```text
/// g = widen(grad[i]);  if let Some(inv) = inv_scale { g = g * inv }
/// p = master[i]
/// t = lr_wd * p;         p = p - t                 // decoupled weight decay
/// a = beta1 * m[i];      b = omb1 * g;    m[i] = a + b
/// gg = g * g;  a = beta2 * v[i];  b = omb2 * gg;  v[i] = a + b
/// s = sqrt(v[i]);        s = s / bc2_sqrt;         denom = s + eps
/// t = step_size * m[i];  t = t / denom;            p = p - t
/// master[i] = p;         model[i] = round_from_f32(p)   // f16 / bf16 RNE (identity for f32)
/// ```
///
/// `step` is the new step count (1 for the first step). `inv_scale` lets the step unscale the
/// gradients itself (`Some(1 / loss_scale)`, the multiply being the one shown) instead of a prior
/// [`unscale_grads`]; it does not check for non-finite values. When a step is skipped because of
/// non-finite gradients, the caller does not call this function at all and nothing changes.
///
/// # Panics
/// When the slices do not all have the same length, or `step == 0` (harness bugs, not numerical
/// results).
#[allow(clippy::too_many_arguments)]
pub fn adamw_step<G: AmpFloat, M: AmpFloat>(
    master: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[G],
    inv_scale: Option<f32>,
    model: &mut [M],
    hyper: &AdamWHyper,
    step: u32,
) {
    let n = master.len();
    assert!(
        m.len() == n && v.len() == n && grad.len() == n && model.len() == n,
        "adamw_step: master, m, v, grad and model lengths differ"
    );
    assert!(step >= 1, "adamw_step: step is the new step count and starts at 1");
    let s = AdamWScalars::new(hyper, step);
    for i in 0..n {
        let mut g = grad[i].widen();
        if let Some(inv) = inv_scale {
            g *= inv;
        }
        let mut p = master[i];
        let t = s.lr_wd * p;
        p -= t;
        let a = hyper.beta1 * m[i];
        let b = s.omb1 * g;
        m[i] = a + b;
        let gg = g * g;
        let a = hyper.beta2 * v[i];
        let b = s.omb2 * gg;
        v[i] = a + b;
        let sq = v[i].sqrt();
        let sq = sq / s.bc2_sqrt;
        let denom = sq + hyper.eps;
        let t = s.step_size * m[i];
        let t = t / denom;
        p -= t;
        master[i] = p;
        model[i] = M::round_from_f32(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn unscale_hand_checked() {
        let mut g = vec![2.0f32, -4.0, 0.0, 3.0];
        assert!(!unscale_grads(&mut g, 0.5));
        assert_eq!(g, vec![1.0, -2.0, 0.0, 1.5]);
        // f16: the product is rounded in f32 first, then to f16 with RNE.
        // 1 + 2^-10 (one f16 ulp above 1) times 1.5 = 1.5 + 1.5 * 2^-10, halfway between the f16
        // neighbours 1.5 + 2^-10 (odd mantissa) and 1.5 + 2^-9 (even): ties to the even one.
        let x = f16::from_f32(1.0 + 2f32.powi(-10));
        let mut g = vec![x];
        assert!(!unscale_grads(&mut g, 1.5));
        assert_eq!(g[0].to_f32(), 1.5 + 2f32.powi(-9));
        // bf16: 1/3 is not representable; the result is bf16::from_f32(3.0f32 * (1/3)f32).
        let mut g = vec![bf16::from_f32(3.0)];
        assert!(!unscale_grads(&mut g, 1.0 / 3.0));
        assert_eq!(g[0], bf16::from_f32(3.0f32 * (1.0f32 / 3.0)));
        assert_eq!(g[0].to_f32(), 1.0);
        // Empty slices: nothing found.
        assert!(!unscale_grads::<f32>(&mut [], 0.5));
        assert!(!unscale_grads::<f16>(&mut [], 0.5));
        assert!(!unscale_grads::<bf16>(&mut [], 0.5));
    }

    #[test]
    fn unscale_flags_non_finite_anywhere() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            for n in [1usize, 2, 7] {
                for pos in 0..n {
                    let mut g: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
                    g[pos] = bad;
                    assert!(unscale_grads(&mut g, 0.25), "{bad} at {pos} of {n}");
                    // Every element is still written.
                    for (i, &x) in g.iter().enumerate() {
                        if i == pos {
                            assert!(!x.is_finite());
                        } else {
                            assert_eq!(x, (i as f32 + 1.0) * 0.25);
                        }
                    }
                    let mut h: Vec<f16> = (0..n).map(|i| f16::from_f32(i as f32)).collect();
                    h[pos] = f16::from_f32(bad);
                    assert!(unscale_grads(&mut h, 0.25));
                    let mut b: Vec<bf16> = (0..n).map(|i| bf16::from_f32(i as f32)).collect();
                    b[pos] = bf16::from_f32(bad);
                    assert!(unscale_grads(&mut b, 0.25));
                }
            }
        }
        // The check is on the value before the multiply.
        let mut g = vec![3e38f32];
        assert!(!unscale_grads(&mut g, 2.0));
        assert_eq!(g[0], f32::INFINITY);
        let mut g = vec![f16::MAX];
        assert!(!unscale_grads(&mut g, 2.0));
        assert!(g[0].is_infinite());
        let mut g = vec![f32::INFINITY];
        assert!(unscale_grads(&mut g, 0.0));
        assert!(g[0].is_nan());
        // A zero gradient times an infinite inv_scale is NaN but was finite: not flagged.
        let mut g = vec![0.0f32];
        assert!(!unscale_grads(&mut g, f32::INFINITY));
        assert!(g[0].is_nan());
    }

    #[test]
    fn update_scale_sequences() {
        let mut s = LossScaler { scale: 65536.0, growth_tracker: 0 };
        // Growth after `growth_interval` clean steps.
        for i in 1..3 {
            update_scale(&mut s, false, 2.0, 0.5, 3);
            assert_eq!(s, LossScaler { scale: 65536.0, growth_tracker: i });
        }
        update_scale(&mut s, false, 2.0, 0.5, 3);
        assert_eq!(s, LossScaler { scale: 131072.0, growth_tracker: 0 });
        // Backoff on inf resets the tracker.
        update_scale(&mut s, false, 2.0, 0.5, 3);
        assert_eq!(s.growth_tracker, 1);
        update_scale(&mut s, true, 2.0, 0.5, 3);
        assert_eq!(s, LossScaler { scale: 65536.0, growth_tracker: 0 });
        update_scale(&mut s, true, 2.0, 0.5, 3);
        assert_eq!(s, LossScaler { scale: 32768.0, growth_tracker: 0 });
        // Non-power-of-two factors: plain f32 multiplies.
        let mut s = LossScaler { scale: 1000.0, growth_tracker: 0 };
        update_scale(&mut s, true, 2.0, 0.3, 1);
        assert_eq!(s.scale, 1000.0f32 * 0.3f32);
        update_scale(&mut s, false, 1.7, 0.3, 1);
        assert_eq!(s.scale, 1000.0f32 * 0.3f32 * 1.7f32);
        // A growth that overflows is dropped but still resets the tracker.
        let mut s = LossScaler { scale: 3e38, growth_tracker: 1 };
        update_scale(&mut s, false, 2.0, 0.5, 2);
        assert_eq!(s, LossScaler { scale: 3e38, growth_tracker: 0 });
        // Backoff is applied even when it gives a weird value (no guard, like PyTorch).
        let mut s = LossScaler { scale: 1e-45, growth_tracker: 5 };
        update_scale(&mut s, true, 2.0, 0.5, 2000);
        assert_eq!(s, LossScaler { scale: 0.0, growth_tracker: 0 });
        // Interval 1: grows every clean step.
        let mut s = LossScaler { scale: 1.0, growth_tracker: 0 };
        for _ in 0..10 {
            update_scale(&mut s, false, 2.0, 0.5, 1);
        }
        assert_eq!(s, LossScaler { scale: 1024.0, growth_tracker: 0 });
        // A tracker already past the interval never equals it again (PyTorch compares with ==).
        let mut s = LossScaler { scale: 1.0, growth_tracker: 10 };
        update_scale(&mut s, false, 2.0, 0.5, 5);
        assert_eq!(s, LossScaler { scale: 1.0, growth_tracker: 11 });
        let mut s = LossScaler { scale: 1.0, growth_tracker: i32::MAX };
        update_scale(&mut s, false, 2.0, 0.5, 5);
        assert_eq!(s.growth_tracker, i32::MIN);
    }

    #[test]
    fn powi_exact_order_and_values() {
        for b in [0.9f64, 0.999, 0.95, 0.5, 2.0, -1.5, 1.0 + 1e-9, 0.0, -0.0] {
            assert_eq!(powi_exact(b, 0), 1.0);
            assert_eq!(powi_exact(b, 1), b);
            assert_eq!(powi_exact(b, 2), b * b);
            assert_eq!(powi_exact(b, 3).to_bits(), (b * (b * b)).to_bits());
            assert_eq!(powi_exact(b, 5).to_bits(), (b * ((b * b) * (b * b))).to_bits());
            assert_eq!(powi_exact(b, 6).to_bits(), ((b * b) * ((b * b) * (b * b))).to_bits());
            for n in 0..=64u32 {
                let want = b.powi(n as i32);
                let got = powi_exact(b, n);
                let tol = 1e-14 * want.abs();
                assert!((got - want).abs() <= tol, "{b}^{n}: {got} vs {want}");
            }
        }
        // Exactly representable powers are exact.
        for n in 0..=60u32 {
            assert_eq!(powi_exact(0.5, n), 2f64.powi(-(n as i32)));
            assert_eq!(powi_exact(-2.0, n), (-2f64).powi(n as i32));
        }
        // 0.75^n has 2n significant bits: exact up to n = 26.
        let mut naive = 1.0f64;
        for n in 0..=26u32 {
            assert_eq!(powi_exact(0.75, n), naive);
            naive *= 0.75;
        }
        assert_eq!(powi_exact(f64::NAN, 0), 1.0);
        assert!(powi_exact(0.999, u32::MAX) == 0.0);
        assert_eq!(powi_exact(1.0, u32::MAX), 1.0);
    }

    #[test]
    fn adamw_hand_checked() {
        // Values chosen so that every operation is exact.
        let hyper = AdamWHyper { lr: 0.5, beta1: 0.5, beta2: 0.75, eps: 0.0, weight_decay: 0.5 };
        let s = AdamWScalars::new(&hyper, 1);
        assert_eq!(
            s,
            AdamWScalars { bc1: 0.5, bc2: 0.25, step_size: 1.0, bc2_sqrt: 0.5, lr_wd: 0.25, omb1: 0.5, omb2: 0.25 }
        );
        let (mut master, mut m, mut v) = (vec![1.0f32, -2.0], vec![0.0f32; 2], vec![0.0f32; 2]);
        let grad = [f16::from_f32(2.0), f16::from_f32(-8.0)];
        let mut model = vec![bf16::ZERO; 2];
        adamw_step(&mut master, &mut m, &mut v, &grad, Some(0.5), &mut model, &hyper, 1);
        // g = 1: p = 1 - 0.25 = 0.75; m = 0.5; v = 0.25; denom = 0.5 / 0.5 = 1; p = 0.75 - 0.5.
        // g = -4: p = -2 + 0.5 = -1.5; m = -2; v = 4; denom = 2 / 0.5 = 4; p = -1.5 + 0.5.
        assert_eq!(m, vec![0.5, -2.0]);
        assert_eq!(v, vec![0.25, 4.0]);
        assert_eq!(master, vec![0.25, -1.0]);
        assert_eq!(model, vec![bf16::from_f32(0.25), bf16::from_f32(-1.0)]);
        // Second step: bc1 = 0.75, bc2 = 1 - 0.5625 = 0.4375.
        let s = AdamWScalars::new(&hyper, 2);
        assert_eq!((s.bc1, s.bc2, s.step_size), (0.75, 0.4375, 0.5f32 / 0.75));
        assert_eq!(s.bc2_sqrt, 0.4375f32.sqrt());
        // Typical hyper-parameters: bc from f64 then narrowed.
        let h = AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        let s = AdamWScalars::new(&h, 10);
        assert_eq!(s.bc1, (1.0 - f64::from(0.9f32).powi(10)) as f32);
        assert_eq!(s.omb2, 1.0f32 - 0.999f32);
        assert_eq!(s.lr_wd, 1e-3f32 * 0.01f32);
        // The model copy is the RNE rounding of the master weight.
        let (mut master, mut m, mut v) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
        let mut model = vec![f16::ZERO];
        adamw_step(&mut master, &mut m, &mut v, &[0.25f32], None, &mut model, &h, 1);
        assert_eq!(model[0], f16::from_f32(master[0]));
        assert!(master[0] < 1.0 && master[0] > 0.998);
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn adamw_rejects_mismatched_lengths() {
        let h = AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let mut model = vec![f16::ZERO; 2];
        adamw_step(&mut [0.0; 2], &mut [0.0; 2], &mut [0.0; 1], &[0.0f32; 2], None, &mut model, &h, 1);
    }

    #[test]
    #[should_panic(expected = "starts at 1")]
    fn adamw_rejects_step_zero() {
        let h = AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let mut model = vec![f16::ZERO; 1];
        adamw_step(&mut [0.0], &mut [0.0], &mut [0.0], &[0.0f32], None, &mut model, &h, 0);
    }

    /// A random AdamW problem: master weights, moments from some earlier steps, gradients.
    #[derive(Clone)]
    struct Problem {
        master: Vec<f32>,
        m: Vec<f32>,
        v: Vec<f32>,
        grad: Vec<f32>,
        hyper: AdamWHyper,
        step: u32,
    }

    fn problem(rng: &mut StdRng, n: usize) -> Problem {
        let hyper = AdamWHyper {
            lr: rng.random_range(1e-5f32..1e-2),
            beta1: rng.random_range(0.8f32..0.99),
            beta2: rng.random_range(0.95f32..0.9999),
            eps: [1e-8f32, 1e-6, 1e-12][rng.random_range(0..3)],
            weight_decay: rng.random_range(0.0f32..0.1),
        };
        let gscale = 10f32.powi(rng.random_range(-4..2));
        let grad: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0) * gscale).collect();
        let m = grad.iter().map(|g| g * rng.random_range(-1.0f32..1.0)).collect();
        let v = grad.iter().map(|g| g * g * rng.random_range(0.0f32..2.0)).collect();
        Problem {
            master: (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect(),
            m,
            v,
            grad,
            hyper,
            step: rng.random_range(1..2000),
        }
    }

    /// The same order, written independently: every operation evaluated in f64 on f32 operands
    /// and rounded to f32. For +, -, *, / and sqrt that is the correctly rounded f32 result
    /// (53 >= 2 * 24 + 2 bits), so it must agree bit for bit.
    fn adamw_via_f64_ops(p: &Problem, inv_scale: Option<f32>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let r = |x: f64| x as f32;
        let mul = |a: f32, b: f32| r(f64::from(a) * f64::from(b));
        let add = |a: f32, b: f32| r(f64::from(a) + f64::from(b));
        let sub = |a: f32, b: f32| r(f64::from(a) - f64::from(b));
        let div = |a: f32, b: f32| r(f64::from(a) / f64::from(b));
        let sqrt = |a: f32| r(f64::from(a).sqrt());
        let h = p.hyper;
        let bc1 = r(1.0 - powi_exact(f64::from(h.beta1), p.step));
        let bc2 = r(1.0 - powi_exact(f64::from(h.beta2), p.step));
        let step_size = div(h.lr, bc1);
        let bc2_sqrt = sqrt(bc2);
        let lr_wd = mul(h.lr, h.weight_decay);
        let omb1 = sub(1.0, h.beta1);
        let omb2 = sub(1.0, h.beta2);
        let (mut master, mut m, mut v) = (p.master.clone(), p.m.clone(), p.v.clone());
        for i in 0..master.len() {
            let g = inv_scale.map_or(p.grad[i], |inv| mul(p.grad[i], inv));
            let mut x = sub(master[i], mul(lr_wd, master[i]));
            m[i] = add(mul(h.beta1, m[i]), mul(omb1, g));
            v[i] = add(mul(h.beta2, v[i]), mul(omb2, mul(g, g)));
            let denom = add(div(sqrt(v[i]), bc2_sqrt), h.eps);
            x = sub(x, div(mul(step_size, m[i]), denom));
            master[i] = x;
        }
        (master, m, v)
    }

    #[test]
    fn adamw_matches_independent_implementation_of_the_order() {
        let mut rng = StdRng::seed_from_u64(0xADA);
        for _ in 0..200 {
            let p = problem(&mut rng, 64);
            for inv_scale in [None, Some(2f32.powi(-12)), Some(1.0 / 3.0)] {
                let grad: Vec<f32> = match inv_scale {
                    Some(inv) => p.grad.iter().map(|g| g / inv).collect(),
                    None => p.grad.clone(),
                };
                let q = Problem { grad, ..p.clone() };
                let (want_master, want_m, want_v) = adamw_via_f64_ops(&q, inv_scale);
                let (mut master, mut m, mut v) = (q.master.clone(), q.m.clone(), q.v.clone());
                let mut model = vec![f16::ZERO; master.len()];
                adamw_step(&mut master, &mut m, &mut v, &q.grad, inv_scale, &mut model, &q.hyper, q.step);
                assert_eq!(bits(&master), bits(&want_master));
                assert_eq!(bits(&m), bits(&want_m));
                assert_eq!(bits(&v), bits(&want_v));
                for (a, b) in model.iter().zip(&master) {
                    assert_eq!(a.to_bits(), f16::from_f32(*b).to_bits());
                }
            }
        }
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn adamw_close_to_naive_f64() {
        let mut rng = StdRng::seed_from_u64(0xF64);
        for _ in 0..200 {
            let p = problem(&mut rng, 64);
            let (mut master, mut m, mut v) = (p.master.clone(), p.m.clone(), p.v.clone());
            let mut model = vec![bf16::ZERO; master.len()];
            adamw_step(&mut master, &mut m, &mut v, &p.grad, None, &mut model, &p.hyper, p.step);
            let h = p.hyper;
            let (b1, b2) = (f64::from(h.beta1), f64::from(h.beta2));
            let (lr, eps, wd) = (f64::from(h.lr), f64::from(h.eps), f64::from(h.weight_decay));
            let bc1 = 1.0 - b1.powi(p.step as i32);
            let bc2 = 1.0 - b2.powi(p.step as i32);
            let e = f64::from(f32::EPSILON);
            for i in 0..master.len() {
                let g = f64::from(p.grad[i]);
                let p0 = f64::from(p.master[i]);
                let m_terms = (b1 * f64::from(p.m[i]), (1.0 - b1) * g);
                let m64 = m_terms.0 + m_terms.1;
                let v64 = b2 * f64::from(p.v[i]) + (1.0 - b2) * g * g;
                let denom = v64.sqrt() / bc2.sqrt() + eps;
                let upd = lr / bc1 * m64 / denom;
                let p_wd = p0 - lr * wd * p0;
                let p64 = p_wd - upd;
                // m may cancel: measure against the size of its terms.
                let m_tol = 4.0 * e * (m_terms.0.abs() + m_terms.1.abs());
                assert!((f64::from(m[i]) - m64).abs() <= m_tol, "m {} vs {m64}", m[i]);
                assert!((f64::from(v[i]) - v64).abs() <= 4.0 * e * v64, "v {} vs {v64}", v[i]);
                // The update inherits m's absolute error (scaled by lr / bc1 / denom) plus a few
                // relative roundings of its own; p_wd and the final subtraction a few more.
                let upd_tol = lr / bc1 * m_tol / denom + 8.0 * e * upd.abs();
                let p_tol = 4.0 * e * p_wd.abs() + upd_tol + 2.0 * e * p64.abs();
                assert!((f64::from(master[i]) - p64).abs() <= p_tol, "p {} vs {p64} (tol {p_tol:e})", master[i]);
                assert_eq!(model[i], bf16::from_f32(master[i]));
            }
        }
    }

    #[test]
    fn adamw_grad_types_and_inv_scale() {
        let mut rng = StdRng::seed_from_u64(3);
        let p = problem(&mut rng, 100);
        let run = |grad: &[f32], inv: Option<f32>| {
            let (mut master, mut m, mut v) = (p.master.clone(), p.m.clone(), p.v.clone());
            let mut model = vec![f16::ZERO; master.len()];
            adamw_step(&mut master, &mut m, &mut v, grad, inv, &mut model, &p.hyper, p.step);
            (bits(&master), bits(&m), bits(&v), model)
        };
        // Some(1.0) is the same as None (x * 1 == x).
        assert_eq!(run(&p.grad, None), run(&p.grad, Some(1.0)));
        // Fusing the unscale equals unscaling first (same f32 multiply).
        let inv = 1.0f32 / 1024.0f32 / 3.0;
        let scaled: Vec<f32> = p.grad.iter().map(|g| g * 3072.0).collect();
        let mut unscaled = scaled.clone();
        assert!(!unscale_grads(&mut unscaled, inv));
        assert_eq!(run(&scaled, Some(inv)), run(&unscaled, None));
        // f16 / bf16 gradients are widened exactly.
        let g16: Vec<f16> = p.grad.iter().map(|&g| f16::from_f32(g)).collect();
        let widened: Vec<f32> = g16.iter().map(|g| g.to_f32()).collect();
        let (mut master, mut m, mut v) = (p.master.clone(), p.m.clone(), p.v.clone());
        let mut model = vec![f16::ZERO; master.len()];
        adamw_step(&mut master, &mut m, &mut v, &g16, Some(0.5), &mut model, &p.hyper, p.step);
        assert_eq!((bits(&master), bits(&m), bits(&v), model), run(&widened, Some(0.5)));
        let gb: Vec<bf16> = p.grad.iter().map(|&g| bf16::from_f32(g)).collect();
        let widened: Vec<f32> = gb.iter().map(|g| g.to_f32()).collect();
        let (mut master, mut m, mut v) = (p.master.clone(), p.m.clone(), p.v.clone());
        let mut model = vec![f16::ZERO; master.len()];
        adamw_step(&mut master, &mut m, &mut v, &gb, None, &mut model, &p.hyper, p.step);
        assert_eq!((bits(&master), bits(&m), bits(&v), model), run(&widened, None));
        // Empty tensors are fine.
        let mut model: Vec<bf16> = vec![];
        adamw_step(&mut [], &mut [], &mut [], &[] as &[f32], None, &mut model, &p.hyper, 1);
    }
}
