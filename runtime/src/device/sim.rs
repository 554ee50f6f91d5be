//! The CPU simulator backend: runs the generated kernels on the host with [`tessera_sim`], a PTX
//! interpreter, so that launchers and numerics can be tested on machines without a GPU.
//!
//! The compiler produces PTX for it ([`OutputKind::Ptx`]); [`Backend::load`] parses that PTX once
//! per module, and [`Backend::launch`] runs the whole grid before it returns (so
//! [`Backend::synchronize`] has nothing left to wait for). Every global access is bounds-checked
//! against live allocations; with checks on (the default) shared-memory races and reads of
//! uninitialised or still-in-flight shared memory are reported too. A report becomes a
//! [`RuntimeError::Simulator`] whose message names the kernel, CTA, thread, PTX line and address.
//!
//! Environment:
//! - `TESSERA_SIM_CHECKS=0` turns the race and uninitialised-read checks off (bounds stay on),
//!   for speed;
//! - `TESSERA_SIM_ARCH=sm_90` (any supported architecture) changes the architecture kernels are
//!   generated for; the default is `sm_80`.
//!
//! [`Backend::time_launches`] reports the simulator's wall-clock time per launch: it says how long
//! the CPU took to interpret the kernel, nothing about how fast a GPU would run it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tessera_codegen::Arch;
use tessera_sim::{GlobalMemory, LaunchStats, Module, SimError, SimOptions};

use crate::common::error::{Result, RuntimeError};
use crate::compile::target::{CompiledModule, OutputKind};
use crate::device::backend::{check_live_buffer, Backend, BackendId, BackendKind, DeviceBuffer, Kernel, LaunchConfig};

/// `0` (or `false`, `off`, `no`) turns the simulator's race and uninitialised-read checks off.
pub const SIM_CHECKS_ENV: &str = "TESSERA_SIM_CHECKS";
/// The architecture the simulator backend reports, e.g. `sm_90`; default `sm_80`.
pub const SIM_ARCH_ENV: &str = "TESSERA_SIM_ARCH";
/// The architecture the simulator backend generates kernels for unless told otherwise.
pub const DEFAULT_SIM_ARCH: Arch = Arch::SM80;

/// A simulated GPU: global memory in host RAM, kernels interpreted from PTX.
pub struct SimBackend {
    id: BackendId,
    arch: Arch,
    options: SimOptions,
    memory: GlobalMemory,
    /// Why `--backend auto` fell back to the simulator, when it did.
    fallback_reason: Option<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Live allocations: address -> size.
    buffers: HashMap<u64, usize>,
    kernels: Vec<LoadedKernel>,
    /// `(source hash, arch, entry)` -> index in `kernels`.
    loaded: HashMap<(String, Arch, String), usize>,
    /// Parsed modules by the SHA-256 of their PTX text, shared by every entry they define.
    modules: HashMap<String, Arc<Module>>,
    /// What the latest successful launch did.
    last_stats: Option<LaunchStats>,
}

struct LoadedKernel {
    module: Arc<Module>,
    entry: String,
    /// Total size of the entry's parameters.
    param_bytes: usize,
    static_shared_bytes: usize,
}

impl SimBackend {
    /// A simulator for `arch`, with checks on unless `TESSERA_SIM_CHECKS=0`.
    pub fn new(arch: Arch) -> SimBackend {
        let options = SimOptions { checks: checks_from_env(), ..SimOptions::default() };
        SimBackend::with_options(arch, options)
    }

    /// A simulator for `arch` with explicit options (the environment is not read).
    pub fn with_options(arch: Arch, options: SimOptions) -> SimBackend {
        SimBackend {
            id: BackendId::fresh(),
            arch,
            options,
            memory: GlobalMemory::new(),
            fallback_reason: None,
            state: Mutex::new(State::default()),
        }
    }

    /// The simulator configured by the environment: `TESSERA_SIM_ARCH` (default sm_80) and
    /// `TESSERA_SIM_CHECKS`. Fails only on an unparsable or unsupported `TESSERA_SIM_ARCH`.
    pub fn from_env() -> Result<SimBackend> {
        let arch = match std::env::var(SIM_ARCH_ENV) {
            Ok(value) if !value.trim().is_empty() => value
                .trim()
                .parse::<Arch>()
                .map_err(|e| RuntimeError::invalid(SIM_ARCH_ENV, format!("`{value}`: {e}")))?,
            _ => DEFAULT_SIM_ARCH,
        };
        Ok(SimBackend::new(arch))
    }

