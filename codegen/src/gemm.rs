//! Mixed-precision GEMM with a fused epilogue on `mma.sync.m16n8k16`.
//!
//! ```text
//! Y[M,N] = act(alpha * (X @ W)[M,N] + beta * C[M,N] + bias[N]) + residual[M,N]
//! ```
//!
//! Epilogue order, per element in f32 (the template `templates/gemm.cuh` and the reference
//! `tessera_runtime::reference::gemm` follow it exactly):
//! 1. `acc = sum_k X[m,k] * W[k,n]` (f32 accumulation of `dtype` products);
//! 2. `v = alpha * acc`; 3. `v += beta * C[m,n]` when a C tensor is given (a launch argument, not a
//!    spec field); 4. `v += bias[n]` when [`Epilogue::bias`]; 5. `v = act(v)`;
//! 6. `v += residual[m,n]` when [`Epilogue::residual`]; 7. round `v` to [`OutType`].
//!
//! C, bias, residual and Y are stored in the output type. X is row-major `[M, K]` or column-major,
//! i.e. stored `[K, M]` with M contiguous (a transposed activation); W is row-major `[K, N]` or
//! column-major, i.e. stored `[N, K]` with K contiguous (the layout of an `nn.Linear` weight).
//!
//! [`GemmSpec::aligned`] kernels move operands in 16-byte `cp.async` chunks, which needs whole
//! chunks per row (K, N for row-major W, M for column-major X and every row stride multiples of 8,
//! 16-byte aligned bases); the others load element by element and take any shape. The runtime
//! picks the aligned kernel whenever the problem allows it.
//!
//! On sm_90a an aligned spec without a user epilogue and without an explicit tile renders
//! `templates/gemm_hopper.cuh` instead (TMA loads into an mbarrier ring, `wgmma` from shared
//! memory, producer and consumer warpgroups; see [`crate::gemm_hopper_route`]), with the same
//! epilogue in the same order.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::gemm_hopper::{gemm_hopper_entry_point, gemm_hopper_route, HopperGemmTile, HOPPER_GEMM_THREADS};
use crate::{Arch, DType, KernelSource, LaunchGeometry, SpecError, Template, UserFunction, WARP_SIZE};

const BLOCK_MS: [u32; 3] = [32, 64, 128];
const BLOCK_NS: [u32; 4] = [32, 64, 128, 256];
const BLOCK_KS: [u32; 2] = [32, 64];
const WARPS: [u32; 2] = [4, 8];
const STAGES: [u32; 3] = [1, 2, 3];
/// K slices one output tile is split into (1: no split-K).
pub const SPLIT_KS: [u32; 4] = [1, 2, 4, 8];
/// Warps form a 2 x (warps / 2) grid over the CTA tile.
const WARPS_M: u32 = 2;
/// Most f32 accumulators one thread may hold: a 64 x 64 warp tile (128 x 256 on 8 warps, the
/// warp tile CUTLASS uses on sm_80 for large GEMMs: 8 ldmatrix per 32 mma instead of 6 per 16)
/// assembles without spills; more does not fit beside the fragments.
const MAX_ACCUMULATORS_PER_THREAD: u32 = 128;

/// Output (and C / bias / residual) element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutType {
    F16,
    BF16,
    F32,
}

impl OutType {
    pub const ALL: [OutType; 3] = [OutType::F16, OutType::BF16, OutType::F32];

    pub fn name(self) -> &'static str {
        match self {
            OutType::F16 => "f16",
            OutType::BF16 => "bf16",
            OutType::F32 => "f32",
        }
    }

    pub fn cuda_type(self) -> &'static str {
        match self {
            OutType::F16 => "tessera::f16",
            OutType::BF16 => "tessera::bf16",
            OutType::F32 => "float",
        }
    }

    pub fn size_bytes(self) -> usize {
        match self {
            OutType::F32 => 4,
            _ => 2,
        }
    }

    /// The 16-bit input type of the same name, if any.
    pub fn as_dtype(self) -> Option<DType> {
        match self {
            OutType::F16 => Some(DType::F16),
            OutType::BF16 => Some(DType::BF16),
            OutType::F32 => None,
        }
    }
}

