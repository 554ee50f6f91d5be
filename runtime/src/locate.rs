//! Finding NVRTC and ptxas without the user setting `LD_LIBRARY_PATH` or `PATH`.
//!
//! NVRTC is a pair of shared libraries: `libnvrtc.so.13` and `libnvrtc-builtins.so.13.x`, which the
//! former `dlopen`s by name at its first compile. Both come from a CUDA toolkit, a conda environment,
//! the `nvidia-cuda-nvrtc` Python wheel (`site-packages/nvidia/cu13/lib`), or the project-local copy
//! of that wheel that the README's provisioning step unpacks into `.tessera/cuda`. This module only
//! finds files; [`crate::nvrtc`] loads them.

use std::collections::HashSet;
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Result, RuntimeError};

/// The NVRTC major version this build talks to: the workspace enables cudarc's `cuda-13000`
/// bindings, and NVRTC's ABI is only promised within a major version.
pub const NVRTC_MAJOR: i32 = 13;

/// Overrides the NVRTC search: a `libnvrtc.so.13` file, or a folder that holds one.
pub const NVRTC_ENV: &str = "TESSERA_NVRTC";
/// Overrides the ptxas search: the executable, or a folder that holds it.
pub const PTXAS_ENV: &str = "TESSERA_PTXAS";

/// The project-local toolkit folder (relative to the workspace root) that provisioning fills.
pub const PROJECT_LOCAL_DIR: &str = ".tessera/cuda";
/// Where the CUDA 13 wheels put their files, relative to a site-packages folder.
const WHEEL_DIR: &str = "nvidia/cu13";
/// The CUDA 12 wheel layout: searched only so that a wrong-major hit can be reported.
const LEGACY_NVRTC_WHEEL_DIR: &str = "nvidia/cuda_nvrtc/lib";

const FIX_NVRTC: &str = "set TESSERA_NVRTC to libnvrtc.so.13 (or the folder holding it and \
    libnvrtc-builtins.so.13.*), set CUDA_HOME to a CUDA 13 toolkit, or run the README's provisioning \
    step, which unpacks the nvidia-cuda-nvrtc wheel into .tessera/cuda";
const FIX_PTXAS: &str = "set TESSERA_PTXAS to the ptxas executable, set CUDA_HOME to a CUDA 13 \
    toolkit, put ptxas on PATH, or run the README's provisioning step, which unpacks the \
    nvidia-cuda-nvcc wheel into .tessera/cuda";

/// The NVRTC files to load: the library and, when found beside it, its builtins library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvrtcFiles {
    pub library: PathBuf,
    pub builtins: Option<PathBuf>,
}

/// Finds NVRTC 13. Search order: `TESSERA_NVRTC`; `CUDA_HOME` / `CUDA_PATH` (`lib64`, `lib`,
/// `targets/<arch>-linux/lib`); `.tessera/cuda/nvidia/cu13/lib` above the current folder, above the
/// executable and in the workspace this crate was built from; the active virtualenv or conda
/// environment; common Python site-packages folders; the folders `python3` itself reports;
/// `/usr/local/cuda` and the system library folders.
pub fn find_nvrtc() -> Result<NvrtcFiles> {
    let mut search = Search::default();

    if let Some(value) = env::var_os(NVRTC_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if path.is_file() {
            let builtins = path.parent().and_then(find_builtins);
            return Ok(NvrtcFiles { library: path, builtins });
        }
        if let Some(found) = search.nvrtc_in(&path, NVRTC_ENV) {
            return Ok(found);
        }
        // An explicit setting that points nowhere is a mistake to report, not to search past.
        return Err(search.not_found("NVRTC (libnvrtc.so.13)", FIX_NVRTC));
    }

    for (dir, origin) in cuda_home_dirs(&["lib64", "lib", target_lib_dir()]) {
        if let Some(found) = search.nvrtc_in(&dir, &origin) {
            return Ok(found);
        }
    }
    for (root, origin) in package_roots() {
        for sub in [WHEEL_DIR.to_string() + "/lib", LEGACY_NVRTC_WHEEL_DIR.to_string()] {
            if let Some(found) = search.nvrtc_in(&root.join(sub), &origin) {
                return Ok(found);
            }
        }
    }
    for (dir, origin) in conda_lib_dirs() {
        if let Some(found) = search.nvrtc_in(&dir, &origin) {
            return Ok(found);
        }
    }
    // Asking Python is slow (tens of milliseconds) and may not be possible, so it comes late.
    for (root, origin) in python_reported_roots() {
        if let Some(found) = search.nvrtc_in(&root.join(WHEEL_DIR).join("lib"), &origin) {
            return Ok(found);
        }
    }
    for dir in ["/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/opt/cuda/lib64"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::iter::once(Path::new("/usr/local/cuda").join(target_lib_dir())))
        .chain(system_lib_dirs())
    {
        if let Some(found) = search.nvrtc_in(&dir, "standard path") {
            return Ok(found);
        }
    }
    Err(search.not_found("NVRTC (libnvrtc.so.13)", FIX_NVRTC))
}

