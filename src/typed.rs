//! Typed host entry points behind the `run` methods the kernel macros generate: inputs and outputs
//! in the kernel's own element types (`half::bf16` slices for a bf16 kernel), checked against the
//! spec, converted exactly at the boundary.

use half::{bf16, f16};
use tessera_codegen::{AttentionSpec, ElemType, GemmSpec, LoraSpec, MapSpec};
use tessera_runtime::{Backend, Compiler, GemmProblem, LoraInputs, LoraProblem};

use crate::TesseraError;

/// An element type a typed entry point accepts: f32, `half::f16`, `half::bf16`.
pub trait Scalar: Copy {
    const ELEM: ElemType;
    /// Exact widening.
    fn to_f32(self) -> f32;
    /// Round to nearest even (exact for values that came from this type).
    fn from_f32(x: f32) -> Self;
}

impl Scalar for f32 {
    const ELEM: ElemType = ElemType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Scalar for f16 {
    const ELEM: ElemType = ElemType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl Scalar for bf16 {
    const ELEM: ElemType = ElemType::BF16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// The 16-bit tensor-core input types.
pub trait Element16: Scalar {
    const DTYPE: ElemType;
}

impl Element16 for f16 {
    const DTYPE: ElemType = ElemType::F16;
}

impl Element16 for bf16 {
    const DTYPE: ElemType = ElemType::BF16;
}

pub fn widen<T: Scalar>(x: &[T]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

fn narrow<T: Scalar>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

fn check_type(what: &str, got: ElemType, want: ElemType) -> Result<(), TesseraError> {
    if got == want {
        Ok(())
    } else {
        Err(TesseraError::input(what, format!("{got} elements given to a kernel declared with {want}")))
    }
}

/// Attention forward with the default softmax scale.
#[allow(clippy::too_many_arguments)]
pub fn attention<T: Element16>(
    spec: &AttentionSpec,
    backend: &dyn Backend,
    compiler: &Compiler,
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Result<Vec<T>, TesseraError> {
    check_type("q", T::ELEM, spec.dtype)?;
    let problem = tessera_runtime::AttentionProblem::for_spec(spec, batch, seq_q, seq_k);
    let out = tessera_runtime::attention::run_attention(backend, compiler, spec, &problem, &widen(q), &widen(k), &widen(v), None, false)?;
    Ok(narrow(&out.out))
}

/// `Y = act(alpha X W + beta C + bias) + residual`.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Element16, O: Scalar>(
    spec: &GemmSpec,
    backend: &dyn Backend,
    compiler: &Compiler,
    (m, n, k): (usize, usize, usize),
    x: &[T],
    w: &[T],
    c: Option<&[O]>,
    bias: Option<&[O]>,
    residual: Option<&[O]>,
    alpha: f32,
    beta: f32,
) -> Result<Vec<O>, TesseraError> {
    check_type("x", T::ELEM, spec.dtype)?;
    check_type("output", O::ELEM, spec.out)?;
    let (c, bias, residual) = (c.map(widen), bias.map(widen), residual.map(widen));
    let y = tessera_runtime::run_gemm(
        backend,
        compiler,
        spec,
        &GemmProblem::new(m, n, k),
        &widen(x),
        &widen(w),
        c.as_deref(),
        bias.as_deref(),
        residual.as_deref(),
        alpha,
        beta,
    )?
    .y;
    Ok(narrow(&y))
}

/// Fused LoRA / bottleneck on host tensors (see `tessera_runtime::lora`).
#[allow(clippy::too_many_arguments)]
pub fn lora<T: Element16, O: Scalar>(
    spec: &LoraSpec,
    backend: &dyn Backend,
    compiler: &Compiler,
    problem: LoraProblem,
    x: &[T],
    w: Option<&[T]>,
    a: &[T],
    b: &[T],
    ids: Option<&[i64]>,
    bias: Option<&[O]>,
    residual: Option<&[O]>,
    scale: f32,
) -> Result<Vec<O>, TesseraError> {
    check_type("x", T::ELEM, spec.dtype)?;
    check_type("output", O::ELEM, spec.out)?;
    let (x, w, a, b) = (widen(x), w.map(widen), widen(a), widen(b));
    let (bias, residual) = (bias.map(widen), residual.map(widen));
    let inputs = LoraInputs {
        x: &x,
        w: w.as_deref(),
        a: &a,
        b: &b,
        ids,
        bias: bias.as_deref(),
        residual: residual.as_deref(),
    };
    let y = tessera_runtime::run_lora(backend, compiler, spec, &problem, &inputs, scale, None)?.y;
    Ok(narrow(&y))
}

/// A user-defined elementwise kernel over already widened inputs.
pub fn map<O: Scalar>(spec: &MapSpec, backend: &dyn Backend, compiler: &Compiler, inputs: &[&Vec<f32>]) -> Result<Vec<O>, TesseraError> {
    check_type("output", O::ELEM, spec.function.output)?;
    let slices: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let y = tessera_runtime::elementwise::run_map(backend, compiler, spec, &slices)?;
    Ok(narrow(&y))
}
