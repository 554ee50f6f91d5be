//! Attention forward in f64: the reference every attention kernel is checked against.
//!
//! [`attention`] is plain attention (optionally causal) over a dense batch. The variants add the
//! masks and score modifiers of [`VariantOptions`] (sliding window, soft-capping, ALiBi, prefix keys
//! shared by the whole batch, tree masks) and three batch layouts: dense ([`attention_variant`]),
//! packed variable-length ([`attention_varlen`]) and paged KV cache ([`attention_paged`]). Every
//! batch function gathers one sequence at a time and calls [`attention_sequence`], which holds the
//! rules; the GPU kernels implement the same ones.
//!
//! Kept beside the attention family's launchers; [`crate::reference`] re-exports it with the
//! other references.

use super::problem::AttentionProblem;

/// Reference attention output.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceOutput {
    /// Laid out like the queries, contiguous: `[batch, seq_q, heads_q, head_dim]` for the dense and
    /// paged batches, `[seq_q, heads_q, head_dim]` for [`attention_sequence`] and
    /// `[total_q, heads_q, head_dim]` for [`attention_varlen`].
    pub out: Vec<f64>,
    /// Natural-log log-sum-exp of the final scores (after soft-capping and ALiBi):
    /// `[batch, heads_q, seq_q]` for the dense and paged batches, `[heads_q, seq_q]` for
    /// [`attention_sequence`] and `[heads_q, total_q]` for [`attention_varlen`]. `-inf` for a query
    /// that sees no key (whose output row is 0).
    pub lse: Vec<f64>,
}

/// Prefix keys/values shared by every sequence, `[prefix_len, heads_kv, head_dim]` each.
///
/// Every query of every sequence sees every prefix key: no causal, window or tree rule applies to
/// them. Prefix key `p` sits at position `p - len`, just before the sequence's own key 0 (the
/// position only matters for ALiBi).
#[derive(Clone, Copy, Debug)]
pub struct PrefixKv<'a> {
    /// Prefix keys, `[len, heads_kv, head_dim]`.
    pub k: &'a [f32],
    /// Prefix values, `[len, heads_kv, head_dim]`.
    pub v: &'a [f32],
    /// Number of prefix keys (`prefix_len`).
    pub len: usize,
}

/// Masks and score modifiers of one attention call, beyond the shapes.
///
/// Positions: with `diag = seq_k - seq_q` (signed), query `i` sits at `qpos = i + diag` and own key
/// `j` at `kpos = j`, so the last query lines up with the last key (bottom-right alignment).
/// An own key is visible when every enabled rule (causal, window, tree) allows it; prefix keys are
/// always visible. The default is plain full attention: no mask, no modifier, no prefix.
#[derive(Clone, Copy, Debug, Default)]
pub struct VariantOptions<'a> {
    /// Own key `j` is visible only if `j <= qpos`.
    pub causal: bool,
    /// Sliding window, left side (FlashAttention's `window_size[0]`): own key `j` is visible only if
    /// `j >= qpos - left`. `None`: unbounded.
    pub window_left: Option<usize>,
    /// Sliding window, right side (FlashAttention's `window_size[1]`): own key `j` is visible only if
    /// `j <= qpos + right`. `None`: unbounded.
    pub window_right: Option<usize>,
    /// Soft-capping `c > 0`: the scaled score `s` becomes `c * tanh(s / c)` (before ALiBi).
    pub softcap: Option<f64>,
    /// ALiBi slopes, `[heads_q]`: query head `h` subtracts `slope[h] * |qpos - kpos|` from the score
    /// (after soft-capping), prefix keys included.
    pub alibi_slopes: Option<&'a [f32]>,
    /// Keys/values prepended to every sequence and always visible, see [`PrefixKv`].
    pub prefix: Option<PrefixKv<'a>>,
    /// Tree parents per sequence: one entry applies to every sequence, else one per sequence.
    ///
    /// A tree of `n_tree` nodes (`parents[t] < t`, `-1` for a root) covers the last `n_tree` queries
    /// and the last `n_tree` own keys: query `i` is node `t = i - (seq_q - n_tree)` and own key `j`
    /// node `u = j - (seq_k - n_tree)`. When both `t >= 0` and `u >= 0`, the key is visible only if
    /// `u` is `t` or an ancestor of `t`; keys before the tree (`u < 0`, the context) are not restricted
    /// by it. Used together with `causal = true` (speculative decoding trees).
    /// [`attention_sequence`] does not read this field: it takes the sequence's tree as an argument.
    pub tree: Option<&'a [Vec<i32>]>,
}

/// Shapes of one sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceDims {
    /// Queries of the sequence.
    pub seq_q: usize,
    /// Own keys of the sequence (prefix keys not counted).
    pub seq_k: usize,
    /// Query heads.
    pub heads_q: usize,
    /// Key/value heads; divides `heads_q`, query head `h` reads head `h / (heads_q / heads_kv)`.
    pub heads_kv: usize,
    /// Elements per head.
    pub head_dim: usize,
}

/// `out[i] = Σ_j softmax_j(scale · q_i·k_j) v_j` over the keys `j` query `i` may see
/// ([`AttentionProblem::visible`]), with f64 accumulation and a max-subtracted softmax. Query head `h`
/// reads key/value head `h / (heads_q / heads_kv)`. The same as [`attention_variant`] with only
/// `causal` set.
///
/// # Panics
/// When a slice length does not match `dims`, or `heads_kv` does not divide `heads_q`: both are
/// harness bugs, not data.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], dims: &AttentionProblem, causal: bool, scale: f64) -> ReferenceOutput {
    attention_variant(q, k, v, dims, &VariantOptions { causal, ..VariantOptions::default() }, scale)
}

