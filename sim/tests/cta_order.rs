//! Shuffled CTA order: every CTA runs exactly once, in the order the seed picks (the same seed,
//! the same order), so a test can show a kernel's output does not depend on which CTA runs first.

mod common;

use common::{kernel, read_u32s};
use tessera_sim::{launch, CtaOrder, GlobalMemory, LaunchConfig, Module, SimError, SimOptions, MAX_SHUFFLED_CTAS};

/// CTAs of the test grid (x fastest): 4 x 3 x 2.
const GRID: [u32; 3] = [4, 3, 2];
const CTAS: usize = 24;

/// Each CTA's thread 0 takes a ticket from `counter` and writes its linear CTA index at
/// `order[ticket]`: the order the CTAs ran in.
fn recorder() -> Module {
    let body = "\t.reg .pred %p<2>;\n\t.reg .b32 %r<16>;\n\t.reg .b64 %rd<8>;\n\
        \tld.param.u64 %rd1, [order];\n\tld.param.u64 %rd2, [counter];\n\
        \tmov.u32 %r1, %tid.x;\n\tsetp.ne.u32 %p1, %r1, 0;\n\t@%p1 bra DONE;\n\
        \tmov.u32 %r2, %ctaid.x;\n\tmov.u32 %r3, %ctaid.y;\n\tmov.u32 %r4, %ctaid.z;\n\
        \tmov.u32 %r5, %nctaid.x;\n\tmov.u32 %r6, %nctaid.y;\n\
        \tmad.lo.u32 %r7, %r4, %r6, %r3;\n\tmad.lo.u32 %r8, %r7, %r5, %r2;\n\
        \tatom.global.add.u32 %r9, [%rd2], 1;\n\tmul.wide.u32 %rd3, %r9, 4;\n\tadd.u64 %rd4, %rd1, %rd3;\n\
        \tst.global.u32 [%rd4], %r8;\nDONE:\n\tret;";
    let text = kernel(".param .u64 order, .param .u64 counter", body);
    Module::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn run_order(cta_order: CtaOrder, parallel: bool) -> Vec<u32> {
    let memory = GlobalMemory::new();
    let (order, counter) = (memory.alloc(4 * CTAS), memory.alloc(4));
    memory.write(counter, &[0; 4]).unwrap();
    let params: Vec<u8> = [order, counter].iter().flat_map(|x| x.to_le_bytes()).collect();
    let config = LaunchConfig { grid: GRID, block: [32, 1, 1], dynamic_shared_bytes: 0 };
    let options = SimOptions { parallel, cta_order, ..SimOptions::default() };
    launch(&recorder(), "k", &config, &params, &memory, &options).expect("launch");
    read_u32s(&memory, order, CTAS)
}

#[test]
fn a_shuffled_launch_runs_every_cta_once_in_the_seeded_order() {
    let grid = run_order(CtaOrder::Grid, false);
    assert_eq!(grid, (0..CTAS as u32).collect::<Vec<_>>(), "grid order, sequential");
    let a = run_order(CtaOrder::Shuffled { seed: 1 }, false);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, grid, "each CTA exactly once");
    assert_ne!(a, grid, "seed 1 is not the identity permutation of 24 CTAs");
    // The same seed gives the same order, `parallel` notwithstanding; another seed another one.
    assert_eq!(run_order(CtaOrder::Shuffled { seed: 1 }, true), a);
    assert_ne!(run_order(CtaOrder::Shuffled { seed: 2 }, false), a);
}

#[test]
fn a_grid_too_large_to_permute_is_a_clear_error() {
    let memory = GlobalMemory::new();
    let (order, counter) = (memory.alloc(4), memory.alloc(4));
    let params: Vec<u8> = [order, counter].iter().flat_map(|x| x.to_le_bytes()).collect();
    let side = 1 << 12;
    assert!((side as u64).pow(2) * 2 > MAX_SHUFFLED_CTAS);
    let config = LaunchConfig { grid: [side, side, 2], block: [32, 1, 1], dynamic_shared_bytes: 0 };
    let options = SimOptions { cta_order: CtaOrder::Shuffled { seed: 3 }, ..SimOptions::default() };
    match launch(&recorder(), "k", &config, &params, &memory, &options) {
        Err(SimError::Config(m)) => assert!(m.contains("shuffled") && m.contains(&MAX_SHUFFLED_CTAS.to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
}
