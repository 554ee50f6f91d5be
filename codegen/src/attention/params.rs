//! The attention family's host/device contract: the kernels' parameter structs and the FEATURES
//! bits, defined once here; the CUDA declarations the templates use are generated from them
//! ([`contract`]), with static assertions that make NVRTC name any field whose layout differs from
//! Rust's.

use crate::common::params::{Declarations, DeviceEnum, DevicePtr, DevicePtrMut, KernelParams, TensorMap};

/// The FEATURES bits of the attention templates (the variants a kernel instantiates);
/// `AttentionFeatures::bits` sums them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, DeviceEnum)]
#[repr(i32)]
#[device_enum(prefix = "ATTN_")]
pub enum AttentionFeature {
    /// Sliding window around each query's diagonal.
    Local = 1,
    /// ALiBi slopes.
    Alibi = 2,
    /// Logit soft-capping.
    Softcap = 4,
    /// Prefix keys/values visible to every query.
    Prefix = 8,
    /// Tree mask over the candidate block.
    Tree = 16,
    /// Packed sequences delimited by `cu_seqlens`.
    Varlen = 32,
    /// K/V in a paged cache.
    Paged = 64,
    /// One CTA for all query heads of a KV head.
    PackGqa = 128,
    /// Keys split across CTAs, merged through the log-sum-exp.
    Split = 256,
}

impl AttentionFeature {
    /// The FEATURES bit.
    pub const fn bit(self) -> u32 {
        self as u32
    }
}

/// The mma.sync attention kernel's single by-value parameter (`templates/attention/sm80.cuh`).
/// Strides are in elements; the last dimension of every tensor is contiguous. Fields after
/// `scale_log2` are read only by kernels whose FEATURES use them, and are zero otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, KernelParams)]
#[repr(C)]
pub struct AttentionParams {
    /// `[batch, seq_q, heads_q, head_dim]`.
    pub q: DevicePtr,
    /// `[batch, seq_k, heads_kv, head_dim]`; PAGED: `[pages, page, heads_kv, head_dim]`.
    pub k: DevicePtr,
    /// Like k.
    pub v: DevicePtr,
    /// `[batch, seq_q, heads_q, head_dim]`.
    pub o: DevicePtrMut,
    /// `[batch, heads_q, seq_q]` contiguous (VARLEN: `[heads_q, total_q]`), or null.
    pub lse: DevicePtrMut<f32>,
    pub q_batch_stride: i64,
    pub q_seq_stride: i64,
    pub q_head_stride: i64,
    pub k_batch_stride: i64,
    pub k_seq_stride: i64,
    pub k_head_stride: i64,
    pub v_batch_stride: i64,
    pub v_seq_stride: i64,
    pub v_head_stride: i64,
    pub o_batch_stride: i64,
    pub o_seq_stride: i64,
    pub o_head_stride: i64,
    /// VARLEN: the longest sequence (the grid is sized by it).
    pub seq_q: i32,
    pub seq_k: i32,
    pub heads_q: i32,
    /// Softmax scale * log2(e).
    pub scale_log2: f32,
    /// ALIBI: `[heads_q]`, natural-log units.
    pub alibi_slopes: DevicePtr<f32>,
    /// PREFIX: `[prefix_len, heads_kv, head_dim]`.
    pub prefix_k: DevicePtr,
    pub prefix_v: DevicePtr,
    /// TREE: `[batch or 1, n_tree, tree_words]` ancestor-or-self.
    pub tree_bits: DevicePtr<u64>,
    /// VARLEN: `[batch + 1]`.
    pub cu_seqlens_q: DevicePtr<i32>,
    /// VARLEN and not PAGED: `[batch + 1]`.
    pub cu_seqlens_k: DevicePtr<i32>,
    /// PAGED: `[batch, block_table_stride]`.
    pub block_table: DevicePtr<i32>,
    /// PAGED: keys of each sequence, `[batch]`.
    pub seq_lens: DevicePtr<i32>,
    /// SPLIT: `[num_splits, total_q, heads_q, head_dim]`.
    pub partial_o: DevicePtrMut<f32>,
    /// SPLIT: `[num_splits, total_q, heads_q]`.
    pub partial_lse: DevicePtrMut<f32>,
    /// SPLIT: one per CTA tile, zero between launches.
    pub counters: DevicePtrMut<u32>,
    pub prefix_k_seq_stride: i64,
    pub prefix_k_head_stride: i64,
    pub prefix_v_seq_stride: i64,
    pub prefix_v_head_stride: i64,
    /// In words; 0 = one tree for every sequence.
    pub tree_batch_stride: i64,
    pub block_table_stride: i64,
    pub prefix_len: i32,
    pub n_tree: i32,
    /// `ceil(n_tree / 64)`.
    pub tree_words: i32,
    /// log2(page size).
    pub page_shift: i32,
    /// LOCAL: < 0 = unbounded.
    pub window_left: i32,
    pub window_right: i32,
    pub num_splits: i32,
    /// VARLEN: rows of the packed Q; SPLIT: rows of the partials.
    pub total_q: i32,
    /// SOFTCAP: scale / cap.
    pub softcap_scale: f32,
    /// SOFTCAP: cap * log2(e).
    pub softcap_log2: f32,
}

