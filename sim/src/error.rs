//! Errors and fault reports.

use std::fmt;

/// Where and what went wrong while a kernel ran: enough to find the offending PTX line and thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The entry being launched.
    pub kernel: String,
    /// `%ctaid` of the offending thread.
    pub cta: [u32; 3],
    /// `%tid` of the offending thread.
    pub thread: [u32; 3],
    /// 1-based line of the instruction in the PTX text (0 when not tied to one instruction).
    pub ptx_line: usize,
    /// The memory address involved, if any (global: the generic address; shared: the offset in the
    /// CTA's shared window).
    pub address: Option<u64>,
    /// What happened, e.g. "out-of-bounds global load of 4 bytes".
    pub kind: String,
}

impl fmt::Display for Report {
    /// One line: `kind: kernel `k`, CTA (x, y, z), thread (x, y, z), PTX line N, address 0x...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [cx, cy, cz] = self.cta;
        let [tx, ty, tz] = self.thread;
        write!(
            f,
            "{}: kernel `{}`, CTA ({cx}, {cy}, {cz}), thread ({tx}, {ty}, {tz}), PTX line {}",
            self.kind, self.kernel, self.ptx_line
        )?;
        if let Some(a) = self.address {
            write!(f, ", address {a:#x}")?;
        }
        Ok(())
    }
}

/// Everything the simulator can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The PTX text could not be parsed.
    #[error("PTX parse error at line {line}: {message}")]
    Parse { line: usize, message: String },
    /// The PTX is well-formed but uses an instruction (or form of one) the simulator does not run.
    #[error("unsupported PTX instruction `{instruction}` at line {line}")]
    Unsupported { instruction: String, line: usize },
    /// `launch` named an entry the module does not define.
    #[error("entry `{name}` not found; the module defines: {}", available.join(", "))]
    EntryNotFound { name: String, available: Vec<String> },
    /// The parameter buffer does not match the entry's parameter list.
    #[error("parameter buffer is {got} bytes, the entry's parameters take {expected}")]
    ParamSize { expected: usize, got: usize },
    /// The launch configuration is not valid (zero-sized grid, too many threads, ...).
    #[error("invalid launch configuration: {0}")]
    Config(String),
    /// A thread did something invalid: out-of-bounds or misaligned access, a race, a read of data
    /// still in flight, ...
    #[error("fault: {0}")]
    Fault(Report),
    /// Threads of a CTA wait at barriers that can never complete.
    #[error("deadlock: {0}")]
    Deadlock(Report),
    /// A thread ran more instructions than `SimOptions::step_budget`.
    #[error("step budget exceeded: {0}")]
    StepBudget(Report),
    /// A tensor map (see [`crate::TensorMap`]) is malformed or breaks a `cuTensorMapEncodeTiled`
    /// rule.
    #[error("invalid tensor map: {0}")]
    TensorMap(String),
    /// A host-side memory operation (read/write/free) failed.
    #[error("memory: {0}")]
    Memory(String),
}

impl SimError {
    /// The report of a runtime failure (fault, deadlock, step budget), if this is one.
    pub fn report(&self) -> Option<&Report> {
        match self {
            SimError::Fault(r) | SimError::Deadlock(r) | SimError::StepBudget(r) => Some(r),
            _ => None,
        }
    }
}
