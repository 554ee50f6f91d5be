//! The prepared GPU run (`benches/gpu/first_contact.sh`) on this machine, without a GPU: its budget
//! logic with fake binaries that hang, crash or pass, the shell's last line of defence when the
//! runner itself hangs, and a dry run of the preflight on the simulator with the real `tessera`.
//! In every case the summary and the archive must exist, and the run must end within its budget.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The GPU tests a bundle's manifest lists (benches/gpu/bundle.py's GPU_TESTS), in run order.
const TESTS: [&str; 5] = ["gpu_attention", "gpu_matmul", "gpu_amp", "sim_attention_variants", "gpu_watchdog"];
/// How long after its budget first_contact.sh may return: the finishing itself (a few seconds on a
/// loaded CI machine), never the budget's reserve (which is inside the budget).
const SLACK: Duration = Duration::from_secs(5);

/// A libtest binary that passes one test.
const PASSING_TEST: &str = "echo 'running 1 test'; echo 'test fake_gpu_test ... ok'; echo; \
                            echo 'test result: ok. 1 passed; 0 failed'";
/// Hangs and ignores SIGTERM (so only the SIGKILL to its process group stops it).
const HANGS: &str = "trap '' TERM; exec sleep 600";
const CRASHES: &str = "echo 'about to crash'; kill -SEGV $$";

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A bundle (benches/gpu/bundle.py, unstripped) holding `tessera` and one test binary per entry
/// of `tests` (TESTS order).
fn bundle(dir: &Path, tessera: &Path, tests: [&str; 5]) -> PathBuf {
    let fakes = dir.join("fakes");
    fs::create_dir_all(&fakes).unwrap();
    let sim_diff = script(&fakes, "sim_diff", HANGS);
    let out = dir.join("bundle");
    let mut cmd = Command::new("python3");
    // Unstripped (the fakes are scripts) and without the size limit (the real `tessera` here is a
    // debug build; prepare.sh checks the limit on the release bundle).
    cmd.arg(Path::new(REPO).join("benches/gpu/bundle.py")).args(["--no-strip", "--limit-mib", "4096", "--out"]).arg(&out);
    cmd.arg("--tessera").arg(tessera).arg("--sim-diff").arg(&sim_diff);
    for (name, body) in TESTS.iter().zip(tests) {
        let path = script(&fakes, &format!("test_{name}"), body);
        cmd.arg("--test").arg(format!("{name}={}", path.display()));
    }
    let made = cmd.output().expect("python3 runs");
    assert!(made.status.success(), "bundle.py: {}", String::from_utf8_lossy(&made.stderr));
    out
}

struct Outcome {
    code: Option<i32>,
    took: Duration,
    summary: String,
    archive: Vec<String>,
    console: String,
}

/// Runs first_contact.sh into dir/out with `args` (and `env`), output to a file (a leftover
/// process holding a pipe cannot make the test wait), and lists the archive.
fn first_contact(dir: &Path, mode_tune: bool, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let out = dir.join("out");
    let console = dir.join("console.txt");
    let log = fs::File::create(&console).unwrap();
    let mut cmd = Command::new("bash");
    cmd.current_dir(REPO).arg("benches/gpu/first_contact.sh").args(args).arg("--work").arg(dir.join("work")).arg(&out);
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let status = cmd.status().expect("bash runs");
    let took = start.elapsed();
    let name = if mode_tune { "first-contact-tune" } else { "first-contact" };
    let summary = fs::read_to_string(out.join(format!("{name}.md"))).unwrap_or_default();
    let listing = Command::new("tar").arg("-tzf").arg(out.join(format!("{name}.tar.gz"))).output().expect("tar runs");
    let archive = String::from_utf8_lossy(&listing.stdout).lines().map(str::to_string).collect();
    let outputs: Vec<String> = fs::read_dir(&out)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert_eq!(outputs.len(), 2, "OUTDIR holds exactly the summary and the archive: {outputs:?}");
    Outcome { code: status.code(), took, summary, archive, console: fs::read_to_string(console).unwrap_or_default() }
}

fn in_archive(o: &Outcome, path: &str) -> bool {
    o.archive.iter().any(|p| p.ends_with(path))
}

