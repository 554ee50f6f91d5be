//! User-defined elementwise kernels (`#[tessera::elementwise]`): a [`UserFunction`](crate::UserFunction)
//! applied element by element over up to [`MAX_USER_INPUTS`](crate::MAX_USER_INPUTS) inputs.

mod map;
mod params;

pub use map::MapSpec;
pub use params::MapParams;
