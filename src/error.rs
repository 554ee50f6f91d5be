use std::path::PathBuf;

use thiserror::Error;

/// Errors of the `tessera` crate and CLI; the CLI prints them as one line and exits non-zero.
#[derive(Debug, Error)]
pub enum TesseraError {
    #[error(transparent)]
    Spec(#[from] tessera_codegen::SpecError),
    #[error(transparent)]
    Runtime(#[from] tessera_runtime::RuntimeError),
    #[error("{}: {message}", path.display())]
    Npy { path: PathBuf, message: String },
    #[error("{arg}: {message}")]
    InvalidInput { arg: String, message: String },
    #[error("{0}")]
    Check(String),
}

impl TesseraError {
    pub fn input(arg: impl Into<String>, message: impl Into<String>) -> Self {
        TesseraError::InvalidInput { arg: arg.into(), message: message.into() }
    }
}
