//! The LoRA / bottleneck launcher: argument checks, the kernel's parameter struct, the column-tile
//! grouping, and a host convenience ([`run_lora`]) that uploads `f32` tensors and downloads Y.
//!
//! `Y = act(X W + s (X A_i) B_i + bias) + residual` (LoRA) or `Y = X + s f(X A) B` (bottleneck),
//! see `tessera_codegen::LoraSpec`. A `[K, r]` / `[n, K, r]` and B `[r, N]` / `[n, r, N]` are
//! contiguous and row-major; X, W, residual and Y take row strides in elements, as for GEMM.
//!
//! Adapter ids (per-row specs) are int32 on the device. [`run_lora`] checks every id against the
//! adapter count before anything is launched; on the device-buffer path ([`prepare_lora`]) the
//! ids are not visible to the host, and the kernel treats an id outside `[-1, n_adapters)` as -1
//! (no adapter) rather than read out of bounds.
//!
//! The family's files, each importing only the ones before it in this list (this front re-exports
//! them and holds no code of its own):
//! - `problem.rs`: the call's shape, strides and buffers;
//! - `check.rs`: the argument checks;
//! - `sm80.rs`: the mma.sync kernel's parameter struct, column-tile grouping and grid;
//! - `sm90a.rs`: the sm_90a kernel's tensor maps and parameter struct;
//! - `launch.rs`: [`prepare_lora`] and [`run_lora`];
//! - `reference.rs`: the f64 reference (re-exported by [`crate::reference`]);
//! - `tune.rs`: the tuning target ([`lora_target`]).
//!
//! LoRA builds on GEMM: stored layouts, the matrix checks, the sm_90a map boxes and the GEMM
//! reference come from [`crate::gemm`].

mod check;
mod family;
mod launch;
mod problem;
pub(crate) mod reference;
mod sm80;
mod sm90a;
mod tune;

pub use check::{check, check_problem};
pub use family::{LoraArgs, LoraFamily};
pub use launch::{prepare_lora, run_lora, LoraInputs, LoraLaunch, LoraOutput};
pub use problem::{fits_aligned, unaligned_reason, LoraBuffers, LoraProblem, LoraStrides, LoraTuneShape};
pub use sm80::{default_n_group, launch_config};
pub use tessera_codegen::{HopperLoraParams, LoraParams};
pub use sm90a::LoraLaunchParams;
pub use tune::lora_target;
