//! Tessera: typed kernel specs → specialised CUDA kernels, JIT-compiled through NVRTC, verified
//! against CPU references.
//!
//! ```no_run
//! use tessera::{Arch, AttentionSpec, ElemType};
//!
//! let spec = AttentionSpec::new(ElemType::BF16, 128, true, 16, 4); // GQA: 16 query heads, 4 KV heads
//! spec.validate(Arch::SM90)?;
//! let source = spec.render(Arch::SM90)?;   // CUDA C++ + entry point + content hash
//! println!("{} ({} bytes, hash {})", source.name, source.cuda_src.len(), source.hash);
//! # Ok::<(), tessera::TesseraError>(())
//! ```
//!
//! A downstream crate declares the kernels it needs with the attribute macros
//! [`attention`], [`gemm`], [`lora`] and [`elementwise`]; impossible specs fail its build.

pub mod npy;
pub mod outputs;
pub mod registry;
pub mod typed;
mod error;

pub use error::TesseraError;
pub use tessera_codegen as codegen;
pub use tessera_codegen::{Arch, AttentionFeatures, AttentionSpec, ElemType, KernelSource, SpecError, TileConfig};
pub use tessera_runtime as runtime;

/// The `half` crate the typed entry points use (`half::bf16` buffers for bf16 kernels).
pub use half;
#[doc(hidden)]
pub use inventory;

/// Declares an attention forward kernel on a struct.
///
/// Arguments: `dtype = f16 | bf16`, `head_dim = 32 | 64 | 96 | 128 | 192 | 256`, `heads_q = N`,
/// optional `heads_kv = N` (a divisor of heads_q; default heads_q), `causal`, and an optional
/// `tile(block_m = .., block_n = .., warps = .., stages = ..)`. The spec is validated for sm_80 when
/// the crate compiles; a bad value is a compile error at that argument listing the allowed values.
///
/// The struct gets `SPEC` (the [`AttentionSpec`]), `SOURCE` (the CUDA C++ for sm_80), `NAME`,
/// `source(arch)`, and a typed `run` taking Q, K, V in the dtype's `half` type; it is registered
/// in [`registry`].
///
/// ```
/// use tessera::half::bf16;
///
/// #[tessera::attention(dtype = bf16, head_dim = 64, heads_q = 8, heads_kv = 2, causal)]
/// pub struct GqaAttention;
///
/// assert_eq!(GqaAttention::SPEC.group(), 4);
/// assert!(GqaAttention::SOURCE.contains("mma.sync.aligned.m16n8k16"));
/// assert!(tessera::registry::kernels().iter().any(|k| k.name == "GqaAttention"));
///
/// // Runs on the GPU, or on the CPU simulator without one.
/// fn forward(q: &[bf16], k: &[bf16], v: &[bf16]) -> Result<Vec<bf16>, tessera::TesseraError> {
///     let backend = tessera::runtime::open_backend(tessera::runtime::BackendKind::Auto)?;
///     let compiler = tessera::runtime::Compiler::with_default_cache()?;
///     GqaAttention::run(backend.as_ref(), &compiler, 1, q.len() / (8 * 64), k.len() / (2 * 64), q, k, v)
/// }
/// # let _ = forward;
/// ```
pub use tessera_macros::attention;

/// Declares a GEMM kernel `Y = act(alpha X W + beta C + bias) + residual` on a struct.
///
/// Arguments: `dtype = f16 | bf16`, `out = f16 | bf16 | f32` (default: dtype), `layout_x`,
/// `layout_w = row | col`, flags `bias`, `residual`, `unaligned`, `activation = none | relu |
/// gelu_tanh | silu`, `epilogue = path::to::elementwise_fn` (one input, applied after the
/// activation), and `tile(block_m, block_n, block_k, warps, stages)`.
///
/// ```
/// #[tessera::elementwise]
/// fn leaky(x: f32) -> f32 {
///     if x > 0.0 { x } else { 0.01 * x }
/// }
///
/// #[tessera::gemm(dtype = bf16, out = f32, layout_w = col, bias, epilogue = leaky)]
/// struct Projection;
///
/// assert_eq!(Projection::SPEC.epilogue.user.map(|f| f.name), Some("leaky"));
/// assert_eq!(leaky(-2.0), -0.02);
/// ```
pub use tessera_macros::gemm;

/// Declares a fused LoRA kernel `Y = act(X W + s (X A_i) B_i + bias) + residual` (or, with
/// `bottleneck = <activation>`, `Y = X + s f(X A) B`) on a struct.
///
/// Arguments: `dtype`, `out`, `rank = 8 | 16 | 32 | 64 | 128`, `adapters = single | per_row`,
/// `layout_x`, `layout_w`, the GEMM epilogue arguments, `bottleneck = ..`, and `tile(..)`.
///
/// ```
/// #[tessera::lora(dtype = bf16, rank = 16, adapters = per_row)]
/// struct ServingLora;
///
/// assert_eq!(ServingLora::SPEC.rank, 16);
/// assert!(ServingLora::SOURCE.contains("tessera::lora<"));
/// ```
pub use tessera_macros::lora;

/// Turns a Rust function over f32 / f16 / bf16 scalars into an elementwise CUDA kernel and a GEMM /
/// LoRA epilogue step, keeping the function callable on the CPU (where it is its own reference).
///
/// The body may use `let` bindings, `+ - * /`, comparisons, `if`/`else`, `min`, `max`, `abs`,
/// `exp`, `tanh`, `sqrt` and `as` casts between f32, f16 and bf16; anything else is a compile error
/// at the offending expression. Every f32 operation is rounded once, as in Rust (no FMA
/// contraction); `exp` and `tanh` use CUDA's `expf` / `tanhf` (within 2 ulp of Rust's).
///
/// A module of the function's name holds `FUNCTION`, `SPEC` (the elementwise kernel) and a typed
/// `run`; an optional `tile(threads, elems_per_thread, vector)` sets the kernel's work division.
///
/// ```
/// use tessera::half::bf16;
///
/// /// GELU (tanh form), rounded to bf16.
/// #[tessera::elementwise]
/// pub fn gelu_bf16(x: f32) -> bf16 {
///     let u = 0.7978846 * (x + 0.044715 * x * x * x);
///     (0.5 * x * (1.0 + u.tanh())) as bf16
/// }
///
/// assert_eq!(gelu_bf16(0.0), bf16::from_f32(0.0));
/// assert_eq!(gelu_bf16::FUNCTION.inputs.len(), 1);
/// let _run = gelu_bf16::run; // (backend, compiler, &[f32]) -> Result<Vec<bf16>, _>
/// ```
pub use tessera_macros::elementwise;
