//! End to end: real NVRTC PTX of Tessera's attention kernel, run on small inputs and compared with
//! a simple f64 attention (inputs rounded to the kernel's dtype first).

mod common;

use common::{ptx, Rng};
use half::{bf16, f16};
use tessera_sim::{launch, GlobalMemory, LaunchConfig, Module, SimOptions};

/// What the kernel name `tessera_attention_fwd_{dtype}_d{d}_{causal|full}_h{q}x{kv}_m{bm}n{bn}w{w}s{s}` says.
#[derive(Debug, Clone, Copy)]
struct Spec {
    bf16: bool,
    head_dim: usize,
    causal: bool,
    group: usize,
    block_m: usize,
    block_n: usize,
    warps: usize,
    stages: usize,
}

fn spec_of(name: &str) -> Spec {
    let parts: Vec<&str> = name.split('_').collect();
    let num = |s: &str| -> usize { s.parse().expect(s) };
    let heads: Vec<usize> = parts[6][1..].split('x').map(num).collect();
    let tile = parts[7];
    let (m, rest) = tile[1..].split_once('n').expect("tile");
    let (n, rest) = rest.split_once('w').expect("tile");
    let (w, s) = rest.split_once('s').expect("tile");
    Spec {
        bf16: parts[3] == "bf16",
        head_dim: num(&parts[4][1..]),
        causal: parts[5] == "causal",
        group: heads[0] / heads[1],
        block_m: num(m),
        block_n: num(n),
        warps: num(w),
        stages: num(s),
    }
}

struct Problem {
    batch: usize,
    heads_q: usize,
    seq_q: usize,
    seq_k: usize,
}

fn round(x: f32, bf: bool) -> (u16, f64) {
    if bf {
        let h = bf16::from_f32(x);
        (h.to_bits(), h.to_f64())
    } else {
        let h = f16::from_f32(x);
        (h.to_bits(), h.to_f64())
    }
}

/// Every byte of O and LSE before a launch: NaN as f16, bf16 and f32, so an element the kernel
/// never writes fails the comparison with the reference.
const POISON: u8 = 0xff;

/// What one file's launches did and wrote.
struct Run {
    stats: tessera_sim::LaunchStats,
    /// O and LSE of every entry, as the kernel left them.
    bytes: Vec<u8>,
}

/// Runs one attention PTX file on random inputs and checks O and LSE against an f64 reference.
fn check_attention(file: &str, p: Problem, options: SimOptions) -> Run {
    let module = Module::parse(&ptx(file)).expect("parse");
    let mut total = Run { stats: tessera_sim::LaunchStats::default(), bytes: Vec::new() };
    for entry in module.entries() {
        let (s, bytes) = check_entry(&module, file, &entry, &p, options);
        total.stats.thread_instructions += s.thread_instructions;
        total.stats.ctas += s.ctas;
        total.stats.elapsed += s.elapsed;
        total.bytes.extend(bytes);
    }
    total
}

