//! The kernels whose reductions promise a fixed order give the same bits whatever order their CTAs
//! run in: GEMM split-K (the last CTA adds the partial tiles in split order), attention split-KV
//! (the combine reads the splits in order) and plain attention (each CTA owns its rows), each run
//! in grid order and in several seeded shuffled orders on the simulator.

mod common;

use tessera_codegen::{Arch, AttentionFeatures, AttentionSpec, ElemType, GemmSpec, GemmTile};
use tessera_runtime::attention::{run_attention_variant, AttentionInputs};
use tessera_runtime::simulator::{CtaOrder, SimOptions};
use tessera_runtime::{run_gemm, AttentionProblem, Compiler, GemmProblem, SimBackend};

/// Shuffled orders tried per kernel.
const SEEDS: [u64; 3] = [11, 12, 13];

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 - 1000.0) / 1000.0).collect()
}

fn backend(cta_order: CtaOrder) -> SimBackend {
    SimBackend::with_options(Arch::SM80, SimOptions { checks: false, cta_order, ..SimOptions::default() })
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Runs `f` in grid order and in every shuffled order; all must agree bit for bit.
fn same_bits_in_every_order(what: &str, f: impl Fn(&SimBackend) -> Vec<f32>) {
    let reference = f(&backend(CtaOrder::Grid));
    assert!(reference.iter().all(|v| v.is_finite()) && reference.iter().any(|&v| v != 0.0), "{what}: {reference:?}");
    for seed in SEEDS {
        assert_eq!(bits(&f(&backend(CtaOrder::Shuffled { seed }))), bits(&reference), "{what}: shuffled seed {seed}");
    }
}

#[test]
fn split_k_gemm_is_bit_identical_in_any_cta_order() {
    if !common::nvrtc_available() {
        return;
    }
    let compiler = Compiler::new();
    let spec = GemmSpec { tile: Some(GemmTile { split_k: 4, ..GemmTile::new(32, 32, 32, 4, 2) }), ..GemmSpec::new(ElemType::BF16, ElemType::F32) };
    let (m, n, k) = (40, 48, 512);
    let (x, w) = (values(m * k, 1), values(k * n, 2));
    same_bits_in_every_order("split-K GEMM", |b| {
        let out = run_gemm(b, &compiler, &spec, &GemmProblem::new(m, n, k), &x, &w, None, None, None, 1.0, 0.0).unwrap();
        assert!(out.kernel.ends_with("x4"), "a split-K kernel ran: {}", out.kernel);
        out.y
    });
}

#[test]
fn attention_is_bit_identical_in_any_cta_order() {
    if !common::nvrtc_available() {
        return;
    }
    let compiler = Compiler::new();
    let plain = AttentionSpec::new(ElemType::F16, 64, true, 4, 2);
    let split = AttentionSpec { features: AttentionFeatures::parse("split_kv").unwrap(), ..plain };
    let problem = AttentionProblem::for_spec(&plain, 2, 70, 150);
    let (q, k, v) = (values(problem.q_elements(), 3), values(problem.kv_elements(), 4), values(problem.kv_elements(), 5));
    for (what, spec, splits) in [("attention", plain, None), ("split-KV attention", split, Some(3))] {
        same_bits_in_every_order(what, |b| {
            let inputs = AttentionInputs { num_splits: splits, ..AttentionInputs::dense(problem, &q, &k, &v) };
            let out = run_attention_variant(b, &compiler, &spec, &inputs, None, true).unwrap();
            let mut all = out.out;
            all.extend(out.lse.unwrap());
            all
        });
    }
}
