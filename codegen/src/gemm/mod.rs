//! The GEMM family: `spec.rs` is what a caller asks for (types, layouts, the epilogue), `tiles.rs`
//! the tile types, `sm80.rs` the mma.sync kernel (every architecture), `sm90a.rs` the TMA + wgmma
//! kernel (H100/H200). This file decides which kernel a spec takes and gives the spec its public
//! face: validate, name, render. The LoRA family builds on it.

mod params;
mod sm80;
mod sm90a;
mod spec;
mod tiles;

pub(crate) use params::{contract, sm90a_contract};
pub use params::{GemmParams, HopperGemmParams};
pub use sm90a::gemm_hopper_route;
pub(crate) use sm90a::{xw_comment, xw_method};
pub use spec::{Activation, Epilogue, GemmSpec, Layout};
pub(crate) use tiles::{mma_sync_tiles, validate_tile};
pub use tiles::{GemmTile, HopperGemmTile, HOPPER_GEMM_BLOCK_K, HOPPER_GEMM_BLOCK_M, HOPPER_GEMM_THREADS, SPLIT_KS};

use crate::common::{Arch, ElemType, KernelSource, SpecError};

impl GemmSpec {
    pub fn validate(&self, arch: Arch) -> Result<(), SpecError> {
        self.dtype.check_in("dtype", &ElemType::MMA_INPUTS)?;
        self.out.check_in("out", &ElemType::MMA_OUTPUTS)?;
        Arch::new(arch.sm)?;
        if let Some(user) = &self.epilogue.user {
            user.validate_as_epilogue()?;
        }
        self.validate_mma_sync_tile(arch)?;
        // An explicit sm_90a tile is checked on every target, against the sm_90a limits it is
        // used under, so a bad one fails here and not only on the machine that would render it.
        if let Some(hopper) = self.hopper_tile {
            hopper.validate(self.dtype, Arch::SM90A)?;
        }
        Ok(())
    }

