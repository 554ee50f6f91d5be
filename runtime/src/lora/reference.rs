//! f64 references for [`LoraSpec`](tessera_codegen::LoraSpec):
//!
//! ```text
//! LoRA:        Y = act(X W + T'_i B_i + bias) + residual,   T'_i = round(s (X A_i))
//! bottleneck:  Y = X + T' B,                                T'   = round(s f(X A))
//! ```
//!
//! `round` is round-to-nearest-even into the kernel's input dtype: the kernels hand the rank-r
//! intermediate to the second product in that dtype, as an unfused `(x @ A) @ B` does, so the
//! reference rounds at the same point and the comparison can stay tight.
//!
//! Kept beside the LoRA family's launchers; [`crate::reference`] re-exports it with the
//! other references.

use tessera_codegen::{Activation, ElemType, Layout};

use crate::gemm::reference::activate;
use crate::reference::accuracy::round_to_dtype;

/// Shapes and operands of one reference call. `x` is `[m, k]` (row-major) or `[k, m]`; `w` is
/// `[k, n]` or `[n, k]`; `a` is `[adapters, k, r]`, `b` is `[adapters, r, n]` (one adapter:
/// `adapters = 1`); `ids[m]` picks row m's adapter, `-1` none (no `ids`: adapter 0 for all).
#[derive(Clone, Copy, Debug)]
pub struct LoraOperands<'a> {
    pub x: &'a [f32],
    pub layout_x: Layout,
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub ids: Option<&'a [i64]>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub rank: usize,
    /// The dtype T' is rounded to.
    pub dtype: ElemType,
    pub scale: f64,
}

impl LoraOperands<'_> {
    fn x_at(&self, row: usize, col: usize) -> f64 {
        f64::from(match self.layout_x {
            Layout::RowMajor => self.x[row * self.k + col],
            Layout::ColMajor => self.x[col * self.m + row],
        })
    }

    fn adapter(&self, row: usize) -> Option<usize> {
        match self.ids {
            None => Some(0),
            Some(ids) => usize::try_from(ids[row]).ok(),
        }
    }

    /// `T'[m, r]`, rounded to the dtype, with `f` applied before the scale; rows without an
    /// adapter are zero.
    fn t_prime(&self, f: Activation) -> Vec<f64> {
        let (k, r) = (self.k, self.rank);
        let mut t = vec![0.0f32; self.m * r];
        for row in 0..self.m {
            let Some(i) = self.adapter(row) else { continue };
            let a = &self.a[i * k * r..(i + 1) * k * r];
            for j in 0..r {
                let dot: f64 = (0..k).map(|l| self.x_at(row, l) * f64::from(a[l * r + j])).sum();
                t[row * r + j] = (self.scale * activate(f, dot)) as f32;
            }
        }
        round_to_dtype(&t, self.dtype).into_iter().map(f64::from).collect()
    }

    /// `sum_j T'[row, j] B_i[j, col]` for row's adapter i.
    fn expand(&self, t: &[f64], row: usize, col: usize) -> f64 {
        let Some(i) = self.adapter(row) else { return 0.0 };
        let (r, n) = (self.rank, self.n);
        let b = &self.b[i * r * n..(i + 1) * r * n];
        (0..r).map(|j| t[row * r + j] * f64::from(b[j * n + col])).sum()
    }
}

/// `Y [m, n] = act(X W + round(s X A_i) B_i + bias) + residual`.
pub fn lora(
    ops: &LoraOperands<'_>,
    w: &[f32],
    layout_w: Layout,
    bias: Option<&[f32]>,
    activation: Activation,
    residual: Option<&[f32]>,
) -> Vec<f64> {
    let (m, n, k) = (ops.m, ops.n, ops.k);
    let t = ops.t_prime(Activation::None);
    let mut y = vec![0.0f64; m * n];
    for row in 0..m {
        for col in 0..n {
            let mut v: f64 = (0..k)
                .map(|l| {
                    let wv = match layout_w {
                        Layout::RowMajor => w[l * n + col],
                        Layout::ColMajor => w[col * k + l],
                    };
                    ops.x_at(row, l) * f64::from(wv)
                })
                .sum();
            v += ops.expand(&t, row, col);
            if let Some(bias) = bias {
                v += f64::from(bias[col]);
            }
            v = activate(activation, v);
            if let Some(res) = residual {
                v += f64::from(res[row * n + col]);
            }
            y[row * n + col] = v;
        }
    }
    y
}

/// `Y [m, n] = X + round(s f(X A)) B` with `n == k`.
pub fn bottleneck(ops: &LoraOperands<'_>, f: Activation) -> Vec<f64> {
    assert_eq!(ops.n, ops.k, "the bottleneck adds X to an output of the same width");
    let t = ops.t_prime(f);
    let mut y = vec![0.0f64; ops.m * ops.n];
    for row in 0..ops.m {
        for col in 0..ops.n {
            y[row * ops.n + col] = ops.x_at(row, col) + ops.expand(&t, row, col);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_row_adapters_and_rounding() {
        // m = 2, k = 2, n = 1, r = 1; adapter 0: A = [1, 1], B = [3]; adapter 1: A = [0, 2], B = [-1].
        let x = [1.0, 2.0, 0.5, 0.25];
        let a = [1.0, 1.0, 0.0, 2.0];
        let b = [3.0, -1.0];
        let w = [1.0, 1.0];
        let ops = LoraOperands {
            x: &x,
            layout_x: Layout::RowMajor,
            a: &a,
            b: &b,
            ids: Some(&[1, -1]),
            m: 2,
            n: 1,
            k: 2,
            rank: 1,
            dtype: ElemType::BF16,
            scale: 0.5,
        };
        // Row 0: X W = 3, adapter 1: T' = 0.5 * 4 = 2, times -1 -> 1. Row 1: no adapter -> 0.75.
        assert_eq!(lora(&ops, &w, Layout::RowMajor, None, Activation::None, None), vec![1.0, 0.75]);
        let single = LoraOperands { ids: None, ..ops };
        // Row 0: 3 + 0.5 * 3 * 3 = 7.5; row 1: 0.75 + 0.5 * 0.75 * 3 = 1.875.
        assert_eq!(lora(&single, &w, Layout::RowMajor, None, Activation::None, None), vec![7.5, 1.875]);
        // T' is rounded to bf16: 1 + 2^-9 is not representable (8 bits of mantissa).
        let tiny = LoraOperands { x: &[1.0 + 1.0 / 512.0], a: &[1.0], b: &[1.0], m: 1, n: 1, k: 1, scale: 1.0, ids: None, ..ops };
        assert_eq!(lora(&tiny, &[0.0], Layout::RowMajor, None, Activation::None, None), vec![1.0]);
    }

    #[test]
    fn bottleneck_adds_x() {
        let x = [1.0, -2.0];
        let ops = LoraOperands {
            x: &x,
            layout_x: Layout::RowMajor,
            a: &[1.0, 1.0],
            b: &[1.0, 2.0],
            ids: None,
            m: 1,
            n: 2,
            k: 2,
            rank: 1,
            dtype: ElemType::F16,
            scale: 1.0,
        };
        // X A = -1, relu -> 0: Y = X. Without f: T' = -1, Y = X + [-1, -2].
        assert_eq!(bottleneck(&ops, Activation::Relu), vec![1.0, -2.0]);
        assert_eq!(bottleneck(&ops, Activation::None), vec![0.0, -4.0]);
    }
}
