//! The fused AdamW launcher (`AdamWSpec`): one optimizer step over a list of parameter tensors in
//! one launch, f32 master weights and moments, f32 / f16 / bf16 gradients, f16 / bf16 model weights
//! written back. lr and the step count live in device memory (capturable in a CUDA graph); the
//! launch increments the step count itself and does nothing at all when the found-inf flag is set.
//! The kernel's parameters and the table's entries ([`AdamWParams`], [`AdamWEntry`]) are part of
//! the host/device contract in `tessera_codegen`.

use tessera_codegen::{AdamWSpec, DevicePtr, DevicePtrMut, ElemType};
pub use tessera_codegen::{AdamWEntry, AdamWParams};

use super::host::HostTensor;
use super::reference::AdamWHyper;
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::{HostUploads, PreparedLaunch, TableLaunch};
use crate::common::tensor_list::{check_disjoint, check_elems, check_scalar, chunk_grid, chunk_offsets, table_bytes};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};

/// One parameter tensor on the device: `len` elements in every buffer.
#[derive(Clone, Copy, Debug)]
pub struct ParamTensors<'a> {
    pub len: usize,
    pub grad: &'a DeviceBuffer,
    pub grad_dtype: ElemType,
    pub master: &'a DeviceBuffer,
    pub exp_avg: &'a DeviceBuffer,
    pub exp_avg_sq: &'a DeviceBuffer,
    /// The low-precision model copy (f16 or bf16), if any.
    pub model: Option<(&'a DeviceBuffer, ElemType)>,
}

/// The optimizer's device scalars.
#[derive(Clone, Copy, Debug)]
pub struct AdamWState<'a> {
    /// f32 learning rate.
    pub lr: &'a DeviceBuffer,
    /// i32 step count (0 before the first step); incremented by each launch that steps.
    pub step: &'a DeviceBuffer,
    /// u32 CTA counter, zero before the first launch (each launch leaves it zero).
    pub done: &'a DeviceBuffer,
    /// f32 found-inf flag from the unscale; a set flag skips the step.
    pub found_inf: Option<&'a DeviceBuffer>,
    /// f32 1 / loss scale, when the gradients are still scaled.
    pub inv_scale: Option<&'a DeviceBuffer>,
}

/// beta1, beta2 in [0, 1), eps > 0, weight_decay >= 0, all finite.
pub fn check_hyper(h: &AdamWHyper) -> Result<()> {
    let checks = [
        ("beta1", h.beta1, (0.0..1.0).contains(&h.beta1)),
        ("beta2", h.beta2, (0.0..1.0).contains(&h.beta2)),
        ("eps", h.eps, h.eps.is_finite() && h.eps > 0.0),
        ("weight_decay", h.weight_decay, h.weight_decay.is_finite() && h.weight_decay >= 0.0),
        ("lr", h.lr, h.lr.is_finite() && h.lr >= 0.0),
    ];
    for (name, v, ok) in checks {
        if !ok {
            return Err(RuntimeError::invalid(name, format!("{v} is out of range (beta in [0, 1), eps > 0, lr and weight_decay >= 0, finite)")));
        }
    }
    Ok(())
}

