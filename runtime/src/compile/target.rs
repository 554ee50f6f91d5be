//! What a compile is for and what it yields: the [`Target`] (architecture and [`OutputKind`]) and
//! the [`CompiledModule`] image. The compiler, the kernel cache and the backends (which load
//! modules) all speak these types, so they stand apart from the compiler that makes them.

use std::fmt;
use std::time::Duration;

use tessera_codegen::Arch;

/// What NVRTC produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// PTX for the virtual architecture `compute_XX`: what ptxas inspects, and what a driver can JIT
    /// for any newer GPU.
    Ptx,
    /// Machine code for exactly `sm_XX`: what the CUDA backend loads, so no driver JIT happens at
    /// load time.
    Cubin,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Ptx => "ptx",
            OutputKind::Cubin => "cubin",
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An architecture and an output kind: everything about a compile that is not the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub arch: Arch,
    pub output: OutputKind,
}

impl Target {
    pub fn ptx(arch: Arch) -> Target {
        Target { arch, output: OutputKind::Ptx }
    }

    pub fn cubin(arch: Arch) -> Target {
        Target { arch, output: OutputKind::Cubin }
    }

    /// NVRTC's `--gpu-architecture` value: virtual for PTX, real for CUBIN.
    pub fn gpu_architecture(self) -> String {
        match self.output {
            OutputKind::Ptx => self.arch.compute_name(),
            OutputKind::Cubin => self.arch.sm_name(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.gpu_architecture(), self.output)
    }
}

/// A compiled kernel image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledModule {
    /// The `extern "C"` entry point.
    pub name: String,
    /// [`KernelSource::hash`](tessera_codegen::KernelSource::hash) of the source it was compiled from.
    pub source_hash: String,
    pub arch: Arch,
    pub output: OutputKind,
    /// PTX text (no terminating NUL) or CUBIN bytes.
    pub image: Vec<u8>,
    /// NVRTC's log (warnings); empty when the image came from a cache.
    pub log: String,
    pub from_cache: bool,
    /// Time spent in NVRTC; zero for cache hits.
    pub compile_time: Duration,
}

impl CompiledModule {
    pub fn target(&self) -> Target {
        Target { arch: self.arch, output: self.output }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_display_names_the_architecture_flag() {
        assert_eq!(Target::ptx(Arch::SM80).to_string(), "compute_80 (ptx)");
        assert_eq!(Target::cubin(Arch::SM90).to_string(), "sm_90 (cubin)");
    }
}
