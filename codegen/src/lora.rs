//! Fused LoRA and bottleneck adapters on the GEMM main loop (`templates/lora.cuh`).
//!
//! ```text
//! LoRA:        Y = act(X @ W + s (X @ A_i) @ B_i + bias) + residual
//! bottleneck:  Y = X + s f(X @ A) @ B          (N == K)
//! ```
//!
//! One launch; the rank-r intermediate `T' = round(s (X @ A))` (bottleneck: `round(s f(X @ A))`)
//! lives in registers and shared memory only, rounded to the input dtype before the second
//! product, as an unfused `(x @ A) @ B` in that dtype rounds it.
//!
//! Adapter layouts ([`AdapterMode`]):
//! - `Single`: A `[K, r]`, B `[r, N]`, every row of X uses them.
//! - `PerRow`: A `[n_adapters, K, r]`, B `[n_adapters, r, N]`, and an int32 id per row of X
//!   (`-1`: no adapter). One kernel serves both batch shapes: prefill batches with rows grouped
//!   into segments per adapter (SGMV) cost about one adapter per row tile; decode batches with a
//!   different adapter on every row (BGMV) cost one extra pass over K (X and A_i only) per further
//!   distinct adapter in a row tile.
//!
//! A and B are row-major and contiguous; X and W take either layout, as in [`GemmSpec`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::gemm::{list, validate_tile};
use crate::lora_hopper::{lora_hopper_entry_point, lora_hopper_route, HopperLoraTile, HOPPER_LORA_THREADS};
use crate::{
    Activation, Arch, DType, Epilogue, GemmSpec, GemmTile, KernelSource, Layout, LaunchGeometry, OutType, SpecError,
    Template, WARP_SIZE,
};

/// Supported adapter ranks.
pub const LORA_RANKS: [u32; 5] = [8, 16, 32, 64, 128];
/// Most f32 accumulators one thread may hold in one phase (as for [`GemmSpec`]).
const MAX_ACCUMULATORS_PER_THREAD: u32 = 64;
/// Main plus low-rank accumulators up to which the low-rank product is fused into the main loop;
/// above it (measured with ptxas: 64 + 32 spills on sm_80) it gets a pass of its own.
const MAX_FUSED_ACCUMULATORS: u32 = 80;

/// Which adapter computation the kernel fuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoraVariant {
    /// `Y = act(X W + s (X A) B + bias) + residual`.
    Lora,
    /// `Y = X + s f(X A) B` with `f = activation`; no W, N must equal K.
    Bottleneck { activation: Activation },
}

/// Which adapter each row of X uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterMode {
    /// One adapter (A `[K, r]`, B `[r, N]`) for every row.
    Single,
    /// Stacked adapters and an int32 adapter id per row (`-1`: none).
    PerRow,
}

impl AdapterMode {
    pub fn name(self) -> &'static str {
        match self {
            AdapterMode::Single => "single",
            AdapterMode::PerRow => "per_row",
        }
    }
}

