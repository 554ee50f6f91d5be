//! A tuning database written before the tuning keys were typed (positional shape vectors, the
//! `tessera-tuning-db` format version 1) keeps working: the fixture was written by that version
//! of the library, and every family's typed shape finds its entry, both through the database API
//! and through a launch that consults the global database.

mod common;

use tessera_codegen::{Arch, AttentionSpec, CastSpec, ElemType, GemmSpec, GemmTile, KernelSpec, LoraSpec, TileChoice, TileConfig};
use tessera_runtime::amp::ElementsTuneShape;
use tessera_runtime::attention::AttentionTuneShape;
use tessera_runtime::gemm::{prepare_gemm, GemmBuffers, GemmStrides, GemmTuneShape};
use tessera_runtime::lora::LoraTuneShape;
use tessera_runtime::tuning::{db, DeviceFingerprint, TuneShape, TuningKey};
use tessera_runtime::{Backend, Compiler, GemmProblem, SimBackend};

const OLD_DATABASE: &str = include_str!("fixtures/tuning_db_v1.json");

fn old_device() -> DeviceFingerprint {
    DeviceFingerprint { name: "Tessera simulator".into(), compute_capability: (8, 0), driver: 0, nvrtc: (13, 0) }
}

/// (spec, a typed shape in the stored bucket, the stored winner).
fn stored() -> Vec<(KernelSpec, Box<dyn TuneShape>, TileChoice)> {
    let gemm_tile = TileChoice::Gemm(GemmTile::new(32, 32, 32, 4, 1));
    vec![
        (
            AttentionSpec::new(ElemType::F16, 64, true, 4, 2).into(),
            Box::new(AttentionTuneShape { batch_heads: 8, seq_q: 100, seq_k: 300 }),
            TileChoice::Attention(TileConfig::new(64, 32, 4, 2)),
        ),
        (GemmSpec::new(ElemType::BF16, ElemType::F32).into(), Box::new(GemmTuneShape { m: 40, n: 48, k: 32 }), gemm_tile),
        (
            LoraSpec::new(ElemType::BF16, ElemType::BF16, 16).into(),
            Box::new(LoraTuneShape { m: 40, n: 48, k: 32, adapters: 1 }),
            gemm_tile,
        ),
        (
            CastSpec::new(ElemType::F32, ElemType::BF16).into(),
            Box::new(ElementsTuneShape { elements: 3000 }),
            TileChoice::Elementwise(tessera_codegen::ElementwiseTile { threads: 512, elems_per_thread: 32, vector: 4 }),
        ),
    ]
}

#[test]
fn typed_keys_find_every_entry_of_an_old_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    std::fs::write(&path, OLD_DATABASE).unwrap();
    let (file, warning) = db::TuningDb::open(&path);
    assert!(warning.is_none(), "{warning:?}");
    assert_eq!(file.len(), 4);
    for (spec, shape, tile) in stored() {
        let entry = file.lookup(&TuningKey::new(&spec, shape.as_ref(), old_device()));
        assert_eq!(entry.map(|e| e.tile), Some(tile), "{} {shape:?}", spec.family());
    }
    // Another bucket misses.
    let gemm = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::F32));
    assert!(file.lookup(&TuningKey::new(&gemm, &GemmTuneShape { m: 400, n: 48, k: 32 }, old_device())).is_none());
}

/// The old file, on this machine's simulator (its fingerprint carries this NVRTC's version): a
/// GEMM launch takes the stored tile.
#[test]
fn a_launch_takes_its_tile_from_an_old_database() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = SimBackend::new(Arch::SM80);
    let mut old: serde_json::Value = serde_json::from_str(OLD_DATABASE).unwrap();
    let device = serde_json::to_value(backend.device_fingerprint()).unwrap();
    for entry in old["entries"].as_array_mut().unwrap() {
        entry["key"]["device"] = device.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    std::fs::write(&path, serde_json::to_string(&old).unwrap()).unwrap();
    assert!(db::use_global_path(&path).is_none());

    let compiler = Compiler::new();
    let spec = GemmSpec::new(ElemType::BF16, ElemType::F32);
    let problem = GemmProblem::new(40, 48, 32);
    let alloc = |bytes: usize| backend.alloc(bytes).unwrap();
    let (x, w, y) = (alloc(40 * 32 * 2), alloc(32 * 48 * 2), alloc(40 * 48 * 4));
    let buffers = GemmBuffers { x: &x, w: &w, c: None, bias: None, residual: None, y: &y, workspace: None };
    let launch = prepare_gemm(&backend, &compiler, &spec, &problem, &GemmStrides::contiguous(&spec, &problem), &buffers, 1.0, 0.0).unwrap();
    let name = launch.kernel_name().unwrap().to_string();
    assert!(name.ends_with(&GemmTile::new(32, 32, 32, 4, 1).to_string()), "{name}");
}
