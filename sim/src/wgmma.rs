//! `wgmma` (sm_90a; PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate
//! Instructions"): `wgmma.fence`, `wgmma.commit_group`, `wgmma.wait_group N` and
//! `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}` (N = 8, 16, ..., 256), with A
//! from shared memory (matrix descriptor) or from registers, B from shared memory.
//!
//! This module holds what needs no CTA: the lowering (called from `lower`), the layouts
//! (descriptors, swizzling, fragments) and the state a CTA keeps ([`WgState`]). The lowered
//! instructions (`WgOp`, `WgShape`) are in `crate::ir`; `crate::warpgroup` runs them on a CTA.
//!
//! # Execution
//!
//! All four instructions are *warpgroup collectives* here: the 128 threads of a warpgroup
//! (`tid / 128`, four consecutive warps) must all wait at the same instruction, which then runs once
//! for all of them (`.sync.aligned`). A thread that goes elsewhere leaves the others waiting, and the
//! deadlock report names it; a block whose last warpgroup has fewer than 128 threads is reported
//! when it reaches a wgmma.
//!
//! `mma_async` reads its operands when it issues: A and B from shared memory through their
//! descriptors (async-proxy reads, [`crate::cta::Cta::async_proxy_read`]: bounds always; with
//! checks also the proxy fence, races, uninitialised and in-flight bytes), the A fragments and the
//! input accumulators from registers. It computes D at once but holds it: the D registers are
//! written when a `wgmma.wait_group` retires the wgmma-group holding it (groups are formed by
//! `commit_group`, in order; uncommitted wgmmas are never waited for). So reading an accumulator
//! before its wait sees the old value even with checks off. Back-to-back `mma_async` on the same
//! accumulators chain (the second's input is the first's pending result), the ordering the ISA
//! guarantees for accumulators of same-shape wgmmas.
//!
//! Arithmetic: as `mma.sync` (`crate::mma`): every product of two f16/bf16 values (negated for
//! `imm-scale-a/b` = -1) is exact; the products are added in f64 in k order onto the input
//! accumulator (onto -0 for `scale-d` false) and the sum is rounded once to f32.
//!
//! # Checks (`SimOptions::checks`)
//!
//! - Registers of an in-flight wgmma (the D registers and the A fragment registers): any read or
//!   write by another instruction of a thread of the warpgroup before the `wait_group` that retires
//!   it is reported (the thread then runs instruction by instruction, each instruction's register
//!   operands compared with the in-flight set). Another `mma_async` may use in-flight accumulators
//!   only as accumulators of the same shape (chaining), and never in-flight A registers as D (or
//!   in-flight D registers as A).
//! - `wgmma.fence`: an `mma_async` with no `wgmma.fence` before it in its warpgroup is reported, and
//!   so is one whose D or A registers were *written* by other instructions since the last
//!   `wgmma.fence` (detected by value: each thread's registers are snapshotted at the fence and
//!   after each retiring wgmma). The ISA also requires the fence between a mere *read* of those
//!   registers and the next wgmma; reads are not tracked, nor writes that leave the value unchanged.
//! - Shared memory: while a wgmma is in flight, its operand bytes are marked as being read
//!   asynchronously ([`crate::checks::Shadow::set_reading`], counted here per 16-byte chunk), so a
//!   write to them (store, atomic, copy) before the retiring `wait_group` is reported.
//! - Always: the descriptors must be the same in all 128 threads; a non-zero matrix base offset is
//!   reported as unsupported.
//!
//! # Layouts (PTX ISA "Register Fragments", "Shared Memory Matrix Layout", "Matrix Descriptor
//! Format"; checked against the independent vectors in tests/data/wgmma)
//!
//! Thread `t` of the warpgroup, `w = t / 32`, `g = lane / 4`, `q = lane % 4`. D register i (and the
//! input accumulator in the same register) holds element (16w + g + 8((i >> 1) & 1),
//! 8(i >> 2) + 2q + (i & 1)); A register j holds A elements 2j (low half) and 2j + 1 (high half),
//! element i at the same (row, column) formula with columns 0..16 (K).
//!
//! Descriptor: start address bits 0-13 (<< 4), leading byte offset (LBO) bits 16-29 (<< 4), stride
//! byte offset (SBO) bits 32-45 (<< 4), base offset bits 49-51, swizzle bits 62-63 (0 none, 1 128B,
//! 2 64B, 3 32B). With W the swizzle width in 16-byte chunks (1, 2, 4, 8), the byte address of
//! element (mn, k) before swizzling is `start +`:
//!
//! ```text
//!   K-major,  none:     (mn % 8) * 16  + (mn / 8) * SBO + (k / 8) * LBO + (k % 8) * 2
//!   K-major,  swizzled: (mn % 8) * 16W + (mn / 8) * SBO + k * 2                    (LBO unused)
//!   MN-major, none:     (mn / 8) * SBO + (k % 8) * 16  + (k / 8) * LBO + (mn % 8) * 2
//!   MN-major, swizzled: (mn / 8W) * LBO + (k % 8) * 16W + (k / 8) * SBO + (mn % 8W) * 2
//! ```
//!
//! (`imm-trans` 0 is K-major, 1 MN-major), and the swizzle acts on the whole shared-memory address:
//! `addr ^ ((addr >> 3) & ((W - 1) << 4))` (the 16-byte chunk index within a 128-byte line XORed
//! with the line index modulo W). Every 16-byte chunk holds 8 consecutive elements along K
//! (K-major) or M/N (MN-major), so operands are read chunk by chunk.

