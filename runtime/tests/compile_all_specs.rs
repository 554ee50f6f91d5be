//! Every supported attention spec renders, compiles to PTX with NVRTC for sm_80 and sm_90, and its
//! default tile configuration assembles without spills and within the shared-memory limit.

mod common;

use std::time::Instant;

use rayon::prelude::*;
use tessera_runtime::codegen::{Arch, AttentionSpec, ElemType, ATTENTION_HEAD_DIMS};
use tessera_runtime::{check_spec_with, Compiler, SpecCheck};

/// (heads_q, heads_kv): MHA, GQA, MQA.
const HEADS: [(u32, u32); 3] = [(8, 8), (8, 2), (8, 1)];

fn all_specs() -> Vec<(AttentionSpec, Arch)> {
    let mut specs = Vec::new();
    for arch in [Arch::SM80, Arch::SM90] {
        for dtype in ElemType::MMA_INPUTS {
            for head_dim in ATTENTION_HEAD_DIMS {
                for causal in [false, true] {
                    for (heads_q, heads_kv) in HEADS {
                        specs.push((AttentionSpec::new(dtype, head_dim, causal, heads_q, heads_kv), arch));
                    }
                }
            }
        }
    }
    specs
}

#[test]
fn every_spec_compiles_without_spills_and_fits_shared_memory() {
    if !common::nvrtc_available() {
        return;
    }
    let with_ptxas = common::ptxas_available();
    let started = Instant::now();
    // No disk cache: this measures NVRTC, and must not pass on a stale entry.
    let compiler = Compiler::new();
    let specs = all_specs();
    let results: Vec<(AttentionSpec, Arch, Result<SpecCheck, String>)> = specs
        .par_iter()
        .map(|&(spec, arch)| (spec, arch, check_spec_with(&compiler, spec, arch).map_err(|e| e.to_string())))
        .collect();
    let wall = started.elapsed();

    let mut failures = Vec::new();
    let mut compile = Vec::new();
    let mut ptxas = Vec::new();
    for (spec, arch, result) in &results {
        let label = format!("{arch} {}", spec.kernel_name(*arch));
        match result {
            Err(e) => failures.push(format!("{label}: {e}")),
            Ok(check) => {
                compile.push(check.compile_ms);
                ptxas.extend(check.ptxas_ms);
                // Every kernel uses registers: 0 means the report's "Used" line was not read.
                if with_ptxas && !check.report.as_ref().is_some_and(|r| r.registers > 0) {
                    failures.push(format!("{label}: no parseable ptxas report ({:?}, {:?})", check.report, check.ptxas_unavailable));
                }
                for problem in check.problems() {
                    failures.push(format!("{label}: {problem}"));
                }
                if let Some(r) = &check.report {
                    assert!(r.registers <= Arch::MAX_REGISTERS_PER_THREAD, "{label}");
                }
            }
        }
    }
    let stats = |times: &[f64]| {
        let n = times.len().max(1) as f64;
        let mean = times.iter().sum::<f64>() / n;
        let max = times.iter().copied().fold(0.0, f64::max);
        format!("mean {mean:.0} ms, max {max:.0} ms")
    };
    eprintln!(
        "{} kernels in {:.1} s on {} threads; NVRTC {}; ptxas {}",
        results.len(),
        wall.as_secs_f64(),
        rayon::current_num_threads(),
        stats(&compile),
        stats(&ptxas)
    );
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), results.len(), failures.join("\n"));
}
