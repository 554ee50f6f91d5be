//! The host-level AdamW and unscale entry points never leave the caller's state half-updated: a
//! device read that fails after the launch (injected by a backend wrapped around the simulator)
//! leaves every tensor and the step count exactly as they were, and a step count that would
//! overflow is refused before anything runs. Needs NVRTC.

use std::sync::atomic::{AtomicUsize, Ordering};

use tessera::codegen::{AdamWSpec, ElemType, UnscaleSpec};
use tessera::runtime::amp::adamw::{run_adamw, GradScaling, HostParam};
use tessera::runtime::amp::unscale::run_unscale;
use tessera::runtime::amp::HostTensor;
use tessera::runtime::reference::AdamWHyper;
use tessera::runtime::{Backend, BackendKind, CompiledModule, DeviceBuffer, Kernel, LaunchConfig, OutputKind, RuntimeError};
use tessera::Arch;

mod common;
use common::{backend, compiler};

/// The simulator, except that every device read after the first `reads_ok` fails.
struct FailingReads {
    reads_ok: usize,
    reads: AtomicUsize,
}

impl FailingReads {
    fn new(reads_ok: usize) -> Self {
        FailingReads { reads_ok, reads: AtomicUsize::new(0) }
    }
}

impl Backend for FailingReads {
    fn kind(&self) -> BackendKind {
        backend().kind()
    }
    fn device_name(&self) -> String {
        backend().device_name()
    }
    fn arch(&self) -> Arch {
        backend().arch()
    }
    fn multiprocessors(&self) -> u32 {
        backend().multiprocessors()
    }
    fn max_shared_per_block(&self) -> u32 {
        backend().max_shared_per_block()
    }
    fn output_kind(&self) -> OutputKind {
        backend().output_kind()
    }
    fn alloc(&self, bytes: usize) -> tessera::runtime::Result<DeviceBuffer> {
        backend().alloc(bytes)
    }
    fn write(&self, buffer: &DeviceBuffer, data: &[u8]) -> tessera::runtime::Result<()> {
        backend().write(buffer, data)
    }
    fn read(&self, buffer: &DeviceBuffer, out: &mut [u8]) -> tessera::runtime::Result<()> {
        if self.reads.fetch_add(1, Ordering::Relaxed) >= self.reads_ok {
            return Err(RuntimeError::Cuda { call: "cuMemcpyDtoH", message: "injected".into() });
        }
        backend().read(buffer, out)
    }
    fn free(&self, buffer: DeviceBuffer) -> tessera::runtime::Result<()> {
        backend().free(buffer)
    }
    fn check_buffer(&self, buffer: &DeviceBuffer) -> tessera::runtime::Result<()> {
        backend().check_buffer(buffer)
    }
    fn load(&self, module: &CompiledModule) -> tessera::runtime::Result<Kernel> {
        backend().load(module)
    }
    unsafe fn launch(&self, kernel: &Kernel, config: &LaunchConfig, params: &[u8]) -> tessera::runtime::Result<()> {
        // SAFETY: forwarded unchanged; the launcher's checks hold for the simulator it wraps.
        unsafe { backend().launch(kernel, config, params) }
    }
    fn synchronize(&self) -> tessera::runtime::Result<()> {
        backend().synchronize()
    }
    unsafe fn time_launches(
        &self,
        kernel: &Kernel,
        config: &LaunchConfig,
        params: &[u8],
        warmup: usize,
        reps: usize,
    ) -> tessera::runtime::Result<Vec<f32>> {
        // SAFETY: as for `launch`.
        unsafe { backend().time_launches(kernel, config, params, warmup, reps) }
    }
}

/// More reads than either launcher makes for the tensors below, so every failure point is tried.
const MAX_READS: usize = 16;

fn params() -> Vec<HostParam> {
    [5usize, 3]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let master: Vec<f32> = (0..n).map(|j| (i * 10 + j) as f32 / 8.0 - 0.5).collect();
            HostParam {
                grad: HostTensor::from_f32(&vec![0.25; n], ElemType::BF16),
                exp_avg: vec![0.125; n],
                exp_avg_sq: vec![0.5; n],
                model: Some(HostTensor::from_f32(&master, ElemType::BF16)),
                master,
            }
        })
        .collect()
}

const HYPER: AdamWHyper = AdamWHyper { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };

#[test]
fn adamw_is_all_or_nothing_when_a_read_fails() {
    let spec = AdamWSpec::default();
    let mut stepped = false;
    for reads_ok in 0..MAX_READS {
        let failing = FailingReads::new(reads_ok);
        let (mut p, mut step) = (params(), 7);
        match run_adamw(&failing, compiler(), &spec, &mut p, &HYPER, &mut step, GradScaling::default()) {
            Err(_) => {
                assert_eq!(p, params(), "reads_ok = {reads_ok}: a failed step changed the parameters");
                assert_eq!(step, 7, "reads_ok = {reads_ok}");
            }
            Ok(()) => {
                assert_eq!(step, 8);
                assert_ne!(p, params());
                stepped = true;
            }
        }
    }
    assert!(stepped, "no launch got all its reads: raise MAX_READS");
}

#[test]
fn unscale_is_all_or_nothing_when_a_read_fails() {
    let grads = || vec![HostTensor::from_f32(&[1.0, 2.0, 3.0], ElemType::F16), HostTensor::from_f32(&[4.0, 5.0], ElemType::F32)];
    let mut unscaled = false;
    for reads_ok in 0..MAX_READS {
        let failing = FailingReads::new(reads_ok);
        let mut g = grads();
        match run_unscale(&failing, compiler(), &UnscaleSpec::default(), &mut g, 0.5) {
            Err(_) => assert_eq!(g, grads(), "reads_ok = {reads_ok}: a failed unscale changed the gradients"),
            Ok(_) => {
                assert_eq!(g[1].to_f32(), [2.0, 2.5]);
                unscaled = true;
            }
        }
    }
    assert!(unscaled, "no launch got all its reads: raise MAX_READS");
}

#[test]
fn adamw_step_count_cannot_overflow() {
    let spec = AdamWSpec::default();
    let (mut p, mut step) = (params(), i32::MAX);
    let err = run_adamw(backend(), compiler(), &spec, &mut p, &HYPER, &mut step, GradScaling::default()).unwrap_err().to_string();
    assert!(err.contains("step") && err.contains("overflow"), "{err}");
    assert_eq!((p, step), (params(), i32::MAX));
    // A skipped step does not count, so it cannot overflow.
    let mut p = params();
    run_adamw(backend(), compiler(), &spec, &mut p, &HYPER, &mut step, GradScaling { found_inf: true, inv_scale: None }).unwrap();
    assert_eq!(step, i32::MAX);
    let mut negative = -1;
    let err = run_adamw(backend(), compiler(), &spec, &mut p, &HYPER, &mut negative, GradScaling::default()).unwrap_err().to_string();
    assert!(err.contains("must be >= 0"), "{err}");
}
