//! Instruction families: a hand-written PTX snippet per family, run over interesting and random
//! inputs, compared with a Rust reference.
#![allow(clippy::needless_range_loop)]

mod common;

use common::Rng;
use half::{bf16, f16};
use tessera_sim::{launch, GlobalMemory, LaunchConfig, Module, SimOptions};

const HEADER: &str = "\t.reg .pred %p<8>;\n\t.reg .b16 %h<16>;\n\t.reg .b32 %r<32>;\n\t.reg .f32 %f<16>;\n\
    \t.reg .b64 %rd<32>;\n\t.reg .f64 %fd<8>;\n";

/// Runs `body` once per input triple (one thread each): a, b, c are in %rd5..7 (u64), %r1..3 (low
/// 32 bits), %f1..3 (as f32 bits), %fd1..3, %h1..3 (low 16 bits). The body leaves its result in
/// %rd8, which is stored.
fn eval(body: &str, inputs: &[[u64; 3]]) -> Vec<u64> {
    let text = format!(
        ".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 pa, .param .u64 pout)\n{{\n{HEADER}\
         \tld.param.u64 %rd1, [pa];\n\tld.param.u64 %rd2, [pout];\n\tmov.u32 %r0, %tid.x;\n\tmov.u32 %r30, %ctaid.x;\n\
         \tmad.lo.s32 %r0, %r30, 256, %r0;\n\
         \tmul.wide.u32 %rd3, %r0, 24;\n\tadd.s64 %rd4, %rd1, %rd3;\n\
         \tld.global.u64 %rd5, [%rd4];\n\tld.global.u64 %rd6, [%rd4+8];\n\tld.global.u64 %rd7, [%rd4+16];\n\
         \tcvt.u32.u64 %r1, %rd5;\n\tcvt.u32.u64 %r2, %rd6;\n\tcvt.u32.u64 %r3, %rd7;\n\
         \tmov.b32 %f1, %r1;\n\tmov.b32 %f2, %r2;\n\tmov.b32 %f3, %r3;\n\
         \tmov.b64 %fd1, %rd5;\n\tmov.b64 %fd2, %rd6;\n\tmov.b64 %fd3, %rd7;\n\
         \tcvt.u16.u32 %h1, %r1;\n\tcvt.u16.u32 %h2, %r2;\n\tcvt.u16.u32 %h3, %r3;\n\
         \tmov.u64 %rd8, 0;\n{body}\n\
         \tmul.wide.u32 %rd9, %r0, 8;\n\tadd.s64 %rd10, %rd2, %rd9;\n\tst.global.u64 [%rd10], %rd8;\n\tret;\n}}\n"
    );
    let module = Module::parse(&text).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let mem = GlobalMemory::new();
    let n = inputs.len();
    let bytes: Vec<u8> = inputs.iter().flat_map(|t| t.iter().flat_map(|x| x.to_le_bytes())).collect();
    let pa = mem.alloc(bytes.len());
    mem.write(pa, &bytes).expect("write");
    let pout = mem.alloc(n * 8);
    let mut params = pa.to_le_bytes().to_vec();
    params.extend_from_slice(&pout.to_le_bytes());
    // Full CTAs of 256 threads; inputs are padded by the caller to a multiple of 256 or < 256.
    let (grid, block) = if n > 256 { (n.div_ceil(256) as u32, 256) } else { (1, n as u32) };
    assert!(n <= 256 || n % 256 == 0);
    let config = LaunchConfig { grid: [grid, 1, 1], block: [block, 1, 1], dynamic_shared_bytes: 0 };
    launch(&module, "k", &config, &params, &mem, &SimOptions::default()).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let mut out = vec![0u8; n * 8];
    mem.read(pout, &mut out).expect("read");
    out.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect()
}

fn ints32(rng: &mut Rng) -> Vec<u64> {
    let mut v: Vec<u64> = [0u32, 1, 2, 3, 7, 31, 32, 33, 63, 64, 100, 255, 256, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, 0xffff_ffff, 0xffff_fffe, 0xdead_beef, 12345]
        .iter()
        .map(|&x| x as u64)
        .collect();
    v.extend((0..44).map(|_| rng.next_u64() & 0xffff_ffff));
    v.extend((0..40).map(|_| rng.next_u64() & 0x3f));
    v
}

fn floats(rng: &mut Rng) -> Vec<u64> {
    let mut v: Vec<f32> = vec![
        0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, -2.5, 3.5, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, -1e-40,
        f32::MAX, f32::MIN_POSITIVE, 3.25, 1e10, -1e-10, 65504.0, 65520.0, 1e-8, 0.1, -7.25, 1e30, 126.0, -126.5,
    ];
    v.extend((0..40).map(|_| rng.unit() * 4.0));
    v.extend((0..30).map(|_| rng.unit() * 2f32.powi((rng.next_u64() % 60) as i32 - 30)));
    v.into_iter().map(|x| x.to_bits() as u64).collect()
}

/// All pairs from `a` x `b`, in CTA-sized chunks (third operand from `c`, cycled).
fn triples(a: &[u64], b: &[u64], c: &[u64]) -> Vec<[u64; 3]> {
    let mut out = Vec::new();
    for (i, &x) in a.iter().enumerate() {
        for (j, &y) in b.iter().enumerate() {
            out.push([x, y, c[(i * 7 + j) % c.len()]]);
        }
    }
    let pad = out.len().div_ceil(256) * 256;
    while out.len() < pad {
        out.push([0, 1, 0]);
    }
    out
}

/// What the simulator must produce for one input.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Exactly these bits.
    Bits(u64),
    /// Any f32 NaN, zero-extended: the ISA fixes no payload for this instruction (where it does,
    /// e.g. the canonical NaN of `min`/`max` or of `cvt` to f16, the reference says `Bits`).
    NanF32,
    /// Any f64 NaN (same reason).
    NanF64,
    /// Not compared: the reference does not model this input (the call site says why).
    Skip,
}

impl From<Option<u64>> for Want {
    fn from(x: Option<u64>) -> Self {
        x.map_or(Want::Skip, Want::Bits)
    }
}

/// At least this share of a check's inputs must be compared: a reference that skips more has
/// stopped testing the instruction. A check whose reference models only part of the input space
/// (directed rounding of sums) passes its own floor to `check_at_least`.
const MIN_COMPARED: f64 = 0.9;

fn check<W: Into<Want>>(body: &str, inputs: &[[u64; 3]], reference: impl Fn(u64, u64, u64) -> W) {
    check_at_least(body, inputs, MIN_COMPARED, reference);
}

fn check_at_least<W: Into<Want>>(body: &str, inputs: &[[u64; 3]], min_compared: f64, reference: impl Fn(u64, u64, u64) -> W) {
    let got = eval(body, inputs);
    let mut compared = 0usize;
    for (i, (t, g)) in inputs.iter().zip(&got).enumerate() {
        let want = reference(t[0], t[1], t[2]).into();
        let ok = match want {
            Want::Bits(w) => *g == w,
            // The f32 result is zero-extended into the stored 64 bits.
            Want::NanF32 => *g >> 32 == 0 && fb(*g).is_nan(),
            Want::NanF64 => f64::from_bits(*g).is_nan(),
            Want::Skip => continue,
        };
        compared += 1;
        assert!(ok, "{body}\ninput #{i} {:#x} {:#x} {:#x}: got {g:#x}, want {want:x?}", t[0], t[1], t[2]);
    }
    let need = (inputs.len() as f64 * min_compared).ceil() as usize;
    assert!(compared >= need, "{body}\nonly {compared} of {} inputs compared (need {need})", inputs.len());
}

fn r32(op: &str) -> String {
    format!("\t{op}\n\tcvt.u64.u32 %rd8, %r4;")
}

fn f32r(op: &str) -> String {
    format!("\t{op}\n\tmov.b32 %r4, %f4;\n\tcvt.u64.u32 %rd8, %r4;")
}

fn pred(op: &str) -> String {
    format!("\t{op}\n\tselp.u64 %rd8, 1, 0, %p1;")
}

fn fb(x: u64) -> f32 {
    f32::from_bits(x as u32)
}

