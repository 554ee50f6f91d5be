//! Attention backward in f64: the gradients of `L = Σ dO ∘ O` with respect to Q, K, V (and the
//! prefix keys/values), for the trainable variants of [`VariantOptions`] (causal, GQA, sliding
//! window, soft-capping, ALiBi, prefix-KV) over dense and packed variable-length batches.
//!
//! Per query row `i` and head `h`, with the visible keys `j` and the forward's rules
//! ([`attention_sequence`](super::reference::attention_sequence)):
//! - `t_ij = scale · q_i·k_j`, `s_ij = c·tanh(t_ij / c)` with soft-cap `c` (else `s = t`), minus the
//!   ALiBi bias (a constant: no gradient);
//! - `P = softmax(s)`, `O = P·V`;
//! - `dV_j += P_ij dO_i`, `dP_ij = dO_i·v_j`, `D_i = Σ_j P_ij dP_ij` (`= dO_i·O_i`),
//!   `dS_ij = P_ij (dP_ij − D_i)`;
//! - `dT_ij = dS_ij · (1 − tanh²(t_ij / c))` with soft-capping (else `dS_ij`);
//! - `dQ_i += scale · dT_ij k_j`, `dK_j += scale · dT_ij q_i`.
//!
//! A key/value head's gradient sums over every query head of its group (GQA, MQA); the prefix's
//! sums over the batch as well, since every sequence shares it. A query that sees no key has a zero
//! output whatever its inputs, so it contributes nothing: its dQ row is zero, never NaN.
//!
//! The tests prove these gradients against central finite differences of the forward reference.

use super::reference::{check_cu_seqlens, check_heads, head_row, own_key_visible, PrefixKv, SequenceDims, VariantOptions};

/// Reference gradients, laid out like their inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceGradients {
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
    /// Gradients of the prefix keys and values, `[prefix_len, heads_kv, head_dim]` each (empty
    /// without a prefix), summed over every sequence of the batch.
    pub dprefix_k: Vec<f64>,
    pub dprefix_v: Vec<f64>,
}

