//! Tuning on sm_90a (the simulator: candidates are compiled, run and verified, not timed): specs
//! that take the TMA + wgmma kernels search that kernel's tiles beside the mma.sync ones, and a
//! launch applies a stored sm_90a winner to the sm_90a kernel while a stored mma.sync winner still
//! routes to the mma.sync kernel. Its own test binary: it replaces the process-wide database.

mod common;

use tessera_codegen::{Arch, AttentionSpec, ElemType, GemmSpec, GemmTile, HopperGemmTile, HopperLoraTile, HopperTile, KernelSpec, LoraSpec, TileChoice, TileConfig};
use tessera_runtime::attention::{attention_target, prepare_attention, AttentionBuffers, AttentionProblem, AttentionStrides, AttentionTuneShape};
use tessera_runtime::gemm::{gemm_target, prepare_gemm, GemmBuffers, GemmStrides, GemmTuneShape};
use tessera_runtime::lora::{lora_target, LoraTuneShape};
use tessera_runtime::simulator::SimOptions;
use tessera_runtime::tuning::{self, db, space, CandidateStatus, DbEntry, TuneOptions, TuneShape, TuningKey};
use tessera_runtime::{Backend, Compiler, GemmProblem, LoraProblem, SimBackend};

fn sm90a() -> SimBackend {
    SimBackend::with_options(Arch::SM90A, SimOptions { checks: false, ..SimOptions::default() })
}

/// The default (first), one other sm_90a tile and one mma.sync tile of `all`, tuned without timing:
/// each compiles (ptxas: no spills), runs and matches the default's output.
fn tune_three(target: &dyn tuning::TuneTarget, all: &[TileChoice], other: TileChoice) {
    let mma = all.iter().find(|t| matches!(t, TileChoice::Attention(_) | TileChoice::Gemm(_))).expect("mma.sync tiles stay in the space");
    assert!(all.contains(&other), "{other} in {all:?}");
    tune_without_timing(target, &[all[0], other, *mma]);
}

/// Tunes `candidates` without timing: each must compile (ptxas: no spills), run and match the
/// first one's output.
fn tune_without_timing(target: &dyn tuning::TuneTarget, candidates: &[TileChoice]) {
    let report = tuning::tune(target, candidates, &TuneOptions { timing: false, ..TuneOptions::default() }, &|_, _, _| {});
    for r in &report.results {
        assert_eq!(r.status, CandidateStatus::Compiled, "{}", r.tile);
    }
}

#[test]
fn sm90a_specs_tune_both_kernels_on_the_simulator() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = sm90a();
    let compiler = Compiler::new();

    let spec = AttentionSpec::new(ElemType::BF16, 64, true, 2, 1);
    let problem = AttentionProblem::for_spec(&spec, 1, 130, 200);
    let all = space::candidates(&spec.into(), Arch::SM90A, &AttentionTuneShape::of(&problem));
    assert_eq!(all[0], TileChoice::HopperAttention(HopperTile::for_head_dim(64).unwrap()), "the sm_90a default first");
    let target = attention_target(&backend, &compiler, &spec, problem).unwrap();
    tune_three(&target, &all, TileChoice::HopperAttention(HopperTile { block_n: 64, stages: 3 }));

    // K = 128 is two 64-deep slices: no ring deeper than 3 stages is proposed (but the default).
    let spec = GemmSpec::new(ElemType::BF16, ElemType::F32);
    let all = space::candidates(&spec.into(), Arch::SM90A, &GemmTuneShape { m: 200, n: 296, k: 128 });
    assert_eq!(all[0], TileChoice::HopperGemm(HopperGemmTile::DEFAULT), "the sm_90a default first");
    assert!(!all.iter().any(|t| matches!(t, TileChoice::HopperGemm(h) if h.stages > 3 && *h != HopperGemmTile::DEFAULT)));
    let target = gemm_target(&backend, &compiler, &spec, GemmProblem::new(200, 296, 128)).unwrap();
    tune_three(&target, &all, TileChoice::HopperGemm(HopperGemmTile { block_n: 128, stages: 3 }));

    // LoRA: the sm_90a kernel (one tile per rank) first, weighed against the mma.sync tiles.
    let spec = LoraSpec::new(ElemType::BF16, ElemType::BF16, 32);
    let all = space::candidates(&spec.into(), Arch::SM90A, &LoraTuneShape { m: 150, n: 296, k: 136, adapters: 1 });
    assert_eq!(all[0], TileChoice::HopperLora(HopperLoraTile::for_rank(32)), "the sm_90a default first");
    assert_eq!(all.iter().filter(|t| matches!(t, TileChoice::HopperLora(_))).count(), 1);
    let target = lora_target(&backend, &compiler, &spec, LoraProblem::new(150, 296, 136, 1)).unwrap();
    let mma = all[1..].iter().copied().find(|t| matches!(t, TileChoice::Gemm(g) if g.block_m == 64)).expect("an mma.sync tile");
    tune_without_timing(&target, &[all[0], mma]);
}

