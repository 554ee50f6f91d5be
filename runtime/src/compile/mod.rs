//! From a rendered [`KernelSource`](tessera_codegen::KernelSource) to a loadable image: finding
//! NVRTC and ptxas ([`locate`]), loading NVRTC ([`nvrtc`]), the JIT [`compiler`] and its on-disk
//! [`cache`], what a compile targets ([`target`]), and the reports on compiled kernels ([`ptxas`],
//! [`sass`], [`check`]).
//!
//! Nothing here knows a kernel family: specs arrive rendered.

pub mod cache;
pub mod check;
pub mod compiler;
pub mod locate;
pub mod nvrtc;
pub mod ptxas;
pub mod sass;
pub mod target;
