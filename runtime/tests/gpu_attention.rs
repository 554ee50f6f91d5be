//! Attention on a real GPU against the f64 CPU reference. Run with
//! `cargo test -p tessera-runtime --test gpu_attention -- --ignored` on a machine with a CUDA GPU.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_runtime::common::buffers::{encode, POISON_16};
use tessera_runtime::codegen::{AttentionSpec, ElemType, TileConfig};
use tessera_runtime::reference;
use tessera_runtime::{attention_forward, open_backend, prepare_attention, run_attention, AttentionBuffers, AttentionProblem, AttentionStrides, Backend, BackendKind, Compiler, KernelCache, TensorStrides};

fn backend() -> Box<dyn Backend> {
    open_backend(BackendKind::Cuda).unwrap_or_else(|e| panic!("these tests need a CUDA GPU: {e}"))
}

fn compiler() -> Compiler {
    // A private cache folder: the tests exercise the cache path without depending on the user's.
    let dir = std::env::temp_dir().join("tessera-gpu-test-cache");
    Compiler::new().with_cache(KernelCache::open(dir).expect("cache folder"))
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Runs one spec/shape on the GPU and compares output and log-sum-exp with the reference.
fn check_case(backend: &dyn Backend, compiler: &Compiler, spec: &AttentionSpec, p: AttentionProblem, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let q = random(&mut rng, p.q_elements());
    let k = random(&mut rng, p.kv_elements());
    let v = random(&mut rng, p.kv_elements());
    let label = format!("{} {p:?}", spec.kernel_name(backend.arch()));
    let got =
        run_attention(backend, compiler, spec, &p, &q, &k, &v, None, true).unwrap_or_else(|e| panic!("{label}: {e}"));
    // On an H100/H200, a spec that routes to the TMA + wgmma kernel must have run it.
    if backend.arch().has_wgmma() && !got.kernel.is_empty() {
        let routed = spec.hopper_tile(backend.arch()).is_ok();
        assert_eq!(got.kernel.contains("_sm90a_"), routed, "{label}: ran {} ({:?})", got.kernel, got.note);
    }

    let (qr, kr, vr) = (
        reference::round_to_dtype(&q, spec.dtype),
        reference::round_to_dtype(&k, spec.dtype),
        reference::round_to_dtype(&v, spec.dtype),
    );
    let want = reference::attention(&qr, &kr, &vr, &p, spec.causal, f64::from(p.default_scale()));
    let cmp = reference::compare(&got.out, &want.out);
    assert!(cmp.passes(reference::tolerance(spec.dtype)), "{label}: output {cmp:?}");

    let lse = got.lse.expect("lse requested");
    assert_eq!(lse.len(), want.lse.len());
    for (i, (&g, &w)) in lse.iter().zip(&want.lse).enumerate() {
        if w == f64::NEG_INFINITY {
            assert_eq!(g, f32::NEG_INFINITY, "{label}: lse[{i}] of a row that sees no key");
        } else {
            assert!((f64::from(g) - w).abs() <= 2e-3 * w.abs().max(1.0), "{label}: lse[{i}] = {g}, want {w}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn matches_the_reference_across_specs_and_shapes() {
    let backend = backend();
    let compiler = compiler();
    eprintln!("device: {} ({})", backend.device_name(), backend.arch());
    // (batch, seq_q, seq_k): tile-unaligned, single row, seq_q != seq_k both ways, exact tiles.
    let shapes = [(1, 1, 1), (2, 100, 130), (1, 130, 100), (1, 128, 128), (2, 1, 257), (1, 77, 1), (1, 300, 45)];
    let mut seed = 0;
    for dtype in ElemType::MMA_INPUTS {
        for head_dim in [64, 128, 256] {
            for causal in [false, true] {
                for (heads_q, heads_kv) in [(4, 4), (4, 2), (4, 1)] {
                    let spec = AttentionSpec::new(dtype, head_dim, causal, heads_q, heads_kv);
                    for &(batch, seq_q, seq_k) in &shapes {
                        seed += 1;
                        check_case(
                            &*backend,
                            &compiler,
                            &spec,
                            AttentionProblem::for_spec(&spec, batch, seq_q, seq_k),
                            seed,
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn every_head_dim_and_non_default_tiles_match() {
    let backend = backend();
    let compiler = compiler();
    let arch = backend.arch();
    for head_dim in tessera_runtime::codegen::ATTENTION_HEAD_DIMS {
        let base = AttentionSpec::new(ElemType::BF16, head_dim, true, 2, 1);
        for tile in base.space(arch).step_by(3) {
            let spec = base.with_tile(tile);
            check_case(
                &*backend,
                &compiler,
                &spec,
                AttentionProblem::for_spec(&spec, 1, 150, 190),
                u64::from(head_dim),
            );
        }
    }
    let small = AttentionSpec::new(ElemType::F16, 64, false, 2, 2).with_tile(TileConfig::new(64, 32, 4, 1));
    check_case(&*backend, &compiler, &small, AttentionProblem::for_spec(&small, 1, 65, 33), 7);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn empty_problems_and_no_keys() {
    let backend = backend();
    let compiler = compiler();
    let spec = AttentionSpec::new(ElemType::F16, 64, false, 2, 1);
    // seq_q = 0 and batch = 0 launch nothing and return empty outputs.
    for (batch, seq_q, seq_k) in [(0, 10, 10), (1, 0, 10)] {
        let p = AttentionProblem::for_spec(&spec, batch, seq_q, seq_k);
        let out = run_attention(
            &*backend,
            &compiler,
            &spec,
            &p,
            &vec![0.0; p.q_elements()],
            &vec![0.0; p.kv_elements()],
            &vec![0.0; p.kv_elements()],
            None,
            true,
        )
        .unwrap();
        assert!(out.out.is_empty() && out.lse.unwrap().is_empty());
    }
    // seq_k = 0: every row sees no key.
    check_case(&*backend, &compiler, &spec, AttentionProblem::for_spec(&spec, 1, 20, 0), 3);
    // Causal with more queries than keys: the first rows see nothing.
    let causal = AttentionSpec { causal: true, ..spec };
    check_case(&*backend, &compiler, &causal, AttentionProblem::for_spec(&causal, 1, 90, 30), 4);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn strided_layouts_match_contiguous_ones() {
    let backend = backend();
    let compiler = compiler();
    let spec = AttentionSpec::new(ElemType::BF16, 128, true, 4, 2);
    let p = AttentionProblem::for_spec(&spec, 2, 70, 90);
    let mut rng = StdRng::seed_from_u64(11);
    let (q, k, v) =
        (random(&mut rng, p.q_elements()), random(&mut rng, p.kv_elements()), random(&mut rng, p.kv_elements()));
    let contiguous = run_attention(&*backend, &compiler, &spec, &p, &q, &k, &v, None, false).unwrap();

    // Every tensor padded: heads to 136 elements, rows by one extra head.
    let pad = |seq: usize, heads: usize| TensorStrides {
        batch: seq * (heads + 1) * 136,
        seq: (heads + 1) * 136,
        head: 136,
        dim: 1,
    };
    let strides = AttentionStrides { q: pad(p.seq_q, 4), k: pad(p.seq_k, 2), v: pad(p.seq_k, 2), o: pad(p.seq_q, 4) };
    let scatter = |data: &[f32], seq: usize, heads: usize, s: TensorStrides| {
        let mut out = vec![0.0f32; p.batch * s.batch];
        for b in 0..p.batch {
            for t in 0..seq {
                for h in 0..heads {
                    for d in 0..p.head_dim {
                        out[b * s.batch + t * s.seq + h * s.head + d] =
                            data[((b * seq + t) * heads + h) * p.head_dim + d];
                    }
                }
            }
        }
        out
    };
    let upload = |data: &[f32]| {
        let buf = backend.alloc(data.len() * 2).unwrap();
        backend.write(&buf, &encode(data, spec.dtype)).unwrap();
        buf
    };
    let qb = upload(&scatter(&q, p.seq_q, 4, strides.q));
    let kb = upload(&scatter(&k, p.seq_k, 2, strides.k));
    let vb = upload(&scatter(&v, p.seq_k, 2, strides.v));
    let ob = backend.alloc(p.batch * strides.o.batch * 2).unwrap();
    backend.write(&ob, &POISON_16.to_le_bytes().repeat(p.batch * strides.o.batch)).unwrap();
    let buffers = AttentionBuffers { q: &qb, k: &kb, v: &vb, o: &ob, lse: None };
    attention_forward(&*backend, &compiler, &spec, &p, &strides, &buffers, None).unwrap();
    let mut raw = vec![0u8; ob.bytes()];
    backend.read(&ob, &mut raw).unwrap();
    let strided = tessera_runtime::common::buffers::decode(&raw, spec.dtype);
    let expected = scatter(&contiguous.out, p.seq_q, 4, strides.o);
    for b in 0..p.batch {
        for t in 0..p.seq_q {
            for h in 0..4 {
                let at = b * strides.o.batch + t * strides.o.seq + h * strides.o.head;
                assert_eq!(&strided[at..at + p.head_dim], &expected[at..at + p.head_dim], "b{b} t{t} h{h}");
                // The padding between heads was never written.
                assert!(
                    strided[at + p.head_dim..at + 136].iter().all(|x| x.is_nan()),
                    "b{b} t{t} h{h}: padding written"
                );
            }
        }
    }
    for buf in [qb, kb, vb, ob] {
        backend.free(buf).unwrap();
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn launches_can_be_timed() {
    let backend = backend();
    let compiler = compiler();
    let spec = AttentionSpec::new(ElemType::BF16, 128, true, 8, 2);
    let p = AttentionProblem::for_spec(&spec, 2, 1024, 1024);
    let strides = AttentionStrides::contiguous(&p);
    let (qo, kv) = (p.q_elements() * 2, p.kv_elements() * 2);
    let (q, k, v, o) = (
        backend.alloc(qo).unwrap(),
        backend.alloc(kv).unwrap(),
        backend.alloc(kv).unwrap(),
        backend.alloc(qo).unwrap(),
    );
    for (buf, n) in [(&q, qo), (&k, kv), (&v, kv)] {
        backend.write(buf, &vec![0u8; n]).unwrap();
    }
    let buffers = AttentionBuffers { q: &q, k: &k, v: &v, o: &o, lse: None };
    let launch = prepare_attention(&*backend, &compiler, &spec, &p, &strides, &buffers, None).unwrap();
    let times = launch.time(&*backend, 3, 10).unwrap();
    assert_eq!(times.len(), 10);
    assert!(times.iter().all(|&t| t > 0.0 && t.is_finite()), "{times:?}");
    eprintln!("{}: median {:.3} ms", spec.kernel_name(backend.arch()), {
        let mut t = times.clone();
        t.sort_by(f32::total_cmp);
        t[t.len() / 2]
    });
    // A freed buffer is caught before the next launch.
    backend.free(o).unwrap();
    assert!(launch.run(&*backend).is_err());
}
