use std::fmt;

use serde::{Deserialize, Serialize};

use crate::WARP_SIZE;

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
