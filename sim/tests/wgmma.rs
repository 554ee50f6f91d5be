//! `wgmma` (sm_90a): every case of the independent test vectors in tests/data/wgmma (at the
//! repository root; see its README) through a hand-written kernel per case, bit for bit, then the
//! asynchrony, fence and convergence checks, and variants (chaining, negated A, two groups) whose
//! expected values follow from the vectors' exact integer results.

mod common;

use std::sync::OnceLock;

use common::{bytes_of_u32, read_u32s};
use serde_json::Value;
use tessera_sim::{launch, GlobalMemory, LaunchConfig, Module, SimError, SimOptions};

fn cases() -> &'static [Value] {
    static DATA: OnceLock<Value> = OnceLock::new();
    let data = DATA.get_or_init(|| {
        let path = format!("{}/../tests/data/wgmma/wgmma.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).expect("json")
    });
    data["cases"].as_array().expect("cases")
}

fn case(name: &str) -> &'static Value {
    cases().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no case {name}"))
}

fn f32_bits(v: &Value) -> u32 {
    (v.as_f64().expect("number") as f32).to_bits()
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
}

/// The wait line every kernel has once; tests move or remove it.
const WAIT: &str = "\twgmma.wait_group.sync.aligned 0;\n";
const FENCE: &str = "\twgmma.fence.sync.aligned;\n";
const COMMIT: &str = "\twgmma.commit_group.sync.aligned;\n";

/// How the kernel writes the instruction.
#[derive(Clone, Copy, Default)]
struct Form {
    /// scale-d as a predicate register (else the immediate).
    scale_pred: bool,
    /// imm-scale-a = -1.
    neg_a: bool,
}

/// A kernel for `c`: stage the shared-memory image (from global memory, 16 bytes per thread and
/// step), fence.proxy.async + bar.sync, load each thread's A (registers form) and C registers, run
/// fence / mma_async / commit / wait, store D. The mma line is `{MMA}` in the returned template
/// (see `mma_line`).
fn template(c: &Value) -> String {
    let n = c["N"].as_u64().expect("N") as usize;
    let nd = n / 2;
    let bytes = c["smem_bytes"].as_u64().expect("bytes") as usize;
    let alloc = bytes.div_ceil(1024) * 1024;
    let rs = c["a_source"] == "registers";
    let f = |i: usize| format!("%f{i}");
    let quads = |at: &str, store: bool| -> String {
        (0..nd / 4)
            .map(|q| {
                let regs = (4 * q..4 * q + 4).map(f).collect::<Vec<_>>().join(", ");
                if store {
                    format!("\tst.global.v4.f32 [{at}+{}], {{{regs}}};\n", 16 * q)
                } else {
                    format!("\tld.global.v4.f32 {{{regs}}}, [{at}+{}];\n", 16 * q)
                }
            })
            .collect()
    };
    format!(
        ".version 8.0\n.target sm_90a\n.address_size 64\n\
         .shared .align 1024 .b8 smem[{alloc}];\n\n\
         .visible .entry k(.param .u64 pimg, .param .u64 pa, .param .u64 pc, .param .u64 pd, .param .u64 desca, \
         .param .u64 descb, .param .u32 scaled)\n{{\n\
         \t.reg .pred %p<4>;\n\t.reg .b32 %r<24>;\n\t.reg .b64 %rd<16>;\n\t.reg .f32 %f<{nd}>;\n\t.reg .b32 %a<4>;\n\
         \tld.param.u64 %rd1, [pimg];\n\tld.param.u64 %rd2, [pa];\n\tld.param.u64 %rd3, [pc];\n\tld.param.u64 %rd4, [pd];\n\
         \tld.param.u64 %rd5, [desca];\n\tld.param.u64 %rd6, [descb];\n\tld.param.u32 %r1, [scaled];\n\
         \tmov.u32 %r0, %tid.x;\n\tshr.u32 %r20, %r0, 5;\n\
         \tmul.lo.u32 %r2, %r0, 16;\n\tmov.u32 %r3, smem;\n\
         $LOOP:\n\tsetp.ge.u32 %p1, %r2, {bytes};\n\t@%p1 bra $DONE;\n\
         \tcvt.u64.u32 %rd7, %r2;\n\tadd.s64 %rd8, %rd1, %rd7;\n\tld.global.v4.u32 {{%r4, %r5, %r6, %r7}}, [%rd8];\n\
         \tadd.u32 %r8, %r3, %r2;\n\tst.shared.v4.u32 [%r8], {{%r4, %r5, %r6, %r7}};\n\tadd.u32 %r2, %r2, 2048;\n\tbra $LOOP;\n\
         $DONE:\n\tfence.proxy.async.shared::cta;\n\tbar.sync 0;\n\
         \tmul.wide.u32 %rd9, %r0, 16;\n\tadd.s64 %rd10, %rd2, %rd9;\n\
         {aload}\
         \tmul.wide.u32 %rd11, %r0, {dbytes};\n\tadd.s64 %rd12, %rd3, %rd11;\n\
         {cload}\
         \tsetp.ne.u32 %p2, %r1, 0;\n\
         {FENCE}\t{{MMA}}\n{COMMIT}{WAIT}\
         \tadd.s64 %rd13, %rd4, %rd11;\n\
         {dstore}\
         \tret;\n}}\n",
        aload = if rs { "\tld.global.v4.u32 {%a0, %a1, %a2, %a3}, [%rd10];\n" } else { "" },
        dbytes = 4 * nd,
        cload = quads("%rd12", false),
        dstore = quads("%rd13", true),
    )
}

