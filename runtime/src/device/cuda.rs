//! The CUDA backend: the driver API through cudarc's `result`/`sys` layers.
//!
//! cudarc loads `libcuda` lazily and panics when a function is called that the library lacks, so
//! [`CudaBackend::open`] first checks that the library exists and exports every entry point this
//! file uses. After that, no call here can reach one of cudarc's panics: on a machine without a
//! driver the result is [`RuntimeError::NoGpu`], never an abort.
//!
//! Kernels are launched with `cuLaunchKernel` and a one-element `void**` array pointing at the
//! parameter struct's bytes, so any `#[repr(C)]` parameter struct works without cudarc's typed
//! launch machinery.
//!
//! No call here blocks on device work without a deadline ([`crate::device::watchdog`]): launches are
//! tracked, and before any call that would wait for them (a copy, a free, a module load, a
//! synchronisation) the backend records an event behind them on the null stream, where every launch
//! goes, and polls it with `cuEventQuery` until done or `TESSERA_SYNC_TIMEOUT_S` passes. After a
//! hang every call fails at once with [`RuntimeError::Hung`] and `Drop` leaks rather than waits.
//!
//! The driver library itself (present, recent enough, its CUDA version) is probed in
//! [`crate::device::driver`], which needs no backend.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys::{self, CUdevice_attribute, CUfunction_attribute};
use tessera_codegen::Arch;

use crate::common::error::{Result, RuntimeError};
use crate::compile::nvrtc::nvrtc_version;
use crate::compile::target::{CompiledModule, OutputKind};
use crate::device::backend::{check_live_buffer, Backend, BackendId, BackendKind, DeviceBuffer, DeviceFingerprint, Kernel, LaunchConfig};
use crate::device::driver::{probe_driver, version_text};
use crate::device::watchdog::{sync_timeout_from_env, Watchdog, PROCESS_HANG};

/// Shared memory any kernel may use without opting in (`cuFuncSetAttribute`).
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// One GPU, through its primary context.
pub struct CudaBackend {
    id: BackendId,
    device: sys::CUdevice,
    context: sys::CUcontext,
    name: String,
    arch: Arch,
    compute_capability: (i32, i32),
    driver_version: i32,
    /// Opt-in shared memory per block (static + dynamic).
    max_shared_per_block: u32,
    multiprocessors: u32,
    has_param_info: bool,
    state: Mutex<State>,
}

// SAFETY: the driver API is thread-safe, and every method makes this backend's context current on
// the calling thread before using it. The raw handles in `State` are only touched under its mutex.
unsafe impl Send for CudaBackend {}
unsafe impl Sync for CudaBackend {}

struct State {
    /// Live allocations: address -> size.
    buffers: HashMap<u64, usize>,
    kernels: Vec<LoadedKernel>,
    /// `(source hash, output, arch)` -> index in `kernels`.
    loaded: HashMap<(String, OutputKind, Arch), usize>,
    /// Outstanding launches and the deadline for waiting on them.
    watchdog: Watchdog,
    /// Recorded behind the outstanding launches to wait for them; created on first use.
    sync_event: Option<sys::CUevent>,
}

impl State {
    fn new(watchdog: Watchdog) -> State {
        State { buffers: HashMap::new(), kernels: Vec::new(), loaded: HashMap::new(), watchdog, sync_event: None }
    }

    /// Waits, with the watchdog's deadline, for every launch still outstanding; returns at once
    /// when there is none. The caller has made the context current and holds the state lock, so no
    /// launch can be enqueued behind the event before the blocking call that follows.
    fn settle(&mut self) -> Result<()> {
        self.watchdog.check()?;
        if !self.watchdog.outstanding() {
            return Ok(());
        }
        let event = match self.sync_event {
            Some(event) => event,
            None => {
                let event = cu::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                    .map_err(cuda_error("cuEventCreate"))?;
                self.sync_event = Some(event);
                event
            }
        };
        // SAFETY: a live event of this context; the null stream is where `launch` enqueues.
        unsafe { cu::event::record(event, ptr::null_mut()) }.map_err(cuda_error("cuEventRecord"))?;
        self.watchdog.wait(|| event_done(event))
    }
}

