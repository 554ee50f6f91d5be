//! The mma.sync kernel (`templates/attention/sm80.cuh`): its parameter struct
//! ([`AttentionParams`], which the sm_90a kernel's embeds and the variant launcher extends) and
//! its launch grid, one CTA per query tile, head and batch entry.

use std::f64::consts::LOG2_E;

use tessera_codegen::LaunchGeometry;

use super::problem::{AttentionProblem, AttentionSpans, AttentionStrides};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::kernel_params;
use crate::device::backend::LaunchConfig;

/// The kernel's single by-value parameter; mirrors `tessera::AttentionParams` in
/// `templates/attention/sm80.cuh` field by field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    /// 0 when no log-sum-exp is wanted.
    pub lse: u64,
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
    pub seq_q: i32,
    pub seq_k: i32,
    pub heads_q: i32,
    pub scale_log2: f32,
    // Variant arguments (see `variant.rs`); zero for plain attention.
    pub alibi_slopes: u64,
    pub prefix_k: u64,
    pub prefix_v: u64,
    pub tree_bits: u64,
    pub cu_seqlens_q: u64,
    pub cu_seqlens_k: u64,
    pub block_table: u64,
    pub seq_lens: u64,
    pub partial_o: u64,
    pub partial_lse: u64,
    pub counters: u64,
    pub prefix_k_seq_stride: i64,
    pub prefix_k_head_stride: i64,
    pub prefix_v_seq_stride: i64,
    pub prefix_v_head_stride: i64,
    pub tree_batch_stride: i64,
    pub block_table_stride: i64,
    pub prefix_len: i32,
    pub n_tree: i32,
    pub tree_words: i32,
    pub page_shift: i32,
    pub window_left: i32,
    pub window_right: i32,
    pub num_splits: i32,
    pub total_q: i32,
    pub softcap_scale: f32,
    pub softcap_log2: f32,
}

/// 16 pointers, 18 strides, 14 four-byte fields: no padding anywhere, which
/// [`AttentionParams::as_bytes`] relies on.
const PARAMS_BYTES: usize = 16 * 8 + 18 * 8 + 14 * 4;

/// The kernel works in base 2 (`ex2.approx`), so the softmax scale is premultiplied by log2(e).
/// The one place this conversion happens.
pub fn scale_log2(scale: f32) -> f32 {
    (f64::from(scale) * LOG2_E) as f32
}

impl AttentionParams {
    /// Builds the parameters. Arguments must have passed [`check`](super::check::check); conversions that would
    /// overflow are reported rather than wrapped all the same.
    pub fn new(
        problem: &AttentionProblem,
        strides: &AttentionStrides,
        spans: &AttentionSpans,
        scale: f32,
    ) -> Result<Self> {
        let int = |arg: &str, value: usize| {
            i32::try_from(value).map_err(|_| RuntimeError::invalid(arg, format!("{value} does not fit in an i32")))
        };
        let long = |arg: &str, value: usize| {
            i64::try_from(value).map_err(|_| RuntimeError::invalid(arg, format!("{value} does not fit in an i64")))
        };
        let s = strides;
        Ok(AttentionParams {
            q: spans.q.addr,
            k: spans.k.addr,
            v: spans.v.addr,
            o: spans.o.addr,
            lse: spans.lse.map_or(0, |span| span.addr),
            q_batch_stride: long("q.strides.batch", s.q.batch)?,
            q_seq_stride: long("q.strides.seq", s.q.seq)?,
            q_head_stride: long("q.strides.head", s.q.head)?,
            k_batch_stride: long("k.strides.batch", s.k.batch)?,
            k_seq_stride: long("k.strides.seq", s.k.seq)?,
            k_head_stride: long("k.strides.head", s.k.head)?,
            v_batch_stride: long("v.strides.batch", s.v.batch)?,
            v_seq_stride: long("v.strides.seq", s.v.seq)?,
            v_head_stride: long("v.strides.head", s.v.head)?,
            o_batch_stride: long("o.strides.batch", s.o.batch)?,
            o_seq_stride: long("o.strides.seq", s.o.seq)?,
            o_head_stride: long("o.strides.head", s.o.head)?,
            seq_q: int("problem.seq_q", problem.seq_q)?,
            seq_k: int("problem.seq_k", problem.seq_k)?,
            heads_q: int("problem.heads_q", problem.heads_q)?,
            scale_log2: scale_log2(scale),
            ..AttentionParams::zeroed()
        })
    }

