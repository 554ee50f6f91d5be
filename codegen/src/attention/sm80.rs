//! Attention forward (FlashAttention-2 style) on `mma.sync.m16n8k16`: the mma.sync kernel's tile
//! rules (warps, key-tile widths, ring depth, register and shared-memory budgets), its default
//! tiles, and the rendering of its template. The kernel body is `templates/attention/sm80.cuh`.

use super::spec::AttentionSpec;
use super::tiles::TileConfig;
use crate::common::list;
use crate::common::{Arch, KernelSource, LaunchGeometry, SpecError};
use crate::common::params::Declarations;
use crate::common::Template;

const BLOCK_NS: [u32; 5] = [16, 32, 64, 128, 256];
const WARPS: [u32; 2] = [4, 8];
const STAGES: [u32; 3] = [1, 2, 3];
/// Query rows owned by one warp: the M of one `mma.m16n8k16`.
const ROWS_PER_WARP: u32 = 16;
/// Registers a thread needs besides the fragments: addresses, loop counters, softmax state
/// (2 rows x max/sum), masks. The estimate built on it is a lower bound used to prune configs that
/// cannot fit; ptxas' real count is higher (it hoists ldmatrix loads for ILP) and is what
/// `tessera check` reports and the tests hold to zero spills.
const REGISTER_OVERHEAD: u32 = 40;

/// Largest head_dim whose Q fragments stay in registers (see `q_in_registers`).
const Q_IN_REGISTERS_MAX_HEAD_DIM: u32 = 128;

impl AttentionSpec {
    /// The tile configuration that will be rendered for `arch`.
    pub fn tile_for(&self, arch: Arch) -> TileConfig {
        self.tile.unwrap_or_else(|| self.default_tile_for(arch))
    }

    /// The default tile for this spec's features: [`AttentionSpec::default_tile`], except for decode
    /// kernels (paged or split-KV). Those take 64-row query tiles (a packed decode step has
    /// seq_q x group rows, often 8-64) and key tiles small enough that the block-table addressing
    /// and the split epilogue fit beside the O accumulator without spilling (measured with
    /// `ptxas -v`: 184-226 registers at head_dim 128-256).
    pub fn default_tile_for(&self, arch: Arch) -> TileConfig {
        if !(self.features.paged || self.features.split_kv) {
            return Self::default_tile(self.head_dim, arch);
        }
        match self.head_dim {
            0..=128 => TileConfig::new(64, 64, 4, 2),
            129..=192 => TileConfig::new(64, 32, 4, 2),
            _ => TileConfig::new(64, 16, 4, 2),
        }
    }

    /// Heuristic default: the largest query block whose K/V ring (2 stages) fits every supported
    /// architecture's shared memory and whose fragments fit the register file without spilling.
    pub fn default_tile(head_dim: u32, _arch: Arch) -> TileConfig {
        match head_dim {
            0..=128 => TileConfig::new(128, 64, 8, 2),
            129..=192 => TileConfig::new(128, 32, 8, 2),
            _ => TileConfig::new(64, 32, 4, 2),
        }
    }

    /// The mma.sync tile's checks on `arch`: its fields, registers and shared memory.
    pub(super) fn validate_mma_sync_tile(&self, arch: Arch) -> Result<(), SpecError> {
        let tile = self.tile_for(arch);
        if !WARPS.contains(&tile.warps) {
            return Err(SpecError::unsupported("tile.warps", tile.warps, list(&WARPS)));
        }
        if tile.block_m != ROWS_PER_WARP * tile.warps {
            return Err(SpecError::BlockMismatch { block_m: tile.block_m, warps: tile.warps });
        }
        if !BLOCK_NS.contains(&tile.block_n) {
            return Err(SpecError::unsupported("tile.block_n", tile.block_n, list(&BLOCK_NS)));
        }
        if !STAGES.contains(&tile.stages) {
            return Err(SpecError::unsupported("tile.stages", tile.stages, list(&STAGES)));
        }
        let estimated = self.register_estimate(tile);
        if estimated > Arch::MAX_REGISTERS_PER_THREAD {
            return Err(SpecError::Registers {
                tile: tile.to_string(),
                head_dim: self.head_dim,
                estimated,
                limit: Arch::MAX_REGISTERS_PER_THREAD,
            });
        }
        let needed = self.shared_memory_bytes(tile);
        let limit = arch.max_shared_memory_per_block();
        if needed > limit {
            return Err(SpecError::SharedMemory {
                tile: tile.to_string(),
                needed,
                limit,
                arch: arch.to_string(),
            });
        }
        Ok(())
    }

