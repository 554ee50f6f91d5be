//! `tessera bench attention` and its variant flags, without needing a GPU: `--help` lists them, a bad
//! value is a one-line error naming its flag before any GPU is looked for, and a valid invocation
//! gets as far as opening the CUDA backend (on a machine without one: the clear no-GPU error; on a
//! GPU machine: the timing, whose JSON fields are checked).

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

fn bench(extra: &[&str]) -> Output {
    let mut args = vec!["bench", "attention", "--dtype", "bf16", "--head-dim", "128", "--warmup", "1", "--reps", "2"];
    args.extend_from_slice(extra);
    tessera(&args)
}

/// Decode over a paged cache: 2 sequences of 1000 keys in pages of 64, 32 query heads on 4 KV heads.
const DECODE: &[&str] = &[
    "--heads-q", "32", "--heads-kv", "4", "--batch", "2", "--seq-q", "1", "--seq-k", "1000", "--causal",
];

#[test]
fn help_lists_the_variant_flags() {
    let o = tessera(&["bench", "attention", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    for flag in [
        "--window-left", "--window-right", "--softcap", "--alibi", "--page-size", "--pack-gqa", "--num-splits",
        // The kernel choice: auto (sm_90a where it applies) or mma-sync.
        "--path", "auto", "mma-sync",
        // The existing interface stays.
        "--dtype", "--head-dim", "--causal", "--heads-q", "--heads-kv", "--batch", "--seq-q", "--seq-k", "--warmup",
        "--reps", "--json", "--block-m", "--block-n", "--warps", "--stages",
    ] {
        assert!(help.contains(flag), "`bench attention --help` lacks {flag}:\n{help}");
    }
}

#[test]
fn bad_variant_values_are_one_line_errors_before_the_gpu() {
    let cases: [(&[&str], &str); 6] = [
        (&["--page-size", "24"], "--page-size"),
        (&["--page-size", "8"], "--page-size"),
        (&["--num-splits", "500"], "--num-splits"),
        (&["--softcap", "0"], "--softcap"),
        (&["--softcap=-3"], "--softcap"),
        (&["--softcap", "inf"], "--softcap"),
    ];
    for (flags, named) in cases {
        let mut args = DECODE.to_vec();
        args.extend_from_slice(flags);
        let o = bench(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{flags:?} was accepted: {}", stdout(&o));
        assert_eq!(err.trim_end().lines().count(), 1, "{flags:?}: not one line:\n{err}");
        assert!(err.contains(named), "{flags:?}: the error does not name {named}: {err}");
        // Checked before the backend is opened: the same error with or without a GPU.
        assert!(!err.contains("CUDA") && !err.contains("GPU"), "{flags:?}: looked for a GPU first: {err}");
    }
    // Batch x splits beyond the grid.
    let o = bench(&["--batch", "65535", "--seq-q", "1", "--num-splits", "2"]);
    assert!(!o.status.success() && stderr(&o).contains("--num-splits") && !stderr(&o).contains("CUDA"), "{}", stderr(&o));
    // Spec fields too: heads that do not group.
    let o = bench(&["--heads-q", "6", "--heads-kv", "4", "--seq-q", "1", "--page-size", "16"]);
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("CUDA"), "spec checked before the GPU: {}", stderr(&o));
}

#[test]
fn bad_path_values_are_rejected_before_the_gpu() {
    for bad in ["wgmma", "sm90a", "mma_sync", ""] {
        let o = bench(&["--seq-q", "256", "--path", bad]);
        let err = stderr(&o);
        assert!(!o.status.success(), "--path {bad:?} was accepted: {}", stdout(&o));
        assert!(err.contains("--path"), "--path {bad:?}: the error does not name --path: {err}");
        assert!(err.contains("auto") && err.contains("mma-sync"), "--path {bad:?}: the allowed values are not listed: {err}");
        assert!(!err.contains("CUDA") && !err.contains("GPU"), "--path {bad:?}: looked for a GPU first: {err}");
    }
    // A valid --path with a bad variant value: still the variant's one-line error, before the GPU.
    let o = bench(&["--seq-q", "256", "--path", "mma-sync", "--softcap", "0"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("--softcap") && !err.contains("CUDA"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// A valid invocation either times on a GPU or stops at the clear no-GPU error.
fn gpu_or_no_gpu(o: &Output) -> Option<serde_json::Value> {
    if o.status.success() {
        let line = stdout(o);
        let last = line.trim().lines().last().unwrap_or_default().to_string();
        return Some(serde_json::from_str(&last).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
    }
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("CUDA") && err.contains("GPU"), "not the no-GPU error: {err}");
    None
}

#[test]
fn valid_variants_reach_the_cuda_backend() {
    // Paged decode, GQA packing, automatic split count.
    let mut args = DECODE.to_vec();
    args.extend_from_slice(&["--page-size", "64", "--pack-gqa", "--num-splits", "0", "--json"]);
    if let Some(v) = gpu_or_no_gpu(&bench(&args)) {
        assert_eq!(v["features"], "paged+pack_gqa+split_kv", "{v}");
        assert!(v["num_splits"].as_u64().is_some_and(|n| (1..=128).contains(&n)), "{v}");
        // Every key read once per sequence and KV head: 2 x 1000 x 4 x 128 x 2 tensors x 2 bytes.
        assert_eq!(v["kv_bytes"].as_u64(), Some(2 * 1000 * 4 * 128 * 2 * 2), "{v}");
        assert!(v["kv_gbps"].as_f64().is_some_and(|g| g > 0.0), "{v}");
        assert_eq!(v["page_size"].as_u64(), Some(64), "{v}");
    }
    // Local causal attention with soft-capping and ALiBi: FLOPs only over the window.
    let local = ["--seq-q", "512", "--causal", "--window-left", "64", "--softcap", "30", "--alibi", "--json"];
    if let Some(v) = gpu_or_no_gpu(&bench(&local)) {
        assert_eq!(v["features"], "local+alibi+softcap", "{v}");
        assert_eq!(v["num_splits"].as_u64(), Some(1), "{v}");
        let pairs: f64 = (0..512u32).map(|i| f64::from(i.min(64) + 1)).sum();
        let flops = 4.0 * 16.0 * pairs * 128.0;
        let tflops = flops / (v["median_ms"].as_f64().unwrap() * 1e-3) / 1e12;
        assert!((v["tflops"].as_f64().unwrap() - tflops).abs() <= 1e-9 * tflops.max(1.0), "{v}");
    }
    // Plain attention: the old interface, the new fields.
    if let Some(v) = gpu_or_no_gpu(&bench(&["--seq-q", "256", "--json"])) {
        assert_eq!(v["features"], "plain", "{v}");
        assert_eq!(v["kv_bytes"].as_u64(), Some(256 * 16 * 128 * 2 * 2), "{v}");
        check_path(&v);
    }
    // The mma.sync kernel forced: the same shape, never the sm_90a kernel.
    if let Some(v) = gpu_or_no_gpu(&bench(&["--seq-q", "256", "--path", "mma-sync", "--json"])) {
        assert_eq!(v["path"], "mma.sync", "{v}");
        check_path(&v);
    }
    // Variants always run the mma.sync kernel.
    if let Some(v) = gpu_or_no_gpu(&bench(&["--seq-q", "256", "--softcap", "30", "--path", "auto", "--json"])) {
        assert_eq!(v["path"], "mma.sync", "{v}");
    }
    // Text output (no --json) with an explicit split count and a two-sided window.
    let o = bench(&["--seq-q", "300", "--window-left", "10", "--window-right", "5", "--num-splits", "3"]);
    if o.status.success() {
        let text = stdout(&o);
        assert!(text.contains("features local+split_kv") && text.contains("num_splits 3") && text.contains("kv_gbps"), "{text}");
        assert!(text.contains("path mma.sync"), "{text}");
    } else {
        assert!(stderr(&o).contains("CUDA") && stderr(&o).trim_end().lines().count() == 1, "{}", stderr(&o));
    }
}

/// `path` agrees with the reported kernel's name.
fn check_path(v: &serde_json::Value) {
    let kernel = v["kernel"].as_str().unwrap_or_else(|| panic!("no kernel name: {v}"));
    let expected = if kernel.contains("_sm90a_") { "sm90a" } else { "mma.sync" };
    assert_eq!(v["path"], expected, "{v}");
}
