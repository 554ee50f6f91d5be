//! GEMM specs render, compile to PTX with NVRTC for sm_80 and sm_90, and their default tiles
//! assemble with ptxas without spills and within the shared-memory limit.
//!
//! Default coverage (32 kernels): every (arch, dtype, output type, W layout) with bias and
//! residual on (the most registers in the epilogue) and the activation rotating through all four,
//! so every activation is assembled for every arch; plus the 128 x 256 tile (64 x 64 warp tiles,
//! 128 accumulators per thread) for bf16 with f32 and bf16 output, X and W in both layouts. With
//! `TESSERA_GEMM_ALL_SPECS=1` it is the full product, 384 kernels (measured: 0 spills, about 8
//! minutes on two cores: NVRTC plus ptxas take about 2.4 s per GEMM kernel).

mod common;

use tessera_runtime::codegen::{Activation, Arch, ElemType, Epilogue, GemmSpec, GemmTile, Layout};

fn specs() -> Vec<(GemmSpec, Arch)> {
    let all = std::env::var("TESSERA_GEMM_ALL_SPECS").is_ok_and(|v| v == "1");
    let extras = [(true, true), (false, false), (true, false), (false, true)];
    let mut specs = Vec::new();
    let mut rotate = 0usize;
    for arch in [Arch::SM80, Arch::SM90] {
        for dtype in ElemType::MMA_INPUTS {
            for out in ElemType::MMA_OUTPUTS {
                for layout_w in Layout::ALL {
                    let spec = |activation, (bias, residual)| GemmSpec {
                        layout_w,
                        epilogue: Epilogue { user: None, bias, activation, residual },
                        ..GemmSpec::new(dtype, out)
                    };
                    // The 64 x 64 warp tile (128 accumulators per thread) with the full epilogue.
                    if dtype == ElemType::BF16 && out != ElemType::F16 {
                        let wide = spec(Activation::GeluTanh, extras[0]).with_tile(GemmTile::new(128, 256, 32, 8, 3));
                        specs.push((GemmSpec { layout_x: layout_w, ..wide }, arch));
                    }
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
    let specs: Vec<_> = specs().into_iter().map(|(s, a)| (s.into(), a)).collect();
    common::assert_specs_fit("gemm", &specs);
}
