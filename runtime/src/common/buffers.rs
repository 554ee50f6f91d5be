//! Host-side views of device buffers, shared by every family's launcher: the address range a
//! launcher checks ([`BufferSpan`], [`check_span`]), the NaN patterns outputs are poisoned with
//! before a launch ([`POISON_16`], [`POISON_F32`], [`poison`]), and the one host codec of every
//! element type a kernel reads or writes ([`encode`], [`decode`]): f32 values to stored bytes
//! (round to nearest even; fp8 saturating, as the kernels convert) and back; and the one place
//! buffer sizes from user input are computed ([`elements`], [`byte_len`]) and host buffers of
//! those sizes allocated without aborting ([`host_vec`], [`zeroed_bytes`], [`poisoned_bytes`]).
//!
//! No family owns these (attention, GEMM, LoRA, the amp kernels, the window kernels and the tuner
//! all upload and download through them), so they live in `common`.

use half::{bf16, f16};
use tessera_codegen::ElemType;

use crate::common::error::{Result, RuntimeError};
use crate::common::fp8::{f32_to_fp8, fp8_to_f32, Fp8Format};
use crate::device::backend::DeviceBuffer;

/// A device address range, as a launcher's argument check (e.g. [`crate::attention::check`]) sees
/// a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferSpan {
    pub addr: u64,
    pub bytes: usize,
}

impl From<&DeviceBuffer> for BufferSpan {
    fn from(buffer: &DeviceBuffer) -> BufferSpan {
        BufferSpan { addr: buffer.addr(), bytes: buffer.bytes() }
    }
}

/// `span` covers `needed` bytes, aligned to `align`, without wrapping around.
pub fn check_span(name: &str, span: BufferSpan, needed: usize, align: usize) -> Result<()> {
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

/// The 16-bit pattern written into outputs before a launch: a NaN in both f16 and bf16, so an
/// element the kernel fails to write cannot pass for a result.
pub const POISON_16: u16 = 0x7FFF;
/// The same for the f32 log-sum-exp.
pub const POISON_F32: u32 = 0x7FFF_FFFF;

/// The reference's fp8 format of an fp8 element type.
pub fn fp8_format(t: ElemType) -> Option<Fp8Format> {
    match t {
        ElemType::E4M3 => Some(Fp8Format::E4M3),
        ElemType::E5M2 => Some(Fp8Format::E5M2),
        _ => None,
    }
}

/// Little-endian stored bytes of `values` in type `t`: round to nearest even; fp8 saturating, as
/// the kernels convert.
pub fn encode(values: &[f32], t: ElemType) -> Vec<u8> {
    match t {
        ElemType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ElemType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        ElemType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        ElemType::E4M3 | ElemType::E5M2 => {
            let format = fp8_format(t).expect("an fp8 type");
            values.iter().map(|&v| f32_to_fp8(v, format)).collect()
        }
    }
}

/// The values of stored bytes of type `t`, widened exactly to f32.
pub fn decode(bytes: &[u8], t: ElemType) -> Vec<f32> {
    match t {
        ElemType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ElemType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        ElemType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        ElemType::E4M3 | ElemType::E5M2 => {
            let format = fp8_format(t).expect("an fp8 type");
            bytes.iter().map(|&b| fp8_to_f32(b, format)).collect()
        }
    }
}

/// NaN bytes for `n` elements of `t` (outputs are poisoned with them before a launch).
pub fn poison(n: usize, t: ElemType) -> Vec<u8> {
    poison_pattern(t).repeat(n)
}

/// One element of [`poison`].
fn poison_pattern(t: ElemType) -> &'static [u8] {
    const POISON_16_BYTES: [u8; 2] = POISON_16.to_le_bytes();
    const POISON_F32_BYTES: [u8; 4] = POISON_F32.to_le_bytes();
    /// A NaN in both fp8 formats.
    const POISON_FP8: [u8; 1] = [0x7f];
    match t {
        ElemType::F32 => &POISON_F32_BYTES,
        ElemType::F16 | ElemType::BF16 => &POISON_16_BYTES,
        ElemType::E4M3 | ElemType::E5M2 => &POISON_FP8,
    }
}

// ---- sizes from user input ----
//
// Every host or device buffer sized from a caller's shape goes through these: the products are
// checked (a wrapped count would size a buffer smaller than the kernel's reach), and the host
// allocation is fallible, so a size the machine cannot give is an error naming the argument
// instead of an abort.

