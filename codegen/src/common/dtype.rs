use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::common::SpecError;

/// Element type of a kernel's tensor-core inputs. Accumulation is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F16,
    BF16,
}

impl DType {
    pub const ALL: [DType; 2] = [DType::F16, DType::BF16];

    /// Name used on the CLI, in kernel names and in the tuning database.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// The storage type defined by the template prelude (`templates/common/tessera.cuh`).
    pub fn cuda_type(self) -> &'static str {
        match self {
            DType::F16 => "tessera::f16",
            DType::BF16 => "tessera::bf16",
        }
    }

    pub fn size_bytes(self) -> usize {
        2
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.to_ascii_lowercase().as_str() {
            "f16" | "fp16" | "half" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            _ => Err(SpecError::unsupported("dtype", s, "f16, bf16")),
        }
    }
}
