//! Sliding-window max / min / sum over the last axis of `x [rows, n]` (windows of width `k`,
//! `n - k + 1` per row), the references of `WindowSpec`.
//!
//! Max and min follow `fmaxf` / `fminf` as the kernel executes them: NaN is ignored unless every
//! element of the window is NaN (then NaN), and -0 orders below +0. They are computed with a
//! monotonic deque (O(n) per row) and must match the kernel bit for bit. The sum is computed in
//! f64 (van Herk blocks, each element of a window added once, IEEE specials: NaN, or +inf and -inf
//! together, give NaN); the kernel's f32 sum is compared to it within [`window_sum_bound`].
//!
//! Kept beside the window family's launchers; [`crate::reference`] re-exports it with the
//! other references.

use std::cmp::Ordering;
use std::collections::VecDeque;

use tessera_codegen::WindowOp;

/// Max (`op` = Max) or min of every window, NaN ignored unless the window is all NaN.
fn extreme(x: &[f32], rows: usize, n: usize, k: usize, want: Ordering) -> Vec<f32> {
    assert!(k >= 1 && k <= n && x.len() == rows * n, "window reference: bad shape");
    let n_out = n - k + 1;
    let mut out = Vec::with_capacity(rows * n_out);
    let mut deque: VecDeque<usize> = VecDeque::with_capacity(k);
    for row in x.chunks_exact(n) {
        deque.clear();
        for (j, &v) in row.iter().enumerate() {
            if !v.is_nan() {
                // Drop the elements `v` dominates (total order: -0 < +0 among non-NaN values).
                while deque.back().is_some_and(|&b| row[b].total_cmp(&v) != want) {
                    deque.pop_back();
                }
                deque.push_back(j);
            }
            if j + 1 >= k {
                let i = j + 1 - k;
                while deque.front().is_some_and(|&f| f < i) {
                    deque.pop_front();
                }
                out.push(deque.front().map_or(f32::NAN, |&f| row[f]));
            }
        }
    }
    out
}

/// Sum of every window in f64 (exact for f16 / bf16 inputs and windows up to 2^29 elements; within
/// a few f64 ulps of the running sums otherwise).
pub fn window_sum_f64(x: &[f32], rows: usize, n: usize, k: usize) -> Vec<f64> {
    assert!(k >= 1 && k <= n && x.len() == rows * n, "window reference: bad shape");
    let n_out = n - k + 1;
    let mut out = Vec::with_capacity(rows * n_out);
    let mut suffix = vec![0f64; n];
    let mut prefix = vec![0f64; n];
    for row in x.chunks_exact(n) {
        for start in (0..n).step_by(k) {
            let end = (start + k).min(n);
            let mut acc = 0f64;
            for j in start..end {
                acc += row[j] as f64;
                prefix[j] = acc;
            }
            let mut acc = 0f64;
            for j in (start..end).rev() {
                acc += row[j] as f64;
                suffix[j] = acc;
            }
        }
        for i in 0..n_out {
            out.push(if i % k == 0 { suffix[i] } else { suffix[i] + prefix[i + k - 1] });
        }
    }
    out
}

/// Sum of |x| over every window (for [`window_sum_bound`]); NaN and inf count as +inf.
pub fn window_abs_sum(x: &[f32], rows: usize, n: usize, k: usize) -> Vec<f64> {
    let abs: Vec<f32> = x.iter().map(|v| if v.is_finite() { v.abs() } else { f32::INFINITY }).collect();
    window_sum_f64(&abs, rows, n, k)
}

/// The reference of one op, as f32: max / min exactly as the kernel computes them; the sum is the
/// f64 sum rounded to f32 (not bit-comparable to the kernel's f32 sum; see [`window_sum_bound`]).
pub fn sliding_window(op: WindowOp, x: &[f32], rows: usize, n: usize, k: usize) -> Vec<f32> {
    match op {
        WindowOp::Max => extreme(x, rows, n, k, Ordering::Greater),
        WindowOp::Min => extreme(x, rows, n, k, Ordering::Less),
        WindowOp::Sum => window_sum_f64(x, rows, n, k).into_iter().map(|v| v as f32).collect(),
    }
}

