//! The mixed-precision training kernels: casts between f32, f16, bf16 and fp8 ([`cast`]), gradient
//! unscale with a non-finite check ([`unscale`]), fused AdamW ([`adamw`]) and the device-side
//! loss-scale and fp8 delayed-scaling updates ([`scale`]). Tensor lists go to the kernels as a
//! device table ([`crate::common::tensor_list`]).
//!
//! Besides one file per kernel: `host.rs` ([`HostTensor`], which the unscale and AdamW host wrappers
//! share), `reference.rs` and `fp8.rs` (the bit-exact references, re-exported by
//! [`crate::reference`]) and `tune.rs` (the tuning targets). None of them imports this front.

pub mod adamw;
pub mod cast;
pub(crate) mod fp8;
mod host;
pub(crate) mod reference;
pub mod scale;
mod tune;
pub mod unscale;

pub use host::HostTensor;
pub use tune::{adamw_target, cast_target, unscale_target, ElementsTuneShape};
