//! All-or-nothing outputs for one command: each output is written to a temporary file beside its
//! target, and the temporaries are renamed into place only after every one of them was written, so
//! a failed command leaves neither a partial file nor a mix of new and stale results behind.
//!
//! Targets are checked when they are reserved, before anything is computed: an output replaces its
//! target, so a directory, device node, FIFO or socket there is an error (replacing `/dev/null`
//! with a regular file is never what was meant); the target's directory must exist (the temporary
//! file is created in it right away, which also proves it writable); and two outputs of one command
//! may not name the same file, however it is spelled. New files honour the umask, like any other
//! file the user creates.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf, MAIN_SEPARATOR};

use tempfile::NamedTempFile;
use tessera_runtime::common::files::special_kind;

use crate::TesseraError;

/// The mode outputs are created with before the umask applies: the conventional one for data
/// files, so the result is what any other program would create.
#[cfg(unix)]
const OUTPUT_MODE: u32 = 0o666;

/// Temporary files are hidden and recognisably ours, should a killed process leave one behind.
const TEMP_PREFIX: &str = ".tessera-";

/// A reserved output of an [`OutputSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(usize);

struct Output {
    flag: String,
    target: PathBuf,
    /// The canonical directory joined with the file name: equal for two spellings of one file.
    identity: PathBuf,
    temp: NamedTempFile,
    written: bool,
}

/// The outputs of one command. Reserve every output first ([`OutputSet::reserve`]), compute,
/// write each ([`OutputSet::write_npy_f32`], [`OutputSet::write_path`]), then
/// [`OutputSet::commit`]. Dropping the set without committing removes its temporary files and the
/// directories it created.
#[derive(Default)]
pub struct OutputSet {
    outputs: Vec<Output>,
    /// Directories created by [`OutputSet::create_dir`], outermost first.
    created_dirs: Vec<PathBuf>,
}

fn fail(flag: &str, path: &Path, message: impl Display) -> TesseraError {
    TesseraError::input(flag, format!("{}: {message}", path.display()))
}

/// The directory a target lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The cause of an I/O error without the temporary file's name, which the user never sees.
fn cause(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.source()) {
        Some(source) => source.to_string(),
        None => e.to_string(),
    }
}

/// What is wrong with `path` as an output target, if anything: it must name a file that is absent
/// or a regular file, in a directory that exists.
pub(crate) fn target_problem(path: &Path) -> Option<String> {
    if path.file_name().is_none() || path.to_string_lossy().ends_with(MAIN_SEPARATOR) {
        return Some("names no file; give a file path".into());
    }
    let dir = parent_dir(path);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Some(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("the directory {} does not exist", dir.display()))
        }
        Err(e) => return Some(format!("cannot reach the directory {}: {e}", dir.display())),
    }
    match fs::metadata(path) {
        Ok(m) => special_kind(&m.file_type()).map(|what| format!("is {what}, not a regular file; an output replaces its target")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("cannot inspect: {e}")),
    }
}


/// Checks `path` as an output target (see the module documentation) without reserving it: for
/// outputs written by other means, checked before the work that produces them.
pub fn check_output_path(flag: &str, path: &Path) -> Result<(), TesseraError> {
    target_problem(path).map_or(Ok(()), |m| Err(fail(flag, path, m)))
}

/// A new temporary file beside `target`, with the target's extension (writers that pick the format
/// from the name see the right one).
pub(crate) fn create_temp(target: &Path) -> Result<NamedTempFile, String> {
    let dir = parent_dir(target);
    let suffix = target.extension().map(|e| format!(".{}", e.to_string_lossy()));
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX);
    if let Some(s) = &suffix {
        builder.suffix(s);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(OUTPUT_MODE));
    }
    builder.tempfile_in(&dir).map_err(|e| format!("cannot create a file in {}: {}", dir.display(), cause(&e)))
}

