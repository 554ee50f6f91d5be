//! `tessera run attention` with the variant flags, on the simulator: .npy in (f32 tensors, int32 /
//! int64 tables), f32 .npy out, against the f64 reference; bad variant inputs are one-line errors
//! that leave no output behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use npyz::WriterBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::npy::{read_npy, write_npy_f32};
use tessera::runtime::reference::{self, SequenceDims, VariantOptions};
use tessera::ElemType;

fn tessera(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Writes a little-endian int32 (`wide = false`) or int64 `.npy`.
fn write_npy_int(path: &Path, shape: &[usize], data: &[i64], wide: bool) {
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let file = std::fs::File::create(path).unwrap();
    if wide {
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape64).writer(file).begin_nd().unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
    } else {
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape64).writer(file).begin_nd().unwrap();
        w.extend(data.iter().map(|&x| x as i32)).unwrap();
        w.finish().unwrap();
    }
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
    fn f32(&self, name: &str, shape: &[usize], data: &[f32]) -> String {
        write_npy_f32(&self.path(name), shape, data).unwrap();
        self.arg(name)
    }
    fn int(&self, name: &str, shape: &[usize], data: &[i64], wide: bool) -> String {
        write_npy_int(&self.path(name), shape, data, wide);
        self.arg(name)
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assert_matches(got: &[f32], lse: &[f32], want_out: &[f64], want_lse: &[f64], dtype: ElemType) {
    let cmp = reference::compare(got, want_out);
    assert!(cmp.passes(reference::tolerance(dtype)), "{cmp:?}");
    assert_eq!(lse.len(), want_lse.len());
    for (i, (&g, &w)) in lse.iter().zip(want_lse).enumerate() {
        if w == f64::NEG_INFINITY {
            assert_eq!(g, f32::NEG_INFINITY, "lse[{i}]");
        } else {
            assert!((f64::from(g) - w).abs() <= 1e-4 * w.abs().max(1.0), "lse[{i}] = {g}, want {w}");
        }
    }
}

#[test]
fn tree_over_a_paged_cache_with_split_kv_matches_the_reference() {
    // Two sequences of 37 and 20 keys in pages of 16 (int32 table, shuffled pages, -1 for unused
    // entries), the last 5 queries/keys a candidate tree, GQA 4:2 packed, 3 splits.
    let dir = Dir::new();
    let mut rng = StdRng::seed_from_u64(41);
    let (hq, hkv, d, page, n_tree) = (4usize, 2usize, 64usize, 16usize, 5usize);
    let seq_lens = [37usize, 20];
    let pages = 6;
    let table: Vec<i64> = vec![4, 0, 2, 5, 1, -1];
    let (q, kc, vc) = (random(2 * n_tree * hq * d, &mut rng), random(pages * page * hkv * d, &mut rng), random(pages * page * hkv * d, &mut rng));
    let parents: Vec<i64> = vec![-1, 0, 0, 1, 1];
    let mut a = args(&["run", "attention", "--dtype", "bf16", "--causal", "--backend", "sim", "--pack-gqa", "--num-splits", "3"]);
    a.extend(args(&["--q", &dir.f32("q.npy", &[2, n_tree, hq, d], &q)]));
    a.extend(args(&["--k", &dir.f32("k.npy", &[pages, page, hkv, d], &kc), "--v", &dir.f32("v.npy", &[pages, page, hkv, d], &vc)]));
    a.extend(args(&["--block-table", &dir.int("bt.npy", &[2, 3], &table, false)]));
    a.extend(args(&["--seq-lens", &dir.int("lens.npy", &[2], &[37, 20], true)]));
    a.extend(args(&["--tree-parents", &dir.int("parents.npy", &[n_tree], &parents, true)]));
    a.extend(args(&["--out", &dir.arg("o.npy"), "--lse", &dir.arg("lse.npy")]));
    let o = tessera(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("_tree_paged_pack_gqa_split_kv"), "{}", stderr(&o));
    let out = read_npy(&dir.path("o.npy")).unwrap();
    let lse = read_npy(&dir.path("lse.npy")).unwrap();
    assert_eq!(out.shape, [2, n_tree, hq, d]);
    assert_eq!(lse.shape, [2, hq, n_tree]);

    let round = |x: &[f32]| reference::round_to_dtype(x, ElemType::BF16);
    let want = reference::attention_paged(
        &round(&q),
        &round(&kc),
        &round(&vc),
        page,
        &table.iter().map(|&x| x as i32).collect::<Vec<_>>(),
        3,
        &seq_lens.map(|x| x as i32),
        n_tree,
        hq,
        hkv,
        d,
        &VariantOptions { causal: true, tree: Some(&[parents.iter().map(|&p| p as i32).collect()]), ..Default::default() },
        1.0 / (d as f64).sqrt() as f32 as f64,
    );
    assert_matches(&out.data, &lse.data, &want.out, &want.lse, ElemType::BF16);
}

#[test]
fn varlen_window_alibi_softcap_matches_the_reference() {
    let dir = Dir::new();
    let mut rng = StdRng::seed_from_u64(7);
    let (hq, hkv, d) = (4usize, 1usize, 32usize);
    let (lens_q, lens_k) = ([3usize, 0, 1, 30], [9usize, 4, 1, 25]);
    let cu = |l: &[usize]| std::iter::once(0i64).chain(l.iter().scan(0i64, |a, &x| { *a += x as i64; Some(*a) })).collect::<Vec<_>>();
    let (cu_q, cu_k) = (cu(&lens_q), cu(&lens_k));
    let (tq, tk) = (*cu_q.last().unwrap() as usize, *cu_k.last().unwrap() as usize);
    let (q, k, v) = (random(tq * hq * d, &mut rng), random(tk * hkv * d, &mut rng), random(tk * hkv * d, &mut rng));
    let slopes: Vec<f32> = (0..hq).map(|h| 0.5f32.powi(h as i32 + 1)).collect();
    let mut a = args(&["run", "attention", "--dtype", "f16", "--backend", "sim", "--window-left", "4", "--window-right", "2"]);
    a.extend(args(&["--softcap", "3.5", "--alibi-slopes", &dir.f32("s.npy", &[hq], &slopes)]));
    a.extend(args(&["--q", &dir.f32("q.npy", &[tq, hq, d], &q), "--k", &dir.f32("k.npy", &[tk, hkv, d], &k)]));
    a.extend(args(&["--v", &dir.f32("v.npy", &[tk, hkv, d], &v)]));
    a.extend(args(&["--cu-seqlens-q", &dir.int("cq.npy", &[5], &cu_q, false), "--cu-seqlens-k", &dir.int("ck.npy", &[5], &cu_k, true)]));
    a.extend(args(&["--out", &dir.arg("o.npy"), "--lse", &dir.arg("lse.npy")]));
    let o = tessera(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = read_npy(&dir.path("o.npy")).unwrap();
    let lse = read_npy(&dir.path("lse.npy")).unwrap();
    assert_eq!(out.shape, [tq, hq, d]);
    assert_eq!(lse.shape, [hq, tq]);

    let round = |x: &[f32]| reference::round_to_dtype(x, ElemType::F16);
    let opts = VariantOptions {
        window_left: Some(4),
        window_right: Some(2),
        softcap: Some(3.5),
        alibi_slopes: Some(&slopes),
        ..Default::default()
    };
    let to32 = |c: &[i64]| c.iter().map(|&x| x as i32).collect::<Vec<_>>();
    let want = reference::attention_varlen(&round(&q), &round(&k), &round(&v), &to32(&cu_q), &to32(&cu_k), hq, hkv, d, &opts, 1.0 / (d as f64).sqrt() as f32 as f64);
    assert_matches(&out.data, &lse.data, &want.out, &want.lse, ElemType::F16);
    // The reference's per-sequence path agrees on the last sequence (a sanity check of the layout).
    let last = reference::attention_sequence(
        &round(&q[4 * hq * d..]),
        &round(&k[14 * hkv * d..]),
        &round(&v[14 * hkv * d..]),
        &SequenceDims { seq_q: 30, seq_k: 25, heads_q: hq, heads_kv: hkv, head_dim: d },
        &opts,
        None,
        1.0 / (d as f64).sqrt() as f32 as f64,
    );
    assert_eq!(&want.out[4 * hq * d..], &last.out[..]);
}

/// Runs with `extra` on small valid dense inputs and expects a one-line error containing `needle`
/// and no output file.
fn rejects(dir: &Dir, extra: Vec<String>, needle: &str) {
    let mut rng = StdRng::seed_from_u64(1);
    let (q, k) = (random(2 * 5 * 2 * 32, &mut rng), random(2 * 5 * 32, &mut rng));
    let mut a = args(&["run", "attention", "--dtype", "bf16", "--backend", "sim"]);
    a.extend(args(&["--q", &dir.f32("q.npy", &[2, 5, 2, 32], &q), "--v", &dir.f32("v.npy", &[2, 5, 1, 32], &k)]));
    a.extend(extra);
    a.extend(args(&["--out", &dir.arg("o.npy")]));
    let o = tessera(&a);
    assert!(!o.status.success(), "{needle}: succeeded");
    let e = stderr(&o);
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
    assert_eq!(e.trim().lines().count(), 1, "one-line error: {e}");
    assert!(!dir.path("o.npy").exists());
}

#[test]
fn bad_variant_inputs_are_one_line_errors_before_launch() {
    let dir = Dir::new();
    let mut rng = StdRng::seed_from_u64(2);
    let k = dir.f32("k.npy", &[2, 5, 1, 32], &random(2 * 5 * 32, &mut rng));
    let cache = dir.f32("cache.npy", &[3, 16, 1, 32], &random(3 * 16 * 32, &mut rng));
    // A page index out of range (sequence 1 needs two pages; its second is page 9 of 3).
    let bt = dir.int("bt.npy", &[2, 2], &[0, 1, 2, 9], false);
    let lens = dir.int("lens.npy", &[2], &[20, 17], false);
    let mut a = args(&["run", "attention", "--dtype", "bf16", "--backend", "sim", "--k", &cache, "--v", &cache]);
    a.extend(args(&["--q", &dir.f32("q.npy", &[2, 5, 2, 32], &random(2 * 5 * 2 * 32, &mut rng))]));
    a.extend(args(&["--block-table", &bt, "--seq-lens", &lens, "--out", &dir.arg("o.npy")]));
    let o = tessera(&a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("`block_table[1][1]`: page 9 is out of range"), "{}", stderr(&o));
    assert!(!dir.path("o.npy").exists());

    // Parents that do not form a tree (and a tree needs --causal).
    let p = dir.int("p.npy", &[3], &[-1, 2, 0], false);
    rejects(&dir, args(&["--k", &k, "--causal", "--tree-parents", &p]), "tree.parents[1]");
    let p = dir.int("p2.npy", &[3], &[-1, 0, 0], false);
    rejects(&dir, args(&["--k", &k, "--tree-parents", &p]), "features.tree");
    // A negative window: clap's usage error, naming the flag and the rule.
    let mut a = args(&["run", "attention", "--dtype", "bf16", "--backend", "sim", "--k", &k, "--v", &k, "--window-left", "-3"]);
    a.extend(args(&["--q", &dir.f32("q.npy", &[2, 5, 2, 32], &random(2 * 5 * 2 * 32, &mut rng)), "--out", &dir.arg("o.npy")]));
    let o = tessera(&a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--window-left") && stderr(&o).contains("-3 is negative"), "{}", stderr(&o));
    assert!(!dir.path("o.npy").exists());
    // cu_seqlens not monotone.
    let cq = dir.int("cq.npy", &[3], &[0, 6, 4], false);
    let ck = dir.int("ck.npy", &[3], &[0, 5, 10], false);
    let mut a = args(&["run", "attention", "--dtype", "bf16", "--backend", "sim"]);
    a.extend(args(&["--q", &dir.f32("q3.npy", &[10, 2, 32], &random(10 * 2 * 32, &mut rng))]));
    a.extend(args(&["--k", &dir.f32("k3.npy", &[10, 1, 32], &random(10 * 32, &mut rng))]));
    a.extend(args(&["--v", &dir.f32("v3.npy", &[10, 1, 32], &random(10 * 32, &mut rng))]));
    a.extend(args(&["--cu-seqlens-q", &cq, "--cu-seqlens-k", &ck, "--out", &dir.arg("o.npy")]));
    let o = tessera(&a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("`cu_seqlens_q[2]`: 4 is below cu_seqlens_q[1] = 6"), "{}", stderr(&o));
    assert!(!dir.path("o.npy").exists());
}
