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
use crate::common::error::{one_line, Result, RuntimeError};
use crate::common::files::{max_file_bytes, read_to_string_capped, FileError};
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

    /// Adds the entries of the database at `path` (theirs win); an unusable or missing file is an
    /// error here, since the caller asked for it explicitly.
    pub fn import(&mut self, path: &Path) -> Result<usize> {
        let text = match read_text(path) {
            Ok(Some(text)) => text,
            Ok(None) => return Err(RuntimeError::invalid("tuning db", format!("{}: no such file; nothing imported", path.display()))),
            Err(e) => return Err(RuntimeError::invalid("tuning db", format!("{}: {e}; nothing imported", path.display()))),
        };
        let entries = parse_entries(&text, &path.display().to_string()).map_err(|w| RuntimeError::invalid("tuning db", w))?;
        let n = entries.len();
        for e in entries {
            self.insert(e);
        }
        Ok(n)
    }
}

/// The text of the database file at `path`, `None` when there is none. Read up to
/// [`max_file_bytes`] (`TESSERA_MAX_FILE_BYTES`, default 64 MiB): a larger file, a folder, FIFO or
/// device is an error, never an unbounded read or a wait.
fn read_text(path: &Path) -> std::result::Result<Option<String>, FileError> {
    match read_to_string_capped(path, max_file_bytes()) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_entries(path: &Path) -> (Vec<DbEntry>, Option<String>) {
    let text = match read_text(path) {
        Ok(Some(t)) => t,
        Ok(None) => return (Vec::new(), None),
        Err(e) => return (Vec::new(), Some(format!("{}: unreadable ({}); tuning database ignored", path.display(), one_line(&e.to_string())))),
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
        Err(e) => Err(format!("{origin}: not a tuning database ({}); ignored", one_line(&e.to_string()))),
    }
}

/// Under an exclusive lock on `<path>.lock`: read the file, add `ours` over it, write atomically.
/// Returns the merged entries.
fn locked_merge(path: &Path, ours: Vec<DbEntry>) -> Result<Vec<DbEntry>> {
    let io = |what: &str, e: std::io::Error| RuntimeError::invalid("tuning db", format!("{}: {what}: {e}", path.display()));
    // The file is replaced by a rename, which a directory (or device, FIFO, socket) must not get.
    if let Ok(meta) = fs::metadata(path) {
        if !meta.is_file() {
            return Err(RuntimeError::invalid("tuning db", format!("{}: not a regular file; give a file path", path.display())));
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io("creating its folder", e))?;
    }
    let _lock = LockFile::acquire(path.with_extension("json.lock")).map_err(|e| io("locking", e))?;
    let theirs = match read_text(path) {
        Ok(Some(text)) => parse_entries(&text, "").unwrap_or_default(),
        // A file over the cap may be a real database read with a lowered cap: never replace it unread.
        Err(e @ FileError::TooLarge { .. }) => {
            return Err(RuntimeError::invalid("tuning db", format!("{}: {e}; not replaced", path.display())))
        }
        // Missing, unreadable or not a database: replaced, as its load warned.
        _ => Vec::new(),
    };
    let mut merged: HashMap<TuningKey, DbEntry> = theirs.into_iter().map(|e| (e.key.clone(), e)).collect();
    for e in ours {
        merged.insert(e.key.clone(), e);
    }
    let mut entries: Vec<DbEntry> = merged.into_values().collect();
    entries.sort_by_cached_key(|e| serde_json::to_string(&e.key).unwrap_or_default());
    let file = DbFile { format: FORMAT.into(), version: DB_VERSION, entries };
    let json = serde_json::to_string_pretty(&file).map_err(|e| RuntimeError::invalid("tuning db", e.to_string()))?;
    let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
    let written = File::create(&tmp).map_err(|e| io("writing", e)).and_then(|mut f| {
        f.write_all(json.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| io("writing", e))?;
        fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))
    });
    if written.is_err() {
        // A failed save leaves the database as it was, without a stray temporary file.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    Ok(file.entries)
}

/// An exclusive lock across processes: a lock file created with `create_new` (atomic), removed on
/// drop. A lock older than [`STALE_LOCK`] is taken to belong to a crashed process and broken.
struct LockFile(PathBuf);

const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a wait for the lock stays silent: concurrent savers hold it for milliseconds, so a
/// longer wait is worth a line (a lock left by a killed process stalls saves until it is stale).
const LOCK_WAIT_NOTICE: std::time::Duration = std::time::Duration::from_secs(1);

impl LockFile {
    fn acquire(path: PathBuf) -> std::io::Result<LockFile> {
        let started = std::time::Instant::now();
        let mut noticed = false;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(LockFile(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(&path).and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default());
                    if age.as_ref().is_ok_and(|age| *age > STALE_LOCK) {
                        eprintln!(
                            "tessera: breaking the stale tuning database lock {} (older than {} s: its process presumably died)",
                            path.display(),
                            STALE_LOCK.as_secs()
                        );
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if !noticed && started.elapsed() >= LOCK_WAIT_NOTICE {
                        noticed = true;
                        let left = STALE_LOCK.saturating_sub(age.unwrap_or_default()).as_secs();
                        eprintln!(
                            "tessera: waiting for the tuning database lock {} (another process is saving; \
                             if none is, it is broken as stale in {left} s, or delete it)",
                            path.display()
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
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
    fn export_to_a_directory_fails_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("exported");
        fs::create_dir(&target).unwrap();
        let mut db = TuningDb::in_memory();
        db.insert(entry(1024, 64));
        let err = db.export(&target).unwrap_err().to_string();
        assert!(err.contains("exported") && err.contains("not a regular file"), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["exported"]);
    }

    #[test]
    fn missing_and_endless_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = TuningDb::in_memory();
        let e = db.import(&dir.path().join("missing.json")).unwrap_err().to_string();
        assert!(e.contains("missing.json") && e.contains("no such file"), "{e}");
        let e = db.import(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file but a directory"), "{e}");
        #[cfg(unix)]
        {
            let e = db.import(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(e.contains("/dev/zero") && e.contains("character device"), "{e}");
            let (opened, warning) = TuningDb::open("/dev/zero");
            assert!(opened.is_empty());
            assert!(warning.is_some_and(|w| w.contains("/dev/zero") && w.contains("ignored")));
        }
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
