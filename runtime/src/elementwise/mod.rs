//! The launcher of user-defined elementwise kernels (`MapSpec`, from `#[tessera::elementwise]`).
//! The family is this one file so far; it builds on `common` (element encodings, tensor-list
//! checks, the checked launch) like the other families. The kernel's parameters ([`MapParams`])
//! are part of the host/device contract in `tessera_codegen`.

use tessera_codegen::{DevicePtr, DevicePtrMut, MapSpec, MAX_USER_INPUTS};
pub use tessera_codegen::MapParams;

use crate::common::buffers::{byte_len, decode, encode, poisoned_bytes, zeroed_bytes};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::{HostUploads, PreparedLaunch};
use crate::common::tensor_list::{check_disjoint, check_elems, chunk_offsets};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer, LaunchConfig};

/// CTAs per multiprocessor of the grid-stride loop.
const CTAS_PER_SM: u64 = 8;

/// Checks, compiles and loads `out[i] = f(inputs[0][i], ...)` over `n` elements.
pub fn prepare_map(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &MapSpec,
    n: usize,
    inputs: &[&DeviceBuffer],
    out: &DeviceBuffer,
) -> Result<PreparedLaunch<MapParams>> {
    spec.validate(backend.arch())?;
    let f = &spec.function;
    if inputs.len() != f.inputs.len() {
        return Err(RuntimeError::invalid(
            "inputs",
            format!("{} buffers, but `{}` takes {} inputs", inputs.len(), f.name, f.inputs.len()),
        ));
    }
    let mut ranges = Vec::new();
    for (i, (b, &t)) in inputs.iter().zip(f.inputs).enumerate() {
        backend.check_buffer(b)?;
        check_elems(&format!("inputs[{i}]"), b, n, t)?;
    }
    backend.check_buffer(out)?;
    check_elems("out", out, n, f.output)?;
    ranges.push(("out".to_string(), out.addr(), n * f.output.size_bytes()));
    for (i, (b, &t)) in inputs.iter().zip(f.inputs).enumerate() {
        ranges.push((format!("inputs[{i}]"), b.addr(), n * t.size_bytes()));
        // Inputs may alias each other (read only) but not the output: check each against `out`.
        check_disjoint(vec![ranges[0].clone(), ranges.last().cloned().expect("just pushed")])?;
    }
    let tile = spec.tile();
    let (_, chunks) = chunk_offsets(std::iter::once(n), tile.chunk())?;
    let ctas = chunks.min(u64::from(backend.multiprocessors()) * CTAS_PER_SM);
    let config = (ctas > 0).then_some(LaunchConfig { grid: [ctas as u32, 1, 1], block: [tile.threads, 1, 1], dynamic_shared_bytes: 0 });
    let mut addrs = [DevicePtr::null(); MAX_USER_INPUTS];
    for (a, b) in addrs.iter_mut().zip(inputs) {
        *a = DevicePtr::new(b.addr());
    }
    let params = MapParams { inputs: addrs, out: DevicePtrMut::new(out.addr()), n: n as i64 };
    let source = spec.render(backend.arch())?;
    PreparedLaunch::new(backend, compiler, &source, config, params, inputs.iter().copied().chain([out]))
}

/// Runs the map on host values: each input is rounded to its declared type, the output (poisoned
/// first) comes back widened to f32. All inputs must have the same length.
pub fn run_map(backend: &dyn Backend, compiler: &Compiler, spec: &MapSpec, inputs: &[&[f32]]) -> Result<Vec<f32>> {
    let f = &spec.function;
    let n = inputs.first().map_or(0, |x| x.len());
    for (i, x) in inputs.iter().enumerate() {
        if x.len() != n {
            return Err(RuntimeError::invalid(format!("inputs[{i}]"), format!("{} elements, but inputs[0] has {n}", x.len())));
        }
    }
    if inputs.len() != f.inputs.len() {
        return Err(RuntimeError::invalid("inputs", format!("{} given, `{}` takes {}", inputs.len(), f.name, f.inputs.len())));
    }
    let mut memory = HostUploads::new(backend);
    let nonempty = |b: Vec<u8>| if b.is_empty() { vec![0u8; 16] } else { b };
    let mut idx = Vec::new();
    for (x, &t) in inputs.iter().zip(f.inputs) {
        idx.push(memory.upload(&nonempty(encode(x, t)))?);
    }
    let oi = memory.upload(&nonempty(poisoned_bytes("output", n, f.output)?))?;
    let b = &memory.buffers;
    let ins: Vec<&DeviceBuffer> = idx.iter().map(|&i| &b[i]).collect();
    prepare_map(backend, compiler, spec, n, &ins, &b[oi])?.run(backend)?;
    let mut out = zeroed_bytes("output", byte_len("output", n, f.output)?)?;
    if !out.is_empty() {
        backend.read(&b[oi], &mut out)?;
    }
    Ok(decode(&out, f.output))
}
