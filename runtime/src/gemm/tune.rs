//! The GEMM family's tuning target: a GEMM without epilogue tensors on random inputs, as
//! [`crate::tuning`] times and verifies candidate tiles. Built from the shared plumbing in
//! [`crate::tuning::target`].

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::{ElemType, GemmSpec, KernelSpec};

use super::launch::prepare_gemm;
use super::problem::{split_workspace_bytes, GemmBuffers, GemmProblem, GemmStrides};
use crate::common::buffers::encode;
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::HostUploads;
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};
use crate::tuning::target::{copies_for, matmul_agreement, plain, random, upload, LaunchTarget, Output};

/// Relative L2 error of a GEMM output against its f64 reference, by output type (what the
/// simulator tests accept): the final rounding dominates 16-bit outputs; an f32 output differs
/// only by accumulation order. fp8 is no MMA output; it gets the shared fp8 tolerance.
fn gemm_tolerance(out: ElemType) -> f64 {
    match out {
        ElemType::BF16 => 1e-2,
        ElemType::F16 => 1.5e-3,
        ElemType::F32 => 2e-5,
        ElemType::E4M3 | ElemType::E5M2 => crate::reference::accuracy::tolerance(out),
    }
}

/// GEMM without epilogue tensors on random inputs; FLOPs = 2 M N K.
pub fn gemm_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &GemmSpec,
    problem: GemmProblem,
) -> Result<LaunchTarget<'a>> {
    if spec.epilogue.bias || spec.epilogue.residual {
        return Err(RuntimeError::invalid("spec", "tune GEMM specs without bias / residual tensors"));
    }
    let mut rng = StdRng::seed_from_u64(0x6e33);
    let mut memory = HostUploads::new(backend);
    let copies = copies_for((problem.x_elements() + problem.w_elements()) * 2);
    for _ in 0..copies {
        upload(&mut memory, encode(&random(&mut rng, problem.x_elements()), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, problem.w_elements()), spec.dtype))?;
    }
    let y = upload(&mut memory, encode(&vec![0.0; problem.y_elements()], spec.out))?;
    // One workspace for every split-K candidate: sized for the largest split of the smallest tile.
    let widest = tessera_codegen::GemmSpec {
        tile: Some(tessera_codegen::GemmTile::new(32, 32, 32, 4, 1).with_split_k(*tessera_codegen::SPLIT_KS.last().unwrap_or(&1))),
        ..*spec
    };
    let ws = upload(&mut memory, vec![0u8; split_workspace_bytes(&widest, &problem, backend.arch())])?;
    let strides = GemmStrides::contiguous(spec, &problem);
    let p = problem;
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Gemm(s) = spec else { return Err(RuntimeError::invalid("spec", "not a GEMM")) };
        let buffers = GemmBuffers { x: &b[2 * c], w: &b[2 * c + 1], c: None, bias: None, residual: None, y: &b[y], workspace: Some(&b[ws]) };
        Ok(plain(backend, prepare_gemm(backend, compiler, s, &p, &strides, &buffers, 1.0, 0.0)?))
    };
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies,
        out: Output { index: y, n: problem.y_elements(), elem: spec.out, poison: true },
        reset: Vec::new(),
        prepare: Box::new(prepare),
        work: 2.0 * (p.m * p.n * p.k) as f64,
        unit: "TFLOP/s",
        agreement: matmul_agreement(gemm_tolerance(spec.out), p.k),
    })
}
