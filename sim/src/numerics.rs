//! Floating-point semantics of the PTX instructions: rounding modes, f16/bf16 conversions,
//! flush-to-zero, and the `.approx` functions.
//!
//! IEEE operations with `.rn` (add, mul, fma, div, sqrt, rcp.rn) are Rust's own f32/f64 operations,
//! which round to nearest even exactly as PTX specifies. The `.approx` functions (ex2, lg2, rcp,
//! rsqrt, sin, cos, tanh) are computed in f64 and rounded once to f32: a nearly correctly rounded
//! result, well inside every error bound the PTX ISA states for them (ex2/lg2: 2^-22 relative,
//! rcp/rsqrt: 1 ulp, sin/cos: 2^-20.9 absolute, tanh: 2^-11 relative). Hardware MUFU results may
//! differ from ours in the last bits; kernels verified here must tolerate that, as they must
//! between GPU generations.

use crate::ir::{Rnd, FTZ, SAT};

/// f32 subnormal -> sign-preserving zero.
#[inline]
pub(crate) fn ftz32(x: f32) -> f32 {
    if x != 0.0 && x.abs() < f32::MIN_POSITIVE {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// `.sat`: clamp to [0, 1], NaN to 0.
#[inline]
pub(crate) fn sat32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Applies `.ftz` to an input.
#[inline]
pub(crate) fn input32(x: f32, f: u8) -> f32 {
    if f & FTZ != 0 {
        ftz32(x)
    } else {
        x
    }
}

/// Applies `.ftz` and `.sat` to a result.
#[inline]
pub(crate) fn output32(x: f32, f: u8) -> f32 {
    let x = if f & FTZ != 0 { ftz32(x) } else { x };
    if f & SAT != 0 {
        sat32(x)
    } else {
        x
    }
}

/// Rounds `x + tiny` (the exact value; `sticky` is the sign of `tiny`, whose magnitude is far below
/// half an ulp of the target format) to a binary format with `ebits` exponent and `mbits` fraction
/// bits. Returns the bits. NaN becomes the canonical NaN (all ones but the sign), as `cvt` produces.
pub(crate) fn round_to_format(x: f64, ebits: u32, mbits: u32, rnd: Rnd, sticky: i8) -> u64 {
    let sign_bit = 1u64 << (ebits + mbits);
    let exp_all = ((1u64 << ebits) - 1) << mbits;
    if x.is_nan() {
        return sign_bit - 1;
    }
    let neg = x.is_sign_negative();
    let sign = if neg { sign_bit } else { 0 };
    // Directions in terms of magnitude.
    let (up, down) = match rnd {
        Rnd::Rp | Rnd::Rpi => (!neg, neg),
        Rnd::Rm | Rnd::Rmi => (neg, !neg),
        Rnd::Rz | Rnd::Rzi => (false, true),
        _ => (false, false),
    };
    let max_finite = exp_all - 1;
    let overflow = |sign: u64| -> u64 {
        if down {
            sign | max_finite
        } else {
            sign | exp_all
        }
    };
    if x.is_infinite() {
        return sign | exp_all;
    }
    let a = x.abs();
    let mag_sticky = if neg { -sticky } else { sticky };
    if a == 0.0 {
        if up && mag_sticky > 0 {
            return sign | 1;
        }
        return sign;
    }
    let bias = (1i32 << (ebits - 1)) - 1;
    let emin = 1 - bias;
    let e_of_a = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let e = e_of_a.max(emin);
    // q = a / 2^(e - mbits): exact scaling by a power of two.
    let scale_exp = e - mbits as i32;
    let q = a * pow2(-scale_exp);
    let n = q.floor();
    let frac = q - n;
    let mut n = n as u64;
    let half = if frac > 0.5 {
        1
    } else if frac < 0.5 {
        -1
    } else {
        0
    };
    if frac == 0.0 {
        if mag_sticky < 0 && down {
            n -= 1;
        } else if mag_sticky > 0 && up {
            n += 1;
        }
    } else if up {
        n += 1;
    } else if down {
        // floor
    } else {
        // nearest even (ties broken by the sticky residue)
        let tie_up = match half {
            1 => true,
            -1 => false,
            _ => mag_sticky > 0 || (mag_sticky == 0 && n & 1 == 1),
        };
        if tie_up {
            n += 1;
        }
    }
    let bits = ((e - emin) as u64) * (1u64 << mbits) + n;
    if bits >= exp_all {
        return overflow(sign);
    }
    sign | bits
}

fn pow2(e: i32) -> f64 {
    // 2^e for e in the f64 normal range; split to stay exact for large |e|.
    if e > 1000 {
        f64::from_bits(((1023 + 1000) as u64) << 52) * pow2(e - 1000)
    } else if e < -1000 {
        f64::from_bits(((1023 - 1000) as u64) << 52) * pow2(e + 1000)
    } else {
        f64::from_bits(((1023 + e) as u64) << 52)
    }
}

/// f32 -> f16 bits, round to nearest even; NaN -> 0x7fff.
#[inline]
pub(crate) fn f32_to_f16_rn(f: f32) -> u16 {
    // The bit-level routine of tests/emulation/host_prelude.hpp (proven against the oracles).
    let x = f.to_bits();
    let sign = (x >> 16) & 0x8000;
    let exp = (x >> 23) & 0xff;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        return if man != 0 { 0x7fff } else { (sign | 0x7c00) as u16 };
    }
    let e = exp as i32 - 127 + 15;
    if e >= 31 {
        return (sign | 0x7c00) as u16;
    }
    if e <= 0 {
        if e < -10 {
            return sign as u16;
        }
        let full = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let mut q = full >> shift;
        let rem = full & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        if rem > half || (rem == half && q & 1 == 1) {
            q += 1;
        }
        return (sign | q) as u16;
    }
    let mut q = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && q & 1 == 1) {
        q += 1;
    }
    (sign | q) as u16
}

