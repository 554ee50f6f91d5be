//! [`TuneTarget`]s of the GPU families: a problem's device buffers (several copies of the inputs,
//! so that timed launches rotate between them and L2 does not hold the previous launch's data)
//! and how to prepare a launch for a candidate tile.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_codegen::{AdamWSpec, AttentionSpec, CastSpec, DType, ElemType, GemmSpec, KernelSpec, LoraSpec, OutType, TileChoice, UnscaleSpec};

use super::tuner::TuneTarget;
use crate::attention::{encode, prepare_attention, AttentionBuffers, AttentionProblem, AttentionStrides};
use crate::backend::{Backend, DeviceBuffer};
use crate::compiler::Compiler;
use crate::error::{Result, RuntimeError};
use crate::elems::{decode_elems, encode_elems, poison_elems};
use crate::gemm::{encode_out, prepare_gemm, GemmBuffers, GemmProblem, GemmStrides};
use crate::launch::{HostUploads, KernelParams, PreparedLaunch, TableLaunch};
use crate::lora::{prepare_lora, LoraBuffers, LoraProblem, LoraStrides};

/// Input bytes the rotation should cover: a few times the largest L2 of the supported GPUs.
const ROTATION_BYTES: usize = 256 << 20;
const MAX_COPIES: usize = 8;

/// What marks an sm_90a kernel's entry point (`..._sm90a_m128n128s2`): the tile label of
/// [`TileChoice`]'s `Display`, which every sm_90a kernel name carries.
const SM90A_KERNEL_MARK: &str = "_sm90a_";

/// A prepared launch of any family, as the tuner drives it.
pub trait Launch {
    fn run(&self) -> Result<()>;
    fn time(&self, warmup: usize, reps: usize) -> Result<Vec<f32>>;
    /// The entry point that runs; `None` for an empty problem, which launches nothing.
    fn kernel_name(&self) -> Option<&str>;
    /// Why the launcher ran another kernel than the spec asked for (a fallback from sm_90a), if
    /// it did.
    fn note(&self) -> Option<&str>;
}

/// A candidate must be timed as the kernel it names: an sm_90a tile whose launch fell back to the
/// mma.sync kernel (a tensor map could not describe the tensors, say) would time the mma.sync
/// kernel under the sm_90a tile's name and could be stored as the winner. Such a candidate fails,
/// with the launcher's note.
fn check_runs_requested_kernel(tile: &TileChoice, launch: &dyn Launch) -> Result<()> {
    let sm90a = matches!(tile, TileChoice::HopperAttention(_) | TileChoice::HopperGemm(_) | TileChoice::HopperLora(_));
    if !sm90a {
        return Ok(());
    }
    let ran_sm90a = launch.kernel_name().is_some_and(|name| name.contains(SM90A_KERNEL_MARK));
    match launch.note() {
        None if ran_sm90a => Ok(()),
        note => Err(RuntimeError::invalid(
            "tile",
            format!(
                "{tile}: the sm_90a kernel does not run ({}); the launch runs `{}`",
                note.unwrap_or("the launcher chose another kernel"),
                launch.kernel_name().unwrap_or("nothing")
            ),
        )),
    }
}

/// A single-kernel launch with the backend it runs on.
struct Plain<'a, P> {
    backend: &'a dyn Backend,
    launch: PreparedLaunch<P>,
}

impl<P: KernelParams> Launch for Plain<'_, P> {
    fn run(&self) -> Result<()> {
        self.launch.run(self.backend)
    }
    fn time(&self, warmup: usize, reps: usize) -> Result<Vec<f32>> {
        self.launch.time(self.backend, warmup, reps)
    }
    fn kernel_name(&self) -> Option<&str> {
        self.launch.kernel_name()
    }
    fn note(&self) -> Option<&str> {
        self.launch.note()
    }
}

