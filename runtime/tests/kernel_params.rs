//! The generated declaration of a `#[derive(KernelParams)]` struct is the host/device contract,
//! and NVRTC enforces it: the declaration compiles, a kernel reading the struct gets every field
//! the host wrote (on the simulator, and on a GPU when one opens), and a CUDA struct that drifted
//! from the Rust one (two same-size fields swapped, a size or alignment changed) fails to compile
//! with the struct and field named in the log. Needs NVRTC; skipped with a note without it.

mod common;

use tessera_runtime::codegen::params::{Declarations, DeviceEnum, DevicePtr, DevicePtrMut, KernelParams};
use tessera_runtime::codegen::{Arch, KernelSource, LaunchGeometry, Template, PRELUDE};
use tessera_runtime::{open_backend, Backend, BackendKind, Compiler, LaunchConfig, RuntimeError, SimBackend, Target};

/// What the test kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, DeviceEnum)]
#[repr(i32)]
#[device_enum(prefix = "MODE_")]
enum Mode {
    Copy = 0,
    ScaleShift = 1,
}

/// The test kernel's arguments: plain types and pointers only.
#[derive(Clone, Copy, Debug, KernelParams)]
#[repr(C)]
struct Sample {
    /// Added to every output.
    a: i32,
    /// Multiplies every input.
    b: f32,
    x: DevicePtr<f32>,
    y: DevicePtrMut<f32>,
    n: i64,
    mode: Mode,
    flags: u32,
    /// Added by position modulo 4.
    c: [u32; 4],
}

/// A table entry the kernel reaches through a pointer, and a struct nesting [`Sample`] by value.
#[derive(Clone, Copy, Debug, KernelParams)]
#[repr(C)]
struct Entry {
    data: DevicePtrMut<u64>,
    len: u32,
    pad: u32,
}

#[derive(Clone, Copy, Debug, KernelParams)]
#[repr(C)]
#[kernel_params(cuda = "OuterParams")]
struct Outer {
    table: DevicePtr<Entry>,
    base: Sample,
    count: i32,
    pad: [u8; 4],
}

const KERNEL: &str = "tessera_test_kernel_params";

/// The kernel: `y[i] = (mode == SCALE_SHIFT ? x[i] * b + a + c[i % 4] : x[i]) + flags` for i < n.
fn kernel_body() -> String {
    format!(
        "extern \"C\" __global__ void {KERNEL}(const Sample p) {{\n\
         \x20   const long long i = threadIdx.x;\n\
         \x20   if (i >= p.n) return;\n\
         \x20   float v = p.x[i];\n\
         \x20   if (p.mode == MODE_SCALE_SHIFT) v = v * p.b + (float)p.a + (float)p.c[i % 4];\n\
         \x20   p.y[i] = v + (float)p.flags;\n\
         }}\n"
    )
}

fn source(declarations: &str, body: &str) -> KernelSource {
    KernelSource::new(
        KERNEL.to_string(),
        format!("{declarations}\n{body}"),
        LaunchGeometry { threads_per_block: 32, dynamic_shared_bytes: 0 },
    )
}

/// The compile log of a source that must not compile.
fn compile_log(src: &KernelSource, target: Target) -> String {
    match Compiler::new().compile(src, target) {
        Ok(_) => panic!("compiled, but the declaration does not match the Rust struct:\n{}", src.cuda_src),
        Err(RuntimeError::Compile { log, .. }) => log,
        Err(other) => panic!("expected a compile error, got {other}"),
    }
}

