//! `tessera check`: does a spec compile, and does its kernel fit the architecture?
//!
//! Compiles the spec to PTX with NVRTC and, when ptxas is available, assembles it for the real
//! architecture to read registers, spills and static shared memory. A spec passes when nothing
//! spills and static plus dynamic shared memory fits the architecture's per-block limit.

use std::time::Instant;

use tessera_codegen::{Arch, KernelSpec};

use crate::common::error::Result;
use crate::compile::compiler::Compiler;
use crate::compile::ptxas::{ptxas_path, run_ptxas_with, PtxasReport};
use crate::compile::target::Target;

/// The outcome of [`check_spec`].
#[derive(Clone, Debug, PartialEq)]
pub struct SpecCheck {
    pub spec: KernelSpec,
    pub arch: Arch,
    /// The entry point's name.
    pub kernel: String,
    /// The tile's label (`KernelSpec::tile_label`).
    pub tile: String,
    pub threads_per_block: u32,
    /// Dynamic shared memory the launch requests (ptxas reports only the static part).
    pub dynamic_shared_bytes: u32,
    /// Wall time of the NVRTC compile, in milliseconds (near zero for a cache hit).
    pub compile_ms: f64,
    pub from_cache: bool,
    pub ptx_bytes: usize,
    /// ptxas's report for the entry point; `None` when ptxas is not installed.
    pub report: Option<PtxasReport>,
    /// Wall time of the ptxas run, in milliseconds.
    pub ptxas_ms: Option<f64>,
    /// Why there is no report.
    pub ptxas_unavailable: Option<String>,
}

impl SpecCheck {
    /// The architecture's opt-in shared memory per block.
    pub fn shared_limit(&self) -> u32 {
        self.arch.max_shared_memory_per_block()
    }

    /// Static shared memory (from ptxas) plus the dynamic shared memory the launch requests.
    pub fn total_shared_bytes(&self) -> Option<u64> {
        self.report.as_ref().map(|r| u64::from(r.shared_bytes) + u64::from(self.dynamic_shared_bytes))
    }

    /// Everything that makes the kernel unfit; empty when it passes (or could not be assembled).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(report) = &self.report {
            if report.spills() {
                problems.push(format!(
                    "spills registers: {} bytes stored, {} bytes loaded ({} registers)",
                    report.spill_store_bytes, report.spill_load_bytes, report.registers
                ));
            }
        }
        if let Some(total) = self.total_shared_bytes() {
            if total > u64::from(self.shared_limit()) {
                problems.push(format!(
                    "needs {total} bytes of shared memory; {} allows {}",
                    self.arch,
                    self.shared_limit()
                ));
            }
        }
        problems
    }

    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }
}

/// [`check_spec_with`] and a fresh compiler without a disk cache, so the compile time is NVRTC's.
pub fn check_spec(spec: impl Into<KernelSpec>, arch: Arch) -> Result<SpecCheck> {
    check_spec_with(&Compiler::new(), spec, arch)
}

/// Renders `spec` for `arch`, compiles it to PTX and, if ptxas is found, assembles it for
/// resource usage. Errors are spec, NVRTC and ptxas failures; a missing ptxas is not an error
/// (see [`SpecCheck::ptxas_unavailable`]).
pub fn check_spec_with(compiler: &Compiler, spec: impl Into<KernelSpec>, arch: Arch) -> Result<SpecCheck> {
    let spec: KernelSpec = spec.into();
    let source = spec.render(arch)?;
    let started = Instant::now();
    let module = compiler.compile(&source, Target::ptx(arch))?;
    let compile_ms = millis(started);

    let (report, ptxas_ms, ptxas_unavailable) = match ptxas_path() {
        Ok(ptxas) => {
            let started = Instant::now();
            let reports = run_ptxas_with(&ptxas, &module.image, arch)?;
            let report = reports.iter().find(|r| r.function == source.name).or(reports.first()).cloned();
            (report, Some(millis(started)), None)
        }
        Err(e) => (None, None, Some(e.to_string())),
    };
    Ok(SpecCheck {
        spec,
        arch,
        kernel: source.name,
        tile: spec.tile_label(arch),
        threads_per_block: source.geometry.threads_per_block,
        dynamic_shared_bytes: source.geometry.dynamic_shared_bytes,
        compile_ms,
        from_cache: module.from_cache,
        ptx_bytes: module.image.len(),
        report,
        ptxas_ms,
        ptxas_unavailable,
    })
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
