//! Fused LoRA and bottleneck adapters, built on the GEMM family: `spec.rs` is what a caller asks
//! for (rank, variant, adapter mode, epilogue), `tiles.rs` the sm_90a tile, `sm80.rs` the
//! mma.sync kernel on the GEMM's main loop (every architecture), `sm90a.rs` the TMA + wgmma
//! kernel (single adapter, H100/H200). This file decides which kernel a spec takes and gives the
//! spec its public face: validate, name, render.

mod params;
mod sm80;
mod sm90a;
mod spec;
mod tiles;

pub use params::{HopperLoraParams, LoraKind, LoraParams};
pub use sm90a::lora_hopper_route;
pub use spec::{AdapterMode, LoraSpec, LoraVariant, LORA_RANKS};
pub use tiles::{HopperLoraTile, HOPPER_LORA_THREADS};

use crate::gemm::mma_sync_tiles;
use crate::common::{Arch, KernelSource, SpecError};
use crate::gemm::{GemmTile, HOPPER_GEMM_BLOCK_M};

impl LoraSpec {
    pub fn validate(&self, arch: Arch) -> Result<(), SpecError> {
        Arch::new(arch.sm)?;
        self.validate_variant()?;
        self.validate_mma_sync_tile(arch)
    }

    /// Every valid tile configuration for `arch`.
    pub fn space(&self, arch: Arch) -> impl Iterator<Item = GemmTile> + '_ {
        mma_sync_tiles().filter(move |t| LoraSpec { tile: Some(*t), ..*self }.validate(arch).is_ok())
    }

    pub fn kernel_name(&self, arch: Arch) -> String {
        let tile = match lora_hopper_route(self, arch) {
            Ok(t) => format!("sm90a_{t}"),
            Err(_) => self.tile_for(arch).to_string(),
        };
        let aligned = if self.aligned { "" } else { "_unaligned" };
        let x = self.layout_x.letter();
        match self.variant {
            LoraVariant::Bottleneck { activation } => format!(
                "tessera_bottleneck_{}_{}_{x}_r{}_{activation}{aligned}_{tile}",
                self.dtype, self.out, self.rank
            ),
            LoraVariant::Lora => {
                let e = self.epilogue;
                format!(
                    "tessera_lora_{}_{}_{x}{}_r{}_{}_{}{}{}{}{aligned}_{tile}",
                    self.dtype,
                    self.out,
                    self.layout_w.letter(),
                    self.rank,
                    self.adapters,
                    if e.bias { "bias_" } else { "" },
                    e.activation,
                    e.user.map_or(String::new(), |u| format!("_{}", u.name)),
                    if e.residual { "_res" } else { "" },
                )
            }
        }
    }

    /// The sm_90a tile when this spec takes the TMA + wgmma kernel on `arch`, else why not (the
    /// mma.sync kernel runs instead).
    pub fn hopper_tile(&self, arch: Arch) -> Result<HopperLoraTile, String> {
        lora_hopper_route(self, arch)
    }

    /// Threads per CTA and the output tile (rows, columns) one column tile covers on `arch`.
    pub fn cta_shape(&self, arch: Arch) -> (u32, u32, u32) {
        match lora_hopper_route(self, arch) {
            Ok(t) => (HOPPER_LORA_THREADS, HOPPER_GEMM_BLOCK_M, t.block_n),
            Err(_) => {
                let t = self.tile_for(arch);
                (t.threads(), t.block_m, t.block_n)
            }
        }
    }

    /// Dynamic shared memory of the kernel this spec renders on `arch`.
    pub fn shared_memory_bytes_for(&self, arch: Arch) -> u32 {
        match lora_hopper_route(self, arch) {
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
        if let Ok(hopper) = lora_hopper_route(self, arch) {
            return Ok(sm90a::render(self, hopper, self.kernel_name(arch)));
        }
        Ok(self.render_mma_sync(arch, self.kernel_name(arch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    #[test]
    fn non_mma_types_are_rejected_by_field() {
        let bad_in = LoraSpec::new(ElemType::E4M3, ElemType::F16, 16);
        assert!(matches!(bad_in.validate(Arch::SM80), Err(SpecError::Unsupported { field: "dtype", .. })));
        let bad_out = LoraSpec::new(ElemType::BF16, ElemType::E5M2, 16);
        assert!(matches!(bad_out.validate(Arch::SM80), Err(SpecError::Unsupported { field: "out", .. })));
    }

    #[test]
    fn every_rank_has_a_default_tile_on_every_arch() {
        for arch in Arch::SUPPORTED {
            for rank in LORA_RANKS {
                for adapters in [AdapterMode::Single, AdapterMode::PerRow] {
                    let s = LoraSpec { adapters, ..LoraSpec::new(ElemType::BF16, ElemType::BF16, rank) };
                    s.validate(arch).unwrap_or_else(|e| panic!("{arch} r{rank}: {e}"));
                    s.render(arch).unwrap();
                }
                let b = LoraSpec::bottleneck(ElemType::F16, ElemType::F16, rank, Activation::GeluTanh);
                b.validate(arch).unwrap_or_else(|e| panic!("{arch} bottleneck r{rank}: {e}"));
            }
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let s = LoraSpec::new(ElemType::F16, ElemType::F32, 24);
        let msg = s.validate(Arch::SM80).unwrap_err().to_string();
        assert!(msg.contains("unsupported rank `24`") && msg.contains("8, 16, 32, 64, 128"), "{msg}");
        let b = LoraSpec {
            epilogue: Epilogue { bias: true, ..Epilogue::NONE },
            ..LoraSpec::bottleneck(ElemType::F16, ElemType::F32, 16, Activation::Relu)
        };
        assert!(b.validate(Arch::SM80).unwrap_err().to_string().contains("epilogue"));
        let b = LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::bottleneck(ElemType::F16, ElemType::F32, 16, Activation::Relu) };
        assert!(b.validate(Arch::SM80).unwrap_err().to_string().contains("adapters"));
        let t = LoraSpec::new(ElemType::F16, ElemType::F32, 16).with_tile(GemmTile::new(64, 64, 32, 8, 2));
        let msg = t.validate(Arch::SM80).unwrap_err().to_string();
        assert!(msg.contains("tile.block_m") && msg.contains("16 x warps"), "{msg}");
        let t = LoraSpec::new(ElemType::F16, ElemType::F32, 64).with_tile(GemmTile::new(128, 128, 32, 4, 2));
        assert!(t.validate(Arch::SM80).unwrap_err().to_string().contains("accumulators"));
        // Rank 32 fuses into a 128 x 128 main loop; rank 64 does not.
        let t = GemmTile::new(128, 128, 32, 8, 3);
        assert!(LoraSpec::new(ElemType::F16, ElemType::F32, 32).fuses_low_rank(t));
        assert!(!LoraSpec::new(ElemType::F16, ElemType::F32, 64).fuses_low_rank(t));
    }

    #[test]
    fn render_selects_the_instantiation() {
        let s = LoraSpec { adapters: AdapterMode::PerRow, layout_w: Layout::ColMajor, ..LoraSpec::new(ElemType::BF16, ElemType::F32, 8) };
        let src = s.render(Arch::SM80).unwrap();
        assert!(src.cuda_src.contains("lora<tessera::bf16, float, false, true, 128, 128, 32, 8, 3, true, 16, true, 0, 0, true,"), "{}", src.name);
        assert_eq!(src.name, "tessera_lora_bf16_f32_rc_r8_per_row_none_m128n128k32w8s3");
        assert_eq!(src.geometry.dynamic_shared_bytes, s.shared_memory_bytes(s.tile_for(Arch::SM80)));
        assert_eq!(src, s.render(Arch::SM80).unwrap());
        let b = LoraSpec::bottleneck(ElemType::F16, ElemType::F16, 64, Activation::Silu).render(Arch::SM90).unwrap();
        assert!(b.name.starts_with("tessera_bottleneck_f16_f16_r_r64_silu_"), "{}", b.name);
        assert!(b.cuda_src.contains(", 64, false, 1, 3, false, false, 0, false, false>(params)"), "{}", b.name);
        assert_ne!(b.hash, src.hash);
    }

    #[test]
    fn shared_memory_accounts_for_ring_b_t_and_ids() {
        let s = LoraSpec::new(ElemType::F16, ElemType::F16, 64);
        let t = GemmTile::new(128, 128, 32, 8, 3);
        assert_eq!(s.shared_memory_bytes(t), (3 * (128 + 128 + 64) * 32 + 64 * 128 + 128 * 64) * 2 + 128 * 4);
        // Rank 128 at 3 stages needs more than sm_86's 99 KiB: the default drops to 2 stages.
        let big = LoraSpec::new(ElemType::F16, ElemType::F16, 128);
        assert!(big.with_tile(t).validate(Arch::SM86).is_err());
        assert!(big.default_tile(Arch::SM86).stages < 3 || big.default_tile(Arch::SM86).block_m < 128);
        assert_eq!(big.default_tile(Arch::SM80), t);
    }

    #[test]
    fn space_is_valid() {
        for rank in LORA_RANKS {
            let s = LoraSpec::new(ElemType::BF16, ElemType::BF16, rank);
            let space: Vec<_> = s.space(Arch::SM80).collect();
            assert!(space.contains(&s.default_tile(Arch::SM80)), "r{rank}");
            assert!(space.iter().all(|t| s.with_tile(*t).validate(Arch::SM80).is_ok()));
        }
    }
}
