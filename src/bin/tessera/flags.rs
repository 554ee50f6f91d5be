//! Spec flags shared by `emit`, `run` and `bench`, and the `list` text.

use clap::{Args, Subcommand};
use tessera::codegen::ATTENTION_HEAD_DIMS;
use tessera::{Arch, AttentionSpec, DType, TesseraError, TileConfig};

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

impl TileFlags {
    pub fn tile(&self, spec: &AttentionSpec, arch: Arch) -> Option<TileConfig> {
        if self.block_m.is_none() && self.block_n.is_none() && self.warps.is_none() && self.stages.is_none() {
            return None;
        }
        let d = AttentionSpec::default_tile(spec.head_dim, arch);
        let warps = self.warps.unwrap_or(d.warps);
        Some(TileConfig {
            block_m: self.block_m.unwrap_or(16 * warps),
            block_n: self.block_n.unwrap_or(d.block_n),
            warps,
            stages: self.stages.unwrap_or(d.stages),
        })
    }
}

pub fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    s.parse::<DType>().map_err(|e| e.to_string())
}

pub fn parse_arch(s: &str) -> std::result::Result<Arch, String> {
    s.parse::<Arch>().map_err(|e| e.to_string())
}

#[derive(Args, Clone, Debug)]
pub struct AttentionSpecFlags {
    /// Input element type: f16 or bf16.
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: DType,
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
    #[command(flatten)]
    pub tile: TileFlags,
}

impl AttentionSpecFlags {
    pub fn spec(&self) -> AttentionSpec {
        let mut spec = AttentionSpec::new(self.dtype, self.head_dim, self.causal, self.heads_q, self.heads_kv.unwrap_or(self.heads_q));
        spec.tile = self.tile.tile(&spec, self.arch);
        spec
    }
}

#[derive(Subcommand)]
pub enum EmitFamily {
    /// Tiled online-softmax attention forward.
    Attention(AttentionSpecFlags),
}

pub fn emit(family: EmitFamily) -> Result<()> {
    match family {
        EmitFamily::Attention(flags) => {
            let source = flags.spec().render(flags.arch).map_err(TesseraError::from)?;
            print!("{}", source.cuda_src);
            eprintln!("entry point: {}  hash: {}", source.name, source.hash);
            Ok(())
        }
    }
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
         \x20               block_n 32, 64, 128, 256, warps 4, 8, stages 1, 2, 3 (pruned by shared memory and registers)\n\
         \x20 --arch        {}\n\
         \x20 outputs       O in the input layout, optional LSE [batch, heads_q, seq_q] (natural log, f32)\n",
        dims.join(", "),
        archs.join(", ")
    )
}
