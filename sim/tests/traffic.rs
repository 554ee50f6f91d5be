//! Global-memory traffic counters of `LaunchStats`: exact byte totals for small kernels.

mod common;

use common::kernel;
use tessera_sim::{launch, GlobalMemory, LaunchConfig, LaunchStats, Module, SimOptions};

const CTAS: u32 = 2;
const THREADS: u32 = 64;
/// Threads with `%tid.x < ACTIVE` execute the counted instructions; the rest are guarded off.
const ACTIVE: u64 = 48;

/// Runs entry `k` of `text` on `CTAS` x `THREADS` with parameters (src, dst), each buffer 16 bytes
/// per thread of the grid.
fn run(text: &str, options: &SimOptions) -> (LaunchStats, Vec<u8>) {
    let module = Module::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mem = GlobalMemory::new();
    let n = (CTAS * THREADS) as usize;
    let src = mem.alloc(16 * n);
    let input: Vec<u8> = (0..16 * n).map(|i| (i % 251) as u8).collect();
    mem.write(src, &input).expect("write");
    let dst = mem.alloc(16 * n);
    let mut params = src.to_le_bytes().to_vec();
    params.extend_from_slice(&dst.to_le_bytes());
    let config = LaunchConfig { grid: [CTAS, 1, 1], block: [THREADS, 1, 1], dynamic_shared_bytes: 0 };
    let stats = launch(&module, "k", &config, &params, &mem, options).unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![0u8; 16 * n];
    mem.read(dst, &mut out).expect("read");
    (stats, out)
}

/// The same counts from the parallel and the serial scheduler.
fn run_both(text: &str) -> LaunchStats {
    let (par, out_par) = run(text, &SimOptions::default());
    let (ser, out_ser) = run(text, &SimOptions { parallel: false, ..SimOptions::default() });
    assert_eq!(out_par, out_ser);
    assert_eq!(
        (par.thread_instructions, par.ctas, par.async_copy_bytes, par.global_load_bytes, par.global_store_bytes),
        (ser.thread_instructions, ser.ctas, ser.async_copy_bytes, ser.global_load_bytes, ser.global_store_bytes)
    );
    par
}

/// Registers and the prologue every kernel here shares: %rd1 = src, %rd2 = dst (global),
/// %r1 = tid, %r2 = global thread index, %rd3 = 16 * that index, %p1 = tid < ACTIVE,
/// %r3 = this thread's 32 bytes of shared memory.
fn prologue() -> String {
    format!(
        "\t.reg .pred %p<4>;\n\t.reg .b16 %h<4>;\n\t.reg .b32 %r<16>;\n\t.reg .f32 %f<8>;\n\t.reg .b64 %rd<16>;\n\
         \t.shared .align 16 .b8 smem[{}];\n\
         \tld.param.u64 %rd10, [psrc];\n\tld.param.u64 %rd11, [pdst];\n\
         \tcvta.to.global.u64 %rd1, %rd10;\n\tcvta.to.global.u64 %rd2, %rd11;\n\
         \tmov.u32 %r1, %tid.x;\n\tmov.u32 %r4, %ctaid.x;\n\tmad.lo.s32 %r2, %r4, {THREADS}, %r1;\n\
         \tmul.wide.u32 %rd3, %r2, 16;\n\tsetp.lt.u32 %p1, %r1, {ACTIVE};\n\
         \tmov.u32 %r5, smem;\n\tmad.lo.s32 %r3, %r1, 32, %r5;\n",
        32 * THREADS
    )
}

#[test]
fn cp_async_loads_and_stores_count_exact_bytes() {
    let body = format!(
        "{}\
         \tadd.s64 %rd4, %rd1, %rd3;\n\
         \tmov.u32 %r6, 0;\n\
         \t@%p1 cp.async.cg.shared.global [%r3], [%rd4], 16, 16;\n\
         \t@%p1 cp.async.cg.shared.global [%r3+16], [%rd4], 16, %r6;\n\
         \tcp.async.commit_group;\n\tcp.async.wait_all;\n\
         \t@%p1 ld.global.v4.f32 {{%f1, %f2, %f3, %f4}}, [%rd4];\n\
         \tadd.f32 %f5, %f1, %f4;\n\
         \tmul.wide.u32 %rd5, %r2, 4;\n\tadd.s64 %rd6, %rd2, %rd5;\n\
         \t@%p1 st.global.f32 [%rd6], %f5;\n\tret;",
        prologue()
    );
    let stats = run_both(&kernel(".param .u64 psrc, .param .u64 pdst", &body));
    let executed = CTAS as u64 * ACTIVE;
    assert_eq!(stats.ctas, CTAS as u64);
    // src-size 16 reads 16 bytes, src-size 0 (zero fill) reads none.
    assert_eq!(stats.async_copy_bytes, executed * 16);
    assert_eq!(stats.async_copy_bytes, 1536);
    assert_eq!(stats.global_load_bytes, executed * 16);
    assert_eq!(stats.global_load_bytes, 1536);
    assert_eq!(stats.global_store_bytes, executed * 4);
    assert_eq!(stats.global_store_bytes, 384);
}

