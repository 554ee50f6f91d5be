//! The cast launcher (`CastSpec`): one tensor converted between element types, optionally scaled
//! by a device scalar and reporting the input's amax into a device scalar. The kernel's parameters
//! ([`CastParams`]) are part of the host/device contract in `tessera_codegen`.

use tessera_codegen::{CastSpec, DevicePtr, DevicePtrMut};
pub use tessera_codegen::CastParams;

use crate::common::buffers::{byte_len, decode, encode, poisoned_bytes, zeroed_bytes};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::{HostUploads, PreparedLaunch};
use crate::common::tensor_list::{check_disjoint, check_elems, check_scalar, chunk_grid, chunk_offsets};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};

/// Device buffers of one cast: `n` elements in, `n` out, and the scalars the spec asks for.
#[derive(Clone, Copy, Debug)]
pub struct CastBuffers<'a> {
    pub x: &'a DeviceBuffer,
    pub y: &'a DeviceBuffer,
    /// f32 scale (`spec.scaled`).
    pub scale: Option<&'a DeviceBuffer>,
    /// f32 amax accumulator (`spec.amax`); zero it before the first cast of a window.
    pub amax: Option<&'a DeviceBuffer>,
}

/// Checks, compiles and loads a cast of `n` elements.
pub fn prepare_cast(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &CastSpec,
    n: usize,
    buffers: &CastBuffers<'_>,
) -> Result<PreparedLaunch<CastParams>> {
    spec.validate(backend.arch())?;
    let all = [Some(buffers.x), Some(buffers.y), buffers.scale, buffers.amax];
    for b in all.iter().flatten() {
        backend.check_buffer(b)?;
    }
    check_elems("x", buffers.x, n, spec.from)?;
    check_elems("y", buffers.y, n, spec.to)?;
    for (name, wanted, given) in [("scale", spec.scaled, buffers.scale), ("amax", spec.amax, buffers.amax)] {
        match (wanted, given) {
            (true, Some(b)) => check_scalar(name, b)?,
            (false, None) => {}
            (true, None) => return Err(RuntimeError::invalid(name, format!("the spec asks for `{name}` but no buffer was given"))),
            (false, Some(_)) => return Err(RuntimeError::invalid(name, format!("a buffer was given but the spec has no `{name}`"))),
        }
    }
    let mut ranges = vec![
        ("x".to_string(), buffers.x.addr(), n * spec.from.size_bytes()),
        ("y".to_string(), buffers.y.addr(), n * spec.to.size_bytes()),
    ];
    if let Some(amax) = buffers.amax {
        ranges.push(("amax".into(), amax.addr(), 4));
    }
    check_disjoint(ranges)?;
    let tile = spec.tile();
    let (_, chunks) = chunk_offsets(std::iter::once(n), tile.chunk())?;
    let params = CastParams {
        x: DevicePtr::new(buffers.x.addr()),
        y: DevicePtrMut::new(buffers.y.addr()),
        scale: DevicePtr::new(buffers.scale.map_or(0, DeviceBuffer::addr)),
        amax: DevicePtrMut::new(buffers.amax.map_or(0, DeviceBuffer::addr)),
        n: n as i64,
    };
    let source = spec.render(backend.arch())?;
    PreparedLaunch::new(backend, compiler, &source, chunk_grid(chunks, tile.threads), params, all.into_iter().flatten())
}

/// What [`run_cast`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct CastOutput {
    /// The stored bytes of `y` (`n` elements of `spec.to`).
    pub y: Vec<u8>,
    /// Max |x| (NaN ignored) when `spec.amax`.
    pub amax: Option<f32>,
}

/// Casts the stored bytes `x` (elements of `spec.from`) on the backend. `scale` is required iff
/// `spec.scaled` and must be finite and positive. Y is poisoned before the launch.
pub fn run_cast(backend: &dyn Backend, compiler: &Compiler, spec: &CastSpec, x: &[u8], scale: Option<f32>) -> Result<CastOutput> {
    let size = spec.from.size_bytes();
    if x.len() % size != 0 {
        return Err(RuntimeError::invalid("x", format!("{} bytes are not whole {} elements", x.len(), spec.from)));
    }
    match (spec.scaled, scale) {
        (true, Some(s)) if !(s.is_finite() && s > 0.0) => {
            return Err(RuntimeError::invalid("scale", format!("{s} must be finite and positive")))
        }
        (true, None) => return Err(RuntimeError::invalid("scale", "the spec is scaled but no scale was given")),
        (false, Some(_)) => return Err(RuntimeError::invalid("scale", "a scale was given but the spec is not scaled")),
        _ => {}
    }
    let n = x.len() / size;
    let mut memory = HostUploads::new(backend);
    let nonempty = |b: Vec<u8>| if b.is_empty() { vec![0u8; 16] } else { b };
    let xi = memory.upload(&nonempty(x.to_vec()))?;
    let yi = memory.upload(&nonempty(poisoned_bytes("y", n, spec.to)?))?;
    let si = scale.map(|s| memory.upload(&s.to_le_bytes())).transpose()?;
    let ai = if spec.amax { Some(memory.upload(&0u32.to_le_bytes())?) } else { None };
    let b = &memory.buffers;
    let buffers = CastBuffers { x: &b[xi], y: &b[yi], scale: si.map(|i| &b[i]), amax: ai.map(|i| &b[i]) };
    prepare_cast(backend, compiler, spec, n, &buffers)?.run(backend)?;
    let mut y = zeroed_bytes("y", byte_len("y", n, spec.to)?)?;
    if !y.is_empty() {
        backend.read(&b[yi], &mut y)?;
    }
    let amax = match ai {
        Some(i) => {
            let mut bits = [0u8; 4];
            backend.read(&b[i], &mut bits)?;
            Some(f32::from_le_bytes(bits))
        }
        None => None,
    };
    Ok(CastOutput { y, amax })
}

/// [`run_cast`] on f32 values, encoded to `spec.from` first (round to nearest even).
pub fn run_cast_f32(backend: &dyn Backend, compiler: &Compiler, spec: &CastSpec, x: &[f32], scale: Option<f32>) -> Result<(Vec<f32>, Option<f32>)> {
    let out = run_cast(backend, compiler, spec, &encode(x, spec.from), scale)?;
    Ok((decode(&out.y, spec.to), out.amax))
}
