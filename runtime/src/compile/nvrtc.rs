//! Loading NVRTC once per process, and a small safe wrapper over one NVRTC program.
//!
//! The library [`locate`](super::locate) chose is opened by full path, and every NVRTC entry point this
//! crate calls is resolved from that one handle into a function table ([`NvrtcApi`]): nothing
//! looks NVRTC up by a bare name, so whatever copy the system loader would find under
//! `libnvrtc.so` (say, a toolkit in `ld.so.cache` while the search chose a pip wheel) is never
//! used. NVRTC itself `dlopen`s `libnvrtc-builtins.so.13.x` by bare name at its first compile, so
//! the builtins library found beside it is loaded first with `RTLD_GLOBAL`: the loader then answers
//! that `dlopen` with the object already loaded, matched by SONAME.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::OnceLock;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

use crate::common::error::{Result, RuntimeError};
use crate::compile::locate::{find_nvrtc, NvrtcOrigin, NVRTC_MAJOR};

/// `nvrtcResult` (`nvrtc.h`): an `enum`, i.e. a C `int`.
type Status = c_int;
const NVRTC_SUCCESS: Status = 0;
/// The source has errors; the log says which.
const NVRTC_ERROR_COMPILATION: Status = 6;
/// NVRTC could not load or use its builtins library.
const NVRTC_ERROR_BUILTIN_OPERATION_FAILURE: Status = 7;

/// `nvrtcProgram`: an opaque pointer.
type RawProgram = *mut c_void;

/// The NVRTC entry points this crate calls, resolved from the loaded library's own handle. Their
/// signatures are those of `nvrtc.h`, unchanged since NVRTC 11.
struct NvrtcApi {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status,
    create_program: unsafe extern "C" fn(
        *mut RawProgram,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Status,
    compile_program: unsafe extern "C" fn(RawProgram, c_int, *const *const c_char) -> Status,
    get_program_log_size: unsafe extern "C" fn(RawProgram, *mut usize) -> Status,
    get_program_log: unsafe extern "C" fn(RawProgram, *mut c_char) -> Status,
    get_ptx_size: unsafe extern "C" fn(RawProgram, *mut usize) -> Status,
    get_ptx: unsafe extern "C" fn(RawProgram, *mut c_char) -> Status,
    get_cubin_size: unsafe extern "C" fn(RawProgram, *mut usize) -> Status,
    get_cubin: unsafe extern "C" fn(RawProgram, *mut c_char) -> Status,
    destroy_program: unsafe extern "C" fn(*mut RawProgram) -> Status,
    get_error_string: unsafe extern "C" fn(Status) -> *const c_char,
}

impl std::fmt::Debug for NvrtcApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvrtcApi { .. }")
    }
}

impl NvrtcApi {
    /// Every entry point from `library`, or the first one it lacks.
    fn resolve(library: &Library, path: &Path) -> Result<NvrtcApi> {
        /// Copies a function pointer out of the library. The pointer stays valid because the
        /// library is never unloaded (see [`NvrtcLibrary`]).
        fn symbol<T: Copy>(library: &Library, path: &Path, name: &str) -> Result<T> {
            let nul_terminated = format!("{name}\0");
            // SAFETY: the caller names a `T` with the entry point's `nvrtc.h` signature.
            unsafe { library.get::<T>(nul_terminated.as_bytes()) }.map(|s| *s).map_err(|e| RuntimeError::LibraryLoad {
                path: path.to_path_buf(),
                message: format!("not a usable NVRTC {NVRTC_MAJOR} library: it lacks {name} ({e})"),
            })
        }
        Ok(NvrtcApi {
            version: symbol(library, path, "nvrtcVersion")?,
            create_program: symbol(library, path, "nvrtcCreateProgram")?,
            compile_program: symbol(library, path, "nvrtcCompileProgram")?,
            get_program_log_size: symbol(library, path, "nvrtcGetProgramLogSize")?,
            get_program_log: symbol(library, path, "nvrtcGetProgramLog")?,
            get_ptx_size: symbol(library, path, "nvrtcGetPTXSize")?,
            get_ptx: symbol(library, path, "nvrtcGetPTX")?,
            get_cubin_size: symbol(library, path, "nvrtcGetCUBINSize")?,
            get_cubin: symbol(library, path, "nvrtcGetCUBIN")?,
            destroy_program: symbol(library, path, "nvrtcDestroyProgram")?,
            get_error_string: symbol(library, path, "nvrtcGetErrorString")?,
        })
    }

