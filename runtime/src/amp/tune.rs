//! The mixed-precision family's tuning targets: a cast, an in-place unscale and an AdamW step on
//! random inputs, as [`crate::tuning`] times and verifies candidate tiles. Built from the shared
//! plumbing in [`crate::tuning::target`].

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::{AdamWSpec, CastSpec, ElemType, KernelSpec, TileChoice, UnscaleSpec};

use super::adamw::{prepare_adamw, AdamWState, ParamTensors};
use super::cast::{prepare_cast, CastBuffers};
use super::reference::AdamWHyper;
use super::unscale::{prepare_unscale, GradTensor};
use crate::common::buffers::encode;
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::HostUploads;
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};
use crate::tuning::target::{copies_for, plain, random, upload, Launch, LaunchTarget, Output};
use crate::tuning::tuner::Agreement;
use crate::tuning::{TileFilter, TuneShape};

/// The tuning key's shape of the element-wise AMP kernels (cast, unscale, AdamW): the element
/// count (of one tensor for the list kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, TuneShape)]
pub struct ElementsTuneShape {
    #[bucket(pow2)]
    pub elements: usize,
}

/// Cast, unscale and AdamW compute every element by the same arithmetic whatever the tile (the tile
/// only changes which thread handles which elements), so a candidate must reproduce the default
/// tile's output bit for bit.
const ELEMENTWISE_AGREEMENT: Agreement = Agreement::BitExact;

/// Elements one CTA's chunk may always cover, whatever the count.
const ALWAYS_TIMED_CHUNK: u64 = 512;

impl TileFilter for ElementsTuneShape {
    /// One CTA's chunk should not exceed the elements.
    fn worth_timing(&self, tile: &TileChoice) -> bool {
        match tile {
            TileChoice::Elementwise(t) => t.chunk() <= (self.bucketed().elements as u64).max(ALWAYS_TIMED_CHUNK),
            _ => false,
        }
    }
}

/// A cast of `n` random values (scaled specs get scale 1.5, amax specs an accumulator); bytes =
/// n (size_from + size_to).
pub fn cast_target<'a>(backend: &'a dyn Backend, compiler: &'a Compiler, spec: &CastSpec, n: usize) -> Result<LaunchTarget<'a>> {
    let mut rng = StdRng::seed_from_u64(0xca57);
    let mut memory = HostUploads::new(backend);
    let copies = copies_for(n * spec.from.size_bytes());
    for _ in 0..copies {
        upload(&mut memory, encode(&random(&mut rng, n), spec.from))?;
    }
    let y = upload(&mut memory, vec![0u8; n * spec.to.size_bytes()])?;
    let scale = upload(&mut memory, 1.5f32.to_le_bytes().to_vec())?;
    let amax = upload(&mut memory, 0u32.to_le_bytes().to_vec())?;
    let (scaled, with_amax) = (spec.scaled, spec.amax);
    let prepare = move |spec: &KernelSpec, c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Cast(s) = spec else { return Err(RuntimeError::invalid("spec", "not a cast")) };
        let buffers = CastBuffers { x: &b[c], y: &b[y], scale: scaled.then(|| &b[scale]), amax: with_amax.then(|| &b[amax]) };
        Ok(plain(backend, prepare_cast(backend, compiler, s, n, &buffers)?))
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
        agreement: ELEMENTWISE_AGREEMENT,
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
        let bytes = encode(&random(&mut rng, n), ElemType::F16);
        let i = upload(&mut memory, bytes.clone())?;
        reset.push((i, bytes));
    }
    let found = upload(&mut memory, 0f32.to_le_bytes().to_vec())?;
    let inv = upload(&mut memory, 0.5f32.to_le_bytes().to_vec())?;
    let lens_c = lens.clone();
    let prepare = move |spec: &KernelSpec, _c: usize, b: &[DeviceBuffer]| {
        let KernelSpec::Unscale(s) = spec else { return Err(RuntimeError::invalid("spec", "not unscale")) };
        let grads: Vec<GradTensor<'_>> =
            lens_c.iter().enumerate().map(|(i, &n)| GradTensor { buffer: &b[i], len: n, dtype: ElemType::F16 }).collect();
        let launch: Box<dyn Launch + 'a> = Box::new(prepare_unscale(backend, compiler, s, &grads, &b[found], &b[inv])?);
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
        agreement: ELEMENTWISE_AGREEMENT,
    })
}

/// One AdamW step over `tensors` tensors totalling `total` elements (bf16 grads and model, f32
/// master and moments), from the same state before every verification run; the first tensor's
/// master weights are what verification compares. Bytes = 28 x total.
pub fn adamw_target<'a>(backend: &'a dyn Backend, compiler: &'a Compiler, spec: &AdamWSpec, total: usize, tensors: usize) -> Result<LaunchTarget<'a>> {
    let mut rng = StdRng::seed_from_u64(0xada3);
    let mut memory = HostUploads::new(backend);
    let lens = split(total, tensors);
    let mut reset = Vec::new();
    for &n in &lens {
        let f32s = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let master = random(&mut rng, n);
        let tensors = [
            encode(&random(&mut rng, n), ElemType::BF16),
            f32s(master.clone()),
            f32s(vec![0.0; n]),
            f32s(vec![0.0; n]),
            encode(&master, ElemType::BF16),
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
    let hyper = AdamWHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
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
        agreement: ELEMENTWISE_AGREEMENT,
    })
}
