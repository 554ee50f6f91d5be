//! Spec flags shared by `emit`, `run` and `bench`, and the `list` text.

use clap::{Args, Subcommand};
use tessera::codegen::ATTENTION_HEAD_DIMS;
use tessera::codegen::{Activation, AdapterMode, Epilogue, GemmSpec, GemmTile, Layout, LoraSpec, ElemType, LORA_RANKS};
use tessera::{Arch, AttentionFeatures, AttentionSpec, SpecError, TesseraError, TileConfig};

use crate::Result;

/// Tile overrides; all four or none.
#[derive(Args, Clone, Debug, Default)]
pub struct TileFlags {
    /// Query rows per CTA (16 x warps).
    #[arg(long)]
    pub block_m: Option<u32>,
    /// Keys per K/V tile.
    #[arg(long)]
    pub block_n: Option<u32>,
    /// Warps per CTA.
    #[arg(long)]
    pub warps: Option<u32>,
    /// K/V tiles in flight (1 = no overlap, 2 = double buffering).
    #[arg(long)]
    pub stages: Option<u32>,
}

/// Query rows each warp of the mma.sync attention kernel owns (the default block_m per warp).
const ROWS_PER_WARP: u32 = 16;

impl TileFlags {
    pub fn tile(&self, spec: &AttentionSpec, arch: Arch) -> Option<TileConfig> {
        if self.block_m.is_none() && self.block_n.is_none() && self.warps.is_none() && self.stages.is_none() {
            return None;
        }
        let d = spec.default_tile_for(arch);
        let warps = self.warps.unwrap_or(d.warps);
        Some(TileConfig {
            // Saturating: an absurd --warps must reach the spec's "unsupported tile.warps" message.
            block_m: self.block_m.unwrap_or(warps.saturating_mul(ROWS_PER_WARP)),
            block_n: self.block_n.unwrap_or(d.block_n),
            warps,
            stages: self.stages.unwrap_or(d.stages),
        })
    }
}

/// GEMM / LoRA tile overrides; any subset, the rest from the spec's default tile.
#[derive(Args, Clone, Debug, Default)]
pub struct GemmTileFlags {
    /// Output rows per CTA: 32, 64, 128.
    #[arg(long)]
    pub block_m: Option<u32>,
    /// Output columns per CTA: 32, 64, 128.
    #[arg(long)]
    pub block_n: Option<u32>,
    /// K slice per pipeline stage: 32, 64.
    #[arg(long)]
    pub block_k: Option<u32>,
    /// Warps per CTA: 4, 8.
    #[arg(long)]
    pub warps: Option<u32>,
    /// Slices in flight: 1, 2, 3.
    #[arg(long)]
    pub stages: Option<u32>,
    /// GEMM split-K: 1, 2, 4, 8 CTAs per output tile.
    #[arg(long)]
    pub split_k: Option<u32>,
}

impl GemmTileFlags {
    /// `None` when no flag is given; otherwise `default` with the given fields replaced.
    pub fn tile(&self, default: GemmTile) -> Option<GemmTile> {
        let any = [self.block_m, self.block_n, self.block_k, self.warps, self.stages, self.split_k].iter().any(Option::is_some);
        any.then(|| GemmTile {
            block_m: self.block_m.unwrap_or(default.block_m),
            block_n: self.block_n.unwrap_or(default.block_n),
            block_k: self.block_k.unwrap_or(default.block_k),
            warps: self.warps.unwrap_or(default.warps),
            stages: self.stages.unwrap_or(default.stages),
            split_k: self.split_k.unwrap_or(default.split_k),
        })
    }
}

fn parse_named<T: Copy>(s: &str, what: &str, values: &[(&str, T)]) -> std::result::Result<T, String> {
    values.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| {
        let allowed: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        format!("unsupported {what} `{s}`: allowed values are {}", allowed.join(", "))
    })
}

pub fn parse_layout(s: &str) -> std::result::Result<Layout, String> {
    parse_named(s, "layout", &[("row", Layout::RowMajor), ("col", Layout::ColMajor)])
}

pub fn parse_out_type(s: &str) -> std::result::Result<ElemType, String> {
    parse_named(s, "output type", &[("f16", ElemType::F16), ("bf16", ElemType::BF16), ("f32", ElemType::F32)])
}