use std::collections::VecDeque;

use crate::ir::wgflag::*;
use crate::ir::{Coll, Inst, Op, WgOp, WgShape, NONE};

// ---------------------------------------------------------------------------------------------
// Names (the IR itself, `WgOp` and `WgShape`, is in `crate::ir`)
// ---------------------------------------------------------------------------------------------

/// A short name for messages.
pub(crate) fn op_name(op: WgOp) -> String {
    match op {
        WgOp::Fence => "wgmma.fence".into(),
        WgOp::Commit => "wgmma.commit_group".into(),
        WgOp::Wait { .. } => "wgmma.wait_group".into(),
        WgOp::Mma(s) => format!("wgmma.mma_async.m64n{}k16", s.n),
    }
}

// ---------------------------------------------------------------------------------------------
// Lowering (called from `lower`, which resolves the operands to slots)
// ---------------------------------------------------------------------------------------------

/// An operand of a wgmma instruction, resolved to slots.
#[derive(Debug, Clone)]
pub(crate) enum WgArg {
    /// `{%r1, %r2, ...}`, registers only.
    Regs(Vec<u32>),
    /// A register; `pred` for a predicate.
    Reg { slot: u32, pred: bool },
    /// An integer literal and the constant slot holding it.
    Imm { value: i64, slot: u32 },
    /// Anything else.
    Other,
}

/// A lowered wgmma instruction: `Inst` fields and its operand-pool entries (`aux` is set by the
/// caller).
#[derive(Debug)]
pub(crate) struct WgLowered {
    pub op: WgOp,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub imm: i64,
    pub pool: Vec<u32>,
}

/// Why a wgmma instruction cannot be lowered.
#[derive(Debug)]
pub(crate) enum WgLowerError {
    /// A form the simulator does not run (another type, `.sp`, ...).
    Unsupported(String),
    /// Malformed: wrong operands.
    Malformed(String),
}

fn unsupported<T>(why: impl Into<String>) -> Result<T, WgLowerError> {
    Err(WgLowerError::Unsupported(why.into()))
}

fn malformed<T>(why: impl Into<String>) -> Result<T, WgLowerError> {
    Err(WgLowerError::Malformed(why.into()))
}

