//! [`LaunchTarget`], the [`TuneTarget`] of every GPU family: a problem's device buffers (several
//! copies of the inputs, so that timed launches rotate between them and L2 does not hold the
//! previous launch's data) and how to prepare a launch for a candidate tile. Each family builds its
//! own target in its folder (`attention/tune.rs`, `gemm/tune.rs`, `lora/tune.rs`, `amp/tune.rs`)
//! from the plumbing here, which knows no family.

use rand::rngs::StdRng;
use rand::Rng;
use tessera_codegen::{ElemType, KernelSpec, TileChoice};

use super::tuner::{Agreement, TuneTarget};
use crate::common::buffers::{decode, poison};
use crate::common::error::{Result, RuntimeError};
use crate::common::launch::{HostUploads, LaunchParams, PreparedLaunch, TableLaunch};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer};


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

impl<P: LaunchParams> Launch for Plain<'_, P> {
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

impl<P: LaunchParams> Launch for TableLaunch<'_, P> {
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

pub(crate) fn plain<'a, P: LaunchParams + 'a>(backend: &'a dyn Backend, launch: PreparedLaunch<P>) -> Box<dyn Launch + 'a> {
    Box::new(Plain { backend, launch })
}

pub(crate) type Prepare<'a> = dyn Fn(&KernelSpec, usize, &[DeviceBuffer]) -> Result<Box<dyn Launch + 'a>> + Sync + 'a;

/// Where a target's result is read: buffer index, elements, type, and whether to poison it first
/// (not for in-place kernels, whose output buffer is also their input).
#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub(crate) index: usize,
    pub(crate) n: usize,
    pub(crate) elem: ElemType,
    pub(crate) poison: bool,
}

/// A problem on the device and how to launch it with a given spec.
pub struct LaunchTarget<'a> {
    pub(crate) backend: &'a dyn Backend,
    pub(crate) compiler: &'a Compiler,
    pub(crate) spec: KernelSpec,
    pub(crate) memory: HostUploads<'a>,
    pub(crate) copies: usize,
    pub(crate) out: Output,
    /// Buffers restored to these bytes before every verification run (in-place kernels).
    pub(crate) reset: Vec<(usize, Vec<u8>)>,
    pub(crate) prepare: Box<Prepare<'a>>,
    pub(crate) work: f64,
    pub(crate) unit: &'static str,
    /// The family's rule for a candidate against the default tile.
    pub(crate) agreement: Agreement,
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
        if crate::compile::locate::find_ptxas().is_ok() {
            let spec = self.spec.with_tile_choice(*tile).unwrap_or(self.spec);
            let check = crate::compile::check::check_spec_with(self.compiler, spec, self.backend.arch())?;
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
            self.backend.write(y, &poison(o.n, o.elem))?;
        }
        self.launch(tile, 0)?.run()?;
        let mut bytes = vec![0u8; o.n * o.elem.size_bytes()];
        self.backend.read(y, &mut bytes)?;
        Ok(decode(&bytes, o.elem))
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

    fn agreement(&self) -> Agreement {
        self.agreement
    }
}

/// A matmul family's agreement for output type `out`: `base` (the family's relative L2 tolerance
/// against its f64 reference, for that output type) plus the worst case of an f32 sum of `terms`
/// products in another order or grouping, relative to its magnitude (`terms` 2^-24), which is
/// what two tiles' accumulations (split-K included) differ by before the final rounding.
pub(crate) fn matmul_agreement(base: f64, terms: usize) -> Agreement {
    Agreement::RelL2(base + terms as f64 * F32_UNIT_ROUNDOFF)
}

/// 2^-24: the relative rounding error of one f32 operation.
const F32_UNIT_ROUNDOFF: f64 = 5.960_464_477_539_063e-8;

pub(crate) fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub(crate) fn copies_for(input_bytes: usize) -> usize {
    ROTATION_BYTES.div_ceil(input_bytes.max(1)).clamp(1, MAX_COPIES)
}

pub(crate) fn upload(memory: &mut HostUploads<'_>, bytes: Vec<u8>) -> Result<usize> {
    memory.upload(&if bytes.is_empty() { vec![0u8; 16] } else { bytes })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tessera_codegen::{Arch, ElemType, GemmSpec, HopperGemmTile};

    use super::*;
    use crate::device::sim::SimBackend;
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
            spec: GemmSpec::new(ElemType::BF16, ElemType::BF16).into(),
            memory,
            copies: 1,
            out: Output { index: out, n: 1, elem: ElemType::F32, poison: false },
            reset: Vec::new(),
            prepare: Box::new(prepare),
            work: 1.0,
            unit: "TFLOP/s",
            agreement: Agreement::BitExact,
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
