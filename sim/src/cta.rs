//! One CTA: its threads, shared memory and the scheduler that interleaves them.
//!
//! Threads run one at a time, each until it blocks: at a CTA barrier, at a warp collective, or at
//! exit. Warps are run in order, and inside a warp the lanes in order; once every lane of a warp is
//! blocked, the collectives whose member lanes have all arrived execute (and their lanes run on),
//! and once every warp is blocked, barriers whose threads have all arrived release. If nothing can
//! move, the CTA is deadlocked: divergent barriers, a thread that exited while others wait, or a
//! collective a lane never reaches. That is reported, never waited on.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::checks::Shadow;
use crate::ir::{special, Coll, Kernel, Op, NONE};
use crate::memory::GlobalMemory;
use crate::space::{tid3, GlobalView, SharedMem, Traffic};
use crate::{Report, SimError};

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
    pub arrivals: u64,
    /// `bar.arrive` counts per barrier id.
    pub arrive_counts: [u32; 16],
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
            })
            .collect();
        let shadow = ctx.checks.then(|| Shadow::new(ctx.shared_bytes));
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
            arrivals: 0,
            arrive_counts: [0; 16],
        }
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
                return Ok(());
            }
            progress |= self.resolve_barriers()?;
            if !progress {
                return Err(self.deadlock());
            }
        }
    }

    fn run_warp(&mut self, w: usize) -> Result<bool, SimError> {
        let lanes = w * 32..((w + 1) * 32).min(self.ctx.nthreads);
        let mut any = false;
        loop {
            let mut ran = false;
            for t in lanes.clone() {
                if self.threads[t].state == State::Ready {
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
            progress = true;
        }
        Ok(progress)
    }

    /// Explains why nothing can run.
    fn deadlock(&self) -> SimError {
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
        },
        Op::Bar { .. } => "bar.sync".into(),
        other => format!("{other:?}"),
    }
}
