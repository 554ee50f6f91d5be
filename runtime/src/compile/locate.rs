//! Finding NVRTC and ptxas without the user setting `LD_LIBRARY_PATH` or `PATH`.
//!
//! NVRTC is a pair of shared libraries: `libnvrtc.so.13` and `libnvrtc-builtins.so.13.x`, which the
//! former `dlopen`s by name at its first compile. Both come from a CUDA toolkit, a conda environment,
//! the `nvidia-cuda-nvrtc` Python wheel (`site-packages/nvidia/cu13/lib`), or the project-local copy
//! of that wheel that the README's provisioning step unpacks into `.tessera/cuda`. This module only
//! finds files (it never loads one); [`nvrtc`](super::nvrtc) loads them.
//!
//! The search order is [`nvrtc_candidate_dirs`] (a pure function of an [`NvrtcSearchEnv`]
//! snapshot), and among the folders that hold NVRTC 13 [`choose_nvrtc`] takes the first whose
//! version the installed driver supports.

use std::collections::HashSet;
use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::error::{Result, RuntimeError};

/// The NVRTC major version this build talks to: the NVRTC entry points [`nvrtc`](super::nvrtc) calls
/// are those of NVRTC 13, and NVRTC's ABI is only promised within a major version.
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
/// The builtins library's name up to its version: `libnvrtc-builtins.so.13.0` is NVRTC 13.0's.
const BUILTINS_PREFIX: &str = "libnvrtc-builtins.so.";
/// The library's name up to its version: `libnvrtc.so.13`, `libnvrtc.so.13.0.88`.
const LIBRARY_PREFIX: &str = "libnvrtc.so.";

const FIX_NVRTC: &str = "set TESSERA_NVRTC to libnvrtc.so.13 (or the folder holding it and \
    libnvrtc-builtins.so.13.*), set CUDA_HOME to a CUDA 13 toolkit, or run the README's provisioning \
    step, which unpacks the nvidia-cuda-nvrtc wheel into .tessera/cuda";
const FIX_PTXAS: &str = "set TESSERA_PTXAS to the ptxas executable, set CUDA_HOME to a CUDA 13 \
    toolkit, put ptxas on PATH, or run the README's provisioning step, which unpacks the \
    nvidia-cuda-nvcc wheel into .tessera/cuda";

/// Which rule of the search found NVRTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NvrtcOrigin {
    /// `TESSERA_NVRTC`.
    Override,
    CudaHome,
    CudaPath,
    /// `.tessera/cuda` above the current folder, the executable or the workspace.
    ProjectLocal,
    /// The active virtualenv's site-packages.
    VirtualEnv,
    /// The active conda environment: its `lib` folder or its site-packages.
    CondaPrefix,
    /// `/usr/local/cuda`, `/opt/cuda`.
    SystemToolkit,
    /// The usual system and user Python site-packages folders.
    SitePackages,
    /// The folders `python3` on `PATH` reports.
    PythonReported,
    /// The system library folders.
    SystemLibrary,
}

impl NvrtcOrigin {
    /// A stable short name, e.g. for JSON.
    pub fn name(self) -> &'static str {
        match self {
            NvrtcOrigin::Override => "TESSERA_NVRTC",
            NvrtcOrigin::CudaHome => "CUDA_HOME",
            NvrtcOrigin::CudaPath => "CUDA_PATH",
            NvrtcOrigin::ProjectLocal => "project-local",
            NvrtcOrigin::VirtualEnv => "VIRTUAL_ENV",
            NvrtcOrigin::CondaPrefix => "CONDA_PREFIX",
            NvrtcOrigin::SystemToolkit => "system-toolkit",
            NvrtcOrigin::SitePackages => "site-packages",
            NvrtcOrigin::PythonReported => "python3",
            NvrtcOrigin::SystemLibrary => "system-library",
        }
    }
}