    /// Records why `--backend auto` chose the simulator; [`Backend::device_name`] shows it.
    pub fn with_fallback_reason(mut self, reason: impl Into<String>) -> SimBackend {
        self.fallback_reason = Some(reason.into());
        self
    }

    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    pub fn options(&self) -> SimOptions {
        self.options
    }

    /// Whether race and uninitialised-read checks are on.
    pub fn checks(&self) -> bool {
        self.options.checks
    }

    /// Threads the simulator runs CTAs on.
    pub fn threads(&self) -> usize {
        if self.options.parallel {
            rayon::current_num_threads()
        } else {
            1
        }
    }

    /// Instructions, CTAs and wall time of the latest successful launch.
    pub fn last_stats(&self) -> Option<LaunchStats> {
        self.state().last_stats
    }

    /// Runs one launch and returns what it did. Same contract as [`Backend::launch`].
    ///
    /// # Safety
    ///
    /// None needed by the simulator itself (every access is bounds-checked), but the signature
    /// mirrors [`Backend::launch`] so that callers stay honest about the parameter contract.
    pub unsafe fn launch_with_stats(&self, kernel: &Kernel, config: &LaunchConfig, params: &[u8]) -> Result<LaunchStats> {
        config.validate()?;
        let (module, entry, param_bytes, static_shared) = {
            let state = self.state();
            let loaded = self.check_kernel(&state, kernel)?;
            (Arc::clone(&loaded.module), loaded.entry.clone(), loaded.param_bytes, loaded.static_shared_bytes)
        };
        // The architecture's opt-in limit, as the CUDA backend enforces it on a real device.
        let limit = u64::from(self.arch.max_shared_memory_per_block());
        if static_shared as u64 + u64::from(config.dynamic_shared_bytes) > limit {
            return Err(RuntimeError::invalid(
                "dynamic_shared_bytes",
                format!(
                    "{} dynamic + {static_shared} static bytes of shared memory; {} allows {limit} per block",
                    config.dynamic_shared_bytes, self.arch
                ),
            ));
        }
        if params.len() != param_bytes {
            return Err(RuntimeError::invalid(
                "params",
                format!("{} bytes, but `{entry}` takes {param_bytes} bytes of parameters", params.len()),
            ));
        }
        let sim_config = tessera_sim::LaunchConfig {
            grid: config.grid,
            block: config.block,
            dynamic_shared_bytes: config.dynamic_shared_bytes,
        };
        let stats = tessera_sim::launch(&module, &entry, &sim_config, params, &self.memory, &self.options)
            .map_err(|source| RuntimeError::Simulator {
                stage: "launching",
                kernel: entry.clone(),
                source: Box::new(source),
            })?;
        self.state().last_stats = Some(stats);
        Ok(stats)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_kernel<'a>(&self, state: &'a State, kernel: &Kernel) -> Result<&'a LoadedKernel> {
        if kernel.owner() != self.id {
            return Err(RuntimeError::invalid("kernel", format!("`{}` was loaded by another backend", kernel.name())));
        }
        state
            .kernels
            .get(kernel.index())
            .ok_or_else(|| RuntimeError::invalid("kernel", format!("`{}` is not loaded", kernel.name())))
    }

    fn memory_error(call: &'static str) -> impl Fn(SimError) -> RuntimeError {
        move |e| RuntimeError::invalid(call, format!("simulator memory: {e}"))
    }
}

