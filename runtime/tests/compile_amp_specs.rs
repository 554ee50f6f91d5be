//! The mixed-precision training kernels (casts between every pair of element types, unscale,
//! AdamW, the scale updates) compile with NVRTC for sm_80 and sm_90 and assemble with ptxas
//! without spills.

mod common;

use tessera_runtime::codegen::{AdamWSpec, Arch, CastSpec, ElemType, ElementwiseTile, KernelSpec, ScaleUpdateSpec, UnscaleSpec};

fn specs() -> Vec<(KernelSpec, Arch)> {
    let mut specs: Vec<KernelSpec> = Vec::new();
    for from in ElemType::ALL {
        for to in ElemType::ALL {
            if from != to {
                // Scaled with amax where fp8 is involved (delayed scaling), plain otherwise.
                let fp8 = from.is_fp8() || to.is_fp8();
                specs.push(CastSpec { scaled: fp8, amax: fp8, ..CastSpec::new(from, to) }.into());
            }
        }
    }
    specs.push(CastSpec { tile: Some(ElementwiseTile::new(128, 4, 1)), ..CastSpec::to_fp8(ElemType::F32, ElemType::E5M2) }.into());
    specs.push(UnscaleSpec::default().into());
    specs.push(UnscaleSpec { tile: Some(ElementwiseTile::new(512, 32, 2)) }.into());
    specs.push(AdamWSpec::default().into());
    specs.push(AdamWSpec { tile: Some(ElementwiseTile::new(128, 4, 1)) }.into());
    specs.push(ScaleUpdateSpec::LossScale.into());
    specs.push(ScaleUpdateSpec::Fp8Scale.into());
    [Arch::SM80, Arch::SM90].into_iter().flat_map(|a| specs.iter().map(move |s| (*s, a))).collect()
}

#[test]
fn amp_kernels_compile_without_spills() {
    common::assert_specs_fit("amp", &specs());
}
