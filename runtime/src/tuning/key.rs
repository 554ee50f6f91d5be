//! The tuning database's key: what a tuned tile is valid for. The device part of it
//! ([`DeviceFingerprint`]) is what a backend reports, so it is defined with the backend trait.

use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_codegen::{KernelSpec, TileChoice};

use crate::device::backend::DeviceFingerprint;

/// The power-of-two bucket of one shape dimension (at least 1): shapes in the same bucket share a
/// tuned tile. Dimensions above 2^63 (no power of two above them fits) share the top bucket.
pub fn bucket(dim: usize) -> u64 {
    (dim.max(1) as u64).checked_next_power_of_two().unwrap_or(u64::MAX)
}

/// How one dimension of a [`TuneShape`] is bucketed, declared per field with `#[bucket(...)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// The next power of two (at least 1): sizes that tune alike share an entry.
    Pow2,
    /// The value itself: a dimension whose every value may want its own tile.
    Exact,
}

impl Bucket {
    /// The dimension's bucket as stored in the database.
    pub fn key(self, dim: usize) -> u64 {
        match self {
            Bucket::Pow2 => bucket(dim),
            Bucket::Exact => dim as u64,
        }
    }

    /// The dimension's bucket as a shape dimension (what the family's tile filter sees).
    pub fn dim(self, dim: usize) -> usize {
        usize::try_from(self.key(dim)).unwrap_or(usize::MAX)
    }
}

/// A family's tuning shape: one named `usize` per dimension, each with its bucketing declared,
/// derived with `#[derive(TuneShape)]`. The database stores [`TuneShape::key_dims`] (the fields
/// in declaration order), so the struct is the one place the order is written down.
///
/// ```
/// use tessera_runtime::tuning::TuneShape;
///
/// #[derive(Clone, Copy, Debug, TuneShape)]
/// struct Rows {
///     #[bucket(pow2)]
///     rows: usize,
///     #[bucket(exact)]
///     groups: usize,
/// }
///
/// let s = Rows { rows: 3000, groups: 3 };
/// assert_eq!(s.key_dims(), [4096, 3]);
/// assert_eq!(s.bucketed().rows, 4096);
/// assert_eq!(s.dimension_names(), ["rows", "groups"]);
/// ```
pub trait TuneShape: fmt::Debug + Send + Sync {
    /// The field names, in key order.
    fn dimension_names(&self) -> &'static [&'static str];
    /// The shape with every dimension replaced by its bucket.
    fn bucketed(&self) -> Self
    where
        Self: Sized;
    /// The bucketed dimensions in declaration order: the key's `shape`.
    fn key_dims(&self) -> Vec<u64>;
}

pub use tessera_derive::TuneShape;

/// Which tiles are worth timing for a shape: each family writes the rule for its own shape (no
/// 128-row tiles for 16 rows). The spec's validation has already removed what the architecture
/// cannot run; a tile of another family is never worth timing.
pub trait TileFilter: TuneShape {
    fn worth_timing(&self, tile: &TileChoice) -> bool;
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TuningKey {
    /// The spec with its tile left to the default (the family is part of it).
    pub spec: KernelSpec,
    /// Bucketed shape dimensions: [`TuneShape::key_dims`] of the family's shape.
    pub shape: Vec<u64>,
    pub device: DeviceFingerprint,
}

impl TuningKey {
    pub fn new<S: TuneShape + ?Sized>(spec: &KernelSpec, shape: &S, device: DeviceFingerprint) -> Self {
        TuningKey { spec: spec.untiled(), shape: shape.key_dims(), device }
    }
}

/// A three-dimensional power-of-two shape for the tuning module's own tests, which know no family.
#[cfg(test)]
#[derive(Clone, Copy, Debug, TuneShape)]
pub(crate) struct TestShape {
    #[bucket(pow2)]
    pub a: usize,
    #[bucket(pow2)]
    pub b: usize,
    #[bucket(pow2)]
    pub c: usize,
}

#[cfg(test)]
pub(crate) fn test_shape([a, b, c]: [usize; 3]) -> TestShape {
    TestShape { a, b, c }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{AttentionSpec, ElemType, TileConfig};

    fn device() -> DeviceFingerprint {
        DeviceFingerprint { name: "GPU".into(), compute_capability: (9, 0), driver: 13000, nvrtc: (13, 0) }
    }

    #[test]
    fn shapes_bucket_to_powers_of_two_and_tiles_are_ignored() {
        assert_eq!([0, 1, 2, 3, 4, 5, 1000, 1024, 1025].map(bucket), [1, 1, 2, 4, 4, 8, 1024, 1024, 2048]);
        assert_eq!(bucket(usize::MAX), u64::MAX, "the top bucket, not an overflow");
        let spec = KernelSpec::from(AttentionSpec::new(ElemType::BF16, 64, false, 8, 8));
        let tiled = KernelSpec::from(AttentionSpec::new(ElemType::BF16, 64, false, 8, 8).with_tile(TileConfig::new(64, 32, 4, 1)));
        let key = |spec: &KernelSpec, dims| TuningKey::new(spec, &test_shape(dims), device());
        assert_eq!(key(&spec, [8, 3000, 3000]), key(&tiled, [8, 4096, 2049]));
        assert_ne!(key(&spec, [8, 3000, 3000]), key(&spec, [8, 5000, 3000]));
    }

    #[derive(Clone, Copy, Debug, TuneShape)]
    struct Mixed {
        #[bucket(exact)]
        groups: usize,
        #[bucket(pow2)]
        rows: usize,
    }

    /// The key's dimensions are the fields in declaration order, each bucketed as declared.
    #[test]
    fn derived_shapes_bucket_per_field_in_declaration_order() {
        let s = Mixed { groups: 3, rows: 3000 };
        assert_eq!(s.key_dims(), [3, 4096]);
        assert_eq!((s.bucketed().groups, s.bucketed().rows), (3, 4096));
        assert_eq!(s.dimension_names(), ["groups", "rows"]);
        assert_eq!(Mixed { groups: 0, rows: 0 }.key_dims(), [0, 1], "pow2 buckets are at least 1");
        assert_eq!(Bucket::Exact.key(usize::MAX), usize::MAX as u64);
    }
}
