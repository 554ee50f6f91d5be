//! What one GEMM call is: its shape ([`GemmProblem`]), row strides, address ranges and device
//! buffers, the stored layout of X and W, whether an aligned kernel can run it, and the split-K
//! workspace it needs. The rest of the family, and LoRA (which builds on GEMM), build on these.

use tessera_codegen::{Arch, GemmSpec, GemmTile, Layout, TileChoice, HOPPER_GEMM_BLOCK_K};

use crate::common::buffers::{elements, BufferSpan};
use crate::device::backend::DeviceBuffer;
use crate::tuning::{TileFilter, TuneShape};

/// Elements per 16-byte cp.async chunk of a 16-bit tensor.
pub const CHUNK_ELEMS: usize = 8;
/// M, N and K are `int` in the kernel; leave room for rounding up to a whole tile.
pub const MAX_DIM: usize = i32::MAX as usize - 1024;

/// The shape of one GEMM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmProblem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl GemmProblem {
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmProblem { m, n, k }
    }
    // Saturating: an absurd shape fails a size comparison or allocation instead of wrapping small.
    pub fn x_elements(&self) -> usize {
        elements(&[self.m, self.k]).unwrap_or(usize::MAX)
    }
    pub fn w_elements(&self) -> usize {
        elements(&[self.k, self.n]).unwrap_or(usize::MAX)
    }
    /// Elements of C, residual and Y when contiguous.
    pub fn y_elements(&self) -> usize {
        elements(&[self.m, self.n]).unwrap_or(usize::MAX)
    }
}

/// Row strides in elements. For column-major W (`[N, K]` storage) `w` is the stride between its
/// N-rows, i.e. at least K.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmStrides {
    pub x: usize,
    pub w: usize,
    pub c: usize,
    pub residual: usize,
    pub y: usize,
}

impl GemmStrides {
    pub fn contiguous(spec: &GemmSpec, p: &GemmProblem) -> Self {
        let (_, x) = stored_shape(spec.layout_x, p.m, p.k);
        let (_, w) = stored_shape(spec.layout_w, p.k, p.n);
        GemmStrides { x, w, c: p.n, residual: p.n, y: p.n }
    }
}

/// `(rows, row length)` of a logical `[rows, cols]` operand as stored in `layout`.
pub fn stored_shape(layout: Layout, rows: usize, cols: usize) -> (usize, usize) {
    match layout {
        Layout::RowMajor => (rows, cols),
        Layout::ColMajor => (cols, rows),
    }
}

/// Why an aligned (16-byte chunk) kernel cannot run this problem, if it cannot: the first stored
/// row length of X or W that is not a whole number of chunks. Strides and addresses are checked
/// by [`check`](fn@crate::gemm::check).
pub fn unaligned_reason(spec: &GemmSpec, problem: &GemmProblem) -> Option<String> {
    let p = problem;
    let x_row = stored_shape(spec.layout_x, p.m, p.k).1;
    let w_row = stored_shape(spec.layout_w, p.k, p.n).1;
    let x_dim = if spec.layout_x == Layout::RowMajor { "problem.k" } else { "problem.m" };
    let w_dim = if spec.layout_w == Layout::RowMajor { "problem.n" } else { "problem.k" };
    [(x_dim, x_row, "x", spec.layout_x), (w_dim, w_row, "w", spec.layout_w)].into_iter().find_map(
        |(dim, len, name, layout)| {
            (len % CHUNK_ELEMS != 0).then(|| {
                format!("{dim} = {len} is not a multiple of {CHUNK_ELEMS}: an aligned kernel loads {layout} `{name}` rows in 16-byte cp.async chunks (use a spec with aligned: false)")
            })
        },
    )
}

/// Whether the aligned kernel can run a contiguous problem whose buffers are 16-byte aligned.
pub fn fits_aligned(spec: &GemmSpec, problem: &GemmProblem) -> bool {
    unaligned_reason(&GemmSpec { aligned: true, ..*spec }, problem).is_none()
}