impl<P: KernelParams> Launch for TableLaunch<'_, P> {
    fn run(&self) -> Result<()> {
        TableLaunch::run(self)
    }
    fn time(&self, warmup: usize, reps: usize) -> Result<Vec<f32>> {
        TableLaunch::time(self, warmup, reps)
    }
    fn kernel_name(&self) -> Option<&str> {
        self.launch().kernel_name()
    }
    fn note(&self) -> Option<&str> {
        self.launch().note()
    }
}

fn plain<'a, P: KernelParams + 'a>(backend: &'a dyn Backend, launch: PreparedLaunch<P>) -> Box<dyn Launch + 'a> {
    Box::new(Plain { backend, launch })
}

type Prepare<'a> = dyn Fn(&KernelSpec, usize, &[DeviceBuffer]) -> Result<Box<dyn Launch + 'a>> + Sync + 'a;

/// Where a target's result is read: buffer index, elements, type, and whether to poison it first
/// (not for in-place kernels, whose output buffer is also their input).
#[derive(Clone, Copy)]
struct Output {
    index: usize,
    n: usize,
    elem: ElemType,
    poison: bool,
}

/// A problem on the device and how to launch it with a given spec.
pub struct LaunchTarget<'a> {
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: KernelSpec,
    memory: HostUploads<'a>,
    copies: usize,
    out: Output,
    /// Buffers restored to these bytes before every verification run (in-place kernels).
    reset: Vec<(usize, Vec<u8>)>,
    prepare: Box<Prepare<'a>>,
    work: f64,
    unit: &'static str,
}

impl<'a> LaunchTarget<'a> {
    /// The launch of `tile` on input copy `copy`; an error when it would not run the kernel `tile`
    /// names ([`check_runs_requested_kernel`]), so such a candidate is never run, timed or stored.
    fn launch(&self, tile: &TileChoice, copy: usize) -> Result<Box<dyn Launch + 'a>> {
        let spec = self
            .spec
            .with_tile_choice(*tile)
            .ok_or_else(|| RuntimeError::invalid("tile", format!("{tile} is not a tile of this family")))?;
        let launch = (self.prepare)(&spec, copy % self.copies, &self.memory.buffers)?;
        check_runs_requested_kernel(tile, launch.as_ref())?;
        Ok(launch)
    }

    /// How many input copies timed launches rotate through.
    pub fn copies(&self) -> usize {
        self.copies
    }
}

impl TuneTarget for LaunchTarget<'_> {
    /// Compiles and loads; where ptxas is installed, a candidate that spills registers or exceeds
    /// shared memory (as ptxas reports it for the device's architecture) is rejected here, before
    /// any timing.
    fn compile(&self, tile: &TileChoice) -> Result<()> {
        self.launch(tile, 0)?;
        if crate::locate::find_ptxas().is_ok() {
            let spec = self.spec.with_tile_choice(*tile).unwrap_or(self.spec);
            let check = crate::check::check_spec_with(self.compiler, spec, self.backend.arch())?;
            let problems = check.problems();
            if !problems.is_empty() {
                return Err(RuntimeError::invalid("tile", format!("{tile}: {}", problems.join("; "))));
            }
        }
        Ok(())
    }

    fn run(&self, tile: &TileChoice) -> Result<Vec<f32>> {
        for (index, bytes) in &self.reset {
            self.backend.write(&self.memory.buffers[*index], bytes)?;
        }
        let o = self.out;
        let y = &self.memory.buffers[o.index];
        if o.poison {
            self.backend.write(y, &poison_elems(o.n, o.elem))?;
        }
        self.launch(tile, 0)?.run()?;
        let mut bytes = vec![0u8; o.n * o.elem.size_bytes()];
        self.backend.read(y, &mut bytes)?;
        Ok(decode_elems(&bytes, o.elem))
    }

    fn time(&self, tile: &TileChoice, warmup: usize, reps: usize) -> Result<Vec<f32>> {
        let launches: Vec<Box<dyn Launch + '_>> = (0..self.copies).map(|c| self.launch(tile, c)).collect::<Result<_>>()?;
        if warmup > 0 {
            launches[0].time(warmup, 1)?;
        }
        let mut times = Vec::with_capacity(reps);
        for r in 0..reps {
            times.extend(launches[r % launches.len()].time(0, 1)?);
        }
        Ok(times)
    }

    fn work(&self) -> f64 {
        self.work
    }

    fn unit(&self) -> &'static str {
        self.unit
    }
}

