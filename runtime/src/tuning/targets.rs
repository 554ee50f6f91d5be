//! [`TuneTarget`]s of the GPU families: a problem's device buffers (several copies of the inputs,
//! so that timed launches rotate between them and L2 does not hold the previous launch's data)
//! and how to prepare a launch for a candidate tile.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_codegen::{AttentionSpec, DType, GemmSpec, KernelSpec, LoraSpec, OutType, TileChoice};

use super::tuner::TuneTarget;
use crate::attention::{encode, prepare_attention, AttentionBuffers, AttentionProblem, AttentionStrides};
use crate::backend::{Backend, DeviceBuffer};
use crate::compiler::Compiler;
use crate::error::{Result, RuntimeError};
use crate::gemm::{decode_out, encode_out, poison_out, prepare_gemm, GemmBuffers, GemmProblem, GemmStrides};
use crate::launch::{HostUploads, KernelParams, PreparedLaunch};
use crate::lora::{prepare_lora, LoraBuffers, LoraProblem, LoraStrides};

/// Input bytes the rotation should cover: a few times the largest L2 of the supported GPUs.
const ROTATION_BYTES: usize = 256 << 20;
const MAX_COPIES: usize = 8;

type Prepare<'a, P> = dyn Fn(&KernelSpec, usize, &[DeviceBuffer]) -> Result<PreparedLaunch<P>> + Sync + 'a;

/// A problem on the device and how to launch it with a given spec.
pub struct LaunchTarget<'a, P> {
    backend: &'a dyn Backend,
    spec: KernelSpec,
    memory: HostUploads<'a>,
    copies: usize,
    /// Index of the output buffer in `memory`, its element count and type.
    out: (usize, usize, OutType),
    prepare: Box<Prepare<'a, P>>,
    work: f64,
}

impl<P: KernelParams> LaunchTarget<'_, P> {
    fn launch(&self, tile: &TileChoice, copy: usize) -> Result<PreparedLaunch<P>> {
        let spec = self
            .spec
            .with_tile_choice(*tile)
            .ok_or_else(|| RuntimeError::invalid("tile", format!("{tile} is not a tile of this family")))?;
        (self.prepare)(&spec, copy % self.copies, &self.memory.buffers)
    }

    /// How many input copies timed launches rotate through.
    pub fn copies(&self) -> usize {
        self.copies
    }
}

impl<P: KernelParams> TuneTarget for LaunchTarget<'_, P> {
    fn compile(&self, tile: &TileChoice) -> Result<()> {
        self.launch(tile, 0).map(|_| ())
    }

    fn run(&self, tile: &TileChoice) -> Result<Vec<f32>> {
        let (index, n, out) = self.out;
        let y = &self.memory.buffers[index];
        self.backend.write(y, &poison_out(n, out))?;
        self.launch(tile, 0)?.run(self.backend)?;
        let mut bytes = vec![0u8; n * out.size_bytes()];
        self.backend.read(y, &mut bytes)?;
        Ok(decode_out(&bytes, out))
    }

    fn time(&self, tile: &TileChoice, warmup: usize, reps: usize) -> Result<Vec<f32>> {
        let launches: Vec<PreparedLaunch<P>> = (0..self.copies).map(|c| self.launch(tile, c)).collect::<Result<_>>()?;
        if warmup > 0 {
            launches[0].time(self.backend, warmup, 1)?;
        }
        let mut times = Vec::with_capacity(reps);
        for r in 0..reps {
            times.extend(launches[r % launches.len()].time(self.backend, 0, 1)?);
        }
        Ok(times)
    }

    fn work(&self) -> f64 {
        self.work
    }

    fn unit(&self) -> &'static str {
        "TFLOP/s"
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn copies_for(input_bytes: usize) -> usize {
    ROTATION_BYTES.div_ceil(input_bytes.max(1)).clamp(1, MAX_COPIES)
}

fn upload(memory: &mut HostUploads<'_>, bytes: Vec<u8>) -> Result<usize> {
    memory.upload(&if bytes.is_empty() { vec![0u8; 16] } else { bytes })
}

fn out_of(dtype: DType) -> OutType {
    match dtype {
        DType::F16 => OutType::F16,
        DType::BF16 => OutType::BF16,
    }
}

