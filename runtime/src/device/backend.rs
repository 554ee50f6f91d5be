//! The device abstraction launchers are written against: memory, modules, launches, timing.
//!
//! Two implementations: [`crate::device::cuda::CudaBackend`] (the CUDA driver API, CUBIN) and
//! [`crate::device::sim::SimBackend`], a CPU simulator that interprets the same kernels' PTX on the
//! host; [`crate::device::open::open_backend`] picks one. Buffers and kernels are plain handles that
//! remember which backend instance created them, so a backend can reject a handle it does not own
//! instead of handing the driver a foreign address.
//!
//! This file holds the trait and the types that travel through it (including the
//! [`DeviceFingerprint`] tuned tiles are keyed by), and imports no implementation.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tessera_codegen::Arch;

use crate::common::error::{Result, RuntimeError};
use crate::compile::nvrtc::nvrtc_version;
use crate::compile::target::{CompiledModule, OutputKind, Target};

/// Which backend to open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// CUDA if a usable GPU is present, else the simulator.
    #[default]
    Auto,
    Cuda,
    Sim,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Auto, BackendKind::Cuda, BackendKind::Sim];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cuda => "cuda",
            BackendKind::Sim => "sim",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendKind::Auto),
            "cuda" | "gpu" => Ok(BackendKind::Cuda),
            "sim" | "simulator" | "cpu" => Ok(BackendKind::Sim),
            _ => Err(RuntimeError::invalid("backend", format!("`{s}`: expected auto, cuda or sim"))),
        }
    }
}

/// Identifies one backend instance; handles carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendId(u64);

impl BackendId {
    /// A process-unique id for a new backend instance.
    pub fn fresh() -> BackendId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        BackendId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A device allocation. Not freed on drop (freeing needs the backend): pass it to
/// [`Backend::free`], or let the backend free everything it still owns when it is dropped.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DeviceBuffer {
    owner: BackendId,
    addr: u64,
    bytes: usize,
}

impl DeviceBuffer {
    /// For backend implementations. A backend validates every buffer it is given, so a handle made
    /// up here is rejected, not dereferenced.
    pub fn new(owner: BackendId, addr: u64, bytes: usize) -> DeviceBuffer {
        DeviceBuffer { owner, addr, bytes }
    }

    pub fn owner(&self) -> BackendId {
        self.owner
    }

    /// The device address, as a kernel parameter wants it. 0 for an empty buffer.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A loaded kernel entry point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    owner: BackendId,
    index: usize,
    name: String,
}

impl Kernel {
    /// For backend implementations: `index` is the backend's own table index.
    pub fn new(owner: BackendId, index: usize, name: String) -> Kernel {
        Kernel { owner, index, name }
    }

    pub fn owner(&self) -> BackendId {
        self.owner
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
}

impl LaunchConfig {
    /// Rejects shapes no CUDA device accepts, with the offending field named.
    pub fn validate(&self) -> Result<()> {
        const MAX_GRID: [u32; 3] = [i32::MAX as u32, 65_535, 65_535];
        for (axis, (&n, &max)) in ["x", "y", "z"].iter().zip(self.grid.iter().zip(MAX_GRID.iter())) {
            if n == 0 || n > max {
                return Err(RuntimeError::invalid(format!("grid.{axis}"), format!("{n} is outside 1..={max}")));
            }
        }
        if self.block.contains(&0) {
            return Err(RuntimeError::invalid("block", format!("{:?} has a zero dimension", self.block)));
        }
        let threads: u64 = self.block.iter().map(|&n| u64::from(n)).product();
        if threads > u64::from(Arch::MAX_THREADS_PER_BLOCK) {
            return Err(RuntimeError::invalid(
                "block",
                format!("{threads} threads; at most {} per block", Arch::MAX_THREADS_PER_BLOCK),
            ));
        }
        Ok(())
    }
}

/// A device that runs compiled Tessera kernels.
///
/// Methods take `&self`: backends synchronise internally, so one can be shared between threads.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// A human-readable device name, e.g. "NVIDIA H100 80GB HBM3".
    fn device_name(&self) -> String;

    /// The architecture kernels are generated for.
    fn arch(&self) -> Arch;

    /// What tuned tiles are keyed by: the device, its compute capability, driver and NVRTC.
    fn device_fingerprint(&self) -> DeviceFingerprint {
        let arch = self.arch();
        DeviceFingerprint {
            name: self.device_name(),
            compute_capability: (arch.sm / 10, arch.sm % 10),
            driver: 0,
            nvrtc: nvrtc_version().unwrap_or((0, 0)),
        }
    }

    /// Streaming multiprocessors, for launchers that size their grid to the device. The default
    /// is a small count, so schedules meant for a full GPU still split work on a simulator.
    fn multiprocessors(&self) -> u32 {
        4
    }

    /// Shared memory one block may use (static plus dynamic, opted in): the device's, or for a
    /// simulator the limit of the architecture it simulates.
    fn max_shared_per_block(&self) -> u32 {
        self.arch().max_shared_memory_per_block()
    }

