//! The sm_90a attention path: which specs take it, its fixed tiles, and the rendering of
//! `templates/attention_hopper.cuh` with the `wgmma` instructions it needs.
//!
//! A spec takes this path when the target has `wgmma` (sm_90a), its variant features are among
//! the score-side ones the template implements ([`HOPPER_FEATURES`]: sliding window, ALiBi,
//! softcap), its head dimension has a Hopper tile (64, 128, 256) and no mma.sync tile was forced. Everything else renders the mma.sync template; [`hopper_route`] says why, so the launch
//! log and `tessera list` can show it. The sm_90a tile is [`HopperTile::for_head_dim`] unless the
//! spec carries an explicit one (its `hopper_tile` field, set by hand or by the tuner).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::gemm::list;
use crate::wgmma_asm::{wgmma_ops_struct, WgmmaA, WgmmaMethod};
use crate::{Arch, AttentionSpec, DType, SpecError};

/// Threads of one CTA: a producer warpgroup and two consumer warpgroups.
pub const HOPPER_THREADS: u32 = 384;
/// Query rows per CTA: 64 per consumer warpgroup.
pub const HOPPER_BLOCK_M: u32 = 128;
/// Head dimensions the sm_90a template has tiles for.
pub const HOPPER_HEAD_DIMS: [u32; 3] = [64, 128, 256];
/// Variant features the sm_90a template implements: they change scores and which key tiles are
/// loaded, not the addressing or the grid. Prefix-KV, tree masks, varlen, paged KV, GQA packing and
/// split-KV run on the mma.sync kernel.
pub const HOPPER_FEATURES: [&str; 3] = ["local", "alibi", "softcap"];

/// Key-tile widths accepted: multiples of 32 (the template takes any multiple of 16, one k-step
/// of O += P V) up to 192; 224 and 256 leave no room beside S and P at any head dimension (below).
const HOPPER_BLOCK_NS: [u32; 6] = [32, 64, 96, 128, 160, 192];
/// Ring depths the template accepts (its `static_assert`).
const HOPPER_STAGES: [u32; 3] = [2, 3, 4];
/// Registers per consumer thread after `setmaxnreg.inc` in the template.
const CONSUMER_REGISTERS: u32 = 232;
/// Registers a consumer thread needs besides S, P and O: descriptors, addresses, loop and ring
/// counters, softmax state, masks. Calibrated with `ptxas -v` (causal GQA, the most registers):
/// O + S + P of 200 registers (d64 n224) still assembled without spills, 208 (d128 n192) and 224
/// (d64 n256) spilled; 40 admits at most 192 (d64 n192: 176, d128 n160: 184, d256 n64: 176), and
/// `runtime/tests/compile_hopper_specs.rs` holds every tile the estimate admits to 0 spill bytes.
const REGISTER_OVERHEAD: u32 = 40;

/// The sm_90a tile: key-tile width and ring depth. The defaults ([`HopperTile::for_head_dim`]) fit
/// 227 KB of shared memory and keep S + O + P within the consumers' 232 registers; the tuner
/// searches the others ([`HopperTile::space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HopperTile {
    pub block_n: u32,
    pub stages: u32,
}

impl HopperTile {
    pub fn for_head_dim(head_dim: u32) -> Option<HopperTile> {
        match head_dim {
            64 | 128 => Some(HopperTile { block_n: 128, stages: 2 }),
            256 => Some(HopperTile { block_n: 64, stages: 2 }),
            _ => None,
        }
    }

    /// Dynamic shared memory: Q, the K/V ring, 2 + 2 * stages mbarriers, and 1 KB of alignment slack
    /// (the 128-byte swizzle wants 1024-byte aligned tiles).
    pub fn shared_memory_bytes(&self, dtype: DType, head_dim: u32) -> u32 {
        let elem = dtype.size_bytes() as u32;
        let q = HOPPER_BLOCK_M * head_dim * elem;
        let ring = self.stages * 2 * self.block_n * head_dim * elem;
        q + ring + 8 * (2 + 2 * self.stages) + 1024
    }

    /// Registers one consumer thread needs: O (`64 x head_dim` f32 over a warpgroup: head_dim / 2),
    /// S (block_n / 2), P packed to 16 bits (block_n / 4), and the overhead.
    pub fn register_estimate(&self, head_dim: u32) -> u32 {
        head_dim / 2 + self.block_n / 2 + self.block_n / 4 + REGISTER_OVERHEAD
    }

