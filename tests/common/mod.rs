//! What the simulator test files share: one simulator backend (sm_80, checks on) and one compiler
//! with a disk cache, per test binary.
#![allow(dead_code)]

use std::sync::OnceLock;

use tessera::runtime::simulator::SimOptions;
use tessera::runtime::{Compiler, KernelCache, SimBackend};
use tessera::Arch;

/// The architecture every simulator test renders for.
pub const SIM_ARCH: Arch = Arch::SM80;

/// The simulator with its checks on (bounds, shared-memory races, in-flight cp.async reads):
/// every simulator test is also a sanitizer run.
pub fn backend() -> &'static SimBackend {
    static BACKEND: OnceLock<SimBackend> = OnceLock::new();
    BACKEND.get_or_init(|| SimBackend::with_options(SIM_ARCH, SimOptions { checks: true, ..SimOptions::default() }))
}

/// A compiler whose cache (under `CARGO_TARGET_TMPDIR`) is shared by the test binaries, so a
/// kernel is compiled by NVRTC once per build tree.
pub fn compiler() -> &'static Compiler {
    static COMPILER: OnceLock<Compiler> = OnceLock::new();
    COMPILER.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-sim-kernels");
        Compiler::new().with_cache(KernelCache::open(dir).expect("kernel cache folder"))
    })
}