#[test]
fn traffic_counts_every_global_access_form_and_nothing_else() {
    let module_vars = ".const .align 4 .b32 cval[2] = {7, 9};\n";
    let body = format!(
        "{}\
         \tadd.s64 %rd4, %rd1, %rd3;\n\tadd.s64 %rd5, %rd2, %rd3;\n\
         \tmov.u32 %r6, 8;\n\tsetp.ne.u32 %p2, %r1, %r1;\n\tsetp.eq.u32 %p3, %r1, %r1;\n\
         // cp.async: 4 + 8 + src-size 8 of 16 + ignore-src false (16) + ignore-src true (0) = 36
         \t@%p1 cp.async.ca.shared.global [%r3], [%rd4], 4;\n\
         \t@%p1 cp.async.ca.shared.global [%r3+8], [%rd4+8], 8;\n\
         \t@%p1 cp.async.cg.shared.global [%r3+16], [%rd4], 16, %r6;\n\
         \tcp.async.wait_all;\n\
         \t@%p1 cp.async.cg.shared.global [%r3+16], [%rd4], 16, %p2;\n\
         \tcp.async.wait_all;\n\
         \t@%p1 cp.async.cg.shared.global [%r3+16], [%rd4], 16, %p3;\n\
         \tcp.async.wait_all;\n\
         // loads: .nc v2 (8) + ldu (4) + generic u64 (8) + u8 (1) + cache-hinted v4.u16 (8) = 29
         \t@%p1 ld.global.nc.v2.u32 {{%r7, %r8}}, [%rd4];\n\
         \t@%p1 ldu.global.u32 %r9, [%rd4+8];\n\
         \t@%p1 ld.u64 %rd6, [%rd10];\n\
         \t@%p1 ld.global.u8 %h1, [%rd4+3];\n\
         \t@%p1 ld.global.cg.v4.u16 {{%h0, %h1, %h2, %h3}}, [%rd4];\n\
         // not global loads: .const, shared, param, and atomics
         \t@%p1 ld.const.u32 %r10, [cval+4];\n\
         \t@%p1 ld.shared.u32 %r11, [%r3];\n\
         \t@%p1 ld.param.u64 %rd7, [psrc];\n\
         \t@%p1 atom.global.add.u32 %r12, [%rd5+12], 1;\n\
         \t@%p1 red.global.add.u32 [%rd5+12], 1;\n\
         // stores: v2.u32 (8) + generic u16 (2) = 10
         \t@%p1 st.global.v2.u32 [%rd5], {{%r7, %r10}};\n\
         \tadd.s64 %rd8, %rd11, %rd3;\n\
         \t@%p1 st.u16 [%rd8+8], %h1;\n\
         \tst.shared.u32 [%r3], %r9;\n\tret;",
        prologue()
    );
    let text = kernel(".param .u64 psrc, .param .u64 pdst", &body).replacen(".visible", &format!("{module_vars}.visible"), 1);
    let stats = run_both(&text);
    let executed = CTAS as u64 * ACTIVE;
    assert_eq!(stats.async_copy_bytes, executed * 36);
    assert_eq!(stats.global_load_bytes, executed * 29);
    assert_eq!(stats.global_store_bytes, executed * 10);
}

#[test]
fn kernels_without_global_traffic_count_zero() {
    let body = format!("{}\tst.shared.u32 [%r3], %r1;\n\tld.shared.u32 %r6, [%r3];\n\tret;", prologue());
    let stats = run_both(&kernel(".param .u64 psrc, .param .u64 pdst", &body));
    assert_eq!((stats.async_copy_bytes, stats.global_load_bytes, stats.global_store_bytes), (0, 0, 0));
    assert!(stats.thread_instructions > 0);
}
