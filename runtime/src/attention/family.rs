//! The attention family's steps of the shared launch path ([`crate::family`]) for plain
//! attention and the score-side variants the sm_90a kernel implements: what a call is checked
//! against, and when the persistent TMA + wgmma kernel runs.

use tessera_codegen::{Arch, AttentionParams, AttentionSpec, HopperAttentionParams, KernelSource, KernelSpec};

use super::check::check;
use super::problem::{AttentionBuffers, AttentionProblem, AttentionStrides, AttentionTuneShape};
use super::sm80::{attention_params, launch_config, launch_config_grid};
use super::sm90a::{hopper_params, persistent_ctas};
use crate::common::error::Result;
use crate::family::{ExtendsParams, Family};
use crate::device::backend::{Backend, DeviceBuffer, LaunchConfig};

/// `O = softmax(scale Q K^T + mask) V` per head, with its variants.
pub struct AttentionFamily;

impl ExtendsParams for HopperAttentionParams {
    type Base = AttentionParams;
    fn base(&self) -> &AttentionParams {
        &self.base
    }
}

impl Family for AttentionFamily {
    const NAME: &'static str = "attention";
    type Spec = AttentionSpec;
    type Problem = AttentionProblem;
    type Strides = AttentionStrides;
    type Buffers<'b> = AttentionBuffers<'b>;
    /// The softmax scale (the caller's default already applied).
    type Args = f32;
    type Params = AttentionParams;
    type HopperParams = HopperAttentionParams;
    type TuneShape = AttentionTuneShape;

    fn tune_shape(problem: &AttentionProblem) -> AttentionTuneShape {
        AttentionTuneShape::of(problem)
    }

    fn device_buffers<'a>(buffers: &'a AttentionBuffers<'_>) -> Vec<&'a DeviceBuffer> {
        buffers.all().collect()
    }

    fn take_tuned(tuned: KernelSpec, _problem: &AttentionProblem, _buffers: &AttentionBuffers<'_>, _arch: Arch) -> Option<AttentionSpec> {
        match tuned {
            KernelSpec::Attention(s) => Some(s),
            _ => None,
        }
    }

    fn checked_params(
        _backend: &dyn Backend,
        spec: &AttentionSpec,
        problem: &AttentionProblem,
        strides: &AttentionStrides,
        buffers: &AttentionBuffers<'_>,
        scale: f32,
    ) -> Result<AttentionParams> {
        let spans = buffers.spans();
        check(spec, problem, strides, &spans, scale)?;
        attention_params(problem, strides, &spans, scale)
    }

    /// Where the spec routes to sm_90a and tensor maps can describe Q, K and V.
    fn sm90a_params(
        backend: &dyn Backend,
        spec: &AttentionSpec,
        problem: &AttentionProblem,
        strides: &AttentionStrides,
        params: &AttentionParams,
    ) -> Result<Option<std::result::Result<HopperAttentionParams, String>>> {
        let Ok(tile) = spec.hopper_tile(backend.arch()) else { return Ok(None) };
        Ok(Some(hopper_params(backend, spec, tile, problem, strides, *params)))
    }

    /// Persistent: one CTA per multiprocessor (never more than there are work tiles).
    fn sm90a_config(
        backend: &dyn Backend,
        _spec: &AttentionSpec,
        problem: &AttentionProblem,
        _params: &AttentionParams,
        source: &KernelSource,
    ) -> Result<Option<LaunchConfig>> {
        let ctas = persistent_ctas(problem, backend.multiprocessors());
        Ok(launch_config_grid(problem, [ctas, 1, 1], source.geometry))
    }

    fn fall_back(backend: &dyn Backend, spec: &AttentionSpec, _problem: &AttentionProblem, _params: &mut AttentionParams, _scale: f32) -> Result<AttentionSpec> {
        Ok(spec.with_tile(spec.default_tile_for(backend.arch())))
    }

    /// One CTA per query tile, head and batch entry.
    fn mma_sync_config(
        backend: &dyn Backend,
        spec: &AttentionSpec,
        problem: &AttentionProblem,
        _params: &AttentionParams,
        source: &KernelSource,
    ) -> Result<Option<LaunchConfig>> {
        Ok(launch_config(problem, spec.rows_per_cta(backend.arch()), source.geometry))
    }

    fn render(spec: &AttentionSpec, arch: Arch) -> Result<KernelSource> {
        Ok(spec.render(arch)?)
    }
}