pub fn parse_activation(s: &str) -> std::result::Result<Activation, String> {
    parse_named(
        s,
        "activation",
        &[
            ("none", Activation::None),
            ("relu", Activation::Relu),
            ("gelu_tanh", Activation::GeluTanh),
            ("silu", Activation::Silu),
        ],
    )
}

#[derive(Args, Clone, Debug)]
pub struct GemmSpecFlags {
    /// Input element type: f16 or bf16.
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: ElemType,
    /// Output element type: f16, bf16 or f32 (default: the input type).
    #[arg(long, value_parser = parse_out_type)]
    pub out_type: Option<ElemType>,
    /// X stored row-major [M, K] (row) or column-major [K, M] (col).
    #[arg(long, default_value = "row", value_parser = parse_layout)]
    pub x_layout: Layout,
    /// W stored row-major [K, N] (row) or column-major [N, K] (col, nn.Linear's weight).
    #[arg(long, default_value = "row", value_parser = parse_layout)]
    pub w_layout: Layout,
    #[arg(long)]
    pub bias: bool,
    /// none, relu, gelu_tanh, silu.
    #[arg(long, default_value = "none", value_parser = parse_activation)]
    pub activation: Activation,
    #[arg(long)]
    pub residual: bool,
    /// The element-wise kernel for shapes whose rows are not whole 16-byte chunks.
    #[arg(long)]
    pub unaligned: bool,
    /// Target architecture.
    #[arg(long, default_value = "sm_80", value_parser = parse_arch)]
    pub arch: Arch,
    #[command(flatten)]
    pub tile: GemmTileFlags,
}

impl GemmSpecFlags {
    pub fn spec(&self) -> GemmSpec {
        let mut spec = GemmSpec {
            layout_x: self.x_layout,
            layout_w: self.w_layout,
            epilogue: Epilogue { user: None, bias: self.bias, activation: self.activation, residual: self.residual },
            aligned: !self.unaligned,
            ..GemmSpec::new(self.dtype, self.out_type.unwrap_or(self.dtype))
        };
        spec.tile = self.tile.tile(GemmSpec::default_tile(self.arch));
        spec
    }
}

#[derive(Args, Clone, Debug)]
pub struct LoraSpecFlags {
    #[command(flatten)]
    pub gemm: GemmSpecFlags,
    /// Adapter rank.
    #[arg(long)]
    pub rank: u32,
    /// Stacked adapters with an id per row of X.
    #[arg(long)]
    pub per_row: bool,
    /// The bottleneck adapter Y = X + f(X A) B with this f instead of LoRA.
    #[arg(long, value_parser = parse_activation)]
    pub bottleneck: Option<Activation>,
}

impl LoraSpecFlags {
    pub fn spec(&self) -> LoraSpec {
        let g = self.gemm.spec();
        let mut spec = match self.bottleneck {
            Some(f) => LoraSpec::bottleneck(g.dtype, g.out, self.rank, f),
            None => LoraSpec { layout_w: g.layout_w, epilogue: g.epilogue, ..LoraSpec::new(g.dtype, g.out, self.rank) },
        };
        spec.layout_x = g.layout_x;
        spec.aligned = g.aligned;
        if self.per_row {
            spec.adapters = AdapterMode::PerRow;
        }
        spec.tile = self.gemm.tile.tile(spec.default_tile(self.gemm.arch));
        spec
    }
}

/// `--dtype`: the tensor-core input types only (f32 and fp8 are AMP-kernel types).
pub fn parse_dtype(s: &str) -> std::result::Result<ElemType, String> {
    let unsupported = || SpecError::unsupported("dtype", s, "f16, bf16").to_string();
    let t = s.parse::<ElemType>().map_err(|_| unsupported())?;
    if ElemType::MMA_INPUTS.contains(&t) {
        Ok(t)
    } else {
        Err(unsupported())
    }
}

pub fn parse_arch(s: &str) -> std::result::Result<Arch, String> {
    s.parse::<Arch>().map_err(|e| e.to_string())
}

