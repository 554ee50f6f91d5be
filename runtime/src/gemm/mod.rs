//! The GEMM launcher: argument checks, the kernel's parameter struct, the launch, and a host
//! convenience ([`run_gemm`]) that uploads `f32` tensors and downloads the result.
//!
//! `Y[M,N] = act(alpha * X[M,K] @ W[K,N] + beta * C[M,N] + bias[N]) + residual[M,N]`, in that order
//! (see `tessera_codegen::GemmSpec`). X and W are in the spec's 16-bit dtype; C, bias, residual and
//! Y in its output type. Row strides ("leading dimensions") are in elements.
//!
//! Alignment contract: an aligned spec (`GemmSpec::aligned`, the default) moves X and W rows in
//! 16-byte `cp.async` chunks, so every stored row must be whole chunks: K for row-major X and
//! column-major W, M for column-major X, N for row-major W, and the X and W row strides must be
//! multiples of 8 elements, with X and W 16-byte aligned. [`check`](fn@check) rejects anything else
//! with an error naming the field; [`fits_aligned`] tells whether a problem qualifies, and
//! [`run_gemm`] picks the element-wise kernel (`aligned: false`, any shape) when it does not.
//!
//! On sm_90a, an aligned spec without a user epilogue or an explicit tile runs the TMA + wgmma
//! kernel (`tessera_codegen::gemm_hopper_route`); [`prepare_gemm`] builds its tensor maps, and
//! when a map cannot describe the operands (K = 0, say) runs the mma.sync kernel instead, with the
//! reason in the launch's note and on standard error.
//!
//! The family's files, each importing only the ones before it in this list (this front re-exports
//! them and holds no code of its own):
//! - `problem.rs`: the call's shape, strides, spans, buffers and split-K workspace;
//! - `check.rs`: the argument checks (LoRA's checks reuse `check_matrices`);
//! - `sm80.rs`: the mma.sync kernel's parameter struct and grid;
//! - `sm90a.rs`: the sm_90a kernel's tensor maps and parameter struct;
//! - `launch.rs`: [`prepare_gemm`], [`gemm_forward`] and [`run_gemm`];
//! - `reference.rs`: the f64 reference (re-exported by [`crate::reference`]);
//! - `tune.rs`: the tuning target ([`gemm_target`]).
//!
//! LoRA builds on GEMM (its problem layout, checks and sm_90a maps); GEMM never uses LoRA.

pub(crate) mod check;
mod family;
mod launch;
pub(crate) mod problem;
pub(crate) mod reference;
mod sm80;
pub(crate) mod sm90a;
mod tune;

pub use check::{check, check_matrices, check_problem, MatrixArg};
pub use family::{GemmArgs, GemmFamily};
pub use launch::{gemm_forward, prepare_gemm, run_gemm, GemmLaunch, GemmOutput};
pub use problem::{fits_aligned, split_workspace_bytes, stored_shape, unaligned_reason, GemmBuffers, GemmProblem, GemmSpans, GemmStrides, CHUNK_ELEMS, MAX_DIM, GemmTuneShape};
pub use sm80::{gemm_params, launch_config};
pub use tessera_codegen::{GemmParams, HopperGemmParams};
pub use sm90a::GemmLaunchParams;
pub use tune::gemm_target;
