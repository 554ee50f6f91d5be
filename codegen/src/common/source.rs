use sha2::{Digest, Sha256};

/// What a rendered kernel needs to be launched, apart from the grid (which depends on the shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaunchGeometry {
    pub threads_per_block: u32,
    pub dynamic_shared_bytes: u32,
}

/// A generated CUDA C++ translation unit with exactly one `extern "C"` entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSource {
    /// The `extern "C"` entry point's name.
    pub name: String,
    /// Self-contained CUDA C++ (no toolkit headers), ready for NVRTC.
    pub cuda_src: String,
    /// Lower-case hex SHA-256 of `name` and `cuda_src`: the cache key's content part.
    pub hash: String,
    pub geometry: LaunchGeometry,
}

impl KernelSource {
    pub fn new(name: String, cuda_src: String, geometry: LaunchGeometry) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update(cuda_src.as_bytes());
        let hash = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        KernelSource { name, cuda_src, hash, geometry }
    }

    /// The 1-based source line `line` of the generated source, for error messages.
    pub fn line(&self, line: usize) -> Option<&str> {
        line.checked_sub(1).and_then(|i| self.cuda_src.lines().nth(i))
    }
}
