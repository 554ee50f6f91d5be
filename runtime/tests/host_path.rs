//! The host side of `run_attention` against a recording backend: uploads, NaN poisoning, the launch
//! shape and parameter bytes, and freeing device memory on success and on failure. No GPU needed
//! (NVRTC is, since the launcher compiles the kernel).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use tessera_runtime::common::buffers::{decode, encode, POISON_16};
use tessera_runtime::codegen::{Arch, AttentionSpec, ElemType, DevicePtr, DevicePtrMut};
use tessera_runtime::{run_attention, AttentionParams, AttentionProblem, Backend, BackendId, BackendKind, CompiledModule, Compiler, DeviceBuffer, Kernel, LaunchConfig, OutputKind, RuntimeError};

/// Device memory in host vectors; launches are recorded, not run.
struct Recorder {
    id: BackendId,
    memory: Mutex<HashMap<u64, Vec<u8>>>,
    next_addr: AtomicU64,
    launches: Mutex<Vec<(LaunchConfig, Vec<u8>)>>,
    fail_launch: AtomicBool,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            id: BackendId::fresh(),
            memory: Mutex::new(HashMap::new()),
            next_addr: AtomicU64::new(1 << 20),
            launches: Mutex::new(Vec::new()),
            fail_launch: AtomicBool::new(false),
        }
    }

    fn live_buffers(&self) -> usize {
        self.memory.lock().unwrap().len()
    }
}

impl Backend for Recorder {
    fn kind(&self) -> BackendKind {
        BackendKind::Sim
    }
    fn device_name(&self) -> String {
        "recorder".into()
    }
    fn arch(&self) -> Arch {
        Arch::SM80
    }
    fn output_kind(&self) -> OutputKind {
        // PTX compiles fastest.
        OutputKind::Ptx
    }
    fn alloc(&self, bytes: usize) -> tessera_runtime::Result<DeviceBuffer> {
        if bytes == 0 {
            return Ok(DeviceBuffer::new(self.id, 0, 0));
        }
        let addr = self.next_addr.fetch_add((bytes as u64).div_ceil(256) * 256 + 256, Ordering::Relaxed);
        self.memory.lock().unwrap().insert(addr, vec![0xAB; bytes]);
        Ok(DeviceBuffer::new(self.id, addr, bytes))
    }
    fn write(&self, buffer: &DeviceBuffer, data: &[u8]) -> tessera_runtime::Result<()> {
        self.check_buffer(buffer)?;
        if let Some(mem) = self.memory.lock().unwrap().get_mut(&buffer.addr()) {
            mem[..data.len()].copy_from_slice(data);
        }
        Ok(())
    }
    fn read(&self, buffer: &DeviceBuffer, out: &mut [u8]) -> tessera_runtime::Result<()> {
        self.check_buffer(buffer)?;
        if let Some(mem) = self.memory.lock().unwrap().get(&buffer.addr()) {
            out.copy_from_slice(&mem[..out.len()]);
        }
        Ok(())
    }
    fn free(&self, buffer: DeviceBuffer) -> tessera_runtime::Result<()> {
        self.check_buffer(&buffer)?;
        self.memory.lock().unwrap().remove(&buffer.addr());
        Ok(())
    }
    fn check_buffer(&self, buffer: &DeviceBuffer) -> tessera_runtime::Result<()> {
        let known = buffer.bytes() == 0
            || self.memory.lock().unwrap().get(&buffer.addr()).is_some_and(|m| m.len() == buffer.bytes());
        if buffer.owner() == self.id && known {
            Ok(())
        } else {
            Err(RuntimeError::invalid("buffer", "unknown"))
        }
    }
    fn load(&self, module: &CompiledModule) -> tessera_runtime::Result<Kernel> {
        assert_eq!((module.arch, module.output), (Arch::SM80, OutputKind::Ptx));
        Ok(Kernel::new(self.id, 0, module.name.clone()))
    }
    unsafe fn launch(&self, _: &Kernel, config: &LaunchConfig, params: &[u8]) -> tessera_runtime::Result<()> {
        if self.fail_launch.load(Ordering::Relaxed) {
            return Err(RuntimeError::Cuda { call: "cuLaunchKernel", message: "injected".into() });
        }
        self.launches.lock().unwrap().push((*config, params.to_vec()));
        Ok(())
    }
    fn synchronize(&self) -> tessera_runtime::Result<()> {
        Ok(())
    }
    unsafe fn time_launches(
        &self,
        _: &Kernel,
        _: &LaunchConfig,
        _: &[u8],
        _: usize,
        reps: usize,
    ) -> tessera_runtime::Result<Vec<f32>> {
        Ok(vec![1.0; reps])
    }
}

fn read_params(bytes: &[u8]) -> AttentionParams {
    assert_eq!(bytes.len(), std::mem::size_of::<AttentionParams>());
    assert!(bytes[152..].iter().all(|&b| b == 0), "a plain launch sets no variant field");
    let u64_at = |i: usize| u64::from_ne_bytes(bytes[i..i + 8].try_into().unwrap());
    let i32_at = |i: usize| i32::from_ne_bytes(bytes[i..i + 4].try_into().unwrap());
    let strides: Vec<i64> = (0..12).map(|n| u64_at(40 + 8 * n) as i64).collect();
    AttentionParams {
        q: DevicePtr::new(u64_at(0)),
        k: DevicePtr::new(u64_at(8)),
        v: DevicePtr::new(u64_at(16)),
        o: DevicePtrMut::new(u64_at(24)),
        lse: DevicePtrMut::new(u64_at(32)),
        q_batch_stride: strides[0],
        q_seq_stride: strides[1],
        q_head_stride: strides[2],
        k_batch_stride: strides[3],
        k_seq_stride: strides[4],
        k_head_stride: strides[5],
        v_batch_stride: strides[6],
        v_seq_stride: strides[7],
        v_head_stride: strides[8],
        o_batch_stride: strides[9],
        o_seq_stride: strides[10],
        o_head_stride: strides[11],
        seq_q: i32_at(136),
        seq_k: i32_at(140),
        heads_q: i32_at(144),
        scale_log2: f32::from_ne_bytes(bytes[148..152].try_into().unwrap()),
        // Plain attention: every variant field is zero.
        ..AttentionParams::default()
    }
}

