//! The attention family's device entry points: [`prepare_attention`] checks a plain-attention
//! call, takes the tuned tile, and picks the kernel (the sm_90a one where the spec routes there and
//! tensor maps can describe the tensors, else the mma.sync one); [`attention_forward`] also runs
//! it. The variant launcher ends in the same route choice ([`launch_plain`]).

use tessera_codegen::{Arch, AttentionParams, AttentionSpec};

use super::check::check;
use super::problem::{AttentionBuffers, AttentionProblem, AttentionStrides, AttentionTuneShape};
use super::sm80::{attention_params, launch_config, launch_config_grid};
use super::sm90a::{self, AttentionLaunchParams};
use crate::common::error::Result;
use crate::common::launch::PreparedLaunch;
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};

/// A checked, compiled and loaded attention launch, ready to run or time repeatedly: the sm_90a
/// kernel or the mma.sync one (its [`PreparedLaunch::note`] says why when it fell back).
pub type AttentionLaunch = PreparedLaunch<AttentionLaunchParams>;

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
    for buffer in buffers.all() {
        backend.check_buffer(buffer)?;
    }
    // A spec that leaves its tile to the default takes the tuned one, if the database has it.
    let tuned = match crate::tuning::tuned_spec(backend, (*spec).into(), &AttentionTuneShape::of(problem)) {
        tessera_codegen::KernelSpec::Attention(s) => s,
        _ => *spec,
    };
    let spec = &tuned;
    let spans = buffers.spans();
    check(spec, problem, strides, &spans, scale)?;
    let params = attention_params(problem, strides, &spans, scale)?;
    launch_plain(backend, compiler, spec, problem, strides, params, buffers.all())
}

/// Compiles and loads a checked plain-attention launch: the sm_90a kernel (TMA + wgmma) where the
/// spec routes there and the tensors fit tensor maps, else the mma.sync kernel. A fallback from
/// the sm_90a route is written to the launch's note and to standard error.
pub(crate) fn launch_plain<'a>(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    params: AttentionParams,
    buffers: impl Iterator<Item = &'a DeviceBuffer>,
) -> Result<AttentionLaunch> {
    let arch: Arch = backend.arch();
    let mut spec = *spec;
    let mut note = None;
    if let Ok(tile) = spec.hopper_tile(arch) {
        match sm90a::hopper_params(backend, &spec, tile, problem, strides, params) {
            Ok(hopper) => {
                let source = spec.render(arch)?;
                let ctas = sm90a::persistent_ctas(problem, backend.multiprocessors());
                let config = launch_config_grid(problem, [ctas, 1, 1], source.geometry);
                let params = AttentionLaunchParams::Hopper(hopper);
                return PreparedLaunch::new(backend, compiler, &source, config, params, buffers);
            }
            Err(reason) => {
                note = Some(crate::common::launch::sm90a_fallback_note("attention", &reason));
                spec = spec.with_tile(spec.default_tile_for(arch));
            }
        }
    }
    let source = spec.render(arch)?;
    let config = launch_config(problem, spec.rows_per_cta(arch), source.geometry);
    let launch = PreparedLaunch::new(backend, compiler, &source, config, AttentionLaunchParams::MmaSync(params), buffers)?;
    Ok(launch.with_note(note))
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
