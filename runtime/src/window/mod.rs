//! The sliding-window launcher (`WindowSpec`): max / min / sum over every window of width `k` along
//! the last axis of `x [rows, n]`, giving `y [rows, n - k + 1]`.
//!
//! Windows up to [`WindowSpec::tile_elems`] wide run in shared memory, one CTA per group of whole
//! k-blocks of a row; wider ones need an f32 workspace of `rows x (n - k + 1)` elements
//! ([`workspace_elems`]), one CTA per k-block of a row.
//!
//! The launcher is this file; its f64 reference is `reference.rs`, re-exported by
//! [`crate::reference`]. The kernel's parameters ([`WindowParams`]) are part of the host/device
//! contract in `tessera_codegen`.

pub(crate) mod reference;

use tessera_codegen::{DevicePtr, DevicePtrMut, ElemType, WindowSpec};
pub use tessera_codegen::WindowParams;

use crate::common::buffers::{byte_len, decode, element_count, encode, poisoned_bytes, zeroed_bytes};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::{HostUploads, PreparedLaunch};
use crate::common::tensor_list::{check_disjoint, check_elems};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer, LaunchConfig};

/// `rows` independent rows of `n` elements, windows of width `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowProblem {
    pub rows: usize,
    pub n: usize,
    pub k: usize,
}

impl WindowProblem {
    /// Windows per row: `n - k + 1` ("valid" windows).
    pub fn n_out(&self) -> usize {
        self.n + 1 - self.k
    }

    /// `1 <= k <= n`, and the sizes fit the kernel's 64-bit indexing.
    pub fn check(&self) -> Result<()> {
        if self.k == 0 {
            return Err(RuntimeError::invalid("k", "the window width must be at least 1"));
        }
        if self.k > self.n {
            return Err(RuntimeError::invalid("k", format!("the window width {} exceeds the row length n = {}", self.k, self.n)));
        }
        if !self.rows.checked_mul(self.n).is_some_and(|e| e <= i64::MAX as usize / 4) {
            return Err(RuntimeError::invalid("x", format!("{} rows of {} elements overflow the address space", self.rows, self.n)));
        }
        Ok(())
    }
}

/// f32 workspace elements the launch needs: `rows x (n - k + 1)` when `k` exceeds the spec's tile,
/// else 0 (no workspace).
pub fn workspace_elems(spec: &WindowSpec, problem: &WindowProblem) -> usize {
    if problem.k as u64 > spec.tile_elems() {
        problem.rows * problem.n_out()
    } else {
        0
    }
}

/// Device buffers of one launch.
#[derive(Clone, Copy, Debug)]
pub struct WindowBuffers<'a> {
    /// `rows x n` elements of `spec.dtype`, rows contiguous.
    pub x: &'a DeviceBuffer,
    /// `rows x (n - k + 1)` elements of `spec.dtype`.
    pub y: &'a DeviceBuffer,
    /// [`workspace_elems`] f32 elements when that is nonzero, else `None`.
    pub workspace: Option<&'a DeviceBuffer>,
}

/// Grid shape: k-blocks of outputs per CTA and CTAs per row.
fn division(spec: &WindowSpec, problem: &WindowProblem) -> (u64, u64) {
    let k = problem.k as u64;
    let blocks = (spec.tile_elems() / k).max(1);
    (blocks, (problem.n_out() as u64).div_ceil(blocks * k))
}