/// The NaN the ISA defines for `min`/`max` with NaN operands: all bits set but the sign.
const CANONICAL_NAN_F32: u64 = 0x7fff_ffff;

fn bits(x: f32) -> Option<u64> {
    Some(x.to_bits() as u64)
}

/// An f32 result: exact bits, or some NaN where the reference is NaN.
fn fbits(x: f32) -> Want {
    if x.is_nan() {
        Want::NanF32
    } else {
        Want::Bits(x.to_bits() as u64)
    }
}

#[test]
fn integer_arithmetic_32() {
    let mut rng = Rng(1);
    let v = ints32(&mut rng);
    let t = triples(&v, &v, &v);
    let s = |x: u64| x as u32 as i32;
    let u = |x: u64| x as u32;
    check(&r32("add.s32 %r4, %r1, %r2;"), &t, |a, b, _| Some(u(a).wrapping_add(u(b)) as u64));
    check(&r32("sub.s32 %r4, %r1, %r2;"), &t, |a, b, _| Some(u(a).wrapping_sub(u(b)) as u64));
    check(&r32("add.sat.s32 %r4, %r1, %r2;"), &t, |a, b, _| Some(s(a).saturating_add(s(b)) as u32 as u64));
    check(&r32("mul.lo.s32 %r4, %r1, %r2;"), &t, |a, b, _| Some(u(a).wrapping_mul(u(b)) as u64));
    check(&r32("mul.hi.s32 %r4, %r1, %r2;"), &t, |a, b, _| Some(((s(a) as i64 * s(b) as i64) >> 32) as u32 as u64));
    check(&r32("mul.hi.u32 %r4, %r1, %r2;"), &t, |a, b, _| Some(((u(a) as u64 * u(b) as u64) >> 32) as u32 as u64));
    check("\tmul.wide.s32 %rd8, %r1, %r2;", &t, |a, b, _| Some((s(a) as i64 * s(b) as i64) as u64));
    check("\tmul.wide.u32 %rd8, %r1, %r2;", &t, |a, b, _| Some(u(a) as u64 * u(b) as u64));
    check(&r32("mad.lo.s32 %r4, %r1, %r2, %r3;"), &t, |a, b, c| Some(u(a).wrapping_mul(u(b)).wrapping_add(u(c)) as u64));
    check(&r32("mad.hi.u32 %r4, %r1, %r2, %r3;"), &t, |a, b, c| Some((((u(a) as u64 * u(b) as u64) >> 32) as u32).wrapping_add(u(c)) as u64));
    check("\tmad.wide.s32 %rd8, %r1, %r2, %rd7;", &t, |a, b, c| Some(((s(a) as i64 * s(b) as i64) as u64).wrapping_add(c)));
    check(&r32("min.s32 %r4, %r1, %r2;"), &t, |a, b, _| Some(s(a).min(s(b)) as u32 as u64));
    check(&r32("max.u32 %r4, %r1, %r2;"), &t, |a, b, _| Some(u(a).max(u(b)) as u64));
    check(&r32("abs.s32 %r4, %r1;"), &t, |a, _, _| Some(s(a).wrapping_abs() as u32 as u64));
    check(&r32("neg.s32 %r4, %r1;"), &t, |a, _, _| Some(s(a).wrapping_neg() as u32 as u64));
    check(&r32("div.s32 %r4, %r1, %r2;"), &t, |a, b, _| (u(b) != 0).then(|| s(a).wrapping_div(s(b)) as u32 as u64));
    check(&r32("div.u32 %r4, %r1, %r2;"), &t, |a, b, _| (u(b) != 0).then(|| (u(a) / u(b)) as u64));
    check(&r32("rem.s32 %r4, %r1, %r2;"), &t, |a, b, _| (u(b) != 0).then(|| s(a).wrapping_rem(s(b)) as u32 as u64));
    check(&r32("rem.u32 %r4, %r1, %r2;"), &t, |a, b, _| (u(b) != 0).then(|| (u(a) % u(b)) as u64));
    // Immediates, including negative ones and hex.
    check(&r32("add.s32 %r4, %r1, -3;"), &t, |a, _, _| Some(u(a).wrapping_sub(3) as u64));
    check(&r32("and.b32 %r4, %r1, 0xF0F0;"), &t, |a, _, _| Some((u(a) & 0xf0f0) as u64));
}

#[test]
fn integer_arithmetic_64_and_16() {
    let mut rng = Rng(2);
    let mut v: Vec<u64> = vec![0, 1, 2, 63, 64, u64::MAX, 1 << 63, (1 << 63) - 1, 0x1234_5678_9abc_def0];
    v.extend((0..20).map(|_| rng.next_u64()));
    v.extend((0..10).map(|_| rng.next_u64() & 0x7f));
    let t = triples(&v, &v, &v);
    check("\tadd.s64 %rd8, %rd5, %rd6;", &t, |a, b, _| Some(a.wrapping_add(b)));
    check("\tmul.lo.s64 %rd8, %rd5, %rd6;", &t, |a, b, _| Some(a.wrapping_mul(b)));
    check("\tmul.hi.u64 %rd8, %rd5, %rd6;", &t, |a, b, _| Some(((a as u128 * b as u128) >> 64) as u64));
    check("\tmul.hi.s64 %rd8, %rd5, %rd6;", &t, |a, b, _| Some(((a as i64 as i128 * b as i64 as i128) >> 64) as u64));
    check("\tdiv.s64 %rd8, %rd5, %rd6;", &t, |a, b, _| (b != 0).then(|| (a as i64).wrapping_div(b as i64) as u64));
    check("\trem.u64 %rd8, %rd5, %rd6;", &t, |a, b, _| (b != 0).then(|| a % b));
    check("\tmin.s64 %rd8, %rd5, %rd6;", &t, |a, b, _| Some((a as i64).min(b as i64) as u64));
    check("\tshl.b64 %rd8, %rd5, %r2;", &t, |a, b, _| Some(if (b as u32) >= 64 { 0 } else { a << b as u32 }));
    check("\tshr.s64 %rd8, %rd5, %r2;", &t, |a, b, _| Some(((a as i64) >> (b as u32).min(63)) as u64));
    // 16-bit registers.
    let h = |x: u64| x as u16;
    check("\tadd.s16 %h4, %h1, %h2;\n\tcvt.u64.u16 %rd8, %h4;", &t, |a, b, _| Some(h(a).wrapping_add(h(b)) as u64));
    check("\tmul.wide.s16 %r4, %h1, %h2;\n\tcvt.u64.u32 %rd8, %r4;", &t, |a, b, _| Some((h(a) as i16 as i32 * h(b) as i16 as i32) as u32 as u64));
    check("\tcvt.s64.s16 %rd8, %h1;", &t, |a, _, _| Some(h(a) as i16 as i64 as u64));
    // Carry chains: a 64-bit add and subtract from 32-bit halves.
    let wide = "\tcvt.u32.u64 %r10, %rd5;\n\tshr.u64 %rd11, %rd5, 32;\n\tcvt.u32.u64 %r11, %rd11;\n\
                \tcvt.u32.u64 %r12, %rd6;\n\tshr.u64 %rd12, %rd6, 32;\n\tcvt.u32.u64 %r13, %rd12;\n";
    check(&format!("{wide}\tadd.cc.u32 %r14, %r10, %r12;\n\taddc.u32 %r15, %r11, %r13;\n\tmov.b64 %rd8, {{%r14, %r15}};"), &t, |a, b, _| Some(a.wrapping_add(b)));
    check(&format!("{wide}\tsub.cc.u32 %r14, %r10, %r12;\n\tsubc.u32 %r15, %r11, %r13;\n\tmov.b64 %rd8, {{%r14, %r15}};"), &t, |a, b, _| Some(a.wrapping_sub(b)));
}

