//! Tensor maps for the sm_90a kernels: the operands they copy with the tensor memory accelerator
//! land 128-byte swizzled, in boxes 64 16-bit columns wide (the swizzle span), with zeros outside
//! the tensor; narrower boxes (LoRA's A at rank 8-32) take the 32- or 64-byte swizzle their width
//! fills. One place for that convention, shared by the attention, GEMM and LoRA launchers.

use tessera_sim::{OobFill, Swizzle, TensorMap};

/// Columns (elements) of one box row: 128 bytes of 16-bit values, the 128-byte swizzle span.
pub(crate) const BOX_COLUMNS: u32 = 64;

/// A validated 128-byte-swizzled, zero-filled tiled map (`dims` and `box_dims` innermost first,
/// `byte_strides` of dims 1..), or the rule it breaks.
pub(crate) fn swizzled_map(addr: u64, elem: usize, dims: &[u64], byte_strides: &[u64], box_dims: &[u32]) -> Result<TensorMap, String> {
    tiled_map(addr, elem, dims, byte_strides, box_dims, Swizzle::B128)
}

/// As [`swizzled_map`] with the swizzle given.
fn tiled_map(addr: u64, elem: usize, dims: &[u64], byte_strides: &[u64], box_dims: &[u32], swizzle: Swizzle) -> Result<TensorMap, String> {
    TensorMap::tiled(addr, elem as u8, dims, byte_strides, box_dims, swizzle, OobFill::Zero).map_err(|e| e.to_string())
}

/// The 2-D map of a matrix stored as `rows` rows of `cols` elements, `stride` elements apart, at
/// `addr`, in boxes of `box_dims` (columns, rows), or the rule it breaks.
pub(crate) fn matrix_map(addr: u64, (rows, cols, stride): (usize, usize, usize), elem: usize, box_dims: [u32; 2], swizzle: Swizzle) -> Result<TensorMap, String> {
    if rows == 0 || cols == 0 {
        return Err(format!("{rows} x {cols} is empty (a tensor map needs every dimension non-empty)"));
    }
    tiled_map(addr, elem, &[cols as u64, rows as u64], &[(stride * elem) as u64], &box_dims, swizzle)
}
