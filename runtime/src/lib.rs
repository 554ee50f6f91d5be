//! Tessera runtime: from a rendered [`KernelSource`](tessera_codegen::KernelSource) to results.
//!
//! - [`locate`](compile::locate) finds NVRTC and ptxas (toolkit, conda, the `nvidia-cuda-nvrtc`
//!   wheel, or the project-local `.tessera/cuda`) without `LD_LIBRARY_PATH`;
//!   [`nvrtc`](compile::nvrtc) loads NVRTC once.
//! - [`Compiler`] JIT-compiles with NVRTC to PTX or CUBIN for a [`Target`], through the on-disk
//!   [`KernelCache`], which verifies every entry it reads and is safe across processes.
//! - [`ptxas`](compile::ptxas) reports registers, spills and shared memory; [`check_spec`] combines
//!   both for `tessera check`.
//! - [`watchdog`](device::watchdog) puts a deadline (`TESSERA_SYNC_TIMEOUT_S`) on every wait for GPU
//!   work, so a hung kernel is an error ([`RuntimeError::Hung`]), never a process stuck in the
//!   driver.
//! - [`Backend`] abstracts the device: [`open_backend`] gives the CUDA backend where there is a GPU
//!   and the CPU simulator ([`SimBackend`], a PTX interpreter from `tessera-sim`) where there is
//!   none; asked for CUDA explicitly without a GPU, it is a clear [`RuntimeError::NoGpu`].
//! - [`attention`] checks, launches and wraps the attention forward kernel; [`run_attention`] is the
//!   host-tensor entry point.
//! - [`gemm`](mod@gemm) checks, launches and wraps the mixed-precision GEMM (fused bias /
//!   activation / residual epilogue); [`run_gemm`] is the host-tensor entry point.
//! - [`reference`](mod@reference) holds CPU reference implementations to test kernels against.
//!
//! The crate is laid out in layers; a module imports only from the layers below it, and no file
//! imports one that imports it back:
//! - [`common`]: what every family shares and no family owns (the error type, host encodings and
//!   buffer spans, fp8 formats, the checked launch, tensor-list checks, tensor maps);
//! - [`device`]: the backends; [`compile`]: NVRTC, the cache, ptxas and SASS reports;
//! - [`tuning`]: the tuning database and tuner, which know no family;
//! - [`family`]: the launch path the tensor-core families share (the [`Family`] trait: check,
//!   tuned tile, parameters, sm_90a route and fallback, render, load), written once;
//! - the families, one folder each: [`attention`], [`gemm`](mod@gemm), [`lora`](mod@lora) (which
//!   builds on GEMM), [`amp`], [`window`], [`elementwise`]; each holds its launchers, its reference
//!   and its tuning target;
//! - [`reference`](mod@reference): the families' references in one place.

// The derives expand to `::tessera_runtime::...`, which must resolve inside this crate too.
extern crate self as tessera_runtime;

pub mod amp;
pub mod attention;
pub mod common;
pub mod compile;
pub mod device;
pub mod elementwise;
pub mod family;
pub mod gemm;
pub mod lora;
pub mod reference;
pub mod tuning;
pub mod window;

pub use tessera_codegen as codegen;
pub use tessera_sim as simulator;

pub use attention::{attention_forward, check as check_attention, check_problem, prepare_attention, run_attention, AttentionBuffers, AttentionLaunch, AttentionOutput, AttentionParams, AttentionProblem, AttentionSpans, AttentionStrides, TensorStrides};
pub use gemm::{check as check_gemm, gemm_forward, prepare_gemm, run_gemm, GemmBuffers, GemmLaunch, GemmLaunchParams, GemmOutput, GemmParams, GemmProblem, GemmSpans, GemmStrides, HopperGemmParams};
pub use lora::{prepare_lora, run_lora, LoraBuffers, LoraInputs, LoraLaunch, LoraLaunchParams, LoraOutput, LoraParams, LoraProblem, LoraStrides};

pub use common::buffers::BufferSpan;
pub use common::error::{one_line, Result, RuntimeError, SYNC_TIMEOUT_ENV};
pub use family::{prepare, Family, FamilyLaunch, KernelChoice};
pub use common::launch::{HostOutput, LaunchParams, PreparedLaunch};
pub use tessera_codegen::KernelParams;

pub use device::backend::{Backend, BackendId, BackendKind, DeviceBuffer, Kernel, LaunchConfig};
pub use device::cuda::CudaBackend;
pub use device::open::open_backend;
pub use device::sim::SimBackend;
pub use device::watchdog::{process_hang, sync_timeout_from_env};

pub use compile::cache::{CacheKey, CacheStats, KernelCache, Lookup};
pub use compile::check::{check_spec, check_spec_with, SpecCheck};
pub use compile::compiler::{nvrtc_options, Compiler};
pub use compile::locate::{find_nvrtc, find_ptxas, NvrtcFiles, NvrtcOrigin};
pub use compile::nvrtc::{nvrtc_library, nvrtc_version, NvrtcLibrary};
pub use compile::ptxas::{parse_ptxas_output, run_ptxas, PtxasReport};
pub use compile::target::{CompiledModule, OutputKind, Target};
