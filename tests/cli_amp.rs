//! `tessera run cast|unscale|adamw` on the simulator: the .npy contract, results against the Rust
//! references, and one-line errors for mismatched lists and bad scales that write nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use half::bf16;
use tessera::npy::{read_npy, write_npy_f32};
use tessera::runtime::reference::{self, AdamWHyper, Fp8Format};

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

fn path(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(name);
    let s = p.to_string_lossy().into_owned();
    (p, s)
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 - 1000.0) / 97.0).collect()
}

#[test]
fn cast_to_fp8_with_scale_and_amax() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = values(300, 1);
    x[7] = f32::NAN;
    x[8] = 1e9;
    let xp = save(dir.path(), "x", &[3, 100], &x);
    let (out, out_s) = path(dir.path(), "y.npy");
    let (amax, amax_s) = path(dir.path(), "amax.npy");
    let o = tessera(&["run", "cast", "--from", "f32", "--to", "e4m3", "--scale", "4", "--x", &xp, "--out", &out_s, "--amax-out", &amax_s, "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let y = read_npy(&out).unwrap();
    assert_eq!(y.shape, [3, 100]);
    let (bits, want_amax) = reference::scaled_cast_to_fp8(&x, 4.0, Fp8Format::E4M3);
    for (i, (&got, &b)) in y.data.iter().zip(&bits).enumerate() {
        let want = reference::fp8_to_f32(b, Fp8Format::E4M3);
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "element {i}: {got} want {want}");
    }
    assert_eq!(read_npy(&amax).unwrap().data, [want_amax]);
    assert_eq!(want_amax, 1e9);
}

#[test]
fn unscale_a_list_and_report_found_inf() {
    let dir = tempfile::tempdir().unwrap();
    let a = values(1000, 2);
    let mut b = values(33, 3);
    b[5] = f32::INFINITY;
    let (ap, bp) = (save(dir.path(), "a", &[1000], &a), save(dir.path(), "b", &[3, 11], &b));
    let (oa, oa_s) = path(dir.path(), "oa.npy");
    let (ob, ob_s) = path(dir.path(), "ob.npy");
    let (f, f_s) = path(dir.path(), "found.npy");
    let grads = format!("{ap},{bp}");
    let outs = format!("{oa_s},{ob_s}");
    let o = tessera(&["run", "unscale", "--grads", &grads, "--dtypes", "f16,bf16", "--inv-scale", "0.125", "--out", &outs, "--found-inf-out", &f_s, "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_npy(&f).unwrap().data, [1.0]);
    let mut want_a: Vec<half::f16> = a.iter().map(|&v| half::f16::from_f32(v)).collect();
    assert!(!reference::unscale_grads(&mut want_a, 0.125));
    assert_eq!(read_npy(&oa).unwrap().data, want_a.iter().map(|v| v.to_f32()).collect::<Vec<_>>());
    let mut want_b: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
    assert!(reference::unscale_grads(&mut want_b, 0.125));
    let got_b = read_npy(&ob).unwrap();
    assert_eq!(got_b.shape, [3, 11]);
    assert_eq!(got_b.data, want_b.iter().map(|v| v.to_f32()).collect::<Vec<_>>());

    // Mismatched lists and a bad scale: one line, nothing written.
    let (c, c_s) = path(dir.path(), "c.npy");
    for (extra, needle) in [
        (vec!["--grads", &grads, "--out", &c_s, "--inv-scale", "1"], "--out: 1 entries, but --grads has 2"),
        (vec!["--grads", &grads, "--out", &outs, "--dtypes", "f16,bf16,f32", "--inv-scale", "1"], "--dtypes: 3 entries"),
        (vec!["--grads", &ap, "--out", &c_s, "--inv-scale", "0"], "--inv-scale: 0 must be finite and positive"),
        (vec!["--grads", &ap, "--out", &c_s, "--dtypes", "e4m3", "--inv-scale", "1"], "e4m3 is not supported"),
    ] {
        let mut args = vec!["run", "unscale", "--backend", "sim"];
        args.extend(extra);
        let o = tessera(&args);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(needle) && stderr(&o).lines().count() == 1, "{needle:?} not in {}", stderr(&o));
        assert!(!c.exists());
    }
}

#[test]
fn adamw_step_and_skipped_step() {
    let dir = tempfile::tempdir().unwrap();
    let (p0, p1) = (values(70, 4).iter().map(|v| v / 10.0).collect::<Vec<_>>(), values(9, 5));
    let (g0, g1) = (values(70, 6), values(9, 7));
    let params = format!("{},{}", save(dir.path(), "p0", &[7, 10], &p0), save(dir.path(), "p1", &[9], &p1));
    let grads = format!("{},{}", save(dir.path(), "g0", &[7, 10], &g0), save(dir.path(), "g1", &[9], &g1));
    let out_dir = dir.path().join("out");
    let out_s = out_dir.to_string_lossy().into_owned();
    let o = tessera(&["run", "adamw", "--params", &params, "--grads", &grads, "--grad-dtype", "bf16", "--model-dtype", "bf16", "--lr", "0.01", "--step", "4", "--out-dir", &out_s, "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("step 4 -> 5"), "{}", stderr(&o));
    let hyper = AdamWHyper { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    for (i, (p, g)) in [(&p0, &g0), (&p1, &g1)].into_iter().enumerate() {
        let n = p.len();
        let (mut master, mut m, mut v) = (p.clone(), vec![0f32; n], vec![0f32; n]);
        let grad: Vec<bf16> = g.iter().map(|&x| bf16::from_f32(x)).collect();
        let mut model = vec![bf16::ZERO; n];
        reference::adamw_step(&mut master, &mut m, &mut v, &grad, None, &mut model, &hyper, 5);
        let read = |stem: &str| read_npy(&out_dir.join(format!("{stem}{i}.npy"))).unwrap().data;
        assert_eq!(read("master"), master, "param {i}");
        assert_eq!(read("exp_avg"), m);
        assert_eq!(read("exp_avg_sq"), v);
        assert_eq!(read("model"), model.iter().map(|x| x.to_f32()).collect::<Vec<_>>());
    }
    // found_inf: the outputs are the inputs and the step stays.
    let o = tessera(&["run", "adamw", "--params", &params, "--grads", &grads, "--found-inf", "--out-dir", &out_s, "--backend", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("step 0 -> 0 (skipped"), "{}", stderr(&o));
    assert_eq!(read_npy(&out_dir.join("master1.npy")).unwrap().data, p1);
    assert_eq!(read_npy(&out_dir.join("exp_avg0.npy")).unwrap().data, vec![0f32; 70]);
    // A gradient list of the wrong length.
    let o = tessera(&["run", "adamw", "--params", &params, "--grads", &save(dir.path(), "g", &[9], &g1), "--out-dir", &out_s, "--backend", "sim"]);
    assert!(stderr(&o).contains("--grads: 1 entries, but --params has 2"), "{}", stderr(&o));
}