/// The mma_async line of case `c`.
fn mma_line(c: &Value, form: Form) -> String {
    let n = c["N"].as_u64().expect("N") as usize;
    let d = (0..n / 2).map(|i| format!("%f{i}")).collect::<Vec<_>>().join(", ");
    let rs = c["a_source"] == "registers";
    let scale_d = if form.scale_pred { "%p2".to_string() } else { c["scale_d"].to_string() };
    let sa = if form.neg_a { -1 } else { c["imm_scale_a"].as_i64().expect("imm_scale_a") };
    let sb = c["imm_scale_b"].as_i64().expect("imm_scale_b");
    let tb = c["tnspB"].as_i64().expect("tnspB");
    let a = if rs { "{%a0, %a1, %a2, %a3}".to_string() } else { "%rd5".to_string() };
    let ta = if rs { String::new() } else { format!(", {}", c["tnspA"].as_i64().expect("tnspA")) };
    format!("{} {{{d}}}, {a}, %rd6, {scale_d}, {sa}, {sb}{ta}, {tb};", c["instr"].as_str().expect("instr"))
}

fn kernel(c: &Value, form: Form) -> String {
    template(c).replace("{MMA}", &mma_line(c, form))
}

/// What a launch of a case's kernel gives: each thread's N/2 stored D values.
fn run(c: &Value, text: &str, threads: u32, checks: bool) -> Result<Vec<Vec<u32>>, SimError> {
    let module = Module::parse(text)?;
    let n = c["N"].as_u64().expect("N") as usize;
    let nd = n / 2;
    let mem = GlobalMemory::new();
    let mut img: Vec<u8> = c["smem_b16"].as_array().expect("smem").iter().flat_map(|v| (v.as_u64().expect("u16") as u16).to_le_bytes()).collect();
    img.resize(img.len().div_ceil(16) * 16, 0);
    let (mut a, mut cv) = (vec![0u32; 128 * 4], vec![0u32; 128 * nd]);
    for t in c["threads"].as_array().expect("threads") {
        let tid = t["tid"].as_u64().expect("tid") as usize;
        if let Some(regs) = t.get("a").and_then(Value::as_array) {
            for (j, r) in regs.iter().enumerate() {
                a[tid * 4 + j] = r.as_u64().expect("a") as u32;
            }
        }
        for (i, x) in t["c"].as_array().expect("c").iter().enumerate() {
            cv[tid * nd + i] = f32_bits(x);
        }
    }
    let put = |bytes: &[u8]| {
        let p = mem.alloc(bytes.len());
        mem.write(p, bytes).expect("write");
        p
    };
    let (pimg, pa, pc) = (put(&img), put(&bytes_of_u32(&a)), put(&bytes_of_u32(&cv)));
    let pd = mem.alloc(4 * 128 * nd);
    let desc_a = c.get("desc_a").map_or(0, hex);
    let desc_b = hex(&c["descb_override"].as_str().map_or(c["desc_b"].clone(), |s| Value::String(s.into())));
    let mut params = Vec::new();
    for p in [pimg, pa, pc, pd, desc_a, desc_b] {
        params.extend_from_slice(&p.to_le_bytes());
    }
    params.extend_from_slice(&(c["scale_d"].as_u64().expect("scale_d") as u32).to_le_bytes());
    let config = LaunchConfig { grid: [1, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: 0 };
    let options = SimOptions { checks, ..SimOptions::default() };
    launch(&module, "k", &config, &params, &mem, &options)?;
    let got = read_u32s(&mem, pd, 128 * nd);
    Ok(got.chunks(nd).map(<[u32]>::to_vec).collect())
}

/// Each thread's expected values: `f(d, c)` of the case's D and C (exact small integers).
fn expect(c: &Value, f: impl Fn(f64, f64) -> f64) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); 128];
    for t in c["threads"].as_array().expect("threads") {
        let tid = t["tid"].as_u64().expect("tid") as usize;
        let (d, cv) = (t["d"].as_array().expect("d"), t["c"].as_array().expect("c"));
        out[tid] = d.iter().zip(cv).map(|(d, cv)| (f(d.as_f64().expect("d"), cv.as_f64().expect("c")) as f32).to_bits()).collect();
    }
    out
}

