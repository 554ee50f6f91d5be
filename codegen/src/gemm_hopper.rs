//! The sm_90a GEMM path: which specs take it, its fixed tile, and the rendering of
//! `templates/gemm_hopper.cuh` with the `wgmma` instruction it needs.
//!
//! A spec takes this path when the target has `wgmma` (sm_90a), the spec is aligned (X and W rows
//! are whole 16-byte chunks, which a tensor map needs), it has no user epilogue function, and its
//! tile is left to the default (an explicit or tuned [`crate::GemmTile`], split-K included, keeps
//! the mma.sync kernel). Everything else renders `templates/gemm.cuh`; [`gemm_hopper_route`] says
//! why. The sm_90a tile is [`HopperGemmTile::DEFAULT`] unless the spec carries an explicit one (its
//! `hopper_tile`, set by hand or by the tuner).

use serde::{Deserialize, Serialize};

use crate::gemm::list;
use crate::wgmma_asm::{wgmma_ops_struct, WgmmaA, WgmmaMethod};
use crate::{Arch, DType, GemmSpec, Layout, SpecError};

/// Threads of one CTA: a producer warpgroup and two consumer warpgroups.
pub const HOPPER_GEMM_THREADS: u32 = 384;
/// Output rows per CTA: 64 per consumer warpgroup.
pub const HOPPER_GEMM_BLOCK_M: u32 = 128;
/// Depth of one k-slice: 64 16-bit elements, one 128-byte swizzle span.
pub const HOPPER_GEMM_BLOCK_K: u32 = 64;

/// Output columns per CTA the template accepts (its `static_assert`): whole 64-column W boxes up to
/// the widest wgmma N. 256 columns are 128 f32 accumulators per consumer thread, well within the
/// 232 registers `setmaxnreg.inc` gives them.
const HOPPER_GEMM_BLOCK_NS: [u32; 4] = [64, 128, 192, 256];
/// Ring depths the template accepts (its `static_assert`).
const HOPPER_GEMM_STAGES: [u32; 7] = [2, 3, 4, 5, 6, 7, 8];
/// The tuner's share of those, to keep a search short: 64-column tiles read every X slice twice as
/// often per output as 128-column ones, 2 stages leave a single load in flight behind the slice
/// being multiplied, and 7 or 8 stages fit only the narrowest tiles. An explicit tile may take any
/// of the template's values.
const SPACE_BLOCK_NS: [u32; 3] = [128, 192, 256];
const SPACE_STAGES: [u32; 4] = [3, 4, 5, 6];

/// The sm_90a GEMM tile: `128 x block_n` outputs per CTA (each consumer warpgroup holds a
/// `64 x block_n` f32 accumulator tile, `block_n / 2` registers per thread), 64-deep k-slices of X
/// and W in a `stages`-deep ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HopperGemmTile {
    pub block_n: u32,
    pub stages: u32,
}

impl HopperGemmTile {
    /// 128 x 256 x 64 with 4 stages: 48 KiB per stage, 192 KiB of ring; 128 accumulators per
    /// consumer thread. `m64n256k16` is the widest wgmma: the most work per byte of X read.
    pub const DEFAULT: HopperGemmTile = HopperGemmTile { block_n: 256, stages: 4 };

    /// Elements of 16-bit type in one stage: the X slice (128 x 64) and the W slice (64 x block_n).
    pub fn stage_elements(&self) -> u32 {
        (HOPPER_GEMM_BLOCK_M + self.block_n) * HOPPER_GEMM_BLOCK_K
    }

    /// Dynamic shared memory: the ring, 2 * stages mbarriers, and 1 KB of alignment slack (the
    /// 128-byte swizzle wants 1024-byte aligned tiles).
    pub fn shared_memory_bytes(&self, dtype: DType) -> u32 {
        self.stages * self.stage_elements() * dtype.size_bytes() as u32 + 8 * 2 * self.stages + 1024
    }

