//! Attention forward (FlashAttention-2 style) on `mma.sync.m16n8k16`.
//!
//! The kernel body is `templates/attention_fwd.cuh`; this module validates a spec against an
//! architecture, chooses and prunes tile configurations, and renders the one `extern "C"`
//! instantiation that NVRTC compiles.

use serde::{Deserialize, Serialize};

use crate::attention_hopper::{hopper_entry_point, hopper_route, HopperTile, HOPPER_BLOCK_M, HOPPER_THREADS};
use crate::{Arch, AttentionFeatures, DType, KernelSource, LaunchGeometry, SpecError, Template, TileConfig};

/// Head dimensions the template supports: multiples of 16 (the mma k-step) whose rows are whole
/// 16-byte cp.async chunks and whose register budget fits one thread.
pub const ATTENTION_HEAD_DIMS: [u32; 6] = [32, 64, 96, 128, 192, 256];
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

/// A tiled online-softmax attention forward kernel.
///
/// Tensors are `[batch, seq, heads, head_dim]` with explicit strides (the last dimension contiguous);
/// query head `h` reads key/value head `h / (heads_q / heads_kv)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttentionSpec {
    pub dtype: DType,
    pub head_dim: u32,
    pub causal: bool,
    pub heads_q: u32,
    pub heads_kv: u32,
    /// `None` picks [`AttentionSpec::default_tile`] for the target.
    pub tile: Option<TileConfig>,
    /// Masks, score modifiers and layouts beyond plain (causal) attention; absent in older JSON.
    #[serde(default)]
    pub features: AttentionFeatures,
    /// The sm_90a kernel's tile when the spec takes that kernel ([`hopper_route`]); `None` picks
    /// [`HopperTile::for_head_dim`]. Absent from JSON when `None`, so older JSON and the tuning
    /// keys of specs without it are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hopper_tile: Option<HopperTile>,
}

impl AttentionSpec {
    /// Multi-head attention with the default tile configuration.
    pub fn new(dtype: DType, head_dim: u32, causal: bool, heads_q: u32, heads_kv: u32) -> Self {
        AttentionSpec {
            dtype,
            head_dim,
            causal,
            heads_q,
            heads_kv,
            tile: None,
            features: AttentionFeatures::default(),
            hopper_tile: None,
        }
    }

    pub fn with_tile(mut self, tile: TileConfig) -> Self {
        self.tile = Some(tile);
        self
    }

    /// This spec with an explicit sm_90a tile (used where the spec takes the sm_90a kernel).
    pub fn with_hopper_tile(mut self, tile: HopperTile) -> Self {
        self.hopper_tile = Some(tile);
        self
    }

    pub fn with_features(mut self, features: AttentionFeatures) -> Self {
        self.features = features;
        self
    }

    /// Rows of the query tile a CTA covers per query position: GROUP with GQA packing (each query
    /// position contributes one row per head of the group), else 1.
    pub fn rows_per_query(&self) -> u32 {
        if self.features.pack_gqa {
            self.group()
        } else {
            1
        }
    }

    /// Query heads that share one key/value head (1 = MHA, heads_q = MQA).
    pub fn group(&self) -> u32 {
        self.heads_q / self.heads_kv.max(1)
    }

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

