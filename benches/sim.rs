//! The CPU simulator on attention: bf16, head_dim 128, seq 256, 2 heads, batch 1 (non-causal), with
//! the simulator's race/uninitialised-read checks on and off.
//!
//! `cargo bench --bench sim` (needs NVRTC: `bash .ci/provision`). NVRTC compiles the kernel once,
//! outside the timed loop (`prepare_attention`); each iteration is one simulated launch. Criterion's
//! throughput line is in simulated thread-instructions per second ("elem/s"); the `LaunchStats` of
//! one launch are printed first. These are CPU interpretation times: they say nothing about how
//! fast a GPU runs the kernel (`tessera bench` does that).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::runtime::common::buffers::encode;
use tessera::runtime::simulator::SimOptions;
use tessera::runtime::{prepare_attention, AttentionBuffers, AttentionProblem, AttentionStrides, Backend, Compiler, KernelCache, SimBackend};
use tessera::{Arch, AttentionSpec, ElemType};

fn attention(c: &mut Criterion) {
    let spec = AttentionSpec::new(ElemType::BF16, 128, false, 2, 2);
    let problem = AttentionProblem::for_spec(&spec, 1, 256, 256);
    let cache = std::env::temp_dir().join("tessera-sim-bench-cache");
    let compiler = Compiler::new().with_cache(KernelCache::open(cache).expect("kernel cache"));
    let mut group = c.benchmark_group("sim_attention_bf16_d128_s256_h2_b1");
    group.sample_size(10);
    for checks in [true, false] {
        let backend = SimBackend::with_options(Arch::SM80, SimOptions { checks, ..SimOptions::default() });
        let mut rng = StdRng::seed_from_u64(1);
        let mut upload = |n: usize| {
            let data: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let bytes = encode(&data, spec.dtype);
            let buffer = backend.alloc(bytes.len()).expect("alloc");
            backend.write(&buffer, &bytes).expect("write");
            buffer
        };
        let (q, k, v, o) =
            (upload(problem.q_elements()), upload(problem.kv_elements()), upload(problem.kv_elements()), upload(problem.q_elements()));
        let buffers = AttentionBuffers { q: &q, k: &k, v: &v, o: &o, lse: None };
        let strides = AttentionStrides::contiguous(&problem);
        let launch =
            prepare_attention(&backend, &compiler, &spec, &problem, &strides, &buffers, None).expect("compiles and loads");
        launch.run(&backend).expect("first launch");
        let stats = backend.last_stats().expect("stats of the first launch");
        let rate = stats.thread_instructions as f64 / stats.elapsed.as_secs_f64();
        println!(
            "checks {}: {stats:?} on {}: {:.1} M thread-instructions/s",
            if checks { "on" } else { "off" },
            backend.device_name(),
            rate / 1e6
        );
        group.throughput(Throughput::Elements(stats.thread_instructions));
        group.bench_function(if checks { "checks_on" } else { "checks_off" }, |b| {
            b.iter(|| launch.run(&backend).expect("launch"))
        });
        for buffer in [q, k, v, o] {
            backend.free(buffer).expect("free");
        }
    }
    group.finish();
}

criterion_group!(benches, attention);
criterion_main!(benches);
