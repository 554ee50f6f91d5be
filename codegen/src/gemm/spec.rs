//! Mixed-precision GEMM with a fused epilogue on `mma.sync.m16n8k16`.
//!
//! ```text
//! Y[M,N] = act(alpha * (X @ W)[M,N] + beta * C[M,N] + bias[N]) + residual[M,N]
//! ```
//!
//! Epilogue order, per element in f32 (the template the template and the reference
//! `tessera_runtime::reference::gemm` follow it exactly):
//! 1. `acc = sum_k X[m,k] * W[k,n]` (f32 accumulation of `dtype` products);
//! 2. `v = alpha * acc`; 3. `v += beta * C[m,n]` when a C tensor is given (a launch argument, not a
//!    spec field); 4. `v += bias[n]` when [`Epilogue::bias`]; 5. `v = act(v)`;
//! 6. `v += residual[m,n]` when [`Epilogue::residual`]; 7. round `v` to [`ElemType`].
//!
//! C, bias, residual and Y are stored in the output type. X is row-major `[M, K]` or column-major,
//! i.e. stored `[K, M]` with M contiguous (a transposed activation); W is row-major `[K, N]` or
//! column-major, i.e. stored `[N, K]` with K contiguous (the layout of an `nn.Linear` weight).
//!
//! [`GemmSpec::aligned`] kernels move operands in 16-byte `cp.async` chunks, which needs whole
//! chunks per row (K, N for row-major W, M for column-major X and every row stride multiples of 8,
//! 16-byte aligned bases); the others load element by element and take any shape. The runtime
//! picks the aligned kernel whenever the problem allows it.
//!
//! On sm_90a an aligned spec without a user epilogue and without an explicit tile renders
//! `templates/gemm/sm90a.cuh` instead (TMA loads into an mbarrier ring, `wgmma` from shared
//! memory, producer and consumer warpgroups; see [`crate::gemm_hopper_route`]), with the same
//! epilogue in the same order.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::tiles::{GemmTile, HopperGemmTile};
use crate::common::params::DeviceEnum;
use crate::common::{ElemType, UserFunction};

/// Memory layout of a matrix operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Rows contiguous: `[rows, cols]`.
    RowMajor,
    /// Columns contiguous: stored as `[cols, rows]`.
    ColMajor,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::RowMajor, Layout::ColMajor];

    pub fn name(self) -> &'static str {
        match self {
            Layout::RowMajor => "row_major",
            Layout::ColMajor => "col_major",
        }
    }

    pub(crate) fn letter(self) -> char {
        match self {
            Layout::RowMajor => 'r',
            Layout::ColMajor => 'c',
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Elementwise activation applied after bias, before the residual. Shared with the templates as
/// the `ACT_*` codes of `GemmActivation` (generated from this enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, DeviceEnum)]
#[serde(rename_all = "snake_case")]
#[repr(i32)]
#[device_enum(prefix = "ACT_", cuda = "GemmActivation")]
pub enum Activation {
    None = 0,
    Relu = 1,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh = 2,
    /// `x * sigmoid(x)`.
    Silu = 3,
}

impl Activation {
    pub const ALL: [Activation; 4] = [Activation::None, Activation::Relu, Activation::GeluTanh, Activation::Silu];

    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Relu => "relu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
        }
    }

    /// The template's `ACT` parameter: the enum's `ACT_*` code.
    pub(crate) fn code(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to the accumulator before the store (see the module docs for the order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epilogue {
    pub bias: bool,
    pub activation: Activation,
    pub residual: bool,
    /// A user function (`#[tessera::elementwise]`, one input) applied after the activation and
    /// before the residual. Compiled into the program, so not serialised.
    #[serde(skip)]
    pub user: Option<UserFunction>,
}

impl Epilogue {
    /// `alpha * acc (+ beta * C)` only.
    pub const NONE: Epilogue = Epilogue { bias: false, activation: Activation::None, residual: false, user: None };
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue::NONE
    }
}

/// A tensor-core GEMM `Y = act(alpha X W + beta C + bias) + residual` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GemmSpec {
    /// X and W element type.
    pub dtype: ElemType,
    /// Y (and C, bias, residual) element type.
    pub out: ElemType,
    pub layout_x: Layout,
    pub layout_w: Layout,
    pub epilogue: Epilogue,
    /// Whole 16-byte chunks per operand row (see the module docs); `false` accepts any shape.
    pub aligned: bool,
    /// `None` picks [`GemmSpec::default_tile`].
    pub tile: Option<GemmTile>,
    /// The sm_90a kernel's tile when the spec takes that kernel ([`super::gemm_hopper_route`]); `None`
    /// picks [`HopperGemmTile::DEFAULT`]. Absent from JSON when `None`, so older JSON and the
    /// tuning keys of specs without it are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hopper_tile: Option<HopperGemmTile>,
}

impl GemmSpec {
    /// Row-major X and W, no epilogue beyond alpha/beta, default tile.
    pub fn new(dtype: ElemType, out: ElemType) -> Self {
        GemmSpec {
            dtype,
            out,
            layout_x: Layout::RowMajor,
            layout_w: Layout::RowMajor,
            epilogue: Epilogue::NONE,
            aligned: true,
            tile: None,
            hopper_tile: None,
        }
    }

    pub fn with_tile(mut self, tile: GemmTile) -> Self {
        self.tile = Some(tile);
        self
    }

    /// This spec with an explicit sm_90a tile (used where the spec takes the sm_90a kernel).
    pub fn with_hopper_tile(mut self, tile: HopperGemmTile) -> Self {
        self.hopper_tile = Some(tile);
        self
    }
}