impl fmt::Display for NvrtcOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NvrtcOrigin::Override => "TESSERA_NVRTC",
            NvrtcOrigin::CudaHome => "CUDA_HOME",
            NvrtcOrigin::CudaPath => "CUDA_PATH",
            NvrtcOrigin::ProjectLocal => "project-local .tessera/cuda",
            NvrtcOrigin::VirtualEnv => "VIRTUAL_ENV site-packages",
            NvrtcOrigin::CondaPrefix => "CONDA_PREFIX",
            NvrtcOrigin::SystemToolkit => "system CUDA toolkit",
            NvrtcOrigin::SitePackages => "Python site-packages",
            NvrtcOrigin::PythonReported => "python3 sys.path",
            NvrtcOrigin::SystemLibrary => "system library folder",
        })
    }
}

/// The NVRTC files to load: the library and, when found beside it, its builtins library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvrtcFiles {
    pub library: PathBuf,
    pub builtins: Option<PathBuf>,
    /// `(major, minor)` as the file names tell it (the builtins library's, else the library's own
    /// or its symlink's), without loading anything; `None` when they do not.
    pub version: Option<(i32, i32)>,
    pub origin: NvrtcOrigin,
    /// Why this NVRTC may not work with the installed driver, when it may not.
    pub warning: Option<String>,
}

/// What the NVRTC search depends on, captured once: environment variables, the folders the
/// project-local toolkit may sit above, and the file system root the standard paths are under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvrtcSearchEnv {
    pub cuda_home: Option<PathBuf>,
    pub cuda_path: Option<PathBuf>,
    /// Folders whose ancestors may hold `.tessera/cuda`.
    pub project_starts: Vec<PathBuf>,
    pub virtual_env: Option<PathBuf>,
    pub conda_prefix: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// The folders `python3` reports: slow to ask (it runs Python), so only filled when the
    /// folders before them hold no usable NVRTC.
    pub python_roots: Vec<PathBuf>,
    /// `/`; the standard paths (`/usr/local/cuda`, `/usr/lib`, ...) are taken under it.
    pub root: PathBuf,
}

impl NvrtcSearchEnv {
    /// This process's environment (without asking Python).
    pub fn capture() -> NvrtcSearchEnv {
        let var = |name: &str| env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        NvrtcSearchEnv {
            cuda_home: var("CUDA_HOME"),
            cuda_path: var("CUDA_PATH"),
            project_starts: project_starts(),
            virtual_env: var("VIRTUAL_ENV"),
            conda_prefix: var("CONDA_PREFIX"),
            home: var("HOME"),
            python_roots: Vec::new(),
            root: PathBuf::from("/"),
        }
    }
}

/// A folder to look for NVRTC in, and the rule that put it on the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvrtcCandidate {
    pub dir: PathBuf,
    pub origin: NvrtcOrigin,
}