/// f32 -> bf16 bits, round to nearest even; NaN -> 0x7fff.
#[inline]
pub(crate) fn f32_to_bf16_rn(f: f32) -> u16 {
    let x = f.to_bits();
    if x & 0x7fff_ffff > 0x7f80_0000 {
        return 0x7fff;
    }
    ((x + 0x7fff + ((x >> 16) & 1)) >> 16) as u16
}

#[inline]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

#[inline]
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 -> f16/bf16 bits with any rounding mode.
pub(crate) fn f64_to_half(x: f64, bf16: bool, rnd: Rnd) -> u16 {
    if bf16 {
        round_to_format(x, 8, 7, rnd, 0) as u16
    } else {
        round_to_format(x, 5, 10, rnd, 0) as u16
    }
}

/// f64 -> f32 with a rounding mode (`sticky`: sign of a residue below the f64's precision).
pub(crate) fn f64_to_f32(x: f64, rnd: Rnd, sticky: i8) -> f32 {
    if matches!(rnd, Rnd::Rn | Rnd::Default) && sticky == 0 {
        return x as f32;
    }
    if x.is_nan() {
        return f32::NAN;
    }
    f32::from_bits(round_to_format(x, 8, 23, rnd, sticky) as u32)
}

/// The exact sum a + b as (rounded sum, sign of the rounding error).
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, i8) {
    let s = a + b;
    if !s.is_finite() {
        return (s, 0);
    }
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    (s, sign_of(err))
}

fn sign_of(x: f64) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

/// f32 add/sub/mul with a directed rounding mode. Products of two f32 are exact in f64; sums are
/// exact as (f64 sum, sign of the error).
pub(crate) fn f32_directed(op: crate::ir::FBin, a: f32, b: f32, rnd: Rnd) -> f32 {
    use crate::ir::FBin;
    let (x, sticky) = match op {
        FBin::Add => two_sum(a as f64, b as f64),
        FBin::Sub => two_sum(a as f64, -(b as f64)),
        FBin::Mul => ((a as f64) * (b as f64), 0),
    };
    if x.is_nan() {
        return f32::NAN;
    }
    f64_to_f32(x, rnd, sticky)
}

