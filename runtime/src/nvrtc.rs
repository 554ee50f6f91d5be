//! Loading NVRTC once per process, and a small safe wrapper over one NVRTC program.
//!
//! cudarc finds NVRTC by `dlopen`ing a list of bare names, which only works when the library's
//! folder is on `LD_LIBRARY_PATH`; and NVRTC itself `dlopen`s `libnvrtc-builtins.so.13.x` by bare
//! name at its first compile. Both are solved the same way: load the files [`crate::locate`] found by
//! full path with `RTLD_NOW | RTLD_GLOBAL`, builtins first. The dynamic loader then answers later
//! `dlopen("libnvrtc.so.13")` and `dlopen("libnvrtc-builtins.so.13.0")` calls with the already
//! loaded objects, matched by SONAME.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::result::{self as nvrtc_result, NvrtcError};
use cudarc::nvrtc::sys::{self as nvrtc_sys, nvrtcResult};
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

use crate::error::{Result, RuntimeError};
use crate::locate::{find_nvrtc, NVRTC_MAJOR};

/// The NVRTC this process compiles with.
#[derive(Debug)]
pub struct NvrtcLibrary {
    path: PathBuf,
    builtins: Option<PathBuf>,
    version: (i32, i32),
    /// Never dropped: cudarc caches function pointers into these libraries for the life of the
    /// process, so unloading them would leave those dangling.
    _handles: Vec<Library>,
}

impl NvrtcLibrary {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn builtins(&self) -> Option<&Path> {
        self.builtins.as_deref()
    }

    /// `(major, minor)` as reported by `nvrtcVersion`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }
}

/// Finds and loads NVRTC on first use; later calls return the same library (or the same error).
pub fn nvrtc_library() -> Result<&'static NvrtcLibrary> {
    static NVRTC: OnceLock<Result<NvrtcLibrary>> = OnceLock::new();
    NVRTC.get_or_init(load).as_ref().map_err(RuntimeError::replay)
}

/// NVRTC's `(major, minor)` version; loads NVRTC if needed.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    nvrtc_library().map(NvrtcLibrary::version)
}

fn load() -> Result<NvrtcLibrary> {
    let files = find_nvrtc()?;
    let mut handles = Vec::new();
    if let Some(builtins) = &files.builtins {
        handles.push(open_global(builtins)?);
    }
    let library = open_global(&files.library)?;
    let version = version_of(&library, &files.library)?;
    if version.0 != NVRTC_MAJOR {
        return Err(RuntimeError::LibraryLoad {
            path: files.library,
            message: format!(
                "it is NVRTC {}.{}, but this build of Tessera uses the NVRTC {NVRTC_MAJOR} API; point \
                 TESSERA_NVRTC at libnvrtc.so.{NVRTC_MAJOR}",
                version.0, version.1
            ),
        });
    }
    check_cudarc_resolves_to(&library, &files.library)?;
    handles.push(library);
    Ok(NvrtcLibrary { path: files.library, builtins: files.builtins, version, _handles: handles })
}

fn open_global(path: &Path) -> Result<Library> {
    // SAFETY: loading a library runs its initialisers; NVRTC's are the vendor's and have no
    // preconditions on the caller.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| RuntimeError::LibraryLoad { path: path.to_path_buf(), message: e.to_string() })
}

/// Asks the library itself, through our own handle, so that a wrong file fails cleanly here rather
/// than inside cudarc (which panics on a missing symbol).
fn version_of(library: &Library, path: &Path) -> Result<(i32, i32)> {
    type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
    let load_err = |message: String| RuntimeError::LibraryLoad { path: path.to_path_buf(), message };
    // SAFETY: `nvrtcVersion` has had this signature since NVRTC 7.
    let version: libloading::os::unix::Symbol<VersionFn> =
        unsafe { library.get(b"nvrtcVersion\0") }.map_err(|e| load_err(format!("not an NVRTC library: {e}")))?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    let status = unsafe { version(&mut major, &mut minor) };
    if status != 0 {
        return Err(load_err(format!("nvrtcVersion returned error {status}")));
    }
    Ok((major, minor))
}

/// cudarc opens NVRTC by bare names, starting with `libnvrtc.so`. If the system loader knows a
/// different NVRTC under one of those names, cudarc would silently compile with it; compare the
/// address of one entry point to make sure both handles are the same library.
fn check_cudarc_resolves_to(library: &Library, path: &Path) -> Result<()> {
    let load_err = |message: String| RuntimeError::LibraryLoad { path: path.to_path_buf(), message };
    // SAFETY: `is_culib_present` only tries `dlopen` on cudarc's candidate names.
    if !unsafe { nvrtc_sys::is_culib_present() } {
        return Err(load_err(format!(
            "it loads, but cudarc cannot open it as libnvrtc.so.{NVRTC_MAJOR}; its SONAME must be \
             libnvrtc.so.{NVRTC_MAJOR}"
        )));
    }
    // SAFETY: looking up a symbol's address does not call it; `culib` cannot panic after
    // `is_culib_present` returned true, as both try the same names.
    let (ours, theirs) = unsafe {
        let ours = library.get::<*const c_void>(b"nvrtcVersion\0").map(|s| *s);
        let theirs = nvrtc_sys::culib().get::<*const c_void>(b"nvrtcVersion\0").map(|s| *s);
        (ours, theirs)
    };
    match (ours, theirs) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        _ => Err(load_err(
            "another NVRTC library is found first by its plain name (libnvrtc.so) on the system \
             library path, so it would be used instead; remove it from the library path or point \
             TESSERA_NVRTC at that one"
                .to_string(),
        )),
    }
}

