//! Shared-memory checking: data races between barriers, reads of never-written bytes, accesses to
//! bytes an asynchronous copy (`cp.async`, `cp.async.bulk{.tensor}`) is still writing, plain
//! accesses to valid mbarrier objects, writes to bytes a bulk store is still reading, and
//! async-proxy reads of generic-proxy writes that no `fence.proxy.async` ordered.
//!
//! Every byte of a CTA's shared memory has a shadow [`Cell`] recording its last writer and its
//! readers, each with the *epochs* of the access: the CTA epoch counts completed `bar.sync`s, and
//! every warp has its own epoch counting the collectives it executed (`shfl.sync`, `ldmatrix`,
//! `mma.sync`, `bar.warp.sync`, ...; like `__syncwarp`, they order the memory accesses of the lanes
//! that take part). An earlier access by thread p is ordered before the current access by thread u
//! when p == u (program order), or a CTA barrier completed since (epoch advanced), or p and u are in
//! the same warp and that warp executed a collective since. Two accesses to the same byte, at least
//! one a write, that are not ordered are a race.
//!
//! Readers are kept compactly: the last reader, or "several readers" together with the warp they
//! all belong to (or "several warps"). With several readers of one warp the latest read's warp
//! epoch is kept, so a write by a lane that itself read the byte earlier in a later warp epoch than
//! another lane may be reported although it is ordered (a pattern Tessera's kernels do not have).
//! Barriers with an explicit thread count order all threads for this purpose (a race across a
//! partial barrier can go unreported, never a false one). Atomics are not race-checked. The
//! completion of an mbarrier phase counts as a CTA barrier too (it advances the CTA epoch), so a
//! thread that reads without waiting on the mbarrier may go unreported once some other thread's
//! wait has completed the phase; reads of bytes a bulk copy has not delivered yet are always
//! reported, because bulk copies land only when their mbarrier is waited on.
//!
//! Proxies (PTX ISA "Async Proxy"): a byte written through the generic proxy (`st`, `atom`, ...)
//! remembers its writer's count of executed `fence.proxy.async` at the time of the write; an
//! async-proxy read (the source of a bulk or tensor store; later `wgmma` operands) of that byte is
//! reported unless the writer has executed a `fence.proxy.async` since. Bytes written by an
//! asynchronous copy need no fence (their completion implies one). The read is race-checked like
//! any other, so the barrier that must separate the writer's fence from the reader is checked too.
//! Non-bulk `cp.async` completions are exempt as well: the ISA places only bulk copies in the async
//! proxy, but CUTLASS's cp.async + wgmma mainloops hand cp.async data to wgmma without a proxy
//! fence, so the simulator does not report that pattern (a missed report, never a false one).

/// No thread.
const NO_TID: u16 = u16::MAX;
/// Several threads.
const MULTI: u16 = u16::MAX - 1;

const WRITTEN: u8 = 1;
/// A `cp.async` will still write the byte.
const IN_FLIGHT: u8 = 2;
/// Last written through the generic proxy (see `Cell::w_fence`).
const GENERIC: u8 = 4;
/// Part of a valid mbarrier object.
const MBAR: u8 = 8;
/// An asynchronous operation (a bulk store, a wgmma) still reads the byte.
const READING: u8 = 16;
/// A bulk copy (`cp.async.bulk{.tensor}`) will still write the byte.
const IN_FLIGHT_BULK: u8 = 32;

#[derive(Debug, Clone, Copy)]
struct Cell {
    w_tid: u16,
    r_tid: u16,
    r_warp: u16,
    flags: u8,
    w_epoch: u32,
    w_wepoch: u32,
    r_epoch: u32,
    r_wepoch: u32,
    /// The writer's `fence.proxy.async` count at a generic-proxy write.
    w_fence: u32,
}