/// fma.f32 with a directed rounding mode: the product of two f32 is exact in f64, and the sum with
/// c is exact as (f64 sum, sign of the error), which a directed conversion to f32 rounds correctly.
pub(crate) fn fma_directed_f32(a: f32, b: f32, c: f32, rnd: Rnd) -> f32 {
    let p = (a as f64) * (b as f64);
    if p.is_nan() || c.is_nan() {
        return f32::NAN;
    }
    let (x, sticky) = two_sum(p, c as f64);
    if x.is_nan() {
        return f32::NAN;
    }
    f64_to_f32(x, rnd, sticky)
}

/// f64 add/sub/mul with a directed rounding mode (error-free transformations, then a nudge).
pub(crate) fn f64_directed(op: crate::ir::FBin, a: f64, b: f64, rnd: Rnd) -> f64 {
    use crate::ir::FBin;
    let (r, err) = match op {
        FBin::Add => two_sum(a, b),
        FBin::Sub => two_sum(a, -b),
        FBin::Mul => {
            let p = a * b;
            if !p.is_finite() {
                (p, 0)
            } else {
                (p, sign_of(a.mul_add(b, -p)))
            }
        }
    };
    nudge_f64(r, err, rnd)
}

/// Moves a round-to-nearest result one ulp when the directed mode requires it, given the sign of
/// the exact residue (exact - r).
fn nudge_f64(r: f64, err: i8, rnd: Rnd) -> f64 {
    if err == 0 || r.is_nan() {
        return r;
    }
    let toward_zero = if r > 0.0 { err < 0 } else { err > 0 };
    match rnd {
        Rnd::Rp if err > 0 => next_up(r),
        Rnd::Rm if err < 0 => next_down(r),
        Rnd::Rz if toward_zero => {
            if r > 0.0 {
                next_down(r)
            } else {
                next_up(r)
            }
        }
        _ => r,
    }
}

pub(crate) fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub(crate) fn next_down(x: f64) -> f64 {
    -next_up(-x)
}

/// Integer (given as i128) to f32/f64/f16/bf16 bits with a rounding mode.
pub(crate) fn int_to_float_bits(v: i128, to: crate::ir::NumTy, rnd: Rnd) -> u64 {
    use crate::ir::NumTy;
    // Split v = hi + lo with hi exactly representable in f64 and |lo| < ulp(hi): the sign of lo is
    // all a rounding to a format of at most 53 significant bits needs.
    let hi = v as f64;
    let lo = v - hi as i128;
    let sticky = lo.signum() as i8;
    match to {
        NumTy::F32 => f64_to_f32(hi, rnd, sticky).to_bits() as u64,
        NumTy::F64 => {
            if sticky == 0 {
                hi.to_bits()
            } else {
                // hi is the nearest f64; nudge for directed modes, fix ties for rn.
                match rnd {
                    Rnd::Rn | Rnd::Default => hi.to_bits(),
                    _ => nudge_f64(hi, sticky, rnd).to_bits(),
                }
            }
        }
        NumTy::F16 => round_to_format(hi, 5, 10, rnd, sticky),
        NumTy::Bf16 => round_to_format(hi, 8, 7, rnd, sticky),
        NumTy::Int { .. } => v as u64,
    }
}

/// Rounds to an integral value (`.rni`, `.rzi`, `.rmi`, `.rpi`).
pub(crate) fn round_integral(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rni => round_ties_even(x),
        Rnd::Rzi => x.trunc(),
        Rnd::Rmi => x.floor(),
        Rnd::Rpi => x.ceil(),
        _ => x,
    }
}

fn round_ties_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// The `.approx` functions, f32 (input and output flushing applied by the caller).
pub(crate) fn ex2_approx(x: f32) -> f32 {
    (x as f64).exp2() as f32
}

pub(crate) fn lg2_approx(x: f32) -> f32 {
    (x as f64).log2() as f32
}

pub(crate) fn rcp_approx(x: f32) -> f32 {
    (1.0 / x as f64) as f32
}

pub(crate) fn rsqrt_approx(x: f32) -> f32 {
    (1.0 / (x as f64).sqrt()) as f32
}

pub(crate) fn sin_approx(x: f32) -> f32 {
    (x as f64).sin() as f32
}

