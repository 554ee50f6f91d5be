//! Attention variants on host tensors: checks every input's contents (the device launcher cannot),
//! uploads, poisons the outputs, launches, downloads. The CLI's `tessera run attention` and the
//! simulator tests go through here, and so does plain attention on host tensors
//! ([`run_attention`]).

use tessera_codegen::{AttentionSpec, ElemType};

use super::check::check_problem;
use super::problem::{AttentionBuffers, AttentionProblem, AttentionStrides, TensorStrides, MAX_SEQ_LEN};
use super::tree::TreeMask;
use super::variant::{check_num_splits, default_num_splits, prepare_attention_variant, split_workspace_bytes, PagedLayout, VariantArgs, VariantBuffers, Window};
use crate::common::buffers::{byte_len, decode, encode, poisoned_bytes, zeroed_bytes};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::HostUploads;
use crate::compile::compiler::Compiler;
use crate::device::backend::Backend;

/// Learned prefix keys and values, `[len, heads_kv, head_dim]` each.
#[derive(Clone, Copy, Debug)]
pub struct PrefixInputs<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub len: usize,
}

/// Candidate-tree parents (`-1` = root, else an earlier node): `[n_tree]` for every sequence, or
/// `[batch, n_tree]` with `per_sequence`.
#[derive(Clone, Copy, Debug)]
pub struct TreeInputs<'a> {
    pub parents: &'a [i64],
    pub per_sequence: bool,
}

/// Packed sequences: row ranges `cu_seqlens[b] .. cu_seqlens[b + 1]` of Q (and of K/V unless the
/// cache is paged, when `cu_seqlens_k` is `None`).
#[derive(Clone, Copy, Debug)]
pub struct VarlenInputs<'a> {
    pub cu_seqlens_q: &'a [i64],
    pub cu_seqlens_k: Option<&'a [i64]>,
}

/// A paged KV cache: K and V are `[num_pages, page_size, heads_kv, head_dim]`; `block_table` is
/// `[batch, max_pages]`, `seq_lens` `[batch]`.
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a> {
    pub page_size: usize,
    pub block_table: &'a [i64],
    pub max_pages: usize,
    pub seq_lens: &'a [i64],
}

/// Everything one attention call reads, on the host, as f32 (rounded to the spec dtype on upload).
///
/// `problem` gives heads and head_dim. Dense calls give batch, seq_q and seq_k too. With `varlen`,
/// batch, seq_q and seq_k are derived from the cu_seqlens (leave them 0, or give the same values);
/// with `paged`, seq_k is derived from seq_lens likewise.
#[derive(Clone, Copy, Debug)]
pub struct AttentionInputs<'a> {
    pub problem: AttentionProblem,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub window: Window,
    pub softcap: Option<f32>,
    pub alibi_slopes: Option<&'a [f32]>,
    pub prefix: Option<PrefixInputs<'a>>,
    pub tree: Option<TreeInputs<'a>>,
    pub varlen: Option<VarlenInputs<'a>>,
    pub paged: Option<PagedKv<'a>>,
    /// With `split_kv`: `None` picks [`default_num_splits`].
    pub num_splits: Option<usize>,
}

impl<'a> AttentionInputs<'a> {
    /// Plain dense attention inputs; set the variant fields on the result.
    pub fn dense(problem: AttentionProblem, q: &'a [f32], k: &'a [f32], v: &'a [f32]) -> Self {
        AttentionInputs {
            problem,
            q,
            k,
            v,
            window: Window::default(),
            softcap: None,
            alibi_slopes: None,
            prefix: None,
            tree: None,
            varlen: None,
            paged: None,
            num_splits: None,
        }
    }
}

