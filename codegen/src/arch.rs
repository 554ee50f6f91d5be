use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A CUDA compute capability that Tessera generates code for.
///
/// The limits below are the CUDA programming guide's per-block maxima ("Technical Specifications
/// per Compute Capability"); the shared-memory figure is the opt-in maximum for dynamic shared memory,
/// which the runtime requests with `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Arch {
    /// `major * 10 + minor`, e.g. 90 for sm_90.
    pub sm: u32,
}

impl Arch {
    pub const SM80: Arch = Arch { sm: 80 };
    pub const SM86: Arch = Arch { sm: 86 };
    pub const SM89: Arch = Arch { sm: 89 };
    pub const SM90: Arch = Arch { sm: 90 };
    /// Every architecture the mma.sync code path supports (bf16 `mma.sync` needs sm_80).
    pub const SUPPORTED: [Arch; 4] = [Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90];

    /// Registers one thread can address; the ISA encodes register numbers in 8 bits.
    pub const MAX_REGISTERS_PER_THREAD: u32 = 255;
    pub const MAX_THREADS_PER_BLOCK: u32 = 1024;

    pub fn from_compute_capability(major: u32, minor: u32) -> Result<Arch, SpecError> {
        Arch::new(major * 10 + minor)
    }

    pub fn new(sm: u32) -> Result<Arch, SpecError> {
        let arch = Arch { sm };
        if Arch::SUPPORTED.contains(&arch) {
            Ok(arch)
        } else {
            Err(SpecError::unsupported("arch", format!("sm_{sm}"), "sm_80, sm_86, sm_89, sm_90"))
        }
    }

    /// Opt-in dynamic shared memory per block, in bytes.
    pub fn max_shared_memory_per_block(self) -> u32 {
        match self.sm {
            80 => 163 * 1024,
            86 | 89 => 99 * 1024,
            90 => 227 * 1024,
            // Unknown architectures get the smallest figure of the family.
            _ => 99 * 1024,
        }
    }

    /// NVRTC's `--gpu-architecture` value when compiling to PTX (virtual architecture).
    pub fn compute_name(self) -> String {
        format!("compute_{}", self.sm)
    }

    /// NVRTC's `--gpu-architecture` value when compiling to CUBIN (real architecture).
    pub fn sm_name(self) -> String {
        format!("sm_{}", self.sm)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}", self.sm)
    }
}

impl FromStr for Arch {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let digits = s.trim_start_matches("sm_").trim_start_matches("compute_");
        let sm = digits
            .parse::<u32>()
            .map_err(|_| SpecError::unsupported("arch", s, "sm_80, sm_86, sm_89, sm_90"))?;
        Arch::new(sm)
    }
}