fn out_elem(o: OutType) -> ElemType {
    match o {
        OutType::F16 => ElemType::F16,
        OutType::BF16 => ElemType::BF16,
        OutType::F32 => ElemType::F32,
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
) -> Result<LaunchTarget<'a>> {
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
        Ok(plain(backend, prepare_attention(backend, compiler, s, &p, &strides, &buffers, None)?))
    };
    let causal = if spec.causal { 0.5 } else { 1.0 };
    let work = 4.0 * (p.batch * p.heads_q * p.seq_q * p.seq_k * p.head_dim) as f64 * causal;
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies,
        out: Output { index: o, n: problem.q_elements(), elem: out_elem(out_of(spec.dtype)), poison: true },
        reset: Vec::new(),
        prepare: Box::new(prepare),
        work,
        unit: "TFLOP/s",
    })
}

/// GEMM without epilogue tensors on random inputs; FLOPs = 2 M N K.
pub fn gemm_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &GemmSpec,
    problem: GemmProblem,
) -> Result<LaunchTarget<'a>> {
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
    // One workspace for every split-K candidate: sized for the largest split of the smallest tile.
    let widest = tessera_codegen::GemmSpec {
        tile: Some(tessera_codegen::GemmTile::new(32, 32, 32, 4, 1).with_split_k(*tessera_codegen::SPLIT_KS.last().unwrap_or(&1))),
        ..*spec
    };
    let ws = upload(&mut memory, vec![0u8; crate::gemm::split_workspace_bytes(&widest, &problem, backend.arch())])?;
    let strides = GemmStrides::contiguous(spec, &problem);
    let p = problem;
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Gemm(s) = spec else { return Err(RuntimeError::invalid("spec", "not a GEMM")) };
        let buffers = GemmBuffers { x: &b[2 * c], w: &b[2 * c + 1], c: None, bias: None, residual: None, y: &b[y], workspace: Some(&b[ws]) };
        Ok(plain(backend, prepare_gemm(backend, compiler, s, &p, &strides, &buffers, 1.0, 0.0)?))
    };
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies,
        out: Output { index: y, n: problem.y_elements(), elem: out_elem(spec.out), poison: true },
        reset: Vec::new(),
        prepare: Box::new(prepare),
        work: 2.0 * (p.m * p.n * p.k) as f64,
        unit: "TFLOP/s",
    })
}

/// Fused LoRA on random inputs (adapter ids in segments for per-row specs); FLOPs count the useful
/// work 2 M N K + 2 M K r + 2 M r N.
pub fn lora_target<'a>(
    backend: &'a dyn Backend,
    compiler: &'a Compiler,
    spec: &LoraSpec,
    problem: LoraProblem,
) -> Result<LaunchTarget<'a>> {
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
        Ok(plain(backend, prepare_lora(backend, compiler, s, &p, &strides, &buffers, 1.0, None)?))
    };
    let work = 2.0 * (p.m * p.n * p.k) as f64 * f64::from(u8::from(with_w)) + 2.0 * (p.m * p.k * r + p.m * r * p.n) as f64;
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies,
        out: Output { index: y, n: p.m * p.n, elem: out_elem(spec.out), poison: true },
        reset: Vec::new(),
        prepare: Box::new(prepare),
        work,
        unit: "TFLOP/s",
    })
}

