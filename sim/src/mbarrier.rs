//! mbarrier objects (PTX ISA "Parallel Synchronization and Communication Instructions: mbarrier")
//! and the bulk copies that complete on them.
//!
//! An mbarrier is an 8-byte object in shared memory. The simulator keeps its state beside the
//! shared bytes, keyed by offset ([`CtaAsync::bars`]): the current phase, the pending arrival
//! count, the expected arrival count and the tx-count ("Contents of the mbarrier object"). The
//! current phase completes when the pending count and the tx-count are both zero ("Phase Completion
//! of the mbarrier object"); then the phase advances and the pending count is reloaded with the
//! expected count. Misuse is a fault, not undefined behaviour: any operation but `init` on memory
//! without a valid object, `init` on a valid one, an arrive-on with more arrivals than are pending,
//! a tx-count outside ±(2^20 - 1), a phase that can never complete because its tx-count went below
//! zero with no arrivals pending (more bytes completed than were expected), a `.noComplete` arrive
//! that completes the phase, a wait `state` from another object or an older phase, a parity other
//! than 0 or 1. With checks on, the bytes of a valid object are guarded against every non-mbarrier
//! access (see `checks`), and an operation by another thread than the initialising one must be
//! ordered after the `mbarrier.init` by a barrier.
//!
//! Bulk copies into shared memory (`cp.async.bulk`, `cp.async.bulk.tensor`) read global memory when
//! issued and mark their destination bytes in flight; they *land* (write shared memory, then
//! perform complete-tx on their mbarrier) when a thread waits on that mbarrier, or when nothing else
//! in the CTA can run. So no wait on the phase can succeed before the data is there, and a read of
//! the destination before the wait is reported as a read of bytes in flight.
//!
//! Bulk stores (shared -> global, bulk async-groups) read their shared source when issued, through
//! the async proxy (the proxy-fence check), keep those bytes marked as being read until
//! `cp.async.bulk.wait_group.read` (or a plain `wait_group`, or exit), and write global memory at
//! `cp.async.bulk.wait_group` or when the issuing thread exits.
//!
//! A phase completion counts as a CTA-wide ordering point for the race checks (it advances the CTA
//! epoch), like a completed `bar.sync`.

use crate::checks::{ordered_before, Who};
use crate::ir::ArriveKind;
use crate::space::{Fault, SharedMem};

/// The most an mbarrier count may be (2^20 - 1).
pub(crate) const MAX_COUNT: i64 = (1 << 20) - 1;

/// One valid mbarrier object.
#[derive(Debug, Clone)]
pub(crate) struct MBarrier {
    /// Offset in shared memory.
    pub off: u32,
    pub expected: u32,
    pub pending: u32,
    pub tx: i64,
    /// Phases completed since init.
    pub phase: u64,
    /// The initialising thread and its epochs then (for the visibility check).
    pub init: Who,
}

/// A bulk copy into shared memory that has not landed yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingLoad {
    /// The issuing thread (epoch refreshed when the copy lands).
    pub issuer: Who,
    /// PTX line of the copy instruction.
    pub line: u32,
    /// Shared offset of the mbarrier that receives complete-tx.
    pub mbar: u32,
    /// The complete-tx count.
    pub bytes: u32,
    /// Destination shared offset (after swizzling) and contents of every 16-byte chunk.
    pub chunks: Vec<(u32, [u8; 16])>,
}

/// A fault that belongs to another thread and line than the running instruction's (a copy that
/// lands while someone else waits).
#[derive(Debug, Clone)]
pub(crate) struct SyncFault {
    pub tid: u16,
    pub line: u32,
    pub fault: Fault,
}

/// The CTA's mbarriers and in-flight bulk loads.
#[derive(Debug, Default)]
pub(crate) struct CtaAsync {
    pub bars: Vec<MBarrier>,
    pub loads: Vec<PendingLoad>,
    /// Counts every change of mbarrier, barrier or thread state (deadlock detection: the scheduler
    /// times out waiting threads only while something changes).
    pub events: u64,
    pub checks: bool,
    /// The CTA's shape (for messages).
    pub block: [u32; 3],
}

/// A bulk store (shared -> global) of one thread.
#[derive(Debug, Clone)]
pub(crate) struct PendingStore {
    /// The bulk async-group it belongs to (numbered from 0 in commit order).
    pub group: u32,
    /// Shared offsets of the 16-byte source chunks still marked as being read.
    pub src_chunks: Vec<u32>,
    /// Global writes: address and bytes.
    pub writes: Vec<(u64, Vec<u8>)>,
}