/// Finds a `ptxas` that can assemble NVRTC 13's PTX: `TESSERA_PTXAS`, `CUDA_HOME/bin`,
/// `CUDA_PATH/bin`, the wheel's `nvidia/cu13/bin` (project-local and site-packages, as for NVRTC),
/// `PATH`, the folders `python3` reports, `/usr/local/cuda/bin`. A ptxas older than release 13 is
/// passed over (it rejects the newer PTX ISA) and listed in the error if nothing else is found.
pub fn find_ptxas() -> Result<PathBuf> {
    let mut search = Search::default();

    if let Some(value) = env::var_os(PTXAS_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        let candidate = if path.is_dir() { path.join("ptxas") } else { path };
        if search.ptxas(&candidate, PTXAS_ENV) {
            return Ok(candidate);
        }
        return Err(search.not_found("ptxas", FIX_PTXAS));
    }
    let mut candidates: Vec<(PathBuf, String)> =
        cuda_home_dirs(&["bin"]).into_iter().map(|(dir, origin)| (dir.join("ptxas"), origin)).collect();
    candidates
        .extend(package_roots().into_iter().map(|(root, origin)| (root.join(WHEEL_DIR).join("bin/ptxas"), origin)));
    let path_dirs = env::var_os("PATH").map(|p| env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    candidates.extend(path_dirs.into_iter().map(|dir| (dir.join("ptxas"), "PATH".to_string())));
    for (candidate, origin) in candidates {
        if search.ptxas(&candidate, &origin) {
            return Ok(candidate);
        }
    }
    // Only now ask Python: it is slow, and usually the answer is already known.
    for (root, origin) in python_reported_roots() {
        let candidate = root.join(WHEEL_DIR).join("bin/ptxas");
        if search.ptxas(&candidate, &origin) {
            return Ok(candidate);
        }
    }
    let standard = PathBuf::from("/usr/local/cuda/bin/ptxas");
    if search.ptxas(&standard, "standard path") {
        return Ok(standard);
    }
    Err(search.not_found("ptxas", FIX_PTXAS))
}

/// The `release X.Y` of `ptxas --version`, e.g. `(13, 0)`.
fn ptxas_release(ptxas: &Path) -> Option<(u32, u32)> {
    let output = Command::new(ptxas).arg("--version").stdin(Stdio::null()).output().ok()?;
    parse_release(&String::from_utf8_lossy(&output.stdout))
}

fn parse_release(version_text: &str) -> Option<(u32, u32)> {
    let rest = &version_text[version_text.find("release ")? + "release ".len()..];
    let number = rest.split(|c: char| c == ',' || c.is_whitespace()).next()?;
    let (major, minor) = number.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Records what was looked at so that a failure can list it.
#[derive(Default)]
struct Search {
    searched: Vec<String>,
    rejected: Vec<String>,
    seen: HashSet<PathBuf>,
}

impl Search {
    /// Marks `path` as searched; false if it already was (the roots overlap, e.g. the current
    /// folder is usually inside the workspace).
    fn visit(&mut self, path: &Path, origin: &str) -> bool {
        if !self.seen.insert(path.to_path_buf()) {
            return false;
        }
        self.searched.push(format!("{} ({origin})", path.display()));
        true
    }

    fn nvrtc_in(&mut self, dir: &Path, origin: &str) -> Option<NvrtcFiles> {
        if !self.visit(dir, origin) {
            return None;
        }
        let names = file_names(dir);
        let library = pick_nvrtc(&names).map(|name| dir.join(name));
        if library.is_none() {
            for other in names.iter().filter(|n| is_other_major_nvrtc(n)) {
                self.rejected.push(format!(
                    "{}: not NVRTC {NVRTC_MAJOR}, which this build of Tessera needs",
                    dir.join(other).display()
                ));
            }
        }
        library.map(|library| NvrtcFiles { library, builtins: find_builtins(dir) })
    }

    /// An executable ptxas of release 13 or newer at `path`.
    fn ptxas(&mut self, path: &Path, origin: &str) -> bool {
        if !self.visit(path, origin) || !is_executable(path) {
            return false;
        }
        match ptxas_release(path) {
            Some((major, _)) if major >= NVRTC_MAJOR as u32 => true,
            Some((major, minor)) => {
                self.rejected.push(format!(
                    "{}: release {major}.{minor}, too old for NVRTC {NVRTC_MAJOR}'s PTX",
                    path.display()
                ));
                false
            }
            None => {
                self.rejected.push(format!("{}: `ptxas --version` did not report a release", path.display()));
                false
            }
        }
    }

    fn not_found(self, what: &str, fix: &str) -> RuntimeError {
        RuntimeError::NotFound {
            what: what.to_string(),
            searched: self.searched,
            rejected: self.rejected,
            fix: fix.to_string(),
        }
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    // Deterministic choice when a folder holds several versions.
    names.sort();
    names
}

/// `libnvrtc.so.13` if present, else the highest `libnvrtc.so.13.x.y`. The wheel's
/// `libnvrtc.alt.so.13` (a variant without the builtins split) is deliberately not matched.
fn pick_nvrtc(names: &[String]) -> Option<&String> {
    let exact = format!("libnvrtc.so.{NVRTC_MAJOR}");
    let versioned = format!("{exact}.");
    names.iter().find(|n| **n == exact).or_else(|| names.iter().rev().find(|n| n.starts_with(&versioned)))
}

fn is_other_major_nvrtc(name: &str) -> bool {
    name.strip_prefix("libnvrtc.so.")
        .and_then(|rest| rest.split('.').next())
        .is_some_and(|major| major.parse::<i32>().is_ok_and(|m| m != NVRTC_MAJOR))
}

/// `libnvrtc-builtins.so.13.x` in `dir`, if any.
pub(crate) fn find_builtins(dir: &Path) -> Option<PathBuf> {
    let prefix = format!("libnvrtc-builtins.so.{NVRTC_MAJOR}");
    file_names(dir).into_iter().find(|n| n.starts_with(&prefix)).map(|n| dir.join(n))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The toolkit's per-target library folder, e.g. `targets/x86_64-linux/lib`.
fn target_lib_dir() -> &'static str {
    match env::consts::ARCH {
        "aarch64" => "targets/sbsa-linux/lib",
        _ => "targets/x86_64-linux/lib",
    }
}

fn system_lib_dirs() -> Vec<PathBuf> {
    let multiarch = format!("/usr/lib/{}-linux-gnu", env::consts::ARCH);
    [multiarch.as_str(), "/usr/lib64", "/usr/lib"].into_iter().map(PathBuf::from).collect()
}

/// `$CUDA_HOME/<sub>` and `$CUDA_PATH/<sub>` for each sub-folder, labelled with the variable.
fn cuda_home_dirs(subs: &[&str]) -> Vec<(PathBuf, String)> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var).filter(|v| !v.is_empty()) {
            for sub in subs {
                dirs.push((Path::new(&home).join(sub), var.to_string()));
            }
        }
    }
    dirs
}

