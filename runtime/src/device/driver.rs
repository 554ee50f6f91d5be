//! The NVIDIA driver library (libcuda) before any backend exists: whether it is installed and
//! exports every entry point the CUDA backend calls (`probe_driver`), and which CUDA version it
//! supports ([`driver_cuda_version`], asked without `cuInit`). The CUDA backend probes here before
//! opening a device, and NVRTC's search ([`crate::compile::locate`]) asks for the version to pick a
//! matching NVRTC, so both use this file rather than one another.

use std::ffi::c_void;

use cudarc::driver::sys;

use crate::common::error::{Result, RuntimeError};

/// Every driver entry point the CUDA backend calls. Checked up front because cudarc panics on a
/// missing symbol; a CUDA 12 driver, for one, lacks `cuEventElapsedTime_v2`.
const REQUIRED_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemcpyHtoD_v2",
    "cuMemcpyDtoH_v2",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuModuleGetFunction",
    "cuFuncGetAttribute",
    "cuFuncSetAttribute",
    "cuLaunchKernel",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventQuery",
    "cuEventElapsedTime_v2",
    "cuEventDestroy_v2",
    "cuTensorMapEncodeTiled",
];
/// Optional (CUDA 12.4+): lets `launch` check the parameter struct's size against the kernel's.
const PARAM_INFO_SYMBOL: &str = "cuFuncGetParamInfo";

/// The CUDA version the installed driver supports, `(major, minor)` (e.g. `(13, 0)`), or `None`
/// without a loadable libcuda. Only `cuDriverGetVersion`, which needs no `cuInit`: safe to ask
/// before choosing which NVRTC to load.
pub fn driver_cuda_version() -> Option<(i32, i32)> {
    type DriverGetVersion = unsafe extern "C" fn(*mut std::ffi::c_int) -> sys::CUresult;
    // SAFETY: only tries `dlopen` on cudarc's candidate names.
    if !unsafe { sys::is_culib_present() } {
        return None;
    }
    // SAFETY: cannot panic now that `is_culib_present` succeeded with the same candidate names;
    // the symbol is looked up (not assumed) and has this signature in every driver.
    let version = unsafe {
        let get = sys::culib().get::<DriverGetVersion>(b"cuDriverGetVersion\0").ok()?;
        let mut version = 0;
        (get(&mut version) == sys::CUresult::CUDA_SUCCESS).then_some(version)?
    };
    Some(split_driver_version(version))
}

/// `13000` -> `(13, 0)`, `12040` -> `(12, 4)`: `cuDriverGetVersion`'s encoding.
pub fn split_driver_version(version: i32) -> (i32, i32) {
    (version / 1000, (version % 1000) / 10)
}

/// Checks that libcuda is present and exports every symbol the CUDA backend calls; returns whether
/// the optional `cuFuncGetParamInfo` is there.
pub(crate) fn probe_driver() -> Result<bool> {
    // SAFETY: only tries `dlopen` on cudarc's candidate names.
    if !unsafe { sys::is_culib_present() } {
        return Err(RuntimeError::NoGpu {
            reason: "the NVIDIA driver library (libcuda.so.1) is not installed on this machine".to_string(),
        });
    }
    // SAFETY: cannot panic now that `is_culib_present` succeeded with the same candidate names.
    let library = unsafe { sys::culib() };
    // SAFETY: looking up a symbol's address does not call it.
    let has = |name: &str| unsafe { library.get::<*const c_void>(name.as_bytes()) }.is_ok();
    let missing: Vec<&str> = REQUIRED_SYMBOLS.iter().copied().filter(|name| !has(name)).collect();
    if !missing.is_empty() {
        return Err(RuntimeError::NoGpu {
            reason: format!(
                "the installed NVIDIA driver is too old for this build of Tessera (CUDA 13 driver API); \
                 it lacks {}. Update the driver to a CUDA 13 capable release (R580 or newer)",
                missing.join(", ")
            ),
        });
    }
    Ok(has(PARAM_INFO_SYMBOL))
}

pub(crate) fn version_text(version: i32) -> String {
    let (major, minor) = split_driver_version(version);
    format!("{major}.{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_versions_print_like_cuda_releases() {
        assert_eq!(version_text(13000), "13.0");
        assert_eq!(version_text(12040), "12.4");
    }

    #[test]
    fn the_driver_version_is_read_without_a_gpu_or_not_at_all() {
        assert_eq!(split_driver_version(13000), (13, 0));
        assert_eq!(split_driver_version(12080), (12, 8));
        // Must never panic; without libcuda there is no version.
        if let Some((major, _)) = driver_cuda_version() {
            assert!(major >= 1);
        }
    }
}
