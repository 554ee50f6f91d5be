//! The gradient-unscale launcher (`UnscaleSpec`): `g *= inv_scale` in place over a list of f32 /
//! f16 / bf16 tensors in one launch, setting a device found-inf flag when any value was inf or
//! NaN. The list goes to the kernel as a device table, so any number of tensors fits. The kernel's
//! parameters and the table's entries ([`UnscaleParams`], [`UnscaleEntry`]) are part of the
//! host/device contract in `tessera_codegen`.

use tessera_codegen::{DevicePtr, DevicePtrMut, ElemType, UnscaleSpec};
pub use tessera_codegen::{UnscaleEntry, UnscaleParams};

use super::host::HostTensor;
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::{HostUploads, PreparedLaunch, TableLaunch};
use crate::common::tensor_list::{check_disjoint, check_elems, check_scalar, chunk_grid, chunk_offsets, table_bytes};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};

/// One gradient tensor on the device.
#[derive(Clone, Copy, Debug)]
pub struct GradTensor<'a> {
    pub buffer: &'a DeviceBuffer,
    pub len: usize,
    pub dtype: ElemType,
}

/// Checks the list, uploads its table, compiles and loads. `found_inf` (f32) is set to 1 by the
/// launch when any element is not finite and never cleared by it; `inv_scale` (f32) is read on the
/// device.
pub fn prepare_unscale<'a>(
    backend: &'a dyn Backend,
    compiler: &Compiler,
    spec: &UnscaleSpec,
    grads: &[GradTensor<'_>],
    found_inf: &DeviceBuffer,
    inv_scale: &DeviceBuffer,
) -> Result<TableLaunch<'a, UnscaleParams>> {
    spec.validate(backend.arch())?;
    backend.check_buffer(found_inf)?;
    backend.check_buffer(inv_scale)?;
    check_scalar("found_inf", found_inf)?;
    check_scalar("inv_scale", inv_scale)?;
    let mut ranges = vec![("found_inf".to_string(), found_inf.addr(), 4)];
    for (i, g) in grads.iter().enumerate() {
        let name = format!("grads[{i}]");
        if !ElemType::FLOAT.contains(&g.dtype) {
            return Err(RuntimeError::invalid(format!("{name}.dtype"), format!("{} is not supported; allowed: f32, f16, bf16", g.dtype)));
        }
        backend.check_buffer(g.buffer)?;
        check_elems(&name, g.buffer, g.len, g.dtype)?;
        ranges.push((name, g.buffer.addr(), g.len * g.dtype.size_bytes()));
    }
    check_disjoint(ranges)?;
    let tile = spec.tile();
    let live: Vec<&GradTensor<'_>> = grads.iter().filter(|g| g.len > 0).collect();
    let (first, chunks) = chunk_offsets(live.iter().map(|g| g.len), tile.chunk())?;
    let entries: Vec<UnscaleEntry> = live
        .iter()
        .zip(&first)
        .map(|(g, &first_chunk)| UnscaleEntry {
            data: DevicePtrMut::new(g.buffer.addr()),
            len: g.len as i64,
            first_chunk,
            dtype: g.dtype,
            reserved: 0,
        })
        .collect();
    let table = backend.alloc(entries.len().max(1) * std::mem::size_of::<UnscaleEntry>())?;
    let launch = (|| {
        if !entries.is_empty() {
            backend.write(&table, &table_bytes(&entries))?;
        }
        let params = UnscaleParams {
            table: DevicePtr::new(table.addr()),
            found_inf: DevicePtrMut::new(found_inf.addr()),
            inv_scale: DevicePtr::new(inv_scale.addr()),
            n_tensors: i32::try_from(entries.len()).map_err(|_| RuntimeError::invalid("grads", "too many tensors"))?,
            reserved: 0,
        };
        let source = spec.render(backend.arch())?;
        let buffers = grads.iter().map(|g| g.buffer).chain([found_inf, inv_scale, &table]);
        PreparedLaunch::new(backend, compiler, &source, chunk_grid(chunks, tile.threads), params, buffers)
    })();
    match launch {
        Ok(launch) => Ok(TableLaunch::new(backend, launch, table)),
        Err(e) => {
            let _ = backend.free(table);
            Err(e)
        }
    }
}

/// Unscales host gradients on the backend in one launch and returns whether any value was not
/// finite. `inv_scale` must be finite and positive.
pub fn run_unscale(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &UnscaleSpec,
    grads: &mut [HostTensor],
    inv_scale: f32,
) -> Result<bool> {
    if !(inv_scale.is_finite() && inv_scale > 0.0) {
        return Err(RuntimeError::invalid("inv_scale", format!("{inv_scale} must be finite and positive")));
    }
    for (i, g) in grads.iter().enumerate() {
        if g.bytes.len() % g.dtype.size_bytes() != 0 {
            return Err(RuntimeError::invalid(format!("grads[{i}]"), "the byte length is not whole elements"));
        }
    }
    let mut memory = HostUploads::new(backend);
    let found = memory.upload(&0f32.to_le_bytes())?;
    let inv = memory.upload(&inv_scale.to_le_bytes())?;
    let mut indices = Vec::new();
    for g in grads.iter() {
        let bytes = if g.bytes.is_empty() { vec![0u8; 16] } else { g.bytes.clone() };
        indices.push(memory.upload(&bytes)?);
    }
    let b = &memory.buffers;
    let tensors: Vec<GradTensor<'_>> =
        grads.iter().zip(&indices).map(|(g, &i)| GradTensor { buffer: &b[i], len: g.len(), dtype: g.dtype }).collect();
    prepare_unscale(backend, compiler, spec, &tensors, &b[found], &b[inv])?.run()?;
    // Everything is read back before any gradient is replaced: a failed read changes nothing.
    let mut results = Vec::with_capacity(grads.len());
    for (g, &i) in grads.iter().zip(&indices) {
        let mut bytes = vec![0u8; g.bytes.len()];
        if !bytes.is_empty() {
            backend.read(&b[i], &mut bytes)?;
        }
        results.push(bytes);
    }
    let mut flag = [0u8; 4];
    backend.read(&b[found], &mut flag)?;
    for (g, bytes) in grads.iter_mut().zip(results) {
        g.bytes = bytes;
    }
    Ok(f32::from_le_bytes(flag) != 0.0)
}