/// Folders that may contain `nvidia/cu13/...`: the project-local toolkit folders, then Python
/// site-packages folders found without running Python.
fn package_roots() -> Vec<(PathBuf, String)> {
    let mut roots = Vec::new();
    for start in project_starts() {
        for dir in start.ancestors() {
            roots.push((dir.join(PROJECT_LOCAL_DIR), "project-local".to_string()));
        }
    }
    for dir in site_packages_globs() {
        roots.push((dir, "Python site-packages".to_string()));
    }
    roots
}

/// The folders whose ancestors may hold the project-local toolkit: the current folder, the
/// executable's folder, and the workspace this crate was compiled in (right for `cargo run` and
/// `cargo test`; harmless elsewhere, where it does not exist).
fn project_starts() -> Vec<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(cwd) = env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        starts.push(dir);
    }
    if let Some(workspace) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        starts.push(workspace.to_path_buf());
    }
    starts
}

/// Site-packages folders of the active environment and the usual system and user installs.
fn site_packages_globs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = env::var_os(var).filter(|v| !v.is_empty()) {
            dirs.extend(python_dirs(&Path::new(&prefix).join("lib"), "site-packages"));
        }
    }
    dirs.extend(python_dirs(Path::new("/usr/local/lib"), "site-packages"));
    dirs.extend(python_dirs(Path::new("/usr/local/lib"), "dist-packages"));
    dirs.push(PathBuf::from("/usr/lib/python3/dist-packages"));
    dirs.extend(python_dirs(Path::new("/usr/lib"), "site-packages"));
    dirs.extend(python_dirs(Path::new("/usr/lib64"), "site-packages"));
    if let Some(home) = env::var_os("HOME").filter(|v| !v.is_empty()) {
        dirs.extend(python_dirs(&Path::new(&home).join(".local/lib"), "site-packages"));
    }
    dirs
}