/// Elements of a tensor of extents `shape` (1 for a scalar), or `None` when the product does not
/// fit in `usize`.
pub fn elements(shape: &[usize]) -> Option<usize> {
    // An empty extent makes the product 0 whatever the others are.
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// [`elements`], or an error naming `arg` when the product overflows.
pub fn element_count(arg: &str, shape: &[usize]) -> Result<usize> {
    elements(shape).ok_or_else(|| RuntimeError::invalid(arg, format!("shape {shape:?} has more elements than memory can address")))
}

/// Bytes of `elements` elements of `t`, or an error naming `arg` when they overflow.
pub fn byte_len(arg: &str, elements: usize, t: ElemType) -> Result<usize> {
    elements
        .checked_mul(t.size_bytes())
        .ok_or_else(|| RuntimeError::invalid(arg, format!("{elements} {t} elements are more bytes than memory can address")))
}

/// An empty vector with room for `len` items, or an error naming `arg` when the host cannot
/// provide it.
pub fn host_vec<T>(arg: &str, len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| match std::mem::size_of::<T>() {
        1 => RuntimeError::invalid(arg, format!("{len} bytes do not fit in host memory")),
        size => RuntimeError::invalid(arg, format!("{len} elements of {size} bytes do not fit in host memory")),
    })?;
    Ok(v)
}

/// `len` zero bytes on the host (a download target or a zeroed workspace), or an error naming
/// `arg` when the host cannot provide them.
pub fn zeroed_bytes(arg: &str, len: usize) -> Result<Vec<u8>> {
    let mut v = host_vec(arg, len)?;
    v.resize(len, 0);
    Ok(v)
}

/// [`poison`] for an output sized from user input: its byte count checked and its allocation
/// fallible, both errors naming `arg`.
pub fn poisoned_bytes(arg: &str, n: usize, t: ElemType) -> Result<Vec<u8>> {
    let mut v = host_vec(arg, byte_len(arg, n, t)?)?;
    let pattern = poison_pattern(t);
    for _ in 0..n {
        v.extend_from_slice(pattern);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_poison() {
        let v = [0.0, -1.5, 3.5, 448.0];
        for t in ElemType::ALL {
            assert_eq!(decode(&encode(&v, t), t), v, "{t}");
            assert!(decode(&poison(3, t), t).iter().all(|x| x.is_nan()), "{t}");
            assert_eq!(encode(&v, t).len(), v.len() * t.size_bytes());
        }
        // Saturation to fp8's largest finite value.
        assert_eq!(decode(&encode(&[1e6], ElemType::E4M3), ElemType::E4M3), [448.0]);
    }

    #[test]
    fn poison_is_nan_in_every_output_type() {
        for out in ElemType::MMA_OUTPUTS {
            assert!(decode(&poison(3, out), out).iter().all(|v| v.is_nan()), "{out}");
        }
    }

    #[test]
    fn sizes_are_checked_and_allocations_fallible() {
        assert_eq!(elements(&[]), Some(1));
        assert_eq!(elements(&[2, 3, 4]), Some(24));
        assert_eq!(elements(&[3, 0, usize::MAX]), Some(0));
        assert_eq!(elements(&[usize::MAX, 2, 0]), Some(0));
        // (3, 6148914691236517206) wraps to 2 in unchecked arithmetic.
        assert_eq!(elements(&[3, 6_148_914_691_236_517_206]), None);
        assert_eq!(elements(&[1 << 32, 1 << 32]), None);
        let e = element_count("q", &[1 << 32, 1 << 32]).unwrap_err().to_string();
        assert!(e.contains("`q`") && e.contains("4294967296"), "{e}");
        assert_eq!(byte_len("y", 6, ElemType::F32).unwrap(), 24);
        let e = byte_len("y", usize::MAX / 2, ElemType::F32).unwrap_err().to_string();
        assert!(e.contains("`y`"), "{e}");
        let e = zeroed_bytes("workspace", usize::MAX).unwrap_err().to_string();
        assert!(e.contains("`workspace`") && e.contains("host memory"), "{e}");
        let e = poisoned_bytes("lse", usize::MAX / 4, ElemType::F32).unwrap_err().to_string();
        assert!(e.contains("`lse`"), "{e}");
        assert_eq!(zeroed_bytes("w", 3).unwrap(), [0, 0, 0]);
        for t in ElemType::ALL {
            assert_eq!(poisoned_bytes("y", 5, t).unwrap(), poison(5, t), "{t}");
        }
    }

    #[test]
    fn poison_patterns_are_nan() {
        assert!(decode(&POISON_16.to_le_bytes(), ElemType::F16)[0].is_nan());
        assert!(decode(&POISON_16.to_le_bytes(), ElemType::BF16)[0].is_nan());
        assert!(f32::from_bits(POISON_F32).is_nan());
    }
}