    /// Checks the tile against the template (`hopper_tile.block_n`, `hopper_tile.stages`), the
    /// consumers' registers and `arch`'s shared memory, for `dtype` and `head_dim`.
    pub fn validate(&self, dtype: DType, head_dim: u32, arch: Arch) -> Result<(), SpecError> {
        if !HOPPER_HEAD_DIMS.contains(&head_dim) {
            return Err(SpecError::unsupported("head_dim", head_dim, format!("{} with an sm_90a tile", list(&HOPPER_HEAD_DIMS))));
        }
        if !HOPPER_BLOCK_NS.contains(&self.block_n) {
            return Err(SpecError::unsupported("hopper_tile.block_n", self.block_n, list(&HOPPER_BLOCK_NS)));
        }
        if !HOPPER_STAGES.contains(&self.stages) {
            return Err(SpecError::unsupported("hopper_tile.stages", self.stages, list(&HOPPER_STAGES)));
        }
        let estimated = self.register_estimate(head_dim);
        if estimated > CONSUMER_REGISTERS {
            return Err(SpecError::Registers { tile: format!("sm90a_{self}"), head_dim, estimated, limit: CONSUMER_REGISTERS });
        }
        let needed = self.shared_memory_bytes(dtype, head_dim);
        let limit = arch.max_shared_memory_per_block();
        if needed > limit {
            return Err(SpecError::SharedMemory { tile: format!("sm90a_{self}"), needed, limit, arch: arch.to_string() });
        }
        Ok(())
    }

    /// Every tile that validates for `dtype` and `head_dim` on `arch`: the tuner's sm_90a space.
    pub fn space(dtype: DType, head_dim: u32, arch: Arch) -> impl Iterator<Item = HopperTile> {
        HOPPER_BLOCK_NS.into_iter().flat_map(move |block_n| {
            HOPPER_STAGES
                .into_iter()
                .map(move |stages| HopperTile { block_n, stages })
                .filter(move |t| t.validate(dtype, head_dim, arch).is_ok())
        })
    }
}

/// `m128n{block_n}s{stages}`: the part of the kernel name (after `sm90a_`) that tells tiles apart.
impl fmt::Display for HopperTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{HOPPER_BLOCK_M}n{}s{}", self.block_n, self.stages)
    }
}

/// Whether `spec` renders the sm_90a template on `arch`; `Err` carries the reason it does not.
/// The tile is the spec's explicit `hopper_tile` when it has one (checked by
/// [`AttentionSpec::validate`]), else the head dimension's default.
pub fn hopper_route(spec: &AttentionSpec, arch: Arch) -> Result<HopperTile, String> {
    if !arch.has_wgmma() {
        return Err(format!("{arch} has no wgmma (sm_90a only)"));
    }
    let unsupported: Vec<&str> = spec.features.enabled().filter(|f| !HOPPER_FEATURES.contains(f)).collect();
    if !unsupported.is_empty() {
        return Err(format!(
            "variant `{}` runs on the mma.sync kernel (sm_90a takes {})",
            unsupported.join("+"),
            HOPPER_FEATURES.join(", ")
        ));
    }
    if spec.tile.is_some() {
        return Err("an mma.sync tile was given (or tuned) for this spec".to_string());
    }
    let default = HopperTile::for_head_dim(spec.head_dim)
        .ok_or_else(|| format!("head_dim {} has no sm_90a tile (64, 128, 256 do)", spec.head_dim))?;
    Ok(spec.hopper_tile.unwrap_or(default))
}

/// The `Ops` struct the template calls: `qk` (S = Q K^T step, both operands from shared memory,
/// K-major) and `pv` (O += P V step, P from registers, V MN-major).
fn wgmma_ops(dtype: DType, head_dim: u32, block_n: u32) -> String {
    let qk_comment = format!("S (64 x {block_n}) {{+}}= Q K^T for one 16-column k-step; `accumulate` false starts S at 0.");
    let pv_comment = format!("O (64 x {head_dim}) += P V for one 16-key k-step: P from registers, V transposed (MN-major).");
    wgmma_ops_struct(&[
        WgmmaMethod {
            comment: &qk_comment,
            name: "qk",
            n: block_n,
            dtype,
            a: WgmmaA::Shared { desc: "desc_q", trans: false },
            b_desc: "desc_k",
            trans_b: false,
            accumulate_param: true,
        },
        WgmmaMethod {
            comment: &pv_comment,
            name: "pv",
            n: head_dim,
            dtype,
            a: WgmmaA::Registers,
            b_desc: "desc_v",
            trans_b: true,
            accumulate_param: false,
        },
    ])
}

