//! The tuning database: JSON on disk, one entry per [`TuningKey`].
//!
//! Writes are atomic (temp file + rename) and serialised across processes with a lock file
//! (`<db>.json.lock`, created exclusively); a save re-reads the file under the lock and merges, so concurrent tuners
//! lose nothing. A file that is not valid JSON, or of another format version, is ignored with a
//! warning (and replaced on the next save), never trusted. Location: `TESSERA_TUNING_DB`, else
//! `tuning.json` in the kernel cache folder; [`use_global_path`] overrides it (the CLI's
//! `--tuning-db`). [`TuningDb::export`] / [`TuningDb::import`] ship a warm database with an app.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock};

use serde::{Deserialize, Serialize};
use tessera_codegen::TileChoice;

use super::key::TuningKey;
use crate::common::error::{Result, RuntimeError};
use crate::compile::cache::KernelCache;

/// The format version this build reads and writes.
pub const DB_VERSION: u32 = 1;
const FORMAT: &str = "tessera-tuning-db";

/// One tuned winner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DbEntry {
    pub key: TuningKey,
    pub tile: TileChoice,
    /// Median time of the winner, ms.
    pub median_ms: f64,
    /// TFLOP/s or GB/s (see `unit`) of the winner.
    pub throughput: f64,
    pub unit: String,
    /// How many candidates were timed.
    pub candidates: usize,
}

#[derive(Serialize, Deserialize)]
struct DbFile {
    format: String,
    version: u32,
    entries: Vec<DbEntry>,
}

#[derive(Debug, Default)]
pub struct TuningDb {
    path: Option<PathBuf>,
    entries: HashMap<TuningKey, DbEntry>,
}

impl TuningDb {
    /// An empty database that saves nowhere.
    pub fn in_memory() -> Self {
        TuningDb::default()
    }

    /// `TESSERA_TUNING_DB`, else `tuning.json` in the kernel cache folder.
    pub fn default_path() -> PathBuf {
        match std::env::var_os("TESSERA_TUNING_DB") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => KernelCache::default_dir().join("tuning.json"),
        }
    }

    /// Loads `path`. A missing file is an empty database; an unreadable, corrupt or foreign-version
    /// file is an empty database plus the warning to show.
    pub fn open(path: impl Into<PathBuf>) -> (TuningDb, Option<String>) {
        let path = path.into();
        let (entries, warning) = read_entries(&path);
        let db = TuningDb { path: Some(path), entries: entries.into_iter().map(|e| (e.key.clone(), e)).collect() };
        (db, warning)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn lookup(&self, key: &TuningKey) -> Option<&DbEntry> {
        self.entries.get(key)
    }

    pub fn entries(&self) -> impl Iterator<Item = &DbEntry> {
        self.entries.values()
    }

    pub fn insert(&mut self, entry: DbEntry) {
        self.entries.insert(entry.key.clone(), entry);
    }

    /// Merges this database into its file under the lock (entries here win) and reloads the
    /// union. Does nothing for an in-memory database.
    pub fn save(&mut self) -> Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let merged = locked_merge(&path, self.entries.values().cloned().collect())?;
        self.entries = merged.into_iter().map(|e| (e.key.clone(), e)).collect();
        Ok(())
    }

    /// Writes every entry to `path` (merging with what is there).
    pub fn export(&self, path: &Path) -> Result<usize> {
        Ok(locked_merge(path, self.entries.values().cloned().collect())?.len())
    }

    /// Adds the entries of the database at `path` (theirs win); an unusable file is an error here,
    /// since the caller asked for it explicitly.
    pub fn import(&mut self, path: &Path) -> Result<usize> {
        let (entries, warning) = read_entries(path);
        if let Some(w) = warning {
            return Err(RuntimeError::invalid("tuning db", w));
        }
        let n = entries.len();
        for e in entries {
            self.insert(e);
        }
        Ok(n)
    }
}

fn read_entries(path: &Path) -> (Vec<DbEntry>, Option<String>) {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), None),
        Err(e) => return (Vec::new(), Some(format!("{}: unreadable ({e}); tuning database ignored", path.display()))),
    };
    match parse_entries(&text, &path.display().to_string()) {
        Ok(entries) => (entries, None),
        Err(warning) => (Vec::new(), Some(warning)),
    }
}

/// The entries of a database file's text, or why it is not one this build reads (`origin` names
/// the file in the message).
pub(crate) fn parse_entries(text: &str, origin: &str) -> std::result::Result<Vec<DbEntry>, String> {
    match serde_json::from_str::<DbFile>(text) {
        Ok(f) if f.format == FORMAT && f.version == DB_VERSION => Ok(f.entries),
        Ok(f) => Err(format!(
            "{origin}: format {:?} version {} is not this build's ({FORMAT:?} version {DB_VERSION}); tuning database ignored",
            f.format, f.version
        )),
        Err(e) => Err(format!("{origin}: not a tuning database ({e}); ignored")),
    }
}