/// Lowers one `wgmma.*` instruction.
pub(crate) fn lower(opcode: &str, args: &[WgArg]) -> Result<WgLowered, WgLowerError> {
    let parts: Vec<&str> = opcode.split('.').collect();
    let kind = parts.get(1).copied().unwrap_or("");
    let rest = parts.get(2..).unwrap_or(&[]);
    let sync_aligned = |mods: &[&str]| mods.contains(&"sync") && mods.contains(&"aligned");
    let plain = WgLowered { op: WgOp::Fence, a: NONE, b: NONE, c: NONE, imm: 0, pool: Vec::new() };
    match kind {
        "fence" | "commit_group" | "wait_group" => {
            if rest.len() != 2 || !sync_aligned(rest) {
                return unsupported("only the .sync.aligned form");
            }
            match kind {
                "fence" | "commit_group" => {
                    if !args.is_empty() {
                        return malformed(format!("`{opcode}` takes no operands"));
                    }
                    Ok(WgLowered { op: if kind == "fence" { WgOp::Fence } else { WgOp::Commit }, ..plain })
                }
                _ => match args {
                    [WgArg::Imm { value, .. }] if (0..=1 << 16).contains(value) => {
                        Ok(WgLowered { op: WgOp::Wait { uses: 0 }, imm: *value, ..plain })
                    }
                    _ => malformed("`wgmma.wait_group` takes one non-negative integer constant"),
                },
            }
        }
        "mma_async" => lower_mma(opcode, rest, args),
        _ => unsupported("not a wgmma instruction the simulator runs"),
    }
}

fn lower_mma(opcode: &str, mods: &[&str], args: &[WgArg]) -> Result<WgLowered, WgLowerError> {
    // .sync .aligned .m64nNk16 .dtype .atype .btype, in this order.
    let [s, a, shape, dt, at, bt] = mods else {
        return unsupported("only .sync.aligned.m64nNk16.f32 with .f16 or .bf16 inputs (no .sp, .satfinite)");
    };
    if *s != "sync" || *a != "aligned" {
        return unsupported("only the .sync.aligned form");
    }
    let n = match shape.strip_prefix("m64n").and_then(|r| r.strip_suffix("k16")).map(str::parse::<u16>) {
        Some(Ok(n)) => n,
        _ => return unsupported(format!("shape `{shape}`: only .m64nNk16")),
    };
    if *dt != "f32" || at != bt || !matches!(*at, "f16" | "bf16") {
        return unsupported("only .f32 accumulators with .f16.f16 or .bf16.bf16 inputs");
    }
    if n == 0 || n % 8 != 0 || n > 256 {
        return malformed(format!("N = {n} of `.{shape}` is not a multiple of 8 in 8..=256"));
    }
    let mut flags = if *at == "bf16" { BF16 } else { 0 };
    let a_regs = matches!(args.get(1), Some(WgArg::Regs(_)));
    let want = if a_regs { 7 } else { 8 };
    if args.len() != want {
        return malformed(format!("`{opcode}` takes {want} operands (A from {}), found {}", if a_regs { "registers" } else { "a descriptor" }, args.len()));
    }
    let nd = n as usize / 2;
    let WgArg::Regs(d) = &args[0] else {
        return malformed("the first operand must be a brace list of the D registers");
    };
    if d.len() != nd {
        return malformed(format!("`{opcode}` needs {nd} D registers, found {}", d.len()));
    }
    let desc = |arg: &WgArg, what: &str| -> Result<u32, WgLowerError> {
        match arg {
            WgArg::Reg { slot, pred: false } | WgArg::Imm { slot, .. } => Ok(*slot),
            _ => malformed(format!("the {what} descriptor must be a 64-bit register or constant")),
        }
    };
    let mut pool = Vec::with_capacity(2 * nd + 4);
    pool.extend_from_slice(d);
    pool.extend_from_slice(d);
    let (a_slot, next) = if a_regs {
        flags |= A_REGS;
        let WgArg::Regs(r) = &args[1] else {
            return malformed("A from registers must be a brace list of 4 registers");
        };
        if r.len() != 4 {
            return malformed(format!("A from registers needs 4 registers, found {}", r.len()));
        }
        pool.extend_from_slice(r);
        (NONE, 2)
    } else {
        (desc(&args[1], "A")?, 2)
    };
    let b_slot = desc(&args[next], "B")?;
    let c = match &args[next + 1] {
        WgArg::Reg { slot, pred: true } => *slot,
        WgArg::Imm { value: v @ (0 | 1), .. } => {
            flags |= SCALE_D_IMM | if *v == 1 { SCALE_D_ONE } else { 0 };
            NONE
        }
        _ => return malformed("scale-d must be a predicate or the constant 0 or 1"),
    };
    let imm = |arg: &WgArg, allowed: &[i64], what: &str| -> Result<i64, WgLowerError> {
        match arg {
            WgArg::Imm { value, .. } if allowed.contains(value) => Ok(*value),
            _ => malformed(format!("{what} must be one of the constants {allowed:?}")),
        }
    };
    if imm(&args[next + 2], &[1, -1], "imm-scale-a")? == -1 {
        flags |= NEG_A;
    }
    if imm(&args[next + 3], &[1, -1], "imm-scale-b")? == -1 {
        flags |= NEG_B;
    }
    if !a_regs && imm(&args[next + 4], &[0, 1], "imm-trans-a")? == 1 {
        flags |= TRANS_A;
    }
    if imm(&args[want - 1], &[0, 1], "imm-trans-b")? == 1 {
        flags |= TRANS_B;
    }
    Ok(WgLowered { op: WgOp::Mma(WgShape { n, flags }), a: a_slot, b: b_slot, c, imm: 0, pool })
}

