//! The attention forward launcher: argument checks, the kernel's parameter struct, the launch, and
//! a host convenience that uploads `f32` tensors and downloads the result.
//!
//! Tensors are `[batch, seq, heads, head_dim]` in the spec's 16-bit dtype with strides in elements;
//! the log-sum-exp output is `f32 [batch, heads_q, seq_q]`, contiguous. Everything the kernel
//! trusts (strides, sizes, alignment, index ranges) is checked by [`check`](fn@check) before a
//! launch, because a wrong stride on a GPU is a silent wrong answer or a fault that poisons the
//! whole context.
//!
//! The family's files, each importing only the ones before it in this list (this front re-exports
//! them all and holds no code of its own):
//! - `problem.rs`: the call's shape, strides, spans and buffers;
//! - `sm80.rs`: the mma.sync kernel's parameters (the struct is codegen's) and grid;
//! - `check.rs`: the argument checks;
//! - `sm90a.rs`: the sm_90a kernel's tensor maps, parameters and persistent grid;
//! - `launch.rs`: [`prepare_attention`] / [`attention_forward`], which pick between the two;
//! - `tree.rs`, `variant.rs`: the variants' masks, values, buffers, checks and launch;
//! - `inputs.rs`: the host-tensor entry points ([`run_attention`], [`run_attention_variant`]);
//! - `reference.rs`: the f64 reference (re-exported by [`crate::reference`]);
//! - `reference_backward.rs`: the f64 reference gradients (re-exported likewise);
//! - `tune.rs`: the tuning target ([`attention_target`]).

mod check;
mod inputs;
mod family;
mod launch;
mod problem;
pub(crate) mod reference;
pub(crate) mod reference_backward;
mod sm80;
mod sm90a;
mod tree;
mod tune;
mod variant;

pub use check::{check, check_problem};
pub use inputs::{run_attention, run_attention_variant, AttentionInputs, AttentionOutput, PagedKv, PrefixInputs, TreeInputs, VarlenInputs};
pub use family::AttentionFamily;
pub use launch::{attention_forward, prepare_attention, AttentionLaunch};
pub use problem::{AttentionBuffers, AttentionProblem, AttentionSpans, AttentionStrides, TensorStrides, MAX_SEQ_LEN, AttentionTuneShape};
pub use sm80::{attention_params, launch_config, scale_log2};
pub use sm90a::AttentionLaunchParams;
pub use tessera_codegen::{AttentionParams, HopperAttentionParams};
pub use tree::TreeMask;
pub use tune::attention_target;
pub use variant::{check_num_splits, check_variant, default_num_splits, prepare_attention_variant, split_workspace_bytes, PagedLayout, VariantArgs, VariantBuffers, VariantCall, Window, MAX_SPLITS, MIN_PAGE_SIZE};