#[test]
fn bit_manipulation() {
    let mut rng = Rng(3);
    let v = ints32(&mut rng);
    let t = triples(&v, &v, &v);
    let u = |x: u64| x as u32;
    check(&r32("and.b32 %r4, %r1, %r2;"), &t, |a, b, _| Some((u(a) & u(b)) as u64));
    check(&r32("or.b32 %r4, %r1, %r2;"), &t, |a, b, _| Some((u(a) | u(b)) as u64));
    check(&r32("xor.b32 %r4, %r1, %r2;"), &t, |a, b, _| Some((u(a) ^ u(b)) as u64));
    check(&r32("not.b32 %r4, %r1;"), &t, |a, _, _| Some(!u(a) as u64));
    check(&r32("cnot.b32 %r4, %r1;"), &t, |a, _, _| Some((u(a) == 0) as u64));
    check(&r32("shl.b32 %r4, %r1, %r2;"), &t, |a, b, _| Some(if u(b) >= 32 { 0 } else { (u(a) << u(b)) as u64 }));
    check(&r32("shr.u32 %r4, %r1, %r2;"), &t, |a, b, _| Some(if u(b) >= 32 { 0 } else { (u(a) >> u(b)) as u64 }));
    check(&r32("shr.s32 %r4, %r1, %r2;"), &t, |a, b, _| Some(((u(a) as i32) >> u(b).min(31)) as u32 as u64));
    check(&r32("brev.b32 %r4, %r1;"), &t, |a, _, _| Some(u(a).reverse_bits() as u64));
    check(&r32("popc.b32 %r4, %r1;"), &t, |a, _, _| Some(u(a).count_ones() as u64));
    check(&r32("clz.b32 %r4, %r1;"), &t, |a, _, _| Some(u(a).leading_zeros() as u64));
    check(&r32("bfind.u32 %r4, %r1;"), &t, |a, _, _| Some(if u(a) == 0 { 0xffff_ffff } else { 31 - u(a).leading_zeros() as u64 }));
    check(&r32("bfind.s32 %r4, %r1;"), &t, |a, _, _| {
        let x = if (u(a) as i32) < 0 { !u(a) } else { u(a) };
        Some(if x == 0 { 0xffff_ffff } else { 31 - x.leading_zeros() as u64 })
    });
    // bfe / bfi against bit-by-bit references (PTX ISA pseudo-code).
    let bfe_ref = |a: u32, pos: u32, len: u32, signed: bool| -> u32 {
        let (pos, len) = (pos & 0xff, len & 0xff);
        let sbit = if signed && len > 0 { (a >> (pos + len - 1).min(31)) & 1 } else { 0 };
        (0..32).fold(0, |d, i| d | (if i < len && pos + i <= 31 { (a >> (pos + i)) & 1 } else { sbit }) << i)
    };
    let small = |x: u64| (x & 0x3f) as u32;
    check(&r32("and.b32 %r5, %r2, 63;\n\tand.b32 %r6, %r3, 63;\n\tbfe.u32 %r4, %r1, %r5, %r6;"), &t, |a, b, c| Some(bfe_ref(u(a), small(b), small(c), false) as u64));
    check(&r32("and.b32 %r5, %r2, 63;\n\tand.b32 %r6, %r3, 63;\n\tbfe.s32 %r4, %r1, %r5, %r6;"), &t, |a, b, c| Some(bfe_ref(u(a), small(b), small(c), true) as u64));
    check(&r32("and.b32 %r5, %r3, 31;\n\tbfi.b32 %r4, %r1, %r2, %r5, 8;"), &t, |a, b, c| {
        let pos = u(c) & 31;
        let mut d = u(b);
        for i in 0..8 {
            if pos + i < 32 {
                d = (d & !(1 << (pos + i))) | (((u(a) >> i) & 1) << (pos + i));
            }
        }
        Some(d as u64)
    });
    check(&r32("prmt.b32 %r4, %r1, %r2, %r3;"), &t, |a, b, c| {
        let bytes = ((u(b) as u64) << 32) | u(a) as u64;
        Some((0..4).fold(0u32, |d, i| {
            let s = (u(c) >> (4 * i)) & 0xf;
            let mut v = ((bytes >> (8 * (s & 7))) & 0xff) as u32;
            if s & 8 != 0 {
                v = if v & 0x80 != 0 { 0xff } else { 0 };
            }
            d | v << (8 * i)
        }) as u64)
    });
    check(&r32("shf.l.wrap.b32 %r4, %r1, %r2, %r3;"), &t, |a, b, c| {
        let n = u(c) & 31;
        Some(((((u(b) as u64) << 32 | u(a) as u64) << n) >> 32) as u32 as u64)
    });
    check(&r32("shf.r.clamp.b32 %r4, %r1, %r2, %r3;"), &t, |a, b, c| {
        let n = u(c).min(32);
        Some((((u(b) as u64) << 32 | u(a) as u64) >> n) as u32 as u64)
    });
}