impl OutputSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `path` as the output of `flag` and creates its temporary file. Call before computing.
    pub fn reserve(&mut self, flag: &str, path: &Path) -> Result<Slot, TesseraError> {
        if let Some(m) = target_problem(path) {
            return Err(fail(flag, path, m));
        }
        let dir = parent_dir(path);
        let (Ok(canonical), Some(name)) = (fs::canonicalize(&dir), path.file_name()) else {
            return Err(fail(flag, path, format!("cannot resolve the directory {}", dir.display())));
        };
        let identity = canonical.join(name);
        if let Some(other) = self.outputs.iter().find(|o| o.identity == identity) {
            return Err(TesseraError::input(
                flag,
                format!("{} is the same file as {} ({}); give each output its own file", path.display(), other.flag, other.target.display()),
            ));
        }
        let temp = create_temp(path).map_err(|m| fail(flag, path, m))?;
        self.outputs.push(Output { flag: flag.to_string(), target: path.to_path_buf(), identity, temp, written: false });
        Ok(Slot(self.outputs.len() - 1))
    }

    /// Creates directory `path` (and missing parents) for outputs to go in; what was created is
    /// removed again unless the set is committed.
    pub fn create_dir(&mut self, flag: &str, path: &Path) -> Result<(), TesseraError> {
        let mut missing = Vec::new();
        let mut at = Some(path).filter(|p| !p.as_os_str().is_empty());
        while let Some(p) = at {
            match fs::metadata(p) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => return Err(fail(flag, p, "is not a directory")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(p.to_path_buf()),
                Err(e) => return Err(fail(flag, p, e)),
            }
            at = p.parent().filter(|q| !q.as_os_str().is_empty());
        }
        for dir in missing.into_iter().rev() {
            match fs::create_dir(&dir) {
                Ok(()) => self.created_dirs.push(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(fail(flag, &dir, format!("cannot create the directory: {e}"))),
            }
        }
        Ok(())
    }

    fn output(&mut self, slot: Slot) -> Result<&mut Output, TesseraError> {
        self.outputs.get_mut(slot.0).ok_or_else(|| TesseraError::input("output", format!("slot {} was not reserved", slot.0)))
    }

    /// Writes `data` (C order, `shape`) as the little-endian f32 `.npy` of a reserved output.
    pub fn write_npy_f32(&mut self, slot: Slot, shape: &[usize], data: &[f32]) -> Result<(), TesseraError> {
        let o = self.output(slot)?;
        let written = (|| {
            let file = o.temp.as_file_mut();
            rewind(file)?;
            crate::npy::encode_f32(file, shape, data)?;
            file.sync_all().map_err(|e| format!("writing data: {e}"))
        })();
        written.map_err(|m| fail(&o.flag, &o.target, m))?;
        o.written = true;
        Ok(())
    }

    /// Lets `write` produce a reserved output through its temporary file's path (for writers that
    /// open files by name); its error message is reported with the output's flag and path.
    pub fn write_path(&mut self, slot: Slot, write: impl FnOnce(&Path) -> Result<(), String>) -> Result<(), TesseraError> {
        let o = self.output(slot)?;
        let written = rewind(o.temp.as_file_mut()).and_then(|()| write(o.temp.path()));
        written.map_err(|m| fail(&o.flag, &o.target, m))?;
        o.written = true;
        Ok(())
    }

    /// Reserves and writes in one step (the output's checks then come after the computation).
    pub fn add_npy_f32(&mut self, flag: &str, path: &Path, shape: &[usize], data: &[f32]) -> Result<(), TesseraError> {
        let slot = self.reserve(flag, path)?;
        self.write_npy_f32(slot, shape, data)
    }

    /// Moves every output into place. All targets are checked again first, so a target that
    /// became unusable while the command ran fails the command before any output is replaced;
    /// each rename is atomic.
    pub fn commit(mut self) -> Result<(), TesseraError> {
        for o in &self.outputs {
            if !o.written {
                return Err(fail(&o.flag, &o.target, "no result was produced for this output"));
            }
            if let Some(m) = target_problem(&o.target) {
                return Err(fail(&o.flag, &o.target, m));
            }
        }
        for o in std::mem::take(&mut self.outputs) {
            let Output { flag, target, temp, .. } = o;
            temp.persist(&target).map_err(|e| fail(&flag, &target, format!("cannot move the result into place: {}", e.error)))?;
        }
        self.created_dirs.clear();
        Ok(())
    }
}

fn rewind(file: &mut File) -> Result<(), String> {
    file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0)).map(drop)).map_err(|e| format!("writing data: {e}"))
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        // Temporary files first (dropping them removes them), so that the directories are empty.
        self.outputs.clear();
        for dir in self.created_dirs.drain(..).rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::read_npy;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(TEMP_PREFIX)).collect()
    }

    #[test]
    fn nothing_is_replaced_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        fs::write(&a, b"old").unwrap();
        let mut set = OutputSet::new();
        let sa = set.reserve("--a", &a).unwrap();
        let sb = set.reserve("--b", &b).unwrap();
        set.write_npy_f32(sa, &[2], &[1.0, 2.0]).unwrap();
        set.write_npy_f32(sb, &[1], &[3.0]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"old");
        assert!(!b.exists());
        set.commit().unwrap();
        assert_eq!(read_npy(&a).unwrap().data, [1.0, 2.0]);
        assert_eq!(read_npy(&b).unwrap().data, [3.0]);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn dropping_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/deeper");
        let mut set = OutputSet::new();
        set.create_dir("--out-dir", &out).unwrap();
        let slot = set.reserve("--out", &out.join("x.npy")).unwrap();
        set.write_npy_f32(slot, &[1], &[1.0]).unwrap();
        drop(set);
        assert!(!dir.path().join("new").exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn unwritten_output_fails_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        let mut set = OutputSet::new();
        let sa = set.reserve("--a", &a).unwrap();
        set.reserve("--b", &b).unwrap();
        set.write_npy_f32(sa, &[1], &[1.0]).unwrap();
        let err = set.commit().unwrap_err().to_string();
        assert!(err.starts_with("--b: ") && err.contains("no result"), "{err}");
        assert!(!a.exists() && !b.exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn bad_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = OutputSet::new();
        let err = set.reserve("--out", dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("--out: ") && err.contains("is a directory"), "{err}");
        let err = set.reserve("--lse", &dir.path().join("nodir/l.npy")).unwrap_err().to_string();
        assert!(err.starts_with("--lse: ") && err.contains("does not exist"), "{err}");
        #[cfg(unix)]
        {
            let err = set.reserve("--out", Path::new("/dev/null")).unwrap_err().to_string();
            assert!(err.contains("character device"), "{err}");
        }
        set.reserve("--out", &dir.path().join("o.npy")).unwrap();
        let respelled = dir.path().join(".").join("sub/../o.npy");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let err = set.reserve("--lse", &respelled).unwrap_err().to_string();
        assert!(err.starts_with("--lse: ") && err.contains("same file as --out"), "{err}");
        assert!(!err.contains('\n'));
    }

    /// The process's umask, read without changing it (changing it would race other tests).
    #[cfg(target_os = "linux")]
    fn current_umask() -> Option<u32> {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn created_files_honour_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let Some(umask) = current_umask() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let mut set = OutputSet::new();
        set.add_npy_f32("--out", &path, &[1], &[0.0]).unwrap();
        set.commit().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, OUTPUT_MODE & !umask, "mode {mode:o} with umask {umask:o}");
    }
}
