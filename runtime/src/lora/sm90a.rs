//! The sm_90a LoRA launch: tensor maps for X, W, A and B and the parameter struct of
//! `templates/lora/sm90a.cuh`.
//!
//! X and W are mapped as for the sm_90a GEMM. A `[K, r]` is read in boxes of `min(R, 64)` columns
//! by 64 k-rows with the swizzle that width fills (32, 64 or 128 bytes), B `[r, N]` in boxes of 64
//! columns by R rows, 128-byte swizzled (R: the rank padded to 16; the maps zero-fill the padding).
//! A tensor a map cannot express (an empty dimension, a row stride that is not a multiple of 16
//! bytes, a misaligned base) cannot take this path: [`hopper_lora_params`] says why, and the
//! launcher falls back to the mma.sync kernel with that reason in its note.

use tessera_codegen::params::TensorMap;
use tessera_codegen::{GemmSpec, HopperLoraParams, HopperLoraTile, LoraParams, LoraSpec};
use tessera_sim::Swizzle;

use super::problem::{LoraProblem, LoraStrides};
use crate::family::KernelChoice;
use crate::common::tma::{matrix_map, BOX_COLUMNS};
use crate::device::backend::Backend;
use crate::gemm::problem::stored_shape;
use crate::gemm::sm90a::gemm_map_box_rows;


/// The parameters of a LoRA launch: the mma.sync kernel's struct or the sm_90a one.
pub type LoraLaunchParams = KernelChoice<LoraParams, HopperLoraParams>;

/// Columns of one A box and the swizzle they fill: the padded rank up to 64 (32, 64 or 128 bytes
/// of 16-bit values).
fn a_box(tile: HopperLoraTile) -> (u32, Swizzle) {
    match tile.rank {
        16 => (16, Swizzle::B32),
        32 => (32, Swizzle::B64),
        _ => (BOX_COLUMNS, Swizzle::B128),
    }
}

/// The sm_90a parameters for a checked single-adapter launch, or why this launch cannot take the
/// sm_90a kernel.
pub(crate) fn hopper_lora_params(
    backend: &dyn Backend,
    spec: &LoraSpec,
    tile: HopperLoraTile,
    problem: &LoraProblem,
    strides: &LoraStrides,
    base: LoraParams,
) -> Result<HopperLoraParams, String> {
    let p = problem;
    if p.k == 0 {
        return Err("problem.k is 0 (a tensor map needs every dimension non-empty)".into());
    }
    let elem = spec.dtype.size_bytes();
    let r = spec.rank as usize;
    // (name, address, stored rows, row length, row stride, box columns, box rows, swizzle)
    let gemm = GemmSpec { layout_x: spec.layout_x, layout_w: spec.layout_w, ..GemmSpec::new(spec.dtype, spec.out) };
    let (x_box, w_box) = gemm_map_box_rows(&gemm, tile.block_n);
    let (x_rows, x_cols) = stored_shape(spec.layout_x, p.m, p.k);
    let (w_rows, w_cols) = stored_shape(spec.layout_w, p.k, p.n);
    let (a_cols, a_swizzle) = a_box(tile);
    let maps = [
        ("x", base.x.addr(), x_rows, x_cols, strides.x, BOX_COLUMNS, x_box, Swizzle::B128),
        ("w", base.w.addr(), w_rows, w_cols, strides.w, BOX_COLUMNS, w_box, Swizzle::B128),
        ("a", base.a.addr(), p.k, r, r, a_cols, 64, a_swizzle),
        ("b", base.b.addr(), r, p.n, p.n, BOX_COLUMNS, tile.rank, Swizzle::B128),
    ];
    let mut encoded = [TensorMap::default(); 4];
    for (out, (name, addr, rows, cols, stride, box_cols, box_rows, swizzle)) in encoded.iter_mut().zip(maps) {
        let map = matrix_map(addr, (rows, cols, stride), elem, [box_cols, box_rows], swizzle)
            .and_then(|map| backend.encode_tensor_map(&map).map_err(|e| e.to_string()))
            .map_err(|e| format!("{name}: {e}"))?;
        *out = TensorMap::new(map);
    }
    let [x_map, w_map, a_map, b_map] = encoded;
    Ok(HopperLoraParams { x_map, w_map, a_map, b_map, base })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn params_mirror_the_cuda_struct() {
        assert_eq!(std::mem::size_of::<HopperLoraParams>(), 640);
        assert_eq!(std::mem::align_of::<HopperLoraParams>(), 64);
        assert_eq!(offset_of!(HopperLoraParams, b_map), 384);
        assert_eq!(offset_of!(HopperLoraParams, base), 512);
    }

    #[test]
    fn a_boxes_fill_their_swizzle() {
        for (rank, cols, swizzle) in [(16, 16, Swizzle::B32), (32, 32, Swizzle::B64), (64, 64, Swizzle::B128), (128, 64, Swizzle::B128)] {
            assert_eq!(a_box(HopperLoraTile::for_rank(rank)), (cols, swizzle), "r{rank}");
        }
    }
}