fn check_entry(module: &Module, file: &str, entry: &str, p: &Problem, options: SimOptions) -> (tessera_sim::LaunchStats, Vec<u8>) {
    let entry = entry.to_string();
    let s = spec_of(&entry);
    let d = s.head_dim;
    let heads_kv = p.heads_q / s.group;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (d as u64) << 20);
    let mut gen = |n: usize| -> (Vec<u16>, Vec<f64>) { (0..n).map(|_| round(rng.unit(), s.bf16)).unzip() };
    let (qb, qv) = gen(p.batch * p.seq_q * p.heads_q * d);
    let (kb, kv) = gen(p.batch * p.seq_k * heads_kv * d);
    let (vb, vv) = gen(p.batch * p.seq_k * heads_kv * d);

    let mem = GlobalMemory::new();
    let put = |data: &[u16]| -> u64 {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = mem.alloc(bytes.len());
        mem.write(a, &bytes).expect("write");
        a
    };
    let (q, k, v) = (put(&qb), put(&kb), put(&vb));
    let o_len = p.batch * p.seq_q * p.heads_q * d;
    let poisoned = |bytes: usize| -> u64 {
        let a = mem.alloc(bytes);
        mem.write(a, &vec![POISON; bytes]).expect("write");
        a
    };
    let o = poisoned(o_len * 2);
    let lse_len = p.batch * p.heads_q * p.seq_q;
    let lse = poisoned(lse_len * 4);

    let scale = 1.0 / (d as f64).sqrt();
    let mut params = Vec::new();
    for ptr in [q, k, v, o, lse] {
        params.extend_from_slice(&ptr.to_le_bytes());
    }
    let strides_q = [(p.seq_q * p.heads_q * d) as i64, (p.heads_q * d) as i64, d as i64];
    let strides_kv = [(p.seq_k * heads_kv * d) as i64, (heads_kv * d) as i64, d as i64];
    for st in [strides_q, strides_kv, strides_kv, strides_q] {
        for x in st {
            params.extend_from_slice(&x.to_le_bytes());
        }
    }
    params.extend_from_slice(&(p.seq_q as i32).to_le_bytes());
    params.extend_from_slice(&(p.seq_k as i32).to_le_bytes());
    params.extend_from_slice(&(p.heads_q as i32).to_le_bytes());
    params.extend_from_slice(&((scale * std::f64::consts::LOG2_E) as f32).to_le_bytes());
    assert_eq!(params.len(), 152);

    let smem = (s.block_m * d + s.stages * 2 * s.block_n * d) * 2;
    let config = LaunchConfig {
        grid: [p.seq_q.div_ceil(s.block_m) as u32, p.heads_q as u32, p.batch as u32],
        block: [(32 * s.warps) as u32, 1, 1],
        dynamic_shared_bytes: smem as u32,
    };
    let stats = launch(module, &entry, &config, &params, &mem, &options).unwrap_or_else(|e| panic!("{file}: {e}"));

    let mut ob = vec![0u8; o_len * 2];
    mem.read(o, &mut ob).expect("read o");
    let mut lb = vec![0u8; lse_len * 4];
    mem.read(lse, &mut lb).expect("read lse");
    let out: Vec<f64> = ob
        .chunks_exact(2)
        .map(|c| {
            let h = u16::from_le_bytes([c[0], c[1]]);
            if s.bf16 {
                bf16::from_bits(h).to_f64()
            } else {
                f16::from_bits(h).to_f64()
            }
        })
        .collect();
    let lse_out: Vec<f32> = lb.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();

    let tol = if s.bf16 { 2e-2 } else { 4e-3 };
    let mut worst = 0f64;
    for b in 0..p.batch {
        for h in 0..p.heads_q {
            let hk = h / s.group;
            for i in 0..p.seq_q {
                let qi = |c: usize| qv[((b * p.seq_q + i) * p.heads_q + h) * d + c];
                let kidx = |j: usize, c: usize| ((b * p.seq_k + j) * heads_kv + hk) * d + c;
                let visible: Vec<usize> = (0..p.seq_k)
                    .filter(|&j| !s.causal || (j as i64) <= i as i64 + p.seq_k as i64 - p.seq_q as i64)
                    .collect();
                let scores: Vec<f64> = visible.iter().map(|&j| scale * (0..d).map(|c| qi(c) * kv[kidx(j, c)]).sum::<f64>()).collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = w.iter().sum();
                let lse_ref = if visible.is_empty() { f64::NEG_INFINITY } else { m + sum.ln() };
                let got_lse = lse_out[(b * p.heads_q + h) * p.seq_q + i] as f64;
                if lse_ref.is_finite() {
                    assert!((got_lse - lse_ref).abs() < 1e-3, "{file}: lse b{b} h{h} i{i}: {got_lse} vs {lse_ref}");
                } else {
                    assert_eq!(got_lse, f64::NEG_INFINITY, "{file}: lse of a row without keys");
                }
                for c in 0..d {
                    let r: f64 = if visible.is_empty() {
                        0.0
                    } else {
                        visible.iter().zip(&w).map(|(&j, wj)| wj * vv[kidx(j, c)]).sum::<f64>() / sum
                    };
                    let got = out[((b * p.seq_q + i) * p.heads_q + h) * d + c];
                    let err = (got - r).abs();
                    worst = worst.max(err);
                    assert!(err < tol, "{file}: o b{b} h{h} i{i} c{c}: {got} vs {r}");
                }
            }
        }
    }
    eprintln!("{file}: max |err| {worst:.2e}, {} thread-instructions in {:?}", stats.thread_instructions, stats.elapsed);
    ob.extend(lb);
    (stats, ob)
}

#[test]
fn bf16_d128_causal() {
    check_attention("attn_bf16_d128_causal.ptx", Problem { batch: 1, heads_q: 2, seq_q: 130, seq_k: 130 }, SimOptions::default());
}

#[test]
fn f16_d64_full_gqa_rectangular() {
    // heads 4 over 2 K/V heads (GROUP 2), seq_q != seq_k, a partial last K/V tile.
    check_attention("attn_f16_d64_full.ptx", Problem { batch: 2, heads_q: 4, seq_q: 37, seq_k: 77 }, SimOptions::default());
}

#[test]
fn f16_d256_causal_bottom_right() {
    // seq_q < seq_k: causal aligned bottom-right; rows past the tile edge masked.
    check_attention("attn_f16_d256_causal.ptx", Problem { batch: 1, heads_q: 2, seq_q: 40, seq_k: 90 }, SimOptions::default());
}

#[test]
fn f16_d256_causal_rows_without_keys() {
    // seq_q > seq_k: the first seq_q - seq_k rows see no key (output 0, LSE -inf).
    check_attention("attn_f16_d256_causal.ptx", Problem { batch: 1, heads_q: 1, seq_q: 70, seq_k: 20 }, SimOptions::default());
}

#[test]
fn bf16_d96_one_stage() {
    check_attention("attn_bf16_d96_full_s1.ptx", Problem { batch: 1, heads_q: 2, seq_q: 70, seq_k: 75 }, SimOptions::default());
}

#[test]
fn f16_d32_three_stages_and_bf16_d192() {
    check_attention("attn_f16_d32_causal_s3_bf16_d192_full.ptx", Problem { batch: 1, heads_q: 2, seq_q: 100, seq_k: 130 }, SimOptions::default());
}

#[test]
fn checks_off_and_sequential_give_identical_bits() {
    // Same inputs (the generator is seeded by head_dim) through three option sets, each into freshly
    // poisoned O and LSE: every run is compared with the reference, and O and LSE must agree bit
    // for bit (as must the instruction counts).
    let p = || Problem { batch: 1, heads_q: 2, seq_q: 64, seq_k: 64 };
    let a = check_attention("attn_bf16_d96_full_s1.ptx", p(), SimOptions::default());
    let b = check_attention("attn_bf16_d96_full_s1.ptx", p(), SimOptions { checks: false, ..SimOptions::default() });
    let c = check_attention("attn_bf16_d96_full_s1.ptx", p(), SimOptions { parallel: false, ..SimOptions::default() });
    assert!(a.bytes == b.bytes, "checks off changed the output bits");
    assert!(a.bytes == c.bytes, "sequential execution changed the output bits");
    assert_eq!(a.stats.thread_instructions, b.stats.thread_instructions);
    assert_eq!(a.stats.thread_instructions, c.stats.thread_instructions);
    assert_eq!(a.stats.ctas, 2);
}
