//! The simulator backend through the `Backend` trait: memory and ownership rules (the same as the
//! CUDA backend's), loading PTX, launching, and faults coming back as runtime errors that carry the
//! simulator's report. Needs NVRTC for the kernels; no GPU.

mod common;

use tessera_runtime::codegen::{Arch, KernelSource, LaunchGeometry};
use tessera_runtime::simulator::SimOptions;
use tessera_runtime::{open_backend, Backend, BackendKind, CompiledModule, Compiler, CudaBackend, DeviceBuffer, Kernel, LaunchConfig, OutputKind, RuntimeError, SimBackend, Target};

fn sim() -> SimBackend {
    SimBackend::with_options(Arch::SM80, SimOptions::default())
}

/// `struct P { const unsigned* in; unsigned* out; unsigned n; }` and a kernel body using it.
fn kernel(name: &str, body: &str) -> KernelSource {
    let src = format!(
        "struct P {{ const unsigned* in; unsigned* out; unsigned n; }};\n\
         extern \"C\" __global__ void {name}(const P p) {{\n{body}\n}}\n"
    );
    KernelSource::new(name.to_string(), src, LaunchGeometry { threads_per_block: 64, dynamic_shared_bytes: 0 })
}

fn params(input: &DeviceBuffer, out: &DeviceBuffer, n: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&input.addr().to_le_bytes());
    bytes.extend_from_slice(&out.addr().to_le_bytes());
    bytes.extend_from_slice(&n.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 4]); // struct padding to 8
    bytes
}

