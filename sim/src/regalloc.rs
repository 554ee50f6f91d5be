//! Register-slot allocation: packs NVRTC's thousands of virtual registers into a few hundred slots.
//!
//! NVRTC numbers registers in SSA-like fashion (`%r<2882>`, `%f<1833>`, ...), but only a few hundred
//! are live at once. The interpreter switches lanes every few instructions (at each collective), so
//! a 46 KB register file per thread means cache misses on every operand; packing it to a few KB
//! keeps a warp's registers in L1/L2. The allocation is per kernel, shared by all threads.
//!
//! Liveness is computed by the usual backward dataflow over basic blocks; a guarded (predicated)
//! definition does not kill, so the previous value stays live through it. Each register gets the
//! interval hull of the positions where it is live or mentioned, and a linear scan gives registers
//! with disjoint hulls the same slot (strictly disjoint: no sharing even at a boundary instruction).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::ir::{special, Coll, Inst, Op, WgOp, GUARD_NEG, NONE, NO_GUARD};

/// Where in an instruction a slot operand lives.
#[derive(Debug, Clone, Copy)]
enum Field {
    D,
    A,
    B,
    C,
    Imm,
    Aux,
    Guard,
    Pool(usize),
}

/// Appends the slot operands of `inst`: (field, is_definition).
fn fields(inst: &Inst, out: &mut Vec<(Field, bool)>) {
    use Field::*;
    out.clear();
    if inst.guard != NO_GUARD {
        out.push((Guard, false));
    }
    let opt = |out: &mut Vec<(Field, bool)>, f: Field, slot: u32, def: bool| {
        if slot != NONE {
            out.push((f, def));
        }
    };
    let pool = |out: &mut Vec<(Field, bool)>, from: usize, n: usize, def: bool| {
        for i in 0..n {
            out.push((Pool(from + i), def));
        }
    };
    let aux = inst.aux as usize;
    match inst.op {
        Op::Nop
        | Op::Bra
        | Op::Exit
        | Op::Trap
        | Op::CpAsyncCommit
        | Op::CpAsyncWait
        | Op::CpAsyncWaitAll
        | Op::FenceProxyAsync
        | Op::BulkCommit
        | Op::BulkWait { .. } => {}
        Op::MbarInit { .. } | Op::MbarTx { .. } => out.extend([(A, false), (B, false)]),
        Op::MbarInval { .. } => out.push((A, false)),
        Op::MbarArrive { .. } => {
            out.push((A, false));
            opt(out, B, inst.b, false);
            out.push((D, true));
        }
        Op::MbarWait { .. } => out.extend([(A, false), (B, false), (D, true)]),
        // d is an address (a use); c indexes the kernel's offsets.
        Op::BulkLoad => {
            out.extend([(D, false), (A, false), (B, false)]);
            pool(out, aux, 1, false);
        }
        Op::BulkStore => out.extend([(D, false), (A, false), (B, false)]),
        Op::TensorLoad { dim } => {
            out.extend([(D, false), (A, false)]);
            pool(out, aux, dim as usize + 1, false);
        }
        Op::TensorStore { dim } => {
            out.extend([(A, false), (B, false)]);
            pool(out, aux, dim as usize, false);
        }
        Op::Mov
        | Op::MovMask { .. }
        | Op::Cvt { .. }
        | Op::Cvta { .. }
        | Op::IsSpace { .. }
        | Op::Abs { .. }
        | Op::Neg { .. }
        | Op::Not { .. }
        | Op::Cnot
        | Op::PNot
        | Op::Brev { .. }
        | Op::Popc { .. }
        | Op::Clz { .. }
        | Op::Bfind { .. }
        | Op::Testp { .. }
        | Op::NegF32 { .. }
        | Op::AbsF32 { .. }
        | Op::FunF32 { .. }
        | Op::NegF64
        | Op::AbsF64
        | Op::FunF64 { .. } => {
            out.push((A, false));
            out.push((D, true));
        }
        Op::Pack { n, .. } => {
            pool(out, aux, n as usize, false);
            out.push((D, true));
        }
        Op::Unpack { n, .. } => {
            out.push((A, false));
            pool(out, aux, n as usize, true);
        }
        Op::Clock => out.push((D, true)),
        Op::Selp
        | Op::MadLo { .. }
        | Op::MadHi { .. }
        | Op::MadWide { .. }
        | Op::FmaF32 { .. }
        | Op::FmaDirectedF32 { .. }
        | Op::FmaF64
        | Op::Shf { .. }
        | Op::Bfe { .. }
        | Op::Prmt { .. } => {
            out.extend([(A, false), (B, false), (C, false), (D, true)]);
        }
        Op::Add { .. }
        | Op::Sub { .. }
        | Op::AddCarry { .. }
        | Op::AddSatS32
        | Op::SubSatS32
        | Op::MulLo { .. }
        | Op::MulHi { .. }
        | Op::MulWide { .. }
        | Op::Div { .. }
        | Op::Rem { .. }
        | Op::Min { .. }
        | Op::Max { .. }
        | Op::And
        | Op::Or
        | Op::Xor
        | Op::Shl { .. }
        | Op::Shr { .. }
        | Op::AddF32 { .. }
        | Op::SubF32 { .. }
        | Op::MulF32 { .. }
        | Op::DivF32 { .. }
        | Op::MinF32 { .. }
        | Op::MaxF32 { .. }
        | Op::CopysignF32
        | Op::RoundF32 { .. }
        | Op::AddF64
        | Op::SubF64
        | Op::MulF64
        | Op::DivF64
        | Op::MinF64 { .. }
        | Op::MaxF64 { .. }
        | Op::CopysignF64
        | Op::RoundF64 { .. }
        | Op::CvtPack { .. } => {
            out.extend([(A, false), (B, false), (D, true)]);
        }
        Op::Half { .. } => {
            out.push((A, false));
            opt(out, B, inst.b, false);
            opt(out, C, inst.c, false);
            out.push((D, true));
        }
        Op::Bfi { .. } => {
            pool(out, aux, 4, false);
            out.push((D, true));
        }
        Op::SetP { .. } | Op::Set { .. } => {
            out.extend([(A, false), (B, false)]);
            opt(out, C, inst.c, false);
            out.push((D, true));
            opt(out, Imm, inst.imm as u32, true);
        }
        Op::Ld { n, .. } => {
            out.push((A, false));
            if n == 1 {
                out.push((D, true));
            } else {
                pool(out, aux, n as usize, true);
            }
        }
        Op::St { n, .. } => {
            out.push((A, false));
            if n == 1 {
                out.push((B, false));
            } else {
                pool(out, aux, n as usize, false);
            }
        }
        Op::Atom { ret, .. } => {
            out.extend([(A, false), (B, false)]);
            opt(out, C, inst.c, false);
            if ret {
                out.push((D, true));
            }
        }
        // c is an index into the kernel's offsets, not a slot.
        Op::CpAsync { .. } => {
            out.extend([(D, false), (A, false)]);
            opt(out, B, inst.b, false);
        }
        Op::Bar { .. } => {
            out.push((A, false));
            opt(out, B, inst.b, false);
        }
        Op::Coll(c) => match c {
            Coll::Shfl(_) => {
                out.extend([(A, false), (B, false), (C, false), (Imm, false), (D, true)]);
                opt(out, Aux, inst.aux, true);
            }
            Coll::Vote(_) | Coll::Redux(_) | Coll::MatchAny => out.extend([(A, false), (C, false), (D, true)]),
            Coll::MatchAll => {
                out.extend([(A, false), (C, false), (D, true)]);
                opt(out, B, inst.b, true);
            }
            Coll::WarpSync => out.push((C, false)),
            Coll::Elect => out.extend([(C, false), (D, true), (B, true)]),
            Coll::SetMaxNReg { .. } => {}
            Coll::StMatrix { num, .. } => {
                out.push((A, false));
                pool(out, aux, num as usize, false);
            }
            Coll::ActiveMask => out.push((D, true)),
            Coll::LdMatrix { num, .. } => {
                out.push((A, false));
                pool(out, aux, num as usize, true);
            }
            Coll::Mma(s) => {
                let nd = if s.f32_acc_d { 4 } else { 2 };
                let nin = if s.k == 16 { 6 } else { 3 } + if s.f32_acc_c { 4 } else { 2 };
                pool(out, aux, nd, true);
                pool(out, aux + nd, nin, false);
            }
            Coll::Wgmma(w) => match w {
                WgOp::Fence | WgOp::Commit => {}
                WgOp::Wait { uses } => pool(out, aux, uses as usize, false),
                WgOp::Mma(s) => {
                    pool(out, aux, s.nd(), true);
                    pool(out, aux + s.nd(), s.nd() + if s.a_regs() { 4 } else { 0 }, false);
                    opt(out, A, inst.a, false);
                    out.push((B, false));
                    opt(out, C, inst.c, false);
                }
            },
        },
    }
}

