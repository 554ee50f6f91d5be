//! The mma.sync kernel (`templates/attention/sm80.cuh`): its parameters ([`AttentionParams`],
//! defined with the host/device contract in `tessera_codegen`; the sm_90a kernel's embed them and
//! the variant launcher extends them) and its launch grid, one CTA per query tile, head and batch
//! entry.

use std::f64::consts::LOG2_E;

use tessera_codegen::{AttentionParams, DevicePtr, DevicePtrMut, LaunchGeometry};

use super::problem::{AttentionProblem, AttentionSpans, AttentionStrides};
use crate::common::error::{Result, RuntimeError};
use crate::device::backend::LaunchConfig;

/// The kernel works in base 2 (`ex2.approx`), so the softmax scale is premultiplied by log2(e).
/// The one place this conversion happens.
pub fn scale_log2(scale: f32) -> f32 {
    (f64::from(scale) * LOG2_E) as f32
}

/// The mma.sync kernel's parameters for plain attention (every variant field zero). Arguments must
/// have passed [`check`](super::check::check); conversions that would overflow are reported rather
/// than wrapped all the same.
pub fn attention_params(
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    spans: &AttentionSpans,
    scale: f32,
) -> Result<AttentionParams> {
    let int = |arg: &str, value: usize| {
        i32::try_from(value).map_err(|_| RuntimeError::invalid(arg, format!("{value} does not fit in an i32")))
    };
    let long = |arg: &str, value: usize| {
        i64::try_from(value).map_err(|_| RuntimeError::invalid(arg, format!("{value} does not fit in an i64")))
    };
    let s = strides;
    Ok(AttentionParams {
        q: DevicePtr::new(spans.q.addr),
        k: DevicePtr::new(spans.k.addr),
        v: DevicePtr::new(spans.v.addr),
        o: DevicePtrMut::new(spans.o.addr),
        lse: DevicePtrMut::new(spans.lse.map_or(0, |span| span.addr)),
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
        // Plain attention: every variant field zero.
        ..AttentionParams::default()
    })
}

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
    // The problem and buffer layout the attention checks are tested with.
    use crate::attention::check::tests::{problem, spans};
    use crate::common::launch::LaunchParams;

    #[test]
    fn params_bytes_carry_every_field() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let b = spans(&p, true);
        let params = attention_params(&p, &s, &b, 0.125).unwrap();
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
        let no_lse = attention_params(&p, &s, &spans(&p, false), 0.125).unwrap();
        assert_eq!(no_lse.lse.addr(), 0);
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
