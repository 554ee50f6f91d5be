//! Every sm_90a attention kernel (head_dim 64/128/256, f16/bf16, causal or not, MHA and GQA)
//! compiles through NVRTC for compute_90a and assembles with 0 spill bytes within the shared-memory
//! limit, and so does every sm_90a tile of the tuning space; `sass_report.rs` checks their SASS
//! for HGMMA and TMA instructions.

mod common;

use tessera_runtime::codegen::{Arch, AttentionFeatures, AttentionSpec, ElemType, KernelSpec, TileChoice, HOPPER_HEAD_DIMS};

#[test]
fn hopper_attention_kernels_compile_without_spills() {
    let mut specs = Vec::new();
    for d in HOPPER_HEAD_DIMS {
        for dtype in ElemType::MMA_INPUTS {
            for causal in [false, true] {
                for (hq, hkv) in [(8, 8), (8, 2)] {
                    let spec = AttentionSpec::new(dtype, d, causal, hq, hkv);
                    assert!(spec.hopper_tile(Arch::SM90A).is_ok(), "{}", spec.kernel_name(Arch::SM90A));
                    specs.push((KernelSpec::Attention(spec), Arch::SM90A));
                }
            }
        }
    }
    common::assert_specs_fit("sm_90a attention", &specs);
}

/// Every sm_90a tile the tuner searches (`KernelSpec::tile_space`) for each head_dim, on the
/// kernel with the most live registers (causal masking, GQA), assembles with 0 spill bytes: the
/// register estimate that prunes the space is calibrated against this.
#[test]
fn hopper_attention_tile_space_compiles_without_spills() {
    let mut specs = Vec::new();
    for d in HOPPER_HEAD_DIMS {
        let spec = KernelSpec::Attention(AttentionSpec::new(ElemType::BF16, d, true, 8, 2));
        for tile in spec.tile_space(Arch::SM90A) {
            if let TileChoice::HopperAttention(_) = tile {
                let tuned = spec.with_tile_choice(tile).expect("a tile of the spec's space");
                assert!(tuned.kernel_name(Arch::SM90A).ends_with(&tile.to_string()));
                specs.push((tuned, Arch::SM90A));
            }
        }
    }
    assert!(specs.len() > 3 * HOPPER_HEAD_DIMS.len(), "{} sm_90a tiles", specs.len());
    common::assert_specs_fit("sm_90a attention tile space", &specs);
}

/// ptxas keeps the wgmma pipeline asynchronous (see `common::assert_wgmma_not_serialised`).
#[test]
fn hopper_attention_wgmma_pipeline_is_not_serialised() {
    let mut sources = Vec::new();
    for d in HOPPER_HEAD_DIMS {
        for causal in [false, true] {
            sources.push(AttentionSpec::new(ElemType::BF16, d, causal, 8, 2).render(Arch::SM90A).expect("renders"));
        }
    }
    common::assert_wgmma_not_serialised(&sources);
}

/// The score-side variants on the sm_90a kernel (window, ALiBi, softcap, alone and all three) at
/// every head_dim, causal GQA (the most live registers): 0 spills, and the wgmma pipeline stays
/// asynchronous.
#[test]
fn hopper_attention_variants_compile_without_spills_or_serialisation() {
    let mut specs = Vec::new();
    for d in HOPPER_HEAD_DIMS {
        for list in ["local", "alibi", "softcap", "local,alibi,softcap"] {
            let features = AttentionFeatures::parse(list).expect("feature names");
            let spec = AttentionSpec::new(ElemType::BF16, d, true, 8, 2).with_features(features);
            assert!(spec.hopper_tile(Arch::SM90A).is_ok(), "{}", spec.kernel_name(Arch::SM90A));
            specs.push(spec);
        }
    }
    let all: Vec<_> = specs.iter().map(|s| (KernelSpec::Attention(*s), Arch::SM90A)).collect();
    common::assert_specs_fit("sm_90a attention variants", &all);
    let sources: Vec<_> = specs.iter().filter(|s| s.features.alibi && s.features.local).map(|s| s.render(Arch::SM90A).expect("renders")).collect();
    common::assert_wgmma_not_serialised(&sources);
}
