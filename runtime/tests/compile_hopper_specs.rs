//! Every sm_90a attention kernel (head_dim 64/128/256, f16/bf16, causal or not, MHA and GQA)
//! compiles through NVRTC for compute_90a and assembles with 0 spill bytes within the shared-memory
//! limit, and so does every sm_90a tile of the tuning space; `sass_report.rs` checks their SASS
//! for HGMMA and TMA instructions.

mod common;

use tessera_runtime::codegen::{Arch, AttentionSpec, DType, KernelSpec, TileChoice, HOPPER_HEAD_DIMS};

#[test]
fn hopper_attention_kernels_compile_without_spills() {
    let mut specs = Vec::new();
    for d in HOPPER_HEAD_DIMS {
        for dtype in DType::ALL {
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
        let spec = KernelSpec::Attention(AttentionSpec::new(DType::BF16, d, true, 8, 2));
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

/// ptxas keeps the wgmma pipeline asynchronous: no "wgmma.mma_async instructions are serialized"
/// (C7514) and no injected warpgroup.arrive (C7519), which appear when accumulator registers are
/// touched between a wgmma and the wait that retires it.
#[test]
fn hopper_attention_wgmma_pipeline_is_not_serialised() {
    if !common::nvrtc_available() || !common::ptxas_available() {
        return;
    }
    let ptxas = tessera_runtime::find_ptxas().expect("ptxas");
    let compiler = tessera_runtime::Compiler::new();
    for d in HOPPER_HEAD_DIMS {
        for causal in [false, true] {
            let spec = AttentionSpec::new(DType::BF16, d, causal, 8, 2);
            let source = spec.render(Arch::SM90A).expect("renders");
            let module = compiler.compile(&source, tessera_runtime::Target::ptx(Arch::SM90A)).expect("compiles");
            let dir = tempfile::tempdir().expect("temp dir");
            let ptx = dir.path().join("k.ptx");
            std::fs::write(&ptx, &module.image).expect("write ptx");
            let out = std::process::Command::new(&ptxas)
                .args(["-v", "-arch=sm_90a", "-o"])
                .arg(dir.path().join("k.cubin"))
                .arg(&ptx)
                .output()
                .expect("ptxas runs");
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {log}", source.name);
            for code in ["C7514", "C7519", "serialized"] {
                assert!(!log.contains(code), "{}: ptxas says {code}:\n{log}", source.name);
            }
        }
    }
}