/// `cuEventQuery`: `Ok(true)` when the work before the event is done, `Ok(false)` while it runs, an
/// error when it failed (the kernel's error, e.g. an illegal address).
fn event_done(event: sys::CUevent) -> Result<bool> {
    // SAFETY: the caller passes a live event.
    match unsafe { sys::cuEventQuery(event) } {
        sys::CUresult::CUDA_SUCCESS => Ok(true),
        sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
        status => Err(cuda_error("cuEventQuery (a kernel failed)")(DriverError(status))),
    }
}

struct LoadedKernel {
    module: sys::CUmodule,
    function: sys::CUfunction,
    static_shared_bytes: u32,
    /// The dynamic shared memory limit set with `cuFuncSetAttribute` so far.
    dynamic_shared_limit: u32,
    /// Size of parameter 0, when the driver can tell.
    param_bytes: Option<usize>,
}

impl CudaBackend {
    /// Opens device `ordinal`. [`RuntimeError::NoGpu`] when there is no driver, the driver is too
    /// old for this build, `cuInit` fails or there are no devices;
    /// [`RuntimeError::UnsupportedDevice`] for a GPU Tessera has no code path for.
    ///
    /// After a hang ([`RuntimeError::Hung`]) in this process it fails at once with that error: the
    /// hung kernel still holds the device's primary context, which every backend shares. A
    /// `TESSERA_SYNC_TIMEOUT_S` that is not a number of seconds is an
    /// [`RuntimeError::InvalidArgument`] naming it.
    pub fn open(ordinal: usize) -> Result<CudaBackend> {
        PROCESS_HANG.check()?;
        CudaBackend::open_with_sync_timeout(ordinal, sync_timeout_from_env()?)
    }

