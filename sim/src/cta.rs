//! One CTA: its threads, shared memory and the scheduler that interleaves them.
//!
//! Threads run one at a time, each until it blocks: at a CTA barrier, at a warp collective, at an
//! mbarrier wait whose phase is incomplete, or at exit. Warps are run in order, and inside a warp
//! the lanes in order; once every lane of a warp is blocked, the collectives whose member lanes have
//! all arrived execute (and their lanes run on), and once every warp is blocked, barriers whose
//! threads have all arrived release. A thread blocked in `mbarrier.try_wait` / `test_wait` runs
//! again (re-executing the wait) once the mbarrier's phase has changed or a bulk copy for it is in
//! flight (waiting lands it). If nothing can move, in-flight bulk copies land; if still nothing can
//! move, threads waiting on mbarriers are timed out (their wait returns false, as a `try_wait` may
//! after a system-dependent time limit) up to [`MAX_TIMEOUTS`] times in a row without any mbarrier,
//! barrier or exit event in between; after that the CTA is deadlocked: divergent barriers, a thread
//! that exited while others wait, a collective a lane never reaches, or an mbarrier phase nobody
//! completes. That is reported, never waited on.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::checks::{Shadow, Who};
use crate::error::{Report, SimError};
use crate::ir::{special, Coll, Kernel, Op, NONE};
use crate::mbarrier::{CtaAsync, ThreadAsync};
use crate::memory::GlobalMemory;
use crate::space::{tid3, GlobalView, SharedMem, Traffic};

/// How many times in a row the scheduler times out mbarrier waits while nothing else changes
/// before it reports a deadlock.
pub(crate) const MAX_TIMEOUTS: u32 = 16;

/// What every CTA of a launch shares.
pub(crate) struct LaunchCtx<'a> {
    pub kernel: &'a Kernel,
    pub params: &'a [u8],
    pub global: GlobalView,
    pub memory: &'a GlobalMemory,
    pub checks: bool,
    pub budget: u64,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub nthreads: usize,
    pub dynamic_bytes: u32,
    /// Static plus dynamic shared memory.
    pub shared_bytes: usize,
    /// Set when a CTA failed: the others stop early.
    pub abort: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Ready,
    /// Waiting at the `bar` instruction at `pc`.
    Barrier,
    /// Waiting at the collective at `pc`.
    Collective,
    /// Waiting at the mbarrier test_wait / try_wait at `pc` (see `Thread::asy`).
    MbarWait,
    Exited,
}

/// A cp.async in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsyncCopy {
    /// The commit group it belongs to (groups are numbered from 0 in commit order).
    pub group: u32,
    /// Shared-space destination.
    pub dst: u32,
    pub src: u64,
    pub size: u8,
    pub src_size: u8,
}

pub(crate) struct Thread {
    pub pc: u32,
    pub state: State,
    pub steps: u64,
    pub local: Vec<u8>,
    /// In-flight copies in issue order (so in group order).
    pub copies: Vec<AsyncCopy>,
    /// Number of groups committed so far.
    pub committed: u32,
    /// Order of arrival at the current barrier.
    pub arrival: u64,
    /// mbarrier waits and bulk stores.
    pub asy: ThreadAsync,
}

pub(crate) struct Cta<'a> {
    pub ctx: &'a LaunchCtx<'a>,
    pub ctaid: [u32; 3],
    pub nslots: usize,
    /// All threads' registers, thread t at `t * nslots`.
    pub regs: Vec<u64>,
    pub threads: Vec<Thread>,
    pub shared: SharedMem,
    /// Completed barriers (for the race checks).
    pub epoch: u32,
    /// Collectives executed per warp (for the race checks).
    pub warp_epochs: Vec<u32>,
    /// Instructions executed.
    pub executed: u64,
    /// Global-memory traffic of all threads.
    pub traffic: Traffic,
    /// `wgmma` state (warpgroups' in-flight operations; see `crate::wgmma`).
    pub wgmma: crate::wgmma::WgState,
    pub arrivals: u64,
    /// `bar.arrive` counts per barrier id.
    pub arrive_counts: [u32; 16],
    /// mbarriers and in-flight bulk loads.
    pub sync: CtaAsync,
    /// Per warp: the `setmaxnreg` instructions (pcs) it executed, and its register maximum.
    pub setmaxnreg: Vec<Vec<u32>>,
    pub maxnreg: Vec<Option<u16>>,
    /// Consecutive mbarrier-wait timeouts, and `sync.events` at the last one.
    timeouts: u32,
    timeout_events: u64,
}

