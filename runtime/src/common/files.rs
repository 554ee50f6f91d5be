//! Bounded reads of the files a user or the environment names: the tuning database, a results
//! file, kernel cache entries (and the opening check of `.npy` inputs).
//!
//! Only regular files are read. A FIFO is refused before it is opened (opening one waits for a
//! writer), and so are devices (`/dev/zero` never ends) and folders. A whole-file read stops at a
//! cap, [`max_file_bytes`]: a file over it is an error naming the limit, never an unbounded
//! allocation. The cap is checked against the reported length first and enforced on the bytes
//! actually read, since a file can grow while it is read and some report no length at all.

use std::fs::{self, File, FileType, Metadata};
use std::io::{self, Read};
use std::path::Path;
use std::sync::OnceLock;

/// The default cap of a whole-file read: far above any tuning database, results file or kernel
/// image Tessera writes, far below what would exhaust a machine's memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// Overrides [`DEFAULT_MAX_FILE_BYTES`]: a byte count (a positive integer). Applies to the tuning
/// database, `tessera plot --results` and kernel cache entries; not to `.npy` inputs, whose size
/// their header fixes.
pub const MAX_FILE_BYTES_ENV: &str = "TESSERA_MAX_FILE_BYTES";

/// The cap of a whole-file read: `TESSERA_MAX_FILE_BYTES` when it is a positive integer, else
/// [`DEFAULT_MAX_FILE_BYTES`] (an unusable value is reported once on stderr).
pub fn max_file_bytes() -> u64 {
    static CAP: OnceLock<u64> = OnceLock::new();
    *CAP.get_or_init(|| match std::env::var(MAX_FILE_BYTES_ENV) {
        Err(_) => DEFAULT_MAX_FILE_BYTES,
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(cap) if cap > 0 => cap,
            _ => {
                eprintln!(
                    "tessera: warning: {MAX_FILE_BYTES_ENV}={text:?} is not a positive byte count; using {DEFAULT_MAX_FILE_BYTES}"
                );
                DEFAULT_MAX_FILE_BYTES
            }
        },
    })
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path names a directory, FIFO, device or socket (the kind, with its article).
    #[error("not a regular file but {0}")]
    NotRegular(&'static str),
    /// The file holds more than the cap: at least `bytes` (its reported length, or what was read
    /// before the read stopped).
    #[error("at least {bytes} bytes, over the limit of {cap} bytes ({MAX_FILE_BYTES_ENV} raises it)")]
    TooLarge { bytes: u64, cap: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl FileError {
    /// Nothing exists at the path.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

fn kind_of(meta: &Metadata) -> Option<&'static str> {
    special_kind(&meta.file_type())
}

/// What a file type is, with its article, when it is not a regular file (`None` for one): the
/// words of every "not a regular file" message, reading or writing.
pub fn special_kind(t: &FileType) -> Option<&'static str> {
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("a special file")
}

/// Opens the regular file at `path` (following symlinks) for reading, with its metadata. Anything
/// else is refused before it is opened, and checked again on the opened file in case the path was
/// swapped in between.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    if let Some(kind) = kind_of(&fs::metadata(path)?) {
        return Err(FileError::NotRegular(kind));
    }
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if let Some(kind) = kind_of(&meta) {
        return Err(FileError::NotRegular(kind));
    }
    Ok((file, meta))
}

/// The bytes of the regular file at `path`, at most `cap` of them (more is [`FileError::TooLarge`]).
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > cap {
        return Err(FileError::TooLarge { bytes: meta.len(), cap });
    }
    let mut bytes = Vec::new();
    // Room for what the file reports; a shortfall or a growing file is handled by `take`.
    bytes.try_reserve_exact(meta.len() as usize).map_err(|_| FileError::TooLarge { bytes: meta.len(), cap })?;
    // One byte past the cap tells a file at the cap from one over it.
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge { bytes: bytes.len() as u64, cap });
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_to_string_capped(path: &Path, cap: u64) -> Result<String, FileError> {
    String::from_utf8(read_capped(path, cap)?).map_err(|e| FileError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_capped(&path, 10).unwrap(), b"0123456789");
        assert_eq!(read_to_string_capped(&path, 64).unwrap(), "0123456789");
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        fs::write(&path, b"0123456789").unwrap();
        let e = read_capped(&path, 9).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { bytes: 10, cap: 9 }), "{e}");
        assert!(e.to_string().contains(MAX_FILE_BYTES_ENV), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_cap_holds_for_a_file_that_reports_no_length() {
        // A regular file whose metadata says 0 bytes but whose reads return more.
        let status = Path::new("/proc/self/status");
        assert_eq!(fs::metadata(status).unwrap().len(), 0);
        let e = read_capped(status, 16).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { bytes: 17, cap: 16 }), "{e}");
    }

    #[test]
    fn folders_devices_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_capped(dir.path(), 64).unwrap_err();
        assert!(matches!(e, FileError::NotRegular("a directory")), "{e}");
        assert!(!e.is_not_found());
        let missing = read_capped(&dir.path().join("missing"), 64).unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
        #[cfg(unix)]
        {
            // Endless if read: refused from its metadata alone.
            let e = read_capped(Path::new("/dev/zero"), 64).unwrap_err();
            assert!(matches!(e, FileError::NotRegular("a character device")), "{e}");
        }
    }
}
