//! The sm_90a GEMM launch: tensor maps for X and W and the parameter struct of
//! `templates/gemm/sm90a.cuh`.
//!
//! The copy engine reads X and W as 2-D tensor maps of their stored layout (row length innermost,
//! then rows at the row stride) in boxes of 64 elements (128 bytes, the swizzle span) by a tile of
//! rows, zero-filling past the tensor. A tensor a map cannot express (an empty dimension, a row
//! stride that is not a multiple of 16 bytes, a misaligned base) cannot take this path:
//! [`hopper_gemm_params`] says why, and the launcher falls back to the mma.sync kernel with that
//! reason in its note.

use tessera_codegen::params::TensorMap;
use tessera_codegen::{GemmParams, GemmSpec, HopperGemmParams, HopperGemmTile, Layout, HOPPER_GEMM_BLOCK_K, HOPPER_GEMM_BLOCK_M};
use tessera_sim::Swizzle;

use super::problem::{stored_shape, GemmProblem, GemmStrides};
use crate::family::KernelChoice;
use crate::common::tma::{matrix_map, BOX_COLUMNS};
use crate::device::backend::Backend;


/// The parameters of a GEMM launch: the mma.sync kernel's struct or the sm_90a one.
pub type GemmLaunchParams = KernelChoice<GemmParams, HopperGemmParams>;

/// The box rows of X's and W's maps for a `128 x block_n` tile: the tile extent along their stored
/// rows (see the template). The sm_90a LoRA kernel maps X and W the same way.
pub(crate) fn gemm_map_box_rows(spec: &GemmSpec, block_n: u32) -> (u32, u32) {
    let x = match spec.layout_x {
        Layout::RowMajor => HOPPER_GEMM_BLOCK_M, // rows of X: M
        Layout::ColMajor => HOPPER_GEMM_BLOCK_K, // rows of [K, M]: K
    };
    let w = match spec.layout_w {
        Layout::RowMajor => HOPPER_GEMM_BLOCK_K, // rows of [K, N]: K
        Layout::ColMajor => block_n,             // rows of [N, K]: N
    };
    (x, w)
}

/// The sm_90a parameters for a checked launch, or why this launch cannot take the sm_90a kernel.
pub(crate) fn hopper_gemm_params(
    backend: &dyn Backend,
    spec: &GemmSpec,
    tile: HopperGemmTile,
    problem: &GemmProblem,
    strides: &GemmStrides,
    base: GemmParams,
) -> Result<HopperGemmParams, String> {
    let p = problem;
    if p.k == 0 {
        return Err("problem.k is 0 (a tensor map needs every dimension non-empty)".into());
    }
    let elem = spec.dtype.size_bytes();
    let (x_rows, x_cols) = stored_shape(spec.layout_x, p.m, p.k);
    let (w_rows, w_cols) = stored_shape(spec.layout_w, p.k, p.n);
    let (x_box, w_box) = gemm_map_box_rows(spec, tile.block_n);
    let encode = |name: &str, addr: u64, rows, cols, stride, box_rows| -> Result<TensorMap, String> {
        let map = matrix_map(addr, (rows, cols, stride), elem, [BOX_COLUMNS, box_rows], Swizzle::B128).map_err(|e| format!("{name}: {e}"))?;
        backend.encode_tensor_map(&map).map(TensorMap::new).map_err(|e| format!("{name}: {e}"))
    };
    Ok(HopperGemmParams {
        x_map: encode("x", base.x.addr(), x_rows, x_cols, strides.x, x_box)?,
        w_map: encode("w", base.w.addr(), w_rows, w_cols, strides.w, w_box)?,
        base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;
    use tessera_codegen::ElemType;

    #[test]
    fn params_mirror_the_cuda_struct() {
        assert_eq!(std::mem::size_of::<HopperGemmParams>(), 384);
        assert_eq!(std::mem::align_of::<HopperGemmParams>(), 64);
        assert_eq!(offset_of!(HopperGemmParams, w_map), 128);
        assert_eq!(offset_of!(HopperGemmParams, base), 256);
    }

    #[test]
    fn maps_follow_the_stored_layouts_or_say_why_not() {
        let t = HopperGemmTile::DEFAULT;
        let spec = GemmSpec { layout_x: Layout::ColMajor, layout_w: Layout::ColMajor, ..GemmSpec::new(ElemType::BF16, ElemType::F32) };
        assert_eq!(gemm_map_box_rows(&spec, t.block_n), (64, 256));
        assert_eq!(gemm_map_box_rows(&GemmSpec::new(ElemType::BF16, ElemType::F32), t.block_n), (128, 64));
        // X row-major [100, 40] with a padded stride of 48: dims (40, 100), stride 96 bytes.
        let map = matrix_map(0x1000, (100, 40, 48), 2, [64, 128], Swizzle::B128).unwrap();
        assert_eq!(map.global_dims[..2], [40, 100]);
        assert_eq!(map.global_strides[0], 96);
        assert_eq!(map.box_dims[..2], [64, 128]);
        // A row stride that is not a multiple of 16 bytes, a misaligned base, an empty tensor.
        assert!(matrix_map(0x1000, (100, 40, 44), 2, [64, 128], Swizzle::B128).is_err());
        assert!(matrix_map(0x1008, (100, 40, 48), 2, [64, 128], Swizzle::B128).is_err());
        assert!(matrix_map(0x1000, (0, 40, 48), 2, [64, 128], Swizzle::B128).unwrap_err().contains("empty"));
    }
}
