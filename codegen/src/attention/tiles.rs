//! The two tile types of attention, the vocabulary of its tuning space: [`TileConfig`] for the
//! mma.sync kernel and [`HopperTile`] for the sm_90a (TMA + wgmma) kernel, with the limits each
//! must respect. They depend on the spec only through its dtype and head dimension, so the spec,
//! both kernels and the tuner can all use them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::common::list;
use crate::common::{Arch, ElemType, SpecError, WARP_SIZE};

/// How one CTA of a tiled kernel divides its work.
///
/// For attention: `block_m` query rows per CTA (each warp owns 16 of them, so
/// `block_m == 16 * warps`), `block_n` keys per K/V tile, and `stages` K/V tiles in flight in the
/// shared-memory ring (1 = load then compute, 2 = double buffering, 3 = two tiles ahead).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TileConfig {
    pub block_m: u32,
    pub block_n: u32,
    pub warps: u32,
    pub stages: u32,
}

impl TileConfig {
    pub const fn new(block_m: u32, block_n: u32, warps: u32, stages: u32) -> Self {
        TileConfig { block_m, block_n, warps, stages }
    }

    pub fn threads(&self) -> u32 {
        self.warps * WARP_SIZE
    }
}

impl fmt::Display for TileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}n{}w{}s{}", self.block_m, self.block_n, self.warps, self.stages)
    }
}

/// Threads of one CTA: a producer warpgroup and two consumer warpgroups.
pub const HOPPER_THREADS: u32 = 384;
/// Query rows per CTA: 64 per consumer warpgroup.
pub const HOPPER_BLOCK_M: u32 = 128;
/// Head dimensions the sm_90a template has tiles for.
pub const HOPPER_HEAD_DIMS: [u32; 3] = [64, 128, 256];
/// Key-tile widths accepted: multiples of 32 (the template takes any multiple of 16, one k-step
/// of O += P V) up to 192; 224 and 256 leave no room beside S and P at any head dimension (below).
const HOPPER_BLOCK_NS: [u32; 6] = [32, 64, 96, 128, 160, 192];
/// Ring depths the template accepts (its `static_assert`).
const HOPPER_STAGES: [u32; 3] = [2, 3, 4];
/// Registers per consumer thread after `setmaxnreg.inc` in the template.
pub(super) const CONSUMER_REGISTERS: u32 = 232;
/// Registers a consumer thread needs besides S, P and O: descriptors, addresses, loop and ring
/// counters, softmax state, masks. Calibrated with `ptxas -v` (causal GQA, the most registers):
/// O + S + P of 200 registers (d64 n224) still assembled without spills, 208 (d128 n192) and 224
/// (d64 n256) spilled; 40 admits at most 192 (d64 n192: 176, d128 n160: 184, d256 n64: 176), and
/// `runtime/tests/compile_hopper_specs.rs` holds every tile the estimate admits to 0 spill bytes.
const REGISTER_OVERHEAD: u32 = 40;

/// The sm_90a tile: key-tile width and ring depth. The defaults ([`HopperTile::for_head_dim`]) fit
/// 227 KB of shared memory and keep S + O + P within the consumers' 232 registers; the tuner
/// searches the others ([`HopperTile::space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    pub fn shared_memory_bytes(&self, dtype: ElemType, head_dim: u32) -> u32 {
        let elem = dtype.size_bytes() as u32;
        let q = HOPPER_BLOCK_M * head_dim * elem;
        let ring = self.stages * 2 * self.block_n * head_dim * elem;
        q + ring + 8 * (2 + 2 * self.stages) + 1024
    }

    /// Registers one consumer thread needs: O (`64 x head_dim` f32 over a warpgroup: head_dim / 2),
    /// S (block_n / 2), P packed to 16 bits (block_n / 4), and the overhead.
    pub fn register_estimate(&self, head_dim: u32) -> u32 {
        head_dim / 2 + self.block_n / 2 + self.block_n / 4 + REGISTER_OVERHEAD
    }

    /// Checks the tile against the template (`hopper_tile.block_n`, `hopper_tile.stages`), the
    /// consumers' registers and `arch`'s shared memory, for `dtype` and `head_dim`.
    pub fn validate(&self, dtype: ElemType, head_dim: u32, arch: Arch) -> Result<(), SpecError> {
        if !HOPPER_HEAD_DIMS.contains(&head_dim) {
            return Err(SpecError::unsupported("head_dim", head_dim, format!("{} with an sm_90a tile", list(&HOPPER_HEAD_DIMS))));
        }
        if !HOPPER_BLOCK_NS.contains(&self.block_n) {
            return Err(SpecError::unsupported("hopper_tile.block_n", self.block_n, list(&HOPPER_BLOCK_NS)));
        }
        if !HOPPER_STAGES.contains(&self.stages) {
            return Err(SpecError::unsupported("hopper_tile.stages", self.stages, list(&HOPPER_STAGES)));
        }
        let estimated = self.register_estimate(head_dim);
        if estimated > CONSUMER_REGISTERS {
            return Err(SpecError::Registers { tile: format!("sm90a_{self}"), head_dim, estimated, limit: CONSUMER_REGISTERS });
        }
        let needed = self.shared_memory_bytes(dtype, head_dim);
        let limit = arch.max_shared_memory_per_block();
        if needed > limit {
            return Err(SpecError::SharedMemory { tile: format!("sm90a_{self}"), needed, limit, arch: arch.to_string() });
        }
        Ok(())
    }

    /// Every tile that validates for `dtype` and `head_dim` on `arch`: the tuner's sm_90a space.
    pub fn space(dtype: ElemType, head_dim: u32, arch: Arch) -> impl Iterator<Item = HopperTile> {
        HOPPER_BLOCK_NS.into_iter().flat_map(move |block_n| {
            HOPPER_STAGES
                .into_iter()
                .map(move |stages| HopperTile { block_n, stages })
                .filter(move |t| t.validate(dtype, head_dim, arch).is_ok())
        })
    }
}

/// `m128n{block_n}s{stages}`: the part of the kernel name (after `sm90a_`) that tells tiles apart.
impl fmt::Display for HopperTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{HOPPER_BLOCK_M}n{}s{}", self.block_n, self.stages)
    }
}
