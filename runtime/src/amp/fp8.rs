//! Bit-exact references of the fp8 scaling kernels: the scaled cast that FP8 training feeds its
//! GEMMs with, and the delayed-scaling recipe that picks the next scale from an amax history. They
//! are the `amp` family's (the cast and scale-update kernels are checked against them); the fp8
//! formats and conversions they build on are shared, in [`crate::common::fp8`].
//!
//! Every function here is the ground truth a GPU kernel is compared against bit for bit, so the
//! exact semantics (rounding, saturation, NaN encoding, order of f32 operations) are spelled out on
//! each item.

use half::bf16;

use crate::common::fp8::{f32_to_fp8, Fp8Format};

/// Largest |x| over `x`, ignoring NaN; infinities count; 0.0 for an empty slice (or all NaN).
/// Equivalent to a `fmaxf` reduction of `fabsf` starting from 0.
fn amax_of(x: impl Iterator<Item = f32>) -> f32 {
    x.fold(0.0f32, |acc, v| if v.abs() > acc { v.abs() } else { acc })
}

/// Scaled cast of f32 values to FP8: for each element `y = x * scale` (one f32 multiply, RNE),
/// then [`f32_to_fp8`] (RNE, saturating, NaN -> `0x7F`).
///
/// Also returns the amax of the **input** (before scaling): the largest `|x|` ignoring NaN,
/// where ±inf counts (giving inf) and an empty input gives 0.0. The amax never depends on
/// `scale`.
pub fn scaled_cast_to_fp8(x: &[f32], scale: f32, format: Fp8Format) -> (Vec<u8>, f32) {
    let out = x.iter().map(|&v| f32_to_fp8(v * scale, format)).collect();
    (out, amax_of(x.iter().copied()))
}

/// [`scaled_cast_to_fp8`] for bf16 inputs: each value is first widened exactly to f32, then
/// treated identically (`y = f32(x) * scale`, amax over `|f32(x)|`).
pub fn scaled_cast_bf16_to_fp8(x: &[bf16], scale: f32, format: Fp8Format) -> (Vec<u8>, f32) {
    let out = x.iter().map(|&v| f32_to_fp8(v.to_f32() * scale, format)).collect();
    (out, amax_of(x.iter().map(|v| v.to_f32())))
}

/// `2^n` as an f32 computed exactly from the bits: normal and subnormal powers are exact,
/// `n < -149` gives 0.0 and `n > 127` gives +inf (what a correctly rounded `exp2f` returns).
pub fn exp2_i32(n: i32) -> f32 {
    if n > 127 {
        f32::INFINITY
    } else if n >= -126 {
        f32::from_bits(((n + 127) as u32) << 23)
    } else if n >= -149 {
        f32::from_bits(1u32 << (n + 149))
    } else {
        0.0
    }
}

