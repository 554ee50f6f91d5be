//! An on-disk cache of compiled kernel images, safe to share between concurrent processes.
//!
//! One file per key. Every entry carries a magic, a format version, the key it was stored under,
//! its payload length and the payload's SHA-256, and is checked in full on every read: a truncated
//! or corrupted file (a crash mid-write on a filesystem without ordered renames, a full disk, a
//! stray edit), or another key's entry copied over it, is deleted and reported as
//! [`Lookup::Corrupt`], never handed to the driver. Entries are read up to
//! [`crate::common::files::max_file_bytes`]. Writers fill a temporary file in
//! the cache folder and rename it over the entry, which is atomic on POSIX filesystems: a reader
//! sees the old complete file or the new complete file, and racing writers of one key simply
//! replace each other's identical images.

use std::env;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::common::error::{Result, RuntimeError};
use crate::common::files::{max_file_bytes, read_capped};
use crate::compile::target::Target;

/// Overrides the cache folder.
pub const CACHE_DIR_ENV: &str = "TESSERA_CACHE_DIR";

const MAGIC: [u8; 8] = *b"TSRKRNL\0";
/// Bump when the entry layout or the key derivation changes; old entries then read as corrupt or
/// are simply never looked up again. 2: the entry records its key.
pub const FORMAT_VERSION: u32 = 2;
/// A key's stored form: its lower-case hex SHA-256.
const KEY_LEN: usize = 64;
const HEADER_LEN: usize = MAGIC.len() + 4 + KEY_LEN + 8 + 32;
const ENTRY_EXTENSION: &str = "tkc";

/// Identifies one compiled image: SHA-256 over the source hash, the target, the NVRTC version and
/// the compile options, as lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn new(source_hash: &str, target: Target, nvrtc_version: (i32, i32), options: &[String]) -> CacheKey {
        let mut hasher = Sha256::new();
        // Length-prefixed fields: no two different inputs can produce the same byte stream.
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(b"tessera-kernel-cache");
        field(&FORMAT_VERSION.to_le_bytes());
        field(source_hash.as_bytes());
        field(&target.arch.sm.to_le_bytes());
        field(target.output.name().as_bytes());
        field(&nvrtc_version.0.to_le_bytes());
        field(&nvrtc_version.1.to_le_bytes());
        field(&(options.len() as u64).to_le_bytes());
        for option in options {
            field(option.as_bytes());
        }
        CacheKey(hex(&hasher.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The result of a cache read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit(Vec<u8>),
    Miss,
    /// The entry existed but failed verification; it has been deleted. Treat as a miss.
    Corrupt {
        path: PathBuf,
        reason: String,
    },
}

impl Lookup {
    pub fn into_image(self) -> Option<Vec<u8>> {
        match self {
            Lookup::Hit(image) => Some(image),
            _ => None,
        }
    }
}

/// Counters since the cache was opened (this process only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Includes corrupt entries.
    pub misses: u64,
    pub corrupt: u64,
    pub writes: u64,
}

#[derive(Debug)]
pub struct KernelCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    writes: AtomicU64,
}

