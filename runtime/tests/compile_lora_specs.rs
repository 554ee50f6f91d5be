//! LoRA and bottleneck specs render, compile to PTX with NVRTC for sm_80 and sm_90, and assemble
//! with ptxas without spills and within the shared-memory limit, at every rank.
//!
//! Default coverage: for both archs, every rank with single and per-row adapters (per-row with a
//! bias + GELU + residual epilogue, the most live registers), rotating dtype, output type and
//! layouts, the unaligned variant at the largest rank, and the bottleneck at every rank.
//! `TESSERA_LORA_ALL_SPECS=1` adds both dtypes x output types for every case.

mod common;

use tessera_runtime::codegen::{Activation, AdapterMode, Arch, ElemType, Epilogue, Layout, LoraSpec, LORA_RANKS};

fn specs() -> Vec<(LoraSpec, Arch)> {
    let all = std::env::var("TESSERA_LORA_ALL_SPECS").is_ok_and(|v| v == "1");
    let full = Epilogue { user: None, bias: true, activation: Activation::GeluTanh, residual: true };
    let mut specs = Vec::new();
    let mut rotate = 0usize;
    for arch in [Arch::SM80, Arch::SM90] {
        for rank in LORA_RANKS {
            let types: Vec<(ElemType, ElemType)> = if all {
                ElemType::MMA_INPUTS.iter().flat_map(|&d| ElemType::MMA_OUTPUTS.iter().map(move |&o| (d, o))).collect()
            } else {
                vec![(ElemType::MMA_INPUTS[rotate % 2], ElemType::MMA_OUTPUTS[rotate % 3])]
            };
            for (dtype, out) in types {
                let layout = Layout::ALL[rotate % 2];
                let base = LoraSpec { layout_w: layout, ..LoraSpec::new(dtype, out, rank) };
                specs.push((base, arch));
                specs.push((
                    LoraSpec { adapters: AdapterMode::PerRow, epilogue: full, layout_x: layout, ..base },
                    arch,
                ));
                specs.push((LoraSpec::bottleneck(dtype, out, rank, Activation::ALL[rotate % 4]), arch));
                if rank == 128 {
                    specs.push((LoraSpec { aligned: false, adapters: AdapterMode::PerRow, ..base }, arch));
                }
                rotate += 1;
            }
        }
    }
    specs
}

#[test]
fn default_lora_tiles_compile_without_spills() {
    let specs: Vec<_> = specs().into_iter().map(|(s, a)| (s.into(), a)).collect();
    common::assert_specs_fit("lora", &specs);
}