/// `<lib>/python3*/<leaf>`, newest Python first.
fn python_dirs(lib: &Path, leaf: &str) -> Vec<PathBuf> {
    let mut names: Vec<String> = file_names(lib).into_iter().filter(|n| n.starts_with("python3")).collect();
    names.sort_by_key(|n| std::cmp::Reverse(python_minor(n)));
    names.into_iter().map(|n| lib.join(n).join(leaf)).collect()
}

fn python_minor(name: &str) -> u32 {
    name.trim_start_matches("python3").trim_start_matches('.').parse().unwrap_or(0)
}

/// Conda installs the toolkit's libraries straight into `$CONDA_PREFIX/lib`.
fn conda_lib_dirs() -> Vec<(PathBuf, String)> {
    env::var_os("CONDA_PREFIX")
        .filter(|v| !v.is_empty())
        .map(|prefix| vec![(Path::new(&prefix).join("lib"), "CONDA_PREFIX".to_string())])
        .unwrap_or_default()
}

/// The site-packages folders and `sys.path` of whatever `python3` is on `PATH` (a pyenv or
/// a virtualenv that is not activated, say). Empty when there is no Python.
fn python_reported_roots() -> Vec<(PathBuf, String)> {
    const QUERY: &str = "import site,sys; print('\\n'.join(list(getattr(site,'getsitepackages',lambda:[])())\
        +[getattr(site,'getusersitepackages',lambda:'')()]+sys.path))";
    let output = Command::new("python3").args(["-c", QUERY]).stdin(Stdio::null()).stderr(Stdio::null()).output();
    let Ok(output) = output else { return Vec::new() };
    if !output.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && Path::new(l).is_absolute())
        .filter(|l| Path::new(l).file_name().is_some_and(|n| n != OsStr::new("lib-dynload")))
        .map(|l| (PathBuf::from(l), "python3 sys.path".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefers_the_soname_then_the_newest_versioned_file() {
        let n = names(&["libnvrtc.alt.so.13", "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.13.0.88"]);
        assert_eq!(pick_nvrtc(&n).map(String::as_str), Some("libnvrtc.so.13"));
        let n = names(&["libnvrtc.so.13.0.48", "libnvrtc.so.13.0.88"]);
        assert_eq!(pick_nvrtc(&n).map(String::as_str), Some("libnvrtc.so.13.0.88"));
        let n = names(&["libnvrtc.alt.so.13", "libnvrtc.so.12"]);
        assert_eq!(pick_nvrtc(&n), None);
    }

    #[test]
    fn other_majors_are_recognised_for_the_error_message() {
        assert!(is_other_major_nvrtc("libnvrtc.so.12"));
        assert!(is_other_major_nvrtc("libnvrtc.so.11.2"));
        assert!(!is_other_major_nvrtc("libnvrtc.so.13"));
        assert!(!is_other_major_nvrtc("libnvrtc.so"));
        assert!(!is_other_major_nvrtc("libnvrtc-builtins.so.12.4"));
    }

    #[test]
    fn reads_the_ptxas_release() {
        let text = "ptxas: NVIDIA (R) Ptx optimizing assembler\nCopyright (c) 2005-2025 NVIDIA Corporation\n\
                    Built on Wed_Aug_20_01:55:12_PM_PDT_2025\nCuda compilation tools, release 13.0, V13.0.88\n";
        assert_eq!(parse_release(text), Some((13, 0)));
        assert_eq!(parse_release("Cuda compilation tools, release 12.4, V12.4.131"), Some((12, 4)));
        assert_eq!(parse_release("something else"), None);
    }

    #[test]
    fn python_folders_sort_newest_first() {
        assert!(python_minor("python3.12") > python_minor("python3.9"));
        assert_eq!(python_minor("python3"), 0);
    }

    #[test]
    fn finds_the_project_local_wheel() {
        // The workspace's provisioning step puts NVRTC here; the dev loop depends on finding it.
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(PROJECT_LOCAL_DIR);
        if !local.join(WHEEL_DIR).join("lib").join("libnvrtc.so.13").exists() {
            eprintln!("skipped: no project-local NVRTC");
            return;
        }
        let found = find_nvrtc().unwrap();
        assert!(found.library.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc.so.13")));
        assert!(found.builtins.is_some(), "{found:?}");
    }

    #[test]
    fn not_found_lists_the_search_and_the_fix() {
        let mut search = Search::default();
        assert!(search.nvrtc_in(Path::new("/nonexistent/tessera/lib"), "test").is_none());
        let msg = search.not_found("NVRTC (libnvrtc.so.13)", FIX_NVRTC).to_string();
        assert!(msg.contains("/nonexistent/tessera/lib (test)"), "{msg}");
        assert!(msg.contains("TESSERA_NVRTC"), "{msg}");
    }
}
