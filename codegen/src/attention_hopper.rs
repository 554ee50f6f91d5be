//! The sm_90a attention path: which specs take it, its fixed tiles, and the rendering of
//! `templates/attention_hopper.cuh` with the `wgmma` instructions it needs.
//!
//! A spec takes this path when the target has `wgmma` (sm_90a), the spec is plain attention (no
//! variant feature), its head dimension has a Hopper tile (64, 128, 256) and no mma.sync tile was
//! forced. Everything else renders the mma.sync template; [`hopper_route`] says why, so the launch
//! log and `tessera list` can show it.

use crate::wgmma_asm::{wgmma_ops_struct, WgmmaA, WgmmaMethod};
use crate::{Arch, AttentionSpec, DType};

/// Threads of one CTA: a producer warpgroup and two consumer warpgroups.
pub const HOPPER_THREADS: u32 = 384;
/// Query rows per CTA: 64 per consumer warpgroup.
pub const HOPPER_BLOCK_M: u32 = 128;
/// Head dimensions the sm_90a template has tiles for.
pub const HOPPER_HEAD_DIMS: [u32; 3] = [64, 128, 256];

/// The sm_90a tile for one head dimension: key-tile width and ring depth, chosen so the ring fits
/// 227 KB of shared memory and S + O + P stay within the consumers' 232 registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HopperTile {
    pub block_n: u32,
    pub stages: u32,
}

impl HopperTile {
    pub fn for_head_dim(head_dim: u32) -> Option<HopperTile> {
        match head_dim {
            64 | 128 => Some(HopperTile { block_n: 128, stages: 2 }),
            256 => Some(HopperTile { block_n: 64, stages: 2 }),
            _ => None,
        }
    }

    /// Dynamic shared memory: Q, the K/V ring, 2 + 2 * stages mbarriers, and 1 KB of alignment slack
    /// (the 128-byte swizzle wants 1024-byte aligned tiles).
    pub fn shared_memory_bytes(&self, dtype: DType, head_dim: u32) -> u32 {
        let elem = dtype.size_bytes() as u32;
        let q = HOPPER_BLOCK_M * head_dim * elem;
        let ring = self.stages * 2 * self.block_n * head_dim * elem;
        q + ring + 8 * (2 + 2 * self.stages) + 1024
    }
}

/// Whether `spec` renders the sm_90a template on `arch`; `Err` carries the reason it does not.
pub fn hopper_route(spec: &AttentionSpec, arch: Arch) -> Result<HopperTile, String> {
    if !arch.has_wgmma() {
        return Err(format!("{arch} has no wgmma (sm_90a only)"));
    }
    if !spec.features.is_plain() {
        return Err(format!("variant `{}` runs on the mma.sync kernel", spec.features));
    }
    if spec.tile.is_some() {
        return Err("an mma.sync tile was given (or tuned) for this spec".to_string());
    }
    HopperTile::for_head_dim(spec.head_dim)
        .ok_or_else(|| format!("head_dim {} has no sm_90a tile (64, 128, 256 do)", spec.head_dim))
}

/// The `Ops` struct the template calls: `qk` (S = Q K^T step, both operands from shared memory,
/// K-major) and `pv` (O += P V step, P from registers, V MN-major).
fn wgmma_ops(dtype: DType, head_dim: u32, block_n: u32) -> String {
    let qk_comment = format!("S (64 x {block_n}) {{+}}= Q K^T for one 16-column k-step; `accumulate` false starts S at 0.");
    let pv_comment = format!("O (64 x {head_dim}) += P V for one 16-key k-step: P from registers, V transposed (MN-major).");
    wgmma_ops_struct(&[
        WgmmaMethod {
            comment: &qk_comment,
            name: "qk",
            n: block_n,
            dtype,
            a: WgmmaA::Shared { desc: "desc_q", trans: false },
            b_desc: "desc_k",
            trans_b: false,
            accumulate_param: true,
        },
        WgmmaMethod {
            comment: &pv_comment,
            name: "pv",
            n: head_dim,
            dtype,
            a: WgmmaA::Registers,
            b_desc: "desc_v",
            trans_b: true,
            accumulate_param: false,
        },
    ])
}

/// The `extern "C"` entry point of the sm_90a kernel for `spec`.
pub(crate) fn hopper_entry_point(spec: &AttentionSpec, tile: HopperTile, name: &str) -> String {
    format!(
        "{ops}\n\
         extern \"C\" __global__ void __launch_bounds__({threads}, 1)\n\
         {name}(const __grid_constant__ tessera::HopperAttentionParams params) {{\n    \
         tessera::attention_hopper<{ty}, {d}, {bn}, {stages}, {causal}, {group}, TesseraWgmmaOps>(params);\n}}\n",
        ops = wgmma_ops(spec.dtype, spec.head_dim, tile.block_n),
        threads = HOPPER_THREADS,
        ty = spec.dtype.cuda_type(),
        d = spec.head_dim,
        bn = tile.block_n,
        stages = tile.stages,
        causal = spec.causal,
        group = spec.group(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_names_its_reason() {
        let spec = AttentionSpec::new(DType::BF16, 128, true, 16, 4);
        assert_eq!(hopper_route(&spec, Arch::SM90A), Ok(HopperTile { block_n: 128, stages: 2 }));
        assert!(hopper_route(&spec, Arch::SM90).unwrap_err().contains("wgmma"));
        assert!(hopper_route(&AttentionSpec { head_dim: 96, ..spec }, Arch::SM90A).unwrap_err().contains("head_dim 96"));
        let paged = spec.with_features(crate::AttentionFeatures { paged: true, ..Default::default() });
        assert!(hopper_route(&paged, Arch::SM90A).unwrap_err().contains("paged"));
        let tiled = spec.with_tile(AttentionSpec::default_tile(128, Arch::SM90A));
        assert!(hopper_route(&tiled, Arch::SM90A).unwrap_err().contains("mma.sync tile"));
    }

    #[test]
    fn tiles_fit_shared_memory() {
        for d in HOPPER_HEAD_DIMS {
            for dtype in DType::ALL {
                let t = HopperTile::for_head_dim(d).unwrap();
                assert!(t.shared_memory_bytes(dtype, d) <= Arch::SM90A.max_shared_memory_per_block(), "d{d}");
            }
        }
    }

    #[test]
    fn wgmma_operands_are_numbered_consistently() {
        let ops = wgmma_ops(DType::BF16, 64, 128);
        // S: 64 accumulators %0..%63, then the two descriptors and the accumulate flag.
        assert!(ops.contains("m64n128k16.f32.bf16.bf16 {%0, %1,"), "{ops}");
        assert!(ops.contains("%63}, %64, %65, p, 1, 1, 0, 0;"), "{ops}");
        assert!(ops.contains("setp.ne.b32 p, %66, 0;"));
        // O: 32 accumulators, 4 A registers, the V descriptor, the flag; B transposed.
        assert!(ops.contains("m64n64k16.f32.bf16.bf16 {%0,"));
        assert!(ops.contains("%31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;"), "{ops}");
        assert!(ops.contains("setp.ne.b32 p, %37, 0;"));
    }
}
