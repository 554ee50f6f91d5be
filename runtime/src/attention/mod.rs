//! The attention forward launcher: argument checks, the kernel's parameter struct, the launch, and
//! a host convenience that uploads `f32` tensors and downloads the result.
//!
//! Tensors are `[batch, seq, heads, head_dim]` in the spec's 16-bit dtype with strides in elements;
//! the log-sum-exp output is `f32 [batch, heads_q, seq_q]`, contiguous. Everything the kernel
//! trusts (strides, sizes, alignment, index ranges) is checked by [`check`] before a launch, because
//! a wrong stride on a GPU is a silent wrong answer or a fault that poisons the whole context.

use std::f64::consts::LOG2_E;

use half::{bf16, f16};
use tessera_codegen::{Arch, AttentionSpec, DType, LaunchGeometry};

use crate::backend::{Backend, DeviceBuffer, LaunchConfig};
use crate::compiler::Compiler;
use crate::tensor_list::check_span;
use crate::error::{Result, RuntimeError};
use crate::launch::{kernel_params, PreparedLaunch};

mod hopper;
mod inputs;
mod tree;
mod variant;

pub use hopper::{AttentionLaunchParams, HopperAttentionParams};
pub use inputs::{run_attention_variant, AttentionInputs, PagedKv, PrefixInputs, TreeInputs, VarlenInputs};
pub use tree::TreeMask;
pub use variant::{
    check_variant, default_num_splits, prepare_attention_variant, split_workspace_bytes, PagedLayout, VariantArgs,
    VariantBuffers, VariantCall, Window, MAX_SPLITS, MIN_PAGE_SIZE,
};

/// The kernel moves rows in 16-byte `cp.async` chunks, so row starts must be 16-byte aligned.
const ACCESS_ALIGN_BYTES: usize = 16;
/// Sequence lengths, head indices and tile-rounded row indices are `int` in the kernel. 2^30 leaves
/// room for the sums it forms: a query position (seq_q + seq_k) plus a window bound or a tile, and
/// a GQA-packed row index (seq_q * group, checked separately).
pub const MAX_SEQ_LEN: usize = 1 << 30;
/// `gridDim.y` and `gridDim.z` limits, which carry heads and batch.
const MAX_GRID_YZ: usize = 65_535;

/// The 16-bit pattern written into outputs before a launch: a NaN in both f16 and bf16, so an
/// element the kernel fails to write cannot pass for a result.
pub const POISON_16: u16 = 0x7FFF;
/// The same for the f32 log-sum-exp.
pub const POISON_F32: u32 = 0x7FFF_FFFF;

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
    values.iter().fold(1usize, |acc, &v| acc.saturating_mul(v))
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

/// A device address range, as [`check`] sees a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferSpan {
    pub addr: u64,
    pub bytes: usize,
}

