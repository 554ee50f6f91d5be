//! `tessera doctor`: the JSON report (stable keys, on the last line of standard output) with the
//! simulator, and without a GPU the `--backend cuda` error exit that still prints the report.

use std::process::{Command, Output};

use serde_json::Value;

fn tessera(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command.args(args).env_remove("TESSERA_SYNC_TIMEOUT_S").env_remove("TESSERA_SIM_ARCH");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON object on the last line of standard output.
fn report(o: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr: {}", stderr(o)));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

const KEYS: [&str; 9] =
    ["tessera", "nvrtc", "ptxas", "cache_dir", "tuning_db", "sync_timeout_s", "backend", "backend_error", "nvrtc_error"];

#[test]
fn the_simulator_report_has_every_key() {
    let o = tessera(&["doctor", "--backend", "sim", "--json"], &[]);
    let r = report(&o);
    for key in KEYS {
        assert!(r.get(key).is_some(), "`{key}` missing: {r}");
    }
    assert_eq!(r["tessera"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["sync_timeout_s"], 120.0);
    assert!(r["cache_dir"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
    assert!(r["tuning_db"].as_str().is_some_and(|s| s.ends_with(".json")), "{r}");
    let backend = &r["backend"];
    assert_eq!(backend["kind"], "sim", "{r}");
    assert!(backend["device"].as_str().is_some_and(|d| d.starts_with("tessera-sim")), "{r}");
    assert_eq!((&backend["arch"], &backend["compute_capability"]), (&Value::from("sm_80"), &Value::from("8.0")));
    assert!(backend["driver_version"].is_null() && backend["multiprocessors"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert!(r["backend_error"].is_null(), "{r}");
    match r["nvrtc"].as_object() {
        Some(nvrtc) => {
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(nvrtc["version"].as_str().is_some_and(|v| v.starts_with("13.")), "{r}");
            assert!(nvrtc["path"].as_str().is_some_and(|p| p.contains("libnvrtc.so.13")), "{r}");
            assert!(nvrtc["origin"].as_str().is_some_and(|o| !o.is_empty()), "{r}");
            assert!(nvrtc.contains_key("builtins"), "{r}");
        }
        // Without NVRTC nothing compiles: reported, and a failure.
        None => {
            assert!(!o.status.success());
            assert!(r["nvrtc_error"].as_str().is_some_and(|e| e.contains("NVRTC")), "{r}");
        }
    }
    // ptxas: its path and release, or null.
    assert!(r["ptxas"].is_null() || r["ptxas"]["path"].is_string(), "{r}");
}

#[test]
fn without_a_gpu_backend_cuda_fails_after_printing_the_report() {
    let o = tessera(&["doctor", "--backend", "cuda", "--json"], &[]);
    let r = report(&o);
    if r["backend"].is_object() {
        // A GPU machine: the device is described.
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(r["backend"]["kind"], "cuda");
        assert!(r["backend"]["driver_version"].is_string(), "{r}");
        return;
    }
    assert!(!o.status.success(), "no GPU must be a failure with --backend cuda");
    assert_eq!(o.status.code(), Some(1));
    let error = r["backend_error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(error.contains("GPU") || error.contains("unsupported"), "{error}");
    assert!(stderr(&o).contains(error), "the error is also on standard error: {}", stderr(&o));
}

#[test]
fn the_gpu_deadline_in_effect_is_reported() {
    let r = report(&tessera(&["doctor", "--backend", "sim", "--json"], &[("TESSERA_SYNC_TIMEOUT_S", "0")]));
    assert_eq!(r["sync_timeout_s"], 0.0, "0: no deadline");
    let r = report(&tessera(&["doctor", "--backend", "sim", "--json"], &[("TESSERA_SYNC_TIMEOUT_S", "2.5")]));
    assert_eq!(r["sync_timeout_s"], 2.5);
    let o = tessera(&["doctor", "--backend", "sim", "--json"], &[("TESSERA_SYNC_TIMEOUT_S", "soon")]);
    let r = report(&o);
    assert!(r["sync_timeout_s"].is_null(), "{r}");
    assert!(r["sync_timeout_error"].as_str().is_some_and(|e| e.contains("TESSERA_SYNC_TIMEOUT_S") && e.contains("soon")), "{r}");
    // Asked for the GPU, the bad value is the error (it would be with a GPU too).
    let o = tessera(&["doctor", "--backend", "cuda", "--json"], &[("TESSERA_SYNC_TIMEOUT_S", "soon")]);
    assert!(!o.status.success());
    assert!(report(&o)["backend_error"].as_str().is_some_and(|e| e.contains("TESSERA_SYNC_TIMEOUT_S")));
}

#[test]
fn the_text_report_and_the_exit_status_help() {
    let o = tessera(&["doctor", "--backend", "sim"], &[]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    for needle in ["tessera ", "NVRTC", "ptxas", "kernel cache", "tuning db", "GPU deadline   120 s", "backend        sim"] {
        assert!(text.contains(needle), "`{needle}` missing:\n{text}");
    }
    let help = String::from_utf8_lossy(&tessera(&["--help"], &[]).stdout).into_owned();
    assert!(help.contains("doctor") && help.contains("3 GPU work did not finish"), "{help}");
}