/// The folders to search for NVRTC, in order, each once:
///
/// 1. `CUDA_HOME`, `CUDA_PATH` (`lib64`, `lib`, `targets/<arch>-linux/lib`): a toolkit chosen on
///    purpose;
/// 2. the project-local `.tessera/cuda` (the provisioned wheel);
/// 3. the active `VIRTUAL_ENV` / `CONDA_PREFIX`;
/// 4. `/usr/local/cuda`, `/opt/cuda` (and their `targets/<arch>-linux/lib`);
/// 5. the usual Python site-packages folders, then the folders `python3` reports;
/// 6. the system library folders.
///
/// A system toolkit comes before the Python wheels because it normally matches the installed
/// driver (they are installed together), whereas a pip wheel (say, one PyTorch pulled in) may be a
/// newer CUDA than the driver supports, and a newer NVRTC's CUBIN or PTX may not load on it.
/// [`choose_nvrtc`] then skips such a newer NVRTC where the driver's version is known.
pub fn nvrtc_candidate_dirs(search: &NvrtcSearchEnv) -> Vec<NvrtcCandidate> {
    let mut list = CandidateList::default();
    let toolkit_subs = ["lib64", "lib", target_lib_dir()];
    for (home, origin) in [(&search.cuda_home, NvrtcOrigin::CudaHome), (&search.cuda_path, NvrtcOrigin::CudaPath)] {
        if let Some(home) = home {
            list.extend(toolkit_subs.iter().map(|sub| home.join(sub)), origin);
        }
    }
    for start in &search.project_starts {
        for dir in start.ancestors() {
            list.extend(wheel_lib_dirs(&dir.join(PROJECT_LOCAL_DIR)), NvrtcOrigin::ProjectLocal);
        }
    }
    if let Some(venv) = &search.virtual_env {
        for site in python_dirs(&venv.join("lib"), "site-packages") {
            list.extend(wheel_lib_dirs(&site), NvrtcOrigin::VirtualEnv);
        }
    }
    if let Some(conda) = &search.conda_prefix {
        // Conda installs the toolkit's libraries straight into its `lib`.
        list.push(conda.join("lib"), NvrtcOrigin::CondaPrefix);
        for site in python_dirs(&conda.join("lib"), "site-packages") {
            list.extend(wheel_lib_dirs(&site), NvrtcOrigin::CondaPrefix);
        }
    }
    let root = &search.root;
    for toolkit in ["usr/local/cuda", "opt/cuda"] {
        list.extend(toolkit_subs.iter().map(|sub| root.join(toolkit).join(sub)), NvrtcOrigin::SystemToolkit);
    }
    for site in site_packages_globs(root, search.home.as_deref()) {
        list.extend(wheel_lib_dirs(&site), NvrtcOrigin::SitePackages);
    }
    for python_root in &search.python_roots {
        list.extend(wheel_lib_dirs(python_root), NvrtcOrigin::PythonReported);
    }
    list.extend(system_lib_dirs(root), NvrtcOrigin::SystemLibrary);
    list.candidates
}

/// Candidates in order, each folder once (the roots overlap: the current folder is usually inside
/// the workspace, `CUDA_HOME` is often `/usr/local/cuda`).
#[derive(Default)]
struct CandidateList {
    candidates: Vec<NvrtcCandidate>,
    seen: HashSet<PathBuf>,
}

impl CandidateList {
    fn push(&mut self, dir: PathBuf, origin: NvrtcOrigin) {
        if self.seen.insert(dir.clone()) {
            self.candidates.push(NvrtcCandidate { dir, origin });
        }
    }

    fn extend(&mut self, dirs: impl IntoIterator<Item = PathBuf>, origin: NvrtcOrigin) {
        for dir in dirs {
            self.push(dir, origin);
        }
    }
}

/// The library folders of the NVRTC wheels under a site-packages (or project-local) folder: the
/// CUDA 13 one, and the CUDA 12 one so that a wrong-major hit can be reported.
fn wheel_lib_dirs(site: &Path) -> [PathBuf; 2] {
    [site.join(WHEEL_DIR).join("lib"), site.join(LEGACY_NVRTC_WHEEL_DIR)]
}

/// The first of `found` (in search order) whose version is at most the driver's CUDA version
/// `(major, minor)`, with no warning. When the driver is unknown (no libcuda: nothing will load
/// CUBIN anyway) the first. When none qualifies, the first, with a warning that says so. `None`
/// only when `found` is empty.
pub fn choose_nvrtc(found: &[NvrtcFiles], driver: Option<(i32, i32)>) -> Option<NvrtcFiles> {
    let first = found.first()?;
    let Some(driver) = driver else { return Some(first.clone()) };
    if let Some(fit) = found.iter().find(|f| f.version.is_some_and(|v| v <= driver)) {
        return Some(fit.clone());
    }
    let listed: Vec<String> = found.iter().map(|f| format!("{} ({})", f.library.display(), version_label(f.version))).collect();
    let warning = format!(
        "no NVRTC found is known to be at most the driver's CUDA {}.{} (found: {}); using {}, whose \
         kernels may not load on this driver. Point TESSERA_NVRTC at an NVRTC no newer than the driver, \
         or update the driver",
        driver.0,
        driver.1,
        listed.join(", "),
        first.library.display()
    );
    Some(NvrtcFiles { warning: Some(warning), ..first.clone() })
}