impl GemmStrides {
}

/// Device address ranges of a GEMM's tensors, as [`check`](fn@crate::gemm::check) sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmSpans {
    pub x: BufferSpan,
    pub w: BufferSpan,
    pub c: Option<BufferSpan>,
    pub bias: Option<BufferSpan>,
    pub residual: Option<BufferSpan>,
    pub y: BufferSpan,
    /// Split-K partial tiles and tile counters ([`split_workspace_bytes`]).
    pub workspace: Option<BufferSpan>,
}

/// Device buffers of one GEMM launch.
#[derive(Clone, Copy, Debug)]
pub struct GemmBuffers<'a> {
    pub x: &'a DeviceBuffer,
    pub w: &'a DeviceBuffer,
    pub c: Option<&'a DeviceBuffer>,
    pub bias: Option<&'a DeviceBuffer>,
    pub residual: Option<&'a DeviceBuffer>,
    pub y: &'a DeviceBuffer,
    /// Required by split-K tiles: at least [`split_workspace_bytes`], its counter part zeroed
    /// before the first launch (every launch leaves it zeroed).
    pub workspace: Option<&'a DeviceBuffer>,
}

impl GemmBuffers<'_> {
    pub fn spans(&self) -> GemmSpans {
        GemmSpans {
            x: self.x.into(),
            w: self.w.into(),
            c: self.c.map(BufferSpan::from),
            bias: self.bias.map(BufferSpan::from),
            residual: self.residual.map(BufferSpan::from),
            y: self.y.into(),
            workspace: self.workspace.map(BufferSpan::from),
        }
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &DeviceBuffer> {
        [Some(self.x), Some(self.w), self.c, self.bias, self.residual, Some(self.y), self.workspace].into_iter().flatten()
    }
}

/// Bytes of the split-K workspace a launch of `spec` on `arch` needs, 0 without split-K: first
/// one u32 counter per output tile of the smallest tile (so the layout does not depend on the tile
/// and one workspace serves every split-K tile of a problem), zero before the first launch and
/// left zero by every launch; then `split_k` f32 partial M x N tiles.
pub fn split_workspace_bytes(spec: &GemmSpec, problem: &GemmProblem, arch: Arch) -> usize {
    let split = spec.tile_for(arch).split_k as usize;
    if split <= 1 {
        return 0;
    }
    // Saturating: a workspace too large to address fails its allocation rather than wrapping small.
    elements(&[split, problem.m, problem.n, F32_BYTES])
        .and_then(|partials| partials.checked_add(split_counter_bytes(problem)))
        .unwrap_or(usize::MAX)
}

/// The counters' part of the workspace: one u32 per 32 x 32 tile, rounded to 16 bytes.
pub(crate) fn split_counter_bytes(problem: &GemmProblem) -> usize {
    let counters = elements(&[problem.m.div_ceil(32), problem.n.div_ceil(32), F32_BYTES]).unwrap_or(usize::MAX);
    counters.div_ceil(16).saturating_mul(16)
}

/// Bytes of one f32 partial sum, and of one u32 tile counter.
const F32_BYTES: usize = 4;

/// The GEMM tuning key's shape (also the first three dimensions of LoRA's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, TuneShape)]
pub struct GemmTuneShape {
    #[bucket(pow2)]
    pub m: usize,
    #[bucket(pow2)]
    pub n: usize,
    #[bucket(pow2)]
    pub k: usize,
}

/// Rows, columns and K depth an mma.sync tile may always have, whatever the shape.
const ALWAYS_TIMED_EXTENT: usize = 32;
/// Split-K is timed only where every split still gets this many K slices.
const MIN_SLICES_PER_SPLIT: usize = 4;
/// Columns an sm_90a tile may always have (its CTAs always cover 128 rows).
const ALWAYS_TIMED_HOPPER_COLUMNS: usize = 128;
/// Ring depth an sm_90a GEMM may always have, even where K has fewer 64-deep slices.
const ALWAYS_TIMED_STAGES: usize = 3;

