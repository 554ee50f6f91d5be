//! The sm_90a attention launch: tensor maps for Q, K and V and the parameters of
//! `templates/attention/sm90a.cuh` ([`HopperAttentionParams`], defined with the host/device
//! contract in `tessera_codegen`).
//!
//! The copy engine reads each `[batch, seq, heads, head_dim]` tensor as a 4-D tensor map
//! (head_dim, head, seq, batch), innermost first, in boxes of 64 columns (128 bytes, the swizzle
//! span) by one head by a tile of rows. A tensor whose strides a map cannot express (not multiples
//! of 16 bytes, a misaligned base) cannot take this path: [`hopper_params`] says why, and the
//! launcher falls back to the mma.sync kernel with that reason in its note.

use tessera_codegen::params::TensorMap;
use tessera_codegen::{AttentionParams, AttentionSpec, HopperAttentionParams, HopperTile, HOPPER_BLOCK_M};

use super::problem::{AttentionProblem, AttentionStrides, TensorStrides};
use crate::family::KernelChoice;
use crate::common::tma::{swizzled_map, BOX_COLUMNS};
use crate::device::backend::Backend;

/// The parameters of an attention launch: the mma.sync kernel's struct or the sm_90a one. One
/// lives in each prepared launch, so the size difference of the variants does not matter.
pub type AttentionLaunchParams = KernelChoice<AttentionParams, HopperAttentionParams>;

/// The tensor map of one `[batch, seq, heads, head_dim]` tensor (extents in that order) at `addr`,
/// boxes of 64 columns x 1 head x `rows` rows. A dimension of extent 1 is never stepped over, so
/// it gets the contiguous stride (a map needs one even then).
fn tensor_map(addr: u64, extents: [usize; 4], strides: TensorStrides, elem: usize, rows: u32) -> Result<tessera_sim::TensorMap, String> {
    let [batch, seq, heads, dim] = extents;
    let dims = [dim as u64, heads as u64, seq as u64, batch as u64];
    let mut byte_strides = [strides.head, strides.seq, strides.batch].map(|s| (s * elem) as u64);
    let mut contiguous = (dim * elem) as u64;
    for (i, extent) in [heads, seq, batch].into_iter().enumerate() {
        if extent == 1 {
            byte_strides[i] = contiguous;
        }
        contiguous = byte_strides[i] * extent as u64;
    }
    swizzled_map(addr, elem, &dims, &byte_strides, &[BOX_COLUMNS, 1, rows, 1])
}

/// The sm_90a parameters for a checked launch, or why this launch cannot take the sm_90a kernel.
pub(crate) fn hopper_params(
    backend: &dyn Backend,
    spec: &AttentionSpec,
    tile: HopperTile,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    base: AttentionParams,
) -> Result<HopperAttentionParams, String> {
    let p = problem;
    if p.seq_k == 0 {
        return Err("seq_k is 0 (a tensor map needs every dimension non-empty)".into());
    }
    let elem = spec.dtype.size_bytes();
    let q_extents = [p.batch, p.seq_q, p.heads_q, p.head_dim];
    let kv_extents = [p.batch, p.seq_k, p.heads_kv, p.head_dim];
    let encode = |name: &str, addr: u64, extents, s, rows| -> Result<TensorMap, String> {
        let map = tensor_map(addr, extents, s, elem, rows).map_err(|e| format!("{name}: {e}"))?;
        backend.encode_tensor_map(&map).map(TensorMap::new).map_err(|e| format!("{name}: {e}"))
    };
    Ok(HopperAttentionParams {
        q_map: encode("q", base.q.addr(), q_extents, strides.q, HOPPER_BLOCK_M)?,
        k_map: encode("k", base.k.addr(), kv_extents, strides.k, tile.block_n)?,
        v_map: encode("v", base.v.addr(), kv_extents, strides.v, tile.block_n)?,
        base,
        batch: i32::try_from(p.batch).map_err(|_| "batch does not fit an int".to_string())?,
        num_tiles: i32::try_from(num_tiles(problem)).map_err(|_| "too many tiles for one launch".to_string())?,
        padding: [0; 48],
    })
}

/// Work tiles of a launch: 128-row query blocks x heads x batch.
pub(crate) fn num_tiles(problem: &AttentionProblem) -> usize {
    problem.seq_q.div_ceil(HOPPER_BLOCK_M as usize).saturating_mul(problem.heads_q).saturating_mul(problem.batch)
}

/// Persistent CTAs: one per multiprocessor (the ring takes most of an SM's shared memory), never
/// more than there are tiles.
pub(crate) fn persistent_ctas(problem: &AttentionProblem, multiprocessors: u32) -> usize {
    num_tiles(problem).min(multiprocessors.max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_describe_the_tensor_or_say_why_not() {
        let s = TensorStrides::contiguous(100, 8, 128);
        let map = tensor_map(0x1000, [2, 100, 8, 128], s, 2, 128).unwrap();
        assert_eq!(map.global_dims[..4], [128, 8, 100, 2]);
        assert_eq!(map.global_strides[..3], [256, 2048, 204_800]);
        // Batch 1 and one head: the unused strides become contiguous ones.
        let odd = TensorStrides { batch: 7, seq: 1024, head: 3, dim: 1 };
        let map = tensor_map(0x1000, [1, 10, 1, 128], odd, 2, 128).unwrap();
        assert_eq!(map.global_strides[..3], [256, 2048, 20_480]);
        // A row stride that is not a multiple of 16 bytes cannot be a tensor map.
        let bad = TensorStrides { batch: 100 * 136, seq: 136 + 4, head: 136, dim: 1 };
        assert!(tensor_map(0x1000, [1, 100, 1, 128], bad, 2, 128).is_err());
        assert!(tensor_map(0x1008, [1, 100, 1, 128], s, 2, 128).is_err(), "misaligned base");
    }
}
