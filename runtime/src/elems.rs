//! Host encoding of the element types of the mixed-precision kernels ([`ElemType`]): f32 values
//! to stored bytes (round to nearest even; fp8 saturating, as the kernels convert) and back.

use half::{bf16, f16};
use tessera_codegen::ElemType;

use crate::reference::{f32_to_fp8, fp8_to_f32, Fp8Format};

/// The reference's fp8 format of an fp8 element type.
pub fn fp8_format(t: ElemType) -> Option<Fp8Format> {
    match t {
        ElemType::E4M3 => Some(Fp8Format::E4M3),
        ElemType::E5M2 => Some(Fp8Format::E5M2),
        _ => None,
    }
}

/// Little-endian stored bytes of `values` in type `t`.
pub fn encode_elems(values: &[f32], t: ElemType) -> Vec<u8> {
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
pub fn decode_elems(bytes: &[u8], t: ElemType) -> Vec<f32> {
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
pub fn poison_elems(n: usize, t: ElemType) -> Vec<u8> {
    match t {
        ElemType::F32 => 0x7fff_ffffu32.to_le_bytes().repeat(n),
        ElemType::F16 | ElemType::BF16 => 0x7fffu16.to_le_bytes().repeat(n),
        ElemType::E4M3 | ElemType::E5M2 => vec![0x7f; n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_poison() {
        let v = [0.0, -1.5, 3.5, 448.0];
        for t in ElemType::ALL {
            assert_eq!(decode_elems(&encode_elems(&v, t), t), v, "{t}");
            assert!(decode_elems(&poison_elems(3, t), t).iter().all(|x| x.is_nan()), "{t}");
            assert_eq!(encode_elems(&v, t).len(), v.len() * t.size_bytes());
        }
        // Saturation to fp8's largest finite value.
        assert_eq!(decode_elems(&encode_elems(&[1e6], ElemType::E4M3), ElemType::E4M3), [448.0]);
    }
}
