//! The CLI against hostile sizes and files: every out-of-range count, overflowing shape, endless or
//! oversized file is a one-line error (or, for the tuning database, a warning) naming the flag or
//! file, never an abort, a huge allocation or a hang.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tessera::npy::write_npy_f32;

/// Longer than any of these commands takes on the simulator; a command still running then is
/// reading something endless or waiting on something that never comes.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs the binary with extra environment variables, killed at [`DEADLINE`] (a hang fails the test
/// instead of stalling the suite).
fn tessera_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tessera binary runs");
    let started = Instant::now();
    while child.try_wait().expect("waiting for tessera").is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting tessera's output");
            panic!("tessera {args:?} still running after {DEADLINE:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collecting tessera's output")
}

fn tessera(args: &[&str]) -> Output {
    tessera_env(args, &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure reported by the program: exit status 1 and one `error:` line (no abort, no signal).
fn assert_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected a reported error, got {:?}: {e}", o.status);
    let line = e.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {e}"));
    for needle in needles {
        assert!(line.contains(needle), "missing {needle:?} in: {e}");
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A version-1 `.npy` file with any header shape and payload, as a damaged or hostile file may be.
fn raw_npy(path: &Path, descr: &str, shape: &str, data: &[u8]) -> String {
    const ALIGN: usize = 64;
    const PREFIX: usize = 10;
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = PREFIX + header.len() + 1;
    let text = format!("{header}{}\n", " ".repeat(unpadded.next_multiple_of(ALIGN) - unpadded));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
    s(path)
}

fn small_input(dir: &Path, name: &str, shape: &[usize]) -> String {
    let path = dir.join(name);
    let n = shape.iter().product::<usize>();
    write_npy_f32(&path, shape, &(0..n).map(|i| (i % 7) as f32 / 8.0).collect::<Vec<_>>()).unwrap();
    s(&path)
}

#[test]
fn an_out_of_range_split_count_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let q = small_input(dir.path(), "q.npy", &[1, 4, 1, 64]);
    let out = dir.path().join("o.npy");
    for splits in ["4294967296", "1000000", "129"] {
        let o = tessera(&[
            "run", "attention", "--backend", "sim", "--dtype", "f16", "--q", &q, "--k", &q, "--v", &q, "--out", &s(&out),
            "--num-splits", splits,
        ]);
        assert_error(&o, &["--num-splits", splits, "1..=128"]);
        assert!(!out.exists());
    }
}

#[test]
fn an_npy_shape_whose_element_count_overflows_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    // No data at all: 2^64 elements; and 3 x 6148914691236517206, which wraps to 2 unchecked.
    let huge = raw_npy(&dir.path().join("huge.npy"), "<f4", "(4294967296, 4294967296)", &[]);
    let wraps = raw_npy(&dir.path().join("wraps.npy"), "<f4", "(3, 6148914691236517206)", &[0; 8]);
    let out = dir.path().join("o.npy");
    let out_dir = dir.path().join("adamw");
    for x in [&huge, &wraps] {
        let file = Path::new(x).file_name().unwrap().to_string_lossy().into_owned();
        let runs: [&[&str]; 3] = [
            &["run", "cast", "--backend", "sim", "--from", "f32", "--to", "f16", "--x", x, "--out", &s(&out)],
            &["run", "unscale", "--backend", "sim", "--grads", x, "--inv-scale", "0.5", "--out", &s(&out)],
            &["run", "adamw", "--backend", "sim", "--params", x, "--grads", x, "--out-dir", &s(&out_dir)],
        ];
        for args in runs {
            assert_error(&tessera(args), &[&file, "more elements than this machine can address"]);
            assert!(!out.exists() && !out_dir.exists(), "{args:?} wrote an output");
        }
    }
}

#[test]
fn an_npy_file_shorter_or_longer_than_its_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.npy");
    for (shape, data, held) in [("(1000000000000,)", 0, "holds 0"), ("(4,)", 8, "holds 8"), ("(1,)", 8, "holds 8")] {
        let x = raw_npy(&dir.path().join("x.npy"), "<f4", shape, &vec![0; data]);
        let o = tessera(&["run", "cast", "--backend", "sim", "--from", "f32", "--to", "f16", "--x", &x, "--out", &s(&out)]);
        assert_error(&o, &["x.npy", "bytes of data", held]);
    }
}

