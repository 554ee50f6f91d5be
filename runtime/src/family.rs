//! The launch path every tensor-core family shares: check the buffers, take the tuned tile, check
//! the call and build the mma.sync kernel's parameters, try the sm_90a kernel where the spec routes
//! there, fall back with a note when a tensor map cannot describe an operand, render, compile and
//! load. A family says how each step goes for it by implementing [`Family`]; [`prepare`] and
//! [`route`] are the skeleton, written once.
//!
//! The sm_90a parameter structs extend the mma.sync ones (`base` is their first field), so a
//! launch holds one of the two in a [`KernelChoice`] and both kernels read the same `base`.

use tessera_codegen::{Arch, KernelParams, KernelSource, KernelSpec};

use crate::common::error::Result;
use crate::common::launch::{sm90a_fallback_note, LaunchParams, PreparedLaunch};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer, LaunchConfig};
use crate::tuning::{tuned_spec, TileFilter};

/// An sm_90a parameter struct: the mma.sync kernel's parameters (`base`) and the tensor maps.
pub trait ExtendsParams {
    type Base;
    fn base(&self) -> &Self::Base;
}

/// The parameters of a launch: the mma.sync kernel's struct or the sm_90a one.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum KernelChoice<P, H> {
    MmaSync(P),
    Hopper(H),
}

impl<P, H: ExtendsParams<Base = P>> KernelChoice<P, H> {
    /// The pointers, strides and sizes both kernels read.
    pub fn base(&self) -> &P {
        match self {
            KernelChoice::MmaSync(p) => p,
            KernelChoice::Hopper(p) => p.base(),
        }
    }
}

impl<P: KernelParams, H: KernelParams> LaunchParams for KernelChoice<P, H> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            KernelChoice::MmaSync(p) => p.as_bytes(),
            KernelChoice::Hopper(p) => p.as_bytes(),
        }
    }
}

/// A checked, compiled and loaded launch of family `F`.
pub type FamilyLaunch<F> = PreparedLaunch<KernelChoice<<F as Family>::Params, <F as Family>::HopperParams>>;

/// One tensor-core family's steps of the shared launch path. Read a family's implementation (its
/// `family.rs`) top to bottom for what it checks and how it routes.
pub trait Family {
    /// How fallback notes name the family.
    const NAME: &'static str;
    type Spec: Copy + Into<KernelSpec>;
    type Problem;
    type Strides;
    type Buffers<'b>;
    /// The call's scalars besides its tensors (GEMM: alpha and beta; LoRA: the scale and the
    /// column-group size; attention: the softmax scale).
    type Args: Copy;
    /// The mma.sync kernel's parameters.
    type Params: KernelParams;
    /// The sm_90a kernel's parameters, which extend [`Family::Params`].
    type HopperParams: KernelParams + ExtendsParams<Base = Self::Params>;
    /// The tuning key's shape, with the family's rule for which tiles are worth timing.
    type TuneShape: TileFilter;

    fn tune_shape(problem: &Self::Problem) -> Self::TuneShape;

    /// Every device buffer of the call (checked before anything else, re-checked at each launch).
    fn device_buffers<'a>(buffers: &'a Self::Buffers<'_>) -> Vec<&'a DeviceBuffer>;

