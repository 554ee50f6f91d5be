//! What every family shares and no family owns: the error type, host encodings and buffer spans,
//! the fp8 formats, the checked launch and its parameter trait, the tensor-list checks of the
//! multi-tensor kernels, the tensor maps of the sm_90a kernels, and the bounded reads of the files
//! a user names.
//!
//! Nothing here imports a family: the families build on `common`, `device` and `compile`, never
//! the other way round.

pub mod buffers;
pub mod error;
pub mod files;
pub mod fp8;
pub mod launch;
pub mod tensor_list;
pub(crate) mod tma;
