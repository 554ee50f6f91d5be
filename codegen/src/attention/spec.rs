//! The attention spec: what a caller asks for (dtype, head dimension, masking, heads, variant
//! features, optional tiles), its constructors, and the checks that do not depend on the kernel
//! (head dimension, head counts, feature combinations). Which kernel renders it, and the rules of
//! each kernel's tiles, are in `sm80.rs` and `sm90a.rs`; `mod.rs` puts them together.

use serde::{Deserialize, Serialize};

use super::features::AttentionFeatures;
use super::tiles::{HopperTile, TileConfig};
use crate::common::list;
use crate::common::{ElemType, SpecError};

/// Head dimensions the template supports: multiples of 16 (the mma k-step) whose rows are whole
/// 16-byte cp.async chunks and whose register budget fits one thread.
pub const ATTENTION_HEAD_DIMS: [u32; 6] = [32, 64, 96, 128, 192, 256];

/// A tiled online-softmax attention forward kernel.
///
/// Tensors are `[batch, seq, heads, head_dim]` with explicit strides (the last dimension contiguous);
/// query head `h` reads key/value head `h / (heads_q / heads_kv)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttentionSpec {
    pub dtype: ElemType,
    pub head_dim: u32,
    pub causal: bool,
    pub heads_q: u32,
    pub heads_kv: u32,
    /// `None` picks [`AttentionSpec::default_tile`] for the target.
    pub tile: Option<TileConfig>,
    /// Masks, score modifiers and layouts beyond plain (causal) attention; absent in older JSON.
    #[serde(default)]
    pub features: AttentionFeatures,
    /// The sm_90a kernel's tile when the spec takes that kernel ([`super::hopper_route`]); `None` picks
    /// [`HopperTile::for_head_dim`]. Absent from JSON when `None`, so older JSON and the tuning
    /// keys of specs without it are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hopper_tile: Option<HopperTile>,
}

impl AttentionSpec {
    /// Multi-head attention with the default tile configuration.
    pub fn new(dtype: ElemType, head_dim: u32, causal: bool, heads_q: u32, heads_kv: u32) -> Self {
        AttentionSpec {
            dtype,
            head_dim,
            causal,
            heads_q,
            heads_kv,
            tile: None,
            features: AttentionFeatures::default(),
            hopper_tile: None,
        }
    }

    pub fn with_tile(mut self, tile: TileConfig) -> Self {
        self.tile = Some(tile);
        self
    }

    /// This spec with an explicit sm_90a tile (used where the spec takes the sm_90a kernel).
    pub fn with_hopper_tile(mut self, tile: HopperTile) -> Self {
        self.hopper_tile = Some(tile);
        self
    }

    pub fn with_features(mut self, features: AttentionFeatures) -> Self {
        self.features = features;
        self
    }

    /// Rows of the query tile a CTA covers per query position: GROUP with GQA packing (each query
    /// position contributes one row per head of the group), else 1.
    pub fn rows_per_query(&self) -> u32 {
        if self.features.pack_gqa {
            self.group()
        } else {
            1
        }
    }

    /// Query heads that share one key/value head (1 = MHA, heads_q = MQA).
    pub fn group(&self) -> u32 {
        self.heads_q / self.heads_kv.max(1)
    }

    /// The checks every kernel shares: the head dimension, the head counts, the features.
    pub(super) fn validate_shape(&self) -> Result<(), SpecError> {
        self.dtype.check_in("dtype", &ElemType::MMA_INPUTS)?;
        if !ATTENTION_HEAD_DIMS.contains(&self.head_dim) {
            return Err(SpecError::unsupported("head_dim", self.head_dim, list(&ATTENTION_HEAD_DIMS)));
        }
        if self.heads_q == 0 || self.heads_kv == 0 || self.heads_q % self.heads_kv != 0 {
            return Err(SpecError::HeadsNotDivisible { heads_q: self.heads_q, heads_kv: self.heads_kv });
        }
        if self.features.tree && !self.causal {
            return Err(SpecError::unsupported(
                "features.tree",
                "with causal = false",
                "tree only with causal = true (the tree mask refines the causal mask of the candidate block)",
            ));
        }
        Ok(())
    }
}