const EMPTY: Cell =
    Cell { w_tid: NO_TID, r_tid: NO_TID, r_warp: NO_TID, flags: 0, w_epoch: 0, w_wepoch: 0, r_epoch: 0, r_wepoch: 0, w_fence: 0 };

/// The thread making an access and the current epochs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who {
    pub tid: u16,
    pub warp: u16,
    /// CTA epoch (completed barriers).
    pub epoch: u32,
    /// This thread's warp epoch.
    pub wepoch: u32,
}

/// Whether an access by `p` (its thread and epochs then) is ordered before `who`'s current one: the
/// same thread, a CTA barrier (or mbarrier phase) completed since, or the same warp and a warp
/// collective since.
pub(crate) fn ordered_before(p: &Who, who: &Who) -> bool {
    p.tid == who.tid || p.epoch < who.epoch || (p.warp == who.warp && p.wepoch < who.wepoch)
}

/// What a check found, at byte offset `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// An earlier access by `other` conflicts with this one.
    Race { offset: usize, other: u16, other_wrote: bool, other_readers_multi: bool, this_writes: bool },
    /// Read of a byte nothing has written.
    Uninitialised { offset: usize },
    /// Access to a byte an asynchronous copy is still writing (`bulk`: a `cp.async.bulk{.tensor}`,
    /// else a `cp.async`).
    InFlight { offset: usize, bulk: bool },
    /// A plain access to a byte of a valid mbarrier object.
    Mbarrier { offset: usize },
    /// A write to a byte an asynchronous operation (a bulk store, a wgmma) is still reading.
    BeingRead { offset: usize },
    /// An async-proxy read of a byte `writer` wrote through the generic proxy without a
    /// `fence.proxy.async` since.
    Unfenced { offset: usize, writer: u16 },
}

/// Shadow state of a CTA's shared memory.
pub(crate) struct Shadow {
    cells: Vec<Cell>,
    warps_per_tid: u16,
    /// `fence.proxy.async` instructions executed, per thread.
    fences: Vec<u32>,
}

impl Shadow {
    pub(crate) fn new(bytes: usize, threads: usize) -> Shadow {
        Shadow { cells: vec![EMPTY; bytes], warps_per_tid: 32, fences: vec![0; threads] }
    }

    fn flag_conflict(flags: u8, offset: usize) -> Conflict {
        if flags & IN_FLIGHT != 0 {
            Conflict::InFlight { offset, bulk: false }
        } else if flags & IN_FLIGHT_BULK != 0 {
            Conflict::InFlight { offset, bulk: true }
        } else if flags & MBAR != 0 {
            Conflict::Mbarrier { offset }
        } else {
            Conflict::BeingRead { offset }
        }
    }

    /// Thread `tid` executed a `fence.proxy.async`.
    pub(crate) fn fence_proxy_async(&mut self, tid: usize) {
        if let Some(f) = self.fences.get_mut(tid) {
            *f += 1;
        }
    }

    /// Marks the 8 bytes at `off` as a valid mbarrier object (init) or not (inval).
    pub(crate) fn set_mbarrier(&mut self, off: usize, valid: bool) {
        for cell in &mut self.cells[off..off + 8] {
            if valid {
                cell.flags |= MBAR;
            } else {
                cell.flags &= !MBAR;
            }
        }
    }

    /// Checks that no byte of `[off, off + len)` is part of a valid mbarrier object, in flight or
    /// being read (mbarrier.init may not repurpose such memory).
    pub(crate) fn check_free(&self, off: usize, len: usize) -> Result<(), Conflict> {
        for i in off..off + len {
            let f = self.cells[i].flags;
            if f & (IN_FLIGHT | IN_FLIGHT_BULK | MBAR | READING) != 0 {
                return Err(Self::flag_conflict(f, i));
            }
        }
        Ok(())
    }

    fn warp_of(&self, tid: u16) -> u16 {
        tid / self.warps_per_tid
    }

