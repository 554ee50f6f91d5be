//! `tessera check`: compile every supported spec combination and read ptxas' resource report.

use clap::Args;
use rayon::prelude::*;
use tessera::codegen::ATTENTION_HEAD_DIMS;
use tessera::runtime::check::check_spec;
use tessera::{Arch, AttentionSpec, DType, TesseraError};

use crate::flags::parse_arch;
use crate::Result;

#[derive(Args)]
pub struct CheckArgs {
    /// Architectures to compile for (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["sm_80", "sm_90"], value_parser = parse_arch)]
    pub arch: Vec<Arch>,
    /// Only these dtypes (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_parser = crate::flags::parse_dtype)]
    pub dtype: Vec<DType>,
    /// Only these head dims (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub head_dim: Vec<u32>,
}

/// Head layouts that exercise every GROUP code path: MHA, GQA, MQA.
const HEAD_LAYOUTS: [(u32, u32); 3] = [(8, 8), (8, 2), (8, 1)];

pub fn run(args: CheckArgs) -> Result<()> {
    let dtypes = if args.dtype.is_empty() { DType::ALL.to_vec() } else { args.dtype.clone() };
    let dims = if args.head_dim.is_empty() { ATTENTION_HEAD_DIMS.to_vec() } else { args.head_dim.clone() };
    let mut jobs = Vec::new();
    for &arch in &args.arch {
        for &dtype in &dtypes {
            for &d in &dims {
                for causal in [false, true] {
                    for (hq, hkv) in HEAD_LAYOUTS {
                        jobs.push((AttentionSpec::new(dtype, d, causal, hq, hkv), arch));
                    }
                }
            }
        }
    }
    let results: Vec<_> = jobs.par_iter().map(|(spec, arch)| (spec, arch, check_spec(*spec, *arch))).collect();

    println!(
        "{:<58} {:>6} {:>5} {:>10} {:>7} {:>8}  status",
        "kernel", "arch", "regs", "smem", "spills", "nvrtc ms"
    );
    let mut failures = 0;
    for (spec, arch, result) in &results {
        let name = spec.kernel_name(**arch);
        match result {
            Ok(c) => {
                let (regs, smem, spills, ok) = match &c.report {
                    Some(r) => {
                        let spills = r.spill_store_bytes + r.spill_load_bytes;
                        let smem = r.shared_bytes + c.dynamic_shared_bytes;
                        let ok = spills == 0 && smem <= arch.max_shared_memory_per_block();
                        (r.registers.to_string(), smem.to_string(), spills.to_string(), ok)
                    }
                    None => ("-".into(), c.dynamic_shared_bytes.to_string(), "-".into(), true),
                };
                if !ok {
                    failures += 1;
                }
                let status = match (&c.report, ok) {
                    (None, _) => "ok (no ptxas: resources not read)",
                    (_, true) => "ok",
                    (_, false) => "FAIL",
                };
                println!("{name:<58} {:>6} {regs:>5} {smem:>10} {spills:>7} {:>8.0}  {status}", arch.to_string(), c.compile_ms);
            }
            Err(e) => {
                failures += 1;
                println!("{name:<58} {:>6} {:>5} {:>10} {:>7} {:>8}  FAIL: {e}", arch.to_string(), "-", "-", "-", "-");
            }
        }
    }
    println!("{} variants, {} failed", results.len(), failures);
    if failures > 0 {
        return Err(TesseraError::Check(format!("{failures} of {} variants failed", results.len())));
    }
    Ok(())
}