#[derive(Args, Clone, Debug)]
pub struct AttentionSpecFlags {
    /// Input element type: f16 or bf16.
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: ElemType,
    /// Head dimension.
    #[arg(long)]
    pub head_dim: u32,
    /// Causal mask, aligned bottom-right when seq_q != seq_k.
    #[arg(long)]
    pub causal: bool,
    /// Query heads.
    #[arg(long, default_value_t = 8)]
    pub heads_q: u32,
    /// Key/value heads (default: heads_q, i.e. MHA).
    #[arg(long)]
    pub heads_kv: Option<u32>,
    /// Target architecture.
    #[arg(long, default_value = "sm_80", value_parser = parse_arch)]
    pub arch: Arch,
    /// Attention variants, comma-separated: local, alibi, softcap, prefix, tree, varlen, paged,
    /// pack_gqa, split_kv (default: none).
    #[arg(long, default_value = "", value_parser = parse_features)]
    pub features: AttentionFeatures,
    #[command(flatten)]
    pub tile: TileFlags,
}

pub fn parse_features(s: &str) -> std::result::Result<AttentionFeatures, String> {
    AttentionFeatures::parse(s).map_err(|e| e.to_string())
}

impl AttentionSpecFlags {
    pub fn spec(&self) -> AttentionSpec {
        let mut spec = AttentionSpec::new(self.dtype, self.head_dim, self.causal, self.heads_q, self.heads_kv.unwrap_or(self.heads_q))
            .with_features(self.features);
        spec.tile = self.tile.tile(&spec, self.arch);
        spec
    }
}

#[derive(Subcommand)]
pub enum EmitFamily {
    /// Tiled online-softmax attention forward.
    Attention(AttentionSpecFlags),
    /// Mixed-precision GEMM with a fused epilogue.
    Gemm(GemmSpecFlags),
    /// Fused LoRA (or, with --bottleneck, the bottleneck adapter).
    Lora(LoraSpecFlags),
}

pub fn emit(family: EmitFamily) -> Result<()> {
    let source = match family {
        EmitFamily::Attention(flags) => flags.spec().render(flags.arch),
        EmitFamily::Gemm(flags) => flags.spec().render(flags.arch),
        EmitFamily::Lora(flags) => flags.spec().render(flags.gemm.arch),
    }
    .map_err(TesseraError::from)?;
    print!("{}", source.cuda_src);
    eprintln!("entry point: {}  hash: {}", source.name, source.hash);
    Ok(())
}