    /// Dynamic shared memory: the Q tile plus `stages` K and V tiles, all in the kernel dtype.
    pub fn shared_memory_bytes(&self, tile: TileConfig) -> u32 {
        let elems = tile.block_m * self.head_dim + tile.stages * 2 * tile.block_n * self.head_dim;
        elems * self.dtype.size_bytes() as u32
    }

    /// Lower bound on registers per thread, from the fragments one thread must hold whatever the
    /// schedule (a warp owns 16 rows): the O accumulator `16 x head_dim` f32 (head_dim/2 per thread)
    /// and the S tile `16 x block_n` f32 (block_n/2). Q fragments are left out: above
    /// head_dim 128 they are re-read from shared memory instead (see `q_in_registers`).
    fn register_estimate(&self, tile: TileConfig) -> u32 {
        self.head_dim / 2 + tile.block_n / 2 + REGISTER_OVERHEAD
    }

    /// Q fragments stay in registers for the whole K/V loop up to head_dim 128. Beyond that the O
    /// accumulator alone takes head_dim/2 registers and ptxas spills on sm_90 (measured with
    /// `ptxas -v`; `tests/ptxas_report.rs` holds the line), so each warp re-reads its Q fragments
    /// from the Q tile in shared memory with `ldmatrix` instead: shared-memory bandwidth, no spills.
    ///
    /// Paged and split-KV kernels (decode: few query rows, many keys) re-read Q at every head_dim:
    /// their block-table addressing and partial-result epilogue need the registers, and a decode
    /// step is bound by K/V bandwidth, not by the Q fragment reads.
    pub fn q_in_registers(&self, _tile: TileConfig) -> bool {
        self.head_dim <= Q_IN_REGISTERS_MAX_HEAD_DIM && !(self.features.paged || self.features.split_kv)
    }

    /// Every mma.sync tile the template has, valid or not (the tuning space before pruning).
    pub(super) fn mma_sync_tiles() -> impl Iterator<Item = TileConfig> {
        WARPS.into_iter().flat_map(move |warps| {
            BLOCK_NS.into_iter().flat_map(move |block_n| {
                STAGES.into_iter().map(move |stages| TileConfig::new(ROWS_PER_WARP * warps, block_n, warps, stages))
            })
        })
    }

    /// The `extern "C"` instantiation of the mma.sync template, named `name`.
    pub(super) fn mma_sync_entry_point(&self, arch: Arch, name: &str) -> String {
        let tile = self.tile_for(arch);
        format!(
            "extern \"C\" __global__ void __launch_bounds__({threads}, 1)\n\
             {name}(const tessera::AttentionParams params) {{\n    \
             tessera::attention_fwd<{ty}, {d}, {bm}, {bn}, {w}, {s}, {causal}, {group}, {qreg}, {features}>(params);\n}}\n",
            threads = tile.threads(),
            name = name,
            ty = self.dtype.cuda_type(),
            d = self.head_dim,
            bm = tile.block_m,
            bn = tile.block_n,
            w = tile.warps,
            s = tile.stages,
            causal = self.causal,
            group = self.group(),
            qreg = self.q_in_registers(tile),
            features = self.features.bits(),
        )
    }


    /// The mma.sync kernel's source for this (validated) spec, named `name`.
    pub(super) fn render_mma_sync(&self, arch: Arch, name: String) -> KernelSource {
        let tile = self.tile_for(arch);
        let header = format!(
            "// Generated by tessera-codegen: attention forward\n\
             // dtype={} head_dim={} causal={} heads_q={} heads_kv={} tile={} features={}\n",
            self.dtype, self.head_dim, self.causal, self.heads_q, self.heads_kv, tile, self.features
        );
        let mut contract = Declarations::new();
        super::params::contract(&mut contract);
        let src = Template::AttentionForward.assemble(&header, &contract, &self.mma_sync_entry_point(arch, &name));
        let geometry = LaunchGeometry {
            threads_per_block: tile.threads(),
            dynamic_shared_bytes: self.shared_memory_bytes(tile),
        };
        KernelSource::new(name, src, geometry)
    }

}