    /// [`CudaBackend::open`] with the deadline for waits on device work given rather than read
    /// from `TESSERA_SYNC_TIMEOUT_S` (`None`: no deadline).
    pub fn open_with_sync_timeout(ordinal: usize, timeout: Option<std::time::Duration>) -> Result<CudaBackend> {
        PROCESS_HANG.check()?;
        let has_param_info = probe_driver()?;
        let mut driver_version = 0;
        // SAFETY: symbol presence checked by `probe_driver`; valid out-pointer.
        unsafe { sys::cuDriverGetVersion(&mut driver_version) }
            .result()
            .map_err(|e| RuntimeError::NoGpu { reason: format!("cuDriverGetVersion failed: {}", describe(e)) })?;
        cu::init().map_err(|e| RuntimeError::NoGpu {
            reason: format!("cuInit failed: {} (driver {})", describe(e), version_text(driver_version)),
        })?;
        let count = cu::device::get_count()
            .map_err(|e| RuntimeError::NoGpu { reason: format!("cuDeviceGetCount failed: {}", describe(e)) })?;
        if count <= 0 {
            return Err(RuntimeError::NoGpu { reason: "the CUDA driver reports no devices".to_string() });
        }
        let index = i32::try_from(ordinal).ok().filter(|&i| i < count).ok_or_else(|| {
            RuntimeError::invalid("device", format!("ordinal {ordinal}, but there are {count} devices"))
        })?;
        let device = cu::device::get(index).map_err(cuda_error("cuDeviceGet"))?;
        let name = cu::device::get_name(device).map_err(cuda_error("cuDeviceGetName"))?;
        let attribute = |attribute| {
            // SAFETY: `device` came from `cuDeviceGet`.
            unsafe { cu::device::get_attribute(device, attribute) }.map_err(cuda_error("cuDeviceGetAttribute"))
        };
        let major = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let optin = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let multiprocessors = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let arch = Arch::from_compute_capability(major.max(0) as u32, minor.max(0) as u32).map_err(|e| {
            RuntimeError::UnsupportedDevice {
                device: name.clone(),
                reason: format!("compute capability {major}.{minor}: {e}"),
            }
        })?;
        // A 9.0 device runs sm_90a code (its architecture-specific features: wgmma, TMA), and
        // everything this backend loads is compiled for exactly this device.
        let arch = if arch == Arch::SM90 { Arch::SM90A } else { arch };
        // SAFETY: `device` came from `cuDeviceGet`; released in `Drop`.
        let context = unsafe { cu::primary_ctx::retain(device) }.map_err(cuda_error("cuDevicePrimaryCtxRetain"))?;
        let backend = CudaBackend {
            id: BackendId::fresh(),
            device,
            context,
            name,
            arch,
            compute_capability: (major, minor),
            driver_version,
            max_shared_per_block: optin.max(0) as u32,
            multiprocessors: multiprocessors.max(1) as u32,
            has_param_info,
            state: Mutex::new(State::new(Watchdog::new(timeout, &PROCESS_HANG))),
        };
        backend.make_current()?;
        Ok(backend)
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// `cuDriverGetVersion`, e.g. 13000 for CUDA 13.0.
    pub fn driver_version(&self) -> i32 {
        self.driver_version
    }

    /// Opt-in shared memory per block, static plus dynamic.
    pub fn max_shared_per_block(&self) -> u32 {
        self.max_shared_per_block
    }

    /// The deadline for waits on device work (`TESSERA_SYNC_TIMEOUT_S` when opened); `None`: no
    /// deadline.
    pub fn sync_timeout(&self) -> Option<std::time::Duration> {
        self.state().watchdog.timeout()
    }

    /// The state, locked, with the context current and every outstanding launch waited for (with
    /// the deadline): what a call that may block behind launches holds while it makes that call.
    fn settled(&self) -> Result<MutexGuard<'_, State>> {
        self.make_current()?;
        let mut state = self.state();
        state.settle()?;
        Ok(state)
    }

    fn make_current(&self) -> Result<()> {
        // SAFETY: `context` is the retained primary context, alive until `Drop`.
        unsafe { cu::ctx::set_current(self.context) }.map_err(cuda_error("cuCtxSetCurrent"))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent with the driver in a
        // way that matters more than losing the backend, so keep going with the inner value.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_kernel<'a>(&self, kernels: &'a mut [LoadedKernel], kernel: &Kernel) -> Result<&'a mut LoadedKernel> {
        if kernel.owner() != self.id {
            return Err(RuntimeError::invalid("kernel", format!("`{}` was loaded by another backend", kernel.name())));
        }
        kernels
            .get_mut(kernel.index())
            .ok_or_else(|| RuntimeError::invalid("kernel", format!("`{}` is not loaded", kernel.name())))
    }

