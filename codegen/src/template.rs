//! The CUDA C++ templates, embedded at build time so a binary needs no source tree at run time.

/// Shared device helpers: storage types, conversions, `mma.sync` / `ldmatrix` / `cp.async` wrappers.
pub const PRELUDE: &str = include_str!("../../templates/tessera.cuh");

/// One kernel template file under `templates/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    AttentionForward,
    Gemm,
}

impl Template {
    pub fn file_name(self) -> &'static str {
        match self {
            Template::AttentionForward => "attention_fwd.cuh",
            Template::Gemm => "gemm.cuh",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Template::AttentionForward => include_str!("../../templates/attention_fwd.cuh"),
            Template::Gemm => include_str!("../../templates/gemm.cuh"),
        }
    }
}
