//! Argument checks and chunk bookkeeping shared by the elementwise and multi-tensor launchers
//! (cast, unscale, AdamW, the scale updates, the window and user elementwise kernels, the tuner's
//! targets): element buffers and device scalars, disjoint ranges, the chunk grid, and the bytes of
//! a device tensor table. Several families use them, so they live in `common`.

use tessera_codegen::{ElemType, KernelParams};

use crate::common::error::{Result, RuntimeError};
use crate::device::backend::{DeviceBuffer, LaunchConfig};

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

/// The bytes of a device table: its entries (generated from `tessera_codegen`, so without padding)
/// as they lie in memory, one after the other.
pub fn table_bytes<E: KernelParams>(entries: &[E]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.as_bytes().iter().copied()).collect()
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