/// Largest |kernel sum − exact sum| accepted for a window of width `k` whose exact sum is `exact`
/// and whose |x| sums to `abs_sum`, for a kernel with `tile_elems` elements per tile and
/// `elems_per_thread`, storing `mantissa_bits`-bit results (f32: 23, f16: 10, bf16: 7).
///
/// Every element reaches its f32 result through at most `h` additions, each rounding with a
/// relative error of at most u = 2^-24, so |err| <= h u abs_sum (+ higher-order terms): per tile
/// a run of 2 `elems_per_thread` (each thread scans at most 2 elements per thread of a span
/// of 2 tiles), the 11 levels of the cross-thread scan (up to 512 threads) and the carry in, one
/// tile carry per tile crossed (k / tile_elems + 1 tiles), and the final S + P. Storing to a
/// 16-bit type adds half an ulp of the result. The bound is rigorous for the kernel's order and
/// much tighter than the any-order bound (k - 1) u abs_sum for wide windows.
pub fn window_sum_bound(k: usize, tile_elems: u64, elems_per_thread: u32, abs_sum: f64, exact: f64, mantissa_bits: u32) -> f64 {
    let tiles = k as f64 / tile_elems as f64 + 1.0;
    let per_tile = 2.0 * 2.0 * elems_per_thread as f64 + 12.0;
    let h = (tiles * per_tile + 1.0).min(k as f64 + 1.0);
    let u = f64::powi(2.0, -24);
    let f32_err = h * u * abs_sum * 1.01;
    let store = if mantissa_bits >= 23 { u } else { f64::powi(2.0, -(mantissa_bits as i32) - 1) };
    // Half of the smallest subnormal spacing of f16 (the coarsest of the three types near 0).
    let floor = f64::powi(2.0, -25);
    f32_err + store * (exact.abs() + f32_err) + floor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deque_matches_brute_force_with_nan_and_zeros() {
        let x = [3.0, f32::NAN, -1.0, 0.0, -0.0, f32::NAN, f32::NAN, 7.0, -0.0, 0.0];
        for k in 1..=x.len() {
            let max = sliding_window(WindowOp::Max, &x, 1, x.len(), k);
            let min = sliding_window(WindowOp::Min, &x, 1, x.len(), k);
            for i in 0..=x.len() - k {
                let w: Vec<f32> = x[i..i + k].iter().copied().filter(|v| !v.is_nan()).collect();
                let want_max = w.iter().copied().max_by(f32::total_cmp);
                let want_min = w.iter().copied().min_by(f32::total_cmp);
                assert_eq!(max[i].to_bits(), want_max.unwrap_or(f32::NAN).to_bits(), "max k={k} i={i}");
                assert_eq!(min[i].to_bits(), want_min.unwrap_or(f32::NAN).to_bits(), "min k={k} i={i}");
            }
        }
        // -0 below +0.
        assert!(sliding_window(WindowOp::Max, &[-0.0, 0.0], 1, 2, 2)[0].is_sign_positive());
        assert!(sliding_window(WindowOp::Min, &[0.0, -0.0], 1, 2, 2)[0].is_sign_negative());
    }

    #[test]
    fn sums_and_specials() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(window_sum_f64(&x, 2, 3, 2), [3.0, 5.0, 9.0, 11.0]);
        assert_eq!(window_sum_f64(&x, 1, 6, 6), [21.0]);
        let s = window_sum_f64(&[1.0, f32::INFINITY, f32::NEG_INFINITY, 2.0], 1, 4, 2);
        assert_eq!(s[0], f64::INFINITY);
        assert!(s[1].is_nan());
        assert_eq!(s[2], f64::NEG_INFINITY);
        assert_eq!(window_abs_sum(&[-1.0, f32::NAN], 1, 2, 1), [1.0, f64::INFINITY]);
    }
}
