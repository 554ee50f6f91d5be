//! The sliding-window kernels on the CPU simulator (checks on) against the Rust references: max
//! and min bit for bit (NaN equal to NaN), the sum within `reference::window_sum_bound` of the f64
//! sum (and NaN / inf exactly where the f64 sum has them). Random rows, lengths up to 3000 and
//! widths from 1 to n across small tiles, so both the shared-memory path (k <= tile) and the
//! streaming path (k > tile, several tiles per block) run; NaN / inf injected in some cases;
//! outputs poisoned before each launch. `TESSERA_SIM_WINDOW_CASES` sets the cases (default 48).
//! Needs NVRTC.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::codegen::{ElemType, ElementwiseTile, WindowOp, WindowSpec};
use tessera::runtime::common::buffers::{decode, encode};
use tessera::runtime::reference;
use tessera::runtime::window::{run_window, WindowProblem};

mod common;
use common::{backend, compiler};

fn cases() -> u32 {
    std::env::var("TESSERA_SIM_WINDOW_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

/// 512, 1024 and 2048 (the default) elements per tile.
const TILES: [ElementwiseTile; 3] = [ElementwiseTile::new(128, 4, 1), ElementwiseTile::new(128, 8, 1), WindowSpec::DEFAULT_TILE];

fn values(rng: &mut StdRng, n: usize, specials: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let r: f32 = rng.random_range(-1.0..1.0);
            match rng.random_range(0..40) {
                0 => r * 1e-6,
                1 if specials => r * 1e5,
                2 => -0.0,
                3 => 0.0,
                4 if specials => f32::INFINITY,
                5 if specials => f32::NAN,
                6 if specials => f32::NEG_INFINITY,
                // Repeated values (ties in the deque).
                7..=9 => 1.5,
                _ => r * 4.0,
            }
        })
        .collect()
}

fn mantissa_bits(t: ElemType) -> u32 {
    match t {
        ElemType::F16 => 10,
        ElemType::BF16 => 7,
        _ => 23,
    }
}

/// Compares the kernel's output with the reference; `Err` names the first bad element.
fn compare(spec: &WindowSpec, p: &WindowProblem, x: &[f32], got: &[f32]) -> Result<(), String> {
    let n_out = p.n_out();
    if got.len() != p.rows * n_out {
        return Err(format!("{} outputs, want {}", got.len(), p.rows * n_out));
    }
    let at = |i: usize| format!("row {} window {}", i / n_out, i % n_out);
    match spec.op {
        WindowOp::Max | WindowOp::Min => {
            let want = reference::sliding_window(spec.op, x, p.rows, p.n, p.k);
            // The reference on the dtype-rounded inputs, stored in the dtype: exact (max / min
            // pick an input value).
            let want = decode(&encode(&want, spec.dtype), spec.dtype);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                if !(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan())) {
                    return Err(format!("{}: {g} ({:#010x}), want {w} ({:#010x})", at(i), g.to_bits(), w.to_bits()));
                }
            }
        }
        WindowOp::Sum => {
            let exact = reference::window_sum_f64(x, p.rows, p.n, p.k);
            let abs = reference::window_abs_sum(x, p.rows, p.n, p.k);
            let t = spec.tile();
            for (i, &g) in got.iter().enumerate() {
                let (e, a) = (exact[i], abs[i]);
                let ok = if e.is_nan() {
                    g.is_nan()
                } else if e.is_infinite() {
                    g as f64 == e
                } else {
                    let bound = reference::window_sum_bound(p.k, spec.tile_elems(), t.elems_per_thread, a, e, mantissa_bits(spec.dtype));
                    // Sums beyond the type's range round to inf (f16: |sum| >= 65520).
                    let overflow = (spec.dtype.max_finite() as f64) * (1.0 + f64::powi(2.0, -(mantissa_bits(spec.dtype) as i32) - 1));
                    if g.is_infinite() {
                        g.signum() as f64 == e.signum() && e.abs() + bound >= overflow
                    } else {
                        (g as f64 - e).abs() <= bound
                    }
                };
                if !ok {
                    return Err(format!("{}: {g}, want {e} (sum |x| {a})", at(i)));
                }
            }
        }
    }
    Ok(())
}