impl ReferenceGradients {
    fn zeros(q: usize, kv: usize, prefix: usize) -> Self {
        ReferenceGradients {
            dq: vec![0.0; q],
            dk: vec![0.0; kv],
            dv: vec![0.0; kv],
            dprefix_k: vec![0.0; prefix],
            dprefix_v: vec![0.0; prefix],
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn add_scaled(dst: &mut [f64], by: f64, src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += by * s as f64;
    }
}

/// Backward of one sequence: q and `d_out` `[seq_q, heads_q, head_dim]`, its own k/v `[seq_k,
/// heads_kv, head_dim]`; adds into `grads` (its dq/dk/dv laid out like q/k/v of this sequence, its
/// prefix gradients like the prefix). Trees are inference-only and not taken.
///
/// # Panics
/// On malformed inputs (harness bugs), as [`attention_sequence`](super::reference::attention_sequence),
/// and when `opts.tree` is set.
#[allow(clippy::too_many_arguments)]
pub fn attention_sequence_backward(
    q: &[f32], k: &[f32], v: &[f32], d_out: &[f32], dims: &SequenceDims, opts: &VariantOptions, scale: f64,
    grads: &mut ReferenceGradients,
) {
    let SequenceDims { seq_q, seq_k, heads_q, heads_kv, head_dim } = *dims;
    check_heads(heads_q, heads_kv);
    assert!(opts.tree.is_none(), "attention backward reference: tree masks are inference-only");
    assert_eq!(q.len(), seq_q * heads_q * head_dim, "attention backward reference: q length");
    assert_eq!(d_out.len(), q.len(), "attention backward reference: d_out length");
    assert_eq!(k.len(), seq_k * heads_kv * head_dim, "attention backward reference: k length");
    assert_eq!(v.len(), k.len(), "attention backward reference: v length");
    assert_eq!((grads.dq.len(), grads.dk.len(), grads.dv.len()), (q.len(), k.len(), v.len()), "gradient lengths");
    let PrefixKv { k: prefix_k, v: prefix_v, len: prefix_len } = opts.prefix.unwrap_or(PrefixKv { k: &[], v: &[], len: 0 });
    assert_eq!(prefix_k.len(), prefix_len * heads_kv * head_dim, "attention backward reference: prefix k length");
    assert_eq!(prefix_v.len(), prefix_k.len(), "attention backward reference: prefix v length");
    assert_eq!(grads.dprefix_k.len(), prefix_k.len(), "prefix gradient length");
    if let Some(slopes) = opts.alibi_slopes {
        assert_eq!(slopes.len(), heads_q, "attention backward reference: one ALiBi slope per query head");
    }
    if let Some(c) = opts.softcap {
        assert!(c > 0.0 && c.is_finite(), "attention backward reference: softcap ({c}) must be positive and finite");
    }

    let group = heads_q / heads_kv;
    let diag = seq_k as i64 - seq_q as i64;
    let row = |x: usize, heads: usize, h: usize| x * heads * head_dim + h * head_dim;
    // Keys query `i` sees: (is a prefix key, row, position), prefix first, as the forward.
    let mut keys: Vec<(bool, usize, i64)> = Vec::with_capacity(prefix_len + seq_k);
    // Per visible key: the pre-cap score t, the final score s, then P and dP.
    let (mut t, mut s, mut p, mut dp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..seq_q {
        let qpos = i as i64 + diag;
        keys.clear();
        keys.extend((0..prefix_len).map(|r| (true, r, r as i64 - prefix_len as i64)));
        keys.extend((0..seq_k).filter(|&j| own_key_visible(opts, None, seq_q, seq_k, i, j)).map(|j| (false, j, j as i64)));
        if keys.is_empty() {
            continue;
        }
        for h in 0..heads_q {
            let hk = h / group;
            let qi = head_row(q, i, heads_q, h, head_dim);
            let doi = head_row(d_out, i, heads_q, h, head_dim);
            let key = |is_prefix: bool, r: usize| head_row(if is_prefix { prefix_k } else { k }, r, heads_kv, hk, head_dim);
            let value = |is_prefix: bool, r: usize| head_row(if is_prefix { prefix_v } else { v }, r, heads_kv, hk, head_dim);
            t.clear();
            s.clear();
            for &(is_prefix, r, kpos) in &keys {
                let ti = scale * dot(qi, key(is_prefix, r));
                let mut si = match opts.softcap {
                    Some(c) => c * (ti / c).tanh(),
                    None => ti,
                };
                if let Some(slopes) = opts.alibi_slopes {
                    si -= slopes[h] as f64 * (qpos - kpos).abs() as f64;
                }
                t.push(ti);
                s.push(si);
            }
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue;
            }
            p.clear();
            p.extend(s.iter().map(|&si| (si - max).exp()));
            let sum: f64 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= sum);
            dp.clear();
            dp.extend(keys.iter().map(|&(is_prefix, r, _)| dot(doi, value(is_prefix, r))));
            let d: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
            for (n, &(is_prefix, r, _)) in keys.iter().enumerate() {
                let ds = p[n] * (dp[n] - d);
                let dt = match opts.softcap {
                    Some(c) => ds * (1.0 - (t[n] / c).tanh().powi(2)),
                    None => ds,
                };
                let at = row(r, heads_kv, hk);
                let (dk, dv) = if is_prefix {
                    (&mut grads.dprefix_k[at..at + head_dim], &mut grads.dprefix_v[at..at + head_dim])
                } else {
                    (&mut grads.dk[at..at + head_dim], &mut grads.dv[at..at + head_dim])
                };
                add_scaled(dv, p[n], doi);
                add_scaled(dk, scale * dt, qi);
                let qa = row(i, heads_q, h);
                add_scaled(&mut grads.dq[qa..qa + head_dim], scale * dt, key(is_prefix, r));
            }
        }
    }
}

/// Dense batch: q and `d_out` `[batch, seq_q, heads_q, head_dim]`, k/v `[batch, seq_k, heads_kv,
/// head_dim]`; gradients like their inputs, the prefix's summed over the batch.
#[allow(clippy::too_many_arguments)]
pub fn attention_variant_backward(
    q: &[f32], k: &[f32], v: &[f32], d_out: &[f32], batch: usize, dims: &SequenceDims, opts: &VariantOptions, scale: f64,
) -> ReferenceGradients {
    let (q_len, kv_len) = (dims.seq_q * dims.heads_q * dims.head_dim, dims.seq_k * dims.heads_kv * dims.head_dim);
    assert_eq!(q.len(), batch * q_len, "attention backward reference: q length");
    assert_eq!(k.len(), batch * kv_len, "attention backward reference: k length");
    let prefix = opts.prefix.map_or(0, |p| p.k.len());
    let mut all = ReferenceGradients::zeros(q.len(), k.len(), prefix);
    for b in 0..batch {
        let mut one = ReferenceGradients::zeros(q_len, kv_len, prefix);
        one.dprefix_k = std::mem::take(&mut all.dprefix_k);
        one.dprefix_v = std::mem::take(&mut all.dprefix_v);
        let (qs, ks) = (b * q_len..(b + 1) * q_len, b * kv_len..(b + 1) * kv_len);
        attention_sequence_backward(&q[qs.clone()], &k[ks.clone()], &v[ks.clone()], &d_out[qs.clone()], dims, opts, scale, &mut one);
        all.dq[qs].copy_from_slice(&one.dq);
        all.dk[ks.clone()].copy_from_slice(&one.dk);
        all.dv[ks].copy_from_slice(&one.dv);
        all.dprefix_k = one.dprefix_k;
        all.dprefix_v = one.dprefix_v;
    }
    all
}

/// Varlen (packed): q and `d_out` `[total_q, heads_q, head_dim]` with sequence `b` at rows
/// `cu_q[b]..cu_q[b+1]`, k/v `[total_k, heads_kv, head_dim]` with `cu_k`; sequences may be empty.
#[allow(clippy::too_many_arguments)]
pub fn attention_varlen_backward(
    q: &[f32], k: &[f32], v: &[f32], d_out: &[f32], cu_q: &[i32], cu_k: &[i32], heads_q: usize, heads_kv: usize,
    head_dim: usize, opts: &VariantOptions, scale: f64,
) -> ReferenceGradients {
    check_heads(heads_q, heads_kv);
    let total_q = check_cu_seqlens(cu_q, "cu_q");
    let total_k = check_cu_seqlens(cu_k, "cu_k");
    assert_eq!(cu_q.len(), cu_k.len(), "attention backward reference: cu_q and cu_k must both hold batch + 1 offsets");
    let (row_q, row_kv) = (heads_q * head_dim, heads_kv * head_dim);
    assert_eq!(q.len(), total_q * row_q, "attention backward reference: q length");
    assert_eq!(k.len(), total_k * row_kv, "attention backward reference: k length");
    let prefix = opts.prefix.map_or(0, |p| p.k.len());
    let mut all = ReferenceGradients::zeros(q.len(), k.len(), prefix);
    for b in 0..cu_q.len() - 1 {
        let (q0, q1) = (cu_q[b] as usize, cu_q[b + 1] as usize);
        let (k0, k1) = (cu_k[b] as usize, cu_k[b + 1] as usize);
        let dims = SequenceDims { seq_q: q1 - q0, seq_k: k1 - k0, heads_q, heads_kv, head_dim };
        let (qs, ks) = (q0 * row_q..q1 * row_q, k0 * row_kv..k1 * row_kv);
        let mut one = ReferenceGradients::zeros(qs.len(), ks.len(), 0);
        one.dprefix_k = std::mem::take(&mut all.dprefix_k);
        one.dprefix_v = std::mem::take(&mut all.dprefix_v);
        attention_sequence_backward(&q[qs.clone()], &k[ks.clone()], &v[ks.clone()], &d_out[qs.clone()], &dims, opts, scale, &mut one);
        all.dq[qs].copy_from_slice(&one.dq);
        all.dk[ks.clone()].copy_from_slice(&one.dk);
        all.dv[ks].copy_from_slice(&one.dv);
        all.dprefix_k = one.dprefix_k;
        all.dprefix_v = one.dprefix_v;
    }
    all
}

#[cfg(test)]
mod tests {
    use super::super::reference::{attention_sequence, attention_varlen};
    use super::*;

