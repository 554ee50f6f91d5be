//! Attention variants at launch time: the runtime values and device buffers that an
//! [`AttentionSpec`]'s [`tessera_codegen::AttentionFeatures`] need, their checks, the grid, and the
//! launch.
//!
//! The spec decides *which* variants a kernel has (at compile time); [`VariantArgs`] carries their
//! values and [`VariantBuffers`] their device tensors. A buffer is required exactly when its feature
//! is on, and refused otherwise, so a forgotten feature flag cannot silently ignore an input.
//! Buffer contents (cu_seqlens, block tables, sequence lengths) cannot be read back cheaply on a
//! device; [`crate::attention::run_attention_variant`] checks them on the host before uploading.

use tessera_codegen::{Arch, AttentionParams, AttentionSpec, DevicePtr, DevicePtrMut};

use super::check::{check_layout, check_problem, TensorExtents};
use super::family::AttentionFamily;
use super::launch::AttentionLaunch;
use super::problem::{AttentionBuffers, AttentionProblem, AttentionStrides, AttentionTuneShape, MAX_SEQ_LEN};
use super::sm80::{attention_params, launch_config_grid};
use super::sm90a::AttentionLaunchParams;
use crate::common::buffers::{check_span, elements, BufferSpan};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::PreparedLaunch;
use crate::compile::compiler::Compiler;
use crate::family::route;
use crate::device::backend::{Backend, DeviceBuffer};

/// Most CTAs one query tile's keys may be split across.
pub const MAX_SPLITS: usize = 128;
/// Smallest page of a paged KV cache (a power of two).
pub const MIN_PAGE_SIZE: usize = 16;

/// Sliding-window bounds around each query's diagonal position `qpos`: keys
/// `qpos - left ..= qpos + right` are visible (FlashAttention's `window_size`); `None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Window {
    pub left: Option<usize>,
    pub right: Option<usize>,
}

/// A paged KV cache: K and V are `[num_pages, page_size, heads_kv, head_dim]` (the batch stride of
/// their [`AttentionStrides`] is the page stride), and sequence `b`'s key `j` lives in page
/// `block_table[b][j / page_size]` at row `j % page_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagedLayout {
    /// A power of two, at least [`MIN_PAGE_SIZE`].
    pub page_size: usize,
    pub num_pages: usize,
    /// Entries per block-table row.
    pub max_pages: usize,
}

/// The launch values of an attention variant; fields of features the spec does not have must keep
/// their defaults.
///
/// With `varlen`, the [`AttentionProblem`]'s `batch` is the number of sequences and `seq_q` /
/// `seq_k` the longest of them (the grid is sized by `seq_q`); Q and O are `[total_q, heads_q,
/// head_dim]` and K/V `[total_k, heads_kv, head_dim]` (batch strides unused). With `paged`,
/// `seq_k` is the longest sequence's key count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VariantArgs {
    pub window: Window,
    /// The soft-capping value `cap` (positive).
    pub softcap: Option<f32>,
    pub prefix_len: usize,
    /// Candidate tokens of a tree (the last `n_tree` queries and keys of every sequence).
    pub n_tree: usize,
    /// One tree per sequence (`[batch, n_tree, words]` bits) rather than one for all.
    pub tree_per_sequence: bool,
    pub paged: Option<PagedLayout>,
    /// Rows of the packed Q (varlen).
    pub total_q: usize,
    /// Rows of the packed K/V (varlen without paging).
    pub total_k: usize,
    /// CTAs sharing one query tile's keys (`split_kv`), 1..=[`MAX_SPLITS`].
    pub num_splits: usize,
}

/// The device inputs of the variant features. Integer tensors are `i32`.
#[derive(Clone, Copy, Debug, Default)]
pub struct VariantBuffers<'a> {
    /// `alibi`: f32 `[heads_q]`.
    pub alibi_slopes: Option<&'a DeviceBuffer>,
    /// `prefix`: `[prefix_len, heads_kv, head_dim]` each, contiguous, in the spec dtype.
    pub prefix_k: Option<&'a DeviceBuffer>,
    pub prefix_v: Option<&'a DeviceBuffer>,
    /// `tree`: u64 ancestor bits `[batch or 1, n_tree, ceil(n_tree / 64)]` ([`crate::attention::TreeMask`]).
    pub tree_bits: Option<&'a DeviceBuffer>,
    /// `varlen`: `[batch + 1]`, starting at 0, non-decreasing.
    pub cu_seqlens_q: Option<&'a DeviceBuffer>,
    /// `varlen` without `paged`: `[batch + 1]`.
    pub cu_seqlens_k: Option<&'a DeviceBuffer>,
    /// `paged`: `[batch, max_pages]` page indices.
    pub block_table: Option<&'a DeviceBuffer>,
    /// `paged`: `[batch]` keys per sequence.
    pub seq_lens: Option<&'a DeviceBuffer>,
    /// `split_kv`: [`split_workspace_bytes`] bytes, zero before the first launch (every launch
    /// leaves its counters zero again).
    pub workspace: Option<&'a DeviceBuffer>,
}

