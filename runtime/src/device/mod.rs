//! Where kernels run: the [`Backend`](backend::Backend) trait and its types, the CUDA backend
//! (the driver API), the CPU simulator backend, opening one by kind, the libcuda probe, and the
//! deadline on every wait for device work.
//!
//! Backends load what `compile` produces and know nothing of the kernel families.

pub mod backend;
pub mod cuda;
pub mod driver;
pub mod open;
pub mod sim;
pub mod watchdog;
