//! The mixed-precision training kernels: memory-bound, one launch per list of tensors. Casts
//! (`cast.rs`), gradient unscale with the non-finite check (`unscale.rs`), fused AdamW
//! (`adamw.rs`), and the device-side loss-scale and fp8-scale updates (`scale.rs`). They share
//! the element types and the tensor tables of `templates/amp/amp.cuh` and the elementwise tile.
//! Their parameter structs and table entries (the host/device contract) are in `params.rs`.

mod adamw;
mod cast;
mod params;
mod scale;
mod unscale;

pub use adamw::AdamWSpec;
pub use params::{AdamWEntry, AdamWParams, CastParams, Fp8ScaleParams, LossScaleParams, UnscaleEntry, UnscaleParams};
pub use cast::CastSpec;
pub use scale::ScaleUpdateSpec;
pub use unscale::UnscaleSpec;
