//! The GEMM family's argument checks: the problem against the spec and the kernel's limits
//! ([`check_problem`]), then every tensor's stride, extent, size, alignment and overlap
//! ([`check`], through [`check_matrices`], which LoRA's checks use too).

use tessera_codegen::{Arch, GemmSpec};

use super::problem::{stored_shape, unaligned_reason, GemmProblem, GemmSpans, GemmStrides, CHUNK_ELEMS, MAX_DIM};
use crate::common::buffers::{check_span, BufferSpan};
use crate::common::error::{Result, RuntimeError};

/// The shape part of [`check`]: sizes, the kernel's integer and grid limits, the chunk alignment
/// of K and N, and finite alpha / beta. Needs no buffers.
pub fn check_problem(spec: &GemmSpec, problem: &GemmProblem, alpha: f32, beta: f32) -> Result<()> {
    for (name, v) in [("problem.m", problem.m), ("problem.n", problem.n), ("problem.k", problem.k)] {
        if v > MAX_DIM {
            return Err(RuntimeError::invalid(name, format!("{v} exceeds the kernel's limit of {MAX_DIM}")));
        }
    }
    if spec.aligned {
        if let Some(reason) = unaligned_reason(spec, problem) {
            let field = reason.split(' ').next().unwrap_or("problem").to_string();
            return Err(RuntimeError::invalid(field, reason));
        }
    }
    if !alpha.is_finite() {
        return Err(RuntimeError::invalid("alpha", format!("{alpha} is not finite")));
    }
    if !beta.is_finite() {
        return Err(RuntimeError::invalid("beta", format!("{beta} is not finite")));
    }
    spec.validate(Arch::SM80).or_else(|e| match e {
        // Shared-memory limits depend on the device; render() checks those for the real arch.
        tessera_codegen::SpecError::SharedMemory { .. } => Ok(()),
        e => Err(e),
    })?;
    Ok(())
}

/// Checks every argument of a GEMM launch against the spec and the buffers, without touching a
/// device. Each error names the tensor and field.
pub fn check(
    spec: &GemmSpec,
    problem: &GemmProblem,
    strides: &GemmStrides,
    spans: &GemmSpans,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    check_problem(spec, problem, alpha, beta)?;
    let p = problem;
    let e = spec.epilogue;
    if e.bias != spans.bias.is_some() {
        return Err(RuntimeError::invalid(
            "bias",
            if e.bias {
                "spec.epilogue.bias is set but no bias buffer was given"
            } else {
                "a bias buffer was given but spec.epilogue.bias is false"
            },
        ));
    }
    if e.residual != spans.residual.is_some() {
        return Err(RuntimeError::invalid(
            "residual",
            if e.residual {
                "spec.epilogue.residual is set but no residual buffer was given"
            } else {
                "a residual buffer was given but spec.epilogue.residual is false"
            },
        ));
    }
    let elem = spec.dtype.size_bytes();
    let out = spec.out.size_bytes();
    let (x_rows, x_cols) = stored_shape(spec.layout_x, p.m, p.k);
    let (w_rows, w_cols) = stored_shape(spec.layout_w, p.k, p.n);
    let (align, chunked) = if spec.aligned { (16, true) } else { (elem, false) };
    // (name, rows, cols, stride, span, element bytes, alignment, chunked)
    let mut tensors = vec![
        ("x", x_rows, x_cols, strides.x, Some(spans.x), elem, align, chunked),
        ("w", w_rows, w_cols, strides.w, Some(spans.w), elem, align, chunked),
        ("c", p.m, p.n, strides.c, spans.c, out, out, false),
        ("residual", p.m, p.n, strides.residual, spans.residual, out, out, false),
        ("y", p.m, p.n, strides.y, Some(spans.y), out, out, false),
    ];
    tensors.push(("bias", 1, p.n, p.n, spans.bias, out, out, false));
    // Y must not overlap any input: other CTAs may still be reading it.
    check_matrices(tensors, "y")
}

/// One strided 2-D tensor argument of a launch: (name, rows, row length, row stride in elements,
/// span if given, element bytes, required alignment, whether the stride must be whole 16-byte chunks).
pub type MatrixArg<'a> = (&'a str, usize, usize, usize, Option<BufferSpan>, usize, usize, bool);