/// Attention of one sequence: q `[seq_q, heads_q, head_dim]`, its own k/v `[seq_k, heads_kv,
/// head_dim]`; out `[seq_q, heads_q, head_dim]`, lse `[heads_q, seq_q]`. `parents` is that
/// sequence's tree (`opts.tree` is not read here).
///
/// Query `i` (position `qpos = i + seq_k - seq_q`) sees every prefix key and the own keys `j` that
/// pass every enabled rule of [`VariantOptions`] (causal `j <= qpos`, window
/// `qpos - left <= j <= qpos + right`, tree ancestry). The score of a visible key is
/// `s = scale · q·k` in f64, then `c · tanh(s / c)` with soft-cap `c`, then minus
/// `slope[h] · |qpos - kpos|` with ALiBi. `out_i = Σ softmax(s) v` (max-subtracted) and
/// `lse_i = ln Σ exp(s)`; a query that sees no key gets a zero row and `lse = -inf`, never NaN.
///
/// # Panics
/// On malformed inputs (harness bugs): slice lengths that do not match `dims` or the prefix length,
/// `heads_kv` not dividing `heads_q`, one ALiBi slope per query head missing, a soft-cap that is
/// not positive and finite, or `parents` not a tree (each parent must be `-1` or an earlier node).
pub fn attention_sequence(
    q: &[f32], k: &[f32], v: &[f32], dims: &SequenceDims, opts: &VariantOptions, parents: Option<&[i32]>, scale: f64,
) -> ReferenceOutput {
    let SequenceDims { seq_q, seq_k, heads_q, heads_kv, head_dim } = *dims;
    check_heads(heads_q, heads_kv);
    assert_eq!(q.len(), seq_q * heads_q * head_dim, "attention reference: q length");
    assert_eq!(k.len(), seq_k * heads_kv * head_dim, "attention reference: k length");
    assert_eq!(v.len(), seq_k * heads_kv * head_dim, "attention reference: v length");
    let (prefix_k, prefix_v, prefix_len) = match opts.prefix {
        Some(p) => (p.k, p.v, p.len),
        None => (&[][..], &[][..], 0),
    };
    assert_eq!(prefix_k.len(), prefix_len * heads_kv * head_dim, "attention reference: prefix k length");
    assert_eq!(prefix_v.len(), prefix_len * heads_kv * head_dim, "attention reference: prefix v length");
    if let Some(slopes) = opts.alibi_slopes {
        assert_eq!(slopes.len(), heads_q, "attention reference: alibi_slopes needs one slope per query head");
    }
    if let Some(c) = opts.softcap {
        assert!(c > 0.0 && c.is_finite(), "attention reference: softcap ({c}) must be positive and finite");
    }
    if let Some(parents) = parents {
        check_tree(parents);
    }

    let group = heads_q / heads_kv;
    let diag = seq_k as i64 - seq_q as i64;
    let mut out = vec![0.0f64; q.len()];
    let mut lse = vec![f64::NEG_INFINITY; heads_q * seq_q];
    // Keys query `i` sees, the same for every head: (is a prefix key, row, position), prefix first.
    let mut keys: Vec<(bool, usize, i64)> = Vec::with_capacity(prefix_len + seq_k);
    let mut scores = Vec::with_capacity(prefix_len + seq_k);
    let mut acc = vec![0.0f64; head_dim];
    for i in 0..seq_q {
        let qpos = i as i64 + diag;
        keys.clear();
        keys.extend((0..prefix_len).map(|p| (true, p, p as i64 - prefix_len as i64)));
        keys.extend(
            (0..seq_k).filter(|&j| own_key_visible(opts, parents, seq_q, seq_k, i, j)).map(|j| (false, j, j as i64)),
        );
        if keys.is_empty() {
            // No visible key: output stays 0 and lse -inf, never 0/0.
            continue;
        }
        for h in 0..heads_q {
            let hk = h / group;
            let qi = head_row(q, i, heads_q, h, head_dim);
            scores.clear();
            let mut max = f64::NEG_INFINITY;
            for &(is_prefix, r, kpos) in &keys {
                let kj = head_row(if is_prefix { prefix_k } else { k }, r, heads_kv, hk, head_dim);
                let dot: f64 = qi.iter().zip(kj).map(|(&a, &c)| a as f64 * c as f64).sum();
                let mut s = scale * dot;
                if let Some(c) = opts.softcap {
                    s = c * (s / c).tanh();
                }
                if let Some(slopes) = opts.alibi_slopes {
                    s -= slopes[h] as f64 * (qpos - kpos).abs() as f64;
                }
                max = max.max(s);
                scores.push(s);
            }
            if max == f64::NEG_INFINITY {
                // Every score is -inf: no probability mass anywhere, treated like no visible key.
                continue;
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            let mut sum = 0.0f64;
            for (&(is_prefix, r, _), &s) in keys.iter().zip(&scores) {
                let p = (s - max).exp();
                sum += p;
                let vj = head_row(if is_prefix { prefix_v } else { v }, r, heads_kv, hk, head_dim);
                for (a, &x) in acc.iter_mut().zip(vj) {
                    *a += p * x as f64;
                }
            }
            let o = &mut out[(i * heads_q + h) * head_dim..][..head_dim];
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = a / sum;
            }
            lse[h * seq_q + i] = max + sum.ln();
        }
    }
    ReferenceOutput { out, lse }
}

/// Dense batch: q `[batch, seq_q, heads_q, head_dim]`, k/v `[batch, seq_k, heads_kv, head_dim]`;
/// out like q, lse `[batch, heads_q, seq_q]`. Each sequence is [`attention_sequence`] with the tree
/// `opts.tree[b]` (or `opts.tree[0]` when it holds a single tree) and the shared prefix.
///
/// # Panics
/// On the malformed inputs of [`attention_sequence`], slice lengths that do not match `dims`, or an
/// `opts.tree` with neither 1 nor `batch` entries.
pub fn attention_variant(
    q: &[f32], k: &[f32], v: &[f32], dims: &AttentionProblem, opts: &VariantOptions, scale: f64,
) -> ReferenceOutput {
    let AttentionProblem { batch, seq_q, seq_k, heads_q, heads_kv, head_dim } = *dims;
    check_heads(heads_q, heads_kv);
    assert_eq!(q.len(), dims.q_elements(), "attention reference: q length");
    assert_eq!(k.len(), dims.kv_elements(), "attention reference: k length");
    assert_eq!(v.len(), dims.kv_elements(), "attention reference: v length");
    check_tree_count(opts, batch);
    let seq = SequenceDims { seq_q, seq_k, heads_q, heads_kv, head_dim };
    let (q_len, kv_len) = (seq_q * heads_q * head_dim, seq_k * heads_kv * head_dim);
    let mut out = Vec::with_capacity(q.len());
    let mut lse = Vec::with_capacity(dims.lse_elements());
    for b in 0..batch {
        let (qb, kb, vb) = (&q[b * q_len..][..q_len], &k[b * kv_len..][..kv_len], &v[b * kv_len..][..kv_len]);
        let r = attention_sequence(qb, kb, vb, &seq, opts, tree_of(opts, b), scale);
        out.extend(r.out);
        lse.extend(r.lse);
    }
    ReferenceOutput { out, lse }
}

/// Varlen (packed, no padding): q `[total_q, heads_q, head_dim]` with sequence `b` at rows
/// `cu_q[b]..cu_q[b+1]`, k/v `[total_k, heads_kv, head_dim]` likewise with `cu_k`; out like q, lse
/// `[heads_q, total_q]` (FlashAttention's varlen layout). `cu_q` and `cu_k` hold `batch + 1`
/// non-decreasing offsets from 0 to the total row count; sequences may be empty. Each sequence is
/// [`attention_sequence`] with its own `seq_q`, `seq_k` and tree (see [`attention_variant`]).
///
/// # Panics
/// On the malformed inputs of [`attention_sequence`], `cu_q`/`cu_k` of different lengths, empty,
/// not starting at 0 or decreasing, slice lengths that do not match the last offsets, or an
/// `opts.tree` with neither 1 nor `batch` entries.
#[allow(clippy::too_many_arguments)]
pub fn attention_varlen(
    q: &[f32], k: &[f32], v: &[f32], cu_q: &[i32], cu_k: &[i32], heads_q: usize, heads_kv: usize, head_dim: usize,
    opts: &VariantOptions, scale: f64,
) -> ReferenceOutput {
    check_heads(heads_q, heads_kv);
    let total_q = check_cu_seqlens(cu_q, "cu_q");
    let total_k = check_cu_seqlens(cu_k, "cu_k");
    assert_eq!(cu_q.len(), cu_k.len(), "attention reference: cu_q and cu_k must both hold batch + 1 offsets");
    let batch = cu_q.len() - 1;
    let (row_q, row_kv) = (heads_q * head_dim, heads_kv * head_dim);
    assert_eq!(q.len(), total_q * row_q, "attention reference: q length (cu_q[batch] rows)");
    assert_eq!(k.len(), total_k * row_kv, "attention reference: k length (cu_k[batch] rows)");
    assert_eq!(v.len(), total_k * row_kv, "attention reference: v length (cu_k[batch] rows)");
    check_tree_count(opts, batch);
    let mut out = vec![0.0f64; q.len()];
    let mut lse = vec![f64::NEG_INFINITY; heads_q * total_q];
    for b in 0..batch {
        let (q0, q1) = (cu_q[b] as usize, cu_q[b + 1] as usize);
        let (k0, k1) = (cu_k[b] as usize, cu_k[b + 1] as usize);
        let seq = SequenceDims { seq_q: q1 - q0, seq_k: k1 - k0, heads_q, heads_kv, head_dim };
        let (qb, kb, vb) = (&q[q0 * row_q..q1 * row_q], &k[k0 * row_kv..k1 * row_kv], &v[k0 * row_kv..k1 * row_kv]);
        let r = attention_sequence(qb, kb, vb, &seq, opts, tree_of(opts, b), scale);
        out[q0 * row_q..q1 * row_q].copy_from_slice(&r.out);
        for h in 0..heads_q {
            lse[h * total_q + q0..][..seq.seq_q].copy_from_slice(&r.lse[h * seq.seq_q..][..seq.seq_q]);
        }
    }
    ReferenceOutput { out, lse }
}

