//! `tessera doctor`: what Tessera finds on this machine, before spending GPU time on it. The NVRTC
//! it compiles with (and which rule of the search found it), ptxas, the kernel cache and tuning
//! database, the deadline on GPU waits, and the device the backend opens. `--json` prints the same
//! as one JSON object, the last line of standard output, for scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use tessera::runtime::device::driver::split_driver_version;
use tessera::runtime::compile::locate::ptxas_release;
use tessera::runtime::compile::ptxas::ptxas_path;
use tessera::runtime::tuning::TuningDb;
use tessera::runtime::{nvrtc_library, open_backend, sync_timeout_from_env, Backend, BackendKind, KernelCache, NvrtcLibrary, SYNC_TIMEOUT_ENV};

use crate::Result;

#[derive(Args)]
pub struct DoctorArgs {
    /// The backend to open: auto (the GPU, else the simulator), cuda or sim.
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    /// Print one JSON object (the last line of standard output) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything the doctor looked at; an `Err` holds the message of what could not be found or
/// opened.
struct Findings {
    nvrtc: std::result::Result<&'static NvrtcLibrary, String>,
    ptxas: Option<(PathBuf, Option<(u32, u32)>)>,
    cache_dir: PathBuf,
    tuning_db: PathBuf,
    /// `Ok(None)`: no deadline.
    sync_timeout: std::result::Result<Option<Duration>, String>,
    backend: std::result::Result<DeviceFacts, String>,
}

/// What the opened backend reports about its device.
struct DeviceFacts {
    kind: BackendKind,
    device: String,
    arch: String,
    compute_capability: (u32, u32),
    /// `(major, minor)` of the CUDA version the driver supports; `None` for the simulator.
    driver: Option<(i32, i32)>,
    multiprocessors: u32,
    max_shared_per_block: u32,
}

impl DeviceFacts {
    fn of(backend: &dyn Backend) -> DeviceFacts {
        let fingerprint = backend.device_fingerprint();
        // 0 where there is no driver (the simulator).
        let driver = (fingerprint.driver > 0).then(|| split_driver_version(fingerprint.driver));
        DeviceFacts {
            kind: backend.kind(),
            device: backend.device_name(),
            arch: backend.arch().to_string(),
            compute_capability: fingerprint.compute_capability,
            driver,
            multiprocessors: backend.multiprocessors(),
            max_shared_per_block: backend.max_shared_per_block(),
        }
    }
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let nvrtc = nvrtc_library();
    let backend = open_backend(args.backend);
    let findings = Findings {
        nvrtc: nvrtc.as_ref().map(|lib| *lib).map_err(ToString::to_string),
        ptxas: ptxas_path().ok().map(|path| {
            let release = ptxas_release(&path);
            (path, release)
        }),
        cache_dir: KernelCache::default_dir(),
        tuning_db: TuningDb::default_path(),
        sync_timeout: sync_timeout_from_env().map_err(|e| e.to_string()),
        backend: backend.as_ref().map(|b| DeviceFacts::of(b.as_ref())).map_err(ToString::to_string),
    };
    if args.json {
        println!("{}", findings.json());
    } else {
        print!("{}", findings.text());
    }
    // Not compiling, or not opening the backend asked for, is a failure (after the report).
    nvrtc?;
    backend?;
    Ok(())
}

fn version_text((major, minor): (impl std::fmt::Display, impl std::fmt::Display)) -> String {
    format!("{major}.{minor}")
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

impl Findings {
    fn json(&self) -> Value {
        let nvrtc = self.nvrtc.as_ref().ok().map(|lib| {
            json!({
                "path": path_text(lib.path()),
                "version": version_text(lib.version()),
                "builtins": lib.builtins().map(path_text),
                "origin": lib.origin().name(),
                "warning": lib.warning(),
            })
        });
        let ptxas = self.ptxas.as_ref().map(|(path, release)| {
            json!({ "path": path_text(path), "release": release.map(version_text) })
        });
        // Seconds, 0 meaning no deadline (as the variable reads); null when the variable is invalid.
        let sync_timeout = self.sync_timeout.as_ref().ok().map(|t| t.map_or(0.0, |t| t.as_secs_f64()));
        let backend = self.backend.as_ref().ok().map(|d| {
            json!({
                "kind": d.kind.name(),
                "device": d.device,
                "arch": d.arch,
                "compute_capability": version_text(d.compute_capability),
                "driver_version": d.driver.map(version_text),
                "multiprocessors": d.multiprocessors,
                "max_shared_per_block": d.max_shared_per_block,
            })
        });
        json!({
            "tessera": env!("CARGO_PKG_VERSION"),
            "nvrtc": nvrtc,
            "nvrtc_error": self.nvrtc.as_ref().err(),
            "ptxas": ptxas,
            "cache_dir": path_text(&self.cache_dir),
            "tuning_db": path_text(&self.tuning_db),
            "sync_timeout_s": sync_timeout,
            "sync_timeout_error": self.sync_timeout.as_ref().err(),
            "backend": backend,
            "backend_error": self.backend.as_ref().err(),
        })
    }

    fn text(&self) -> String {
        let mut lines = vec![format!("tessera {}", env!("CARGO_PKG_VERSION"))];
        match &self.nvrtc {
            Ok(lib) => {
                lines.push(format!(
                    "NVRTC          {} at {} (found by: {})",
                    version_text(lib.version()),
                    lib.path().display(),
                    lib.origin()
                ));
                let builtins = lib.builtins().map_or_else(|| "not found beside it".to_string(), path_text);
                lines.push(format!("  builtins     {builtins}"));
                if let Some(warning) = lib.warning() {
                    lines.push(format!("  warning      {warning}"));
                }
            }
            Err(e) => lines.push(format!("NVRTC          not usable: {e}")),
        }
        lines.push(match &self.ptxas {
            Some((path, Some(release))) => format!("ptxas          {} at {}", version_text(*release), path.display()),
            Some((path, None)) => format!("ptxas          release unknown, at {}", path.display()),
            None => "ptxas          not found (only needed for register reports)".to_string(),
        });
        lines.push(format!("kernel cache   {}", self.cache_dir.display()));
        lines.push(format!("tuning db      {}", self.tuning_db.display()));
        lines.push(match &self.sync_timeout {
            Ok(Some(timeout)) => format!("GPU deadline   {} s per wait ({SYNC_TIMEOUT_ENV})", timeout.as_secs_f64()),
            Ok(None) => format!("GPU deadline   none ({SYNC_TIMEOUT_ENV}=0)"),
            Err(e) => format!("GPU deadline   {e}"),
        });
        match &self.backend {
            Ok(d) => {
                lines.push(format!("backend        {}: {}", d.kind, d.device));
                let driver = d.driver.map_or_else(|| "no driver".to_string(), |v| format!("driver CUDA {}", version_text(v)));
                lines.push(format!(
                    "  device       {}, compute capability {}, {driver}, {} SMs, {} KiB shared memory per block (opt-in)",
                    d.arch,
                    version_text(d.compute_capability),
                    d.multiprocessors,
                    d.max_shared_per_block / 1024
                ));
            }
            Err(e) => lines.push(format!("backend        not available: {e}")),
        }
        lines.iter().map(|line| format!("{line}\n")).collect()
    }
}