    /// Inputs on a 2^-12 grid in [-1, 1]: `x ± EPS` is then exact in f32, so the finite
    /// differences see exactly the perturbation they divide by.
    const GRID: f32 = 4096.0;
    /// The finite-difference step, a power of two (see [`GRID`]).
    const EPS: f32 = 1.0 / 1024.0;

    fn grid_values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state % 8193) as f32 - GRID) / GRID
            })
            .collect()
    }

    /// Which tensor a finite difference perturbs.
    #[derive(Clone, Copy, Debug)]
    enum Input {
        Q,
        K,
        V,
        PrefixK,
        PrefixV,
    }

    struct Case {
        name: &'static str,
        dims: SequenceDims,
        batch: usize,
        causal: bool,
        window: (Option<usize>, Option<usize>),
        softcap: Option<f64>,
        alibi: bool,
        prefix_len: usize,
    }

    fn base(name: &'static str) -> Case {
        Case {
            name,
            dims: SequenceDims { seq_q: 3, seq_k: 4, heads_q: 2, heads_kv: 2, head_dim: 4 },
            batch: 2,
            causal: false,
            window: (None, None),
            softcap: None,
            alibi: false,
            prefix_len: 0,
        }
    }

    /// `L = Σ dO ∘ O` through the forward reference, batch by batch.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        case: &Case, q: &[f32], k: &[f32], v: &[f32], pk: &[f32], pv: &[f32], d_out: &[f32], slopes: &[f32], scale: f64,
    ) -> f64 {
        let d = case.dims;
        let opts = options(case, pk, pv, slopes);
        let (q_len, kv_len) = (d.seq_q * d.heads_q * d.head_dim, d.seq_k * d.heads_kv * d.head_dim);
        (0..case.batch)
            .map(|b| {
                let r = attention_sequence(
                    &q[b * q_len..][..q_len], &k[b * kv_len..][..kv_len], &v[b * kv_len..][..kv_len], &d, &opts, None, scale,
                );
                r.out.iter().zip(&d_out[b * q_len..][..q_len]).map(|(o, &g)| o * g as f64).sum::<f64>()
            })
            .sum()
    }

    fn options<'a>(case: &Case, pk: &'a [f32], pv: &'a [f32], slopes: &'a [f32]) -> VariantOptions<'a> {
        VariantOptions {
            causal: case.causal,
            window_left: case.window.0,
            window_right: case.window.1,
            softcap: case.softcap,
            alibi_slopes: case.alibi.then_some(slopes),
            prefix: (case.prefix_len > 0).then_some(PrefixKv { k: pk, v: pv, len: case.prefix_len }),
            tree: None,
        }
    }

    /// Every gradient entry against `(L(x + ε) − L(x − ε)) / 2ε`.
    fn check_against_finite_differences(case: &Case) {
        let d = case.dims;
        let scale = 0.7;
        let (nq, nkv, np) = (case.batch * d.seq_q * d.heads_q * d.head_dim, case.batch * d.seq_k * d.heads_kv * d.head_dim, case.prefix_len * d.heads_kv * d.head_dim);
        let (q, k, v, d_out) = (grid_values(nq, 1), grid_values(nkv, 2), grid_values(nkv, 3), grid_values(nq, 4));
        let (pk, pv) = (grid_values(np, 5), grid_values(np, 6));
        let slopes: Vec<f32> = (0..d.heads_q).map(|h| 0.25 / (h + 1) as f32).collect();
        let grads = attention_variant_backward(&q, &k, &v, &d_out, case.batch, &d, &options(case, &pk, &pv, &slopes), scale);
        assert!(grads.dq.iter().chain(&grads.dk).chain(&grads.dv).all(|g| g.is_finite()), "{}: non-finite gradient", case.name);
        let mut largest = 0.0f64;
        for (input, analytic) in [
            (Input::Q, &grads.dq),
            (Input::K, &grads.dk),
            (Input::V, &grads.dv),
            (Input::PrefixK, &grads.dprefix_k),
            (Input::PrefixV, &grads.dprefix_v),
        ] {
            for (n, &want) in analytic.iter().enumerate() {
                let at = |delta: f32| {
                    let (mut q, mut k, mut v, mut pk, mut pv) = (q.clone(), k.clone(), v.clone(), pk.clone(), pv.clone());
                    let x = match input {
                        Input::Q => &mut q[n],
                        Input::K => &mut k[n],
                        Input::V => &mut v[n],
                        Input::PrefixK => &mut pk[n],
                        Input::PrefixV => &mut pv[n],
                    };
                    *x += delta;
                    loss(case, &q, &k, &v, &pk, &pv, &d_out, &slopes, scale)
                };
                let numeric = (at(EPS) - at(-EPS)) / (2.0 * EPS as f64);
                largest = largest.max(numeric.abs());
                assert!(
                    (numeric - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                    "{}: d{input:?}[{n}]: analytic {want}, finite difference {numeric}",
                    case.name
                );
            }
        }
        assert!(largest > 1e-3, "{}: every gradient is ~0; the case tests nothing", case.name);
    }

    #[test]
    fn every_trainable_variant_matches_finite_differences() {
        let gqa = SequenceDims { heads_q: 4, heads_kv: 2, ..base("").dims };
        let mqa = SequenceDims { heads_q: 3, heads_kv: 1, ..base("").dims };
        let cases = [
            base("plain"),
            Case { causal: true, ..base("causal") },
            Case { dims: gqa, ..base("gqa") },
            Case { dims: mqa, causal: true, ..base("mqa causal") },
            Case { window: (Some(1), Some(0)), ..base("window") },
            Case { softcap: Some(0.5), ..base("softcap") },
            Case { alibi: true, causal: true, ..base("alibi causal") },
            Case { prefix_len: 2, dims: gqa, ..base("prefix gqa") },
            Case { prefix_len: 1, softcap: Some(2.0), alibi: true, window: (Some(2), Some(1)), ..base("all together") },
            // seq_q > seq_k with causal: the first query sees no key.
            Case { dims: SequenceDims { seq_q: 5, seq_k: 3, ..base("").dims }, causal: true, ..base("masked rows") },
        ];
        for case in &cases {
            check_against_finite_differences(case);
        }
    }

    /// A query that sees no key has zero gradients (not NaN), and so do the keys only it could see.
    #[test]
    fn fully_masked_rows_have_zero_gradients() {
        let dims = SequenceDims { seq_q: 5, seq_k: 3, heads_q: 2, heads_kv: 1, head_dim: 4 };
        let (q, k, v, d_out) = (grid_values(40, 7), grid_values(12, 8), grid_values(12, 9), grid_values(40, 10));
        let g = attention_variant_backward(&q, &k, &v, &d_out, 1, &dims, &VariantOptions { causal: true, ..Default::default() }, 0.5);
        // diag = -2: queries 0 and 1 see no key.
        assert!(g.dq[..2 * 2 * 4].iter().all(|&x| x == 0.0), "{:?}", &g.dq[..16]);
        assert!(g.dq.iter().chain(&g.dk).chain(&g.dv).all(|x| x.is_finite()));
        assert!(g.dq[16..].iter().any(|&x| x != 0.0));
    }

    /// The packed layout gives each sequence the dense gradients (lengths 0 and 1 included), and the
    /// prefix's gradient is the sum over the sequences.
    #[test]
    fn varlen_matches_each_sequence() {
        let (heads_q, heads_kv, head_dim) = (2, 1, 4);
        let cu_q = [0, 1, 1, 4];
        let cu_k = [0, 2, 3, 7];
        let (q, k, v, d_out) = (grid_values(4 * 8, 11), grid_values(7 * 4, 12), grid_values(7 * 4, 13), grid_values(4 * 8, 14));
        let (pk, pv) = (grid_values(4, 15), grid_values(4, 16));
        let opts = VariantOptions { causal: true, prefix: Some(PrefixKv { k: &pk, v: &pv, len: 1 }), ..Default::default() };
        let packed = attention_varlen_backward(&q, &k, &v, &d_out, &cu_q, &cu_k, heads_q, heads_kv, head_dim, &opts, 0.5);
        let (mut dpk, mut dpv) = (vec![0.0; 4], vec![0.0; 4]);
        for b in 0..3 {
            let (q0, q1, k0, k1) = (cu_q[b] as usize, cu_q[b + 1] as usize, cu_k[b] as usize, cu_k[b + 1] as usize);
            let dims = SequenceDims { seq_q: q1 - q0, seq_k: k1 - k0, heads_q, heads_kv, head_dim };
            let one = attention_variant_backward(&q[q0 * 8..q1 * 8], &k[k0 * 4..k1 * 4], &v[k0 * 4..k1 * 4], &d_out[q0 * 8..q1 * 8], 1, &dims, &opts, 0.5);
            assert_eq!(&packed.dq[q0 * 8..q1 * 8], &one.dq[..], "sequence {b}");
            assert_eq!(&packed.dk[k0 * 4..k1 * 4], &one.dk[..], "sequence {b}");
            assert_eq!(&packed.dv[k0 * 4..k1 * 4], &one.dv[..], "sequence {b}");
            dpk.iter_mut().zip(&one.dprefix_k).for_each(|(a, b)| *a += b);
            dpv.iter_mut().zip(&one.dprefix_v).for_each(|(a, b)| *a += b);
        }
        for (a, b) in packed.dprefix_k.iter().zip(&dpk).chain(packed.dprefix_v.iter().zip(&dpv)) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
        }
        // The forward it differentiates exists for the same packing.
        let fwd = attention_varlen(&q, &k, &v, &cu_q, &cu_k, heads_q, heads_kv, head_dim, &opts, 0.5);
        assert_eq!(fwd.out.len(), q.len());
    }

    /// `D_i = Σ_j P_ij dP_ij` equals `dO_i · O_i`: dV's column sums over a row's keys reproduce
    /// the forward's output weights (an identity independent of the finite differences).
    #[test]
    fn dv_is_p_transposed_times_d_out() {
        // With dO = e_c for one query, dV_j = P_ij e_c: its column c sums to 1 over the keys.
        let dims = SequenceDims { seq_q: 1, seq_k: 5, heads_q: 1, heads_kv: 1, head_dim: 4 };
        let (q, k, v) = (grid_values(4, 21), grid_values(20, 22), grid_values(20, 23));
        let d_out = [0.0, 1.0, 0.0, 0.0];
        let g = attention_variant_backward(&q, &k, &v, &d_out, 1, &dims, &VariantOptions::default(), 0.9);
        let column: f64 = (0..5).map(|j| g.dv[j * 4 + 1]).sum();
        assert!((column - 1.0).abs() < 1e-12, "{column}");
        assert!((0..5).all(|j| g.dv[j * 4] == 0.0));
    }
}
