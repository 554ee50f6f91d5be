use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::common::SpecError;

/// A CUDA compute capability that Tessera generates code for.
///
/// The limits below are the CUDA programming guide's per-block maxima ("Technical Specifications
/// per Compute Capability"); the shared-memory figure is the opt-in maximum for dynamic shared memory,
/// which the runtime requests with `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
///
/// `sm_90a` is compute capability 9.0 with its architecture-specific features (`wgmma`, `setmaxnreg`,
/// the tensor memory accelerator): code built for it runs on 9.0 devices only, which is what a
/// CUDA backend on an H100/H200 is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Arch {
    /// `major * 10 + minor`, e.g. 90 for sm_90.
    pub sm: u32,
    /// The `a` suffix: architecture-specific features, not forward compatible. Absent in older JSON.
    #[serde(default, skip_serializing_if = "is_false")]
    pub arch_specific: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Arch {
    pub const SM80: Arch = Arch { sm: 80, arch_specific: false };
    pub const SM86: Arch = Arch { sm: 86, arch_specific: false };
    pub const SM89: Arch = Arch { sm: 89, arch_specific: false };
    pub const SM90: Arch = Arch { sm: 90, arch_specific: false };
    /// Hopper with `wgmma` and the tensor memory accelerator.
    pub const SM90A: Arch = Arch { sm: 90, arch_specific: true };
    /// Every architecture the mma.sync code path supports (bf16 `mma.sync` needs sm_80).
    pub const SUPPORTED: [Arch; 5] = [Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90, Arch::SM90A];
    const SUPPORTED_NAMES: &'static str = "sm_80, sm_86, sm_89, sm_90, sm_90a";

    /// Registers one thread can address; the ISA encodes register numbers in 8 bits.
    pub const MAX_REGISTERS_PER_THREAD: u32 = 255;
    pub const MAX_THREADS_PER_BLOCK: u32 = 1024;

    pub fn from_compute_capability(major: u32, minor: u32) -> Result<Arch, SpecError> {
        Arch::new(major * 10 + minor)
    }

    pub fn new(sm: u32) -> Result<Arch, SpecError> {
        let arch = Arch { sm, arch_specific: false };
        if Arch::SUPPORTED.contains(&arch) {
            Ok(arch)
        } else {
            Err(SpecError::unsupported("arch", format!("sm_{sm}"), Arch::SUPPORTED_NAMES))
        }
    }

    /// Whether `wgmma`, `setmaxnreg` and tensor-map bulk copies are available (sm_90a).
    pub fn has_wgmma(self) -> bool {
        self.sm == 90 && self.arch_specific
    }

    fn suffix(self) -> &'static str {
        if self.arch_specific {
            "a"
        } else {
            ""
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
        format!("compute_{}{}", self.sm, self.suffix())
    }

    /// NVRTC's `--gpu-architecture` value when compiling to CUBIN (real architecture).
    pub fn sm_name(self) -> String {
        format!("sm_{}{}", self.sm, self.suffix())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}{}", self.sm, self.suffix())
    }
}

impl FromStr for Arch {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let unsupported = || SpecError::unsupported("arch", s, Arch::SUPPORTED_NAMES);
        let name = s.trim_start_matches("sm_").trim_start_matches("compute_");
        let (digits, specific) = match name.strip_suffix('a') {
            Some(digits) => (digits, true),
            None => (name, false),
        };
        let sm = digits.parse::<u32>().map_err(|_| unsupported())?;
        let arch = Arch { sm, arch_specific: specific };
        if Arch::SUPPORTED.contains(&arch) {
            Ok(arch)
        } else {
            Err(unsupported())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm_90a_names_parse_and_serialise() {
        assert_eq!("sm_90a".parse::<Arch>().unwrap(), Arch::SM90A);
        assert_eq!("sm_90".parse::<Arch>().unwrap(), Arch::SM90);
        assert_eq!(Arch::SM90A.to_string(), "sm_90a");
        assert_eq!(Arch::SM90A.compute_name(), "compute_90a");
        assert_eq!(Arch::SM90A.sm_name(), "sm_90a");
        assert!(Arch::SM90A.has_wgmma() && !Arch::SM90.has_wgmma());
        assert_eq!(Arch::SM90A.max_shared_memory_per_block(), Arch::SM90.max_shared_memory_per_block());
        let err = "sm_80a".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("sm_80a") && err.contains("sm_90a"), "{err}");
        // Plain architectures serialise as before (tuning databases written earlier stay valid).
        assert_eq!(serde_json::to_string(&Arch::SM90).unwrap(), r#"{"sm":90}"#);
        assert_eq!(serde_json::from_str::<Arch>(r#"{"sm":90}"#).unwrap(), Arch::SM90);
        let a = serde_json::to_string(&Arch::SM90A).unwrap();
        assert_eq!(serde_json::from_str::<Arch>(&a).unwrap(), Arch::SM90A);
    }
}
