//! Attention forward in f64: the reference every attention kernel is checked against.

use crate::attention::AttentionProblem;

/// Reference attention output.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceOutput {
    /// `[batch, seq_q, heads_q, head_dim]`, contiguous.
    pub out: Vec<f64>,
    /// Natural-log log-sum-exp of the scaled scores, `[batch, heads_q, seq_q]`; `-inf` for a query
    /// that sees no key (whose output row is 0).
    pub lse: Vec<f64>,
}

/// `out[i] = Σ_j softmax_j(scale · q_i·k_j) v_j` over the keys `j` query `i` may see
/// ([`AttentionProblem::visible`]), with f64 accumulation and a max-subtracted softmax. Query head `h`
/// reads key/value head `h / (heads_q / heads_kv)`.
///
/// # Panics
/// When a slice length does not match `dims`, or `heads_kv` does not divide `heads_q`: both are
/// harness bugs, not data.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], dims: &AttentionProblem, causal: bool, scale: f64) -> ReferenceOutput {
    let AttentionProblem { batch, seq_q, seq_k, heads_q, heads_kv, head_dim } = *dims;
    assert!(
        heads_kv > 0 && heads_q % heads_kv == 0,
        "attention reference: heads_kv ({heads_kv}) must divide heads_q ({heads_q})"
    );
    assert_eq!(q.len(), dims.q_elements(), "attention reference: q length");
    assert_eq!(k.len(), dims.kv_elements(), "attention reference: k length");
    assert_eq!(v.len(), dims.kv_elements(), "attention reference: v length");
    let group = dims.group();
    let q_at = |b: usize, i: usize, h: usize| ((b * seq_q + i) * heads_q + h) * head_dim;
    let kv_at = |b: usize, j: usize, h: usize| ((b * seq_k + j) * heads_kv + h) * head_dim;

    let mut out = vec![0.0f64; dims.q_elements()];
    let mut lse = vec![f64::NEG_INFINITY; dims.lse_elements()];
    let mut scores = vec![0.0f64; seq_k];
    let mut acc = vec![0.0f64; head_dim];
    for b in 0..batch {
        for h in 0..heads_q {
            let hk = h / group;
            for i in 0..seq_q {
                let qi = &q[q_at(b, i, h)..][..head_dim];
                let keys = (0..seq_k).filter(|&j| dims.visible(causal, i, j));
                let mut max = f64::NEG_INFINITY;
                let mut count = 0usize;
                for j in keys.clone() {
                    let kj = &k[kv_at(b, j, hk)..][..head_dim];
                    let dot: f64 = qi.iter().zip(kj).map(|(&a, &c)| a as f64 * c as f64).sum();
                    scores[j] = scale * dot;
                    max = max.max(scores[j]);
                    count += 1;
                }
                if count == 0 {
                    // No visible key: output stays 0 and lse -inf, never 0/0.
                    continue;
                }
                acc.iter_mut().for_each(|a| *a = 0.0);
                let mut sum = 0.0f64;
                for j in keys {
                    let p = (scores[j] - max).exp();
                    sum += p;
                    let vj = &v[kv_at(b, j, hk)..][..head_dim];
                    for (a, &x) in acc.iter_mut().zip(vj) {
                        *a += p * x as f64;
                    }
                }
                let o = &mut out[q_at(b, i, h)..][..head_dim];
                for (o, a) in o.iter_mut().zip(&acc) {
                    *o = a / sum;
                }
                lse[(b * heads_q + h) * seq_q + i] = max + sum.ln();
            }
        }
    }
    ReferenceOutput { out, lse }
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
}
