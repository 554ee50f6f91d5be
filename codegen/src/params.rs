//! The host/device contract of kernel parameters (filled in by the `KernelParams` derive work).
