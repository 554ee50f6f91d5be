//! Bit-exact references for the OCP 8-bit floating-point formats as NVIDIA implements them
//! (`__nv_fp8_e4m3` / `__nv_fp8_e5m2`, PTX `cvt.rn.satfinite.{e4m3x2,e5m2x2}.f32`), the scaled cast
//! that FP8 training feeds its GEMMs with, and the delayed-scaling recipe that picks the next scale
//! from an amax history.
//!
//! Every function here is the ground truth a GPU kernel is compared against bit for bit, so the
//! exact semantics (rounding, saturation, NaN encoding, order of f32 operations) are spelled out on
//! each item.
//!
//! | format | sign | exponent (bias) | mantissa | max finite      | smallest subnormal | inf  | NaN            |
//! |--------|------|-----------------|----------|-----------------|--------------------|------|----------------|
//! | E4M3   | 1    | 4 (7)           | 3        | 448 = `0x7E`    | 2^-9 = `0x01`      | none | `S.1111.111`   |
//! | E5M2   | 1    | 5 (15)          | 2        | 57344 = `0x7B`  | 2^-16 = `0x01`     | `0x7C` | `0x7D..=0x7F` |
//!
//! (sign bit `0x80` on top of the magnitude codes above.)

use half::bf16;

/// One of the two OCP FP8 formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fp8Format {
    /// "E4M3FN": 4 exponent bits (bias 7), 3 mantissa bits, no infinities, NaN only for the
    /// all-ones magnitude `0x7F`, so the top exponent still holds the finite values 256..=448.
    E4M3,
    /// IEEE-754-like: 5 exponent bits (bias 15), 2 mantissa bits, ±inf `0x7C`/`0xFC`, NaN
    /// `0x7D..=0x7F` (and with the sign bit set).
    E5M2,
}

impl Fp8Format {
    /// Largest finite magnitude: 448.0 (E4M3, code `0x7E`) or 57344.0 (E5M2, code `0x7B`).
    pub fn max_finite(self) -> f32 {
        match self {
            Fp8Format::E4M3 => 448.0,
            Fp8Format::E5M2 => 57344.0,
        }
    }

    /// `"e4m3"` or `"e5m2"`.
    pub fn name(self) -> &'static str {
        match self {
            Fp8Format::E4M3 => "e4m3",
            Fp8Format::E5M2 => "e5m2",
        }
    }

    /// Stored mantissa bits.
    fn mantissa_bits(self) -> u32 {
        match self {
            Fp8Format::E4M3 => 3,
            Fp8Format::E5M2 => 2,
        }
    }

    /// Exponent bias.
    fn bias(self) -> i32 {
        match self {
            Fp8Format::E4M3 => 7,
            Fp8Format::E5M2 => 15,
        }
    }

    /// Magnitude code of the largest finite value.
    fn max_code(self) -> u8 {
        match self {
            Fp8Format::E4M3 => 0x7E,
            Fp8Format::E5M2 => 0x7B,
        }
    }
}

/// The NaN every conversion to FP8 produces, in both formats: `0x7F` (sign cleared).
pub const FP8_NAN: u8 = 0x7F;

/// `v >> s` rounded to nearest, ties to even (`s` may exceed the width: the result is then 0,
/// since `v < 2^32` is below half of `2^s`).
fn shr_round_nearest_even(v: u32, s: u32) -> u32 {
    if s == 0 {
        return v;
    }
    if s > 32 {
        return 0;
    }
    let v = u64::from(v);
    let q = v >> s;
    let rem = v & ((1u64 << s) - 1);
    let half = 1u64 << (s - 1);
    let up = rem > half || (rem == half && q & 1 == 1);
    (q + u64::from(up)) as u32
}