impl From<&DeviceBuffer> for BufferSpan {
    fn from(buffer: &DeviceBuffer) -> BufferSpan {
        BufferSpan { addr: buffer.addr(), bytes: buffer.bytes() }
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

/// The kernel's single by-value parameter; mirrors `tessera::AttentionParams` in
/// `templates/attention_fwd.cuh` field by field.
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
    /// Builds the parameters. Arguments must have passed [`check`]; conversions that would
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

/// Checks every argument of an attention launch against the spec and the buffers, without touching
/// a device. Each error names the tensor and field.
///
/// Allowed: `batch == 0` or `seq_q == 0` (nothing to compute, no launch), `seq_k == 0` (every row
/// sees no key: output 0, log-sum-exp -inf). Strides of dimensions with extent 1 are never
/// multiplied by a non-zero index, so they are not checked.
pub fn check(
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    spans: &AttentionSpans,
    scale: f32,
) -> Result<()> {
    check_problem(spec, problem, scale)?;
    if !spec.features.is_plain() {
        // The variant kernels read launch inputs this path does not have (tables, slopes, ...).
        return Err(RuntimeError::invalid(
            "spec.features",
            format!("`{}` needs the variant launcher: prepare_attention_variant / run_attention_variant", spec.features),
        ));
    }
    let p = problem;
    let layout = TensorExtents {
        q: [p.batch, p.seq_q, p.heads_q, p.head_dim],
        kv: [p.batch, p.seq_k, p.heads_kv, p.head_dim],
        lse_elements: p.lse_elements(),
    };
    check_layout(spec, &layout, strides, spans, &[])
}

/// The memory extents of Q/O and K/V (`[outer, rows, heads, head_dim]`) and the LSE's element
/// count. Plain attention's are the problem's; a packed (varlen) Q or a paged K/V has others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TensorExtents {
    pub q: [usize; 4],
    pub kv: [usize; 4],
    pub lse_elements: usize,
}

/// Strides, alignment, buffer sizes and overlaps of Q, K, V, O and LSE laid out as `extents`.
/// `extra` are further checked ranges `(name, address, bytes)` of the call: none may overlap an
/// output (`o`, `lse`, `workspace`).
pub(crate) fn check_layout(
    spec: &AttentionSpec,
    extents: &TensorExtents,
    strides: &AttentionStrides,
    spans: &AttentionSpans,
    extra: &[(&'static str, u64, usize)],
) -> Result<()> {
    let elem = spec.dtype.size_bytes();
    let tensors = [
        ("q", extents.q, strides.q, spans.q),
        ("k", extents.kv, strides.k, spans.k),
        ("v", extents.kv, strides.v, spans.v),
        ("o", extents.q, strides.o, spans.o),
    ];
    let mut ranges = extra.to_vec();
    for (name, extents, strides, span) in tensors {
        let needed = check_tensor(name, extents, strides, span, elem)?;
        ranges.push((name, span.addr, needed));
    }
    if let Some(span) = spans.lse {
        let needed = extents.lse_elements.saturating_mul(4);
        check_span("lse", span, needed, 4)?;
        ranges.push(("lse", span.addr, needed));
    }
    let o = strides.o;
    check_no_self_overlap("o", extents.q, [o.batch, o.seq, o.head, o.dim])?;
    check_disjoint_outputs(&ranges, &["o", "lse", "workspace"])
}

/// Outputs must not overlap inputs (other CTAs may still be reading) or each other.
pub(crate) fn check_disjoint_outputs(ranges: &[(&str, u64, usize)], outputs: &[&str]) -> Result<()> {
    for (i, &(a, a_addr, a_len)) in ranges.iter().enumerate() {
        for &(b, b_addr, b_len) in &ranges[..i] {
            if !(outputs.contains(&a) || outputs.contains(&b)) || a_len == 0 || b_len == 0 {
                continue;
            }
            let (a_end, b_end) = (a_addr + a_len as u64, b_addr + b_len as u64);
            if a_addr < b_end && b_addr < a_end {
                return Err(RuntimeError::invalid(a, format!("its memory overlaps `{b}`'s")));
            }
        }
    }
    Ok(())
}

/// The shape part of [`check`]: the problem against the spec, the kernel's integer and grid
/// limits, and the scale. Needs no buffers, so host wrappers run it before allocating anything.
pub fn check_problem(spec: &AttentionSpec, problem: &AttentionProblem, scale: f32) -> Result<()> {
    let p = problem;
    for (field, value, expected) in [
        ("head_dim", p.head_dim, spec.head_dim),
        ("heads_q", p.heads_q, spec.heads_q),
        ("heads_kv", p.heads_kv, spec.heads_kv),
    ] {
        if value != expected as usize {
            return Err(RuntimeError::invalid(
                format!("problem.{field}"),
                format!("{value}, but the kernel spec was generated for {field} {expected}"),
            ));
        }
        if value == 0 {
            return Err(RuntimeError::invalid(format!("problem.{field}"), "must be positive"));
        }
    }
    if p.heads_q % p.heads_kv != 0 {
        return Err(RuntimeError::invalid(
            "problem.heads_q",
            format!("{} is not a multiple of heads_kv {}", p.heads_q, p.heads_kv),
        ));
    }
    for (field, value, max) in [
        ("seq_q", p.seq_q, MAX_SEQ_LEN),
        ("seq_k", p.seq_k, MAX_SEQ_LEN),
        ("heads_q", p.heads_q, MAX_GRID_YZ),
        ("batch", p.batch, MAX_GRID_YZ),
    ] {
        if value > max {
            return Err(RuntimeError::invalid(format!("problem.{field}"), format!("{value} is above the limit {max}")));
        }
    }
    if !scale.is_finite() || scale <= 0.0 {
        return Err(RuntimeError::invalid("scale", format!("{scale}: must be finite and positive")));
    }
    Ok(())
}

/// Checks one strided tensor and returns the bytes it spans from its base address.
fn check_tensor(
    name: &str,
    extents: [usize; 4],
    strides: TensorStrides,
    span: BufferSpan,
    elem: usize,
) -> Result<usize> {
    if strides.dim != 1 {
        return Err(RuntimeError::invalid(
            format!("{name}.strides.dim"),
            format!("{}: the last dimension must be contiguous (stride 1)", strides.dim),
        ));
    }
    let align_elems = ACCESS_ALIGN_BYTES / elem;
    let named =
        [("batch", strides.batch, extents[0]), ("seq", strides.seq, extents[1]), ("head", strides.head, extents[2])];
    for (field, stride, extent) in named {
        if extent > 1 && stride % align_elems != 0 {
            return Err(RuntimeError::invalid(
                format!("{name}.strides.{field}"),
                format!(
                    "{stride} is not a multiple of {align_elems} elements: rows are copied in \
                     {ACCESS_ALIGN_BYTES}-byte chunks"
                ),
            ));
        }
    }
    let needed = tensor_bytes(extents, [strides.batch, strides.seq, strides.head, 1], elem)
        .filter(|&bytes| bytes / elem <= i64::MAX as usize)
        .ok_or_else(|| RuntimeError::invalid(name, "its strides address more memory than a 64-bit index can"))?;
    check_span(name, span, needed, ACCESS_ALIGN_BYTES)?;
    Ok(needed)
}

/// Bytes from the first to one past the last element addressed; 0 for an empty tensor.
fn tensor_bytes(extents: [usize; 4], strides: [usize; 4], elem: usize) -> Option<usize> {
    if extents.contains(&0) {
        return Some(0);
    }
    let mut last = 0usize;
    for (extent, stride) in extents.into_iter().zip(strides) {
        last = last.checked_add((extent - 1).checked_mul(stride)?)?;
    }
    last.checked_add(1)?.checked_mul(elem)
}

/// Distinct output elements must have distinct addresses, or CTAs race. Sufficient condition:
/// sorted by stride, each stride exceeds the span of all smaller dimensions.
fn check_no_self_overlap(name: &str, extents: [usize; 4], strides: [usize; 4]) -> Result<()> {
    if extents.contains(&0) {
        // No elements, nothing to collide.
        return Ok(());
    }
    let mut dims: Vec<(usize, usize)> = strides.into_iter().zip(extents).filter(|&(_, extent)| extent > 1).collect();
    dims.sort_unstable();
    let mut span = 0usize;
    for (stride, extent) in dims {
        if stride <= span {
            return Err(RuntimeError::invalid(
                format!("{name}.strides"),
                "distinct output elements share memory (a stride is too small for the dimensions inside it)",
            ));
        }
        span = span.saturating_add(stride.saturating_mul(extent - 1));
    }
    Ok(())
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

/// A checked, compiled and loaded attention launch, ready to run or time repeatedly: the sm_90a
/// kernel or the mma.sync one (its [`PreparedLaunch::note`] says why when it fell back).
pub type AttentionLaunch = PreparedLaunch<AttentionLaunchParams>;

/// Checks the arguments, renders the spec for the backend's architecture, compiles (through the
/// compiler's cache) and loads the kernel. Nothing is launched.
pub fn prepare_attention(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    buffers: &AttentionBuffers<'_>,
    scale: Option<f32>,
) -> Result<AttentionLaunch> {
    let scale = scale.unwrap_or_else(|| problem.default_scale());
    for buffer in buffers.all() {
        backend.check_buffer(buffer)?;
    }
    // A spec that leaves its tile to the default takes the tuned one, if the database has it.
    let shape = [problem.batch * problem.heads_q, problem.seq_q, problem.seq_k];
    let tuned = match crate::tuning::tuned_spec(backend, (*spec).into(), &shape) {
        tessera_codegen::KernelSpec::Attention(s) => s,
        _ => *spec,
    };
    let spec = &tuned;
    let spans = buffers.spans();
    check(spec, problem, strides, &spans, scale)?;
    let params = AttentionParams::new(problem, strides, &spans, scale)?;
    launch_plain(backend, compiler, spec, problem, strides, params, buffers.all())
}

/// Compiles and loads a checked plain-attention launch: the sm_90a kernel (TMA + wgmma) where the
/// spec routes there and the tensors fit tensor maps, else the mma.sync kernel. A fallback from
/// the sm_90a route is written to the launch's note and to standard error.
pub(crate) fn launch_plain<'a>(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    params: AttentionParams,
    buffers: impl Iterator<Item = &'a DeviceBuffer>,
) -> Result<AttentionLaunch> {
    let arch: Arch = backend.arch();
    let mut spec = *spec;
    let mut note = None;
    if let Ok(tile) = spec.hopper_tile(arch) {
        match hopper::hopper_params(backend, &spec, tile, problem, strides, params) {
            Ok(hopper) => {
                let source = spec.render(arch)?;
                let ctas = hopper::persistent_ctas(problem, backend.multiprocessors());
                let config = launch_config_grid(problem, [ctas, 1, 1], source.geometry);
                let params = AttentionLaunchParams::Hopper(hopper);
                return PreparedLaunch::new(backend, compiler, &source, config, params, buffers);
            }
            Err(reason) => {
                note = Some(crate::launch::sm90a_fallback_note("attention", &reason));
                spec = spec.with_tile(spec.default_tile_for(arch));
            }
        }
    }
    let source = spec.render(arch)?;
    let config = launch_config(problem, spec.rows_per_cta(arch), source.geometry);
    let launch = PreparedLaunch::new(backend, compiler, &source, config, AttentionLaunchParams::MmaSync(params), buffers)?;
    Ok(launch.with_note(note))
}

/// Runs attention forward on device buffers and waits for it. `scale` defaults to
/// `1 / sqrt(head_dim)`.
pub fn attention_forward(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    strides: &AttentionStrides,
    buffers: &AttentionBuffers<'_>,
    scale: Option<f32>,
) -> Result<()> {
    prepare_attention(backend, compiler, spec, problem, strides, buffers, scale)?.run(backend)
}

/// Host-side results of [`run_attention`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOutput {
    /// `[batch, seq_q, heads_q, head_dim]`, converted from the spec dtype.
    pub out: Vec<f32>,
    /// `[batch, heads_q, seq_q]`, natural log, when requested.
    pub lse: Option<Vec<f32>>,
    /// The entry point that ran (empty when nothing was launched).
    pub kernel: String,
    /// Why the launcher chose that kernel, when it fell back from its first choice.
    pub note: Option<String>,
}

/// Runs attention on contiguous host tensors: rounds them to the spec dtype (round to nearest
/// even, like [`crate::reference::round_to_dtype`]), uploads, fills the outputs with NaN ([`POISON_16`], [`POISON_F32`]) so
/// that unwritten elements show, launches, and downloads. Device memory is freed on every path.
/// Plain attention's case of [`run_attention_variant`].
#[allow(clippy::too_many_arguments)]
pub fn run_attention(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    problem: &AttentionProblem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: Option<f32>,
    want_lse: bool,
) -> Result<AttentionOutput> {
    run_attention_variant(backend, compiler, spec, &AttentionInputs::dense(*problem, q, k, v), scale, want_lse)
}

/// Little-endian 16-bit encoding, round to nearest even.
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F16 => values.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
    }
}

