//! The LoRA family's steps of the shared launch path ([`crate::family`]): what a call is
//! checked against, how column tiles are grouped, and when the TMA + wgmma kernel runs.

use tessera_codegen::{Arch, DevicePtr, DevicePtrMut, HopperLoraParams, KernelSource, KernelSpec, LoraParams, LoraSpec};

use super::check::check;
use super::problem::{LoraBuffers, LoraProblem, LoraStrides, LoraTuneShape};
use super::sm80::{default_n_group, launch_config};
use super::sm90a::hopper_lora_params;
use crate::common::error::{Result, RuntimeError};
use crate::family::{ExtendsParams, Family};
use crate::device::backend::{Backend, DeviceBuffer, LaunchConfig};

/// `Y = act(X W + scale (X A) B + bias) + residual`, one adapter per call or per row.
pub struct LoraFamily;

/// LoRA's scalars: the adapter scale, and how many column tiles one CTA walks (`None`:
/// [`default_n_group`], recomputed for the mma.sync tile after an sm_90a fallback).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraArgs {
    pub scale: f32,
    pub n_group: Option<usize>,
}

impl ExtendsParams for HopperLoraParams {
    type Base = LoraParams;
    fn base(&self) -> &LoraParams {
        &self.base
    }
}

fn int(arg: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i32")))
}

fn long(arg: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i64")))
}

impl Family for LoraFamily {
    const NAME: &'static str = "LoRA";
    type Spec = LoraSpec;
    type Problem = LoraProblem;
    type Strides = LoraStrides;
    type Buffers<'b> = LoraBuffers<'b>;
    type Args = LoraArgs;
    type Params = LoraParams;
    type HopperParams = HopperLoraParams;
    type TuneShape = LoraTuneShape;

    fn tune_shape(problem: &LoraProblem) -> LoraTuneShape {
        LoraTuneShape::of(problem)
    }

    fn device_buffers<'a>(buffers: &'a LoraBuffers<'_>) -> Vec<&'a DeviceBuffer> {
        buffers.all().collect()
    }

    fn take_tuned(tuned: KernelSpec, _problem: &LoraProblem, _buffers: &LoraBuffers<'_>, _arch: Arch) -> Option<LoraSpec> {
        match tuned {
            KernelSpec::Lora(s) => Some(s),
            _ => None,
        }
    }

    fn checked_params(
        backend: &dyn Backend,
        spec: &LoraSpec,
        problem: &LoraProblem,
        strides: &LoraStrides,
        buffers: &LoraBuffers<'_>,
        args: LoraArgs,
    ) -> Result<LoraParams> {
        check(spec, problem, strides, buffers, args.scale)?;
        let n_group = args.n_group.unwrap_or_else(|| default_n_group(spec, problem, backend.arch(), backend.multiprocessors()));
        let addr = |b: Option<&DeviceBuffer>| b.map_or(0, DeviceBuffer::addr);
        Ok(LoraParams {
            x: DevicePtr::new(buffers.x.addr()),
            w: DevicePtr::new(addr(buffers.w)),
            a: DevicePtr::new(buffers.a.addr()),
            b: DevicePtr::new(buffers.b.addr()),
            bias: DevicePtr::new(addr(buffers.bias)),
            residual: DevicePtr::new(addr(buffers.residual)),
            ids: DevicePtr::new(addr(buffers.ids)),
            y: DevicePtrMut::new(buffers.y.addr()),
            ldx: long("x.stride", strides.x)?,
            ldw: long("w.stride", strides.w)?,
            ldr: long("residual.stride", strides.residual)?,
            ldy: long("y.stride", strides.y)?,
            m: int("problem.m", problem.m)?,
            n: int("problem.n", problem.n)?,
            k: int("problem.k", problem.k)?,
            rank: spec.rank as i32,
            n_adapters: int("problem.adapters", problem.adapters)?,
            n_group: int("n_group", n_group.min(i32::MAX as usize))?,
            scale: args.scale,
            reserved: 0,
        })
    }

    /// Where a single-adapter spec routes to sm_90a (`tessera_codegen::lora_hopper_route`), Y is
    /// not empty and tensor maps can describe the operands.
    fn sm90a_params(
        backend: &dyn Backend,
        spec: &LoraSpec,
        problem: &LoraProblem,
        strides: &LoraStrides,
        params: &LoraParams,
    ) -> Result<Option<std::result::Result<HopperLoraParams, String>>> {
        let arch = backend.arch();
        let Ok(tile) = spec.hopper_tile(arch) else { return Ok(None) };
        if launch_config(spec, problem, arch, params.n_group as usize)?.is_none() {
            return Ok(None);
        }
        Ok(Some(hopper_lora_params(backend, spec, tile, problem, strides, *params)))
    }

    fn sm90a_config(
        backend: &dyn Backend,
        spec: &LoraSpec,
        problem: &LoraProblem,
        params: &LoraParams,
        _source: &KernelSource,
    ) -> Result<Option<LaunchConfig>> {
        launch_config(spec, problem, backend.arch(), params.n_group as usize)
    }

    /// The default mma.sync tile; a column-group size the caller left to the default follows it.
    fn fall_back(backend: &dyn Backend, spec: &LoraSpec, problem: &LoraProblem, params: &mut LoraParams, args: LoraArgs) -> Result<LoraSpec> {
        let arch = backend.arch();
        let spec = spec.with_tile(spec.default_tile(arch));
        if args.n_group.is_none() {
            params.n_group = int("n_group", default_n_group(&spec, problem, arch, backend.multiprocessors()))?;
        }
        Ok(spec)
    }

    fn mma_sync_config(
        backend: &dyn Backend,
        spec: &LoraSpec,
        problem: &LoraProblem,
        params: &LoraParams,
        _source: &KernelSource,
    ) -> Result<Option<LaunchConfig>> {
        launch_config(spec, problem, backend.arch(), params.n_group as usize)
    }

    fn render(spec: &LoraSpec, arch: Arch) -> Result<KernelSource> {
        Ok(spec.render(arch)?)
    }
}
