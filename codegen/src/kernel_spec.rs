//! Any family's spec behind one type, for code that treats kernels alike: `tessera check`, the
//! resource checks, tuning tables.

use serde::{Deserialize, Serialize};

use crate::amp::{AdamWSpec, CastSpec, ScaleUpdateSpec, UnscaleSpec};
use crate::attention::AttentionSpec;
use crate::common::{Arch, KernelSource, SpecError};
use crate::elementwise::MapSpec;
use crate::gemm::GemmSpec;
use crate::lora::LoraSpec;
use crate::window::WindowSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "family")]
pub enum KernelSpec {
    Attention(AttentionSpec),
    Gemm(GemmSpec),
    Lora(LoraSpec),
    Cast(CastSpec),
    Unscale(UnscaleSpec),
    AdamW(AdamWSpec),
    ScaleUpdate(ScaleUpdateSpec),
    Window(WindowSpec),
    /// A user-defined elementwise kernel; its CUDA text is compiled into the program, so it is
    /// not serialised.
    #[serde(skip)]
    Map(MapSpec),
}

impl KernelSpec {
    pub fn family(&self) -> &'static str {
        match self {
            KernelSpec::Attention(_) => "attention",
            KernelSpec::Gemm(_) => "gemm",
            KernelSpec::Lora(s) if s.is_bottleneck() => "bottleneck",
            KernelSpec::Lora(_) => "lora",
            KernelSpec::Cast(_) => "cast",
            KernelSpec::Unscale(_) => "unscale",
            KernelSpec::AdamW(_) => "adamw",
            KernelSpec::ScaleUpdate(_) => "scale_update",
            KernelSpec::Map(_) => "map",
            KernelSpec::Window(_) => "window",
        }
    }

    pub fn validate(&self, arch: Arch) -> Result<(), SpecError> {
        match self {
            KernelSpec::Attention(s) => s.validate(arch),
            KernelSpec::Gemm(s) => s.validate(arch),
            KernelSpec::Lora(s) => s.validate(arch),
            KernelSpec::Cast(s) => s.validate(arch),
            KernelSpec::Unscale(s) => s.validate(arch),
            KernelSpec::AdamW(s) => s.validate(arch),
            KernelSpec::ScaleUpdate(s) => s.validate(arch),
            KernelSpec::Map(s) => s.validate(arch),
            KernelSpec::Window(s) => s.validate(arch),
        }
    }

    pub fn render(&self, arch: Arch) -> Result<KernelSource, SpecError> {
        match self {
            KernelSpec::Attention(s) => s.render(arch),
            KernelSpec::Gemm(s) => s.render(arch),
            KernelSpec::Lora(s) => s.render(arch),
            KernelSpec::Cast(s) => s.render(arch),
            KernelSpec::Unscale(s) => s.render(arch),
            KernelSpec::AdamW(s) => s.render(arch),
            KernelSpec::ScaleUpdate(s) => s.render(arch),
            KernelSpec::Map(s) => s.render(arch),
            KernelSpec::Window(s) => s.render(arch),
        }
    }

    pub fn kernel_name(&self, arch: Arch) -> String {
        match self {
            KernelSpec::Attention(s) => s.kernel_name(arch),
            KernelSpec::Gemm(s) => s.kernel_name(arch),
            KernelSpec::Lora(s) => s.kernel_name(arch),
            KernelSpec::Cast(s) => s.kernel_name(),
            KernelSpec::Unscale(s) => s.kernel_name(),
            KernelSpec::AdamW(s) => s.kernel_name(),
            KernelSpec::ScaleUpdate(s) => s.kernel_name(),
            KernelSpec::Map(s) => s.kernel_name(),
            KernelSpec::Window(s) => s.kernel_name(),
        }
    }

    /// The tile the kernel uses on `arch`, as its short label (`m128n64w8s2`, `m128n128k32w8s3`;
    /// `sm90a_m128n256k64s4` where the sm_90a kernel runs).
    pub fn tile_label(&self, arch: Arch) -> String {
        match self {
            KernelSpec::Attention(_) | KernelSpec::Gemm(_) | KernelSpec::Lora(_) => {
                self.tile_choice(arch).map_or_else(String::new, |t| t.to_string())
            }
            KernelSpec::Cast(s) => s.tile().to_string(),
            KernelSpec::Unscale(s) => s.tile().to_string(),
            KernelSpec::AdamW(s) => s.tile().to_string(),
            KernelSpec::ScaleUpdate(_) => "t32".to_string(),
            KernelSpec::Map(s) => s.tile().to_string(),
            KernelSpec::Window(s) => s.tile().to_string(),
        }
    }
}

impl From<AttentionSpec> for KernelSpec {
    fn from(s: AttentionSpec) -> Self {
        KernelSpec::Attention(s)
    }
}

impl From<GemmSpec> for KernelSpec {
    fn from(s: GemmSpec) -> Self {
        KernelSpec::Gemm(s)
    }
}

impl From<LoraSpec> for KernelSpec {
    fn from(s: LoraSpec) -> Self {
        KernelSpec::Lora(s)
    }
}

impl From<CastSpec> for KernelSpec {
    fn from(s: CastSpec) -> Self {
        KernelSpec::Cast(s)
    }
}

impl From<UnscaleSpec> for KernelSpec {
    fn from(s: UnscaleSpec) -> Self {
        KernelSpec::Unscale(s)
    }
}

impl From<AdamWSpec> for KernelSpec {
    fn from(s: AdamWSpec) -> Self {
        KernelSpec::AdamW(s)
    }
}

impl From<ScaleUpdateSpec> for KernelSpec {
    fn from(s: ScaleUpdateSpec) -> Self {
        KernelSpec::ScaleUpdate(s)
    }
}

impl From<WindowSpec> for KernelSpec {
    fn from(s: WindowSpec) -> Self {
        KernelSpec::Window(s)
    }
}

impl From<MapSpec> for KernelSpec {
    fn from(s: MapSpec) -> Self {
        KernelSpec::Map(s)
    }
}
