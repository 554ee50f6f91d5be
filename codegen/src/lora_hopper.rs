//! The sm_90a fused-LoRA path: which specs take it, its tiles, and the rendering of
//! `templates/lora_hopper.cuh` with the `wgmma` instructions it needs.
//!
//! A spec takes this path when the target has `wgmma` (sm_90a) and the spec is single-adapter LoRA
//! (not the bottleneck, not per-row adapters), aligned, without a user epilogue, with its tile left
//! to the default. The main loop is the sm_90a GEMM's (TMA ring, producer and two consumer
//! warpgroups, `wgmma` from 128-byte-swizzled shared memory) with `X A` riding on the same X
//! descriptors; everything else renders `templates/lora.cuh` and [`lora_hopper_route`] says why.

use serde::{Deserialize, Serialize};

use crate::gemm_hopper::{xw_comment, xw_method, HOPPER_GEMM_BLOCK_K, HOPPER_GEMM_BLOCK_M};
use crate::wgmma_asm::{wgmma_ops_struct, WgmmaA, WgmmaMethod};
use crate::{AdapterMode, Arch, DType, Layout, LoraSpec};

/// Threads of one CTA: a producer warpgroup and two consumer warpgroups.
pub const HOPPER_LORA_THREADS: u32 = 384;

/// The sm_90a LoRA tile: `128 x block_n` outputs per column tile, 64-deep k-slices of X, W and A in
/// a `stages`-deep ring, the padded rank `rank` (16, 32, 64 or 128). Fixed per rank
/// ([`HopperLoraTile::for_rank`]): the tuner weighs it against the mma.sync tiles as one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HopperLoraTile {
    pub block_n: u32,
    pub stages: u32,
    pub rank: u32,
}

impl HopperLoraTile {
    /// Ranks up to 64: the GEMM's 128 x 256 tile with 3 stages (56 KiB each: X, W and A), so that B
    /// (`r x 256`) fits beside the ring; 128 + 32 accumulators per consumer thread at rank 64.
    /// Rank 128: 128 x 128 with 4 stages; 64 + 64 accumulators.
    pub fn for_rank(padded_rank: u32) -> HopperLoraTile {
        if padded_rank <= 64 {
            HopperLoraTile { block_n: 256, stages: 3, rank: padded_rank }
        } else {
            HopperLoraTile { block_n: 128, stages: 4, rank: padded_rank }
        }
    }

    /// Elements of one ring stage: X (128 x 64), W (64 x block_n), A (64 x rank).
    pub fn stage_elements(&self) -> u32 {
        (HOPPER_GEMM_BLOCK_M + self.block_n + self.rank) * HOPPER_GEMM_BLOCK_K
    }

    /// Dynamic shared memory: the ring, B (`rank x block_n`), 2 * stages + 2 mbarriers, and 1 KB of
    /// alignment slack (swizzled tiles want 1024-byte alignment).
    pub fn shared_memory_bytes(&self, dtype: DType) -> u32 {
        let elem = dtype.size_bytes() as u32;
        (self.stages * self.stage_elements() + self.rank * self.block_n) * elem + 8 * (2 * self.stages + 2) + 1024
    }
}

impl std::fmt::Display for HopperLoraTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m{HOPPER_GEMM_BLOCK_M}n{}k{HOPPER_GEMM_BLOCK_K}s{}", self.block_n, self.stages)
    }
}

/// Whether `spec` renders the sm_90a LoRA template on `arch`; `Err` carries the reason it does not.
pub fn lora_hopper_route(spec: &LoraSpec, arch: Arch) -> Result<HopperLoraTile, String> {
    if !arch.has_wgmma() {
        return Err(format!("{arch} has no wgmma (sm_90a only)"));
    }
    if spec.is_bottleneck() {
        return Err("the bottleneck variant runs on the mma.sync kernel".to_string());
    }
    if spec.adapters == AdapterMode::PerRow {
        return Err("per-row (multi-adapter) LoRA runs on the mma.sync kernel".to_string());
    }
    if !spec.aligned {
        return Err("the element-wise (unaligned) variant runs on the mma.sync kernel".to_string());
    }
    if let Some(user) = spec.epilogue.user {
        return Err(format!("the user epilogue `{}` runs on the mma.sync kernel", user.name));
    }
    if spec.tile.is_some() {
        return Err("an mma.sync tile was given (or tuned) for this spec".to_string());
    }
    Ok(HopperLoraTile::for_rank(spec.padded_rank()))
}

/// The `Ops` struct the template calls: `mma` (acc += X W, as the GEMM), `shrink` (T += X A on the
/// same X descriptor; A `[K, r]` is an MN-major B) and `expand` (acc += T' B, T' from registers,
/// B `[r, N]` MN-major).
fn wgmma_ops(spec: &LoraSpec, tile: HopperLoraTile) -> String {
    let mma_comment = xw_comment(spec.layout_x, spec.layout_w, tile.block_n);
    let shrink_comment = format!("T (64 x {}) += X A for one 16-deep k-step: A MN-major.", tile.rank);
    let expand_comment =
        format!("D (64 x {}) += T' B for one 16-deep k-step of the rank: T' from registers, B MN-major.", tile.block_n);
    wgmma_ops_struct(&[
        xw_method(&mma_comment, spec.layout_x, spec.layout_w, tile.block_n, spec.dtype),
        WgmmaMethod {
            comment: &shrink_comment,
            name: "shrink",
            n: tile.rank,
            dtype: spec.dtype,
            a: WgmmaA::Shared { desc: "desc_x", trans: spec.layout_x == Layout::ColMajor },
            b_desc: "desc_a",
            trans_b: true,
            accumulate_param: false,
        },
        WgmmaMethod {
            comment: &expand_comment,
            name: "expand",
            n: tile.block_n,
            dtype: spec.dtype,
            a: WgmmaA::Registers,
            b_desc: "desc_b",
            trans_b: true,
            accumulate_param: false,
        },
    ])
}