/// Checks the list, uploads its table, compiles and loads. `hyper.lr` is ignored (the kernel reads
/// `state.lr`); the other fields are launch arguments.
pub fn prepare_adamw<'a>(
    backend: &'a dyn Backend,
    compiler: &Compiler,
    spec: &AdamWSpec,
    params: &[ParamTensors<'_>],
    state: &AdamWState<'_>,
    hyper: &AdamWHyper,
) -> Result<TableLaunch<'a, AdamWParams>> {
    spec.validate(backend.arch())?;
    check_hyper(hyper)?;
    let scalars = [("lr", Some(state.lr)), ("step", Some(state.step)), ("done", Some(state.done)), ("found_inf", state.found_inf), ("inv_scale", state.inv_scale)];
    let mut ranges = Vec::new();
    for (name, buffer) in scalars {
        if let Some(b) = buffer {
            backend.check_buffer(b)?;
            check_scalar(name, b)?;
            if name == "step" || name == "done" {
                ranges.push((name.to_string(), b.addr(), 4));
            }
        }
    }
    for (i, p) in params.iter().enumerate() {
        if !ElemType::FLOAT.contains(&p.grad_dtype) {
            return Err(RuntimeError::invalid(format!("params[{i}].grad_dtype"), format!("{} is not supported; allowed: f32, f16, bf16", p.grad_dtype)));
        }
        let mut tensors = vec![("grad", p.grad, p.grad_dtype), ("master", p.master, ElemType::F32), ("exp_avg", p.exp_avg, ElemType::F32), ("exp_avg_sq", p.exp_avg_sq, ElemType::F32)];
        if let Some((model, t)) = p.model {
            if t != ElemType::F16 && t != ElemType::BF16 {
                return Err(RuntimeError::invalid(format!("params[{i}].model_dtype"), format!("{t} is not supported; allowed: f16, bf16")));
            }
            tensors.push(("model", model, t));
        }
        for (what, buffer, t) in tensors {
            let name = format!("params[{i}].{what}");
            backend.check_buffer(buffer)?;
            check_elems(&name, buffer, p.len, t)?;
            // The gradient is only read; everything else is written and must be disjoint.
            if what != "grad" {
                ranges.push((name, buffer.addr(), p.len * t.size_bytes()));
            }
        }
    }
    check_disjoint(ranges)?;
    let tile = spec.tile();
    let live: Vec<&ParamTensors<'_>> = params.iter().filter(|p| p.len > 0).collect();
    let (first, chunks) = chunk_offsets(live.iter().map(|p| p.len), tile.chunk())?;
    let entries: Vec<AdamWEntry> = live
        .iter()
        .zip(&first)
        .map(|(p, &first_chunk)| AdamWEntry {
            grad: DevicePtr::new(p.grad.addr()),
            master: DevicePtrMut::new(p.master.addr()),
            exp_avg: DevicePtrMut::new(p.exp_avg.addr()),
            exp_avg_sq: DevicePtrMut::new(p.exp_avg_sq.addr()),
            model: DevicePtrMut::new(p.model.map_or(0, |(b, _)| b.addr())),
            len: p.len as i64,
            first_chunk,
            grad_dtype: p.grad_dtype,
            // Not read without a model tensor; f32 (code 0) there.
            model_dtype: p.model.map_or(ElemType::F32, |(_, t)| t),
        })
        .collect();
    let table = backend.alloc(entries.len().max(1) * std::mem::size_of::<AdamWEntry>())?;
    let launch = (|| {
        if !entries.is_empty() {
            backend.write(&table, &table_bytes(&entries))?;
        }
        let kernel_params = AdamWParams {
            table: DevicePtr::new(table.addr()),
            found_inf: DevicePtr::new(state.found_inf.map_or(0, DeviceBuffer::addr)),
            inv_scale: DevicePtr::new(state.inv_scale.map_or(0, DeviceBuffer::addr)),
            lr: DevicePtr::new(state.lr.addr()),
            step: DevicePtrMut::new(state.step.addr()),
            done: DevicePtrMut::new(state.done.addr()),
            beta1: hyper.beta1,
            beta2: hyper.beta2,
            eps: hyper.eps,
            weight_decay: hyper.weight_decay,
            n_tensors: i32::try_from(entries.len()).map_err(|_| RuntimeError::invalid("params", "too many tensors"))?,
            reserved: 0,
        };
        let source = spec.render(backend.arch())?;
        let mut buffers: Vec<&DeviceBuffer> = vec![state.lr, state.step, state.done, &table];
        buffers.extend(state.found_inf);
        buffers.extend(state.inv_scale);
        for p in params {
            buffers.extend([p.grad, p.master, p.exp_avg, p.exp_avg_sq]);
            buffers.extend(p.model.map(|(b, _)| b));
        }
        // Nothing to update still counts as a step: a grid of one CTA with an empty table.
        let grid = chunk_grid(chunks.max(1), tile.threads);
        PreparedLaunch::new(backend, compiler, &source, grid, kernel_params, buffers.into_iter())
    })();
    match launch {
        Ok(launch) => Ok(TableLaunch::new(backend, launch, table)),
        Err(e) => {
            let _ = backend.free(table);
            Err(e)
        }
    }
}

/// One parameter on the host; [`run_adamw`] updates it in place.
#[derive(Clone, Debug, PartialEq)]
pub struct HostParam {
    pub grad: HostTensor,
    pub master: Vec<f32>,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
    /// f16 or bf16 model weights.
    pub model: Option<HostTensor>,
}

/// What the device sees of the gradient scaling in one [`run_adamw`] launch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GradScaling {
    /// The found-inf flag: the device skips the step.
    pub found_inf: bool,
    /// Unscale the gradients in the same pass (finite and positive).
    pub inv_scale: Option<f32>,
}

