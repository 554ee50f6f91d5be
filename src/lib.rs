//! Tessera: typed kernel specs → specialised CUDA kernels, JIT-compiled through NVRTC, verified
//! against CPU references.
//!
//! ```no_run
//! use tessera::{Arch, AttentionSpec, DType};
//!
//! let spec = AttentionSpec::new(DType::BF16, 128, true, 16, 4); // GQA: 16 query heads, 4 KV heads
//! spec.validate(Arch::SM90)?;
//! let source = spec.render(Arch::SM90)?;   // CUDA C++ + entry point + content hash
//! println!("{} ({} bytes, hash {})", source.name, source.cuda_src.len(), source.hash);
//! # Ok::<(), tessera::TesseraError>(())
//! ```

pub mod npy;
mod error;

pub use error::TesseraError;
pub use tessera_codegen as codegen;
pub use tessera_codegen::{Arch, AttentionSpec, DType, KernelSource, SpecError, TileConfig};
pub use tessera_runtime as runtime;
