//! How a memory-bound elementwise kernel divides its work: each CTA of `threads` threads owns a
//! chunk of `threads x elems_per_thread` consecutive elements, moved as vectors of `vector`
//! elements (one 1-16 byte access per array; chunks that are partial or misaligned fall back to
//! element-wise accesses at run time).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::common::list;
use crate::common::SpecError;

const THREADS: [u32; 3] = [128, 256, 512];
const ELEMS: [u32; 4] = [4, 8, 16, 32];
/// 16 one-byte elements per vector made ptxas spill in the fp8 -> fp8 cast.
const VECTORS: [u32; 4] = [1, 2, 4, 8];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ElementwiseTile {
    pub threads: u32,
    pub elems_per_thread: u32,
    /// Elements per vector access.
    pub vector: u32,
}

impl ElementwiseTile {
    pub const fn new(threads: u32, elems_per_thread: u32, vector: u32) -> Self {
        ElementwiseTile { threads, elems_per_thread, vector }
    }

    /// 256 threads, 16 elements each, and the widest vector (at most 8 elements) whose accesses
    /// stay within 16 bytes for elements of `widest_bytes`.
    pub fn default_for(widest_bytes: u32) -> Self {
        ElementwiseTile::new(256, 16, (16 / widest_bytes.clamp(1, 16)).min(8))
    }

    /// Elements per CTA.
    pub fn chunk(&self) -> u64 {
        u64::from(self.threads) * u64::from(self.elems_per_thread)
    }

    /// `widest_bytes`: the largest element the kernel moves (a vector of it must fit 16 bytes).
    pub fn validate(&self, widest_bytes: u32) -> Result<(), SpecError> {
        if !THREADS.contains(&self.threads) {
            return Err(SpecError::unsupported("tile.threads", self.threads, list(&THREADS)));
        }
        if !ELEMS.contains(&self.elems_per_thread) {
            return Err(SpecError::unsupported("tile.elems_per_thread", self.elems_per_thread, list(&ELEMS)));
        }
        if !VECTORS.contains(&self.vector) || self.elems_per_thread % self.vector != 0 {
            return Err(SpecError::unsupported(
                "tile.vector",
                self.vector,
                format!("{} dividing elems_per_thread ({})", list(&VECTORS), self.elems_per_thread),
            ));
        }
        if self.vector * widest_bytes > 16 {
            return Err(SpecError::unsupported(
                "tile.vector",
                self.vector,
                format!("at most {} for {widest_bytes}-byte elements (one access of at most 16 bytes)", 16 / widest_bytes),
            ));
        }
        Ok(())
    }

    /// Every valid tile for elements of up to `widest_bytes`.
    pub fn space(widest_bytes: u32) -> impl Iterator<Item = ElementwiseTile> {
        THREADS.into_iter().flat_map(move |t| {
            ELEMS.into_iter().flat_map(move |e| {
                VECTORS
                    .into_iter()
                    .map(move |v| ElementwiseTile::new(t, e, v))
                    .filter(move |tile| tile.validate(widest_bytes).is_ok())
            })
        })
    }
}

impl fmt::Display for ElementwiseTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}e{}v{}", self.threads, self.elems_per_thread, self.vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_and_bad_fields_are_named() {
        for bytes in [1, 2, 4] {
            let t = ElementwiseTile::default_for(bytes);
            t.validate(bytes).unwrap();
            assert_eq!(u64::from(t.vector) * u64::from(bytes), if bytes == 1 { 8 } else { 16 });
        }
        let msg = ElementwiseTile::new(256, 16, 8).validate(4).unwrap_err().to_string();
        assert!(msg.contains("tile.vector") && msg.contains("at most 4"), "{msg}");
        let msg = ElementwiseTile::new(64, 16, 4).validate(4).unwrap_err().to_string();
        assert!(msg.contains("tile.threads") && msg.contains("128, 256, 512"), "{msg}");
        assert!(ElementwiseTile::new(256, 4, 8).validate(1).is_err());
        assert!(ElementwiseTile::space(4).all(|t| t.validate(4).is_ok()));
        assert!(ElementwiseTile::space(4).count() > 20);
    }
}