/// A cast of `n` random values (scaled specs get scale 1.5, amax specs an accumulator); bytes =
/// n (size_from + size_to).
pub fn cast_target<'a>(backend: &'a dyn Backend, compiler: &'a Compiler, spec: &CastSpec, n: usize) -> Result<LaunchTarget<'a>> {
    let mut rng = StdRng::seed_from_u64(0xca57);
    let mut memory = HostUploads::new(backend);
    let copies = copies_for(n * spec.from.size_bytes());
    for _ in 0..copies {
        upload(&mut memory, encode_elems(&random(&mut rng, n), spec.from))?;
    }
    let y = upload(&mut memory, vec![0u8; n * spec.to.size_bytes()])?;
    let scale = upload(&mut memory, 1.5f32.to_le_bytes().to_vec())?;
    let amax = upload(&mut memory, 0u32.to_le_bytes().to_vec())?;
    let (scaled, with_amax) = (spec.scaled, spec.amax);
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Cast(s) = spec else { return Err(RuntimeError::invalid("spec", "not a cast")) };
        let buffers = crate::cast::CastBuffers { x: &b[c], y: &b[y], scale: scaled.then(|| &b[scale]), amax: with_amax.then(|| &b[amax]) };
        Ok(plain(backend, crate::cast::prepare_cast(backend, compiler, s, n, &buffers)?))
    };
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies,
        out: Output { index: y, n, elem: spec.to, poison: true },
        reset: Vec::new(),
        prepare: Box::new(prepare),
        work: (n * (spec.from.size_bytes() + spec.to.size_bytes())) as f64,
        unit: "GB/s",
    })
}

/// Lengths of `tensors` unequal tensors summing to `total` (not multiples of any chunk).
fn split(total: usize, tensors: usize) -> Vec<usize> {
    let t = tensors.clamp(1, total.max(1));
    let mut lens: Vec<usize> = (0..t).map(|i| total / t + if i % 2 == 0 { 7 } else { 0 }).collect();
    let sum: usize = lens.iter().sum();
    if sum > total {
        let extra = sum - total;
        let last = lens.len() - 1;
        lens[last] = lens[last].saturating_sub(extra);
    } else {
        lens[0] += total - sum;
    }
    lens
}

/// In-place unscale (inv_scale 0.5; verification runs restore the data first) over `tensors` f16
/// tensors totalling `total` elements; the first tensor is what verification compares. Bytes =
/// 2 x total x 2.
pub fn unscale_target<'a>(backend: &'a dyn Backend, compiler: &'a Compiler, spec: &UnscaleSpec, total: usize, tensors: usize) -> Result<LaunchTarget<'a>> {
    let mut rng = StdRng::seed_from_u64(0x0a5c);
    let mut memory = HostUploads::new(backend);
    let lens = split(total, tensors);
    let mut reset = Vec::new();
    for &n in &lens {
        let bytes = encode_elems(&random(&mut rng, n), ElemType::F16);
        let i = upload(&mut memory, bytes.clone())?;
        reset.push((i, bytes));
    }
    let found = upload(&mut memory, 0f32.to_le_bytes().to_vec())?;
    let inv = upload(&mut memory, 0.5f32.to_le_bytes().to_vec())?;
    let lens_c = lens.clone();
    let prepare = move |spec: &KernelSpec, _c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Unscale(s) = spec else { return Err(RuntimeError::invalid("spec", "not unscale")) };
        let grads: Vec<crate::unscale::GradTensor<'_>> =
            lens_c.iter().enumerate().map(|(i, &n)| crate::unscale::GradTensor { buffer: &b[i], len: n, dtype: ElemType::F16 }).collect();
        let launch: Box<dyn Launch + 'a> = Box::new(crate::unscale::prepare_unscale(backend, compiler, s, &grads, &b[found], &b[inv])?);
        Ok(launch)
    };
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies: 1,
        out: Output { index: 0, n: lens[0], elem: ElemType::F16, poison: false },
        reset,
        prepare: Box::new(prepare),
        work: (total * 4) as f64,
        unit: "GB/s",
    })
}