    /// Checks the tile against the template (`hopper_tile.block_n`, `hopper_tile.stages`) and
    /// `arch`'s shared memory.
    pub fn validate(&self, dtype: DType, arch: Arch) -> Result<(), SpecError> {
        if !HOPPER_GEMM_BLOCK_NS.contains(&self.block_n) {
            return Err(SpecError::unsupported("hopper_tile.block_n", self.block_n, list(&HOPPER_GEMM_BLOCK_NS)));
        }
        if !HOPPER_GEMM_STAGES.contains(&self.stages) {
            return Err(SpecError::unsupported("hopper_tile.stages", self.stages, list(&HOPPER_GEMM_STAGES)));
        }
        let needed = self.shared_memory_bytes(dtype);
        let limit = arch.max_shared_memory_per_block();
        if needed > limit {
            return Err(SpecError::SharedMemory { tile: format!("sm90a_{self}"), needed, limit, arch: arch.to_string() });
        }
        Ok(())
    }

    /// The tuner's sm_90a tiles for `dtype` on `arch`: block_n 128, 192, 256 x 3 to 6 stages, where
    /// the ring fits shared memory.
    pub fn space(dtype: DType, arch: Arch) -> impl Iterator<Item = HopperGemmTile> {
        SPACE_BLOCK_NS.into_iter().flat_map(move |block_n| {
            SPACE_STAGES
                .into_iter()
                .map(move |stages| HopperGemmTile { block_n, stages })
                .filter(move |t| t.validate(dtype, arch).is_ok())
        })
    }
}

impl std::fmt::Display for HopperGemmTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m{HOPPER_GEMM_BLOCK_M}n{}k{HOPPER_GEMM_BLOCK_K}s{}", self.block_n, self.stages)
    }
}

/// Whether `spec` renders the sm_90a GEMM template on `arch`; `Err` carries the reason it does not.
pub fn gemm_hopper_route(spec: &GemmSpec, arch: Arch) -> Result<HopperGemmTile, String> {
    if !arch.has_wgmma() {
        return Err(format!("{arch} has no wgmma (sm_90a only)"));
    }
    if !spec.aligned {
        return Err("the element-wise (unaligned) variant runs on the mma.sync kernel".to_string());
    }
    if let Some(user) = spec.epilogue.user {
        return Err(format!("the user epilogue `{}` runs on the mma.sync kernel", user.name));
    }
    if let Some(tile) = spec.tile {
        if tile.split_k > 1 {
            return Err(format!("split-K tile {tile} runs on the mma.sync kernel"));
        }
        return Err("an mma.sync tile was given (or tuned) for this spec".to_string());
    }
    Ok(spec.hopper_tile.unwrap_or(HopperGemmTile::DEFAULT))
}

/// The comment of the `mma` method: `D (64 x n) {+}= X W` with the operands' majorness.
pub(crate) fn xw_comment(layout_x: Layout, layout_w: Layout, n: u32) -> String {
    format!(
        "D (64 x {n}) {{+}}= X W for one 16-deep k-step: X {}, W {}; `accumulate` false starts D at 0.",
        if layout_x == Layout::ColMajor { "MN-major" } else { "K-major" },
        if layout_w == Layout::RowMajor { "MN-major" } else { "K-major" },
    )
}

/// `mma`, one 16-deep k-step of `D (64 x n) {+}= X W` with both operands in shared memory. X is a
/// K-major A when row-major, MN-major when column-major; W is an MN-major B when row-major
/// (`[K, N]`, N contiguous), K-major when column-major (`[N, K]`). The LoRA kernel's main loop
/// uses the same method.
pub(crate) fn xw_method(comment: &str, layout_x: Layout, layout_w: Layout, n: u32, dtype: DType) -> WgmmaMethod<'_> {
    WgmmaMethod {
        comment,
        name: "mma",
        n,
        dtype,
        a: WgmmaA::Shared { desc: "desc_x", trans: layout_x == Layout::ColMajor },
        b_desc: "desc_w",
        trans_b: layout_w == Layout::RowMajor,
        accumulate_param: true,
    }
}

/// The `Ops` struct the template calls: `mma` (see [`xw_method`]).
fn wgmma_ops(spec: &GemmSpec, tile: HopperGemmTile) -> String {
    let comment = xw_comment(spec.layout_x, spec.layout_w, tile.block_n);
    wgmma_ops_struct(&[xw_method(&comment, spec.layout_x, spec.layout_w, tile.block_n, spec.dtype)])
}

