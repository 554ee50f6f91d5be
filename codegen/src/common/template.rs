//! The CUDA C++ templates, embedded at build time so a binary needs no source tree at run time, and
//! their assembly into one translation unit with the generated host/device contract.
//!
//! `templates/` has one folder per kernel family and one for what they share:
//!
//! | folder | files |
//! | --- | --- |
//! | `common/` | `tessera.cuh` ([`PRELUDE`]), `tiles.cuh` ([`TILES`]), `hopper.cuh` ([`Template::Hopper`]) |
//! | `attention/` | `sm80.cuh` (mma.sync), `sm90a.cuh` (TMA + wgmma) |
//! | `gemm/` | `sm80.cuh`, `sm90a.cuh` |
//! | `lora/` | `sm80.cuh`, `sm90a.cuh` |
//! | `amp/` | `amp.cuh` (shared), `cast.cuh`, `unscale.cuh`, `adamw.cuh`, `scale.cuh` |
//! | `window/` | `window.cuh` |
//! | `elementwise/` | `map.cuh` |
//!
//! `sm80.cuh` runs on every architecture Tessera targets (mma.sync, cp.async); `sm90a.cuh` only on
//! sm_90a.

use super::params::Declarations;

/// Shared device helpers (`templates/common/tessera.cuh`): storage types, conversions, `mma.sync` /
/// `ldmatrix` / `cp.async` wrappers.
pub const PRELUDE: &str = include_str!("../../../templates/common/tessera.cuh");

/// Tile machinery shared by the kernel templates (`templates/common/tiles.cuh`: swizzled tiles, the
/// cp.async ring), written only in terms of [`PRELUDE`]'s primitives.
pub const TILES: &str = include_str!("../../../templates/common/tiles.cuh");

/// [`TILES`]' path relative to `templates/`.
const TILES_FILE: &str = "common/tiles.cuh";

/// One kernel template file under `templates/` ([`Template::file_name`] is its path there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    AttentionForward,
    /// sm_90a primitives and the vocabulary the sm_90a kernels are written in: mbarriers and the
    /// mbarrier ring (`PipelineState`, `MbarrierRing`), tensor-map copies, wgmma control,
    /// descriptors and the accumulator walker, named barriers, the shared-memory layout.
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
    /// The template's path relative to `templates/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Template::AttentionForward => "attention/sm80.cuh",
            Template::Hopper => "common/hopper.cuh",
            Template::AttentionHopper => "attention/sm90a.cuh",
            Template::Gemm => "gemm/sm80.cuh",
            Template::GemmHopper => "gemm/sm90a.cuh",
            Template::Lora => "lora/sm80.cuh",
            Template::LoraHopper => "lora/sm90a.cuh",
            Template::Amp => "amp/amp.cuh",
            Template::Cast => "amp/cast.cuh",
            Template::Unscale => "amp/unscale.cuh",
            Template::AdamW => "amp/adamw.cuh",
            Template::AmpScale => "amp/scale.cuh",
            Template::Map => "elementwise/map.cuh",
            Template::Window => "window/window.cuh",
        }
    }

    /// The template's source text.
    pub fn text(self) -> &'static str {
        match self {
            Template::AttentionForward => include_str!("../../../templates/attention/sm80.cuh"),
            Template::Hopper => include_str!("../../../templates/common/hopper.cuh"),
            Template::AttentionHopper => include_str!("../../../templates/attention/sm90a.cuh"),
            Template::Gemm => include_str!("../../../templates/gemm/sm80.cuh"),
            Template::GemmHopper => include_str!("../../../templates/gemm/sm90a.cuh"),
            Template::Lora => include_str!("../../../templates/lora/sm80.cuh"),
            Template::LoraHopper => include_str!("../../../templates/lora/sm90a.cuh"),
            Template::Amp => include_str!("../../../templates/amp/amp.cuh"),
            Template::Cast => include_str!("../../../templates/amp/cast.cuh"),
            Template::Unscale => include_str!("../../../templates/amp/unscale.cuh"),
            Template::AdamW => include_str!("../../../templates/amp/adamw.cuh"),
            Template::AmpScale => include_str!("../../../templates/amp/scale.cuh"),
            Template::Map => include_str!("../../../templates/elementwise/map.cuh"),
            Template::Window => include_str!("../../../templates/window/window.cuh"),
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
    /// Shared by every family (the sm_90a vocabulary): comes before the generated host/device
    /// contract, which may use its types (`TensorMap`).
    fn is_shared(self) -> bool {
        self == Template::Hopper
    }

    /// The whole translation unit NVRTC compiles: `header` comments, the prelude, the shared tile
    /// machinery, the shared templates this one requires, the host/device `contract` (the
    /// parameter structs and enums generated from their Rust definitions, inside `namespace
    /// tessera`, so the templates never declare them by hand), the family templates this one
    /// requires, this template, and the `extern "C"` instantiation `entry_point`.
    pub fn assemble(self, header: &str, contract: &Declarations, entry_point: &str) -> String {
        let mut src = format!("{header}{PRELUDE}\n// ---- templates/{TILES_FILE} ----\n{TILES}\n");
        let templates: Vec<Template> = self.requires().iter().copied().chain([self]).collect();
        let (shared, family): (Vec<Template>, Vec<Template>) = templates.into_iter().partition(|t| t.is_shared());
        for t in shared {
            src.push_str(&format!("// ---- templates/{} ----\n{}\n", t.file_name(), t.text()));
        }
        if !contract.is_empty() {
            src.push_str(&format!("{CONTRACT_MARKER}\nnamespace tessera {{\n\n{contract}\n}}  // namespace tessera\n\n"));
        }
        for t in family {
            src.push_str(&format!("// ---- templates/{} ----\n{}\n", t.file_name(), t.text()));
        }
        src.push_str("// ---- instantiation ----\n");
        src.push_str(entry_point);
        src
    }
}