#[test]
fn a_launch_applies_stored_sm90a_and_mma_sync_winners() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = sm90a();
    let compiler = Compiler::new();
    let attention = AttentionSpec::new(ElemType::F16, 128, false, 2, 2);
    let gemm = GemmSpec::new(ElemType::BF16, ElemType::BF16);
    let hopper_attention = HopperTile { block_n: 64, stages: 3 };
    let mma_attention = TileConfig::new(64, 32, 4, 2);
    let hopper_gemm = HopperGemmTile { block_n: 128, stages: 3 };
    let mma_gemm = GemmTile::new(32, 32, 32, 4, 1);
    // (spec, shape, stored winner): a long and a short attention problem, a large and a small GEMM.
    let attention_shape = |seq_q, seq_k| AttentionTuneShape { batch_heads: 2, seq_q, seq_k };
    let stored: [(KernelSpec, &dyn TuneShape, TileChoice); 4] = [
        (attention.into(), &attention_shape(150, 300), TileChoice::HopperAttention(hopper_attention)),
        (attention.into(), &attention_shape(20, 20), TileChoice::Attention(mma_attention)),
        (gemm.into(), &GemmTuneShape { m: 200, n: 296, k: 520 }, TileChoice::HopperGemm(hopper_gemm)),
        (gemm.into(), &GemmTuneShape { m: 40, n: 48, k: 32 }, TileChoice::Gemm(mma_gemm)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    let (mut file, _) = db::TuningDb::open(&path);
    for (spec, shape, tile) in stored {
        let key = TuningKey::new(&spec, shape, backend.device_fingerprint());
        file.insert(DbEntry { key, tile, median_ms: 1.0, throughput: 1.0, unit: "TFLOP/s".into(), candidates: 2 });
    }
    file.save().unwrap();
    assert!(db::use_global_path(&path).is_none());
    for (spec, shape, tile) in stored {
        let tuned = tuning::tuned_spec(&backend, spec, shape);
        assert_eq!(tuned.tile_choice(Arch::SM90A), Some(tile));
        assert_eq!(tuned.tile_label(Arch::SM90A), tile.to_string());
    }

    let alloc = |bytes: usize| backend.alloc(bytes).unwrap();
    let attention_kernel = |seq_q: usize, seq_k: usize| {
        let p = AttentionProblem::for_spec(&attention, 1, seq_q, seq_k);
        let (q, k, v, o) = (alloc(p.q_elements() * 2), alloc(p.kv_elements() * 2), alloc(p.kv_elements() * 2), alloc(p.q_elements() * 2));
        let buffers = AttentionBuffers { q: &q, k: &k, v: &v, o: &o, lse: None };
        let launch = prepare_attention(&backend, &compiler, &attention, &p, &AttentionStrides::contiguous(&p), &buffers, None).unwrap();
        launch.kernel().unwrap().name().to_string()
    };
    let name = attention_kernel(150, 300);
    assert!(name.ends_with(&format!("_sm90a_{hopper_attention}")), "{name}");
    let name = attention_kernel(20, 20);
    assert!(!name.contains("sm90a") && name.ends_with(&mma_attention.to_string()), "{name}");
    // A shape with no stored winner keeps the sm_90a default.
    let name = attention_kernel(600, 600);
    assert!(name.ends_with("_sm90a_m128n128s2"), "{name}");

    let gemm_kernel = |m: usize, n: usize, k: usize| {
        let p = GemmProblem::new(m, n, k);
        let (x, w, y) = (alloc(m * k * 2), alloc(k * n * 2), alloc(m * n * 2));
        let buffers = GemmBuffers { x: &x, w: &w, c: None, bias: None, residual: None, y: &y, workspace: None };
        let launch = prepare_gemm(&backend, &compiler, &gemm, &p, &GemmStrides::contiguous(&gemm, &p), &buffers, 1.0, 0.0).unwrap();
        launch.kernel().unwrap().name().to_string()
    };
    let name = gemm_kernel(200, 296, 520);
    assert!(name.ends_with(&format!("_sm90a_{hopper_gemm}")), "{name}");
    let name = gemm_kernel(40, 48, 32);
    assert!(!name.contains("sm90a") && name.ends_with(&mma_gemm.to_string()), "{name}");
    let name = gemm_kernel(1000, 1000, 1000);
    assert!(name.ends_with("_sm90a_m128n256k64s4"), "{name}");
}
