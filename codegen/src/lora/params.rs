//! The LoRA family's host/device contract: the kernels' parameter structs and the kernel-kind
//! codes, defined once here; the CUDA declarations are generated from them ([`contract`]). The
//! templates build on the GEMM's, so the GEMM's contract comes first.

use crate::common::params::{Declarations, DeviceEnum, DevicePtr, DevicePtrMut, KernelParams, TensorMap};

/// Which computation the mma.sync kernel fuses: the template's `KIND` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DeviceEnum)]
#[repr(i32)]
#[device_enum(prefix = "LORA_KIND_", cuda = "LoraKind")]
pub enum LoraKind {
    /// `Y = act(X W + s (X A) B + bias) + residual`.
    Adapter = 0,
    /// `Y = X + s f(X A) B`.
    Bottleneck = 1,
}

/// The mma.sync LoRA kernel's single by-value parameter (`templates/lora/sm80.cuh`). Strides are in
/// elements; `T` is the input type, `TO` the output type.
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C)]
pub struct LoraParams {
    /// `[M, K]`, or `[K, M]` for column-major X; T.
    pub x: DevicePtr,
    /// `[K, N]`, or `[N, K]` for column-major W; T; unused by the bottleneck.
    pub w: DevicePtr,
    /// `[K, r]` or `[n_adapters, K, r]`; T.
    pub a: DevicePtr,
    /// `[r, N]` or `[n_adapters, r, N]`; T.
    pub b: DevicePtr,
    /// `[N]` TO, or null.
    pub bias: DevicePtr,
    /// `[M, N]` TO, or null.
    pub residual: DevicePtr,
    /// `[M]` int32 adapter per row (PER_ROW), else null.
    pub ids: DevicePtr<i32>,
    /// `[M, N]` TO.
    pub y: DevicePtrMut,
    pub ldx: i64,
    pub ldw: i64,
    pub ldr: i64,
    pub ldy: i64,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub rank: i32,
    /// 1 without PER_ROW.
    pub n_adapters: i32,
    /// Column tiles per CTA.
    pub n_group: i32,
    pub scale: f32,
    /// Keeps the struct free of padding.
    pub reserved: i32,
}

/// The sm_90a LoRA kernel's parameter (`templates/lora/sm90a.cuh`), passed as one
/// `__grid_constant__` struct so the tensor maps live in parameter memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C, align(64))]
pub struct HopperLoraParams {
    /// X, as the GEMM's.
    pub x_map: TensorMap,
    /// W, as the GEMM's.
    pub w_map: TensorMap,
    /// A as 2-D (r, K), box (min(R, 64), 64).
    pub a_map: TensorMap,
    /// B as 2-D (N, r), box (64, R).
    pub b_map: TensorMap,
    /// Pointers, strides, sizes, scale, n_group: the mma.sync path's struct.
    pub base: LoraParams,
}

/// What the mma.sync LoRA template uses from Rust: the GEMM's contract, the kind codes and
/// [`LoraParams`].
pub(crate) fn contract(out: &mut Declarations) {
    crate::gemm::contract(out);
    out.add::<LoraKind>().add::<LoraParams>();
}

/// What the sm_90a LoRA template adds: the sm_90a GEMM's contract and [`HopperLoraParams`].
pub(crate) fn sm90a_contract(out: &mut Declarations) {
    crate::gemm::sm90a_contract(out);
    contract(out);
    out.add::<HopperLoraParams>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_what_the_kernels_take() {
        assert_eq!(std::mem::size_of::<LoraParams>(), 128);
        assert_eq!(std::mem::size_of::<HopperLoraParams>(), 640);
        let mut d = Declarations::new();
        sm90a_contract(&mut d);
        let text = d.to_string();
        assert_eq!(text.matches("struct alignas(8) GemmParams {").count(), 1, "declared once: {text}");
        assert!(text.contains("LORA_KIND_BOTTLENECK = 1"), "{text}");
        assert!(text.contains("    const int* ids;"), "{text}");
    }
}
