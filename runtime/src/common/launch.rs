//! A checked, compiled and loaded kernel launch, ready to run or time repeatedly: the part every
//! family's launcher shares once its own arguments have been checked. Also the kernel-parameter
//! trait ([`LaunchParams`]), the device buffers of a host call
//! (`HostUploads`) and launches that own a device tensor table ([`TableLaunch`]). Every family
//! launches through here, so it lives in `common`.

use tessera_codegen::{KernelParams, KernelSource};

use crate::common::error::Result;
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer, Kernel, LaunchConfig};

/// The bytes a launch copies into the kernel's parameter: any generated parameter struct
/// ([`KernelParams`], the host/device contract in `tessera_codegen`), or a family's choice between
/// the structs of its kernels (its mma.sync or its sm_90a one).
pub trait LaunchParams {
    fn as_bytes(&self) -> &[u8];
}

impl<T: KernelParams> LaunchParams for T {
    fn as_bytes(&self) -> &[u8] {
        KernelParams::as_bytes(self)
    }
}

/// What a family's host-tensor entry point (`run_gemm`, `run_lora`) returns.
#[derive(Clone, Debug, PartialEq)]
pub struct HostOutput {
    /// The output tensor, widened to f32.
    pub y: Vec<f32>,
    /// The entry point that ran (empty when nothing was launched).
    pub kernel: String,
    /// Why the launcher chose that kernel, when it fell back from its first choice.
    pub note: Option<String>,
}

/// The note of a launch that fell back from the sm_90a kernel of `family` to the mma.sync one,
/// also written to standard error (the launch log).
pub(crate) fn sm90a_fallback_note(family: &str, reason: &str) -> String {
    let message = format!("sm_90a {family} kernel not used ({reason}); running the mma.sync kernel");
    eprintln!("tessera: note: {message}");
    message
}

/// A launch of one kernel with fixed parameters. `config` is `None` for an empty problem, which
/// launches (and compiles) nothing.
#[derive(Debug)]
pub struct PreparedLaunch<P> {
    kernel: Option<Kernel>,
    config: Option<LaunchConfig>,
    params: P,
    /// Re-validated before each launch: a buffer freed since preparation must not be written.
    buffers: Vec<(u64, usize)>,
    /// Why the launcher chose the kernel it did, when that is not the obvious one (e.g. a
    /// fallback from the sm_90a path).
    note: Option<String>,
}

impl<P: LaunchParams> PreparedLaunch<P> {
    /// Compiles `source` for the backend (through the compiler's cache) and loads it, unless there
    /// is nothing to launch. The caller has checked `params` against `buffers`.
    pub(crate) fn new<'a>(
        backend: &dyn Backend,
        compiler: &Compiler,
        source: &KernelSource,
        config: Option<LaunchConfig>,
        params: P,
        buffers: impl Iterator<Item = &'a DeviceBuffer>,
    ) -> Result<Self> {
        let kernel = match config {
            Some(_) => Some(backend.load(&compiler.compile(source, backend.target())?)?),
            None => None,
        };
        let buffers = buffers.map(|b| (b.addr(), b.bytes())).collect();
        Ok(PreparedLaunch { kernel, config, params, buffers, note: None })
    }

    /// The launch shape; `None` for an empty problem, which launches nothing.
    pub fn config(&self) -> Option<LaunchConfig> {
        self.config
    }

    pub fn params(&self) -> &P {
        &self.params
    }

    pub fn kernel(&self) -> Option<&Kernel> {
        self.kernel.as_ref()
    }

    /// The entry point that runs (the launcher may have taken a tuned tile or fallen back from
    /// sm_90a); `None` for an empty problem.
    pub fn kernel_name(&self) -> Option<&str> {
        self.kernel.as_ref().map(Kernel::name)
    }

    /// Why this kernel was chosen over the default one, if it was (see [`PreparedLaunch::with_note`]).
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    pub(crate) fn with_note(mut self, note: Option<String>) -> Self {
        self.note = note;
        self
    }

    fn recheck(&self, backend: &dyn Backend, kernel: &Kernel) -> Result<()> {
        for &(addr, bytes) in &self.buffers {
            backend.check_buffer(&DeviceBuffer::new(kernel.owner(), addr, bytes))?;
        }
        Ok(())
    }

    /// Launches once and waits for completion.
    pub fn run(&self, backend: &dyn Backend) -> Result<()> {
        let (Some(kernel), Some(config)) = (&self.kernel, &self.config) else { return Ok(()) };
        self.recheck(backend, kernel)?;
        // SAFETY: the family's `prepare_*` checked the parameters against these buffers, which
        // `recheck` just confirmed are still live allocations of the same size.
        unsafe { backend.launch(kernel, config, self.params.as_bytes())? };
        backend.synchronize()
    }

    /// Device time of `reps` launches after `warmup`, in milliseconds. Empty for an empty problem.
    pub fn time(&self, backend: &dyn Backend, warmup: usize, reps: usize) -> Result<Vec<f32>> {
        let (Some(kernel), Some(config)) = (&self.kernel, &self.config) else { return Ok(Vec::new()) };
        self.recheck(backend, kernel)?;
        // SAFETY: as for `run`.
        unsafe { backend.time_launches(kernel, config, self.params.as_bytes(), warmup, reps) }
    }
}

/// Device buffers of one host call, freed when it ends however it ends.
pub(crate) struct HostUploads<'a> {
    backend: &'a dyn Backend,
    pub(crate) buffers: Vec<DeviceBuffer>,
}

impl<'a> HostUploads<'a> {
    pub(crate) fn new(backend: &'a dyn Backend) -> Self {
        HostUploads { backend, buffers: Vec::new() }
    }

    /// Uploads `data` into a new buffer and returns its index in `buffers`.
    pub(crate) fn upload(&mut self, data: &[u8]) -> Result<usize> {
        let buffer = self.backend.alloc(data.len())?;
        self.buffers.push(buffer);
        let index = self.buffers.len() - 1;
        self.backend.write(&self.buffers[index], data)?;
        Ok(index)
    }
}

impl Drop for HostUploads<'_> {
    fn drop(&mut self) {
        for buffer in self.buffers.drain(..) {
            let _ = self.backend.free(buffer);
        }
    }
}

/// A prepared launch whose kernel reads a device table of tensors (the multi-tensor kernels): the
/// table buffer lives as long as the launch and is freed with it.
pub struct TableLaunch<'a, P> {
    backend: &'a dyn Backend,
    launch: PreparedLaunch<P>,
    table: Option<DeviceBuffer>,
}

impl<'a, P: LaunchParams> TableLaunch<'a, P> {
    pub(crate) fn new(backend: &'a dyn Backend, launch: PreparedLaunch<P>, table: DeviceBuffer) -> Self {
        TableLaunch { backend, launch, table: Some(table) }
    }

    pub fn run(&self) -> Result<()> {
        self.launch.run(self.backend)
    }

    /// Device time of `reps` launches after `warmup`, in milliseconds.
    pub fn time(&self, warmup: usize, reps: usize) -> Result<Vec<f32>> {
        self.launch.time(self.backend, warmup, reps)
    }

    pub fn launch(&self) -> &PreparedLaunch<P> {
        &self.launch
    }
}

impl<P> Drop for TableLaunch<'_, P> {
    fn drop(&mut self) {
        if let Some(table) = self.table.take() {
            let _ = self.backend.free(table);
        }
    }
}
