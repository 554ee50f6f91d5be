//! The attention family's device entry points: [`prepare_attention`] checks a plain-attention
//! call, takes the tuned tile, and picks the kernel (the sm_90a one where the spec routes there and
//! tensor maps can describe the tensors, else the mma.sync one); [`attention_forward`] also runs
//! it. The variant launcher ends in the same route choice (`crate::family::route`).

use tessera_codegen::AttentionSpec;

use super::family::AttentionFamily;
use super::problem::{AttentionBuffers, AttentionProblem, AttentionStrides};
use crate::common::error::Result;
use crate::family::{prepare, FamilyLaunch};
use crate::compile::compiler::Compiler;
use crate::device::backend::Backend;

/// A checked, compiled and loaded attention launch, ready to run or time repeatedly: the sm_90a
/// kernel or the mma.sync one (its `note` says why when it fell back).
pub type AttentionLaunch = FamilyLaunch<AttentionFamily>;

/// Checks the arguments, renders the spec for the backend's architecture, compiles (through the
/// compiler's cache) and loads the kernel. Nothing is launched.
pub fn prepare_attention(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    buffers: &AttentionBuffers<'_>,
    scale: Option<f32>,
) -> Result<AttentionLaunch> {
    let scale = scale.unwrap_or_else(|| problem.default_scale());
    prepare::<AttentionFamily>(backend, compiler, spec, problem, strides, buffers, scale)
}

/// Runs attention forward on device buffers and waits for it. `scale` defaults to
/// `1 / sqrt(head_dim)`.
pub fn attention_forward(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    buffers: &AttentionBuffers<'_>,
    scale: Option<f32>,
) -> Result<()> {
    prepare_attention(backend, compiler, spec, problem, strides, buffers, scale)?.run(backend)
}