fn lanemask(lane: u32, f: impl Fn(u32) -> bool) -> u64 {
    let _ = lane;
    (0..32).filter(|&l| f(l)).fold(0u64, |m, l| m | (1 << l))
}

impl<'a> Cta<'a> {
    pub(crate) fn new(ctx: &'a LaunchCtx<'a>, ctaid: [u32; 3]) -> Cta<'a> {
        let k = ctx.kernel;
        let n = k.init_regs.len();
        let nthreads = ctx.nthreads;
        let mut regs = Vec::with_capacity(n * nthreads);
        let nwarps = nthreads.div_ceil(32);
        for t in 0..nthreads {
            let start = regs.len();
            regs.extend_from_slice(&k.init_regs);
            let r = &mut regs[start..start + n];
            let tid = tid3(t, ctx.block);
            let lane = (t % 32) as u32;
            for i in 0..3 {
                r[(special::TID + i as u32) as usize] = tid[i] as u64;
                r[(special::NTID + i as u32) as usize] = ctx.block[i] as u64;
                r[(special::CTAID + i as u32) as usize] = ctaid[i] as u64;
                r[(special::NCTAID + i as u32) as usize] = ctx.grid[i] as u64;
            }
            r[special::LANEID as usize] = lane as u64;
            r[special::WARPID as usize] = (t / 32) as u64;
            r[special::NWARPID as usize] = nwarps as u64;
            r[special::SMID as usize] = 0;
            r[special::NSMID as usize] = 1;
            r[special::GRIDID as usize] = 0;
            r[special::LANEMASK_EQ as usize] = lanemask(lane, |l| l == lane);
            r[special::LANEMASK_LE as usize] = lanemask(lane, |l| l <= lane);
            r[special::LANEMASK_LT as usize] = lanemask(lane, |l| l < lane);
            r[special::LANEMASK_GE as usize] = lanemask(lane, |l| l >= lane);
            r[special::LANEMASK_GT as usize] = lanemask(lane, |l| l > lane);
            r[special::DYNAMIC_SMEM_SIZE as usize] = ctx.dynamic_bytes as u64;
            r[special::TOTAL_SMEM_SIZE as usize] = ctx.shared_bytes as u64;
            r[special::WARPSIZE as usize] = 32;
        }
        let threads = (0..nthreads)
            .map(|_| Thread {
                pc: 0,
                state: State::Ready,
                steps: 0,
                local: vec![0; k.local_bytes],
                copies: Vec::new(),
                committed: 0,
                arrival: 0,
                asy: ThreadAsync::default(),
            })
            .collect();
        let shadow = ctx.checks.then(|| Shadow::new(ctx.shared_bytes, nthreads));
        Cta {
            ctx,
            ctaid,
            nslots: n,
            regs,
            threads,
            shared: SharedMem { data: vec![0; ctx.shared_bytes], shadow },
            epoch: 0,
            warp_epochs: vec![0; nwarps],
            executed: 0,
            traffic: Traffic::default(),
            wgmma: Default::default(),
            arrivals: 0,
            arrive_counts: [0; 16],
            sync: CtaAsync::new(ctx.checks, ctx.block),
            setmaxnreg: vec![Vec::new(); nwarps],
            maxnreg: vec![None; nwarps],
            timeouts: 0,
            timeout_events: 0,
        }
    }

    /// The current access identity of thread `t` (for the shadow-memory checks).
    pub(crate) fn who(&self, t: usize) -> Who {
        let w = t / 32;
        Who { tid: t as u16, warp: w as u16, epoch: self.epoch, wepoch: self.warp_epochs[w] }
    }

    /// The hook for instructions that read shared memory through the async proxy outside the
    /// interpreter loop (a warpgroup-level `wgmma.mma_async` reading its shared-memory matrix
    /// descriptors' bytes): reads `len` bytes at shared offset `off` as thread `t`, with the bounds,
    /// in-flight, race and proxy-fence checks of [`SharedMem::async_read`]. `what` names the
    /// instruction in fault messages; a fault becomes a report with `line`.
    #[allow(dead_code)]
    pub(crate) fn async_proxy_read(&mut self, t: usize, line: u32, off: u64, len: usize, what: &str) -> Result<Vec<u8>, SimError> {
        let who = self.who(t);
        let block = self.ctx.block;
        match self.shared.async_read(off, len, &who, block, what) {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(f) => Err(SimError::Fault(self.report(t, line, f.address, f.kind))),
        }
    }

    /// Checks an async-proxy read like [`Cta::async_proxy_read`] without copying the bytes.
    #[allow(dead_code)]
    pub(crate) fn check_async_proxy_read(&mut self, t: usize, line: u32, off: u64, len: usize, what: &str) -> Result<(), SimError> {
        let who = self.who(t);
        let block = self.ctx.block;
        match self.shared.async_read(off, len, &who, block, what) {
            Ok(_) => Ok(()),
            Err(f) => Err(SimError::Fault(self.report(t, line, f.address, f.kind))),
        }
    }

    /// Whether thread `t`, blocked in an mbarrier wait, should run again: the mbarrier's phase
    /// changed (or it was invalidated), or a bulk copy that signals it is in flight.
    fn wakes(&self, t: usize) -> bool {
        let a = &self.threads[t].asy;
        match self.sync.bar(a.wait_bar) {
            None => true,
            Some(b) => b.phase != a.wait_phase || self.sync.loads.iter().any(|l| l.mbar == a.wait_bar),
        }
    }

    /// Lands every in-flight bulk load; whether there were any.
    fn land_all(&mut self) -> Result<bool, SimError> {
        match self.sync.land(None, &mut self.shared, &mut self.epoch) {
            Ok(any) => Ok(any),
            Err(e) => Err(SimError::Fault(self.report(e.tid as usize, e.line, e.fault.address, e.fault.kind))),
        }
    }

    /// Checks at the end of the CTA: every warp of a warpgroup executed the same `setmaxnreg`s.
    fn finish(&mut self) -> Result<(), SimError> {
        self.land_all()?;
        let nwarps = self.warp_epochs.len();
        for w in 0..nwarps {
            let g = w / 4;
            for w2 in g * 4..(g * 4 + 4).min(nwarps) {
                let (a, b) = (&self.setmaxnreg[w], &self.setmaxnreg[w2]);
                if a.len() > b.len() {
                    let line = self.ctx.kernel.code[a[b.len()] as usize].line;
                    return Err(SimError::Fault(self.report(
                        w * 32,
                        line,
                        None,
                        format!("setmaxnreg is executed by warp {w} but not by warp {w2} of the same warpgroup (.aligned: all warps of the warpgroup must execute it)"),
                    )));
                }
            }
        }
        Ok(())
    }

    /// A report about thread `t` at `line`.
    pub(crate) fn report(&self, t: usize, line: u32, address: Option<u64>, kind: impl Into<String>) -> Report {
        Report {
            kernel: self.ctx.kernel.name.clone(),
            cta: self.ctaid,
            thread: tid3(t, self.ctx.block),
            ptx_line: line as usize,
            address,
            kind: kind.into(),
        }
    }

    pub(crate) fn reg(&self, t: usize, slot: u32) -> u64 {
        self.regs[t * self.nslots + slot as usize]
    }

    pub(crate) fn set_reg(&mut self, t: usize, slot: u32, v: u64) {
        self.regs[t * self.nslots + slot as usize] = v;
    }

    /// Runs the CTA to completion.
    pub(crate) fn run(&mut self) -> Result<(), SimError> {
        let nwarps = self.warp_epochs.len();
        loop {
            if self.ctx.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            let mut progress = false;
            for w in 0..nwarps {
                progress |= self.run_warp(w)?;
            }
            if self.threads.iter().all(|t| t.state == State::Exited) {
                return self.finish();
            }
            progress |= self.resolve_barriers()?;
            if progress || self.land_all()? {
                continue;
            }
            let waiting: Vec<usize> = (0..self.ctx.nthreads).filter(|&t| self.threads[t].state == State::MbarWait).collect();
            if !waiting.is_empty() {
                if self.sync.events != self.timeout_events {
                    self.timeout_events = self.sync.events;
                    self.timeouts = 0;
                }
                if self.timeouts < MAX_TIMEOUTS {
                    self.timeouts += 1;
                    for t in waiting {
                        self.threads[t].asy.timeout = true;
                        self.threads[t].state = State::Ready;
                    }
                    continue;
                }
            }
            return Err(self.deadlock());
        }
    }

    fn run_warp(&mut self, w: usize) -> Result<bool, SimError> {
        let lanes = w * 32..((w + 1) * 32).min(self.ctx.nthreads);
        let mut any = false;
        loop {
            let mut ran = false;
            for t in lanes.clone() {
                let state = self.threads[t].state;
                if state == State::Ready || (state == State::MbarWait && self.wakes(t)) {
                    self.threads[t].state = State::Ready;
                    self.run_thread(t)?;
                    ran = true;
                }
            }
            let resolved = self.resolve_collectives(w)?;
            any |= ran || resolved;
            if !resolved {
                return Ok(any);
            }
        }
    }

    /// The barrier id and expected count of thread `t`, which waits at a `bar`.
    fn barrier_of(&self, t: usize) -> (u32, Option<u32>) {
        let inst = &self.ctx.kernel.code[self.threads[t].pc as usize];
        let id = self.reg(t, inst.a) as u32;
        let count = (inst.b != NONE).then(|| self.reg(t, inst.b) as u32);
        (id, count)
    }

    fn resolve_barriers(&mut self) -> Result<bool, SimError> {
        let n = self.ctx.nthreads;
        let mut progress = false;
        for id in 0..16u32 {
            let mut waiting: Vec<usize> =
                (0..n).filter(|&t| self.threads[t].state == State::Barrier && self.barrier_of(t).0 == id).collect();
            if waiting.is_empty() {
                continue;
            }
            waiting.sort_by_key(|&t| self.threads[t].arrival);
            let first = waiting[0];
            let count = self.barrier_of(first).1;
            // PTX ISA "bar, barrier": the warps using one barrier use the same thread count.
            if let Some(&other) = waiting.iter().find(|&&t| self.barrier_of(t).1 != count) {
                let fmt = |c: Option<u32>| c.map_or("all threads".to_string(), |c| format!("{c} threads"));
                let line = self.ctx.kernel.code[self.threads[other].pc as usize].line;
                return Err(SimError::Fault(self.report(
                    other,
                    line,
                    None,
                    format!("barrier {id} is used with different thread counts: {} and {}", fmt(count), fmt(self.barrier_of(other).1)),
                )));
            }
            let release: Vec<usize> = match count {
                None => {
                    let exited = self.threads.iter().filter(|t| t.state == State::Exited).count();
                    if waiting.len() + exited == n && exited > 0 {
                        let gone = (0..n).find(|&t| self.threads[t].state == State::Exited).unwrap_or(0);
                        let line = self.ctx.kernel.code[self.threads[first].pc as usize].line;
                        let g = tid3(gone, self.ctx.block);
                        return Err(SimError::Deadlock(self.report(
                            first,
                            line,
                            None,
                            format!(
                                "barrier divergence: {} threads wait at barrier {id} but thread ({}, {}, {}) has exited",
                                waiting.len(),
                                g[0],
                                g[1],
                                g[2]
                            ),
                        )));
                    }
                    if waiting.len() < n {
                        continue;
                    }
                    waiting
                }
                Some(c) => {
                    let have = waiting.len() as u32 + self.arrive_counts[id as usize];
                    if have < c {
                        continue;
                    }
                    let from_waiters = (c.saturating_sub(self.arrive_counts[id as usize]) as usize).min(waiting.len());
                    self.arrive_counts[id as usize] = self.arrive_counts[id as usize].saturating_sub(c - from_waiters as u32);
                    waiting.truncate(from_waiters);
                    waiting
                }
            };
            // All threads of a full barrier must be at the same instruction.
            let pc0 = self.threads[release[0]].pc;
            if count.is_none() {
                if let Some(&other) = release.iter().find(|&&t| self.threads[t].pc != pc0) {
                    let code = &self.ctx.kernel.code;
                    let o = tid3(other, self.ctx.block);
                    return Err(SimError::Deadlock(self.report(
                        release[0],
                        code[pc0 as usize].line,
                        None,
                        format!(
                            "barrier divergence: threads wait at different barriers: this one at PTX line {}, thread ({}, {}, {}) at PTX line {}",
                            code[pc0 as usize].line,
                            o[0],
                            o[1],
                            o[2],
                            code[self.threads[other].pc as usize].line
                        ),
                    )));
                }
            }
            self.executed += release.len() as u64;
            for t in release {
                let th = &mut self.threads[t];
                th.state = State::Ready;
                th.pc += 1;
                th.steps += 1;
            }
            self.epoch += 1;
            self.sync.events += 1;
            progress = true;
        }
        Ok(progress)
    }

    /// Explains why nothing can run.
    fn deadlock(&self) -> SimError {
        if let Some(e) = self.wgmma_deadlock() {
            return e;
        }
        let code = &self.ctx.kernel.code;
        let n = self.ctx.nthreads;
        let describe = |t: usize| -> String {
            let th = &self.threads[t];
            match th.state {
                State::Exited => "has exited".to_string(),
                State::Ready => "is runnable".to_string(),
                State::Barrier => format!("waits at a barrier (PTX line {})", code[th.pc as usize].line),
                State::Collective => {
                    format!("waits at `{}` (PTX line {})", op_name(&code[th.pc as usize].op), code[th.pc as usize].line)
                }
                State::MbarWait => format!(
                    "waits on the mbarrier at shared offset {:#x} (PTX line {})",
                    th.asy.wait_bar,
                    code[th.pc as usize].line
                ),
            }
        };
        let fmt = |t: usize| {
            let [x, y, z] = tid3(t, self.ctx.block);
            format!("({x}, {y}, {z})")
        };
        // A collective first: its warp is the narrower story.
        if let Some(t) = (0..n).find(|&t| self.threads[t].state == State::Collective) {
            let pc = self.threads[t].pc;
            let inst = &code[pc as usize];
            let mask = self.member_mask(t);
            let base = t - t % 32;
            let missing = (0..32usize)
                .filter(|l| mask & (1 << l) != 0)
                .map(|l| base + l)
                .find(|&u| u >= n || self.threads[u].state != State::Collective || self.threads[u].pc != pc);
            let why = match missing {
                Some(u) if u >= n => format!("its member mask names lane {}, which does not exist", u - base),
                Some(u) => format!("lane {} (thread {}) {}", u - base, fmt(u), describe(u)),
                None => "its lanes disagree on the member mask".to_string(),
            };
            return SimError::Deadlock(self.report(
                t,
                inst.line,
                None,
                format!("warp collective `{}` cannot complete: {why}", op_name(&inst.op)),
            ));
        }
        if !(0..n).any(|t| self.threads[t].state == State::Barrier) {
            if let Some(t) = (0..n).find(|&t| self.threads[t].state == State::MbarWait) {
                let a = &self.threads[t].asy;
                let line = code[self.threads[t].pc as usize].line;
                let state = match self.sync.bar(a.wait_bar) {
                    Some(b) => format!("{} of {} arrivals pending and tx-count {}", b.pending, b.expected, b.tx),
                    None => "been invalidated".to_string(),
                };
                let count = |s: State| (0..n).filter(|&u| self.threads[u].state == s).count();
                return SimError::Deadlock(self.report(
                    t,
                    line,
                    Some(a.wait_bar as u64),
                    format!(
                        "mbarrier wait cannot complete: this thread waits for the completion of phase {} of the mbarrier at shared \
                         offset {:#x}, which has {state}, and no thread can arrive on it ({} threads wait on mbarriers, {} have exited)",
                        a.wait_phase,
                        a.wait_bar,
                        count(State::MbarWait),
                        count(State::Exited)
                    ),
                ));
            }
        }
        let t = (0..n).find(|&t| self.threads[t].state == State::Barrier).unwrap_or(0);
        let (id, count) = self.barrier_of(t);
        let other = (0..n).find(|&u| {
            self.threads[u].state != State::Barrier || self.barrier_of(u).0 != id || self.threads[u].pc != self.threads[t].pc
        });
        let kind = match (other, count) {
            (Some(u), _) => format!("barrier divergence: this thread waits at barrier {id}, thread {} {}", fmt(u), describe(u)),
            (None, Some(c)) => format!("barrier {id} waits for {c} threads, which never arrive"),
            (None, None) => format!("barrier {id} cannot complete"),
        };
        SimError::Deadlock(self.report(t, code[self.threads[t].pc as usize].line, None, kind))
    }
}