    /// Every field zero: plain attention's values for the variant fields.
    pub fn zeroed() -> AttentionParams {
        AttentionParams {
            q: 0,
            k: 0,
            v: 0,
            o: 0,
            lse: 0,
            q_batch_stride: 0,
            q_seq_stride: 0,
            q_head_stride: 0,
            k_batch_stride: 0,
            k_seq_stride: 0,
            k_head_stride: 0,
            v_batch_stride: 0,
            v_seq_stride: 0,
            v_head_stride: 0,
            o_batch_stride: 0,
            o_seq_stride: 0,
            o_head_stride: 0,
            seq_q: 0,
            seq_k: 0,
            heads_q: 0,
            scale_log2: 0.0,
            alibi_slopes: 0,
            prefix_k: 0,
            prefix_v: 0,
            tree_bits: 0,
            cu_seqlens_q: 0,
            cu_seqlens_k: 0,
            block_table: 0,
            seq_lens: 0,
            partial_o: 0,
            partial_lse: 0,
            counters: 0,
            prefix_k_seq_stride: 0,
            prefix_k_head_stride: 0,
            prefix_v_seq_stride: 0,
            prefix_v_head_stride: 0,
            tree_batch_stride: 0,
            block_table_stride: 0,
            prefix_len: 0,
            n_tree: 0,
            tree_words: 0,
            page_shift: 0,
            window_left: 0,
            window_right: 0,
            num_splits: 0,
            total_q: 0,
            softcap_scale: 0.0,
            softcap_log2: 0.0,
        }
    }
}

kernel_params!(AttentionParams, PARAMS_BYTES);

/// The launch shape: `(ceil(seq_q / block_m), heads_q, batch)` CTAs of the rendered kernel's
/// threads. `None` when there is nothing to compute.
pub fn launch_config(problem: &AttentionProblem, block_m: u32, geometry: LaunchGeometry) -> Option<LaunchConfig> {
    let blocks = problem.seq_q.div_ceil(block_m.max(1) as usize);
    launch_config_grid(problem, [blocks, problem.heads_q, problem.batch], geometry)
}