impl Backend for SimBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Sim
    }

    fn device_name(&self) -> String {
        let threads = self.threads();
        let plural = if threads == 1 { "" } else { "s" };
        let checks = if self.options.checks { "" } else { ", checks off" };
        match &self.fallback_reason {
            Some(reason) => format!("tessera-sim (CPU, {threads} thread{plural}{checks}; chosen by auto: {reason})"),
            None => format!("tessera-sim (CPU, {threads} thread{plural}{checks})"),
        }
    }

    fn arch(&self) -> Arch {
        self.arch
    }

    fn output_kind(&self) -> OutputKind {
        OutputKind::Ptx
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        if bytes == 0 {
            return Ok(DeviceBuffer::new(self.id, 0, 0));
        }
        let addr = self.memory.alloc(bytes);
        if addr == 0 {
            return Err(RuntimeError::invalid("bytes", format!("the simulator could not allocate {bytes} bytes")));
        }
        self.state().buffers.insert(addr, bytes);
        Ok(DeviceBuffer::new(self.id, addr, bytes))
    }

    fn write(&self, buffer: &DeviceBuffer, data: &[u8]) -> Result<()> {
        self.check_buffer(buffer)?;
        check_copy_len("write", data.len(), buffer)?;
        if data.is_empty() {
            return Ok(());
        }
        self.memory.write(buffer.addr(), data).map_err(Self::memory_error("write"))
    }

    fn read(&self, buffer: &DeviceBuffer, out: &mut [u8]) -> Result<()> {
        self.check_buffer(buffer)?;
        check_copy_len("read", out.len(), buffer)?;
        if out.is_empty() {
            return Ok(());
        }
        self.memory.read(buffer.addr(), out).map_err(Self::memory_error("read"))
    }

    fn free(&self, buffer: DeviceBuffer) -> Result<()> {
        self.check_buffer(&buffer)?;
        if buffer.bytes() == 0 {
            return Ok(());
        }
        self.state().buffers.remove(&buffer.addr());
        self.memory.free(buffer.addr()).map_err(Self::memory_error("free"))
    }

    fn check_buffer(&self, buffer: &DeviceBuffer) -> Result<()> {
        check_live_buffer(self.id, &self.state().buffers, buffer)
    }

    /// The simulator's own 128-byte encoding of the map (`tessera_sim::TensorMap`), which its
    /// tensor copies decode; validated like `cuTensorMapEncodeTiled`.
    fn encode_tensor_map(&self, map: &tessera_sim::TensorMap) -> Result<[u8; 128]> {
        map.validate().map_err(|e| RuntimeError::invalid("tensor map", e.to_string()))?;
        Ok(map.encode())
    }

    fn load(&self, module: &CompiledModule) -> Result<Kernel> {
        if module.output != OutputKind::Ptx {
            return Err(RuntimeError::invalid(
                "module",
                format!(
                    "`{}` is {}; the simulator runs PTX (compile for `backend.target()`, i.e. {})",
                    module.name,
                    module.target(),
                    crate::compile::target::Target::ptx(self.arch)
                ),
            ));
        }
        if module.arch.sm > self.arch.sm {
            return Err(RuntimeError::invalid(
                "module",
                format!("`{}` was compiled for {}, but the simulator is {}", module.name, module.target(), self.arch),
            ));
        }
        let key = (module.source_hash.clone(), module.arch, module.name.clone());
        if let Some(&index) = self.state().loaded.get(&key) {
            return Ok(Kernel::new(self.id, index, module.name.clone()));
        }
        let ptx = std::str::from_utf8(&module.image)
            .map_err(|e| RuntimeError::invalid("module.image", format!("`{}`: the PTX is not UTF-8: {e}", module.name)))?;
        let ptx = ptx.trim_end_matches('\0');
        let ptx_hash = sha256_hex(ptx.as_bytes());
        let cached = self.state().modules.get(&ptx_hash).cloned();
        let parsed = match cached {
            Some(parsed) => parsed,
            None => {
                // Parse without the lock held: a large module takes a while.
                let parsed = Arc::new(Module::parse(ptx).map_err(|source| RuntimeError::Simulator {
                    stage: "loading",
                    kernel: module.name.clone(),
                    source: Box::new(source),
                })?);
                let mut state = self.state();
                Arc::clone(state.modules.entry(ptx_hash).or_insert(parsed))
            }
        };
        let entry_error = |source| RuntimeError::Simulator {
            stage: "loading",
            kernel: module.name.clone(),
            source: Box::new(source),
        };
        let param_bytes = parsed.param_bytes(&module.name).map_err(entry_error)?;
        let static_shared_bytes = parsed.static_shared_bytes(&module.name).map_err(entry_error)?;
        let mut state = self.state();
        if let Some(&index) = state.loaded.get(&key) {
            return Ok(Kernel::new(self.id, index, module.name.clone()));
        }
        state.kernels.push(LoadedKernel { module: parsed, entry: module.name.clone(), param_bytes, static_shared_bytes });
        let index = state.kernels.len() - 1;
        state.loaded.insert(key, index);
        Ok(Kernel::new(self.id, index, module.name.clone()))
    }

    unsafe fn launch(&self, kernel: &Kernel, config: &LaunchConfig, params: &[u8]) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.launch_with_stats(kernel, config, params) }.map(|_| ())
    }

    fn synchronize(&self) -> Result<()> {
        // Launches run to completion before they return; their errors were reported there.
        Ok(())
    }

    /// Wall-clock milliseconds the simulator took for each launch: CPU interpretation time, not
    /// a prediction of GPU time.
    unsafe fn time_launches(
        &self,
        kernel: &Kernel,
        config: &LaunchConfig,
        params: &[u8],
        warmup: usize,
        reps: usize,
    ) -> Result<Vec<f32>> {
        for _ in 0..warmup {
            // SAFETY: forwarded from the caller.
            unsafe { self.launch_with_stats(kernel, config, params)? };
        }
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            // SAFETY: forwarded from the caller.
            unsafe { self.launch_with_stats(kernel, config, params)? };
            times.push((start.elapsed().as_secs_f64() * 1e3) as f32);
        }
        Ok(times)
    }
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (addr, _) in state.buffers.drain() {
            let _ = self.memory.free(addr);
        }
    }
}

