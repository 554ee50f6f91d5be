//! The sm_90a GEMM and fused-LoRA kernels keep their Hopper path down to the machine code: the
//! CUBIN NVRTC builds for each layout pair (f16 and bf16, with the full epilogue; LoRA at ranks 8,
//! 32 and 128) holds HGMMA (at least the 4 of one 64-deep k-slice), TMA loads (UTMALDG) and register
//! reallocation (USETMAXREG), no HMMA, and no local memory (`cuobjdump -sass`). A kernel that fell back to mma.sync or plain loads would still
//! pass every numerical test; this would fail.

mod common;

use rayon::prelude::*;
use tessera_runtime::codegen::{Activation, Arch, ElemType, Epilogue, GemmSpec, KernelSource, Layout, LoraSpec};
use tessera_runtime::compile::sass::{disassemble, SassSummary};
use tessera_runtime::{Compiler, Target};

#[test]
fn hopper_gemm_and_lora_use_hgmma_and_tma_in_sass() {
    if !common::nvrtc_available() || !common::cuobjdump_available() {
        return;
    }
    let compiler = Compiler::new();
    let epilogue = Epilogue { user: None, bias: true, activation: Activation::Silu, residual: true };
    let arch = Arch::SM90A;
    let mut jobs: Vec<(String, Result<KernelSource, String>)> = Vec::new();
    for (dtype, out) in [(ElemType::BF16, ElemType::BF16), (ElemType::F16, ElemType::F32)] {
        for layout_x in Layout::ALL {
            for layout_w in Layout::ALL {
                let spec = GemmSpec { layout_x, layout_w, epilogue, ..GemmSpec::new(dtype, out) };
                let source = spec.hopper_tile(arch).and_then(|_| spec.render(arch).map_err(|e| e.to_string()));
                jobs.push((spec.kernel_name(arch), source));
            }
        }
    }
    for (rank, layout_x, layout_w) in [(8, Layout::RowMajor, Layout::RowMajor), (32, Layout::ColMajor, Layout::ColMajor), (128, Layout::RowMajor, Layout::ColMajor)] {
        let spec = LoraSpec { layout_x, layout_w, epilogue, ..LoraSpec::new(ElemType::BF16, ElemType::BF16, rank) };
        let source = spec.hopper_tile(arch).and_then(|_| spec.render(arch).map_err(|e| e.to_string()));
        jobs.push((spec.kernel_name(arch), source));
    }
    let failures: Vec<String> = jobs
        .par_iter()
        .filter_map(|(label, source)| {
            let run = || -> Result<SassSummary, String> {
                let source = source.as_ref().map_err(|e| format!("not routed to sm_90a: {e}"))?;
                let module = compiler.compile(source, Target::cubin(arch)).map_err(|e| e.to_string())?;
                Ok(SassSummary::of(&disassemble(&module.image).map_err(|e| e.to_string())?))
            };
            match run() {
                Err(e) => Some(format!("{label}: {e}")),
                Ok(s) if s.hgmma < 4 || s.hmma > 0 => {
                    Some(format!("{label}: {} HGMMA, {} HMMA in {} instructions", s.hgmma, s.hmma, s.instructions))
                }
                Ok(s) if s.tma == 0 => Some(format!("{label}: no TMA load")),
                Ok(s) if common::register_split_problem(&s).is_some() => {
                    common::register_split_problem(&s).map(|p| format!("{label}: {p}"))
                }
                Ok(s) if s.local > 0 => Some(format!("{label}: {} local-memory instructions", s.local)),
                Ok(s) => {
                    eprintln!("{label}: {} HGMMA, {} TMA of {} instructions", s.hgmma, s.tma, s.instructions);
                    None
                }
            }
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