/// Checks every given tensor's stride, extent, size and alignment, and that `output` overlaps none
/// of the others (other CTAs may still be reading them while it is written).
pub fn check_matrices(tensors: Vec<MatrixArg<'_>>, output: &str) -> Result<()> {
    let mut ranges = Vec::new();
    for (name, rows, cols, stride, span, elem, align, chunked) in tensors {
        let Some(span) = span else { continue };
        if rows > 1 && stride < cols {
            return Err(RuntimeError::invalid(
                format!("{name}.stride"),
                format!("{stride} is smaller than the row length {cols}: rows would overlap"),
            ));
        }
        if chunked && rows > 1 && stride % CHUNK_ELEMS != 0 {
            return Err(RuntimeError::invalid(
                format!("{name}.stride"),
                format!(
                    "{stride} is not a multiple of {}: an aligned kernel needs every row 16-byte aligned for cp.async (use a spec with aligned: false)",
                    CHUNK_ELEMS
                ),
            ));
        }
        let needed = if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(cols))
                .and_then(|v| v.checked_mul(elem))
                .ok_or_else(|| RuntimeError::invalid(name, "the addressed range overflows"))?
        };
        check_span(name, span, needed, align)?;
        ranges.push((name, span.addr, needed));
    }
    if let Some(&(_, out_addr, out_len)) = ranges.iter().find(|r| r.0 == output) {
        for &(name, addr, len) in &ranges {
            if name != output && len > 0 && out_len > 0 && addr < out_addr + out_len as u64 && out_addr < addr + len as u64 {
                return Err(RuntimeError::invalid(output, format!("its memory overlaps `{name}`'s")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{ElemType, Epilogue, Layout};

    fn spec() -> GemmSpec {
        GemmSpec::new(ElemType::F16, ElemType::F32)
    }

    fn spans(p: &GemmProblem, s: &GemmSpec) -> GemmSpans {
        let span = |addr: u64, bytes: usize| BufferSpan { addr, bytes };
        GemmSpans {
            x: span(0x10000, p.x_elements() * 2),
            w: span(0x200000, p.w_elements() * 2),
            c: None,
            bias: None,
            residual: None,
            y: span(0x400000, p.y_elements() * s.out.size_bytes()),
            workspace: None,
        }
    }

    fn arg_of(result: Result<()>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn contiguous_problems_pass() {
        let s = spec();
        let p = GemmProblem::new(37, 24, 40);
        check(&s, &p, &GemmStrides::contiguous(&s, &p), &spans(&p, &s), 1.0, 0.0).unwrap();
    }

    #[test]
    fn k_and_n_must_be_whole_chunks() {
        let s = spec();
        let p = GemmProblem::new(4, 24, 20);
        let msg = arg_of(check(&s, &p, &GemmStrides::contiguous(&s, &p), &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("problem.k") && msg.contains("multiple of 8"), "{msg}");
        let p = GemmProblem::new(4, 20, 16);
        let msg = arg_of(check(&s, &p, &GemmStrides::contiguous(&s, &p), &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("problem.n"), "{msg}");
        // Column-major W allows any N.
        let col = GemmSpec { layout_w: Layout::ColMajor, ..s };
        check(&col, &p, &GemmStrides::contiguous(&col, &p), &spans(&p, &col), 1.0, 0.0).unwrap();
    }

    #[test]
    fn strides_buffers_and_epilogue_tensors_are_checked() {
        let s = spec();
        let p = GemmProblem::new(8, 16, 16);
        let st = GemmStrides::contiguous(&s, &p);
        let msg = arg_of(check(&s, &p, &GemmStrides { x: 12, ..st }, &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("x.stride"), "{msg}");
        let msg = arg_of(check(&s, &p, &GemmStrides { x: 20, ..st }, &spans(&p, &s), 1.0, 0.0));
        assert!(msg.contains("x.stride") && msg.contains("multiple of 8"), "{msg}");
        let mut sp = spans(&p, &s);
        sp.w.bytes -= 2;
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains('w'));
        let mut sp = spans(&p, &s);
        sp.x.addr += 8;
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains("aligned"));
        let biased = GemmSpec { epilogue: Epilogue { bias: true, ..Epilogue::NONE }, ..s };
        assert!(arg_of(check(&biased, &p, &st, &spans(&p, &s), 1.0, 0.0)).contains("bias"));
        let mut sp = spans(&p, &s);
        sp.residual = Some(BufferSpan { addr: 0x800000, bytes: 1 << 20 });
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains("residual"));
        let mut sp = spans(&p, &s);
        sp.c = Some(sp.y);
        assert!(arg_of(check(&s, &p, &st, &sp, 1.0, 0.0)).contains("overlaps"));
        assert!(arg_of(check(&s, &p, &st, &spans(&p, &s), f32::NAN, 0.0)).contains("alpha"));
    }

}