/// Checks, compiles and loads one launch.
pub fn prepare_window(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &WindowSpec,
    problem: &WindowProblem,
    buffers: &WindowBuffers<'_>,
) -> Result<PreparedLaunch<WindowParams>> {
    spec.validate(backend.arch())?;
    problem.check()?;
    let all = [Some(buffers.x), Some(buffers.y), buffers.workspace];
    for b in all.iter().flatten() {
        backend.check_buffer(b)?;
    }
    let (len_x, len_y) = (problem.rows * problem.n, problem.rows * problem.n_out());
    check_elems("x", buffers.x, len_x, spec.dtype)?;
    check_elems("y", buffers.y, len_y, spec.dtype)?;
    let ws_len = workspace_elems(spec, problem);
    match (ws_len, buffers.workspace) {
        (0, None) => {}
        (0, Some(_)) => {
            return Err(RuntimeError::invalid(
                "workspace",
                format!("a buffer was given but k = {} fits the tile ({} elements): no workspace is used", problem.k, spec.tile_elems()),
            ))
        }
        (_, Some(b)) => check_elems("workspace", b, ws_len, ElemType::F32)?,
        (_, None) => {
            return Err(RuntimeError::invalid(
                "workspace",
                format!("k = {} exceeds the tile ({} elements): {ws_len} f32 elements of workspace are needed", problem.k, spec.tile_elems()),
            ))
        }
    }
    let mut ranges = vec![
        ("x".to_string(), buffers.x.addr(), len_x * spec.dtype.size_bytes()),
        ("y".to_string(), buffers.y.addr(), len_y * spec.dtype.size_bytes()),
    ];
    if let Some(ws) = buffers.workspace {
        ranges.push(("workspace".into(), ws.addr(), ws_len * 4));
    }
    check_disjoint(ranges)?;
    let (blocks_per_cta, ctas_per_row) = division(spec, problem);
    let ctas = ctas_per_row * problem.rows as u64;
    if ctas > i32::MAX as u64 {
        return Err(RuntimeError::invalid("x", format!("{ctas} CTAs exceed the grid limit of {}; use a larger tile", i32::MAX)));
    }
    let params = WindowParams {
        x: DevicePtr::new(buffers.x.addr()),
        y: DevicePtrMut::new(buffers.y.addr()),
        ws: DevicePtrMut::new(buffers.workspace.map_or(0, DeviceBuffer::addr)),
        rows: problem.rows as i64,
        n: problem.n as i64,
        k: problem.k as i64,
        n_out: problem.n_out() as i64,
        blocks_per_cta: blocks_per_cta as i64,
        ctas_per_row: ctas_per_row as i64,
    };
    let threads = spec.tile().threads;
    let config = (ctas > 0).then_some(LaunchConfig { grid: [ctas as u32, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: 0 });
    let source = spec.render(backend.arch())?;
    PreparedLaunch::new(backend, compiler, &source, config, params, all.into_iter().flatten())
}

/// Runs the window reduction on the stored bytes `x` (`rows x n` elements of `spec.dtype`) and
/// returns the stored bytes of `y` (`rows x (n - k + 1)` elements). Y is poisoned (NaN) before the
/// launch, the workspace too.
pub fn run_window_stored(backend: &dyn Backend, compiler: &Compiler, spec: &WindowSpec, problem: &WindowProblem, x: &[u8]) -> Result<Vec<u8>> {
    spec.validate(backend.arch())?;
    problem.check()?;
    let want = byte_len("x", element_count("x", &[problem.rows, problem.n])?, spec.dtype)?;
    if x.len() != want {
        return Err(RuntimeError::invalid(
            "x",
            format!("{} bytes, but {} rows of {} {} elements are {want}", x.len(), problem.rows, problem.n, spec.dtype),
        ));
    }
    let len_y = element_count("y", &[problem.rows, problem.n_out()])?;
    let ws_len = workspace_elems(spec, problem);
    let mut memory = HostUploads::new(backend);
    let nonempty = |b: Vec<u8>| if b.is_empty() { vec![0u8; 16] } else { b };
    let xi = memory.upload(&nonempty(x.to_vec()))?;
    let yi = memory.upload(&nonempty(poisoned_bytes("y", len_y, spec.dtype)?))?;
    let wi = if ws_len > 0 { Some(memory.upload(&poisoned_bytes("workspace", ws_len, ElemType::F32)?)?) } else { None };
    let b = &memory.buffers;
    let buffers = WindowBuffers { x: &b[xi], y: &b[yi], workspace: wi.map(|i| &b[i]) };
    prepare_window(backend, compiler, spec, problem, &buffers)?.run(backend)?;
    let mut y = zeroed_bytes("y", byte_len("y", len_y, spec.dtype)?)?;
    if !y.is_empty() {
        backend.read(&b[yi], &mut y)?;
    }
    Ok(y)
}

/// [`run_window_stored`] on f32 values: `x` (`rows x n`, row-major) is rounded to `spec.dtype`
/// first (round to nearest even) and `y` (`rows x (n - k + 1)`) is returned widened to f32.
pub fn run_window(backend: &dyn Backend, compiler: &Compiler, spec: &WindowSpec, problem: &WindowProblem, x: &[f32]) -> Result<Vec<f32>> {
    problem.check()?;
    if x.len() != problem.rows * problem.n {
        return Err(RuntimeError::invalid(
            "x",
            format!("{} values, but {} rows of {} elements are {}", x.len(), problem.rows, problem.n, problem.rows * problem.n),
        ));
    }
    let y = run_window_stored(backend, compiler, spec, problem, &encode(x, spec.dtype))?;
    Ok(decode(&y, spec.dtype))
}