#[test]
fn float32_arithmetic() {
    let mut rng = Rng(4);
    let v = floats(&mut rng);
    let t = triples(&v, &v, &v);
    let ftz = |x: f32| if x != 0.0 && x.abs() < f32::MIN_POSITIVE { 0.0f32.copysign(x) } else { x };
    let sat = |x: f32| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    check(&f32r("add.f32 %f4, %f1, %f2;"), &t, |a, b, _| fbits(fb(a) + fb(b)));
    check(&f32r("add.rn.f32 %f4, %f1, %f2;"), &t, |a, b, _| fbits(fb(a) + fb(b)));
    check(&f32r("sub.f32 %f4, %f1, %f2;"), &t, |a, b, _| fbits(fb(a) - fb(b)));
    check(&f32r("mul.f32 %f4, %f1, %f2;"), &t, |a, b, _| fbits(fb(a) * fb(b)));
    check(&f32r("mul.ftz.f32 %f4, %f1, %f2;"), &t, |a, b, _| fbits(ftz(ftz(fb(a)) * ftz(fb(b)))));
    check(&f32r("add.sat.f32 %f4, %f1, %f2;"), &t, |a, b, _| bits(sat(fb(a) + fb(b))));
    check(&f32r("fma.rn.f32 %f4, %f1, %f2, %f3;"), &t, |a, b, c| fbits(fb(a).mul_add(fb(b), fb(c))));
    check(&f32r("mad.rn.f32 %f4, %f1, %f2, %f3;"), &t, |a, b, c| fbits(fb(a).mul_add(fb(b), fb(c))));
    check(&f32r("fma.rn.ftz.sat.f32 %f4, %f1, %f2, %f3;"), &t, |a, b, c| bits(sat(ftz(ftz(fb(a)).mul_add(ftz(fb(b)), ftz(fb(c)))))));
    check(&f32r("div.rn.f32 %f4, %f1, %f2;"), &t, |a, b, _| fbits(fb(a) / fb(b)));
    check(&f32r("div.full.f32 %f4, %f1, %f2;"), &t, |a, b, _| fbits((fb(a) as f64 / fb(b) as f64) as f32));
    check(&f32r("neg.f32 %f4, %f1;"), &t, |a, _, _| fbits(-fb(a)));
    check(&f32r("abs.f32 %f4, %f1;"), &t, |a, _, _| fbits(fb(a).abs()));
    // PTX: NaN inputs are ignored and both NaN give the canonical NaN; -0 is below +0.
    let min_ref = |x: f32, y: f32| if x.is_nan() { y } else if y.is_nan() { x } else if x == y { if x.is_sign_negative() { x } else { y } } else { x.min(y) };
    let max_ref = |x: f32, y: f32| if x.is_nan() { y } else if y.is_nan() { x } else if x == y { if x.is_sign_negative() { y } else { x } } else { x.max(y) };
    let canonical_if_nan = |r: f32| if r.is_nan() { Some(CANONICAL_NAN_F32) } else { bits(r) };
    check(&f32r("min.f32 %f4, %f1, %f2;"), &t, |a, b, _| canonical_if_nan(min_ref(fb(a), fb(b))));
    check(&f32r("max.f32 %f4, %f1, %f2;"), &t, |a, b, _| canonical_if_nan(max_ref(fb(a), fb(b))));
    // `.NaN`: any NaN operand gives the canonical NaN.
    check(&f32r("max.NaN.f32 %f4, %f1, %f2;"), &t, |a, b, _| {
        if fb(a).is_nan() || fb(b).is_nan() { Some(CANONICAL_NAN_F32) } else { bits(max_ref(fb(a), fb(b))) }
    });
    check(&f32r("copysign.f32 %f4, %f1, %f2;"), &t, |a, b, _| Some((b as u32 as u64 & 0x7fff_ffff) | (a as u32 as u64 & 0x8000_0000)));
    // Directed rounding: compare against the exact value in f64 (a product of f32s is exact).
    let directed = |exact: f64, rounded: f32, mode: &str| -> Option<u64> {
        if !exact.is_finite() || rounded.is_nan() {
            return None;
        }
        let r = exact as f32; // nearest
        let up = |x: f32| if x.is_infinite() && x > 0.0 { x } else if x == 0.0 { f32::from_bits(1) } else if x > 0.0 { f32::from_bits(x.to_bits() + 1) } else { f32::from_bits(x.to_bits() - 1) };
        let down = |x: f32| -up(-x);
        let want = match mode {
            "rz" => if (r as f64).abs() > exact.abs() { if r > 0.0 { down(r) } else { up(r) } } else { r },
            "rm" => if (r as f64) > exact { down(r) } else { r },
            _ => if (r as f64) < exact { up(r) } else { r },
        };
        // Overflow to infinity differs by mode; skip those.
        if want.is_infinite() || r.is_infinite() {
            return None;
        }
        bits(want)
    };
    // About a fifth of the pairs have exponents too far apart for an exact f64 sum (or overflow);
    // the rest must all be compared.
    const EXACT_SUM_MIN_COMPARED: f64 = 0.75;
    for mode in ["rz", "rm", "rp"] {
        check(&f32r(&format!("mul.{mode}.f32 %f4, %f1, %f2;")), &t, |a, b, _| directed(fb(a) as f64 * fb(b) as f64, 0.0, mode));
        check_at_least(&f32r(&format!("add.{mode}.f32 %f4, %f1, %f2;")), &t, EXACT_SUM_MIN_COMPARED, |a, b, _| {
            let (x, y) = (fb(a) as f64, fb(b) as f64);
            let s = x + y;
            // Only where the f64 sum is exact (exponents within 29 of each other).
            (s - x == y && s - y == x).then_some(()).and_then(|_| directed(s, 0.0, mode))
        });
    }
    // f64.
    let d = |x: u64| f64::from_bits(x);
    let dv: Vec<u64> = v.iter().map(|&x| (fb(x) as f64 * 1.000_000_1).to_bits()).collect();
    let td = triples(&dv, &dv, &dv);
    let dbits = |x: f64| if x.is_nan() { Want::NanF64 } else { Want::Bits(x.to_bits()) };
    check("\tadd.f64 %fd4, %fd1, %fd2;\n\tmov.b64 %rd8, %fd4;", &td, |a, b, _| dbits(d(a) + d(b)));
    check("\tmul.rn.f64 %fd4, %fd1, %fd2;\n\tmov.b64 %rd8, %fd4;", &td, |a, b, _| dbits(d(a) * d(b)));
    check("\tfma.rn.f64 %fd4, %fd1, %fd2, %fd3;\n\tmov.b64 %rd8, %fd4;", &td, |a, b, c| dbits(d(a).mul_add(d(b), d(c))));
    check("\tdiv.rn.f64 %fd4, %fd1, %fd2;\n\tmov.b64 %rd8, %fd4;", &td, |a, b, _| dbits(d(a) / d(b)));
    check("\tsqrt.rn.f64 %fd4, %fd1;\n\tmov.b64 %rd8, %fd4;", &td, |a, _, _| dbits(d(a).sqrt()));
}

#[test]
fn special_functions() {
    let mut rng = Rng(5);
    let v = floats(&mut rng);
    let t = triples(&v, &v[..1], &v[..1]);
    let ftz = |x: f32| if x != 0.0 && x.abs() < f32::MIN_POSITIVE { 0.0f32.copysign(x) } else { x };
    let via64 = |x: f32, f: fn(f64) -> f64| fbits(f(x as f64) as f32);
    check(&f32r("ex2.approx.ftz.f32 %f4, %f1;"), &t, |a, _, _| fbits(ftz((ftz(fb(a)) as f64).exp2() as f32)));
    check(&f32r("ex2.approx.f32 %f4, %f1;"), &t, |a, _, _| via64(fb(a), f64::exp2));
    check(&f32r("lg2.approx.ftz.f32 %f4, %f1;"), &t, |a, _, _| fbits((ftz(fb(a)) as f64).log2() as f32));
    check(&f32r("rcp.rn.f32 %f4, %f1;"), &t, |a, _, _| fbits(1.0 / fb(a)));
    check(&f32r("rcp.approx.ftz.f32 %f4, %f1;"), &t, |a, _, _| fbits(ftz((1.0 / ftz(fb(a)) as f64) as f32)));
    check(&f32r("sqrt.rn.f32 %f4, %f1;"), &t, |a, _, _| fbits(fb(a).sqrt()));
    check(&f32r("sqrt.approx.f32 %f4, %f1;"), &t, |a, _, _| fbits(fb(a).sqrt()));
    check(&f32r("rsqrt.approx.f32 %f4, %f1;"), &t, |a, _, _| via64(fb(a), |x| 1.0 / x.sqrt()));
    check(&f32r("sin.approx.f32 %f4, %f1;"), &t, |a, _, _| via64(fb(a), f64::sin));
    check(&f32r("cos.approx.ftz.f32 %f4, %f1;"), &t, |a, _, _| fbits(ftz((ftz(fb(a)) as f64).cos() as f32)));
    check(&f32r("tanh.approx.f32 %f4, %f1;"), &t, |a, _, _| via64(fb(a), f64::tanh));
    // Against the ISA's stated bounds for the Rust (libm) f32 functions, on ordinary inputs.
    let got = eval(&f32r("ex2.approx.ftz.f32 %f4, %f1;"), &t);
    for (i, g) in t.iter().zip(&got) {
        let x = fb(i[0]);
        if x.is_finite() && x.abs() < 100.0 && x.abs() > 1e-30 {
            let want = x.exp2();
            let rel = ((fb(*g) - want) / want).abs();
            assert!(rel <= 2f32.powi(-22), "ex2({x}) = {} vs {want}", fb(*g));
        }
    }
    // The edge values the kernels rely on.
    let edge = eval(&f32r("ex2.approx.ftz.f32 %f4, %f1;"), &[[f32::NEG_INFINITY.to_bits() as u64, 0, 0]]);
    assert_eq!(edge[0], 0, "ex2(-inf) = +0");
    let edge = eval(&f32r("lg2.approx.ftz.f32 %f4, %f1;"), &[[0, 0, 0]]);
    assert_eq!(fb(edge[0]), f32::NEG_INFINITY);
}

