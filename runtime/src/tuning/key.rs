//! The tuning database's key: what a tuned tile is valid for. The device part of it
//! ([`DeviceFingerprint`]) is what a backend reports, so it is defined with the backend trait.

use serde::{Deserialize, Serialize};
use tessera_codegen::KernelSpec;

use crate::device::backend::DeviceFingerprint;

/// The power-of-two bucket of one shape dimension (at least 1): shapes in the same bucket share a
/// tuned tile.
pub fn bucket(dim: usize) -> u64 {
    (dim.max(1) as u64).next_power_of_two()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TuningKey {
    /// The spec with its tile left to the default (the family is part of it).
    pub spec: KernelSpec,
    /// Bucketed shape dimensions, in the family's order (attention: batch x heads, seq_q, seq_k;
    /// GEMM: M, N, K; LoRA: M, N, K, adapters; elementwise: elements).
    pub shape: Vec<u64>,
    pub device: DeviceFingerprint,
}

impl TuningKey {
    pub fn new(spec: &KernelSpec, shape: &[usize], device: DeviceFingerprint) -> Self {
        TuningKey { spec: spec.untiled(), shape: shape.iter().map(|&d| bucket(d)).collect(), device }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{AttentionSpec, DType, TileConfig};

    fn device() -> DeviceFingerprint {
        DeviceFingerprint { name: "GPU".into(), compute_capability: (9, 0), driver: 13000, nvrtc: (13, 0) }
    }

    #[test]
    fn shapes_bucket_to_powers_of_two_and_tiles_are_ignored() {
        assert_eq!([0, 1, 2, 3, 4, 5, 1000, 1024, 1025].map(bucket), [1, 1, 2, 4, 4, 8, 1024, 1024, 2048]);
        let spec = KernelSpec::from(AttentionSpec::new(DType::BF16, 64, false, 8, 8));
        let tiled = KernelSpec::from(AttentionSpec::new(DType::BF16, 64, false, 8, 8).with_tile(TileConfig::new(64, 32, 4, 1)));
        assert_eq!(TuningKey::new(&spec, &[8, 3000, 3000], device()), TuningKey::new(&tiled, &[8, 4096, 2049], device()));
        assert_ne!(TuningKey::new(&spec, &[8, 3000, 3000], device()), TuningKey::new(&spec, &[8, 5000, 3000], device()));
    }
}
