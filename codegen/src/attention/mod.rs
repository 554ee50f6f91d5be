//! Attention forward: one family, two kernels. `spec.rs` is what a caller asks for, `tiles.rs`
//! the tile types, `sm80.rs` the mma.sync kernel (every architecture), `sm90a.rs` the TMA + wgmma
//! kernel (H100/H200), `features.rs` the variants (masks, score modifiers, layouts), `params.rs`
//! the host/device contract (the parameter structs and FEATURES bits). This file
//! decides which kernel a spec takes and gives the spec its public face: validate, name, render.

mod features;
mod params;
mod sm80;
mod sm90a;
mod spec;
mod tiles;

pub use features::AttentionFeatures;
pub use params::{AttentionFeature, AttentionParams, HopperAttentionParams};
pub use sm90a::{hopper_route, HOPPER_FEATURES};
pub use spec::{AttentionSpec, ATTENTION_HEAD_DIMS};
pub use tiles::{HopperTile, TileConfig, HOPPER_BLOCK_M, HOPPER_HEAD_DIMS, HOPPER_THREADS};

use crate::common::{Arch, KernelSource, SpecError};

impl AttentionSpec {
    pub fn validate(&self, arch: Arch) -> Result<(), SpecError> {
        self.validate_shape()?;
        Arch::new(arch.sm)?;
        self.validate_mma_sync_tile(arch)?;
        // An explicit sm_90a tile is checked on every target, against the sm_90a limits it is
        // used under, so a bad one fails here and not only on the machine that would render it.
        if let Some(hopper) = self.hopper_tile {
            hopper.validate(self.dtype, self.head_dim, Arch::SM90A)?;
        }
        Ok(())
    }

