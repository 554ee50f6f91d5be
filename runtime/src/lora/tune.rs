//! The LoRA family's tuning target: fused LoRA on random inputs, as [`crate::tuning`] times and
//! verifies candidate tiles. Built from the shared plumbing in [`crate::tuning::target`].

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::{ElemType, KernelSpec, LoraSpec};

use super::launch::prepare_lora;
use super::problem::{LoraBuffers, LoraProblem, LoraStrides};
use crate::common::buffers::encode;
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::HostUploads;
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};
use crate::tuning::target::{copies_for, matmul_agreement, plain, random, upload, LaunchTarget, Output};

/// Relative L2 error of a LoRA output against its f64 reference, by output type (what the
/// simulator tests accept). Looser than GEMM's for f32 outputs: the rank-r intermediate T' is
/// rounded to the input dtype, and two accumulation orders can round a few of its elements to
/// neighbouring values. fp8 is no MMA output; it gets the shared fp8 tolerance.
fn lora_tolerance(out: ElemType) -> f64 {
    match out {
        ElemType::BF16 => 1e-2,
        ElemType::F16 => 3e-3,
        ElemType::F32 => 2e-3,
        ElemType::E4M3 | ElemType::E5M2 => crate::reference::accuracy::tolerance(out),
    }
}

/// Fused LoRA on random inputs (adapter ids in segments for per-row specs); FLOPs count the useful
/// work 2 M N K + 2 M K r + 2 M r N.
pub fn lora_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &LoraSpec,
    problem: LoraProblem,
) -> Result<LaunchTarget<'a>> {
    if spec.epilogue.bias || spec.epilogue.residual {
        return Err(RuntimeError::invalid("spec", "tune LoRA specs without bias / residual tensors"));
    }
    let r = spec.rank as usize;
    let p = problem;
    let with_w = !spec.is_bottleneck();
    let mut rng = StdRng::seed_from_u64(0x10aa);
    let mut memory = HostUploads::new(backend);
    let per_copy = p.m * p.k + if with_w { p.k * p.n } else { 0 } + p.a_elements(r) + p.b_elements(r);
    let copies = copies_for(per_copy * 2);
    for _ in 0..copies {
        upload(&mut memory, encode(&random(&mut rng, p.m * p.k), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, if with_w { p.k * p.n } else { 0 }), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, p.a_elements(r)), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, p.b_elements(r)), spec.dtype))?;
    }
    let ids: Vec<u8> = (0..p.m).flat_map(|row| ((row * p.adapters / p.m.max(1)) as i32).to_le_bytes()).collect();
    let ids = upload(&mut memory, ids)?;
    let y = upload(&mut memory, encode(&vec![0.0; p.m * p.n], spec.out))?;
    let strides = LoraStrides::contiguous(spec, &p);
    let per_row = spec.adapters == tessera_codegen::AdapterMode::PerRow;
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Lora(s) = spec else { return Err(RuntimeError::invalid("spec", "not LoRA")) };
        let buffers = LoraBuffers {
            x: &b[4 * c],
            w: with_w.then(|| &b[4 * c + 1]),
            a: &b[4 * c + 2],
            b: &b[4 * c + 3],
            ids: per_row.then(|| &b[ids]),
            bias: None,
            residual: None,
            y: &b[y],
        };
        Ok(plain(backend, prepare_lora(backend, compiler, s, &p, &strides, &buffers, 1.0, None)?))
    };
    let work = 2.0 * (p.m * p.n * p.k) as f64 * f64::from(u8::from(with_w)) + 2.0 * (p.m * p.k * r + p.m * r * p.n) as f64;
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies,
        out: Output { index: y, n: p.m * p.n, elem: spec.out, poison: true },
        reset: Vec::new(),
        prepare: Box::new(prepare),
        work,
        unit: "TFLOP/s",
        agreement: matmul_agreement(lora_tolerance(spec.out), p.k + r),
    })
}
