//! Tuned defaults shipped with the library: tuning databases that `tessera tune` produced on a GPU
//! (exported with `tessera db export`), checked in under `runtime/tuned/` and compiled in. A launch
//! consults them when the user's own database has no entry for its key.
//!
//! They match on the GPU model and compute capability only, not on the driver and NVRTC versions
//! the user's own entries are keyed by: a tile measured on an H200 under one driver remains a good
//! default under the next, while the user's own tuning (exact key) always wins.

use std::collections::HashMap;
use std::sync::OnceLock;

use tessera_codegen::TileChoice;

use super::db::parse_entries;
use super::key::TuningKey;
use crate::device::backend::DeviceFingerprint;

/// (file name under `runtime/tuned/`, text) of every shipped database. Empty until a GPU run produces one: `benches/gpu/
/// first_contact.sh --tune` leaves `tuned/<gpu>.json` in its archive (`benches/gpu/run_all.py --tune`
/// writes `tuned.json`), which is checked in as `runtime/tuned/<gpu>.json` and listed here with
/// `include_str!`.
const SHIPPED: &[(&str, &str)] = &[];

/// The shipped tile for `key`, if a shipped database has one for its spec, shape bucket and GPU model.
pub fn lookup(key: &TuningKey) -> Option<TileChoice> {
    static INDEX: OnceLock<HashMap<TuningKey, TileChoice>> = OnceLock::new();
    INDEX.get_or_init(|| index(SHIPPED)).get(&relaxed(key)).copied()
}

/// `key` without the versions a shipped default does not depend on.
fn relaxed(key: &TuningKey) -> TuningKey {
    let device = DeviceFingerprint { driver: 0, nvrtc: (0, 0), ..key.device.clone() };
    TuningKey { device, ..key.clone() }
}

/// The entries of `files` by relaxed key; a file this build cannot read is skipped with a warning
/// (a later file's entry wins over an earlier one's).
fn index(files: &[(&str, &str)]) -> HashMap<TuningKey, TileChoice> {
    let mut out = HashMap::new();
    for (name, text) in files {
        match parse_entries(text, name) {
            Ok(entries) => out.extend(entries.into_iter().map(|e| (relaxed(&e.key), e.tile))),
            Err(warning) => eprintln!("warning: shipped {warning}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::db::{DbEntry, TuningDb};
    use crate::tuning::key::test_shape;
    use tessera_codegen::{Arch, ElemType, GemmSpec, HopperGemmTile, KernelSpec};

    fn device(driver: i32) -> DeviceFingerprint {
        DeviceFingerprint { name: "NVIDIA H200".into(), compute_capability: (9, 0), driver, nvrtc: (13, 0) }
    }

    #[test]
    fn shipped_entries_match_any_driver_of_the_same_gpu() {
        let spec = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::BF16));
        let tile = TileChoice::HopperGemm(HopperGemmTile { block_n: 128, stages: 5 });
        let dir = tempfile::tempdir().unwrap();
        let mut db = TuningDb::open(dir.path().join("tuning.json")).0;
        let key = TuningKey::new(&spec, &test_shape([8192, 8192, 8192]), device(13000));
        db.insert(DbEntry { key, tile, median_ms: 1.5, throughput: 700.0, unit: "TFLOP/s".into(), candidates: 9 });
        let file = dir.path().join("shipped.json");
        db.export(&file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let shipped = index(&[("h200.json", &text), ("broken.json", "{ not json")]);
        // Another driver and NVRTC, a shape in the same bucket: the shipped tile.
        let mut later = device(13020);
        later.nvrtc = (13, 1);
        assert_eq!(shipped.get(&relaxed(&TuningKey::new(&spec, &test_shape([5000, 8000, 6000]), later))), Some(&tile));
        // Another GPU, or another shape bucket: nothing.
        let h100 = DeviceFingerprint { name: "NVIDIA H100 80GB HBM3".into(), ..device(13000) };
        assert_eq!(shipped.get(&relaxed(&TuningKey::new(&spec, &test_shape([8192, 8192, 8192]), h100))), None);
        assert_eq!(shipped.get(&relaxed(&TuningKey::new(&spec, &test_shape([4096, 8192, 8192]), device(13000)))), None);
        // The shipped tile is one the spec takes on sm_90a.
        assert!(spec.with_tile_choice(tile).unwrap().validate(Arch::SM90A).is_ok());
    }

    /// What a shipped file must be: a database this build reads, with at least one entry.
    fn shipped_entries(name: &str, text: &str) -> std::result::Result<usize, String> {
        let entries = parse_entries(text, name)?;
        if entries.is_empty() {
            return Err(format!("{name}: no entries"));
        }
        Ok(entries.len())
    }

    /// Proves three things, so that an empty `SHIPPED` (as now) is checked rather than skipped:
    /// `SHIPPED` names exactly the files in `runtime/tuned/` (a database checked in but not compiled
    /// in, or listed but removed, fails here); every listed file parses with at least one entry;
    /// and that check rejects an unparsable or empty database and accepts a real export.
    #[test]
    fn the_compiled_in_databases_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tuned");
        let mut on_disk: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        on_disk.sort();
        let mut listed: Vec<String> = SHIPPED.iter().map(|(name, _)| name.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "SHIPPED must list exactly the files in {}", dir.display());
        for (name, text) in SHIPPED {
            shipped_entries(name, text).unwrap_or_else(|e| panic!("{e}"));
        }

        // The check above on fixtures: a real export of one entry passes, anything else fails.
        let tmp = tempfile::tempdir().unwrap();
        let mut db = TuningDb::open(tmp.path().join("tuning.json")).0;
        let export = |db: &TuningDb| {
            let file = tmp.path().join("export.json");
            db.export(&file).unwrap();
            std::fs::read_to_string(&file).unwrap()
        };
        let empty = export(&db);
        let spec = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::BF16));
        let tile = TileChoice::HopperGemm(HopperGemmTile { block_n: 128, stages: 5 });
        let key = TuningKey::new(&spec, &test_shape([8192, 8192, 8192]), device(13000));
        db.insert(DbEntry { key, tile, median_ms: 1.5, throughput: 700.0, unit: "TFLOP/s".into(), candidates: 9 });
        assert_eq!(shipped_entries("h200.json", &export(&db)), Ok(1));
        assert!(shipped_entries("empty.json", &empty).is_err());
        assert!(shipped_entries("broken.json", "{ not json").is_err());
        assert!(shipped_entries("truncated.json", &export(&db)[..20]).is_err());
    }
}
