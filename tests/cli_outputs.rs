//! Outputs are all-or-nothing per command: every target is checked before anything is computed
//! (no directory, device node or FIFO replaced; no missing directory; no file named twice), all
//! outputs are moved into place together, new files honour the umask, and a failed command leaves
//! no output and no temporary file behind.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tessera::npy::{read_npy, write_npy_f32};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn save(dir: &Path, name: &str, shape: &[usize], data: &[f32]) -> String {
    let path = dir.join(format!("{name}.npy"));
    write_npy_f32(&path, shape, data).unwrap();
    s(&path)
}

fn fill(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect()
}

/// The names in `dir`, sorted: what a command left there.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    n.sort();
    n
}

/// Fails with one line of error output that contains every needle.
fn fails_with(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "succeeded: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in {e}");
    }
}

/// q, k, v for a small attention problem in `dir`.
fn qkv(dir: &Path) -> [String; 3] {
    let shape = [1, 8, 2, 64];
    let n = shape.iter().product();
    ["q", "k", "v"].map(|name| save(dir, name, &shape, &fill(n)))
}

fn attention(qkv: &[String; 3], extra: &[&str]) -> Output {
    let mut args = vec!["run", "attention", "--dtype", "f16", "--q", &qkv[0], "--k", &qkv[1], "--v", &qkv[2], "--backend", "sim"];
    args.extend_from_slice(extra);
    tessera(&args)
}

#[test]
fn attention_with_lse_in_a_missing_directory_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = qkv(dir.path());
    let before = names(dir.path());
    let out = dir.path().join("o.npy");
    let lse = dir.path().join("nodir/l.npy");
    let o = attention(&inputs, &["--out", &s(&out), "--lse", &s(&lse)]);
    fails_with(&o, &["--lse", "nodir", "does not exist"]);
    assert_eq!(names(dir.path()), before, "the failed run left files behind");
}

#[test]
fn special_files_and_directories_are_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = qkv(dir.path());
    let o = attention(&inputs, &["--out", "/dev/null"]);
    fails_with(&o, &["--out", "/dev/null", "character device"]);
    // Checked before anything is read or computed: the bad target is reported, not the bad input.
    let missing = [s(&dir.path().join("missing.npy")), inputs[1].clone(), inputs[2].clone()];
    fails_with(&attention(&missing, &["--out", "/dev/null"]), &["--out", "/dev/null", "character device"]);
    assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    let o = attention(&inputs, &["--out", &s(dir.path())]);
    fails_with(&o, &["--out", "directory"]);
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let o = attention(&inputs, &["--out", &s(&dir.path().join("o.npy")), "--lse", &s(&fifo)]);
    fails_with(&o, &["--lse", "FIFO"]);
    assert!(!dir.path().join("o.npy").exists());
    let x = save(dir.path(), "x", &[2, 16], &fill(32));
    let o = tessera(&["run", "window-max", "--k", "3", "--x", &x, "--out", &s(dir.path()), "--backend", "sim"]);
    fails_with(&o, &["--out", "directory"]);
}

#[test]
fn one_file_named_twice_is_an_error_naming_both_flags() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = qkv(dir.path());
    fs::create_dir(dir.path().join("sub")).unwrap();
    let out = dir.path().join("a.npy");
    let respelled = dir.path().join("sub/../a.npy");
    let o = attention(&inputs, &["--out", &s(&out), "--lse", &s(&respelled)]);
    fails_with(&o, &["--lse", "same file as --out"]);
    assert!(!out.exists());

    let x = save(dir.path(), "x", &[4, 8], &fill(32));
    let o = tessera(&["run", "cast", "--from", "f32", "--to", "bf16", "--x", &x, "--out", &s(&out), "--amax-out", &s(&respelled), "--backend", "sim"]);
    fails_with(&o, &["--amax-out", "same file as --out"]);

    let outs = format!("{},{}", s(&out), s(&respelled));
    let o = tessera(&["run", "unscale", "--grads", &format!("{x},{x}"), "--inv-scale", "0.5", "--out", &outs, "--backend", "sim"]);
    fails_with(&o, &["--out[1]", "same file as --out[0]"]);
    let o = tessera(&["run", "unscale", "--grads", &x, "--inv-scale", "0.5", "--out", &s(&out), "--found-inf-out", &s(&respelled), "--backend", "sim"]);
    fails_with(&o, &["--found-inf-out", "same file as --out[0]"]);
    assert!(!out.exists());
}