    /// `Ok` for success, else the [`RuntimeError::Nvrtc`] of `call`.
    fn check(&self, call: &'static str, status: Status) -> Result<()> {
        if status == NVRTC_SUCCESS {
            return Ok(());
        }
        // SAFETY: NVRTC returns a static string for every status, including unknown ones.
        let text = unsafe {
            let text = (self.get_error_string)(status);
            if text.is_null() {
                format!("status {status}")
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        let mut message = format!("{text} (nvrtcResult {status})");
        if status == NVRTC_ERROR_BUILTIN_OPERATION_FAILURE {
            message.push_str(&format!(
                "; NVRTC could not load libnvrtc-builtins.so.{NVRTC_MAJOR}.*, which must sit beside \
                 libnvrtc.so.{NVRTC_MAJOR}"
            ));
        }
        Err(RuntimeError::Nvrtc { call, message })
    }
}

/// The NVRTC this process compiles with.
#[derive(Debug)]
pub struct NvrtcLibrary {
    path: PathBuf,
    builtins: Option<PathBuf>,
    version: (i32, i32),
    origin: NvrtcOrigin,
    warning: Option<String>,
    api: NvrtcApi,
    /// Never dropped (the library lives in a process-wide static): `api` points into these.
    _handles: Vec<Library>,
}

impl NvrtcLibrary {
    /// The `libnvrtc.so.13` loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `libnvrtc-builtins.so.13.x` loaded beside it, if one was found.
    pub fn builtins(&self) -> Option<&Path> {
        self.builtins.as_deref()
    }

    /// `(major, minor)` as reported by `nvrtcVersion`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// Which rule of the search ([`super::locate::nvrtc_candidate_dirs`]) found it.
    pub fn origin(&self) -> NvrtcOrigin {
        self.origin
    }

    /// Why this NVRTC may not suit the installed driver (it is newer), when it may not.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
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
    if let Some(warning) = &files.warning {
        eprintln!("tessera: warning: {warning}");
    }
    let mut handles = Vec::new();
    if let Some(builtins) = &files.builtins {
        handles.push(open_global(builtins)?);
    }
    let library = open_global(&files.library)?;
    let api = NvrtcApi::resolve(&library, &files.library)?;
    let version = version_of(&api, &files.library)?;
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
    handles.push(library);
    Ok(NvrtcLibrary {
        path: files.library,
        builtins: files.builtins,
        version,
        origin: files.origin,
        warning: files.warning,
        api,
        _handles: handles,
    })
}

fn open_global(path: &Path) -> Result<Library> {
    // SAFETY: loading a library runs its initialisers; NVRTC's are the vendor's and have no
    // preconditions on the caller.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| RuntimeError::LibraryLoad { path: path.to_path_buf(), message: e.to_string() })
}

fn version_of(api: &NvrtcApi, path: &Path) -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    let status = unsafe { (api.version)(&mut major, &mut minor) };
    if status != NVRTC_SUCCESS {
        return Err(RuntimeError::LibraryLoad {
            path: path.to_path_buf(),
            message: format!("nvrtcVersion returned error {status}"),
        });
    }
    Ok((major, minor))
}

/// One NVRTC program: created from a source, compiled once, then read out. Destroyed on drop.
pub(crate) struct Program {
    raw: RawProgram,
    api: &'static NvrtcApi,
    // NVRTC may keep pointers to the source and name until the program is destroyed.
    _src: CString,
    _name: CString,
}

impl Program {
    pub(crate) fn new(src: &str, name: &str) -> Result<Program> {
        let api = &nvrtc_library()?.api;
        let src = CString::new(src).map_err(|_| RuntimeError::invalid("source", "contains a NUL byte"))?;
        let name = CString::new(name).map_err(|_| RuntimeError::invalid("name", "contains a NUL byte"))?;
        let mut raw: RawProgram = ptr::null_mut();
        // SAFETY: valid out-pointer; NUL-terminated strings alive as long as the program; no headers.
        let status =
            unsafe { (api.create_program)(&mut raw, src.as_ptr(), name.as_ptr(), 0, ptr::null(), ptr::null()) };
        api.check("nvrtcCreateProgram", status)?;
        Ok(Program { raw, api, _src: src, _name: name })
    }