/// Converts an f32 to FP8 with round-to-nearest-even on the exact value and saturation, i.e.
/// PTX `cvt.rn.satfinite.{e4m3x2,e5m2x2}.f32` (CUDA `__nv_cvt_float_to_fp8(x, __NV_SATFINITE, ..)`).
///
/// * Finite values are rounded to the nearest FP8 value (ties to the even mantissa, i.e. the even
///   code), with correct rounding into and within the subnormal range and carries into the next
///   exponent (e.g. E4M3 `1.9375` -> `2.0`, `15/16 * 2^-6` -> `2^-6`).
/// * A result whose magnitude rounds above [`Fp8Format::max_finite`] (including ±inf inputs)
///   becomes ±max_finite (`0x7E`/`0xFE`, `0x7B`/`0xFB`): saturation is applied after rounding,
///   so every |x| >= max_finite gives max_finite. E5M2 never produces its infinities here.
/// * NaN (any payload, any sign) becomes [`FP8_NAN`] = `0x7F` in both formats.
/// * ±0 keeps its sign, and values that round to zero give a zero of their sign (`0x00`/`0x80`);
///   f32 subnormal inputs are far below half the smallest FP8 subnormal and always do.
///
/// Implemented with integer operations on the f32 bits only, so it is independent of the host's
/// floating-point environment.
pub fn f32_to_fp8(x: f32, format: Fp8Format) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return FP8_NAN;
    }
    let mbits = format.mantissa_bits();
    let bias = format.bias();
    let max_code = format.max_code();
    if abs == 0x7F80_0000 {
        return sign | max_code;
    }
    // Biased f32 exponent field (0 for zeros and f32 subnormals, treated separately below).
    let exp_field = (abs >> 23) as i32;
    let min_normal_exp = 1 - bias; // smallest normal FP8 exponent: -6 (E4M3) / -14 (E5M2)
    let code = if exp_field == 0 {
        // f32 zero or subnormal: |x| < 2^-126, far below half the smallest FP8 subnormal.
        0
    } else if exp_field - 127 >= min_normal_exp {
        // FP8 normal range: rebias the exponent field from 127 to `bias`, then drop the low
        // mantissa bits with RNE. A round-up carry moves into the exponent field, which is
        // exactly the next FP8 value.
        let rebased = abs - (((127 - bias) as u32) << 23);
        shr_round_nearest_even(rebased, 23 - mbits)
    } else {
        // FP8 subnormal range: the code is |x| / 2^(min_normal_exp - mbits) rounded, with
        // |x| = sig * 2^(e - 23). A carry to 2^mbits is the smallest normal code, as it should be.
        let sig = (abs & 0x007F_FFFF) | 0x0080_0000;
        let e = exp_field - 127;
        let shift = (23 - mbits as i32) + (min_normal_exp - e); // > 23 - mbits here
        shr_round_nearest_even(sig, shift as u32)
    };
    if code > u32::from(max_code) {
        sign | max_code
    } else {
        sign | code as u8
    }
}

