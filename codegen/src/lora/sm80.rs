//! Fused LoRA and the bottleneck on the GEMM's `mma.sync` main loop (every architecture): the
//! default tile, the checks of a tile against a spec (accumulators in each phase, shared memory,
//! whether `X A` fuses into the main loop), and the rendering of the template.

use super::params::LoraKind;
use super::spec::{AdapterMode, LoraSpec, LoraVariant};
use crate::gemm::validate_tile;
use crate::common::{Arch, KernelSource, LaunchGeometry, SpecError, WARP_SIZE};
use crate::gemm::{Activation, GemmTile, Layout};
use crate::common::params::Declarations;
use crate::common::Template;

/// Most f32 accumulators one thread may hold in one phase (as for [`GemmSpec`]).
const MAX_ACCUMULATORS_PER_THREAD: u32 = 64;
/// Main plus low-rank accumulators up to which the low-rank product is fused into the main loop;
/// above it (measured with ptxas: 64 + 32 spills on sm_80) it gets a pass of its own.
const MAX_FUSED_ACCUMULATORS: u32 = 80;

impl LoraSpec {
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
            .find(|t| {
                let candidate = LoraSpec { tile: Some(*t), ..*self };
                candidate.validate_variant().is_ok() && candidate.validate_mma_sync_tile(arch).is_ok()
            })
            .unwrap_or(CANDIDATES[0])
    }

    /// The mma.sync tile's checks on `arch`: its fields, accumulators per phase, shared memory.
    pub(super) fn validate_mma_sync_tile(&self, arch: Arch) -> Result<(), SpecError> {
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

    /// Whether `X A` accumulates inside the main loop (see `templates/lora/sm80.cuh`) or in a pass of
    /// its own: fused when both accumulator sets fit in registers together.
    /// The bottleneck has no main loop to fuse into.
    pub fn fuses_low_rank(&self, tile: GemmTile) -> bool {
        !self.is_bottleneck() && self.main_accumulators(tile) + self.low_rank_accumulators(tile) <= MAX_FUSED_ACCUMULATORS
    }

    fn main_accumulators(&self, tile: GemmTile) -> u32 {
        tile.block_m * tile.block_n / (WARP_SIZE * tile.warps.max(1))
    }

    /// The `block_m x r` low-rank tile over the CTA's threads, at most 64 columns of it per pass
    /// unless fused (see `templates/lora/sm80.cuh`).
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

    /// The `extern "C"` instantiation of the mma.sync template, named `name`.
    pub(super) fn mma_sync_entry_point(&self, arch: Arch, name: &str) -> String {
        let tile = self.tile_for(arch);
        let (kind, t_act) = match self.variant {
            LoraVariant::Lora => (LoraKind::Adapter, Activation::None),
            LoraVariant::Bottleneck { activation } => (LoraKind::Bottleneck, activation),
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
            name = name,
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
            kind = kind as i32,
            t_act = t_act.code(),
            per_row = self.adapters == AdapterMode::PerRow,
            bias = e.bias,
            act = e.activation.code(),
            res = e.residual,
        )
    }


    /// The mma.sync kernel's source for this (validated) spec, named `name`.
    pub(super) fn render_mma_sync(&self, arch: Arch, name: String) -> KernelSource {
        let tile = self.tile_for(arch);
        let e = self.epilogue;
        let header = format!(
            "// Generated by tessera-codegen: lora\n\
             // dtype={} out={} layout_x={} layout_w={} rank={} variant={:?} adapters={} bias={} activation={} residual={} aligned={} tile={}\n",
            self.dtype, self.out, self.layout_x, self.layout_w, self.rank, self.variant, self.adapters, e.bias,
            e.activation, e.residual, self.aligned, tile
        );
        let mut contract = Declarations::new();
        super::params::contract(&mut contract);
        let src = Template::Lora.assemble(&header, &contract, &self.mma_sync_entry_point(arch, &name));
        let geometry =
            LaunchGeometry { threads_per_block: tile.threads(), dynamic_shared_bytes: self.shared_memory_bytes(tile) };
        KernelSource::new(name, src, geometry)
    }

}
