//! `tessera run gemm` / `tessera run lora`, `emit` and `list` for the GEMM and LoRA families: the
//! .npy contract (shapes per layout, int32/int64 adapter ids, f32 output), results on the
//! simulator against the f64 references, and one-line errors that write nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};
use tessera::codegen::{Activation, Layout};
use tessera::npy::{read_npy, write_npy_f32};
use tessera::runtime::reference::{self, LoraOperands};
use tessera::ElemType;

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Writes `data` as f32 `.npy` and returns the path as a string.
fn save(dir: &Path, name: &str, shape: &[usize], data: &[f32]) -> String {
    let path = dir.join(format!("{name}.npy"));
    write_npy_f32(&path, shape, data).unwrap();
    path.to_string_lossy().into_owned()
}

/// Writes int64 or int32 ids.
fn save_ids(dir: &Path, ids: &[i64], int32: bool) -> String {
    let path = dir.join("ids.npy");
    let file = std::fs::File::create(&path).unwrap();
    let shape = [ids.len() as u64];
    use npyz::WriterBuilder;
    if int32 {
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(file).begin_nd().unwrap();
        w.extend(ids.iter().map(|&v| v as i32)).unwrap();
        w.finish().unwrap();
    } else {
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(file).begin_nd().unwrap();
        w.extend(ids.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    path.to_string_lossy().into_owned()
}

fn out_path(dir: &Path) -> (PathBuf, String) {
    let p = dir.join("y.npy");
    let s = p.to_string_lossy().into_owned();
    (p, s)
}

fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    let cmp = reference::compare(got, want);
    assert!(cmp.passes(tol), "{cmp:?}");
}

#[test]
fn list_and_emit_cover_gemm_and_lora() {
    let o = tessera(&["list"]);
    let s = String::from_utf8_lossy(&o.stdout);
    for needle in ["gemm", "lora", "--rank", "8, 16, 32, 64, 128", "--per-row", "--bottleneck"] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
    let o = tessera(&["emit", "lora", "--dtype", "bf16", "--rank", "16", "--per-row", "--w-layout", "col"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("tessera::lora<tessera::bf16, tessera::bf16, false, true,"));
    let o = tessera(&["emit", "gemm", "--dtype", "f16", "--out-type", "f32", "--block-k", "64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("gemm<tessera::f16, float, false, false, 128, 128, 64,"));
    let o = tessera(&["emit", "lora", "--dtype", "bf16", "--rank", "24"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unsupported rank `24`"), "{}", stderr(&o));
}

#[test]
fn run_gemm_col_major_x_with_epilogue_on_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let (m, n, k) = (19, 24, 13);
    let x = random(m * k, 1);
    let w = random(n * k, 2);
    let bias = random(n, 3);
    let xp = save(dir.path(), "x", &[k, m], &x);
    let wp = save(dir.path(), "w", &[n, k], &w);
    let bp = save(dir.path(), "bias", &[n], &bias);
    let (out, out_s) = out_path(dir.path());
    let o = tessera(&[
        "run", "gemm", "--dtype", "bf16", "--out-type", "f32", "--x", &xp, "--x-layout", "col", "--w", &wp, "--w-layout",
        "col", "--bias", &bp, "--activation", "silu", "--alpha", "0.5", "--out", &out_s, "--backend", "sim",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let y = read_npy(&out).unwrap();
    assert_eq!(y.shape, [m, n]);
    let r = |v: &[f32]| reference::round_to_dtype(v, ElemType::BF16);
    let want = reference::gemm(&r(&x), Layout::ColMajor, &r(&w), Layout::ColMajor, (m, n, k), None, Some(&bias), Activation::Silu, None, 0.5, 0.0);
    assert_close(&y.data, &want, 2e-5);
}

#[test]
fn run_lora_per_row_and_bottleneck_on_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let (m, n, k, r, adapters) = (6, 40, 24, 8, 3);
    let x = random(m * k, 10);
    let w = random(k * n, 11);
    let a = random(adapters * k * r, 12);
    let b = random(adapters * r * n, 13);
    let ids: Vec<i64> = vec![2, -1, 0, 0, 1, 2];
    let xp = save(dir.path(), "x", &[m, k], &x);
    let wp = save(dir.path(), "w", &[k, n], &w);
    let ap = save(dir.path(), "a", &[adapters, k, r], &a);
    let bp = save(dir.path(), "b", &[adapters, r, n], &b);
    let rr = |v: &[f32]| reference::round_to_dtype(v, ElemType::F16);
    let (xr, ar, br) = (rr(&x), rr(&a), rr(&b));
    let ops = LoraOperands { x: &xr, layout_x: Layout::RowMajor, a: &ar, b: &br, ids: Some(&ids), m, n, k, rank: r, dtype: ElemType::F16, scale: 0.5 };
    let want = reference::lora(&ops, &rr(&w), Layout::RowMajor, None, Activation::None, None);
    for int32 in [false, true] {
        let ip = save_ids(dir.path(), &ids, int32);
        let (out, out_s) = out_path(dir.path());
        let o = tessera(&[
            "run", "lora", "--dtype", "f16", "--out-type", "f32", "--x", &xp, "--w", &wp, "--a", &ap, "--b", &bp,
            "--adapter-ids", &ip, "--scale", "0.5", "--out", &out_s, "--backend", "sim",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let y = read_npy(&out).unwrap();
        assert_eq!(y.shape, [m, n]);
        assert_close(&y.data, &want, 2e-3);
    }

    // Bottleneck: Y = X + relu(X A) B, N = K, single adapter.
    let a1 = random(k * 16, 14);
    let b1 = random(16 * k, 15);
    let ap = save(dir.path(), "a1", &[k, 16], &a1);
    let bp = save(dir.path(), "b1", &[16, k], &b1);
    let (out, out_s) = out_path(dir.path());
    let o = tessera(&[
        "run", "lora", "--dtype", "f16", "--out-type", "f32", "--x", &xp, "--a", &ap, "--b", &bp, "--bottleneck", "relu",
        "--out", &out_s, "--backend", "sim",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ar, br) = (rr(&a1), rr(&b1));
    let ops = LoraOperands { a: &ar, b: &br, ids: None, n: k, rank: 16, scale: 1.0, ..ops };
    assert_close(&read_npy(&out).unwrap().data, &reference::bottleneck(&ops, Activation::Relu), 2e-3);
}

#[test]
fn run_lora_rejects_bad_input_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (m, n, k) = (4, 16, 8);
    let xp = save(dir.path(), "x", &[m, k], &random(m * k, 1));
    let wp = save(dir.path(), "w", &[k, n], &random(k * n, 2));
    let ap = save(dir.path(), "a", &[2, k, 8], &random(2 * k * 8, 3));
    let bp = save(dir.path(), "b", &[2, 8, n], &random(2 * 8 * n, 4));
    let a_bad_k = save(dir.path(), "a_bad_k", &[2, k + 1, 8], &random(2 * (k + 1) * 8, 3));
    let a_rank = save(dir.path(), "a_rank", &[k, 12], &random(k * 12, 3));
    let b_rank = save(dir.path(), "b_rank", &[12, n], &random(12 * n, 3));
    let w_bad = save(dir.path(), "w_bad", &[k, n + 8], &random(k * (n + 8), 2));
    let ids_bad = save_ids(dir.path(), &[0, 1, 2, -1], true);
    let (out, out_s) = out_path(dir.path());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--w", &wp, "--a", &ap, "--b", &bp], "--adapter-ids: required with stacked adapters"),
        (vec!["--w", &wp, "--a", &a_bad_k, "--b", &bp], "--a: K = 9"),
        (vec!["--w", &wp, "--a", &a_rank, "--b", &b_rank], "unsupported rank `12`"),
        (vec!["--w", &w_bad, "--a", &ap, "--b", &bp, "--adapter-ids", &ids_bad], "--w: N = 24"),
        (vec!["--w", &wp, "--a", &ap, "--b", &bp, "--adapter-ids", &ids_bad], "row 2 has adapter 2"),
        (vec!["--a", &ap, "--b", &bp, "--adapter-ids", &ids_bad], "--w: required"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["run", "lora", "--dtype", "bf16", "--x", &xp, "--out", &out_s, "--backend", "sim"];
        args.extend(extra);
        let o = tessera(&args);
        assert!(!o.status.success(), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains(needle) && e.lines().count() == 1, "{needle:?} not in {e}");
        assert!(!out.exists());
    }
}