/// One AdamW step over `tensors` tensors totalling `total` elements (bf16 grads and model, f32
/// master and moments), from the same state before every verification run; the first tensor's
/// master weights are what verification compares. Bytes = 28 x total.
pub fn adamw_target<'a>(backend: &'a dyn Backend, compiler: &'a Compiler, spec: &AdamWSpec, total: usize, tensors: usize) -> Result<LaunchTarget<'a>> {
    use crate::adamw::{prepare_adamw, AdamWState, ParamTensors};
    let mut rng = StdRng::seed_from_u64(0xada3);
    let mut memory = HostUploads::new(backend);
    let lens = split(total, tensors);
    let mut reset = Vec::new();
    for &n in &lens {
        let f32s = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let master = random(&mut rng, n);
        let tensors = [
            encode_elems(&random(&mut rng, n), ElemType::BF16),
            f32s(master.clone()),
            f32s(vec![0.0; n]),
            f32s(vec![0.0; n]),
            encode_elems(&master, ElemType::BF16),
        ];
        for bytes in tensors {
            let i = upload(&mut memory, bytes.clone())?;
            reset.push((i, bytes));
        }
    }
    let lr = upload(&mut memory, 1e-3f32.to_le_bytes().to_vec())?;
    let step = upload(&mut memory, 0i32.to_le_bytes().to_vec())?;
    let done = upload(&mut memory, 0u32.to_le_bytes().to_vec())?;
    reset.push((step, 0i32.to_le_bytes().to_vec()));
    let hyper = crate::reference::AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let lens_c = lens.clone();
    let prepare = move |spec: &KernelSpec, _c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::AdamW(s) = spec else { return Err(RuntimeError::invalid("spec", "not AdamW")) };
        let params: Vec<ParamTensors<'_>> = lens_c
            .iter()
            .enumerate()
            .map(|(i, &n)| ParamTensors {
                len: n,
                grad: &b[5 * i],
                grad_dtype: ElemType::BF16,
                master: &b[5 * i + 1],
                exp_avg: &b[5 * i + 2],
                exp_avg_sq: &b[5 * i + 3],
                model: Some((&b[5 * i + 4], ElemType::BF16)),
            })
            .collect();
        let state = AdamWState { lr: &b[lr], step: &b[step], done: &b[done], found_inf: None, inv_scale: None };
        let launch: Box<dyn Launch + 'a> = Box::new(prepare_adamw(backend, compiler, s, &params, &state, &hyper)?);
        Ok(launch)
    };
    Ok(LaunchTarget {
        backend,
        compiler,
        spec: (*spec).into(),
        memory,
        copies: 1,
        out: Output { index: 1, n: lens[0], elem: ElemType::F32, poison: false },
        reset,
        prepare: Box::new(prepare),
        work: (total * 28) as f64,
        unit: "GB/s",
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tessera_codegen::{Arch, GemmSpec, HopperGemmTile};

    use super::*;
    use crate::sim::SimBackend;
    use crate::tuning::tuner::{tune, CandidateStatus, TuneOptions};

    /// A launch that only says which kernel it is and counts what is asked of it.
    struct FakeLaunch<'c> {
        kernel: Option<String>,
        note: Option<String>,
        runs: &'c AtomicUsize,
    }

    impl Launch for FakeLaunch<'_> {
        fn run(&self) -> Result<()> {
            self.runs.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn time(&self, _: usize, reps: usize) -> Result<Vec<f32>> {
            self.runs.fetch_add(1, Ordering::Relaxed);
            Ok(vec![1.0; reps])
        }
        fn kernel_name(&self) -> Option<&str> {
            self.kernel.as_deref()
        }
        fn note(&self) -> Option<&str> {
            self.note.as_deref()
        }
    }

    const MMA_SYNC_KERNEL: &str = "tessera_gemm_bf16_bf16_rr_none_m128n128k32w8s3";
    const SM90A_KERNEL: &str = "tessera_gemm_bf16_bf16_rr_none_sm90a_m128n256k64s4";
    const FALLBACK_NOTE: &str = "sm_90a gemm kernel not used (X is not 16-byte aligned); running the mma.sync kernel";

    fn hopper_tile() -> TileChoice {
        TileChoice::HopperGemm(HopperGemmTile::DEFAULT)
    }

    fn mma_sync_tile() -> TileChoice {
        TileChoice::Gemm(GemmSpec::default_tile(Arch::SM90))
    }

    #[test]
    fn an_sm90a_tile_must_run_the_sm90a_kernel() {
        let runs = AtomicUsize::new(0);
        let fake = |kernel: &str, note: Option<&str>| FakeLaunch {
            kernel: Some(kernel.to_string()),
            note: note.map(str::to_string),
            runs: &runs,
        };
        check_runs_requested_kernel(&hopper_tile(), &fake(SM90A_KERNEL, None)).unwrap();
        let err = check_runs_requested_kernel(&hopper_tile(), &fake(MMA_SYNC_KERNEL, Some(FALLBACK_NOTE))).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(FALLBACK_NOTE) && message.contains(MMA_SYNC_KERNEL), "{message}");
        // The mma.sync kernel without a note, or a note on an sm_90a name: failed all the same.
        assert!(check_runs_requested_kernel(&hopper_tile(), &fake(MMA_SYNC_KERNEL, None)).is_err());
        assert!(check_runs_requested_kernel(&hopper_tile(), &fake(SM90A_KERNEL, Some(FALLBACK_NOTE))).is_err());
        // An mma.sync tile runs the mma.sync kernel, as it should.
        check_runs_requested_kernel(&mma_sync_tile(), &fake(MMA_SYNC_KERNEL, None)).unwrap();
        assert_eq!(runs.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_tuner_never_runs_or_times_an_sm90a_tile_that_fell_back() {
        let backend = SimBackend::new(Arch::SM90A);
        let compiler = Compiler::new();
        let runs = AtomicUsize::new(0);
        // Every launch of an sm_90a tile falls back, as on tensors a tensor map cannot describe.
        let prepare = |spec: &KernelSpec, _: usize, _: &[DeviceBuffer]| -> Result<Box<dyn Launch + '_>> {
            assert!(matches!(spec, KernelSpec::Gemm(_)), "a GEMM target");
            let hopper = matches!(spec.tile_choice(Arch::SM90A), Some(TileChoice::HopperGemm(_)));
            Ok(Box::new(FakeLaunch {
                kernel: Some(MMA_SYNC_KERNEL.to_string()),
                note: hopper.then(|| FALLBACK_NOTE.to_string()),
                runs: &runs,
            }))
        };
        let mut memory = HostUploads::new(&backend);
        let out = upload(&mut memory, vec![0u8; 16]).unwrap();
        let target = LaunchTarget {
            backend: &backend,
            compiler: &compiler,
            spec: GemmSpec::new(DType::BF16, OutType::BF16).into(),
            memory,
            copies: 1,
            out: Output { index: out, n: 1, elem: ElemType::F32, poison: false },
            reset: Vec::new(),
            prepare: Box::new(prepare),
            work: 1.0,
            unit: "TFLOP/s",
        };
        let failed = target.compile(&hopper_tile()).unwrap_err().to_string();
        assert!(failed.contains(FALLBACK_NOTE), "{failed}");
        assert!(target.run(&hopper_tile()).is_err());
        assert!(target.time(&hopper_tile(), 1, 3).is_err());
        assert_eq!(runs.load(Ordering::Relaxed), 0, "a fallen-back candidate is never launched");

        // Through the tuner (the reference candidate fails too, so nothing is timed or chosen).
        let report = tune(&target, &[hopper_tile()], &TuneOptions::default(), &|_, _, _| {});
        assert!(matches!(&report.results[0].status, CandidateStatus::CompileFailed(e) if e.contains(FALLBACK_NOTE)));
        assert_eq!(report.best, None);
        assert_eq!(runs.load(Ordering::Relaxed), 0);
    }
}