/// One AdamW launch on host tensors. `step` is the step count before the launch (>= 0) and is
/// updated from the device. On error nothing the caller passed is changed: every result is read
/// back from the device before the first one is stored.
pub fn run_adamw(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &AdamWSpec,
    params: &mut [HostParam],
    hyper: &AdamWHyper,
    step: &mut i32,
    scaling: GradScaling,
) -> Result<()> {
    let GradScaling { found_inf, inv_scale } = scaling;
    if *step < 0 {
        return Err(RuntimeError::invalid("step", format!("{step} must be >= 0 (the steps taken before this one)")));
    }
    // The kernel counts in an i32: the largest count cannot be stepped past.
    if !found_inf && step.checked_add(1).is_none() {
        return Err(RuntimeError::invalid("step", format!("{step} is the largest step count; one more step would overflow it")));
    }
    if let Some(s) = inv_scale {
        if !(s.is_finite() && s > 0.0) {
            return Err(RuntimeError::invalid("inv_scale", format!("{s} must be finite and positive")));
        }
    }
    for (i, p) in params.iter().enumerate() {
        let n = p.master.len();
        let mut lens = vec![("grad", p.grad.len()), ("exp_avg", p.exp_avg.len()), ("exp_avg_sq", p.exp_avg_sq.len())];
        if let Some(m) = &p.model {
            lens.push(("model", m.len()));
        }
        for (what, len) in lens {
            if len != n {
                return Err(RuntimeError::invalid(format!("params[{i}].{what}"), format!("{len} elements, but master has {n}")));
            }
        }
    }
    let mut memory = HostUploads::new(backend);
    let up = |memory: &mut HostUploads<'_>, bytes: Vec<u8>| memory.upload(&if bytes.is_empty() { vec![0u8; 16] } else { bytes });
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let lr = up(&mut memory, hyper.lr.to_le_bytes().to_vec())?;
    let st = up(&mut memory, step.to_le_bytes().to_vec())?;
    let done = up(&mut memory, 0u32.to_le_bytes().to_vec())?;
    let fi = up(&mut memory, (if found_inf { 1f32 } else { 0f32 }).to_le_bytes().to_vec())?;
    let inv = inv_scale.map(|s| up(&mut memory, s.to_le_bytes().to_vec())).transpose()?;
    let mut idx = Vec::new();
    for p in params.iter() {
        let g = up(&mut memory, p.grad.bytes.clone())?;
        let ma = up(&mut memory, f32s(&p.master))?;
        let m = up(&mut memory, f32s(&p.exp_avg))?;
        let v = up(&mut memory, f32s(&p.exp_avg_sq))?;
        let mo = p.model.as_ref().map(|t| up(&mut memory, t.bytes.clone())).transpose()?;
        idx.push((g, ma, m, v, mo));
    }
    let b = &memory.buffers;
    let tensors: Vec<ParamTensors<'_>> = params
        .iter()
        .zip(&idx)
        .map(|(p, &(g, ma, m, v, mo))| ParamTensors {
            len: p.master.len(),
            grad: &b[g],
            grad_dtype: p.grad.dtype,
            master: &b[ma],
            exp_avg: &b[m],
            exp_avg_sq: &b[v],
            model: mo.zip(p.model.as_ref()).map(|(i, t)| (&b[i], t.dtype)),
        })
        .collect();
    let state = AdamWState { lr: &b[lr], step: &b[st], done: &b[done], found_inf: Some(&b[fi]), inv_scale: inv.map(|i| &b[i]) };
    prepare_adamw(backend, compiler, spec, &tensors, &state, hyper)?.run()?;
    let read_f32 = |i: usize, len: usize| -> Result<Vec<f32>> {
        let mut bytes = vec![0u8; len * 4];
        if !bytes.is_empty() {
            backend.read(&b[i], &mut bytes)?;
        }
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    };
    // Everything is read back before anything is stored, so a failed read leaves the caller's
    // state as it was instead of half a step.
    let mut results = Vec::with_capacity(params.len());
    for (p, &(_, ma, m, v, mo)) in params.iter().zip(&idx) {
        let n = p.master.len();
        let model = match (mo, p.model.as_ref()) {
            (Some(i), Some(t)) if !t.bytes.is_empty() => {
                let mut bytes = vec![0u8; t.bytes.len()];
                backend.read(&b[i], &mut bytes)?;
                Some(bytes)
            }
            _ => None,
        };
        results.push((read_f32(ma, n)?, read_f32(m, n)?, read_f32(v, n)?, model));
    }
    let mut s = [0u8; 4];
    backend.read(&b[st], &mut s)?;
    for (p, (master, exp_avg, exp_avg_sq, model)) in params.iter_mut().zip(results) {
        p.master = master;
        p.exp_avg = exp_avg;
        p.exp_avg_sq = exp_avg_sq;
        if let (Some(bytes), Some(t)) = (model, p.model.as_mut()) {
            t.bytes = bytes;
        }
    }
    *step = i32::from_le_bytes(s);
    Ok(())
}