/// Paged KV cache: k_cache/v_cache `[num_pages, page_size, heads_kv, head_dim]`; sequence `b` has
/// `seq_lens[b]` keys and its key `j` lives in page `block_table[b * max_pages + j / page_size]` at
/// row `j % page_size` (block-table entries past the last used page are not read). q
/// `[batch, seq_q, heads_q, head_dim]` with `batch = seq_lens.len()`; out like q, lse
/// `[batch, heads_q, seq_q]`. Each sequence is [`attention_sequence`] on its gathered keys, with its
/// tree (see [`attention_variant`]).
///
/// # Panics
/// On the malformed inputs of [`attention_sequence`], `page_size` 0, caches that are not whole pages
/// or differ in length, a `block_table` that is not `[batch, max_pages]`, a `seq_lens[b]` outside
/// `0..=max_pages * page_size`, a used page index outside the cache, or an `opts.tree` with neither 1
/// nor `batch` entries.
#[allow(clippy::too_many_arguments)]
pub fn attention_paged(
    q: &[f32], k_cache: &[f32], v_cache: &[f32], page_size: usize, block_table: &[i32], max_pages: usize,
    seq_lens: &[i32], seq_q: usize, heads_q: usize, heads_kv: usize, head_dim: usize, opts: &VariantOptions, scale: f64,
) -> ReferenceOutput {
    check_heads(heads_q, heads_kv);
    assert!(page_size > 0, "attention reference: page_size must be positive");
    let row_kv = heads_kv * head_dim;
    let page_elems = page_size * row_kv;
    assert_eq!(k_cache.len(), v_cache.len(), "attention reference: k_cache and v_cache lengths differ");
    assert!(
        page_elems == 0 || k_cache.len() % page_elems == 0,
        "attention reference: k_cache length {} is not a whole number of pages of {page_elems} elements",
        k_cache.len()
    );
    // Empty rows (head_dim 0) make every page empty: any page index reads nothing.
    let num_pages = k_cache.len().checked_div(page_elems).unwrap_or(usize::MAX);
    let batch = seq_lens.len();
    assert_eq!(block_table.len(), batch * max_pages, "attention reference: block_table must be [batch, max_pages]");
    let q_len = seq_q * heads_q * head_dim;
    assert_eq!(q.len(), batch * q_len, "attention reference: q length");
    check_tree_count(opts, batch);
    let mut out = Vec::with_capacity(q.len());
    let mut lse = Vec::with_capacity(batch * heads_q * seq_q);
    let (mut k_seq, mut v_seq) = (Vec::new(), Vec::new());
    for (b, &len) in seq_lens.iter().enumerate() {
        assert!(
            len >= 0 && len as usize <= max_pages * page_size,
            "attention reference: seq_lens[{b}] = {len} is outside 0..={} (max_pages * page_size)",
            max_pages * page_size
        );
        let len = len as usize;
        k_seq.clear();
        v_seq.clear();
        for j in 0..len {
            let page = block_table[b * max_pages + j / page_size];
            assert!(
                page >= 0 && (page as usize) < num_pages,
                "attention reference: block_table[{b}][{}] = {page} is not a page of the cache (0..{num_pages})",
                j / page_size
            );
            let at = (page as usize * page_size + j % page_size) * row_kv;
            k_seq.extend_from_slice(&k_cache[at..][..row_kv]);
            v_seq.extend_from_slice(&v_cache[at..][..row_kv]);
        }
        let seq = SequenceDims { seq_q, seq_k: len, heads_q, heads_kv, head_dim };
        let r = attention_sequence(&q[b * q_len..][..q_len], &k_seq, &v_seq, &seq, opts, tree_of(opts, b), scale);
        out.extend(r.out);
        lse.extend(r.lse);
    }
    ReferenceOutput { out, lse }
}

/// Row `r`, head `h` of a contiguous `[rows, heads, d]` tensor.
pub(super) fn head_row(x: &[f32], r: usize, heads: usize, h: usize, d: usize) -> &[f32] {
    &x[(r * heads + h) * d..][..d]
}

pub(super) fn check_heads(heads_q: usize, heads_kv: usize) {
    assert!(
        heads_kv > 0 && heads_q % heads_kv == 0,
        "attention reference: heads_kv ({heads_kv}) must divide heads_q ({heads_q})"
    );
}

/// Each parent is -1 (a root) or an earlier node, which makes `parents` a forest whose walks to the
/// root terminate.
fn check_tree(parents: &[i32]) {
    for (t, &p) in parents.iter().enumerate() {
        assert!(
            p >= -1 && (p as i64) < t as i64,
            "attention reference: tree parents[{t}] = {p} is neither -1 nor an earlier node, so parents is not a tree"
        );
    }
}

fn check_tree_count(opts: &VariantOptions, batch: usize) {
    if let Some(trees) = opts.tree {
        assert!(
            trees.len() == 1 || trees.len() == batch,
            "attention reference: tree holds {} parent arrays; expected 1 (shared) or one per sequence ({batch})",
            trees.len()
        );
    }
}

/// Sequence `b`'s tree; [`check_tree_count`] has run.
fn tree_of<'a>(opts: &VariantOptions<'a>, b: usize) -> Option<&'a [i32]> {
    match opts.tree {
        None => None,
        Some([shared]) => Some(shared),
        Some(trees) => Some(&trees[b]),
    }
}

/// Checks `cu` (`batch + 1` non-decreasing offsets from 0) and returns the total row count.
pub(super) fn check_cu_seqlens(cu: &[i32], name: &str) -> usize {
    assert!(!cu.is_empty(), "attention reference: {name} needs batch + 1 offsets, got none");
    assert_eq!(cu[0], 0, "attention reference: {name}[0] must be 0");
    for (b, w) in cu.windows(2).enumerate() {
        assert!(
            w[0] <= w[1],
            "attention reference: {name} is not monotone: {name}[{b}] = {} > {name}[{}] = {}",
            w[0],
            b + 1,
            w[1]
        );
    }
    cu[cu.len() - 1] as usize
}

/// Whether tree node `u` is `t` or an ancestor of `t`. Parents come before their children, so the
/// walk up from `t` can stop once it passes below `u`.
fn is_self_or_ancestor(parents: &[i32], t: usize, u: usize) -> bool {
    let mut node = t as i64;
    while node >= u as i64 {
        if node == u as i64 {
            return true;
        }
        node = parents[node as usize] as i64;
    }
    false
}