/// Widens an FP8 value to f32, exactly (every FP8 value is an f32 value).
///
/// NaN codes (E4M3 `0x7F`/`0xFF`, E5M2 `0x7D..=0x7F`/`0xFD..=0xFF`) give the canonical quiet f32
/// NaN with the code's sign: `0x7FC0_0000` or `0xFFC0_0000` (the payload is not carried over).
/// E5M2 `0x7C`/`0xFC` give ±inf. `0x80` gives -0.0.
pub fn fp8_to_f32(bits: u8, format: Fp8Format) -> f32 {
    let mbits = format.mantissa_bits();
    let bias = format.bias();
    let negative = bits & 0x80 != 0;
    let mag = bits & 0x7F;
    let exp = i32::from(mag >> mbits);
    let mant = u32::from(mag) & ((1 << mbits) - 1);
    let top_exp: i32 = 0x7F >> mbits;
    let abs = match format {
        Fp8Format::E4M3 if mag == 0x7F => f32::NAN,
        Fp8Format::E5M2 if exp == top_exp && mant != 0 => f32::NAN,
        Fp8Format::E5M2 if exp == top_exp => f32::INFINITY,
        _ if exp == 0 => {
            // mant * 2^(1 - bias - mbits); both factors exact, product exact.
            let quantum = f32::from_bits(((127 + 1 - bias - mbits as i32) as u32) << 23);
            mant as f32 * quantum
        }
        _ => f32::from_bits((((exp - bias + 127) as u32) << 23) | (mant << (23 - mbits))),
    };
    if negative {
        -abs
    } else {
        abs
    }
}

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
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const FORMATS: [Fp8Format; 2] = [Fp8Format::E4M3, Fp8Format::E5M2];

    /// Independent decoder straight from the format definition, in f64 (`None` for NaN).
    fn oracle_decode(code: u8, format: Fp8Format) -> Option<f64> {
        let (ebits, mbits, bias) = match format {
            Fp8Format::E4M3 => (4, 3, 7),
            Fp8Format::E5M2 => (5, 2, 15),
        };
        let s = if code & 0x80 != 0 { -1.0 } else { 1.0 };
        let e = i32::from((code >> mbits) & ((1 << ebits) - 1));
        let m = f64::from(code & ((1 << mbits) - 1));
        let emax = (1 << ebits) - 1;
        match format {
            Fp8Format::E4M3 if e == emax && m == 7.0 => return None,
            Fp8Format::E5M2 if e == emax && m != 0.0 => return None,
            Fp8Format::E5M2 if e == emax => return Some(s * f64::INFINITY),
            _ => {}
        }
        let scale = f64::from(1u32 << mbits);
        Some(if e == 0 { s * m / scale * 2f64.powi(1 - bias) } else { s * (1.0 + m / scale) * 2f64.powi(e - bias) })
    }

    /// Finite non-negative FP8 values with their codes, ascending (code 0 .. max code).
    fn positive_table(format: Fp8Format) -> Vec<(u8, f64)> {
        (0u8..0x80).filter_map(|c| oracle_decode(c, format).filter(|v| v.is_finite()).map(|v| (c, v))).collect()
    }

    /// Brute-force nearest FP8 value: ties to the even code (= even mantissa), saturating,
    /// NaN -> 0x7F, signed zero. Comparisons are exact in f64 (`2|x|` against `lo + hi`).
    fn oracle_encode(x: f32, table: &[(u8, f64)]) -> u8 {
        if x.is_nan() {
            return 0x7F;
        }
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        let a = f64::from(x).abs();
        let (max_code, max) = table[table.len() - 1];
        if a >= max {
            return sign | max_code;
        }
        // table[j - 1].1 <= a < table[j].1 (table[0] is +0 and a < max here).
        let j = table.partition_point(|&(_, v)| v <= a);
        let ((lc, lo), (hc, hi)) = (table[j - 1], table[j]);
        let code = if 2.0 * a < lo + hi {
            lc
        } else if 2.0 * a > lo + hi {
            hc
        } else if lc % 2 == 0 {
            lc
        } else {
            hc
        };
        sign | code
    }

    fn next_up(x: f32) -> f32 {
        let b = x.to_bits();
        if x.is_nan() || x == f32::INFINITY {
            x
        } else if x == 0.0 {
            f32::from_bits(1)
        } else if x > 0.0 {
            f32::from_bits(b + 1)
        } else {
            f32::from_bits(b - 1)
        }
    }

    fn next_down(x: f32) -> f32 {
        -next_up(-x)
    }

    fn check(x: f32, format: Fp8Format, table: &[(u8, f64)]) {
        let got = f32_to_fp8(x, format);
        let want = oracle_encode(x, table);
        assert_eq!(
            got,
            want,
            "{} x = {x:e} (bits {:#010x}): got {got:#04x}, want {want:#04x}",
            format.name(),
            x.to_bits()
        );
    }

    #[test]
    fn decode_matches_oracle_for_all_codes() {
        for format in FORMATS {
            for code in 0..=255u8 {
                let got = fp8_to_f32(code, format);
                match oracle_decode(code, format) {
                    None => {
                        let want = if code & 0x80 != 0 { 0xFFC0_0000u32 } else { 0x7FC0_0000 };
                        assert_eq!(got.to_bits(), want, "{} {code:#04x}", format.name());
                    }
                    Some(v) => {
                        assert_eq!(f64::from(got), v, "{} {code:#04x}", format.name());
                        assert_eq!(got.is_sign_negative(), code & 0x80 != 0, "{} {code:#04x}", format.name());
                    }
                }
            }
        }
    }

    #[test]
    fn hand_checked_values() {
        use Fp8Format::*;
        let p = |e: i32| 2f32.powi(e);
        // E4M3
        assert_eq!(f32_to_fp8(1.0, E4M3), 0x38);
        assert_eq!(f32_to_fp8(-1.0, E4M3), 0xB8);
        assert_eq!(f32_to_fp8(448.0, E4M3), 0x7E);
        assert_eq!(f32_to_fp8(464.0, E4M3), 0x7E); // halfway to the non-existent 480
        assert_eq!(f32_to_fp8(1e6, E4M3), 0x7E);
        assert_eq!(f32_to_fp8(f32::INFINITY, E4M3), 0x7E);
        assert_eq!(f32_to_fp8(f32::NEG_INFINITY, E4M3), 0xFE);
        assert_eq!(f32_to_fp8(f32::NAN, E4M3), 0x7F);
        assert_eq!(f32_to_fp8(-f32::NAN, E4M3), 0x7F);
        assert_eq!(f32_to_fp8(0.0, E4M3), 0x00);
        assert_eq!(f32_to_fp8(-0.0, E4M3), 0x80);
        assert_eq!(f32_to_fp8(p(-9), E4M3), 0x01); // smallest subnormal
        assert_eq!(f32_to_fp8(p(-10), E4M3), 0x00); // tie with 0: even
        assert_eq!(f32_to_fp8(-p(-10), E4M3), 0x80);
        assert_eq!(f32_to_fp8(next_up(p(-10)), E4M3), 0x01);
        assert_eq!(f32_to_fp8(1.5 * p(-9), E4M3), 0x02); // tie between 0x01 and 0x02
        assert_eq!(f32_to_fp8(2.5 * p(-9), E4M3), 0x02); // tie between 0x02 and 0x03
        assert_eq!(f32_to_fp8(7.5 * p(-9), E4M3), 0x08); // largest subnormal -> min normal
        assert_eq!(f32_to_fp8(p(-6), E4M3), 0x08);
        assert_eq!(f32_to_fp8(1.9375, E4M3), 0x40); // 1.875 (odd) / 2.0 (even) tie carries
        assert_eq!(f32_to_fp8(1.8125, E4M3), 0x3E); // 1.75 (even) / 1.875 tie
        assert_eq!(f32_to_fp8(-1e-30, E4M3), 0x80);
        assert_eq!(f32_to_fp8(f32::from_bits(1), E4M3), 0x00);
        assert_eq!(f32_to_fp8(-f32::MIN_POSITIVE, E4M3), 0x80);
        assert_eq!(f32_to_fp8(f32::MAX, E4M3), 0x7E);
        assert_eq!(fp8_to_f32(0x7E, E4M3), 448.0);
        assert_eq!(fp8_to_f32(0x01, E4M3), p(-9));
        assert_eq!(fp8_to_f32(0xB8, E4M3), -1.0);
        assert!(fp8_to_f32(0xFF, E4M3).is_nan());
        assert_eq!(fp8_to_f32(0x78, E4M3), 256.0); // top exponent holds finite values
                                                   // E5M2
        assert_eq!(f32_to_fp8(1.0, E5M2), 0x3C);
        assert_eq!(f32_to_fp8(57344.0, E5M2), 0x7B);
        assert_eq!(f32_to_fp8(61440.0, E5M2), 0x7B); // tie rounds to 65536 (even), saturates
        assert_eq!(f32_to_fp8(f32::INFINITY, E5M2), 0x7B);
        assert_eq!(f32_to_fp8(f32::NEG_INFINITY, E5M2), 0xFB);
        assert_eq!(f32_to_fp8(f32::NAN, E5M2), 0x7F);
        assert_eq!(f32_to_fp8(p(-16), E5M2), 0x01);
        assert_eq!(f32_to_fp8(p(-17), E5M2), 0x00);
        assert_eq!(f32_to_fp8(3.5 * p(-16), E5M2), 0x04); // tie 3 / 4 -> 4 = min normal
        assert_eq!(f32_to_fp8(1.875, E5M2), 0x40); // 1.75 (odd) / 2.0 tie
        assert_eq!(fp8_to_f32(0x7C, E5M2), f32::INFINITY);
        assert_eq!(fp8_to_f32(0xFC, E5M2), f32::NEG_INFINITY);
        for c in [0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF] {
            assert!(fp8_to_f32(c, E5M2).is_nan());
        }
        assert_eq!(fp8_to_f32(0x7B, E5M2), 57344.0);
        assert_eq!(fp8_to_f32(0x03, E5M2), 3.0 * p(-16));
        assert_eq!(Fp8Format::E4M3.max_finite(), 448.0);
        assert_eq!(Fp8Format::E5M2.max_finite(), 57344.0);
        assert_eq!(fp8_to_f32(Fp8Format::E4M3.max_code(), E4M3), E4M3.max_finite());
        assert_eq!(fp8_to_f32(Fp8Format::E5M2.max_code(), E5M2), E5M2.max_finite());
    }

    #[test]
    fn encode_matches_oracle_on_structured_inputs() {
        for format in FORMATS {
            let table = positive_table(format);
            let mut inputs =
                vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MAX, f32::MIN];
            inputs.push(f32::from_bits(0x7F80_0001)); // signalling-NaN payload
            inputs.push(f32::from_bits(0xFFFF_FFFF));
            for &(_, v) in &table {
                let v = v as f32;
                inputs.extend([v, next_up(v), next_down(v)]);
            }
            for w in table.windows(2) {
                let mid = ((w[0].1 + w[1].1) / 2.0) as f32; // exact: a few bits only
                assert_eq!(f64::from(mid), (w[0].1 + w[1].1) / 2.0);
                inputs.extend([mid, next_up(mid), next_down(mid)]);
            }
            // Above the top: halfway to the next (non-existent) value and twice the max.
            let max = table[table.len() - 1].1;
            let top_ulp = max - table[table.len() - 2].1;
            for v in [max + top_ulp / 2.0, max + top_ulp, 2.0 * max] {
                let v = v as f32;
                inputs.extend([v, next_up(v), next_down(v)]);
            }
            // f32 subnormals and tiny normals.
            for b in [1u32, 2, 3, 0x1234, 0x7F_FFFF, 0x80_0000, 0x80_0001] {
                inputs.push(f32::from_bits(b));
            }
            let negated: Vec<f32> = inputs.iter().map(|v| -v).collect();
            inputs.extend(negated);
            for x in inputs {
                check(x, format, &table);
            }
        }
    }

    #[test]
    fn encode_matches_oracle_on_random_inputs() {
        let mut rng = StdRng::seed_from_u64(0xF8);
        for format in FORMATS {
            let table = positive_table(format);
            // Uniform over all f32 bit patterns (every exponent, NaNs, infinities, subnormals).
            for _ in 0..200_000 {
                check(f32::from_bits(rng.random::<u32>()), format, &table);
            }
            // Concentrated on the FP8 range: random mantissa, exponent from below the smallest
            // subnormal to above the max.
            let (lo, hi) = match format {
                Fp8Format::E4M3 => (-13, 11),
                Fp8Format::E5M2 => (-20, 18),
            };
            for _ in 0..200_000 {
                let e: i32 = rng.random_range(lo..=hi);
                let bits = (((e + 127) as u32) << 23) | (rng.random::<u32>() & 0x807F_FFFF);
                check(f32::from_bits(bits), format, &table);
            }
            // Round-trips: every finite code survives decode + encode (NaN becomes 0x7F).
            for code in 0..=255u8 {
                let v = fp8_to_f32(code, format);
                let back = f32_to_fp8(v, format);
                if v.is_nan() {
                    assert_eq!(back, 0x7F);
                } else if v.is_infinite() {
                    assert_eq!(back, (code & 0x80) | format.max_code());
                } else {
                    assert_eq!(back, code, "{} {code:#04x}", format.name());
                }
            }
        }
    }

    /// Every f32 bit pattern against the oracle (4 * 2^30 inputs per format): minutes in release
    /// mode, so only on request (`cargo test --release -- --ignored fp8_exhaustive`).
    #[test]
    #[ignore]
    fn fp8_exhaustive_against_oracle() {
        use rayon::prelude::*;
        for format in FORMATS {
            let table = positive_table(format);
            (0u32..=0xFFFF).into_par_iter().for_each(|hi| {
                for lo in 0u32..=0xFFFF {
                    check(f32::from_bits((hi << 16) | lo), format, &table);
                }
            });
        }
    }

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
