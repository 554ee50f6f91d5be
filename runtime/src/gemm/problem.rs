//! What one GEMM call is: its shape ([`GemmProblem`]), row strides, address ranges and device
//! buffers, the stored layout of X and W, whether an aligned kernel can run it, and the split-K
//! workspace it needs. The rest of the family, and LoRA (which builds on GEMM), build on these.

use tessera_codegen::{Arch, GemmSpec, Layout};

use crate::common::buffers::BufferSpan;
use crate::device::backend::DeviceBuffer;

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
    pub fn x_elements(&self) -> usize {
        self.m.saturating_mul(self.k)
    }
    pub fn w_elements(&self) -> usize {
        self.k.saturating_mul(self.n)
    }
    /// Elements of C, residual and Y when contiguous.
    pub fn y_elements(&self) -> usize {
        self.m.saturating_mul(self.n)
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
    split_counter_bytes(problem) + split * problem.m * problem.n * 4
}

/// The counters' part of the workspace: one u32 per 32 x 32 tile, rounded to 16 bytes.
pub(crate) fn split_counter_bytes(problem: &GemmProblem) -> usize {
    (problem.m.div_ceil(32) * problem.n.div_ceil(32) * 4).div_ceil(16) * 16
}