#[test]
fn a_device_fifo_or_folder_given_as_npy_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("o.npy"));
    let fifo = dir.path().join("fifo.npy");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system entry.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for (x, kind) in [("/dev/zero".to_string(), "a character device"), (s(&fifo), "a FIFO"), (s(dir.path()), "a directory")] {
        let o = tessera(&["run", "cast", "--backend", "sim", "--from", "f32", "--to", "f16", "--x", &x, "--out", &out]);
        assert_error(&o, &[&x, "not a regular file", kind]);
    }
}

#[test]
fn an_output_too_large_for_the_host_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    // K = 0: the inputs hold nothing, Y would hold 4 x 10^18 elements.
    let x = raw_npy(&dir.path().join("x.npy"), "<f4", "(2000000000, 0)", &[]);
    let w = raw_npy(&dir.path().join("w.npy"), "<f4", "(0, 2000000000)", &[]);
    let out = dir.path().join("y.npy");
    let o = tessera(&["run", "gemm", "--backend", "sim", "--dtype", "f16", "--x", &x, "--w", &w, "--out", &s(&out)]);
    assert_error(&o, &["`y`", "host memory"]);
    assert!(!out.exists());
}

#[test]
fn endless_files_as_the_tuning_database_or_results_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let o = tessera(&["db", "show", "--tuning-db", "/dev/zero"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: /dev/zero: unreadable (not a regular file but a character device)"), "{}", stderr(&o));

    let x = small_input(dir.path(), "x.npy", &[4, 8]);
    let out = dir.path().join("y.npy");
    let run = ["run", "cast", "--backend", "sim", "--from", "f32", "--to", "f16", "--x", &x, "--out", &s(&out)];
    let o = tessera_env(&run, &[("TESSERA_TUNING_DB", "/dev/zero")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());

    let png = dir.path().join("plot.png");
    let o = tessera(&["plot", "--results", "/dev/zero", "--out", &s(&png)]);
    assert_error(&o, &["--results", "/dev/zero", "not a regular file"]);
    assert!(!png.exists());
}

/// An empty database of this build's format.
const EMPTY_DB: &str = r#"{"format": "tessera-tuning-db", "version": 1, "entries": []}"#;

#[test]
fn a_tuning_database_over_the_cap_is_ignored_and_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tuning.json");
    fs::write(&db, EMPTY_DB).unwrap();
    let cap = [("TESSERA_MAX_FILE_BYTES", "16")];
    let o = tessera_env(&["db", "show", "--tuning-db", &s(&db)], &cap);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("over the limit of 16 bytes (TESSERA_MAX_FILE_BYTES raises it)"), "{}", stderr(&o));

    let import = dir.path().join("import.json");
    fs::write(&import, EMPTY_DB).unwrap();
    let o = tessera_env(&["db", "import", &s(&import), "--tuning-db", &s(&db)], &cap);
    assert_error(&o, &["import.json", "over the limit"]);
    // The database itself over the cap, the imported file at it: a save refuses to replace what it
    // could not read.
    let at_import = fs::metadata(&import).unwrap().len().to_string();
    fs::write(&db, format!("{EMPTY_DB}\n\n")).unwrap();
    let o = tessera_env(&["db", "import", &s(&import), "--tuning-db", &s(&db)], &[("TESSERA_MAX_FILE_BYTES", &at_import)]);
    assert_error(&o, &["tuning.json", "over the limit", "not replaced"]);
    assert_eq!(fs::read_to_string(&db).unwrap(), format!("{EMPTY_DB}\n\n"));
}

#[test]
fn importing_a_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tuning.json");
    let missing = dir.path().join("missing.json");
    let o = tessera(&["db", "import", &s(&missing), "--tuning-db", &s(&db)]);
    assert_error(&o, &["missing.json", "no such file"]);
    assert!(!db.exists(), "a failed import created the database");
}