/// Opens the simulator configured by the environment ([`SimBackend::from_env`]).
pub fn open_sim_backend() -> Result<Box<dyn Backend>> {
    Ok(Box::new(SimBackend::from_env()?))
}

/// `TESSERA_SIM_CHECKS`: on unless set to 0, false, off or no.
fn checks_from_env() -> bool {
    match std::env::var(SIM_CHECKS_ENV) {
        Ok(value) => !matches!(value.trim().to_ascii_lowercase().as_str(), "0" | "false" | "off" | "no"),
        Err(_) => true,
    }
}

fn check_copy_len(what: &str, len: usize, buffer: &DeviceBuffer) -> Result<()> {
    if len > buffer.bytes() {
        return Err(RuntimeError::invalid(what, format!("{len} bytes into a {}-byte buffer", buffer.bytes())));
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_name_says_what_it_is() {
        let sim = SimBackend::with_options(Arch::SM80, SimOptions::default());
        let name = sim.device_name();
        assert!(name.starts_with("tessera-sim (CPU, ") && name.contains("thread"), "{name}");
        let off = SimBackend::with_options(Arch::SM80, SimOptions { checks: false, ..SimOptions::default() });
        assert!(off.device_name().contains("checks off"), "{}", off.device_name());
        let auto = SimBackend::new(Arch::SM80).with_fallback_reason("no usable CUDA GPU: none");
        assert!(auto.device_name().contains("chosen by auto: no usable CUDA GPU"), "{}", auto.device_name());
        assert_eq!(sim.output_kind(), OutputKind::Ptx);
        assert_eq!(sim.target(), crate::compile::target::Target::ptx(Arch::SM80));
    }

    #[test]
    fn cubin_is_refused() {
        let sim = SimBackend::new(Arch::SM80);
        let module = CompiledModule {
            name: "k".into(),
            source_hash: "h".into(),
            arch: Arch::SM80,
            output: OutputKind::Cubin,
            image: vec![0x7f, b'E', b'L', b'F'],
            log: String::new(),
            from_cache: false,
            compile_time: std::time::Duration::ZERO,
        };
        let err = sim.load(&module).unwrap_err().to_string();
        assert!(err.contains("runs PTX"), "{err}");
        let newer = CompiledModule { output: OutputKind::Ptx, arch: Arch::SM90, ..module };
        let err = sim.load(&newer).unwrap_err().to_string();
        assert!(err.contains("compute_90") && err.contains("sm_80"), "{err}");
    }
}
