//! The LoRA family's argument checks: the problem against the spec ([`check_problem`]), then every
//! buffer's presence and every tensor's stride, extent, size, alignment and overlap ([`check`],
//! through GEMM's [`check_matrices`]).

use tessera_codegen::{AdapterMode, Arch, LoraSpec};

use super::problem::{unaligned_reason, LoraBuffers, LoraProblem, LoraStrides};
use crate::common::buffers::BufferSpan;
use crate::common::error::{Result, RuntimeError};
use crate::device::backend::DeviceBuffer;
use crate::gemm::check::check_matrices;
use crate::gemm::problem::{stored_shape, MAX_DIM};

/// The shape part of [`check`]: sizes, adapter count, finite scale, the bottleneck's N == K,
/// alignment, and the spec's own fields. Needs no buffers.
pub fn check_problem(spec: &LoraSpec, p: &LoraProblem, scale: f32) -> Result<()> {
    for (name, v) in [("problem.m", p.m), ("problem.n", p.n), ("problem.k", p.k)] {
        if v > MAX_DIM {
            return Err(RuntimeError::invalid(name, format!("{v} exceeds the kernel's limit of {MAX_DIM}")));
        }
    }
    match spec.adapters {
        AdapterMode::Single if p.adapters != 1 => {
            return Err(RuntimeError::invalid(
                "problem.adapters",
                format!("{} stacked adapters, but a single-adapter spec takes A [K, r] and B [r, N] (use adapters: per_row)", p.adapters),
            ))
        }
        AdapterMode::PerRow if p.adapters == 0 || p.adapters > i32::MAX as usize => {
            return Err(RuntimeError::invalid("problem.adapters", format!("{} is not a usable adapter count", p.adapters)))
        }
        _ => {}
    }
    if spec.is_bottleneck() && p.n != p.k {
        return Err(RuntimeError::invalid(
            "problem.n",
            format!("{} differs from K = {}: the bottleneck adds X to its output", p.n, p.k),
        ));
    }
    if !scale.is_finite() {
        return Err(RuntimeError::invalid("scale", format!("{scale} is not finite")));
    }
    if spec.aligned {
        if let Some(reason) = unaligned_reason(spec, p) {
            let field = reason.split(' ').next().unwrap_or("problem").to_string();
            return Err(RuntimeError::invalid(field, reason));
        }
    }
    spec.validate(Arch::SM80).or_else(|e| match e {
        tessera_codegen::SpecError::SharedMemory { .. } => Ok(()),
        e => Err(e),
    })?;
    Ok(())
}

/// Checks every argument of a launch against the spec and the buffers, without touching a device.
pub fn check(spec: &LoraSpec, p: &LoraProblem, strides: &LoraStrides, buffers: &LoraBuffers<'_>, scale: f32) -> Result<()> {
    check_problem(spec, p, scale)?;
    let e = spec.epilogue;
    let presence = [
        ("w", !spec.is_bottleneck(), buffers.w.is_some(), "the LoRA variant needs W; the bottleneck takes none"),
        ("adapter_ids", spec.adapters == AdapterMode::PerRow, buffers.ids.is_some(), "per-row specs need adapter ids; single-adapter specs take none"),
        ("bias", e.bias, buffers.bias.is_some(), "spec.epilogue.bias decides whether a bias is given"),
        ("residual", e.residual, buffers.residual.is_some(), "spec.epilogue.residual decides whether a residual is given"),
    ];
    for (name, wanted, given, why) in presence {
        if wanted != given {
            let what = if given { "was given" } else { "is missing" };
            return Err(RuntimeError::invalid(name, format!("the buffer {what}: {why}")));
        }
    }
    let elem = spec.dtype.size_bytes();
    let out = spec.out.size_bytes();
    let r = spec.rank as usize;
    let (align, chunked) = if spec.aligned { (16, true) } else { (elem, false) };
    let (x_rows, x_cols) = stored_shape(spec.layout_x, p.m, p.k);
    let (w_rows, w_cols) = stored_shape(spec.layout_w, p.k, p.n);
    let span = |b: Option<&DeviceBuffer>| b.map(BufferSpan::from);
    // (name, rows, cols, stride, span, element bytes, alignment, chunked stride)
    let tensors = [
        ("x", x_rows, x_cols, strides.x, span(Some(buffers.x)), elem, align, chunked),
        ("w", w_rows, w_cols, strides.w, span(buffers.w), elem, align, chunked),
        ("a", p.adapters * p.k, r, r, span(Some(buffers.a)), elem, align, false),
        ("b", p.adapters * r, p.n, p.n, span(Some(buffers.b)), elem, align, false),
        ("adapter_ids", 1, p.m, p.m, span(buffers.ids), 4, 4, false),
        ("bias", 1, p.n, p.n, span(buffers.bias), out, out, false),
        ("residual", p.m, p.n, strides.residual, span(buffers.residual), out, out, false),
        ("y", p.m, p.n, strides.y, span(Some(buffers.y)), out, out, false),
    ];
    check_matrices(tensors.to_vec(), "y")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{Activation, ElemType};

    #[test]
    fn problem_checks_name_the_field() {
        let s = LoraSpec::new(ElemType::F16, ElemType::F32, 16);
        let msg = check_problem(&s, &LoraProblem::new(4, 8, 8, 3), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.adapters") && msg.contains("per_row"), "{msg}");
        let msg = check_problem(&s, &LoraProblem::new(4, 8, 12, 1), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.k") && msg.contains("aligned: false"), "{msg}");
        let msg = check_problem(&s, &LoraProblem::new(4, 12, 8, 1), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.n"), "{msg}");
        assert!(check_problem(&s, &LoraProblem::new(4, 8, 8, 1), f32::INFINITY).unwrap_err().to_string().contains("scale"));
        let b = LoraSpec::bottleneck(ElemType::F16, ElemType::F16, 8, Activation::Relu);
        let msg = check_problem(&b, &LoraProblem::new(4, 16, 8, 1), 1.0).unwrap_err().to_string();
        assert!(msg.contains("problem.n") && msg.contains("K = 8"), "{msg}");
        let bad_rank = LoraSpec { rank: 12, ..s };
        assert!(check_problem(&bad_rank, &LoraProblem::new(4, 8, 8, 1), 1.0).unwrap_err().to_string().contains("rank"));
    }

}
