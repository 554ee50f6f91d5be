//! Tensor maps for the sm_90a kernels: every operand they copy with the tensor memory accelerator
//! lands 128-byte swizzled, in boxes 64 16-bit columns wide (the swizzle span), with zeros outside
//! the tensor. One place for that convention, shared by the attention and GEMM launchers.

use tessera_sim::{OobFill, Swizzle, TensorMap};

/// Columns (elements) of one box row: 128 bytes of 16-bit values, the 128-byte swizzle span.
pub(crate) const BOX_COLUMNS: u32 = 64;

/// A validated 128-byte-swizzled, zero-filled tiled map (`dims` and `box_dims` innermost first,
/// `byte_strides` of dims 1..), or the rule it breaks.
pub(crate) fn swizzled_map(addr: u64, elem: usize, dims: &[u64], byte_strides: &[u64], box_dims: &[u32]) -> Result<TensorMap, String> {
    TensorMap::tiled(addr, elem as u8, dims, byte_strides, box_dims, Swizzle::B128, OobFill::Zero).map_err(|e| e.to_string())
}
