//! The interpreter: runs one thread from its program counter until it blocks or exits.
//!
//! Registers are a flat `&mut [u64]` (see [`crate::ir`]); each instruction reads its operand slots,
//! computes, and writes its destination zero-extended to 64 bits. Nothing here allocates or hashes.

use crate::bulk;
use crate::checks::Who;
use crate::cta::{AsyncCopy, Cta, State};
use crate::error::SimError;
use crate::ir::*;
use crate::mbarrier::{CtaAsync, SyncFault, ThreadAsync};
use crate::numerics::*;
use crate::space::{conflict_fault, region, Fault, Mem, Region, Traffic};

#[inline(always)]
fn mask(w: u8) -> u64 {
    u64::MAX >> (64 - w as u32)
}

/// Sign-extends the low `w` bits.
#[inline(always)]
fn sext(v: u64, w: u8) -> i64 {
    let s = 64 - w as u32;
    ((v << s) as i64) >> s
}

#[inline(always)]
fn f32b(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

#[inline(always)]
fn b32f(x: f32) -> u64 {
    x.to_bits() as u64
}

#[inline(always)]
fn f64b(v: u64) -> f64 {
    f64::from_bits(v)
}

/// Why a thread stopped running.
enum Stop {
    Blocked,
    Exited,
}

/// What went wrong, before it is attributed to a thread and line.
enum Trouble {
    Fault(Fault),
    Budget,
    /// A fault of another thread's instruction (a bulk copy landing while this thread waits).
    At(SyncFault),
}

impl From<SyncFault> for Trouble {
    fn from(f: SyncFault) -> Trouble {
        Trouble::At(f)
    }
}

/// The asynchronous state an instruction may touch beyond the thread's registers and memory.
pub(crate) struct AsyncIo<'x> {
    pub th: &'x mut ThreadAsync,
    pub cta: &'x mut CtaAsync,
    /// The CTA epoch (completed barriers and mbarrier phases; see `checks`).
    pub epoch: &'x mut u32,
}

impl From<Fault> for Trouble {
    fn from(f: Fault) -> Trouble {
        Trouble::Fault(f)
    }
}

