//! What every check of a kernel against its reference shares, whatever the family: inputs rounded
//! to the kernel's storage dtype ([`round_to_dtype`]), the comparison of an output with its f64
//! reference ([`compare`]) and how large a difference may be ([`tolerance`]). A file of its own so
//! that the families' references (and the tuner, which compares candidates) use it without going
//! through the [`crate::reference`] front, which re-exports them.

use tessera_codegen::ElemType;

use crate::common::buffers::{decode, encode};

/// Rounds every value to the nearest `dtype` value (round-to-nearest-even, the rounding of
/// `cvt.rn` and of the `half` crate) and widens it back to f32. Out-of-range values become ±inf,
/// NaN stays NaN.
/// fp8 types saturate instead, as the kernels convert; f32 is unchanged.
pub fn round_to_dtype(x: &[f32], dtype: ElemType) -> Vec<f32> {
    decode(&encode(x, dtype), dtype)
}

/// How far a kernel output is from its reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// `‖out − ref‖₂ / ‖ref‖₂`; when the reference is all zeros, the absolute `‖out‖₂` instead
    /// (so an all-zero output matches an all-zero reference with 0). `inf` as soon as any value
    /// is non-finite, so a NaN can never pass a `rel_l2 <= tol` check.
    pub rel_l2: f64,
    /// Largest `|out − ref|`; `inf` as soon as any value is non-finite.
    pub max_abs: f64,
    /// Output elements that are NaN or ±inf.
    pub non_finite: usize,
}

impl Comparison {
    /// True when every output is finite and the relative L2 error is at most `tol`.
    pub fn passes(&self, tol: f64) -> bool {
        self.non_finite == 0 && self.rel_l2.is_finite() && self.rel_l2 <= tol
    }
}

/// Compares a kernel output with its f64 reference, element for element.
///
/// # Panics
/// When the lengths differ (a harness bug, not a numerical result).
pub fn compare(out: &[f32], reference: &[f64]) -> Comparison {
    assert_eq!(out.len(), reference.len(), "compare: output and reference lengths differ");
    let mut diff2 = 0.0f64;
    let mut ref2 = 0.0f64;
    let mut max_abs = 0.0f64;
    let mut non_finite = 0usize;
    let mut ref_non_finite = false;
    for (&o, &r) in out.iter().zip(reference) {
        if !o.is_finite() {
            non_finite += 1;
            continue;
        }
        if !r.is_finite() {
            ref_non_finite = true;
            continue;
        }
        let d = o as f64 - r;
        diff2 += d * d;
        ref2 += r * r;
        max_abs = max_abs.max(d.abs());
    }
    if non_finite > 0 || ref_non_finite {
        return Comparison { rel_l2: f64::INFINITY, max_abs: f64::INFINITY, non_finite };
    }
    let rel_l2 = if ref2 > 0.0 { (diff2 / ref2).sqrt() } else { diff2.sqrt() };
    Comparison { rel_l2, max_abs, non_finite }
}