fn version_label(version: Option<(i32, i32)>) -> String {
    version.map_or_else(|| "version unknown".to_string(), |(major, minor)| format!("{major}.{minor}"))
}

/// Finds NVRTC 13: `TESSERA_NVRTC` (a file or a folder; set but pointing at no NVRTC is an error),
/// else the first folder of [`nvrtc_candidate_dirs`] that holds NVRTC 13 and, where the driver's
/// version can be read, is no newer than it ([`choose_nvrtc`]).
pub fn find_nvrtc() -> Result<NvrtcFiles> {
    let driver = crate::device::driver::driver_cuda_version();
    if let Some(value) = env::var_os(NVRTC_ENV).filter(|v| !v.is_empty()) {
        return nvrtc_override(&PathBuf::from(value), driver);
    }
    find_nvrtc_in(NvrtcSearchEnv::capture(), driver, python_reported_roots)
}

/// `TESSERA_NVRTC`: used even when newer than the driver (it is a deliberate choice), with a
/// warning then.
fn nvrtc_override(path: &Path, driver: Option<(i32, i32)>) -> Result<NvrtcFiles> {
    let mut search = Search::default();
    let files = if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let builtins = find_builtins(dir);
        let version = files_version(path, builtins.as_deref());
        Some(NvrtcFiles { library: path.to_path_buf(), builtins, version, origin: NvrtcOrigin::Override, warning: None })
    } else {
        search.nvrtc_in(&NvrtcCandidate { dir: path.to_path_buf(), origin: NvrtcOrigin::Override })
    };
    // An explicit setting that points nowhere is a mistake to report, not to search past.
    let files = files.ok_or_else(|| search.not_found("NVRTC (libnvrtc.so.13)", FIX_NVRTC))?;
    let too_new = matches!((files.version, driver), (Some(v), Some(d)) if v > d);
    let warning = too_new.then(|| {
        format!(
            "{NVRTC_ENV} selects NVRTC {}, newer than the driver's CUDA {}; its kernels may not load",
            version_label(files.version),
            version_label(driver)
        )
    });
    Ok(NvrtcFiles { warning, ..files })
}

/// The search without `TESSERA_NVRTC`. `ask_python` is only called when no folder before its
/// place in the order holds a usable NVRTC.
fn find_nvrtc_in(
    mut search_env: NvrtcSearchEnv,
    driver: Option<(i32, i32)>,
    ask_python: impl FnOnce() -> Vec<PathBuf>,
) -> Result<NvrtcFiles> {
    let (chosen, search) = scan_and_choose(&search_env, driver);
    let settled = chosen
        .as_ref()
        .is_some_and(|c| c.warning.is_none() && !matches!(c.origin, NvrtcOrigin::PythonReported | NvrtcOrigin::SystemLibrary));
    if settled {
        return chosen.ok_or_else(|| search.not_found("NVRTC (libnvrtc.so.13)", FIX_NVRTC));
    }
    search_env.python_roots = ask_python();
    let (chosen, search) = scan_and_choose(&search_env, driver);
    chosen.ok_or_else(|| search.not_found("NVRTC (libnvrtc.so.13)", FIX_NVRTC))
}

fn scan_and_choose(search_env: &NvrtcSearchEnv, driver: Option<(i32, i32)>) -> (Option<NvrtcFiles>, Search) {
    let mut search = Search::default();
    let found: Vec<NvrtcFiles> =
        nvrtc_candidate_dirs(search_env).iter().filter_map(|candidate| search.nvrtc_in(candidate)).collect();
    let chosen = choose_nvrtc(&found, driver);
    if let (Some(chosen), Some(driver)) = (&chosen, driver) {
        for passed in found.iter().filter(|f| f.library != chosen.library && f.version.is_some_and(|v| v > driver)) {
            search.rejected.push(format!(
                "{}: NVRTC {}, newer than the driver's CUDA {}",
                passed.library.display(),
                version_label(passed.version),
                version_label(Some(driver))
            ));
        }
    }
    (chosen, search)
}

