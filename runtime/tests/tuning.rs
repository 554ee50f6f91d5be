//! The tuner and the tuning database on the simulator (no GPU: candidates are compiled, run and
//! verified, not timed), and a launch picking up a tuned tile from the database.

mod common;

use tessera_codegen::{Arch, ElemType, GemmSpec, GemmTile, KernelSpec, TileChoice};
use tessera_runtime::amp::{adamw_target, cast_target, unscale_target, ElementsTuneShape};
use tessera_runtime::gemm::{gemm_target, prepare_gemm, GemmBuffers, GemmStrides, GemmTuneShape};
use tessera_runtime::simulator::SimOptions;
use tessera_runtime::tuning::{self, db, space, Agreement, CandidateStatus, DbEntry, TuneOptions, TuneTarget, TuningKey};
use tessera_runtime::{Backend, Compiler, GemmProblem, SimBackend};

#[test]
fn tuner_compiles_runs_and_verifies_candidates_on_the_simulator() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = SimBackend::with_options(Arch::SM80, SimOptions { checks: false, ..SimOptions::default() });
    let compiler = Compiler::new();
    let spec = GemmSpec::new(ElemType::F16, ElemType::F32);
    let problem = GemmProblem::new(48, 40, 64);
    let all = space::candidates(&spec.into(), Arch::SM80, &GemmTuneShape::of(&problem));
    assert!(all.iter().skip(1).all(|t| matches!(t, TileChoice::Gemm(g) if g.block_m <= 64 && g.block_n <= 64)));
    let candidates: Vec<TileChoice> = all.into_iter().take(4).collect();
    let target = gemm_target(&backend, &compiler, &spec, problem).unwrap();
    // An f32 output is held to f32 accumulation-order differences, far below a 16-bit output's.
    assert!(matches!(target.agreement(), Agreement::RelL2(t) if t < 1e-4), "{:?}", target.agreement());
    let report = tuning::tune(&target, &candidates, &TuneOptions { timing: false, ..TuneOptions::default() }, &|_, _, _| {});
    assert_eq!(report.results.len(), 4);
    for r in &report.results {
        assert_eq!(r.status, CandidateStatus::Compiled, "{}", r.tile);
    }
    assert!(report.best.is_none(), "nothing is chosen without timings");
}

#[test]
fn a_launch_uses_the_tuned_tile_from_the_database() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = SimBackend::new(Arch::SM80);
    let compiler = Compiler::new();
    let spec = GemmSpec::new(ElemType::BF16, ElemType::BF16);
    let problem = GemmProblem::new(40, 48, 32);
    let tuned = GemmTile::new(32, 32, 32, 4, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    let key = TuningKey::new(&KernelSpec::from(spec), &GemmTuneShape::of(&problem), backend.device_fingerprint());
    let (mut file, _) = db::TuningDb::open(&path);
    file.insert(DbEntry { key, tile: TileChoice::Gemm(tuned), median_ms: 1.0, throughput: 1.0, unit: "TFLOP/s".into(), candidates: 2 });
    file.save().unwrap();
    assert!(db::use_global_path(&path).is_none());

    let alloc = |bytes: usize| backend.alloc(bytes).unwrap();
    let (x, w, y) = (alloc(40 * 32 * 2), alloc(32 * 48 * 2), alloc(40 * 48 * 2));
    let buffers = GemmBuffers { x: &x, w: &w, c: None, bias: None, residual: None, y: &y, workspace: None };
    let strides = GemmStrides::contiguous(&spec, &problem);
    let launch = prepare_gemm(&backend, &compiler, &spec, &problem, &strides, &buffers, 1.0, 0.0).unwrap();
    let name = launch.kernel().unwrap().name().to_string();
    assert!(name.ends_with(&tuned.to_string()), "{name}");
    // Another shape bucket keeps the default.
    let other = GemmProblem::new(300, 48, 32);
    let (x2, y2) = (alloc(300 * 32 * 2), alloc(300 * 48 * 2));
    let b2 = GemmBuffers { x: &x2, y: &y2, ..buffers };
    let launch = prepare_gemm(&backend, &compiler, &spec, &other, &GemmStrides::contiguous(&spec, &other), &b2, 1.0, 0.0).unwrap();
    assert!(launch.kernel().unwrap().name().ends_with(&GemmSpec::default_tile(Arch::SM80).to_string()));
    // An explicit tile always wins.
    let explicit = spec.with_tile(GemmTile::new(64, 64, 32, 4, 2));
    let launch = prepare_gemm(&backend, &compiler, &explicit, &problem, &strides, &buffers, 1.0, 0.0).unwrap();
    assert!(launch.kernel().unwrap().name().ends_with("m64n64k32w4s2"));
}

