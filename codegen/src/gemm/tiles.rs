//! The GEMM's tile types, the vocabulary of its tuning space: [`GemmTile`] for the mma.sync kernel
//! (also the LoRA kernels' main-loop tile) and [`HopperGemmTile`] for the sm_90a (TMA + wgmma)
//! kernel, each with the values its template accepts and the checks that do not depend on a spec.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::common::list;
use crate::common::{Arch, ElemType, SpecError, WARP_SIZE};

const BLOCK_MS: [u32; 3] = [32, 64, 128];
const BLOCK_NS: [u32; 4] = [32, 64, 128, 256];
const BLOCK_KS: [u32; 2] = [32, 64];
const WARPS: [u32; 2] = [4, 8];
const STAGES: [u32; 3] = [1, 2, 3];
/// K slices one output tile is split into (1: no split-K).
pub const SPLIT_KS: [u32; 4] = [1, 2, 4, 8];
/// Warps form a 2 x (warps / 2) grid over the CTA tile.
const WARPS_M: u32 = 2;
/// How one CTA of the GEMM divides its work: a `block_m x block_n` tile of Y, `block_k`-deep
/// slices of X and W through a `stages`-deep cp.async ring, `warps` warps in a 2 x (warps/2) grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GemmTile {
    pub block_m: u32,
    pub block_n: u32,
    pub block_k: u32,
    pub warps: u32,
    pub stages: u32,
    /// Split-K: the K loop of one output tile is divided among this many CTAs, whose f32 partial
    /// tiles the last CTA to finish adds in a fixed order before the epilogue (GEMM only; 1 = no
    /// split). For shapes with few output tiles and a long K.
    #[serde(default = "one")]
    pub split_k: u32,
}

fn one() -> u32 {
    1
}

impl GemmTile {
    pub const fn new(block_m: u32, block_n: u32, block_k: u32, warps: u32, stages: u32) -> Self {
        GemmTile { block_m, block_n, block_k, warps, stages, split_k: 1 }
    }

    pub const fn with_split_k(mut self, split_k: u32) -> Self {
        self.split_k = split_k;
        self
    }

    pub fn threads(&self) -> u32 {
        self.warps * WARP_SIZE
    }
}

impl fmt::Display for GemmTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}n{}k{}w{}s{}", self.block_m, self.block_n, self.block_k, self.warps, self.stages)?;
        if self.split_k > 1 {
            write!(f, "x{}", self.split_k)?;
        }
        Ok(())
    }
}

/// The tile fields every GEMM-shaped kernel shares (also used by `LoraSpec`).
pub(crate) fn validate_tile(tile: GemmTile) -> Result<(), SpecError> {
    if !WARPS.contains(&tile.warps) {
        return Err(SpecError::unsupported("tile.warps", tile.warps, list(&WARPS)));
    }
    if !BLOCK_MS.contains(&tile.block_m) {
        return Err(SpecError::unsupported("tile.block_m", tile.block_m, list(&BLOCK_MS)));
    }
    if !BLOCK_NS.contains(&tile.block_n) {
        return Err(SpecError::unsupported("tile.block_n", tile.block_n, list(&BLOCK_NS)));
    }
    let warps_n = tile.warps / WARPS_M;
    if tile.block_n % (16 * warps_n) != 0 {
        return Err(SpecError::unsupported(
            "tile.block_n",
            tile.block_n,
            format!(
                "multiples of {} with {} warps (each of the {warps_n} warp columns owns whole 16-column fragments)",
                16 * warps_n,
                tile.warps
            ),
        ));
    }
    if !BLOCK_KS.contains(&tile.block_k) {
        return Err(SpecError::unsupported("tile.block_k", tile.block_k, list(&BLOCK_KS)));
    }
    if !STAGES.contains(&tile.stages) {
        return Err(SpecError::unsupported("tile.stages", tile.stages, list(&STAGES)));
    }
    if !SPLIT_KS.contains(&tile.split_k) {
        return Err(SpecError::unsupported("tile.split_k", tile.split_k, list(&SPLIT_KS)));
    }
    Ok(())
}

/// Every combination of the mma.sync tile fields' allowed values, valid or not.
pub(crate) fn mma_sync_tiles() -> impl Iterator<Item = GemmTile> {
    WARPS.into_iter().flat_map(move |warps| {
        BLOCK_MS.into_iter().flat_map(move |block_m| {
            BLOCK_NS.into_iter().flat_map(move |block_n| {
                BLOCK_KS.into_iter().flat_map(move |block_k| {
                    STAGES.into_iter().flat_map(move |stages| {
                        SPLIT_KS.into_iter().map(move |split| GemmTile::new(block_m, block_n, block_k, warps, stages).with_split_k(split))
                    })
                })
            })
        })
    })
}

