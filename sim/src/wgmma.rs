//! `wgmma` (sm_90a; PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate
//! Instructions"): `wgmma.fence`, `wgmma.commit_group`, `wgmma.wait_group N` and
//! `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}` (N = 8, 16, ..., 256), with A
//! from shared memory (matrix descriptor) or from registers, B from shared memory.
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
//! descriptors (async-proxy reads, [`Cta::async_proxy_read`]: bounds always; with checks also the
//! proxy fence, races, uninitialised and in-flight bytes), the A fragments and the
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

use std::collections::{HashMap, VecDeque};

use crate::cta::{op_name as cta_op_name, Cta, State};
use crate::ir::{Coll, Inst, Op, GUARD_NEG, NONE, NO_GUARD};
use crate::numerics::{bf16_to_f32, f16_to_f32};
use crate::SimError;

// ---------------------------------------------------------------------------------------------
// IR
// ---------------------------------------------------------------------------------------------

/// A wgmma instruction (`Coll::Wgmma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WgOp {
    Fence,
    Commit,
    /// `wait_group N` with N in `Inst::imm`; pool[aux..aux + uses] lists every D and A register of
    /// the kernel's `mma_async`s as *uses*, so that the register allocator keeps them live (and
    /// unshared) up to every wait, where in-flight results land.
    Wait { uses: u16 },
    /// `mma_async`: pool[aux..aux + N/2] = D (written), pool[aux + N/2..aux + N] = D again (read:
    /// the input accumulator), then the 4 A registers when A comes from registers. a = A
    /// descriptor slot (NONE with A in registers), b = B descriptor slot, c = scale-d predicate slot
    /// (NONE when scale-d is an immediate, see [`WgShape`]).
    Mma(WgShape),
}

/// Shape and immediates of an `mma_async`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WgShape {
    /// N of `.m64nNk16`.
    pub n: u16,
    flags: u8,
}

const BF16: u8 = 1;
const A_REGS: u8 = 2;
const NEG_A: u8 = 4;
const NEG_B: u8 = 8;
const TRANS_A: u8 = 16;
const TRANS_B: u8 = 32;
const SCALE_D_IMM: u8 = 64;
const SCALE_D_ONE: u8 = 128;

impl WgShape {
    fn has(self, f: u8) -> bool {
        self.flags & f != 0
    }
    /// Whether A comes from registers (else from shared memory).
    pub(crate) fn a_regs(self) -> bool {
        self.has(A_REGS)
    }
    /// D registers per thread.
    pub(crate) fn nd(self) -> usize {
        self.n as usize / 2
    }
}

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
fn frag_pos(t: usize, i: usize) -> (usize, usize) {
    let (w, lane) = (t / 32, t % 32);
    let (g, q) = (lane / 4, lane % 4);
    (16 * w + g + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * q + (i & 1))
}

/// A decoded matrix descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Desc {
    start: u64,
    lbo: u64,
    sbo: u64,
    base_offset: u8,
    /// Swizzle width in 16-byte chunks: 1 (none), 2 (32B), 4 (64B), 8 (128B).
    w: u64,
}