pub(crate) fn cos_approx(x: f32) -> f32 {
    (x as f64).cos() as f32
}

pub(crate) fn tanh_approx(x: f32) -> f32 {
    (x as f64).tanh() as f32
}

/// PTX `min.f32`: NaN operands are ignored (both NaN: canonical NaN); -0 < +0.
#[inline]
pub(crate) fn min_f32(a: f32, b: f32, nan: bool) -> f32 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f32::from_bits(0x7fff_ffff);
        }
        return if a.is_nan() { b } else { a };
    }
    if a == b {
        // Equal, possibly zeros of different sign: the negative one.
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b {
        a
    } else {
        b
    }
}

#[inline]
pub(crate) fn max_f32(a: f32, b: f32, nan: bool) -> f32 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f32::from_bits(0x7fff_ffff);
        }
        return if a.is_nan() { b } else { a };
    }
    if a == b {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b {
        a
    } else {
        b
    }
}

pub(crate) fn min_f64(a: f64, b: f64, nan: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f64::from_bits(0x7fff_ffff_ffff_ffff);
        }
        return if a.is_nan() { b } else { a };
    }
    if a == b {
        return if a.is_sign_negative() { a } else { b };
    }
    a.min(b)
}

pub(crate) fn max_f64(a: f64, b: f64, nan: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f64::from_bits(0x7fff_ffff_ffff_ffff);
        }
        return if a.is_nan() { b } else { a };
    }
    if a == b {
        return if a.is_sign_negative() { b } else { a };
    }
    a.max(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::FBin;

    #[test]
    fn half_rounding_matches_half_crate() {
        // RNE conversions agree with the `half` crate on finite values, including subnormals and
        // ties.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let f = f32::from_bits(x);
            if f.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16_rn(f), half::f16::from_f32(f).to_bits(), "{f:e}");
            assert_eq!(f32_to_bf16_rn(f), half::bf16::from_f32(f).to_bits(), "{f:e}");
            assert_eq!(f64_to_half(f as f64, false, Rnd::Rn), f32_to_f16_rn(f), "{f:e}");
            assert_eq!(f64_to_half(f as f64, true, Rnd::Rn), f32_to_bf16_rn(f), "{f:e}");
        }
        assert_eq!(f32_to_f16_rn(f32::NAN), 0x7fff);
        assert_eq!(f32_to_bf16_rn(f32::NAN), 0x7fff);
        assert_eq!(f64_to_half(f64::NAN, false, Rnd::Rz), 0x7fff);
    }

    #[test]
    fn directed_fma_rounds_the_exact_value() {
        // 1 + 2^-30 is not an f32; rm gives 1, rp the next f32 up, rn 1.
        let (a, b, c) = (1.0f32, 1.0f32, 2f32.powi(-30));
        assert_eq!(fma_directed_f32(a, b, c, Rnd::Rm), 1.0);
        assert_eq!(fma_directed_f32(a, b, c, Rnd::Rp), 1.0 + f32::EPSILON);
        assert_eq!(fma_directed_f32(a, b, -c, Rnd::Rz), 1.0 - f32::EPSILON / 2.0);
        // Exact results stay exact in every mode.
        for rnd in [Rnd::Rz, Rnd::Rm, Rnd::Rp] {
            assert_eq!(fma_directed_f32(3.0, 0.5, 0.25, rnd), 1.75);
        }
        assert!(fma_directed_f32(f32::NAN, 1.0, 0.0, Rnd::Rm).is_nan());
    }

    #[test]
    fn directed_rounding() {
        let one_third = 1.0f64 / 3.0;
        let rz = f64_to_f32(one_third, Rnd::Rz, 0);
        let rp = f64_to_f32(one_third, Rnd::Rp, 0);
        assert!((rz as f64) < one_third && (rp as f64) > one_third);
        assert_eq!(rp.to_bits(), rz.to_bits() + 1);
        assert_eq!(f64_to_f32(-one_third, Rnd::Rm, 0), -rp);
        assert_eq!(f64_to_f32(1e300, Rnd::Rz, 0), f32::MAX);
        assert_eq!(f64_to_f32(1e300, Rnd::Rn, 0), f32::INFINITY);
        assert_eq!(f64_to_f32(-1e300, Rnd::Rp, 0), -f32::MAX);
        // 1 + 2^-60 rounds up only with .rp.
        assert_eq!(f32_directed(FBin::Add, 1.0, 2f32.powi(-60), Rnd::Rp), 1.0 + f32::EPSILON);
        assert_eq!(f32_directed(FBin::Add, 1.0, 2f32.powi(-60), Rnd::Rz), 1.0);
        assert_eq!(f32_directed(FBin::Sub, 1.0, 2f32.powi(-60), Rnd::Rz), 1.0 - f32::EPSILON / 2.0);
        assert_eq!(f32_directed(FBin::Sub, 1.0, 2f32.powi(-60), Rnd::Rn), 1.0);
        // Subnormal results.
        let tiny = f32::from_bits(1);
        assert_eq!(f32_directed(FBin::Mul, tiny, 0.5, Rnd::Rp), tiny);
        assert_eq!(f32_directed(FBin::Mul, tiny, 0.5, Rnd::Rz), 0.0);
        assert_eq!(f32_directed(FBin::Mul, tiny, 0.5, Rnd::Rn), 0.0);
        assert_eq!(f32_directed(FBin::Mul, tiny, 1.5, Rnd::Rn), 2.0 * tiny);
        assert_eq!(f64_directed(FBin::Add, 1.0, 1e-30, Rnd::Rp), next_up(1.0));
        assert_eq!(f64_directed(FBin::Mul, 1.0 + f64::EPSILON, 1.0 + f64::EPSILON, Rnd::Rz), 1.0 + 2.0 * f64::EPSILON);
    }

    #[test]
    fn int_to_float() {
        use crate::ir::NumTy;
        let big = (1i128 << 24) + 1;
        assert_eq!(f32::from_bits(int_to_float_bits(big, NumTy::F32, Rnd::Rn) as u32), 16777216.0);
        assert_eq!(f32::from_bits(int_to_float_bits(big, NumTy::F32, Rnd::Rp) as u32), 16777218.0);
        assert_eq!(f32::from_bits(int_to_float_bits(-big, NumTy::F32, Rnd::Rz) as u32), -16777216.0);
        let v = (1i128 << 60) + 1;
        assert_eq!(f64::from_bits(int_to_float_bits(v, NumTy::F64, Rnd::Rp)), next_up((1u64 << 60) as f64));
        // 2^24 + 3 is a tie between 2^24 + 2 and 2^24 + 4 for f32: even mantissa wins.
        assert_eq!(f32::from_bits(int_to_float_bits((1 << 24) + 3, NumTy::F32, Rnd::Rn) as u32), 16777220.0);
        // A tie at f32 precision broken by bits beyond f64's precision.
        let v = (1i128 << 60) + (1i128 << 36) + 1;
        assert_eq!(f32::from_bits(int_to_float_bits(v, NumTy::F32, Rnd::Rn) as u32) as f64, ((1u64 << 60) + (1u64 << 37)) as f64);
    }

    #[test]
    fn min_max_zeros_and_nan() {
        assert!(min_f32(0.0, -0.0, false).is_sign_negative());
        assert!(!max_f32(-0.0, 0.0, false).is_sign_negative());
        assert_eq!(min_f32(f32::NAN, 1.0, false), 1.0);
        assert!(min_f32(f32::NAN, 1.0, true).is_nan());
        assert_eq!(max_f32(f32::NEG_INFINITY, -3.0, false), -3.0);
    }

    #[test]
    fn integral_rounding() {
        assert_eq!(round_integral(2.5, Rnd::Rni), 2.0);
        assert_eq!(round_integral(3.5, Rnd::Rni), 4.0);
        assert_eq!(round_integral(-2.5, Rnd::Rni), -2.0);
        assert_eq!(round_integral(-2.5, Rnd::Rmi), -3.0);
        assert_eq!(round_integral(-2.5, Rnd::Rzi), -2.0);
        assert_eq!(round_integral(2.1, Rnd::Rpi), 3.0);
    }
}
