//! Every sm_90a GEMM variant (f16/bf16 inputs, f16/bf16/f32 output, X and W in both layouts, with
//! the epilogue's bias and residual on and the activation rotating through all four) compiles
//! through NVRTC for compute_90a and assembles with 0 spill bytes within the shared-memory limit;
//! `sass_hopper_gemm.rs` checks their SASS for HGMMA and TMA loads.

mod common;

use tessera_runtime::codegen::{Activation, Arch, DType, Epilogue, GemmSpec, KernelSpec, Layout, OutType};

#[test]
fn hopper_gemm_kernels_compile_without_spills() {
    let mut specs = Vec::new();
    let mut rotate = 0;
    for dtype in DType::ALL {
        for out in OutType::ALL {
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
            let spec = GemmSpec { layout_x, layout_w, ..GemmSpec::new(DType::BF16, OutType::BF16) };
            specs.push((KernelSpec::Gemm(spec), Arch::SM90A));
        }
    }
    common::assert_specs_fit("sm_90a gemm", &specs);
}
