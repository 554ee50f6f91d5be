//! Opening the backend a command runs on, together with the spec it will run.

use tessera::runtime::{open_backend, Backend, BackendKind};
use tessera::Arch;

use crate::Result;

/// Opens the `kind` backend and returns it with `build(backend.arch())`: the spec for the device,
/// built and validated by `build`.
///
/// `build` is called twice. First with [`Arch::SM90`], the most permissive architecture, before any
/// device is looked for: a bad spec field (head_dim, tile values, features) is then a one-line
/// error naming it even on a machine without a GPU, and a spec error comes before a device error.
/// Then with the device's own architecture once the backend is open: a spec that only that device
/// cannot run (its shared memory, its default tile) fails here, not inside a launch. `build`
/// re-derives whatever depends on the architecture (e.g. the default tile) on each call.
pub fn open_for_spec<S>(kind: BackendKind, build: impl Fn(Arch) -> Result<S>) -> Result<(Box<dyn Backend>, S)> {
    build(Arch::SM90)?;
    let backend = open_backend(kind)?;
    let spec = build(backend.arch())?;
    Ok((backend, spec))
}
