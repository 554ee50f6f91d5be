//! `tessera check`: compile every supported spec combination and read ptxas' resource report.

use clap::Args;
use rayon::prelude::*;
use tessera::codegen::{Activation, AdamWSpec, AdapterMode, CastSpec, ElemType, Epilogue, GemmSpec, KernelSpec, Layout, LoraSpec, ScaleUpdateSpec, UnscaleSpec, WindowOp, WindowSpec, ATTENTION_HEAD_DIMS, LORA_RANKS};
use tessera::runtime::check_spec;
use tessera::{Arch, AttentionFeatures, AttentionSpec, TesseraError};

use crate::flags::parse_arch;
use crate::Result;

#[derive(Args)]
pub struct CheckArgs {
    /// Architectures to compile for (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["sm_80", "sm_90"], value_parser = parse_arch)]
    pub arch: Vec<Arch>,
    /// Only these dtypes (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_parser = crate::flags::parse_dtype)]
    pub dtype: Vec<ElemType>,
    /// Only these head dims (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub head_dim: Vec<u32>,
    /// Only these families (comma-separated: attention, variants, gemm, lora, amp, window; default
    /// all). `variants`: every attention variant feature alone and all of them together.
    #[arg(long, value_delimiter = ',', value_parser = ["attention", "variants", "gemm", "lora", "amp", "window"])]
    pub family: Vec<String>,
}

/// Head layouts that exercise every GROUP code path: MHA, GQA, MQA.
const HEAD_LAYOUTS: [(u32, u32); 3] = [(8, 8), (8, 2), (8, 1)];

pub fn run(args: CheckArgs) -> Result<()> {
    let dtypes = if args.dtype.is_empty() { ElemType::MMA_INPUTS.to_vec() } else { args.dtype.clone() };
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
    let jobs: Vec<(KernelSpec, Arch)> = jobs.into_iter().map(|(s, a)| (KernelSpec::from(s), a)).collect();
    let wants = |f: &str| args.family.is_empty() || args.family.iter().any(|x| x == f);
    let mut jobs: Vec<(KernelSpec, Arch)> = if wants("attention") { jobs } else { Vec::new() };
    if wants("variants") {
        let all = AttentionFeatures::parse(&AttentionFeatures::NAMES.join(",")).map_err(TesseraError::from)?;
        let mut variants: Vec<AttentionFeatures> =
            AttentionFeatures::NAMES.iter().map(|n| AttentionFeatures::parse(n)).collect::<std::result::Result<_, _>>()?;
        variants.push(all);
        for &arch in &args.arch {
            for &dtype in &dtypes {
                for &d in &dims {
                    for &f in &variants {
                        // GQA 8:2 exercises the packing; the tree refines a causal mask.
                        jobs.push((AttentionSpec::new(dtype, d, f.tree, 8, 2).with_features(f).into(), arch));
                    }
                }
            }
        }
    }
    for &arch in &args.arch {
        for &dtype in &dtypes {
            if wants("gemm") {
                jobs.extend(gemm_specs(dtype).into_iter().map(|s| (s.into(), arch)));
            }
            if wants("lora") {
                jobs.extend(lora_specs(dtype).into_iter().map(|s| (s.into(), arch)));
            }
        }
    }
    if wants("amp") {
        for &arch in &args.arch {
            jobs.extend(amp_specs().into_iter().map(|s| (s, arch)));
        }
    }
    if wants("window") {
        for &arch in &args.arch {
            for op in [WindowOp::Max, WindowOp::Min, WindowOp::Sum] {
                for dtype in ElemType::FLOAT {
                    jobs.push((WindowSpec { op, dtype, tile: None }.into(), arch));
                }
            }
        }
    }
    let results: Vec<_> = jobs.par_iter().map(|(spec, arch)| (spec, arch, check_spec(*spec, *arch))).collect();

    println!(
        "{:<72} {:>6} {:>5} {:>10} {:>7} {:>8}  status",
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
                println!("{name:<72} {:>6} {regs:>5} {smem:>10} {spills:>7} {:>8.0}  {status}", arch.to_string(), c.compile_ms);
            }
            Err(e) => {
                failures += 1;
                println!("{name:<72} {:>6} {:>5} {:>10} {:>7} {:>8}  FAIL: {e}", arch.to_string(), "-", "-", "-", "-");
            }
        }
    }
    println!("{} variants, {} failed", results.len(), failures);
    if failures > 0 {
        return Err(TesseraError::Check(format!("{failures} of {} variants failed", results.len())));
    }
    Ok(())
}

/// Every GEMM code path of one input dtype: output types x layouts x the aligned and element-wise
/// loaders, with the full epilogue (the most live registers; activations rotate).
fn gemm_specs(dtype: ElemType) -> Vec<GemmSpec> {
    let mut specs = Vec::new();
    let mut i = 0;
    for out in ElemType::MMA_OUTPUTS {
        for layout_x in Layout::ALL {
            for layout_w in Layout::ALL {
                for aligned in [true, false] {
                    let activation = Activation::ALL[i % 4];
                    i += 1;
                    specs.push(GemmSpec {
                        layout_x,
                        layout_w,
                        aligned,
                        epilogue: Epilogue { user: None, bias: true, activation, residual: true },
                        ..GemmSpec::new(dtype, out)
                    });
                }
            }
        }
    }
    specs
}

/// Every LoRA code path of one input dtype: each rank single and per-row (per-row with the full
/// epilogue), the element-wise loader, both X layouts, and the bottleneck with each activation.
fn lora_specs(dtype: ElemType) -> Vec<LoraSpec> {
    let full = Epilogue { user: None, bias: true, activation: Activation::GeluTanh, residual: true };
    let mut specs = Vec::new();
    for (i, rank) in LORA_RANKS.into_iter().enumerate() {
        let out = ElemType::MMA_OUTPUTS[i % 3];
        let base = LoraSpec { layout_w: Layout::ALL[i % 2], ..LoraSpec::new(dtype, out, rank) };
        specs.push(base);
        specs.push(LoraSpec { adapters: AdapterMode::PerRow, epilogue: full, layout_x: Layout::ColMajor, ..base });
        specs.push(LoraSpec { adapters: AdapterMode::PerRow, aligned: false, ..base });
        specs.push(LoraSpec::bottleneck(dtype, out, rank, Activation::ALL[i % 4]));
    }
    specs
}

/// The mixed-precision training kernels: a cast between every pair of element types (scaled with
/// amax where fp8 is involved), unscale, AdamW and both scale updates, default tiles.
fn amp_specs() -> Vec<KernelSpec> {
    let mut specs: Vec<KernelSpec> = Vec::new();
    for from in ElemType::ALL {
        for to in ElemType::ALL {
            if from != to {
                let fp8 = from.is_fp8() || to.is_fp8();
                specs.push(CastSpec { scaled: fp8, amax: fp8, ..CastSpec::new(from, to) }.into());
            }
        }
    }
    specs.push(UnscaleSpec::default().into());
    specs.push(AdamWSpec::default().into());
    specs.push(ScaleUpdateSpec::LossScale.into());
    specs.push(ScaleUpdateSpec::Fp8Scale.into());
    specs
}