    /// Whether an access by `tid` in (`epoch`, `wepoch`) is ordered before `who`'s current one.
    fn ordered(&self, tid: u16, epoch: u32, wepoch: u32, who: &Who) -> bool {
        tid == who.tid || epoch < who.epoch || (self.warp_of(tid) == who.warp && wepoch < who.wepoch)
    }

    /// Checks and records a read of `[off, off + len)`.
    pub(crate) fn read(&mut self, off: usize, len: usize, who: &Who) -> Result<(), Conflict> {
        self.read_as(off, len, who, false)
    }

    /// Checks and records an async-proxy read of `[off, off + len)`: a read, and every byte last
    /// written through the generic proxy must have been fenced by its writer since.
    pub(crate) fn async_read(&mut self, off: usize, len: usize, who: &Who) -> Result<(), Conflict> {
        self.read_as(off, len, who, true)
    }

    fn read_as(&mut self, off: usize, len: usize, who: &Who, async_proxy: bool) -> Result<(), Conflict> {
        for i in off..off + len {
            let c = self.cells[i];
            if c.flags & (IN_FLIGHT | IN_FLIGHT_BULK | MBAR) != 0 {
                return Err(Self::flag_conflict(c.flags & !READING, i));
            }
            if async_proxy && c.flags & GENERIC != 0 && c.w_tid != NO_TID && self.fences[c.w_tid as usize] <= c.w_fence {
                return Err(Conflict::Unfenced { offset: i, writer: c.w_tid });
            }
            if c.flags & WRITTEN == 0 {
                return Err(Conflict::Uninitialised { offset: i });
            }
            if c.w_tid != NO_TID && !self.ordered(c.w_tid, c.w_epoch, c.w_wepoch, who) {
                return Err(Conflict::Race {
                    offset: i,
                    other: c.w_tid,
                    other_wrote: true,
                    other_readers_multi: false,
                    this_writes: false,
                });
            }
            let cell = &mut self.cells[i];
            if cell.r_tid == NO_TID || cell.r_epoch < who.epoch || cell.r_tid == who.tid {
                if cell.r_tid == who.tid && cell.r_epoch == who.epoch {
                    cell.r_wepoch = who.wepoch;
                } else {
                    cell.r_tid = who.tid;
                    cell.r_warp = who.warp;
                    cell.r_epoch = who.epoch;
                    cell.r_wepoch = who.wepoch;
                }
            } else {
                // A second distinct reader in this epoch.
                if cell.r_warp != who.warp {
                    cell.r_warp = MULTI;
                }
                cell.r_tid = MULTI;
                cell.r_wepoch = cell.r_wepoch.max(who.wepoch);
            }
        }
        Ok(())
    }

    /// Checks and records a (generic-proxy) write of `[off, off + len)`.
    pub(crate) fn write(&mut self, off: usize, len: usize, who: &Who) -> Result<(), Conflict> {
        let fence = self.fences.get(who.tid as usize).copied().unwrap_or(0);
        for i in off..off + len {
            let c = self.cells[i];
            if c.flags & (IN_FLIGHT | IN_FLIGHT_BULK | MBAR | READING) != 0 {
                return Err(Self::flag_conflict(c.flags, i));
            }
            self.check_write(i, &c, who)?;
            let cell = &mut self.cells[i];
            cell.flags |= WRITTEN | GENERIC;
            cell.w_fence = fence;
            cell.w_tid = who.tid;
            cell.w_epoch = who.epoch;
            cell.w_wepoch = who.wepoch;
            // Every earlier read is ordered before this write (checked above), so before anything
            // ordered after it: forget them.
            cell.r_tid = NO_TID;
        }
        Ok(())
    }

