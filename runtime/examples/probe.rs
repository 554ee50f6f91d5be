//! Prints what the runtime finds on this machine: NVRTC, ptxas, the kernel cache and the backend.
//! `cargo run -p tessera-runtime --example probe`
use tessera_runtime::{find_ptxas, nvrtc_library, open_backend, BackendKind, KernelCache};

fn main() {
    match nvrtc_library() {
        Ok(lib) => {
            let (major, minor) = lib.version();
            println!("NVRTC {major}.{minor}: {} (found by: {})", lib.path().display(), lib.origin());
            if let Some(builtins) = lib.builtins() {
                println!("  builtins: {}", builtins.display());
            }
        }
        Err(e) => println!("NVRTC: {e}"),
    }
    match find_ptxas() {
        Ok(path) => println!("ptxas: {}", path.display()),
        Err(e) => println!("ptxas: {e}"),
    }
    println!("kernel cache: {}", KernelCache::default_dir().display());
    for kind in BackendKind::ALL {
        match open_backend(kind) {
            Ok(backend) => println!("backend {kind}: {} ({})", backend.device_name(), backend.arch()),
            Err(e) => println!("backend {kind}: {e}"),
        }
    }
}