#[test]
fn conversions() {
    let mut rng = Rng(6);
    let fv = floats(&mut rng);
    let t = triples(&fv, &fv[..1], &fv[..1]);
    let f = |a: u64| fb(a);
    check(&r32("cvt.rzi.s32.f32 %r4, %f1;"), &t, |a, _, _| Some(f(a) as i32 as u32 as u64));
    check(&r32("cvt.rni.s32.f32 %r4, %f1;"), &t, |a, _, _| {
        let x = f(a) as f64;
        let r = if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { x.round() };
        Some(r as i32 as u32 as u64)
    });
    check(&r32("cvt.rmi.u32.f32 %r4, %f1;"), &t, |a, _, _| Some(f(a).floor() as u32 as u64));
    check(&r32("cvt.rpi.s32.f32 %r4, %f1;"), &t, |a, _, _| Some(f(a).ceil() as i32 as u32 as u64));
    check("\tcvt.rzi.s64.f32 %rd8, %f1;", &t, |a, _, _| Some(f(a) as i64 as u64));
    check(&f32r("cvt.rni.f32.f32 %f4, %f1;"), &t, |a, _, _| {
        let x = f(a);
        fbits(if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { x.round() })
    });
    check(&f32r("cvt.sat.f32.f32 %f4, %f1;"), &t, |a, _, _| bits(if f(a).is_nan() { 0.0 } else { f(a).clamp(0.0, 1.0) }));
    check("\tcvt.rn.f16.f32 %h4, %f1;\n\tcvt.u64.u16 %rd8, %h4;", &t, |a, _, _| {
        let x = f(a);
        Some(if x.is_nan() { 0x7fff } else { f16::from_f32(x).to_bits() as u64 })
    });
    check("\tcvt.rn.bf16.f32 %h4, %f1;\n\tcvt.u64.u16 %rd8, %h4;", &t, |a, _, _| {
        let x = f(a);
        Some(if x.is_nan() { 0x7fff } else { bf16::from_f32(x).to_bits() as u64 })
    });
    check("\tcvt.rz.f16.f32 %h4, %f1;\n\tcvt.u64.u16 %rd8, %h4;", &t, |a, _, _| {
        // Round toward zero: the nearest f16 not larger in magnitude.
        let x = f(a);
        if x.is_nan() {
            return Some(0x7fff);
        }
        let n = f16::from_f32(x);
        let nb = n.to_bits();
        let r = if (n.to_f32().abs() > x.abs()) && nb & 0x7fff != 0 { f16::from_bits(nb - 1) } else { n };
        Some(if r.is_infinite() && x.is_finite() { f16::MAX.to_bits() as u64 | (nb & 0x8000) as u64 } else { r.to_bits() as u64 })
    });
    check(&f32r("cvt.f32.f16 %f4, %h1;"), &t, |a, _, _| fbits(f16::from_bits(a as u16).to_f32()));
    check(&f32r("cvt.f32.bf16 %f4, %h1;"), &t, |a, _, _| fbits(bf16::from_bits(a as u16).to_f32()));
    check("\tcvt.f64.f32 %fd4, %f1;\n\tmov.b64 %rd8, %fd4;", &t, |a, _, _| if f(a).is_nan() { Want::NanF64 } else { Want::Bits((f(a) as f64).to_bits()) });
    check(&f32r("cvt.rn.f32.f64 %f4, %fd1;"), &t, |a, _, _| fbits(f64::from_bits(a) as f32));
    let iv = ints32(&mut rng);
    let ti = triples(&iv, &iv[..1], &iv[..1]);
    check(&f32r("cvt.rn.f32.s32 %f4, %r1;"), &ti, |a, _, _| bits(a as u32 as i32 as f32));
    check(&f32r("cvt.rn.f32.u32 %f4, %r1;"), &ti, |a, _, _| bits(a as u32 as f32));
    check(&f32r("cvt.rz.f32.u32 %f4, %r1;"), &ti, |a, _, _| {
        let x = a as u32;
        let r = x as f32;
        bits(if r as u64 > x as u64 { f32::from_bits(r.to_bits() - 1) } else { r })
    });
    check("\tcvt.rn.f64.s64 %fd4, %rd5;\n\tmov.b64 %rd8, %fd4;", &ti, |a, _, _| Some((a as i64 as f64).to_bits()));
    check("\tcvt.s64.s32 %rd8, %r1;", &ti, |a, _, _| Some(a as u32 as i32 as i64 as u64));
    check("\tcvt.u64.u32 %rd8, %r1;", &ti, |a, _, _| Some(a as u32 as u64));
    check(&r32("cvt.sat.u8.s32 %r4, %r1;"), &ti, |a, _, _| Some((a as u32 as i32).clamp(0, 255) as u64));
    // A destination wider than a signed instruction type is sign-extended (PTX ISA, "Operand size
    // exceeding instruction-type size", destination operands).
    check(&r32("cvt.s8.s32 %r4, %r1;"), &ti, |a, _, _| Some(a as u8 as i8 as i32 as u32 as u64));
    check(&r32("cvt.sat.s16.s32 %r4, %r1;"), &ti, |a, _, _| Some((a as u32 as i32).clamp(-32768, 32767) as u32 as u64));
}

#[test]
fn packing_and_half_arithmetic() {
    let mut rng = Rng(7);
    let fv = floats(&mut rng);
    let t = triples(&fv, &fv, &fv[..1]);
    let f = |a: u64| fb(a);
    let h16 = |x: f32| if x.is_nan() { 0x7fff } else { f16::from_f32(x).to_bits() as u32 };
    let b16 = |x: f32| if x.is_nan() { 0x7fff } else { bf16::from_f32(x).to_bits() as u32 };
    // a lands in the upper half.
    check(&r32("cvt.rn.f16x2.f32 %r4, %f1, %f2;"), &t, |a, b, _| Some(((h16(f(a)) << 16) | h16(f(b))) as u64));
    check(&r32("cvt.rn.bf16x2.f32 %r4, %f1, %f2;"), &t, |a, b, _| Some(((b16(f(a)) << 16) | b16(f(b))) as u64));
    check(&r32("cvt.rn.relu.bf16x2.f32 %r4, %f1, %f2;"), &t, |a, b, _| {
        let r = |x: f32| if x.is_nan() { 0x7fff } else if x.is_sign_negative() { 0 } else { b16(x) };
        Some(((r(f(a)) << 16) | r(f(b))) as u64)
    });
    check(&r32("cvt.rn.satfinite.f16x2.f32 %r4, %f1, %f2;"), &t, |a, b, _| {
        let r = |x: f32| if x.is_nan() { 0x7fff } else { h16(x.clamp(-65504.0, 65504.0)) };
        Some(((r(f(a)) << 16) | r(f(b))) as u64)
    });
    // mov packing and unpacking.
    check("\tmov.b64 %rd8, {%r1, %r2};", &t, |a, b, _| Some((a & 0xffff_ffff) | (b << 32)));
    check(&r32("mov.b32 %r4, {%h1, %h2};"), &t, |a, b, _| Some((a & 0xffff) | ((b & 0xffff) << 16)));
    check(&r32("mov.b32 {%h4, %h5}, %r1;\n\tmov.b32 %r4, {%h5, %h4};"), &t, |a, _, _| Some(((a & 0xffff) << 16) | ((a >> 16) & 0xffff)));
    check("\tmov.b64 {%r4, %r5}, %rd5;\n\tmov.b64 %rd8, {%r5, %r4};", &t, |a, _, _| Some(a.rotate_left(32)));
    // Packed half arithmetic: inputs are pairs of values that are exact in f16/bf16.
    let pairs: Vec<u64> = (0..64)
        .map(|_| {
            let lo = f16::from_f32(rng.unit() * 8.0).to_bits() as u64;
            let hi = f16::from_f32(rng.unit() * 100.0).to_bits() as u64;
            lo | hi << 16
        })
        .collect();
    let tp = triples(&pairs, &pairs[..16], &pairs);
    let lanes = |x: u64, bf: bool| -> [f64; 2] {
        let g = |h: u16| if bf { bf16::from_bits(h).to_f64() } else { f16::from_bits(h).to_f64() };
        [g(x as u16), g((x >> 16) as u16)]
    };
    let pack = |v: [f64; 2], bf: bool| -> Option<u64> {
        let r = |x: f64| if bf { bf16::from_f64(x).to_bits() } else { f16::from_f64(x).to_bits() } as u64;
        Some(r(v[0]) | r(v[1]) << 16)
    };
    check(&r32("add.f16x2 %r4, %r1, %r2;"), &tp, |a, b, _| {
        let (x, y) = (lanes(a, false), lanes(b, false));
        pack([x[0] + y[0], x[1] + y[1]], false)
    });
    check(&r32("mul.rn.bf16x2 %r4, %r1, %r2;"), &tp, |a, b, _| {
        let (x, y) = (lanes(a, true), lanes(b, true));
        pack([x[0] * y[0], x[1] * y[1]], true)
    });
    check(&r32("fma.rn.f16x2 %r4, %r1, %r2, %r3;"), &tp, |a, b, c| {
        let (x, y, z) = (lanes(a, false), lanes(b, false), lanes(c, false));
        pack([x[0] * y[0] + z[0], x[1] * y[1] + z[1]], false)
    });
    check("\tneg.f16 %h4, %h1;\n\tcvt.u64.u16 %rd8, %h4;", &tp, |a, _, _| Some((a & 0xffff) ^ 0x8000));
}

