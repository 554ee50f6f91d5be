//! The CPU simulator backend: runs the generated kernels on the host, so that launchers and
//! numerics can be tested on machines without a GPU. Not implemented yet; opening it reports so.

use crate::backend::Backend;
use crate::error::{Result, RuntimeError};

/// Always [`RuntimeError::SimulatorUnavailable`] for now.
pub fn open_sim_backend() -> Result<Box<dyn Backend>> {
    Err(RuntimeError::SimulatorUnavailable)
}