impl Desc {
    fn decode(d: u64) -> Desc {
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
    fn chunk(&self, mn_major: bool, mn: u64, k: u64) -> u64 {
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
// Execution
// ---------------------------------------------------------------------------------------------

/// Register-slot lock kinds (checks).
const LOCK_D: u8 = 1;
const LOCK_A: u8 = 2;

/// An issued, not yet retired `mma_async`.
struct InFlight {
    /// Its instruction.
    pc: u32,
    /// The result, thread-major: thread t's D register i at `t * nd + i`.
    values: Vec<u32>,
    /// Shared-memory chunks (16-byte units) it counts as being read (checks).
    chunks: Vec<u32>,
}

/// One warpgroup's wgmma state. Every wgmma instruction is a warpgroup collective, so the groups
/// and in-flight operations are common to its 128 threads; only values are per thread.
#[derive(Default)]
struct Group {
    /// A `wgmma.fence` has run.
    fenced: bool,
    /// Issued since the last commit.
    open: Vec<InFlight>,
    /// Committed groups, oldest first.
    committed: VecDeque<Vec<InFlight>>,
    /// Number of in-flight operations (open and committed).
    in_flight: usize,
    /// Per register slot, LOCK_D / LOCK_A while an in-flight operation uses it (checks).
    locked: Vec<u8>,
    /// Each thread's registers as of the last fence, updated by retiring operations (checks):
    /// thread t at `t * nslots`.
    snap: Vec<u64>,
}

/// The wgmma state of a CTA (`Cta::wgmma`).
#[derive(Default)]
pub(crate) struct WgState {
    groups: Vec<Group>,
    /// In-flight wgmma reads per 16-byte shared-memory chunk (checks).
    reading: Vec<u16>,
    /// Set while a thread runs one instruction under [`Cta::run_thread_watched`].
    stepping: bool,
}

impl<'a> Cta<'a> {
    fn wg_group(&mut self, g: usize) -> &mut Group {
        if self.wgmma.groups.len() <= g {
            self.wgmma.groups.resize_with(g + 1, Group::default);
        }
        &mut self.wgmma.groups[g]
    }

    /// Whether thread `t` must run instruction by instruction: checks are on and a wgmma of its
    /// warpgroup is in flight.
    pub(crate) fn wgmma_watching(&self, t: usize) -> bool {
        self.ctx.checks && !self.wgmma.stepping && self.wgmma.groups.get(t / 128).is_some_and(|g| g.in_flight > 0)
    }

    /// Runs thread `t` one instruction at a time while a wgmma of its warpgroup is in flight,
    /// reporting any instruction that reads or writes the in-flight registers.
    pub(crate) fn run_thread_watched(&mut self, t: usize) -> Result<(), SimError> {
        let mut slots = Vec::new();
        loop {
            if self.threads[t].state != State::Ready {
                return Ok(());
            }
            if !self.wgmma_watching(t) {
                return self.run_thread(t);
            }
            let pc = self.threads[t].pc as usize;
            let inst = self.ctx.kernel.code[pc];
            let guard_on = inst.guard == NO_GUARD || (self.reg(t, inst.guard & !GUARD_NEG) != 0) == (inst.guard & GUARD_NEG == 0);
            if guard_on && !matches!(inst.op, Op::Coll(Coll::Wgmma(_))) {
                crate::regalloc::operand_slots(&inst, &self.ctx.kernel.pool, &mut slots);
                let g = &self.wgmma.groups[t / 128];
                if let Some(&(slot, write)) = slots.iter().find(|&&(s, _)| g.locked.get(s as usize).is_some_and(|&l| l != 0)) {
                    let what = self.describe_locked(t / 128, slot);
                    let verb = if write { "writes" } else { "reads" };
                    return Err(SimError::Fault(self.report(
                        t,
                        inst.line,
                        None,
                        format!(
                            "{verb} {what} while it is in flight: a wgmma's accumulator and A registers may not be accessed \
                             until a wgmma.wait_group retires it"
                        ),
                    )));
                }
            }
            self.step_one(t)?;
        }
    }

    /// Runs exactly one instruction of thread `t` (or lets it block or exit there). The
    /// interpreter stops a thread only at a blocking instruction or at its step budget, so the
    /// thread's step count is moved just below the budget for the call and restored after (a
    /// `%clock` read in that instruction sees the moved count).
    fn step_one(&mut self, t: usize) -> Result<(), SimError> {
        let budget = self.ctx.budget;
        let saved = self.threads[t].steps;
        if saved >= budget {
            // The budget itself is exhausted: let the interpreter report it.
            self.wgmma.stepping = true;
            let r = self.run_thread(t);
            self.wgmma.stepping = false;
            return r;
        }
        let executed = self.executed;
        self.threads[t].steps = budget - 1;
        self.wgmma.stepping = true;
        let r = self.run_thread(t);
        self.wgmma.stepping = false;
        match r {
            // One instruction ran; the next one hit the moved budget.
            Err(SimError::StepBudget(_)) => {
                self.threads[t].steps = saved + 1;
                self.executed = executed + 1;
                Ok(())
            }
            Ok(()) => {
                // Blocked (nothing counted) or exited (one instruction).
                let ran = self.threads[t].steps - (budget - 1);
                self.threads[t].steps = saved + ran;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// "register d3 of the wgmma.mma_async at PTX line 12" for a locked slot.
    fn describe_locked(&self, g: usize, slot: u32) -> String {
        let code = &self.ctx.kernel.code;
        let pool = &self.ctx.kernel.pool;
        let grp = &self.wgmma.groups[g];
        for op in grp.committed.iter().flatten().chain(grp.open.iter()) {
            let inst = &code[op.pc as usize];
            let Op::Coll(Coll::Wgmma(WgOp::Mma(s))) = inst.op else { continue };
            let at = inst.aux as usize;
            let nd = s.nd();
            if let Some(i) = pool[at..at + nd].iter().position(|&x| x == slot) {
                return format!("accumulator register d{i} (operand position) of the wgmma.mma_async at PTX line {}", inst.line);
            }
            if s.a_regs() {
                if let Some(j) = pool[at + 2 * nd..at + 2 * nd + 4].iter().position(|&x| x == slot) {
                    return format!("A register a{j} of the wgmma.mma_async at PTX line {}", inst.line);
                }
            }
        }
        "a register of an in-flight wgmma.mma_async".into()
    }

    /// Resolves the wgmma collective thread `t` (of warp `w`) waits at: runs it once all 128
    /// threads of the warpgroup wait there. Whether it ran.
    pub(crate) fn wgmma_resolve(&mut self, w: usize, t: usize) -> Result<bool, SimError> {
        let g = w / 4;
        let base = g * 128;
        let n = self.ctx.nthreads;
        let pc = self.threads[t].pc;
        let inst = self.ctx.kernel.code[pc as usize];
        let Op::Coll(Coll::Wgmma(op)) = inst.op else { return Ok(false) };
        if base + 128 > n {
            return Err(SimError::Fault(self.report(
                t,
                inst.line,
                None,
                format!(
                    "`{}` needs all 128 threads of warpgroup {g}, but the block has {n} threads (a warpgroup is 4 whole warps)",
                    op_name(op)
                ),
            )));
        }
        // This warp first (the common reason to wait), then the others.
        let arrived = |u: usize| self.threads[u].state == State::Collective && self.threads[u].pc == pc;
        if !(w * 32..w * 32 + 32).all(arrived) || !(base..base + 128).all(arrived) {
            return Ok(false);
        }
        match op {
            WgOp::Fence => self.wg_fence(g),
            WgOp::Commit => {
                let grp = self.wg_group(g);
                let open = std::mem::take(&mut grp.open);
                grp.committed.push_back(open);
            }
            WgOp::Wait { .. } => self.wg_wait(g, inst.imm as usize),
            WgOp::Mma(s) => self.wg_issue(g, pc, &inst, s)?,
        }
        for u in base..base + 128 {
            let th = &mut self.threads[u];
            th.state = State::Ready;
            th.pc += 1;
            th.steps += 1;
        }
        self.executed += 128;
        for e in &mut self.warp_epochs[4 * g..4 * g + 4] {
            *e += 1;
        }
        Ok(true)
    }

    fn wg_fence(&mut self, g: usize) {
        let checks = self.ctx.checks;
        let ns = self.nslots;
        let base = g * 128;
        self.wg_group(g).fenced = true;
        if checks {
            let grp = &mut self.wgmma.groups[g];
            grp.snap.clear();
            grp.snap.extend_from_slice(&self.regs[base * ns..(base + 128) * ns]);
        }
    }

    fn wg_wait(&mut self, g: usize, keep: usize) {
        let base = g * 128;
        let ns = self.nslots;
        let checks = self.ctx.checks;
        let mut retired = Vec::new();
        {
            let grp = self.wg_group(g);
            while grp.committed.len() > keep {
                if let Some(ops) = grp.committed.pop_front() {
                    grp.in_flight -= ops.len();
                    retired.extend(ops);
                }
            }
        }
        if retired.is_empty() {
            return;
        }
        let kernel = self.ctx.kernel;
        let (code, pool) = (&kernel.code, &kernel.pool);
        for op in &retired {
            let inst = &code[op.pc as usize];
            let Op::Coll(Coll::Wgmma(WgOp::Mma(s))) = inst.op else { continue };
            let nd = s.nd();
            let dslots = &pool[inst.aux as usize..inst.aux as usize + nd];
            for t in 0..128 {
                let row = (base + t) * ns;
                for (i, &slot) in dslots.iter().enumerate() {
                    let v = op.values[t * nd + i] as u64;
                    self.regs[row + slot as usize] = v;
                    if checks {
                        self.wgmma.groups[g].snap[t * ns + slot as usize] = v;
                    }
                }
            }
            if checks {
                self.release_chunks(&op.chunks);
            }
        }
        if checks {
            self.relock(g);
        }
    }

    /// Recomputes the locked register slots of warpgroup `g` (checks).
    fn relock(&mut self, g: usize) {
        let ns = self.nslots;
        let kernel = self.ctx.kernel;
        let (code, pool) = (&kernel.code, &kernel.pool);
        let grp = &mut self.wgmma.groups[g];
        grp.locked.clear();
        grp.locked.resize(ns, 0);
        for op in grp.committed.iter().flatten().chain(grp.open.iter()) {
            let inst = &code[op.pc as usize];
            let Op::Coll(Coll::Wgmma(WgOp::Mma(s))) = inst.op else { continue };
            let at = inst.aux as usize;
            let nd = s.nd();
            for &slot in &pool[at..at + nd] {
                grp.locked[slot as usize] = LOCK_D;
            }
            if s.a_regs() {
                for &slot in &pool[at + 2 * nd..at + 2 * nd + 4] {
                    if grp.locked[slot as usize] == 0 {
                        grp.locked[slot as usize] = LOCK_A;
                    }
                }
            }
        }
    }

    fn release_chunks(&mut self, chunks: &[u32]) {
        for &c in chunks {
            let r = &mut self.wgmma.reading[c as usize];
            *r -= 1;
            if *r == 0 {
                if let Some(sh) = self.shared.shadow.as_mut() {
                    sh.set_reading(c as usize * 16, 16, false);
                }
            }
        }
    }

    /// A fault report for thread `t` at `inst`.
    fn wg_fault(&self, t: usize, inst: &Inst, address: Option<u64>, kind: String) -> SimError {
        SimError::Fault(self.report(t, inst.line, address, kind))
    }

    /// Issues an `mma_async` for warpgroup `g`.
    fn wg_issue(&mut self, g: usize, pc: u32, inst: &Inst, s: WgShape) -> Result<(), SimError> {
        let base = g * 128;
        let ns = self.nslots;
        let n = s.n as usize;
        let nd = s.nd();
        let kernel = self.ctx.kernel;
        let at = inst.aux as usize;
        let dslots = &kernel.pool[at..at + nd];
        let aslots: &[u32] = if s.a_regs() { &kernel.pool[at + 2 * nd..at + 2 * nd + 4] } else { &[] };
        // Descriptors: one value for the whole warpgroup.
        let uniform = |slot: u32, what: &str| -> Result<u64, SimError> {
            let v = self.reg(base, slot);
            match (base..base + 128).find(|&u| self.reg(u, slot) != v) {
                Some(u) => Err(self.wg_fault(
                    u,
                    inst,
                    None,
                    format!(
                        "the {what} matrix descriptor differs across the warpgroup ({:#x} here, {v:#x} in its first thread)",
                        self.reg(u, slot)
                    ),
                )),
                None => Ok(v),
            }
        };
        let desc_b = Desc::decode(uniform(inst.b, "B")?);
        let desc_a = if s.a_regs() { None } else { Some(Desc::decode(uniform(inst.a, "A")?)) };
        for d in desc_a.iter().chain([&desc_b]) {
            if d.base_offset != 0 {
                return Err(self.wg_fault(
                    base,
                    inst,
                    None,
                    format!("wgmma matrix descriptor with base offset {} (not supported by the simulator)", d.base_offset),
                ));
            }
        }
        if self.ctx.checks {
            self.wg_check_issue(g, inst, s, dslots, aslots)?;
        }
        // Operands.
        let decode = |h: u16| -> f64 {
            if s.has(BF16) {
                bf16_to_f32(h) as f64
            } else {
                f16_to_f32(h) as f64
            }
        };
        let mut chunks = Vec::new();
        let mut a = vec![[0f64; 16]; 64];
        match desc_a {
            Some(d) => {
                let vals = self.read_operand(base, inst, &d, s.has(TRANS_A), 64, &mut chunks)?;
                for (mn, row) in a.iter_mut().enumerate() {
                    for (k, x) in row.iter_mut().enumerate() {
                        *x = decode(vals[mn * 16 + k]);
                    }
                }
            }
            None => {
                for t in 0..128 {
                    for (j, &slot) in aslots.iter().enumerate() {
                        let v = self.reg(base + t, slot) as u32;
                        for h in 0..2 {
                            let (m, k) = frag_pos(t, 2 * j + h);
                            a[m][k] = decode((v >> (16 * h)) as u16);
                        }
                    }
                }
            }
        }
        let vals = self.read_operand(base, inst, &desc_b, s.has(TRANS_B), n, &mut chunks)?;
        let b: Vec<[f64; 16]> = (0..n)
            .map(|nn| {
                let mut col = [0f64; 16];
                for (k, x) in col.iter_mut().enumerate() {
                    *x = decode(vals[nn * 16 + k]);
                }
                col
            })
            .collect();
        let sign = if s.has(NEG_A) != s.has(NEG_B) { -1.0 } else { 1.0 };
        // Input accumulators: an in-flight result for a chained register, else the register.
        self.wg_group(g);
        let grp = &self.wgmma.groups[g];
        let mut pending: HashMap<u32, (&InFlight, usize)> = HashMap::new();
        for op in grp.committed.iter().flatten().chain(grp.open.iter()) {
            let oi = &kernel.code[op.pc as usize];
            if let Op::Coll(Coll::Wgmma(WgOp::Mma(os))) = oi.op {
                let oat = oi.aux as usize;
                for (i, &slot) in kernel.pool[oat..oat + os.nd()].iter().enumerate() {
                    pending.insert(slot, (op, i));
                }
            }
        }
        let mut values = vec![0u32; 128 * nd];
        for t in 0..128 {
            let row = &self.regs[(base + t) * ns..(base + t + 1) * ns];
            let scale_d = if s.has(SCALE_D_IMM) { s.has(SCALE_D_ONE) } else { row[inst.c as usize] != 0 };
            for (i, &slot) in dslots.iter().enumerate() {
                let (m, nn) = frag_pos(t, i);
                let mut acc = if scale_d {
                    let bits = match pending.get(&slot) {
                        Some((op, j)) => op.values[t * (op.values.len() / 128) + j],
                        None => row[slot as usize] as u32,
                    };
                    f32::from_bits(bits) as f64
                } else {
                    -0.0
                };
                let (arow, bcol) = (&a[m], &b[nn]);
                for k in 0..16 {
                    acc += sign * arow[k] * bcol[k];
                }
                values[t * nd + i] = (acc as f32).to_bits();
            }
        }
        drop(pending);
        if self.ctx.checks {
            let chunks_total = self.shared.data.len().div_ceil(16);
            if self.wgmma.reading.len() < chunks_total {
                self.wgmma.reading.resize(chunks_total, 0);
            }
            for &c in &chunks {
                let r = &mut self.wgmma.reading[c as usize];
                if *r == 0 {
                    if let Some(sh) = self.shared.shadow.as_mut() {
                        sh.set_reading(c as usize * 16, 16, true);
                    }
                }
                *r += 1;
            }
        } else {
            chunks.clear();
        }
        let grp = self.wg_group(g);
        grp.open.push(InFlight { pc, values, chunks });
        grp.in_flight += 1;
        if self.ctx.checks {
            self.relock(g);
        }
        Ok(())
    }

    /// Reads an operand (`mn` x 16, element (mn, k) at `mn * 16 + k`) through its descriptor,
    /// chunk by chunk, as async-proxy reads by the warpgroup's first thread
    /// ([`Cta::async_proxy_read`]); records the chunks.
    fn read_operand(&mut self, base: usize, inst: &Inst, d: &Desc, mn_major: bool, mn: usize, chunks: &mut Vec<u32>) -> Result<Vec<u16>, SimError> {
        let mut out = vec![0u16; mn * 16];
        // (chunk address, first element index, index step between its 8 elements)
        let mut plan = Vec::with_capacity(mn * 2);
        if mn_major {
            for m0 in (0..mn).step_by(8) {
                for k in 0..16 {
                    plan.push((d.chunk(true, m0 as u64, k as u64), m0 * 16 + k, 16));
                }
            }
        } else {
            for m in 0..mn {
                for k0 in (0..16).step_by(8) {
                    plan.push((d.chunk(false, m as u64, k0 as u64), m * 16 + k0, 1));
                }
            }
        }
        for (addr, first, step) in plan {
            let bytes = self.async_proxy_read(base, inst.line, addr, 16, "wgmma.mma_async")?;
            for (e, p) in bytes.chunks_exact(2).enumerate() {
                out[first + e * step] = u16::from_le_bytes([p[0], p[1]]);
            }
            chunks.push((addr / 16) as u32);
        }
        Ok(out)
    }

    /// The issue-time checks of an `mma_async`: fence, register hazards with in-flight wgmmas.
    fn wg_check_issue(&mut self, g: usize, inst: &Inst, s: WgShape, dslots: &[u32], aslots: &[u32]) -> Result<(), SimError> {
        let base = g * 128;
        let ns = self.nslots;
        let code = &self.ctx.kernel.code;
        let pool = &self.ctx.kernel.pool;
        let grp = self.wg_group(g);
        if !grp.fenced {
            return Err(self.wg_fault(
                base,
                inst,
                None,
                "wgmma.mma_async without a wgmma.fence before it (required before the first wgmma.mma_async of a warpgroup)".into(),
            ));
        }
        let grp = &self.wgmma.groups[g];
        let mut in_flight_d = Vec::new();
        for op in grp.committed.iter().flatten().chain(grp.open.iter()) {
            let oi = &code[op.pc as usize];
            let Op::Coll(Coll::Wgmma(WgOp::Mma(os))) = oi.op else { continue };
            let oat = oi.aux as usize;
            let od = &pool[oat..oat + os.nd()];
            let oa: &[u32] = if os.a_regs() { &pool[oat + 2 * os.nd()..oat + 2 * os.nd() + 4] } else { &[] };
            let line = oi.line;
            let hazard = if dslots.iter().any(|x| oa.contains(x)) {
                Some("its accumulators include A registers")
            } else if aslots.iter().any(|x| od.contains(x)) {
                Some("its A registers include accumulators")
            } else if dslots.iter().any(|x| od.contains(x)) && (os.n != s.n || od != dslots) {
                Some("it shares accumulators, with a different shape or register list,")
            } else {
                None
            };
            if let Some(why) = hazard {
                return Err(self.wg_fault(
                    base,
                    inst,
                    None,
                    format!(
                        "wgmma.mma_async conflicts with the in-flight wgmma.mma_async at PTX line {line}: {why} of that \
                         operation (only same-shape accumulator chaining is allowed before wgmma.wait_group)"
                    ),
                ));
            }
            in_flight_d.extend_from_slice(od);
        }
        // Registers written since the last fence (or since the wgmma that produced them retired).
        for t in 0..128 {
            let row = &self.regs[(base + t) * ns..(base + t + 1) * ns];
            let snap = &grp.snap[t * ns..(t + 1) * ns];
            let changed = dslots
                .iter()
                .enumerate()
                .filter(|(_, x)| !in_flight_d.contains(x))
                .map(|(i, &x)| (format!("accumulator d{i}"), x))
                .chain(aslots.iter().enumerate().map(|(j, &x)| (format!("A register a{j}"), x)))
                .find(|(_, x)| row[*x as usize] != snap[*x as usize]);
            if let Some((what, _)) = changed {
                return Err(self.wg_fault(
                    base + t,
                    inst,
                    None,
                    format!(
                        "wgmma.mma_async uses its {what} (operand position), which was written after the last wgmma.fence: \
                         register writes before a wgmma.mma_async that uses the registers need a wgmma.fence in between"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A deadlock report for a wgmma collective that cannot complete, if a thread waits at one.
    pub(crate) fn wgmma_deadlock(&self) -> Option<SimError> {
        let n = self.ctx.nthreads;
        let code = &self.ctx.kernel.code;
        let t = (0..n).find(|&t| {
            self.threads[t].state == State::Collective && matches!(code[self.threads[t].pc as usize].op, Op::Coll(Coll::Wgmma(_)))
        })?;
        let pc = self.threads[t].pc;
        let inst = &code[pc as usize];
        let base = t / 128 * 128;
        let u = (base..base + 128).find(|&u| u >= n || self.threads[u].state != State::Collective || self.threads[u].pc != pc)?;
        let why = if u >= n {
            format!("thread {u} of its warpgroup does not exist (the block has {n} threads)")
        } else {
            let th = &self.threads[u];
            let [x, y, z] = crate::space::tid3(u, self.ctx.block);
            let doing = match th.state {
                State::Exited => "has exited".to_string(),
                State::Ready => "is runnable".to_string(),
                State::Barrier => format!("waits at a barrier (PTX line {})", code[th.pc as usize].line),
                State::Collective => {
                    let other = &code[th.pc as usize];
                    format!("waits at `{}` (PTX line {})", cta_op_name(&other.op), other.line)
                }
                _ => format!("is blocked at PTX line {}", code[th.pc as usize].line),
            };
            format!("thread ({x}, {y}, {z}) of its warpgroup {doing}")
        };
        Some(SimError::Deadlock(self.report(
            t,
            inst.line,
            None,
            format!(
                "warpgroup collective `{}` cannot complete: {why}; all 128 threads of a warpgroup must execute the same \
                 wgmma instruction (.sync.aligned)",
                op_name(match inst.op {
                    Op::Coll(Coll::Wgmma(op)) => op,
                    _ => WgOp::Fence,
                })
            ),
        )))
    }
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