impl<'a> VariantBuffers<'a> {
    fn named(&self) -> [(&'static str, Option<&'a DeviceBuffer>); 9] {
        [
            ("alibi_slopes", self.alibi_slopes),
            ("prefix_k", self.prefix_k),
            ("prefix_v", self.prefix_v),
            ("tree_bits", self.tree_bits),
            ("cu_seqlens_q", self.cu_seqlens_q),
            ("cu_seqlens_k", self.cu_seqlens_k),
            ("block_table", self.block_table),
            ("seq_lens", self.seq_lens),
            ("workspace", self.workspace),
        ]
    }
}

/// The launch grid's shape for a variant: `(tiles of seq_q * rows_per_query, heads, batch * splits)`.
fn grid(spec: &AttentionSpec, problem: &AttentionProblem, arch: Arch, splits: usize) -> [usize; 3] {
    let rows = problem.seq_q.saturating_mul(spec.rows_per_query() as usize);
    let heads = if spec.features.pack_gqa { problem.heads_kv } else { problem.heads_q };
    [rows.div_ceil(spec.rows_per_cta(arch).max(1) as usize), heads, problem.batch.saturating_mul(splits.max(1))]
}

/// Rows of the partial results: every query row of the batch.
fn partial_rows(spec: &AttentionSpec, problem: &AttentionProblem, args: &VariantArgs) -> usize {
    if spec.features.varlen {
        args.total_q
    } else {
        problem.batch.saturating_mul(problem.seq_q)
    }
}

/// Bytes of the split-KV workspace: f32 partial O `[splits, rows, heads_q, head_dim]`, f32 partial
/// LSE `[splits, rows, heads_q]`, and one u32 counter per query tile; 0 without `split_kv`.
pub fn split_workspace_bytes(spec: &AttentionSpec, problem: &AttentionProblem, args: &VariantArgs, arch: Arch) -> usize {
    if !spec.features.split_kv {
        return 0;
    }
    let (o, lse, counters) = workspace_parts(spec, problem, args, arch);
    o.saturating_add(lse).saturating_add(counters)
}

// Saturating: a workspace too large to address fails its allocation rather than wrapping small.
fn workspace_parts(spec: &AttentionSpec, problem: &AttentionProblem, args: &VariantArgs, arch: Arch) -> (usize, usize, usize) {
    const WORD_BYTES: usize = 4;
    let size = |shape: &[usize]| elements(shape).unwrap_or(usize::MAX);
    let rows = size(&[partial_rows(spec, problem, args), args.num_splits, problem.heads_q]);
    let [gx, gy, _] = grid(spec, problem, arch, 1);
    (size(&[rows, problem.head_dim, WORD_BYTES]), size(&[rows, WORD_BYTES]), size(&[gx, gy, problem.batch, WORD_BYTES]))
}

/// A `split_kv` launch's split count is 1..=[`MAX_SPLITS`]; checked before anything is sized from it.
pub fn check_num_splits(num_splits: usize) -> Result<()> {
    if !(1..=MAX_SPLITS).contains(&num_splits) {
        return Err(RuntimeError::invalid("variant.num_splits", format!("{num_splits}: must be 1..={MAX_SPLITS}")));
    }
    Ok(())
}

/// A split count that gives the GPU about two waves of CTAs, no more than the key tiles a query tile
/// reads (each split gets at least one), and at most [`MAX_SPLITS`].
pub fn default_num_splits(spec: &AttentionSpec, problem: &AttentionProblem, prefix_len: usize, arch: Arch, multiprocessors: u32) -> usize {
    let [gx, gy, gz] = grid(spec, problem, arch, 1);
    let ctas = gx.saturating_mul(gy).saturating_mul(gz).max(1);
    let block_n = spec.tile_for(arch).block_n as usize;
    let key_tiles = (problem.seq_k + prefix_len).div_ceil(block_n).max(1);
    (2 * multiprocessors as usize).div_ceil(ctas).clamp(1, key_tiles.min(MAX_SPLITS))
}

