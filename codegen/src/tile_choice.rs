//! One family-independent view of "the tile" of a spec, for code that searches over tiles (the
//! tuner) or stores them (the tuning database).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Arch, ElementwiseTile, GemmTile, KernelSpec, TileConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TileChoice {
    Attention(TileConfig),
    Gemm(GemmTile),
    Elementwise(ElementwiseTile),
}

impl fmt::Display for TileChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TileChoice::Attention(t) => t.fmt(f),
            TileChoice::Gemm(t) => t.fmt(f),
            TileChoice::Elementwise(t) => t.fmt(f),
        }
    }
}

impl KernelSpec {
    /// The tile this spec uses on `arch` (its own or the default); `None` for kernels without one.
    pub fn tile_choice(&self, arch: Arch) -> Option<TileChoice> {
        Some(match self {
            KernelSpec::Attention(s) => TileChoice::Attention(s.tile_for(arch)),
            KernelSpec::Gemm(s) => TileChoice::Gemm(s.tile_for(arch)),
            KernelSpec::Lora(s) => TileChoice::Gemm(s.tile_for(arch)),
            KernelSpec::Cast(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::Unscale(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::AdamW(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::Map(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::Window(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::ScaleUpdate(_) => return None,
        })
    }

    /// This spec with `tile`, or `None` when the tile belongs to another kind of kernel.
    pub fn with_tile_choice(&self, tile: TileChoice) -> Option<KernelSpec> {
        Some(match (*self, tile) {
            (KernelSpec::Attention(s), TileChoice::Attention(t)) => KernelSpec::Attention(s.with_tile(t)),
            (KernelSpec::Gemm(s), TileChoice::Gemm(t)) => KernelSpec::Gemm(s.with_tile(t)),
            (KernelSpec::Lora(s), TileChoice::Gemm(t)) => KernelSpec::Lora(s.with_tile(t)),
            (KernelSpec::Cast(mut s), TileChoice::Elementwise(t)) => {
                s.tile = Some(t);
                KernelSpec::Cast(s)
            }
            (KernelSpec::Unscale(mut s), TileChoice::Elementwise(t)) => {
                s.tile = Some(t);
                KernelSpec::Unscale(s)
            }
            (KernelSpec::AdamW(mut s), TileChoice::Elementwise(t)) => {
                s.tile = Some(t);
                KernelSpec::AdamW(s)
            }
            (KernelSpec::Map(mut s), TileChoice::Elementwise(t)) => {
                s.tile = Some(t);
                KernelSpec::Map(s)
            }
            (KernelSpec::Window(mut s), TileChoice::Elementwise(t)) => {
                s.tile = Some(t);
                KernelSpec::Window(s)
            }
            _ => return None,
        })
    }

    /// The spec with its tile left to the default: what the tuning database is keyed by.
    pub fn untiled(&self) -> KernelSpec {
        let mut s = *self;
        match &mut s {
            KernelSpec::Attention(a) => a.tile = None,
            KernelSpec::Gemm(g) => g.tile = None,
            KernelSpec::Lora(l) => l.tile = None,
            KernelSpec::Cast(c) => c.tile = None,
            KernelSpec::Unscale(u) => u.tile = None,
            KernelSpec::AdamW(a) => a.tile = None,
            KernelSpec::Map(m) => m.tile = None,
            KernelSpec::Window(w) => w.tile = None,
            KernelSpec::ScaleUpdate(_) => {}
        }
        s
    }

    /// Every tile that validates for `arch` (shared memory, accumulators, the family's rules).
    pub fn tile_space(&self, arch: Arch) -> Vec<TileChoice> {
        let widest = |bytes: u32| ElementwiseTile::space(bytes).map(TileChoice::Elementwise);
        let candidates: Vec<TileChoice> = match self {
            KernelSpec::Attention(s) => s.space(arch).map(TileChoice::Attention).collect(),
            KernelSpec::Gemm(s) => s.space(arch).map(TileChoice::Gemm).collect(),
            KernelSpec::Lora(s) => s.space(arch).map(TileChoice::Gemm).collect(),
            KernelSpec::Cast(s) => widest(s.from.size_bytes().max(s.to.size_bytes()) as u32).collect(),
            KernelSpec::Unscale(_) | KernelSpec::AdamW(_) => widest(4).collect(),
            KernelSpec::Map(_) => widest(4).collect(),
            KernelSpec::Window(s) => widest(s.dtype.size_bytes() as u32).collect(),
            KernelSpec::ScaleUpdate(_) => Vec::new(),
        };
        candidates
            .into_iter()
            .filter(|t| self.with_tile_choice(*t).is_some_and(|s| s.validate(arch).is_ok()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttentionSpec, DType, GemmSpec, OutType};

    #[test]
    fn round_trips_and_spaces() {
        let s = KernelSpec::from(AttentionSpec::new(DType::BF16, 128, true, 8, 8));
        let t = s.tile_choice(Arch::SM90).unwrap();
        assert_eq!(s.with_tile_choice(t).unwrap().tile_choice(Arch::SM90), Some(t));
        assert_eq!(s.with_tile_choice(t).unwrap().untiled(), s);
        assert!(s.with_tile_choice(TileChoice::Gemm(GemmSpec::default_tile(Arch::SM80))).is_none());
        let space = s.tile_space(Arch::SM90);
        assert!(space.contains(&t) && space.len() > 5);
        let g = KernelSpec::from(GemmSpec::new(DType::F16, OutType::F32));
        assert!(g.tile_space(Arch::SM80).len() > 20);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TileChoice>(&json).unwrap(), t);
    }
}