/// Threads of one CTA: a producer warpgroup and two consumer warpgroups.
pub const HOPPER_GEMM_THREADS: u32 = 384;
/// Output rows per CTA: 64 per consumer warpgroup.
pub const HOPPER_GEMM_BLOCK_M: u32 = 128;
/// Depth of one k-slice: 64 16-bit elements, one 128-byte swizzle span.
pub const HOPPER_GEMM_BLOCK_K: u32 = 64;

/// Output columns per CTA the template accepts (its `static_assert`): whole 64-column W boxes up to
/// the widest wgmma N. 256 columns are 128 f32 accumulators per consumer thread, well within the
/// 232 registers `setmaxnreg.inc` gives them.
const HOPPER_GEMM_BLOCK_NS: [u32; 4] = [64, 128, 192, 256];
/// Ring depths the template accepts (its `static_assert`).
const HOPPER_GEMM_STAGES: [u32; 7] = [2, 3, 4, 5, 6, 7, 8];
/// The tuner's share of those, to keep a search short: 64-column tiles read every X slice twice as
/// often per output as 128-column ones, 2 stages leave a single load in flight behind the slice
/// being multiplied, and 7 or 8 stages fit only the narrowest tiles. An explicit tile may take any
/// of the template's values.
const SPACE_BLOCK_NS: [u32; 3] = [128, 192, 256];
const SPACE_STAGES: [u32; 4] = [3, 4, 5, 6];

/// The sm_90a GEMM tile: `128 x block_n` outputs per CTA (each consumer warpgroup holds a
/// `64 x block_n` f32 accumulator tile, `block_n / 2` registers per thread), 64-deep k-slices of X
/// and W in a `stages`-deep ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HopperGemmTile {
    pub block_n: u32,
    pub stages: u32,
}

impl HopperGemmTile {
    /// 128 x 256 x 64 with 4 stages: 48 KiB per stage, 192 KiB of ring; 128 accumulators per
    /// consumer thread. `m64n256k16` is the widest wgmma: the most work per byte of X read.
    pub const DEFAULT: HopperGemmTile = HopperGemmTile { block_n: 256, stages: 4 };

    /// Elements of 16-bit type in one stage: the X slice (128 x 64) and the W slice (64 x block_n).
    pub fn stage_elements(&self) -> u32 {
        (HOPPER_GEMM_BLOCK_M + self.block_n) * HOPPER_GEMM_BLOCK_K
    }

    /// Dynamic shared memory: the ring, 2 * stages mbarriers, and 1 KB of alignment slack (the
    /// 128-byte swizzle wants 1024-byte aligned tiles).
    pub fn shared_memory_bytes(&self, dtype: ElemType) -> u32 {
        self.stages * self.stage_elements() * dtype.size_bytes() as u32 + 8 * 2 * self.stages + 1024
    }

    /// Checks the tile against the template (`hopper_tile.block_n`, `hopper_tile.stages`) and
    /// `arch`'s shared memory.
    pub fn validate(&self, dtype: ElemType, arch: Arch) -> Result<(), SpecError> {
        if !HOPPER_GEMM_BLOCK_NS.contains(&self.block_n) {
            return Err(SpecError::unsupported("hopper_tile.block_n", self.block_n, list(&HOPPER_GEMM_BLOCK_NS)));
        }
        if !HOPPER_GEMM_STAGES.contains(&self.stages) {
            return Err(SpecError::unsupported("hopper_tile.stages", self.stages, list(&HOPPER_GEMM_STAGES)));
        }
        let needed = self.shared_memory_bytes(dtype);
        let limit = arch.max_shared_memory_per_block();
        if needed > limit {
            return Err(SpecError::SharedMemory { tile: format!("sm90a_{self}"), needed, limit, arch: arch.to_string() });
        }
        Ok(())
    }

    /// The tuner's sm_90a tiles for `dtype` on `arch`: block_n 128, 192, 256 x 3 to 6 stages, where
    /// the ring fits shared memory.
    pub fn space(dtype: ElemType, arch: Arch) -> impl Iterator<Item = HopperGemmTile> {
        SPACE_BLOCK_NS.into_iter().flat_map(move |block_n| {
            SPACE_STAGES
                .into_iter()
                .map(move |stages| HopperGemmTile { block_n, stages })
                .filter(move |t| t.validate(dtype, arch).is_ok())
        })
    }
}

impl fmt::Display for HopperGemmTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{HOPPER_GEMM_BLOCK_M}n{}k{HOPPER_GEMM_BLOCK_K}s{}", self.block_n, self.stages)
    }
}