fn check(spec: WindowSpec, rows: usize, n: usize, k: usize, seed: u64, specials: bool) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(seed);
    // The inputs as the kernel sees them: rounded to the element type.
    let x = decode(&encode(&values(&mut rng, rows * n, specials), spec.dtype), spec.dtype);
    let p = WindowProblem { rows, n, k };
    let label = format!("{} rows={rows} n={n} k={k} seed={seed} specials={specials}", spec.kernel_name());
    let got = run_window(backend(), compiler(), &spec, &p, &x).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    compare(&spec, &p, &x, &got).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))
}

fn op() -> impl Strategy<Value = WindowOp> {
    (0usize..3).prop_map(|i| WindowOp::ALL[i])
}

fn dtype() -> impl Strategy<Value = ElemType> {
    (0usize..3).prop_map(|i| ElemType::FLOAT[i])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 8, ..ProptestConfig::default() })]

    #[test]
    fn windows_match_the_reference(
        op in op(), dtype in dtype(), tile in 0usize..3, rows in 1usize..5, n in 1usize..3000,
        kfrac in 0.0f64..1.0, narrow in any::<bool>(), specials in any::<bool>(), seed in any::<u64>()
    ) {
        // Half the cases narrow windows (many blocks per CTA), half anywhere in 1..=n.
        let span = if narrow { n.min(40) } else { n };
        let k = 1 + ((kfrac * span as f64) as usize).min(span - 1);
        let spec = WindowSpec { tile: Some(TILES[tile]), ..WindowSpec::new(op, dtype) };
        check(spec, rows, n, k, seed, specials)?;
    }
}

#[test]
fn edge_widths_and_lengths() {
    let small = ElementwiseTile::new(128, 4, 1);
    let mut seed = 1;
    for op in WindowOp::ALL {
        for dtype in ElemType::FLOAT {
            for tile in [small, WindowSpec::DEFAULT_TILE] {
                let spec = WindowSpec { tile: Some(tile), ..WindowSpec::new(op, dtype) };
                let t = tile.chunk() as usize;
                // (rows, n, k): k = 1, k = n, n = 1, k at and around the tile, several tiles per block.
                for (rows, n, k) in [(3, 1, 1), (2, 700, 1), (2, 700, 700), (1, 1, 1), (3, t + 5, t), (2, 2 * t + 3, t + 1), (1, 3 * t + 7, 2 * t + 100), (2, 5, 3)] {
                    seed += 1;
                    check(spec, rows, n, k, seed, seed % 2 == 0).unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}

#[test]
fn all_nan_windows_and_signed_zeros() {
    // NaN runs longer than k: max / min are NaN exactly where the window is all NaN.
    let x = [1.0, f32::NAN, f32::NAN, f32::NAN, -0.0, 0.0, f32::NAN, 2.0];
    for op in WindowOp::ALL {
        for k in 1..=x.len() {
            let spec = WindowSpec { tile: Some(ElementwiseTile::new(128, 4, 1)), ..WindowSpec::new(op, ElemType::F32) };
            let p = WindowProblem { rows: 1, n: x.len(), k };
            let got = run_window(backend(), compiler(), &spec, &p, &x).unwrap();
            compare(&spec, &p, &x, &got).unwrap_or_else(|e| panic!("{op} k={k}: {e}"));
        }
    }
}

#[test]
fn bad_problems_are_clear_errors() {
    let spec = WindowSpec::new(WindowOp::Max, ElemType::F32);
    let run = |rows, n, k, len| run_window(backend(), compiler(), &spec, &WindowProblem { rows, n, k }, &vec![0.0; len]).unwrap_err().to_string();
    assert!(run(1, 4, 0, 4).contains("at least 1"), "{}", run(1, 4, 0, 4));
    let e = run(1, 4, 5, 4);
    assert!(e.contains("window width 5 exceeds the row length n = 4"), "{e}");
    let e = run(2, 4, 2, 7);
    assert!(e.contains("7 values") && e.contains("2 rows of 4"), "{e}");
    let fp8 = WindowSpec::new(WindowOp::Sum, ElemType::E4M3);
    let e = run_window(backend(), compiler(), &fp8, &WindowProblem { rows: 1, n: 4, k: 2 }, &[0.0; 4]).unwrap_err().to_string();
    assert!(e.contains("unsupported dtype `e4m3`"), "{e}");
}