    fn check_write(&self, i: usize, c: &Cell, who: &Who) -> Result<(), Conflict> {
        if c.w_tid != NO_TID && !self.ordered(c.w_tid, c.w_epoch, c.w_wepoch, who) {
            return Err(Conflict::Race { offset: i, other: c.w_tid, other_wrote: true, other_readers_multi: false, this_writes: true });
        }
        if c.r_tid != NO_TID && c.r_epoch == who.epoch {
            let ordered = if c.r_tid == MULTI {
                c.r_warp == who.warp && c.r_wepoch < who.wepoch
            } else {
                self.ordered(c.r_tid, c.r_epoch, c.r_wepoch, who)
            };
            if !ordered {
                return Err(Conflict::Race {
                    offset: i,
                    other: c.r_tid,
                    other_wrote: false,
                    other_readers_multi: c.r_tid == MULTI,
                    this_writes: true,
                });
            }
        }
        Ok(())
    }

    /// An asynchronous copy into `[off, off + len)` was issued (`bulk`: a cp.async.bulk{.tensor},
    /// else a cp.async): the bytes are in flight until it completes.
    pub(crate) fn start_async(&mut self, off: usize, len: usize, who: &Who, bulk: bool) -> Result<(), Conflict> {
        for i in off..off + len {
            let c = self.cells[i];
            if c.flags & (IN_FLIGHT | IN_FLIGHT_BULK | MBAR | READING) != 0 {
                return Err(Self::flag_conflict(c.flags, i));
            }
            self.check_write(i, &c, who)?;
        }
        let flag = if bulk { IN_FLIGHT_BULK } else { IN_FLIGHT };
        for cell in &mut self.cells[off..off + len] {
            cell.flags |= flag;
        }
        Ok(())
    }

    /// The asynchronous copy into `[off, off + len)` completed: a write by its issuing thread, now,
    /// through the async proxy (so no proxy fence is needed before async-proxy reads).
    pub(crate) fn finish_async(&mut self, off: usize, len: usize, who: &Who) {
        for cell in &mut self.cells[off..off + len] {
            cell.flags = (cell.flags & !(IN_FLIGHT | IN_FLIGHT_BULK | GENERIC)) | WRITTEN;
            cell.w_tid = who.tid;
            cell.w_epoch = who.epoch;
            cell.w_wepoch = who.wepoch;
            cell.r_tid = NO_TID;
        }
    }

    /// An asynchronous operation (a bulk store, a wgmma) started (`reading`) or finished reading
    /// `[off, off + len)`; until it finishes, writes to those bytes are reported.
    pub(crate) fn set_reading(&mut self, off: usize, len: usize, reading: bool) {
        for cell in &mut self.cells[off..off + len] {
            if reading {
                cell.flags |= READING;
            } else {
                cell.flags &= !READING;
            }
        }
    }

    /// Marks bytes written without checks (atomics).
    pub(crate) fn mark_written(&mut self, off: usize, len: usize) {
        for cell in &mut self.cells[off..off + len] {
            cell.flags |= WRITTEN;
        }
    }