#[test]
fn elementwise_family_targets_verify_on_the_simulator() {
    use tessera_codegen::{AdamWSpec, CastSpec, ElemType, UnscaleSpec};
    if !common::nvrtc_available() {
        return;
    }
    let backend = SimBackend::with_options(Arch::SM80, SimOptions { checks: false, ..SimOptions::default() });
    let compiler = Compiler::new();
    let opts = TuneOptions { timing: false, ..TuneOptions::default() };
    let cast = CastSpec::to_fp8(ElemType::BF16, ElemType::E4M3);
    let unscale = UnscaleSpec::default();
    let adamw = AdamWSpec::default();
    let cases: Vec<(KernelSpec, Box<dyn tuning::TuneTarget + '_>, ElementsTuneShape)> = vec![
        (cast.into(), Box::new(cast_target(&backend, &compiler, &cast, 3000).unwrap()), ElementsTuneShape { elements: 3000 }),
        (unscale.into(), Box::new(unscale_target(&backend, &compiler, &unscale, 5000, 3).unwrap()), ElementsTuneShape { elements: 5000 }),
        (adamw.into(), Box::new(adamw_target(&backend, &compiler, &adamw, 3000, 3).unwrap()), ElementsTuneShape { elements: 3000 }),
    ];
    for (spec, target, shape) in cases {
        // Every tile computes each element the same way: candidates must agree bit for bit.
        assert_eq!(target.agreement(), Agreement::BitExact, "{}", spec.family());
        let candidates: Vec<TileChoice> = space::candidates(&spec, Arch::SM80, &shape).into_iter().take(3).collect();
        assert_eq!(candidates.len(), 3, "{}", spec.family());
        let report = tuning::tune(target.as_ref(), &candidates, &opts, &|_, _, _| {});
        for r in &report.results {
            assert_eq!(r.status, CandidateStatus::Compiled, "{} {}", spec.family(), r.tile);
        }
    }
}

/// The whole timed path on the simulator (its "timings" are CPU wall time, fine for exercising
/// rotation, medians and selection): a winner is chosen among verified candidates.
#[test]
fn timed_tuning_picks_a_verified_winner() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = SimBackend::with_options(Arch::SM80, SimOptions { checks: false, ..SimOptions::default() });
    let compiler = Compiler::new();
    let spec = GemmSpec::new(ElemType::BF16, ElemType::F32);
    let candidates: Vec<TileChoice> = space::candidates(&spec.into(), Arch::SM80, &GemmTuneShape { m: 32, n: 32, k: 512 }).into_iter().take(3).collect();
    let target = gemm_target(&backend, &compiler, &spec, GemmProblem::new(32, 32, 512)).unwrap();
    assert!(target.copies() >= 1);
    let report = tuning::tune(&target, &candidates, &TuneOptions { warmup: 1, reps: 3, ..TuneOptions::default() }, &|_, _, _| {});
    let winner = report.winner().expect("a winner");
    assert!(matches!(winner.status, CandidateStatus::Timed { median_ms, throughput } if median_ms > 0.0 && throughput > 0.0));
    assert!(report.results.iter().all(|r| matches!(r.status, CandidateStatus::Timed { .. })), "{:?}", report.results);
}