fn compare(name: &str, got: &[Vec<u32>], want: &[Vec<u32>]) {
    for t in 0..128 {
        assert_eq!(got[t], want[t], "{name}: thread {t}");
    }
}

fn report_of(e: SimError) -> String {
    match e.report() {
        Some(r) => r.kind.clone(),
        None => panic!("expected a runtime report, got: {e}"),
    }
}

#[test]
fn every_oracle_case_bit_for_bit() {
    let all = cases();
    assert_eq!(all.len(), 23);
    for (i, c) in all.iter().enumerate() {
        let name = c["name"].as_str().expect("name");
        // Alternate the scale-d forms (predicate, immediate); both checks settings agree.
        let text = kernel(c, Form { scale_pred: i % 2 == 0, ..Form::default() });
        let want = expect(c, |d, _| d);
        for checks in [true, false] {
            let got = run(c, &text, 128, checks).unwrap_or_else(|e| panic!("{name} (checks {checks}): {e}"));
            compare(name, &got, &want);
        }
    }
}

#[test]
fn scale_d_predicate_false_ignores_the_accumulators() {
    // The same kernel with the predicate from a parameter: scale_d = 0 in the parameter turns an
    // accumulating case into D = A * B = D_oracle - C.
    let mut c = case("ss_k_sw128_n64_bf16").clone();
    assert_eq!(c["scale_d"], 1);
    let text = kernel(&c, Form { scale_pred: true, ..Form::default() });
    c["scale_d"] = 0.into();
    let got = run(&c, &text, 128, true).expect("run");
    compare("scale_d=0 via predicate", &got, &expect(&c, |d, cv| d - cv));
}

#[test]
fn negated_a_and_chained_accumulation() {
    for name in ["ss_k_sw64_kslice_n32_f16", "rs_tnspB_sw128_n128_bf16", "ss_tnspA_none_tnspB_sw64_n32_f16"] {
        let c = case(name);
        let s = c["scale_d"].as_f64().expect("scale_d");
        // imm-scale-a = -1: D = -(A B) + s C = 2 s C - D_oracle.
        let got = run(c, &kernel(c, Form { neg_a: true, ..Form::default() }), 128, true).expect("run");
        compare(name, &got, &expect(c, |d, cv| 2.0 * s * cv - d));
        // Two mma_async on the same accumulators before one wait: the second adds A B to the
        // first's pending result: 2 D_oracle - s C.
        let line = mma_line(c, Form::default());
        let again = line.replacen(&format!(", {}, ", c["scale_d"]), ", 1, ", 1);
        let text = template(c).replace("{MMA}", &format!("{line}\n\t{again}"));
        for checks in [true, false] {
            let got = run(c, &text, 128, checks).expect("chained");
            compare(name, &got, &expect(c, |d, cv| 2.0 * d - s * cv));
        }
    }
}