    /// Every valid tile configuration for `arch`.
    pub fn space(&self, arch: Arch) -> impl Iterator<Item = GemmTile> + '_ {
        mma_sync_tiles().filter(move |t| self.with_tile(*t).validate(arch).is_ok())
    }

    pub fn kernel_name(&self, arch: Arch) -> String {
        let tile = match gemm_hopper_route(self, arch) {
            Ok(t) => format!("sm90a_{t}"),
            Err(_) => self.tile_for(arch).to_string(),
        };
        let e = self.epilogue;
        format!(
            "tessera_gemm_{}_{}_{}{}_{}{}{}{}{}_{}",
            self.dtype,
            self.out,
            self.layout_x.letter(),
            self.layout_w.letter(),
            if e.bias { "bias_" } else { "" },
            e.activation,
            e.user.map_or(String::new(), |u| format!("_{}", u.name)),
            if e.residual { "_res" } else { "" },
            if self.aligned { "" } else { "_unaligned" },
            tile
        )
    }

    /// The sm_90a tile when this spec takes the TMA + wgmma kernel on `arch`, else why not (the
    /// mma.sync kernel runs instead).
    pub fn hopper_tile(&self, arch: Arch) -> Result<HopperGemmTile, String> {
        gemm_hopper_route(self, arch)
    }

    /// Threads per CTA and the output tile (rows, columns) one CTA covers on `arch`.
    pub fn cta_shape(&self, arch: Arch) -> (u32, u32, u32) {
        match gemm_hopper_route(self, arch) {
            Ok(t) => (HOPPER_GEMM_THREADS, HOPPER_GEMM_BLOCK_M, t.block_n),
            Err(_) => {
                let t = self.tile_for(arch);
                (t.threads(), t.block_m, t.block_n)
            }
        }
    }

    /// Dynamic shared memory of the kernel this spec renders on `arch`.
    pub fn shared_memory_bytes_for(&self, arch: Arch) -> u32 {
        match gemm_hopper_route(self, arch) {
            Ok(t) => t.shared_memory_bytes(self.dtype),
            Err(_) => self.shared_memory_bytes(self.tile_for(arch)),
        }
    }

    /// The `extern "C"` instantiation of the template for this spec.
    pub fn entry_point(&self, arch: Arch) -> String {
        self.mma_sync_entry_point(arch, &self.kernel_name(arch))
    }

    /// Validates, then renders the self-contained source. Deterministic.
    pub fn render(&self, arch: Arch) -> Result<KernelSource, SpecError> {
        self.validate(arch)?;
        if let Ok(hopper) = gemm_hopper_route(self, arch) {
            return Ok(sm90a::render(self, hopper, self.kernel_name(arch)));
        }
        Ok(self.render_mma_sync(arch, self.kernel_name(arch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GemmSpec {
        GemmSpec {
            layout_w: Layout::ColMajor,
            epilogue: Epilogue { user: None, bias: true, activation: Activation::GeluTanh, residual: true },
            ..GemmSpec::new(ElemType::BF16, ElemType::F32)
        }
    }

    #[test]
    fn non_mma_types_are_rejected_by_field() {
        let bad_in = GemmSpec::new(ElemType::F32, ElemType::F32);
        assert!(matches!(bad_in.validate(Arch::SM80), Err(SpecError::Unsupported { field: "dtype", .. })));
        for out in [ElemType::E4M3, ElemType::E5M2] {
            match GemmSpec::new(ElemType::F16, out).validate(Arch::SM80) {
                Err(SpecError::Unsupported { field: "out", allowed, .. }) => assert_eq!(allowed, "f16, bf16, f32"),
                other => panic!("{out}: {other:?}"),
            }
        }
    }

    #[test]
    fn default_specs_validate_on_every_arch() {
        for arch in Arch::SUPPORTED {
            for dtype in ElemType::MMA_INPUTS {
                for out in ElemType::MMA_OUTPUTS {
                    for layout_w in Layout::ALL {
                        let s = GemmSpec { layout_w, ..GemmSpec::new(dtype, out) };
                        s.validate(arch).unwrap_or_else(|e| panic!("{arch} {dtype} {out}: {e}"));
                    }
                }
            }
        }
    }

    #[test]
    fn layouts_and_alignment_select_the_instantiation() {
        let s = GemmSpec { layout_x: Layout::ColMajor, aligned: false, ..spec() };
        let src = s.render(Arch::SM80).unwrap();
        assert!(src.cuda_src.contains("gemm<tessera::bf16, float, true, true, 128, 128, 32, 8, 3, 1, false,"), "{}", src.name);
        assert!(src.name.starts_with("tessera_gemm_bf16_f32_cc_") && src.name.contains("_unaligned_"), "{}", src.name);
        assert_ne!(src.hash, spec().render(Arch::SM80).unwrap().hash);
    }

    #[test]
    fn tile_fields_are_checked() {
        let cases = [
            (GemmTile::new(48, 64, 32, 4, 2), "tile.block_m", "32, 64, 128"),
            (GemmTile::new(64, 96, 32, 4, 2), "tile.block_n", "32, 64, 128, 256"),
            (GemmTile::new(64, 32, 32, 8, 2), "tile.block_n", "multiples of 64"),
            (GemmTile::new(64, 64, 16, 4, 2), "tile.block_k", "32, 64"),
            (GemmTile::new(64, 64, 32, 2, 2), "tile.warps", "4, 8"),
            (GemmTile::new(64, 64, 32, 4, 4), "tile.stages", "1, 2, 3"),
            (GemmTile::new(64, 64, 32, 4, 2).with_split_k(3), "tile.split_k", "1, 2, 4, 8"),
            (GemmTile::new(128, 256, 32, 4, 2), "tile", "<= 128"),
        ];
        for (tile, field, allowed) in cases {
            let msg = spec().with_tile(tile).validate(Arch::SM80).unwrap_err().to_string();
            assert!(msg.contains(&format!("unsupported {field} ")) && msg.contains(allowed), "{tile}: {msg}");
        }
    }

    #[test]
    fn shared_memory_limit_depends_on_arch() {
        // 3 x (128 + 128) x 64 x 2 bytes = 96 KiB fits everywhere; check the accounting itself.
        let s = spec().with_tile(GemmTile::new(128, 128, 64, 8, 3));
        assert_eq!(s.shared_memory_bytes(GemmTile::new(128, 128, 64, 8, 3)), 3 * 256 * 64 * 2);
        assert!(s.validate(Arch::SM86).is_ok());
    }

    #[test]
    fn render_is_deterministic_and_hash_tracks_spec() {
        let a = spec().render(Arch::SM80).unwrap();
        assert_eq!(a, spec().render(Arch::SM80).unwrap());
        assert_eq!(a.hash.len(), 64);
        let b = GemmSpec { epilogue: Epilogue { residual: false, ..spec().epilogue }, ..spec() }
            .render(Arch::SM80)
            .unwrap();
        assert_ne!(a.hash, b.hash);
        assert_ne!(a.name, b.name);
        assert!(a.cuda_src.contains(&format!("{}(const tessera::GemmParams params)", a.name)));
        assert!(a.cuda_src.contains("gemm<tessera::bf16, float, false, true, 128, 128, 32, 8, 3, 1, true, true, 2, false, true>"));
        assert_eq!(a.geometry.threads_per_block, 256);
        assert_eq!(a.geometry.dynamic_shared_bytes, 3 * (128 + 128) * 32 * 2);
        assert_eq!(a.name, "tessera_gemm_bf16_f32_rc_bias_gelu_tanh_res_m128n128k32w8s3");
    }

    #[test]
    fn render_rejects_invalid_specs() {
        assert!(spec().with_tile(GemmTile::new(64, 64, 32, 4, 5)).render(Arch::SM80).is_err());
    }

    #[test]
    fn space_is_valid_and_contains_default() {
        for arch in Arch::SUPPORTED {
            let space: Vec<_> = spec().space(arch).collect();
            assert!(space.contains(&GemmSpec::default_tile(arch)), "{arch}");
            assert!(space.len() > 10);
            for t in &space {
                assert!(spec().with_tile(*t).validate(arch).is_ok());
            }
        }
    }
}
