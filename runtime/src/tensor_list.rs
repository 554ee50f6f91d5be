//! Argument checks and chunk bookkeeping shared by the elementwise and multi-tensor launchers
//! (cast, unscale, AdamW, the scale updates).

use tessera_codegen::ElemType;

use crate::backend::{DeviceBuffer, LaunchConfig};
use crate::error::{Result, RuntimeError};

/// One strided 2-D tensor argument of a launch: (name, rows, row length, row stride in elements,
/// span if given, element bytes, required alignment, whether the stride must be whole 16-byte chunks).
pub type MatrixArg<'a> = (&'a str, usize, usize, usize, Option<crate::attention::BufferSpan>, usize, usize, bool);

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
        if chunked && rows > 1 && stride % crate::gemm::CHUNK_ELEMS != 0 {
            return Err(RuntimeError::invalid(
                format!("{name}.stride"),
                format!(
                    "{stride} is not a multiple of {}: an aligned kernel needs every row 16-byte aligned for cp.async (use a spec with aligned: false)",
                    crate::gemm::CHUNK_ELEMS
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

/// `span` covers `needed` bytes, aligned to `align`, without wrapping around.
pub fn check_span(name: &str, span: crate::attention::BufferSpan, needed: usize, align: usize) -> Result<()> {
    if needed == 0 {
        return Ok(());
    }
    if span.bytes < needed {
        return Err(RuntimeError::invalid(
            name,
            format!("the buffer has {} bytes, but the shape and strides address {needed}", span.bytes),
        ));
    }
    if span.addr % align as u64 != 0 {
        return Err(RuntimeError::invalid(name, format!("address {:#x} is not {align}-byte aligned", span.addr)));
    }
    if span.addr.checked_add(needed as u64).is_none() {
        return Err(RuntimeError::invalid(name, "the address range wraps around"));
    }
    Ok(())
}

/// One CTA per chunk; grid x is limited to 2^31 - 1.
const MAX_CHUNKS: u64 = i32::MAX as u64;

/// `buffer` holds `len` elements of `t`, aligned to the element size.
pub fn check_elems(name: &str, buffer: &DeviceBuffer, len: usize, t: ElemType) -> Result<()> {
    let needed = len
        .checked_mul(t.size_bytes())
        .ok_or_else(|| RuntimeError::invalid(name, format!("{len} elements overflow the address space")))?;
    if buffer.bytes() < needed {
        return Err(RuntimeError::invalid(
            name,
            format!("the buffer has {} bytes; {len} {t} elements need {needed}", buffer.bytes()),
        ));
    }
    if len > 0 && buffer.addr() % t.size_bytes() as u64 != 0 {
        return Err(RuntimeError::invalid(name, format!("address {:#x} is not aligned to its {t} elements", buffer.addr())));
    }
    Ok(())
}

/// `buffer` holds one 4-byte scalar, 4-byte aligned.
pub fn check_scalar(name: &str, buffer: &DeviceBuffer) -> Result<()> {
    if buffer.bytes() < 4 || buffer.addr() % 4 != 0 {
        return Err(RuntimeError::invalid(name, "must be a 4-byte aligned device scalar (f32 or i32)"));
    }
    Ok(())
}

/// No two of the named address ranges overlap (in-place kernels would otherwise update an element
/// twice or read what another thread already wrote). Empty ranges are ignored.
pub fn check_disjoint(mut ranges: Vec<(String, u64, usize)>) -> Result<()> {
    ranges.retain(|r| r.2 > 0);
    ranges.sort_by_key(|r| r.1);
    for pair in ranges.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.1 + a.2 as u64 > b.1 {
            return Err(RuntimeError::invalid(b.0.clone(), format!("its memory overlaps `{}`'s", a.0)));
        }
    }
    Ok(())
}

/// First chunk of every tensor (`chunk` elements per chunk) and the total: tensor i covers chunks
/// `first[i] .. first[i] + ceil(len_i / chunk)`.
pub fn chunk_offsets(lens: impl Iterator<Item = usize>, chunk: u64) -> Result<(Vec<i64>, u64)> {
    let mut first = Vec::new();
    let mut total = 0u64;
    for len in lens {
        first.push(total as i64);
        total += (len as u64).div_ceil(chunk);
        if total > MAX_CHUNKS {
            return Err(RuntimeError::invalid(
                "tensors",
                format!("need more than {MAX_CHUNKS} chunks of {chunk} elements; use a larger tile"),
            ));
        }
    }
    Ok((first, total))
}

/// One CTA of `threads` per chunk; `None` when there is nothing to do.
pub fn chunk_grid(chunks: u64, threads: u32) -> Option<LaunchConfig> {
    (chunks > 0).then_some(LaunchConfig { grid: [chunks as u32, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: 0 })
}

/// Little-endian bytes of `#[repr(C)]` table entries without padding.
pub fn table_bytes<E: Copy>(entries: &[E]) -> Vec<u8> {
    let len = std::mem::size_of_val(entries);
    // SAFETY: callers pass `repr(C)` structs of integer fields without padding (asserted where
    // each entry type is defined).
    unsafe { std::slice::from_raw_parts(entries.as_ptr().cast::<u8>(), len) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_overlaps() {
        let (first, total) = chunk_offsets([5usize, 0, 4096, 1].into_iter(), 4096).unwrap();
        assert_eq!(first, [0, 1, 1, 2]);
        assert_eq!(total, 3);
        check_disjoint(vec![("a".into(), 0, 16), ("b".into(), 16, 8), ("c".into(), 100, 0)]).unwrap();
        let e = check_disjoint(vec![("a".into(), 0, 16), ("b".into(), 8, 8)]).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        assert!(chunk_grid(0, 256).is_none());
    }
}