impl KernelCache {
    /// Opens (creating if needed) a cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<KernelCache> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| {
            // `create_dir_all` says only "File exists" for a file in the way.
            let source = match fs::metadata(&dir) {
                Ok(meta) if !meta.is_dir() => io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("exists but is not a folder; point {CACHE_DIR_ENV} at a folder (or unset it)"),
                ),
                _ => source,
            };
            RuntimeError::Cache { path: dir.clone(), source }
        })?;
        Ok(KernelCache {
            dir,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    /// Opens the cache in [`KernelCache::default_dir`].
    pub fn open_default() -> Result<KernelCache> {
        KernelCache::open(KernelCache::default_dir())
    }

    /// `$TESSERA_CACHE_DIR`, else `$XDG_CACHE_HOME/tessera`, else `~/.cache/tessera`, else
    /// `tessera-cache` in the system temporary folder.
    pub fn default_dir() -> PathBuf {
        let var = |name: &str| env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(dir) = var(CACHE_DIR_ENV) {
            return dir;
        }
        // The XDG spec says relative values are invalid and must be ignored.
        if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
            return xdg.join("tessera");
        }
        if let Some(home) = var("HOME") {
            return home.join(".cache").join("tessera");
        }
        env::temp_dir().join("tessera-cache")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{key}.{ENTRY_EXTENSION}"))
    }

    /// Reads and verifies the entry for `key`.
    pub fn get(&self, key: &CacheKey) -> Lookup {
        let path = self.entry_path(key);
        let lookup = match read_capped(&path, max_file_bytes()) {
            Ok(bytes) => match decode_entry_for(key, &bytes) {
                Ok(payload) => Lookup::Hit(payload.to_vec()),
                Err(reason) => Lookup::Corrupt { path: path.clone(), reason },
            },
            Err(e) if e.is_not_found() => Lookup::Miss,
            Err(e) => Lookup::Corrupt { path: path.clone(), reason: format!("unreadable: {e}") },
        };
        match &lookup {
            Lookup::Hit(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Miss => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Corrupt { .. } => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                // If another process replaced it with a good entry meanwhile, that one is lost too:
                // a wasted compile, never a wrong image.
                let _ = fs::remove_file(&path);
            }
        }
        lookup
    }

    /// Stores `image` under `key`, atomically replacing any existing entry.
    pub fn put(&self, key: &CacheKey, image: &[u8]) -> Result<()> {
        let path = self.entry_path(key);
        let cache_err = |source: io::Error| RuntimeError::Cache { path: path.clone(), source };
        // Same folder as the entry, so the rename cannot cross filesystems. No fsync: a torn entry
        // after a power cut fails its checksum and is rebuilt.
        let mut file = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&self.dir).map_err(cache_err)?;
        file.write_all(&encode_entry(key, image)).map_err(cache_err)?;
        file.persist(&path).map_err(|e| cache_err(e.error))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The cached image, or `build()`'s result, which is then stored. The flag is true for a hit.
    /// A failed store is reported on stderr and otherwise ignored: the image is still good.
    pub fn get_or_insert_with(
        &self,
        key: &CacheKey,
        build: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<(Vec<u8>, bool)> {
        match self.get(key) {
            Lookup::Hit(image) => return Ok((image, true)),
            Lookup::Corrupt { path, reason } => {
                eprintln!("tessera: warning: discarded corrupt kernel cache entry {} ({reason})", path.display());
            }
            Lookup::Miss => {}
        }
        let image = build()?;
        if let Err(e) = self.put(key, &image) {
            eprintln!("tessera: warning: could not write the kernel cache: {e}");
        }
        Ok((image, false))
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// `magic | format version (u32 LE) | key (64 hex digits) | payload length (u64 LE) |
/// SHA-256(payload) | payload`.
pub fn encode_entry(key: &CacheKey, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(key.as_str().as_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

/// The payload of a well-formed entry stored under `key`, or why the bytes are not one: an entry
/// of another key (copied or renamed over this one) would hand the driver the wrong kernel.
pub fn decode_entry_for<'a>(key: &CacheKey, bytes: &'a [u8]) -> Result<&'a [u8], String> {
    let payload = decode_entry(bytes)?;
    let stored = &bytes[MAGIC.len() + 4..][..KEY_LEN];
    if stored != key.as_str().as_bytes() {
        // Escaped: a damaged key byte must not break the one-line warning this reason goes into.
        return Err(format!("stored under key {}, not {key}", stored.escape_ascii()));
    }
    Ok(payload)
}

/// The payload of a well-formed entry (of any key), or why the bytes are not one.
pub fn decode_entry(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("truncated header ({} of {HEADER_LEN} bytes)", bytes.len()));
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err("bad magic".to_string());
    }
    let (version, rest) = rest.split_at(4);
    let version = u32::from_le_bytes(version.try_into().map_err(|_| "bad version field")?);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}, expected {FORMAT_VERSION}"));
    }
    let (_key, rest) = rest.split_at(KEY_LEN);
    let (length, rest) = rest.split_at(8);
    let length = u64::from_le_bytes(length.try_into().map_err(|_| "bad length field")?);
    let (digest, payload) = rest.split_at(32);
    if payload.len() as u64 != length {
        return Err(format!("payload is {} bytes, header says {length}", payload.len()));
    }
    if Sha256::digest(payload).as_slice() != digest {
        return Err("checksum mismatch".to_string());
    }
    Ok(payload)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::target::OutputKind;
    use tessera_codegen::Arch;

    fn key(arch: Arch, output: OutputKind, options: &[&str]) -> CacheKey {
        let options: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        CacheKey::new("abc", Target { arch, output }, (13, 0), &options)
    }

    #[test]
    fn entries_round_trip() {
        let payload = b"ptx text".to_vec();
        let k = key(Arch::SM80, OutputKind::Ptx, &[]);
        let entry = encode_entry(&k, &payload);
        assert_eq!(decode_entry(&entry).unwrap(), payload.as_slice());
        assert_eq!(decode_entry_for(&k, &entry).unwrap(), payload.as_slice());
        assert_eq!(decode_entry(&encode_entry(&k, &[])).unwrap(), &[] as &[u8]);
    }

    #[test]
    fn another_keys_entry_is_refused() {
        let (ours, theirs) = (key(Arch::SM80, OutputKind::Ptx, &[]), key(Arch::SM90, OutputKind::Ptx, &[]));
        let e = decode_entry_for(&ours, &encode_entry(&theirs, b"other kernel")).unwrap_err();
        assert!(e.contains(theirs.as_str()) && e.contains(ours.as_str()), "{e}");
        // A damaged key byte stays on the warning's one line.
        let mut damaged = encode_entry(&ours, b"image");
        damaged[MAGIC.len() + 4] = b'\n';
        let e = decode_entry_for(&ours, &damaged).unwrap_err();
        assert!(e.contains("stored under key \\n") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn another_keys_entry_in_place_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::open(dir.path()).unwrap();
        let (ours, theirs) = (key(Arch::SM80, OutputKind::Ptx, &[]), key(Arch::SM90, OutputKind::Ptx, &[]));
        cache.put(&theirs, b"their image").unwrap();
        fs::copy(cache.entry_path(&theirs), cache.entry_path(&ours)).unwrap();
        assert!(matches!(cache.get(&ours), Lookup::Corrupt { .. }));
        let (image, hit) = cache.get_or_insert_with(&ours, || Ok(b"our image".to_vec())).unwrap();
        assert_eq!((image.as_slice(), hit), (&b"our image"[..], false));
        assert_eq!(cache.get(&ours), Lookup::Hit(b"our image".to_vec()));
        assert_eq!(cache.get(&theirs), Lookup::Hit(b"their image".to_vec()));
    }

    #[test]
    fn a_file_in_place_of_the_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache");
        fs::write(&file, b"").unwrap();
        let e = KernelCache::open(&file).unwrap_err().to_string();
        assert!(e.contains("cache") && e.contains("not a folder") && e.contains(CACHE_DIR_ENV), "{e}");
    }

    #[test]
    fn every_kind_of_damage_is_detected() {
        let k = key(Arch::SM80, OutputKind::Ptx, &[]);
        let entry = encode_entry(&k, b"0123456789abcdef");
        for cut in [0, 5, HEADER_LEN - 1, HEADER_LEN, entry.len() - 1] {
            assert!(decode_entry_for(&k, &entry[..cut]).is_err(), "truncated to {cut}");
        }
        for i in 0..entry.len() {
            let mut bad = entry.clone();
            bad[i] ^= 0x40;
            assert!(decode_entry_for(&k, &bad).is_err(), "flipped byte {i}");
        }
        let mut longer = entry.clone();
        longer.push(0);
        assert!(decode_entry_for(&k, &longer).is_err());
    }

    #[test]
    fn keys_separate_every_input() {
        let base = key(Arch::SM80, OutputKind::Ptx, &["-std=c++17"]);
        assert_eq!(base, key(Arch::SM80, OutputKind::Ptx, &["-std=c++17"]));
        assert_ne!(base, key(Arch::SM90, OutputKind::Ptx, &["-std=c++17"]));
        assert_ne!(base, key(Arch::SM80, OutputKind::Cubin, &["-std=c++17"]));
        assert_ne!(base, key(Arch::SM80, OutputKind::Ptx, &["-std=c++17", "-lineinfo"]));
        assert_ne!(base, key(Arch::SM80, OutputKind::Ptx, &["-std=c++", "17"]));
        let other_nvrtc = CacheKey::new("abc", Target::ptx(Arch::SM80), (13, 1), &["-std=c++17".to_string()]);
        assert_ne!(base, other_nvrtc);
        let other_source = CacheKey::new("abd", Target::ptx(Arch::SM80), (13, 0), &["-std=c++17".to_string()]);
        assert_ne!(base, other_source);
        assert_eq!(base.as_str().len(), 64);
    }
}
