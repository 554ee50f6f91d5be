//! Shape pruning: the tiles that make sense for a problem, before anything is compiled. The
//! spec's validation has already removed what the architecture cannot run.

use tessera_codegen::{KernelSpec, TileChoice};

use super::key::bucket;

/// Whether `tile` is worth timing for `shape` (the family's order, see `TuningKey::shape`): a
/// tile may not exceed the problem's power-of-two bucket in rows or columns (no 128-row tiles for
/// 16 rows), except that the smallest tile of the family is always kept.
pub fn prune_for_shape(spec: &KernelSpec, tile: &TileChoice, shape: &[usize]) -> bool {
    let dim = |i: usize| shape.get(i).map_or(u64::MAX, |&d| bucket(d));
    match (spec, tile) {
        // Rows: seq_q; K/V tiles: seq_k.
        (KernelSpec::Attention(_), TileChoice::Attention(t)) => {
            u64::from(t.block_m) <= dim(1).max(64) && u64::from(t.block_n) <= dim(2).max(32)
        }
        // Split-K only where every split still gets a few K slices.
        (KernelSpec::Gemm(_) | KernelSpec::Lora(_), TileChoice::Gemm(t)) => {
            u64::from(t.block_m) <= dim(0).max(32)
                && u64::from(t.block_n) <= dim(1).max(32)
                && u64::from(t.block_k) <= dim(2).max(32)
                && (t.split_k <= 1 || dim(2) / u64::from(t.block_k * t.split_k) >= 4)
        }
        // The sm_90a kernels' CTAs always cover 128 rows, so only their columns are pruned. A
        // persistent attention CTA's ring runs on into the next work tile, so any depth can pay.
        (KernelSpec::Attention(_), TileChoice::HopperAttention(t)) => u64::from(t.block_n) <= dim(2).max(32),
        // A GEMM ring deeper than K's 64-deep slices never fills (3 stages are always kept).
        (KernelSpec::Gemm(_), TileChoice::HopperGemm(t)) => {
            u64::from(t.block_n) <= dim(1).max(128)
                && u64::from(t.stages) <= (dim(2) / u64::from(tessera_codegen::HOPPER_GEMM_BLOCK_K)).max(3)
        }
        // One candidate per rank, the default on sm_90a: always timed.
        (KernelSpec::Lora(_), TileChoice::HopperLora(_)) => true,
        // One CTA's chunk should not exceed the elements (or a quarter of them, for big ones).
        (_, TileChoice::Elementwise(t)) => t.chunk() <= dim(0).max(512),
        _ => false,
    }
}

/// The spec's pruned tile space for `shape` on `arch`, the default tile first.
pub fn candidates(spec: &KernelSpec, arch: tessera_codegen::Arch, shape: &[usize]) -> Vec<TileChoice> {
    let default = spec.untiled().tile_choice(arch);
    let mut out: Vec<TileChoice> = default.into_iter().collect();
    for t in spec.tile_space(arch) {
        if Some(t) != default && prune_for_shape(spec, &t, shape) {
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{Arch, AttentionSpec, DType, GemmSpec, GemmTile, HopperGemmTile, OutType};

    #[test]
    fn small_problems_drop_big_tiles() {
        let g = KernelSpec::from(GemmSpec::new(DType::BF16, OutType::BF16));
        let big = TileChoice::Gemm(GemmTile::new(128, 128, 32, 8, 3));
        let small = TileChoice::Gemm(GemmTile::new(32, 32, 32, 4, 2));
        assert!(!prune_for_shape(&g, &big, &[16, 4096, 4096]), "no 128-row tile for 16 rows");
        assert!(prune_for_shape(&g, &small, &[16, 4096, 4096]));
        assert!(prune_for_shape(&g, &big, &[4096, 4096, 4096]));
        let all = candidates(&g, Arch::SM90, &[4096, 4096, 4096]);
        let decode = candidates(&g, Arch::SM90, &[1, 4096, 4096]);
        assert!(decode.len() < all.len() && !decode.is_empty());
        assert_eq!(all[0], g.tile_choice(Arch::SM90).unwrap(), "the default comes first");
        let a = KernelSpec::from(AttentionSpec::new(DType::BF16, 128, true, 8, 8));
        let short = candidates(&a, Arch::SM90, &[8, 16, 16]);
        assert!(short.iter().skip(1).all(|t| matches!(t, TileChoice::Attention(c) if c.block_m <= 64 && c.block_n <= 32)));
    }

    #[test]
    fn sm90a_tiles_are_pruned_by_columns_and_depth() {
        let a = KernelSpec::from(AttentionSpec::new(DType::BF16, 128, true, 8, 8));
        let hopper = |b: &[TileChoice]| b.iter().filter(|t| matches!(t, TileChoice::HopperAttention(_))).count();
        let long = candidates(&a, Arch::SM90A, &[8, 4096, 4096]);
        assert_eq!(long[0], a.tile_choice(Arch::SM90A).unwrap(), "the sm_90a default comes first");
        assert!(matches!(long[0], TileChoice::HopperAttention(_)));
        assert_eq!(hopper(&long), 12, "every d128 sm_90a tile for long sequences");
        let short = candidates(&a, Arch::SM90A, &[8, 40, 40]);
        assert!(short.iter().skip(1).all(|t| !matches!(t, TileChoice::HopperAttention(h) if h.block_n > 64)), "{short:?}");
        assert!(hopper(&short) > 1);

        let g = KernelSpec::from(GemmSpec::new(DType::BF16, OutType::BF16));
        let big = candidates(&g, Arch::SM90A, &[4096, 4096, 4096]);
        assert_eq!(big[0], TileChoice::HopperGemm(HopperGemmTile::DEFAULT));
        assert_eq!(big.iter().filter(|t| matches!(t, TileChoice::HopperGemm(_))).count(), 9);
        // N = 100: only 128-column tiles (and the default); K = 128: at most 3 stages.
        let narrow = candidates(&g, Arch::SM90A, &[4096, 100, 128]);
        let sm90a: Vec<HopperGemmTile> =
            narrow.iter().skip(1).filter_map(|t| if let TileChoice::HopperGemm(h) = t { Some(*h) } else { None }).collect();
        assert_eq!(sm90a, [HopperGemmTile { block_n: 128, stages: 3 }]);
    }
}