fn step_row<'a>(o: &'a Outcome, phase: &str, step: &str) -> &'a str {
    let prefix = format!("| {phase} | {step} | ");
    o.summary.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no row {prefix}\n{}", o.summary))
}

#[test]
fn a_hung_preflight_is_killed_and_the_run_still_reports_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = script(dir.path(), "tessera", HANGS);
    bundle(dir.path(), &tessera, [PASSING_TEST; 5]);
    let budget = 45;
    let o = first_contact(dir.path(), false, &["--bundle", &dir.path().join("bundle").to_string_lossy(),
                                              "--budget-s", &budget.to_string()], &[]);
    assert!(o.took < Duration::from_secs(budget) + SLACK, "took {:?}\n{}", o.took, o.console);
    assert_eq!(o.code, Some(1), "{}", o.console);
    assert!(step_row(&o, "preflight", "doctor").contains("| timeout |"), "{}", o.summary);
    assert!(o.summary.contains("stopped early: the preflight failed"), "{}", o.summary);
    assert!(!o.summary.contains("| tests |"), "nothing runs after a failed preflight:\n{}", o.summary);
    for file in ["run.json", "summary.md", "preflight/doctor.log", "bundle-manifest.json"] {
        assert!(in_archive(&o, file), "{file} not in {:?}", o.archive);
    }
}

#[test]
fn a_crashing_tessera_is_reported_with_its_signal() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = script(dir.path(), "tessera", CRASHES);
    bundle(dir.path(), &tessera, [PASSING_TEST; 5]);
    let o = first_contact(dir.path(), false, &["--bundle", &dir.path().join("bundle").to_string_lossy(),
                                              "--budget-s", "60"], &[]);
    assert_eq!(o.code, Some(1), "{}", o.console);
    assert!(step_row(&o, "preflight", "doctor").contains("killed by SIGSEGV"), "{}", o.summary);
    assert!(o.summary.contains("about to crash"), "the log's last lines are in the summary:\n{}", o.summary);
}

#[test]
fn hung_and_crashing_test_binaries_cost_their_timeout_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = script(dir.path(), "tessera", HANGS);
    bundle(dir.path(), &tessera, [PASSING_TEST, CRASHES, HANGS, PASSING_TEST, PASSING_TEST]);
    let hanging_python = script(dir.path(), "python", HANGS);
    let budget = 60;
    let o = first_contact(
        dir.path(),
        false,
        &["--bundle", &dir.path().join("bundle").to_string_lossy(), "--budget-s", &budget.to_string(),
          "--phases", "tests,headline,sweep", "--python", &hanging_python.to_string_lossy()],
        &[],
    );
    assert!(o.took < Duration::from_secs(budget) + SLACK, "took {:?}\n{}", o.took, o.console);
    assert_eq!(o.code, Some(1), "a test failed: {}", o.console);
    assert!(step_row(&o, "tests", "gpu_attention").contains("| ok |"), "{}", o.summary);
    assert!(step_row(&o, "tests", "gpu_matmul").contains("killed by SIGSEGV"), "{}", o.summary);
    assert!(step_row(&o, "tests", "gpu_amp").contains("| timeout |"), "{}", o.summary);
    // The hung binary took the rest of the time: what follows is skipped, not started late.
    assert!(step_row(&o, "tests", "sim_attention_variants").contains("| skipped |"), "{}", o.summary);
    assert!(step_row(&o, "headline", "attention").contains("| skipped |"), "{}", o.summary);
    assert!(in_archive(&o, "tests/gpu_amp.log") && in_archive(&o, "run.json"), "{:?}", o.archive);
}

#[test]
fn a_hung_timing_script_is_stopped_and_the_rest_skipped_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = script(dir.path(), "tessera", HANGS);
    bundle(dir.path(), &tessera, [PASSING_TEST; 5]);
    let hanging_python = script(dir.path(), "python", HANGS);
    let budget = 45;
    let o = first_contact(
        dir.path(),
        false,
        &["--bundle", &dir.path().join("bundle").to_string_lossy(), "--budget-s", &budget.to_string(),
          "--phases", "headline,sweep", "--python", &hanging_python.to_string_lossy()],
        &[],
    );
    assert!(o.took < Duration::from_secs(budget) + SLACK, "took {:?}\n{}", o.took, o.console);
    assert_eq!(o.code, Some(2), "nothing failed, something did not finish: {}", o.console);
    assert!(step_row(&o, "headline", "attention").contains("| timeout |"), "{}", o.summary);
    assert!(step_row(&o, "headline", "gemm_lora").contains("| skipped |"), "{}", o.summary);
    assert!(o.summary.contains("INCOMPLETE"), "{}", o.summary);
    assert!(in_archive(&o, "headline/attention/log.txt") && in_archive(&o, "results.json"), "{:?}", o.archive);
}