    /// What [`Backend::load`] wants: CUBIN for CUDA, PTX for the simulator.
    fn output_kind(&self) -> OutputKind;

    fn target(&self) -> Target {
        Target { arch: self.arch(), output: self.output_kind() }
    }

    /// Allocates `bytes` of device memory (uninitialised). Zero bytes gives an empty buffer at
    /// address 0.
    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer>;

    /// Copies `data` to the start of `buffer`; `data` may be shorter than the buffer.
    fn write(&self, buffer: &DeviceBuffer, data: &[u8]) -> Result<()>;

    /// Copies the start of `buffer` into `out`; `out` may be shorter than the buffer.
    fn read(&self, buffer: &DeviceBuffer, out: &mut [u8]) -> Result<()>;

    fn free(&self, buffer: DeviceBuffer) -> Result<()>;

    /// Ok if `buffer` is a live allocation of this backend.
    fn check_buffer(&self, buffer: &DeviceBuffer) -> Result<()>;

    /// The 128-byte tensor map (`CUtensorMap`) a TMA copy reads, for `map` (validated the way
    /// `cuTensorMapEncodeTiled` validates it). A backend without tensor-map copies says so.
    fn encode_tensor_map(&self, map: &tessera_sim::TensorMap) -> Result<[u8; 128]> {
        let _ = map;
        Err(RuntimeError::invalid("tensor map", format!("the {} backend has no tensor-map copies", self.kind())))
    }

    /// Loads a compiled module and returns its entry point. Loading the same module twice returns
    /// the same kernel.
    fn load(&self, module: &CompiledModule) -> Result<Kernel>;

    /// Enqueues one launch of `kernel`, whose single by-value parameter is the `#[repr(C)]` struct
    /// whose bytes are `params`. Asynchronous: errors during execution surface at
    /// [`Backend::synchronize`].
    ///
    /// # Safety
    ///
    /// `params` must have the layout of the kernel's parameter, and every device address in it must
    /// point into live buffers of this backend, large enough for everything the kernel accesses
    /// with this configuration. Launchers such as [`crate::attention::attention_forward`] check
    /// this before calling.
    unsafe fn launch(&self, kernel: &Kernel, config: &LaunchConfig, params: &[u8]) -> Result<()>;

    /// Waits for all enqueued work and reports any error it raised.
    fn synchronize(&self) -> Result<()>;

    /// Launches `warmup` untimed then `reps` timed launches, returning each timed launch's device
    /// time in milliseconds (CUDA events on a GPU; on the simulator, the CPU's wall-clock time to
    /// interpret the launch, which says nothing about GPU speed).
    ///
    /// # Safety
    ///
    /// As for [`Backend::launch`].
    unsafe fn time_launches(
        &self,
        kernel: &Kernel,
        config: &LaunchConfig,
        params: &[u8],
        warmup: usize,
        reps: usize,
    ) -> Result<Vec<f32>>;
}

/// The ownership and liveness check every backend applies to a buffer handle: it must come from
/// this backend (`owner`) and name a live allocation of exactly its size (`live`: address to size).
/// The empty buffer (address 0, 0 bytes) is always valid.
pub(crate) fn check_live_buffer(owner: BackendId, live: &HashMap<u64, usize>, buffer: &DeviceBuffer) -> Result<()> {
    if buffer.owner() != owner {
        return Err(RuntimeError::invalid("buffer", "was allocated by another backend"));
    }
    if buffer.bytes() == 0 && buffer.addr() == 0 {
        return Ok(());
    }
    match live.get(&buffer.addr()) {
        Some(&bytes) if bytes == buffer.bytes() => Ok(()),
        _ => Err(RuntimeError::invalid(
            "buffer",
            format!("{:#x} ({} bytes) is not a live allocation of this backend", buffer.addr(), buffer.bytes()),
        )),
    }
}

/// What makes timings on one machine invalid on another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceFingerprint {
    pub name: String,
    pub compute_capability: (u32, u32),
    /// `cuDriverGetVersion` (0 without a driver).
    pub driver: i32,
    pub nvrtc: (i32, i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kind_round_trips() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.to_string().parse::<BackendKind>().unwrap(), kind);
        }
        assert_eq!("CUDA".parse::<BackendKind>().unwrap(), BackendKind::Cuda);
        let err = "tpu".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("auto, cuda or sim"), "{err}");
    }

    #[test]
    fn launch_config_limits() {
        let ok = LaunchConfig { grid: [1, 8, 2], block: [256, 1, 1], dynamic_shared_bytes: 0 };
        assert!(ok.validate().is_ok());
        let zero = LaunchConfig { grid: [0, 8, 2], ..ok };
        assert!(zero.validate().unwrap_err().to_string().contains("grid.x"));
        let tall = LaunchConfig { grid: [1, 70_000, 1], ..ok };
        assert!(tall.validate().unwrap_err().to_string().contains("grid.y"));
        let wide = LaunchConfig { block: [64, 32, 1], ..ok };
        assert!(wide.validate().unwrap_err().to_string().contains("2048 threads"));
    }
}
