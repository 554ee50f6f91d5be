//! Every case of the independent fragment-layout oracles (tests/data/oracles, copied from
//! shared/oracles) through tiny hand-written kernels: load each lane's fragments from global
//! memory, execute the instruction, store the result. Bit-exact.

mod common;

use common::{bytes_of_u32, kernel, read_u32s, run1};
use serde_json::Value;
use tessera_sim::{GlobalMemory, Module, SimOptions};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/oracles/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("oracle file")).expect("json")
}

fn u32_of(v: &Value) -> u32 {
    match v.as_u64() {
        Some(x) => x as u32,
        None => (v.as_f64().expect("number") as f32).to_bits(),
    }
}

fn list(v: &Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(u32_of).collect()
}

fn regs(prefix: &str, from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>().join(", ")
}

/// A kernel running `instr` on fragments loaded from per-lane 16-byte slots of a, b, c; d stored
/// likewise.
fn mma_kernel(instr: &str) -> (String, usize, usize, usize, usize) {
    let k16 = instr.contains("m16n8k16");
    let f16_acc = instr.ends_with(".f16.f16.f16.f16");
    let (na, nb) = if k16 { (4, 2) } else { (2, 1) };
    let (nc, nd) = if f16_acc { (2, 2) } else { (4, 4) };
    let vec = |n: usize| match n {
        1 => "",
        2 => ".v2",
        _ => ".v4",
    };
    let body = format!(
        "\t.reg .b32 %r<24>;\n\t.reg .b64 %rd<12>;\n\
         \tld.param.u64 %rd1, [pa];\n\tld.param.u64 %rd2, [pb];\n\tld.param.u64 %rd3, [pc];\n\tld.param.u64 %rd4, [pd];\n\
         \tmov.u32 %r0, %tid.x;\n\tmul.wide.u32 %rd5, %r0, 16;\n\
         \tadd.s64 %rd6, %rd1, %rd5;\n\tadd.s64 %rd7, %rd2, %rd5;\n\tadd.s64 %rd8, %rd3, %rd5;\n\tadd.s64 %rd9, %rd4, %rd5;\n\
         \tld.global{va}.u32 {{{a}}}, [%rd6];\n\
         \tld.global{vb}.u32 {bl}, [%rd7];\n\
         \tld.global{vc}.u32 {{{c}}}, [%rd8];\n\
         \t{instr} {{{d}}}, {{{a}}}, {{{b}}}, {{{c}}};\n\
         \tst.global{vd}.u32 [%rd9], {{{d}}};\n\tret;",
        va = vec(na),
        vb = vec(nb),
        vc = vec(nc),
        vd = vec(nd),
        a = regs("%r", 1, na),
        bl = if nb == 1 { "%r5".to_string() } else { format!("{{{}}}", regs("%r", 5, nb)) },
        b = regs("%r", 5, nb),
        c = regs("%r", 7, nc),
        d = regs("%r", 11, nd),
    );
    // The C operand of an f32 accumulator is .f32 in PTX; .b32 registers holding the bits are
    // accepted by the simulator as by ptxas (both are 32-bit).
    let text = kernel(".param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd", &body);
    (text, na, nb, nc, nd)
}

#[test]
fn mma_sync_oracles() {
    let data = load("mma_sync.json");
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() >= 15);
    for (ci, case) in cases.iter().enumerate() {
        let instr = case["instr"].as_str().expect("instr");
        let (text, na, nb, nc, nd) = mma_kernel(instr);
        let module = Module::parse(&text).unwrap_or_else(|e| panic!("case {ci} {instr}: {e}"));
        let lanes = case["lanes"].as_array().expect("lanes");
        let mut a = vec![0u32; 32 * 4];
        let mut b = vec![0u32; 32 * 4];
        let mut c = vec![0u32; 32 * 4];
        let mut want = vec![0u32; 32 * 4];
        for lane in lanes {
            let l = lane["lane"].as_u64().expect("lane") as usize;
            for (dst, key, n) in [(&mut a, "a", na), (&mut b, "b", nb), (&mut c, "c", nc), (&mut want, "d", nd)] {
                let v = list(&lane[key]);
                assert_eq!(v.len(), n, "case {ci} lane {l} {key}");
                dst[4 * l..4 * l + n].copy_from_slice(&v);
            }
        }
        let mem = GlobalMemory::new();
        let put = |v: &[u32]| {
            let p = mem.alloc(v.len() * 4);
            mem.write(p, &bytes_of_u32(v)).expect("write");
            p
        };
        let (pa, pb, pc) = (put(&a), put(&b), put(&c));
        let pd = mem.alloc(32 * 16);
        run1(&module, &[pa, pb, pc, pd], 32, 0, &mem, &SimOptions::default()).unwrap_or_else(|e| panic!("case {ci} {instr}: {e}"));
        let got = read_u32s(&mem, pd, 32 * 4);
        for l in 0..32 {
            assert_eq!(&got[4 * l..4 * l + nd], &want[4 * l..4 * l + nd], "case {ci} {instr} lane {l}");
        }
    }
}

