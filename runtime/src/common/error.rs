//! [`RuntimeError`], the one error type of the runtime, and its [`Result`]. Every layer (the
//! compiler, the backends, every family's launcher) returns it, so it sits in `common`, below all
//! of them, and imports nothing of the crate.

use std::fmt::Write as _;
use std::path::PathBuf;

use tessera_codegen::SpecError;
use thiserror::Error;

/// Everything that can go wrong between a rendered kernel and its results.
///
/// Messages are written for the person at the terminal: each says what failed and, where there is
/// one, what to do about it.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] SpecError),

    /// A CUDA library or tool is not installed where Tessera looks for it.
    #[error("{what} not found. Searched, in order:\n{}{}\nTo fix: {fix}", bullets(.searched), rejected_note(.rejected))]
    NotFound {
        what: String,
        /// Every place looked at, in search order.
        searched: Vec<String>,
        /// Candidates that exist but were passed over, with the reason.
        rejected: Vec<String>,
        fix: String,
    },

    /// A shared library was found but could not be loaded or is the wrong version.
    #[error("cannot use {}: {message}", .path.display())]
    LibraryLoad { path: PathBuf, message: String },

    /// An NVRTC API call failed for a reason other than a compile error in the source.
    #[error("NVRTC {call} failed: {message}")]
    Nvrtc { call: &'static str, message: String },

    /// NVRTC rejected the generated source.
    #[error("{}", compile_message(.kernel, .target, .log, .excerpts))]
    Compile {
        kernel: String,
        /// `sm_80 (cubin)` etc.
        target: String,
        log: String,
        /// `(line, source text)` for every `file(LINE): error` in the log, in log order.
        excerpts: Vec<(usize, String)>,
    },

    /// ptxas could not be run or did not accept the PTX.
    #[error("ptxas ({}) failed: {message}", .path.display())]
    Ptxas { path: PathBuf, message: String },

    /// cuobjdump could not be run or did not accept the CUBIN.
    #[error("cuobjdump ({}) failed: {message}", .path.display())]
    Cuobjdump { path: PathBuf, message: String },

    /// The kernel cache folder could not be created or written.
    #[error("kernel cache {}: {source}", .path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// No CUDA device can be used on this machine.
    #[error("no usable CUDA GPU: {reason}")]
    NoGpu { reason: String },

    /// A GPU is present but Tessera does not generate code for it.
    #[error("unsupported GPU {device}: {reason}")]
    UnsupportedDevice { device: String, reason: String },

    /// The CPU simulator could not load or run a kernel. For a fault, race or deadlock the source's
    /// message is the simulator's one-line report: kernel, CTA, thread, PTX line and address.
    #[error("CPU simulator, {stage} `{kernel}`: {source}")]
    Simulator {
        /// `loading` (parsing the PTX) or `launching`.
        stage: &'static str,
        kernel: String,
        #[source]
        source: Box<tessera_sim::SimError>,
    },

    /// `--backend auto` found neither a GPU nor a simulator.
    #[error("no backend available (cuda: {cuda}; sim: {sim})")]
    NoBackend { cuda: String, sim: String },

    /// Device work did not finish within the deadline (`TESSERA_SYNC_TIMEOUT_S`); see
    /// [`crate::device::watchdog`]. The kernel may still be running: the process must exit to free the GPU,
    /// and every later GPU call in it fails with this error.
    #[error("{}", hung_message(.kernels, *.launches, *.waited_s, *.timeout_s))]
    Hung {
        /// The kernels launched and not known to be complete, distinct, in launch order.
        kernels: Vec<String>,
        /// How many launches were outstanding.
        launches: usize,
        waited_s: f64,
        /// The deadline that passed.
        timeout_s: f64,
    },

    /// A CUDA driver API call failed.
    #[error("CUDA {call} failed: {message}")]
    Cuda { call: &'static str, message: String },

    /// An argument would make the launch read or write the wrong memory, or cannot be expressed.
    #[error("invalid argument `{arg}`: {message}")]
    InvalidArgument { arg: String, message: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// `text` with its control characters escaped (`\n` as the two characters `\` `n`): a message
/// that quotes user data (a header field, a JSON value) stays one line, as every error is.
pub fn one_line(text: &str) -> String {
    text.chars().fold(String::with_capacity(text.len()), |mut out, c| {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        out
    })
}

impl RuntimeError {
    pub fn invalid(arg: impl Into<String>, message: impl Into<String>) -> Self {
        RuntimeError::InvalidArgument { arg: arg.into(), message: message.into() }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io { context: context.into(), source }
    }

    /// A copy of an error stored for replay (a `OnceLock` holds the first attempt's outcome). The
    /// search and load errors are rebuilt exactly; others keep their message.
    pub(crate) fn replay(&self) -> RuntimeError {
        match self {
            RuntimeError::NotFound { what, searched, rejected, fix } => RuntimeError::NotFound {
                what: what.clone(),
                searched: searched.clone(),
                rejected: rejected.clone(),
                fix: fix.clone(),
            },
            RuntimeError::LibraryLoad { path, message } => {
                RuntimeError::LibraryLoad { path: path.clone(), message: message.clone() }
            }
            RuntimeError::Hung { kernels, launches, waited_s, timeout_s } => RuntimeError::Hung {
                kernels: kernels.clone(),
                launches: *launches,
                waited_s: *waited_s,
                timeout_s: *timeout_s,
            },
            other => RuntimeError::LibraryLoad { path: PathBuf::new(), message: other.to_string() },
        }
    }

    /// True for the errors that mean "this machine has no GPU", as opposed to a bug or a bad input;
    /// tests and the CLI use it to skip rather than fail.
    pub fn is_no_gpu(&self) -> bool {
        matches!(self, RuntimeError::NoGpu { .. } | RuntimeError::NoBackend { .. })
    }

    /// True for [`RuntimeError::Hung`]: GPU work that never finished. Unlike every other error the
    /// process cannot carry on with the GPU, and should exit without waiting on the driver.
    pub fn is_hung(&self) -> bool {
        matches!(self, RuntimeError::Hung { .. })
    }

    /// The simulator's report (kernel, CTA, thread, PTX line, address) when a simulated kernel
    /// faulted, raced, deadlocked or ran out of steps.
    pub fn sim_report(&self) -> Option<&tessera_sim::Report> {
        match self {
            RuntimeError::Simulator { source, .. } => source.report(),
            _ => None,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Seconds any wait for device work may take before the work is declared hung; `0` waits without
/// a deadline. Read by [`crate::device::watchdog`]; named here because [`RuntimeError::Hung`]'s
/// message tells the user how to change it.
pub const SYNC_TIMEOUT_ENV: &str = "TESSERA_SYNC_TIMEOUT_S";

fn bullets(items: &[String]) -> String {
    items.iter().fold(String::new(), |mut out, item| {
        let _ = writeln!(out, "  - {item}");
        out
    })
}

fn rejected_note(rejected: &[String]) -> String {
    if rejected.is_empty() {
        String::new()
    } else {
        format!("Found but not usable:\n{}", bullets(rejected))
    }
}

fn hung_message(kernels: &[String], launches: usize, waited_s: f64, timeout_s: f64) -> String {
    let names = kernels.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    format!(
        "GPU work did not finish within the {timeout_s} s deadline: waited {waited_s:.1} s for {launches} \
         launch(es) of {names}. The kernel is presumed hung (a deadlock, or far slower than expected) \
         and may still occupy the GPU; the CUDA context cannot be recovered, so this process must exit \
         to free the GPU (every later GPU call in it fails with this error). To change the deadline \
         set {}=<seconds> (0 waits without one)",
        SYNC_TIMEOUT_ENV
    )
}

fn compile_message(kernel: &str, target: &str, log: &str, excerpts: &[(usize, String)]) -> String {
    let mut out = format!("NVRTC could not compile `{kernel}` for {target}:\n{}", log.trim_end());
    if !excerpts.is_empty() {
        out.push_str("\n\nGenerated source at the reported lines:");
        for (line, text) in excerpts {
            let _ = write!(out, "\n  {line:>5} | {text}");
        }
    }
    out
}