#[test]
fn wait_group_keeps_younger_groups_in_flight() {
    // Group 0 on %f, group 1 on %h (same inputs); wait_group 1 retires group 0 only.
    let c = case("rs_k_sw128_n24_bf16");
    let nd = 12;
    let h: Vec<String> = (0..nd).map(|i| format!("%h{i}")).collect();
    let line = mma_line(c, Form::default());
    let second = line.replace("{%f0, %f1, %f2, %f3, %f4, %f5, %f6, %f7, %f8, %f9, %f10, %f11}", &format!("{{{}}}", h.join(", ")));
    assert_ne!(line, second);
    let copies: String = (0..nd).map(|i| format!("\tmov.f32 %h{i}, %f{i};\n")).collect();
    let text = template(c)
        .replace("\t.reg .b32 %a<4>;\n", &format!("\t.reg .b32 %a<4>;\n\t.reg .f32 %h<{nd}>;\n"))
        .replace(FENCE, &format!("{copies}{FENCE}"))
        .replace("{MMA}", &format!("{line}\n{COMMIT}\t{second}"))
        .replace(WAIT, "\twgmma.wait_group.sync.aligned 1;\n");
    // %f (group 0) is retired and stored.
    let got = run(c, &text, 128, true).expect("group 0 retired");
    compare("wait_group 1", &got, &expect(c, |d, _| d));
    // Storing %h (group 1, still in flight) is reported; after wait_group 0 it is fine.
    let store_h: String = (0..nd / 4)
        .map(|q| format!("\tst.global.v4.f32 [%rd13+{}], {{{}}};\n", 16 * q, h[4 * q..4 * q + 4].join(", ")))
        .collect();
    let early = text.replace("\tret;", &format!("{store_h}\tret;"));
    let kind = report_of(run(c, &early, 128, true).expect_err("in-flight read"));
    assert!(kind.contains("reads accumulator register d0") && kind.contains("in flight"), "{kind}");
    let late = text.replace("\tret;", &format!("\twgmma.wait_group.sync.aligned 0;\n{store_h}\tret;"));
    let got = run(c, &late, 128, true).expect("group 1 retired");
    compare("wait_group 0", &got, &expect(c, |d, _| d));
}

#[test]
fn reading_accumulators_before_wait_group_is_reported() {
    let c = case("ss_k_none_n8_bf16");
    let text = kernel(c, Form::default()).replace(WAIT, "").replace("\tret;", &format!("{WAIT}\tret;"));
    let e = run(c, &text, 128, true).expect_err("read before wait");
    let kind = report_of(e);
    assert!(kind.contains("reads accumulator register d0") && kind.contains("wgmma.wait_group"), "{kind}");
    // Without checks the registers still hold the inputs: results land at the wait.
    let got = run(c, &text, 128, false).expect("unchecked");
    compare("stale", &got, &expect(c, |_, cv| cv));
    // Writing an A register of an in-flight wgmma (registers form) is reported too.
    let c = case("rs_k_none_n8_bf16");
    let text = kernel(c, Form::default()).replace(COMMIT, &format!("{COMMIT}\tmov.b32 %a2, 0;\n"));
    let kind = report_of(run(c, &text, 128, true).expect_err("A write in flight"));
    assert!(kind.contains("writes A register a2"), "{kind}");
}

