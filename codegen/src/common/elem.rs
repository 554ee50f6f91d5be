//! The one element type of every family: the 16-bit inputs of the tensor-core kernels
//! ([`ElemType::MMA_INPUTS`]), their outputs ([`ElemType::MMA_OUTPUTS`]), and the f32 and fp8
//! types of the mixed-precision training kernels. A spec field names the types it allows; its
//! `validate` rejects the others with the allowed list.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::common::params::DeviceEnum;
use crate::common::SpecError;

/// An element type. Shared with the templates as the `ELEM_*` codes of `ElemCode` (generated from
/// this enum), which the multi-tensor tables store per tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, DeviceEnum)]
#[serde(rename_all = "lowercase")]
#[repr(i32)]
#[device_enum(prefix = "ELEM_", cuda = "ElemCode")]
pub enum ElemType {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    /// fp8 E4M3 ("FN": no infinities; largest finite 448).
    E4M3 = 3,
    /// fp8 E5M2 (IEEE-like; largest finite 57344).
    E5M2 = 4,
}

impl ElemType {
    pub const ALL: [ElemType; 5] = [ElemType::F32, ElemType::F16, ElemType::BF16, ElemType::E4M3, ElemType::E5M2];
    /// The gradient and model-weight types of the optimizer kernels.
    pub const FLOAT: [ElemType; 3] = [ElemType::F32, ElemType::F16, ElemType::BF16];
    /// The inputs of the tensor-core kernels (attention, GEMM, LoRA): `mma` / `wgmma` operands.
    pub const MMA_INPUTS: [ElemType; 2] = [ElemType::F16, ElemType::BF16];
    /// The outputs (and C / bias / residual) of the GEMM and LoRA kernels.
    pub const MMA_OUTPUTS: [ElemType; 3] = [ElemType::F16, ElemType::BF16, ElemType::F32];

    /// `Ok` when `self` is one of `allowed`, else the error naming `field` and the allowed types.
    pub fn check_in(self, field: &'static str, allowed: &[ElemType]) -> Result<(), SpecError> {
        if allowed.contains(&self) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
        Err(SpecError::unsupported(field, self, names.join(", ")))
    }

    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::BF16 => "bf16",
            ElemType::E4M3 => "e4m3",
            ElemType::E5M2 => "e5m2",
        }
    }

    /// The type the templates use (`templates/common/tessera.cuh`, `templates/amp/amp.cuh`).
    pub fn cuda_type(self) -> &'static str {
        match self {
            ElemType::F32 => "float",
            ElemType::F16 => "tessera::f16",
            ElemType::BF16 => "tessera::bf16",
            ElemType::E4M3 => "tessera::e4m3",
            ElemType::E5M2 => "tessera::e5m2",
        }
    }

    /// The templates' `ElemCode`: the enum's `ELEM_*` code (the multi-tensor tables store the
    /// type itself, declared `ElemCode` in CUDA).
    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::F32 => 4,
            ElemType::F16 | ElemType::BF16 => 2,
            ElemType::E4M3 | ElemType::E5M2 => 1,
        }
    }

    pub fn is_fp8(self) -> bool {
        matches!(self, ElemType::E4M3 | ElemType::E5M2)
    }

    /// Largest finite value.
    pub fn max_finite(self) -> f32 {
        match self {
            ElemType::F32 => f32::MAX,
            ElemType::F16 => 65504.0,
            ElemType::BF16 => 3.389_531_4e38,
            ElemType::E4M3 => 448.0,
            ElemType::E5M2 => 57344.0,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ElemType {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(ElemType::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(ElemType::F16),
            "bf16" | "bfloat16" => Ok(ElemType::BF16),
            "e4m3" | "fp8_e4m3" | "float8_e4m3fn" => Ok(ElemType::E4M3),
            "e5m2" | "fp8_e5m2" | "float8_e5m2" => Ok(ElemType::E5M2),
            _ => Err(SpecError::unsupported("dtype", s, "f32, f16, bf16, e4m3, e5m2")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tuning databases store the serde names; the tables store the codes.
    #[test]
    fn names_and_codes_are_stable() {
        let expected = [(0, "f32", "ELEM_F32"), (1, "f16", "ELEM_F16"), (2, "bf16", "ELEM_BF16"), (3, "e4m3", "ELEM_E4M3"), (4, "e5m2", "ELEM_E5M2")];
        for (t, (code, name, cuda)) in ElemType::ALL.into_iter().zip(expected) {
            assert_eq!((t.code(), t.name(), t.cuda_name()), (code, name, cuda));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<ElemType>(&format!("\"{name}\"")).unwrap(), t);
        }
        assert_eq!(<ElemType as DeviceEnum>::CUDA_NAME, Some("ElemCode"));
    }
}