    pub fn validate(&self, arch: Arch) -> Result<(), SpecError> {
        if !ATTENTION_HEAD_DIMS.contains(&self.head_dim) {
            return Err(SpecError::unsupported("head_dim", self.head_dim, list(&ATTENTION_HEAD_DIMS)));
        }
        if self.heads_q == 0 || self.heads_kv == 0 || self.heads_q % self.heads_kv != 0 {
            return Err(SpecError::HeadsNotDivisible { heads_q: self.heads_q, heads_kv: self.heads_kv });
        }
        if self.features.tree && !self.causal {
            return Err(SpecError::unsupported(
                "features.tree",
                "with causal = false",
                "tree only with causal = true (the tree mask refines the causal mask of the candidate block)",
            ));
        }
        Arch::new(arch.sm)?;
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
        // An explicit sm_90a tile is checked on every target, against the sm_90a limits it is
        // used under, so a bad one fails here and not only on the machine that would render it.
        if let Some(hopper) = self.hopper_tile {
            hopper.validate(self.dtype, self.head_dim, Arch::SM90A)?;
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

    /// Every valid tile configuration for `arch`: the tuning space, pruned by shared memory and
    /// register budget.
    pub fn space(&self, arch: Arch) -> impl Iterator<Item = TileConfig> + '_ {
        WARPS.into_iter().flat_map(move |warps| {
            BLOCK_NS.into_iter().flat_map(move |block_n| {
                STAGES.into_iter().filter_map(move |stages| {
                    let tile = TileConfig::new(ROWS_PER_WARP * warps, block_n, warps, stages);
                    self.with_tile(tile).validate(arch).ok().map(|_| tile)
                })
            })
        })
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
        let tile = self.tile_for(arch);
        format!(
            "extern \"C\" __global__ void __launch_bounds__({threads}, 1)\n\
             {name}(const tessera::AttentionParams params) {{\n    \
             tessera::attention_fwd<{ty}, {d}, {bm}, {bn}, {w}, {s}, {causal}, {group}, {qreg}, {features}>(params);\n}}\n",
            threads = tile.threads(),
            name = self.kernel_name(arch),
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

    /// Validates, then renders the self-contained source. Deterministic: the same spec and arch
    /// always give the same bytes and so the same hash.
    pub fn render(&self, arch: Arch) -> Result<KernelSource, SpecError> {
        self.validate(arch)?;
        if let Ok(hopper) = hopper_route(self, arch) {
            return Ok(self.render_hopper(arch, hopper));
        }
        let tile = self.tile_for(arch);
        let header = format!(
            "// Generated by tessera-codegen: attention forward\n\
             // dtype={} head_dim={} causal={} heads_q={} heads_kv={} tile={} features={}\n",
            self.dtype, self.head_dim, self.causal, self.heads_q, self.heads_kv, tile, self.features
        );
        let src = Template::AttentionForward.assemble(&header, &self.entry_point(arch));
        let geometry = LaunchGeometry {
            threads_per_block: tile.threads(),
            dynamic_shared_bytes: self.shared_memory_bytes(tile),
        };
        Ok(KernelSource::new(self.kernel_name(arch), src, geometry))
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

    fn render_hopper(&self, arch: Arch, tile: HopperTile) -> KernelSource {
        let name = self.kernel_name(arch);
        let header = format!(
            "// Generated by tessera-codegen: attention forward, sm_90a (TMA + wgmma)\n\
             // dtype={} head_dim={} causal={} heads_q={} heads_kv={} block_n={} stages={}\n",
            self.dtype, self.head_dim, self.causal, self.heads_q, self.heads_kv, tile.block_n, tile.stages
        );
        let src = Template::AttentionHopper.assemble(&header, &hopper_entry_point(self, tile, &name));
        let geometry = LaunchGeometry {
            threads_per_block: HOPPER_THREADS,
            dynamic_shared_bytes: tile.shared_memory_bytes(self.dtype, self.head_dim),
        };
        KernelSource::new(name, src, geometry)
    }
}

/// Largest head_dim whose Q fragments stay in registers (see `q_in_registers`).
const Q_IN_REGISTERS_MAX_HEAD_DIM: u32 = 128;

fn list(values: &[u32]) -> String {
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AttentionSpec {
        AttentionSpec::new(DType::BF16, 128, true, 16, 4)
    }

    #[test]
    fn default_specs_validate_on_every_arch() {
        for arch in Arch::SUPPORTED {
            for d in ATTENTION_HEAD_DIMS {
                for dtype in DType::ALL {
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
        assert_eq!(s, AttentionSpec::new(DType::BF16, 64, true, 8, 2));
    }
}