#[test]
fn run_attention_uploads_poisons_launches_and_frees() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = Recorder::new();
    let compiler = Compiler::new();
    let spec = AttentionSpec::new(ElemType::BF16, 64, true, 4, 2);
    let p = AttentionProblem::for_spec(&spec, 3, 200, 150);
    let q: Vec<f32> = (0..p.q_elements()).map(|i| (i % 7) as f32 * 0.25).collect();
    let k = vec![0.5f32; p.kv_elements()];
    let v = vec![-1.0f32; p.kv_elements()];
    let out = run_attention(&backend, &compiler, &spec, &p, &q, &k, &v, Some(0.3), true).unwrap();

    // The recorder runs nothing, so every output element must still be the poison.
    assert_eq!(out.out.len(), p.q_elements());
    assert!(out.out.iter().all(|x| x.is_nan()));
    assert!(out.lse.unwrap().iter().all(|x| x.is_nan()));
    assert_eq!(backend.live_buffers(), 0, "device memory leaked");

    let launches = backend.launches.lock().unwrap();
    assert_eq!(launches.len(), 1);
    let (config, bytes) = &launches[0];
    let tile = spec.tile_for(Arch::SM80);
    assert_eq!(config.grid, [200u32.div_ceil(tile.block_m), 4, 3]);
    assert_eq!(config.block, [tile.threads(), 1, 1]);
    assert_eq!(config.dynamic_shared_bytes, spec.shared_memory_bytes(tile));
    let params = read_params(bytes);
    assert_eq!((params.seq_q, params.seq_k, params.heads_q), (200, 150, 4));
    assert_eq!((params.q_seq_stride, params.q_head_stride, params.q_batch_stride), (4 * 64, 64, 200 * 4 * 64));
    assert_eq!((params.k_seq_stride, params.k_head_stride, params.k_batch_stride), (2 * 64, 64, 150 * 2 * 64));
    assert_eq!(params.o_batch_stride, params.q_batch_stride);
    assert!(params.lse.addr() != 0 && params.o.addr() != params.q.addr());
    assert!((params.scale_log2 - 0.3 * std::f32::consts::LOG2_E).abs() < 1e-6);
}

#[test]
fn device_memory_is_freed_when_the_launch_fails() {
    if !common::nvrtc_available() {
        return;
    }
    let backend = Recorder::new();
    backend.fail_launch.store(true, Ordering::Relaxed);
    let spec = AttentionSpec::new(ElemType::F16, 64, false, 2, 2);
    let p = AttentionProblem::for_spec(&spec, 1, 16, 16);
    let data = vec![0.0f32; p.q_elements()];
    let err = run_attention(&backend, &Compiler::new(), &spec, &p, &data, &data, &data, None, false).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(backend.live_buffers(), 0);
}

#[test]
fn bad_shapes_fail_before_anything_is_allocated() {
    let backend = Recorder::new();
    let spec = AttentionSpec::new(ElemType::F16, 64, false, 2, 2);
    let compiler = Compiler::new();
    // head_dim 0 with a huge batch would ask for an enormous log-sum-exp buffer if not caught first.
    let p =
        AttentionProblem { head_dim: 0, batch: 60_000, seq_q: 1 << 30, ..AttentionProblem::for_spec(&spec, 1, 1, 1) };
    let err = run_attention(&backend, &compiler, &spec, &p, &[], &[], &[], None, true).unwrap_err();
    assert!(err.to_string().contains("problem.head_dim"), "{err}");
    let p = AttentionProblem::for_spec(&spec, 1, 16, 16);
    let err = run_attention(&backend, &compiler, &spec, &p, &[0.0; 5], &[], &[], None, false).unwrap_err();
    assert!(err.to_string().contains("`q`"), "{err}");
    assert_eq!(backend.next_addr.load(Ordering::Relaxed), 1 << 20, "something was allocated");
}

#[test]
fn empty_problems_launch_nothing() {
    let backend = Recorder::new();
    let spec = AttentionSpec::new(ElemType::F16, 64, false, 2, 2);
    for p in [AttentionProblem::for_spec(&spec, 0, 16, 16), AttentionProblem::for_spec(&spec, 2, 0, 16)] {
        let kv = vec![0.0f32; p.kv_elements()];
        let out = run_attention(&backend, &Compiler::new(), &spec, &p, &[], &kv, &kv, None, true).unwrap();
        assert!(out.out.is_empty() && out.lse.unwrap().is_empty());
    }
    assert!(backend.launches.lock().unwrap().is_empty());
    assert_eq!(backend.live_buffers(), 0);
}

#[test]
fn uploads_are_rounded_to_the_spec_dtype() {
    let x = [1.0 + 2f32.powi(-9), 2.71, -2.5e-3];
    for dtype in ElemType::MMA_INPUTS {
        let bytes = encode(&x, dtype);
        assert_eq!(bytes.len(), 6);
        assert_eq!(decode(&bytes, dtype), tessera_runtime::reference::round_to_dtype(&x, dtype));
    }
    assert!(decode(&POISON_16.to_le_bytes(), ElemType::BF16)[0].is_nan());
}
