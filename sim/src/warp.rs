//! Warp collectives: executed once every lane of the member mask waits at the same instruction.
//!
//! `ldmatrix` and `mma.sync` are `.aligned`: the whole warp takes part. `activemask` has no member
//! mask; it resolves to the lanes waiting at it once no other collective of the warp can move.
//! Reading a lane outside the member mask (a `shfl.sync` source) is undefined in PTX and reported.

use crate::checks::Who;
use crate::cta::{Cta, State};
use crate::error::SimError;
use crate::ir::{Coll, Inst, Op, ReduxOp, ShflMode, VoteMode};
use crate::mma::{mma, LaneIn};
use crate::space::conflict_fault;

impl<'a> Cta<'a> {
    /// The member mask of the collective thread `t` waits at (lanes of its warp).
    pub(crate) fn member_mask(&self, t: usize) -> u32 {
        let inst = &self.ctx.kernel.code[self.threads[t].pc as usize];
        match inst.op {
            Op::Coll(Coll::LdMatrix { .. }) | Op::Coll(Coll::Mma(_)) | Op::Coll(Coll::StMatrix { .. }) => u32::MAX,
            Op::Coll(Coll::Wgmma(_)) => u32::MAX,
            // The lanes of the warp that exist (a whole warp but for a CTA's last, partial one).
            Op::Coll(Coll::SetMaxNReg { .. }) => {
                let base = t - t % 32;
                let n = (self.ctx.nthreads - base).min(32);
                if n == 32 {
                    u32::MAX
                } else {
                    (1u32 << n) - 1
                }
            }
            Op::Coll(Coll::ActiveMask) => 1 << (t % 32),
            // shfl.sync keeps its clamp operand in c and the mask slot in imm.
            Op::Coll(Coll::Shfl(_)) => self.reg(t, inst.imm as u32) as u32,
            _ => self.reg(t, inst.c) as u32,
        }
    }

    /// Runs every collective of warp `w` whose lanes have all arrived; whether any did.
    pub(crate) fn resolve_collectives(&mut self, w: usize) -> Result<bool, SimError> {
        let n = self.ctx.nthreads;
        let base = w * 32;
        let lanes = base..(base + 32).min(n);
        let mut progress = false;
        let mut seen = 0u32;
        for t in lanes.clone() {
            let lane = t - base;
            if self.threads[t].state != State::Collective || seen & (1 << lane) != 0 {
                continue;
            }
            let pc = self.threads[t].pc;
            let inst = self.ctx.kernel.code[pc as usize];
            if inst.op == Op::Coll(Coll::ActiveMask) {
                continue;
            }
            // wgmma: a warpgroup collective (crate::wgmma), resolved once all 128 threads wait.
            if let Op::Coll(Coll::Wgmma(_)) = inst.op {
                seen |= 1 << lane;
                progress |= self.wgmma_resolve(w, t)?;
                continue;
            }
            let mask = self.member_mask(t);
            if mask & (1 << lane) == 0 {
                return Err(SimError::Fault(self.report(
                    t,
                    inst.line,
                    None,
                    format!("member mask {mask:#010x} of `{}` does not include the executing lane {lane}", crate::cta::op_name(&inst.op)),
                )));
            }
            // `.aligned` collectives (ldmatrix, stmatrix, mma, setmaxnreg) have no mask operand.
            let aligned = matches!(
                inst.op,
                Op::Coll(Coll::LdMatrix { .. }) | Op::Coll(Coll::Mma(_)) | Op::Coll(Coll::StMatrix { .. }) | Op::Coll(Coll::SetMaxNReg { .. })
            );
            let ready = (0..32usize).filter(|l| mask & (1 << l) != 0).all(|l| {
                let u = base + l;
                u < n
                    && self.threads[u].state == State::Collective
                    && self.threads[u].pc == pc
                    && (aligned || self.member_mask(u) == mask)
            });
            seen |= mask;
            if !ready {
                continue;
            }
            self.execute(w, mask, &inst)?;
            progress = true;
        }
        if !progress {
            // activemask: the lanes waiting at the same activemask are the active ones.
            for t in lanes {
                if self.threads[t].state != State::Collective {
                    continue;
                }
                let pc = self.threads[t].pc;
                let inst = self.ctx.kernel.code[pc as usize];
                if inst.op != Op::Coll(Coll::ActiveMask) {
                    continue;
                }
                let mask = (0..32usize)
                    .filter(|l| {
                        let u = base + l;
                        u < n && self.threads[u].state == State::Collective && self.threads[u].pc == pc
                    })
                    .fold(0u32, |m, l| m | (1 << l));
                self.execute(w, mask, &inst)?;
                return Ok(true);
            }
        }
        Ok(progress)
    }