#[test]
fn comparisons_and_selection() {
    let mut rng = Rng(8);
    let fv = floats(&mut rng);
    let tf = triples(&fv, &fv, &fv[..1]);
    let iv = ints32(&mut rng);
    let ti = triples(&iv, &iv, &iv[..1]);
    let (s, u) = (|x: u64| x as u32 as i32, |x: u64| x as u32);
    let f = |a: u64| fb(a);
    let unord = |a: u64, b: u64| f(a).is_nan() || f(b).is_nan();
    for (cmp, r) in [
        ("eq", (|a: i32, b: i32| a == b) as fn(i32, i32) -> bool),
        ("ne", |a, b| a != b),
        ("lt", |a, b| a < b),
        ("le", |a, b| a <= b),
        ("gt", |a, b| a > b),
        ("ge", |a, b| a >= b),
    ] {
        check(&pred(&format!("setp.{cmp}.s32 %p1, %r1, %r2;")), &ti, |a, b, _| Some(r(s(a), s(b)) as u64));
    }
    for (cmp, r) in [("lo", (|a: u32, b: u32| a < b) as fn(u32, u32) -> bool), ("ls", |a, b| a <= b), ("hi", |a, b| a > b), ("hs", |a, b| a >= b), ("lt", |a, b| a < b)] {
        check(&pred(&format!("setp.{cmp}.u32 %p1, %r1, %r2;")), &ti, |a, b, _| Some(r(u(a), u(b)) as u64));
    }
    for (cmp, ordered, r) in [
        ("eq", true, (|a: f32, b: f32| a == b) as fn(f32, f32) -> bool),
        ("ne", true, |a, b| a != b),
        ("lt", true, |a, b| a < b),
        ("ge", true, |a, b| a >= b),
        ("equ", false, |a, b| a == b),
        ("neu", false, |a, b| a != b),
        ("ltu", false, |a, b| a < b),
        ("leu", false, |a, b| a <= b),
        ("gtu", false, |a, b| a > b),
        ("geu", false, |a, b| a >= b),
    ] {
        check(&pred(&format!("setp.{cmp}.f32 %p1, %f1, %f2;")), &tf, |a, b, _| {
            Some(if unord(a, b) { !ordered } else { r(f(a), f(b)) } as u64)
        });
    }
    check(&pred("setp.num.f32 %p1, %f1, %f2;"), &tf, |a, b, _| Some(!unord(a, b) as u64));
    check(&pred("setp.nan.f32 %p1, %f1, %f2;"), &tf, |a, b, _| Some(unord(a, b) as u64));
    // Second destination and boolean combination: p = (a < b) and q = !(a < b), each AND c != 0.
    check(
        "\tsetp.ne.s32 %p3, %r3, 0;\n\tsetp.lt.and.s32 %p1|%p2, %r1, %r2, %p3;\n\tselp.u64 %rd8, 1, 0, %p1;\n\tselp.u64 %rd9, 2, 0, %p2;\n\tor.b64 %rd8, %rd8, %rd9;",
        &ti,
        |a, b, c| {
            let t = s(a) < s(b);
            let p = u(c) != 0;
            Some((t && p) as u64 | ((!t && p) as u64) << 1)
        },
    );
    check("\tsetp.ne.s32 %p3, %r3, 0;\n\tsetp.gt.or.s32 %p1, %r1, %r2, !%p3;\n\tselp.u64 %rd8, 1, 0, %p1;", &ti, |a, b, c| Some((s(a) > s(b) || u(c) == 0) as u64));
    check("\tsetp.eq.s32 %p1, %r1, %r2;\n\tnot.pred %p2, %p1;\n\tsetp.ne.s32 %p3, %r3, 0;\n\txor.pred %p4, %p2, %p3;\n\tselp.u64 %rd8, 1, 0, %p4;", &ti, |a, b, c| Some(((s(a) != s(b)) ^ (u(c) != 0)) as u64));
    check(&r32("setp.lt.s32 %p1, %r1, %r2;\n\tselp.b32 %r4, %r1, %r2, %p1;"), &ti, |a, b, _| Some(s(a).min(s(b)) as u32 as u64));
    check(&r32("set.lt.u32.s32 %r4, %r1, %r2;"), &ti, |a, b, _| Some(if s(a) < s(b) { 0xffff_ffff } else { 0 }));
    check(&f32r("set.gt.f32.f32 %f4, %f1, %f2;"), &tf, |a, b, _| bits(if !unord(a, b) && f(a) > f(b) { 1.0 } else { 0.0 }));
    check("\tsetp.lt.s64 %p1, %rd5, %rd6;\n\tselp.u64 %rd8, 1, 0, %p1;", &ti, |a, b, _| Some(((a as i64) < (b as i64)) as u64));
    check("\ttestp.notanumber.f32 %p1, %f1;\n\tselp.u64 %rd8, 1, 0, %p1;", &tf, |a, _, _| Some(f(a).is_nan() as u64));
    check("\ttestp.subnormal.f32 %p1, %f1;\n\tselp.u64 %rd8, 1, 0, %p1;", &tf, |a, _, _| Some(f(a).is_subnormal() as u64));
    // Guards.
    check(&r32("mov.u32 %r4, 5;\n\tsetp.lt.s32 %p1, %r1, %r2;\n\t@%p1 mov.u32 %r4, 9;\n\t@!%p1 add.s32 %r4, %r4, 1;"), &ti, |a, b, _| Some(if s(a) < s(b) { 9 } else { 6 }));
}

/// Runs a one-CTA kernel with a `.shared` buffer, returning `out` (n u32 values).
fn run_block(body: &str, threads: u32, n: usize, input: &[u32]) -> Vec<u32> {
    let text = format!(
        ".version 9.0\n.target sm_80\n.address_size 64\n.shared .align 16 .b8 s[1024];\n.global .align 4 .u32 g_counter = 5;\n\
         .visible .entry k(.param .u64 pin, .param .u64 pout)\n{{\n{HEADER}\
         \t.local .align 8 .b8 depot[64];\n\
         \tld.param.u64 %rd1, [pin];\n\tld.param.u64 %rd2, [pout];\n\tmov.u32 %r0, %tid.x;\n\tmov.u32 %r29, s;\n\
         \tmul.wide.u32 %rd3, %r0, 4;\n\tadd.s64 %rd4, %rd1, %rd3;\n\tadd.s64 %rd5, %rd2, %rd3;\n\tld.global.u32 %r1, [%rd4];\n\
         {body}\n\tret;\n}}\n"
    );
    let module = Module::parse(&text).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let mem = GlobalMemory::new();
    let mut inp = input.to_vec();
    inp.resize(1024.max(n), 0);
    let pin = mem.alloc(inp.len() * 4);
    mem.write(pin, &common::bytes_of_u32(&inp)).expect("write");
    let pout = mem.alloc(n.max(1024) * 4);
    common::run1(&module, &[pin, pout], threads, 0, &mem, &SimOptions::default()).unwrap_or_else(|e| panic!("{e}\n{body}"));
    common::read_u32s(&mem, pout, n)
}