/// A thread's asynchronous state beyond cp.async.
#[derive(Debug, Default)]
pub(crate) struct ThreadAsync {
    /// The mbarrier this thread waits on (shared offset) and its phase when the thread blocked.
    pub wait_bar: u32,
    pub wait_phase: u64,
    /// The next mbarrier wait returns false instead of blocking (the scheduler timed it out).
    pub timeout: bool,
    /// Bulk stores in issue order.
    pub stores: Vec<PendingStore>,
    /// Bulk async-groups committed so far.
    pub committed: u32,
}

fn fault(off: u32, msg: impl Into<String>) -> Fault {
    Fault::new(Some(off as u64), msg)
}

/// The opaque `state` an arrive returns: the object's offset (plus one) above the low 32 bits of
/// the phase it arrived in.
fn encode_state(off: u32, phase: u64) -> u64 {
    ((off as u64 + 1) << 32) | (phase & 0xffff_ffff)
}

impl CtaAsync {
    pub(crate) fn new(checks: bool, block: [u32; 3]) -> CtaAsync {
        CtaAsync { checks, block, ..CtaAsync::default() }
    }

    fn fmt(&self, tid: u16) -> String {
        let [x, y, z] = crate::space::tid3(tid as usize, self.block);
        format!("({x}, {y}, {z})")
    }

    fn index(&self, off: u32) -> Option<usize> {
        self.bars.iter().position(|b| b.off == off)
    }

    pub(crate) fn bar(&self, off: u32) -> Option<&MBarrier> {
        self.bars.iter().find(|b| b.off == off)
    }

    /// The valid object at `off` for operation `what` by `who`, checking (with checks on) that its
    /// initialisation is ordered before this use.
    fn valid(&mut self, off: u32, who: &Who, what: &str) -> Result<usize, Fault> {
        let Some(i) = self.index(off) else {
            return Err(fault(off, format!("{what} on shared memory that holds no valid mbarrier object (missing mbarrier.init?)")));
        };
        if self.checks && !ordered_before(&self.bars[i].init, who) {
            return Err(fault(
                off,
                format!(
                    "{what} by thread {} on an mbarrier that thread {} initialised without a barrier in between (missing bar.sync after mbarrier.init?)",
                    self.fmt(who.tid),
                    self.fmt(self.bars[i].init.tid)
                ),
            ));
        }
        Ok(i)
    }

    /// mbarrier.init: phase 0, expected and pending `count`, tx-count 0.
    pub(crate) fn init(&mut self, off: u32, count: u64, who: &Who, shared: &mut SharedMem) -> Result<(), Fault> {
        if self.index(off).is_some() {
            return Err(fault(off, "mbarrier.init on a valid mbarrier object (mbarrier.inval it first)"));
        }
        if !(1..=MAX_COUNT as u64).contains(&count) {
            return Err(fault(off, format!("mbarrier.init count {count} is not in 1..=2^20-1")));
        }
        if let Some(sh) = shared.shadow.as_mut() {
            sh.check_free(off as usize, 8)
                .map_err(|c| crate::space::conflict_fault(c, who.tid as usize, self.block, "mbarrier.init"))?;
            sh.set_mbarrier(off as usize, true);
        }
        self.bars.push(MBarrier { off, expected: count as u32, pending: count as u32, tx: 0, phase: 0, init: *who });
        self.events += 1;
        Ok(())
    }

    /// mbarrier.inval.
    pub(crate) fn inval(&mut self, off: u32, who: &Who, shared: &mut SharedMem) -> Result<(), Fault> {
        let i = self.valid(off, who, "mbarrier.inval")?;
        if self.loads.iter().any(|l| l.mbar == off) {
            return Err(fault(off, "mbarrier.inval while a bulk copy will still signal complete-tx on the object"));
        }
        self.bars.remove(i);
        if let Some(sh) = shared.shadow.as_mut() {
            sh.set_mbarrier(off as usize, false);
        }
        self.events += 1;
        Ok(())
    }

    /// Completes the current phase of bar `i` if it is complete; checks the tx-count.
    fn settle(&mut self, i: usize, epoch: &mut u32, what: &str) -> Result<(), Fault> {
        let b = &mut self.bars[i];
        if b.tx.abs() > MAX_COUNT {
            return Err(fault(b.off, format!("{what}: the tx-count of the mbarrier is {}, outside ±(2^20-1)", b.tx)));
        }
        if b.pending == 0 && b.tx < 0 {
            return Err(fault(
                b.off,
                format!(
                    "{what}: tx-count underflow: {} more bytes completed than were expected in phase {} with no arrivals \
                     pending, so the phase can never complete",
                    -b.tx, b.phase
                ),
            ));
        }
        if b.pending == 0 && b.tx == 0 {
            b.phase += 1;
            b.pending = b.expected;
            *epoch += 1;
        }
        self.events += 1;
        Ok(())
    }