fn load(backend: &SimBackend, source: &KernelSource) -> Kernel {
    let module = Compiler::new().compile(source, backend.target()).expect("NVRTC compiles the test kernel");
    assert_eq!(module.output, OutputKind::Ptx);
    backend.load(&module).expect("the simulator loads NVRTC's PTX")
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn upload(backend: &dyn Backend, data: &[u32]) -> DeviceBuffer {
    let bytes: Vec<u8> = data.iter().flat_map(|w| w.to_le_bytes()).collect();
    let buffer = backend.alloc(bytes.len()).unwrap();
    backend.write(&buffer, &bytes).unwrap();
    buffer
}

fn invalid_arg(e: RuntimeError) -> String {
    match e {
        RuntimeError::InvalidArgument { arg, .. } => arg,
        other => panic!("expected InvalidArgument, got {other}"),
    }
}

#[test]
fn memory_round_trips_and_follows_the_ownership_rules() {
    let b = sim();
    let buf = b.alloc(1000).unwrap();
    assert_eq!(buf.bytes(), 1000);
    assert_ne!(buf.addr(), 0);
    assert_eq!(buf.addr() % 256, 0, "allocations are aligned like cuMemAlloc's");
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.write(&buf, &data).unwrap();
    let mut back = vec![0u8; 1000];
    b.read(&buf, &mut back).unwrap();
    assert_eq!(back, data);
    // Shorter copies touch the start only.
    b.write(&buf, &[9, 9, 9]).unwrap();
    let mut head = [0u8; 5];
    b.read(&buf, &mut head).unwrap();
    assert_eq!(head, [9, 9, 9, data[3], data[4]]);
    // Longer ones are refused, naming the call.
    assert_eq!(invalid_arg(b.write(&buf, &[0u8; 1001]).unwrap_err()), "write");
    assert_eq!(invalid_arg(b.read(&buf, &mut [0u8; 1001]).unwrap_err()), "read");
    // Two allocations never overlap.
    let other = b.alloc(1000).unwrap();
    assert!(other.addr() >= buf.addr() + 1000 || other.addr() + 1000 <= buf.addr());
    // Empty buffers are fine and never dereferenced.
    let empty = b.alloc(0).unwrap();
    assert_eq!((empty.addr(), empty.bytes()), (0, 0));
    b.write(&empty, &[]).unwrap();
    b.read(&empty, &mut []).unwrap();
    b.free(empty).unwrap();

    // A buffer of another backend instance is rejected by every call.
    let foreign_backend = sim();
    let foreign = foreign_backend.alloc(64).unwrap();
    for result in [b.check_buffer(&foreign), b.write(&foreign, &[1]), b.read(&foreign, &mut [0])] {
        let msg = result.unwrap_err().to_string();
        assert!(msg.contains("another backend"), "{msg}");
    }
    let forged = DeviceBuffer::new(foreign.owner(), foreign.addr(), foreign.bytes());
    assert!(b.free(forged).unwrap_err().to_string().contains("another backend"));
    foreign_backend.free(foreign).unwrap();

    // A freed buffer (or a forged handle with our id) is no longer a live allocation.
    let (addr, bytes, owner) = (buf.addr(), buf.bytes(), buf.owner());
    b.free(buf).unwrap();
    let stale = DeviceBuffer::new(owner, addr, bytes);
    for result in [b.check_buffer(&stale), b.write(&stale, &[1]), b.read(&stale, &mut [0])] {
        let msg = result.unwrap_err().to_string();
        assert!(msg.contains("not a live allocation"), "{msg}");
    }
    assert!(b.free(stale).is_err(), "double free");
    // Right address, wrong size: also rejected.
    let resized = DeviceBuffer::new(other.owner(), other.addr(), 10);
    assert!(b.check_buffer(&resized).is_err());
    b.free(other).unwrap();
}

#[test]
fn auto_falls_back_to_the_simulator_without_a_gpu() {
    let auto = open_backend(BackendKind::Auto).expect("auto opens something on every machine");
    match CudaBackend::open(0) {
        Ok(_) => assert_eq!(auto.kind(), BackendKind::Cuda),
        Err(why) => {
            assert_eq!(auto.kind(), BackendKind::Sim);
            assert_eq!(auto.output_kind(), OutputKind::Ptx);
            let name = auto.device_name();
            assert!(name.starts_with("tessera-sim (CPU, ") && name.contains("chosen by auto"), "{name}");
            assert!(name.contains(&why.to_string()), "{name} should say why: {why}");
        }
    }
    let sim = open_backend(BackendKind::Sim).unwrap();
    assert_eq!(sim.kind(), BackendKind::Sim);
    assert!(!sim.device_name().contains("chosen by auto"));
}

#[test]
fn a_kernel_runs_and_reports_its_work() {
    if !common::nvrtc_available() {
        return;
    }
    let b = sim();
    let k = load(&b, &kernel("sim_axpy", "unsigned i = blockIdx.x * blockDim.x + threadIdx.x;\n\
                                           if (i < p.n) p.out[i] = 3u * p.in[i] + i;"));
    // Loading the same module again gives the same kernel.
    let again = load(&b, &kernel("sim_axpy", "unsigned i = blockIdx.x * blockDim.x + threadIdx.x;\n\
                                               if (i < p.n) p.out[i] = 3u * p.in[i] + i;"));
    assert_eq!(k, again);
    let n = 300u32;
    let input: Vec<u32> = (0..n).map(|i| i * 1000 + 7).collect();
    let in_buf = upload(&b, &input);
    let out_buf = upload(&b, &vec![0xdead_beef; n as usize]);
    let config = LaunchConfig { grid: [5, 1, 1], block: [64, 1, 1], dynamic_shared_bytes: 0 };
    // SAFETY: the parameter struct matches the kernel's and both buffers hold n words.
    unsafe { b.launch(&k, &config, &params(&in_buf, &out_buf, n)) }.unwrap();
    b.synchronize().unwrap();
    let mut raw = vec![0u8; n as usize * 4];
    b.read(&out_buf, &mut raw).unwrap();
    let expected: Vec<u32> = (0..n).map(|i| 3 * input[i as usize] + i).collect();
    assert_eq!(words(&raw), expected);
    let stats = b.last_stats().expect("a launch ran");
    assert_eq!(stats.ctas, 5);
    assert!(stats.thread_instructions >= 320, "{stats:?}");

    // Simulated times: one per repetition, positive.
    // SAFETY: as above.
    let times = unsafe { b.time_launches(&k, &config, &params(&in_buf, &out_buf, n), 1, 3) }.unwrap();
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|&t| t > 0.0 && t.is_finite()), "{times:?}");

    // Wrong parameter size, foreign kernels and bad shapes are refused before anything runs.
    // SAFETY: none of these launches reaches the kernel.
    unsafe {
        assert_eq!(invalid_arg(b.launch(&k, &config, &[0u8; 8]).unwrap_err()), "params");
        let other = sim();
        let foreign = load(&other, &kernel("sim_axpy", "unsigned i = blockIdx.x * blockDim.x + threadIdx.x;\n\
                                                         if (i < p.n) p.out[i] = 3u * p.in[i] + i;"));
        assert_eq!(invalid_arg(b.launch(&foreign, &config, &params(&in_buf, &out_buf, n)).unwrap_err()), "kernel");
        let zero = LaunchConfig { grid: [0, 1, 1], ..config };
        assert_eq!(invalid_arg(b.launch(&k, &zero, &params(&in_buf, &out_buf, n)).unwrap_err()), "grid.x");
        let huge_smem = LaunchConfig { dynamic_shared_bytes: 1 << 20, ..config };
        assert_eq!(
            invalid_arg(b.launch(&k, &huge_smem, &params(&in_buf, &out_buf, n)).unwrap_err()),
            "dynamic_shared_bytes"
        );
    }
    b.free(in_buf).unwrap();
    b.free(out_buf).unwrap();
}