    /// `Ok(true)` when it compiled, `Ok(false)` when the source has errors (see [`Program::log`]).
    pub(crate) fn compile(&self, options: &[String]) -> Result<bool> {
        let options: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| RuntimeError::invalid("NVRTC options", "an option contains a NUL byte"))?;
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let count = c_int::try_from(pointers.len())
            .map_err(|_| RuntimeError::invalid("NVRTC options", format!("{} options", pointers.len())))?;
        // SAFETY: `raw` is a live program; `count` NUL-terminated strings alive for the call.
        let status = unsafe { (self.api.compile_program)(self.raw, count, pointers.as_ptr()) };
        match status {
            NVRTC_ERROR_COMPILATION => Ok(false),
            status => self.api.check("nvrtcCompileProgram", status).map(|()| true),
        }
    }

    pub(crate) fn log(&self) -> Result<String> {
        let log = self.read("nvrtcGetProgramLog", self.api.get_program_log_size, self.api.get_program_log)?;
        Ok(String::from_utf8_lossy(&strip_nul(log)).into_owned())
    }

    /// The PTX text, without NVRTC's terminating NUL.
    pub(crate) fn ptx(&self) -> Result<Vec<u8>> {
        Ok(strip_nul(self.read("nvrtcGetPTX", self.api.get_ptx_size, self.api.get_ptx)?))
    }

    pub(crate) fn cubin(&self) -> Result<Vec<u8>> {
        self.read("nvrtcGetCUBIN", self.api.get_cubin_size, self.api.get_cubin)
    }

    /// One of NVRTC's size-then-contents outputs.
    fn read(
        &self,
        call: &'static str,
        size_of: unsafe extern "C" fn(RawProgram, *mut usize) -> Status,
        contents: unsafe extern "C" fn(RawProgram, *mut c_char) -> Status,
    ) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: `raw` is a live program; valid out-pointer.
        self.api.check(call, unsafe { size_of(self.raw, &mut size) })?;
        let mut bytes = vec![0u8; size];
        // SAFETY: the buffer has the size NVRTC asked for.
        self.api.check(call, unsafe { contents(self.raw, bytes.as_mut_ptr().cast::<c_char>()) })?;
        Ok(bytes)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `nvrtcCreateProgram`, destroyed exactly once.
        let _ = unsafe { (self.api.destroy_program)(&mut self.raw) };
    }
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
    fn compiles_a_trivial_kernel_to_ptx_and_cubin() {
        if !crate::compile::test_tool_present("NVRTC", nvrtc_library()) {
            return;
        }
        let program = Program::new("extern \"C\" __global__ void k(int* p) { *p = 1; }", "k.cu").unwrap();
        assert!(program.compile(&["--gpu-architecture=compute_80".to_string()]).unwrap());
        let ptx = String::from_utf8(program.ptx().unwrap()).unwrap();
        assert!(ptx.contains(".entry k"), "{ptx}");
        assert!(!ptx.ends_with('\0'));
        let program = Program::new("extern \"C\" __global__ void k(int* p) { *p = 1; }", "k.cu").unwrap();
        assert!(program.compile(&["--gpu-architecture=sm_80".to_string()]).unwrap());
        // An ELF image.
        assert_eq!(program.cubin().unwrap().get(..4), Some(&b"\x7fELF"[..]));
    }

    #[test]
    fn a_source_error_is_a_log_not_a_failure() {
        if !crate::compile::test_tool_present("NVRTC", nvrtc_library()) {
            return;
        }
        let program = Program::new("__global__ void k() { undeclared = 1; }", "bad.cu").unwrap();
        assert!(!program.compile(&[]).unwrap());
        let log = program.log().unwrap();
        assert!(log.contains("undeclared") && log.contains("bad.cu"), "{log}");
        // A bad option is NVRTC's error, with its text.
        let program = Program::new("__global__ void k() {}", "k.cu").unwrap();
        let err = program.compile(&["--no-such-option".to_string()]).unwrap_err().to_string();
        assert!(err.contains("nvrtcCompileProgram") && err.contains("nvrtcResult"), "{err}");
    }

    #[test]
    fn the_library_says_where_it_came_from() {
        let Ok(lib) = nvrtc_library() else { return };
        // Consistent with the search, which read the version from the file names.
        assert!(!lib.origin().name().is_empty());
        if let Some(builtins) = lib.builtins() {
            let name = builtins.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(&format!("libnvrtc-builtins.so.{}.", lib.version().0)), "{name}");
        }
    }
}
