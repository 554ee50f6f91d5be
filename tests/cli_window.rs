//! `tessera run window-max|window-min|window-sum` on the simulator: the .npy contract ([rows, n]
//! and [n] inputs, f32 [rows, n - k + 1] out) against the Rust reference, and one-line errors for
//! a bad width that write nothing.

use std::path::Path;
use std::process::{Command, Output};

use tessera::codegen::WindowOp;
use tessera::npy::{read_npy, write_npy_f32};
use tessera::runtime::reference;

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn save(dir: &Path, name: &str, shape: &[usize], data: &[f32]) -> String {
    let path = dir.join(format!("{name}.npy"));
    write_npy_f32(&path, shape, data).unwrap();
    path.to_string_lossy().into_owned()
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 - 1000.0) / 97.0).collect()
}

#[test]
fn window_max_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, n, k) = (3, 500, 37);
    let mut x = values(rows * n, 1);
    x[10] = f32::NAN;
    x[600] = f32::INFINITY;
    let xp = save(dir.path(), "x", &[rows, n], &x);
    let out = dir.path().join("y.npy");
    let o = tessera(&["run", "window-max", "--k", "37", "--x", &xp, "--out", out.to_str().unwrap(), "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let y = read_npy(&out).unwrap();
    assert_eq!(y.shape, [rows, n - k + 1]);
    let want = reference::sliding_window(WindowOp::Max, &x, rows, n, k);
    for (i, (g, w)) in y.data.iter().zip(&want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "element {i}: {g} want {w}");
    }
}

#[test]
fn window_min_and_sum_of_a_vector() {
    let dir = tempfile::tempdir().unwrap();
    let x = values(64, 2);
    let xp = save(dir.path(), "x", &[64], &x);
    let out = dir.path().join("y.npy");
    let o = tessera(&["run", "window-min", "--k", "64", "--dtype", "bf16", "--x", &xp, "--out", out.to_str().unwrap(), "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let y = read_npy(&out).unwrap();
    assert_eq!(y.shape, [1]);
    let rounded: Vec<f32> = x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    assert_eq!(y.data, reference::sliding_window(WindowOp::Min, &rounded, 1, 64, 64));
    // Small integers sum exactly in any order.
    let ints: Vec<f32> = (0..40).map(|i| (i % 7) as f32 - 3.0).collect();
    let xp = save(dir.path(), "ints", &[2, 20], &ints);
    let o = tessera(&["run", "window-sum", "--k", "5", "--x", &xp, "--out", out.to_str().unwrap(), "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let y = read_npy(&out).unwrap();
    assert_eq!(y.shape, [2, 16]);
    assert_eq!(y.data, reference::sliding_window(WindowOp::Sum, &ints, 2, 20, 5));
}

#[test]
fn width_beyond_the_row_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let xp = save(dir.path(), "x", &[2, 8], &values(16, 3));
    let out = dir.path().join("y.npy");
    for k in ["9", "0"] {
        let o = tessera(&["run", "window-max", "--k", k, "--x", &xp, "--out", out.to_str().unwrap(), "--backend", "sim"]);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains("--k") && e.contains("row length n = 8"), "{e}");
        assert!(!out.exists(), "nothing is written");
    }
}

/// The NaN rule of max / min (skipped unless the whole window is NaN) is stated where a user reads
/// it, and the CLI behaves as stated: windows [NaN, 1] and [NaN, NaN].
#[test]
fn the_nan_rule_is_documented_and_holds() {
    let help = String::from_utf8_lossy(&tessera(&["run", "--help"]).stdout).into_owned();
    assert!(help.contains("NaN is skipped (fmaxf) unless the whole window is NaN"), "{help}");
    assert!(help.contains("NaN is skipped (fminf) unless the whole window is NaN"), "{help}");
    let dir = tempfile::tempdir().unwrap();
    let xp = save(dir.path(), "x", &[1, 4], &[f32::NAN, f32::NAN, 1.0, 2.0]);
    for op in ["window-max", "window-min"] {
        let out = dir.path().join(format!("{op}.npy"));
        let o = tessera(&["run", op, "--k", "2", "--x", &xp, "--out", out.to_str().unwrap(), "--backend", "sim"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let y = read_npy(&out).unwrap().data;
        assert!(y[0].is_nan(), "{op}: an all-NaN window is NaN: {y:?}");
        assert_eq!(y[1], 1.0, "{op}: NaN is skipped: {y:?}");
    }
}