/// The `extern "C"` entry point of the sm_90a GEMM kernel for `spec`.
pub(crate) fn gemm_hopper_entry_point(spec: &GemmSpec, tile: HopperGemmTile, name: &str) -> String {
    let e = spec.epilogue;
    let call = format!(
        "tessera::gemm_hopper<{}, {}, {}, {}, {}, {}, {}, {}, {}, TesseraWgmmaOps>",
        spec.dtype.cuda_type(),
        spec.out.cuda_type(),
        spec.layout_x == Layout::ColMajor,
        spec.layout_w == Layout::ColMajor,
        tile.block_n,
        tile.stages,
        e.bias,
        e.activation.code(),
        e.residual,
    );
    crate::wgmma_asm::hopper_entry_point(&wgmma_ops(spec, tile), HOPPER_GEMM_THREADS, name, "HopperGemmParams", &call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ElemType, GemmTile, OutType, UserFunction};

    #[test]
    fn routing_names_its_reason() {
        let spec = GemmSpec::new(DType::BF16, OutType::BF16);
        assert_eq!(gemm_hopper_route(&spec, Arch::SM90A), Ok(HopperGemmTile::DEFAULT));
        assert!(gemm_hopper_route(&spec, Arch::SM90).unwrap_err().contains("wgmma"));
        let unaligned = GemmSpec { aligned: false, ..spec };
        assert!(gemm_hopper_route(&unaligned, Arch::SM90A).unwrap_err().contains("unaligned"));
        let tiled = spec.with_tile(GemmSpec::default_tile(Arch::SM90A));
        assert!(gemm_hopper_route(&tiled, Arch::SM90A).unwrap_err().contains("mma.sync tile"));
        let split = spec.with_tile(GemmTile::new(64, 64, 32, 4, 2).with_split_k(2));
        assert!(gemm_hopper_route(&split, Arch::SM90A).unwrap_err().contains("split-K"));
        let user = UserFunction {
            name: "twice",
            cuda_name: "twice",
            cuda: "__device__ float twice(float x) { return 2.0f * x; }",
            inputs: &[ElemType::F32],
            output: ElemType::F32,
        };
        let mut custom = spec;
        custom.epilogue.user = Some(user);
        assert!(gemm_hopper_route(&custom, Arch::SM90A).unwrap_err().contains("twice"));
    }

    #[test]
    fn an_explicit_tile_is_routed_and_checked() {
        let spec = GemmSpec::new(DType::BF16, OutType::F32);
        let t = HopperGemmTile { block_n: 128, stages: 5 };
        let tuned = spec.with_hopper_tile(t);
        assert_eq!(gemm_hopper_route(&tuned, Arch::SM90A), Ok(t));
        assert_eq!(tuned.kernel_name(Arch::SM90A), "tessera_gemm_bf16_f32_rr_none_sm90a_m128n128k64s5");
        assert_eq!(tuned.cta_shape(Arch::SM90A), (384, 128, 128));
        let src = tuned.render(Arch::SM90A).unwrap();
        assert!(src.cuda_src.contains("gemm_hopper<tessera::bf16, float, false, false, 128, 5, false, 0, false, TesseraWgmmaOps>"));
        assert_eq!(src.geometry.dynamic_shared_bytes, 5 * (128 + 128) * 64 * 2 + 80 + 1024);
        // An mma.sync tile still forces the mma.sync kernel.
        let both = tuned.with_tile(GemmSpec::default_tile(Arch::SM90A));
        assert!(gemm_hopper_route(&both, Arch::SM90A).unwrap_err().contains("mma.sync tile"));

        let err = |block_n, stages| spec.with_hopper_tile(HopperGemmTile { block_n, stages }).validate(Arch::SM90A).unwrap_err();
        let bad_n = err(96, 4).to_string();
        assert!(bad_n.contains("hopper_tile.block_n") && bad_n.contains("`96`") && bad_n.contains("64, 128, 192, 256"), "{bad_n}");
        let bad_s = err(128, 9).to_string();
        assert!(bad_s.contains("hopper_tile.stages") && bad_s.contains("2, 3, 4, 5, 6, 7, 8"), "{bad_s}");
        // Five 48 KiB stages of 128 x 256 do not fit 227 KB.
        assert!(matches!(err(256, 5), SpecError::SharedMemory { .. }));
    }

    #[test]
    fn space_is_the_tuned_share_that_fits() {
        let space: Vec<HopperGemmTile> = HopperGemmTile::space(DType::F16, Arch::SM90A).collect();
        assert!(space.contains(&HopperGemmTile::DEFAULT));
        let expect = [(128, 3), (128, 4), (128, 5), (128, 6), (192, 3), (192, 4), (192, 5), (256, 3), (256, 4)];
        assert_eq!(space, expect.map(|(block_n, stages)| HopperGemmTile { block_n, stages }));
    }

    #[test]
    fn tile_fits_shared_memory() {
        for dtype in DType::ALL {
            let bytes = HopperGemmTile::DEFAULT.shared_memory_bytes(dtype);
            assert_eq!(bytes, 4 * (128 + 256) * 64 * 2 + 64 + 1024);
            assert!(bytes <= Arch::SM90A.max_shared_memory_per_block());
        }
    }

    #[test]
    fn sm90a_renders_the_hopper_template_and_others_do_not() {
        let spec = GemmSpec { layout_w: Layout::ColMajor, ..GemmSpec::new(DType::BF16, OutType::F32) };
        let src = spec.render(Arch::SM90A).unwrap();
        assert_eq!(src.name, "tessera_gemm_bf16_f32_rc_none_sm90a_m128n256k64s4");
        assert!(src.cuda_src.contains("// ---- templates/hopper.cuh ----"));
        assert!(src.cuda_src.contains(
            "gemm_hopper<tessera::bf16, float, false, true, 256, 4, false, 0, false, TesseraWgmmaOps>(params);"
        ));
        assert!(src.cuda_src.contains(&format!("{}(const __grid_constant__ tessera::HopperGemmParams params)", src.name)));
        assert_eq!(src.geometry.threads_per_block, HOPPER_GEMM_THREADS);
        assert_eq!(src.geometry.dynamic_shared_bytes, HopperGemmTile::DEFAULT.shared_memory_bytes(DType::BF16));
        assert_eq!(spec.cta_shape(Arch::SM90A), (384, 128, 256));
        assert_eq!(spec.cta_shape(Arch::SM90), (256, 128, 128));
        // sm_90 (no `a`) and an explicit tile render the mma.sync template.
        for s in [spec.render(Arch::SM90).unwrap(), spec.with_tile(GemmSpec::default_tile(Arch::SM90A)).render(Arch::SM90A).unwrap()] {
            assert!(!s.cuda_src.contains("gemm_hopper<") && s.cuda_src.contains("tessera::gemm<"), "{}", s.name);
        }
    }

    #[test]
    fn operand_majorness_follows_the_layouts() {
        let t = HopperGemmTile::DEFAULT;
        for (layout_x, layout_w, flags) in [
            (Layout::RowMajor, Layout::RowMajor, "p, 1, 1, 0, 1;"),
            (Layout::RowMajor, Layout::ColMajor, "p, 1, 1, 0, 0;"),
            (Layout::ColMajor, Layout::RowMajor, "p, 1, 1, 1, 1;"),
            (Layout::ColMajor, Layout::ColMajor, "p, 1, 1, 1, 0;"),
        ] {
            let spec = GemmSpec { layout_x, layout_w, ..GemmSpec::new(DType::F16, OutType::F32) };
            let ops = wgmma_ops(&spec, t);
            // 128 accumulators %0..%127, then X's and W's descriptors and the accumulate flag.
            assert!(ops.contains("m64n256k16.f32.f16.f16 {%0, %1,"), "{ops}");
            assert!(ops.contains(&format!("%127}}, %128, %129, {flags}")), "{layout_x} {layout_w}: {ops}");
            assert!(ops.contains("setp.ne.b32 p, %130, 0;"), "{ops}");
        }
    }
}