    /// [`Backend::launch`] with the state already locked; the launch is recorded as outstanding.
    ///
    /// # Safety
    ///
    /// As for [`Backend::launch`].
    unsafe fn launch_locked(&self, state: &mut State, kernel: &Kernel, config: &LaunchConfig, params: &[u8]) -> Result<()> {
        config.validate()?;
        let loaded = self.check_kernel(&mut state.kernels, kernel)?;
        if let Some(expected) = loaded.param_bytes {
            if expected != params.len() {
                return Err(RuntimeError::invalid(
                    "params",
                    format!("{} bytes, but `{}` takes a {expected}-byte parameter", params.len(), kernel.name()),
                ));
            }
        }
        let shared = u64::from(loaded.static_shared_bytes) + u64::from(config.dynamic_shared_bytes);
        if shared > u64::from(self.max_shared_per_block) {
            return Err(RuntimeError::invalid(
                "dynamic_shared_bytes",
                format!(
                    "{} dynamic + {} static bytes of shared memory; {} ({}) allows {} per block",
                    config.dynamic_shared_bytes,
                    loaded.static_shared_bytes,
                    self.name,
                    self.arch,
                    self.max_shared_per_block
                ),
            ));
        }
        self.make_current()?;
        if config.dynamic_shared_bytes > loaded.dynamic_shared_limit {
            // Above 48 KiB a kernel must opt in to the dynamic shared memory it launches with.
            // SAFETY: `function` belongs to a loaded module.
            unsafe {
                cu::function::set_function_attribute(
                    loaded.function,
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    config.dynamic_shared_bytes as i32,
                )
            }
            .map_err(cuda_error("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)"))?;
            loaded.dynamic_shared_limit = config.dynamic_shared_bytes;
        }
        // The driver reads the parameter through this pointer during the call; copy into u64s so
        // the struct is 8-byte aligned whatever slice the caller passed.
        let mut storage = vec![0u64; params.len().div_ceil(8).max(1)];
        // SAFETY: `storage` has at least `params.len()` bytes and does not overlap `params`.
        unsafe { ptr::copy_nonoverlapping(params.as_ptr(), storage.as_mut_ptr().cast::<u8>(), params.len()) };
        let mut args = [storage.as_mut_ptr().cast::<c_void>()];
        let [gx, gy, gz] = config.grid;
        let [bx, by, bz] = config.block;
        // SAFETY: the caller guarantees `params` matches the kernel's parameter and its addresses;
        // `function` is loaded; the configuration was validated against device limits.
        unsafe {
            cu::launch_kernel(
                loaded.function,
                (gx, gy, gz),
                (bx, by, bz),
                config.dynamic_shared_bytes,
                ptr::null_mut(),
                &mut args,
            )
        }
        .map_err(cuda_error("cuLaunchKernel"))?;
        state.watchdog.launched(kernel.name());
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn device_name(&self) -> String {
        self.name.clone()
    }

    fn arch(&self) -> Arch {
        self.arch
    }

    fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    fn device_fingerprint(&self) -> DeviceFingerprint {
        let (major, minor) = self.compute_capability;
        DeviceFingerprint {
            name: self.name.clone(),
            compute_capability: (major.max(0) as u32, minor.max(0) as u32),
            driver: self.driver_version,
            nvrtc: nvrtc_version().unwrap_or((0, 0)),
        }
    }

    fn output_kind(&self) -> OutputKind {
        OutputKind::Cubin
    }

    fn max_shared_per_block(&self) -> u32 {
        self.max_shared_per_block
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        PROCESS_HANG.check()?;
        if bytes == 0 {
            // cuMemAlloc rejects 0; an empty buffer is never dereferenced.
            return Ok(DeviceBuffer::new(self.id, 0, 0));
        }
        // The allocator may synchronise the device (to reuse memory), so wait with the deadline.
        let mut state = self.settled()?;
        // SAFETY: plain allocation; freed by `free` or `Drop`.
        let addr = unsafe { cu::malloc_sync(bytes) }.map_err(cuda_error("cuMemAlloc"))?;
        state.buffers.insert(addr, bytes);
        Ok(DeviceBuffer::new(self.id, addr, bytes))
    }

    fn write(&self, buffer: &DeviceBuffer, data: &[u8]) -> Result<()> {
        PROCESS_HANG.check()?;
        self.check_buffer(buffer)?;
        check_copy_len("write", data.len(), buffer)?;
        if data.is_empty() {
            return Ok(());
        }
        // A copy from pageable host memory waits for the launches before it.
        let _state = self.settled()?;
        // SAFETY: `buffer` is a live allocation of at least `data.len()` bytes (checked above).
        unsafe { cu::memcpy_htod_sync(buffer.addr(), data) }.map_err(cuda_error("cuMemcpyHtoD"))
    }

    fn read(&self, buffer: &DeviceBuffer, out: &mut [u8]) -> Result<()> {
        PROCESS_HANG.check()?;
        self.check_buffer(buffer)?;
        check_copy_len("read", out.len(), buffer)?;
        if out.is_empty() {
            return Ok(());
        }
        let _state = self.settled()?;
        // SAFETY: as for `write`.
        unsafe { cu::memcpy_dtoh_sync(out, buffer.addr()) }.map_err(cuda_error("cuMemcpyDtoH"))
    }

    fn free(&self, buffer: DeviceBuffer) -> Result<()> {
        PROCESS_HANG.check()?;
        self.check_buffer(&buffer)?;
        if buffer.bytes() == 0 {
            return Ok(());
        }
        // cuMemFree waits for all work on the device.
        let mut state = self.settled()?;
        state.buffers.remove(&buffer.addr());
        // SAFETY: a live allocation (checked), removed from the table so it cannot be freed twice.
        unsafe { cu::free_sync(buffer.addr()) }.map_err(cuda_error("cuMemFree"))
    }

    fn check_buffer(&self, buffer: &DeviceBuffer) -> Result<()> {
        check_live_buffer(self.id, &self.state().buffers, buffer)
    }

    /// `cuTensorMapEncodeTiled`. A host call, but made with this backend's context current all the
    /// same: it runs on whatever thread asks (rayon's, during `tessera tune`), and the driver
    /// checks the address against the current context. Elements are copied as raw 1/2/4/8-byte
    /// values: only the out-of-bounds NaN fill would care about the float type.
    fn encode_tensor_map(&self, map: &tessera_sim::TensorMap) -> Result<[u8; 128]> {
        PROCESS_HANG.check()?;
        use sys::{CUtensorMapDataType as Data, CUtensorMapFloatOOBfill as Fill, CUtensorMapInterleave as Interleave, CUtensorMapL2promotion as L2, CUtensorMapSwizzle as Swizzle};
        map.validate().map_err(|e| RuntimeError::invalid("tensor map", e.to_string()))?;
        self.make_current()?;
        let data = match map.elem_bytes {
            1 => Data::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            2 => Data::CU_TENSOR_MAP_DATA_TYPE_UINT16,
            4 => Data::CU_TENSOR_MAP_DATA_TYPE_UINT32,
            _ => Data::CU_TENSOR_MAP_DATA_TYPE_UINT64,
        };
        let swizzle = match map.swizzle {
            tessera_sim::Swizzle::None => Swizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
            tessera_sim::Swizzle::B32 => Swizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            tessera_sim::Swizzle::B64 => Swizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            tessera_sim::Swizzle::B128 => Swizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        };
        let fill = match map.oob_fill {
            tessera_sim::OobFill::Zero => Fill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            tessera_sim::OobFill::Nan => Fill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA,
        };
        let element_strides = [1u32; 5];
        let mut encoded = sys::CUtensorMap { opaque: [0; 16] };
        // SAFETY: the symbol was checked by `probe_driver`; every array holds at least `rank`
        // entries and `encoded` is a valid out-pointer. The address is only recorded, not read.
        let status = unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut encoded,
                data,
                map.rank,
                map.global_address as *mut c_void,
                map.global_dims.as_ptr(),
                map.global_strides.as_ptr(),
                map.box_dims.as_ptr(),
                element_strides.as_ptr(),
                Interleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                L2::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                fill,
            )
        };
        if status != sys::CUresult::CUDA_SUCCESS {
            return Err(RuntimeError::Cuda { call: "cuTensorMapEncodeTiled", message: format!("{status:?}") });
        }
        let mut bytes = [0u8; 128];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(encoded.opaque) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Ok(bytes)
    }

    fn load(&self, module: &CompiledModule) -> Result<Kernel> {
        PROCESS_HANG.check()?;
        let compatible = match module.output {
            OutputKind::Cubin => module.arch == self.arch,
            // The driver JITs PTX for any architecture at least as new.
            OutputKind::Ptx => module.arch.sm <= self.arch.sm,
        };
        if !compatible {
            return Err(RuntimeError::invalid(
                "module",
                format!("`{}` was compiled for {}, but the GPU is {}", module.name, module.target(), self.arch),
            ));
        }
        let key = (module.source_hash.clone(), module.output, module.arch);
        let mut state = self.state();
        if let Some(&index) = state.loaded.get(&key) {
            return Ok(Kernel::new(self.id, index, module.name.clone()));
        }
        let entry = CString::new(module.name.as_str())
            .map_err(|_| RuntimeError::invalid("module.name", "contains a NUL byte"))?;
        let image = aligned_image(&module.image, module.output);
        self.make_current()?;
        // Loading a module may synchronise the device (it allocates and initialises the module's
        // globals), so wait for outstanding launches with the deadline first.
        state.settle()?;
        // SAFETY: `image` is a complete PTX string (NUL-terminated) or CUBIN, 8-byte aligned, alive
        // for the call; the driver copies it.
        let cu_module = unsafe { cu::module::load_data(image.as_ptr().cast::<c_void>()) }
            .map_err(cuda_error("cuModuleLoadData"))?;
        // SAFETY: `cu_module` was just loaded.
        let function = match unsafe { cu::module::get_function(cu_module, entry) } {
            Ok(function) => function,
            Err(e) => {
                // SAFETY: loaded above, not yet recorded anywhere.
                let _ = unsafe { cu::module::unload(cu_module) };
                return Err(cuda_error("cuModuleGetFunction")(e));
            }
        };
        // SAFETY: `function` belongs to a loaded module.
        let static_shared = unsafe {
            cu::function::get_function_attribute(function, CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
        }
        .map_err(cuda_error("cuFuncGetAttribute"))?;
        let param_bytes = if self.has_param_info { param_size(function) } else { None };
        state.kernels.push(LoadedKernel {
            module: cu_module,
            function,
            static_shared_bytes: static_shared.max(0) as u32,
            dynamic_shared_limit: DEFAULT_SHARED_LIMIT,
            param_bytes,
        });
        let index = state.kernels.len() - 1;
        state.loaded.insert(key, index);
        Ok(Kernel::new(self.id, index, module.name.clone()))
    }

    unsafe fn launch(&self, kernel: &Kernel, config: &LaunchConfig, params: &[u8]) -> Result<()> {
        PROCESS_HANG.check()?;
        let mut state = self.state();
        // SAFETY: forwarded from the caller.
        unsafe { self.launch_locked(&mut state, kernel, config, params) }
    }

    /// Waits, with the deadline, for every launch of this backend; an error raised by one of them
    /// is returned here.
    fn synchronize(&self) -> Result<()> {
        PROCESS_HANG.check()?;
        self.settled().map(drop)
    }

    unsafe fn time_launches(
        &self,
        kernel: &Kernel,
        config: &LaunchConfig,
        params: &[u8],
        warmup: usize,
        reps: usize,
    ) -> Result<Vec<f32>> {
        PROCESS_HANG.check()?;
        // Held throughout, so no other thread's launch lands between the events.
        let mut state = self.state();
        for _ in 0..warmup {
            // SAFETY: forwarded from the caller.
            unsafe { self.launch_locked(&mut state, kernel, config, params)? };
        }
        self.make_current()?;
        state.settle()?;
        let start = Event::new()?;
        let stop = Event::new()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            // SAFETY: live events on the null stream, where `launch` enqueues.
            unsafe {
                cu::event::record(start.0, ptr::null_mut()).map_err(cuda_error("cuEventRecord"))?;
                self.launch_locked(&mut state, kernel, config, params)?;
                cu::event::record(stop.0, ptr::null_mut()).map_err(cuda_error("cuEventRecord"))?;
            }
            state.watchdog.wait(|| event_done(stop.0))?;
            // SAFETY: both events recorded and complete.
            times.push(unsafe { cu::event::elapsed(start.0, stop.0) }.map_err(cuda_error("cuEventElapsedTime"))?);
        }
        Ok(times)
    }
}

