//! The sliding-window kernels (every op x element type, the default tile and the extremes of the
//! tile space) compile with NVRTC for sm_80 and sm_90 and assemble with ptxas without spills.

mod common;

use tessera_runtime::codegen::{Arch, ElemType, ElementwiseTile, KernelSpec, WindowOp, WindowSpec};

fn specs() -> Vec<(KernelSpec, Arch)> {
    let mut specs: Vec<KernelSpec> = Vec::new();
    for op in WindowOp::ALL {
        for dtype in ElemType::FLOAT {
            specs.push(WindowSpec::new(op, dtype).into());
        }
    }
    for tile in [ElementwiseTile::new(128, 4, 1), ElementwiseTile::new(512, 4, 1), ElementwiseTile::new(128, 16, 1)] {
        specs.push(WindowSpec { tile: Some(tile), ..WindowSpec::new(WindowOp::Sum, ElemType::BF16) }.into());
    }
    [Arch::SM80, Arch::SM90].into_iter().flat_map(|a| specs.iter().map(move |s| (*s, a))).collect()
}

#[test]
fn window_kernels_compile_without_spills() {
    common::assert_specs_fit("window", &specs());
}

#[test]
fn the_tile_space_is_what_validates() {
    let spec = KernelSpec::from(WindowSpec::new(WindowOp::Max, ElemType::F32));
    let space = spec.tile_space(Arch::SM90);
    assert_eq!(space.len(), 6, "{space:?}");
    assert!(space.contains(&spec.tile_choice(Arch::SM90).unwrap()));
}