/// The `extern "C"` entry point of the sm_90a kernel for `spec`.
pub(crate) fn hopper_entry_point(spec: &AttentionSpec, tile: HopperTile, name: &str) -> String {
    let call = format!(
        "tessera::attention_hopper<{}, {}, {}, {}, {}, {}, {}, TesseraWgmmaOps>",
        spec.dtype.cuda_type(),
        spec.head_dim,
        tile.block_n,
        tile.stages,
        spec.causal,
        spec.group(),
        spec.features.bits(),
    );
    let ops = wgmma_ops(spec.dtype, spec.head_dim, tile.block_n);
    crate::wgmma_asm::hopper_entry_point(&ops, HOPPER_THREADS, name, "HopperAttentionParams", &call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_names_its_reason() {
        let spec = AttentionSpec::new(DType::BF16, 128, true, 16, 4);
        assert_eq!(hopper_route(&spec, Arch::SM90A), Ok(HopperTile { block_n: 128, stages: 2 }));
        assert!(hopper_route(&spec, Arch::SM90).unwrap_err().contains("wgmma"));
        assert!(hopper_route(&AttentionSpec { head_dim: 96, ..spec }, Arch::SM90A).unwrap_err().contains("head_dim 96"));
        let paged = spec.with_features(crate::AttentionFeatures { paged: true, local: true, ..Default::default() });
        let why = hopper_route(&paged, Arch::SM90A).unwrap_err();
        assert!(why.contains("variant `paged`") && why.contains("local, alibi, softcap"), "{why}");
        // The score-side variants take the sm_90a kernel; the name and instantiation carry them.
        let scored = spec.with_features(crate::AttentionFeatures { local: true, alibi: true, softcap: true, ..Default::default() });
        assert_eq!(hopper_route(&scored, Arch::SM90A), Ok(HopperTile { block_n: 128, stages: 2 }));
        assert_eq!(scored.kernel_name(Arch::SM90A), "tessera_attention_fwd_bf16_d128_causal_h16x4_local_alibi_softcap_sm90a_m128n128s2");
        let src = scored.render(Arch::SM90A).unwrap();
        let bits = scored.features.bits();
        assert!(src.cuda_src.contains(&format!("attention_hopper<tessera::bf16, 128, 128, 2, true, 4, {bits}, TesseraWgmmaOps>")));
        let tiled = spec.with_tile(AttentionSpec::default_tile(128, Arch::SM90A));
        assert!(hopper_route(&tiled, Arch::SM90A).unwrap_err().contains("mma.sync tile"));
    }

    #[test]
    fn an_explicit_tile_is_routed_and_checked() {
        let spec = AttentionSpec::new(DType::BF16, 128, true, 16, 4);
        let t = HopperTile { block_n: 64, stages: 3 };
        let tuned = spec.with_hopper_tile(t);
        assert_eq!(hopper_route(&tuned, Arch::SM90A), Ok(t));
        assert!(tuned.kernel_name(Arch::SM90A).ends_with("_sm90a_m128n64s3"), "{}", tuned.kernel_name(Arch::SM90A));
        assert_ne!(tuned.render(Arch::SM90A).unwrap().hash, spec.render(Arch::SM90A).unwrap().hash);
        let src = tuned.render(Arch::SM90A).unwrap();
        assert!(src.cuda_src.contains("attention_hopper<tessera::bf16, 128, 64, 3, true, 4, 0, TesseraWgmmaOps>"));
        assert_eq!(src.geometry.dynamic_shared_bytes, t.shared_memory_bytes(DType::BF16, 128));
        // An mma.sync tile still forces the mma.sync kernel.
        let both = tuned.with_tile(AttentionSpec::default_tile(128, Arch::SM90A));
        assert!(hopper_route(&both, Arch::SM90A).unwrap_err().contains("mma.sync tile"));

        let err = |t: HopperTile, d: u32| spec_with(d, t).validate(Arch::SM90A).unwrap_err();
        let bad_n = err(HopperTile { block_n: 48, stages: 2 }, 128).to_string();
        assert!(bad_n.contains("hopper_tile.block_n") && bad_n.contains("`48`") && bad_n.contains("32, 64, 96, 128, 160, 192"), "{bad_n}");
        let bad_s = err(HopperTile { block_n: 64, stages: 5 }, 128).to_string();
        assert!(bad_s.contains("hopper_tile.stages") && bad_s.contains("2, 3, 4"), "{bad_s}");
        // S + P + O of 64 + 32 + 128 registers do not fit beside the rest in 232.
        assert!(matches!(err(HopperTile { block_n: 128, stages: 2 }, 256), SpecError::Registers { estimated: 264, limit: 232, .. }));
        // Three stages of 128-key K and V tiles at d128 fit 227 KB; four do not.
        assert!(spec_with(128, HopperTile { block_n: 128, stages: 3 }).validate(Arch::SM90A).is_ok());
        assert!(matches!(err(HopperTile { block_n: 128, stages: 4 }, 128), SpecError::SharedMemory { .. }));
        // A head dimension without the sm_90a kernel cannot take its tile.
        assert!(err(HopperTile { block_n: 64, stages: 2 }, 96).to_string().contains("head_dim"));
        // Checked on every target against the sm_90a limits it is used under: a tile that fits an
        // H100 does not make the spec invalid on sm_86 (which runs the mma.sync kernel), one that
        // does not fit fails there too.
        let big = spec_with(64, HopperTile { block_n: 192, stages: 4 });
        assert!(big.validate(Arch::SM90A).is_ok() && big.validate(Arch::SM86).is_ok());
        assert!(spec_with(128, HopperTile { block_n: 128, stages: 4 }).validate(Arch::SM86).is_err());
    }

    fn spec_with(head_dim: u32, t: HopperTile) -> AttentionSpec {
        AttentionSpec::new(DType::F16, head_dim, false, 8, 8).with_hopper_tile(t)
    }

    #[test]
    fn space_holds_the_default_and_only_tiles_that_fit() {
        for d in HOPPER_HEAD_DIMS {
            for dtype in DType::ALL {
                let space: Vec<HopperTile> = HopperTile::space(dtype, d, Arch::SM90A).collect();
                assert!(space.contains(&HopperTile::for_head_dim(d).unwrap()), "d{d}");
                for t in &space {
                    assert!(t.shared_memory_bytes(dtype, d) <= Arch::SM90A.max_shared_memory_per_block());
                    assert!(t.register_estimate(d) <= CONSUMER_REGISTERS);
                }
            }
        }
        let d128: Vec<HopperTile> = HopperTile::space(DType::BF16, 128, Arch::SM90A).collect();
        for (block_n, stages) in [(64, 2), (64, 3), (64, 4), (128, 3), (160, 2)] {
            assert!(d128.contains(&HopperTile { block_n, stages }), "n{block_n} s{stages}");
        }
        assert!(!d128.iter().any(|t| t.block_n > 160 || (t.block_n == 128 && t.stages > 3)));
        let d256: Vec<HopperTile> = HopperTile::space(DType::BF16, 256, Arch::SM90A).collect();
        assert_eq!(d256.len(), 4);
        assert!(d256.iter().all(|t| t.block_n <= 64));
    }

    #[test]
    fn tiles_fit_shared_memory() {
        for d in HOPPER_HEAD_DIMS {
            for dtype in DType::ALL {
                let t = HopperTile::for_head_dim(d).unwrap();
                assert!(t.shared_memory_bytes(dtype, d) <= Arch::SM90A.max_shared_memory_per_block(), "d{d}");
            }
        }
    }

    #[test]
    fn wgmma_operands_are_numbered_consistently() {
        let ops = wgmma_ops(DType::BF16, 64, 128);
        // S: 64 accumulators %0..%63, then the two descriptors and the accumulate flag.
        assert!(ops.contains("m64n128k16.f32.bf16.bf16 {%0, %1,"), "{ops}");
        assert!(ops.contains("%63}, %64, %65, p, 1, 1, 0, 0;"), "{ops}");
        assert!(ops.contains("setp.ne.b32 p, %66, 0;"));
        // O: 32 accumulators, 4 A registers, the V descriptor, the flag; B transposed.
        assert!(ops.contains("m64n64k16.f32.bf16.bf16 {%0,"));
        assert!(ops.contains("%31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;"), "{ops}");
        assert!(ops.contains("setp.ne.b32 p, %37, 0;"));
    }
}