/// `(major, minor)` of an NVRTC from its file names: the builtins library's (`.so.13.0`: NVRTC
/// loads exactly its own version's builtins), else the library's own name or that of the file its
/// symlink points to (`libnvrtc.so.13.0.88`).
fn files_version(library: &Path, builtins: Option<&Path>) -> Option<(i32, i32)> {
    let name_of = |p: &Path| p.file_name().and_then(OsStr::to_str).map(str::to_string);
    let linked = fs::read_link(library).ok().and_then(|target| name_of(&target));
    builtins
        .and_then(name_of)
        .and_then(|name| version_after(&name, BUILTINS_PREFIX))
        .or_else(|| name_of(library).and_then(|name| version_after(&name, LIBRARY_PREFIX)))
        .or_else(|| linked.and_then(|name| version_after(&name, LIBRARY_PREFIX)))
}

/// `13.0` out of `<prefix>13.0[.88]`; `None` without a minor version.
fn version_after(name: &str, prefix: &str) -> Option<(i32, i32)> {
    let mut parts = name.strip_prefix(prefix)?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
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
    for root in python_reported_roots() {
        let candidate = root.join(WHEEL_DIR).join("bin/ptxas");
        if search.ptxas(&candidate, &NvrtcOrigin::PythonReported.to_string()) {
            return Ok(candidate);
        }
    }
    let standard = PathBuf::from("/usr/local/cuda/bin/ptxas");
    if search.ptxas(&standard, "standard path") {
        return Ok(standard);
    }
    Err(search.not_found("ptxas", FIX_PTXAS))
}

