//! The checks: hand-written faulty kernels each produce the right report.

mod common;

use common::run1;
use tessera_sim::{GlobalMemory, Module, Report, SimError, SimOptions};

/// A kernel with 256 bytes of static shared memory `s` and one pointer parameter `out`.
fn module(body: &str) -> Module {
    let text = format!(
        ".version 9.0\n.target sm_80\n.address_size 64\n.shared .align 16 .b8 s[256];\n\n.visible .entry k(.param .u64 out)\n{{\n\
         \t.reg .pred %p<8>;\n\t.reg .b32 %r<16>;\n\t.reg .b64 %rd<8>;\n\
         \tmov.u32 %r1, %tid.x;\n\tmov.u32 %r2, s;\n\tld.param.u64 %rd1, [out];\n{body}\n\tret;\n}}\n"
    );
    Module::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn run(m: &Module, threads: u32, options: SimOptions) -> Result<(), SimError> {
    let mem = GlobalMemory::new();
    let out = mem.alloc(16);
    run1(m, &[out], threads, 0, &mem, &options).map(|_| ())
}

fn fault(r: Result<(), SimError>) -> Report {
    match r {
        Err(SimError::Fault(rep)) => rep,
        other => panic!("expected a fault, got {other:?}"),
    }
}

fn deadlock(r: Result<(), SimError>) -> Report {
    match r {
        Err(SimError::Deadlock(rep)) => rep,
        other => panic!("expected a deadlock report, got {other:?}"),
    }
}

/// Thread 0 writes s[0]; thread 32 (another warp) reads it, with `sync` in between.
fn raw(sync: &str) -> Module {
    module(&format!(
        "\tsetp.eq.u32 %p1, %r1, 0;\n\tmov.u32 %r3, 7;\n\t@%p1 st.shared.u32 [%r2], %r3;\n{sync}\n\
         \tsetp.eq.u32 %p2, %r1, 32;\n\t@%p2 ld.shared.u32 %r4, [%r2];"
    ))
}

#[test]
fn write_then_read_without_barrier_is_a_race() {
    let rep = fault(run(&raw(""), 64, SimOptions::default()));
    assert!(rep.kind.contains("shared-memory race: write by thread (0, 0, 0) then read by thread (32, 0, 0)"), "{rep}");
    assert_eq!(rep.thread, [32, 0, 0]);
    assert_eq!(rep.cta, [0, 0, 0]);
    assert_eq!(rep.kernel, "k");
    assert_eq!(rep.address, Some(0));
    assert_eq!(rep.ptx_line, 19, "{rep}");
    let line = rep.to_string();
    assert!(!line.contains('\n') && line.contains("kernel `k`") && line.contains("PTX line 19"), "{line}");
    run(&raw("\tbar.sync 0;"), 64, SimOptions::default()).expect("a barrier orders the accesses");
    run(&raw("\tbarrier.sync.aligned 0;"), 64, SimOptions::default()).expect("barrier.sync too");
    // Without checks the race goes unreported.
    run(&raw(""), 64, SimOptions { checks: false, ..SimOptions::default() }).expect("checks off");
}

#[test]
fn read_then_write_without_barrier_is_a_race() {
    let m = module(
        "\tmov.u32 %r3, 7;\n\tsetp.eq.u32 %p1, %r1, 0;\n\t@%p1 st.shared.u32 [%r2], %r3;\n\tbar.sync 0;\n\
         \t@%p1 ld.shared.u32 %r4, [%r2];\n\tsetp.eq.u32 %p2, %r1, 32;\n\t@%p2 st.shared.u32 [%r2], %r3;",
    );
    let rep = fault(run(&m, 64, SimOptions::default()));
    assert!(rep.kind.contains("read by thread (0, 0, 0) then write by thread (32, 0, 0)"), "{rep}");
}

#[test]
fn warp_collectives_order_accesses_inside_a_warp() {
    // Lane 0 writes, lane 1 reads: a race without a warp barrier, fine with one.
    let body = |sync: &str| {
        format!(
            "\tsetp.eq.u32 %p1, %r1, 0;\n\tmov.u32 %r3, 7;\n\t@%p1 st.shared.u32 [%r2], %r3;\n{sync}\n\
             \tsetp.eq.u32 %p2, %r1, 1;\n\t@%p2 ld.shared.u32 %r4, [%r2];"
        )
    };
    let rep = fault(run(&module(&body("")), 32, SimOptions::default()));
    assert!(rep.kind.contains("race"), "{rep}");
    run(&module(&body("\tbar.warp.sync -1;")), 32, SimOptions::default()).expect("__syncwarp orders");
    run(&module(&body("\tshfl.sync.bfly.b32 %r5, %r1, 1, 31, -1;")), 32, SimOptions::default()).expect("a collective orders");
}

#[test]
fn uninitialised_shared_read() {
    let rep = fault(run(&module("\tld.shared.u32 %r3, [%r2+8];"), 1, SimOptions::default()));
    assert!(rep.kind.contains("never written"), "{rep}");
    assert_eq!(rep.address, Some(8));
}

#[test]
fn out_of_bounds_and_misaligned_accesses() {
    let rep = fault(run(&module("\tld.global.u32 %r3, [%rd1+16];"), 1, SimOptions::default()));
    assert!(rep.kind.contains("out-of-bounds global load of 4 bytes"), "{rep}");
    assert!(rep.address.is_some_and(|a| a % 256 == 16));
    let rep = fault(run(&module("\tld.global.u32 %r3, [%rd1+2];"), 1, SimOptions::default()));
    assert!(rep.kind.contains("misaligned global load"), "{rep}");
    let rep = fault(run(&module("\tmov.u32 %r3, 1;\n\tst.shared.u32 [%r2+256], %r3;"), 1, SimOptions::default()));
    assert!(rep.kind.contains("out-of-bounds shared store of 4 bytes (shared memory is 256 bytes)"), "{rep}");
    assert_eq!(rep.address, Some(256));
    // Bounds are checked with checks off too.
    let rep = fault(run(&module("\tst.global.v4.u32 [%rd1+8], {%r1, %r1, %r1, %r1};"), 1, SimOptions { checks: false, ..SimOptions::default() }));
    assert!(rep.kind.contains("misaligned global store of 16 bytes"), "{rep}");
    let rep = fault(run(&module("\tmov.u64 %rd2, 0;\n\tld.u32 %r3, [%rd2];"), 1, SimOptions::default()));
    assert!(rep.kind.contains("out-of-bounds global load"), "null pointer: {rep}");
    let rep = fault(run(&module("\tld.param.u32 %r3, [out+8];"), 1, SimOptions::default()));
    assert!(rep.kind.contains("out-of-bounds param load"), "{rep}");
}

#[test]
fn divergent_barriers() {
    // Warp 0 waits at one barrier instruction, warp 1 at another.
    let m = module(
        "\tsetp.lt.u32 %p1, %r1, 32;\n\t@%p1 bra $L_a;\n\tbar.sync 0;\n\tbra $L_end;\n$L_a:\n\tbar.sync 0;\n$L_end:",
    );
    let rep = deadlock(run(&m, 64, SimOptions::default()));
    assert!(rep.kind.contains("barrier divergence: threads wait at different barriers"), "{rep}");
    // Half the threads exit while the others wait.
    let m = module("\tsetp.lt.u32 %p1, %r1, 32;\n\t@%p1 bra $L_end;\n\tbar.sync 0;\n$L_end:");
    let rep = deadlock(run(&m, 64, SimOptions::default()));
    assert!(rep.kind.contains("barrier divergence") && rep.kind.contains("has exited"), "{rep}");
    assert_eq!(rep.thread, [32, 0, 0]);
    assert_eq!(rep.ptx_line, 16);
}

#[test]
fn a_collective_some_lanes_never_reach() {
    let m = module("\tsetp.lt.u32 %p1, %r1, 16;\n\t@!%p1 bra $L_end;\n\tshfl.sync.bfly.b32 %r5, %r1, 1, 31, -1;\n$L_end:");
    let rep = deadlock(run(&m, 32, SimOptions::default()));
    assert!(rep.kind.contains("warp collective `shfl.sync.bfly` cannot complete: lane 16"), "{rep}");
    assert!(rep.kind.contains("has exited"), "{rep}");
    // A source lane outside the member mask.
    let m = module("\tshfl.sync.idx.b32 %r5, %r1, 20, 31, 0x0000ffff;");
    let rep = fault(run(&m, 16, SimOptions::default()));
    assert!(rep.kind.contains("not in the member mask"), "{rep}");
}

#[test]
fn runaway_threads_hit_the_step_budget() {
    let m = module("$L_loop:\n\tadd.s32 %r3, %r3, 1;\n\tbra $L_loop;");
    match run(&m, 32, SimOptions { step_budget: 10_000, ..SimOptions::default() }) {
        Err(SimError::StepBudget(rep)) => {
            assert_eq!(rep.thread, [0, 0, 0]);
            assert!(rep.kind.contains("10000 instructions"), "{rep}");
            assert!(rep.ptx_line == 15 || rep.ptx_line == 16, "{rep}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_cp_async_wait_is_reported() {
    let body = |wait: &str| {
        format!(
            "\tcvta.to.global.u64 %rd2, %rd1;\n\tmul.lo.u32 %r3, %r1, 16;\n\tadd.u32 %r4, %r2, %r3;\n\
             \tcp.async.cg.shared.global [%r4], [%rd2], 16;\n\tcp.async.commit_group;\n{wait}\n\
             \tld.shared.u32 %r5, [%r4];"
        )
    };
    let rep = fault(run(&module(&body("")), 1, SimOptions::default()));
    assert!(rep.kind.contains("cp.async is still copying"), "{rep}");
    run(&module(&body("\tcp.async.wait_group 0;")), 1, SimOptions::default()).expect("waited");
    run(&module(&body("\tcp.async.wait_all;")), 1, SimOptions::default()).expect("waited");
    // wait_group 1 leaves the only group in flight.
    let rep = fault(run(&module(&body("\tcp.async.wait_group 1;")), 1, SimOptions::default()));
    assert!(rep.kind.contains("cp.async"), "{rep}");
    // Another thread reading after a barrier but before the issuer's wait: still in flight.
    let m = module(
        "\tcvta.to.global.u64 %rd2, %rd1;\n\tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 cp.async.cg.shared.global [%r2], [%rd2], 16;\n\tcp.async.commit_group;\n\tbar.sync 0;\n\
         \tsetp.eq.u32 %p2, %r1, 32;\n\t@%p2 ld.shared.u32 %r5, [%r2];\n\tbar.sync 0;",
    );
    let rep = fault(run(&m, 64, SimOptions::default()));
    assert_eq!(rep.thread, [32, 0, 0]);
    assert!(rep.kind.contains("cp.async is still copying"), "{rep}");
}

#[test]
fn cp_async_source_bounds() {
    let m = module(
        "\tcvta.to.global.u64 %rd2, %rd1;\n\tcp.async.cg.shared.global [%r2], [%rd2+16], 16;\n\tcp.async.wait_all;",
    );
    let rep = fault(run(&m, 1, SimOptions::default()));
    assert!(rep.kind.contains("out-of-bounds cp.async global source"), "{rep}");
    // src-size 0: nothing is read, the destination is zero-filled.
    let m = module(
        "\tcvta.to.global.u64 %rd2, %rd1;\n\tmov.u32 %r6, 0;\n\tcp.async.cg.shared.global [%r2], [%rd2+4096], 16, %r6;\n\
         \tcp.async.wait_all;\n\tld.shared.v4.u32 {%r7, %r8, %r9, %r10}, [%r2];",
    );
    run(&m, 1, SimOptions::default()).expect("zero-fill reads nothing");
}

#[test]
fn trap_is_a_fault() {
    let rep = fault(run(&module("\ttrap;"), 1, SimOptions::default()));
    assert_eq!(rep.kind, "trap");
}