/// Gives every `wgmma.wait_group` of a lowered function its use list: all D and A registers of
/// the function's `mma_async`s (one copy per wait: the register allocator rewrites each
/// instruction's pool entries in place). Run before register allocation, on code that ends with
/// its final `exit`.
///
/// The uses keep the registers live (so their slots unshared) from each `mma_async` to the waits
/// where its results land. A wgmma may also stay in flight past the last wait in program order
/// (`wait_group 1` as the last wait), so the same list is appended once more as an unreachable
/// instruction after the final `exit`: the allocator gives every register a slot of its own from
/// its first mention to the end of the code, and no other register can reuse the slot of a
/// register an in-flight wgmma still owns.
pub(crate) fn link_waits(code: &mut Vec<Inst>, pool: &mut Vec<u32>) -> Result<(), String> {
    let mut regs = Vec::new();
    for inst in code.iter() {
        if let Op::Coll(Coll::Wgmma(WgOp::Mma(s))) = inst.op {
            let at = inst.aux as usize;
            let nd = s.nd();
            regs.extend_from_slice(&pool[at..at + nd]);
            if s.a_regs() {
                regs.extend_from_slice(&pool[at + 2 * nd..at + 2 * nd + 4]);
            }
        }
    }
    if regs.is_empty() {
        return Ok(());
    }
    regs.sort_unstable();
    regs.dedup();
    let Ok(uses) = u16::try_from(regs.len()) else {
        return Err(format!("{} distinct wgmma operand registers are more than the simulator tracks", regs.len()));
    };
    let line = code.last().map_or(0, |i| i.line as usize);
    code.push(Inst::new(Op::Coll(Coll::Wgmma(WgOp::Wait { uses: 0 })), line));
    for inst in code.iter_mut() {
        if let Op::Coll(Coll::Wgmma(WgOp::Wait { .. })) = inst.op {
            inst.op = Op::Coll(Coll::Wgmma(WgOp::Wait { uses }));
            inst.aux = pool.len() as u32;
            pool.extend_from_slice(&regs);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------------------------

/// (row, column) of register value `i` of warpgroup thread `t` in the D fragment (columns up to
/// N) and, for i < 8, in the A fragment (columns = K).
pub(crate) fn frag_pos(t: usize, i: usize) -> (usize, usize) {
    let (w, lane) = (t / 32, t % 32);
    let (g, q) = (lane / 4, lane % 4);
    (16 * w + g + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * q + (i & 1))
}

/// A decoded matrix descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Desc {
    start: u64,
    lbo: u64,
    sbo: u64,
    pub base_offset: u8,
    /// Swizzle width in 16-byte chunks: 1 (none), 2 (32B), 4 (64B), 8 (128B).
    w: u64,
}

impl Desc {
    pub(crate) fn decode(d: u64) -> Desc {
        let field = |shift: u32| ((d >> shift) & 0x3fff) << 4;
        let w = match d >> 62 {
            0 => 1,
            1 => 8,
            2 => 4,
            _ => 2,
        };
        Desc { start: field(0), lbo: field(16), sbo: field(32), base_offset: ((d >> 49) & 7) as u8, w }
    }

    /// The shared-memory address of the 16-byte chunk holding elements (mn, k..k + 8) (K-major,
    /// k a multiple of 8) or (mn..mn + 8, k) (MN-major, mn a multiple of 8), swizzle applied.
    pub(crate) fn chunk(&self, mn_major: bool, mn: u64, k: u64) -> u64 {
        let w = self.w;
        let off = match (mn_major, w) {
            (false, 1) => (mn % 8) * 16 + (mn / 8) * self.sbo + (k / 8) * self.lbo,
            (false, _) => (mn % 8) * 16 * w + (mn / 8) * self.sbo + (k / 8) * 16,
            (true, 1) => (mn / 8) * self.sbo + (k % 8) * 16 + (k / 8) * self.lbo,
            (true, _) => ((mn % (8 * w)) / 8) * 16 + (mn / (8 * w)) * self.lbo + (k % 8) * 16 * w + (k / 8) * self.sbo,
        };
        swizzle(self.start + off, w)
    }
}

/// The swizzle of a shared-memory byte address for a width of `w` 16-byte chunks.
fn swizzle(addr: u64, w: u64) -> u64 {
    addr ^ ((addr >> 3) & ((w - 1) << 4))
}

// ---------------------------------------------------------------------------------------------
// Execution state (the execution itself: `crate::warpgroup`)
// ---------------------------------------------------------------------------------------------

/// Register-slot lock kinds (checks).
pub(crate) const LOCK_D: u8 = 1;
pub(crate) const LOCK_A: u8 = 2;

/// An issued, not yet retired `mma_async`.
pub(crate) struct InFlight {
    /// Its instruction.
    pub pc: u32,
    /// The result, thread-major: thread t's D register i at `t * nd + i`.
    pub values: Vec<u32>,
    /// Shared-memory chunks (16-byte units) it counts as being read (checks).
    pub chunks: Vec<u32>,
}

/// One warpgroup's wgmma state. Every wgmma instruction is a warpgroup collective, so the groups
/// and in-flight operations are common to its 128 threads; only values are per thread.
#[derive(Default)]
pub(crate) struct Group {
    /// A `wgmma.fence` has run.
    pub fenced: bool,
    /// Issued since the last commit.
    pub open: Vec<InFlight>,
    /// Committed groups, oldest first.
    pub committed: VecDeque<Vec<InFlight>>,
    /// Number of in-flight operations (open and committed).
    pub in_flight: usize,
    /// Per register slot, LOCK_D / LOCK_A while an in-flight operation uses it (checks).
    pub locked: Vec<u8>,
    /// Each thread's registers as of the last fence, updated by retiring operations (checks):
    /// thread t at `t * nslots`.
    pub snap: Vec<u64>,
}

/// The wgmma state of a CTA (`Cta::wgmma`).
#[derive(Default)]
pub(crate) struct WgState {
    pub groups: Vec<Group>,
    /// In-flight wgmma reads per 16-byte shared-memory chunk (checks).
    pub reading: Vec<u16>,
    /// Set while a thread runs one instruction under [`crate::cta::Cta::run_thread_watched`].
    pub stepping: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_fields() {
        // start 0x3fff0 (all 14 bits), LBO 0x10, SBO 0x3fff0, base offset 5, 64B swizzle.
        let d = 0x3fff | (1 << 16) | (0x3fffu64 << 32) | (5 << 49) | (2 << 62);
        assert_eq!(Desc::decode(d), Desc { start: 0x3fff0, lbo: 16, sbo: 0x3fff0, base_offset: 5, w: 4 });
        assert_eq!(Desc::decode(1 << 62).w, 8);
        assert_eq!(Desc::decode(3 << 62).w, 2);
        assert_eq!(Desc::decode(0).w, 1);
    }

    #[test]
    fn swizzle_matches_the_isa_pattern_tables() {
        // PTX ISA "Swizzling Modes", 128B: line r of a 1024-byte atom holds, at chunk position p,
        // chunk `TABLE[r][p]` of the unswizzled line.
        const TABLE: [[u64; 8]; 8] = [
            [0, 1, 2, 3, 4, 5, 6, 7],
            [1, 0, 3, 2, 5, 4, 7, 6],
            [2, 3, 0, 1, 6, 7, 4, 5],
            [3, 2, 1, 0, 7, 6, 5, 4],
            [4, 5, 6, 7, 0, 1, 2, 3],
            [5, 4, 7, 6, 1, 0, 3, 2],
            [6, 7, 4, 5, 2, 3, 0, 1],
            [7, 6, 5, 4, 3, 2, 1, 0],
        ];
        for (w, lines) in [(8u64, 8usize), (4, 4), (2, 2)] {
            for line in 0..16u64 {
                for chunk in 0..8u64 {
                    let addr = line * 128 + chunk * 16 + 6;
                    let p = swizzle(addr, w);
                    let row = &TABLE[(line as usize) % lines];
                    // The W-wide patterns are the first W rows of the 128B table restricted to
                    // XOR masks below W.
                    let expect = row.iter().position(|&c| c == chunk).unwrap() as u64;
                    assert_eq!(p, line * 128 + expect * 16 + 6, "w {w} line {line} chunk {chunk}");
                }
            }
        }
        assert_eq!(swizzle(0x1234, 1), 0x1234);
    }

    #[test]
    fn fragment_positions_cover_the_tiles() {
        let mut seen = vec![false; 64 * 256];
        for t in 0..128 {
            for i in 0..128 {
                let (m, n) = frag_pos(t, i);
                assert!(!seen[m * 256 + n]);
                seen[m * 256 + n] = true;
            }
        }
        assert!(seen.iter().all(|&x| x));
        // Thread 37: warp 1, lane 5 (g 1, q 1); value 5: row 16 + 1, column 8 + 2 + 1.
        assert_eq!(frag_pos(37, 5), (17, 11));
    }

    #[test]
    fn lowering_forms() {
        let d: Vec<u32> = (100..104).collect();
        let imm = |v: i64| WgArg::Imm { value: v, slot: 7 };
        let reg = |s: u32| WgArg::Reg { slot: s, pred: false };
        let ss = lower(
            "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16",
            &[WgArg::Regs(d.clone()), reg(1), reg(2), WgArg::Reg { slot: 3, pred: true }, imm(1), imm(-1), imm(0), imm(1)],
        )
        .unwrap();
        let WgOp::Mma(s) = ss.op else { panic!() };
        assert_eq!((s.n, s.has(BF16), s.a_regs(), s.has(NEG_B), s.has(TRANS_B), s.has(TRANS_A)), (8, true, false, true, true, false));
        assert_eq!((ss.a, ss.b, ss.c, ss.pool.len()), (1, 2, 3, 8));
        let rs = lower(
            "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16",
            &[WgArg::Regs(d.clone()), WgArg::Regs(vec![9, 10, 11, 12]), reg(2), imm(0), imm(1), imm(1), imm(1)],
        )
        .unwrap();
        let WgOp::Mma(s) = rs.op else { panic!() };
        assert!(s.a_regs() && s.has(SCALE_D_IMM) && !s.has(SCALE_D_ONE) && s.has(TRANS_B) && !s.has(BF16));
        assert_eq!(rs.pool[8..], [9, 10, 11, 12]);
        assert!(matches!(lower("wgmma.mma_async.sync.aligned.m64n8k16.f16.f16.f16", &[]), Err(WgLowerError::Unsupported(_))));
        assert!(matches!(lower("wgmma.mma_async.sp.sync.aligned.m64n8k16.f32.f16.f16", &[]), Err(WgLowerError::Unsupported(_))));
        assert!(matches!(
            lower("wgmma.mma_async.sync.aligned.m64n12k16.f32.f16.f16", &[]),
            Err(WgLowerError::Malformed(_))
        ));
        assert!(matches!(lower("wgmma.wait_group.sync.aligned", &[imm(1)]), Ok(WgLowered { op: WgOp::Wait { .. }, imm: 1, .. })));
        assert!(matches!(lower("wgmma.fence.sync.aligned", &[]), Ok(WgLowered { op: WgOp::Fence, .. })));
        assert!(matches!(lower("wgmma.fence.aligned", &[]), Err(WgLowerError::Unsupported(_))));
    }
}