/// One delayed-scaling update (Transformer Engine's recipe), returning the scale for the next
/// step.
///
/// 1. The history is shifted by one slot toward the end (`history[i] = history[i - 1]` for `i`
///    from `len - 1` down to 1, the oldest entry falls off) and `history[0] = new_amax`.
/// 2. `amax_ref` = the largest history entry, ignoring NaN (an f32 `fmaxf` reduction starting from
///    0.0, so an all-NaN or all-negative history gives 0.0). With an **empty** history nothing is
///    stored and `amax_ref` is `new_amax` alone (NaN again counting as 0.0).
/// 3. If `amax_ref > 0` and finite, the new scale is `(max_finite / amax_ref) * 2^-margin`: first
///    one f32 division (RNE), then one f32 multiply by `2^-margin` (computed exactly, see
///    [`exp2_i32`]; for `|margin| <= 126` this is the same as dividing by `2^margin`). Otherwise
///    (amax 0, NaN or inf) the old `scale` is returned unchanged.
/// 4. A new scale that is not finite and positive (an `amax_ref` below `max_finite / f32::MAX`,
///    ~1.3e-36 for E4M3, overflows the division; a large margin can underflow to 0) is not used
///    either: the old `scale` is returned, as Transformer Engine does.
pub fn next_fp8_scale(history: &mut [f32], new_amax: f32, scale: f32, format: Fp8Format, margin: i32) -> f32 {
    let max_ignoring_nan = |acc: f32, v: f32| if v > acc { v } else { acc };
    let amax_ref = if history.is_empty() {
        max_ignoring_nan(0.0, new_amax)
    } else {
        history.copy_within(..history.len() - 1, 1);
        history[0] = new_amax;
        history.iter().copied().fold(0.0f32, max_ignoring_nan)
    };
    if amax_ref > 0.0 && amax_ref.is_finite() {
        let next = (format.max_finite() / amax_ref) * exp2_i32(margin.saturating_neg());
        if next.is_finite() && next > 0.0 {
            return next;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::fp8::fp8_to_f32;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const FORMATS: [Fp8Format; 2] = [Fp8Format::E4M3, Fp8Format::E5M2];

    #[test]
    fn scaled_cast_and_amax() {
        let x = [1.0f32, -2.0, 0.5, f32::NAN, 100.0, -0.0];
        let (q, amax) = scaled_cast_to_fp8(&x, 4.0, Fp8Format::E4M3);
        // 4, -8, 2, NaN, 400 -> 384 or 416 (tie -> 384 = 0x7C even), -0
        assert_eq!(q, vec![0x48, 0xD0, 0x40, 0x7F, 0x7C, 0x80]);
        assert_eq!(fp8_to_f32(0x7C, Fp8Format::E4M3), 384.0);
        assert_eq!(amax, 100.0); // of the input, NaN ignored
        let (q, amax) = scaled_cast_to_fp8(&[3.0, f32::NEG_INFINITY], 1e6, Fp8Format::E5M2);
        assert_eq!(q, vec![0x7B, 0xFB]);
        assert_eq!(amax, f32::INFINITY);
        let (q, amax) = scaled_cast_to_fp8(&[], 1.0, Fp8Format::E4M3);
        assert!(q.is_empty() && amax == 0.0);
        let (_, amax) = scaled_cast_to_fp8(&[f32::NAN, -0.0], 1.0, Fp8Format::E4M3);
        assert_eq!(amax.to_bits(), 0);
        // The product is one f32 multiply, rounded before the conversion: 1 + 2^-23 times
        // 1 + 2^-23 is 1 + 2^-22 + 2^-46, which rounds to 1 + 2^-22 in f32.
        let a = 1.0 + f32::EPSILON;
        let (q, _) = scaled_cast_to_fp8(&[a], a, Fp8Format::E4M3);
        assert_eq!(q, vec![f32_to_fp8(a * a, Fp8Format::E4M3)]);
        // Per element it is exactly f32_to_fp8(x * scale).
        let mut rng = StdRng::seed_from_u64(7);
        let x: Vec<f32> = (0..1000).map(|_| rng.random_range(-600.0f32..600.0)).collect();
        for format in FORMATS {
            let scale = 0.37f32;
            let (q, amax) = scaled_cast_to_fp8(&x, scale, format);
            for (&v, &c) in x.iter().zip(&q) {
                assert_eq!(c, f32_to_fp8(v * scale, format));
            }
            assert_eq!(amax, x.iter().fold(0.0f32, |a, v| a.max(v.abs())));
        }
    }

    #[test]
    fn scaled_cast_bf16_widens_exactly() {
        let x: Vec<bf16> = [1.0f32, -3.5, 1e-3, 300.0, f32::NAN, -1e30].iter().map(|&v| bf16::from_f32(v)).collect();
        let wide: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        for format in FORMATS {
            for scale in [1.0f32, 0.125, 3.3] {
                let (a, amax_a) = scaled_cast_bf16_to_fp8(&x, scale, format);
                let (b, amax_b) = scaled_cast_to_fp8(&wide, scale, format);
                assert_eq!(a, b);
                assert_eq!(amax_a, amax_b);
            }
        }
        let (q, amax) = scaled_cast_bf16_to_fp8(&x, 1.0, Fp8Format::E4M3);
        assert_eq!(q[1], 0xC6); // -3.5 = -(1 + 6/8) * 2
        assert_eq!(q[5], 0xFE);
        assert_eq!(amax, bf16::from_f32(-1e30).to_f32().abs());
    }

    #[test]
    fn exp2_is_exact() {
        for n in -149..=127 {
            assert_eq!(f64::from(exp2_i32(n)), 2f64.powi(n), "{n}");
        }
        assert_eq!(exp2_i32(-150), 0.0);
        assert_eq!(exp2_i32(i32::MIN), 0.0);
        assert_eq!(exp2_i32(128), f32::INFINITY);
        assert_eq!(exp2_i32(i32::MAX), f32::INFINITY);
    }

    #[test]
    fn delayed_scaling() {
        let f = Fp8Format::E4M3;
        let mut h = [0.0f32; 4];
        // First step: only the new amax is non-zero.
        let s = next_fp8_scale(&mut h, 2.0, 1.0, f, 0);
        assert_eq!(h, [2.0, 0.0, 0.0, 0.0]);
        assert_eq!(s, 224.0);
        let s = next_fp8_scale(&mut h, 7.0, s, f, 1);
        assert_eq!(h, [7.0, 2.0, 0.0, 0.0]);
        assert_eq!(s, 32.0); // 448 / 7 = 64, * 2^-1
        let s = next_fp8_scale(&mut h, 1.0, s, f, 0);
        assert_eq!(s, 64.0); // 7 still in the window
        let s = next_fp8_scale(&mut h, f32::NAN, s, f, 0);
        assert_eq!(h[0].to_bits(), f32::NAN.to_bits());
        assert_eq!(s, 64.0); // NaN ignored, 7 still the max
        let s = next_fp8_scale(&mut h, 3.0, s, f, -2);
        assert_eq!(h[0], 3.0);
        assert!(h[1].is_nan());
        assert_eq!(&h[2..], &[1.0, 7.0]);
        assert_eq!(s, 256.0); // 448 / 7 * 4
        let s = next_fp8_scale(&mut h, 0.5, s, f, 0);
        assert_eq!(h[3], 1.0);
        assert_eq!(s, 448.0 / 3.0);
        // Order of operations: (max / amax) rounded first, then the power of two.
        let amax = 3.3f32;
        let s = next_fp8_scale(&mut [0.0; 2], amax, 1.0, Fp8Format::E5M2, 3);
        assert_eq!(s, (57344.0f32 / amax) * 0.125);
        // All zero / inf history keeps the old scale.
        let mut h = [0.0f32; 3];
        assert_eq!(next_fp8_scale(&mut h, 0.0, 5.0, f, 0), 5.0);
        assert_eq!(next_fp8_scale(&mut h, f32::INFINITY, 5.0, f, 0), 5.0);
        assert_eq!(next_fp8_scale(&mut h, 1.0, 5.0, f, 0), 5.0); // inf still in the window
        assert_eq!(next_fp8_scale(&mut h, 1.0, 5.0, f, 0), 5.0);
        assert_eq!(next_fp8_scale(&mut h, 1.0, 5.0, f, 0), 448.0); // inf has left
                                                                   // Empty history: only the new amax counts.
        assert_eq!(next_fp8_scale(&mut [], 4.0, 1.0, f, 0), 112.0);
        assert_eq!(next_fp8_scale(&mut [], f32::NAN, 1.5, f, 0), 1.5);
        assert_eq!(next_fp8_scale(&mut [], -4.0, 1.5, f, 0), 1.5);
        assert_eq!(next_fp8_scale(&mut [], 0.0, 1.5, f, 0), 1.5);
        // Length one: the entry is replaced each time.
        let mut h = [9.0f32];
        assert_eq!(next_fp8_scale(&mut h, 4.0, 1.0, f, 0), 112.0);
        assert_eq!(h, [4.0]);
        // A tiny amax overflows the division, a huge margin underflows: the old scale stays.
        assert_eq!(next_fp8_scale(&mut [0.0], 1e-38, 1.0, f, 0), 1.0);
        assert_eq!(next_fp8_scale(&mut [0.0], 1.0, 3.0, f, 200), 3.0);
    }
}