#[test]
fn a_warp_that_skips_the_mma_is_reported() {
    let c = case("ss_k_sw32_n16_bf16");
    let text = kernel(c, Form::default());
    let mma = mma_line(c, Form::default());
    let text = text.replace(&format!("\t{mma}\n"), &format!("\tsetp.eq.u32 %p3, %r20, 1;\n\t@%p3 bra $SKIP;\n\t{mma}\n$SKIP:\n"));
    let e = run(c, &text, 128, true).expect_err("divergent warpgroup");
    assert!(matches!(e, SimError::Deadlock(_)), "{e}");
    let kind = report_of(e);
    assert!(kind.contains("wgmma.mma_async") && kind.contains("thread (32, 0, 0)") && kind.contains("wgmma.commit_group"), "{kind}");
    // A block with a partial warpgroup cannot run a wgmma at all.
    let e = run(c, &kernel(c, Form::default()), 64, true).expect_err("64 threads");
    assert!(report_of(e).contains("needs all 128 threads"));
}

#[test]
fn fence_rules_are_checked() {
    let c = case("ss_k_sw64_n16_f16_scale_d0");
    let text = kernel(c, Form::default());
    let kind = report_of(run(c, &text.replace(FENCE, ""), 128, true).expect_err("no fence"));
    assert!(kind.contains("without a wgmma.fence"), "{kind}");
    // An accumulator written between the fence and the mma_async.
    let late = text.replace(FENCE, &format!("{FENCE}\tmov.f32 %f3, 0f3F800000;\n"));
    let kind = report_of(run(c, &late, 128, true).expect_err("write after fence"));
    assert!(kind.contains("accumulator d3") && kind.contains("after the last wgmma.fence"), "{kind}");
    // The same write before the fence is fine (scale-d = 0: the result does not change).
    let early = text.replace(FENCE, &format!("\tmov.f32 %f3, 0f3F800000;\n{FENCE}"));
    compare("write before fence", &run(c, &early, 128, true).expect("fenced"), &expect(c, |d, _| d));
}

#[test]
fn shared_operands_are_guarded_while_in_flight() {
    let c = case("ss_k_none_n8_bf16");
    let text = kernel(c, Form::default());
    // Thread 0 overwrites the first B chunk (descriptor start address) before the wait.
    let b_start = (hex(&c["desc_b"]) & 0x3fff) << 4;
    let store = format!("\tsetp.eq.u32 %p3, %r0, 0;\n\t@%p3 st.shared.u32 [smem+{b_start}], %r0;\n");
    let bad = text.replace(COMMIT, &format!("{COMMIT}{store}"));
    let kind = report_of(run(c, &bad, 128, true).expect_err("write in flight"));
    assert!(kind.contains("still reading"), "{kind}");
    // After the wait the region is free again.
    let ok = text.replace(WAIT, &format!("{WAIT}{store}"));
    run(c, &ok, 128, true).expect("write after wait");
    // Generic-proxy writes need fence.proxy.async before the wgmma reads them.
    let unfenced = text.replace("\tfence.proxy.async.shared::cta;\n", "");
    let kind = report_of(run(c, &unfenced, 128, true).expect_err("unfenced"));
    assert!(kind.contains("fence.proxy.async") && kind.contains("wgmma.mma_async"), "{kind}");
}

#[test]
fn unsupported_and_malformed_forms() {
    let c = case("ss_k_none_n8_bf16");
    let text = kernel(c, Form::default());
    let f16acc = text.replace(".m64n8k16.f32.bf16.bf16", ".m64n8k16.f16.f16.f16");
    assert!(matches!(Module::parse(&f16acc), Err(SimError::Unsupported { .. })));
    let sparse = text.replace("wgmma.mma_async.sync", "wgmma.mma_async.sp.sync");
    assert!(matches!(Module::parse(&sparse), Err(SimError::Unsupported { .. })));
    let bad_n = text.replace(".m64n8k16.", ".m64n12k16.");
    assert!(matches!(Module::parse(&bad_n), Err(SimError::Parse { .. })));
    let short = text.replace("{%f0, %f1, %f2, %f3}", "{%f0, %f1, %f2}");
    assert!(matches!(Module::parse(&short), Err(SimError::Parse { .. })));
    // A non-zero matrix base offset is reported at run time.
    let mut c2 = c.clone();
    c2["descb_override"] = format!("{:#x}", hex(&c["desc_b"]) | 1 << 49).into();
    let kind = report_of(run(&c2, &text, 128, true).expect_err("base offset"));
    assert!(kind.contains("base offset"), "{kind}");
}
