//! The CLI's public contract: flags, the .npy in/out rules, one-line errors, nothing written on failure.

use std::path::Path;
use std::process::{Command, Output};

use npyz::WriterBuilder;
use tessera::npy::{read_npy, write_npy_f32};
use tessera::runtime::reference;
use tessera::runtime::AttentionProblem;
use tessera::ElemType;

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
    assert!(s.contains("attention_fwd<tessera::f16, 64, 128, 64, 8, 2, true, 4, true, 0>"), "{s}");
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
    let o = tessera(&["check", "--family", "attention", "--arch", "sm_80", "--dtype", "bf16", "--head-dim", "64"]);
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

/// Random inputs in [-2, 2) for the end-to-end runs.
fn random_inputs(n: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Writes a little-endian f16 `.npy`.
fn write_npy_f16(path: &Path, shape: &[usize], data: &[f32]) {
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape64)
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(data.iter().map(|&x| half::f16::from_f32(x))).unwrap();
    w.finish().unwrap();
}

/// `tessera run attention` on the simulator, its O and LSE read back with `read_npy` and compared
/// with the f64 reference on the same dtype-rounded inputs.
fn run_and_check_on_sim(dtype: ElemType, causal: bool, q_shape: [usize; 4], kv_shape: [usize; 4], f16_q: bool, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let n = |s: [usize; 4]| s.iter().product::<usize>();
    let (q, k, v) = (random_inputs(n(q_shape), seed), random_inputs(n(kv_shape), seed + 1), random_inputs(n(kv_shape), seed + 2));
    if f16_q {
        write_npy_f16(&path("q.npy"), &q_shape, &q);
    } else {
        write_npy_f32(&path("q.npy"), &q_shape, &q).unwrap();
    }
    write_npy_f32(&path("k.npy"), &kv_shape, &k).unwrap();
    write_npy_f32(&path("v.npy"), &kv_shape, &v).unwrap();
    let s = |name: &str| path(name).to_string_lossy().into_owned();
    let (qp, kp, vp, op, lp) = (s("q.npy"), s("k.npy"), s("v.npy"), s("o.npy"), s("lse.npy"));
    let mut args = vec![
        "run", "attention", "--dtype", dtype.name(), "--q", &qp, "--k", &kp, "--v", &vp, "--out", &op, "--lse", &lp,
        "--backend", "sim",
    ];
    if causal {
        args.push("--causal");
    }
    let o = tessera(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("tessera-sim"), "names the device: {}", stderr(&o));

    let out = read_npy(&path("o.npy")).unwrap();
    assert_eq!(out.shape, q_shape);
    let lse = read_npy(&path("lse.npy")).unwrap();
    let [batch, seq_q, heads_q, head_dim] = q_shape;
    let [_, seq_k, heads_kv, _] = kv_shape;
    assert_eq!(lse.shape, [batch, heads_q, seq_q]);

    // What the CLI saw: an f16 file holds the f16-rounded values.
    let q_in = if f16_q { reference::round_to_dtype(&q, ElemType::F16) } else { q };
    let round = |x: &[f32]| reference::round_to_dtype(x, dtype);
    let problem = AttentionProblem { batch, seq_q, seq_k, heads_q, heads_kv, head_dim };
    let want = reference::attention(&round(&q_in), &round(&k), &round(&v), &problem, causal, f64::from(problem.default_scale()));
    let cmp = reference::compare(&out.data, &want.out);
    assert!(cmp.passes(reference::tolerance(dtype)), "{cmp:?}");
    for (i, (&g, &w)) in lse.data.iter().zip(&want.lse).enumerate() {
        if w == f64::NEG_INFINITY {
            assert_eq!(g, f32::NEG_INFINITY, "lse[{i}]: a row that sees no key");
        } else {
            assert!((f64::from(g) - w).abs() <= 1e-4 * w.abs().max(1.0), "lse[{i}] = {g}, want {w}");
        }
    }
}

#[test]
fn run_on_the_simulator_matches_the_reference() {
    // GQA 2:1, causal with more queries than keys (rows that see nothing), lengths off the tiles.
    run_and_check_on_sim(ElemType::BF16, true, [1, 37, 2, 64], [1, 21, 1, 64], false, 10);
}

#[test]
fn run_on_the_simulator_takes_f16_npy_inputs() {
    run_and_check_on_sim(ElemType::F16, false, [2, 5, 2, 32], [2, 40, 2, 32], true, 20);
}

#[test]
fn run_without_a_gpu_is_a_clear_error_and_auto_uses_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    // On a machine with a GPU this run succeeds; without one it must say so, not crash.
    let (o, out) = run_attention(dir.path(), &[1, 8, 2, 64], &[1, 8, 2, 64], &["--backend", "cuda"]);
    let gpu = o.status.success();
    if gpu {
        assert!(out.exists());
    } else {
        let e = stderr(&o);
        assert!(e.contains("GPU") && e.trim().lines().count() == 1, "{e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(!out.exists());
    }
    // The default backend runs everywhere: the GPU when there is one, else the simulator.
    let (o, out) = run_attention(dir.path(), &[1, 8, 2, 64], &[1, 8, 2, 64], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());
    if !gpu {
        assert!(stderr(&o).contains("tessera-sim") && stderr(&o).contains("(sim)"), "{}", stderr(&o));
    }
}