/// The `extern "C"` entry point of the sm_90a LoRA kernel for `spec`.
pub(crate) fn lora_hopper_entry_point(spec: &LoraSpec, tile: HopperLoraTile, name: &str) -> String {
    let e = spec.epilogue;
    let call = format!(
        "tessera::lora_hopper<{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, TesseraWgmmaOps>",
        spec.dtype.cuda_type(),
        spec.out.cuda_type(),
        spec.layout_x == Layout::ColMajor,
        spec.layout_w == Layout::ColMajor,
        tile.block_n,
        tile.stages,
        tile.rank,
        e.bias,
        e.activation.code(),
        e.residual,
    );
    crate::wgmma_asm::hopper_entry_point(&wgmma_ops(spec, tile), HOPPER_LORA_THREADS, name, "HopperLoraParams", &call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, GemmTile, OutType, LORA_RANKS};

    #[test]
    fn routing_names_its_reason() {
        let spec = LoraSpec::new(DType::BF16, OutType::BF16, 16);
        assert_eq!(lora_hopper_route(&spec, Arch::SM90A), Ok(HopperLoraTile { block_n: 256, stages: 3, rank: 16 }));
        assert!(lora_hopper_route(&spec, Arch::SM90).unwrap_err().contains("wgmma"));
        let per_row = LoraSpec { adapters: AdapterMode::PerRow, ..spec };
        assert!(lora_hopper_route(&per_row, Arch::SM90A).unwrap_err().contains("per-row"));
        let bottleneck = LoraSpec::bottleneck(DType::F16, OutType::F16, 16, Activation::Relu);
        assert!(lora_hopper_route(&bottleneck, Arch::SM90A).unwrap_err().contains("bottleneck"));
        let unaligned = LoraSpec { aligned: false, ..spec };
        assert!(lora_hopper_route(&unaligned, Arch::SM90A).unwrap_err().contains("unaligned"));
        let tiled = spec.with_tile(GemmTile::new(64, 64, 32, 4, 2));
        assert!(lora_hopper_route(&tiled, Arch::SM90A).unwrap_err().contains("mma.sync tile"));
        // Rank 8 computes as 16.
        assert_eq!(lora_hopper_route(&LoraSpec { rank: 8, ..spec }, Arch::SM90A).unwrap().rank, 16);
    }

    #[test]
    fn tiles_fit_shared_memory() {
        for rank in LORA_RANKS {
            let spec = LoraSpec::new(DType::F16, OutType::F32, rank);
            let t = lora_hopper_route(&spec, Arch::SM90A).unwrap();
            let bytes = t.shared_memory_bytes(DType::F16);
            assert!(bytes <= Arch::SM90A.max_shared_memory_per_block(), "r{rank}: {bytes}");
        }
        // Rank 64: 3 x (128 + 256 + 64) x 64 x 2 + 64 x 256 x 2 + 8 barriers + 1 KB.
        assert_eq!(HopperLoraTile::for_rank(64).shared_memory_bytes(DType::BF16), 3 * 448 * 128 + 32768 + 64 + 1024);
    }

    #[test]
    fn renders_the_three_products() {
        let spec = LoraSpec { layout_x: Layout::ColMajor, ..LoraSpec::new(DType::BF16, OutType::F32, 32) };
        let src = spec.render(Arch::SM90A).unwrap();
        assert_eq!(src.name, "tessera_lora_bf16_f32_cr_r32_single_none_sm90a_m128n256k64s3");
        assert!(src.cuda_src.contains("// ---- templates/lora_hopper.cuh ----"));
        assert!(src.cuda_src.contains(
            "lora_hopper<tessera::bf16, float, true, false, 256, 3, 32, false, 0, false, TesseraWgmmaOps>(params);"
        ));
        // X W and X A both read X MN-major (column-major X); A and B are MN-major.
        assert!(src.cuda_src.contains("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0,"));
        assert!(src.cuda_src.contains("m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 1, 1;"));
        assert!(src.cuda_src.contains("%127}, {%128, %129, %130, %131}, %132, p, 1, 1, 1;"));
        assert_eq!(src.geometry.threads_per_block, HOPPER_LORA_THREADS);
        assert_eq!(src.geometry.dynamic_shared_bytes, HopperLoraTile::for_rank(32).shared_memory_bytes(DType::BF16));
        assert_eq!(spec.cta_shape(Arch::SM90A), (384, 128, 256));
        // sm_90 and the per-row spec render the mma.sync template.
        let per_row = LoraSpec { adapters: AdapterMode::PerRow, ..spec };
        for s in [spec.render(Arch::SM90).unwrap(), per_row.render(Arch::SM90A).unwrap()] {
            assert!(!s.cuda_src.contains("lora_hopper<") && s.cuda_src.contains("tessera::lora<"), "{}", s.name);
        }
    }
}
