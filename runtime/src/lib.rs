//! Tessera runtime: from a rendered [`KernelSource`](tessera_codegen::KernelSource) to results.
//!
//! - [`locate`] finds NVRTC and ptxas (toolkit, conda, the `nvidia-cuda-nvrtc` wheel, or the
//!   project-local `.tessera/cuda`) without `LD_LIBRARY_PATH`; [`nvrtc`] loads NVRTC once.
//! - [`Compiler`] JIT-compiles with NVRTC to PTX or CUBIN for a [`Target`], through the on-disk
//!   [`KernelCache`], which verifies every entry it reads and is safe across processes.
//! - [`ptxas`] reports registers, spills and shared memory; [`check_spec`] combines both for
//!   `tessera check`.
//! - [`watchdog`] puts a deadline (`TESSERA_SYNC_TIMEOUT_S`) on every wait for GPU work, so a
//!   hung kernel is an error ([`RuntimeError::Hung`]), never a process stuck in the driver.
//! - [`Backend`] abstracts the device: [`open_backend`] gives the CUDA backend where there is a GPU
//!   and the CPU simulator ([`SimBackend`], a PTX interpreter from `tessera-sim`) where there is
//!   none; asked for CUDA explicitly without a GPU, it is a clear [`RuntimeError::NoGpu`].
//! - [`attention`] checks, launches and wraps the attention forward kernel; [`run_attention`] is the
//!   host-tensor entry point.
//! - [`gemm`](mod@gemm) checks, launches and wraps the mixed-precision GEMM (fused bias /
//!   activation / residual epilogue); [`run_gemm`] is the host-tensor entry point.
//! - [`reference`](mod@reference) holds CPU reference implementations to test kernels against.

pub mod adamw;
pub mod amp_scale;
pub mod attention;
pub mod backend;
pub mod cache;
pub mod cast;
pub mod check;
pub mod compiler;
pub mod cuda;
pub mod elems;
pub mod error;
pub mod gemm;
pub mod gemm_hopper;
pub mod launch;
pub mod locate;
pub mod lora;
pub mod lora_hopper;
pub mod map;
pub mod nvrtc;
pub mod ptxas;
pub mod reference;
pub mod sass;
pub mod sim;
pub mod tensor_list;
mod tma;
pub mod tuning;
pub mod unscale;
pub mod watchdog;
pub mod window;

pub use tessera_codegen as codegen;

pub use attention::{
    attention_forward, check as check_attention, check_problem, prepare_attention, run_attention,
    AttentionBuffers, AttentionLaunch, AttentionOutput, AttentionParams, AttentionProblem, AttentionSpans,
    AttentionStrides, BufferSpan, TensorStrides,
};
pub use gemm::{
    check as check_gemm, gemm_forward, prepare_gemm, run_gemm, GemmBuffers, GemmLaunch, GemmLaunchParams, GemmOutput,
    GemmParams, GemmProblem, GemmSpans, GemmStrides, HopperGemmParams,
};
pub use launch::{KernelParams, PreparedLaunch};
pub use lora::{
    prepare_lora, run_lora, LoraBuffers, LoraInputs, LoraLaunch, LoraLaunchParams, LoraOutput, LoraParams, LoraProblem,
    LoraStrides,
};
pub use backend::{open_backend, Backend, BackendId, BackendKind, DeviceBuffer, Kernel, LaunchConfig};
pub use cache::{CacheKey, CacheStats, KernelCache, Lookup};
pub use check::{check_spec, check_spec_with, SpecCheck};
pub use compiler::{nvrtc_options, CompiledModule, Compiler, OutputKind, Target};
pub use cuda::CudaBackend;
pub use error::{Result, RuntimeError};
pub use locate::{find_nvrtc, find_ptxas, NvrtcFiles, NvrtcOrigin};
pub use nvrtc::{nvrtc_library, nvrtc_version, NvrtcLibrary};
pub use ptxas::{parse_ptxas_output, run_ptxas, PtxasReport};
pub use sim::SimBackend;
pub use watchdog::{process_hang, sync_timeout_from_env, SYNC_TIMEOUT_ENV};
pub use tessera_sim as simulator;