impl fmt::Display for AdapterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fused low-rank adapter kernel (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoraSpec {
    /// X, W, A, B element type.
    pub dtype: DType,
    /// Y (and bias, residual) element type.
    pub out: OutType,
    pub layout_x: Layout,
    pub layout_w: Layout,
    /// Adapter rank r, one of [`LORA_RANKS`].
    pub rank: u32,
    pub variant: LoraVariant,
    pub adapters: AdapterMode,
    /// Bias / activation / residual after the sum (LoRA only; the bottleneck takes none).
    pub epilogue: Epilogue,
    /// Whole 16-byte chunks per operand row, as [`GemmSpec::aligned`].
    pub aligned: bool,
    /// `None` picks [`LoraSpec::default_tile`].
    pub tile: Option<GemmTile>,
}

impl LoraSpec {
    /// Single-adapter LoRA with row-major operands, no epilogue, default tile.
    pub fn new(dtype: DType, out: OutType, rank: u32) -> Self {
        LoraSpec {
            dtype,
            out,
            layout_x: Layout::RowMajor,
            layout_w: Layout::RowMajor,
            rank,
            variant: LoraVariant::Lora,
            adapters: AdapterMode::Single,
            epilogue: Epilogue::NONE,
            aligned: true,
            tile: None,
        }
    }

    /// The bottleneck adapter `Y = X + f(X A) B`.
    pub fn bottleneck(dtype: DType, out: OutType, rank: u32, activation: Activation) -> Self {
        LoraSpec { variant: LoraVariant::Bottleneck { activation }, ..LoraSpec::new(dtype, out, rank) }
    }

    pub fn with_tile(mut self, tile: GemmTile) -> Self {
        self.tile = Some(tile);
        self
    }

    /// The rank the kernel computes with: rank 8 is zero-padded to one 16-wide mma k-step.
    pub fn padded_rank(&self) -> u32 {
        self.rank.max(16)
    }

    pub fn is_bottleneck(&self) -> bool {
        matches!(self.variant, LoraVariant::Bottleneck { .. })
    }

    pub fn tile_for(&self, arch: Arch) -> GemmTile {
        self.tile.unwrap_or_else(|| self.default_tile(arch))
    }

    /// The first of a few tiles, largest first, that fits `arch` with this rank: 128 x 128 on
    /// 8 warps where shared memory allows, then fewer stages, then 64-row tiles on 4 warps.
    pub fn default_tile(&self, arch: Arch) -> GemmTile {
        const CANDIDATES: [GemmTile; 5] = [
            GemmTile::new(128, 128, 32, 8, 3),
            GemmTile::new(128, 128, 32, 8, 2),
            GemmTile::new(64, 128, 32, 4, 2),
            GemmTile::new(64, 64, 32, 4, 2),
            GemmTile::new(64, 64, 32, 4, 1),
        ];
        CANDIDATES
            .into_iter()
            .find(|t| LoraSpec { tile: Some(*t), ..*self }.validate(arch).is_ok())
            .unwrap_or(CANDIDATES[0])
    }

    pub fn validate(&self, arch: Arch) -> Result<(), SpecError> {
        Arch::new(arch.sm)?;
        if !LORA_RANKS.contains(&self.rank) {
            return Err(SpecError::unsupported("rank", self.rank, list(&LORA_RANKS)));
        }
        if self.is_bottleneck() {
            if self.epilogue != Epilogue::NONE {
                let e = self.epilogue;
                let mut parts = Vec::new();
                if e.bias {
                    parts.push("bias".to_string());
                }
                if e.activation != Activation::None {
                    parts.push(format!("activation {}", e.activation));
                }
                if let Some(u) = e.user {
                    parts.push(format!("epilogue {}", u.name));
                }
                if e.residual {
                    parts.push("residual".to_string());
                }
                return Err(SpecError::unsupported(
                    "epilogue",
                    parts.join(" + "),
                    "none for the bottleneck variant (its activation is the variant's, its residual is X)",
                ));
            }
            if self.adapters != AdapterMode::Single {
                return Err(SpecError::unsupported("adapters", self.adapters, "single for the bottleneck variant"));
            }
        }
        if let Some(user) = &self.epilogue.user {
            user.validate_as_epilogue()?;
        }
        let tile = self.tile_for(arch);
        validate_tile(tile)?;
        if tile.split_k != 1 {
            return Err(SpecError::unsupported("tile.split_k", tile.split_k, "1 (split-K is a GEMM option)"));
        }
        if tile.block_m < 16 * tile.warps {
            return Err(SpecError::unsupported(
                "tile.block_m",
                tile.block_m,
                format!("at least 16 x warps = {} (each warp owns whole 16-row tiles of X A)", 16 * tile.warps),
            ));
        }
        let main = self.main_accumulators(tile);
        let low_rank = self.low_rank_accumulators(tile);
        if main.max(low_rank) > MAX_ACCUMULATORS_PER_THREAD {
            return Err(SpecError::unsupported(
                "tile",
                format!("{tile} ({main} main and {low_rank} low-rank f32 accumulators per thread at rank {})", self.rank),
                format!("tiles with at most {MAX_ACCUMULATORS_PER_THREAD} of each (lower block_n or block_m, or raise warps)"),
            ));
        }
        let needed = self.shared_memory_bytes(tile);
        let limit = arch.max_shared_memory_per_block();
        if needed > limit {
            return Err(SpecError::SharedMemory { tile: tile.to_string(), needed, limit, arch: arch.to_string() });
        }
        Ok(())
    }

    /// Whether `X A` accumulates inside the main loop (see `templates/lora.cuh`) or in a pass of
    /// its own: fused when both accumulator sets fit in registers together.
    /// The bottleneck has no main loop to fuse into.
    pub fn fuses_low_rank(&self, tile: GemmTile) -> bool {
        !self.is_bottleneck() && self.main_accumulators(tile) + self.low_rank_accumulators(tile) <= MAX_FUSED_ACCUMULATORS
    }

    fn main_accumulators(&self, tile: GemmTile) -> u32 {
        tile.block_m * tile.block_n / (WARP_SIZE * tile.warps.max(1))
    }

    /// The `block_m x r` low-rank tile over the CTA's threads, at most 64 columns of it per pass
    /// unless fused (see `templates/lora.cuh`).
    fn low_rank_accumulators(&self, tile: GemmTile) -> u32 {
        tile.block_m * self.padded_rank().min(64) / (WARP_SIZE * tile.warps.max(1))
    }

    /// Dynamic shared memory: the ring (`stages` X, W and A tiles; the bottleneck streams no W),
    /// one B tile `r x block_n`, T' `block_m x r`, and `block_m` int32 row ids.
    pub fn shared_memory_bytes(&self, tile: GemmTile) -> u32 {
        let r = self.padded_rank();
        let w = if self.is_bottleneck() { 0 } else { tile.block_n };
        let elem = self.dtype.size_bytes() as u32;
        let ring = tile.stages * (tile.block_m + w + r) * tile.block_k;
        (ring + r * tile.block_n + tile.block_m * r) * elem + tile.block_m * 4
    }

    /// Every valid tile configuration for `arch`.
    pub fn space(&self, arch: Arch) -> impl Iterator<Item = GemmTile> + '_ {
        GemmSpec::new(self.dtype, self.out)
            .space_unchecked()
            .filter(move |t| LoraSpec { tile: Some(*t), ..*self }.validate(arch).is_ok())
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
            Ok(t) => (HOPPER_LORA_THREADS, crate::HOPPER_GEMM_BLOCK_M, t.block_n),
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
        let tile = self.tile_for(arch);
        let (kind, t_act) = match self.variant {
            LoraVariant::Lora => (0, Activation::None),
            LoraVariant::Bottleneck { activation } => (1, activation),
        };
        let e = self.epilogue;
        format!(
            "{user}extern \"C\" __global__ void __launch_bounds__({threads}, 1)\n\
             {name}(const tessera::LoraParams params) {{\n    \
             tessera::lora<{ty}, {to}, {xcol}, {wcol}, {bm}, {bn}, {bk}, {w}, {s}, {aligned}, {r}, {fuse}, {kind}, {t_act}, \
             {per_row}, {bias}, {act}, {has_user}, {res}>(params);\n}}\n",
            user = e.user.map_or(String::new(), |u| u.epilogue_definition()),
            has_user = e.user.is_some(),
            threads = tile.threads(),
            name = self.kernel_name(arch),
            ty = self.dtype.cuda_type(),
            to = self.out.cuda_type(),
            xcol = self.layout_x == Layout::ColMajor,
            wcol = self.layout_w == Layout::ColMajor,
            bm = tile.block_m,
            bn = tile.block_n,
            bk = tile.block_k,
            w = tile.warps,
            s = tile.stages,
            aligned = self.aligned,
            r = self.padded_rank(),
            fuse = self.fuses_low_rank(tile),
            t_act = t_act.code(),
            per_row = self.adapters == AdapterMode::PerRow,
            bias = e.bias,
            act = e.activation.code(),
            res = e.residual,
        )
    }

    /// Validates, then renders the self-contained source. Deterministic.
    pub fn render(&self, arch: Arch) -> Result<KernelSource, SpecError> {
        self.validate(arch)?;
        if let Ok(hopper) = lora_hopper_route(self, arch) {
            return Ok(self.render_hopper(arch, hopper));
        }
        let tile = self.tile_for(arch);
        let e = self.epilogue;
        let header = format!(
            "// Generated by tessera-codegen: lora\n\
             // dtype={} out={} layout_x={} layout_w={} rank={} variant={:?} adapters={} bias={} activation={} residual={} aligned={} tile={}\n",
            self.dtype, self.out, self.layout_x, self.layout_w, self.rank, self.variant, self.adapters, e.bias,
            e.activation, e.residual, self.aligned, tile
        );
        let src = Template::Lora.assemble(&header, &self.entry_point(arch));
        let geometry =
            LaunchGeometry { threads_per_block: tile.threads(), dynamic_shared_bytes: self.shared_memory_bytes(tile) };
        Ok(KernelSource::new(self.kernel_name(arch), src, geometry))
    }

    fn render_hopper(&self, arch: Arch, tile: HopperLoraTile) -> KernelSource {
        let name = self.kernel_name(arch);
        let e = self.epilogue;
        let header = format!(
            "// Generated by tessera-codegen: lora, sm_90a (TMA + wgmma)\n\
             // dtype={} out={} layout_x={} layout_w={} rank={} bias={} activation={} residual={} tile={}\n",
            self.dtype, self.out, self.layout_x, self.layout_w, self.rank, e.bias, e.activation, e.residual, tile
        );
        let src = Template::LoraHopper.assemble(&header, &lora_hopper_entry_point(self, tile, &name));
        let geometry = LaunchGeometry {
            threads_per_block: HOPPER_LORA_THREADS,
            dynamic_shared_bytes: tile.shared_memory_bytes(self.dtype),
        };
        KernelSource::new(name, src, geometry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_has_a_default_tile_on_every_arch() {
        for arch in Arch::SUPPORTED {
            for rank in LORA_RANKS {
                for adapters in [AdapterMode::Single, AdapterMode::PerRow] {
                    let s = LoraSpec { adapters, ..LoraSpec::new(DType::BF16, OutType::BF16, rank) };
                    s.validate(arch).unwrap_or_else(|e| panic!("{arch} r{rank}: {e}"));
                    s.render(arch).unwrap();
                }
                let b = LoraSpec::bottleneck(DType::F16, OutType::F16, rank, Activation::GeluTanh);
                b.validate(arch).unwrap_or_else(|e| panic!("{arch} bottleneck r{rank}: {e}"));
            }
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let s = LoraSpec::new(DType::F16, OutType::F32, 24);
        let msg = s.validate(Arch::SM80).unwrap_err().to_string();
        assert!(msg.contains("unsupported rank `24`") && msg.contains("8, 16, 32, 64, 128"), "{msg}");
        let b = LoraSpec {
            epilogue: Epilogue { bias: true, ..Epilogue::NONE },
            ..LoraSpec::bottleneck(DType::F16, OutType::F32, 16, Activation::Relu)
        };
        assert!(b.validate(Arch::SM80).unwrap_err().to_string().contains("epilogue"));
        let b = LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::bottleneck(DType::F16, OutType::F32, 16, Activation::Relu) };
        assert!(b.validate(Arch::SM80).unwrap_err().to_string().contains("adapters"));
        let t = LoraSpec::new(DType::F16, OutType::F32, 16).with_tile(GemmTile::new(64, 64, 32, 8, 2));
        let msg = t.validate(Arch::SM80).unwrap_err().to_string();
        assert!(msg.contains("tile.block_m") && msg.contains("16 x warps"), "{msg}");
        let t = LoraSpec::new(DType::F16, OutType::F32, 64).with_tile(GemmTile::new(128, 128, 32, 4, 2));
        assert!(t.validate(Arch::SM80).unwrap_err().to_string().contains("accumulators"));
        // Rank 32 fuses into a 128 x 128 main loop; rank 64 does not.
        let t = GemmTile::new(128, 128, 32, 8, 3);
        assert!(LoraSpec::new(DType::F16, OutType::F32, 32).fuses_low_rank(t));
        assert!(!LoraSpec::new(DType::F16, OutType::F32, 64).fuses_low_rank(t));
    }

    #[test]
    fn render_selects_the_instantiation() {
        let s = LoraSpec { adapters: AdapterMode::PerRow, layout_w: Layout::ColMajor, ..LoraSpec::new(DType::BF16, OutType::F32, 8) };
        let src = s.render(Arch::SM80).unwrap();
        assert!(src.cuda_src.contains("lora<tessera::bf16, float, false, true, 128, 128, 32, 8, 3, true, 16, true, 0, 0, true,"), "{}", src.name);
        assert_eq!(src.name, "tessera_lora_bf16_f32_rc_r8_per_row_none_m128n128k32w8s3");
        assert_eq!(src.geometry.dynamic_shared_bytes, s.shared_memory_bytes(s.tile_for(Arch::SM80)));
        assert_eq!(src, s.render(Arch::SM80).unwrap());
        let b = LoraSpec::bottleneck(DType::F16, OutType::F16, 64, Activation::Silu).render(Arch::SM90).unwrap();
        assert!(b.name.starts_with("tessera_bottleneck_f16_f16_r_r64_silu_"), "{}", b.name);
        assert!(b.cuda_src.contains(", 64, false, 1, 3, false, false, 0, false, false>(params)"), "{}", b.name);
        assert_ne!(b.hash, src.hash);
    }

    #[test]
    fn shared_memory_accounts_for_ring_b_t_and_ids() {
        let s = LoraSpec::new(DType::F16, OutType::F16, 64);
        let t = GemmTile::new(128, 128, 32, 8, 3);
        assert_eq!(s.shared_memory_bytes(t), (3 * (128 + 128 + 64) * 32 + 64 * 128 + 128 * 64) * 2 + 128 * 4);
        // Rank 128 at 3 stages needs more than sm_86's 99 KiB: the default drops to 2 stages.
        let big = LoraSpec::new(DType::F16, OutType::F16, 128);
        assert!(big.with_tile(t).validate(Arch::SM86).is_err());
        assert!(big.default_tile(Arch::SM86).stages < 3 || big.default_tile(Arch::SM86).block_m < 128);
        assert_eq!(big.default_tile(Arch::SM80), t);
    }

    #[test]
    fn space_is_valid() {
        for rank in LORA_RANKS {
            let s = LoraSpec::new(DType::BF16, OutType::BF16, rank);
            let space: Vec<_> = s.space(Arch::SM80).collect();
            assert!(space.contains(&s.default_tile(Arch::SM80)), "r{rank}");
            assert!(space.iter().all(|t| s.with_tile(*t).validate(Arch::SM80).is_ok()));
        }
    }
}
