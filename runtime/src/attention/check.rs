//! The attention family's argument checks: everything the kernel trusts (strides, sizes,
//! alignment, index ranges) is checked by [`check`] before a launch, because a wrong stride on a
//! GPU is a silent wrong answer or a fault that poisons the whole context. The variant launcher
//! ([`super::variant`]) checks its extra inputs and then the same layout ([`check_layout`]).

use tessera_codegen::AttentionSpec;

use super::problem::{AttentionProblem, AttentionSpans, AttentionStrides, TensorStrides, MAX_SEQ_LEN};
use crate::common::buffers::{check_span, BufferSpan};
use crate::common::error::{Result, RuntimeError};

/// The kernel moves rows in 16-byte `cp.async` chunks, so row starts must be 16-byte aligned.
const ACCESS_ALIGN_BYTES: usize = 16;
/// `gridDim.y` and `gridDim.z` limits, which carry heads and batch.
const MAX_GRID_YZ: usize = 65_535;

/// Checks every argument of an attention launch against the spec and the buffers, without touching
/// a device. Each error names the tensor and field.
///
/// Allowed: `batch == 0` or `seq_q == 0` (nothing to compute, no launch), `seq_k == 0` (every row
/// sees no key: output 0, log-sum-exp -inf). Strides of dimensions with extent 1 are never
/// multiplied by a non-zero index, so they are not checked.
pub fn check(
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    spans: &AttentionSpans,
    scale: f32,
) -> Result<()> {
    check_problem(spec, problem, scale)?;
    if !spec.features.is_plain() {
        // The variant kernels read launch inputs this path does not have (tables, slopes, ...).
        return Err(RuntimeError::invalid(
            "spec.features",
            format!("`{}` needs the variant launcher: prepare_attention_variant / run_attention_variant", spec.features),
        ));
    }
    let p = problem;
    let layout = TensorExtents {
        q: [p.batch, p.seq_q, p.heads_q, p.head_dim],
        kv: [p.batch, p.seq_k, p.heads_kv, p.head_dim],
        lse_elements: p.lse_elements(),
    };
    check_layout(spec, &layout, strides, spans, &[])
}

/// The memory extents of Q/O and K/V (`[outer, rows, heads, head_dim]`) and the LSE's element
/// count. Plain attention's are the problem's; a packed (varlen) Q or a paged K/V has others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TensorExtents {
    pub q: [usize; 4],
    pub kv: [usize; 4],
    pub lse_elements: usize,
}

