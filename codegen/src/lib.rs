//! Typed kernel specs for Tessera.
//!
//! A *family* (attention, GEMM, LoRA, the mixed-precision training kernels) is a spec type with `validate()`, a pruned tuning `space()` and a
//! deterministic `render()` that instantiates a CUDA C++ template from `templates/`. The rendered
//! [`KernelSource`] carries a content hash that the runtime uses as its cache key.

mod adamw;
mod amp_scale;
mod arch;
mod cast;
mod attention;
mod attention_features;
mod attention_hopper;
mod dtype;
mod elem;
mod elementwise;
mod error;
mod gemm;
mod gemm_hopper;
mod kernel_spec;
mod lora;
mod lora_hopper;
mod map;
pub mod params;
mod source;
mod template;
mod tile;
mod tile_choice;
mod unscale;
mod user_function;
mod window;
mod wgmma_asm;

pub use adamw::AdamWSpec;
pub use amp_scale::ScaleUpdateSpec;
pub use arch::Arch;
pub use cast::CastSpec;
pub use attention::{AttentionSpec, ATTENTION_HEAD_DIMS};
pub use attention_features::AttentionFeatures;
pub use attention_hopper::{hopper_route, HopperTile, HOPPER_BLOCK_M, HOPPER_FEATURES, HOPPER_HEAD_DIMS, HOPPER_THREADS};
pub use dtype::DType;
pub use elem::ElemType;
pub use elementwise::ElementwiseTile;
pub use error::SpecError;
pub use gemm::{Activation, Epilogue, GemmSpec, GemmTile, Layout, OutType, SPLIT_KS};
pub use gemm_hopper::{
    gemm_hopper_route, HopperGemmTile, HOPPER_GEMM_BLOCK_K, HOPPER_GEMM_BLOCK_M, HOPPER_GEMM_THREADS,
};
pub use kernel_spec::KernelSpec;
pub use map::MapSpec;
pub use lora::{AdapterMode, LoraSpec, LoraVariant, LORA_RANKS};
pub use lora_hopper::{lora_hopper_route, HopperLoraTile, HOPPER_LORA_THREADS};
pub use source::{KernelSource, LaunchGeometry};
pub use template::{Template, PRELUDE};
pub use tile::TileConfig;
pub use tile_choice::TileChoice;
pub use unscale::UnscaleSpec;
pub use user_function::{UserFunction, MAX_USER_INPUTS};
pub use window::{WindowOp, WindowSpec, WINDOW_MAX_TILE};

/// Threads per warp on every NVIDIA architecture Tessera targets.
pub const WARP_SIZE: u32 = 32;
