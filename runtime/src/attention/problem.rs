//! What one attention call is: its shape ([`AttentionProblem`]), the strides of its four tensors,
//! their address ranges and device buffers. Every other part of the family (checks, kernel
//! parameters, launches, host wrappers, the reference, the tuning target) builds on these types.

use tessera_codegen::{AttentionSpec, TileChoice};

use crate::common::buffers::{elements, BufferSpan};
use crate::device::backend::DeviceBuffer;
use crate::tuning::{TileFilter, TuneShape};

/// Sequence lengths, head indices and tile-rounded row indices are `int` in the kernel. 2^30 leaves
/// room for the sums it forms: a query position (seq_q + seq_k) plus a window bound or a tile, and
/// a GQA-packed row index (seq_q * group, checked separately).
pub const MAX_SEQ_LEN: usize = 1 << 30;

/// The shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionProblem {
    pub batch: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
}

impl AttentionProblem {
    /// A problem with the spec's heads and head_dim.
    pub fn for_spec(spec: &AttentionSpec, batch: usize, seq_q: usize, seq_k: usize) -> AttentionProblem {
        AttentionProblem {
            batch,
            seq_q,
            seq_k,
            heads_q: spec.heads_q as usize,
            heads_kv: spec.heads_kv as usize,
            head_dim: spec.head_dim as usize,
        }
    }

    /// `1 / sqrt(head_dim)`.
    pub fn default_scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }

    /// Elements of Q and O when contiguous. Saturates instead of overflowing, so an absurd shape
    /// fails a size comparison rather than wrapping to a small one.
    pub fn q_elements(&self) -> usize {
        product(&[self.batch, self.seq_q, self.heads_q, self.head_dim])
    }

    /// Elements of K and of V when contiguous (saturating).
    pub fn kv_elements(&self) -> usize {
        product(&[self.batch, self.seq_k, self.heads_kv, self.head_dim])
    }

    /// Elements of the log-sum-exp output (saturating).
    pub fn lse_elements(&self) -> usize {
        product(&[self.batch, self.heads_q, self.seq_q])
    }

    /// Query heads per key/value head (1 = MHA, heads_q = MQA).
    pub fn group(&self) -> usize {
        self.heads_q / self.heads_kv.max(1)
    }

    /// Whether query `i` may see key `j`: `j < seq_k` and, for causal attention aligned
    /// bottom-right, `j <= i + seq_k - seq_q` (the last query sees every key). The kernel template
    /// applies the same rule.
    pub fn visible(&self, causal: bool, i: usize, j: usize) -> bool {
        j < self.seq_k && (!causal || (j as i64) <= i as i64 + self.seq_k as i64 - self.seq_q as i64)
    }
}

fn product(values: &[usize]) -> usize {
    elements(values).unwrap_or(usize::MAX)
}

/// Strides of one `[batch, seq, head, dim]` tensor, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorStrides {
    pub batch: usize,
    pub seq: usize,
    pub head: usize,
    pub dim: usize,
}

impl TensorStrides {
    pub fn contiguous(seq: usize, heads: usize, head_dim: usize) -> TensorStrides {
        TensorStrides { batch: seq * heads * head_dim, seq: heads * head_dim, head: head_dim, dim: 1 }
    }
}

/// The strides of all four tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionStrides {
    pub q: TensorStrides,
    pub k: TensorStrides,
    pub v: TensorStrides,
    pub o: TensorStrides,
}

impl AttentionStrides {
    pub fn contiguous(problem: &AttentionProblem) -> AttentionStrides {
        let p = problem;
        let q = TensorStrides::contiguous(p.seq_q, p.heads_q, p.head_dim);
        let kv = TensorStrides::contiguous(p.seq_k, p.heads_kv, p.head_dim);
        AttentionStrides { q, k: kv, v: kv, o: q }
    }
}

/// The address ranges of the five tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionSpans {
    pub q: BufferSpan,
    pub k: BufferSpan,
    pub v: BufferSpan,
    pub o: BufferSpan,
    pub lse: Option<BufferSpan>,
}

/// The device buffers of one call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBuffers<'a> {
    pub q: &'a DeviceBuffer,
    pub k: &'a DeviceBuffer,
    pub v: &'a DeviceBuffer,
    pub o: &'a DeviceBuffer,
    pub lse: Option<&'a DeviceBuffer>,
}