/// Sequence lengths from cumulative offsets: starts at 0, never decreases, ends at `rows`.
fn lengths_from_cu(name: &str, cu: &[i64], batch: Option<usize>, rows: usize) -> Result<Vec<usize>> {
    if cu.is_empty() || cu[0] != 0 {
        return Err(RuntimeError::invalid(name, "must start with 0 (it holds batch + 1 offsets)"));
    }
    if let Some(batch) = batch {
        if cu.len() != batch + 1 {
            return Err(RuntimeError::invalid(name, format!("{} offsets, but {batch} sequences need {}", cu.len(), batch + 1)));
        }
    }
    let mut lens = Vec::with_capacity(cu.len() - 1);
    for (b, pair) in cu.windows(2).enumerate() {
        if pair[1] < pair[0] {
            return Err(RuntimeError::invalid(
                format!("{name}[{}]", b + 1),
                format!("{} is below {name}[{b}] = {}: the offsets must not decrease", pair[1], pair[0]),
            ));
        }
        lens.push((pair[1] - pair[0]) as usize);
    }
    let last = *cu.last().unwrap_or(&0);
    if last as usize != rows {
        return Err(RuntimeError::invalid(name, format!("ends at {last}, but the packed tensor has {rows} rows")));
    }
    if last as usize > MAX_SEQ_LEN {
        return Err(RuntimeError::invalid(name, format!("{last} rows exceed the limit {MAX_SEQ_LEN}")));
    }
    Ok(lens)
}

fn rows_of(name: &str, data: &[f32], row: usize) -> Result<usize> {
    if row == 0 || data.len() % row != 0 {
        return Err(RuntimeError::invalid(name, format!("{} elements are not whole rows of {row} (heads x head_dim)", data.len())));
    }
    Ok(data.len() / row)
}

fn expect_len(name: &str, data: usize, expected: usize) -> Result<()> {
    if data != expected {
        return Err(RuntimeError::invalid(name, format!("{data} elements, but a contiguous tensor of this problem has {expected}")));
    }
    Ok(())
}

fn derived(name: &str, given: usize, derived: usize) -> Result<usize> {
    if given != 0 && given != derived {
        return Err(RuntimeError::invalid(format!("problem.{name}"), format!("{given}, but the inputs give {derived}")));
    }
    Ok(derived)
}