#[test]
fn a_hung_runner_is_killed_by_the_wrapper_which_still_writes_summary_and_archive() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = script(dir.path(), "tessera", HANGS);
    bundle(dir.path(), &tessera, [PASSING_TEST; 5]);
    // The interpreter of first_contact.py itself hangs: only the wrapper's hard limit stops it.
    let hanging_python = script(dir.path(), "python", &format!("echo 'runner stuck' >&2; {HANGS}"));
    let budget = 10;
    let o = first_contact(
        dir.path(),
        false,
        &["--bundle", &dir.path().join("bundle").to_string_lossy(), "--budget-s", &budget.to_string()],
        &[("PYTHON", &hanging_python.to_string_lossy())],
    );
    // The hard limit (budget + 10 s), then SIGKILL 5 s later: the hung runner ignores SIGTERM.
    assert!(o.took < Duration::from_secs(budget + 10 + 5) + SLACK, "took {:?}\n{}", o.took, o.console);
    assert_eq!(o.code, Some(137), "{}", o.console);
    assert!(o.summary.contains("did not finish"), "{}", o.summary);
    assert!(o.summary.contains("runner stuck"), "its stderr is quoted: {}", o.summary);
    assert!(in_archive(&o, "summary.md") && in_archive(&o, "orchestrator-stderr.log"), "{:?}", o.archive);
}

#[test]
fn a_missing_bundle_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let o = first_contact(dir.path(), false, &["--bundle", &dir.path().join("nowhere").to_string_lossy()], &[]);
    assert_eq!(o.code, Some(1), "{}", o.console);
    assert!(step_row(&o, "preflight", "bundle").contains("prepare.sh"), "{}", o.summary);
}

#[test]
fn a_tampered_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = script(dir.path(), "tessera", PASSING_TEST);
    let b = bundle(dir.path(), &tessera, [PASSING_TEST; 5]);
    fs::write(b.join("tests/gpu_amp"), "#!/usr/bin/env bash\necho changed\n").unwrap();
    let o = first_contact(dir.path(), false, &["--bundle", &b.to_string_lossy()], &[]);
    assert_eq!(o.code, Some(1), "{}", o.console);
    assert!(step_row(&o, "preflight", "bundle").contains("tests/gpu_amp: differs from the manifest"), "{}", o.summary);
}

/// The real `tessera` (this build) on the simulator at sm_90a: doctor, demo (the sm_90a and the
/// mma.sync attention kernels), gemm and lora (routed to the sm_90a kernels), cast and AdamW,
/// each checked against its exact reference by preflight.py.
#[test]
fn the_preflight_passes_on_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), Path::new(env!("CARGO_BIN_EXE_tessera")), [PASSING_TEST; 5]);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-sim-kernels");
    let o = first_contact(
        dir.path(),
        false,
        &["--bundle", &dir.path().join("bundle").to_string_lossy(), "--backend", "sim", "--phases", "preflight"],
        &[("TESSERA_SIM_ARCH", "sm_90a"), ("TESSERA_CACHE_DIR", &cache.to_string_lossy())],
    );
    assert_eq!(o.code, Some(0), "{}\n{}", o.summary, o.console);
    assert!(o.summary.contains("result: **PASSED**"), "{}", o.summary);
    for step in ["doctor", "demo", "gemm", "lora", "cast", "adamw"] {
        assert!(step_row(&o, "preflight", step).contains("| ok |"), "{step}: {}", o.summary);
    }
    assert!(step_row(&o, "preflight", "demo").contains("_sm90a_"), "{}", o.summary);
    assert!(step_row(&o, "preflight", "gemm").contains("bit-exact"), "{}", o.summary);
    assert!(step_row(&o, "preflight", "gemm").contains("tessera_gemm_bf16_f32_rr_none_sm90a"), "{}", o.summary);
    assert!(step_row(&o, "preflight", "adamw").contains("bit-exact"), "{}", o.summary);
    assert!(!o.summary.contains("## Warnings"), "both attention kernels ran, GEMM/LoRA on sm_90a:\n{}", o.summary);
    assert!(in_archive(&o, "doctor.json") && in_archive(&o, "preflight/lora.log"), "{:?}", o.archive);
}