#[test]
fn negative_values_reach_the_range_checks() {
    let dir = tempfile::tempdir().unwrap();
    let x = small_input(dir.path(), "x.npy", &[8]);
    let out = s(&dir.path().join("o.npy"));
    let out_dir = s(&dir.path().join("adamw"));
    let runs: [(&[&str], &str); 5] = [
        (&["run", "cast", "--from", "f32", "--to", "f16", "--x", &x, "--out", &out, "--scale", "-1"], "--scale"),
        (&["run", "attention", "--dtype", "f16", "--q", &x, "--k", &x, "--v", &x, "--out", &out, "--scale", "-1"], "--scale"),
        (&["run", "unscale", "--grads", &x, "--out", &out, "--inv-scale", "-1"], "--inv-scale"),
        (&["run", "adamw", "--params", &x, "--grads", &x, "--out-dir", &out_dir, "--inv-scale", "-1"], "--inv-scale"),
        (&["run", "adamw", "--params", &x, "--grads", &x, "--out-dir", &out_dir, "--lr", "-1"], "lr"),
    ];
    for (args, flag) in runs {
        let o = tessera(args);
        assert!(!stderr(&o).contains("unexpected argument"), "{args:?}: {}", stderr(&o));
        assert_error(&o, &[flag, "-1"]);
    }
}

#[test]
fn a_file_named_as_the_cache_folder_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    fs::write(&file, b"").unwrap();
    let x = small_input(dir.path(), "x.npy", &[8]);
    let out = s(&dir.path().join("o.npy"));
    let o = tessera_env(
        &["run", "cast", "--backend", "sim", "--from", "f32", "--to", "f16", "--x", &x, "--out", &out],
        &[("TESSERA_CACHE_DIR", &s(&file))],
    );
    assert_error(&o, &["not-a-folder", "not a folder", "TESSERA_CACHE_DIR"]);
}

fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "tkc")).collect();
    entries.sort();
    entries
}

#[test]
fn a_cache_entry_replaced_by_another_kernels_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let env = [("TESSERA_CACHE_DIR", s(&cache))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let x = small_input(dir.path(), "x.npy", &[8]);
    let out = s(&dir.path().join("o.npy"));
    let cast = |to: &str| tessera_env(&["run", "cast", "--backend", "sim", "--from", "f32", "--to", to, "--x", &x, "--out", &out], &env);
    let o = cast("f16");
    assert!(o.status.success(), "{}", stderr(&o));
    let first = cache_entries(&cache);
    let o = cast("bf16");
    assert!(o.status.success(), "{}", stderr(&o));
    let second: Vec<PathBuf> = cache_entries(&cache).into_iter().filter(|p| !first.contains(p)).collect();
    assert_eq!((first.len(), second.len()), (1, 1), "one entry per kernel expected");
    // The bf16 kernel's entry now holds the f16 kernel's valid image.
    fs::copy(&first[0], &second[0]).unwrap();
    let o = cast("bf16");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("discarded corrupt kernel cache entry") && stderr(&o).contains("stored under key"), "{}", stderr(&o));
    let o = cast("bf16");
    assert!(o.status.success() && !stderr(&o).contains("discarded"), "not rebuilt: {}", stderr(&o));
}

#[test]
fn a_stale_tuning_database_lock_is_broken_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tuning.json");
    let import = dir.path().join("import.json");
    fs::write(&import, EMPTY_DB).unwrap();
    let lock = dir.path().join("tuning.json.lock");
    let left_by_a_killed_process = SystemTime::now() - Duration::from_secs(3600);
    fs::File::create(&lock).unwrap().set_modified(left_by_a_killed_process).unwrap();
    let started = Instant::now();
    let o = tessera(&["db", "import", &s(&import), "--tuning-db", &s(&db)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("breaking the stale tuning database lock"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10), "a stale lock stalled the save");
    assert!(!lock.exists());
}

#[test]
fn waiting_for_a_held_tuning_database_lock_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tuning.json");
    let import = dir.path().join("import.json");
    fs::write(&import, EMPTY_DB).unwrap();
    let lock = dir.path().join("tuning.json.lock");
    fs::File::create(&lock).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["db", "import", &s(&import), "--tuning-db", &s(&db)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Past the notice delay, well before the lock would count as stale; then the holder finishes.
    std::thread::sleep(Duration::from_secs(3));
    fs::remove_file(&lock).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("waiting for the tuning database lock"), "{}", stderr(&o));
}
