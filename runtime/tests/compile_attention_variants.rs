//! Every attention variant (each feature alone, and the combinations the variant tests run)
//! compiles through NVRTC for sm_80 and sm_90 with 0 spill bytes and fits shared memory, at the
//! head dimensions that stress registers most (64, 128, 256).

mod common;

use tessera_runtime::codegen::{Arch, AttentionFeatures, AttentionSpec, ElemType, KernelSpec};

fn features(list: &str) -> AttentionFeatures {
    AttentionFeatures::parse(list).expect("feature names")
}

#[test]
fn attention_variants_compile_without_spills() {
    let mut lists: Vec<String> = AttentionFeatures::NAMES.iter().map(|s| s.to_string()).collect();
    lists.extend(
        [
            "local,varlen,pack_gqa",
            "prefix,alibi,softcap",
            "tree,paged,split_kv,pack_gqa",
            "local,alibi,softcap,prefix,tree,varlen,paged,pack_gqa,split_kv",
        ]
        .map(String::from),
    );
    let mut specs = Vec::new();
    for arch in [Arch::SM80, Arch::SM90] {
        for head_dim in [64, 128, 256] {
            for list in &lists {
                let f = features(list);
                let spec = AttentionSpec::new(ElemType::BF16, head_dim, f.tree || head_dim == 128, 8, 2).with_features(f);
                specs.push((KernelSpec::Attention(spec), arch));
            }
        }
    }
    common::assert_specs_fit("attention variants", &specs);
}