/// The `release X.Y` of `ptxas --version`, e.g. `(13, 0)`; `None` when it cannot be run or does
/// not say.
pub fn ptxas_release(ptxas: &Path) -> Option<(u32, u32)> {
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

    fn nvrtc_in(&mut self, candidate: &NvrtcCandidate) -> Option<NvrtcFiles> {
        let dir = &candidate.dir;
        if !self.visit(dir, &candidate.origin.to_string()) {
            return None;
        }
        let names = file_names(dir);
        let Some(library) = pick_nvrtc(&names).map(|name| dir.join(name)) else {
            for other in names.iter().filter(|n| is_other_major_nvrtc(n)) {
                self.rejected.push(format!(
                    "{}: not NVRTC {NVRTC_MAJOR}, which this build of Tessera needs",
                    dir.join(other).display()
                ));
            }
            return None;
        };
        let builtins = find_builtins(dir);
        let version = files_version(&library, builtins.as_deref());
        Some(NvrtcFiles { library, builtins, version, origin: candidate.origin, warning: None })
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
fn find_builtins(dir: &Path) -> Option<PathBuf> {
    let prefix = format!("{BUILTINS_PREFIX}{NVRTC_MAJOR}.");
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

/// The system library folders under `root` (`/`).
fn system_lib_dirs(root: &Path) -> Vec<PathBuf> {
    let multiarch = format!("usr/lib/{}-linux-gnu", env::consts::ARCH);
    [multiarch.as_str(), "usr/lib64", "usr/lib"].into_iter().map(|dir| root.join(dir)).collect()
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
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = env::var_os(var).filter(|v| !v.is_empty()) {
            roots.extend(python_dirs(&Path::new(&prefix).join("lib"), "site-packages").into_iter().map(|d| (d, var.to_string())));
        }
    }
    let home = env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    for dir in site_packages_globs(Path::new("/"), home.as_deref()) {
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

/// The usual system (under `root`, i.e. `/`) and user site-packages folders.
fn site_packages_globs(root: &Path, home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    dirs.extend(python_dirs(&root.join("usr/local/lib"), "site-packages"));
    dirs.extend(python_dirs(&root.join("usr/local/lib"), "dist-packages"));
    dirs.push(root.join("usr/lib/python3/dist-packages"));
    dirs.extend(python_dirs(&root.join("usr/lib"), "site-packages"));
    dirs.extend(python_dirs(&root.join("usr/lib64"), "site-packages"));
    if let Some(home) = home {
        dirs.extend(python_dirs(&home.join(".local/lib"), "site-packages"));
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

/// The site-packages folders and `sys.path` of whatever `python3` is on `PATH` (a pyenv or
/// a virtualenv that is not activated, say). Empty when there is no Python.
fn python_reported_roots() -> Vec<PathBuf> {
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
        .map(PathBuf::from)
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
        let library = local.join(WHEEL_DIR).join("lib").join("libnvrtc.so.13");
        let present = if library.exists() { Ok(()) } else { Err(format!("no project-local NVRTC at {}", library.display())) };
        if !crate::compile::test_tool_present("the project-local NVRTC", present) {
            return;
        }
        let found = find_nvrtc().unwrap();
        assert!(found.library.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc.so.13")));
        assert!(found.builtins.is_some(), "{found:?}");
    }

    #[test]
    fn not_found_lists_the_search_and_the_fix() {
        let mut search = Search::default();
        let candidate = NvrtcCandidate { dir: PathBuf::from("/nonexistent/tessera/lib"), origin: NvrtcOrigin::CudaHome };
        assert!(search.nvrtc_in(&candidate).is_none());
        let msg = search.not_found("NVRTC (libnvrtc.so.13)", FIX_NVRTC).to_string();
        assert!(msg.contains("/nonexistent/tessera/lib (CUDA_HOME)"), "{msg}");
        assert!(msg.contains("TESSERA_NVRTC"), "{msg}");
    }

    /// Empty files standing for an NVRTC install: the library and, if given, its builtins.
    fn fake_nvrtc(dir: &Path, builtins_version: Option<&str>) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("libnvrtc.so.13"), b"").unwrap();
        if let Some(version) = builtins_version {
            fs::write(dir.join(format!("libnvrtc-builtins.so.{version}")), b"").unwrap();
        }
        dir.to_path_buf()
    }

    /// A search environment where nothing is set and the standard paths are under `root`.
    fn bare_env(root: &Path) -> NvrtcSearchEnv {
        NvrtcSearchEnv {
            cuda_home: None,
            cuda_path: None,
            project_starts: Vec::new(),
            virtual_env: None,
            conda_prefix: None,
            home: None,
            python_roots: Vec::new(),
            root: root.to_path_buf(),
        }
    }

    #[test]
    fn candidate_folders_come_in_the_documented_order() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for dir in ["venv/lib/python3.12", "conda/lib/python3.11", "root/usr/local/lib/python3.10", "home/.local/lib/python3.9"] {
            fs::create_dir_all(t.join(dir)).unwrap();
        }
        let search = NvrtcSearchEnv {
            cuda_home: Some(t.join("cuda-home")),
            cuda_path: Some(t.join("cuda-path")),
            project_starts: vec![t.join("work/project/src")],
            virtual_env: Some(t.join("venv")),
            conda_prefix: Some(t.join("conda")),
            home: Some(t.join("home")),
            python_roots: vec![t.join("pyroot")],
            root: t.join("root"),
        };
        let candidates = nvrtc_candidate_dirs(&search);
        // Each rule's first folder, in the order the rules apply.
        let firsts: Vec<(NvrtcOrigin, PathBuf)> = {
            let mut firsts: Vec<(NvrtcOrigin, PathBuf)> = Vec::new();
            for c in &candidates {
                if !matches!(firsts.last(), Some((origin, _)) if *origin == c.origin) {
                    firsts.push((c.origin, c.dir.clone()));
                }
            }
            firsts
        };
        let wheel = |site: PathBuf| site.join("nvidia/cu13/lib");
        let expected = vec![
            (NvrtcOrigin::CudaHome, t.join("cuda-home/lib64")),
            (NvrtcOrigin::CudaPath, t.join("cuda-path/lib64")),
            (NvrtcOrigin::ProjectLocal, wheel(t.join("work/project/src/.tessera/cuda"))),
            (NvrtcOrigin::VirtualEnv, wheel(t.join("venv/lib/python3.12/site-packages"))),
            (NvrtcOrigin::CondaPrefix, t.join("conda/lib")),
            (NvrtcOrigin::SystemToolkit, t.join("root/usr/local/cuda/lib64")),
            (NvrtcOrigin::SitePackages, wheel(t.join("root/usr/local/lib/python3.10/site-packages"))),
            (NvrtcOrigin::PythonReported, wheel(t.join("pyroot"))),
            (NvrtcOrigin::SystemLibrary, t.join(format!("root/usr/lib/{}-linux-gnu", env::consts::ARCH))),
        ];
        assert_eq!(firsts, expected, "{candidates:#?}");
        // The project-local folder is looked for above the start too; /opt/cuda after /usr/local/cuda;
        // the user's site-packages among the site-packages; every folder once.
        let dirs: Vec<&PathBuf> = candidates.iter().map(|c| &c.dir).collect();
        assert!(dirs.contains(&&wheel(t.join("work/.tessera/cuda"))));
        assert!(dirs.contains(&&t.join("root/opt/cuda/lib64")));
        assert!(dirs.contains(&&wheel(t.join("home/.local/lib/python3.9/site-packages"))));
        assert_eq!(dirs.iter().collect::<HashSet<_>>().len(), dirs.len());
    }

    #[test]
    fn versions_are_read_from_file_names_without_loading() {
        let tmp = tempfile::tempdir().unwrap();
        let toolkit = fake_nvrtc(&tmp.path().join("toolkit"), Some("13.0"));
        let wheel = fake_nvrtc(&tmp.path().join("wheel"), Some("13.2"));
        let bare = fake_nvrtc(&tmp.path().join("bare"), None);
        let version = |dir: &Path| files_version(&dir.join("libnvrtc.so.13"), find_builtins(dir).as_deref());
        assert_eq!(version(&toolkit), Some((13, 0)));
        assert_eq!(version(&wheel), Some((13, 2)));
        assert_eq!(version(&bare), None);
        // A versioned soname, or the file a symlink points to.
        std::os::unix::fs::symlink("libnvrtc.so.13.1.80", bare.join("libnvrtc.so.13.x")).unwrap();
        assert_eq!(files_version(&bare.join("libnvrtc.so.13.x"), None), Some((13, 1)));
        assert_eq!(files_version(Path::new("/x/libnvrtc.so.13.0.88"), None), Some((13, 0)));
        assert_eq!(version_after("libnvrtc-builtins.so.13.10", BUILTINS_PREFIX), Some((13, 10)));
        assert_eq!(version_after("libnvrtc.so.13", LIBRARY_PREFIX), None);
    }

    #[test]
    fn the_first_nvrtc_the_driver_supports_is_chosen() {
        let tmp = tempfile::tempdir().unwrap();
        // A pip wheel newer than the driver found first (say, through CUDA_HOME), the toolkit second.
        let newer = fake_nvrtc(&tmp.path().join("wheel"), Some("13.2"));
        let matching = fake_nvrtc(&tmp.path().join("toolkit"), Some("13.0"));
        let mut search = Search::default();
        let found: Vec<NvrtcFiles> = [(&newer, NvrtcOrigin::CudaHome), (&matching, NvrtcOrigin::SystemToolkit)]
            .into_iter()
            .filter_map(|(dir, origin)| search.nvrtc_in(&NvrtcCandidate { dir: dir.clone(), origin }))
            .collect();
        assert_eq!(found.len(), 2);

        let on_13_0 = choose_nvrtc(&found, Some((13, 0))).unwrap();
        assert_eq!(on_13_0.library, matching.join("libnvrtc.so.13"));
        assert_eq!((on_13_0.version, on_13_0.origin, on_13_0.warning.as_deref()), (Some((13, 0)), NvrtcOrigin::SystemToolkit, None));
        assert_eq!(on_13_0.builtins, Some(matching.join("libnvrtc-builtins.so.13.0")));

        let on_13_2 = choose_nvrtc(&found, Some((13, 2))).unwrap();
        assert_eq!((on_13_2.library, on_13_2.warning), (newer.join("libnvrtc.so.13"), None));

        // No driver (nothing will load CUBIN): simply the first.
        assert_eq!(choose_nvrtc(&found, None).unwrap().library, newer.join("libnvrtc.so.13"));

        // None old enough: the first, with a warning naming the driver and what was found.
        let on_12_8 = choose_nvrtc(&found, Some((12, 8))).unwrap();
        assert_eq!(on_12_8.library, newer.join("libnvrtc.so.13"));
        let warning = on_12_8.warning.unwrap();
        assert!(warning.contains("CUDA 12.8") && warning.contains("13.2") && warning.contains("13.0"), "{warning}");
        assert_eq!(choose_nvrtc(&[], Some((13, 0))), None);
    }

    #[test]
    fn the_search_passes_over_an_nvrtc_newer_than_the_driver_and_asks_python_only_when_needed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let toolkit = fake_nvrtc(&root.join("usr/local/cuda/lib64"), Some("13.0"));
        let newer = fake_nvrtc(&tmp.path().join("newer/lib64"), Some("13.2"));
        let search = NvrtcSearchEnv { cuda_home: Some(tmp.path().join("newer")), ..bare_env(&root) };
        let never = || -> Vec<PathBuf> { panic!("python3 must not be asked when a usable NVRTC comes first") };

        let found = find_nvrtc_in(search.clone(), Some((13, 0)), never).unwrap();
        assert_eq!((found.library, found.origin), (toolkit.join("libnvrtc.so.13"), NvrtcOrigin::SystemToolkit));
        let found = find_nvrtc_in(search.clone(), Some((13, 2)), never).unwrap();
        assert_eq!((found.library, found.origin), (newer.join("libnvrtc.so.13"), NvrtcOrigin::CudaHome));

        // Only a wheel python3 knows about, and it is too new: asked, then the first with a warning.
        let pyroot = tmp.path().join("pyroot");
        fake_nvrtc(&pyroot.join("nvidia/cu13/lib"), Some("13.2"));
        let asked = std::cell::Cell::new(false);
        let found = find_nvrtc_in(bare_env(&tmp.path().join("empty")), Some((13, 0)), || {
            asked.set(true);
            vec![pyroot.clone()]
        })
        .unwrap();
        assert!(asked.get());
        assert_eq!(found.origin, NvrtcOrigin::PythonReported);
        assert!(found.warning.is_some());

        // Nothing anywhere: the error lists what was searched.
        let err = find_nvrtc_in(bare_env(&tmp.path().join("empty")), Some((13, 0)), Vec::new).unwrap_err().to_string();
        assert!(err.contains("usr/local/cuda/lib64 (system CUDA toolkit)") && err.contains("TESSERA_NVRTC"), "{err}");
    }

    #[test]
    fn an_override_is_used_even_when_newer_than_the_driver() {
        let tmp = tempfile::tempdir().unwrap();
        let newer = fake_nvrtc(&tmp.path().join("lib"), Some("13.2"));
        let by_file = nvrtc_override(&newer.join("libnvrtc.so.13"), Some((13, 0))).unwrap();
        assert_eq!((by_file.origin, by_file.version), (NvrtcOrigin::Override, Some((13, 2))));
        assert!(by_file.warning.is_some_and(|w| w.contains("TESSERA_NVRTC")));
        let by_dir = nvrtc_override(&newer, Some((13, 2))).unwrap();
        assert_eq!((by_dir.library, by_dir.warning), (newer.join("libnvrtc.so.13"), None));
        let err = nvrtc_override(&tmp.path().join("missing"), None).unwrap_err().to_string();
        assert!(err.contains("missing (TESSERA_NVRTC)"), "{err}");
    }
}