    /// Whether all of `[off, off + len)` has been written (atomics need initialised memory).
    pub(crate) fn check_initialised(&self, off: usize, len: usize) -> Result<(), Conflict> {
        for i in off..off + len {
            let f = self.cells[i].flags;
            if f & (IN_FLIGHT | IN_FLIGHT_BULK | MBAR | READING) != 0 {
                return Err(Self::flag_conflict(f, i));
            }
            if self.cells[i].flags & WRITTEN == 0 {
                return Err(Conflict::Uninitialised { offset: i });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tid: u16, epoch: u32, wepoch: u32) -> Who {
        Who { tid, warp: tid / 32, epoch, wepoch }
    }

    #[test]
    fn write_then_read_needs_a_barrier() {
        let mut s = Shadow::new(64, 128);
        s.write(0, 4, &who(0, 0, 0)).unwrap();
        assert!(matches!(s.read(0, 4, &who(40, 0, 0)), Err(Conflict::Race { other: 0, other_wrote: true, .. })));
        s.read(0, 4, &who(40, 1, 0)).unwrap();
        // Same warp: a collective (warp epoch) orders.
        assert!(s.read(0, 4, &who(1, 0, 0)).is_err());
        s.read(0, 4, &who(1, 0, 1)).unwrap();
        assert!(matches!(s.read(8, 1, &who(0, 0, 0)), Err(Conflict::Uninitialised { offset: 8 })));
    }

    #[test]
    fn read_then_write_needs_a_barrier() {
        let mut s = Shadow::new(64, 128);
        s.write(0, 4, &who(0, 0, 0)).unwrap();
        s.read(0, 4, &who(40, 1, 0)).unwrap();
        s.read(0, 4, &who(70, 1, 0)).unwrap();
        assert!(matches!(s.write(0, 4, &who(0, 1, 0)), Err(Conflict::Race { other_wrote: false, other_readers_multi: true, .. })));
        s.write(0, 4, &who(0, 2, 0)).unwrap();
        // Own reads never conflict.
        s.read(0, 4, &who(0, 2, 0)).unwrap();
        s.write(0, 4, &who(0, 2, 0)).unwrap();
    }

    #[test]
    fn in_flight_copies() {
        let mut s = Shadow::new(32, 128);
        let w = who(3, 0, 0);
        s.start_async(0, 16, &w, false).unwrap();
        assert!(matches!(s.read(4, 4, &w), Err(Conflict::InFlight { offset: 4, bulk: false })));
        s.finish_async(0, 16, &w);
        s.read(4, 4, &w).unwrap();
        assert!(s.read(4, 4, &who(4, 0, 0)).is_err());
        s.read(4, 4, &who(4, 1, 0)).unwrap();
    }

    #[test]
    fn async_proxy_reads_need_a_fence_after_generic_writes() {
        let mut s = Shadow::new(64, 128);
        s.write(0, 16, &who(5, 0, 0)).unwrap();
        // Same thread, no fence: unfenced.
        assert!(matches!(s.async_read(0, 16, &who(5, 0, 0)), Err(Conflict::Unfenced { offset: 0, writer: 5 })));
        s.fence_proxy_async(5);
        s.async_read(0, 16, &who(5, 0, 0)).unwrap();
        // Another thread needs the barrier as well.
        s.write(16, 16, &who(7, 0, 0)).unwrap();
        s.fence_proxy_async(7);
        assert!(matches!(s.async_read(16, 16, &who(40, 0, 0)), Err(Conflict::Race { .. })));
        s.async_read(16, 16, &who(40, 1, 0)).unwrap();
        // A later write needs a later fence; async-proxy writes need none.
        s.write(16, 4, &who(7, 2, 0)).unwrap();
        assert!(matches!(s.async_read(16, 4, &who(40, 3, 0)), Err(Conflict::Unfenced { writer: 7, .. })));
        s.start_async(32, 16, &who(3, 3, 0), true).unwrap();
        assert!(matches!(s.read(32, 4, &who(3, 3, 0)), Err(Conflict::InFlight { offset: 32, bulk: true })));
        s.finish_async(32, 16, &who(3, 3, 0));
        s.async_read(32, 16, &who(3, 3, 0)).unwrap();
    }

    #[test]
    fn mbarrier_objects_and_bulk_store_sources_are_guarded() {
        let mut s = Shadow::new(64, 128);
        s.set_mbarrier(8, true);
        assert!(matches!(s.write(12, 4, &who(0, 0, 0)), Err(Conflict::Mbarrier { offset: 12 })));
        assert!(matches!(s.read(8, 8, &who(0, 0, 0)), Err(Conflict::Mbarrier { offset: 8 })));
        s.set_mbarrier(8, false);
        s.write(8, 8, &who(0, 0, 0)).unwrap();
        s.set_reading(16, 16, true);
        assert!(matches!(s.write(20, 4, &who(0, 0, 0)), Err(Conflict::BeingRead { offset: 20 })));
        s.set_reading(16, 16, false);
        s.write(20, 4, &who(0, 0, 0)).unwrap();
    }
}
