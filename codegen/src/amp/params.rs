//! The mixed-precision family's host/device contract: the kernels' parameter structs and the
//! entries of their device tensor tables, defined once here; the CUDA declarations the templates
//! use are generated from them (one contract per template: [`cast_contract`],
//! [`unscale_contract`], [`adamw_contract`], [`scale_contract`]), with static assertions that make
//! NVRTC name any field whose layout differs from Rust's. The element codes are
//! [`ElemType`]'s (`ElemCode`).

use crate::common::params::{Declarations, DevicePtr, DevicePtrMut, KernelParams};
use crate::common::ElemType;

/// The cast kernel's by-value parameter (`templates/amp/cast.cuh`): `n` elements of `TI` in, `n`
/// of `TO` out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, KernelParams)]
#[repr(C)]
pub struct CastParams {
    /// `[n]` TI.
    pub x: DevicePtr,
    /// `[n]` TO.
    pub y: DevicePtrMut,
    /// Device scalar (SCALED), else null.
    pub scale: DevicePtr<f32>,
    /// Device f32 bits, atomically max-ed (AMAX), else null.
    pub amax: DevicePtrMut<u32>,
    pub n: i64,
}

/// One tensor of the unscale kernel's list (`templates/amp/unscale.cuh`), in a device table sorted
/// by `first_chunk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, KernelParams)]
#[repr(C)]
pub struct UnscaleEntry {
    /// `[len]` elements of `dtype`, unscaled in place.
    pub data: DevicePtrMut,
    pub len: i64,
    /// The first chunk (CTA) of the tensor.
    pub first_chunk: i64,
    /// f32, f16 or bf16.
    pub dtype: ElemType,
    /// Keeps the struct free of padding.
    pub reserved: i32,
}

/// The unscale kernel's by-value parameter (`templates/amp/unscale.cuh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, KernelParams)]
#[repr(C)]
pub struct UnscaleParams {
    /// `[n_tensors]` entries, sorted by `first_chunk`.
    pub table: DevicePtr<UnscaleEntry>,
    /// Device scalar, set to 1 when any element is not finite.
    pub found_inf: DevicePtrMut<f32>,
    /// Device scalar.
    pub inv_scale: DevicePtr<f32>,
    pub n_tensors: i32,
    /// Keeps the struct free of padding.
    pub reserved: i32,
}

/// One parameter tensor of the AdamW kernel's list (`templates/amp/adamw.cuh`), in a device table
/// sorted by `first_chunk`; every buffer holds `len` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, KernelParams)]
#[repr(C)]
pub struct AdamWEntry {
    /// `grad_dtype`.
    pub grad: DevicePtr,
    /// f32 master weights.
    pub master: DevicePtrMut<f32>,
    /// f32 first moment.
    pub exp_avg: DevicePtrMut<f32>,
    /// f32 second moment.
    pub exp_avg_sq: DevicePtrMut<f32>,
    /// `model_dtype` model weights, or null.
    pub model: DevicePtrMut,
    pub len: i64,
    /// The first chunk (CTA) of the tensor.
    pub first_chunk: i64,
    /// f32, f16 or bf16.
    pub grad_dtype: ElemType,
    /// f16 or bf16 (ignored without a model tensor).
    pub model_dtype: ElemType,
}

/// The AdamW kernel's by-value parameter (`templates/amp/adamw.cuh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C)]
pub struct AdamWParams {
    /// `[n_tensors]` entries, sorted by `first_chunk`.
    pub table: DevicePtr<AdamWEntry>,
    /// Device scalar or null; a set flag skips the step.
    pub found_inf: DevicePtr<f32>,
    /// Device scalar or null (gradients already unscaled).
    pub inv_scale: DevicePtr<f32>,
    /// Device scalar.
    pub lr: DevicePtr<f32>,
    /// Device step count, incremented by the launch.
    pub step: DevicePtrMut<i32>,
    /// Device counter, zero between launches.
    pub done: DevicePtrMut<u32>,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub n_tensors: i32,
    /// Keeps the struct free of padding.
    pub reserved: i32,
}

