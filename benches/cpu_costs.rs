//! CPU-side costs of the spec -> source -> binary path: rendering, a cold NVRTC compile (no cache),
//! and a cache hit (read + checksum of a stored entry).
//!
//! `cargo bench --bench cpu_costs` (needs NVRTC: `bash .ci/provision`). Criterion prints medians.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tessera::codegen::{AdapterMode, GemmSpec, KernelSpec, LoraSpec};
use tessera::runtime::{CacheKey, Compiler, KernelCache, Target};
use tessera::{Arch, AttentionFeatures, AttentionSpec, ElemType};

fn features(list: &str) -> AttentionFeatures {
    AttentionFeatures::parse(list).expect("feature names")
}

/// (name, spec, target architecture): the mma.sync kernels for sm_90, the TMA + wgmma ones for sm_90a.
fn specs() -> [(&'static str, KernelSpec, Arch); 9] {
    let lora_per_row = LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::new(ElemType::BF16, ElemType::BF16, 16) };
    [
        ("bf16_d128_causal_gqa", AttentionSpec::new(ElemType::BF16, 128, true, 16, 4).into(), Arch::SM90),
        (
            "bf16_d128_paged_decode",
            AttentionSpec::new(ElemType::BF16, 128, true, 32, 4).with_features(features("paged,pack_gqa,split_kv")).into(),
            Arch::SM90,
        ),
        (
            "bf16_d64_all_variants",
            AttentionSpec::new(ElemType::BF16, 64, true, 8, 2).with_features(features(&AttentionFeatures::NAMES.join(","))).into(),
            Arch::SM90,
        ),
        ("f16_d64_full_mha", AttentionSpec::new(ElemType::F16, 64, false, 8, 8).into(), Arch::SM90),
        ("gemm_bf16", GemmSpec::new(ElemType::BF16, ElemType::BF16).into(), Arch::SM90),
        ("lora_bf16_r16_per_row", lora_per_row.into(), Arch::SM90),
        ("sm90a_bf16_d128_causal_gqa", AttentionSpec::new(ElemType::BF16, 128, true, 16, 4).into(), Arch::SM90A),
        ("sm90a_gemm_bf16", GemmSpec::new(ElemType::BF16, ElemType::BF16).into(), Arch::SM90A),
        ("sm90a_lora_bf16_r16", LoraSpec::new(ElemType::BF16, ElemType::BF16, 16).into(), Arch::SM90A),
    ]
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    for (name, spec, arch) in specs() {
        group.bench_function(name, |b| b.iter(|| spec.render(arch).expect("valid spec")));
    }
    group.finish();
}

fn compile_cold(c: &mut Criterion) {
    let mut group = c.benchmark_group("nvrtc_compile_cold");
    // Each iteration is a real NVRTC run (about half a second): keep the sample small.
    group.sample_size(10);
    for (name, spec, arch) in specs() {
        let source = spec.render(arch).expect("valid spec");
        for target in [Target::ptx(arch), Target::cubin(arch)] {
            let id = format!("{name}/{}", target.output.name());
            // A fresh compiler each time: `Compiler` memoises what it built for its own lifetime.
            group.bench_function(id, |b| {
                b.iter_batched(Compiler::new, |c| c.compile(&source, target).expect("compiles"), BatchSize::PerIteration)
            });
        }
    }
    group.finish();
}

fn cache_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_hit");
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = KernelCache::open(dir.path()).expect("cache");
    let fresh = || Compiler::new().with_cache(KernelCache::open(dir.path()).expect("cache"));
    for (name, spec, arch) in specs() {
        let source = spec.render(arch).expect("valid spec");
        let target = Target::cubin(arch);
        fresh().compile(&source, target).expect("fills the cache");
        // The full disk-hit path of a new process: render + key + read + verify. A fresh compiler
        // each time, so its in-memory memo does not answer instead of the disk.
        group.bench_function(format!("{name}/compile_hit"), |b| {
            b.iter_batched(
                fresh,
                |c| {
                    let m = c.compile(&spec.render(arch).expect("valid"), target).expect("hit");
                    assert!(m.from_cache);
                    m
                },
                BatchSize::PerIteration,
            )
        });
        let key = CacheKey::new(&source.hash, target, (13, 0), &["bench".to_string()]);
        cache.put(&key, &vec![7u8; 200 * 1024]).expect("put");
        group.bench_function(format!("{name}/get_200KiB"), |b| {
            b.iter_batched(|| (), |_| cache.get(&key).into_image().expect("hit"), BatchSize::SmallInput)
        });
    }
    group.finish();
}

/// The tuning-database lookup every launch of a spec without an explicit tile makes: the key
/// (spec, bucketed shape, device fingerprint) and a hash-map probe, through a database of 1,000
/// entries. Target: under 1 us.
fn tuning_lookup(c: &mut Criterion) {
    use tessera::codegen::{GemmSpec, GemmTile, KernelSpec, ElemType, TileChoice};
    use tessera::runtime::gemm::GemmTuneShape;
    use tessera::runtime::tuning::{self, db, DbEntry, TuningKey};
    use tessera::runtime::{Backend, SimBackend};
    let backend = SimBackend::new(Arch::SM80);
    let spec = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::BF16));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tuning.json");
    let (mut file, _) = db::TuningDb::open(&path);
    for i in 0..1000usize {
        let key = TuningKey::new(&spec, &GemmTuneShape { m: 1 << (i % 20), n: 1 << (i / 20 % 20), k: 4096 }, backend.device_fingerprint());
        file.insert(DbEntry { key, tile: TileChoice::Gemm(GemmTile::new(64, 64, 32, 4, 2)), median_ms: 1.0, throughput: 1.0, unit: "TFLOP/s".into(), candidates: 1 });
    }
    file.save().expect("save");
    db::use_global_path(&path);
    let mut group = c.benchmark_group("tuning_lookup");
    group.bench_function("tuned_spec_hit", |b| b.iter(|| tuning::tuned_spec(&backend, spec, &GemmTuneShape { m: 1000, n: 4000, k: 4096 })));
    group.bench_function("tuned_spec_miss", |b| b.iter(|| tuning::tuned_spec(&backend, spec, &GemmTuneShape { m: 3, n: 5, k: 7 })));
    group.finish();
}

criterion_group!(benches, render, compile_cold, cache_hit, tuning_lookup);
criterion_main!(benches);
