//! The mma.sync GEMM kernel (`templates/gemm/sm80.cuh`): its parameters ([`GemmParams`], defined
//! with the host/device contract in `tessera_codegen`; the sm_90a kernel's embeds them) and its
//! launch grid.

use tessera_codegen::{Arch, DevicePtr, DevicePtrMut, GemmParams, GemmSpec};

use super::problem::{GemmProblem, GemmSpans, GemmStrides};
use crate::common::buffers::BufferSpan;
use crate::common::error::{Result, RuntimeError};
use crate::device::backend::LaunchConfig;

const MAX_GRID_Y: usize = 65_535;
const MAX_GRID_X: usize = i32::MAX as usize;

/// The mma.sync kernel's parameter for arguments that passed [`check`](fn@crate::gemm::check)
/// (the split-K workspace and counters are set by the launcher when the tile splits K).
pub fn gemm_params(problem: &GemmProblem, strides: &GemmStrides, spans: &GemmSpans, alpha: f32, beta: f32) -> Result<GemmParams> {
    let int = |arg: &str, v: usize| {
        i32::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i32")))
    };
    let long = |arg: &str, v: usize| {
        i64::try_from(v).map_err(|_| RuntimeError::invalid(arg, format!("{v} does not fit in an i64")))
    };
    let ptr = |span: Option<&BufferSpan>| DevicePtr::new(span.map_or(0, |s| s.addr));
    Ok(GemmParams {
        x: DevicePtr::new(spans.x.addr),
        w: DevicePtr::new(spans.w.addr),
        c: ptr(spans.c.as_ref()),
        bias: ptr(spans.bias.as_ref()),
        residual: ptr(spans.residual.as_ref()),
        y: DevicePtrMut::new(spans.y.addr),
        workspace: DevicePtrMut::null(),
        counters: DevicePtrMut::null(),
        ldx: long("x.stride", strides.x)?,
        ldw: long("w.stride", strides.w)?,
        ldc: long("c.stride", strides.c)?,
        ldr: long("residual.stride", strides.residual)?,
        ldy: long("y.stride", strides.y)?,
        m: int("problem.m", problem.m)?,
        n: int("problem.n", problem.n)?,
        k: int("problem.k", problem.k)?,
        alpha,
        beta,
        reserved: 0,
    })
}

/// The launch shape: `(ceil(M / block_m), ceil(N / block_n), split_k)` for the kernel the spec
/// renders on `arch` (the sm_90a kernel's tile is 128 x 256). `None` when Y is empty.
pub fn launch_config(spec: &GemmSpec, problem: &GemmProblem, arch: Arch) -> Result<Option<LaunchConfig>> {
    if problem.m == 0 || problem.n == 0 {
        return Ok(None);
    }
    let (threads, block_m, block_n) = spec.cta_shape(arch);
    let split_k = spec.tile_for(arch).split_k.max(1);
    let gx = problem.m.div_ceil(block_m as usize);
    let gy = problem.n.div_ceil(block_n as usize);
    if gx > MAX_GRID_X {
        return Err(RuntimeError::invalid("problem.m", format!("needs {gx} CTAs; the grid allows {MAX_GRID_X}")));
    }
    if gy > MAX_GRID_Y {
        return Err(RuntimeError::invalid(
            "problem.n",
            format!("needs {gy} CTAs in grid y; the limit is {MAX_GRID_Y}"),
        ));
    }
    Ok(Some(LaunchConfig {
        grid: [gx as u32, gy as u32, split_k],
        block: [threads, 1, 1],
        dynamic_shared_bytes: spec.shared_memory_bytes_for(arch),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::ElemType;

    fn spec() -> GemmSpec {
        GemmSpec::new(ElemType::F16, ElemType::F32)
    }

    #[test]
    fn params_have_no_padding() {
        assert_eq!(std::mem::size_of::<GemmParams>(), 128);
    }

    #[test]
    fn grid_covers_every_output_tile() {
        let s = spec();
        let cfg = launch_config(&s, &GemmProblem::new(129, 257, 8), Arch::SM80).unwrap().unwrap();
        assert_eq!(cfg.grid, [2, 3, 1]);
        assert!(launch_config(&s, &GemmProblem::new(0, 8, 8), Arch::SM80).unwrap().is_none());
    }
}
