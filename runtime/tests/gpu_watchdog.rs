//! The deadline on GPU waits, on a real GPU: kernels within it are waited for (synchronise, timed
//! launches, a copy behind a kernel), and a kernel past it comes back as `RuntimeError::Hung`
//! naming it, after which every call fails at once and no backend opens in this process. Run with
//! `cargo test -p tessera-runtime --test gpu_watchdog -- --ignored` on a machine with a CUDA GPU
//! (about 12 s).
//!
//! One GPU test only: the hang poisons the whole process. The "hung" kernel spins for a bounded
//! time, so the process can still exit normally once it ends.

use std::time::{Duration, Instant};

mod common;

use tessera_runtime::codegen::{Arch, KernelSource, LaunchGeometry};
use tessera_runtime::{process_hang, Backend, CudaBackend, Compiler, LaunchConfig, Target, SYNC_TIMEOUT_ENV};

const SPIN_KERNEL: &str = "tessera_test_spin";
const DEADLINE: Duration = Duration::from_secs(2);
/// Well within the deadline.
const QUICK: Duration = Duration::from_millis(200);
const TIMED: Duration = Duration::from_millis(1);
/// Far past the deadline, but bounded: the process waits for it at exit.
const PAST_DEADLINE: Duration = Duration::from_secs(8);
/// What "at once" means for a call on a poisoned backend.
const AT_ONCE: Duration = Duration::from_millis(50);

/// Spins one warp for the nanoseconds in its parameter, on the GPU's global timer.
fn spin_source() -> KernelSource {
    let src = format!(
        "extern \"C\" __global__ void {SPIN_KERNEL}(unsigned long long nanoseconds) {{\n\
         \x20   unsigned long long start, now;\n\
         \x20   asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(start));\n\
         \x20   do {{ asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(now)); }} while (now - start < nanoseconds);\n\
         }}\n"
    );
    KernelSource::new(SPIN_KERNEL.to_string(), src, LaunchGeometry { threads_per_block: 32, dynamic_shared_bytes: 0 })
}

fn spin_for(duration: Duration) -> [u8; 8] {
    (duration.as_nanos() as u64).to_le_bytes()
}

/// Without a GPU, at least the kernel the GPU test launches is known to compile for the GPUs it
/// will meet.
#[test]
fn the_spin_kernel_compiles() {
    if !common::nvrtc_available() {
        return;
    }
    for arch in [Arch::SM80, Arch::SM90A] {
        let module = Compiler::new().compile(&spin_source(), Target::cubin(arch)).unwrap();
        assert_eq!(module.name, SPIN_KERNEL);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn waits_have_a_deadline_and_a_hang_poisons_the_process() {
    let backend = CudaBackend::open_with_sync_timeout(0, Some(DEADLINE))
        .unwrap_or_else(|e| panic!("this test needs a CUDA GPU: {e}"));
    assert_eq!(backend.sync_timeout(), Some(DEADLINE));
    let module = Compiler::new().compile(&spin_source(), backend.target()).expect("the spin kernel compiles");
    let kernel = backend.load(&module).unwrap();
    let config = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 };

    // Within the deadline: waited for, however long it takes.
    let started = Instant::now();
    // SAFETY: the kernel takes one u64 by value and touches no memory.
    unsafe { backend.launch(&kernel, &config, &spin_for(QUICK)) }.unwrap();
    backend.synchronize().unwrap();
    let waited = started.elapsed();
    assert!(waited >= QUICK && waited < DEADLINE, "{waited:?}");
    // SAFETY: as above.
    let times = unsafe { backend.time_launches(&kernel, &config, &spin_for(TIMED), 1, 3) }.unwrap();
    assert!(times.iter().all(|&ms| f64::from(ms) >= TIMED.as_secs_f64() * 1e3 * 0.9), "{times:?}");
    // A copy behind a kernel waits for it.
    let buffer = backend.alloc(16).unwrap();
    let mut out = [0u8; 16];
    let started = Instant::now();
    // SAFETY: as above.
    unsafe { backend.launch(&kernel, &config, &spin_for(QUICK)) }.unwrap();
    backend.read(&buffer, &mut out).unwrap();
    assert!(started.elapsed() >= QUICK, "{:?}", started.elapsed());

    // Past the deadline: hung, naming the kernel, after about the deadline.
    let launched = Instant::now();
    // SAFETY: as above.
    unsafe { backend.launch(&kernel, &config, &spin_for(PAST_DEADLINE)) }.unwrap();
    let hung = backend.synchronize().unwrap_err();
    let waited = launched.elapsed();
    assert!(hung.is_hung(), "{hung}");
    assert!(waited >= DEADLINE && waited < PAST_DEADLINE, "{waited:?}");
    let message = hung.to_string();
    assert!(message.contains(SPIN_KERNEL) && message.contains(SYNC_TIMEOUT_ENV), "{message}");

    // Every later call fails at once with the same error; no backend opens in this process.
    let at_once = |what: &str, call: &dyn Fn() -> tessera_runtime::Result<()>| {
        let started = Instant::now();
        let err = call().expect_err(what);
        assert!(started.elapsed() < AT_ONCE, "{what} took {:?}", started.elapsed());
        assert_eq!(err.to_string(), message, "{what}");
    };
    at_once("synchronize", &|| backend.synchronize());
    at_once("read", &|| backend.read(&buffer, &mut [0u8; 16]));
    at_once("write", &|| backend.write(&buffer, &[0u8; 16]));
    at_once("alloc", &|| backend.alloc(16).map(drop));
    at_once("load", &|| backend.load(&module).map(drop));
    // SAFETY: as above (it is not launched).
    at_once("launch", &|| unsafe { backend.launch(&kernel, &config, &spin_for(QUICK)) });
    at_once("open", &|| CudaBackend::open(0).map(drop));
    assert_eq!(process_hang().map(|e| e.to_string()), Some(message.clone()));
    let started = Instant::now();
    drop(backend);
    assert!(started.elapsed() < AT_ONCE, "Drop leaks rather than waits: {:?}", started.elapsed());

    // Let the bounded kernel end, so that the driver's teardown at exit has nothing to wait for.
    std::thread::sleep(PAST_DEADLINE.saturating_sub(launched.elapsed()));
}
