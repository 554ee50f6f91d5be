//! NVRTC errors point at the generated source.

mod common;

use tessera_runtime::codegen::{Arch, KernelSource, LaunchGeometry};
use tessera_runtime::{Compiler, RuntimeError, Target};

#[test]
fn compile_error_shows_the_offending_source_line() {
    if !common::nvrtc_available() {
        return;
    }
    let src = "// line 1\n\
               extern \"C\" __global__ void tessera_broken(float* out) {\n\
               \x20   float x = 1.0f;\n\
               \x20   out[0] = x + tessera_undefined_symbol;\n\
               }\n";
    let source = KernelSource::new(
        "tessera_broken".to_string(),
        src.to_string(),
        LaunchGeometry { threads_per_block: 32, dynamic_shared_bytes: 0 },
    );
    let err = Compiler::new().compile(&source, Target::ptx(Arch::SM80)).unwrap_err();
    let RuntimeError::Compile { excerpts, log, .. } = &err else { panic!("expected a compile error, got {err}") };
    assert!(log.contains("tessera_undefined_symbol"), "{log}");
    assert_eq!(excerpts, &[(4, "    out[0] = x + tessera_undefined_symbol;".to_string())]);
    let msg = err.to_string();
    assert!(msg.contains("tessera_broken") && msg.contains("compute_80"), "{msg}");
    assert!(msg.contains("    4 |     out[0] = x + tessera_undefined_symbol;"), "{msg}");
}

#[test]
fn generated_attention_compiles_to_ptx_and_cubin() {
    if !common::nvrtc_available() {
        return;
    }
    use tessera_runtime::codegen::{AttentionSpec, ElemType};
    let spec = AttentionSpec::new(ElemType::F16, 64, true, 8, 2);
    let source = spec.render(Arch::SM90).unwrap();
    let compiler = Compiler::new();
    let ptx = compiler.compile(&source, Target::ptx(Arch::SM90)).unwrap();
    let text = String::from_utf8(ptx.image.clone()).unwrap();
    assert!(text.contains(&format!(".entry {}", source.name)), "entry point missing from PTX");
    assert!(text.contains(".target sm_90"));
    assert!(!ptx.from_cache);
    let cubin = compiler.compile(&source, Target::cubin(Arch::SM90)).unwrap();
    assert_eq!(&cubin.image[..4], b"\x7fELF");
    // Memoised for the life of the compiler.
    assert!(compiler.compile(&source, Target::ptx(Arch::SM90)).unwrap().from_cache);
}