/// The register-file slots `inst` reads (`false`) and writes (`true`), its guard included.
pub(crate) fn operand_slots(inst: &Inst, pool: &[u32], out: &mut Vec<(u32, bool)>) {
    let mut fl = Vec::new();
    fields(inst, &mut fl);
    out.clear();
    out.extend(fl.iter().map(|&(f, def)| (get(inst, pool, f), def)));
}

fn get(inst: &Inst, pool: &[u32], f: Field) -> u32 {
    match f {
        Field::D => inst.d,
        Field::A => inst.a,
        Field::B => inst.b,
        Field::C => inst.c,
        Field::Imm => inst.imm as u32,
        Field::Aux => inst.aux,
        Field::Guard => inst.guard & !GUARD_NEG,
        Field::Pool(i) => pool[i],
    }
}

fn set(inst: &mut Inst, pool: &mut [u32], f: Field, v: u32) {
    match f {
        Field::D => inst.d = v,
        Field::A => inst.a = v,
        Field::B => inst.b = v,
        Field::C => inst.c = v,
        Field::Imm => inst.imm = v as i64,
        Field::Aux => inst.aux = v,
        Field::Guard => inst.guard = v | (inst.guard & GUARD_NEG),
        Field::Pool(i) => pool[i] = v,
    }
}