impl AttentionBuffers<'_> {
    pub fn spans(&self) -> AttentionSpans {
        AttentionSpans {
            q: self.q.into(),
            k: self.k.into(),
            v: self.v.into(),
            o: self.o.into(),
            lse: self.lse.map(BufferSpan::from),
        }
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &DeviceBuffer> {
        [Some(self.q), Some(self.k), Some(self.v), Some(self.o), self.lse].into_iter().flatten()
    }
}

/// The attention tuning key's shape. The mma.sync tiles' rows are pruned by `seq_q` and their
/// K/V tiles by `seq_k`; tiles up to the smallest default are always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, TuneShape)]
pub struct AttentionTuneShape {
    /// batch x query heads: how many (batch, head) pairs share a query tile's position.
    #[bucket(pow2)]
    pub batch_heads: usize,
    #[bucket(pow2)]
    pub seq_q: usize,
    #[bucket(pow2)]
    pub seq_k: usize,
}

/// Query rows a tile may always have, whatever `seq_q` is (the smallest mma.sync tile's).
const ALWAYS_TIMED_ROWS: usize = 64;
/// K/V rows a tile may always have, whatever `seq_k` is.
const ALWAYS_TIMED_KV_ROWS: usize = 32;

impl AttentionTuneShape {
    pub fn of(problem: &AttentionProblem) -> Self {
        AttentionTuneShape { batch_heads: problem.batch * problem.heads_q, seq_q: problem.seq_q, seq_k: problem.seq_k }
    }
}

impl TileFilter for AttentionTuneShape {
    fn worth_timing(&self, tile: &TileChoice) -> bool {
        let b = self.bucketed();
        let kv_fits = |block_n: u32| block_n as usize <= b.seq_k.max(ALWAYS_TIMED_KV_ROWS);
        match tile {
            TileChoice::Attention(t) => t.block_m as usize <= b.seq_q.max(ALWAYS_TIMED_ROWS) && kv_fits(t.block_n),
            // The sm_90a CTAs always cover 128 rows, so only their columns are pruned. A
            // persistent CTA's ring runs on into the next work tile, so any depth can pay.
            TileChoice::HopperAttention(t) => kv_fits(t.block_n),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::candidates;
    use tessera_codegen::{Arch, ElemType, KernelSpec};

    fn shape(batch_heads: usize, seq_q: usize, seq_k: usize) -> AttentionTuneShape {
        AttentionTuneShape { batch_heads, seq_q, seq_k }
    }

    #[test]
    fn short_sequences_drop_big_tiles() {
        let a = KernelSpec::from(AttentionSpec::new(ElemType::BF16, 128, true, 8, 8));
        let short = candidates(&a, Arch::SM90, &shape(8, 16, 16));
        assert!(short.iter().skip(1).all(|t| matches!(t, TileChoice::Attention(c) if c.block_m <= 64 && c.block_n <= 32)));
    }

    #[test]
    fn sm90a_tiles_are_pruned_by_columns() {
        let a = KernelSpec::from(AttentionSpec::new(ElemType::BF16, 128, true, 8, 8));
        let hopper = |b: &[TileChoice]| b.iter().filter(|t| matches!(t, TileChoice::HopperAttention(_))).count();
        let long = candidates(&a, Arch::SM90A, &shape(8, 4096, 4096));
        assert_eq!(long[0], a.tile_choice(Arch::SM90A).unwrap(), "the sm_90a default comes first");
        assert!(matches!(long[0], TileChoice::HopperAttention(_)));
        assert_eq!(hopper(&long), 12, "every d128 sm_90a tile for long sequences");
        let short = candidates(&a, Arch::SM90A, &shape(8, 40, 40));
        assert!(short.iter().skip(1).all(|t| !matches!(t, TileChoice::HopperAttention(h) if h.block_n > 64)), "{short:?}");
        assert!(hopper(&short) > 1);
    }

    #[test]
    fn the_key_is_batch_heads_then_sequences() {
        let p = AttentionProblem::for_spec(&AttentionSpec::new(ElemType::F16, 64, false, 5, 5), 3, 100, 300);
        assert_eq!(AttentionTuneShape::of(&p).key_dims(), [16, 128, 512]);
    }
}