/// The launch of `grid` CTAs; `None` when the problem is empty (or a dimension does not fit).
pub(crate) fn launch_config_grid(problem: &AttentionProblem, grid: [usize; 3], geometry: LaunchGeometry) -> Option<LaunchConfig> {
    if problem.batch == 0 || problem.seq_q == 0 {
        return None;
    }
    Some(LaunchConfig {
        grid: [u32::try_from(grid[0]).ok()?, u32::try_from(grid[1]).ok()?, u32::try_from(grid[2]).ok()?],
        block: [geometry.threads_per_block, 1, 1],
        dynamic_shared_bytes: geometry.dynamic_shared_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::buffers::BufferSpan;
    use crate::common::launch::LaunchParams;
    use std::mem::offset_of;
    use tessera_codegen::{AttentionSpec, DType};

    fn spec() -> AttentionSpec {
        AttentionSpec::new(DType::BF16, 64, true, 8, 2)
    }

    fn problem() -> AttentionProblem {
        AttentionProblem::for_spec(&spec(), 2, 100, 130)
    }

    /// Contiguous buffers laid out one after another, 256-byte aligned like cuMemAlloc's.
    fn spans(p: &AttentionProblem, lse: bool) -> AttentionSpans {
        let mut next = 0x1000u64;
        let mut span = |bytes: usize| {
            let s = BufferSpan { addr: next, bytes };
            next += (bytes as u64).div_ceil(256) * 256 + 256;
            s
        };
        let (qo, kv) = (p.q_elements() * 2, p.kv_elements() * 2);
        AttentionSpans {
            q: span(qo),
            k: span(kv),
            v: span(kv),
            o: span(qo),
            lse: if lse { Some(span(p.lse_elements() * 4)) } else { None },
        }
    }

    #[test]
    fn params_mirror_the_cuda_struct() {
        assert_eq!(std::mem::size_of::<AttentionParams>(), 328);
        assert_eq!(offset_of!(AttentionParams, alibi_slopes), 152);
        assert_eq!(offset_of!(AttentionParams, counters), 232);
        assert_eq!(offset_of!(AttentionParams, prefix_k_seq_stride), 240);
        assert_eq!(offset_of!(AttentionParams, block_table_stride), 280);
        assert_eq!(offset_of!(AttentionParams, prefix_len), 288);
        assert_eq!(offset_of!(AttentionParams, total_q), 316);
        assert_eq!(offset_of!(AttentionParams, softcap_log2), 324);
        assert_eq!(std::mem::align_of::<AttentionParams>(), 8);
        assert_eq!(offset_of!(AttentionParams, lse), 32);
        assert_eq!(offset_of!(AttentionParams, q_batch_stride), 40);
        assert_eq!(offset_of!(AttentionParams, o_head_stride), 128);
        assert_eq!(offset_of!(AttentionParams, seq_q), 136);
        assert_eq!(offset_of!(AttentionParams, seq_k), 140);
        assert_eq!(offset_of!(AttentionParams, heads_q), 144);
        assert_eq!(offset_of!(AttentionParams, scale_log2), 148);
    }

    #[test]
    fn params_bytes_carry_every_field() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let b = spans(&p, true);
        let params = AttentionParams::new(&p, &s, &b, 0.125).unwrap();
        let bytes = params.as_bytes();
        assert_eq!(bytes.len(), 328);
        assert!(bytes[152..].iter().all(|&b| b == 0), "plain attention leaves every variant field zero");
        assert_eq!(&bytes[0..8], &b.q.addr.to_ne_bytes());
        assert_eq!(&bytes[32..40], &b.lse.unwrap().addr.to_ne_bytes());
        assert_eq!(&bytes[48..56], &(s.q.seq as i64).to_ne_bytes());
        assert_eq!(&bytes[136..140], &100i32.to_ne_bytes());
        assert_eq!(&bytes[140..144], &130i32.to_ne_bytes());
        assert_eq!(&bytes[144..148], &8i32.to_ne_bytes());
        assert_eq!(&bytes[148..152], &scale_log2(0.125).to_ne_bytes());
        let no_lse = AttentionParams::new(&p, &s, &spans(&p, false), 0.125).unwrap();
        assert_eq!(no_lse.lse, 0);
    }

    #[test]
    fn scale_log2_folds_in_log2e() {
        assert!((scale_log2(1.0) - std::f32::consts::LOG2_E).abs() < 1e-7);
        let s = problem().default_scale();
        assert!((s - 0.125).abs() < 1e-7);
        assert!((scale_log2(s) - 0.125 * std::f32::consts::LOG2_E).abs() < 1e-7);
    }

    #[test]
    fn grid_covers_every_query_row() {
        let geometry = LaunchGeometry { threads_per_block: 256, dynamic_shared_bytes: 65536 };
        let p = problem(); // seq_q 100, heads 8, batch 2
        let c = launch_config(&p, 128, geometry).unwrap();
        assert_eq!(c.grid, [1, 8, 2]);
        assert_eq!(c.block, [256, 1, 1]);
        assert_eq!(c.dynamic_shared_bytes, 65536);
        assert_eq!(launch_config(&AttentionProblem { seq_q: 129, ..p }, 128, geometry).unwrap().grid[0], 2);
        assert_eq!(launch_config(&AttentionProblem { seq_q: 1, ..p }, 64, geometry).unwrap().grid[0], 1);
        assert_eq!(launch_config(&AttentionProblem { seq_q: 128, ..p }, 64, geometry).unwrap().grid[0], 2);
    }

}
