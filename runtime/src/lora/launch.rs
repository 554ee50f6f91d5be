//! The LoRA family's entry points: [`prepare_lora`] checks a call, takes the tuned tile and picks
//! the kernel (the sm_90a one for a single-adapter spec whose operands tensor maps can describe,
//! else the mma.sync one); [`run_lora`] does the same on host tensors.

use tessera_codegen::LoraSpec;

use super::check::check_problem;
use super::family::{LoraArgs, LoraFamily};
use super::problem::{fits_aligned, LoraBuffers, LoraProblem, LoraStrides};
use crate::common::buffers::{byte_len, decode, element_count, encode, poisoned_bytes, zeroed_bytes};
use crate::common::error::{Result, RuntimeError};
use crate::family::{prepare, FamilyLaunch};
use crate::common::launch::{HostOutput, HostUploads};
use crate::compile::compiler::Compiler;
use crate::device::backend::Backend;

/// A checked, compiled and loaded LoRA launch.
pub type LoraLaunch = FamilyLaunch<LoraFamily>;

/// Checks the arguments, renders for the backend's architecture, compiles and loads. `n_group`
/// `None` picks [`default_n_group`]. Nothing is launched. On sm_90a a single-adapter spec takes
/// the TMA + wgmma kernel (`tessera_codegen::lora_hopper_route`); when a tensor map cannot
/// describe an operand it runs the mma.sync kernel instead, and the launch's note says why.
#[allow(clippy::too_many_arguments)]
pub fn prepare_lora(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &LoraSpec,
    problem: &LoraProblem,
    strides: &LoraStrides,
    buffers: &LoraBuffers<'_>,
    scale: f32,
    n_group: Option<usize>,
) -> Result<LoraLaunch> {
    prepare::<LoraFamily>(backend, compiler, spec, problem, strides, buffers, LoraArgs { scale, n_group })
}

/// Host tensors of one [`run_lora`] call, contiguous, as f32 (rounded to the spec's types on
/// upload). Shapes as in the module docs; `ids` has one entry per row of X.
#[derive(Clone, Copy, Debug)]
pub struct LoraInputs<'a> {
    pub x: &'a [f32],
    pub w: Option<&'a [f32]>,
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub ids: Option<&'a [i64]>,
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
}

/// What [`run_lora`] returns: Y `[M, N]` widened to f32, with the kernel that ran.
pub type LoraOutput = HostOutput;

/// Runs a LoRA or bottleneck spec on host tensors: checks every length and adapter id, picks the
/// element-wise kernel when the shape's rows are not whole 16-byte chunks, poisons Y with NaN,
/// launches, and returns Y `[M, N]` widened to f32 with the kernel that ran.
pub fn run_lora(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &LoraSpec,
    problem: &LoraProblem,
    inputs: &LoraInputs<'_>,
    scale: f32,
    n_group: Option<usize>,
) -> Result<LoraOutput> {
    let spec = &LoraSpec { aligned: spec.aligned && fits_aligned(spec, problem), ..*spec };
    check_problem(spec, problem, scale)?;
    let p = problem;
    let r = spec.rank as usize;
    let lengths = [
        ("x", Some(inputs.x.len()), element_count("x", &[p.m, p.k])?),
        ("w", inputs.w.map(<[f32]>::len), element_count("w", &[p.k, p.n])?),
        ("a", Some(inputs.a.len()), p.a_elements(r)),
        ("b", Some(inputs.b.len()), p.b_elements(r)),
        ("adapter_ids", inputs.ids.map(<[i64]>::len), p.m),
        ("bias", inputs.bias.map(<[f32]>::len), p.n),
        ("residual", inputs.residual.map(<[f32]>::len), element_count("residual", &[p.m, p.n])?),
    ];
    for (name, len, expected) in lengths {
        if let Some(len) = len {
            if len != expected {
                return Err(RuntimeError::invalid(
                    name,
                    format!("{len} elements, but a contiguous tensor of this problem has {expected}"),
                ));
            }
        }
    }
    let ids32 = match inputs.ids {
        Some(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for (row, &id) in ids.iter().enumerate() {
                if id < -1 || id >= p.adapters as i64 {
                    return Err(RuntimeError::invalid(
                        "adapter_ids",
                        format!("row {row} has adapter {id}; valid ids are -1 (none) and 0..{}", p.adapters),
                    ));
                }
                out.push(id as i32);
            }
            Some(out)
        }
        None => None,
    };

    let mut memory = HostUploads::new(backend);
    let upload = |memory: &mut HostUploads<'_>, mut bytes: Vec<u8>| {
        if bytes.is_empty() {
            bytes = vec![0u8; 16];
        }
        memory.upload(&bytes)
    };
    let xi = upload(&mut memory, encode(inputs.x, spec.dtype))?;
    let wi = inputs.w.map(|w| upload(&mut memory, encode(w, spec.dtype))).transpose()?;
    let ai = upload(&mut memory, encode(inputs.a, spec.dtype))?;
    let bi = upload(&mut memory, encode(inputs.b, spec.dtype))?;
    let ii = ids32.map(|ids| upload(&mut memory, ids.iter().flat_map(|v| v.to_le_bytes()).collect())).transpose()?;
    let biasi = inputs.bias.map(|v| upload(&mut memory, encode(v, spec.out))).transpose()?;
    let ri = inputs.residual.map(|v| upload(&mut memory, encode(v, spec.out))).transpose()?;
    let y_elements = element_count("y", &[p.m, p.n])?;
    let yi = upload(&mut memory, poisoned_bytes("y", y_elements, spec.out)?)?;

    let b = &memory.buffers;
    let buffers = LoraBuffers {
        x: &b[xi],
        w: wi.map(|i| &b[i]),
        a: &b[ai],
        b: &b[bi],
        ids: ii.map(|i| &b[i]),
        bias: biasi.map(|i| &b[i]),
        residual: ri.map(|i| &b[i]),
        y: &b[yi],
    };
    let strides = LoraStrides::contiguous(spec, problem);
    let launch = prepare_lora(backend, compiler, spec, problem, &strides, &buffers, scale, n_group)?;
    launch.run(backend)?;
    let mut out = zeroed_bytes("y", byte_len("y", y_elements, spec.out)?)?;
    if !out.is_empty() {
        backend.read(&b[yi], &mut out)?;
    }
    Ok(HostOutput {
        y: decode(&out, spec.out),
        kernel: launch.kernel_name().unwrap_or_default().to_string(),
        note: launch.note().map(str::to_string),
    })
}
