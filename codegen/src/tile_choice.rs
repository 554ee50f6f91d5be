//! One family-independent view of "the tile" of a spec, for code that searches over tiles (the
//! tuner) or stores them (the tuning database).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::attention::{AttentionSpec, HopperTile, TileConfig};
use crate::common::{Arch, ElementwiseTile};
use crate::gemm::{GemmSpec, GemmTile, HopperGemmTile};
use crate::kernel_spec::KernelSpec;
use crate::lora::{HopperLoraTile, LoraSpec};

/// `Attention` and `Gemm` are the mma.sync kernels' tiles (choosing one forces that kernel, also on
/// sm_90a); `HopperAttention`, `HopperGemm` and `HopperLora` are the sm_90a (TMA + wgmma) kernels'
/// tiles (LoRA's is fixed per rank: choosing it leaves the spec's tile to the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TileChoice {
    Attention(TileConfig),
    Gemm(GemmTile),
    Elementwise(ElementwiseTile),
    HopperAttention(HopperTile),
    HopperGemm(HopperGemmTile),
    HopperLora(HopperLoraTile),
}

/// The label of the tile in kernel names: the sm_90a tiles carry an `sm90a_` prefix, so a table of
/// candidates tells the two kernels apart.
impl fmt::Display for TileChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TileChoice::Attention(t) => t.fmt(f),
            TileChoice::Gemm(t) => t.fmt(f),
            TileChoice::Elementwise(t) => t.fmt(f),
            TileChoice::HopperAttention(t) => write!(f, "sm90a_{t}"),
            TileChoice::HopperGemm(t) => write!(f, "sm90a_{t}"),
            TileChoice::HopperLora(t) => write!(f, "sm90a_{t}"),
        }
    }
}

