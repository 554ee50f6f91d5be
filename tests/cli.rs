//! The CLI's public contract: flags, the .npy in/out rules, one-line errors, nothing written on failure.

use std::path::Path;
use std::process::{Command, Output};

use npyz::WriterBuilder;
use tessera::npy::write_npy_f32;

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes q/k/v of the given shapes (deterministic small values) into `dir`.
fn inputs(dir: &Path, q: &[usize], kv: &[usize]) -> [String; 3] {
    let fill = |shape: &[usize]| (0..shape.iter().product::<usize>()).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect::<Vec<_>>();
    let paths = ["q", "k", "v"].map(|n| dir.join(format!("{n}.npy")).to_string_lossy().into_owned());
    write_npy_f32(Path::new(&paths[0]), q, &fill(q)).unwrap();
    write_npy_f32(Path::new(&paths[1]), kv, &fill(kv)).unwrap();
    write_npy_f32(Path::new(&paths[2]), kv, &fill(kv)).unwrap();
    paths
}

fn run_attention(dir: &Path, q: &[usize], kv: &[usize], extra: &[&str]) -> (Output, std::path::PathBuf) {
    let [qp, kp, vp] = inputs(dir, q, kv);
    let out = dir.join("o.npy");
    let out_s = out.to_string_lossy().into_owned();
    let mut args = vec!["run", "attention", "--dtype", "bf16", "--q", &qp, "--k", &kp, "--v", &vp, "--out", &out_s];
    args.extend_from_slice(extra);
    (tessera(&args), out)
}

#[test]
fn list_names_the_attention_family_and_its_options() {
    let o = tessera(&["list"]);
    assert!(o.status.success());
    let s = stdout(&o);
    for needle in ["attention", "--head-dim", "32, 64, 96, 128, 192, 256", "f16, bf16", "sm_90"] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
}

#[test]
fn emit_prints_the_specialised_source() {
    let o = tessera(&["emit", "attention", "--dtype", "f16", "--head-dim", "64", "--causal", "--heads-q", "8", "--heads-kv", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"));
    assert!(s.contains("attention_fwd<tessera::f16, 64, 128, 64, 8, 2, true, 4, true>"), "{s}");
    assert!(s.contains("extern \"C\" __global__"));
}

#[test]
fn emit_rejects_unsupported_values_naming_the_field() {
    let o = tessera(&["emit", "attention", "--dtype", "bf16", "--head-dim", "100"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("head_dim") && e.contains("100") && e.contains("32, 64, 96, 128, 192, 256"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one-line error: {e}");

    let o = tessera(&["emit", "attention", "--dtype", "f32", "--head-dim", "64"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("f16, bf16"), "{}", stderr(&o));

    let o = tessera(&["emit", "attention", "--dtype", "bf16", "--head-dim", "64", "--heads-q", "6", "--heads-kv", "4"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("heads_q (6)"), "{}", stderr(&o));

    let o = tessera(&["emit", "attention", "--dtype", "bf16", "--head-dim", "64", "--block-n", "48"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tile.block_n"), "{}", stderr(&o));
}

#[test]
fn check_compiles_a_slice_of_the_grid() {
    let o = tessera(&["check", "--arch", "sm_80", "--dtype", "bf16", "--head-dim", "64"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("6 variants, 0 failed"), "{s}");
    assert!(s.contains("tessera_attention_fwd_bf16_d64_causal_h8x1"), "{s}");
}

#[test]
fn run_rejects_bad_inputs_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // wrong rank
    let (o, out) = run_attention(dir.path(), &[2, 8, 64], &[1, 8, 2, 64], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("rank 4"), "{}", stderr(&o));
    assert!(!out.exists());
    // batch mismatch
    let (o, out) = run_attention(dir.path(), &[2, 8, 2, 64], &[1, 8, 2, 64], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("batch"), "{}", stderr(&o));
    assert!(!out.exists());
    // heads do not divide
    let (o, _) = run_attention(dir.path(), &[1, 8, 3, 64], &[1, 8, 2, 64], &[]);
    assert!(stderr(&o).contains("heads_kv 2 must divide"), "{}", stderr(&o));
    // unsupported head_dim
    let (o, _) = run_attention(dir.path(), &[1, 8, 2, 40], &[1, 8, 2, 40], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("head_dim"), "{}", stderr(&o));
    // non-finite scale
    let (o, out) = run_attention(dir.path(), &[1, 8, 2, 64], &[1, 8, 2, 64], &["--scale", "inf"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--scale"), "{}", stderr(&o));
    assert!(!out.exists());
    // missing file
    let o = tessera(&["run", "attention", "--dtype", "bf16", "--q", "/nonexistent/q.npy", "--k", "k.npy", "--v", "v.npy", "--out", "o.npy"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/q.npy"), "{}", stderr(&o));
}

#[test]
fn run_rejects_a_wrong_npy_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let [_, kp, vp] = inputs(dir.path(), &[1, 4, 1, 64], &[1, 4, 1, 64]);
    // An int32 array is not accepted.
    let q = dir.path().join("q_i32.npy");
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[1, 4, 1, 64])
        .writer(std::fs::File::create(&q).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(0..256i32).unwrap();
    w.finish().unwrap();
    let out = dir.path().join("o.npy");
    let o = tessera(&["run", "attention", "--dtype", "f16", "--q", q.to_str().unwrap(), "--k", &kp, "--v", &vp, "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unsupported dtype"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn run_without_a_backend_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = run_attention(dir.path(), &[1, 8, 2, 64], &[1, 8, 2, 64], &["--backend", "sim"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("simulator") && e.contains("not available yet"), "{e}");
    assert!(!out.exists());
    // On a machine with a GPU this run succeeds; without one it must say so, not crash.
    let (o, out) = run_attention(dir.path(), &[1, 8, 2, 64], &[1, 8, 2, 64], &["--backend", "cuda"]);
    if o.status.success() {
        assert!(out.exists());
    } else {
        let e = stderr(&o);
        assert!(e.contains("GPU") && e.trim().lines().count() == 1, "{e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(!out.exists());
    }
}
