//! Every sm_90a GEMM variant (f16/bf16 inputs, f16/bf16/f32 output, X and W in both layouts, with
//! the epilogue's bias and residual on and the activation rotating through all four), every tile
//! of the sm_90a tuning space, and every sm_90a fused-LoRA variant (each rank, both layouts, the
//! epilogue) compiles through NVRTC for compute_90a and assembles with 0 spill bytes within the
//! shared-memory limit, without ptxas serialising the wgmma pipeline; `sass_hopper_gemm.rs` checks
//! their SASS for HGMMA and TMA loads.

mod common;

use tessera_runtime::codegen::{Activation, Arch, ElemType, Epilogue, GemmSpec, HopperGemmTile, KernelSpec, Layout, LoraSpec, TileChoice, LORA_RANKS};

#[test]
fn hopper_gemm_kernels_compile_without_spills() {
    let mut specs = Vec::new();
    let mut rotate = 0;
    for dtype in ElemType::MMA_INPUTS {
        for out in ElemType::MMA_OUTPUTS {
            for layout_x in Layout::ALL {
                for layout_w in Layout::ALL {
                    let epilogue = Epilogue { user: None, bias: true, activation: Activation::ALL[rotate % 4], residual: true };
                    rotate += 1;
                    let spec = GemmSpec { layout_x, layout_w, epilogue, ..GemmSpec::new(dtype, out) };
                    assert!(spec.hopper_tile(Arch::SM90A).is_ok(), "{}", spec.kernel_name(Arch::SM90A));
                    specs.push((KernelSpec::Gemm(spec), Arch::SM90A));
                }
            }
        }
    }
    // The bare product (no bias, activation or residual) for each layout.
    for layout_x in Layout::ALL {
        for layout_w in Layout::ALL {
            let spec = GemmSpec { layout_x, layout_w, ..GemmSpec::new(ElemType::BF16, ElemType::BF16) };
            specs.push((KernelSpec::Gemm(spec), Arch::SM90A));
        }
    }
    common::assert_specs_fit("sm_90a gemm", &specs);
}

/// Every sm_90a tile the tuner searches (`KernelSpec::tile_space`), with the whole epilogue and an
/// f32 output, X and W in both K-major and MN-major shared-memory layouts.
#[test]
fn hopper_gemm_tile_space_compiles_without_spills() {
    let epilogue = Epilogue { user: None, bias: true, activation: Activation::GeluTanh, residual: true };
    let mut specs = Vec::new();
    for (layout_x, layout_w) in [(Layout::RowMajor, Layout::ColMajor), (Layout::ColMajor, Layout::RowMajor)] {
        let spec = KernelSpec::Gemm(GemmSpec { layout_x, layout_w, epilogue, ..GemmSpec::new(ElemType::BF16, ElemType::F32) });
        for tile in spec.tile_space(Arch::SM90A) {
            if let TileChoice::HopperGemm(_) = tile {
                let tuned = spec.with_tile_choice(tile).expect("a tile of the spec's space");
                assert!(tuned.kernel_name(Arch::SM90A).ends_with(&tile.to_string()));
                specs.push((tuned, Arch::SM90A));
            }
        }
    }
    assert_eq!(specs.len(), 2 * 9);
    // The template's extremes outside the tuner's share: the narrowest tile in the deepest ring
    // and 128 columns in 7 stages (the most shared memory that fits).
    for (block_n, stages) in [(64, 8), (128, 7)] {
        let spec = GemmSpec { layout_w: Layout::ColMajor, epilogue, ..GemmSpec::new(ElemType::F16, ElemType::F16) };
        specs.push((KernelSpec::Gemm(spec.with_hopper_tile(HopperGemmTile { block_n, stages })), Arch::SM90A));
    }
    common::assert_specs_fit("sm_90a gemm tile space", &specs);
}

/// The LoRA specs that take the sm_90a kernel: every rank with X and W in every layout pair, the
/// epilogue on and the types rotating.
fn hopper_lora_specs() -> Vec<LoraSpec> {
    let mut specs = Vec::new();
    let mut rotate = 0;
    for rank in LORA_RANKS {
        for layout_x in Layout::ALL {
            for layout_w in Layout::ALL {
                let epilogue = Epilogue { user: None, bias: true, activation: Activation::ALL[rotate % 4], residual: true };
                let (dtype, out) = (ElemType::MMA_INPUTS[rotate % 2], ElemType::MMA_OUTPUTS[rotate % 3]);
                rotate += 1;
                specs.push(LoraSpec { layout_x, layout_w, epilogue, ..LoraSpec::new(dtype, out, rank) });
            }
        }
    }
    specs
}

#[test]
fn hopper_lora_kernels_compile_without_spills() {
    let specs: Vec<_> = hopper_lora_specs()
        .into_iter()
        .inspect(|s| assert!(s.hopper_tile(Arch::SM90A).is_ok(), "{}", s.kernel_name(Arch::SM90A)))
        .map(|s| (KernelSpec::Lora(s), Arch::SM90A))
        .collect();
    common::assert_specs_fit("sm_90a lora", &specs);
}

/// ptxas keeps both wgmma pipelines asynchronous: the GEMM's and the LoRA's, whose first column
/// tile also accumulates X A and whose T' B product takes A from registers.
#[test]
fn hopper_gemm_and_lora_wgmma_pipelines_are_not_serialised() {
    let mut sources = Vec::new();
    for layout_x in Layout::ALL {
        for layout_w in Layout::ALL {
            sources.push(GemmSpec { layout_x, layout_w, ..GemmSpec::new(ElemType::BF16, ElemType::BF16) }.render(Arch::SM90A).expect("renders"));
        }
    }
    for rank in LORA_RANKS {
        sources.push(LoraSpec::new(ElemType::BF16, ElemType::BF16, rank).render(Arch::SM90A).expect("renders"));
    }
    common::assert_wgmma_not_serialised(&sources);
}