impl KernelSpec {
    /// The tile this spec uses on `arch` (its own or the default): the sm_90a kernel's where the
    /// spec takes that kernel; `None` for kernels without one.
    pub fn tile_choice(&self, arch: Arch) -> Option<TileChoice> {
        Some(match self {
            KernelSpec::Attention(s) => match s.hopper_tile(arch) {
                Ok(t) => TileChoice::HopperAttention(t),
                Err(_) => TileChoice::Attention(s.tile_for(arch)),
            },
            KernelSpec::Gemm(s) => match s.hopper_tile(arch) {
                Ok(t) => TileChoice::HopperGemm(t),
                Err(_) => TileChoice::Gemm(s.tile_for(arch)),
            },
            KernelSpec::Lora(s) => match s.hopper_tile(arch) {
                Ok(t) => TileChoice::HopperLora(t),
                Err(_) => TileChoice::Gemm(s.tile_for(arch)),
            },
            KernelSpec::Cast(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::Unscale(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::AdamW(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::Map(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::Window(s) => TileChoice::Elementwise(s.tile()),
            KernelSpec::ScaleUpdate(_) => return None,
        })
    }

    /// This spec with `tile`, or `None` when the tile belongs to another kind of kernel. The spec
    /// holds one tile: an mma.sync tile clears the sm_90a one and the other way round.
    pub fn with_tile_choice(&self, tile: TileChoice) -> Option<KernelSpec> {
        Some(match (*self, tile) {
            (KernelSpec::Attention(s), TileChoice::Attention(t)) => {
                KernelSpec::Attention(AttentionSpec { hopper_tile: None, ..s.with_tile(t) })
            }
            (KernelSpec::Attention(s), TileChoice::HopperAttention(t)) => {
                KernelSpec::Attention(AttentionSpec { tile: None, ..s.with_hopper_tile(t) })
            }
            (KernelSpec::Gemm(s), TileChoice::Gemm(t)) => KernelSpec::Gemm(GemmSpec { hopper_tile: None, ..s.with_tile(t) }),
            (KernelSpec::Gemm(s), TileChoice::HopperGemm(t)) => KernelSpec::Gemm(GemmSpec { tile: None, ..s.with_hopper_tile(t) }),
            (KernelSpec::Lora(s), TileChoice::Gemm(t)) => KernelSpec::Lora(s.with_tile(t)),
            (KernelSpec::Lora(s), TileChoice::HopperLora(_)) => KernelSpec::Lora(LoraSpec { tile: None, ..s }),
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
            KernelSpec::Attention(a) => {
                a.tile = None;
                a.hopper_tile = None;
            }
            KernelSpec::Gemm(g) => {
                g.tile = None;
                g.hopper_tile = None;
            }
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

    /// Every tile that validates for `arch` (shared memory, accumulators, the family's rules). Where
    /// the spec takes the sm_90a kernel, that kernel's tiles come first, then the mma.sync ones
    /// (which force the mma.sync kernel: the tuner weighs both kernels).
    pub fn tile_space(&self, arch: Arch) -> Vec<TileChoice> {
        let widest = |bytes: u32| ElementwiseTile::space(bytes).map(TileChoice::Elementwise);
        let candidates: Vec<TileChoice> = match self {
            KernelSpec::Attention(s) => {
                let untiled = AttentionSpec { tile: None, hopper_tile: None, ..*s };
                let hopper = untiled.hopper_tile(arch).ok().map(|_| HopperTile::space(s.dtype, s.head_dim, arch));
                let hopper = hopper.into_iter().flatten().map(TileChoice::HopperAttention);
                hopper.chain(s.space(arch).map(TileChoice::Attention)).collect()
            }
            KernelSpec::Gemm(s) => {
                let untiled = GemmSpec { tile: None, hopper_tile: None, ..*s };
                let hopper = untiled.hopper_tile(arch).ok().map(|_| HopperGemmTile::space(s.dtype, arch));
                let hopper = hopper.into_iter().flatten().map(TileChoice::HopperGemm);
                hopper.chain(s.space(arch).map(TileChoice::Gemm)).collect()
            }
            KernelSpec::Lora(s) => {
                let hopper = LoraSpec { tile: None, ..*s }.hopper_tile(arch).ok().map(TileChoice::HopperLora);
                hopper.into_iter().chain(s.space(arch).map(TileChoice::Gemm)).collect()
            }
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
    use crate::attention::{AttentionFeatures, AttentionSpec};
    use crate::common::ElemType;
    use crate::gemm::{GemmSpec};

    #[test]
    fn round_trips_and_spaces() {
        let s = KernelSpec::from(AttentionSpec::new(ElemType::BF16, 128, true, 8, 8));
        let t = s.tile_choice(Arch::SM90).unwrap();
        assert_eq!(s.with_tile_choice(t).unwrap().tile_choice(Arch::SM90), Some(t));
        assert_eq!(s.with_tile_choice(t).unwrap().untiled(), s);
        assert!(s.with_tile_choice(TileChoice::Gemm(GemmSpec::default_tile(Arch::SM80))).is_none());
        let space = s.tile_space(Arch::SM90);
        assert!(space.contains(&t) && space.len() > 5);
        let g = KernelSpec::from(GemmSpec::new(ElemType::F16, ElemType::F32));
        assert!(g.tile_space(Arch::SM80).len() > 20);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TileChoice>(&json).unwrap(), t);
    }

    #[test]
    fn sm90a_specs_search_both_kernels() {
        let arch = Arch::SM90A;
        let a = KernelSpec::from(AttentionSpec::new(ElemType::BF16, 128, true, 8, 2));
        let default = TileChoice::HopperAttention(HopperTile { block_n: 128, stages: 2 });
        assert_eq!(a.tile_choice(arch), Some(default));
        assert_eq!(a.tile_label(arch), "sm90a_m128n128s2");
        let space = a.tile_space(arch);
        assert!(space.contains(&default) && space.contains(&TileChoice::HopperAttention(HopperTile { block_n: 64, stages: 3 })));
        assert!(space.iter().any(|t| matches!(t, TileChoice::Attention(_))), "the mma.sync tiles stay");
        for t in &space {
            let tuned = a.with_tile_choice(*t).unwrap();
            assert_eq!(tuned.tile_choice(arch), Some(*t), "{t}");
            assert_eq!(tuned.untiled(), a);
            assert!(tuned.kernel_name(arch).ends_with(&t.to_string()), "{}", tuned.kernel_name(arch));
        }
        // An mma.sync choice replaces an sm_90a one (and forces the mma.sync kernel), and back.
        let mma = TileChoice::Attention(AttentionSpec::default_tile(128, arch));
        let hopper = TileChoice::HopperAttention(HopperTile { block_n: 64, stages: 2 });
        let swapped = a.with_tile_choice(hopper).unwrap().with_tile_choice(mma).unwrap();
        assert_eq!(swapped.tile_choice(arch), Some(mma));
        assert_eq!(swapped.tile_label(arch), "m128n64w8s2");
        assert_eq!(swapped.with_tile_choice(hopper).unwrap().tile_choice(arch), Some(hopper));
        // sm_90 (no wgmma) and variants have no sm_90a tiles to search.
        assert!(!a.tile_space(Arch::SM90).iter().any(|t| matches!(t, TileChoice::HopperAttention(_))));
        let paged = AttentionSpec::new(ElemType::BF16, 128, true, 8, 2).with_features(AttentionFeatures { paged: true, ..Default::default() });
        assert!(!KernelSpec::from(paged).tile_space(arch).iter().any(|t| matches!(t, TileChoice::HopperAttention(_))));

        let g = KernelSpec::from(GemmSpec::new(ElemType::F16, ElemType::F32));
        assert_eq!(g.tile_choice(arch), Some(TileChoice::HopperGemm(HopperGemmTile::DEFAULT)));
        assert_eq!(g.tile_label(arch), "sm90a_m128n256k64s4");
        assert_eq!(g.tile_label(Arch::SM90), "m128n128k32w8s3");
        let space = g.tile_space(arch);
        let hopper: Vec<_> = space.iter().filter(|t| matches!(t, TileChoice::HopperGemm(_))).collect();
        assert_eq!(hopper.len(), 9);
        assert!(space.len() > 20 + hopper.len());
        let narrow = TileChoice::HopperGemm(HopperGemmTile { block_n: 128, stages: 4 });
        assert_eq!(g.with_tile_choice(narrow).unwrap().tile_label(arch), "sm90a_m128n128k64s4");
        assert!(g.with_tile_choice(default).is_none() && a.with_tile_choice(narrow).is_none());
        let unaligned = KernelSpec::from(GemmSpec { aligned: false, ..GemmSpec::new(ElemType::F16, ElemType::F32) });
        assert!(!unaligned.tile_space(arch).iter().any(|t| matches!(t, TileChoice::HopperGemm(_))));

        // LoRA: the sm_90a tile (fixed per rank) first, then the mma.sync tiles; choosing it
        // leaves the tile to the default, choosing an mma.sync tile forces that kernel.
        let l = KernelSpec::from(LoraSpec::new(ElemType::BF16, ElemType::BF16, 64));
        let hopper = TileChoice::HopperLora(HopperLoraTile::for_rank(64));
        assert_eq!(l.tile_choice(arch), Some(hopper));
        assert_eq!(l.tile_label(arch), "sm90a_m128n256k64s3");
        let space = l.tile_space(arch);
        assert_eq!(space[0], hopper);
        assert!(space[1..].iter().all(|t| matches!(t, TileChoice::Gemm(_))) && space.len() > 1);
        let mma = l.with_tile_choice(space[1]).unwrap();
        assert_eq!(mma.tile_choice(arch), Some(space[1]));
        assert_eq!(mma.with_tile_choice(hopper).unwrap(), l);
        assert!(!l.tile_space(Arch::SM90).iter().any(|t| matches!(t, TileChoice::HopperLora(_))));
    }

    #[test]
    fn sm90a_tiles_serialise_and_old_json_still_parses() {
        for t in [
            TileChoice::HopperAttention(HopperTile { block_n: 64, stages: 3 }),
            TileChoice::HopperGemm(HopperGemmTile { block_n: 192, stages: 5 }),
            TileChoice::HopperLora(HopperLoraTile::for_rank(128)),
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<TileChoice>(&json).unwrap(), t, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&TileChoice::HopperGemm(HopperGemmTile::DEFAULT)).unwrap(),
            r#"{"kind":"hopper_gemm","block_n":256,"stages":4}"#
        );
        // Tiles and specs as written before the sm_90a tiles existed.
        let old = r#"{"kind":"attention","block_m":128,"block_n":64,"warps":8,"stages":2}"#;
        assert_eq!(serde_json::from_str::<TileChoice>(old).unwrap(), TileChoice::Attention(TileConfig::new(128, 64, 8, 2)));
        let spec = KernelSpec::from(GemmSpec::new(ElemType::BF16, ElemType::BF16));
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("hopper_tile"), "{json}");
        assert_eq!(serde_json::from_str::<KernelSpec>(&json).unwrap(), spec);
        let tuned = spec.with_tile_choice(TileChoice::HopperGemm(HopperGemmTile { block_n: 128, stages: 3 })).unwrap();
        assert_eq!(serde_json::from_str::<KernelSpec>(&serde_json::to_string(&tuned).unwrap()).unwrap(), tuned);
    }
}
