//! What every family shares and none owns: target architectures, element types, the spec error,
//! the templates and their assembly, the host/device contract machinery (`params`), the rendered
//! source, the tile of memory-bound kernels, user functions (epilogues, maps), and
//! the sm_90a entry-point writer the three TMA + wgmma kernels use.

mod arch;
mod elem;
mod elementwise_tile;
mod error;
pub mod params;
mod source;
mod template;
mod user_function;
pub(crate) mod wgmma;

pub use arch::Arch;
pub use elem::ElemType;
pub use elementwise_tile::ElementwiseTile;
pub use error::SpecError;
pub use source::{KernelSource, LaunchGeometry};
pub use template::{Template, CONTRACT_MARKER, PRELUDE};
pub use user_function::{UserFunction, MAX_USER_INPUTS};

/// Threads per warp on every NVIDIA architecture Tessera targets.
pub const WARP_SIZE: u32 = 32;

/// `values` as the comma-separated list an error message shows as the allowed values.
pub(crate) fn list(values: &[u32]) -> String {
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}
