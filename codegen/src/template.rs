//! The CUDA C++ templates, embedded at build time so a binary needs no source tree at run time.

/// Shared device helpers: storage types, conversions, `mma.sync` / `ldmatrix` / `cp.async` wrappers.
pub const PRELUDE: &str = include_str!("../../templates/tessera.cuh");

/// Tile machinery shared by the kernel templates (swizzled tiles, the cp.async ring), written only
/// in terms of [`PRELUDE`]'s primitives.
pub const TILES: &str = include_str!("../../templates/tiles.cuh");

/// One kernel template file under `templates/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    AttentionForward,
    /// sm_90a primitives: mbarriers, tensor-map copies, wgmma control, descriptors.
    Hopper,
    /// Attention forward on TMA + wgmma (sm_90a); builds on [`Template::Hopper`] and
    /// [`Template::AttentionForward`] (its parameter struct and helpers).
    AttentionHopper,
    Gemm,
    /// GEMM on TMA + wgmma (sm_90a); builds on [`Template::Hopper`] and [`Template::Gemm`] (its
    /// parameter struct and epilogue).
    GemmHopper,
    /// Fused LoRA / bottleneck adapters; builds on [`Template::Gemm`].
    Lora,
    /// Fused single-adapter LoRA on TMA + wgmma (sm_90a); builds on [`Template::Hopper`],
    /// [`Template::Gemm`] (the epilogue), [`Template::GemmHopper`] (the X / W copies and
    /// descriptors) and [`Template::Lora`] (its parameter struct).
    LoraHopper,
    /// What the mixed-precision training kernels share (element types, fp8, vector I/O, tensor
    /// tables); no entry point of its own.
    Amp,
    Cast,
    Unscale,
    AdamW,
    /// Loss-scale and fp8-scale updates.
    AmpScale,
    /// User-defined elementwise kernels (`#[tessera::elementwise]`).
    Map,
    /// Sliding-window max / min / sum.
    Window,
}

impl Template {
    pub fn file_name(self) -> &'static str {
        match self {
            Template::AttentionForward => "attention_fwd.cuh",
            Template::Hopper => "hopper.cuh",
            Template::AttentionHopper => "attention_hopper.cuh",
            Template::Gemm => "gemm.cuh",
            Template::GemmHopper => "gemm_hopper.cuh",
            Template::Lora => "lora.cuh",
            Template::LoraHopper => "lora_hopper.cuh",
            Template::Amp => "amp.cuh",
            Template::Cast => "cast.cuh",
            Template::Unscale => "unscale.cuh",
            Template::AdamW => "adamw.cuh",
            Template::AmpScale => "amp_scale.cuh",
            Template::Map => "map.cuh",
            Template::Window => "window.cuh",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Template::AttentionForward => include_str!("../../templates/attention_fwd.cuh"),
            Template::Hopper => include_str!("../../templates/hopper.cuh"),
            Template::AttentionHopper => include_str!("../../templates/attention_hopper.cuh"),
            Template::Gemm => include_str!("../../templates/gemm.cuh"),
            Template::GemmHopper => include_str!("../../templates/gemm_hopper.cuh"),
            Template::Lora => include_str!("../../templates/lora.cuh"),
            Template::LoraHopper => include_str!("../../templates/lora_hopper.cuh"),
            Template::Amp => include_str!("../../templates/amp.cuh"),
            Template::Cast => include_str!("../../templates/cast.cuh"),
            Template::Unscale => include_str!("../../templates/unscale.cuh"),
            Template::AdamW => include_str!("../../templates/adamw.cuh"),
            Template::AmpScale => include_str!("../../templates/amp_scale.cuh"),
            Template::Map => include_str!("../../templates/map.cuh"),
            Template::Window => include_str!("../../templates/window.cuh"),
        }
    }

    /// Templates this one is written on top of, in inclusion order.
    pub fn requires(self) -> &'static [Template] {
        match self {
            Template::Lora => &[Template::Gemm],
            Template::AttentionHopper => &[Template::Hopper, Template::AttentionForward],
            Template::GemmHopper => &[Template::Hopper, Template::Gemm],
            Template::LoraHopper => &[Template::Hopper, Template::Gemm, Template::GemmHopper, Template::Lora],
            Template::Cast | Template::Unscale | Template::AdamW | Template::AmpScale | Template::Map | Template::Window => {
                &[Template::Amp]
            }
            _ => &[],
        }
    }
}

impl Template {
    /// The whole translation unit NVRTC compiles: `header` comments, the prelude, the shared tile
    /// machinery, the templates this one requires, this template, and the `extern "C"`
    /// instantiation `entry_point`.
    pub fn assemble(self, header: &str, entry_point: &str) -> String {
        let mut src = format!("{header}{PRELUDE}\n// ---- templates/tiles.cuh ----\n{TILES}\n");
        for t in self.requires().iter().chain([&self]) {
            src.push_str(&format!("// ---- templates/{} ----\n{}\n", t.file_name(), t.text()));
        }
        src.push_str("// ---- instantiation ----\n");
        src.push_str(entry_point);
        src
    }
}