/// The loss-scale update's by-value parameter (`templates/amp/scale.cuh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C)]
pub struct LossScaleParams {
    /// Device scalar, updated.
    pub scale: DevicePtrMut<f32>,
    /// Device count of steps since the last change, updated.
    pub growth_tracker: DevicePtrMut<i32>,
    /// Device flag from the unscale, read and then cleared.
    pub found_inf: DevicePtrMut<f32>,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    pub growth_interval: i32,
    /// Keeps the struct free of padding.
    pub reserved: i32,
}

/// The fp8 delayed-scaling update's by-value parameter (`templates/amp/scale.cuh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C)]
pub struct Fp8ScaleParams {
    /// f32 bits accumulated by the casts; zeroed by the update.
    pub amax: DevicePtrMut<u32>,
    /// `[history_len]`, newest first.
    pub history: DevicePtrMut<f32>,
    pub scale: DevicePtrMut<f32>,
    pub scale_inv: DevicePtrMut<f32>,
    /// The fp8 format's largest finite value.
    pub fp8_max: f32,
    pub history_len: i32,
    pub margin: i32,
    /// Keeps the struct free of padding.
    pub reserved: i32,
}

/// What the cast template uses from Rust: [`CastParams`].
pub(crate) fn cast_contract(out: &mut Declarations) {
    out.add::<CastParams>();
}

/// What the unscale template uses from Rust: the element codes and [`UnscaleParams`] (with
/// [`UnscaleEntry`], which it points to).
pub(crate) fn unscale_contract(out: &mut Declarations) {
    out.add::<ElemType>().add::<UnscaleParams>();
}

/// What the AdamW template uses from Rust: the element codes and [`AdamWParams`] (with
/// [`AdamWEntry`], which it points to).
pub(crate) fn adamw_contract(out: &mut Declarations) {
    out.add::<ElemType>().add::<AdamWParams>();
}

/// What the scale-update template uses from Rust: [`LossScaleParams`] and [`Fp8ScaleParams`] (it
/// defines both kernels' functions, whichever one the spec instantiates).
pub(crate) fn scale_contract(out: &mut Declarations) {
    out.add::<LossScaleParams>().add::<Fp8ScaleParams>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn layouts_are_what_the_kernels_take() {
        assert_eq!(size_of::<CastParams>(), 40);
        assert_eq!(size_of::<UnscaleEntry>(), 32);
        assert_eq!(size_of::<UnscaleParams>(), 32);
        assert_eq!(size_of::<AdamWEntry>(), 64);
        assert_eq!(size_of::<AdamWParams>(), 72);
        assert_eq!(size_of::<LossScaleParams>(), 40);
        assert_eq!(size_of::<Fp8ScaleParams>(), 48);
        let mut d = Declarations::new();
        unscale_contract(&mut d);
        let text = d.to_string();
        assert!(
            text.contains("enum ElemCode : int { ELEM_F32 = 0, ELEM_F16 = 1, ELEM_BF16 = 2, ELEM_E4M3 = 3, ELEM_E5M2 = 4 };"),
            "{text}"
        );
        assert!(text.find("enum ElemCode").unwrap() < text.find("UnscaleEntry {").unwrap());
        assert!(text.find("UnscaleEntry {").unwrap() < text.find("UnscaleParams {").unwrap());
        assert!(text.contains("    ElemCode dtype;") && text.contains("    const UnscaleEntry* table;"), "{text}");
        let mut d = Declarations::new();
        adamw_contract(&mut d);
        let text = d.to_string();
        assert_eq!(text.matches("enum ElemCode").count(), 1, "declared once: {text}");
        assert!(text.contains("    const AdamWEntry* table;") && text.contains("    unsigned int* done;"), "{text}");
        assert!(text.contains("static_assert(TESSERA_OFFSETOF(AdamWEntry, model_dtype) == 60"), "{text}");
    }

    #[test]
    fn entries_are_the_bytes_the_tables_hold() {
        let e = UnscaleEntry { data: DevicePtrMut::new(0x100), len: 5, first_chunk: 2, dtype: ElemType::BF16, reserved: 0 };
        let bytes = e.as_bytes();
        assert_eq!(&bytes[..8], &0x100u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &2i32.to_le_bytes());
    }
}