    /// Every valid tile configuration for `arch`: the tuning space, pruned by shared memory and
    /// register budget.
    pub fn space(&self, arch: Arch) -> impl Iterator<Item = TileConfig> + '_ {
        Self::mma_sync_tiles().filter(move |&tile| self.with_tile(tile).validate(arch).is_ok())
    }

    /// The entry point's name: every spec value, so logs and `ptxas -v` reports are readable.
    pub fn kernel_name(&self, arch: Arch) -> String {
        if let Ok(t) = hopper_route(self, arch) {
            let features: String = self.features.enabled().map(|f| format!("{f}_")).collect();
            return format!(
                "tessera_attention_fwd_{}_d{}_{}_h{}x{}_{features}sm90a_{t}",
                self.dtype,
                self.head_dim,
                if self.causal { "causal" } else { "full" },
                self.heads_q,
                self.heads_kv,
            );
        }
        let tile = self.tile_for(arch);
        let mut name = format!(
            "tessera_attention_fwd_{}_d{}_{}_h{}x{}_{}",
            self.dtype,
            self.head_dim,
            if self.causal { "causal" } else { "full" },
            self.heads_q,
            self.heads_kv,
            tile
        );
        for feature in self.features.enabled() {
            name.push('_');
            name.push_str(feature);
        }
        name
    }

    /// The `extern "C"` instantiation of the template for this spec.
    pub fn entry_point(&self, arch: Arch) -> String {
        self.mma_sync_entry_point(arch, &self.kernel_name(arch))
    }

    /// Validates, then renders the self-contained source. Deterministic: the same spec and arch
    /// always give the same bytes and so the same hash.
    pub fn render(&self, arch: Arch) -> Result<KernelSource, SpecError> {
        self.validate(arch)?;
        if let Ok(hopper) = hopper_route(self, arch) {
            return Ok(sm90a::render(self, hopper, self.kernel_name(arch)));
        }
        Ok(self.render_mma_sync(arch, self.kernel_name(arch)))
    }

    /// Tile rows per CTA: the grid is `(ceil(seq_q * rows_per_query / rows_per_cta), heads, batch)`.
    pub fn rows_per_cta(&self, arch: Arch) -> u32 {
        match hopper_route(self, arch) {
            Ok(_) => HOPPER_BLOCK_M,
            Err(_) => self.tile_for(arch).block_m,
        }
    }

    /// The sm_90a tile when this spec takes the TMA + wgmma kernel on `arch`, else why not (the
    /// mma.sync kernel runs instead).
    pub fn hopper_tile(&self, arch: Arch) -> Result<HopperTile, String> {
        hopper_route(self, arch)
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn spec() -> AttentionSpec {
        AttentionSpec::new(ElemType::BF16, 128, true, 16, 4)
    }

    /// One element type serves every family, so each spec field names the types it admits.
    #[test]
    fn non_mma_dtypes_are_rejected_by_name() {
        for dtype in [ElemType::F32, ElemType::E4M3, ElemType::E5M2] {
            let s = AttentionSpec::new(dtype, 128, true, 16, 4);
            match s.validate(Arch::SM80) {
                Err(SpecError::Unsupported { field: "dtype", allowed, .. }) => assert_eq!(allowed, "f16, bf16"),
                other => panic!("{dtype}: {other:?}"),
            }
        }
    }

    #[test]
    fn default_specs_validate_on_every_arch() {
        for arch in Arch::SUPPORTED {
            for d in ATTENTION_HEAD_DIMS {
                for dtype in ElemType::MMA_INPUTS {
                    let s = AttentionSpec::new(dtype, d, false, 8, 2);
                    s.validate(arch).unwrap_or_else(|e| panic!("{arch} d{d} {dtype}: {e}"));
                }
            }
        }
    }

    #[test]
    fn bad_head_dim_names_field_and_allowed_values() {
        let err = AttentionSpec { head_dim: 100, ..spec() }.validate(Arch::SM80).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("head_dim") && msg.contains("100"), "{msg}");
        assert!(msg.contains("32, 64, 96, 128, 192, 256"), "{msg}");
    }

    #[test]
    fn heads_must_divide() {
        let err = AttentionSpec { heads_q: 6, heads_kv: 4, ..spec() }.validate(Arch::SM80).unwrap_err();
        assert_eq!(err, SpecError::HeadsNotDivisible { heads_q: 6, heads_kv: 4 });
        let err = AttentionSpec { heads_kv: 0, ..spec() }.validate(Arch::SM80).unwrap_err();
        assert!(matches!(err, SpecError::HeadsNotDivisible { .. }));
    }

    #[test]
    fn tile_fields_are_checked() {
        let bad_bn = spec().with_tile(TileConfig::new(128, 48, 8, 2));
        assert!(bad_bn.validate(Arch::SM80).unwrap_err().to_string().contains("tile.block_n"));
        let bad_m = spec().with_tile(TileConfig::new(64, 64, 8, 2));
        assert!(matches!(bad_m.validate(Arch::SM80), Err(SpecError::BlockMismatch { .. })));
        let bad_w = spec().with_tile(TileConfig::new(32, 64, 2, 2));
        assert!(bad_w.validate(Arch::SM80).unwrap_err().to_string().contains("tile.warps"));
        let bad_s = spec().with_tile(TileConfig::new(128, 64, 8, 4));
        assert!(bad_s.validate(Arch::SM80).unwrap_err().to_string().contains("tile.stages"));
    }

    #[test]
    fn shared_memory_limit_depends_on_arch() {
        // 64x256 Q + 2 stages of 64x256 K and V = 160 KiB: fits sm_80 and sm_90, not sm_86 (99 KiB).
        let big = AttentionSpec { head_dim: 256, ..spec() }.with_tile(TileConfig::new(64, 64, 4, 2));
        assert!(big.validate(Arch::SM80).is_ok() && big.validate(Arch::SM90).is_ok());
        let err = big.validate(Arch::SM86).unwrap_err();
        assert!(matches!(err, SpecError::SharedMemory { .. }), "{err}");
        assert!(err.to_string().contains("sm_86"));
    }

    #[test]
    fn register_budget_is_checked() {
        // A 16x256 f32 S tile plus a 16x256 f32 O accumulator cannot live in 255 registers.
        let s = AttentionSpec { head_dim: 256, ..spec() }.with_tile(TileConfig::new(64, 256, 4, 1));
        let err = s.validate(Arch::SM90).unwrap_err();
        assert!(matches!(err, SpecError::Registers { estimated: 296, .. }), "{err}");
        // The same block_n is fine where the O accumulator is small.
        let ok = AttentionSpec { head_dim: 64, ..spec() }.with_tile(TileConfig::new(64, 256, 4, 1));
        assert!(ok.validate(Arch::SM90).is_ok());
    }

    #[test]
    fn render_is_deterministic_and_hash_tracks_spec() {
        let a = spec().render(Arch::SM80).unwrap();
        let b = spec().render(Arch::SM80).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash.len(), 64);
        let c = AttentionSpec { causal: false, ..spec() }.render(Arch::SM80).unwrap();
        assert_ne!(a.hash, c.hash);
        assert!(a.cuda_src.contains(&format!("{}(const tessera::AttentionParams params)", a.name)));
        assert!(a.cuda_src.contains("attention_fwd<tessera::bf16, 128, 128, 64, 8, 2, true, 4, true, 0>"));
        assert_eq!(a.geometry.threads_per_block, 256);
        assert_eq!(a.geometry.dynamic_shared_bytes, (128 * 128 + 2 * 2 * 64 * 128) * 2);
    }

    #[test]
    fn render_rejects_invalid_specs() {
        assert!(AttentionSpec { head_dim: 80, ..spec() }.render(Arch::SM80).is_err());
    }

    #[test]
    fn space_is_pruned_and_contains_default() {
        for d in ATTENTION_HEAD_DIMS {
            let s = AttentionSpec { head_dim: d, ..spec() };
            let space: Vec<_> = s.space(Arch::SM86).collect();
            assert!(space.contains(&AttentionSpec::default_tile(d, Arch::SM86)), "d{d}");
            for t in &space {
                assert!(s.shared_memory_bytes(*t) <= Arch::SM86.max_shared_memory_per_block());
            }
        }
        let big: Vec<_> = AttentionSpec { head_dim: 256, ..spec() }.space(Arch::SM90).collect();
        let small: Vec<_> = AttentionSpec { head_dim: 256, ..spec() }.space(Arch::SM86).collect();
        assert!(big.len() > small.len());
    }

    #[test]
    fn q_stays_in_registers_except_for_large_head_dims() {
        let t = AttentionSpec::default_tile(128, Arch::SM80);
        assert!(spec().q_in_registers(t));
        let s256 = AttentionSpec { head_dim: 256, ..spec() };
        assert!(!s256.q_in_registers(AttentionSpec::default_tile(256, Arch::SM80)));
    }

    #[test]
    fn features_are_named_rendered_and_checked() {
        let f = AttentionFeatures { paged: true, split_kv: true, pack_gqa: true, ..AttentionFeatures::default() };
        let s = spec().with_features(f);
        let name = s.kernel_name(Arch::SM90);
        assert!(name.ends_with("_m64n64w4s2_paged_pack_gqa_split_kv"), "{name}");
        let src = s.render(Arch::SM90).unwrap();
        assert!(src.cuda_src.contains("attention_fwd<tessera::bf16, 128, 64, 64, 4, 2, true, 4, false, 448>"), "{}", src.name);
        assert!(src.cuda_src.contains("features=paged+pack_gqa+split_kv"));
        assert_ne!(src.hash, spec().render(Arch::SM90).unwrap().hash);
        // Decode kernels re-read Q (no Q fragments in registers) and take smaller tiles.
        assert!(!s.q_in_registers(s.tile_for(Arch::SM90)));
        assert_eq!(AttentionSpec { head_dim: 256, ..s }.tile_for(Arch::SM90), TileConfig::new(64, 16, 4, 2));
        // The tree mask refines a causal mask.
        let tree = AttentionFeatures { tree: true, ..AttentionFeatures::default() };
        let err = AttentionSpec { causal: false, ..spec() }.with_features(tree).validate(Arch::SM80).unwrap_err();
        assert!(err.to_string().contains("features.tree") && err.to_string().contains("causal"), "{err}");
        assert!(spec().with_features(tree).validate(Arch::SM80).is_ok());
    }

    #[test]
    fn specs_without_features_read_from_old_json() {
        let json = r#"{"dtype":"bf16","head_dim":64,"causal":true,"heads_q":8,"heads_kv":2,"tile":null}"#;
        let s: AttentionSpec = serde_json::from_str(json).unwrap();
        assert!(s.features.is_plain());
        assert_eq!(s, AttentionSpec::new(ElemType::BF16, 64, true, 8, 2));
    }
}