#[test]
fn warp_collectives() {
    let mut rng = Rng(9);
    let input: Vec<u32> = (0..64).map(|_| rng.next_u64() as u32).collect();
    let store = "\tst.global.u32 [%rd5], %r4;";
    let lane_of = |t: usize| t % 32;
    // shfl modes with clamps and segment masks (PTX ISA pseudo-code).
    for (mode, b, c) in [("bfly", 1u32, 31u32), ("bfly", 6, 31), ("up", 3, 0), ("down", 5, 31), ("idx", 7, 31), ("idx", 3, 0x1807), ("down", 2, 0x1c1f), ("up", 1, 0x1800)] {
        let body = format!("\tshfl.sync.{mode}.b32 %r4|%p1, %r1, {b}, {c}, -1;\n\tselp.u32 %r5, 1, 0, %p1;\n\tshl.b32 %r5, %r5, 31;\n\tshr.u32 %r4, %r4, 1;\n\tor.b32 %r4, %r4, %r5;\n{store}");
        let got = run_block(&body, 64, 64, &input);
        for t in 0..64 {
            let lane = lane_of(t) as i32;
            let (clamp, seg) = ((c & 0x1f) as i32, ((c >> 8) & 0x1f) as i32);
            let max_lane = (lane & seg) | (clamp & !seg);
            let min_lane = lane & seg;
            let (j, p) = match mode {
                "up" => (lane - b as i32, lane - b as i32 >= max_lane),
                "down" => (lane + b as i32, lane + b as i32 <= max_lane),
                "bfly" => (lane ^ b as i32, (lane ^ b as i32) <= max_lane),
                _ => (min_lane | (b as i32 & !seg), (min_lane | (b as i32 & !seg)) <= max_lane),
            };
            let src = if p { j } else { lane } as usize + t / 32 * 32;
            assert_eq!(got[t], (input[src] >> 1) | ((p as u32) << 31), "shfl.{mode} b={b} c={c:#x} thread {t}");
        }
    }
    // vote / redux / match / activemask.
    let pred_of = |t: usize| input[t] % 3 == 0;
    let got = run_block(&format!("\trem.u32 %r2, %r1, 3;\n\tsetp.eq.u32 %p1, %r2, 0;\n\tvote.sync.ballot.b32 %r4, %p1, -1;\n{store}"), 64, 64, &input);
    for t in 0..64 {
        let w = t / 32 * 32;
        let want = (0..32).filter(|&l| pred_of(w + l)).fold(0u32, |m, l| m | 1 << l);
        assert_eq!(got[t], want, "ballot thread {t}");
    }
    let got = run_block(&format!("\trem.u32 %r2, %r1, 3;\n\tsetp.eq.u32 %p1, %r2, 0;\n\tvote.sync.any.pred %p2, !%p1, -1;\n\tvote.sync.all.pred %p3, %p1, -1;\n\tselp.u32 %r4, 2, 0, %p2;\n\tselp.u32 %r5, 1, 0, %p3;\n\tor.b32 %r4, %r4, %r5;\n{store}"), 32, 32, &input);
    let any_not = (0..32).any(|l| !pred_of(l));
    let all = (0..32).all(pred_of);
    assert!(got.iter().all(|&g| g == (any_not as u32) << 1 | all as u32));
    let got = run_block(&format!("\tredux.sync.add.u32 %r4, %r1, -1;\n{store}"), 32, 32, &input);
    assert_eq!(got[5], input[..32].iter().fold(0u32, |a, &b| a.wrapping_add(b)));
    let got = run_block(&format!("\tredux.sync.min.s32 %r4, %r1, -1;\n{store}"), 32, 32, &input);
    assert_eq!(got[0], input[..32].iter().map(|&x| x as i32).min().unwrap_or(0) as u32);
    let got = run_block(&format!("\tredux.sync.xor.b32 %r4, %r1, -1;\n{store}"), 32, 32, &input);
    assert_eq!(got[31], input[..32].iter().fold(0, |a, &b| a ^ b));
    let got = run_block(&format!("\tand.b32 %r2, %r1, 3;\n\tmatch.any.sync.b32 %r4, %r2, -1;\n{store}"), 32, 32, &input);
    for t in 0..32 {
        let want = (0..32).filter(|&l| input[l] & 3 == input[t] & 3).fold(0u32, |m, l| m | 1 << l);
        assert_eq!(got[t], want);
    }
    let got = run_block(&format!("\tmatch.all.sync.b32 %r4|%p1, %r0, 0x3;\n\tselp.u32 %r5, 7, 9, %p1;\n\tsetp.lt.u32 %p2, %r0, 2;\n\t@!%p2 mov.u32 %r4, %r5;\n{store}"), 2, 2, &input);
    assert_eq!(got, vec![0, 0], "lanes 0 and 1 hold different values");
    // activemask in divergent code: lanes below 10 take a branch.
    let got = run_block(&format!("\tsetp.lt.u32 %p1, %r0, 10;\n\t@%p1 bra $L_a;\n\tactivemask.b32 %r4;\n\tbra $L_b;\n$L_a:\n\tactivemask.b32 %r4;\n$L_b:\n{store}"), 32, 32, &input);
    assert_eq!(got[3], 0x3ff);
    assert_eq!(got[20], !0x3ff);
    // bar.warp.sync, laneid and lanemask.
    let got = run_block(&format!("\tbar.warp.sync -1;\n\tmov.u32 %r4, %lanemask_lt;\n\tmov.u32 %r5, %laneid;\n\tadd.u32 %r4, %r4, %r5;\n{store}"), 64, 64, &input);
    for t in 0..64 {
        let l = t % 32;
        assert_eq!(got[t], ((1u64 << l) - 1) as u32 + l as u32);
    }
}

#[test]
fn memory_atomics_and_barriers() {
    let input: Vec<u32> = (0..256).map(|i| i * 3 + 1).collect();
    let store = "\tst.global.u32 [%rd5], %r4;";
    // Shared memory through generic addresses, vector loads, a named barrier with a count.
    let got = run_block(
        &format!(
            "\tcvta.shared.u64 %rd10, s;\n\tmul.wide.u32 %rd11, %r0, 4;\n\tadd.s64 %rd12, %rd10, %rd11;\n\tst.u32 [%rd12], %r1;\n\
             \tbar.sync 0;\n\tand.b32 %r2, %r0, -4;\n\tshl.b32 %r2, %r2, 2;\n\tadd.u32 %r3, %r29, %r2;\n\
             \tld.shared.v4.u32 {{%r4, %r5, %r6, %r7}}, [%r3];\n\tadd.u32 %r4, %r4, %r5;\n\tadd.u32 %r4, %r4, %r6;\n\tadd.u32 %r4, %r4, %r7;\n\
             \tisspacep.shared %p1, %rd12;\n\t@!%p1 mov.u32 %r4, 0;\n{store}"
        ),
        128,
        128,
        &input,
    );
    for t in 0..128 {
        let b = t & !3;
        assert_eq!(got[t], input[b] + input[b + 1] + input[b + 2] + input[b + 3]);
    }
    // Atomics: global counter, shared histogram, cas, exch, min/max, red.f32.
    let got = run_block(
        &format!(
            "\tmov.u32 %r2, 0;\n\tsetp.eq.u32 %p1, %r0, 0;\n\t@%p1 st.shared.u32 [%r29], %r2;\n\t@%p1 st.shared.u32 [%r29+4], %r2;\n\tbar.sync 0;\n\
             \tatom.shared.add.u32 %r3, [%r29], 1;\n\tatom.shared.max.s32 %r5, [%r29+4], %r1;\n\
             \tmov.u64 %rd10, g_counter;\n\tatom.global.add.u32 %r6, [%rd10], 2;\n\tbar.sync 0;\n\
             \tld.shared.u32 %r4, [%r29];\n\tld.shared.u32 %r7, [%r29+4];\n\tadd.u32 %r4, %r4, %r7;\n\
             \tld.global.u32 %r8, [g_counter];\n\tadd.u32 %r4, %r4, %r8;\n{store}"
        ),
        64,
        64,
        &input,
    );
    // 64 increments; max of input[0..64]; counter 5 + 2 * 64.
    assert_eq!(got[0], 64 + input[63] + 5 + 128);
    let got = run_block(
        &format!(
            "\tmov.u32 %r2, 0;\n\tsetp.eq.u32 %p1, %r0, 0;\n\t@%p1 st.shared.u32 [%r29], %r2;\n\tbar.sync 0;\n\
             $L_retry:\n\tld.volatile.shared.u32 %r3, [%r29];\n\tadd.u32 %r5, %r3, %r1;\n\
             \tatom.shared.cas.b32 %r6, [%r29], %r3, %r5;\n\tsetp.ne.u32 %p2, %r6, %r3;\n\t@%p2 bra $L_retry;\n\
             \tbar.sync 0;\n\tld.shared.u32 %r4, [%r29];\n\tatom.global.exch.b32 %r7, [%rd5], 1;\n{store}"
        ),
        32,
        32,
        &input,
    );
    assert_eq!(got[0], input[..32].iter().sum::<u32>());
    let got = run_block(
        &format!(
            "\tsetp.eq.u32 %p1, %r0, 0;\n\tmov.f32 %f1, 0f00000000;\n\t@%p1 st.global.f32 [%rd2+1024], %f1;\n\tbar.sync 0;\n\
             \tmov.f32 %f2, 0f3F000000;\n\tadd.s64 %rd10, %rd2, 1024;\n\tred.global.add.f32 [%rd10], %f2;\n\tbar.sync 0;\n\
             \tld.global.u32 %r4, [%rd2+1024];\n{store}"
        ),
        64,
        64,
        &input,
    );
    assert_eq!(f32::from_bits(got[0]), 32.0);
    // Local memory (a per-thread depot), sub-word loads with sign extension.
    let got = run_block(
        &format!(
            "\tmov.u64 %rd10, depot;\n\tcvta.local.u64 %rd11, %rd10;\n\tst.local.u32 [%rd10+8], %r1;\n\tmov.u32 %r2, 0xFFFFFF80;\n\
             \tst.u32 [%rd11+12], %r2;\n\tld.local.s8 %r4, [%rd10+12];\n\tld.local.u8 %r5, [%rd10+12];\n\tld.u32 %r6, [%rd11+8];\n\
             \tadd.u32 %r4, %r4, %r5;\n\tadd.u32 %r4, %r4, %r6;\n{store}"
        ),
        32,
        32,
        &input,
    );
    for t in 0..32 {
        assert_eq!(got[t], (-128i32 as u32).wrapping_add(128).wrapping_add(input[t]));
    }
    // Named barriers with counts: warps 0-1 use barrier 1, warps 2-3 barrier 2.
    let got = run_block(
        &format!(
            "\tshl.b32 %r2, %r0, 2;\n\tadd.u32 %r3, %r29, %r2;\n\tst.shared.u32 [%r3], %r1;\n\tsetp.lt.u32 %p1, %r0, 64;\n\
             \t@%p1 bar.sync 1, 64;\n\t@!%p1 bar.sync 2, 64;\n\txor.b32 %r5, %r0, 32;\n\tshl.b32 %r5, %r5, 2;\n\tadd.u32 %r6, %r29, %r5;\n\
             \tld.shared.u32 %r4, [%r6];\n{store}"
        ),
        128,
        128,
        &input,
    );
    for t in 0..128 {
        assert_eq!(got[t], input[t ^ 32]);
    }
}

