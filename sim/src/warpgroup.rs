//! The `wgmma` instructions run on a CTA (see `crate::wgmma` for their semantics, checks and
//! layouts): the warpgroup collectives' resolution, the issue, commit and retirement of
//! `mma_async`s, and the instruction-by-instruction watch of threads whose warpgroup has a wgmma
//! in flight. These need the whole CTA (threads, registers, shared memory, the interpreter), so
//! they sit above it as `impl Cta`, like the warp collectives of `crate::warp`.

use std::collections::HashMap;

use crate::cta::{op_name as cta_op_name, Cta, State};
use crate::error::SimError;
use crate::ir::wgflag::{BF16, NEG_A, NEG_B, SCALE_D_IMM, SCALE_D_ONE, TRANS_A, TRANS_B};
use crate::ir::{Coll, Inst, Op, WgOp, WgShape, GUARD_NEG, NO_GUARD};
use crate::numerics::{bf16_to_f32, f16_to_f32};
use crate::wgmma::{frag_pos, op_name, Desc, Group, InFlight, LOCK_A, LOCK_D};

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