/// Attention forward on random inputs; FLOPs = 4 b h s_q s_k d (halved when causal).
pub fn attention_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &AttentionSpec,
    problem: AttentionProblem,
) -> Result<LaunchTarget<'a, crate::attention::AttentionParams>> {
    let mut rng = StdRng::seed_from_u64(0x7e55);
    let mut memory = HostUploads::new(backend);
    let bytes = (problem.q_elements() + 2 * problem.kv_elements()) * 2;
    let copies = copies_for(bytes);
    for _ in 0..copies {
        for n in [problem.q_elements(), problem.kv_elements(), problem.kv_elements()] {
            upload(&mut memory, encode(&random(&mut rng, n), spec.dtype))?;
        }
    }
    let o = upload(&mut memory, vec![0u8; problem.q_elements() * 2])?;
    let strides = AttentionStrides::contiguous(&problem);
    let p = problem;
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Attention(s) = spec else { return Err(RuntimeError::invalid("spec", "not attention")) };
        let buffers = AttentionBuffers { q: &b[3 * c], k: &b[3 * c + 1], v: &b[3 * c + 2], o: &b[o], lse: None };
        prepare_attention(backend, compiler, s, &p, &strides, &buffers, None)
    };
    let causal = if spec.causal { 0.5 } else { 1.0 };
    let work = 4.0 * (p.batch * p.heads_q * p.seq_q * p.seq_k * p.head_dim) as f64 * causal;
    Ok(LaunchTarget {
        backend,
        spec: (*spec).into(),
        memory,
        copies,
        out: (o, problem.q_elements(), out_of(spec.dtype)),
        prepare: Box::new(prepare),
        work,
    })
}

/// GEMM without epilogue tensors on random inputs; FLOPs = 2 M N K.
pub fn gemm_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &GemmSpec,
    problem: GemmProblem,
) -> Result<LaunchTarget<'a, crate::gemm::GemmParams>> {
    if spec.epilogue.bias || spec.epilogue.residual {
        return Err(RuntimeError::invalid("spec", "tune GEMM specs without bias / residual tensors"));
    }
    let mut rng = StdRng::seed_from_u64(0x6e33);
    let mut memory = HostUploads::new(backend);
    let copies = copies_for((problem.x_elements() + problem.w_elements()) * 2);
    for _ in 0..copies {
        upload(&mut memory, encode(&random(&mut rng, problem.x_elements()), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, problem.w_elements()), spec.dtype))?;
    }
    let y = upload(&mut memory, encode_out(&vec![0.0; problem.y_elements()], spec.out))?;
    let strides = GemmStrides::contiguous(spec, &problem);
    let p = problem;
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Gemm(s) = spec else { return Err(RuntimeError::invalid("spec", "not a GEMM")) };
        let buffers = GemmBuffers { x: &b[2 * c], w: &b[2 * c + 1], c: None, bias: None, residual: None, y: &b[y] };
        prepare_gemm(backend, compiler, s, &p, &strides, &buffers, 1.0, 0.0)
    };
    Ok(LaunchTarget {
        backend,
        spec: (*spec).into(),
        memory,
        copies,
        out: (y, problem.y_elements(), spec.out),
        prepare: Box::new(prepare),
        work: 2.0 * (p.m * p.n * p.k) as f64,
    })
}

/// Fused LoRA on random inputs (adapter ids in segments for per-row specs); FLOPs count the useful
/// work 2 M N K + 2 M K r + 2 M r N.
pub fn lora_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &LoraSpec,
    problem: LoraProblem,
) -> Result<LaunchTarget<'a, crate::lora::LoraParams>> {
    if spec.epilogue.bias || spec.epilogue.residual {
        return Err(RuntimeError::invalid("spec", "tune LoRA specs without bias / residual tensors"));
    }
    let r = spec.rank as usize;
    let p = problem;
    let with_w = !spec.is_bottleneck();
    let mut rng = StdRng::seed_from_u64(0x10aa);
    let mut memory = HostUploads::new(backend);
    let per_copy = p.m * p.k + if with_w { p.k * p.n } else { 0 } + p.a_elements(r) + p.b_elements(r);
    let copies = copies_for(per_copy * 2);
    for _ in 0..copies {
        upload(&mut memory, encode(&random(&mut rng, p.m * p.k), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, if with_w { p.k * p.n } else { 0 }), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, p.a_elements(r)), spec.dtype))?;
        upload(&mut memory, encode(&random(&mut rng, p.b_elements(r)), spec.dtype))?;
    }
    let ids: Vec<u8> = (0..p.m).flat_map(|row| ((row * p.adapters / p.m.max(1)) as i32).to_le_bytes()).collect();
    let ids = upload(&mut memory, ids)?;
    let y = upload(&mut memory, encode_out(&vec![0.0; p.m * p.n], spec.out))?;
    let strides = LoraStrides::contiguous(spec, &p);
    let per_row = spec.adapters == tessera_codegen::AdapterMode::PerRow;
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Lora(s) = spec else { return Err(RuntimeError::invalid("spec", "not LoRA")) };
        let buffers = LoraBuffers {
            x: &b[4 * c],
            w: with_w.then(|| &b[4 * c + 1]),
            a: &b[4 * c + 2],
            b: &b[4 * c + 3],
            ids: per_row.then(|| &b[ids]),
            bias: None,
            residual: None,
            y: &b[y],
        };
        prepare_lora(backend, compiler, s, &p, &strides, &buffers, 1.0, None)
    };
    let work = 2.0 * (p.m * p.n * p.k) as f64 * f64::from(u8::from(with_w)) + 2.0 * (p.m * p.k * r + p.m * r * p.n) as f64;
    Ok(LaunchTarget {
        backend,
        spec: (*spec).into(),
        memory,
        copies,
        out: (y, p.m * p.n, spec.out),
        prepare: Box::new(prepare),
        work,
    })
}