/// Renumbers slots: specials stay, the `nregs` declared registers (slots `COUNT..COUNT+nregs`)
/// are packed, constants (after them) move down behind the packed registers. Returns the new
/// register-file template.
pub(crate) fn allocate(code: &mut [Inst], pool: &mut [u32], nregs: usize, init: &[u64]) -> Vec<u64> {
    let base = special::COUNT as usize;
    let is_reg = |s: u32| (s as usize) >= base && (s as usize) < base + nregs;
    let words = nregs.div_ceil(64);
    let n = code.len();

    // Basic blocks: leaders are 0, branch targets and the instructions after branches and exits.
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    leader[n] = true;
    for (i, inst) in code.iter().enumerate() {
        match inst.op {
            Op::Bra => {
                leader[inst.imm as usize] = true;
                leader[i + 1] = true;
            }
            Op::Exit | Op::Trap => leader[i + 1] = true,
            _ => {}
        }
    }
    let starts: Vec<usize> = (0..n).filter(|&i| leader[i]).collect();
    let mut block_of = vec![0usize; n];
    let mut ends = Vec::with_capacity(starts.len());
    for (b, &s) in starts.iter().enumerate() {
        let e = starts.get(b + 1).copied().unwrap_or(n);
        ends.push(e);
        block_of[s..e].iter_mut().for_each(|x| *x = b);
    }
    let nb = starts.len();
    let succs: Vec<Vec<usize>> = (0..nb)
        .map(|b| {
            let last = &code[ends[b] - 1];
            let guarded = last.guard != NO_GUARD;
            let mut s = Vec::new();
            match last.op {
                Op::Bra => {
                    s.push(block_of[last.imm as usize]);
                    if guarded && ends[b] < n {
                        s.push(block_of[ends[b]]);
                    }
                }
                Op::Exit | Op::Trap if !guarded => {}
                _ => {
                    if ends[b] < n {
                        s.push(block_of[ends[b]]);
                    }
                }
            }
            s
        })
        .collect();

    // Backward liveness to a fixpoint.
    let mut live_in = vec![vec![0u64; words]; nb];
    let mut live_out = vec![vec![0u64; words]; nb];
    let mut fl = Vec::new();
    let bit = |s: u32| s as usize - base;
    let mut changed = true;
    while changed {
        changed = false;
        for b in (0..nb).rev() {
            let mut out = vec![0u64; words];
            for &s in &succs[b] {
                for (o, i) in out.iter_mut().zip(&live_in[s]) {
                    *o |= i;
                }
            }
            let mut live = out.clone();
            for inst in code[starts[b]..ends[b]].iter().rev() {
                fields(inst, &mut fl);
                let guarded = inst.guard != NO_GUARD;
                for &(f, def) in &fl {
                    let s = get(inst, pool, f);
                    if def && !guarded && is_reg(s) {
                        live[bit(s) / 64] &= !(1 << (bit(s) % 64));
                    }
                }
                for &(f, def) in &fl {
                    let s = get(inst, pool, f);
                    if !def && is_reg(s) {
                        live[bit(s) / 64] |= 1 << (bit(s) % 64);
                    }
                }
            }
            if live != live_in[b] {
                live_in[b] = live;
                changed = true;
            }
            live_out[b] = out;
        }
    }

    // Interval hulls.
    let mut lo = vec![usize::MAX; nregs];
    let mut hi = vec![0usize; nregs];
    let mut mark = |r: usize, p: usize| {
        lo[r] = lo[r].min(p);
        hi[r] = hi[r].max(p);
    };
    for b in 0..nb {
        for w in 0..words {
            let (mut i, mut o) = (live_in[b][w], live_out[b][w]);
            while i != 0 {
                mark(w * 64 + i.trailing_zeros() as usize, starts[b]);
                i &= i - 1;
            }
            while o != 0 {
                mark(w * 64 + o.trailing_zeros() as usize, ends[b] - 1);
                o &= o - 1;
            }
        }
    }
    for (p, inst) in code.iter().enumerate() {
        fields(inst, &mut fl);
        for &(f, _) in &fl {
            let s = get(inst, pool, f);
            if is_reg(s) {
                mark(bit(s), p);
            }
        }
    }

    // Linear scan.
    let mut order: Vec<usize> = (0..nregs).filter(|&r| lo[r] != usize::MAX).collect();
    order.sort_by_key(|&r| (lo[r], r));
    let mut map = vec![u32::MAX; nregs];
    let mut active: BinaryHeap<Reverse<(usize, u32)>> = BinaryHeap::new();
    let mut free: BinaryHeap<Reverse<u32>> = BinaryHeap::new();
    let mut next = 0u32;
    for r in order {
        while let Some(&Reverse((end, slot))) = active.peek() {
            if end < lo[r] {
                active.pop();
                free.push(Reverse(slot));
            } else {
                break;
            }
        }
        let slot = match free.pop() {
            Some(Reverse(s)) => s,
            None => {
                next += 1;
                next - 1
            }
        };
        map[r] = slot;
        active.push(Reverse((hi[r], slot)));
    }
    let packed = next as usize;

    // Rewrite every slot operand.
    let remap = |s: u32| -> u32 {
        let su = s as usize;
        if s == NONE || su < base {
            s
        } else if su < base + nregs {
            (base + map[su - base] as usize) as u32
        } else {
            (su - nregs + packed) as u32
        }
    };
    for inst in code.iter_mut() {
        fields(inst, &mut fl);
        let list = fl.clone();
        for (f, _) in list {
            let s = get(inst, pool, f);
            set(inst, pool, f, remap(s));
        }
    }
    let mut regs = vec![0u64; base + packed];
    regs[..base].copy_from_slice(&init[..base]);
    regs.extend_from_slice(&init[base + nregs..]);
    regs
}
