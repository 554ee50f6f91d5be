//! Run-time tuning: which tile a kernel should use on this GPU for this shape.
//!
//! - [`space`]: the candidates, pruned before compiling by the target's limits (the spec's own
//!   validation: shared memory, accumulators, threads) and by the family's [`TileFilter`] for the
//!   shape (no 128-row tiles for 16 rows).
//! - [`tuner`]: compiles candidates in parallel, times each on the GPU (rotating inputs so L2 does
//!   not flatter), verifies every candidate's output against the default tile's, picks the fastest.
//! - [`key`]: [`TuningKey`] and the typed shapes it is built from: each family declares a struct
//!   with `#[derive(TuneShape)]`, bucketing declared per field, and writes its [`TileFilter`].
//! - [`db`]: the JSON database of winners keyed by [`TuningKey`] (spec, bucketed shape,
//!   GPU, compute capability, driver and NVRTC versions); launches consult it through
//!   [`tuned_spec`], then the defaults shipped with the library ([`shipped`]: tuned on a GPU model,
//!   any driver), and fall back to the spec's heuristic default.
//! - [`target`]: [`LaunchTarget`](target::LaunchTarget), the tuner's view of a prepared problem;
//!   each family builds its own (`attention::attention_target`, `gemm::gemm_target`, ...).
//!
//! Only the generic machinery lives here: the families call [`tuned_spec`] when they launch, and
//! nothing in `tuning` knows a family.

pub mod db;
pub mod key;
pub mod shipped;
pub mod space;
pub mod target;
pub mod tuner;

pub use db::{DbEntry, TuningDb};
pub use key::{bucket, Bucket, TileFilter, TuneShape, TuningKey};
pub use space::candidates;
pub use tuner::{tune, Agreement, CandidateResult, CandidateStatus, TuneOptions, TuneReport, TuneTarget};

/// What tuned tiles are keyed by, as the backend reports it (defined with the backend trait).
pub use crate::device::backend::DeviceFingerprint;

use tessera_codegen::KernelSpec;

use crate::device::backend::Backend;

/// `spec` with the tile the global tuning database (else a shipped default) holds for this backend
/// and shape, when the spec leaves its tile to the default and there is a valid entry; otherwise
/// `spec` unchanged.
pub fn tuned_spec<S: TuneShape + ?Sized>(backend: &dyn Backend, spec: KernelSpec, shape: &S) -> KernelSpec {
    if spec.untiled() != spec {
        return spec; // an explicit tile always wins
    }
    let key = TuningKey::new(&spec, shape, backend.device_fingerprint());
    let Some(tile) = db::global_lookup(&key).or_else(|| shipped::lookup(&key)) else { return spec };
    match spec.with_tile_choice(tile) {
        Some(tuned) if tuned.validate(backend.arch()).is_ok() => tuned,
        _ => spec,
    }
}