/// Largest relative L2 error ([`Comparison::rel_l2`]) accepted for an attention output computed in
/// `dtype` against [`attention`](crate::reference::attention) on the same dtype-rounded inputs.
///
/// What a correct kernel still rounds: the probabilities P to `dtype` before `P V` (the row sum uses
/// the unrounded f32 values) and the normalised output to `dtype`, each a relative rounding of at
/// most 2^-(p+1) per element, p the stored mantissa bits (bf16: 2^-8 = 3.9e-3, f16: 2^-11 = 4.9e-4),
/// mostly independent, so the L2 error lands near half of that. Measured with
/// `tests/host_emulation.rs` (host emulation of the generated kernels, inputs uniform in [-2, 2],
/// head_dim 32-256, seq up to 200, scale up to 4/sqrt(d)): bf16 at most 2.0e-3 (max abs 5.8e-3),
/// f16 at most 2.6e-4 (max abs 7.5e-4). The tolerances leave 5-6x margin for other shapes and value
/// ranges and stay far below what a real bug does: a race or a wrong tile moved rel L2 to 0.5 and
/// beyond in every case seen.
/// The tensor-core kernels take only the 16-bit types; for the others (f32 inputs of nothing but
/// a reference comparison, fp8 with 3 or 2 mantissa bits) the same rule scales with the type's
/// precision.
pub fn tolerance(dtype: ElemType) -> f64 {
    match dtype {
        ElemType::BF16 => 1e-2,
        ElemType::F16 => 1.5e-3,
        ElemType::F32 => 1e-5,
        ElemType::E4M3 | ElemType::E5M2 => 2e-1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_nearest_even() {
        // 1 + 2^-11 is halfway between two f16 values: ties to the even one (1.0).
        let x = [1.0 + f32::powi(2.0, -11), 1.0 + 3.0 * f32::powi(2.0, -11), 70000.0, -0.0];
        let r = round_to_dtype(&x, ElemType::F16);
        assert_eq!(r[0], 1.0);
        assert_eq!(r[1], 1.0 + 2.0 * f32::powi(2.0, -10));
        assert_eq!(r[2], f32::INFINITY);
        assert!(r[3] == 0.0 && r[3].is_sign_negative());
        // bf16 keeps 8 bits of mantissa: 1 + 2^-8 ties to 1.0, 1 + 3*2^-8 to 1 + 2^-6.
        let x = [1.0 + f32::powi(2.0, -8), 1.0 + 3.0 * f32::powi(2.0, -8), 1e38];
        let r = round_to_dtype(&x, ElemType::BF16);
        assert_eq!(r[0], 1.0);
        assert_eq!(r[1], 1.0 + f32::powi(2.0, -6));
        assert!(r[2].is_finite());
        assert!(round_to_dtype(&[f32::NAN], ElemType::BF16)[0].is_nan());
    }

    #[test]
    fn compare_measures_and_never_passes_nan() {
        let c = compare(&[1.0, 2.0], &[1.0, 2.0]);
        assert_eq!(c, Comparison { rel_l2: 0.0, max_abs: 0.0, non_finite: 0 });
        assert!(c.passes(0.0));
        let c = compare(&[1.0, 0.0], &[0.0, 0.0]);
        assert_eq!(c.rel_l2, 1.0);
        assert_eq!(compare(&[0.0], &[0.0]).rel_l2, 0.0);
        let c = compare(&[3.0, 4.5], &[3.0, 4.0]);
        assert!((c.rel_l2 - 0.1).abs() < 1e-12 && c.max_abs == 0.5);
        let c = compare(&[f32::NAN, 1.0, f32::INFINITY], &[1.0, 1.0, 1.0]);
        assert_eq!(c.non_finite, 2);
        assert!(!c.passes(f64::INFINITY));
        assert!(!compare(&[1.0], &[f64::NAN]).passes(1e9));
    }

    #[test]
    fn tolerances_order_by_precision() {
        assert!(tolerance(ElemType::F16) < tolerance(ElemType::BF16));
        assert!(tolerance(ElemType::BF16) <= 1e-2);
    }

    #[test]
    fn uploads_round_like_the_reference() {
        // The reference rounds its inputs with `round_to_dtype`; the upload path must agree bit
        // for bit, or kernel and reference would see different inputs.
        let x: Vec<f32> = (0..4096).map(|i| ((i as f32) * 0.7318).sin() * 3.0 + 1e-3 * i as f32).collect();
        let ties = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 1.0 + 2f32.powi(-8), 7e4, -0.0];
        for dtype in ElemType::MMA_INPUTS {
            for values in [&x[..], &ties[..]] {
                let ours = decode(&encode(values, dtype), dtype);
                let theirs = round_to_dtype(values, dtype);
                assert_eq!(
                    ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    theirs.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
}