impl fmt::Display for OutType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Memory layout of a matrix operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Rows contiguous: `[rows, cols]`.
    RowMajor,
    /// Columns contiguous: stored as `[cols, rows]`.
    ColMajor,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::RowMajor, Layout::ColMajor];

    pub fn name(self) -> &'static str {
        match self {
            Layout::RowMajor => "row_major",
            Layout::ColMajor => "col_major",
        }
    }

    pub(crate) fn letter(self) -> char {
        match self {
            Layout::RowMajor => 'r',
            Layout::ColMajor => 'c',
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Elementwise activation applied after bias, before the residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    None,
    Relu,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh,
    /// `x * sigmoid(x)`.
    Silu,
}

impl Activation {
    pub const ALL: [Activation; 4] = [Activation::None, Activation::Relu, Activation::GeluTanh, Activation::Silu];

    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Relu => "relu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
        }
    }

    /// The template's `ACT` parameter.
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::GeluTanh => 2,
            Activation::Silu => 3,
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to the accumulator before the store (see the module docs for the order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epilogue {
    pub bias: bool,
    pub activation: Activation,
    pub residual: bool,
    /// A user function (`#[tessera::elementwise]`, one input) applied after the activation and
    /// before the residual. Compiled into the program, so not serialised.
    #[serde(skip)]
    pub user: Option<UserFunction>,
}

impl Epilogue {
    /// `alpha * acc (+ beta * C)` only.
    pub const NONE: Epilogue = Epilogue { bias: false, activation: Activation::None, residual: false, user: None };
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue::NONE
    }
}

/// How one CTA of the GEMM divides its work: a `block_m x block_n` tile of Y, `block_k`-deep
/// slices of X and W through a `stages`-deep cp.async ring, `warps` warps in a 2 x (warps/2) grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GemmTile {
    pub block_m: u32,
    pub block_n: u32,
    pub block_k: u32,
    pub warps: u32,
    pub stages: u32,
    /// Split-K: the K loop of one output tile is divided among this many CTAs, whose f32 partial
    /// tiles the last CTA to finish adds in a fixed order before the epilogue (GEMM only; 1 = no
    /// split). For shapes with few output tiles and a long K.
    #[serde(default = "one")]
    pub split_k: u32,
}

fn one() -> u32 {
    1
}

impl GemmTile {
    pub const fn new(block_m: u32, block_n: u32, block_k: u32, warps: u32, stages: u32) -> Self {
        GemmTile { block_m, block_n, block_k, warps, stages, split_k: 1 }
    }

    pub const fn with_split_k(mut self, split_k: u32) -> Self {
        self.split_k = split_k;
        self
    }

    pub fn threads(&self) -> u32 {
        self.warps * WARP_SIZE
    }
}

impl fmt::Display for GemmTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}n{}k{}w{}s{}", self.block_m, self.block_n, self.block_k, self.warps, self.stages)?;
        if self.split_k > 1 {
            write!(f, "x{}", self.split_k)?;
        }
        Ok(())
    }
}

/// A tensor-core GEMM `Y = act(alpha X W + beta C + bias) + residual` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GemmSpec {
    /// X and W element type.
    pub dtype: DType,
    /// Y (and C, bias, residual) element type.
    pub out: OutType,
    pub layout_x: Layout,
    pub layout_w: Layout,
    pub epilogue: Epilogue,
    /// Whole 16-byte chunks per operand row (see the module docs); `false` accepts any shape.
    pub aligned: bool,
    /// `None` picks [`GemmSpec::default_tile`].
    pub tile: Option<GemmTile>,
    /// The sm_90a kernel's tile when the spec takes that kernel ([`gemm_hopper_route`]); `None`
    /// picks [`HopperGemmTile::DEFAULT`]. Absent from JSON when `None`, so older JSON and the
    /// tuning keys of specs without it are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hopper_tile: Option<HopperGemmTile>,
}

impl GemmSpec {
    /// Row-major X and W, no epilogue beyond alpha/beta, default tile.
    pub fn new(dtype: DType, out: OutType) -> Self {
        GemmSpec {
            dtype,
            out,
            layout_x: Layout::RowMajor,
            layout_w: Layout::RowMajor,
            epilogue: Epilogue::NONE,
            aligned: true,
            tile: None,
            hopper_tile: None,
        }
    }

    pub fn with_tile(mut self, tile: GemmTile) -> Self {
        self.tile = Some(tile);
        self
    }

    /// This spec with an explicit sm_90a tile (used where the spec takes the sm_90a kernel).
    pub fn with_hopper_tile(mut self, tile: HopperGemmTile) -> Self {
        self.hopper_tile = Some(tile);
        self
    }

