//! The sm_90a LoRA tile ([`HopperLoraTile`]): fixed per rank, on the sm_90a GEMM's k-slices. The
//! mma.sync kernels take the GEMM's tile ([`crate::GemmTile`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::common::ElemType;
use crate::gemm::{HOPPER_GEMM_BLOCK_K, HOPPER_GEMM_BLOCK_M};

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
    pub fn shared_memory_bytes(&self, dtype: ElemType) -> u32 {
        let elem = dtype.size_bytes() as u32;
        (self.stages * self.stage_elements() + self.rank * self.block_n) * elem + 8 * (2 * self.stages + 2) + 1024
    }
}

impl fmt::Display for HopperLoraTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{HOPPER_GEMM_BLOCK_M}n{}k{HOPPER_GEMM_BLOCK_K}s{}", self.block_n, self.stages)
    }
}
