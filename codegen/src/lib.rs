//! Typed kernel specs for Tessera.
//!
//! A *family* (attention, GEMM, LoRA) is a spec type with `validate()`, a pruned tuning `space()` and a
//! deterministic `render()` that instantiates a CUDA C++ template from `templates/`. The rendered
//! [`KernelSource`] carries a content hash that the runtime uses as its cache key.

mod arch;
mod attention;
mod dtype;
mod error;
mod gemm;
mod kernel_spec;
mod lora;
mod source;
mod template;
mod tile;

pub use arch::Arch;
pub use attention::{AttentionSpec, ATTENTION_HEAD_DIMS};
pub use dtype::DType;
pub use error::SpecError;
pub use gemm::{Activation, Epilogue, GemmSpec, GemmTile, Layout, OutType};
pub use kernel_spec::KernelSpec;
pub use lora::{AdapterMode, LoraSpec, LoraVariant, LORA_RANKS};
pub use source::{KernelSource, LaunchGeometry};
pub use template::{Template, PRELUDE};
pub use tile::TileConfig;

/// Threads per warp on every NVIDIA architecture Tessera targets.
pub const WARP_SIZE: u32 = 32;