/// Under an exclusive lock on `<path>.lock`: read the file, add `ours` over it, write atomically.
/// Returns the merged entries.
fn locked_merge(path: &Path, ours: Vec<DbEntry>) -> Result<Vec<DbEntry>> {
    let io = |what: &str, e: std::io::Error| RuntimeError::invalid("tuning db", format!("{}: {what}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io("creating its folder", e))?;
    }
    let _lock = LockFile::acquire(path.with_extension("json.lock")).map_err(|e| io("locking", e))?;
    let (theirs, _) = read_entries(path);
    let mut merged: HashMap<TuningKey, DbEntry> = theirs.into_iter().map(|e| (e.key.clone(), e)).collect();
    for e in ours {
        merged.insert(e.key.clone(), e);
    }
    let mut entries: Vec<DbEntry> = merged.into_values().collect();
    entries.sort_by_cached_key(|e| serde_json::to_string(&e.key).unwrap_or_default());
    let file = DbFile { format: FORMAT.into(), version: DB_VERSION, entries };
    let json = serde_json::to_string_pretty(&file).map_err(|e| RuntimeError::invalid("tuning db", e.to_string()))?;
    let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| io("writing", e))?;
    f.write_all(json.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| io("writing", e))?;
    fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))?;
    Ok(file.entries)
}

/// An exclusive lock across processes: a lock file created with `create_new` (atomic), removed on
/// drop. A lock older than [`STALE_LOCK`] is taken to belong to a crashed process and broken.
struct LockFile(PathBuf);

const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(30);

impl LockFile {
    fn acquire(path: PathBuf) -> std::io::Result<LockFile> {
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(LockFile(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default() > STALE_LOCK)
                        .unwrap_or(false);
                    if stale {
                        let _ = fs::remove_file(&path);
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

static GLOBAL: OnceLock<RwLock<TuningDb>> = OnceLock::new();

fn global() -> &'static RwLock<TuningDb> {
    GLOBAL.get_or_init(|| {
        let (db, warning) = TuningDb::open(TuningDb::default_path());
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        RwLock::new(db)
    })
}

/// Replaces the process-wide database with the one at `path` (returns the load warning, if any).
pub fn use_global_path(path: &Path) -> Option<String> {
    let (db, warning) = TuningDb::open(path);
    match GLOBAL.get() {
        Some(lock) => {
            if let Ok(mut g) = lock.write() {
                *g = db;
            }
        }
        None => {
            let _ = GLOBAL.set(RwLock::new(db));
        }
    }
    warning
}

/// The tuned tile for `key` in the process-wide database.
pub fn global_lookup(key: &TuningKey) -> Option<TileChoice> {
    global().read().ok()?.lookup(key).map(|e| e.tile)
}

/// Inserts into the process-wide database and saves it.
pub fn global_insert(entries: Vec<DbEntry>) -> Result<()> {
    let lock = global();
    let mut db = lock.write().map_err(|_| RuntimeError::invalid("tuning db", "lock poisoned"))?;
    for e in entries {
        db.insert(e);
    }
    db.save()
}

/// The process-wide database's file.
pub fn global_path() -> Option<PathBuf> {
    global().read().ok()?.path().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::backend::DeviceFingerprint;
    use tessera_codegen::{AttentionSpec, ElemType, KernelSpec, TileConfig};

    fn entry(seq: usize, block_n: u32) -> DbEntry {
        let spec = KernelSpec::from(AttentionSpec::new(ElemType::BF16, 64, false, 8, 8));
        let device = DeviceFingerprint { name: "GPU".into(), compute_capability: (9, 0), driver: 13000, nvrtc: (13, 0) };
        DbEntry {
            key: TuningKey::new(&spec, &crate::tuning::key::test_shape([8, seq, seq]), device),
            tile: TileChoice::Attention(TileConfig::new(128, block_n, 8, 2)),
            median_ms: 1.0,
            throughput: 100.0,
            unit: "TFLOP/s".into(),
            candidates: 3,
        }
    }

    #[test]
    fn round_trip_export_import() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        let (mut db, w) = TuningDb::open(&path);
        assert!(w.is_none() && db.is_empty());
        db.insert(entry(1024, 64));
        db.insert(entry(4096, 128));
        db.save().unwrap();
        let (again, w) = TuningDb::open(&path);
        assert!(w.is_none());
        assert_eq!(again.len(), 2);
        assert_eq!(again.lookup(&entry(1000, 0).key).map(|e| e.tile), Some(entry(0, 64).tile));
        let shipped = dir.path().join("shipped.json");
        assert_eq!(again.export(&shipped).unwrap(), 2);
        let mut fresh = TuningDb::in_memory();
        assert_eq!(fresh.import(&shipped).unwrap(), 2);
        assert_eq!(fresh.len(), 2);
    }

    #[test]
    fn corrupt_and_foreign_files_are_ignored_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        fs::write(&path, "{ not json").unwrap();
        let (mut db, w) = TuningDb::open(&path);
        assert!(db.is_empty() && w.unwrap().contains("not a tuning database"));
        db.insert(entry(64, 32));
        db.save().unwrap();
        assert_eq!(TuningDb::open(&path).0.len(), 1, "the next save replaces the corrupt file");
        fs::write(&path, r#"{"format":"tessera-tuning-db","version":999,"entries":[]}"#).unwrap();
        let (db, w) = TuningDb::open(&path);
        assert!(db.is_empty() && w.unwrap().contains("version 999"));
        assert!(TuningDb::in_memory().import(&path).is_err());
    }

    #[test]
    fn concurrent_savers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        std::thread::scope(|s| {
            for t in 0..8 {
                let path = path.clone();
                s.spawn(move || {
                    for i in 0..5 {
                        let (mut db, _) = TuningDb::open(&path);
                        db.insert(entry(1 << (t * 5 + i), 64));
                        db.save().unwrap();
                    }
                });
            }
        });
        let (db, w) = TuningDb::open(&path);
        assert!(w.is_none());
        assert_eq!(db.len(), 40);
    }
}