impl Drop for CudaBackend {
    /// Waits (with the deadline) for outstanding launches, then unloads, frees and releases
    /// everything. After a hang it does none of that: unloading, freeing and releasing the context
    /// would all wait for the hung kernel, so everything is leaked to the process's exit.
    fn drop(&mut self) {
        if PROCESS_HANG.get().is_some() {
            return;
        }
        let _ = self.make_current();
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A kernel error is reported by the wait and changes nothing here; a hang leaks.
        if state.settle().is_err_and(|e| e.is_hung()) {
            return;
        }
        // SAFETY: every handle below was created by this backend and is released exactly once.
        unsafe {
            for kernel in state.kernels.drain(..) {
                let _ = cu::module::unload(kernel.module);
            }
            for (addr, _) in state.buffers.drain() {
                let _ = cu::free_sync(addr);
            }
            if let Some(event) = state.sync_event.take() {
                let _ = cu::event::destroy(event);
            }
            let _ = cu::primary_ctx::release(self.device);
        }
    }
}

/// A CUDA event, destroyed on drop.
struct Event(sys::CUevent);

impl Event {
    fn new() -> Result<Event> {
        cu::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).map(Event).map_err(cuda_error("cuEventCreate"))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by `Event::new`, destroyed once.
        let _ = unsafe { cu::event::destroy(self.0) };
    }
}