    /// The family's spec in a tuned `KernelSpec`, when the tuned tile can run this call.
    fn take_tuned(tuned: KernelSpec, problem: &Self::Problem, buffers: &Self::Buffers<'_>, arch: Arch) -> Option<Self::Spec>;

    /// Checks the call against the spec and builds the mma.sync kernel's parameters.
    fn checked_params(
        backend: &dyn Backend,
        spec: &Self::Spec,
        problem: &Self::Problem,
        strides: &Self::Strides,
        buffers: &Self::Buffers<'_>,
        args: Self::Args,
    ) -> Result<Self::Params>;

    /// `None` where the spec does not take the sm_90a kernel on the backend's architecture (or the
    /// problem is empty); else its parameters, or why tensor maps cannot describe this call.
    fn sm90a_params(
        backend: &dyn Backend,
        spec: &Self::Spec,
        problem: &Self::Problem,
        strides: &Self::Strides,
        params: &Self::Params,
    ) -> Result<Option<std::result::Result<Self::HopperParams, String>>>;

    /// The sm_90a kernel's grid (persistent kernels: at most one CTA per multiprocessor).
    fn sm90a_config(
        backend: &dyn Backend,
        spec: &Self::Spec,
        problem: &Self::Problem,
        params: &Self::Params,
        source: &KernelSource,
    ) -> Result<Option<LaunchConfig>>;

    /// The spec (and parameters) of the mma.sync kernel that runs after a fallback from sm_90a:
    /// the default mma.sync tile.
    fn fall_back(backend: &dyn Backend, spec: &Self::Spec, problem: &Self::Problem, params: &mut Self::Params, args: Self::Args) -> Result<Self::Spec>;

    /// The mma.sync kernel's grid; `None` for an empty problem.
    fn mma_sync_config(
        backend: &dyn Backend,
        spec: &Self::Spec,
        problem: &Self::Problem,
        params: &Self::Params,
        source: &KernelSource,
    ) -> Result<Option<LaunchConfig>>;

    fn render(spec: &Self::Spec, arch: Arch) -> Result<KernelSource>;
}

/// Checks the arguments, takes the tuned tile (where the spec leaves its tile to the default and
/// the database has one this call can run), renders for the backend's architecture, compiles and
/// loads. Nothing is launched.
pub fn prepare<F: Family>(
    backend: &dyn Backend,
    compiler: &Compiler,
    spec: &F::Spec,
    problem: &F::Problem,
    strides: &F::Strides,
    buffers: &F::Buffers<'_>,
    args: F::Args,
) -> Result<FamilyLaunch<F>> {
    let devices = F::device_buffers(buffers);
    for buffer in &devices {
        backend.check_buffer(buffer)?;
    }
    let tuned = tuned_spec(backend, (*spec).into(), &F::tune_shape(problem));
    let spec = F::take_tuned(tuned, problem, buffers, backend.arch()).unwrap_or(*spec);
    let params = F::checked_params(backend, &spec, problem, strides, buffers, args)?;
    route::<F>(backend, compiler, spec, problem, strides, params, args, devices)
}

/// Compiles and loads a checked launch: the sm_90a kernel where the spec routes there and tensor
/// maps can describe the operands, else the mma.sync kernel, with the reason for a fallback in the
/// launch's note (and on standard error).
#[allow(clippy::too_many_arguments)]
pub(crate) fn route<'a, F: Family>(
    backend: &dyn Backend,
    compiler: &Compiler,
    mut spec: F::Spec,
    problem: &F::Problem,
    strides: &F::Strides,
    mut params: F::Params,
    args: F::Args,
    buffers: impl IntoIterator<Item = &'a DeviceBuffer>,
) -> Result<FamilyLaunch<F>> {
    let arch = backend.arch();
    let mut note = None;
    match F::sm90a_params(backend, &spec, problem, strides, &params)? {
        Some(Ok(hopper)) => {
            let source = F::render(&spec, arch)?;
            let config = F::sm90a_config(backend, &spec, problem, &params, &source)?;
            return PreparedLaunch::new(backend, compiler, &source, config, KernelChoice::Hopper(hopper), buffers.into_iter());
        }
        Some(Err(reason)) => {
            note = Some(sm90a_fallback_note(F::NAME, &reason));
            spec = F::fall_back(backend, &spec, problem, &mut params, args)?;
        }
        None => {}
    }
    let source = F::render(&spec, arch)?;
    let config = F::mma_sync_config(backend, &spec, problem, &params, &source)?;
    let launch = PreparedLaunch::new(backend, compiler, &source, config, KernelChoice::MmaSync(params), buffers.into_iter())?;
    Ok(launch.with_note(note))
}