/// `text` with the lines `a` and `b` exchanged (each must occur once).
fn swap_lines(text: &str, a: &str, b: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let find = |line: &str| {
        let found: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| **l == line).map(|(i, _)| i).collect();
        assert_eq!(found.len(), 1, "`{line}` in\n{text}");
        found[0]
    };
    let (i, j) = (find(a), find(b));
    lines.swap(i, j);
    lines.join("\n") + "\n"
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` in\n{text}");
    text.replace(from, to)
}

#[test]
fn generated_declaration_compiles_and_names_the_drifted_field() {
    if !common::nvrtc_available() {
        return;
    }
    let target = Target::ptx(Arch::SM80);
    let decls = Sample::cuda_declarations();
    assert!(
        decls.starts_with("// What the test kernel computes.\nenum : int { MODE_COPY = 0, MODE_SCALE_SHIFT = 1 };\n"),
        "{decls}"
    );
    let body = kernel_body();
    let module = Compiler::new().compile(&source(&decls, &body), target).expect("the generated declaration compiles");
    let ptx = String::from_utf8(module.image).unwrap();
    assert!(ptx.contains(&format!(".entry {KERNEL}")), "{ptx}");

    // `a` and `b` are both 4 bytes: only their offsets tell them apart.
    let swapped = swap_lines(&decls, "    int a;", "    float b;");
    let log = compile_log(&source(&swapped, &body), target);
    assert!(log.contains("Sample.a: the Rust struct has it at byte 0"), "{log}");
    assert!(log.contains("Sample.b: the Rust struct has it at byte 4"), "{log}");
    assert!(!log.contains("Sample.x") && !log.contains("Sample: the Rust struct is"), "{log}");

    // Pointers swapped: same size, and a kernel would write its input.
    let swapped = swap_lines(&decls, "    const float* x;", "    float* y;");
    let log = compile_log(&source(&swapped, &body), target);
    assert!(log.contains("Sample.x: the Rust struct has it at byte 8"), "{log}");

    // One element more at the end: every offset still agrees, the size does not.
    let grown = replace_once(&decls, "    unsigned int c[4];", "    unsigned int c[6];");
    let log = compile_log(&source(&grown, &body), target);
    assert!(log.contains("Sample: the Rust struct is 56 bytes"), "{log}");
    assert!(!log.contains("Sample.c"), "{log}");

    // A field made wider: the size and the offsets after it.
    let wider = replace_once(&decls, "    unsigned int flags;", "    unsigned long long flags;");
    let log = compile_log(&source(&wider, &body), target);
    assert!(log.contains("Sample.c: the Rust struct has it at byte 40"), "{log}");
    assert!(log.contains("Sample: the Rust struct is 56 bytes"), "{log}");

    // Over-aligned: the alignment (and with it the size).
    let aligned = replace_once(&decls, "struct alignas(8) Sample", "struct alignas(16) Sample");
    let log = compile_log(&source(&aligned, &body), target);
    assert!(log.contains("Sample: the Rust struct is aligned to 8 bytes"), "{log}");
}

#[test]
fn nested_declarations_compile_dependencies_first() {
    if !common::nvrtc_available() {
        return;
    }
    let decls = Declarations::of::<Outer>();
    let names: Vec<&str> = decls.iter().map(|d| d.lines().find(|l| !l.starts_with("//")).unwrap()).collect();
    assert_eq!(
        names,
        [
            "struct alignas(8) Entry {",
            "enum : int { MODE_COPY = 0, MODE_SCALE_SHIFT = 1 };",
            "struct alignas(8) Sample {",
            "struct alignas(8) OuterParams {"
        ]
    );
    let body = format!(
        "extern \"C\" __global__ void {KERNEL}(const OuterParams p) {{\n\
         \x20   const int i = threadIdx.x;\n\
         \x20   if (i < p.count && i < p.table[0].len) p.table[0].data[i] = (unsigned long long)p.base.n + p.base.flags;\n\
         }}\n"
    );
    Compiler::new()
        .compile(&source(&decls.to_string(), &body), Target::ptx(Arch::SM80))
        .expect("the nested declarations compile");
}

/// The 16-bit storage types and tensor maps are the templates' own (`tessera::f16`,
/// `tessera::TensorMap`): after the prelude and `common/hopper.cuh`, a struct using them compiles for
/// sm_90a, inside `namespace tessera` as the templates would place it.
#[test]
fn template_types_resolve_after_the_prelude() {
    use tessera_runtime::codegen::params::TensorMap;
    if !common::nvrtc_available() {
        return;
    }
    #[derive(Clone, Copy, Debug, KernelParams)]
    #[repr(C, align(64))]
    struct MapTestParams {
        map: TensorMap,
        q: DevicePtr<half::f16>,
        k: DevicePtrMut<half::bf16>,
        scale: half::bf16,
        h: half::f16,
        pad: [u8; 44],
    }
    let src = format!(
        "{PRELUDE}\n{}\nnamespace tessera {{\n{}}}\n\
         extern \"C\" __global__ void {KERNEL}(const __grid_constant__ tessera::MapTestParams p) {{\n\
         \x20   if (threadIdx.x == 0) p.k[0].bits = p.q[0].bits + p.scale.bits + p.map.bytes[3];\n\
         }}\n",
        Template::Hopper.text(),
        MapTestParams::cuda_declarations()
    );
    let source =
        KernelSource::new(KERNEL.to_string(), src, LaunchGeometry { threads_per_block: 32, dynamic_shared_bytes: 0 });
    Compiler::new().compile(&source, Target::ptx(Arch::SM90A)).expect("compiles after the prelude and hopper.cuh");
}

/// The host writes the struct with `as_bytes`; the kernel reads every field where the Rust
/// struct put it. On the simulator always, and on the GPU when one opens.
#[test]
fn kernel_reads_every_field_the_host_wrote() {
    if !common::nvrtc_available() {
        return;
    }
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(SimBackend::new(Arch::SM80))];
    match open_backend(BackendKind::Cuda) {
        Ok(gpu) => backends.push(gpu),
        Err(e) => eprintln!("GPU part skipped: {e}"),
    }
    let src = source(&Sample::cuda_declarations(), &kernel_body());
    let n = 29usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32 - 7.0).collect();
    for backend in &backends {
        let module = Compiler::new().compile(&src, backend.target()).unwrap();
        let kernel = backend.load(&module).unwrap();
        let x_buf = backend.alloc(4 * n).unwrap();
        backend.write(&x_buf, &x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let y_buf = backend.alloc(4 * 32).unwrap();
        backend.write(&y_buf, &[0u8; 4 * 32]).unwrap();
        for mode in [Mode::Copy, Mode::ScaleShift] {
            let params = Sample {
                a: -3,
                b: 2.0,
                x: DevicePtr::new(x_buf.addr()),
                y: DevicePtrMut::new(y_buf.addr()),
                n: n as i64,
                mode,
                flags: 100,
                c: [10, 20, 30, 40],
            };
            let config = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 };
            // SAFETY: the pointers are live allocations of n (x) and 32 (y) floats.
            unsafe { backend.launch(&kernel, &config, params.as_bytes()) }.unwrap();
            backend.synchronize().unwrap();
            let mut out = vec![0u8; 4 * 32];
            backend.read(&y_buf, &mut out).unwrap();
            let y: Vec<f32> = out.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            for (i, &got) in y.iter().enumerate().take(n) {
                let v = match mode {
                    Mode::Copy => x[i],
                    Mode::ScaleShift => x[i] * 2.0 - 3.0 + params.c[i % 4] as f32,
                };
                assert_eq!(got, v + 100.0, "{} {mode:?} y[{i}]", backend.device_name());
            }
            assert!(y[n..].iter().all(|&v| v == 0.0), "wrote past n");
            assert_eq!(mode.cuda_name(), ["MODE_COPY", "MODE_SCALE_SHIFT"][mode.value() as usize]);
        }
        backend.free(x_buf).unwrap();
        backend.free(y_buf).unwrap();
    }
}
