//! The GEMM family's steps of the shared launch path ([`crate::family`]): what a call is
//! checked against, how split-K finds its workspace, and when the TMA + wgmma kernel runs.

use tessera_codegen::{Arch, DevicePtrMut, GemmParams, GemmSpec, HopperGemmParams, KernelSource, KernelSpec};

use super::check::check;
use super::problem::{split_counter_bytes, split_workspace_bytes, GemmBuffers, GemmProblem, GemmStrides, GemmTuneShape};
use super::sm80::{gemm_params, launch_config};
use super::sm90a::hopper_gemm_params;
use crate::common::error::{Result, RuntimeError};
use crate::family::{ExtendsParams, Family};
use crate::device::backend::{Backend, DeviceBuffer, LaunchConfig};

/// The split-K workspace's alignment: the tile counters are 32-bit.
const WORKSPACE_ALIGN: u64 = 4;

/// `Y = act(alpha X W + beta C + bias) + residual`.
pub struct GemmFamily;

/// GEMM's scalars: `alpha` scales the product, `beta` scales C.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmArgs {
    pub alpha: f32,
    pub beta: f32,
}

impl ExtendsParams for HopperGemmParams {
    type Base = GemmParams;
    fn base(&self) -> &GemmParams {
        &self.base
    }
}

impl Family for GemmFamily {
    const NAME: &'static str = "GEMM";
    type Spec = GemmSpec;
    type Problem = GemmProblem;
    type Strides = GemmStrides;
    type Buffers<'b> = GemmBuffers<'b>;
    type Args = GemmArgs;
    type Params = GemmParams;
    type HopperParams = HopperGemmParams;
    type TuneShape = GemmTuneShape;

    fn tune_shape(problem: &GemmProblem) -> GemmTuneShape {
        GemmTuneShape::of(problem)
    }

    fn device_buffers<'a>(buffers: &'a GemmBuffers<'_>) -> Vec<&'a DeviceBuffer> {
        buffers.all().collect()
    }

    /// A tuned split-K tile needs a workspace the caller may not have given: keep the default then.
    fn take_tuned(tuned: KernelSpec, problem: &GemmProblem, buffers: &GemmBuffers<'_>, arch: Arch) -> Option<GemmSpec> {
        match tuned {
            KernelSpec::Gemm(s) if buffers.workspace.is_some_and(|w| w.bytes() >= split_workspace_bytes(&s, problem, arch)) => Some(s),
            KernelSpec::Gemm(s) if s.tile_for(arch).split_k <= 1 => Some(s),
            _ => None,
        }
    }

    fn checked_params(
        backend: &dyn Backend,
        spec: &GemmSpec,
        problem: &GemmProblem,
        strides: &GemmStrides,
        buffers: &GemmBuffers<'_>,
        args: GemmArgs,
    ) -> Result<GemmParams> {
        let arch = backend.arch();
        let spans = buffers.spans();
        check(spec, problem, strides, &spans, args.alpha, args.beta)?;
        let mut params = gemm_params(problem, strides, &spans, args.alpha, args.beta)?;
        // Split-K: per-tile counters, then the f32 partial sums, in one caller-given workspace.
        let needed = split_workspace_bytes(spec, problem, arch);
        if needed > 0 {
            let ws = buffers.workspace.ok_or_else(|| {
                RuntimeError::invalid("workspace", format!("tile {} splits K and needs a workspace of {needed} bytes (see split_workspace_bytes)", spec.tile_for(arch)))
            })?;
            if ws.bytes() < needed || ws.addr() % WORKSPACE_ALIGN != 0 {
                return Err(RuntimeError::invalid("workspace", format!("{} bytes at {:#x}; the split needs {needed}, 4-byte aligned", ws.bytes(), ws.addr())));
            }
            let (y, y_len) = (spans.y.addr, problem.y_elements() * spec.out.size_bytes());
            if ws.addr() < y + y_len as u64 && y < ws.addr() + needed as u64 {
                return Err(RuntimeError::invalid("workspace", "overlaps `y`"));
            }
            params.counters = DevicePtrMut::new(ws.addr());
            params.workspace = DevicePtrMut::new(ws.addr() + split_counter_bytes(problem) as u64);
        }
        Ok(params)
    }

    /// Where the spec routes to sm_90a, Y is not empty and tensor maps can describe X and W.
    fn sm90a_params(
        backend: &dyn Backend,
        spec: &GemmSpec,
        problem: &GemmProblem,
        strides: &GemmStrides,
        params: &GemmParams,
    ) -> Result<Option<std::result::Result<HopperGemmParams, String>>> {
        let arch = backend.arch();
        let Ok(tile) = spec.hopper_tile(arch) else { return Ok(None) };
        if launch_config(spec, problem, arch)?.is_none() {
            return Ok(None);
        }
        Ok(Some(hopper_gemm_params(backend, spec, tile, problem, strides, *params)))
    }

    /// Persistent: at most one CTA per SM, each walking its share of the output tiles.
    fn sm90a_config(
        backend: &dyn Backend,
        spec: &GemmSpec,
        problem: &GemmProblem,
        _params: &GemmParams,
        _source: &KernelSource,
    ) -> Result<Option<LaunchConfig>> {
        Ok(launch_config(spec, problem, backend.arch())?.map(|config| {
            let tiles = config.grid[0] * config.grid[1];
            LaunchConfig { grid: [tiles.min(backend.multiprocessors().max(1)), 1, 1], ..config }
        }))
    }

    fn fall_back(backend: &dyn Backend, spec: &GemmSpec, _problem: &GemmProblem, _params: &mut GemmParams, _args: GemmArgs) -> Result<GemmSpec> {
        Ok(spec.with_tile(GemmSpec::default_tile(backend.arch())))
    }

    fn mma_sync_config(
        backend: &dyn Backend,
        spec: &GemmSpec,
        problem: &GemmProblem,
        _params: &GemmParams,
        _source: &KernelSource,
    ) -> Result<Option<LaunchConfig>> {
        launch_config(spec, problem, backend.arch())
    }

    fn render(spec: &GemmSpec, arch: Arch) -> Result<KernelSource> {
        Ok(spec.render(arch)?)
    }
}