    pub fn tile_for(&self, arch: Arch) -> GemmTile {
        self.tile.unwrap_or_else(|| Self::default_tile(arch))
    }

    /// 128x128 output tile, 32-deep k slices, 8 warps (64x32 each), 3 stages: 48 KiB of shared
    /// memory, 64 accumulators per thread; fits every supported architecture.
    pub fn default_tile(_arch: Arch) -> GemmTile {
        GemmTile::new(128, 128, 32, 8, 3)
    }

    pub fn validate(&self, arch: Arch) -> Result<(), SpecError> {
        Arch::new(arch.sm)?;
        if let Some(user) = &self.epilogue.user {
            user.validate_as_epilogue()?;
        }
        let tile = self.tile_for(arch);
        validate_tile(tile)?;
        let accumulators = self.accumulators_per_thread(tile);
        if accumulators > MAX_ACCUMULATORS_PER_THREAD {
            return Err(SpecError::unsupported(
                "tile",
                format!("{tile} ({accumulators} f32 accumulators per thread)"),
                format!("tiles with block_m x block_n / (32 x warps) <= {MAX_ACCUMULATORS_PER_THREAD} (lower block_m or block_n, or raise warps)"),
            ));
        }
        let needed = self.shared_memory_bytes(tile);
        let limit = arch.max_shared_memory_per_block();
        if needed > limit {
            return Err(SpecError::SharedMemory { tile: tile.to_string(), needed, limit, arch: arch.to_string() });
        }
        // An explicit sm_90a tile is checked on every target, against the sm_90a limits it is
        // used under, so a bad one fails here and not only on the machine that would render it.
        if let Some(hopper) = self.hopper_tile {
            hopper.validate(self.dtype, Arch::SM90A)?;
        }
        Ok(())
    }

    /// f32 accumulators one thread holds: its warp's `(block_m/2) x (block_n/(warps/2))` tile over
    /// 32 lanes.
    pub fn accumulators_per_thread(&self, tile: GemmTile) -> u32 {
        tile.block_m * tile.block_n / (WARP_SIZE * tile.warps.max(1))
    }

    /// Dynamic shared memory: `stages` X tiles (`block_m x block_k`) and W tiles (`block_k x block_n`).
    pub fn shared_memory_bytes(&self, tile: GemmTile) -> u32 {
        tile.stages * (tile.block_m + tile.block_n) * tile.block_k * self.dtype.size_bytes() as u32
    }

