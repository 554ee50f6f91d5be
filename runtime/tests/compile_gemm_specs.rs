//! GEMM specs render, compile to PTX with NVRTC for sm_80 and sm_90, and their default tiles
//! assemble with ptxas without spills and within the shared-memory limit.
//!
//! Default coverage (24 kernels, about 30 s on two cores): every (arch, dtype, output type, W
//! layout) with bias and residual on (the most registers in the epilogue) and the activation
//! rotating through all four, so every activation is assembled for every arch. With
//! `TESSERA_GEMM_ALL_SPECS=1` it is the full product, 384 kernels (measured: 0 spills, about 8
//! minutes on two cores: NVRTC plus ptxas take about 2.4 s per GEMM kernel).

mod common;

use std::time::Instant;

use rayon::prelude::*;
use tessera_runtime::codegen::{Activation, Arch, DType, Epilogue, GemmSpec, Layout, OutType};
use tessera_runtime::{run_ptxas, Compiler, Target};

fn specs() -> Vec<(GemmSpec, Arch)> {
    let all = std::env::var("TESSERA_GEMM_ALL_SPECS").is_ok_and(|v| v == "1");
    let extras = [(true, true), (false, false), (true, false), (false, true)];
    let mut specs = Vec::new();
    let mut rotate = 0usize;
    for arch in [Arch::SM80, Arch::SM90] {
        for dtype in DType::ALL {
            for out in OutType::ALL {
                for layout_w in Layout::ALL {
                    let spec = |activation, (bias, residual)| GemmSpec {
                        layout_w,
                        epilogue: Epilogue { bias, activation, residual },
                        ..GemmSpec::new(dtype, out)
                    };
                    if all {
                        for activation in Activation::ALL {
                            for extra in extras {
                                specs.push((spec(activation, extra), arch));
                            }
                        }
                    } else {
                        specs.push((spec(Activation::ALL[rotate % 4], extras[0]), arch));
                        rotate += 1;
                    }
                }
            }
        }
    }
    specs
}

#[test]
fn default_gemm_tiles_compile_without_spills() {
    if !common::nvrtc_available() {
        return;
    }
    let with_ptxas = common::ptxas_available();
    let started = Instant::now();
    // No disk cache: a stale entry must not make this pass.
    let compiler = Compiler::new();
    let specs = specs();
    let failures: Vec<String> = specs
        .par_iter()
        .filter_map(|(spec, arch)| {
            let label = format!("{arch} {}", spec.kernel_name(*arch));
            let run = || -> Result<Option<String>, String> {
                let source = spec.render(*arch).map_err(|e| e.to_string())?;
                let module = compiler.compile(&source, Target::ptx(*arch)).map_err(|e| e.to_string())?;
                if !with_ptxas {
                    return Ok(None);
                }
                let reports = run_ptxas(&module.image, *arch).map_err(|e| e.to_string())?;
                let report = reports.iter().find(|r| r.function == source.name).ok_or("no ptxas report")?;
                let shared = u64::from(report.shared_bytes) + u64::from(source.geometry.dynamic_shared_bytes);
                if report.spills() {
                    return Ok(Some(format!(
                        "spills {} / {} bytes ({} registers)",
                        report.spill_store_bytes, report.spill_load_bytes, report.registers
                    )));
                }
                if shared > u64::from(arch.max_shared_memory_per_block()) {
                    return Ok(Some(format!("needs {shared} bytes of shared memory")));
                }
                Ok(None)
            };
            match run() {
                Ok(None) => None,
                Ok(Some(problem)) => Some(format!("{label}: {problem}")),
                Err(e) => Some(format!("{label}: {e}")),
            }
        })
        .collect();
    eprintln!(
        "{} gemm kernels in {:.1} s on {} threads (ptxas: {with_ptxas})",
        specs.len(),
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), specs.len(), failures.join("\n"));
}
