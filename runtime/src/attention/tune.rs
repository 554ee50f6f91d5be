//! The attention family's tuning target: attention forward on random inputs, as
//! [`crate::tuning`] times and verifies candidate tiles. Built from the shared plumbing in
//! [`crate::tuning::target`].

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::{AttentionSpec, KernelSpec};

use super::launch::prepare_attention;
use super::problem::{AttentionBuffers, AttentionProblem, AttentionStrides};
use crate::common::buffers::encode;
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::HostUploads;
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};
use crate::tuning::target::{copies_for, matmul_agreement, plain, random, upload, LaunchTarget, Output};

/// Attention forward on random inputs; FLOPs = 4 b h s_q s_k d (halved when causal).
pub fn attention_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &AttentionSpec,
    problem: AttentionProblem,
) -> Result<LaunchTarget<'a>> {
    let mut rng = StdRng::seed_from_u64(0x7e55);
    let mut memory = HostUploads::new(backend);
    let bytes = (problem.q_elements() + 2 * problem.kv_elements()) * 2;
    let copies = copies_for(bytes);
    for _ in 0..copies {
        for n in [problem.q_elements(), problem.kv_elements(), problem.kv_elements()] {
            upload(&mut memory, encode(&random(&mut rng, n), spec.dtype))?;
        }
    }
    let o = upload(&mut memory, vec![0u8; problem.q_elements() * 2])?;
    let strides = AttentionStrides::contiguous(&problem);
    let p = problem;
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Attention(s) = spec else { return Err(RuntimeError::invalid("spec", "not attention")) };
        let buffers = AttentionBuffers { q: &b[3 * c], k: &b[3 * c + 1], v: &b[3 * c + 2], o: &b[o], lse: None };
        Ok(plain(backend, prepare_attention(backend, compiler, s, &p, &strides, &buffers, None)?))
    };
    let causal = if spec.causal { 0.5 } else { 1.0 };
    let work = 4.0 * (p.batch * p.heads_q * p.seq_q * p.seq_k * p.head_dim) as f64 * causal;
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies,
        out: Output { index: o, n: problem.q_elements(), elem: spec.dtype, poison: true },
        reset: Vec::new(),
        prepare: Box::new(prepare),
        work,
        unit: "TFLOP/s",
        // The family's tolerance against its f64 reference (the output is in the input dtype),
        // plus the f32 sums of Q K (head_dim terms) and P V (seq_k terms) in another order.
        agreement: matmul_agreement(crate::reference::accuracy::tolerance(spec.dtype), p.head_dim + p.seq_k),
    })
}
