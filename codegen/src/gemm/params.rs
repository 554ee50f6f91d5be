//! The GEMM's host/device contract: the kernels' parameter structs, defined once here; the CUDA
//! declarations the templates use are generated from them ([`contract`]), with static assertions
//! that make NVRTC name any field whose layout differs from Rust's.

use super::spec::Activation;
use crate::common::params::{Declarations, DevicePtr, DevicePtrMut, KernelParams, TensorMap};

/// The mma.sync GEMM kernel's single by-value parameter (`templates/gemm/sm80.cuh`). Strides
/// ("leading dimensions") are in elements; `T` is the input type, `TO` the output type.
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C)]
pub struct GemmParams {
    /// `[M, K]`, or `[K, M]` for column-major X; T.
    pub x: DevicePtr,
    /// `[K, N]`, or `[N, K]` for column-major W; T.
    pub w: DevicePtr,
    /// `[M, N]` TO, or null (no C term).
    pub c: DevicePtr,
    /// `[N]` TO, or null (read only when HAS_BIAS).
    pub bias: DevicePtr,
    /// `[M, N]` TO, or null (read only when HAS_RESIDUAL).
    pub residual: DevicePtr,
    /// `[M, N]` TO.
    pub y: DevicePtrMut,
    /// Split-K: `[SPLIT_K, M, N]` f32 partial tiles, else null.
    pub workspace: DevicePtrMut<f32>,
    /// Split-K: one counter per output tile, zero between launches, else null.
    pub counters: DevicePtrMut<u32>,
    pub ldx: i64,
    pub ldw: i64,
    pub ldc: i64,
    pub ldr: i64,
    pub ldy: i64,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub beta: f32,
    /// Keeps the struct free of padding.
    pub reserved: i32,
}

/// The sm_90a GEMM kernel's parameter (`templates/gemm/sm90a.cuh`), passed as one
/// `__grid_constant__` struct so the tensor maps live in parameter memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C, align(64))]
pub struct HopperGemmParams {
    /// X as 2-D: (K, M) with box (64, 128), or column-major (M, K) with box (64, 64).
    pub x_map: TensorMap,
    /// W as 2-D: (N, K) with box (64, 64), or column-major (K, N) with box (64, BLOCK_N).
    pub w_map: TensorMap,
    /// Pointers, strides, sizes, alpha, beta: the mma.sync path's struct.
    pub base: GemmParams,
}

/// What the mma.sync GEMM template (and every template built on it) uses from Rust: the
/// activation codes and [`GemmParams`].
pub(crate) fn contract(out: &mut Declarations) {
    out.add::<Activation>().add::<GemmParams>();
}

/// What the sm_90a GEMM template adds: [`HopperGemmParams`].
pub(crate) fn sm90a_contract(out: &mut Declarations) {
    contract(out);
    out.add::<HopperGemmParams>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_what_the_kernels_take() {
        assert_eq!(std::mem::size_of::<GemmParams>(), 128);
        assert_eq!(std::mem::size_of::<HopperGemmParams>(), 384);
        let mut d = Declarations::new();
        sm90a_contract(&mut d);
        let text = d.to_string();
        assert!(text.contains("enum GemmActivation : int { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU_TANH = 2, ACT_SILU = 3 };"), "{text}");
        assert!(text.contains("struct alignas(8) GemmParams {") && text.contains("    float* workspace;"), "{text}");
        assert!(text.find("GemmParams {").unwrap() < text.find("HopperGemmParams {").unwrap());
        assert!(text.contains("static_assert(TESSERA_OFFSETOF(HopperGemmParams, base) == 256"), "{text}");
    }
}
