//! What one LoRA call is: its shape ([`LoraProblem`]), row strides and device buffers, and whether
//! an aligned kernel can run it. Stored layouts and the chunk size are GEMM's
//! ([`crate::gemm::stored_shape`], [`crate::gemm::CHUNK_ELEMS`]), which LoRA builds on.

use tessera_codegen::{Layout, LoraSpec, TileChoice};

use crate::common::buffers::elements;
use crate::device::backend::DeviceBuffer;
use crate::gemm::problem::GemmTuneShape;
use crate::tuning::{TileFilter, TuneShape};
use crate::gemm::problem::{stored_shape, CHUNK_ELEMS};

/// The shape of one LoRA call. `adapters` is the number of stacked adapters (1 for a
/// single-adapter spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoraProblem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub adapters: usize,
}

impl LoraProblem {
    pub fn new(m: usize, n: usize, k: usize, adapters: usize) -> Self {
        LoraProblem { m, n, k, adapters }
    }
    // Saturating: an absurd shape fails a size comparison or allocation instead of wrapping small.
    pub fn a_elements(&self, rank: usize) -> usize {
        elements(&[self.adapters, self.k, rank]).unwrap_or(usize::MAX)
    }
    pub fn b_elements(&self, rank: usize) -> usize {
        elements(&[self.adapters, rank, self.n]).unwrap_or(usize::MAX)
    }
}

/// Row strides (elements) of X, W, residual and Y in their stored layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoraStrides {
    pub x: usize,
    pub w: usize,
    pub residual: usize,
    pub y: usize,
}

impl LoraStrides {
    pub fn contiguous(spec: &LoraSpec, p: &LoraProblem) -> Self {
        LoraStrides {
            x: stored_shape(spec.layout_x, p.m, p.k).1,
            w: stored_shape(spec.layout_w, p.k, p.n).1,
            residual: p.n,
            y: p.n,
        }
    }
}

/// Device buffers of one launch. `w` is absent for the bottleneck, `ids` for single-adapter specs.
#[derive(Clone, Copy, Debug)]
pub struct LoraBuffers<'a> {
    pub x: &'a DeviceBuffer,
    pub w: Option<&'a DeviceBuffer>,
    pub a: &'a DeviceBuffer,
    pub b: &'a DeviceBuffer,
    pub ids: Option<&'a DeviceBuffer>,
    pub bias: Option<&'a DeviceBuffer>,
    pub residual: Option<&'a DeviceBuffer>,
    pub y: &'a DeviceBuffer,
}

impl LoraBuffers<'_> {
    pub(crate) fn all(&self) -> impl Iterator<Item = &DeviceBuffer> {
        [Some(self.x), self.w, Some(self.a), Some(self.b), self.ids, self.bias, self.residual, Some(self.y)]
            .into_iter()
            .flatten()
    }
}

/// Why the aligned (16-byte chunk) kernel cannot run this problem, if it cannot.
pub fn unaligned_reason(spec: &LoraSpec, p: &LoraProblem) -> Option<String> {
    let mut rows = vec![(
        if spec.layout_x == Layout::RowMajor { "problem.k" } else { "problem.m" },
        stored_shape(spec.layout_x, p.m, p.k).1,
        "x",
    )];
    if !spec.is_bottleneck() {
        let dim = if spec.layout_w == Layout::RowMajor { "problem.n" } else { "problem.k" };
        rows.push((dim, stored_shape(spec.layout_w, p.k, p.n).1, "w"));
    }
    rows.push(("problem.n", p.n, "b"));
    rows.into_iter().find(|r| r.1 % CHUNK_ELEMS != 0).map(|(dim, len, name)| {
        format!("{dim} = {len} is not a multiple of {CHUNK_ELEMS}: an aligned kernel loads `{name}` rows in 16-byte cp.async chunks (use a spec with aligned: false)")
    })
}

/// Whether the aligned kernel can run a contiguous problem with 16-byte aligned buffers.
pub fn fits_aligned(spec: &LoraSpec, problem: &LoraProblem) -> bool {
    unaligned_reason(&LoraSpec { aligned: true, ..*spec }, problem).is_none()
}

/// The LoRA tuning key's shape: GEMM's and the adapter count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, TuneShape)]
pub struct LoraTuneShape {
    #[bucket(pow2)]
    pub m: usize,
    #[bucket(pow2)]
    pub n: usize,
    #[bucket(pow2)]
    pub k: usize,
    #[bucket(pow2)]
    pub adapters: usize,
}

impl LoraTuneShape {
    pub fn of(problem: &LoraProblem) -> Self {
        LoraTuneShape { m: problem.m, n: problem.n, k: problem.k, adapters: problem.adapters }
    }
}

impl TileFilter for LoraTuneShape {
    fn worth_timing(&self, tile: &TileChoice) -> bool {
        match tile {
            TileChoice::Gemm(t) => GemmTuneShape { m: self.m, n: self.n, k: self.k }.mma_tile_worth_timing(t),
            // One candidate per rank, the default on sm_90a: always timed.
            TileChoice::HopperLora(_) => true,
            _ => false,
        }
    }
}