/// The own-key rules of [`VariantOptions`] for query `i` and own key `j` of one sequence.
pub(super) fn own_key_visible(
    opts: &VariantOptions, parents: Option<&[i32]>, seq_q: usize, seq_k: usize, i: usize, j: usize,
) -> bool {
    let qpos = i as i64 + seq_k as i64 - seq_q as i64;
    let kpos = j as i64;
    let side = |w: usize| i64::try_from(w).unwrap_or(i64::MAX);
    if opts.causal && kpos > qpos {
        return false;
    }
    if let Some(left) = opts.window_left {
        if kpos < qpos.saturating_sub(side(left)) {
            return false;
        }
    }
    if let Some(right) = opts.window_right {
        if kpos > qpos.saturating_add(side(right)) {
            return false;
        }
    }
    if let Some(parents) = parents {
        let n = parents.len() as i64;
        let t = i as i64 - (seq_q as i64 - n);
        let u = j as i64 - (seq_k as i64 - n);
        if t >= 0 && u >= 0 && !is_self_or_ancestor(parents, t as usize, u as usize) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Deliberately naive: materialise the whole `[batch, heads_q, seq_q, seq_k]` score matrix,
    /// mask with -inf, softmax each row without max subtraction tricks beyond the textbook one,
    /// then multiply by V. Shares nothing with `attention` but the index convention.
    #[allow(clippy::needless_range_loop)]
    fn naive(q: &[f32], k: &[f32], v: &[f32], d: &AttentionProblem, causal: bool, scale: f64) -> (Vec<f64>, Vec<f64>) {
        let (bsz, sq, sk, hq, hkv, hd) = (d.batch, d.seq_q, d.seq_k, d.heads_q, d.heads_kv, d.head_dim);
        let q4 = |b: usize, i: usize, h: usize, x: usize| q[((b * sq + i) * hq + h) * hd + x] as f64;
        let k4 = |b: usize, j: usize, h: usize, x: usize| k[((b * sk + j) * hkv + h) * hd + x] as f64;
        let v4 = |b: usize, j: usize, h: usize, x: usize| v[((b * sk + j) * hkv + h) * hd + x] as f64;
        let mut s = vec![vec![vec![vec![0.0f64; sk]; sq]; hq]; bsz];
        for b in 0..bsz {
            for h in 0..hq {
                let hk = h * hkv / hq;
                for i in 0..sq {
                    for j in 0..sk {
                        let masked = causal && (j as f64) > i as f64 + sk as f64 - sq as f64;
                        s[b][h][i][j] = if masked {
                            f64::NEG_INFINITY
                        } else {
                            scale * (0..hd).map(|x| q4(b, i, h, x) * k4(b, j, hk, x)).sum::<f64>()
                        };
                    }
                }
            }
        }
        let mut out = vec![0.0; bsz * sq * hq * hd];
        let mut lse = vec![0.0; bsz * hq * sq];
        for b in 0..bsz {
            for h in 0..hq {
                let hk = h * hkv / hq;
                for i in 0..sq {
                    let row = &s[b][h][i];
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let l_idx = (b * hq + h) * sq + i;
                    if m == f64::NEG_INFINITY {
                        lse[l_idx] = f64::NEG_INFINITY;
                        continue;
                    }
                    let e: Vec<f64> = row.iter().map(|&x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    lse[l_idx] = m + z.ln();
                    for x in 0..hd {
                        out[((b * sq + i) * hq + h) * hd + x] =
                            (0..sk).map(|j| e[j] / z * v4(b, j, hk, x)).sum::<f64>();
                    }
                }
            }
        }
        (out, lse)
    }

    fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    fn assert_close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            if x.is_infinite() || y.is_infinite() {
                assert_eq!(x, y, "{what}[{i}]");
            } else {
                assert!((x - y).abs() <= 1e-10 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
            }
            assert!(!x.is_nan(), "{what}[{i}] is NaN");
        }
    }

    #[test]
    fn hand_computed_two_keys() {
        // One query, two keys, head_dim 1: scores = scale * q * k = [0, ln 3] with scale 1.
        // softmax = [1/4, 3/4]; out = 1/4 * 2 + 3/4 * 6 = 5; lse = ln(1 + 3) = ln 4.
        let dims = AttentionProblem { batch: 1, seq_q: 1, seq_k: 2, heads_q: 1, heads_kv: 1, head_dim: 1 };
        let ln3 = 3f32.ln();
        let r = attention(&[1.0], &[0.0, ln3], &[2.0, 6.0], &dims, false, 1.0);
        assert!((r.out[0] - 5.0).abs() < 1e-6, "{:?}", r.out);
        assert!((r.lse[0] - 4f64.ln()).abs() < 1e-6, "{:?}", r.lse);

        // Causal, seq_q = seq_k = 2: query 0 sees key 0 only, query 1 sees both.
        // head_dim 2, scale 0.5: q0 = [2, 0], q1 = [0, 2]; k0 = [1, 0], k1 = [0, 1].
        // Query 0: score 1 on key 0 -> out = v0, lse = 1.
        // Query 1: scores [0, 1] -> p = [1, e] / (1 + e); lse = ln(1 + e).
        let dims = AttentionProblem { batch: 1, seq_q: 2, seq_k: 2, heads_q: 1, heads_kv: 1, head_dim: 2 };
        let q = [2.0, 0.0, 0.0, 2.0];
        let k = [1.0, 0.0, 0.0, 1.0];
        let v = [1.0, 10.0, 3.0, -4.0];
        let r = attention(&q, &k, &v, &dims, true, 0.5);
        let e = std::f64::consts::E;
        let expect = [1.0, 10.0, (1.0 + 3.0 * e) / (1.0 + e), (10.0 - 4.0 * e) / (1.0 + e)];
        for (o, x) in r.out.iter().zip(expect) {
            assert!((o - x).abs() < 1e-12, "{:?} vs {expect:?}", r.out);
        }
        assert!((r.lse[0] - 1.0).abs() < 1e-12 && (r.lse[1] - (1.0 + e).ln()).abs() < 1e-12);
    }

    #[test]
    fn causal_rows_without_keys_are_zero_with_neg_inf_lse() {
        // seq_q 5 > seq_k 2: query i sees keys j <= i - 3, so queries 0..=2 see nothing.
        let dims = AttentionProblem { batch: 1, seq_q: 5, seq_k: 2, heads_q: 2, heads_kv: 1, head_dim: 3 };
        let mut rng = StdRng::seed_from_u64(7);
        let (q, k, v) =
            (random(dims.q_elements(), &mut rng), random(dims.kv_elements(), &mut rng), random(dims.kv_elements(), &mut rng));
        let r = attention(&q, &k, &v, &dims, true, 0.3);
        for h in 0..2 {
            for i in 0..5 {
                let row = &r.out[(i * 2 + h) * 3..][..3];
                let lse = r.lse[h * 5 + i];
                if i <= 2 {
                    assert!(row.iter().all(|&x| x == 0.0), "row {i}: {row:?}");
                    assert_eq!(lse, f64::NEG_INFINITY);
                } else {
                    assert!(lse.is_finite() && row.iter().all(|x| x.is_finite()));
                }
            }
        }
        // Query 3 sees exactly key 0: its output is v0 and its lse the single score.
        let hk = 0;
        for h in 0..2 {
            for x in 0..3 {
                assert!((r.out[(3 * 2 + h) * 3 + x] - v[hk * 3 + x] as f64).abs() < 1e-12);
            }
        }
        // seq_k = 0: nothing is visible anywhere, no NaN.
        let empty = AttentionProblem { seq_k: 0, ..dims };
        let r = attention(&q, &[], &[], &empty, false, 1.0);
        assert!(r.out.iter().all(|&x| x == 0.0) && r.lse.iter().all(|&x| x == f64::NEG_INFINITY));
    }

    #[test]
    fn gqa_reads_the_shared_kv_head() {
        // heads_q 4, heads_kv 2: heads 0, 1 read kv head 0 and heads 2, 3 read kv head 1. Identical
        // queries on heads 0 and 1 must give identical rows, and different rows from head 2.
        let dims = AttentionProblem { batch: 1, seq_q: 3, seq_k: 4, heads_q: 4, heads_kv: 2, head_dim: 2 };
        let mut rng = StdRng::seed_from_u64(3);
        let row = random(2, &mut rng);
        let q: Vec<f32> = (0..3 * 4).flat_map(|_| row.clone()).collect();
        let (k, v) = (random(dims.kv_elements(), &mut rng), random(dims.kv_elements(), &mut rng));
        let r = attention(&q, &k, &v, &dims, false, 1.0);
        for i in 0..3 {
            let at = |h: usize| &r.out[(i * 4 + h) * 2..][..2];
            assert_eq!(at(0), at(1));
            assert_eq!(at(2), at(3));
            assert_ne!(at(0), at(2));
        }
    }

    #[test]
    #[should_panic(expected = "must divide")]
    fn indivisible_heads_panic() {
        let dims = AttentionProblem { batch: 1, seq_q: 1, seq_k: 1, heads_q: 3, heads_kv: 2, head_dim: 1 };
        attention(&[0.0; 3], &[0.0; 2], &[0.0; 2], &dims, false, 1.0);
    }

    fn dims_strategy() -> impl Strategy<Value = (AttentionProblem, bool, u64)> {
        // (heads_q, heads_kv): MHA, GQA and MQA ratios.
        let heads = prop_oneof![Just((1, 1)), Just((2, 2)), Just((4, 2)), Just((6, 2)), Just((3, 1)), Just((4, 1))];
        (1usize..=2, 1usize..=40, 1usize..=40, heads, 1usize..=16, any::<bool>(), any::<u64>()).prop_map(
            |(batch, seq_q, seq_k, (heads_q, heads_kv), head_dim, causal, seed)| {
                (AttentionProblem { batch, seq_q, seq_k, heads_q, heads_kv, head_dim }, causal, seed)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive_softmax((dims, causal, seed) in dims_strategy(), scale in 0.05f64..2.0) {
            let mut rng = StdRng::seed_from_u64(seed);
            let q = random(dims.q_elements(), &mut rng);
            let k = random(dims.kv_elements(), &mut rng);
            let v = random(dims.kv_elements(), &mut rng);
            let r = attention(&q, &k, &v, &dims, causal, scale);
            let (out, lse) = naive(&q, &k, &v, &dims, causal, scale);
            assert_close(&r.out, &out, "out");
            assert_close(&r.lse, &lse, "lse");
            // Rows without a visible key exist exactly when causal and seq_q > seq_k.
            let empty = r.lse.iter().filter(|x| **x == f64::NEG_INFINITY).count();
            let rows_per_query = dims.batch * dims.heads_q;
            let expect_empty = if causal { dims.seq_q.saturating_sub(dims.seq_k) * rows_per_query } else { 0 };
            prop_assert_eq!(empty, expect_empty);
        }
    }

    // ---- Variants: window, softcap, ALiBi, prefix, tree; varlen and paged layouts. ----

    fn seq_dims(seq_q: usize, seq_k: usize, heads_q: usize, heads_kv: usize, head_dim: usize) -> SequenceDims {
        SequenceDims { seq_q, seq_k, heads_q, heads_kv, head_dim }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-10 * (1.0 + b.abs())
    }

    #[test]
    fn window_hand_computed() {
        // seq_q = seq_k = 3, head_dim 1, all keys 0: every visible score is 0, so each output is the
        // mean of the visible values and lse = ln(#visible).
        let dims = seq_dims(3, 3, 1, 1, 1);
        let (q, k, v) = ([1.0, 2.0, 3.0], [0.0; 3], [1.0, 10.0, 100.0]);
        // Causal, left = 1: query i sees keys i - 1 and i.
        let opts = VariantOptions { causal: true, window_left: Some(1), ..Default::default() };
        let r = attention_sequence(&q, &k, &v, &dims, &opts, None, 1.0);
        let (out, lse) = ([1.0, 5.5, 55.0], [1f64.ln(), 2f64.ln(), 2f64.ln()]);
        for i in 0..3 {
            assert!(close(r.out[i], out[i]) && close(r.lse[i], lse[i]), "{r:?}");
        }
        // Not causal, left = 0, right = 1: query i sees keys i and i + 1.
        let opts = VariantOptions { window_left: Some(0), window_right: Some(1), ..Default::default() };
        let r = attention_sequence(&q, &k, &v, &dims, &opts, None, 1.0);
        let (out, lse) = ([5.5, 55.0, 100.0], [2f64.ln(), 2f64.ln(), 1f64.ln()]);
        for i in 0..3 {
            assert!(close(r.out[i], out[i]) && close(r.lse[i], lse[i]), "{r:?}");
        }
        // seq_q 2 < seq_k 4 (diag 2), causal, left 0: query i sees only key i + 2.
        let opts = VariantOptions { causal: true, window_left: Some(0), ..Default::default() };
        let r = attention_sequence(&[1.0, 1.0], &[0.0; 4], &[1.0, 2.0, 3.0, 4.0], &seq_dims(2, 4, 1, 1, 1), &opts, None, 1.0);
        assert_eq!(r.out, vec![3.0, 4.0]);
        assert_eq!(r.lse, vec![0.0, 0.0]);
    }

    #[test]
    fn softcap_hand_computed() {
        // One key: score scale * q * k = 0.5 * 2 * 3 = 3, capped by c = 2 to 2 tanh(1.5).
        let dims = seq_dims(1, 1, 1, 1, 1);
        let opts = VariantOptions { softcap: Some(2.0), ..Default::default() };
        let r = attention_sequence(&[2.0], &[3.0], &[7.0], &dims, &opts, None, 0.5);
        assert!(close(r.out[0], 7.0));
        assert!(close(r.lse[0], 2.0 * 1.5f64.tanh()), "{r:?}");
        // Two keys: raw scores [1, 4], capped to a = 2 tanh(0.5), b = 2 tanh(2).
        let dims = seq_dims(1, 2, 1, 1, 1);
        let r = attention_sequence(&[1.0], &[1.0, 4.0], &[-1.0, 3.0], &dims, &opts, None, 1.0);
        let (a, b) = (2.0 * 0.5f64.tanh(), 2.0 * 2f64.tanh());
        let z = a.exp() + b.exp();
        assert!(close(r.out[0], (-a.exp() + 3.0 * b.exp()) / z), "{r:?}");
        assert!(close(r.lse[0], z.ln()), "{r:?}");
    }

    #[test]
    fn alibi_hand_computed() {
        // One query (qpos = 1) and two keys at distances 1 and 0; raw scores 0.5 * [1, 2] = [0.5, 1].
        // Head 0 (slope 0.25): [0.25, 1]; head 1 (slope 2): [-1.5, 1]. Both heads share kv head 0.
        let dims = seq_dims(1, 2, 2, 1, 1);
        let slopes = [0.25f32, 2.0];
        let opts = VariantOptions { alibi_slopes: Some(&slopes), ..Default::default() };
        let r = attention_sequence(&[1.0, 1.0], &[1.0, 2.0], &[4.0, -2.0], &dims, &opts, None, 0.5);
        for (h, (s0, s1)) in [(0.25f64, 1.0f64), (-1.5, 1.0)].into_iter().enumerate() {
            let z = s0.exp() + s1.exp();
            assert!(close(r.out[h], (4.0 * s0.exp() - 2.0 * s1.exp()) / z), "head {h}: {r:?}");
            assert!(close(r.lse[h], z.ln()), "head {h}: {r:?}");
        }
    }

    #[test]
    fn prefix_hand_computed() {
        // Causal, seq_q 3, seq_k 1 (diag -2): query 0 (qpos -2) and query 1 (qpos -1) see no own key,
        // query 2 (qpos 0) sees own key 0. The two prefix keys (positions -2, -1) are always visible.
        let dims = seq_dims(3, 1, 1, 1, 1);
        let (pk, pv) = ([0.0f32, 1.0], [2.0f32, 6.0]);
        let prefix = PrefixKv { k: &pk, v: &pv, len: 2 };
        let q = [3f32.ln(), 3f32.ln(), 3f32.ln()];
        let (k, v) = ([1.0f32], [10.0f32]);
        let opts = VariantOptions { causal: true, prefix: Some(prefix), ..Default::default() };
        let r = attention_sequence(&q, &k, &v, &dims, &opts, None, 1.0);
        // Queries 0, 1: scores [0, ln 3] over the prefix only: out = (2 + 3 * 6) / 4 = 5, lse = ln 4.
        for i in 0..2 {
            assert!((r.out[i] - 5.0).abs() < 1e-6 && (r.lse[i] - 4f64.ln()).abs() < 1e-6, "{r:?}");
        }
        // Query 2: scores [0, ln 3, ln 3]: out = (2 + 3 * 6 + 3 * 10) / 7, lse = ln 7.
        assert!((r.out[2] - 50.0 / 7.0).abs() < 1e-6 && (r.lse[2] - 7f64.ln()).abs() < 1e-6, "{r:?}");
        // Without the prefix, queries 0 and 1 see nothing.
        let plain = attention_sequence(&q, &k, &v, &dims, &VariantOptions { causal: true, ..Default::default() }, None, 1.0);
        assert_eq!(plain.lse[..2], [f64::NEG_INFINITY; 2]);
        assert_eq!(plain.out[..2], [0.0; 2]);

        // ALiBi reaches prefix keys through their positions: query 0 (qpos -2) is at distance 0 from
        // prefix key 0 (position -2) and 1 from prefix key 1; all raw scores 0 (q = 0), slope 1.
        let slopes = [1.0f32];
        let opts = VariantOptions { causal: true, prefix: Some(prefix), alibi_slopes: Some(&slopes), ..Default::default() };
        let r = attention_sequence(&[0.0; 3], &k, &v, &dims, &opts, None, 1.0);
        let e1 = (-1f64).exp();
        assert!(close(r.out[0], (2.0 + 6.0 * e1) / (1.0 + e1)) && close(r.lse[0], (1.0 + e1).ln()), "{r:?}");
        // Query 2 (qpos 0): prefix distances 2, 1 and own key 0 at distance 0.
        let (e2, z) = ((-2f64).exp(), (-2f64).exp() + e1 + 1.0);
        assert!(close(r.out[2], (2.0 * e2 + 6.0 * e1 + 10.0) / z) && close(r.lse[2], z.ln()), "{r:?}");
    }

    #[test]
    fn tree_hand_computed() {
        // Two context keys then the 4 tree nodes with parents [-1, 0, 0, 1]:
        //   0 ── 1 ── 3
        //    └── 2
        // seq_q 4 (the nodes), seq_k 6. All scores 0, so out = mean of the visible values.
        let parents = [-1, 0, 0, 1];
        let dims = seq_dims(4, 6, 1, 1, 1);
        let v = [1.0f32, 2.0, 4.0, 8.0, 16.0, 32.0];
        let opts = VariantOptions { causal: true, ..Default::default() };
        let r = attention_sequence(&[1.0; 4], &[0.0; 6], &v, &dims, &opts, Some(&parents), 1.0);
        // Node t sees the context (keys 0, 1) and the keys 2 + u of u on its path to the root.
        let seen: [&[usize]; 4] = [&[0, 1, 2], &[0, 1, 2, 3], &[0, 1, 2, 4], &[0, 1, 2, 3, 5]];
        for (t, keys) in seen.iter().enumerate() {
            let mean = keys.iter().map(|&j| v[j] as f64).sum::<f64>() / keys.len() as f64;
            assert!(close(r.out[t], mean), "node {t}: {} vs {mean}", r.out[t]);
            assert!(close(r.lse[t], (keys.len() as f64).ln()), "node {t}: {}", r.lse[t]);
        }
        // Node 3 does not see node 2 (key 4): a huge value there would show.
        let mut v2 = v;
        v2[4] = 1e6;
        let r2 = attention_sequence(&[1.0; 4], &[0.0; 6], &v2, &dims, &opts, Some(&parents), 1.0);
        assert_eq!(r2.out[3], r.out[3]);
        assert_ne!(r2.out[2], r.out[2]);
    }

    #[test]
    #[should_panic(expected = "not a tree")]
    fn parents_not_a_tree_panic() {
        let opts = VariantOptions { causal: true, ..Default::default() };
        attention_sequence(&[0.0; 2], &[0.0; 2], &[0.0; 2], &seq_dims(2, 2, 1, 1, 1), &opts, Some(&[-1, 1]), 1.0);
    }

    #[test]
    #[should_panic(expected = "not monotone")]
    fn decreasing_cu_seqlens_panic() {
        let opts = VariantOptions::default();
        attention_varlen(&[0.0; 2], &[0.0; 2], &[0.0; 2], &[0, 2, 1, 2], &[0, 1, 1, 2], 1, 1, 1, &opts, 1.0);
    }

    #[test]
    #[should_panic(expected = "is not a page of the cache")]
    fn page_out_of_range_panic() {
        // Two pages of 2 rows; sequence 0 needs pages 0 and 1 of its block table, which names page 2.
        let opts = VariantOptions::default();
        attention_paged(&[0.0], &[0.0; 4], &[0.0; 4], 2, &[1, 2], 2, &[3], 1, 1, 1, 1, &opts, 1.0);
    }

    #[test]
    #[should_panic(expected = "expected 1 (shared) or one per sequence")]
    fn tree_count_mismatch_panic() {
        let dims = AttentionProblem { batch: 3, seq_q: 1, seq_k: 1, heads_q: 1, heads_kv: 1, head_dim: 1 };
        let trees = vec![vec![-1], vec![-1]];
        let opts = VariantOptions { causal: true, tree: Some(&trees), ..Default::default() };
        attention_variant(&[0.0; 3], &[0.0; 3], &[0.0; 3], &dims, &opts, 1.0);
    }

    /// Independent of the implementation: concatenates `[prefix; own]` K/V, builds the whole
    /// `[heads_q, seq_q, prefix_len + seq_k]` score matrix with -inf for hidden entries (mask from
    /// an ancestor-closure matrix for the tree), applies soft-cap and ALiBi, softmaxes each row.
    #[allow(clippy::needless_range_loop)]
    fn naive_masked(
        q: &[f32], k: &[f32], v: &[f32], d: &SequenceDims, o: &VariantOptions, parents: Option<&[i32]>, scale: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let SequenceDims { seq_q: sq, seq_k: sk, heads_q: hq, heads_kv: hkv, head_dim: hd } = *d;
        let (pk, pv, np): (&[f32], &[f32], usize) = match o.prefix {
            Some(p) => (p.k, p.v, p.len),
            None => (&[], &[], 0),
        };
        let kc: Vec<f32> = pk.iter().chain(k).copied().collect();
        let vc: Vec<f32> = pv.iter().chain(v).copied().collect();
        let nc = np + sk;
        // anc[t][u]: u is t or an ancestor of t.
        let nt = parents.map_or(0, |p| p.len());
        let mut anc = vec![vec![false; nt]; nt];
        if let Some(p) = parents {
            for t in 0..nt {
                if p[t] >= 0 {
                    anc[t] = anc[p[t] as usize].clone();
                }
                anc[t][t] = true;
            }
        }
        // Column c of the concatenation sits at position c - np (prefix keys negative).
        let visible = |i: usize, c: usize| -> bool {
            if c < np {
                return true;
            }
            let j = c - np;
            let (qp, kp) = (i as i64 + sk as i64 - sq as i64, j as i64);
            let causal_ok = !o.causal || kp <= qp;
            let left_ok = !matches!(o.window_left, Some(l) if kp + (l as i64) < qp);
            let right_ok = !matches!(o.window_right, Some(r) if kp > qp + r as i64);
            let in_tree = i + nt >= sq && j + nt >= sk;
            let tree_ok = !in_tree || anc[i + nt - sq][j + nt - sk];
            causal_ok && left_ok && right_ok && tree_ok
        };
        let mut out = vec![0.0; sq * hq * hd];
        let mut lse = vec![0.0; hq * sq];
        for h in 0..hq {
            let hk = h * hkv / hq;
            for i in 0..sq {
                let qp = i as f64 + sk as f64 - sq as f64;
                let mut row = vec![f64::NEG_INFINITY; nc];
                for c in 0..nc {
                    if !visible(i, c) {
                        continue;
                    }
                    let mut s = 0.0;
                    for x in 0..hd {
                        s += q[(i * hq + h) * hd + x] as f64 * kc[(c * hkv + hk) * hd + x] as f64;
                    }
                    s *= scale;
                    if let Some(cap) = o.softcap {
                        s = (s / cap).tanh() * cap;
                    }
                    if let Some(sl) = o.alibi_slopes {
                        s -= sl[h] as f64 * (qp - (c as f64 - np as f64)).abs();
                    }
                    row[c] = s;
                }
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    lse[h * sq + i] = f64::NEG_INFINITY;
                    continue;
                }
                let e: Vec<f64> = row.iter().map(|&x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                lse[h * sq + i] = m + z.ln();
                for x in 0..hd {
                    out[(i * hq + h) * hd + x] = (0..nc).map(|c| e[c] / z * vc[(c * hkv + hk) * hd + x] as f64).sum();
                }
            }
        }
        (out, lse)
    }

    /// Owned pieces of a random [`VariantOptions`].
    struct Variant {
        causal: bool,
        left: Option<usize>,
        right: Option<usize>,
        softcap: Option<f64>,
        slopes: Option<Vec<f32>>,
        prefix: Option<(Vec<f32>, Vec<f32>, usize)>,
        trees: Option<Vec<Vec<i32>>>,
    }

    impl Variant {
        fn opts(&self) -> VariantOptions<'_> {
            VariantOptions {
                causal: self.causal,
                window_left: self.left,
                window_right: self.right,
                softcap: self.softcap,
                alibi_slopes: self.slopes.as_deref(),
                prefix: self.prefix.as_ref().map(|(k, v, len)| PrefixKv { k, v, len: *len }),
                tree: self.trees.as_deref(),
            }
        }
    }

    fn random_parents(n: usize, rng: &mut StdRng) -> Vec<i32> {
        (0..n).map(|t| rng.random_range(-1..t as i32)).collect()
    }

    /// Heads and head_dim: MHA, GQA and MQA with heads ratios 1, 2 and 4.
    fn heads_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
        let heads = prop_oneof![Just((1, 1)), Just((2, 2)), Just((2, 1)), Just((4, 2)), Just((4, 1))];
        (heads, 1usize..=6).prop_map(|((hq, hkv), hd)| (hq, hkv, hd))
    }

    /// Random options; `max_nodes[b]` bounds sequence b's tree (a shared tree fits them all).
    fn random_variant(
        rng: &mut StdRng, heads: (usize, usize, usize), max_window: usize, max_nodes: &[usize], everything: bool,
    ) -> Variant {
        let (hq, hkv, hd) = heads;
        let window = |rng: &mut StdRng| {
            if everything && rng.random_bool(0.5) {
                Some(rng.random_range(0..=max_window))
            } else {
                None
            }
        };
        let (left, right) = (window(rng), window(rng));
        let trees = if everything && rng.random_bool(0.5) {
            if rng.random_bool(0.3) {
                let n = rng.random_range(0..=max_nodes.iter().copied().min().unwrap_or(0));
                Some(vec![random_parents(n, rng)])
            } else {
                Some(max_nodes.iter().map(|&m| { let n = rng.random_range(0..=m); random_parents(n, rng) }).collect())
            }
        } else {
            None
        };
        let causal = trees.is_some() || rng.random_bool(0.5);
        let softcap = (everything && rng.random_bool(0.5)).then(|| rng.random_range(0.3..5.0));
        let slopes = (everything && rng.random_bool(0.5)).then(|| (0..hq).map(|_| rng.random_range(0.0f32..1.0)).collect());
        let prefix = rng.random_bool(0.7).then(|| {
            let len = rng.random_range(0..=5);
            (random(len * hkv * hd, rng), random(len * hkv * hd, rng), len)
        });
        Variant { causal, left, right, softcap, slopes, prefix, trees }
    }

    fn tree_at(trees: &Option<Vec<Vec<i32>>>, b: usize) -> Option<&[i32]> {
        trees.as_ref().map(|t| if t.len() == 1 { t[0].as_slice() } else { t[b].as_slice() })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// (a) Prefix keys = naive attention over the concatenation [prefix; own].
        #[test]
        fn prefix_matches_naive_concatenation(
            heads in heads_strategy(), seq_q in 0usize..=10, seq_k in 0usize..=10, seed in any::<u64>(),
            scale in 0.05f64..1.5,
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let dims = seq_dims(seq_q, seq_k, heads.0, heads.1, heads.2);
            let var = random_variant(&mut rng, heads, 0, &[0], false);
            let q = random(seq_q * heads.0 * heads.2, &mut rng);
            let k = random(seq_k * heads.1 * heads.2, &mut rng);
            let v = random(seq_k * heads.1 * heads.2, &mut rng);
            let r = attention_sequence(&q, &k, &v, &dims, &var.opts(), None, scale);
            let (out, lse) = naive_masked(&q, &k, &v, &dims, &var.opts(), None, scale);
            assert_close(&r.out, &out, "out");
            assert_close(&r.lse, &lse, "lse");
            // A non-empty prefix leaves no query without keys.
            if var.prefix.as_ref().is_some_and(|p| p.2 > 0) {
                prop_assert!(r.lse.iter().all(|x| x.is_finite()));
            }
        }

        /// (b) Every option at once (dense batch, per-sequence or shared trees) = naive masked softmax.
        #[test]
        fn variant_matches_naive(
            heads in heads_strategy(), batch in 1usize..=2, seq_q in 0usize..=10, seq_k in 0usize..=10,
            seed in any::<u64>(), scale in 0.05f64..1.5,
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let (hq, hkv, hd) = heads;
            let dims = AttentionProblem { batch, seq_q, seq_k, heads_q: hq, heads_kv: hkv, head_dim: hd };
            let nodes = vec![seq_q.min(seq_k); batch];
            let var = random_variant(&mut rng, heads, seq_q.max(seq_k), &nodes, true);
            let opts = var.opts();
            let q = random(dims.q_elements(), &mut rng);
            let k = random(dims.kv_elements(), &mut rng);
            let v = random(dims.kv_elements(), &mut rng);
            let r = attention_variant(&q, &k, &v, &dims, &opts, scale);
            let seq = seq_dims(seq_q, seq_k, hq, hkv, hd);
            let (ql, kl, ll) = (seq_q * hq * hd, seq_k * hkv * hd, hq * seq_q);
            for b in 0..batch {
                let (out, lse) = naive_masked(
                    &q[b * ql..][..ql], &k[b * kl..][..kl], &v[b * kl..][..kl], &seq, &opts, tree_at(&var.trees, b), scale,
                );
                assert_close(&r.out[b * ql..][..ql], &out, "out");
                assert_close(&r.lse[b * ll..][..ll], &lse, "lse");
            }
        }

        /// (c) Varlen = `attention_sequence` per sequence, sequences of length 0 and 1 included.
        #[test]
        fn varlen_matches_per_sequence(heads in heads_strategy(), batch in 1usize..=4, seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let (hq, hkv, hd) = heads;
            let len = |rng: &mut StdRng| match rng.random_range(0..4) {
                0 => 0,
                1 => 1,
                _ => rng.random_range(0..=9usize),
            };
            let lens: Vec<(usize, usize)> = (0..batch).map(|_| (len(&mut rng), len(&mut rng))).collect();
            let cu = |f: fn(&(usize, usize)) -> usize| -> Vec<i32> {
                std::iter::once(0).chain(lens.iter().scan(0, |acc, l| { *acc += f(l) as i32; Some(*acc) })).collect()
            };
            let (cu_q, cu_k) = (cu(|l| l.0), cu(|l| l.1));
            let (total_q, total_k) = (cu_q[batch] as usize, cu_k[batch] as usize);
            let nodes: Vec<usize> = lens.iter().map(|&(a, b)| a.min(b)).collect();
            let var = random_variant(&mut rng, heads, 9, &nodes, true);
            let opts = var.opts();
            let q = random(total_q * hq * hd, &mut rng);
            let k = random(total_k * hkv * hd, &mut rng);
            let v = random(total_k * hkv * hd, &mut rng);
            let r = attention_varlen(&q, &k, &v, &cu_q, &cu_k, hq, hkv, hd, &opts, 0.4);
            prop_assert_eq!(r.out.len(), q.len());
            prop_assert_eq!(r.lse.len(), hq * total_q);
            for (b, &(sq, sk)) in lens.iter().enumerate() {
                let (q0, k0) = (cu_q[b] as usize, cu_k[b] as usize);
                let (rq, rk) = (hq * hd, hkv * hd);
                let s = attention_sequence(
                    &q[q0 * rq..][..sq * rq], &k[k0 * rk..][..sk * rk], &v[k0 * rk..][..sk * rk],
                    &seq_dims(sq, sk, hq, hkv, hd), &opts, tree_at(&var.trees, b), 0.4,
                );
                assert_close(&r.out[q0 * rq..][..sq * rq], &s.out, "out");
                for h in 0..hq {
                    assert_close(&r.lse[h * total_q + q0..][..sq], &s.lse[h * sq..][..sq], "lse");
                }
            }
        }

        /// (d) Paged cache with pages in random order = dense `attention_variant` on the gathered K/V.
        #[test]
        fn paged_matches_dense(
            heads in heads_strategy(), batch in 1usize..=3, page_size in prop_oneof![Just(1usize), Just(2), Just(3), Just(4), Just(16)],
            seq_q in 1usize..=4, same_lens in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let (hq, hkv, hd) = heads;
            let row = hkv * hd;
            let common = rng.random_range(0..=12usize);
            let seq_lens: Vec<usize> =
                (0..batch).map(|_| if same_lens { common } else { rng.random_range(0..=12) }).collect();
            let max_pages = seq_lens.iter().map(|l| l.div_ceil(page_size)).max().unwrap_or(0) + rng.random_range(0..=1);
            // Dense per-sequence K/V, then scattered to pages in a random order (plus unused pages).
            let dense_k: Vec<Vec<f32>> = seq_lens.iter().map(|&l| random(l * row, &mut rng)).collect();
            let dense_v: Vec<Vec<f32>> = seq_lens.iter().map(|&l| random(l * row, &mut rng)).collect();
            let used: usize = seq_lens.iter().map(|l| l.div_ceil(page_size)).sum();
            let num_pages = used + rng.random_range(0..=2);
            let mut order: Vec<usize> = (0..num_pages).collect();
            for x in (1..order.len()).rev() {
                order.swap(x, rng.random_range(0..=x));
            }
            let mut k_cache = random(num_pages * page_size * row, &mut rng);
            let mut v_cache = random(num_pages * page_size * row, &mut rng);
            let mut block_table = vec![-1i32; batch * max_pages];
            let mut next = order.iter();
            for (b, &l) in seq_lens.iter().enumerate() {
                for p in 0..l.div_ceil(page_size) {
                    let page = *next.next().unwrap();
                    block_table[b * max_pages + p] = page as i32;
                    for j in p * page_size..l.min((p + 1) * page_size) {
                        let at = (page * page_size + j % page_size) * row;
                        k_cache[at..][..row].copy_from_slice(&dense_k[b][j * row..][..row]);
                        v_cache[at..][..row].copy_from_slice(&dense_v[b][j * row..][..row]);
                    }
                }
            }
            let nodes: Vec<usize> = seq_lens.iter().map(|&l| l.min(seq_q)).collect();
            let var = random_variant(&mut rng, heads, 12, &nodes, true);
            let opts = var.opts();
            let q = random(batch * seq_q * hq * hd, &mut rng);
            let lens_i32: Vec<i32> = seq_lens.iter().map(|&l| l as i32).collect();
            let r = attention_paged(
                &q, &k_cache, &v_cache, page_size, &block_table, max_pages, &lens_i32, seq_q, hq, hkv, hd, &opts, 0.3,
            );
            let (ql, ll) = (seq_q * hq * hd, hq * seq_q);
            for (b, &l) in seq_lens.iter().enumerate() {
                let dims = AttentionProblem { batch: 1, seq_q, seq_k: l, heads_q: hq, heads_kv: hkv, head_dim: hd };
                let tree: Option<Vec<Vec<i32>>> = tree_at(&var.trees, b).map(|t| vec![t.to_vec()]);
                let one = VariantOptions { tree: tree.as_deref(), ..opts };
                let d = attention_variant(&q[b * ql..][..ql], &dense_k[b], &dense_v[b], &dims, &one, 0.3);
                assert_close(&r.out[b * ql..][..ql], &d.out, "out");
                assert_close(&r.lse[b * ll..][..ll], &d.lse, "lse");
            }
            if same_lens {
                let dims = AttentionProblem { batch, seq_q, seq_k: common, heads_q: hq, heads_kv: hkv, head_dim: hd };
                let d = attention_variant(&q, &dense_k.concat(), &dense_v.concat(), &dims, &opts, 0.3);
                assert_close(&r.out, &d.out, "out");
                assert_close(&r.lse, &d.lse, "lse");
            }
        }

        /// (e) Windows that cut nothing (or only what causal cuts) = plain `attention`.
        #[test]
        fn open_window_is_plain_attention((dims, causal, seed) in dims_strategy(), scale in 0.05f64..2.0) {
            let mut rng = StdRng::seed_from_u64(seed);
            let q = random(dims.q_elements(), &mut rng);
            let k = random(dims.kv_elements(), &mut rng);
            let v = random(dims.kv_elements(), &mut rng);
            let plain = attention(&q, &k, &v, &dims, causal, scale);
            let (out, lse) = naive(&q, &k, &v, &dims, causal, scale);
            assert_close(&plain.out, &out, "out");
            assert_close(&plain.lse, &lse, "lse");
            let wide = dims.seq_q + dims.seq_k;
            let windows = [(None, None), (Some(wide), None), (None, Some(wide)), (Some(wide), Some(wide))];
            for (window_left, window_right) in windows {
                let opts = VariantOptions { causal, window_left, window_right, ..Default::default() };
                let r = attention_variant(&q, &k, &v, &dims, &opts, scale);
                assert_close(&r.out, &plain.out, "out");
                assert_close(&r.lse, &plain.lse, "lse");
            }
            // Right window 0 without causal is the causal mask.
            if causal {
                let opts = VariantOptions { window_right: Some(0), ..Default::default() };
                let r = attention_variant(&q, &k, &v, &dims, &opts, scale);
                assert_close(&r.out, &plain.out, "out");
                assert_close(&r.lse, &plain.lse, "lse");
            }
        }
    }
}
