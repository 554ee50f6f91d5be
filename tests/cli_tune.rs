//! `tessera tune`: `--dry-run` lists the pruned space of every family without a GPU; without a GPU
//! a real run compiles every candidate and says timing needs one; bad shapes are one-line errors.

use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("the tessera binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn dry_run_lists_the_pruned_space_of_every_family() {
    let cases: [&[&str]; 6] = [
        &["attention", "--dtype", "bf16", "--head-dim", "64", "--causal", "--shapes", "1x16x16,1x8192x8192"],
        &["gemm", "--dtype", "f16", "--out-type", "f32", "--shapes", "16x4096x4096,4096x4096x4096"],
        &["lora", "--dtype", "bf16", "--rank", "64", "--per-row", "--shapes", "16x4096x4096x8"],
        &["cast", "--from", "f32", "--to", "e4m3", "--shapes", "1000000"],
        &["unscale", "--shapes", "4096"],
        &["adamw", "--shapes", "100000000"],
    ];
    for case in cases {
        let mut args = vec!["tune"];
        args.extend_from_slice(case);
        args.push("--dry-run");
        let o = tessera(&args);
        assert!(o.status.success(), "{case:?}: {}", stderr(&o));
        let s = stdout(&o);
        assert!(s.contains("candidates") && s.contains("(default)"), "{case:?}: {s}");
    }
    // Shape pruning: 16 query rows keep only 64-row tiles besides the default.
    let o = tessera(&["tune", "attention", "--dtype", "bf16", "--head-dim", "64", "--shapes", "1x16x16", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    let tiles: Vec<&str> = s.lines().skip(1).map(str::trim).collect();
    // The default first, then at least one pruned candidate: an empty list must not pass `all`.
    assert!(tiles.first().is_some_and(|t| t.ends_with("(default)")), "{s}");
    assert!(tiles.len() >= 2, "no candidate besides the default: {s}");
    assert!(tiles.iter().skip(1).all(|t| t.starts_with("m64n32") || t.starts_with("m64n16")), "{s}");
    let o = tessera(&["tune", "gemm", "--dtype", "bf16", "--shapes", "4096x4096x4096", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let big = stdout(&o).lines().count();
    let o = tessera(&["tune", "gemm", "--dtype", "bf16", "--shapes", "16x4096x4096", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A header, the default and at least one other candidate, and fewer than the large shape's.
    let small = stdout(&o).lines().count();
    assert!(small >= 3 && small < big, "{small} lines vs {big}");
}

#[test]
fn without_a_gpu_every_candidate_is_compiled_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tuning.json");
    let db_s = db.to_string_lossy().into_owned();
    let o = tessera(&["tune", "gemm", "--dtype", "bf16", "--shapes", "64x64x64", "--max-candidates", "3", "--arch", "sm_80", "--tuning-db", &db_s]);
    if o.status.success() && stderr(&o).contains("timing needs a CUDA GPU") {
        assert!(stdout(&o).contains("3 candidates compiled, 0 failed"), "{}", stdout(&o));
        assert!(!db.exists(), "nothing timed, nothing stored");
    } else {
        // On a GPU machine this tunes for real and stores the winner.
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(db.exists());
    }
}

#[test]
fn bad_shapes_are_one_line_errors() {
    for (family, shape) in [("gemm", "64x64"), ("attention", "1x2x0"), ("cast", "ten")] {
        let mut args = vec!["tune", family];
        match family {
            "gemm" => args.extend(["--dtype", "bf16"]),
            "attention" => args.extend(["--dtype", "bf16", "--head-dim", "64"]),
            _ => args.extend(["--from", "f32", "--to", "bf16"]),
        }
        args.extend(["--shapes", shape, "--dry-run"]);
        let o = tessera(&args);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("--shapes") && stderr(&o).lines().count() == 1, "{}", stderr(&o));
    }
}

#[test]
fn db_export_import_and_show() {
    use tessera::codegen::{GemmSpec, GemmTile, KernelSpec, ElemType, TileChoice};
    use tessera::runtime::gemm::GemmTuneShape;
    use tessera::runtime::tuning::{DbEntry, DeviceFingerprint, TuningDb, TuningKey};
    let dir = tempfile::tempdir().unwrap();
    let (src, shipped, dst) = (dir.path().join("src.json"), dir.path().join("shipped.json"), dir.path().join("dst.json"));
    let (mut db, _) = TuningDb::open(&src);
    let device = DeviceFingerprint { name: "NVIDIA H200".into(), compute_capability: (9, 0), driver: 13000, nvrtc: (13, 0) };
    let spec = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::BF16));
    db.insert(DbEntry {
        key: TuningKey::new(&spec, &GemmTuneShape { m: 4096, n: 4096, k: 4096 }, device),
        tile: TileChoice::Gemm(GemmTile::new(128, 256, 32, 8, 3)),
        median_ms: 0.25,
        throughput: 550.0,
        unit: "TFLOP/s".into(),
        candidates: 40,
    });
    db.save().unwrap();
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let o = tessera(&["db", "export", &s(&shipped), "--tuning-db", &s(&src)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tessera(&["db", "import", &s(&shipped), "--tuning-db", &s(&dst)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tessera(&["db", "show", "--tuning-db", &s(&dst)]);
    let out = stdout(&o);
    assert!(out.contains("1 entries") && out.contains("4096x4096x4096") && out.contains("m128n256k32w8s3") && out.contains("NVIDIA H200"), "{out}");
    std::fs::write(dir.path().join("bad.json"), "{ not json").unwrap();
    let o = tessera(&["db", "import", &s(&dir.path().join("bad.json")), "--tuning-db", &s(&dst)]);
    assert!(!o.status.success() && stderr(&o).contains("not a tuning database"), "{}", stderr(&o));
}