/// Strides, alignment, buffer sizes and overlaps of Q, K, V, O and LSE laid out as `extents`.
/// `extra` are further checked ranges `(name, address, bytes)` of the call: none may overlap an
/// output (`o`, `lse`, `workspace`).
pub(crate) fn check_layout(
    spec: &AttentionSpec,
    extents: &TensorExtents,
    strides: &AttentionStrides,
    spans: &AttentionSpans,
    extra: &[(&'static str, u64, usize)],
) -> Result<()> {
    let elem = spec.dtype.size_bytes();
    let tensors = [
        ("q", extents.q, strides.q, spans.q),
        ("k", extents.kv, strides.k, spans.k),
        ("v", extents.kv, strides.v, spans.v),
        ("o", extents.q, strides.o, spans.o),
    ];
    let mut ranges = extra.to_vec();
    for (name, extents, strides, span) in tensors {
        let needed = check_tensor(name, extents, strides, span, elem)?;
        ranges.push((name, span.addr, needed));
    }
    if let Some(span) = spans.lse {
        let needed = extents.lse_elements.saturating_mul(4);
        check_span("lse", span, needed, 4)?;
        ranges.push(("lse", span.addr, needed));
    }
    let o = strides.o;
    check_no_self_overlap("o", extents.q, [o.batch, o.seq, o.head, o.dim])?;
    check_disjoint_outputs(&ranges, &["o", "lse", "workspace"])
}

/// Outputs must not overlap inputs (other CTAs may still be reading) or each other.
pub(crate) fn check_disjoint_outputs(ranges: &[(&str, u64, usize)], outputs: &[&str]) -> Result<()> {
    for (i, &(a, a_addr, a_len)) in ranges.iter().enumerate() {
        for &(b, b_addr, b_len) in &ranges[..i] {
            if !(outputs.contains(&a) || outputs.contains(&b)) || a_len == 0 || b_len == 0 {
                continue;
            }
            let (a_end, b_end) = (a_addr + a_len as u64, b_addr + b_len as u64);
            if a_addr < b_end && b_addr < a_end {
                return Err(RuntimeError::invalid(a, format!("its memory overlaps `{b}`'s")));
            }
        }
    }
    Ok(())
}

/// The shape part of [`check`]: the problem against the spec, the kernel's integer and grid
/// limits, and the scale. Needs no buffers, so host wrappers run it before allocating anything.
pub fn check_problem(spec: &AttentionSpec, problem: &AttentionProblem, scale: f32) -> Result<()> {
    let p = problem;
    for (field, value, expected) in [
        ("head_dim", p.head_dim, spec.head_dim),
        ("heads_q", p.heads_q, spec.heads_q),
        ("heads_kv", p.heads_kv, spec.heads_kv),
    ] {
        if value != expected as usize {
            return Err(RuntimeError::invalid(
                format!("problem.{field}"),
                format!("{value}, but the kernel spec was generated for {field} {expected}"),
            ));
        }
        if value == 0 {
            return Err(RuntimeError::invalid(format!("problem.{field}"), "must be positive"));
        }
    }
    if p.heads_q % p.heads_kv != 0 {
        return Err(RuntimeError::invalid(
            "problem.heads_q",
            format!("{} is not a multiple of heads_kv {}", p.heads_q, p.heads_kv),
        ));
    }
    for (field, value, max) in [
        ("seq_q", p.seq_q, MAX_SEQ_LEN),
        ("seq_k", p.seq_k, MAX_SEQ_LEN),
        ("heads_q", p.heads_q, MAX_GRID_YZ),
        ("batch", p.batch, MAX_GRID_YZ),
    ] {
        if value > max {
            return Err(RuntimeError::invalid(format!("problem.{field}"), format!("{value} is above the limit {max}")));
        }
    }
    if !scale.is_finite() || scale <= 0.0 {
        return Err(RuntimeError::invalid("scale", format!("{scale}: must be finite and positive")));
    }
    Ok(())
}

/// Checks one strided tensor and returns the bytes it spans from its base address.
fn check_tensor(
    name: &str,
    extents: [usize; 4],
    strides: TensorStrides,
    span: BufferSpan,
    elem: usize,
) -> Result<usize> {
    if strides.dim != 1 {
        return Err(RuntimeError::invalid(
            format!("{name}.strides.dim"),
            format!("{}: the last dimension must be contiguous (stride 1)", strides.dim),
        ));
    }
    let align_elems = ACCESS_ALIGN_BYTES / elem;
    let named =
        [("batch", strides.batch, extents[0]), ("seq", strides.seq, extents[1]), ("head", strides.head, extents[2])];
    for (field, stride, extent) in named {
        if extent > 1 && stride % align_elems != 0 {
            return Err(RuntimeError::invalid(
                format!("{name}.strides.{field}"),
                format!(
                    "{stride} is not a multiple of {align_elems} elements: rows are copied in \
                     {ACCESS_ALIGN_BYTES}-byte chunks"
                ),
            ));
        }
    }
    let needed = tensor_bytes(extents, [strides.batch, strides.seq, strides.head, 1], elem)
        .filter(|&bytes| bytes / elem <= i64::MAX as usize)
        .ok_or_else(|| RuntimeError::invalid(name, "its strides address more memory than a 64-bit index can"))?;
    check_span(name, span, needed, ACCESS_ALIGN_BYTES)?;
    Ok(needed)
}

/// Bytes from the first to one past the last element addressed; 0 for an empty tensor.
fn tensor_bytes(extents: [usize; 4], strides: [usize; 4], elem: usize) -> Option<usize> {
    if extents.contains(&0) {
        return Some(0);
    }
    let mut last = 0usize;
    for (extent, stride) in extents.into_iter().zip(strides) {
        last = last.checked_add((extent - 1).checked_mul(stride)?)?;
    }
    last.checked_add(1)?.checked_mul(elem)
}

/// Distinct output elements must have distinct addresses, or CTAs race. Sufficient condition:
/// sorted by stride, each stride exceeds the span of all smaller dimensions.
fn check_no_self_overlap(name: &str, extents: [usize; 4], strides: [usize; 4]) -> Result<()> {
    if extents.contains(&0) {
        // No elements, nothing to collide.
        return Ok(());
    }
    let mut dims: Vec<(usize, usize)> = strides.into_iter().zip(extents).filter(|&(_, extent)| extent > 1).collect();
    dims.sort_unstable();
    let mut span = 0usize;
    for (stride, extent) in dims {
        if stride <= span {
            return Err(RuntimeError::invalid(
                format!("{name}.strides"),
                "distinct output elements share memory (a stride is too small for the dimensions inside it)",
            ));
        }
        span = span.saturating_add(stride.saturating_mul(extent - 1));
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::attention::sm80::launch_config;
    use tessera_codegen::{Arch, ElemType, TileConfig};

    pub(in crate::attention) fn spec() -> AttentionSpec {
        AttentionSpec::new(ElemType::BF16, 64, true, 8, 2)
    }

    pub(in crate::attention) fn problem() -> AttentionProblem {
        AttentionProblem::for_spec(&spec(), 2, 100, 130)
    }

    /// Contiguous buffers laid out one after another, 256-byte aligned like cuMemAlloc's.
    pub(in crate::attention) fn spans(p: &AttentionProblem, lse: bool) -> AttentionSpans {
        let mut next = 0x1000u64;
        let mut span = |bytes: usize| {
            let s = BufferSpan { addr: next, bytes };
            next += (bytes as u64).div_ceil(256) * 256 + 256;
            s
        };
        let (qo, kv) = (p.q_elements() * 2, p.kv_elements() * 2);
        AttentionSpans {
            q: span(qo),
            k: span(kv),
            v: span(kv),
            o: span(qo),
            lse: if lse { Some(span(p.lse_elements() * 4)) } else { None },
        }
    }

    fn run_check(p: &AttentionProblem, s: &AttentionStrides, b: &AttentionSpans, scale: f32) -> Result<()> {
        check(&spec(), p, s, b, scale)
    }

    /// The error's argument name.
    fn arg_of(result: Result<()>) -> String {
        match result {
            Err(RuntimeError::InvalidArgument { arg, .. }) => arg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn contiguous_problems_pass() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        assert!(run_check(&p, &s, &spans(&p, true), 0.125).is_ok());
        assert!(run_check(&p, &s, &spans(&p, false), 0.125).is_ok());
    }

    #[test]
    fn spec_mismatches_name_the_field() {
        let s = AttentionStrides::contiguous(&problem());
        for (p, field) in [
            (AttentionProblem { head_dim: 128, ..problem() }, "problem.head_dim"),
            (AttentionProblem { heads_q: 4, ..problem() }, "problem.heads_q"),
            (AttentionProblem { heads_kv: 1, ..problem() }, "problem.heads_kv"),
        ] {
            let err = run_check(&p, &s, &spans(&p, false), 0.125).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(field) && msg.contains("spec"), "{msg}");
        }
    }

    #[test]
    fn empty_problems_are_allowed_and_launch_nothing() {
        let geometry = spec().render(Arch::SM80).unwrap().geometry;
        for p in [
            AttentionProblem { batch: 0, ..problem() },
            AttentionProblem { seq_q: 0, ..problem() },
            AttentionProblem { seq_q: 0, seq_k: 0, ..problem() },
        ] {
            let s = AttentionStrides::contiguous(&p);
            // Zero-byte buffers are fine when nothing is addressed.
            let empty = BufferSpan { addr: 0, bytes: 0 };
            let b =
                AttentionSpans { q: empty, k: spans(&p, false).k, v: spans(&p, false).v, o: empty, lse: Some(empty) };
            assert_eq!(run_check(&p, &s, &b, 0.125).map_err(|e| e.to_string()), Ok(()), "{p:?}");
            assert_eq!(launch_config(&p, 128, geometry), None, "{p:?}");
        }
        // No keys: still a launch (every row writes 0 and -inf).
        let p = AttentionProblem { seq_k: 0, ..problem() };
        let s = AttentionStrides::contiguous(&p);
        assert!(run_check(&p, &s, &spans(&p, true), 0.125).is_ok());
        assert!(launch_config(&p, 128, geometry).is_some());
    }

    #[test]
    fn last_dimension_must_be_contiguous() {
        let p = problem();
        for tensor in ["q", "k", "v", "o"] {
            let mut s = AttentionStrides::contiguous(&p);
            let t = match tensor {
                "q" => &mut s.q,
                "k" => &mut s.k,
                "v" => &mut s.v,
                _ => &mut s.o,
            };
            t.dim = 2;
            assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), 0.125)), format!("{tensor}.strides.dim"));
        }
    }

    #[test]
    fn strides_must_keep_rows_16_byte_aligned() {
        let p = problem();
        let mut s = AttentionStrides::contiguous(&p);
        s.k.seq += 4; // 8 bytes: breaks cp.async alignment
        let b = AttentionSpans { k: BufferSpan { bytes: 1 << 24, ..spans(&p, false).k }, ..spans(&p, false) };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "k.strides.seq");
        let mut s = AttentionStrides::contiguous(&p);
        s.q.batch += 1;
        assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), 0.125)), "q.strides.batch");
        let mut s = AttentionStrides::contiguous(&p);
        s.v.head = 72; // padded heads: fine, 144 bytes
        s.v.seq = 2 * 72;
        s.v.batch = 130 * 2 * 72;
        let b = AttentionSpans { v: BufferSpan { addr: 1 << 40, bytes: 1 << 24 }, ..spans(&p, false) };
        assert_eq!(run_check(&p, &s, &b, 0.125).map_err(|e| e.to_string()), Ok(()));
    }

    #[test]
    fn strides_of_unit_dimensions_are_ignored() {
        let p = AttentionProblem { batch: 1, ..problem() };
        let mut s = AttentionStrides::contiguous(&p);
        s.q.batch = 3; // never multiplied by a non-zero index
        assert!(run_check(&p, &s, &spans(&p, false), 0.125).is_ok());
    }

    #[test]
    fn buffers_must_hold_the_highest_element_addressed() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let mut b = spans(&p, true);
        b.v.bytes -= 2;
        let err = run_check(&p, &s, &b, 0.125).unwrap_err().to_string();
        assert!(err.contains("`v`") && err.contains("address"), "{err}");
        let mut b = spans(&p, true);
        b.lse = Some(BufferSpan { bytes: p.lse_elements() * 4 - 4, ..b.lse.unwrap() });
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "lse");
        // Strided layouts need more than the element count suggests.
        let mut s2 = s;
        s2.o.seq *= 2;
        s2.o.batch *= 2;
        assert_eq!(arg_of(run_check(&p, &s2, &spans(&p, false), 0.125)), "o");
    }

    #[test]
    fn buffers_must_be_aligned() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let mut b = spans(&p, false);
        b.q.addr += 8;
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "q");
    }

    #[test]
    fn outputs_must_not_overlap_inputs_or_themselves() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let mut b = spans(&p, true);
        b.o = b.q;
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "o");
        let mut b = spans(&p, true);
        b.lse = Some(BufferSpan { addr: b.o.addr, bytes: p.lse_elements() * 4 });
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "lse");
        // Inputs may share memory (K and V from one buffer is a read-only alias).
        let mut b = spans(&p, false);
        b.v = b.k;
        assert!(run_check(&p, &s, &b, 0.125).is_ok());
        // Heads written onto each other.
        let mut s2 = s;
        s2.o.head = 0;
        assert_eq!(arg_of(run_check(&p, &s2, &spans(&p, false), 0.125)), "o.strides");
    }

    #[test]
    fn scale_must_be_finite_and_positive() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        for bad in [0.0, -0.5, f32::NAN, f32::INFINITY] {
            assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), bad)), "scale", "{bad}");
        }
    }

    #[test]
    fn sizes_beyond_the_kernel_integers_are_rejected() {
        let s = AttentionStrides::contiguous(&problem());
        let b = spans(&problem(), false);
        let p = AttentionProblem { seq_q: i32::MAX as usize, ..problem() };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "problem.seq_q");
        let p = AttentionProblem { seq_k: 1 << 40, ..problem() };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "problem.seq_k");
        let p = AttentionProblem { batch: 70_000, ..problem() };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "problem.batch");
        // Strides whose highest address overflows.
        let p = problem();
        let mut s = AttentionStrides::contiguous(&p);
        s.k.batch = (usize::MAX / 2) & !7;
        assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), 0.125)), "k");
    }

    #[test]
    fn gqa_and_mqa_layouts_check() {
        for (hq, hkv) in [(8, 8), (8, 2), (8, 1)] {
            let spec = AttentionSpec::new(ElemType::F16, 128, false, hq, hkv).with_tile(TileConfig::new(64, 64, 4, 2));
            let p = AttentionProblem::for_spec(&spec, 3, 17, 33);
            let s = AttentionStrides::contiguous(&p);
            assert!(check(&spec, &p, &s, &spans(&p, true), p.default_scale()).is_ok());
        }
    }

}