fn param_size(function: sys::CUfunction) -> Option<usize> {
    let (mut offset, mut size) = (0usize, 0usize);
    // SAFETY: the symbol was found by `probe_driver`; `function` is loaded; valid out-pointers.
    let status = unsafe { sys::cuFuncGetParamInfo(function, 0, &mut offset, &mut size) };
    (status == sys::CUresult::CUDA_SUCCESS).then_some(size)
}

/// The module image as the driver wants it: PTX NUL-terminated, everything 8-byte aligned.
fn aligned_image(image: &[u8], output: OutputKind) -> Vec<u64> {
    let len = image.len() + usize::from(output == OutputKind::Ptx);
    let mut words = vec![0u64; len.div_ceil(8).max(1)];
    // SAFETY: `words` holds at least `image.len()` bytes; the zero padding terminates PTX.
    unsafe { ptr::copy_nonoverlapping(image.as_ptr(), words.as_mut_ptr().cast::<u8>(), image.len()) };
    words
}

fn check_copy_len(what: &str, len: usize, buffer: &DeviceBuffer) -> Result<()> {
    if len > buffer.bytes() {
        return Err(RuntimeError::invalid(what, format!("{len} bytes into a {}-byte buffer", buffer.bytes())));
    }
    Ok(())
}

fn describe(e: DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(text) => format!("{} ({name})", text.to_string_lossy()),
        Err(_) => name,
    }
}

fn cuda_error(call: &'static str) -> impl Fn(DriverError) -> RuntimeError {
    move |e| RuntimeError::Cuda { call, message: describe(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_padded_and_ptx_is_terminated() {
        let words = aligned_image(b"12345678", OutputKind::Ptx);
        assert_eq!(words.len(), 2);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&bytes[..9], b"12345678\0");
        assert_eq!(aligned_image(b"12345678", OutputKind::Cubin).len(), 1);
        assert_eq!(aligned_image(b"", OutputKind::Cubin).len(), 1);
    }

    #[test]
    fn opening_never_panics() {
        match CudaBackend::open(0) {
            Ok(backend) => assert!(Arch::SUPPORTED.contains(&backend.arch())),
            Err(e) => assert!(matches!(e, RuntimeError::NoGpu { .. } | RuntimeError::UnsupportedDevice { .. }), "{e}"),
        }
    }
}