/// A wrong result fails the preflight: the real `tessera`, except that one element of the GEMM's
/// output is changed after it is written.
#[test]
fn the_preflight_catches_a_wrong_gemm_result() {
    let dir = tempfile::tempdir().unwrap();
    let real = env!("CARGO_BIN_EXE_tessera");
    let corrupting = script(
        dir.path(),
        "tessera",
        &format!(
            "\"{real}\" \"$@\" || exit $?\n\
             if [[ \"$1 $2\" == \"run gemm\" ]]; then\n\
               out=''; prev=''; for a in \"$@\"; do [[ $prev == --out ]] && out=$a; prev=$a; done\n\
               printf '\\x01' | dd of=\"$out\" bs=1 seek=300 conv=notrunc status=none\n\
             fi"
        ),
    );
    bundle(dir.path(), &corrupting, [PASSING_TEST; 5]);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-sim-kernels");
    let o = first_contact(
        dir.path(),
        false,
        &["--bundle", &dir.path().join("bundle").to_string_lossy(), "--backend", "sim"],
        &[("TESSERA_CACHE_DIR", &cache.to_string_lossy())],
    );
    assert_eq!(o.code, Some(1), "{}", o.console);
    assert!(step_row(&o, "preflight", "gemm").contains("1 elements differ from the exact result"), "{}", o.summary);
    assert!(!o.summary.contains("| preflight | lora |"), "the run stops at the failed step:\n{}", o.summary);
}

/// The tuning run: doctor only, every `tessera tune` job into one database, copied as
/// tuned/<gpu>.json (the file to check in), then the headline timing with that database; its own
/// summary and archive names.
#[test]
fn the_tuning_run_leaves_the_database_to_check_in() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = script(
        dir.path(),
        "tessera",
        r#"case "$1" in
  doctor) echo '{"tessera": "0.1.0", "nvrtc": {"path": "/fake/libnvrtc.so.13", "version": "13.0", "origin": "test"},
    "backend": {"kind": "cuda", "device": "NVIDIA H100 80GB HBM3", "arch": "sm_90a"}}' | tr -d '\n'; echo ;;
  tune) prev=''; for a in "$@"; do [[ $prev == --tuning-db ]] && db=$a; prev=$a; done
        echo "{\"schema\": \"fake\", \"job\": \"$2\"}" > "$db"; echo "tuned $2" ;;
  db) echo "1 entry" ;;
  *) exit 1 ;;
esac"#,
    );
    bundle(dir.path(), &tessera, [PASSING_TEST; 5]);
    // Each timing script "runs" and writes nothing: the headline phase finishes, with no rows.
    let quick_python = script(dir.path(), "python", "echo \"timing $2 with the database $TESSERA_TUNING_DB\"");
    let o = first_contact(
        dir.path(),
        true,
        &["--tune", "--bundle", &dir.path().join("bundle").to_string_lossy(), "--budget-s", "60",
          "--python", &quick_python.to_string_lossy()],
        &[],
    );
    assert_eq!(o.code, Some(0), "{}\n{}", o.summary, o.console);
    assert!(o.summary.contains("tuned/nvidia-h100-80gb-hbm3.json"), "{}", o.summary);
    assert!(in_archive(&o, "tuned/nvidia-h100-80gb-hbm3.json") && in_archive(&o, "tune/db-show.log"), "{:?}", o.archive);
    assert!(step_row(&o, "tune", "attention d128 seq 8k").contains("| ok |"), "headline shape first:\n{}", o.summary);
    assert!(step_row(&o, "headline", "attention").contains("| ok |"), "{}", o.summary);
    assert!(!o.summary.contains("| preflight | demo |"), "the tuning run's preflight is doctor only:\n{}", o.summary);
    // The headline is timed with the tuned database.
    let log = fs::read_to_string(dir.path().join("work/headline/attention/log.txt")).unwrap();
    assert!(log.contains(&format!("with the database {}", dir.path().join("work/tuned.json").display())), "{log}");
}