#[test]
fn an_out_of_bounds_store_comes_back_with_the_simulators_report() {
    if !common::nvrtc_available() {
        return;
    }
    let b = sim();
    // Off by one: thread n writes one word past the end of `out`.
    let k = load(&b, &kernel("sim_oob", "unsigned i = blockIdx.x * blockDim.x + threadIdx.x;\n\
                                          if (i <= p.n) p.out[i] = p.in[i % p.n];"));
    let n = 100u32;
    let in_buf = upload(&b, &vec![1; n as usize]);
    let out_buf = upload(&b, &vec![0; n as usize]);
    let config = LaunchConfig { grid: [2, 1, 1], block: [64, 1, 1], dynamic_shared_bytes: 0 };
    // SAFETY: deliberately not: the kernel writes past `out`, which the simulator must catch
    // (its global memory is host memory it bounds-checks; nothing outside it is touched).
    let err = unsafe { b.launch(&k, &config, &params(&in_buf, &out_buf, n)) }.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RuntimeError::Simulator { .. }), "{msg}");
    assert_eq!(msg.lines().count(), 1, "one-line message: {msg}");
    for needle in ["sim_oob", "CTA (1, 0, 0)", "thread (36, 0, 0)", "PTX line"] {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
    let report = err.sim_report().expect("a fault carries a report");
    assert_eq!(report.kernel, "sim_oob");
    assert_eq!(report.cta, [1, 0, 0]);
    assert_eq!(report.thread, [36, 0, 0]);
    assert!(report.ptx_line > 0, "{report:?}");
    assert_eq!(report.address, Some(out_buf.addr() + u64::from(n) * 4), "{report:?}");
    // The backend is still usable afterwards.
    let mut raw = vec![0u8; 4];
    b.read(&in_buf, &mut raw).unwrap();
    assert_eq!(words(&raw), [1]);
}

#[test]
fn a_shared_memory_race_is_reported_with_checks_on() {
    if !common::nvrtc_available() {
        return;
    }
    // Every thread writes its slot, then reads its neighbour's without a barrier in between.
    let body = "__shared__ unsigned s[64];\n\
                s[threadIdx.x] = p.in[threadIdx.x];\n\
                p.out[threadIdx.x] = s[(threadIdx.x + 1) % 64];";
    let source = kernel("sim_race", body);
    let n = 64u32;
    let run = |b: &SimBackend| {
        let k = load(b, &source);
        let in_buf = upload(b, &vec![5; n as usize]);
        let out_buf = upload(b, &vec![0; n as usize]);
        let config = LaunchConfig { grid: [1, 1, 1], block: [64, 1, 1], dynamic_shared_bytes: 0 };
        // SAFETY: parameters match; every access is in bounds (the race is the point).
        unsafe { b.launch(&k, &config, &params(&in_buf, &out_buf, n)) }
    };
    let err = run(&sim()).expect_err("checks on: the race is reported");
    assert!(err.sim_report().is_some(), "{err}");
    assert!(err.to_string().contains("sim_race"), "{err}");
    // With checks off the same launch runs (bounds are still checked).
    let unchecked = SimBackend::with_options(Arch::SM80, SimOptions { checks: false, ..SimOptions::default() });
    run(&unchecked).expect("checks off: no race detection");
}

#[test]
fn modules_it_cannot_run_are_refused_at_load() {
    let b = sim();
    let module = |output, arch, image: &[u8]| CompiledModule {
        name: "k".into(),
        source_hash: "0".into(),
        arch,
        output,
        image: image.to_vec(),
        log: String::new(),
        from_cache: false,
        compile_time: Default::default(),
    };
    let msg = b.load(&module(OutputKind::Cubin, Arch::SM80, b"\x7fELF")).unwrap_err().to_string();
    assert!(msg.contains("runs PTX"), "{msg}");
    let msg = b.load(&module(OutputKind::Ptx, Arch::SM90, b".version 8.0")).unwrap_err().to_string();
    assert!(msg.contains("sm_80"), "{msg}");
    let err = b.load(&module(OutputKind::Ptx, Arch::SM80, b"this is not PTX")).unwrap_err();
    assert!(matches!(err, RuntimeError::Simulator { stage: "loading", .. }), "{err}");
    assert_eq!(b.target(), Target::ptx(Arch::SM80));
    assert_eq!(SimBackend::with_options(Arch::SM90, SimOptions::default()).target(), Target::ptx(Arch::SM90));
}