fn nvrtc_error(call: &'static str) -> impl Fn(NvrtcError) -> RuntimeError {
    move |e| {
        // SAFETY: NVRTC returns a static string for every status, including unknown ones.
        let text = unsafe { CStr::from_ptr(nvrtc_sys::nvrtcGetErrorString(e.0)) }.to_string_lossy();
        let mut message = format!("{text} ({:?})", e.0);
        if e.0 == nvrtcResult::NVRTC_ERROR_BUILTIN_OPERATION_FAILURE {
            message.push_str(&format!(
                "; NVRTC could not load libnvrtc-builtins.so.{NVRTC_MAJOR}.*, which must sit beside \
                 libnvrtc.so.{NVRTC_MAJOR}"
            ));
        }
        RuntimeError::Nvrtc { call, message }
    }
}

/// One NVRTC program: created from a source, compiled once, then read out. Destroyed on drop.
pub(crate) struct Program {
    raw: nvrtc_sys::nvrtcProgram,
    // NVRTC may keep pointers to the source and name until the program is destroyed.
    _src: CString,
    _name: CString,
}

impl Program {
    pub(crate) fn new(src: &str, name: &str) -> Result<Program> {
        nvrtc_library()?;
        let src = CString::new(src).map_err(|_| RuntimeError::invalid("source", "contains a NUL byte"))?;
        let name = CString::new(name).map_err(|_| RuntimeError::invalid("name", "contains a NUL byte"))?;
        let raw = nvrtc_result::create_program(&src, Some(&name)).map_err(nvrtc_error("nvrtcCreateProgram"))?;
        Ok(Program { raw, _src: src, _name: name })
    }

    /// `Ok(true)` when it compiled, `Ok(false)` when the source has errors (see [`Program::log`]).
    pub(crate) fn compile(&self, options: &[String]) -> Result<bool> {
        // Options are generated by the runtime and never contain NUL bytes, which is the one way
        // cudarc's `compile_program` could panic.
        // SAFETY: `raw` is a live program.
        match unsafe { nvrtc_result::compile_program(self.raw, options) } {
            Ok(()) => Ok(true),
            Err(NvrtcError(nvrtcResult::NVRTC_ERROR_COMPILATION)) => Ok(false),
            Err(e) => Err(nvrtc_error("nvrtcCompileProgram")(e)),
        }
    }

    pub(crate) fn log(&self) -> Result<String> {
        // SAFETY: `raw` is a live program.
        let log = unsafe { nvrtc_result::get_program_log(self.raw) }.map_err(nvrtc_error("nvrtcGetProgramLog"))?;
        Ok(String::from_utf8_lossy(&strip_nul(c_chars_to_bytes(log))).into_owned())
    }

    /// The PTX text, without NVRTC's terminating NUL.
    pub(crate) fn ptx(&self) -> Result<Vec<u8>> {
        // SAFETY: `raw` is a live, compiled program.
        let ptx = unsafe { nvrtc_result::get_ptx(self.raw) }.map_err(nvrtc_error("nvrtcGetPTX"))?;
        Ok(strip_nul(c_chars_to_bytes(ptx)))
    }

    pub(crate) fn cubin(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: `raw` is a live, compiled program; the buffer has the size NVRTC asked for.
        unsafe {
            nvrtc_sys::nvrtcGetCUBINSize(self.raw, &mut size).result().map_err(nvrtc_error("nvrtcGetCUBINSize"))?;
            let mut cubin = vec![0u8; size];
            nvrtc_sys::nvrtcGetCUBIN(self.raw, cubin.as_mut_ptr().cast::<c_char>())
                .result()
                .map_err(nvrtc_error("nvrtcGetCUBIN"))?;
            Ok(cubin)
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program`, destroyed exactly once.
        let _ = unsafe { nvrtc_result::destroy_program(self.raw) };
    }
}

fn c_chars_to_bytes(chars: Vec<c_char>) -> Vec<u8> {
    chars.into_iter().map(|c| c as u8).collect()
}

fn strip_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_nvrtc_13_or_explains_why_not() {
        match nvrtc_library() {
            Ok(lib) => {
                assert_eq!(lib.version().0, NVRTC_MAJOR);
                assert!(lib.path().exists());
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("NVRTC") || msg.contains("nvrtc"), "{msg}");
            }
        }
    }

    #[test]
    fn compiles_a_trivial_kernel_to_ptx() {
        if nvrtc_library().is_err() {
            eprintln!("skipped: NVRTC not available");
            return;
        }
        let program = Program::new("extern \"C\" __global__ void k(int* p) { *p = 1; }", "k.cu").unwrap();
        assert!(program.compile(&["--gpu-architecture=compute_80".to_string()]).unwrap());
        let ptx = String::from_utf8(program.ptx().unwrap()).unwrap();
        assert!(ptx.contains(".entry k"), "{ptx}");
        assert!(!ptx.ends_with('\0'));
    }
}
