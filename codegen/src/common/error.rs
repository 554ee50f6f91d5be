use thiserror::Error;

/// Why a spec cannot be generated. Every variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("unsupported {field} `{value}`: allowed values are {allowed}")]
    Unsupported { field: &'static str, value: String, allowed: String },

    #[error("heads_q ({heads_q}) must be a positive multiple of heads_kv ({heads_kv}) (MHA: equal, GQA: a multiple, MQA: heads_kv = 1)")]
    HeadsNotDivisible { heads_q: u32, heads_kv: u32 },

    #[error("tile.block_m ({block_m}) must equal 16 x tile.warps ({warps}): each warp owns 16 query rows")]
    BlockMismatch { block_m: u32, warps: u32 },

    #[error("tile {tile} needs {needed} bytes of shared memory; {arch} allows at most {limit} per block (lower tile.block_n or tile.stages)")]
    SharedMemory { tile: String, needed: u32, limit: u32, arch: String },

    #[error("tile {tile} needs about {estimated} registers per thread for head_dim {head_dim}; the limit is {limit} (lower tile.block_n)")]
    Registers { tile: String, head_dim: u32, estimated: u32, limit: u32 },
}

impl SpecError {
    pub fn unsupported(field: &'static str, value: impl ToString, allowed: impl Into<String>) -> Self {
        SpecError::Unsupported { field, value: value.to_string(), allowed: allowed.into() }
    }
}