#[test]
fn ldmatrix_oracles() {
    let data = load("ldmatrix.json");
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() >= 12);
    for (ci, case) in cases.iter().enumerate() {
        let instr = case["instr"].as_str().expect("instr");
        let num = if instr.contains(".x1") {
            1
        } else if instr.contains(".x2") {
            2
        } else {
            4
        };
        let image: Vec<u16> = case["smem_b16"].as_array().expect("smem").iter().map(|v| v.as_u64().expect("u16") as u16).collect();
        assert_eq!(image.len(), 512, "the kernel below stages 1024 bytes");
        let vec = match num {
            1 => "",
            2 => ".v2",
            _ => ".v4",
        };
        let d = regs("%r", 14, num);
        let body = format!(
            "\t.reg .b32 %r<24>;\n\t.reg .b64 %rd<12>;\n\
             \tld.param.u64 %rd1, [pimg];\n\tld.param.u64 %rd2, [paddr];\n\tld.param.u64 %rd3, [pout];\n\
             \tmov.u32 %r0, %tid.x;\n\tmul.wide.u32 %rd4, %r0, 32;\n\tadd.s64 %rd5, %rd1, %rd4;\n\
             \tld.global.v4.u32 {{%r1, %r2, %r3, %r4}}, [%rd5];\n\tld.global.v4.u32 {{%r5, %r6, %r7, %r8}}, [%rd5+16];\n\
             \tmov.u32 %r9, smem;\n\tmul.lo.u32 %r10, %r0, 32;\n\tadd.u32 %r11, %r9, %r10;\n\
             \tst.shared.v4.u32 [%r11], {{%r1, %r2, %r3, %r4}};\n\tst.shared.v4.u32 [%r11+16], {{%r5, %r6, %r7, %r8}};\n\
             \tbar.sync 0;\n\
             \tmul.wide.u32 %rd6, %r0, 4;\n\tadd.s64 %rd7, %rd2, %rd6;\n\tld.global.u32 %r12, [%rd7];\n\tadd.u32 %r13, %r9, %r12;\n\
             \t{instr} {dv}, [%r13];\n\
             \tmul.wide.u32 %rd8, %r0, 16;\n\tadd.s64 %rd9, %rd3, %rd8;\n\tst.global{vec}.u32 [%rd9], {dv};\n\tret;",
            dv = if num == 1 { d.clone() } else { format!("{{{d}}}") },
        );
        let text = format!(
            ".version 9.0\n.target sm_80\n.address_size 64\n.shared .align 16 .b8 smem[1024];\n\n.visible .entry k(.param .u64 pimg, .param .u64 paddr, .param .u64 pout)\n{{\n{body}\n}}\n"
        );
        let module = Module::parse(&text).unwrap_or_else(|e| panic!("case {ci} {instr}: {e}"));
        let lanes = case["lanes"].as_array().expect("lanes");
        let mut addr = vec![0u32; 32];
        let mut want = vec![0u32; 32 * 4];
        for lane in lanes {
            let l = lane["lane"].as_u64().expect("lane") as usize;
            addr[l] = u32_of(&lane["addr"]);
            let v = list(&lane["d"]);
            assert_eq!(v.len(), num);
            want[4 * l..4 * l + num].copy_from_slice(&v);
        }
        let mem = GlobalMemory::new();
        let img: Vec<u8> = image.iter().flat_map(|h| h.to_le_bytes()).collect();
        let pimg = mem.alloc(img.len());
        mem.write(pimg, &img).expect("write");
        let paddr = mem.alloc(128);
        mem.write(paddr, &bytes_of_u32(&addr)).expect("write");
        let pout = mem.alloc(32 * 16);
        run1(&module, &[pimg, paddr, pout], 32, 0, &mem, &SimOptions::default()).unwrap_or_else(|e| panic!("case {ci} {instr}: {e}"));
        let got = read_u32s(&mem, pout, 32 * 4);
        for l in 0..32 {
            assert_eq!(&got[4 * l..4 * l + num], &want[4 * l..4 * l + num], "case {ci} {instr} lane {l}");
        }
    }
}