impl GemmTuneShape {
    pub fn of(problem: &GemmProblem) -> Self {
        GemmTuneShape { m: problem.m, n: problem.n, k: problem.k }
    }

    /// The mma.sync rule, shared with LoRA: no tile larger than the problem's bucket in any
    /// dimension, and split-K only where each split gets a few K slices.
    pub(crate) fn mma_tile_worth_timing(&self, t: &GemmTile) -> bool {
        let b = self.bucketed();
        let fits = |tile: u32, dim: usize| tile as usize <= dim.max(ALWAYS_TIMED_EXTENT);
        fits(t.block_m, b.m)
            && fits(t.block_n, b.n)
            && fits(t.block_k, b.k)
            && (t.split_k <= 1 || b.k / (t.block_k * t.split_k) as usize >= MIN_SLICES_PER_SPLIT)
    }
}

impl TileFilter for GemmTuneShape {
    fn worth_timing(&self, tile: &TileChoice) -> bool {
        match tile {
            TileChoice::Gemm(t) => self.mma_tile_worth_timing(t),
            // A ring deeper than K's 64-deep slices never fills.
            TileChoice::HopperGemm(t) => {
                let b = self.bucketed();
                t.block_n as usize <= b.n.max(ALWAYS_TIMED_HOPPER_COLUMNS)
                    && t.stages as usize <= (b.k / HOPPER_GEMM_BLOCK_K as usize).max(ALWAYS_TIMED_STAGES)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::candidates;
    use tessera_codegen::{ElemType, HopperGemmTile, KernelSpec};

    fn shape(m: usize, n: usize, k: usize) -> GemmTuneShape {
        GemmTuneShape { m, n, k }
    }

    #[test]
    fn small_problems_drop_big_tiles() {
        let g = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::BF16));
        let big = TileChoice::Gemm(GemmTile::new(128, 128, 32, 8, 3));
        let small = TileChoice::Gemm(GemmTile::new(32, 32, 32, 4, 2));
        assert!(!shape(16, 4096, 4096).worth_timing(&big), "no 128-row tile for 16 rows");
        assert!(shape(16, 4096, 4096).worth_timing(&small));
        assert!(shape(4096, 4096, 4096).worth_timing(&big));
        let all = candidates(&g, Arch::SM90, &shape(4096, 4096, 4096));
        let decode = candidates(&g, Arch::SM90, &shape(1, 4096, 4096));
        assert!(decode.len() < all.len() && !decode.is_empty());
        assert_eq!(all[0], g.tile_choice(Arch::SM90).unwrap(), "the default comes first");
    }

    #[test]
    fn sm90a_tiles_are_pruned_by_columns_and_depth() {
        let g = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::BF16));
        let big = candidates(&g, Arch::SM90A, &shape(4096, 4096, 4096));
        assert_eq!(big[0], TileChoice::HopperGemm(HopperGemmTile::DEFAULT));
        assert_eq!(big.iter().filter(|t| matches!(t, TileChoice::HopperGemm(_))).count(), 9);
        // N = 100: only 128-column tiles (and the default); K = 128: at most 3 stages.
        let narrow = candidates(&g, Arch::SM90A, &shape(4096, 100, 128));
        let sm90a: Vec<HopperGemmTile> =
            narrow.iter().skip(1).filter_map(|t| if let TileChoice::HopperGemm(h) = t { Some(*h) } else { None }).collect();
        assert_eq!(sm90a, [HopperGemmTile { block_n: 128, stages: 3 }]);
    }

    #[test]
    fn another_family_s_tile_is_never_timed() {
        let attention = TileChoice::Attention(tessera_codegen::TileConfig::new(64, 32, 4, 2));
        assert!(!shape(4096, 4096, 4096).worth_timing(&attention));
    }
}
