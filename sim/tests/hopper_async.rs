//! Hopper (sm_90a) asynchronous data movement and synchronisation: mbarrier, bulk and tensor (TMA)
//! copies, tensor maps and swizzling, proxy fences, elect.sync, named barriers, setmaxnreg,
//! stmatrix. Hand-written PTX (plus NVRTC's output for tests/ptx/hopper_tma.cu), exact expected
//! shared and global contents, and the reports of the checks.

mod common;

use tessera_sim::{launch, GlobalMemory, LaunchConfig, LaunchStats, Module, OobFill, Report, SimError, SimOptions, Swizzle, TensorMap};

/// PTX ISA 8.6: tensor copies may name `.shared::cta` as their destination.
const HEAD: &str = ".version 8.6\n.target sm_90a\n.address_size 64\n";

/// A module with one entry `k`.
fn module(params: &str, body: &str) -> Module {
    let text = format!("{HEAD}\n.visible .entry k({params})\n{{\n{body}\n}}\n");
    Module::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Kernel parameters: raw bytes appended in order (the caller keeps the layout's alignment).
#[derive(Default)]
struct Params(Vec<u8>);

impl Params {
    fn map(mut self, m: &TensorMap) -> Params {
        while self.0.len() % 64 != 0 {
            self.0.push(0);
        }
        self.0.extend_from_slice(&m.encode());
        self
    }
    fn u64(mut self, v: u64) -> Params {
        while self.0.len() % 8 != 0 {
            self.0.push(0);
        }
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Params {
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

fn run_with(m: &Module, entry: &str, params: &Params, threads: u32, mem: &GlobalMemory, options: SimOptions) -> Result<LaunchStats, SimError> {
    let mut p = params.0.clone();
    p.resize(m.param_bytes(entry).expect("entry"), 0);
    let config = LaunchConfig { grid: [1, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: 0 };
    launch(m, entry, &config, &p, mem, &options)
}

fn run(m: &Module, params: &Params, threads: u32, mem: &GlobalMemory) -> Result<LaunchStats, SimError> {
    run_with(m, "k", params, threads, mem, SimOptions::default())
}

fn fault(r: Result<LaunchStats, SimError>) -> Report {
    match r {
        Err(SimError::Fault(rep)) => rep,
        other => panic!("expected a fault, got {other:?}"),
    }
}

fn deadlock(r: Result<LaunchStats, SimError>) -> Report {
    match r {
        Err(SimError::Deadlock(rep)) => rep,
        other => panic!("expected a deadlock report, got {other:?}"),
    }
}

fn read(mem: &GlobalMemory, addr: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    mem.read(addr, &mut out).expect("read");
    out
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The physical position of byte `o` of a dense box written at a 1024-byte aligned address, from
/// the ISA's swizzle tables: the 16-byte chunk c of 128-byte line r moves to chunk c ^ (r % n),
/// n = 8 (128B), 4 (64B), 2 (32B).
fn swizzled(o: usize, s: Swizzle) -> usize {
    let n = match s {
        Swizzle::None => return o,
        Swizzle::B32 => 2,
        Swizzle::B64 => 4,
        Swizzle::B128 => 8,
    };
    let (line, chunk, byte) = (o / 128, (o / 16) % 8, o % 16);
    line * 128 + (chunk ^ (line % n)) * 16 + byte
}

/// Registers and the mbarrier / shared buffer of the TMA kernels.
const REGS: &str = "\t.reg .pred %p<8>;\n\t.reg .b32 %r<40>;\n\t.reg .b64 %rd<16>;\n\t.reg .f32 %f<8>;\n";

/// A 32-thread kernel: thread 0 initialises the mbarrier, arms it with `bytes` and issues a
/// `dim`-d tensor load of the box at `coords` into `smem` (1024-byte aligned, 16 KiB); every
/// thread waits on the mbarrier, then the CTA copies the first `bytes` bytes of shared memory (the
/// swizzled image) to `out`. Parameters: tensor map, out, bytes.
fn tma_dump(coords: &[i32]) -> Module {
    let names: Vec<String> = (0..coords.len()).map(|i| format!("%r{}", 20 + i)).collect();
    let movs: String = coords.iter().zip(&names).map(|(c, n)| format!("\tmov.b32 {n}, {c};\n")).collect();
    let body = format!(
        "{REGS}\t.shared .align 1024 .b8 smem[16384];\n\t.shared .align 8 .b64 bar;\n\
         \tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [out];\n\tld.param.u32 %r2, [bytes];\n\
         \tmov.u32 %r3, smem;\n\tmov.u32 %r4, bar;\n\tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [%r4], 1;\n\tbar.sync 0;\n\
         \tmov.b64 %rd2, tmap;\n\tcvta.param.u64 %rd3, %rd2;\n{movs}\
         \t@%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r4], %r2;\n\
         \t@%p1 cp.async.bulk.tensor.{d}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r3], [%rd3, {{{list}}}], [%r4];\n\
         $WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\
         \tshl.b32 %r7, %r1, 4;\n\
         $LOOP:\n\tsetp.ge.u32 %p3, %r7, %r2;\n\t@%p3 bra $DONE;\n\tadd.u32 %r8, %r3, %r7;\n\
         \tld.shared.v4.u32 {{%r9, %r10, %r11, %r12}}, [%r8];\n\tcvt.u64.u32 %rd4, %r7;\n\tadd.s64 %rd5, %rd1, %rd4;\n\
         \tst.global.v4.u32 [%rd5], {{%r9, %r10, %r11, %r12}};\n\tadd.u32 %r7, %r7, 512;\n\tbra $LOOP;\n$DONE:\n\tret;",
        d = coords.len(),
        list = names.join(", ")
    );
    module(".param .align 64 .b8 tmap[128], .param .u64 out, .param .u32 bytes", &body)
}

/// A bf16-like [rows x cols] tensor whose element (r, c) holds the bits r * 256 + c, row pitch
/// `pitch` bytes.
fn tensor_2d(mem: &GlobalMemory, rows: usize, cols: usize, pitch: usize) -> u64 {
    let buf = mem.alloc(rows * pitch);
    let mut bytes = vec![0u8; rows * pitch];
    for r in 0..rows {
        for c in 0..cols {
            let v = (r * 256 + c) as u16;
            bytes[r * pitch + 2 * c..r * pitch + 2 * c + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    mem.write(buf, &bytes).expect("write");
    buf
}

#[test]
fn target_sm_90a_parses() {
    let m = module("", "\tret;");
    assert_eq!(m.target(), ["sm_90a".to_string()]);
    assert_eq!(m.ptx_version(), Some("8.6"));
    let m = Module::parse(&HEAD.replace("8.6", "8.0").replace("sm_90a", "sm_90")).expect("parse");
    assert_eq!(m.target(), ["sm_90".to_string()]);
}

#[test]
fn tma_2d_load_of_a_64_row_bf16_box_in_every_swizzle_mode() {
    // (swizzle, box columns): the box's inner extent may not exceed the swizzle span.
    for (swizzle, cols) in [(Swizzle::None, 64u32), (Swizzle::B128, 64), (Swizzle::B64, 32), (Swizzle::B32, 16)] {
        let mem = GlobalMemory::new();
        let (rows, width, pitch) = (100usize, 96usize, 256usize);
        let t = tensor_2d(&mem, rows, width, pitch);
        let map = TensorMap::tiled(t, 2, &[width as u64, rows as u64], &[pitch as u64], &[cols, 64], swizzle, OobFill::Zero).unwrap();
        let bytes = map.box_bytes();
        assert_eq!(bytes, cols as usize * 64 * 2);
        let out = mem.alloc(bytes);
        let (c0, c1) = (8usize, 16usize);
        let m = tma_dump(&[c0 as i32, c1 as i32]);
        let stats = run(&m, &Params::default().map(&map).u64(out).u32(bytes as u32), 32, &mem).unwrap_or_else(|e| panic!("{swizzle:?}: {e}"));
        assert_eq!(stats.async_copy_bytes, bytes as u64, "{swizzle:?}: all of the box is inside the tensor");
        let got = read(&mem, out, bytes);
        // Dense image of the box, then the ISA's swizzle tables.
        let mut want = vec![0u8; bytes];
        let mut dense = vec![0u8; bytes];
        for r in 0..64 {
            for c in 0..cols as usize {
                let v = ((c1 + r) * 256 + c0 + c) as u16;
                let o = (r * cols as usize + c) * 2;
                let p = swizzled(o, swizzle);
                want[p..p + 2].copy_from_slice(&v.to_le_bytes());
                dense[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        assert_eq!(u16s(&got), u16s(&want), "{swizzle:?}");
        assert_eq!(got == dense, swizzle == Swizzle::None, "{swizzle:?}: swizzling moves chunks");
    }
}

#[test]
fn tma_box_at_the_tensor_edge_is_zero_filled() {
    let mem = GlobalMemory::new();
    let (rows, width, pitch) = (100usize, 80usize, 160usize);
    let t = tensor_2d(&mem, rows, width, pitch);
    let map = TensorMap::tiled(t, 2, &[width as u64, rows as u64], &[pitch as u64], &[64, 64], Swizzle::None, OobFill::Zero).unwrap();
    let out = mem.alloc(8192);
    // Columns -8..56 and rows 90..154: the first 8 columns and the last 54 rows are outside.
    let m = tma_dump(&[-8, 90]);
    let stats = run(&m, &Params::default().map(&map).u64(out).u32(8192), 32, &mem).expect("run");
    assert_eq!(stats.async_copy_bytes, 10 * 56 * 2, "only the elements inside the tensor are read");
    let got = u16s(&read(&mem, out, 8192));
    for r in 0..64 {
        for c in 0..64 {
            let (gr, gc) = (90 + r as i64, c as i64 - 8);
            let want = if gr < rows as i64 && gc >= 0 { (gr * 256 + gc) as u16 } else { 0 };
            assert_eq!(got[r * 64 + c], want, "box ({r}, {c})");
        }
    }
    // The NaN fill: f16/bf16 NaN bits.
    let nan_map = TensorMap { oob_fill: OobFill::Nan, ..map };
    run(&m, &Params::default().map(&nan_map).u64(out).u32(8192), 32, &mem).expect("run");
    let got = u16s(&read(&mem, out, 8192));
    assert_eq!(got[0], 0x7fff);
    assert_eq!(got[8], 90 * 256);
    assert_eq!(got[63 * 64 + 20], 0x7fff);
}

#[test]
fn tma_3d_box() {
    let mem = GlobalMemory::new();
    // f32 [6][10][32] tensor, element (z, y, x) = z * 1000 + y * 40 + x.
    let (nx, ny, nz) = (32usize, 10usize, 6usize);
    let data: Vec<f32> = (0..nx * ny * nz).map(|i| ((i / (nx * ny)) * 1000 + ((i / nx) % ny) * 40 + i % nx) as f32).collect();
    let t = mem.alloc(data.len() * 4);
    mem.write(t, &data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).expect("write");
    let map = TensorMap::tiled(t, 4, &[nx as u64, ny as u64, nz as u64], &[nx as u64 * 4, (nx * ny) as u64 * 4], &[16, 4, 3], Swizzle::None, OobFill::Zero).unwrap();
    let bytes = map.box_bytes();
    assert_eq!(bytes, 16 * 4 * 3 * 4);
    let out = mem.alloc(bytes);
    let (x0, y0, z0) = (20i64, 8i64, 4i64);
    let m = tma_dump(&[x0 as i32, y0 as i32, z0 as i32]);
    run(&m, &Params::default().map(&map).u64(out).u32(bytes as u32), 32, &mem).expect("run");
    let got = f32s(&read(&mem, out, bytes));
    for z in 0..3 {
        for y in 0..4 {
            for x in 0..16 {
                let (gx, gy, gz) = (x0 + x, y0 + y, z0 + z);
                let inside = gx < nx as i64 && gy < ny as i64 && gz < nz as i64;
                let want = if inside { (gz * 1000 + gy * 40 + gx) as f32 } else { 0.0 };
                assert_eq!(got[((z * 4 + y) * 16 + x) as usize], want, "({z}, {y}, {x})");
            }
        }
    }
}

#[test]
fn bulk_1d_copy_completes_on_the_mbarrier() {
    let mem = GlobalMemory::new();
    let src = mem.alloc(512);
    let data: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
    mem.write(src, &data).expect("write");
    let out = mem.alloc(256);
    let m = module(
        ".param .u64 src, .param .u64 out",
        &format!(
            "{REGS}\t.shared .align 128 .b8 smem[512];\n\t.shared .align 8 .b64 bar;\n\
             \tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [src];\n\tld.param.u64 %rd2, [out];\n\
             \tmov.u32 %r3, smem;\n\tmov.u32 %r4, bar;\n\tsetp.eq.u32 %p1, %r1, 0;\n\
             \t@%p1 mbarrier.init.shared::cta.b64 [%r4], 1;\n\tbar.sync 0;\n\
             \tmov.u32 %r5, 256;\n\tadd.s64 %rd3, %rd1, 128;\n\tadd.u32 %r6, %r3, 64;\n\
             \t@%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r4], %r5;\n\
             \t@%p1 cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r6], [%rd3], %r5, [%r4];\n\
             $WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\
             \tshl.b32 %r7, %r1, 3;\n\tadd.u32 %r8, %r6, %r7;\n\tld.shared.u64 %rd4, [%r8];\n\
             \tcvt.u64.u32 %rd5, %r7;\n\tadd.s64 %rd6, %rd2, %rd5;\n\tst.global.u64 [%rd6], %rd4;\n\tret;"
        ),
    );
    let stats = run(&m, &Params::default().u64(src).u64(out), 32, &mem).expect("run");
    assert_eq!(read(&mem, out, 256), data[128..384]);
    assert_eq!(stats.async_copy_bytes, 256);
    assert_eq!(stats.global_load_bytes, 0);
}

/// Warp 0 (lane 0) produces 8 values into a 2-slot ring in shared memory (st.shared, then
/// mbarrier.arrive on the slot's full barrier); warps 1 and 2 (64 threads) wait on the full
/// barrier by phase parity, add the value to a running sum and release the slot (arrive on the
/// empty barrier, expected count 64), which the producer waits on before reusing the slot. With
/// checks on: no race is reported, the sums are exact.
#[test]
fn mbarrier_ring_with_a_producer_warp_and_consumer_warps() {
    let body = format!(
        "{REGS}\t.shared .align 16 .b32 slot[2];\n\t.shared .align 8 .b64 full[2];\n\t.shared .align 8 .b64 empty[2];\n\
         \tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [out];\n\
         \tmov.u32 %r2, slot;\n\tmov.u32 %r3, full;\n\tmov.u32 %r4, empty;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [%r3], 1;\n\t@%p1 mbarrier.init.shared::cta.b64 [%r3+8], 1;\n\
         \tmov.u32 %r5, 64;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [%r4], %r5;\n\t@%p1 mbarrier.init.shared::cta.b64 [%r4+8], %r5;\n\
         \tbar.sync 0;\n\
         \tsetp.ge.u32 %p2, %r1, 32;\n\t@%p2 bra $CONSUMER;\n\t@!%p1 bra $END;\n\
         // producer: for t in 0..8: slot s = t % 2; if t >= 2 wait empty[s] parity (t/2 - 1) & 1\n\
         \tmov.u32 %r10, 0;\n\
         $PLOOP:\n\tand.b32 %r11, %r10, 1;\n\tshl.b32 %r12, %r11, 3;\n\tshl.b32 %r13, %r11, 2;\n\
         \tsetp.lt.u32 %p3, %r10, 2;\n\t@%p3 bra $FILL;\n\
         \tshr.u32 %r14, %r10, 1;\n\tsub.u32 %r14, %r14, 1;\n\tand.b32 %r14, %r14, 1;\n\tadd.u32 %r15, %r4, %r12;\n\
         $PWAIT:\n\tmbarrier.try_wait.parity.acquire.cta.shared::cta.b64 %p4, [%r15], %r14;\n\t@!%p4 bra $PWAIT;\n\
         $FILL:\n\tmul.lo.u32 %r16, %r10, 10;\n\tadd.u32 %r16, %r16, 1;\n\tadd.u32 %r17, %r2, %r13;\n\
         \tst.shared.u32 [%r17], %r16;\n\tadd.u32 %r15, %r3, %r12;\n\
         \tmbarrier.arrive.release.cta.shared::cta.b64 %rd2, [%r15];\n\
         \tadd.u32 %r10, %r10, 1;\n\tsetp.lt.u32 %p3, %r10, 8;\n\t@%p3 bra $PLOOP;\n\tbra $END;\n\
         $CONSUMER:\n\tmov.u32 %r10, 0;\n\tmov.u32 %r20, 0;\n\
         $CLOOP:\n\tand.b32 %r11, %r10, 1;\n\tshl.b32 %r12, %r11, 3;\n\tshl.b32 %r13, %r11, 2;\n\
         \tshr.u32 %r14, %r10, 1;\n\tand.b32 %r14, %r14, 1;\n\tadd.u32 %r15, %r3, %r12;\n\
         $CWAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p4, [%r15], %r14, 1000;\n\t@!%p4 bra $CWAIT;\n\
         \tadd.u32 %r17, %r2, %r13;\n\tld.shared.u32 %r18, [%r17];\n\tadd.u32 %r20, %r20, %r18;\n\
         \tadd.u32 %r15, %r4, %r12;\n\tmbarrier.arrive.shared::cta.b64 _, [%r15];\n\
         \tadd.u32 %r10, %r10, 1;\n\tsetp.lt.u32 %p3, %r10, 8;\n\t@%p3 bra $CLOOP;\n\
         \tsub.u32 %r21, %r1, 32;\n\tmul.wide.u32 %rd3, %r21, 4;\n\tadd.s64 %rd4, %rd1, %rd3;\n\tst.global.u32 [%rd4], %r20;\n\
         $END:\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let out = mem.alloc(64 * 4);
    run(&m, &Params::default().u64(out), 96, &mem).expect("no race, no deadlock");
    // sum over t of 10 t + 1 = 10 * 28 + 8.
    assert_eq!(common::read_u32s(&mem, out, 64), vec![288; 64]);
}

/// arrive returns the phase as its state; test_wait with that state, and the parity forms, answer
/// for the current (false) and the immediately preceding (true) phase; arrive with a count.
#[test]
fn mbarrier_state_parity_and_counts() {
    let body = format!(
        "{REGS}\t.shared .align 8 .b64 bar;\n\tld.param.u64 %rd1, [out];\n\tmov.u32 %r4, bar;\n\
         \tmbarrier.init.shared.b64 [%r4], 3;\n\
         \tmbarrier.arrive.shared.b64 %rd2, [%r4];\n\
         \tmbarrier.test_wait.shared.b64 %p1, [%r4], %rd2;\n\tselp.u32 %r10, 1, 0, %p1;\n\
         \tmbarrier.arrive.shared::cta.b64 %rd3, [%r4], 2;\n\
         \tmbarrier.test_wait.shared.b64 %p1, [%r4], %rd2;\n\tselp.u32 %r11, 1, 0, %p1;\n\
         \tmbarrier.test_wait.parity.shared.b64 %p1, [%r4], 0;\n\tselp.u32 %r12, 1, 0, %p1;\n\
         \tmbarrier.test_wait.parity.shared.b64 %p1, [%r4], 1;\n\tselp.u32 %r13, 1, 0, %p1;\n\
         \tmbarrier.arrive.noComplete.shared.b64 %rd4, [%r4], 2;\n\
         \tmbarrier.arrive.expect_tx.shared.b64 %rd5, [%r4], 32;\n\
         \tmbarrier.complete_tx.shared.b64 [%r4], 16;\n\
         \tmbarrier.try_wait.parity.shared.b64 %p1, [%r4], 1;\n\tselp.u32 %r14, 1, 0, %p1;\n\
         \tmbarrier.expect_tx.relaxed.cta.shared.b64 [%r4], 8;\n\
         \tmbarrier.complete_tx.shared.b64 [%r4], 24;\n\
         \tmbarrier.try_wait.parity.shared.b64 %p1, [%r4], 1;\n\tselp.u32 %r15, 1, 0, %p1;\n\
         \tmbarrier.inval.shared.b64 [%r4];\n\
         \tst.global.v4.u32 [%rd1], {{%r10, %r11, %r12, %r13}};\n\tst.global.v2.u32 [%rd1+16], {{%r14, %r15}};\n\
         \tcvt.u32.u64 %r16, %rd2;\n\tcvt.u32.u64 %r17, %rd3;\n\tcvt.u32.u64 %r18, %rd4;\n\tcvt.u32.u64 %r19, %rd5;\n\
         \tst.global.v4.u32 [%rd1+32], {{%r16, %r17, %r18, %r19}};\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let out = mem.alloc(48);
    run(&m, &Params::default().u64(out), 1, &mem).expect("run");
    let got = common::read_u32s(&mem, out, 12);
    // Phase 0 incomplete, then complete; parity 0 done / parity 1 (current) not; phase 1 waits for
    // its tx bytes (16 of 32 arrived), then for the expect_tx of 8 more (32 + 8 - 16 - 24 = 0).
    assert_eq!(&got[..6], &[0, 1, 1, 0, 0, 1]);
    // The states: phases 0, 0, 1, 1.
    assert_eq!(&got[8..12], &[0, 0, 1, 1]);
}

/// A try_wait that is not in a loop may return false after a time limit: with nothing else able to
/// run, the simulator times it out instead of reporting a deadlock.
#[test]
fn try_wait_times_out_when_nothing_else_can_run() {
    let body = format!(
        "{REGS}\t.shared .align 8 .b64 bar;\n\tld.param.u64 %rd1, [out];\n\tmov.u32 %r4, bar;\n\
         \tmbarrier.init.shared.b64 [%r4], 1;\n\
         \tmbarrier.try_wait.parity.shared.b64 %p1, [%r4], 0;\n\tselp.u32 %r10, 1, 0, %p1;\n\
         \tmbarrier.arrive.shared.b64 _, [%r4];\n\
         \tmbarrier.try_wait.parity.shared.b64 %p1, [%r4], 0;\n\tselp.u32 %r11, 1, 0, %p1;\n\
         \tst.global.v2.u32 [%rd1], {{%r10, %r11}};\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let out = mem.alloc(8);
    run(&m, &Params::default().u64(out), 1, &mem).expect("run");
    assert_eq!(common::read_u32s(&mem, out, 2), vec![0, 1]);
}

/// A test_wait spin loop yields: warp 1 does its work and arrives while warp 0 spins.
#[test]
fn test_wait_spin_loops_let_other_warps_run() {
    let body = format!(
        "{REGS}\t.shared .align 8 .b64 bar;\n\t.shared .align 4 .b32 val;\n\
         \tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [out];\n\tmov.u32 %r4, bar;\n\tmov.u32 %r5, val;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\t@%p1 mbarrier.init.shared.b64 [%r4], 32;\n\tbar.sync 0;\n\
         \tsetp.lt.u32 %p2, %r1, 32;\n\t@%p2 bra $SPIN;\n\
         // warp 1: a long loop, then lane 32 publishes a value, then all of warp 1 arrives\n\
         \tmov.u32 %r10, 0;\n$WORK:\n\tadd.u32 %r10, %r10, 1;\n\tsetp.lt.u32 %p3, %r10, 1000;\n\t@%p3 bra $WORK;\n\
         \tsetp.eq.u32 %p3, %r1, 32;\n\t@%p3 st.shared.u32 [%r5], %r10;\n\
         \tmbarrier.arrive.shared.b64 _, [%r4];\n\tbra $END;\n\
         $SPIN:\n\tmbarrier.test_wait.parity.shared.b64 %p4, [%r4], 0;\n\t@!%p4 bra $SPIN;\n\
         \tld.shared.u32 %r11, [%r5];\n\t@%p1 st.global.u32 [%rd1], %r11;\n\
         $END:\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let out = mem.alloc(4);
    run(&m, &Params::default().u64(out), 64, &mem).expect("run");
    assert_eq!(common::read_u32s(&mem, out, 1), vec![1000]);
}

#[test]
fn waiting_on_a_phase_nobody_completes_is_a_deadlock() {
    let body = format!(
        "{REGS}\t.shared .align 8 .b64 bar;\n\tmov.u32 %r1, %tid.x;\n\tmov.u32 %r4, bar;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\t@%p1 mbarrier.init.shared.b64 [%r4], 33;\n\tbar.sync 0;\n\
         \tmbarrier.arrive.shared.b64 _, [%r4];\n\
         $WAIT:\n\tmbarrier.try_wait.parity.shared.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let rep = deadlock(run(&m, &Params::default().u64(0), 32, &mem));
    assert!(rep.kind.contains("mbarrier wait cannot complete"), "{rep}");
    assert!(rep.kind.contains("1 of 33 arrivals pending"), "{rep}");
    assert!(rep.kind.contains("32 threads wait on mbarriers"), "{rep}");
    assert!(rep.kind.contains("completion of phase 0 of the mbarrier at shared offset 0x0"), "{rep}");
    assert_eq!(rep.ptx_line, 19, "{rep}");
    // A thread blocked in a wait while the others wait at a barrier: barrier divergence.
    let body = format!(
        "{REGS}\t.shared .align 8 .b64 bar;\n\tmov.u32 %r1, %tid.x;\n\tmov.u32 %r4, bar;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\t@%p1 mbarrier.init.shared.b64 [%r4], 1;\n\tbar.sync 0;\n\
         \tsetp.lt.u32 %p3, %r1, 32;\n\t@%p3 bra $WAIT;\n\tbar.sync 0;\n\tmbarrier.arrive.shared.b64 _, [%r4];\n\tret;\n\
         $WAIT:\n\tmbarrier.try_wait.parity.shared.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let rep = deadlock(run(&m, &Params::default().u64(0), 64, &mem));
    assert!(rep.kind.contains("barrier divergence") && rep.kind.contains("waits on the mbarrier at shared offset"), "{rep}");
}

#[test]
fn mbarrier_misuse_is_reported() {
    let mem = GlobalMemory::new();
    let run1 = |body: &str, threads: u32| {
        let m = module(".param .u64 out", &format!("{REGS}\t.shared .align 8 .b64 bar;\n\t.shared .align 8 .b64 other;\n\tmov.u32 %r1, %tid.x;\n\tmov.u32 %r4, bar;\n{body}\n\tret;"));
        run(&m, &Params::default().u64(0), threads, &mem)
    };
    let rep = fault(run1("\tmbarrier.arrive.shared.b64 _, [%r4];", 1));
    assert!(rep.kind.contains("no valid mbarrier object"), "{rep}");
    let rep = fault(run1("\tmbarrier.init.shared.b64 [%r4], 1;\n\tmbarrier.init.shared.b64 [%r4], 1;", 1));
    assert!(rep.kind.contains("mbarrier.init on a valid mbarrier object"), "{rep}");
    let rep = fault(run1("\tmbarrier.init.shared.b64 [%r4], 1;\n\tmov.u32 %r5, 0;\n\tst.shared.u32 [%r4+4], %r5;", 1));
    assert!(rep.kind.contains("store accesses a valid mbarrier object"), "{rep}");
    assert_eq!(rep.address, Some(4));
    run1("\tmbarrier.init.shared.b64 [%r4], 1;\n\tmbarrier.inval.shared.b64 [%r4];\n\tmov.u32 %r5, 0;\n\tst.shared.u32 [%r4+4], %r5;", 1)
        .expect("after inval the memory is ordinary again");
    let rep = fault(run1("\tmbarrier.init.shared.b64 [%r4], 2;\n\tmbarrier.arrive.shared.b64 _, [%r4], 3;", 1));
    assert!(rep.kind.contains("count 3 but only 2 arrivals are pending"), "{rep}");
    // tx-count underflow: more bytes complete than were expected once no arrival is pending.
    let rep = fault(run1("\tmbarrier.init.shared.b64 [%r4], 1;\n\tmbarrier.arrive.expect_tx.shared.b64 _, [%r4], 16;\n\tmbarrier.complete_tx.shared.b64 [%r4], 32;", 1));
    assert!(rep.kind.contains("tx-count underflow: 16 more bytes completed than were expected"), "{rep}");
    // ... but a complete-tx before the expect-tx is fine while arrivals are pending.
    run1("\tmbarrier.init.shared.b64 [%r4], 1;\n\tmbarrier.complete_tx.shared.b64 [%r4], 32;\n\tmbarrier.arrive.expect_tx.shared.b64 _, [%r4], 32;", 1)
        .expect("transiently negative tx-count");
    let rep = fault(run1("\tmbarrier.init.shared.b64 [%r4], 1;\n\tmbarrier.arrive.noComplete.shared.b64 _, [%r4], 1;", 1));
    assert!(rep.kind.contains("noComplete completes the current phase"), "{rep}");
    let rep = fault(run1(
        "\tmov.u32 %r5, other;\n\tmbarrier.init.shared.b64 [%r4], 2;\n\tmbarrier.init.shared.b64 [%r5], 2;\n\
         \tmbarrier.arrive.shared.b64 %rd2, [%r5];\n\tmbarrier.test_wait.shared.b64 %p1, [%r4], %rd2;",
        1,
    ));
    assert!(rep.kind.contains("was not returned by an arrive on this mbarrier"), "{rep}");
    let rep = fault(run1("\tmbarrier.init.shared.b64 [%r4], 1;\n\tmov.u32 %r6, 2;\n\tmbarrier.test_wait.parity.shared.b64 %p1, [%r4], %r6;", 1));
    assert!(rep.kind.contains("phase parity 2 is not 0 or 1"), "{rep}");
    let rep = fault(run1("\tadd.u32 %r5, %r4, 4;\n\tmbarrier.init.shared.b64 [%r5], 1;", 1));
    assert!(rep.kind.contains("misaligned mbarrier object"), "{rep}");
    let rep = fault(run1("\tmbarrier.init.shared.b64 [%r4], 0;", 1));
    assert!(rep.kind.contains("count 0 is not in 1..=2^20-1"), "{rep}");
    // Another thread uses the mbarrier before a barrier made the init visible.
    let rep = fault(run1(
        "\tsetp.eq.u32 %p1, %r1, 0;\n\t@%p1 mbarrier.init.shared.b64 [%r4], 64;\n\tsetp.eq.u32 %p2, %r1, 32;\n\t@%p2 mbarrier.arrive.shared.b64 _, [%r4];",
        64,
    ));
    assert!(rep.kind.contains("initialised without a barrier in between"), "{rep}");
    assert_eq!(rep.thread, [32, 0, 0]);
    // A generic address works too (cvta.shared).
    run1("\tcvta.shared.u64 %rd2, bar;\n\tmbarrier.init.b64 [%rd2], 1;\n\tmbarrier.arrive.b64 _, [%rd2];\n\tmbarrier.test_wait.parity.b64 %p1, [%rd2], 0;", 1)
        .expect("generic mbarrier address");
    let rep = fault(run1("\tld.param.u64 %rd2, [out];\n\tmbarrier.init.b64 [%rd2], 1;", 1));
    assert!(rep.kind.contains("is not in shared memory"), "{rep}");
}

/// A 128-thread kernel: a 32x32 f32 tile is loaded through tensor map `ma` at (0, 0), every
/// element doubled in place by the CTA (st.shared: generic proxy), then `fence` and `sync` are
/// emitted and thread 0 stores the tile through tensor map `mb` at (x, y) (bulk async-group),
/// then `after` runs in thread 0 and it waits for the store.
fn tma_store_kernel(fence: &str, sync: &str, after: &str) -> Module {
    let body = format!(
        "{REGS}\t.shared .align 1024 .b8 smem[4096];\n\t.shared .align 8 .b64 bar;\n\
         \tmov.u32 %r1, %tid.x;\n\tmov.u32 %r3, smem;\n\tmov.u32 %r4, bar;\n\tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [%r4], 1;\n\tbar.sync 0;\n\
         \tmov.b64 %rd2, ma;\n\tcvta.param.u64 %rd3, %rd2;\n\tmov.b64 %rd6, mb;\n\tcvta.param.u64 %rd7, %rd6;\n\
         \tmov.b32 %r20, 0;\n\tmov.u32 %r2, 4096;\n\
         \t@%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r4], %r2;\n\
         \t@%p1 cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r3], [%rd3, {{%r20, %r20}}], [%r4];\n\
         $WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\
         \tmov.u32 %r7, %r1;\n\
         $LOOP:\n\tsetp.ge.u32 %p3, %r7, 1024;\n\t@%p3 bra $DONE;\n\tshl.b32 %r8, %r7, 2;\n\tadd.u32 %r8, %r8, %r3;\n\
         \tld.shared.f32 %f1, [%r8];\n\tadd.f32 %f1, %f1, %f1;\n\tst.shared.f32 [%r8], %f1;\n\
         \tadd.u32 %r7, %r7, 128;\n\tbra $LOOP;\n$DONE:\n{fence}\n{sync}\n\
         \tld.param.u32 %r21, [x];\n\tld.param.u32 %r22, [y];\n\
         \t@%p1 cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%rd7, {{%r21, %r22}}], [%r3];\n\
         \t@%p1 cp.async.bulk.commit_group;\n\t@!%p1 bra $END;\n{after}\n\tcp.async.bulk.wait_group 0;\n$END:\n\tret;"
    );
    module(".param .align 64 .b8 ma[128], .param .align 64 .b8 mb[128], .param .u32 x, .param .u32 y", &body)
}

/// Tensor maps of the store round trip: A is [32 x 32] f32 with values 0..1024 (128B swizzle), B is
/// [40 rows x 48 cols] f32 filled with -1.
fn store_maps(mem: &GlobalMemory) -> (TensorMap, TensorMap, u64) {
    let a = mem.alloc(4096);
    mem.write(a, &(0..1024).flat_map(|i| (i as f32).to_le_bytes()).collect::<Vec<_>>()).expect("write");
    let b = mem.alloc(40 * 48 * 4);
    mem.write(b, &vec![0xbf80_0000u32; 40 * 48].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).expect("write");
    let ma = TensorMap::tiled(a, 4, &[32, 32], &[128], &[32, 32], Swizzle::B128, OobFill::Zero).unwrap();
    let mb = TensorMap::tiled(b, 4, &[48, 40], &[192], &[32, 32], Swizzle::B128, OobFill::Zero).unwrap();
    (ma, mb, b)
}

#[test]
fn tma_store_round_trip() {
    for (x, y) in [(8u32, 4u32), (24, 20)] {
        let mem = GlobalMemory::new();
        let (ma, mb, b) = store_maps(&mem);
        let m = tma_store_kernel("\tfence.proxy.async.shared::cta;", "\tbar.sync 0;", "");
        let p = Params::default().map(&ma).map(&mb).u32(x).u32(y);
        let stats = run(&m, &p, 128, &mem).unwrap_or_else(|e| panic!("({x}, {y}): {e}"));
        let got = f32s(&read(&mem, b, 40 * 48 * 4));
        let mut written = 0;
        for r in 0..40usize {
            for c in 0..48usize {
                let inside = (x as usize..x as usize + 32).contains(&c) && (y as usize..y as usize + 32).contains(&r);
                let want = if inside { 2.0 * ((r - y as usize) * 32 + c - x as usize) as f32 } else { -1.0 };
                written += inside as u64;
                assert_eq!(got[r * 48 + c], want, "({x}, {y}): B[{r}][{c}]");
            }
        }
        assert_eq!(stats.global_store_bytes, 4 * written, "only the part inside B is written");
        assert_eq!(stats.async_copy_bytes, 4096);
    }
}

#[test]
fn tma_store_of_generic_writes_needs_a_proxy_fence() {
    let mem = GlobalMemory::new();
    let (ma, mb, _) = store_maps(&mem);
    let p = Params::default().map(&ma).map(&mb).u32(0).u32(0);
    let rep = fault(run(&tma_store_kernel("", "\tbar.sync 0;", ""), &p, 128, &mem));
    assert!(
        rep.kind.contains("cp.async.bulk.tensor (store) reads shared memory through the async proxy that thread (0, 0, 0) wrote")
            && rep.kind.contains("without a fence.proxy.async"),
        "{rep}"
    );
    assert_eq!(rep.thread, [0, 0, 0]);
    // A bare fence.proxy.async (all state spaces) works too; with checks off nothing is reported.
    run(&tma_store_kernel("\tfence.proxy.async;", "\tbar.sync 0;", ""), &p, 128, &mem).expect("fenced");
    run_with(&tma_store_kernel("", "\tbar.sync 0;", ""), "k", &p, 128, &mem, SimOptions { checks: false, ..SimOptions::default() })
        .expect("checks off");
    // fence.proxy.async.global does not order shared memory.
    fault(run(&tma_store_kernel("\tfence.proxy.async.global;", "\tbar.sync 0;", ""), &p, 128, &mem));
    // The fence without the barrier: thread 0's store reads the tile while the other threads
    // still update it (here thread 1's write comes after the store's read).
    let rep = fault(run(&tma_store_kernel("\tfence.proxy.async.shared::cta;", "", ""), &p, 128, &mem));
    assert!(rep.kind.contains("shared-memory race: read by several threads then write by thread (1, 0, 0)"), "{rep}");
    // Overwriting the source before cp.async.bulk.wait_group.read.
    let overwrite = "\tmov.u32 %r30, 0;\n\tst.shared.u32 [%r3], %r30;";
    let rep = fault(run(&tma_store_kernel("\tfence.proxy.async.shared::cta;", "\tbar.sync 0;", overwrite), &p, 128, &mem));
    assert!(rep.kind.contains("store overwrites shared memory an asynchronous operation is still reading (a bulk store"), "{rep}");
    let after_read = format!("\tcp.async.bulk.wait_group.read 0;\n{overwrite}");
    run(&tma_store_kernel("\tfence.proxy.async.shared::cta;", "\tbar.sync 0;", &after_read), &p, 128, &mem).expect("read done");
}

#[test]
fn reading_the_destination_before_waiting_is_an_in_flight_read() {
    let mem = GlobalMemory::new();
    let t = tensor_2d(&mem, 64, 64, 128);
    let map = TensorMap::tiled(t, 2, &[64, 64], &[128], &[64, 16], Swizzle::None, OobFill::Zero).unwrap();
    let body = |before_wait: &str, expect: u32| {
        format!(
            "{REGS}\t.shared .align 128 .b8 smem[2048];\n\t.shared .align 8 .b64 bar;\n\
             \tmov.u32 %r3, smem;\n\tmov.u32 %r4, bar;\n\tmbarrier.init.shared::cta.b64 [%r4], 1;\n\
             \tmov.b64 %rd2, tmap;\n\tcvta.param.u64 %rd3, %rd2;\n\tmov.b32 %r20, 0;\n\tmov.u32 %r2, {expect};\n\
             \tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r4], %r2;\n\
             \tcp.async.bulk.tensor.2d.shared::cta.global.tile.mbarrier::complete_tx::bytes [%r3], [%rd3, {{%r20, %r20}}], [%r4];\n\
             {before_wait}\n\
             $WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\
             \tld.shared.u32 %r5, [%r3+1024];\n\tret;"
        )
    };
    let params = ".param .align 64 .b8 tmap[128]";
    let p = Params::default().map(&map);
    run(&module(params, &body("", 2048)), &p, 1, &mem).expect("waits first");
    let rep = fault(run(&module(params, &body("\tld.shared.u32 %r5, [%r3+1024];", 2048)), &p, 1, &mem));
    assert!(rep.kind.contains("load touches shared memory a bulk asynchronous copy (cp.async.bulk) is still writing"), "{rep}");
    assert_eq!((rep.address, rep.ptx_line), (Some(1024), 22), "{rep}");
    // A plain store into the destination while the copy is in flight.
    let rep = fault(run(&module(params, &body("\tst.shared.u32 [%r3+16], %r2;", 2048)), &p, 1, &mem));
    assert!(rep.kind.contains("store touches shared memory a bulk asynchronous copy"), "{rep}");
    // Expecting fewer bytes than the box delivers: the copy's complete-tx underflows.
    let rep = fault(run(&module(params, &body("", 1024)), &p, 1, &mem));
    assert!(rep.kind.contains("bulk copy complete-tx: tx-count underflow: 1024 more bytes completed than were expected"), "{rep}");
    assert_eq!(rep.ptx_line, 21, "reported at the copy: {rep}");
}

#[test]
fn bad_tensor_maps_and_copies_are_reported() {
    let mem = GlobalMemory::new();
    let t = tensor_2d(&mem, 64, 64, 128);
    let good = TensorMap::tiled(t, 2, &[64, 64], &[128], &[64, 16], Swizzle::None, OobFill::Zero).unwrap();
    // decode errors
    let bad_addr = TensorMap { global_address: t + 8, ..good };
    assert!(matches!(TensorMap::decode(&bad_addr.encode()), Err(SimError::TensorMap(m)) if m.contains("16-byte aligned")));
    let bad_stride = TensorMap { global_strides: [120, 0, 0, 0], ..good };
    assert!(matches!(TensorMap::decode(&bad_stride.encode()), Err(SimError::TensorMap(m)) if m.contains("multiple of 16")));
    assert!(TensorMap::tiled(t, 2, &[64, 64], &[128], &[64, 16], Swizzle::B64, OobFill::Zero).unwrap_err().to_string().contains("swizzle span"));
    // ... and at run time.
    let m = tma_dump(&[0, 0]);
    let out = mem.alloc(2048);
    let rep = fault(run(&m, &Params::default().map(&bad_addr).u64(out).u32(2048), 32, &mem));
    assert!(rep.kind.contains("invalid tensor map: global address") && rep.kind.contains("not 16-byte aligned"), "{rep}");
    let rep = fault(run(&m, &Params::default().u64(0).u64(out).u32(2048), 32, &mem));
    assert!(rep.kind.contains("not a simulator tensor map"), "{rep}");
    // A tensor map describing memory outside every allocation.
    let wild = TensorMap { global_dims: [64, 4096, 1, 1, 1], ..good };
    let rep = fault(run(&tma_dump(&[0, 100]), &Params::default().map(&wild).u64(out).u32(2048), 32, &mem));
    assert!(rep.kind.contains("out-of-bounds global read"), "{rep}");
    // A 3d copy with a rank-2 map.
    let rep = fault(run(&tma_dump(&[0, 0, 0]), &Params::default().map(&good).u64(out).u32(2048), 32, &mem));
    assert!(rep.kind.contains("a 3d copy with a tensor map of rank 2"), "{rep}");
    // Unsupported forms are rejected when the module is parsed.
    let multicast = format!(
        "{HEAD}.visible .entry k(.param .align 64 .b8 tmap[128])\n{{\n{REGS}\tmov.b16 %rs1, 3;\n\
         \tcp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%r1], [%rd1, {{%r2, %r3}}], [%r4], %rs1;\n}}\n"
    )
    .replace(".reg .f32 %f<8>;", ".reg .f32 %f<8>;\n\t.reg .b16 %rs<2>;");
    match Module::parse(&multicast) {
        Err(SimError::Unsupported { instruction, .. }) => assert!(instruction.contains("multicast needs a thread-block cluster"), "{instruction}"),
        other => panic!("{other:?}"),
    }
    let im2col = format!(
        "{HEAD}.visible .entry k(.param .align 64 .b8 tmap[128])\n{{\n{REGS}\tmov.b16 %rs1, 3;\n\
         \tcp.async.bulk.tensor.3d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%r1], [%rd1, {{%r2, %r3, %r5}}], [%r4], {{%rs1}};\n}}\n"
    )
    .replace(".reg .f32 %f<8>;", ".reg .f32 %f<8>;\n\t.reg .b16 %rs<2>;");
    match Module::parse(&im2col) {
        Err(SimError::Unsupported { instruction, .. }) => assert!(instruction.contains("`.im2col` load mode"), "{instruction}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tensor_copy_destinations_must_be_128_byte_aligned() {
    let mem = GlobalMemory::new();
    let t = tensor_2d(&mem, 64, 64, 128);
    let map = TensorMap::tiled(t, 2, &[64, 64], &[128], &[64, 4], Swizzle::None, OobFill::Zero).unwrap();
    let body = format!(
        "{REGS}\t.shared .align 1024 .b8 smem[2048];\n\t.shared .align 8 .b64 bar;\n\
         \tmov.u32 %r3, smem;\n\tadd.u32 %r3, %r3, 64;\n\tmov.u32 %r4, bar;\n\tmbarrier.init.shared::cta.b64 [%r4], 1;\n\
         \tmov.b64 %rd2, tmap;\n\tcvta.param.u64 %rd3, %rd2;\n\tmov.b32 %r20, 0;\n\
         \tcp.async.bulk.tensor.2d.shared::cta.global.tile.mbarrier::complete_tx::bytes [%r3], [%rd3, {{%r20, %r20}}], [%r4];\n\tret;"
    );
    let rep = fault(run(&module(".param .align 64 .b8 tmap[128]", &body), &Params::default().map(&map), 1, &mem));
    assert!(rep.kind.contains("misaligned shared address (128-byte alignment)"), "{rep}");
    assert_eq!(rep.address, Some(64));
}

#[test]
fn elect_sync_elects_the_lowest_lane_of_the_mask() {
    // Every lane: elect over the full warp; lanes 4..7 and 13: elect over mask 0x20f0.
    let body = format!(
        "{REGS}\tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [out];\n\tmov.u32 %r2, %laneid;\n\
         \telect.sync %r10|%p1, 0xffffffff;\n\tselp.u32 %r11, 1, 0, %p1;\n\
         \tmov.u32 %r12, 99;\n\tmov.u32 %r13, 7;\n\
         \tshr.u32 %r14, 8432, %r2;\n\tand.b32 %r14, %r14, 1;\n\tsetp.eq.u32 %p2, %r14, 1;\n\
         \t@!%p2 bra $SKIP;\n\tmov.u32 %r15, 0x20f0;\n\telect.sync %r12|%p3, %r15;\n\tselp.u32 %r13, 1, 0, %p3;\n\
         \telect.sync _|%p4, %r15;\n\
         $SKIP:\n\tmul.wide.u32 %rd2, %r1, 16;\n\tadd.s64 %rd3, %rd1, %rd2;\n\
         \tst.global.v4.u32 [%rd3], {{%r10, %r11, %r12, %r13}};\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let out = mem.alloc(64 * 16);
    run(&m, &Params::default().u64(out), 64, &mem).expect("run");
    let got = common::read_u32s(&mem, out, 64 * 4);
    for t in 0..64usize {
        let lane = t % 32;
        let r = &got[4 * t..4 * t + 4];
        assert_eq!((r[0], r[1]), (0, (lane == 0) as u32), "thread {t}");
        let member = 0x20f0u32 & (1 << lane) != 0;
        let want = if member { (4, (lane == 4) as u32) } else { (99, 7) };
        assert_eq!((r[2], r[3]), want, "thread {t}");
    }
}

/// Warps 0-1 synchronise on barrier 1 and warps 2-3 on barrier 2 (64 threads each); warp 0 hands a
/// value to warp 1 through bar.arrive / bar.sync on barrier 3.
#[test]
fn named_barriers_between_warp_subsets() {
    let body = format!(
        "{REGS}\t.shared .align 4 .b32 s[128];\n\t.shared .align 4 .b32 h[32];\n\
         \tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [out];\n\tmov.u32 %r2, s;\n\tmov.u32 %r3, h;\n\
         \tshr.u32 %r4, %r1, 5;\n\tand.b32 %r5, %r1, 31;\n\tshl.b32 %r6, %r1, 2;\n\tadd.u32 %r7, %r2, %r6;\n\
         \tmul.lo.u32 %r8, %r1, 3;\n\tst.shared.u32 [%r7], %r8;\n\
         \tsetp.lt.u32 %p1, %r4, 2;\n\tselp.u32 %r9, 1, 2, %p1;\n\tbar.sync %r9, 64;\n\
         // read the partner warp's value: thread t reads s[t ^ 32]\n\
         \txor.b32 %r10, %r1, 32;\n\tshl.b32 %r11, %r10, 2;\n\tadd.u32 %r11, %r2, %r11;\n\tld.shared.u32 %r12, [%r11];\n\
         // warp 0 produces h, warp 1 consumes it\n\
         \tmov.u32 %r13, 0;\n\tshl.b32 %r14, %r5, 2;\n\tadd.u32 %r14, %r3, %r14;\n\
         \tsetp.eq.u32 %p2, %r4, 0;\n\t@!%p2 bra $C;\n\tadd.u32 %r15, %r1, 1000;\n\tst.shared.u32 [%r14], %r15;\n\
         \tbar.arrive 3, 64;\n\tbra $OUT;\n\
         $C:\n\tsetp.ne.u32 %p3, %r4, 1;\n\t@%p3 bra $OUT;\n\tbarrier.sync.aligned 3, 64;\n\tld.shared.u32 %r13, [%r14];\n\
         $OUT:\n\tmul.wide.u32 %rd2, %r1, 8;\n\tadd.s64 %rd3, %rd1, %rd2;\n\tst.global.v2.u32 [%rd3], {{%r12, %r13}};\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let out = mem.alloc(128 * 8);
    run(&m, &Params::default().u64(out), 128, &mem).expect("run");
    let got = common::read_u32s(&mem, out, 256);
    for t in 0..128u32 {
        let h = if t / 32 == 1 { 1000 + t % 32 } else { 0 };
        assert_eq!((got[2 * t as usize], got[2 * t as usize + 1]), (3 * (t ^ 32), h), "thread {t}");
    }
    // Different thread counts on one barrier are reported; a count nobody reaches deadlocks.
    let mismatch = module(
        ".param .u64 out",
        &format!("{REGS}\tmov.u32 %r1, %tid.x;\n\tsetp.lt.u32 %p1, %r1, 32;\n\tselp.u32 %r2, 64, 96, %p1;\n\tbar.sync 1, %r2;\n\tret;"),
    );
    let rep = fault(run(&mismatch, &Params::default().u64(0), 64, &mem));
    assert!(rep.kind.contains("barrier 1 is used with different thread counts: 64 threads and 96 threads"), "{rep}");
    let short = module(".param .u64 out", &format!("{REGS}\tbar.sync 1, 96;\n\tret;"));
    let rep = deadlock(run(&short, &Params::default().u64(0), 64, &mem));
    assert!(rep.kind.contains("barrier 1 waits for 96 threads"), "{rep}");
}

#[test]
fn setmaxnreg_is_checked_per_warpgroup() {
    let mem = GlobalMemory::new();
    let both = module(
        ".param .u64 out",
        &format!(
            "{REGS}\tmov.u32 %r1, %tid.x;\n\tsetp.lt.u32 %p1, %r1, 128;\n\t@!%p1 bra $CONS;\n\
             \tsetmaxnreg.dec.sync.aligned.u32 40;\n\tbra $END;\n$CONS:\n\tsetmaxnreg.inc.sync.aligned.u32 232;\n\
             \tsetmaxnreg.dec.sync.aligned.u32 200;\n$END:\n\tret;"
        ),
    );
    run(&both, &Params::default().u64(0), 256, &mem).expect("whole warpgroups");
    // Only warp 0 of the warpgroup.
    let one = module(
        ".param .u64 out",
        &format!("{REGS}\tmov.u32 %r1, %tid.x;\n\tsetp.lt.u32 %p1, %r1, 32;\n\t@%p1 setmaxnreg.dec.sync.aligned.u32 40;\n\tret;"),
    );
    let rep = fault(run(&one, &Params::default().u64(0), 128, &mem));
    assert!(rep.kind.contains("setmaxnreg is executed by warp 0 but not by warp 1 of the same warpgroup"), "{rep}");
    assert_eq!(rep.ptx_line, 13, "{rep}");
    let rep = fault(run(&one, &Params::default().u64(0), 96, &mem));
    assert!(rep.kind.contains("leave warpgroup 0 incomplete"), "{rep}");
    // Different instructions in the warps of one warpgroup.
    let split = module(
        ".param .u64 out",
        &format!(
            "{REGS}\tmov.u32 %r1, %tid.x;\n\tsetp.lt.u32 %p1, %r1, 64;\n\t@%p1 bra $A;\n\
             \tsetmaxnreg.dec.sync.aligned.u32 40;\n\tret;\n$A:\n\tsetmaxnreg.dec.sync.aligned.u32 48;\n\tret;"
        ),
    );
    let rep = fault(run(&split, &Params::default().u64(0), 128, &mem));
    assert!(rep.kind.contains("execute different setmaxnreg instructions"), "{rep}");
    // .inc below the current maximum.
    let down = module(
        ".param .u64 out",
        &format!("{REGS}\tsetmaxnreg.dec.sync.aligned.u32 64;\n\tsetmaxnreg.inc.sync.aligned.u32 56;\n\tret;"),
    );
    let rep = fault(run(&down, &Params::default().u64(0), 128, &mem));
    assert!(rep.kind.contains("setmaxnreg.inc to fewer registers (56) than the warp's current maximum (64)"), "{rep}");
    // The register count is checked when the module is parsed.
    for n in [20, 260, 44] {
        let text = format!("{HEAD}.visible .entry k()\n{{\n\tsetmaxnreg.inc.sync.aligned.u32 {n};\n}}\n");
        match Module::parse(&text) {
            Err(SimError::Parse { message, line: 6 }) => assert!(message.contains("multiple of 8 in 24..=256"), "{message}"),
            other => panic!("{n}: {other:?}"),
        }
    }
}

#[test]
fn stmatrix_is_the_inverse_of_ldmatrix() {
    // Lane l's register i holds (l * 4 + i) * 0x10001 + 0x00010000 (two distinct halves); stmatrix
    // stores four 8x8 matrices (matrix i at 128 i, row r at 16 r), ldmatrix loads them back.
    for trans in ["", ".trans"] {
        let body = format!(
            "{REGS}\t.shared .align 16 .b8 smem[512];\n\tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [out];\n\
             \tmov.u32 %r2, smem;\n\tshl.b32 %r3, %r1, 4;\n\tadd.u32 %r3, %r2, %r3;\n\
             \tshl.b32 %r4, %r1, 2;\n\tmul.lo.u32 %r5, %r4, 65537;\n\tadd.u32 %r5, %r5, 65536;\n\
             \tadd.u32 %r6, %r5, 65537;\n\tadd.u32 %r7, %r6, 65537;\n\tadd.u32 %r8, %r7, 65537;\n\
             \tstmatrix.sync.aligned.m8n8.x4{trans}.shared.b16 [%r3], {{%r5, %r6, %r7, %r8}};\n\
             \tldmatrix.sync.aligned.m8n8.x4{trans}.shared.b16 {{%r10, %r11, %r12, %r13}}, [%r3];\n\
             \tmul.wide.u32 %rd2, %r1, 16;\n\tadd.s64 %rd3, %rd1, %rd2;\n\tst.global.v4.u32 [%rd3], {{%r10, %r11, %r12, %r13}};\n\
             \tbar.sync 0;\n\tld.shared.v4.u32 {{%r10, %r11, %r12, %r13}}, [%r3];\n\tadd.s64 %rd4, %rd3, 512;\n\
             \tst.global.v4.u32 [%rd4], {{%r10, %r11, %r12, %r13}};\n\tret;"
        );
        let m = module(".param .u64 out", &body);
        let mem = GlobalMemory::new();
        let out = mem.alloc(1024);
        run(&m, &Params::default().u64(out), 32, &mem).unwrap_or_else(|e| panic!("{trans}: {e}"));
        let got = common::read_u32s(&mem, out, 256);
        let reg = |l: usize, i: usize| ((l * 4 + i) as u32).wrapping_mul(65537).wrapping_add(65536);
        for l in 0..32 {
            for i in 0..4 {
                assert_eq!(got[4 * l + i], reg(l, i), "{trans}: round trip, lane {l} register {i}");
            }
        }
        // Memory layout: matrix i, row r, column c (16-bit elements).
        let mem16: Vec<u16> = got[128..].iter().flat_map(|w| [*w as u16, (*w >> 16) as u16]).collect();
        for i in 0..4 {
            for r in 0..8 {
                for c in 0..8 {
                    let (l, h) = if trans.is_empty() { (4 * r + c / 2, c % 2) } else { (4 * c + r / 2, r % 2) };
                    let want = (reg(l, i) >> (16 * h)) as u16;
                    assert_eq!(mem16[i * 64 + r * 8 + c], want, "{trans}: matrix {i} ({r}, {c})");
                }
            }
        }
    }
}

/// NVRTC's PTX for tests/ptx/hopper_tma.cu (see its comments): the tensor map passed as a
/// `__grid_constant__` parameter (mov of the param, cvta.param), CUTLASS-style wait loops whose
/// labels repeat in every inlined copy, elect.sync, setmaxnreg, proxy fences, a TMA store.
#[test]
fn nvrtc_tma_kernels_run() {
    let text = common::ptx("hopper_tma.ptx");
    let m = Module::parse(&text).expect("parse");
    assert_eq!(m.target(), ["sm_90a".to_string()]);
    assert_eq!(m.entries(), ["tma_ring", "tma_store"]);
    let mem = GlobalMemory::new();
    // tma_ring: 5 tiles of 32x32 f32 through a 2-stage ring.
    let tiles = 5usize;
    let input: Vec<f32> = (0..tiles * 1024).map(|i| i as f32 * 0.5).collect();
    let a = mem.alloc(input.len() * 4);
    mem.write(a, &input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).expect("write");
    let out = mem.alloc(input.len() * 4);
    let map = TensorMap::tiled(a, 4, &[32, (tiles * 32) as u64], &[128], &[32, 32], Swizzle::None, OobFill::Zero).unwrap();
    let p = Params::default().map(&map).u64(out).u32(tiles as u32);
    let stats = run_with(&m, "tma_ring", &p, 256, &mem, SimOptions::default()).expect("tma_ring");
    let got = f32s(&read(&mem, out, input.len() * 4));
    assert_eq!(got, input.iter().map(|v| v + 1.0).collect::<Vec<_>>());
    assert_eq!(stats.async_copy_bytes, (tiles * 4096) as u64);
    // tma_store: out = 2 * in for one tile.
    let b = mem.alloc(4096);
    let in_map = TensorMap::tiled(a, 4, &[32, 32], &[128], &[32, 32], Swizzle::None, OobFill::Zero).unwrap();
    let out_map = TensorMap::tiled(b, 4, &[32, 32], &[128], &[32, 32], Swizzle::None, OobFill::Zero).unwrap();
    let stats = run_with(&m, "tma_store", &Params::default().map(&in_map).map(&out_map), 128, &mem, SimOptions::default()).expect("tma_store");
    assert_eq!(f32s(&read(&mem, b, 4096)), input[..1024].iter().map(|v| v * 2.0).collect::<Vec<_>>());
    assert_eq!((stats.async_copy_bytes, stats.global_store_bytes), (4096, 4096));
    // Without the proxy fence NVRTC's kernel is reported.
    let unfenced = Module::parse(&text.replace("fence.proxy.async.shared::cta;", "")).expect("parse");
    let rep = fault(run_with(&unfenced, "tma_store", &Params::default().map(&in_map).map(&out_map), 128, &mem, SimOptions::default()));
    assert!(rep.kind.contains("without a fence.proxy.async"), "{rep}");
}

/// cp.async.bulk in both directions (with L2 cache hints): 256 bytes from global into shared, each
/// word + 1 through the generic proxy, fence, barrier, then thread 0 stores the buffer to global
/// (bulk async-group), waits, and reads back what it stored.
#[test]
fn bulk_1d_store_round_trip() {
    let mem = GlobalMemory::new();
    let src = mem.alloc(256);
    mem.write(src, &(0..64u32).flat_map(|i| (i * 3).to_le_bytes()).collect::<Vec<_>>()).expect("write");
    let dst = mem.alloc(256 + 16);
    let body = format!(
        "{REGS}\t.shared .align 128 .b8 smem[256];\n\t.shared .align 8 .b64 bar;\n\
         \tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [src];\n\tld.param.u64 %rd2, [dst];\n\
         \tmov.u32 %r3, smem;\n\tmov.u32 %r4, bar;\n\tsetp.eq.u32 %p1, %r1, 0;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [%r4], 1;\n\tbar.sync 0;\n\tmov.u32 %r5, 256;\n\
         \tmov.b64 %rd9, 0x1000000000000000;\n\
         \t@%p1 cp.async.bulk.prefetch.L2.global [%rd1], %r5;\n\
         \t@%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r4], %r5;\n\
         \t@%p1 cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%r3], [%rd1], %r5, [%r4], %rd9;\n\
         $WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\
         \tshl.b32 %r6, %r1, 2;\n\tadd.u32 %r7, %r3, %r6;\n\tld.shared.u32 %r8, [%r7];\n\tadd.u32 %r8, %r8, 1;\n\tst.shared.u32 [%r7], %r8;\n\
         \tfence.proxy.async.shared::cta;\n\tbar.sync 0;\n\t@!%p1 bra $END;\n\
         \tcp.async.bulk.global.shared::cta.bulk_group.L2::cache_hint [%rd2], [%r3], %r5, %rd9;\n\
         \tcp.async.bulk.commit_group;\n\tcp.async.bulk.wait_group 0;\n\
         \tld.global.u32 %r9, [%rd2+252];\n\tst.global.u32 [%rd2+256], %r9;\n\
         $END:\n\tret;"
    );
    let m = module(".param .u64 src, .param .u64 dst", &body);
    let stats = run(&m, &Params::default().u64(src).u64(dst), 64, &mem).expect("run");
    let got = common::read_u32s(&mem, dst, 65);
    assert_eq!(&got[..64], &(0..64u32).map(|i| i * 3 + 1).collect::<Vec<_>>()[..]);
    assert_eq!(got[64], 63 * 3 + 1, "the store is complete after cp.async.bulk.wait_group");
    assert_eq!((stats.async_copy_bytes, stats.global_store_bytes), (256, 256 + 4));
}

#[test]
fn mbarrier_arrive_drop_and_try_wait_with_state() {
    // Expected count 2: thread 0 arrives normally, thread 32 drops out after phase 0, so phase 1
    // completes with thread 0's arrival alone.
    let body = format!(
        "{REGS}\t.shared .align 8 .b64 bar;\n\tmov.u32 %r1, %tid.x;\n\tld.param.u64 %rd1, [out];\n\tmov.u32 %r4, bar;\n\
         \tsetp.eq.u32 %p1, %r1, 0;\n\tsetp.eq.u32 %p2, %r1, 32;\n\tmov.u32 %r5, 2;\n\
         \t@%p1 mbarrier.init.shared::cta.b64 [%r4], %r5;\n\tbar.sync 0;\n\
         \t@%p2 mbarrier.arrive_drop.shared::cta.b64 _, [%r4];\n\t@%p2 bra $END;\n\t@!%p1 bra $END;\n\
         \tmbarrier.arrive.shared::cta.b64 %rd2, [%r4];\n\
         $W0:\n\tmbarrier.try_wait.shared::cta.b64 %p3, [%r4], %rd2;\n\t@!%p3 bra $W0;\n\
         \tmbarrier.arrive.shared::cta.b64 %rd3, [%r4];\n\
         $W1:\n\tmbarrier.try_wait.acquire.cta.shared::cta.b64 %p3, [%r4], %rd3, 100;\n\t@!%p3 bra $W1;\n\
         \tcvt.u32.u64 %r6, %rd3;\n\tst.global.u32 [%rd1], %r6;\n\
         $END:\n\tret;"
    );
    let m = module(".param .u64 out", &body);
    let mem = GlobalMemory::new();
    let out = mem.alloc(4);
    run(&m, &Params::default().u64(out), 64, &mem).expect("run");
    assert_eq!(common::read_u32s(&mem, out, 1), vec![1]);
}

/// The tensor map may live in global memory (its generic address in a register); a parameter named
/// directly is not a generic address (the PTX assembler rejects it too).
#[test]
fn tensor_map_in_global_memory() {
    let mem = GlobalMemory::new();
    let t = tensor_2d(&mem, 16, 64, 128);
    let map = TensorMap::tiled(t, 2, &[64, 16], &[128], &[64, 8], Swizzle::B128, OobFill::Zero).unwrap();
    let gmap = mem.alloc(128);
    mem.write(gmap, &map.encode()).expect("write");
    let out = mem.alloc(1024);
    let body = format!(
        "{REGS}\t.shared .align 1024 .b8 smem[1024];\n\t.shared .align 8 .b64 bar;\n\
         \tld.param.u64 %rd1, [gmap];\n\tld.param.u64 %rd2, [out];\n\tmov.u32 %r3, smem;\n\tmov.u32 %r4, bar;\n\
         \tmbarrier.init.shared::cta.b64 [%r4], 1;\n\tmov.b32 %r20, 0;\n\tmov.b32 %r21, 8;\n\tmov.u32 %r2, 1024;\n\
         \tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r4], %r2;\n\
         \tcp.async.bulk.tensor.2d.shared::cta.global.tile.mbarrier::complete_tx::bytes [%r3], [%rd1, {{%r20, %r21}}], [%r4];\n\
         $WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r4], 0;\n\t@!%p2 bra $WAIT;\n\
         \tmov.u32 %r7, 0;\n$LOOP:\n\tadd.u32 %r8, %r3, %r7;\n\tld.shared.v4.u32 {{%r9, %r10, %r11, %r12}}, [%r8];\n\
         \tcvt.u64.u32 %rd4, %r7;\n\tadd.s64 %rd5, %rd2, %rd4;\n\tst.global.v4.u32 [%rd5], {{%r9, %r10, %r11, %r12}};\n\
         \tadd.u32 %r7, %r7, 16;\n\tsetp.lt.u32 %p3, %r7, 1024;\n\t@%p3 bra $LOOP;\n\tret;"
    );
    let m = module(".param .u64 gmap, .param .u64 out", &body);
    run(&m, &Params::default().u64(gmap).u64(out), 1, &mem).expect("run");
    let got = u16s(&read(&mem, out, 1024));
    for r in 0..8 {
        for c in 0..64 {
            let p = swizzled((r * 64 + c) * 2, Swizzle::B128) / 2;
            assert_eq!(got[p], ((8 + r) * 256 + c) as u16, "({r}, {c})");
        }
    }
    let direct = format!(
        "{HEAD}.visible .entry k(.param .align 64 .b8 tmap[128])\n{{\n{REGS}\tmov.b32 %r1, 0;\n\
         \tcp.async.bulk.tensor.2d.shared::cta.global.tile.mbarrier::complete_tx::bytes [%r3], [tmap, {{%r1, %r1}}], [%r4];\n}}\n"
    );
    match Module::parse(&direct) {
        Err(SimError::Parse { message, .. }) => assert!(message.contains("must be a generic address"), "{message}"),
        other => panic!("{other:?}"),
    }
}
