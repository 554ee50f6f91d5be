//! Shared-memory checking: data races between barriers, reads of never-written bytes, and accesses
//! to bytes a `cp.async` is still copying.
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
//! partial barrier can go unreported, never a false one). Atomics are not race-checked.

/// No thread.
const NO_TID: u16 = u16::MAX;
/// Several threads.
const MULTI: u16 = u16::MAX - 1;

const WRITTEN: u8 = 1;
const IN_FLIGHT: u8 = 2;

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
}

const EMPTY: Cell = Cell { w_tid: NO_TID, r_tid: NO_TID, r_warp: NO_TID, flags: 0, w_epoch: 0, w_wepoch: 0, r_epoch: 0, r_wepoch: 0 };

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

/// What a check found, at byte offset `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// An earlier access by `other` conflicts with this one.
    Race { offset: usize, other: u16, other_wrote: bool, other_readers_multi: bool, this_writes: bool },
    /// Read of a byte nothing has written.
    Uninitialised { offset: usize },
    /// Access to a byte a cp.async (issued by `issuer`) is still copying.
    InFlight { offset: usize },
}

/// Shadow state of a CTA's shared memory.
pub(crate) struct Shadow {
    cells: Vec<Cell>,
    warps_per_tid: u16,
}

impl Shadow {
    pub(crate) fn new(bytes: usize) -> Shadow {
        Shadow { cells: vec![EMPTY; bytes], warps_per_tid: 32 }
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
        for i in off..off + len {
            let c = self.cells[i];
            if c.flags & IN_FLIGHT != 0 {
                return Err(Conflict::InFlight { offset: i });
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

    /// Checks and records a write of `[off, off + len)`.
    pub(crate) fn write(&mut self, off: usize, len: usize, who: &Who) -> Result<(), Conflict> {
        for i in off..off + len {
            let c = self.cells[i];
            if c.flags & IN_FLIGHT != 0 {
                return Err(Conflict::InFlight { offset: i });
            }
            self.check_write(i, &c, who)?;
            let cell = &mut self.cells[i];
            cell.flags |= WRITTEN;
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

    /// A cp.async into `[off, off + len)` was issued: the bytes are in flight until it completes.
    pub(crate) fn start_async(&mut self, off: usize, len: usize, who: &Who) -> Result<(), Conflict> {
        for i in off..off + len {
            let c = self.cells[i];
            if c.flags & IN_FLIGHT != 0 {
                return Err(Conflict::InFlight { offset: i });
            }
            self.check_write(i, &c, who)?;
        }
        for cell in &mut self.cells[off..off + len] {
            cell.flags |= IN_FLIGHT;
        }
        Ok(())
    }

    /// The cp.async into `[off, off + len)` completed: a write by its issuing thread, now.
    pub(crate) fn finish_async(&mut self, off: usize, len: usize, who: &Who) {
        for cell in &mut self.cells[off..off + len] {
            cell.flags = (cell.flags & !IN_FLIGHT) | WRITTEN;
            cell.w_tid = who.tid;
            cell.w_epoch = who.epoch;
            cell.w_wepoch = who.wepoch;
            cell.r_tid = NO_TID;
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
            if self.cells[i].flags & IN_FLIGHT != 0 {
                return Err(Conflict::InFlight { offset: i });
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
        let mut s = Shadow::new(64);
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
        let mut s = Shadow::new(64);
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
        let mut s = Shadow::new(32);
        let w = who(3, 0, 0);
        s.start_async(0, 16, &w).unwrap();
        assert!(matches!(s.read(4, 4, &w), Err(Conflict::InFlight { offset: 4 })));
        s.finish_async(0, 16, &w);
        s.read(4, 4, &w).unwrap();
        assert!(s.read(4, 4, &who(4, 0, 0)).is_err());
        s.read(4, 4, &who(4, 1, 0)).unwrap();
    }
}
