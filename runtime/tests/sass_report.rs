//! The tensor-core path survives to the machine code: the CUBIN NVRTC builds for each mma.sync
//! matrix kernel (attention plain and with the decode variants, GEMM, LoRA) holds HMMA instructions
//! on sm_80 and sm_90a, every sm_90a attention kernel holds HGMMA and TMA loads (UTMALDG), and none
//! touches local memory (`cuobjdump -sass`). A kernel that silently fell back to FFMA or HMMA would
//! still pass every numerical test; these would fail.

mod common;

use rayon::prelude::*;
use tessera_runtime::codegen::{AdapterMode, Arch, AttentionFeatures, AttentionSpec, ElemType, GemmSpec, KernelSpec, LoraSpec, HOPPER_HEAD_DIMS};
use tessera_runtime::compile::sass::{disassemble, SassSummary};
use tessera_runtime::{Compiler, Target};

#[test]
fn matrix_kernels_use_tensor_cores_in_sass() {
    if !common::nvrtc_available() || !common::cuobjdump_available() {
        return;
    }
    let decode = AttentionFeatures::parse("paged,pack_gqa,split_kv").expect("feature names");
    // An explicit mma.sync tile keeps plain attention off the sm_90a path.
    let mma = |s: AttentionSpec| s.with_tile(AttentionSpec::default_tile(s.head_dim, Arch::SM80));
    let specs: Vec<KernelSpec> = vec![
        mma(AttentionSpec::new(ElemType::BF16, 128, true, 16, 4)).into(),
        mma(AttentionSpec::new(ElemType::F16, 64, false, 8, 8)).into(),
        AttentionSpec::new(ElemType::BF16, 128, true, 32, 4).with_features(decode).into(),
        // An explicit tile keeps the GEMM on mma.sync on sm_90a too (sass_hopper_gemm.rs checks the
        // sm_90a GEMM kernels).
        GemmSpec::new(ElemType::BF16, ElemType::BF16).with_tile(GemmSpec::default_tile(Arch::SM80)).into(),
        LoraSpec { adapters: AdapterMode::PerRow, ..LoraSpec::new(ElemType::BF16, ElemType::BF16, 16) }.into(),
    ];
    let compiler = Compiler::new();
    let jobs: Vec<(KernelSpec, Arch)> =
        [Arch::SM80, Arch::SM90A].into_iter().flat_map(|a| specs.iter().map(move |s| (*s, a))).collect();
    let failures: Vec<String> = jobs
        .par_iter()
        .filter_map(|&(spec, arch)| {
            let label = format!("{arch} {}", spec.kernel_name(arch));
            let run = || -> Result<SassSummary, String> {
                let source = spec.render(arch).map_err(|e| e.to_string())?;
                let module = compiler.compile(&source, Target::cubin(arch)).map_err(|e| e.to_string())?;
                Ok(SassSummary::of(&disassemble(&module.image).map_err(|e| e.to_string())?))
            };
            match run() {
                Err(e) => Some(format!("{label}: {e}")),
                Ok(s) if s.hmma == 0 => Some(format!("{label}: no HMMA in {} instructions", s.instructions)),
                Ok(s) if s.local > 0 => Some(format!("{label}: {} local-memory instructions", s.local)),
                Ok(s) => {
                    eprintln!("{label}: {} HMMA of {} instructions", s.hmma, s.instructions);
                    None
                }
            }
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hopper_attention_uses_hgmma_and_tma_in_sass() {
    if !common::nvrtc_available() || !common::cuobjdump_available() {
        return;
    }
    let compiler = Compiler::new();
    let mut jobs = Vec::new();
    for d in HOPPER_HEAD_DIMS {
        for dtype in ElemType::MMA_INPUTS {
            for causal in [false, true] {
                jobs.push(AttentionSpec::new(dtype, d, causal, 8, 2));
            }
        }
    }
    let failures: Vec<String> = jobs
        .par_iter()
        .filter_map(|spec| {
            let arch = Arch::SM90A;
            let label = spec.kernel_name(arch);
            let run = || -> Result<SassSummary, String> {
                let source = spec.render(arch).map_err(|e| e.to_string())?;
                let module = compiler.compile(&source, Target::cubin(arch)).map_err(|e| e.to_string())?;
                Ok(SassSummary::of(&disassemble(&module.image).map_err(|e| e.to_string())?))
            };
            match run() {
                Err(e) => Some(format!("{label}: {e}")),
                // S = Q K^T takes head_dim / 16 wgmma, O += P V takes block_n / 16.
                Ok(s) if s.hgmma < (spec.head_dim / 16) as usize => {
                    Some(format!("{label}: {} HGMMA, {} HMMA in {} instructions", s.hgmma, s.hmma, s.instructions))
                }
                Ok(s) if s.tma == 0 => Some(format!("{label}: no TMA load")),
                // The producer gives registers away and the consumers take them.
                Ok(s) if common::register_split_problem(&s).is_some() => {
                    common::register_split_problem(&s).map(|p| format!("{label}: {p}"))
                }
                Ok(s) if s.local > 0 => Some(format!("{label}: {} local-memory instructions", s.local)),
                Ok(s) => {
                    eprintln!(
                        "{label}: {} HGMMA, {} TMA, {} setmaxnreg of {} instructions",
                        s.hgmma, s.tma, s.setmaxnreg, s.instructions
                    );
                    None
                }
            }
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
