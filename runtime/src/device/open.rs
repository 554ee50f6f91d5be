//! Opening a backend by [`BackendKind`]: the CUDA backend where a GPU opens, the CPU simulator
//! where none does (or when asked for). Apart from the trait ([`crate::device::backend`]) because
//! it is the one place that knows both implementations.

use crate::common::error::{Result, RuntimeError};
use crate::device::backend::{Backend, BackendKind};
use crate::device::cuda::CudaBackend;
use crate::device::sim::{open_sim_backend, SimBackend};

/// Opens a backend. `Cuda` fails with [`RuntimeError::NoGpu`] where there is no usable GPU; `Sim`
/// opens the CPU simulator ([`SimBackend::from_env`]); `Auto` gives CUDA when a GPU opens, else the
/// simulator, whose [`Backend::device_name`] then says why the GPU was passed over. Only when
/// neither opens (a bad `TESSERA_SIM_ARCH`) does `Auto` fail, with both reasons; and after a GPU
/// hang in this process ([`RuntimeError::Hung`]) `Auto` returns that error rather than quietly
/// carrying on without the GPU.
pub fn open_backend(kind: BackendKind) -> Result<Box<dyn Backend>> {
    match kind {
        BackendKind::Cuda => Ok(Box::new(CudaBackend::open(0)?)),
        BackendKind::Sim => open_sim_backend(),
        BackendKind::Auto => match CudaBackend::open(0) {
            Ok(cuda) => Ok(Box::new(cuda)),
            Err(hung) if hung.is_hung() => Err(hung),
            Err(cuda) => match SimBackend::from_env() {
                Ok(sim) => Ok(Box::new(sim.with_fallback_reason(cuda.to_string()))),
                Err(sim) => Err(RuntimeError::NoBackend { cuda: cuda.to_string(), sim: sim.to_string() }),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::target::OutputKind;

    #[test]
    fn sim_backend_opens_everywhere() {
        let sim = open_backend(BackendKind::Sim).expect("the simulator needs no hardware");
        assert_eq!(sim.kind(), BackendKind::Sim);
        assert_eq!(sim.output_kind(), OutputKind::Ptx);
        assert!(sim.device_name().starts_with("tessera-sim"), "{}", sim.device_name());
    }

    #[test]
    fn cuda_backend_opens_or_says_there_is_no_gpu() {
        // Must never panic, with or without libcuda.
        match open_backend(BackendKind::Cuda) {
            Ok(backend) => assert_eq!(backend.kind(), BackendKind::Cuda),
            // A GPU Tessera has no code path for (say, sm_100) is the one other acceptable answer.
            Err(e) => assert!(matches!(e, RuntimeError::NoGpu { .. } | RuntimeError::UnsupportedDevice { .. }), "{e}"),
        }
        // Auto: CUDA where a GPU opens, else the simulator, which says why.
        let auto = open_backend(BackendKind::Auto).expect("auto always has the simulator to fall back on");
        match CudaBackend::open(0) {
            Ok(_) => assert_eq!(auto.kind(), BackendKind::Cuda),
            Err(_) => {
                assert_eq!(auto.kind(), BackendKind::Sim);
                let name = auto.device_name();
                assert!(name.contains("chosen by auto") && name.contains("GPU"), "{name}");
            }
        }
    }
}