pub fn decode(bytes: &[u8], dtype: DType) -> Vec<f32> {
    let halves = bytes.chunks_exact(2).map(|c| [c[0], c[1]]);
    match dtype {
        DType::F16 => halves.map(|b| f16::from_le_bytes(b).to_f32()).collect(),
        DType::BF16 => halves.map(|b| bf16::from_le_bytes(b).to_f32()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::KernelParams;
    use std::mem::offset_of;
    use tessera_codegen::TileConfig;

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

    fn run_check(p: &AttentionProblem, s: &AttentionStrides, b: &AttentionSpans, scale: f32) -> Result<()> {
        check(&spec(), p, s, b, scale)
    }

    /// The error's argument name.
    fn arg_of(result: Result<()>) -> String {
        match result {
            Err(RuntimeError::InvalidArgument { arg, .. }) => arg,
            other => panic!("expected InvalidArgument, got {other:?}"),
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
    fn contiguous_problems_pass() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        assert!(run_check(&p, &s, &spans(&p, true), 0.125).is_ok());
        assert!(run_check(&p, &s, &spans(&p, false), 0.125).is_ok());
    }

    #[test]
    fn spec_mismatches_name_the_field() {
        let s = AttentionStrides::contiguous(&problem());
        for (p, field) in [
            (AttentionProblem { head_dim: 128, ..problem() }, "problem.head_dim"),
            (AttentionProblem { heads_q: 4, ..problem() }, "problem.heads_q"),
            (AttentionProblem { heads_kv: 1, ..problem() }, "problem.heads_kv"),
        ] {
            let err = run_check(&p, &s, &spans(&p, false), 0.125).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(field) && msg.contains("spec"), "{msg}");
        }
    }

    #[test]
    fn empty_problems_are_allowed_and_launch_nothing() {
        let geometry = spec().render(Arch::SM80).unwrap().geometry;
        for p in [
            AttentionProblem { batch: 0, ..problem() },
            AttentionProblem { seq_q: 0, ..problem() },
            AttentionProblem { seq_q: 0, seq_k: 0, ..problem() },
        ] {
            let s = AttentionStrides::contiguous(&p);
            // Zero-byte buffers are fine when nothing is addressed.
            let empty = BufferSpan { addr: 0, bytes: 0 };
            let b =
                AttentionSpans { q: empty, k: spans(&p, false).k, v: spans(&p, false).v, o: empty, lse: Some(empty) };
            assert_eq!(run_check(&p, &s, &b, 0.125).map_err(|e| e.to_string()), Ok(()), "{p:?}");
            assert_eq!(launch_config(&p, 128, geometry), None, "{p:?}");
        }
        // No keys: still a launch (every row writes 0 and -inf).
        let p = AttentionProblem { seq_k: 0, ..problem() };
        let s = AttentionStrides::contiguous(&p);
        assert!(run_check(&p, &s, &spans(&p, true), 0.125).is_ok());
        assert!(launch_config(&p, 128, geometry).is_some());
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

    #[test]
    fn last_dimension_must_be_contiguous() {
        let p = problem();
        for tensor in ["q", "k", "v", "o"] {
            let mut s = AttentionStrides::contiguous(&p);
            let t = match tensor {
                "q" => &mut s.q,
                "k" => &mut s.k,
                "v" => &mut s.v,
                _ => &mut s.o,
            };
            t.dim = 2;
            assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), 0.125)), format!("{tensor}.strides.dim"));
        }
    }

    #[test]
    fn strides_must_keep_rows_16_byte_aligned() {
        let p = problem();
        let mut s = AttentionStrides::contiguous(&p);
        s.k.seq += 4; // 8 bytes: breaks cp.async alignment
        let b = AttentionSpans { k: BufferSpan { bytes: 1 << 24, ..spans(&p, false).k }, ..spans(&p, false) };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "k.strides.seq");
        let mut s = AttentionStrides::contiguous(&p);
        s.q.batch += 1;
        assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), 0.125)), "q.strides.batch");
        let mut s = AttentionStrides::contiguous(&p);
        s.v.head = 72; // padded heads: fine, 144 bytes
        s.v.seq = 2 * 72;
        s.v.batch = 130 * 2 * 72;
        let b = AttentionSpans { v: BufferSpan { addr: 1 << 40, bytes: 1 << 24 }, ..spans(&p, false) };
        assert_eq!(run_check(&p, &s, &b, 0.125).map_err(|e| e.to_string()), Ok(()));
    }

    #[test]
    fn strides_of_unit_dimensions_are_ignored() {
        let p = AttentionProblem { batch: 1, ..problem() };
        let mut s = AttentionStrides::contiguous(&p);
        s.q.batch = 3; // never multiplied by a non-zero index
        assert!(run_check(&p, &s, &spans(&p, false), 0.125).is_ok());
    }

    #[test]
    fn buffers_must_hold_the_highest_element_addressed() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let mut b = spans(&p, true);
        b.v.bytes -= 2;
        let err = run_check(&p, &s, &b, 0.125).unwrap_err().to_string();
        assert!(err.contains("`v`") && err.contains("address"), "{err}");
        let mut b = spans(&p, true);
        b.lse = Some(BufferSpan { bytes: p.lse_elements() * 4 - 4, ..b.lse.unwrap() });
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "lse");
        // Strided layouts need more than the element count suggests.
        let mut s2 = s;
        s2.o.seq *= 2;
        s2.o.batch *= 2;
        assert_eq!(arg_of(run_check(&p, &s2, &spans(&p, false), 0.125)), "o");
    }

    #[test]
    fn buffers_must_be_aligned() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let mut b = spans(&p, false);
        b.q.addr += 8;
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "q");
    }

    #[test]
    fn outputs_must_not_overlap_inputs_or_themselves() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        let mut b = spans(&p, true);
        b.o = b.q;
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "o");
        let mut b = spans(&p, true);
        b.lse = Some(BufferSpan { addr: b.o.addr, bytes: p.lse_elements() * 4 });
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "lse");
        // Inputs may share memory (K and V from one buffer is a read-only alias).
        let mut b = spans(&p, false);
        b.v = b.k;
        assert!(run_check(&p, &s, &b, 0.125).is_ok());
        // Heads written onto each other.
        let mut s2 = s;
        s2.o.head = 0;
        assert_eq!(arg_of(run_check(&p, &s2, &spans(&p, false), 0.125)), "o.strides");
    }

    #[test]
    fn scale_must_be_finite_and_positive() {
        let p = problem();
        let s = AttentionStrides::contiguous(&p);
        for bad in [0.0, -0.5, f32::NAN, f32::INFINITY] {
            assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), bad)), "scale", "{bad}");
        }
    }

    #[test]
    fn sizes_beyond_the_kernel_integers_are_rejected() {
        let s = AttentionStrides::contiguous(&problem());
        let b = spans(&problem(), false);
        let p = AttentionProblem { seq_q: i32::MAX as usize, ..problem() };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "problem.seq_q");
        let p = AttentionProblem { seq_k: 1 << 40, ..problem() };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "problem.seq_k");
        let p = AttentionProblem { batch: 70_000, ..problem() };
        assert_eq!(arg_of(run_check(&p, &s, &b, 0.125)), "problem.batch");
        // Strides whose highest address overflows.
        let p = problem();
        let mut s = AttentionStrides::contiguous(&p);
        s.k.batch = (usize::MAX / 2) & !7;
        assert_eq!(arg_of(run_check(&p, &s, &spans(&p, false), 0.125)), "k");
    }

    #[test]
    fn gqa_and_mqa_layouts_check() {
        for (hq, hkv) in [(8, 8), (8, 2), (8, 1)] {
            let spec = AttentionSpec::new(DType::F16, 128, false, hq, hkv).with_tile(TileConfig::new(64, 64, 4, 2));
            let p = AttentionProblem::for_spec(&spec, 3, 17, 33);
            let s = AttentionStrides::contiguous(&p);
            assert!(check(&spec, &p, &s, &spans(&p, true), p.default_scale()).is_ok());
        }
    }

    #[test]
    fn uploads_round_like_the_reference() {
        // The reference rounds its inputs with `round_to_dtype`; the upload path must agree bit
        // for bit, or kernel and reference would see different inputs.
        let x: Vec<f32> = (0..4096).map(|i| ((i as f32) * 0.7318).sin() * 3.0 + 1e-3 * i as f32).collect();
        let ties = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 1.0 + 2f32.powi(-8), 7e4, -0.0];
        for dtype in DType::ALL {
            for values in [&x[..], &ties[..]] {
                let ours = decode(&encode(values, dtype), dtype);
                let theirs = crate::reference::round_to_dtype(values, dtype);
                assert_eq!(
                    ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    theirs.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn poison_is_nan_in_every_output_type() {
        assert!(decode(&POISON_16.to_le_bytes(), DType::F16)[0].is_nan());
        assert!(decode(&POISON_16.to_le_bytes(), DType::BF16)[0].is_nan());
        assert!(f32::from_bits(POISON_F32).is_nan());
    }
}