/// The sm_90a attention kernel's parameter (`templates/attention/sm90a.cuh`), passed as one
/// `__grid_constant__` struct so the tensor maps live in parameter memory.
#[derive(Clone, Copy, Debug, PartialEq, KernelParams)]
#[repr(C, align(64))]
pub struct HopperAttentionParams {
    /// Q `[batch, seq_q, heads_q, head_dim]` as 4-D (d, head, seq, batch), box (64, 1, BLOCK_M, 1).
    pub q_map: TensorMap,
    /// K, box (64, 1, BLOCK_N, 1).
    pub k_map: TensorMap,
    /// V, box (64, 1, BLOCK_N, 1).
    pub v_map: TensorMap,
    /// Pointers, strides, sizes, scale: the mma.sync path's struct.
    pub base: AttentionParams,
    pub batch: i32,
    /// Work tiles: m_blocks * heads_q * batch, walked by `gridDim.x` persistent CTAs.
    pub num_tiles: i32,
    /// Up to a multiple of 64 bytes (the tensor maps' alignment).
    pub padding: [u8; 48],
}

/// What the mma.sync attention template (and the sm_90a one, built on it) uses from Rust: the
/// FEATURES bits and [`AttentionParams`].
pub(crate) fn contract(out: &mut Declarations) {
    out.add::<AttentionFeature>().add::<AttentionParams>();
}

/// What the sm_90a attention template adds: [`HopperAttentionParams`].
pub(crate) fn sm90a_contract(out: &mut Declarations) {
    contract(out);
    out.add::<HopperAttentionParams>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn attention_params_are_what_the_kernel_takes() {
        assert_eq!(size_of::<AttentionParams>(), 328);
        assert_eq!(offset_of!(AttentionParams, alibi_slopes), 152);
        assert_eq!(offset_of!(AttentionParams, counters), 232);
        assert_eq!(offset_of!(AttentionParams, prefix_k_seq_stride), 240);
        assert_eq!(offset_of!(AttentionParams, block_table_stride), 280);
        assert_eq!(offset_of!(AttentionParams, prefix_len), 288);
        assert_eq!(offset_of!(AttentionParams, total_q), 316);
        assert_eq!(offset_of!(AttentionParams, softcap_log2), 324);
        assert_eq!(align_of::<AttentionParams>(), 8);
        assert_eq!(offset_of!(AttentionParams, lse), 32);
        assert_eq!(offset_of!(AttentionParams, q_batch_stride), 40);
        assert_eq!(offset_of!(AttentionParams, o_head_stride), 128);
        assert_eq!(offset_of!(AttentionParams, seq_q), 136);
        assert_eq!(offset_of!(AttentionParams, seq_k), 140);
        assert_eq!(offset_of!(AttentionParams, heads_q), 144);
        assert_eq!(offset_of!(AttentionParams, scale_log2), 148);
        assert_eq!(AttentionParams::fields().len(), 48);
    }

    #[test]
    fn hopper_params_are_what_the_kernel_takes() {
        assert_eq!(size_of::<HopperAttentionParams>(), 768);
        assert_eq!(align_of::<HopperAttentionParams>(), 64);
        assert_eq!(offset_of!(HopperAttentionParams, k_map), 128);
        assert_eq!(offset_of!(HopperAttentionParams, base), 384);
        assert_eq!(offset_of!(HopperAttentionParams, batch), 712);
        assert_eq!(offset_of!(HopperAttentionParams, num_tiles), 716);
    }

    #[test]
    fn contract_declares_the_pointer_types_once_in_order() {
        let mut d = Declarations::new();
        sm90a_contract(&mut d);
        let text = d.to_string();
        assert_eq!(text.matches("struct alignas(8) AttentionParams {").count(), 1, "declared once: {text}");
        for line in [
            "    const void* q;",
            "    void* o;",
            "    float* lse;",
            "    const float* alibi_slopes;",
            "    const unsigned long long* tree_bits;",
            "    const int* cu_seqlens_q;",
            "    unsigned int* counters;",
            "    AttentionParams base;",
            "    unsigned char padding[48];",
        ] {
            assert!(text.contains(&format!("{line}\n")), "lacks `{line}`: {text}");
        }
        let (features, params, hopper) = (
            text.find("ATTN_LOCAL").unwrap(),
            text.find("AttentionParams {").unwrap(),
            text.find("HopperAttentionParams {").unwrap(),
        );
        assert!(features < params && params < hopper, "{text}");
        assert!(text.contains("static_assert(TESSERA_OFFSETOF(HopperAttentionParams, base) == 384"), "{text}");
    }
}
