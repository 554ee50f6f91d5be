//! LoRA and bottleneck specs render, compile to PTX with NVRTC for sm_80 and sm_90, and assemble
//! with ptxas without spills and within the shared-memory limit, at every rank.
//!
//! Default coverage: for both archs, every rank with single and per-row adapters (per-row with a
//! bias + GELU + residual epilogue, the most live registers), rotating dtype, output type and
//! layouts, the unaligned variant at the largest rank, and the bottleneck at every rank.
//! `TESSERA_LORA_ALL_SPECS=1` adds both dtypes x output types for every case.

mod common;

use std::time::Instant;

use rayon::prelude::*;
use tessera_runtime::codegen::{
    Activation, AdapterMode, Arch, DType, Epilogue, Layout, LoraSpec, OutType, LORA_RANKS,
};
use tessera_runtime::{check_spec_with, Compiler};

fn specs() -> Vec<(LoraSpec, Arch)> {
    let all = std::env::var("TESSERA_LORA_ALL_SPECS").is_ok_and(|v| v == "1");
    let full = Epilogue { bias: true, activation: Activation::GeluTanh, residual: true };
    let mut specs = Vec::new();
    let mut rotate = 0usize;
    for arch in [Arch::SM80, Arch::SM90] {
        for rank in LORA_RANKS {
            let types: Vec<(DType, OutType)> = if all {
                DType::ALL.iter().flat_map(|&d| OutType::ALL.iter().map(move |&o| (d, o))).collect()
            } else {
                vec![(DType::ALL[rotate % 2], OutType::ALL[rotate % 3])]
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
    if !common::nvrtc_available() {
        return;
    }
    let started = Instant::now();
    // No disk cache: a stale entry must not make this pass.
    let compiler = Compiler::new();
    let specs = specs();
    let failures: Vec<String> = specs
        .par_iter()
        .filter_map(|(spec, arch)| {
            let label = format!("{arch} {}", spec.kernel_name(*arch));
            match check_spec_with(&compiler, *spec, *arch) {
                Ok(c) => {
                    if let Some(r) = &c.report {
                        eprintln!("{label}: {} registers, {} spill bytes", r.registers, r.spill_store_bytes + r.spill_load_bytes);
                    }
                    let problems = c.problems();
                    (!problems.is_empty()).then(|| format!("{label}: {}", problems.join("; ")))
                }
                Err(e) => Some(format!("{label}: {e}")),
            }
        })
        .collect();
    eprintln!("{} lora kernels in {:.1} s", specs.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), specs.len(), failures.join("\n"));
}
