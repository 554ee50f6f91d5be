//! The candidates of a tuning run: the spec's tile space (its validation has already removed what
//! the architecture cannot run), pruned by the family's [`TileFilter`] for the shape before
//! anything is compiled.

use tessera_codegen::{Arch, KernelSpec, TileChoice};

use super::key::TileFilter;

/// The spec's pruned tile space for `shape` on `arch`, the default tile first (always kept).
pub fn candidates(spec: &KernelSpec, arch: Arch, shape: &dyn TileFilter) -> Vec<TileChoice> {
    let default = spec.untiled().tile_choice(arch);
    let mut out: Vec<TileChoice> = default.into_iter().collect();
    for t in spec.tile_space(arch) {
        if Some(t) != default && shape.worth_timing(&t) {
            out.push(t);
        }
    }
    out
}