fn require(name: &str, feature: &str, on: bool, buffer: Option<&DeviceBuffer>) -> Result<()> {
    match (on, buffer.is_some()) {
        (true, false) => Err(RuntimeError::invalid(
            format!("variant.{name}"),
            format!("required: the kernel spec has the `{feature}` feature"),
        )),
        (false, true) => Err(RuntimeError::invalid(
            format!("variant.{name}"),
            format!("given, but the kernel spec lacks the `{feature}` feature (it would be ignored)"),
        )),
        _ => Ok(()),
    }
}

/// Everything one variant launch is given, as [`check_variant`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct VariantCall<'a> {
    pub spec: &'a AttentionSpec,
    pub problem: &'a AttentionProblem,
    pub strides: &'a AttentionStrides,
    pub buffers: &'a AttentionBuffers<'a>,
    pub args: &'a VariantArgs,
    pub extra: &'a VariantBuffers<'a>,
    pub scale: f32,
    pub arch: Arch,
}

/// Checks a variant launch against its spec without touching a device: the problem, the values in
/// `args`, every buffer's presence, size and alignment, strides, and overlaps. Each error names the
/// argument.
pub fn check_variant(call: &VariantCall<'_>) -> Result<()> {
    let VariantCall { spec, problem, strides, buffers, args, extra, scale, arch } = *call;
    check_problem(spec, problem, scale)?;
    let f = spec.features;
    let p = problem;
    let v = extra;
    require("alibi_slopes", "alibi", f.alibi, v.alibi_slopes)?;
    require("prefix_k", "prefix", f.prefix, v.prefix_k)?;
    require("prefix_v", "prefix", f.prefix, v.prefix_v)?;
    require("tree_bits", "tree", f.tree, v.tree_bits)?;
    require("cu_seqlens_q", "varlen", f.varlen, v.cu_seqlens_q)?;
    require("cu_seqlens_k", "varlen (without paged)", f.varlen && !f.paged, v.cu_seqlens_k)?;
    require("block_table", "paged", f.paged, v.block_table)?;
    require("seq_lens", "paged", f.paged, v.seq_lens)?;
    require("workspace", "split_kv", f.split_kv, v.workspace)?;
    let off = |name: &str, feature: &str, set: bool| {
        if set {
            Err(RuntimeError::invalid(format!("variant.{name}"), format!("set, but the kernel spec lacks the `{feature}` feature")))
        } else {
            Ok(())
        }
    };
    off("window", "local", !f.local && args.window != Window::default())?;
    off("softcap", "softcap", !f.softcap && args.softcap.is_some())?;
    off("prefix_len", "prefix", !f.prefix && args.prefix_len != 0)?;
    off("n_tree", "tree", !f.tree && args.n_tree != 0)?;
    off("paged", "paged", !f.paged && args.paged.is_some())?;
    if f.softcap {
        match args.softcap {
            Some(cap) if cap.is_finite() && cap > 0.0 => {}
            other => {
                return Err(RuntimeError::invalid("variant.softcap", format!("{other:?}: must be a finite positive cap")));
            }
        }
    }
    if f.prefix && (args.prefix_len == 0 || args.prefix_len > MAX_SEQ_LEN) {
        return Err(RuntimeError::invalid(
            "variant.prefix_len",
            format!("{}: must be 1..={MAX_SEQ_LEN}", args.prefix_len),
        ));
    }
    if f.tree && (args.n_tree == 0 || args.n_tree > p.seq_q || args.n_tree > p.seq_k) {
        return Err(RuntimeError::invalid(
            "variant.n_tree",
            format!(
                "{}: must be 1..=min(seq_q {}, seq_k {}) (the last n_tree queries and keys are the candidates)",
                args.n_tree, p.seq_q, p.seq_k
            ),
        ));
    }
    let rows_per_query = spec.rows_per_query() as usize;
    if p.seq_q.saturating_mul(rows_per_query) > MAX_SEQ_LEN {
        return Err(RuntimeError::invalid("problem.seq_q", format!("{} x group {rows_per_query} packed rows exceed {MAX_SEQ_LEN}", p.seq_q)));
    }
    let splits = if f.split_kv { args.num_splits } else { 1 };
    if f.split_kv {
        check_num_splits(args.num_splits)?;
    }
    let [_, _, gz] = grid(spec, p, arch, splits);
    if gz > 65_535 {
        return Err(RuntimeError::invalid("variant.num_splits", format!("batch {} x {splits} splits exceeds the grid's 65535", p.batch)));
    }

    // Memory extents of Q/O and K/V.
    let (q_rows, q_outer) = if f.varlen { (args.total_q, 1) } else { (p.seq_q, p.batch) };
    let kv = if let Some(paged) = args.paged {
        if !paged.page_size.is_power_of_two() || paged.page_size < MIN_PAGE_SIZE {
            return Err(RuntimeError::invalid(
                "variant.paged.page_size",
                format!("{}: must be a power of two >= {MIN_PAGE_SIZE}", paged.page_size),
            ));
        }
        if p.seq_k > paged.max_pages.saturating_mul(paged.page_size) {
            return Err(RuntimeError::invalid(
                "problem.seq_k",
                format!("{} keys do not fit {} pages of {}", p.seq_k, paged.max_pages, paged.page_size),
            ));
        }
        if paged.num_pages == 0 || paged.num_pages > i32::MAX as usize {
            return Err(RuntimeError::invalid("variant.paged.num_pages", format!("{}: must be 1..=2^31-1", paged.num_pages)));
        }
        [paged.num_pages, paged.page_size, p.heads_kv, p.head_dim]
    } else if f.varlen {
        [1, args.total_k, p.heads_kv, p.head_dim]
    } else {
        [p.batch, p.seq_k, p.heads_kv, p.head_dim]
    };
    if f.paged && args.paged.is_none() {
        return Err(RuntimeError::invalid("variant.paged", "required: the kernel spec has the `paged` feature"));
    }
    if f.varlen {
        for (name, total) in [("variant.total_q", args.total_q), ("variant.total_k", args.total_k)] {
            if total > MAX_SEQ_LEN {
                return Err(RuntimeError::invalid(name, format!("{total} is above the limit {MAX_SEQ_LEN}")));
            }
        }
    }
    let lse_elements = if f.varlen { p.heads_q.saturating_mul(args.total_q) } else { p.lse_elements() };
    let extents = TensorExtents { q: [q_outer, q_rows, p.heads_q, p.head_dim], kv, lse_elements };

    // Sizes of the variant buffers.
    let elem = spec.dtype.size_bytes();
    let batch = p.batch;
    let words = args.n_tree.div_ceil(64);
    let trees = if args.tree_per_sequence { batch } else { 1 };
    let max_pages = args.paged.map_or(0, |g| g.max_pages);
    let prefix_bytes = args.prefix_len.saturating_mul(p.heads_kv).saturating_mul(p.head_dim).saturating_mul(elem);
    let sizes: [(&'static str, Option<&DeviceBuffer>, usize, usize); 9] = [
        ("alibi_slopes", v.alibi_slopes, p.heads_q.saturating_mul(4), 4),
        ("prefix_k", v.prefix_k, prefix_bytes, 16),
        ("prefix_v", v.prefix_v, prefix_bytes, 16),
        ("tree_bits", v.tree_bits, trees.saturating_mul(args.n_tree).saturating_mul(words).saturating_mul(8), 8),
        ("cu_seqlens_q", v.cu_seqlens_q, (batch + 1) * 4, 4),
        ("cu_seqlens_k", v.cu_seqlens_k, (batch + 1) * 4, 4),
        ("block_table", v.block_table, batch.saturating_mul(max_pages).saturating_mul(4), 4),
        ("seq_lens", v.seq_lens, batch.saturating_mul(4), 4),
        ("workspace", v.workspace, split_workspace_bytes(spec, p, args, arch), 16),
    ];
    let mut ranges = Vec::new();
    for (name, buffer, needed, align) in sizes {
        if let Some(buffer) = buffer {
            check_span(name, BufferSpan::from(buffer), needed, align)?;
            ranges.push((name, buffer.addr(), needed));
        }
    }
    check_layout(spec, &extents, strides, &buffers.spans(), &ranges)
}

/// The kernel parameters of a checked variant launch.
fn variant_params(call: &VariantCall<'_>) -> Result<AttentionParams> {
    let VariantCall { spec, problem, strides, buffers, args, extra, scale, arch } = *call;
    let mut params = attention_params(problem, strides, &buffers.spans(), scale)?;
    // A variant buffer as the field's typed read-only pointer; null when it is absent.
    fn ptr<T>(buffer: Option<&DeviceBuffer>) -> DevicePtr<T> {
        DevicePtr::new(buffer.map_or(0, DeviceBuffer::addr))
    }
    // Every value below was bounded by `check_variant` (lengths <= 2^30, counts <= i32::MAX).
    let int = |v: usize| v.min(i32::MAX as usize) as i32;
    // A window wider than any sequence is unbounded; clamping keeps qpos +- window + 1 inside an
    // int (qpos < 2^30).
    let bound = |w: Option<usize>| w.map_or(-1, |w| int(w.min(MAX_SEQ_LEN - 1)));
    let (kv_rows, d) = (problem.heads_kv * problem.head_dim, problem.head_dim as i64);
    params.alibi_slopes = ptr(extra.alibi_slopes);
    params.prefix_k = ptr(extra.prefix_k);
    params.prefix_v = ptr(extra.prefix_v);
    // Fields of features the spec lacks stay zero: a plain launch's parameters are exactly
    // `attention_params`'.
    let f = spec.features;
    if f.prefix {
        params.prefix_k_seq_stride = kv_rows as i64;
        params.prefix_k_head_stride = d;
        params.prefix_v_seq_stride = kv_rows as i64;
        params.prefix_v_head_stride = d;
    }
    params.prefix_len = int(args.prefix_len);
    params.tree_bits = ptr(extra.tree_bits);
    params.n_tree = int(args.n_tree);
    params.tree_words = int(args.n_tree.div_ceil(64));
    params.tree_batch_stride = if args.tree_per_sequence { (args.n_tree * args.n_tree.div_ceil(64)) as i64 } else { 0 };
    params.cu_seqlens_q = ptr(extra.cu_seqlens_q);
    params.cu_seqlens_k = ptr(extra.cu_seqlens_k);
    params.block_table = ptr(extra.block_table);
    params.seq_lens = ptr(extra.seq_lens);
    if let Some(paged) = args.paged {
        params.block_table_stride = paged.max_pages as i64;
        params.page_shift = paged.page_size.trailing_zeros() as i32;
    }
    if f.local {
        params.window_left = bound(args.window.left);
        params.window_right = bound(args.window.right);
    }
    if let Some(cap) = args.softcap {
        params.softcap_scale = scale / cap;
        params.softcap_log2 = (f64::from(cap) * std::f64::consts::LOG2_E) as f32;
    }
    if f.varlen || f.split_kv {
        params.total_q = int(partial_rows(spec, problem, args));
    }
    if f.split_kv {
        params.num_splits = int(args.num_splits);
    }
    if let Some(workspace) = extra.workspace {
        let (o, lse, _) = workspace_parts(spec, problem, args, arch);
        params.partial_o = DevicePtrMut::new(workspace.addr());
        params.partial_lse = DevicePtrMut::new(workspace.addr() + o as u64);
        params.counters = DevicePtrMut::new(workspace.addr() + (o + lse) as u64);
    }
    Ok(params)
}

/// Checks a variant launch, renders and compiles the spec for the backend and loads it. Nothing
/// is launched. A spec without features is plain attention (then `args` and `extra` are defaults).
#[allow(clippy::too_many_arguments)]
pub fn prepare_attention_variant(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    buffers: &AttentionBuffers<'_>,
    args: &VariantArgs,
    extra: &VariantBuffers<'_>,
    scale: Option<f32>,
) -> Result<AttentionLaunch> {
    let scale = scale.unwrap_or_else(|| problem.default_scale());
    let all: Vec<&DeviceBuffer> = buffers.all().chain(extra.named().into_iter().filter_map(|(_, b)| b)).collect();
    for buffer in &all {
        backend.check_buffer(buffer)?;
    }
    let arch = backend.arch();
    // Plain attention with the tile left to the default takes the tuned one, as `prepare_attention`.
    let tuned;
    let spec = if spec.features.is_plain() {
        tuned = match crate::tuning::tuned_spec(backend, (*spec).into(), &AttentionTuneShape::of(problem)) {
            tessera_codegen::KernelSpec::Attention(s) => s,
            _ => *spec,
        };
        &tuned
    } else {
        spec
    };
    let call = VariantCall { spec, problem, strides, buffers, args, extra, scale, arch };
    check_variant(&call)?;
    let params = variant_params(&call)?;
    // Plain attention and the score-side variants the sm_90a kernel implements share its launch
    // (and, on a fallback, the mma.sync kernel's one-CTA-per-query-tile grid).
    if spec.features.is_plain() || spec.hopper_tile(arch).is_ok() {
        return route::<AttentionFamily>(backend, compiler, *spec, problem, strides, params, scale, all);
    }
    let source = spec.render(arch)?;
    let splits = if spec.features.split_kv { args.num_splits } else { 1 };
    let config = launch_config_grid(problem, grid(spec, problem, arch, splits), source.geometry);
    PreparedLaunch::new(backend, compiler, &source, config, AttentionLaunchParams::MmaSync(params), all.into_iter())
}