fn to_i32(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect()
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

/// Runs attention with variants on host tensors. Checks the spec's features against the inputs and
/// every input's contents (cu_seqlens monotone and matching the packed rows, page indices in range,
/// parents forming a tree, shapes) before allocating anything, then uploads, fills the outputs with
/// NaN, launches and downloads. The LSE is `[batch, heads_q, seq_q]`, or `[heads_q, total_q]` with
/// varlen.
pub fn run_attention_variant(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AttentionSpec,
    inputs: &AttentionInputs<'_>,
    scale: Option<f32>,
    want_lse: bool,
) -> Result<AttentionOutput> {
    let f = spec.features;
    let named = [
        ("window", "local", f.local, inputs.window != Window::default()),
        ("softcap", "softcap", f.softcap, inputs.softcap.is_some()),
        ("alibi_slopes", "alibi", f.alibi, inputs.alibi_slopes.is_some()),
        ("prefix", "prefix", f.prefix, inputs.prefix.is_some()),
        ("tree", "tree", f.tree, inputs.tree.is_some()),
        ("varlen", "varlen", f.varlen, inputs.varlen.is_some()),
        ("paged", "paged", f.paged, inputs.paged.is_some()),
    ];
    for (input, feature, on, given) in named {
        // A window may be left unbounded on both sides with `local` on; every other input must be
        // given exactly when its feature is on.
        if given && !on {
            return Err(RuntimeError::invalid(input, format!("given, but the kernel spec lacks the `{feature}` feature")));
        }
        if on && !given && input != "window" {
            return Err(RuntimeError::invalid(input, format!("required: the kernel spec has the `{feature}` feature")));
        }
    }

    // ---- shapes, derived lengths and contents ----
    // The spec against the given heads and head_dim first (derived lengths may still be 0 here).
    check_problem(spec, &inputs.problem, scale.unwrap_or_else(|| inputs.problem.default_scale()))?;
    let mut problem = inputs.problem;
    let (hq, hkv, d) = (problem.heads_q, problem.heads_kv, problem.head_dim);
    if inputs.varlen.is_none() {
        expect_len("q", inputs.q.len(), problem.q_elements())?;
    }
    if inputs.varlen.is_none() && inputs.paged.is_none() {
        expect_len("k", inputs.k.len(), problem.kv_elements())?;
    }
    let q_rows = rows_of("q", inputs.q, hq * d)?;
    let kv_rows = rows_of("k", inputs.k, hkv * d)?;
    expect_len("v", inputs.v.len(), inputs.k.len())?;
    let mut q_lens = None;
    let mut k_lens = None;
    if let Some(varlen) = inputs.varlen {
        let lens = lengths_from_cu("cu_seqlens_q", varlen.cu_seqlens_q, None, q_rows)?;
        problem.batch = derived("batch", problem.batch, lens.len())?;
        problem.seq_q = derived("seq_q", problem.seq_q, lens.iter().copied().max().unwrap_or(0))?;
        q_lens = Some(lens);
        match (varlen.cu_seqlens_k, inputs.paged) {
            (Some(cu_k), None) => {
                let lens = lengths_from_cu("cu_seqlens_k", cu_k, Some(problem.batch), kv_rows)?;
                problem.seq_k = derived("seq_k", problem.seq_k, lens.iter().copied().max().unwrap_or(0))?;
                k_lens = Some(lens);
            }
            (None, Some(_)) => {}
            (Some(_), Some(_)) => return Err(RuntimeError::invalid("cu_seqlens_k", "given with a paged cache, whose seq_lens give the key counts")),
            (None, None) => return Err(RuntimeError::invalid("cu_seqlens_k", "required for varlen without a paged cache")),
        }
    }
    let mut layout = None;
    if let Some(paged) = inputs.paged {
        let page_rows = paged.page_size.saturating_mul(hkv * d);
        if page_rows == 0 || inputs.k.len() % page_rows != 0 {
            return Err(RuntimeError::invalid("k", format!("{} elements are not whole pages of {} keys", inputs.k.len(), paged.page_size)));
        }
        let num_pages = inputs.k.len() / page_rows;
        let batch = problem.batch;
        expect_len("seq_lens", paged.seq_lens.len(), batch)?;
        expect_len("block_table", paged.block_table.len(), batch.saturating_mul(paged.max_pages))?;
        let mut lens = Vec::with_capacity(batch);
        for (b, &len) in paged.seq_lens.iter().enumerate() {
            if len < 0 || len as usize > paged.max_pages.saturating_mul(paged.page_size) || len as usize > MAX_SEQ_LEN {
                return Err(RuntimeError::invalid(
                    format!("seq_lens[{b}]"),
                    format!("{len}: must be 0..={} ({} pages of {})", paged.max_pages * paged.page_size, paged.max_pages, paged.page_size),
                ));
            }
            let used = (len as usize).div_ceil(paged.page_size.max(1));
            for (i, &page) in paged.block_table[b * paged.max_pages..][..used].iter().enumerate() {
                if page < 0 || page as usize >= num_pages {
                    return Err(RuntimeError::invalid(
                        format!("block_table[{b}][{i}]"),
                        format!("page {page} is out of range: the cache has {num_pages} pages"),
                    ));
                }
            }
            lens.push(len as usize);
        }
        problem.seq_k = derived("seq_k", problem.seq_k, lens.iter().copied().max().unwrap_or(0))?;
        k_lens = Some(lens);
        layout = Some(PagedLayout { page_size: paged.page_size, num_pages, max_pages: paged.max_pages });
    }
    check_problem(spec, &problem, scale.unwrap_or_else(|| problem.default_scale()))?;
    if let Some(slopes) = inputs.alibi_slopes {
        expect_len("alibi_slopes", slopes.len(), hq)?;
        if let Some(i) = slopes.iter().position(|s| !s.is_finite()) {
            return Err(RuntimeError::invalid(format!("alibi_slopes[{i}]"), format!("{}: must be finite", slopes[i])));
        }
    }
    if let Some(prefix) = inputs.prefix {
        expect_len("prefix_k", prefix.k.len(), prefix.len.saturating_mul(hkv * d))?;
        expect_len("prefix_v", prefix.v.len(), prefix.len.saturating_mul(hkv * d))?;
    }
    let batch = problem.batch;
    let seq_len = |lens: &Option<Vec<usize>>, b: usize, dense: usize| lens.as_ref().map_or(dense, |l| l[b]);
    let mut tree_bits = Vec::new();
    let mut n_tree = 0;
    if let Some(tree) = inputs.tree {
        let trees = if tree.per_sequence { batch.max(1) } else { 1 };
        if tree.parents.len() % trees != 0 {
            return Err(RuntimeError::invalid("tree", format!("{} parents are not {trees} equal trees", tree.parents.len())));
        }
        n_tree = tree.parents.len() / trees;
        for (i, parents) in tree.parents.chunks(n_tree.max(1)).enumerate() {
            let name = if tree.per_sequence { format!("tree[{i}]") } else { "tree".to_string() };
            tree_bits.extend_from_slice(TreeMask::from_parents(&name, parents)?.bits());
        }
        for b in 0..batch {
            let (sq, sk) = (seq_len(&q_lens, b, problem.seq_q), seq_len(&k_lens, b, problem.seq_k));
            if n_tree > sq || n_tree > sk {
                return Err(RuntimeError::invalid(
                    "tree",
                    format!("{n_tree} candidates, but sequence {b} has {sq} queries and {sk} keys (the candidates are the last of both)"),
                ));
            }
        }
    }

    let args = VariantArgs {
        window: inputs.window,
        softcap: inputs.softcap,
        prefix_len: inputs.prefix.map_or(0, |p| p.len),
        n_tree,
        tree_per_sequence: inputs.tree.is_some_and(|t| t.per_sequence),
        paged: layout,
        total_q: if f.varlen { q_rows } else { 0 },
        total_k: if f.varlen && !f.paged { kv_rows } else { 0 },
        num_splits: if f.split_kv {
            inputs.num_splits.unwrap_or_else(|| {
                let prefix_len = inputs.prefix.map_or(0, |p| p.len);
                default_num_splits(spec, &problem, prefix_len, backend.arch(), backend.multiprocessors())
            })
        } else {
            0
        },
    };
    // Before the workspace is sized from it.
    if f.split_kv {
        check_num_splits(args.num_splits)?;
    }
    let mut strides = AttentionStrides::contiguous(&problem);
    let row = |heads: usize| TensorStrides { batch: 0, seq: heads * d, head: d, dim: 1 };
    if f.varlen {
        strides.q = row(hq);
        strides.o = row(hq);
        if !f.paged {
            strides.k = row(hkv);
            strides.v = row(hkv);
        }
    }
    if let Some(paged) = layout {
        let kv = TensorStrides { batch: paged.page_size * hkv * d, seq: hkv * d, head: d, dim: 1 };
        strides.k = kv;
        strides.v = kv;
    }
    let lse_elements = if f.varlen { hq * q_rows } else { problem.lse_elements() };

    // ---- upload, launch, download ----
    let dtype = spec.dtype;
    let out_bytes = byte_len("o", inputs.q.len(), dtype)?;
    let mut memory = HostUploads::new(backend);
    let q_buf = memory.upload(&encode(inputs.q, dtype))?;
    let k_buf = memory.upload(&encode(inputs.k, dtype))?;
    let v_buf = memory.upload(&encode(inputs.v, dtype))?;
    let o_buf = memory.upload(&poisoned_bytes("o", inputs.q.len(), dtype)?)?;
    let lse_buf = if want_lse { Some(memory.upload(&poisoned_bytes("lse", lse_elements, ElemType::F32)?)?) } else { None };
    let mut upload_opt = |bytes: Option<Vec<u8>>| -> Result<Option<usize>> { bytes.map(|b| memory.upload(&b)).transpose() };
    let slopes = upload_opt(inputs.alibi_slopes.map(|s| s.iter().flat_map(|x| x.to_le_bytes()).collect()))?;
    let prefix_k = upload_opt(inputs.prefix.map(|p| encode(p.k, dtype)))?;
    let prefix_v = upload_opt(inputs.prefix.map(|p| encode(p.v, dtype)))?;
    let tree = upload_opt(inputs.tree.map(|_| tree_bits.iter().flat_map(|w| w.to_le_bytes()).collect()))?;
    let cu_q = upload_opt(inputs.varlen.map(|v| to_i32(v.cu_seqlens_q)))?;
    let cu_k = upload_opt(inputs.varlen.and_then(|v| v.cu_seqlens_k).map(to_i32))?;
    let table = upload_opt(inputs.paged.map(|p| to_i32(p.block_table)))?;
    let lens = upload_opt(inputs.paged.map(|p| to_i32(p.seq_lens)))?;
    let workspace_bytes = split_workspace_bytes(spec, &problem, &args, backend.arch());
    // Zeroed: the split counters start at 0 (the kernel leaves them 0 again).
    let workspace = upload_opt(f.split_kv.then(|| zeroed_bytes("workspace", workspace_bytes.max(16))).transpose()?)?;

    let b = &memory.buffers;
    let at = |i: Option<usize>| i.map(|i| &b[i]);
    let buffers = AttentionBuffers { q: &b[q_buf], k: &b[k_buf], v: &b[v_buf], o: &b[o_buf], lse: at(lse_buf) };
    let extra = VariantBuffers {
        alibi_slopes: at(slopes),
        prefix_k: at(prefix_k),
        prefix_v: at(prefix_v),
        tree_bits: at(tree),
        cu_seqlens_q: at(cu_q),
        cu_seqlens_k: at(cu_k),
        block_table: at(table),
        seq_lens: at(lens),
        workspace: at(workspace),
    };
    let launch = prepare_attention_variant(backend, compiler, spec, &problem, &strides, &buffers, &args, &extra, scale)?;
    launch.run(backend)?;
    let kernel = launch.kernel_name().unwrap_or_default().to_string();
    let note = launch.note().map(str::to_string);

    let mut out = zeroed_bytes("o", out_bytes)?;
    backend.read(&b[o_buf], &mut out)?;
    let lse = match lse_buf {
        Some(i) => {
            let mut raw = zeroed_bytes("lse", byte_len("lse", lse_elements, ElemType::F32)?)?;
            backend.read(&b[i], &mut raw)?;
            Some(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        None => None,
    };
    Ok(AttentionOutput { out: decode(&out, dtype), lse, kernel, note })
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

#[cfg(test)]
mod tests {
    use tessera_codegen::{Arch, AttentionFeatures};

    use super::*;
    use crate::attention::variant::MAX_SPLITS;
    use crate::device::sim::SimBackend;

    #[test]
    fn an_out_of_range_split_count_is_refused_before_the_workspace_is_sized() {
        let backend = SimBackend::new(Arch::SM80);
        let features = AttentionFeatures { split_kv: true, ..AttentionFeatures::default() };
        let spec = AttentionSpec::new(ElemType::F16, 64, false, 1, 1).with_features(features);
        let problem = AttentionProblem { batch: 1, seq_q: 4, seq_k: 4, heads_q: 1, heads_kv: 1, head_dim: 64 };
        let q = vec![0.0; problem.q_elements()];
        // 2^32 splits would size a 16 TiB workspace; a million, 1 GiB.
        for splits in [1usize << 32, 1_000_000, MAX_SPLITS + 1, 0] {
            let mut inputs = AttentionInputs::dense(problem, &q, &q, &q);
            inputs.num_splits = Some(splits);
            let e = run_attention_variant(&backend, &Compiler::new(), &spec, &inputs, None, false).unwrap_err().to_string();
            assert!(e.contains("variant.num_splits") && e.contains(&format!("1..={MAX_SPLITS}")), "{splits}: {e}");
        }
    }
}
