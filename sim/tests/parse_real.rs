//! The checked-in NVRTC 13.0 PTX of Tessera's attention kernel (see tests/ptx/README.md) parses and
//! lowers: f16 and bf16, head dims 32 to 256, causal and not, 1 to 3 stages, GQA.

mod common;

use std::collections::BTreeSet;
use tessera_sim::Module;

const FILES: [&str; 5] = [
    "attn_bf16_d128_causal.ptx",
    "attn_f16_d64_full.ptx",
    "attn_f16_d256_causal.ptx",
    "attn_bf16_d96_full_s1.ptx",
    "attn_f16_d32_causal_s3_bf16_d192_full.ptx",
];

#[test]
fn every_checked_in_kernel_parses() {
    let mut dtypes = BTreeSet::new();
    let mut dims = BTreeSet::new();
    let mut masks = BTreeSet::new();
    let mut stages = BTreeSet::new();
    for file in FILES {
        let text = common::ptx(file);
        assert!(text.contains(".loc") && text.contains(".section"), "{file} is raw NVRTC output with -lineinfo");
        let m = Module::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(m.ptx_version(), Some("9.0"));
        assert_eq!(m.target(), ["sm_80".to_string()]);
        for e in m.entries() {
            assert!(e.starts_with("tessera_attention_fwd_"), "{e}");
            let params = m.entry_params(&e).expect("params");
            assert_eq!(params.len(), 1);
            assert_eq!((params[0].size, params[0].align, params[0].offset), (152, 8, 0));
            assert_eq!(m.param_bytes(&e).expect("bytes"), 152);
            assert_eq!(m.static_shared_bytes(&e).expect("smem"), 0);
            assert!(m.instruction_count(&e).expect("count") > 1000);
            // Packed register file: a few hundred slots, not thousands.
            assert!(m.register_slots(&e).expect("slots") < 600, "{e}");
            let parts: Vec<&str> = e.split('_').collect();
            dtypes.insert(parts[3].to_string());
            dims.insert(parts[4][1..].parse::<u32>().expect("dim"));
            masks.insert(parts[5].to_string());
            stages.insert(parts[7].rsplit('s').next().unwrap_or("").to_string());
        }
    }
    assert_eq!(dtypes.into_iter().collect::<Vec<_>>(), ["bf16", "f16"]);
    assert_eq!(dims.into_iter().collect::<Vec<_>>(), [32, 64, 96, 128, 192, 256]);
    assert_eq!(masks.into_iter().collect::<Vec<_>>(), ["causal", "full"]);
    assert_eq!(stages.into_iter().collect::<Vec<_>>(), ["1", "2", "3"]);
}

#[test]
fn compute_90_ptx_parses_too() {
    // The runtime also compiles for compute_90; the PTX differs only in the .target line here.
    let text = common::ptx("attn_f16_d64_full.ptx").replace(".target sm_80", ".target sm_90");
    let m = Module::parse(&text).expect("parse");
    assert_eq!(m.target(), ["sm_90".to_string()]);
}