/// Runs the binary with the umask set to `mask` in the child only.
fn tessera_with_umask(mask: libc::mode_t, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args);
    // SAFETY: umask is async-signal-safe and touches nothing but the child's file-mode mask.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
    cmd.output().expect("the tessera binary runs")
}

#[test]
fn outputs_honour_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    const UMASK: libc::mode_t = 0o027;
    const WANT: u32 = 0o640;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let inputs = qkv(dir.path());
    let (out, lse) = (dir.path().join("o.npy"), dir.path().join("l.npy"));
    let args = ["run", "attention", "--dtype", "f16", "--q", &inputs[0], "--k", &inputs[1], "--v", &inputs[2], "--out", &s(&out), "--lse", &s(&lse), "--backend", "sim"];
    let o = tessera_with_umask(UMASK, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!((mode(&out), mode(&lse)), (WANT, WANT));

    let p = save(dir.path(), "p", &[6], &fill(6));
    let out_dir = dir.path().join("adamw");
    let o = tessera_with_umask(UMASK, &["run", "adamw", "--params", &p, "--grads", &p, "--out-dir", &s(&out_dir), "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for stem in ["master", "exp_avg", "exp_avg_sq", "model"] {
        assert_eq!(mode(&out_dir.join(format!("{stem}0.npy"))), WANT, "{stem}");
    }
}

#[test]
fn adamw_step_count_cannot_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let p = save(dir.path(), "p", &[6], &fill(6));
    let out_dir = dir.path().join("out");
    let o = tessera(&["run", "adamw", "--params", &p, "--grads", &p, "--step", "2147483647", "--out-dir", &s(&out_dir), "--backend", "sim"]);
    fails_with(&o, &["--step", "2147483647", "overflow"]);
    assert!(!stderr(&o).contains("-2147483648"));
    assert!(!out_dir.exists());
    // A skipped step does not count.
    let o = tessera(&["run", "adamw", "--params", &p, "--grads", &p, "--step", "2147483647", "--found-inf", "--out-dir", &s(&out_dir), "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("step 2147483647 -> 2147483647 (skipped"), "{}", stderr(&o));
}

#[test]
fn failed_adamw_leaves_no_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = save(dir.path(), "p", &[6], &fill(6));
    let g = save(dir.path(), "g", &[5], &fill(5));
    let out_dir: PathBuf = dir.path().join("new/out");
    let o = tessera(&["run", "adamw", "--params", &p, "--grads", &g, "--out-dir", &s(&out_dir), "--backend", "sim"]);
    fails_with(&o, &["--grads"]);
    assert!(!dir.path().join("new").exists(), "{:?}", names(dir.path()));
    // An existing file where the directory should be.
    let o = tessera(&["run", "adamw", "--params", &p, "--grads", &p, "--out-dir", &p, "--backend", "sim"]);
    fails_with(&o, &["--out-dir", "not a directory"]);
    assert_eq!(read_npy(Path::new(&p)).unwrap().data, fill(6));
}

#[test]
fn db_export_to_a_directory_is_refused_without_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("exported");
    fs::create_dir(&target).unwrap();
    let db = dir.path().join("tuning.json");
    let o = tessera(&["db", "export", &s(&target), "--tuning-db", &s(&db)]);
    fails_with(&o, &["exported", "directory"]);
    assert_eq!(names(dir.path()), ["exported"], "leftovers");
    assert!(names(&target).is_empty());
}

#[test]
fn gemm_beta_without_c_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let x = save(dir.path(), "x", &[8, 16], &fill(128));
    let w = save(dir.path(), "w", &[16, 8], &fill(128));
    let c = save(dir.path(), "c", &[8, 8], &fill(64));
    let out = dir.path().join("y.npy");
    let base = ["run", "gemm", "--dtype", "f16", "--x", &x, "--w", &w, "--out", &s(&out), "--backend", "sim"];
    let run = |extra: &[&str]| tessera(&[&base[..], extra].concat());
    // Any --beta without a C to scale, the default value spelled out included, would be ignored.
    for beta in ["2", "1"] {
        fails_with(&run(&["--beta", beta]), &["--beta", "--c"]);
        assert!(!out.exists());
    }
    let o = run(&["--beta", "0.5", "--c", &c]);
    assert!(o.status.success(), "{}", stderr(&o));
}
