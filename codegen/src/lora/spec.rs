//! Fused LoRA and bottleneck adapters on the GEMM main loop .
//!
//! ```text
//! LoRA:        Y = act(X @ W + s (X @ A_i) @ B_i + bias) + residual
//! bottleneck:  Y = X + s f(X @ A) @ B          (N == K)
//! ```
//!
//! One launch; the rank-r intermediate `T' = round(s (X @ A))` (bottleneck: `round(s f(X @ A))`)
//! lives in registers and shared memory only, rounded to the input dtype before the second
//! product, as an unfused `(x @ A) @ B` in that dtype rounds it.
//!
//! Adapter layouts ([`AdapterMode`]):
//! - `Single`: A `[K, r]`, B `[r, N]`, every row of X uses them.
//! - `PerRow`: A `[n_adapters, K, r]`, B `[n_adapters, r, N]`, and an int32 id per row of X
//!   (`-1`: no adapter). One kernel serves both batch shapes: prefill batches with rows grouped
//!   into segments per adapter (SGMV) cost about one adapter per row tile; decode batches with a
//!   different adapter on every row (BGMV) cost one extra pass over K (X and A_i only) per further
//!   distinct adapter in a row tile.
//!
//! A and B are row-major and contiguous; X and W take either layout, as in [`GemmSpec`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::common::list;
use crate::common::{ElemType, SpecError};
use crate::gemm::{Activation, Epilogue, GemmTile, Layout};

/// Supported adapter ranks.
pub const LORA_RANKS: [u32; 5] = [8, 16, 32, 64, 128];
/// Which adapter computation the kernel fuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoraVariant {
    /// `Y = act(X W + s (X A) B + bias) + residual`.
    Lora,
    /// `Y = X + s f(X A) B` with `f = activation`; no W, N must equal K.
    Bottleneck { activation: Activation },
}

/// Which adapter each row of X uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterMode {
    /// One adapter (A `[K, r]`, B `[r, N]`) for every row.
    Single,
    /// Stacked adapters and an int32 adapter id per row (`-1`: none).
    PerRow,
}

impl AdapterMode {
    pub fn name(self) -> &'static str {
        match self {
            AdapterMode::Single => "single",
            AdapterMode::PerRow => "per_row",
        }
    }
}

impl fmt::Display for AdapterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fused low-rank adapter kernel (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoraSpec {
    /// X, W, A, B element type.
    pub dtype: ElemType,
    /// Y (and bias, residual) element type.
    pub out: ElemType,
    pub layout_x: Layout,
    pub layout_w: Layout,
    /// Adapter rank r, one of [`LORA_RANKS`].
    pub rank: u32,
    pub variant: LoraVariant,
    pub adapters: AdapterMode,
    /// Bias / activation / residual after the sum (LoRA only; the bottleneck takes none).
    pub epilogue: Epilogue,
    /// Whole 16-byte chunks per operand row, as [`GemmSpec::aligned`].
    pub aligned: bool,
    /// `None` picks [`LoraSpec::default_tile`].
    pub tile: Option<GemmTile>,
}

impl LoraSpec {
    /// Single-adapter LoRA with row-major operands, no epilogue, default tile.
    pub fn new(dtype: ElemType, out: ElemType, rank: u32) -> Self {
        LoraSpec {
            dtype,
            out,
            layout_x: Layout::RowMajor,
            layout_w: Layout::RowMajor,
            rank,
            variant: LoraVariant::Lora,
            adapters: AdapterMode::Single,
            epilogue: Epilogue::NONE,
            aligned: true,
            tile: None,
        }
    }

    /// The bottleneck adapter `Y = X + f(X A) B`.
    pub fn bottleneck(dtype: ElemType, out: ElemType, rank: u32, activation: Activation) -> Self {
        LoraSpec { variant: LoraVariant::Bottleneck { activation }, ..LoraSpec::new(dtype, out, rank) }
    }

    pub fn with_tile(mut self, tile: GemmTile) -> Self {
        self.tile = Some(tile);
        self
    }

    /// The rank the kernel computes with: rank 8 is zero-padded to one 16-wide mma k-step.
    pub fn padded_rank(&self) -> u32 {
        self.rank.max(16)
    }

    pub fn is_bottleneck(&self) -> bool {
        matches!(self.variant, LoraVariant::Bottleneck { .. })
    }

    /// The checks every kernel shares: the rank, and what the variant and adapter mode allow.
    pub(super) fn validate_variant(&self) -> Result<(), SpecError> {
        self.dtype.check_in("dtype", &ElemType::MMA_INPUTS)?;
        self.out.check_in("out", &ElemType::MMA_OUTPUTS)?;
        if !LORA_RANKS.contains(&self.rank) {
            return Err(SpecError::unsupported("rank", self.rank, list(&LORA_RANKS)));
        }
        if self.is_bottleneck() {
            if self.epilogue != Epilogue::NONE {
                let e = self.epilogue;
                let mut parts = Vec::new();
                if e.bias {
                    parts.push("bias".to_string());
                }
                if e.activation != Activation::None {
                    parts.push(format!("activation {}", e.activation));
                }
                if let Some(u) = e.user {
                    parts.push(format!("epilogue {}", u.name));
                }
                if e.residual {
                    parts.push("residual".to_string());
                }
                return Err(SpecError::unsupported(
                    "epilogue",
                    parts.join(" + "),
                    "none for the bottleneck variant (its activation is the variant's, its residual is X)",
                ));
            }
            if self.adapters != AdapterMode::Single {
                return Err(SpecError::unsupported("adapters", self.adapters, "single for the bottleneck variant"));
            }
        }
        if let Some(user) = &self.epilogue.user {
            user.validate_as_epilogue()?;
        }
        Ok(())
    }
}
