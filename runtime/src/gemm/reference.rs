//! f64 reference for [`GemmSpec`](tessera_codegen::GemmSpec):
//! `Y = act(alpha * X @ W + beta * C + bias) + residual`, in that order.
//!
//! Kept beside the GEMM family's launchers; [`crate::reference`] re-exports it with the
//! other references.

use tessera_codegen::{Activation, Layout};

/// `x` is `[m, k]` (`Layout::RowMajor`) or `[k, m]` (`Layout::ColMajor`); `w` is `[k, n]`
/// (`Layout::RowMajor`) or `[n, k]` (`Layout::ColMajor`);
/// `c` and `residual` are `[m, n]`, `bias` is `[n]`. Inputs should already be rounded to the types
/// the kernel stores them in. Returns `[m, n]`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    x: &[f32],
    layout_x: Layout,
    w: &[f32],
    layout_w: Layout,
    (m, n, k): (usize, usize, usize),
    c: Option<&[f32]>,
    bias: Option<&[f32]>,
    activation: Activation,
    residual: Option<&[f32]>,
    alpha: f64,
    beta: f64,
) -> Vec<f64> {
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for l in 0..k {
                let wv = match layout_w {
                    Layout::RowMajor => w[l * n + j],
                    Layout::ColMajor => w[j * k + l],
                };
                let xv = match layout_x {
                    Layout::RowMajor => x[i * k + l],
                    Layout::ColMajor => x[l * m + i],
                };
                acc += f64::from(xv) * f64::from(wv);
            }
            let mut v = alpha * acc;
            if let Some(c) = c {
                v += beta * f64::from(c[i * n + j]);
            }
            if let Some(b) = bias {
                v += f64::from(b[j]);
            }
            v = activate(activation, v);
            if let Some(r) = residual {
                v += f64::from(r[i * n + j]);
            }
            y[i * n + j] = v;
        }
    }
    y
}

/// ReLU, GELU (tanh form) and SiLU (`x * sigmoid(x)`) in f64.
pub fn activate(activation: Activation, x: f64) -> f64 {
    match activation {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::GeluTanh => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_and_epilogue_order() {
        // X = [[1, 2]], W = [[3], [4]] -> 11; alpha 2, beta 0.5 * C(2) = 23; bias -30 -> -7; relu -> 0; + 5.
        let y = gemm(
            &[1.0, 2.0],
            Layout::RowMajor,
            &[3.0, 4.0],
            Layout::RowMajor,
            (1, 1, 2),
            Some(&[2.0]),
            Some(&[-30.0]),
            Activation::Relu,
            Some(&[5.0]),
            2.0,
            0.5,
        );
        assert_eq!(y, vec![5.0]);
        // Column-major W of a 2x2 product.
        let w_row = [1.0, 2.0, 3.0, 4.0]; // [k][n]
        let w_col = [1.0, 3.0, 2.0, 4.0]; // [n][k]
        let x = [1.0, -1.0, 0.5, 2.0];
        let a = gemm(&x, Layout::RowMajor, &w_row, Layout::RowMajor, (2, 2, 2), None, None, Activation::None, None, 1.0, 0.0);
        let b = gemm(&x, Layout::RowMajor, &w_col, Layout::ColMajor, (2, 2, 2), None, None, Activation::None, None, 1.0, 0.0);
        assert_eq!(a, b);
        // Column-major X of the same product: x^T stored.
        let x_col = [1.0, 0.5, -1.0, 2.0];
        let c = gemm(&x_col, Layout::ColMajor, &w_row, Layout::RowMajor, (2, 2, 2), None, None, Activation::None, None, 1.0, 0.0);
        assert_eq!(a, c);
    }

    #[test]
    fn activations_match_their_definitions() {
        assert!((activate(Activation::GeluTanh, 1.0) - 0.841_192).abs() < 1e-6);
        assert!((activate(Activation::Silu, 1.0) - 0.731_058_578_6).abs() < 1e-9);
        assert_eq!(activate(Activation::Relu, -2.0), 0.0);
    }
}
