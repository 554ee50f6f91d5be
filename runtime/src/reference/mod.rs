//! CPU references that every numerical check of a kernel compares against (tests, CLI, examples).
//!
//! The references compute in f64 on inputs that were first rounded to the kernel's storage dtype
//! ([`round_to_dtype`]), so the only differences left to a correct kernel are its own roundings:
//! the 16-bit probabilities fed to the second matmul, the f32 accumulators and the 16-bit output.
//! [`compare`] measures those differences and [`tolerance`] says how large they may be.
//!
//! Each family keeps its reference beside its launcher (`attention/reference.rs`,
//! `gemm/reference.rs`, ...); what they share is in `accuracy.rs`. This module is the one
//! place callers find them all: `tessera_runtime::reference::attention`, `reference::gemm`, ...

pub(crate) mod accuracy;

pub use crate::amp::fp8::{exp2_i32, next_fp8_scale, scaled_cast_bf16_to_fp8, scaled_cast_to_fp8};
pub use crate::amp::reference::{adamw_step, powi_exact, unscale_grads, update_scale, AdamWHyper, AdamWScalars, AmpFloat, LossScaler};
pub use crate::attention::reference::{attention, attention_paged, attention_sequence, attention_variant, attention_varlen, PrefixKv, ReferenceOutput, SequenceDims, VariantOptions};
pub use crate::attention::reference_backward::{attention_sequence_backward, attention_variant_backward, attention_varlen_backward, ReferenceGradients};
pub use crate::common::fp8::{f32_to_fp8, fp8_to_f32, Fp8Format, FP8_NAN};
pub use crate::gemm::reference::{activate, gemm};
pub use crate::lora::reference::{bottleneck, lora, LoraOperands};
pub use crate::window::reference::{sliding_window, window_abs_sum, window_sum_bound, window_sum_f64};
pub use accuracy::{compare, round_to_dtype, tolerance, Comparison};