impl<'a> Cta<'a> {
    /// Runs thread `t` until it blocks or exits.
    pub(crate) fn run_thread(&mut self, t: usize) -> Result<(), SimError> {
        // With checks, a thread with a wgmma in flight runs instruction by instruction (crate::wgmma).
        if self.wgmma_watching(t) {
            return self.run_thread_watched(t);
        }
        let ctx = self.ctx;
        let n = self.nslots;
        let w = t / 32;
        let who = Who { tid: t as u16, warp: w as u16, epoch: self.epoch, wepoch: self.warp_epochs[w] };
        let Cta { regs, threads, shared, arrivals, arrive_counts, sync, epoch, .. } = self;
        let regs = &mut regs[t * n..(t + 1) * n];
        let th = &mut threads[t];
        let start_steps = th.steps;
        let mut pc = th.pc as usize;
        let mut mem = Mem {
            shared,
            local: &mut th.local,
            params: ctx.params,
            global: &ctx.global,
            who,
            block: ctx.block,
            hint: 0,
            traffic: Traffic::default(),
        };
        let mut io = AsyncIo { th: &mut th.asy, cta: sync, epoch };
        let result = interpret(
            ctx.kernel,
            regs,
            &mut pc,
            &mut th.steps,
            ctx.budget,
            &mut mem,
            &mut th.copies,
            &mut th.committed,
            arrive_counts,
            ctx.memory,
            &mut io,
        );
        let traffic = mem.traffic;
        th.pc = pc as u32;
        let executed = th.steps - start_steps;
        let line = ctx.kernel.code.get(pc).map_or(0, |i| i.line);
        let outcome = match result {
            Ok(Stop::Blocked) => {
                match ctx.kernel.code[pc].op {
                    Op::Bar { .. } => {
                        th.state = State::Barrier;
                        *arrivals += 1;
                        th.arrival = *arrivals;
                    }
                    Op::MbarWait { .. } => th.state = State::MbarWait,
                    _ => th.state = State::Collective,
                }
                Ok(())
            }
            Ok(Stop::Exited) => {
                th.state = State::Exited;
                sync.events += 1;
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.executed += executed;
        self.traffic += traffic;
        match outcome {
            Ok(()) => Ok(()),
            Err(Trouble::Fault(f)) => Err(SimError::Fault(self.report(t, line, f.address, f.kind))),
            Err(Trouble::At(SyncFault { tid, line, fault })) => {
                Err(SimError::Fault(self.report(tid as usize, line, fault.address, fault.kind)))
            }
            Err(Trouble::Budget) => Err(SimError::StepBudget(self.report(
                t,
                line,
                None,
                format!("thread ran {} instructions without finishing (SimOptions::step_budget)", ctx.budget),
            ))),
        }
    }
}

/// Completes in-flight copies of groups below `below_group` (all when `None`), oldest first.
fn complete_copies(copies: &mut Vec<AsyncCopy>, below_group: Option<u32>, mem: &mut Mem) -> Result<(), Fault> {
    let count = match below_group {
        None => copies.len(),
        Some(g) => copies.iter().take_while(|c| c.group < g).count(),
    };
    for c in copies.drain(..count) {
        let mut buf = [0u8; 16];
        let size = c.size as usize;
        if c.src_size > 0 {
            // The source range was checked at issue; the allocation is alive for the whole launch.
            match mem.global.find(c.src, c.src_size as usize, &mut mem.hint) {
                Some((alloc, off)) => alloc.read(off, &mut buf[..c.src_size as usize]),
                None => return Err(Fault::new(Some(c.src), "cp.async source vanished")),
            }
        }
        let dst = c.dst as usize;
        mem.shared.data[dst..dst + size].copy_from_slice(&buf[..size]);
        if let Some(sh) = mem.shared.shadow.as_mut() {
            sh.finish_async(dst, size, &mem.who);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn interpret(
    k: &Kernel,
    regs: &mut [u64],
    pc_out: &mut usize,
    steps_io: &mut u64,
    budget: u64,
    mem: &mut Mem,
    copies: &mut Vec<AsyncCopy>,
    committed: &mut u32,
    arrive_counts: &mut [u32; 16],
    memory: &crate::memory::GlobalMemory,
    io: &mut AsyncIo,
) -> Result<Stop, Trouble> {
    let code = &k.code[..];
    let pool = &k.pool[..];
    let mut pc = *pc_out;
    let mut steps = *steps_io;
    macro_rules! r {
        ($s:expr) => {
            regs[$s as usize]
        };
    }
    let result = loop {
        let inst = &code[pc];
        steps += 1;
        if steps > budget {
            break Err(Trouble::Budget);
        }
        if inst.guard != NO_GUARD {
            let g = regs[(inst.guard & !GUARD_NEG) as usize] != 0;
            if g == (inst.guard & GUARD_NEG != 0) {
                pc += 1;
                continue;
            }
        }
        let (d, a, b, c) = (inst.d, inst.a, inst.b, inst.c);
        match inst.op {
            Op::Nop => {}
            Op::Mov => r!(d) = r!(a),
            Op::MovMask { w } => r!(d) = r!(a) & mask(w),
            Op::Pack { n, bits } => {
                let m = mask(bits);
                let mut v = 0u64;
                for i in 0..n as usize {
                    v |= (r!(pool[inst.aux as usize + i]) & m) << (bits as usize * i);
                }
                r!(d) = v;
            }
            Op::Unpack { n, bits } => {
                let m = mask(bits);
                let v = r!(a);
                for i in 0..n as usize {
                    r!(pool[inst.aux as usize + i]) = (v >> (bits as usize * i)) & m;
                }
            }
            Op::Selp => r!(d) = if r!(c) != 0 { r!(a) } else { r!(b) },
            Op::Clock => r!(d) = steps & mask(inst.imm as u8),
            // ---- integer
            Op::Add { w } => r!(d) = r!(a).wrapping_add(r!(b)) & mask(w),
            Op::Sub { w } => r!(d) = r!(a).wrapping_sub(r!(b)) & mask(w),
            Op::AddCarry { w, flags } => {
                let cin = if flags & 1 != 0 { r!(special::CARRY) as i128 } else { 0 };
                let (x, y) = ((r!(a) & mask(w)) as i128, (r!(b) & mask(w)) as i128);
                let wide = if flags & 4 != 0 { x - y - cin } else { x + y + cin };
                r!(d) = (wide as u64) & mask(w);
                if flags & 2 != 0 {
                    let carry = if flags & 4 != 0 { wide < 0 } else { wide >> w != 0 };
                    r!(special::CARRY) = carry as u64;
                }
            }
            Op::AddSatS32 => r!(d) = (r!(a) as i32).saturating_add(r!(b) as i32) as u32 as u64,
            Op::SubSatS32 => r!(d) = (r!(a) as i32).saturating_sub(r!(b) as i32) as u32 as u64,
            Op::MulLo { w } => r!(d) = r!(a).wrapping_mul(r!(b)) & mask(w),
            Op::MulHi { w, signed } => r!(d) = mul_hi(r!(a), r!(b), w, signed),
            Op::MulWide { w, signed } => r!(d) = mul_wide(r!(a), r!(b), w, signed),
            Op::MadLo { w } => r!(d) = r!(a).wrapping_mul(r!(b)).wrapping_add(r!(c)) & mask(w),
            Op::MadHi { w, signed } => r!(d) = mul_hi(r!(a), r!(b), w, signed).wrapping_add(r!(c)) & mask(w),
            Op::MadWide { w, signed } => r!(d) = mul_wide(r!(a), r!(b), w, signed).wrapping_add(r!(c)) & mask(2 * w),
            Op::Div { w, signed } => r!(d) = div_rem(r!(a), r!(b), w, signed, false),
            Op::Rem { w, signed } => r!(d) = div_rem(r!(a), r!(b), w, signed, true),
            Op::Min { w, signed } => {
                let lt = if signed { sext(r!(a), w) < sext(r!(b), w) } else { r!(a) < r!(b) };
                r!(d) = if lt { r!(a) } else { r!(b) };
            }
            Op::Max { w, signed } => {
                let gt = if signed { sext(r!(a), w) > sext(r!(b), w) } else { r!(a) > r!(b) };
                r!(d) = if gt { r!(a) } else { r!(b) };
            }
            Op::Abs { w } => r!(d) = (sext(r!(a), w).wrapping_abs() as u64) & mask(w),
            Op::Neg { w } => r!(d) = r!(a).wrapping_neg() & mask(w),
            Op::And => r!(d) = r!(a) & r!(b),
            Op::Or => r!(d) = r!(a) | r!(b),
            Op::Xor => r!(d) = r!(a) ^ r!(b),
            Op::Not { w } => r!(d) = !r!(a) & mask(w),
            Op::Cnot => r!(d) = (r!(a) == 0) as u64,
            Op::PNot => r!(d) = r!(a) ^ 1,
            Op::Shl { w } => {
                let s = r!(b) as u32;
                r!(d) = if s >= w as u32 { 0 } else { (r!(a) << s) & mask(w) };
            }
            Op::Shr { w, signed } => {
                let s = r!(b) as u32;
                r!(d) = if signed {
                    ((sext(r!(a), w) >> s.min(w as u32 - 1)) as u64) & mask(w)
                } else if s >= w as u32 {
                    0
                } else {
                    r!(a) >> s
                };
            }
            Op::Shf { right, clamp } => {
                let n = r!(c) as u32;
                let n = if clamp { n.min(32) } else { n & 31 };
                let wide = ((r!(b) as u32 as u64) << 32) | (r!(a) as u32 as u64);
                r!(d) = if right { (wide >> n) as u32 as u64 } else { ((wide << n) >> 32) as u32 as u64 };
            }
            Op::Bfe { w, signed } => r!(d) = bfe(r!(a), r!(b) as u32 & 0xff, r!(c) as u32 & 0xff, w, signed),
            Op::Bfi { w } => {
                let p = inst.aux as usize;
                let (f, base, pos, len) = (r!(pool[p]), r!(pool[p + 1]), r!(pool[p + 2]) as u32 & 0xff, r!(pool[p + 3]) as u32 & 0xff);
                let mut v = base;
                for i in 0..len.min(w as u32) {
                    let at = pos + i;
                    if at >= w as u32 {
                        break;
                    }
                    v = (v & !(1 << at)) | (((f >> i) & 1) << at);
                }
                r!(d) = v & mask(w);
            }
            Op::Brev { w } => r!(d) = if w == 32 { (r!(a) as u32).reverse_bits() as u64 } else { r!(a).reverse_bits() },
            Op::Popc { w } => r!(d) = (r!(a) & mask(w)).count_ones() as u64,
            Op::Clz { w } => r!(d) = if w == 32 { (r!(a) as u32).leading_zeros() as u64 } else { r!(a).leading_zeros() as u64 },
            Op::Bfind { w, signed, shiftamt } => {
                let v = r!(a) & mask(w);
                // For negative signed values, the most significant 0 bit.
                let x = if signed && sext(v, w) < 0 { !v & mask(w) } else { v };
                r!(d) = if x == 0 {
                    0xffff_ffff
                } else {
                    let msb = 63 - x.leading_zeros();
                    (if shiftamt { w as u32 - 1 - msb } else { msb }) as u64
                };
            }
            Op::Prmt { mode } => r!(d) = prmt(r!(a) as u32, r!(b) as u32, r!(c) as u32, mode) as u64,
            // ---- comparisons
            Op::SetP { cmp, ty, bop, negc, ftz } => {
                let t = compare(cmp, ty, r!(a), r!(b), ftz);
                let p = if bop == BoolOp::None { false } else { (r!(c) != 0) != negc };
                r!(d) = combine(t, bop, p) as u64;
                if inst.imm as u32 != NONE {
                    r!(inst.imm) = combine(!t, bop, p) as u64;
                }
            }
            Op::Set { cmp, ty, bop, negc, ftz, float_dst } => {
                let t = compare(cmp, ty, r!(a), r!(b), ftz);
                let p = if bop == BoolOp::None { false } else { (r!(c) != 0) != negc };
                let v = combine(t, bop, p);
                r!(d) = match (v, float_dst) {
                    (false, _) => 0,
                    (true, true) => b32f(1.0),
                    (true, false) => 0xffff_ffff,
                };
            }
            Op::Testp { f64, what } => {
                let x = if f64 { f64b(r!(a)) } else { f32b(r!(a)) as f64 };
                let sub = if f64 {
                    x != 0.0 && x.abs() < f64::MIN_POSITIVE
                } else {
                    let y = f32b(r!(a));
                    y != 0.0 && y.abs() < f32::MIN_POSITIVE
                };
                r!(d) = match what {
                    0 => x.is_finite(),
                    1 => x.is_infinite(),
                    2 => !x.is_nan(),
                    3 => x.is_nan(),
                    4 => x.is_finite() && x != 0.0 && !sub,
                    _ => sub,
                } as u64;
            }
            // ---- f32
            Op::AddF32 { f } => {
                r!(d) = if f == 0 { b32f(f32b(r!(a)) + f32b(r!(b))) } else { b32f(output32(input32(f32b(r!(a)), f) + input32(f32b(r!(b)), f), f)) }
            }
            Op::SubF32 { f } => {
                r!(d) = if f == 0 { b32f(f32b(r!(a)) - f32b(r!(b))) } else { b32f(output32(input32(f32b(r!(a)), f) - input32(f32b(r!(b)), f), f)) }
            }
            Op::MulF32 { f } => {
                r!(d) = if f == 0 { b32f(f32b(r!(a)) * f32b(r!(b))) } else { b32f(output32(input32(f32b(r!(a)), f) * input32(f32b(r!(b)), f), f)) }
            }
            Op::FmaF32 { f } => {
                let (x, y, z) = (input32(f32b(r!(a)), f), input32(f32b(r!(b)), f), input32(f32b(r!(c)), f));
                r!(d) = b32f(output32(x.mul_add(y, z), f));
            }
            Op::DivF32 { f, approx } => {
                let (x, y) = (input32(f32b(r!(a)), f), input32(f32b(r!(b)), f));
                let q = if approx { ((x as f64) / (y as f64)) as f32 } else { x / y };
                r!(d) = b32f(output32(q, f));
            }
            Op::MinF32 { f, nan } => r!(d) = b32f(output32(min_f32(input32(f32b(r!(a)), f), input32(f32b(r!(b)), f), nan), f)),
            Op::MaxF32 { f, nan } => r!(d) = b32f(output32(max_f32(input32(f32b(r!(a)), f), input32(f32b(r!(b)), f), nan), f)),
            Op::NegF32 { f } => r!(d) = b32f(output32(input32(f32b(r!(a)), f), f)) ^ 0x8000_0000,
            Op::AbsF32 { f } => r!(d) = b32f(output32(input32(f32b(r!(a)), f), f)) & 0x7fff_ffff,
            Op::FunF32 { f, fun } => {
                let x = input32(f32b(r!(a)), f);
                let y = match fun {
                    Fun::RcpRn => 1.0 / x,
                    Fun::RcpApprox => rcp_approx(x),
                    Fun::SqrtRn | Fun::SqrtApprox => x.sqrt(),
                    Fun::RsqrtApprox => rsqrt_approx(x),
                    Fun::Ex2Approx => ex2_approx(x),
                    Fun::Lg2Approx => lg2_approx(x),
                    Fun::SinApprox => sin_approx(x),
                    Fun::CosApprox => cos_approx(x),
                    Fun::TanhApprox => tanh_approx(x),
                };
                r!(d) = b32f(output32(y, f));
            }
            Op::CopysignF32 => r!(d) = (r!(b) & 0x7fff_ffff) | (r!(a) & 0x8000_0000),
            Op::RoundF32 { op, rnd, f } => {
                let (x, y) = (input32(f32b(r!(a)), f), input32(f32b(r!(b)), f));
                r!(d) = b32f(output32(f32_directed(op, x, y, rnd), f));
            }
            Op::FmaDirectedF32 { rnd, f } => {
                let (x, y, z) = (input32(f32b(r!(a)), f), input32(f32b(r!(b)), f), input32(f32b(r!(c)), f));
                r!(d) = b32f(output32(fma_directed_f32(x, y, z, rnd), f));
            }
            // ---- f64
            Op::AddF64 => r!(d) = (f64b(r!(a)) + f64b(r!(b))).to_bits(),
            Op::SubF64 => r!(d) = (f64b(r!(a)) - f64b(r!(b))).to_bits(),
            Op::MulF64 => r!(d) = (f64b(r!(a)) * f64b(r!(b))).to_bits(),
            Op::FmaF64 => r!(d) = f64b(r!(a)).mul_add(f64b(r!(b)), f64b(r!(c))).to_bits(),
            Op::DivF64 => r!(d) = (f64b(r!(a)) / f64b(r!(b))).to_bits(),
            Op::MinF64 { nan } => r!(d) = min_f64(f64b(r!(a)), f64b(r!(b)), nan).to_bits(),
            Op::MaxF64 { nan } => r!(d) = max_f64(f64b(r!(a)), f64b(r!(b)), nan).to_bits(),
            Op::NegF64 => r!(d) = r!(a) ^ (1 << 63),
            Op::AbsF64 => r!(d) = r!(a) & !(1 << 63),
            Op::FunF64 { fun } => {
                let x = f64b(r!(a));
                let y = match fun {
                    Fun::RcpRn | Fun::RcpApprox => 1.0 / x,
                    Fun::SqrtRn | Fun::SqrtApprox => x.sqrt(),
                    _ => 1.0 / x.sqrt(),
                };
                r!(d) = y.to_bits();
            }
            Op::CopysignF64 => r!(d) = (r!(b) & !(1 << 63)) | (r!(a) & (1 << 63)),
            Op::RoundF64 { op, rnd } => r!(d) = f64_directed(op, f64b(r!(a)), f64b(r!(b)), rnd).to_bits(),
            Op::Half { op, bf16, x2, f } => {
                let lanes = if x2 { 2 } else { 1 };
                let mut out = 0u64;
                for i in 0..lanes {
                    let get = |v: u64| -> f32 {
                        let h = ((v >> (16 * i)) & 0xffff) as u16;
                        if bf16 {
                            bf16_to_f32(h)
                        } else {
                            f16_to_f32(h)
                        }
                    };
                    let (x, y) = (get(r!(a)), if b == NONE { 0.0 } else { get(r!(b)) });
                    let hbits = half_op(op, bf16, f, x, y, if c == NONE { 0.0 } else { get(r!(c)) }, (r!(a) >> (16 * i)) as u16);
                    out |= (hbits as u64) << (16 * i);
                }
                r!(d) = out;
            }
            // ---- conversions
            Op::Cvt { to, from, rnd, f } => r!(d) = cvt(to, from, rnd, f, r!(a)),
            Op::CvtPack { bf16, relu, satfinite } => {
                let conv = |x: f32| -> u64 {
                    let mut x = x;
                    if relu && !x.is_nan() && x.is_sign_negative() {
                        x = 0.0;
                    }
                    if satfinite && !x.is_nan() {
                        let max = if bf16 { bf16_to_f32(0x7f7f) } else { 65504.0 };
                        // Saturate after rounding: values that would round past max clamp to max.
                        let bits = if bf16 { f32_to_bf16_rn(x) } else { f32_to_f16_rn(x) };
                        let inf = if bf16 { 0x7f80 } else { 0x7c00 };
                        if bits & 0x7fff == inf {
                            x = max.copysign(x);
                        }
                    }
                    (if bf16 { f32_to_bf16_rn(x) } else { f32_to_f16_rn(x) }) as u64
                };
                r!(d) = (conv(f32b(r!(a))) << 16) | conv(f32b(r!(b)));
            }
            Op::Cvta { to, space } => {
                let v = r!(a);
                let win = match space {
                    Sp::Shared => Some(window::SHARED),
                    Sp::Local => Some(window::LOCAL),
                    Sp::Param => Some(window::PARAM),
                    _ => None,
                };
                r!(d) = match (to, win) {
                    (_, None) => v,
                    (false, Some(wn)) => (wn << window::SHIFT) | (v & window::MASK),
                    (true, Some(_)) => v & window::MASK,
                };
            }
            Op::IsSpace { space } => {
                let (reg, _) = region(Sp::Generic, r!(a));
                r!(d) = match space {
                    Sp::Shared => reg == Region::Shared,
                    Sp::Local => reg == Region::Local,
                    Sp::Param => reg == Region::Param,
                    _ => reg == Region::Global,
                } as u64;
            }
            // ---- memory
            Op::Ld { space, size, n, sext: sx, reg_bits } => {
                let addr = r!(a).wrapping_add(inst.imm as u64);
                let mut vals = [0u64; 4];
                let n = n as usize;
                if let Err(f) = mem.load(space, addr, size as usize, &mut vals[..n]) {
                    break Err(f.into());
                }
                for (i, &v) in vals[..n].iter().enumerate() {
                    let v = if sx { (sext(v, size * 8) as u64) & mask(reg_bits) } else { v };
                    if n == 1 {
                        r!(d) = v;
                    } else {
                        r!(pool[inst.aux as usize + i]) = v;
                    }
                }
            }
            Op::St { space, size, n } => {
                let addr = r!(a).wrapping_add(inst.imm as u64);
                let n = n as usize;
                let mut vals = [0u64; 4];
                if n == 1 {
                    vals[0] = r!(b);
                } else {
                    for (i, v) in vals[..n].iter_mut().enumerate() {
                        *v = r!(pool[inst.aux as usize + i]);
                    }
                }
                if let Err(f) = mem.store(space, addr, size as usize, &vals[..n]) {
                    break Err(f.into());
                }
            }
            Op::Atom { space, op, ty, ret } => {
                let addr = r!(a).wrapping_add(inst.imm as u64);
                let (bv, cv) = (r!(b), if c == NONE { 0 } else { r!(c) });
                match atomic(mem, memory, space, addr, op, ty, bv, cv, inst.aux != 0) {
                    Ok(old) => {
                        if ret {
                            r!(d) = old;
                        }
                    }
                    Err(f) => break Err(f.into()),
                }
            }
            Op::CpAsync { size, ignore_pred } => {
                let dst = r!(d).wrapping_add(inst.imm as u64);
                let src = r!(a).wrapping_add(k.offsets[c as usize] as u64);
                let src_size = if b == NONE {
                    size as u64
                } else if ignore_pred {
                    if r!(b) != 0 {
                        0
                    } else {
                        size as u64
                    }
                } else {
                    r!(b) & 0xffff_ffff
                };
                if let Err(f) = issue_copy(mem, copies, *committed, dst, src, size, src_size) {
                    break Err(f.into());
                }
            }
            Op::CpAsyncCommit => *committed += 1,
            Op::CpAsyncWait => {
                let n = inst.imm as u32;
                if *committed > n {
                    if let Err(f) = complete_copies(copies, Some(*committed - n), mem) {
                        break Err(f.into());
                    }
                }
            }
            Op::CpAsyncWaitAll => {
                *committed += 1;
                if let Err(f) = complete_copies(copies, Some(*committed), mem) {
                    break Err(f.into());
                }
            }
            // ---- control
            Op::Bra => {
                pc = inst.imm as usize;
                continue;
            }
            Op::Exit => {
                if let Err(f) = complete_copies(copies, None, mem) {
                    break Err(f.into());
                }
                if let Err(f) = bulk::complete_stores(mem, io.th, None, false) {
                    break Err(f.into());
                }
                break Ok(Stop::Exited);
            }
            // ---- mbarrier and bulk asynchronous copies (see `mbarrier`, `bulk`)
            Op::MbarInit { .. }
            | Op::MbarInval { .. }
            | Op::MbarArrive { .. }
            | Op::MbarTx { .. }
            | Op::BulkLoad
            | Op::BulkStore
            | Op::TensorLoad { .. }
            | Op::TensorStore { .. }
            | Op::BulkCommit
            | Op::BulkWait { .. }
            | Op::FenceProxyAsync => {
                if let Err(t) = async_op(k, inst, regs, mem, io) {
                    break Err(t);
                }
            }
            Op::MbarWait { space, parity } => {
                let addr = r!(a).wrapping_add(inst.imm as u64);
                match mbar_wait(mem, io, space, addr, parity, r!(b)) {
                    Ok(Some(done)) => r!(d) = done as u64,
                    Ok(None) => break Ok(Stop::Blocked),
                    Err(t) => break Err(t),
                }
            }
            Op::Trap => break Err(Fault::new(None, "trap").into()),
            Op::Bar { arrive } => {
                let id = r!(a);
                if id >= 16 {
                    break Err(Fault::new(None, format!("barrier id {id} is out of range (0..15)")).into());
                }
                if b != NONE {
                    let count = r!(b);
                    if count == 0 || count % 32 != 0 {
                        break Err(Fault::new(None, format!("barrier thread count {count} is not a positive multiple of 32")).into());
                    }
                }
                if arrive {
                    arrive_counts[id as usize] += 1;
                } else {
                    break Ok(Stop::Blocked);
                }
            }
            Op::Coll(_) => break Ok(Stop::Blocked),
        }
        pc += 1;
    };
    // A blocked thread stays at its instruction (the step is counted when it completes).
    if let Ok(Stop::Blocked) = result {
        steps -= 1;
    }
    *pc_out = pc;
    *steps_io = steps;
    result
}

/// mbarrier.test_wait / try_wait: lands the bulk copies that signal this mbarrier, then tests the
/// phase. `Some(result)`, or `None` when the thread must block (the phase is incomplete and the
/// scheduler has not timed the wait out).
fn mbar_wait(mem: &mut Mem, io: &mut AsyncIo, space: Sp, addr: u64, parity: bool, operand: u64) -> Result<Option<bool>, Trouble> {
    let off = bulk::mbar_offset(space, addr, mem.shared.data.len(), "mbarrier wait")?;
    io.cta.land(Some(off), mem.shared, io.epoch)?;
    mem.who.epoch = *io.epoch;
    if io.cta.test(off, parity, operand, &mem.who)? {
        io.th.timeout = false;
        return Ok(Some(true));
    }
    if std::mem::take(&mut io.th.timeout) {
        return Ok(Some(false));
    }
    io.th.wait_bar = off;
    io.th.wait_phase = io.cta.bar(off).map_or(0, |b| b.phase);
    Ok(None)
}

/// The non-blocking mbarrier, bulk-copy and proxy-fence instructions.
#[inline(never)]
fn async_op(k: &Kernel, inst: &Inst, regs: &mut [u64], mem: &mut Mem, io: &mut AsyncIo) -> Result<(), Trouble> {
    let r = |s: u32| regs[s as usize];
    let pool = &k.pool;
    let at = |base: u32, off: i64| r(base).wrapping_add(off as u64);
    let shared_len = mem.shared.data.len();
    match inst.op {
        Op::MbarInit { space } => {
            let off = bulk::mbar_offset(space, at(inst.a, inst.imm), shared_len, "mbarrier.init")?;
            io.cta.init(off, r(inst.b) & 0xffff_ffff, &mem.who, mem.shared)?;
        }
        Op::MbarInval { space } => {
            let off = bulk::mbar_offset(space, at(inst.a, inst.imm), shared_len, "mbarrier.inval")?;
            io.cta.inval(off, &mem.who, mem.shared)?;
        }
        Op::MbarArrive { space, kind } => {
            let off = bulk::mbar_offset(space, at(inst.a, inst.imm), shared_len, "mbarrier.arrive")?;
            let arg = (inst.b != NONE).then(|| r(inst.b) & 0xffff_ffff);
            let state = io.cta.arrive(off, kind, arg, &mem.who, io.epoch)?;
            regs[inst.d as usize] = state;
            mem.who.epoch = *io.epoch;
        }
        Op::MbarTx { space, complete } => {
            let what = if complete { "mbarrier.complete_tx" } else { "mbarrier.expect_tx" };
            let off = bulk::mbar_offset(space, at(inst.a, inst.imm), shared_len, what)?;
            io.cta.tx(off, complete, r(inst.b) & 0xffff_ffff, &mem.who, io.epoch)?;
            mem.who.epoch = *io.epoch;
        }
        Op::FenceProxyAsync => {
            if let Some(sh) = mem.shared.shadow.as_mut() {
                sh.fence_proxy_async(mem.who.tid as usize);
            }
        }
        Op::BulkLoad => {
            let c = inst.c as usize;
            let mbar = bulk::mbar_offset(Sp::Shared, at(pool[inst.aux as usize], k.offsets[c + 1]), shared_len, "cp.async.bulk")?;
            let (dst, src, size) = (at(inst.d, inst.imm), at(inst.a, k.offsets[c]), r(inst.b) & 0xffff_ffff);
            bulk::bulk_load(mem, io.cta, dst, src, size, mbar, inst.line)?;
        }
        Op::TensorLoad { dim } => {
            let (c, p) = (inst.c as usize, inst.aux as usize);
            let coords: Vec<i64> = pool[p..p + dim as usize].iter().map(|&s| r(s) as u32 as i32 as i64).collect();
            let mbar = bulk::mbar_offset(Sp::Shared, at(pool[p + dim as usize], k.offsets[c + 1]), shared_len, "cp.async.bulk.tensor")?;
            bulk::tensor_load(mem, io.cta, at(inst.a, k.offsets[c]), &coords, at(inst.d, inst.imm), mbar, inst.line)?;
        }
        Op::BulkStore => {
            let (dst, src, size) = (at(inst.d, inst.imm), at(inst.a, k.offsets[inst.c as usize]), r(inst.b) & 0xffff_ffff);
            bulk::bulk_store(mem, io.th, dst, src, size)?;
        }
        Op::TensorStore { dim } => {
            let p = inst.aux as usize;
            let coords: Vec<i64> = pool[p..p + dim as usize].iter().map(|&s| r(s) as u32 as i32 as i64).collect();
            bulk::tensor_store(mem, io.th, at(inst.a, k.offsets[inst.c as usize]), &coords, at(inst.b, inst.imm))?;
        }
        Op::BulkCommit => io.th.committed += 1,
        Op::BulkWait { read } => {
            let n = inst.imm as u32;
            if io.th.committed > n {
                bulk::complete_stores(mem, io.th, Some(io.th.committed - n), read)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn issue_copy(mem: &mut Mem, copies: &mut Vec<AsyncCopy>, group: u32, dst: u64, src: u64, size: u8, src_size: u64) -> Result<(), Fault> {
    let sz = size as u64;
    if src_size > sz {
        return Err(Fault::new(Some(src), format!("cp.async src-size {src_size} exceeds the copy size {size}")));
    }
    if dst % sz != 0 {
        return Err(Fault::new(Some(dst), format!("misaligned cp.async shared destination ({size} bytes)")));
    }
    let limit = mem.shared.data.len() as u64;
    if dst.checked_add(sz).map_or(true, |e| e > limit) {
        return Err(Fault::new(Some(dst), format!("out-of-bounds cp.async shared destination ({size} bytes; shared memory is {limit} bytes)")));
    }
    if src_size > 0 {
        if src % sz != 0 {
            return Err(Fault::new(Some(src), format!("misaligned cp.async global source ({size} bytes)")));
        }
        if mem.global.find(src, src_size as usize, &mut mem.hint).is_none() {
            return Err(Fault::new(Some(src), format!("out-of-bounds cp.async global source ({src_size} bytes)")));
        }
    }
    if let Some(sh) = mem.shared.shadow.as_mut() {
        sh.start_async(dst as usize, size as usize, &mem.who, false)
            .map_err(|c| conflict_fault(c, mem.who.tid as usize, mem.block, "cp.async"))?;
    }
    copies.push(AsyncCopy { group, dst: dst as u32, src, size, src_size: src_size as u8 });
    mem.traffic.async_copy += src_size;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn atomic(
    mem: &mut Mem,
    memory: &crate::memory::GlobalMemory,
    space: Sp,
    addr: u64,
    op: AtomOp,
    ty: AtomTy,
    b: u64,
    c: u64,
    ftz: bool,
) -> Result<u64, Fault> {
    let size = match ty {
        AtomTy::Int { bits, .. } => bits as usize / 8,
        AtomTy::F32 => 4,
        AtomTy::F64 => 8,
    };
    let (reg, a) = region(space, addr);
    if a % size as u64 != 0 {
        return Err(Fault::new(Some(addr), format!("misaligned atomic of {size} bytes")));
    }
    match reg {
        Region::Shared => {
            let limit = mem.shared.data.len();
            if a.checked_add(size as u64).map_or(true, |e| e > limit as u64) {
                return Err(Fault::new(Some(a), format!("out-of-bounds shared atomic of {size} bytes (shared memory is {limit} bytes)")));
            }
            let off = a as usize;
            if let Some(sh) = mem.shared.shadow.as_mut() {
                sh.check_initialised(off, size).map_err(|cf| conflict_fault(cf, mem.who.tid as usize, mem.block, "atomic"))?;
                sh.mark_written(off, size);
            }
            let old = crate::space::read_le(&mem.shared.data[off..], size);
            let new = atom_apply(op, ty, old, b, c, ftz);
            crate::space::write_le(&mut mem.shared.data[off..], size, new);
            Ok(old)
        }
        Region::Global => {
            let Some((alloc, off)) = mem.global.find(a, size, &mut mem.hint) else {
                return Err(Fault::new(Some(a), format!("out-of-bounds global atomic of {size} bytes")));
            };
            if !alloc.writable {
                return Err(Fault::new(Some(a), "atomic on read-only (.const) memory"));
            }
            // One lock for all read-modify-writes: CTAs run on several host threads.
            let _guard = memory.atomic_lock.lock().unwrap_or_else(|e| e.into_inner());
            let old = alloc.load(off, size);
            alloc.store(off, size, atom_apply(op, ty, old, b, c, ftz));
            Ok(old)
        }
        _ => Err(Fault::new(Some(addr), "atomic on local or param memory")),
    }
}

fn atom_apply(op: AtomOp, ty: AtomTy, old: u64, b: u64, c: u64, ftz: bool) -> u64 {
    match ty {
        AtomTy::F32 => match op {
            AtomOp::Add => {
                let f = if ftz { FTZ } else { 0 };
                b32f(output32(input32(f32b(old), f) + input32(f32b(b), f), f))
            }
            _ => b,
        },
        AtomTy::F64 => (f64b(old) + f64b(b)).to_bits(),
        AtomTy::Int { bits, signed } => {
            let m = mask(bits);
            match op {
                AtomOp::Add => old.wrapping_add(b) & m,
                AtomOp::Min => {
                    if (signed && sext(b, bits) < sext(old, bits)) || (!signed && b < old) {
                        b
                    } else {
                        old
                    }
                }
                AtomOp::Max => {
                    if (signed && sext(b, bits) > sext(old, bits)) || (!signed && b > old) {
                        b
                    } else {
                        old
                    }
                }
                AtomOp::Inc => {
                    if old >= b {
                        0
                    } else {
                        old + 1
                    }
                }
                AtomOp::Dec => {
                    if old == 0 || old > b {
                        b
                    } else {
                        old - 1
                    }
                }
                AtomOp::Exch => b,
                // cas: b is the compare value, c the new one.
                AtomOp::Cas => {
                    if old == b {
                        c
                    } else {
                        old
                    }
                }
                AtomOp::And => old & b,
                AtomOp::Or => old | b,
                AtomOp::Xor => old ^ b,
            }
        }
    }
}

fn mul_hi(a: u64, b: u64, w: u8, signed: bool) -> u64 {
    if signed {
        let p = (sext(a, w) as i128) * (sext(b, w) as i128);
        ((p >> w) as u64) & mask(w)
    } else {
        let p = ((a & mask(w)) as u128) * ((b & mask(w)) as u128);
        ((p >> w) as u64) & mask(w)
    }
}

fn mul_wide(a: u64, b: u64, w: u8, signed: bool) -> u64 {
    if signed {
        ((sext(a, w) * sext(b, w)) as u64) & mask(2 * w)
    } else {
        ((a & mask(w)) * (b & mask(w))) & mask(2 * w)
    }
}

/// Integer division and remainder. Division by zero is undefined in PTX; the simulator returns
/// all ones for the quotient and the dividend for the remainder. Signed overflow wraps.
fn div_rem(a: u64, b: u64, w: u8, signed: bool, rem: bool) -> u64 {
    let m = mask(w);
    if b & m == 0 {
        return if rem { a & m } else { m };
    }
    if signed {
        let (x, y) = (sext(a, w), sext(b, w));
        (if rem { x.wrapping_rem(y) } else { x.wrapping_div(y) }) as u64 & m
    } else {
        let (x, y) = (a & m, b & m);
        if rem {
            x % y
        } else {
            x / y
        }
    }
}

fn bfe(a: u64, pos: u32, len: u32, w: u8, signed: bool) -> u64 {
    let msb = w as u32 - 1;
    let sbit = if signed && len > 0 { (a >> (pos + len - 1).min(msb)) & 1 } else { 0 };
    let mut d = 0u64;
    for i in 0..=msb {
        let bit = if i < len && pos + i <= msb { (a >> (pos + i)) & 1 } else { sbit };
        d |= bit << i;
    }
    d
}

/// prmt.b32 (PTX ISA "prmt"): bytes 0-3 of a and 4-7 of b, selected per destination byte.
fn prmt(a: u32, b: u32, c: u32, mode: u8) -> u32 {
    let bytes = ((b as u64) << 32) | a as u64;
    let byte = |i: u32| ((bytes >> (8 * (i & 7))) & 0xff) as u32;
    let sel: [u32; 4] = match mode {
        0 => {
            let mut out = 0;
            for i in 0..4 {
                let s = (c >> (4 * i)) & 0xf;
                let mut v = byte(s & 7);
                if s & 8 != 0 {
                    v = if v & 0x80 != 0 { 0xff } else { 0 };
                }
                out |= v << (8 * i);
            }
            return out;
        }
        1 => {
            let s = c & 3;
            [s, s + 1, s + 2, s + 3]
        }
        2 => {
            let s = c & 3;
            [s, (s + 7) & 7, (s + 6) & 7, (s + 5) & 7]
        }
        3 => {
            let s = c & 3;
            [s, s, s, s]
        }
        4 => match c & 3 {
            0 => [0, 1, 2, 3],
            1 => [1, 1, 2, 3],
            2 => [2, 2, 2, 3],
            _ => [3, 3, 3, 3],
        },
        5 => match c & 3 {
            0 => [0, 0, 0, 0],
            1 => [0, 1, 1, 1],
            2 => [0, 1, 2, 2],
            _ => [0, 1, 2, 3],
        },
        _ => {
            let s = c & 1;
            [2 * s, 2 * s + 1, 2 * s, 2 * s + 1]
        }
    };
    sel.iter().enumerate().fold(0, |out, (i, &s)| out | (byte(s) << (8 * i)))
}

fn combine(t: bool, bop: BoolOp, p: bool) -> bool {
    match bop {
        BoolOp::None => t,
        BoolOp::And => t && p,
        BoolOp::Or => t || p,
        BoolOp::Xor => t ^ p,
    }
}

fn compare(cmp: Cmp, ty: CmpTy, a: u64, b: u64, ftz: bool) -> bool {
    match ty {
        CmpTy::Int { bits, signed } => {
            let (ua, ub) = (a & mask(bits), b & mask(bits));
            let (sa, sb) = (sext(a, bits), sext(b, bits));
            match cmp {
                Cmp::Eq => ua == ub,
                Cmp::Ne => ua != ub,
                Cmp::Lt if signed => sa < sb,
                Cmp::Le if signed => sa <= sb,
                Cmp::Gt if signed => sa > sb,
                Cmp::Ge if signed => sa >= sb,
                Cmp::Lt | Cmp::Lo => ua < ub,
                Cmp::Le | Cmp::Ls => ua <= ub,
                Cmp::Gt | Cmp::Hi => ua > ub,
                Cmp::Ge | Cmp::Hs => ua >= ub,
                _ => false,
            }
        }
        CmpTy::F32 => {
            let f = if ftz { FTZ } else { 0 };
            fcmp(cmp, input32(f32b(a), f) as f64, input32(f32b(b), f) as f64)
        }
        CmpTy::F64 => fcmp(cmp, f64b(a), f64b(b)),
        CmpTy::F16 => fcmp(cmp, f16_to_f32(a as u16) as f64, f16_to_f32(b as u16) as f64),
        CmpTy::Bf16 => fcmp(cmp, bf16_to_f32(a as u16) as f64, bf16_to_f32(b as u16) as f64),
    }
}

fn fcmp(cmp: Cmp, x: f64, y: f64) -> bool {
    let un = x.is_nan() || y.is_nan();
    match cmp {
        Cmp::Eq => !un && x == y,
        Cmp::Ne => !un && x != y,
        Cmp::Lt => !un && x < y,
        Cmp::Le => !un && x <= y,
        Cmp::Gt => !un && x > y,
        Cmp::Ge => !un && x >= y,
        Cmp::Equ => un || x == y,
        Cmp::Neu => un || x != y,
        Cmp::Ltu => un || x < y,
        Cmp::Leu => un || x <= y,
        Cmp::Gtu => un || x > y,
        Cmp::Geu => un || x >= y,
        Cmp::Num => !un,
        Cmp::Nan => un,
        _ => false,
    }
}

/// One f16/bf16 lane of the half-precision arithmetic: computed in f64 (exact for add, sub, mul of
/// 16-bit values) and rounded once to the format. `raw` is the input's bits, for neg/abs.
fn half_op(op: HOp, bf16: bool, f: u8, x: f32, y: f32, z: f32, raw: u16) -> u16 {
    let ftz = |v: f32| -> f32 {
        // f16 .ftz: flush f16 subnormals (below 2^-14).
        if f & FTZ != 0 && !bf16 && v != 0.0 && v.abs() < 6.103_515_6e-5 {
            0.0f32.copysign(v)
        } else {
            v
        }
    };
    let (x, y, z) = (ftz(x), ftz(y), ftz(z));
    let v: f64 = match op {
        HOp::Add => x as f64 + y as f64,
        HOp::Sub => x as f64 - y as f64,
        HOp::Mul => x as f64 * y as f64,
        // The product is exact in f64; the sum may round once more in rare cases (documented).
        HOp::Fma => (x as f64) * (y as f64) + z as f64,
        HOp::Neg => return raw ^ 0x8000,
        HOp::Abs => return raw & 0x7fff,
        HOp::Min => min_f32(x, y, false) as f64,
        HOp::Max => max_f32(x, y, false) as f64,
    };
    let mut v = v;
    // .relu: negative results (and -0) become +0; NaN stays NaN.
    if f & 4 != 0 && v.is_sign_negative() && !v.is_nan() {
        v = 0.0;
    }
    if f & SAT != 0 {
        v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    }
    let bits = f64_to_half(v, bf16, Rnd::Rn);
    if f & FTZ != 0 && !bf16 && bits & 0x7c00 == 0 {
        bits & 0x8000
    } else {
        bits
    }
}

/// An integer result of `bits` width as its destination register holds it: PTX extends a result
/// narrower than the register "based on the destination format", so signed 8/16-bit types
/// sign-extend (`cvt.sat.s8.s32` of -200 leaves 0xffffff80 in a 32-bit register, not 0x80).
/// Register slots keep 32-bit values zero-extended, as every other 32-bit result here; readers of a
/// narrower register mask what they read.
fn narrow_int(v: u64, bits: u8, signed: bool) -> u64 {
    let v = v & mask(bits);
    if signed && bits < 32 { (sext(v, bits) as u64) & mask(32) } else { v }
}

/// cvt between any two numeric types (the lowering has checked the rounding modifier).
fn cvt(to: NumTy, from: NumTy, rnd: Rnd, f: u8, a: u64) -> u64 {
    match (from, to) {
        (NumTy::Int { bits: fb, signed: fs }, NumTy::Int { bits: tb, signed: ts }) => {
            let v: i128 = if fs { sext(a, fb) as i128 } else { (a & mask(fb)) as i128 };
            let v = if f & SAT != 0 {
                let (lo, hi) = if ts { (-(1i128 << (tb - 1)), (1i128 << (tb - 1)) - 1) } else { (0, (1i128 << tb) - 1) };
                v.clamp(lo, hi)
            } else {
                v
            };
            narrow_int(v as u64, tb, ts)
        }
        (NumTy::Int { bits: fb, signed: fs }, _) => {
            let v: i128 = if fs { sext(a, fb) as i128 } else { (a & mask(fb)) as i128 };
            let bits = int_to_float_bits(v, to, rnd);
            if to == NumTy::F32 {
                b32f(output32(f32::from_bits(bits as u32), f))
            } else {
                bits
            }
        }
        (_, _) => {
            let mut x = match from {
                NumTy::F16 => f16_to_f32(a as u16) as f64,
                NumTy::Bf16 => bf16_to_f32(a as u16) as f64,
                NumTy::F32 => input32(f32b(a), f) as f64,
                _ => f64b(a),
            };
            let integral = matches!(rnd, Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi);
            match to {
                NumTy::Int { bits, signed } => {
                    if x.is_nan() {
                        return 0;
                    }
                    let r = round_integral(x, rnd);
                    let (lo, hi) = if signed {
                        (-(2f64.powi(bits as i32 - 1)), 2f64.powi(bits as i32 - 1) - 1.0)
                    } else {
                        (0.0, 2f64.powi(bits as i32) - 1.0)
                    };
                    let v = r.clamp(lo, hi);
                    narrow_int(if signed { v as i64 as u64 } else { v as u64 }, bits, signed)
                }
                NumTy::F32 => {
                    if integral {
                        x = round_integral(x, rnd);
                    }
                    let y = if integral || from == NumTy::F32 { x as f32 } else { f64_to_f32(x, rnd, 0) };
                    b32f(output32(y, f))
                }
                NumTy::F64 => {
                    if integral {
                        x = round_integral(x, rnd);
                    }
                    if f & SAT != 0 {
                        x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
                    }
                    x.to_bits()
                }
                NumTy::F16 | NumTy::Bf16 => {
                    if integral {
                        x = round_integral(x, rnd);
                    }
                    if f & SAT != 0 {
                        x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
                    }
                    let r = if integral { Rnd::Rn } else { rnd };
                    f64_to_half(x, to == NumTy::Bf16, r) as u64
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prmt_default_and_modes() {
        let (a, b) = (0x3322_1100u32, 0x7766_5544u32);
        assert_eq!(prmt(a, b, 0x5410, 0), 0x5544_1100);
        assert_eq!(prmt(a, b, 0x7654, 0), b);
        assert_eq!(prmt(a, 0x80, 0x8888, 0), 0); // sign of byte 0 of a (0x00)
        assert_eq!(prmt(0x80, 0, 0x4448, 0), 0x0000_00ff);
        assert_eq!(prmt(a, b, 1, 1), 0x4433_2211);
        assert_eq!(prmt(a, b, 1, 6), 0x3322_3322);
    }

    #[test]
    fn bfe_sign_extends() {
        assert_eq!(bfe(0xf0, 4, 4, 32, false), 0xf);
        assert_eq!(bfe(0xf0, 4, 4, 32, true), 0xffff_ffff);
        assert_eq!(bfe(0xf0, 4, 0, 32, false), 0);
        assert_eq!(bfe(0x8000_0000, 31, 8, 32, true), 0xffff_ffff);
    }

    #[test]
    fn cvt_int_and_float() {
        let s32 = NumTy::Int { bits: 32, signed: true };
        let s64 = NumTy::Int { bits: 64, signed: true };
        let u8t = NumTy::Int { bits: 8, signed: false };
        assert_eq!(cvt(s64, s32, Rnd::Default, 0, 0xffff_ffff), u64::MAX);
        assert_eq!(cvt(u8t, s32, Rnd::Default, SAT, 300), 255);
        assert_eq!(cvt(u8t, s32, Rnd::Default, SAT, (-5i32) as u32 as u64), 0);
        let s8t = NumTy::Int { bits: 8, signed: true };
        assert_eq!(cvt(s8t, s32, Rnd::Default, SAT, 0xb3da_17f8), 0xffff_ff80, "saturated, sign-extended");
        assert_eq!(cvt(s8t, s32, Rnd::Default, SAT, 100), 100);
        assert_eq!(cvt(s32, NumTy::F32, Rnd::Rzi, 0, b32f(-2.7)), (-2i32) as u32 as u64);
        assert_eq!(cvt(s32, NumTy::F32, Rnd::Rni, 0, b32f(2.5)), 2);
        assert_eq!(cvt(s32, NumTy::F32, Rnd::Rzi, 0, b32f(f32::NAN)), 0);
        assert_eq!(cvt(s32, NumTy::F32, Rnd::Rzi, 0, b32f(1e20)), i32::MAX as u32 as u64);
        assert_eq!(cvt(NumTy::F16, NumTy::F32, Rnd::Rn, 0, b32f(1.0)), 0x3c00);
        assert_eq!(cvt(NumTy::F32, NumTy::Bf16, Rnd::Default, 0, 0x3f80), b32f(1.0));
        assert_eq!(cvt(NumTy::F32, NumTy::F32, Rnd::Rmi, 0, b32f(-1.5)), b32f(-2.0));
    }
}
