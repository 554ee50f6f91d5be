//! Typed kernel specs for Tessera.
//!
//! A *family* (attention, GEMM, LoRA, the mixed-precision training kernels) is a spec type with `validate()`, a pruned tuning `space()` and a
//! deterministic `render()` that instantiates a CUDA C++ template from `templates/`. The rendered
//! [`KernelSource`] carries a content hash that the runtime uses as its cache key.

// The derives of `params` name this crate `::tessera_codegen`, here as everywhere else.
extern crate self as tessera_codegen;

mod amp;
mod attention;
mod common;
mod elementwise;
mod gemm;
mod kernel_spec;
mod lora;
mod tile_choice;
mod window;

pub use amp::{AdamWEntry, AdamWParams, AdamWSpec, CastParams, CastSpec, Fp8ScaleParams, LossScaleParams, ScaleUpdateSpec, UnscaleEntry, UnscaleParams, UnscaleSpec};
pub use common::{Arch, ElemType, ElementwiseTile, KernelSource, LaunchGeometry, SpecError, UserFunction, MAX_USER_INPUTS, WARP_SIZE};
pub use attention::{hopper_route, AttentionFeature, AttentionFeatures, AttentionParams, AttentionSpec, HopperAttentionParams, HopperTile, TileConfig, ATTENTION_HEAD_DIMS, HOPPER_BLOCK_M, HOPPER_FEATURES, HOPPER_HEAD_DIMS, HOPPER_THREADS};
pub use gemm::{gemm_hopper_route, Activation, Epilogue, GemmParams, GemmSpec, GemmTile, HopperGemmParams, HopperGemmTile, Layout, HOPPER_GEMM_BLOCK_K, HOPPER_GEMM_BLOCK_M, HOPPER_GEMM_THREADS, SPLIT_KS};
pub use kernel_spec::KernelSpec;
pub use common::params;
pub use params::{DeviceEnum, DevicePtr, DevicePtrMut, DeviceType, KernelParams};
pub use elementwise::{MapParams, MapSpec};
pub use lora::{lora_hopper_route, AdapterMode, HopperLoraParams, HopperLoraTile, LoraKind, LoraParams, LoraSpec, LoraVariant, HOPPER_LORA_THREADS, LORA_RANKS};
pub use common::{Template, CONTRACT_MARKER, PRELUDE};
pub use tile_choice::TileChoice;
pub use window::{WindowOp, WindowParams, WindowSpec, WINDOW_MAX_TILE};