#[test]
fn cp_async_groups_complete_in_order() {
    // Three groups of 4/8/16-byte copies; wait_group 1 lands the first two only.
    let input: Vec<u32> = (0..256).map(|i| 1000 + i).collect();
    let got = run_block(
        "\tcvta.to.global.u64 %rd10, %rd1;\n\tsetp.eq.u32 %p1, %r0, 0;\n\t@!%p1 bra $L_done;\n\
         \tcp.async.ca.shared.global [%r29], [%rd10], 4;\n\tcp.async.commit_group;\n\
         \tcp.async.ca.shared.global [%r29+16], [%rd10+16], 8;\n\tcp.async.commit_group;\n\
         \tcp.async.cg.shared.global [%r29+32], [%rd10+32], 16, 8;\n\tcp.async.commit_group;\n\
         \tcp.async.wait_group 1;\n\tld.shared.u32 %r4, [%r29];\n\tld.shared.u32 %r5, [%r29+20];\n\tadd.u32 %r4, %r4, %r5;\n\
         \tst.global.u32 [%rd2], %r4;\n\tcp.async.wait_group 0;\n\tld.shared.v4.u32 {%r4, %r5, %r6, %r7}, [%r29+32];\n\
         \tst.global.v4.u32 [%rd2+16], {%r4, %r5, %r6, %r7};\n$L_done:",
        32,
        8,
        &input,
    );
    assert_eq!(got[0], input[0] + input[5]);
    // src-size 8 of 16: the upper 8 bytes are zero-filled.
    assert_eq!(&got[4..8], &[input[8], input[9], 0, 0]);
}

#[test]
fn special_registers() {
    let text = format!(
        ".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 pout)\n{{\n{HEADER}\
         \tld.param.u64 %rd1, [pout];\n\
         \tmov.u32 %r1, %tid.x;\n\tmov.u32 %r2, %tid.y;\n\tmov.u32 %r3, %tid.z;\n\tmov.u32 %r4, %ntid.x;\n\tmov.u32 %r5, %ntid.y;\n\
         \tmov.u32 %r6, %ctaid.x;\n\tmov.u32 %r7, %ctaid.y;\n\tmov.u32 %r8, %ctaid.z;\n\tmov.u32 %r9, %nctaid.x;\n\tmov.u32 %r10, %nctaid.y;\n\
         \tmov.u32 %r11, %laneid;\n\tmov.u32 %r12, %warpid;\n\tmov.u32 %r13, %dynamic_smem_size;\n\
         \tmad.lo.s32 %r14, %r2, %r4, %r1;\n\tmul.lo.s32 %r15, %r4, %r5;\n\tmad.lo.s32 %r14, %r3, %r15, %r14;\n\
         \tmad.lo.s32 %r16, %r8, %r10, %r7;\n\tmad.lo.s32 %r16, %r16, %r9, %r6;\n\tmov.u32 %r17, %ntid.z;\n\tmul.lo.s32 %r15, %r15, %r17;\n\
         \tmad.lo.s32 %r18, %r16, %r15, %r14;\n\tmul.wide.u32 %rd2, %r18, 16;\n\tadd.s64 %rd3, %rd1, %rd2;\n\
         \tst.global.v4.u32 [%rd3], {{%r14, %r11, %r12, %r13}};\n\tret;\n}}\n"
    );
    let module = Module::parse(&text).expect("parse");
    let mem = GlobalMemory::new();
    let (grid, block) = ([2u32, 3, 2], [8u32, 5, 2]);
    let total = (grid.iter().product::<u32>() * block.iter().product::<u32>()) as usize;
    let out = mem.alloc(total * 16);
    let config = LaunchConfig { grid, block, dynamic_shared_bytes: 48 };
    let stats = launch(&module, "k", &config, &out.to_le_bytes(), &mem, &SimOptions::default()).expect("launch");
    assert_eq!(stats.ctas, 12);
    let got = common::read_u32s(&mem, out, total * 4);
    for i in 0..total {
        let t = (i % 80) as u32;
        assert_eq!(&got[4 * i..4 * i + 4], &[t, t % 32, t / 32, 48], "thread {i}");
    }
}

#[test]
fn loops_and_predicated_definitions_survive_register_packing() {
    // A value live across a back edge, one defined only under a guard (its old value must survive
    // the guarded definition), and short-lived temporaries in between that the slot allocator may
    // pack around them.
    let body = "\tand.b32 %r10, %r1, 15;\n\tmov.u32 %r4, 0;\n\tmov.u32 %r5, 0;\n\tmov.u32 %r6, 7;\n\
                \tsetp.eq.u32 %p2, %r10, 3;\n\
                $L_loop:\n\tadd.u32 %r11, %r4, %r5;\n\tmul.lo.u32 %r12, %r11, 1;\n\tmov.u32 %r4, %r12;\n\
                \tadd.u32 %r5, %r5, 1;\n\tsetp.lt.u32 %p1, %r5, %r10;\n\t@%p1 bra $L_loop;\n\
                \t@%p2 mov.u32 %r6, 9;\n\tadd.u32 %r13, %r2, 1;\n\tadd.u32 %r14, %r13, %r13;\n\
                \tadd.u32 %r4, %r4, %r6;\n\tadd.u32 %r4, %r4, %r14;\n\tcvt.u64.u32 %rd8, %r4;";
    let inputs: Vec<[u64; 3]> = (0..64u64).map(|i| [i, i * 3, 0]).collect();
    check(body, &inputs, |a, b, _| {
        let n = (a & 15) as u32;
        let (mut acc, mut i) = (0u32, 0u32);
        loop {
            acc += i;
            i += 1;
            if i >= n {
                break;
            }
        }
        let r6 = if n == 3 { 9 } else { 7 };
        Some((acc + r6 + 2 * (b as u32 + 1)) as u64)
    });
}