    /// Executes collective `inst` for the lanes of `mask` in warp `w`, then lets them go on.
    fn execute(&mut self, w: usize, mask: u32, inst: &Inst) -> Result<(), SimError> {
        let base = w * 32;
        let members = || (0..32usize).filter(move |l| mask & (1 << l) != 0);
        let Op::Coll(kind) = inst.op else {
            return Ok(());
        };
        match kind {
            Coll::Shfl(mode) => {
                let mut vals = [0u32; 32];
                for l in members() {
                    vals[l] = self.reg(base + l, inst.a) as u32;
                }
                let mut out = [(0u32, false); 32];
                for l in members() {
                    let t = base + l;
                    let bval = (self.reg(t, inst.b) as u32) & 0x1f;
                    let cval = self.reg(t, inst.c) as u32;
                    let clamp = cval & 0x1f;
                    let seg = (cval >> 8) & 0x1f;
                    let lane = l as i32;
                    let max_lane = ((lane as u32 & seg) | (clamp & !seg)) as i32;
                    let min_lane = (lane as u32 & seg) as i32;
                    let (j, pval) = match mode {
                        ShflMode::Up => {
                            let j = lane - bval as i32;
                            (j, j >= max_lane)
                        }
                        ShflMode::Down => {
                            let j = lane + bval as i32;
                            (j, j <= max_lane)
                        }
                        ShflMode::Bfly => {
                            let j = lane ^ bval as i32;
                            (j, j <= max_lane)
                        }
                        ShflMode::Idx => {
                            let j = min_lane | (bval & !seg) as i32;
                            (j, j <= max_lane)
                        }
                    };
                    let src = if pval { j } else { lane };
                    if !(0..32).contains(&src) || mask & (1 << src) == 0 {
                        return Err(SimError::Fault(self.report(
                            t,
                            inst.line,
                            None,
                            format!("shfl.sync reads lane {src}, which is not in the member mask {mask:#010x}"),
                        )));
                    }
                    out[l] = (vals[src as usize], pval);
                }
                for l in members() {
                    self.set_reg(base + l, inst.d, out[l].0 as u64);
                    if inst.aux != crate::ir::NONE {
                        self.set_reg(base + l, inst.aux, out[l].1 as u64);
                    }
                }
            }
            Coll::Vote(mode) => {
                let neg = inst.imm != 0;
                let mut ballot = 0u32;
                for l in members() {
                    if (self.reg(base + l, inst.a) != 0) != neg {
                        ballot |= 1 << l;
                    }
                }
                let v = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::All => (ballot == mask) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == mask || ballot == 0) as u64,
                };
                for l in members() {
                    self.set_reg(base + l, inst.d, v);
                }
            }
            Coll::Redux(op) => {
                let vals: Vec<u32> = members().map(|l| self.reg(base + l, inst.a) as u32).collect();
                let r = match op {
                    ReduxOp::Add => vals.iter().fold(0u32, |a, &v| a.wrapping_add(v)),
                    ReduxOp::MinU => vals.iter().copied().min().unwrap_or(0),
                    ReduxOp::MaxU => vals.iter().copied().max().unwrap_or(0),
                    ReduxOp::MinS => vals.iter().map(|&v| v as i32).min().unwrap_or(0) as u32,
                    ReduxOp::MaxS => vals.iter().map(|&v| v as i32).max().unwrap_or(0) as u32,
                    ReduxOp::And => vals.iter().fold(u32::MAX, |a, &v| a & v),
                    ReduxOp::Or => vals.iter().fold(0, |a, &v| a | v),
                    ReduxOp::Xor => vals.iter().fold(0, |a, &v| a ^ v),
                };
                for l in members() {
                    self.set_reg(base + l, inst.d, r as u64);
                }
            }
            Coll::MatchAny => {
                let vals: Vec<(usize, u64)> = members().map(|l| (l, self.reg(base + l, inst.a))).collect();
                for &(l, v) in &vals {
                    let m = vals.iter().filter(|(_, u)| *u == v).fold(0u32, |m, (k, _)| m | (1 << k));
                    self.set_reg(base + l, inst.d, m as u64);
                }
            }
            Coll::MatchAll => {
                let vals: Vec<u64> = members().map(|l| self.reg(base + l, inst.a)).collect();
                let all = vals.windows(2).all(|p| p[0] == p[1]);
                for l in members() {
                    self.set_reg(base + l, inst.d, if all { mask as u64 } else { 0 });
                    if inst.b != crate::ir::NONE {
                        self.set_reg(base + l, inst.b, all as u64);
                    }
                }
            }
            Coll::WarpSync => {}
            Coll::ActiveMask => {
                for l in members() {
                    self.set_reg(base + l, inst.d, mask as u64);
                }
            }
            Coll::LdMatrix { num, trans } => self.ldmatrix(w, inst, num as usize, trans)?,
            Coll::StMatrix { num, trans, generic } => self.stmatrix(w, inst, num as usize, trans, generic)?,
            // Resolved by `wgmma_resolve` before `execute` is reached.
            Coll::Wgmma(_) => {}
            // PTX ISA "elect.sync": the leader is the lowest lane of the member mask (all of whose
            // lanes are here: .sync waits for them).
            Coll::Elect => {
                let leader = mask.trailing_zeros();
                for l in members() {
                    self.set_reg(base + l, inst.d, leader as u64);
                    self.set_reg(base + l, inst.b, (l as u32 == leader) as u64);
                }
            }
            Coll::SetMaxNReg { inc, n } => self.setmaxnreg(w, inst, inc, n)?,
            Coll::Mma(shape) => {
                let pool = &self.ctx.kernel.pool;
                let at = inst.aux as usize;
                let nd = if shape.f32_acc_d { 4 } else { 2 };
                let na = if shape.k == 16 { 4 } else { 2 };
                let nb = if shape.k == 16 { 2 } else { 1 };
                let nc = if shape.f32_acc_c { 4 } else { 2 };
                // Slot lists hoisted out of the lane loops; each lane's registers as one row slice.
                let ops = &pool[at..at + nd + na + nb + nc];
                let (dslots, rest) = ops.split_at(nd);
                let (aslots, rest) = rest.split_at(na);
                let (bslots, cslots) = rest.split_at(nb);
                let ns = self.nslots;
                let mut lanes = [LaneIn::default(); 32];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    let row = &self.regs[(base + l) * ns..(base + l + 1) * ns];
                    for (x, &s) in lane.a.iter_mut().zip(aslots) {
                        *x = row[s as usize] as u32;
                    }
                    for (x, &s) in lane.b.iter_mut().zip(bslots) {
                        *x = row[s as usize] as u32;
                    }
                    for (x, &s) in lane.c.iter_mut().zip(cslots) {
                        *x = row[s as usize] as u32;
                    }
                }
                let out = mma(shape, &lanes);
                for (l, d) in out.iter().enumerate() {
                    let row = &mut self.regs[(base + l) * ns..(base + l + 1) * ns];
                    for (&v, &s) in d.iter().zip(dslots) {
                        row[s as usize] = v as u64;
                    }
                }
            }
        }
        // The collective counts as one executed instruction per lane.
        for l in members() {
            let th = &mut self.threads[base + l];
            th.state = State::Ready;
            th.pc += 1;
            th.steps += 1;
        }
        self.executed += mask.count_ones() as u64;
        self.warp_epochs[w] += 1;
        Ok(())
    }

    /// setmaxnreg.{inc,dec}.sync.aligned.u32 n (PTX ISA "setmaxnreg"): no effect on data. Checks
    /// that the warp's warpgroup is complete, that every warp of the warpgroup executes the same
    /// setmaxnreg instructions in the same order (the rest at the end of the CTA), and that `.inc`
    /// does not lower / `.dec` does not raise this warp's known register maximum.
    fn setmaxnreg(&mut self, w: usize, inst: &Inst, inc: bool, n: u16) -> Result<(), SimError> {
        let g = w / 4;
        let lane0 = w * 32;
        let nthreads = self.ctx.nthreads;
        let fail = |cta: &Self, msg: String| SimError::Fault(cta.report(lane0, inst.line, None, msg));
        if (g * 4 + 4) * 32 > nthreads {
            return Err(fail(
                self,
                format!("setmaxnreg needs whole warpgroups (128 threads), but the CTA's {nthreads} threads leave warpgroup {g} incomplete"),
            ));
        }
        let pc = self.threads[lane0].pc;
        let k = self.setmaxnreg[w].len();
        for w2 in g * 4..g * 4 + 4 {
            if let Some(&other) = self.setmaxnreg[w2].get(k) {
                if other != pc {
                    let line2 = self.ctx.kernel.code[other as usize].line;
                    return Err(fail(
                        self,
                        format!("warps {w} and {w2} of warpgroup {g} execute different setmaxnreg instructions (PTX lines {} and {line2})", inst.line),
                    ));
                }
            }
        }
        if let Some(cur) = self.maxnreg[w] {
            if (inc && cur > n) || (!inc && cur < n) {
                let what = if inc { "setmaxnreg.inc to fewer" } else { "setmaxnreg.dec to more" };
                return Err(fail(self, format!("{what} registers ({n}) than the warp's current maximum ({cur})")));
            }
        }
        self.setmaxnreg[w].push(pc);
        self.maxnreg[w] = Some(n);
        Ok(())
    }

    /// stmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}{.shared}.b16 (PTX ISA "stmatrix"): the inverse of
    /// `ldmatrix`. Lane l supplies the address of row l % 8 of matrix l / 8; without .trans,
    /// register i of lane l holds row l / 4, elements 2(l % 4) and 2(l % 4) + 1 of matrix i (lower
    /// element in the low half); with .trans it holds elements (2(l % 4), l / 4) and (2(l % 4) + 1,
    /// l / 4).
    fn stmatrix(&mut self, w: usize, inst: &Inst, num: usize, trans: bool, generic: bool) -> Result<(), SimError> {
        let base = w * 32;
        let at = inst.aux as usize;
        let slots: Vec<u32> = self.ctx.kernel.pool[at..at + num].to_vec();
        let half = |cta: &Self, l: usize, i: usize, h: usize| (cta.reg(base + l, slots[i]) >> (16 * h)) as u16;
        let block = self.ctx.block;
        for i in 0..num {
            for r in 0..8 {
                let t = base + 8 * i + r;
                let raw = self.reg(t, inst.a).wrapping_add(inst.imm as u64);
                let addr = if generic {
                    match crate::space::region(crate::ir::Sp::Generic, raw) {
                        (crate::space::Region::Shared, a) => a,
                        _ => {
                            return Err(SimError::Fault(self.report(t, inst.line, Some(raw), "stmatrix row address is not in shared memory")));
                        }
                    }
                } else {
                    raw
                };
                let size = self.shared.data.len();
                if addr % 16 != 0 || addr.checked_add(16).map_or(true, |e| e > size as u64) {
                    let what = if addr % 16 != 0 { "misaligned" } else { "out-of-bounds" };
                    return Err(SimError::Fault(self.report(
                        t,
                        inst.line,
                        Some(addr),
                        format!("{what} stmatrix row address (16 bytes; shared memory is {size} bytes)"),
                    )));
                }
                let mut row = [0u8; 16];
                for (c, e) in row.chunks_exact_mut(2).enumerate() {
                    let v = if trans { half(self, 4 * c + r / 2, i, r % 2) } else { half(self, 4 * r + c / 2, i, c % 2) };
                    e.copy_from_slice(&v.to_le_bytes());
                }
                let off = addr as usize;
                let who = self.who(t);
                if let Some(sh) = self.shared.shadow.as_mut() {
                    if let Err(c) = sh.write(off, 16, &who) {
                        let f = conflict_fault(c, t, block, "stmatrix");
                        return Err(SimError::Fault(self.report(t, inst.line, f.address, f.kind)));
                    }
                }
                self.shared.data[off..off + 16].copy_from_slice(&row);
            }
        }
        Ok(())
    }

    /// ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16: lane l supplies the address of row
    /// l % 8 of matrix l / 8 (only lanes below 8 * num count). Without .trans, register i of lane l
    /// receives row l / 4, elements 2(l % 4) and 2(l % 4) + 1 of matrix i (lower element in the low
    /// half); with .trans it receives M_i[2(l % 4)][l / 4] (low) and M_i[2(l % 4) + 1][l / 4]
    /// (high): the same fragment of the transposed matrix.
    fn ldmatrix(&mut self, w: usize, inst: &Inst, num: usize, trans: bool) -> Result<(), SimError> {
        let base = w * 32;
        let mut rows = [[0u16; 8]; 32];
        let block = self.ctx.block;
        for (l, row) in rows.iter_mut().enumerate().take(8 * num) {
            let t = base + l;
            let addr = self.reg(t, inst.a).wrapping_add(inst.imm as u64);
            let size = self.shared.data.len();
            if addr % 16 != 0 || addr.checked_add(16).map_or(true, |e| e > size as u64) {
                let what = if addr % 16 != 0 { "misaligned" } else { "out-of-bounds" };
                return Err(SimError::Fault(self.report(
                    t,
                    inst.line,
                    Some(addr),
                    format!("{what} ldmatrix row address (16 bytes; shared memory is {size} bytes)"),
                )));
            }
            let off = addr as usize;
            let who = Who { tid: t as u16, warp: w as u16, epoch: self.epoch, wepoch: self.warp_epochs[w] };
            if let Some(sh) = self.shared.shadow.as_mut() {
                if let Err(c) = sh.read(off, 16, &who) {
                    let f = conflict_fault(c, t, block, "ldmatrix");
                    return Err(SimError::Fault(self.report(t, inst.line, f.address, f.kind)));
                }
            }
            let bytes = &self.shared.data[off..off + 16];
            for (v, pair) in row.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = u16::from_le_bytes([pair[0], pair[1]]);
            }
        }
        let elem = |m: usize, r: usize, c: usize| rows[m * 8 + r][c] as u32;
        let at = inst.aux as usize;
        let slots = &self.ctx.kernel.pool[at..at + num];
        let ns = self.nslots;
        for l in 0..32 {
            let row = &mut self.regs[(base + l) * ns..(base + l + 1) * ns];
            for (i, &slot) in slots.iter().enumerate() {
                let (lo, hi) = if trans {
                    (elem(i, 2 * (l % 4), l / 4), elem(i, 2 * (l % 4) + 1, l / 4))
                } else {
                    (elem(i, l / 4, 2 * (l % 4)), elem(i, l / 4, 2 * (l % 4) + 1))
                };
                row[slot as usize] = (lo | (hi << 16)) as u64;
            }
        }
        Ok(())
    }
}