/// The marker line before the generated host/device contract in a rendered source.
pub const CONTRACT_MARKER: &str = "// ---- generated from the Rust definitions (tessera-codegen): the host/device contract ----";

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Template; 14] = [
        Template::AttentionForward,
        Template::Hopper,
        Template::AttentionHopper,
        Template::Gemm,
        Template::GemmHopper,
        Template::Lora,
        Template::LoraHopper,
        Template::Amp,
        Template::Cast,
        Template::Unscale,
        Template::AdamW,
        Template::AmpScale,
        Template::Map,
        Template::Window,
    ];

    /// `file_name` and `text` (two separate matches) name the same file.
    #[test]
    fn file_names_name_the_embedded_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("templates/{name}: {e}"));
        for t in ALL {
            assert_eq!(read(t.file_name()), t.text(), "{t:?} embeds templates/{}", t.file_name());
        }
        assert_eq!(read("common/tessera.cuh"), PRELUDE);
        assert_eq!(read(TILES_FILE), TILES);
    }

    /// The translation unit names every file it embeds, in inclusion order, under its path.
    #[test]
    fn assembly_marks_every_file_in_order() {
        let src = Template::LoraHopper.assemble("// header\n", &Declarations::new(), "// entry point\n");
        assert!(src.starts_with(&format!("// header\n{PRELUDE}")));
        let markers: Vec<&str> =
            src.lines().filter(|l| l.starts_with("// ---- templates/") || *l == "// ---- instantiation ----").collect();
        assert_eq!(
            markers,
            [
                "// ---- templates/common/tiles.cuh ----",
                "// ---- templates/common/hopper.cuh ----",
                "// ---- templates/gemm/sm80.cuh ----",
                "// ---- templates/gemm/sm90a.cuh ----",
                "// ---- templates/lora/sm80.cuh ----",
                "// ---- templates/lora/sm90a.cuh ----",
                "// ---- instantiation ----",
            ]
        );
        assert!(src.ends_with("// ---- instantiation ----\n// entry point\n"));
    }
}