pub fn family_list() -> String {
    let dims: Vec<String> = ATTENTION_HEAD_DIMS.iter().map(u32::to_string).collect();
    let archs: Vec<String> = Arch::SUPPORTED.iter().map(Arch::to_string).collect();
    format!(
        "attention  tiled online-softmax attention forward (FlashAttention-2 schedule, mma.sync.m16n8k16)\n\
         \x20 --dtype       f16, bf16 (f32 accumulation)\n\
         \x20 --head-dim    {}\n\
         \x20 --causal      causal mask, aligned bottom-right when seq_q != seq_k\n\
         \x20 --heads-q/--heads-kv  MHA (equal), GQA (heads_q a multiple of heads_kv), MQA (heads_kv 1)\n\
         \x20 --block-m/--block-n/--warps/--stages  tile config: block_m = 16 x warps (64, 128),\n\
         \x20               block_n 16, 32, 64, 128, 256, warps 4, 8, stages 1, 2, 3 (pruned by shared memory and registers)\n\
         \x20 --arch        {}\n\
         \x20 sm_90a        head_dim 64/128/256, plain or with window / ALiBi / softcap: TMA + wgmma kernel (a\n\
         \x20               producer and two consumer warpgroups, 128 rows per CTA); the other variants, other head\n\
         \x20               dims, a --block-* tile or tensors a tensor map cannot describe run the mma.sync kernel\n\
         \x20               (the launch log says why)\n\
         \x20 --features    variants (emit/check), comma-separated: {}\n\
         \x20 outputs       O in the input layout, optional LSE [batch, heads_q, seq_q] (natural log, f32)\n\
         \x20 variants on `run attention` (each turns its feature on; they combine):\n\
         \x20   --window-left L --window-right R   sliding window around the diagonal (either side alone)\n\
         \x20   --softcap CAP                      score = CAP tanh(score / CAP)\n\
         \x20   --alibi-slopes s.npy               f32 [heads_q]: score -= slope |qpos - kpos|\n\
         \x20   --prefix-k pk.npy --prefix-v pv.npy  [prefix_len, heads_kv, head_dim], visible to every query\n\
         \x20   --tree-parents p.npy               int [n_tree] or [batch, n_tree] (-1 root, parent < node); the last\n\
         \x20                                      n_tree queries and keys are the candidates (needs --causal)\n\
         \x20   --cu-seqlens-q cq.npy --cu-seqlens-k ck.npy  int [batch + 1]: Q [total_q, heads_q, d],\n\
         \x20                                      K/V [total_k, heads_kv, d], LSE [heads_q, total_q]\n\
         \x20   --block-table bt.npy --seq-lens n.npy  int [batch, max_pages], [batch]: paged K/V\n\
         \x20                                      [num_pages, page_size, heads_kv, d], page_size a power of two >= 16\n\
         \x20   --pack-gqa                         all query heads of one KV head in one CTA (decode)\n\
         \x20   --num-splits N                     split keys across N CTAs, merged through the LSE (0: automatic)\n\
         gemm       Y = act(alpha X W + beta C + bias) + residual on mma.sync.m16n8k16, f32 accumulation\n\
         \x20 --dtype f16, bf16   --out-type f16, bf16, f32   --x-layout/--w-layout row, col\n\
         \x20 --bias --activation none, relu, gelu_tanh, silu --residual\n\
         \x20 --block-m 32, 64, 128  --block-n 32, 64, 128  --block-k 32, 64  --warps 4, 8  --stages 1, 2, 3\n\
         \x20 any M, N, K (rows that are not whole 16-byte chunks run the element-wise kernel)\n\
         \x20 sm_90a      aligned, no split-K or --block-* tile: TMA + wgmma kernel (128x256x64, 4 stages)\n\
         lora       Y = act(X W + s (X A_i) B_i + bias) + residual in one launch, the rank-r intermediate on chip\n\
         \x20 --rank      {}\n\
         \x20 --per-row   stacked adapters A [n, K, r], B [n, r, N], an int32/int64 id per row of X (-1: none)\n\
         \x20 --bottleneck ACT   Y = X + s ACT(X A) B instead (N = K)\n\
         \x20 gemm's --dtype/--out-type/layout/epilogue/tile flags; block_m >= 16 x warps\n\
         \x20 sm_90a      single adapter, aligned, no --block-* tile: TMA + wgmma kernel (X A on the main loop,\n\
         \x20             T' B from registers); per-row adapters and the bottleneck run the mma.sync kernel\n\
         cast       element type conversion: --from/--to f32, f16, bf16, e4m3, e5m2; --scale S (one f32 multiply first);\n\
         \x20 --amax-out (max |x|, NaN ignored); round to nearest even, fp8 saturating\n\
         unscale    g *= inv_scale over a list of f32/f16/bf16 tensors in one launch, found_inf if any inf/NaN\n\
         adamw      one AdamW step over a list: f32 master weights and moments, f32/f16/bf16 grads, f16/bf16 model\n\
         \x20 weights; lr and step on the device; skipped entirely when found_inf is set\n\
         \x20 elementwise tile flags: --threads 128, 256, 512  --elems-per-thread 4, 8, 16, 32  --vector 1, 2, 4, 8\n\
         scale updates (library): GradScaler loss-scale rules; fp8 delayed scaling from an amax history\n\
         window-max / window-min / window-sum   max, min or sum over every width-k window of each row\n\
         \x20 (van Herk / Gil-Werman: O(n) per row for any k); --k K --x x.npy [--dtype f32|f16|bf16];\n\
         \x20 max / min skip NaN (fmaxf / fminf) unless the whole window is NaN; a NaN in a sum gives NaN\n",
        dims.join(", "),
        archs.join(", "),
        AttentionFeatures::NAMES.join(", "),
        LORA_RANKS.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    )
}

/// The kernels declared with the tessera macros and linked into this program (the registry).
pub fn registry_list() -> String {
    let kernels = tessera::registry::kernels();
    let mut out = format!("\nregistered kernels ({}; declared with #[tessera::attention|gemm|lora|elementwise]):\n", kernels.len());
    for k in kernels {
        out.push_str(&format!(
            "  {:<24} {:<11} {}::{}  ({})\n",
            k.name,
            k.spec.family(),
            k.module,
            k.name,
            k.spec.kernel_name(Arch::SM80)
        ));
    }
    out
}