/// A short name of a blocking instruction for messages.
pub(crate) fn op_name(op: &Op) -> String {
    match op {
        Op::Coll(c) => match c {
            Coll::Shfl(m) => format!("shfl.sync.{}", format!("{m:?}").to_lowercase()),
            Coll::Vote(m) => format!("vote.sync.{}", format!("{m:?}").to_lowercase()),
            Coll::Redux(_) => "redux.sync".into(),
            Coll::MatchAny => "match.any.sync".into(),
            Coll::MatchAll => "match.all.sync".into(),
            Coll::WarpSync => "bar.warp.sync".into(),
            Coll::ActiveMask => "activemask".into(),
            Coll::LdMatrix { num, trans } => format!("ldmatrix.x{num}{}", if *trans { ".trans" } else { "" }),
            Coll::Mma(s) => format!("mma.sync.m16n8k{}", s.k),
            Coll::Elect => "elect.sync".into(),
            Coll::SetMaxNReg { inc, n } => format!("setmaxnreg.{}.sync.aligned.u32 {n}", if *inc { "inc" } else { "dec" }),
            Coll::StMatrix { num, trans, .. } => format!("stmatrix.x{num}{}", if *trans { ".trans" } else { "" }),
            Coll::Wgmma(w) => crate::wgmma::op_name(*w),
        },
        Op::Bar { .. } => "bar.sync".into(),
        other => format!("{other:?}"),
    }
}