    /// mbarrier.arrive / arrive_drop: returns the state (the phase before the arrive-on).
    pub(crate) fn arrive(&mut self, off: u32, kind: ArriveKind, arg: Option<u64>, who: &Who, epoch: &mut u32) -> Result<u64, Fault> {
        let what = match kind {
            ArriveKind::Arrive | ArriveKind::NoComplete => "mbarrier.arrive",
            ArriveKind::ExpectTx => "mbarrier.arrive.expect_tx",
            ArriveKind::Drop => "mbarrier.arrive_drop",
            ArriveKind::DropExpectTx => "mbarrier.arrive_drop.expect_tx",
        };
        let i = self.valid(off, who, what)?;
        let (count, tx) = match kind {
            ArriveKind::ExpectTx | ArriveKind::DropExpectTx => (1, arg.unwrap_or(0)),
            _ => (arg.unwrap_or(1), 0),
        };
        if !(1..=MAX_COUNT as u64).contains(&count) || tx > MAX_COUNT as u64 {
            return Err(fault(off, format!("{what} count {} is not in 1..=2^20-1", if tx > 0 { tx } else { count })));
        }
        let b = &mut self.bars[i];
        let state = encode_state(off, b.phase);
        b.tx += tx as i64;
        if count > b.pending as u64 {
            return Err(fault(
                off,
                format!("{what} with count {count} but only {} arrivals are pending in phase {}", b.pending, b.phase),
            ));
        }
        if matches!(kind, ArriveKind::Drop | ArriveKind::DropExpectTx) {
            b.expected -= count.min(b.expected as u64) as u32;
        }
        b.pending -= count as u32;
        if kind == ArriveKind::NoComplete && b.pending == 0 && b.tx == 0 {
            return Err(fault(off, "mbarrier.arrive.noComplete completes the current phase"));
        }
        self.settle(i, epoch, what)?;
        Ok(state)
    }

    /// mbarrier.expect_tx (`complete == false`) or mbarrier.complete_tx of `count` bytes.
    pub(crate) fn tx(&mut self, off: u32, complete: bool, count: u64, who: &Who, epoch: &mut u32) -> Result<(), Fault> {
        let what = if complete { "mbarrier.complete_tx" } else { "mbarrier.expect_tx" };
        let i = self.valid(off, who, what)?;
        if count > MAX_COUNT as u64 {
            return Err(fault(off, format!("{what} count {count} is not in 0..=2^20-1")));
        }
        self.bars[i].tx += if complete { -(count as i64) } else { count as i64 };
        self.settle(i, epoch, what)
    }

    /// Whether the phase a test_wait / try_wait names (by `state`, or by `parity`) has completed.
    pub(crate) fn test(&mut self, off: u32, parity: bool, operand: u64, who: &Who) -> Result<bool, Fault> {
        let what = if parity { "mbarrier wait (.parity)" } else { "mbarrier wait" };
        let i = self.valid(off, who, what)?;
        let phase = self.bars[i].phase;
        if parity {
            if operand > 1 {
                return Err(fault(off, format!("{what}: phase parity {operand} is not 0 or 1")));
            }
            return Ok(phase & 1 != operand);
        }
        if operand >> 32 != off as u64 + 1 {
            return Err(fault(off, format!("{what}: the state operand {operand:#x} was not returned by an arrive on this mbarrier")));
        }
        let (s, cur) = (operand as u32, phase as u32);
        if s == cur {
            Ok(false)
        } else if s.wrapping_add(1) == cur {
            Ok(true)
        } else {
            Err(fault(
                off,
                format!("{what}: the state is from phase {s}, the mbarrier is in phase {cur}: only the current or the immediately preceding phase may be tested"),
            ))
        }
    }

    /// Lands the pending bulk loads (those signalling `only`, or all): writes their chunks into
    /// shared memory and performs their complete-tx. Whether any landed.
    pub(crate) fn land(&mut self, only: Option<u32>, shared: &mut SharedMem, epoch: &mut u32) -> Result<bool, SyncFault> {
        let mut any = false;
        let mut i = 0;
        while i < self.loads.len() {
            if only.is_some_and(|m| self.loads[i].mbar != m) {
                i += 1;
                continue;
            }
            let load = self.loads.remove(i);
            any = true;
            let who = Who { epoch: *epoch, ..load.issuer };
            for (off, bytes) in &load.chunks {
                let o = *off as usize;
                shared.data[o..o + 16].copy_from_slice(bytes);
                if let Some(sh) = shared.shadow.as_mut() {
                    sh.finish_async(o, 16, &who);
                }
            }
            let at = |f: Fault| SyncFault { tid: load.issuer.tid, line: load.line, fault: f };
            let Some(b) = self.index(load.mbar) else {
                return Err(at(fault(load.mbar, "bulk copy complete-tx on shared memory that no longer holds a valid mbarrier object")));
            };
            self.bars[b].tx -= load.bytes as i64;
            self.settle(b, epoch, "bulk copy complete-tx").map_err(at)?;
        }
        Ok(any)
    }
}