    /// Every valid tile configuration for `arch`.
    pub fn space(&self, arch: Arch) -> impl Iterator<Item = GemmTile> + '_ {
        self.space_unchecked().filter(move |t| self.with_tile(*t).validate(arch).is_ok())
    }

    /// Every combination of the tile fields' allowed values, valid or not.
    pub(crate) fn space_unchecked(&self) -> impl Iterator<Item = GemmTile> {
        WARPS.into_iter().flat_map(move |warps| {
            BLOCK_MS.into_iter().flat_map(move |block_m| {
                BLOCK_NS.into_iter().flat_map(move |block_n| {
                    BLOCK_KS.into_iter().flat_map(move |block_k| {
                        STAGES.into_iter().flat_map(move |stages| {
                            SPLIT_KS.into_iter().map(move |split| GemmTile::new(block_m, block_n, block_k, warps, stages).with_split_k(split))
                        })
                    })
                })
            })
        })
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
            Ok(t) => (HOPPER_GEMM_THREADS, crate::HOPPER_GEMM_BLOCK_M, t.block_n),
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
        let tile = self.tile_for(arch);
        format!(
            "{user}extern \"C\" __global__ void __launch_bounds__({threads}, 1)\n\
             {name}(const tessera::GemmParams params) {{\n    \
             tessera::gemm<{ty}, {to}, {xcol}, {wcol}, {bm}, {bn}, {bk}, {w}, {s}, {split}, {aligned}, {bias}, {act}, {has_user}, {res}>(params);\n}}\n",
            split = tile.split_k,
            user = self.epilogue.user.map_or(String::new(), |u| u.epilogue_definition()),
            has_user = self.epilogue.user.is_some(),
            threads = tile.threads(),
            name = self.kernel_name(arch),
            ty = self.dtype.cuda_type(),
            to = self.out.cuda_type(),
            xcol = self.layout_x == Layout::ColMajor,
            wcol = self.layout_w == Layout::ColMajor,
            aligned = self.aligned,
            bm = tile.block_m,
            bn = tile.block_n,
            bk = tile.block_k,
            w = tile.warps,
            s = tile.stages,
            bias = self.epilogue.bias,
            act = self.epilogue.activation.code(),
            res = self.epilogue.residual,
        )
    }

    /// Validates, then renders the self-contained source. Deterministic.
    pub fn render(&self, arch: Arch) -> Result<KernelSource, SpecError> {
        self.validate(arch)?;
        if let Ok(hopper) = gemm_hopper_route(self, arch) {
            return Ok(self.render_hopper(arch, hopper));
        }
        let tile = self.tile_for(arch);
        let e = self.epilogue;
        let header = format!(
            "// Generated by tessera-codegen: gemm\n\
             // dtype={} out={} layout_x={} layout_w={} bias={} activation={} residual={} aligned={} tile={}\n",
            self.dtype, self.out, self.layout_x, self.layout_w, e.bias, e.activation, e.residual, self.aligned, tile
        );
        let src = Template::Gemm.assemble(&header, &self.entry_point(arch));
        let geometry =
            LaunchGeometry { threads_per_block: tile.threads(), dynamic_shared_bytes: self.shared_memory_bytes(tile) };
        Ok(KernelSource::new(self.kernel_name(arch), src, geometry))
    }

    fn render_hopper(&self, arch: Arch, tile: HopperGemmTile) -> KernelSource {
        let name = self.kernel_name(arch);
        let e = self.epilogue;
        let header = format!(
            "// Generated by tessera-codegen: gemm, sm_90a (TMA + wgmma)\n\
             // dtype={} out={} layout_x={} layout_w={} bias={} activation={} residual={} tile={}\n",
            self.dtype, self.out, self.layout_x, self.layout_w, e.bias, e.activation, e.residual, tile
        );
        let src = Template::GemmHopper.assemble(&header, &gemm_hopper_entry_point(self, tile, &name));
        let geometry = LaunchGeometry {
            threads_per_block: HOPPER_GEMM_THREADS,
            dynamic_shared_bytes: tile.shared_memory_bytes(self.dtype),
        };
        KernelSource::new(name, src, geometry)
    }
}

/// The tile fields every GEMM-shaped kernel shares (also used by `LoraSpec`).
pub(crate) fn validate_tile(tile: GemmTile) -> Result<(), SpecError> {
    if !WARPS.contains(&tile.warps) {
        return Err(SpecError::unsupported("tile.warps", tile.warps, list(&WARPS)));
    }
    if !BLOCK_MS.contains(&tile.block_m) {
        return Err(SpecError::unsupported("tile.block_m", tile.block_m, list(&BLOCK_MS)));
    }
    if !BLOCK_NS.contains(&tile.block_n) {
        return Err(SpecError::unsupported("tile.block_n", tile.block_n, list(&BLOCK_NS)));
    }
    let warps_n = tile.warps / WARPS_M;
    if tile.block_n % (16 * warps_n) != 0 {
        return Err(SpecError::unsupported(
            "tile.block_n",
            tile.block_n,
            format!(
                "multiples of {} with {} warps (each of the {warps_n} warp columns owns whole 16-column fragments)",
                16 * warps_n,
                tile.warps
            ),
        ));
    }
    if !BLOCK_KS.contains(&tile.block_k) {
        return Err(SpecError::unsupported("tile.block_k", tile.block_k, list(&BLOCK_KS)));
    }
    if !STAGES.contains(&tile.stages) {
        return Err(SpecError::unsupported("tile.stages", tile.stages, list(&STAGES)));
    }
    if !SPLIT_KS.contains(&tile.split_k) {
        return Err(SpecError::unsupported("tile.split_k", tile.split_k, list(&SPLIT_KS)));
    }
    Ok(())
}

pub(crate) fn list(values: &[u32]) -> String {
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GemmSpec {
        GemmSpec {
            layout_w: Layout::ColMajor,
            epilogue: Epilogue { user: None, bias: true, activation: Activation::GeluTanh, residual: true },
            ..GemmSpec::new(DType::BF16, OutType::F32)
        }
    }

    #[test]
    fn default_specs_validate_on_every_arch() {
        for arch in Arch::SUPPORTED {
            for dtype in DType::ALL {
                for out in OutType::ALL {
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
