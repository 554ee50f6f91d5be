//! Memory as a thread sees it: state spaces, generic addresses, bounds, alignment and the shared-
//! memory checks.
//!
//! Generic addresses: bits 40..48 select a window ([`window`]): local, shared and param windows
//! hold the state-space address in their low 40 bits; everything else is a global address, looked
//! up in the launch's allocation table. State-space addresses of shared, local and param memory are
//! byte offsets from 0, so `cvta.to.shared` and `cvta.shared` only strip or add the window.

use std::sync::Arc;

use crate::checks::{Conflict, Shadow, Who};
use crate::ir::{window, Sp};
use crate::memory::Allocation;

/// A memory fault found while executing one instruction (turned into a [`crate::Report`] by the
/// caller, which knows the thread and line).
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub address: Option<u64>,
    pub kind: String,
}

impl Fault {
    pub(crate) fn new(address: Option<u64>, kind: impl Into<String>) -> Fault {
        Fault { address, kind: kind.into() }
    }
}

/// The global allocations of a launch (user buffers and module variables), sorted by address.
pub(crate) struct GlobalView {
    allocs: Vec<Arc<Allocation>>,
}

impl GlobalView {
    pub(crate) fn new(mut allocs: Vec<Arc<Allocation>>) -> GlobalView {
        allocs.sort_by_key(|a| a.base);
        GlobalView { allocs }
    }

    /// The allocation holding `[addr, addr + len)` and the offset in it. `hint` caches the index of
    /// the last hit (accesses cluster in one buffer).
    #[inline]
    pub(crate) fn find(&self, addr: u64, len: usize, hint: &mut usize) -> Option<(&Allocation, usize)> {
        let end = addr.checked_add(len as u64)?;
        if let Some(a) = self.allocs.get(*hint) {
            if addr >= a.base && end <= a.end() {
                return Some((a, (addr - a.base) as usize));
            }
        }
        let i = self.allocs.partition_point(|a| a.base <= addr);
        let a = self.allocs.get(i.checked_sub(1)?)?;
        if end <= a.end() {
            *hint = i - 1;
            Some((a, (addr - a.base) as usize))
        } else {
            None
        }
    }
}

/// A CTA's shared memory and, with checks on, its shadow.
pub(crate) struct SharedMem {
    pub data: Vec<u8>,
    pub shadow: Option<Shadow>,
}

/// Which memory an address refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    Shared,
    Local,
    Param,
    Global,
}

/// Resolves a state space and address to a region and the address within it.
#[inline]
pub(crate) fn region(space: Sp, addr: u64) -> (Region, u64) {
    match space {
        Sp::Shared => (Region::Shared, addr),
        Sp::Local => (Region::Local, addr),
        Sp::Param => (Region::Param, addr),
        Sp::Global | Sp::Const => (Region::Global, addr),
        Sp::Generic => match addr >> window::SHIFT {
            window::LOCAL => (Region::Local, addr & window::MASK),
            window::SHARED => (Region::Shared, addr & window::MASK),
            window::PARAM => (Region::Param, addr & window::MASK),
            _ => (Region::Global, addr),
        },
    }
}

fn region_name(r: Region) -> &'static str {
    match r {
        Region::Shared => "shared",
        Region::Local => "local",
        Region::Param => "param",
        Region::Global => "global",
    }
}

#[inline]
pub(crate) fn read_le(bytes: &[u8], size: usize) -> u64 {
    match size {
        1 => bytes[0] as u64,
        2 => u16::from_le_bytes([bytes[0], bytes[1]]) as u64,
        4 => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64,
        _ => u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]),
    }
}

#[inline]
pub(crate) fn write_le(bytes: &mut [u8], size: usize, v: u64) {
    bytes[..size].copy_from_slice(&v.to_le_bytes()[..size]);
}

/// Formats a linear thread index as `(x, y, z)` for messages.
pub(crate) fn tid3(t: usize, block: [u32; 3]) -> [u32; 3] {
    let bx = block[0] as usize;
    let by = block[1] as usize;
    [(t % bx) as u32, ((t / bx) % by) as u32, (t / (bx * by)) as u32]
}

/// Turns a shadow-memory conflict into a fault message.
pub(crate) fn conflict_fault(c: Conflict, this_tid: usize, block: [u32; 3], what: &str) -> Fault {
    let fmt = |t: usize| {
        let [x, y, z] = tid3(t, block);
        format!("({x}, {y}, {z})")
    };
    match c {
        Conflict::Uninitialised { offset } => {
            Fault::new(Some(offset as u64), format!("{what} reads shared memory that was never written"))
        }
        Conflict::InFlight { offset, bulk: false } => Fault::new(
            Some(offset as u64),
            format!("{what} touches shared memory a cp.async is still copying into (missing cp.async.wait_group?)"),
        ),
        Conflict::InFlight { offset, bulk: true } => Fault::new(
            Some(offset as u64),
            format!(
                "{what} touches shared memory a bulk asynchronous copy (cp.async.bulk) is still writing \
                 (missing mbarrier wait for its complete-tx?)"
            ),
        ),
        Conflict::Mbarrier { offset } => Fault::new(
            Some(offset as u64),
            format!("{what} accesses a valid mbarrier object with a non-mbarrier instruction (mbarrier.inval it first)"),
        ),
        Conflict::BeingRead { offset } => Fault::new(
            Some(offset as u64),
            format!(
                "{what} overwrites shared memory an asynchronous operation is still reading (a bulk store before its \
                 cp.async.bulk.wait_group.read, or a wgmma.mma_async before its wgmma.wait_group)"
            ),
        ),
        Conflict::Unfenced { offset, writer } => Fault::new(
            Some(offset as u64),
            format!(
                "{what} reads shared memory through the async proxy that thread {} wrote through the generic proxy \
                 without a fence.proxy.async after the write",
                fmt(writer as usize)
            ),
        ),
        Conflict::Race { offset, other, other_wrote, other_readers_multi, this_writes } => {
            let first = if other_wrote { "write" } else { "read" };
            let second = if this_writes { "write" } else { "read" };
            let by = if other_readers_multi { "several threads".to_string() } else { format!("thread {}", fmt(other as usize)) };
            Fault::new(
                Some(offset as u64),
                format!(
                    "shared-memory race: {first} by {by} then {second} by thread {} without a barrier ({what})",
                    fmt(this_tid)
                ),
            )
        }
    }
}

impl SharedMem {
    /// An async-proxy read of `len` bytes at shared offset `off` by `who` (the issuing thread):
    /// bounds, then (with checks on) in-flight, mbarrier, uninitialised, race and proxy-fence
    /// checks ([`Shadow::async_read`]). `what` names the instruction in fault messages. This is
    /// the hook for every instruction that reads shared memory through the async proxy: the
    /// source of `cp.async.bulk{.tensor}` stores, and `wgmma.mma_async`'s shared-memory operands.
    pub(crate) fn async_read(&mut self, off: u64, len: usize, who: &Who, block: [u32; 3], what: &str) -> Result<&[u8], Fault> {
        let size = self.data.len();
        if off.checked_add(len as u64).map_or(true, |e| e > size as u64) {
            return Err(Fault::new(Some(off), format!("out-of-bounds {what} shared read of {len} bytes (shared memory is {size} bytes)")));
        }
        let off = off as usize;
        if let Some(sh) = self.shadow.as_mut() {
            sh.async_read(off, len, who).map_err(|c| conflict_fault(c, who.tid as usize, block, what))?;
        }
        Ok(&self.data[off..off + len])
    }
}

/// Global-memory traffic of executed instructions, in bytes (see [`crate::LaunchStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Source bytes of `cp.async` copies (their src-size).
    pub async_copy: u64,
    /// Bytes loaded from global (not `.const`) memory by `ld` / `ldu`.
    pub global_load: u64,
    /// Bytes stored to global memory by `st`.
    pub global_store: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Traffic) {
        self.async_copy += o.async_copy;
        self.global_load += o.global_load;
        self.global_store += o.global_store;
    }
}

/// Everything a thread's loads and stores reach.
pub(crate) struct Mem<'m> {
    pub shared: &'m mut SharedMem,
    pub local: &'m mut [u8],
    pub params: &'m [u8],
    pub global: &'m GlobalView,
    pub who: Who,
    pub block: [u32; 3],
    pub hint: usize,
    /// What this thread's instructions moved to and from global memory so far in this run.
    pub traffic: Traffic,
}

impl<'m> Mem<'m> {
    fn check_range(&self, region: Region, addr: u64, total: usize, limit: usize, write: bool) -> Result<usize, Fault> {
        let verb = if write { "store" } else { "load" };
        if addr % total as u64 != 0 {
            return Err(Fault::new(Some(addr), format!("misaligned {} {verb} of {total} bytes", region_name(region))));
        }
        match addr.checked_add(total as u64) {
            Some(end) if end <= limit as u64 => Ok(addr as usize),
            _ => Err(Fault::new(
                Some(addr),
                format!("out-of-bounds {} {verb} of {total} bytes ({} memory is {limit} bytes)", region_name(region), region_name(region)),
            )),
        }
    }

    /// Loads `out.len()` consecutive elements of `size` bytes.
    #[inline]
    pub(crate) fn load(&mut self, space: Sp, addr: u64, size: usize, out: &mut [u64]) -> Result<(), Fault> {
        let total = size * out.len();
        let (region, a) = region(space, addr);
        match region {
            Region::Shared => {
                let off = self.check_range(region, a, total, self.shared.data.len(), false)?;
                if let Some(sh) = self.shared.shadow.as_mut() {
                    sh.read(off, total, &self.who).map_err(|c| conflict_fault(c, self.who.tid as usize, self.block, "load"))?;
                }
                for (i, o) in out.iter_mut().enumerate() {
                    *o = read_le(&self.shared.data[off + i * size..], size);
                }
                Ok(())
            }
            Region::Global => {
                if a % total as u64 != 0 {
                    return Err(Fault::new(Some(a), format!("misaligned global load of {total} bytes")));
                }
                match self.global.find(a, total, &mut self.hint) {
                    Some((alloc, off)) => {
                        for (i, o) in out.iter_mut().enumerate() {
                            *o = alloc.load(off + i * size, size);
                        }
                        // `.const` variables live in read-only allocations: not global traffic.
                        if alloc.writable {
                            self.traffic.global_load += total as u64;
                        }
                        Ok(())
                    }
                    None => Err(Fault::new(Some(a), format!("out-of-bounds global load of {total} bytes"))),
                }
            }
            Region::Local => {
                let off = self.check_range(region, a, total, self.local.len(), false)?;
                for (i, o) in out.iter_mut().enumerate() {
                    *o = read_le(&self.local[off + i * size..], size);
                }
                Ok(())
            }
            Region::Param => {
                let off = self.check_range(region, a, total, self.params.len(), false)?;
                for (i, o) in out.iter_mut().enumerate() {
                    *o = read_le(&self.params[off + i * size..], size);
                }
                Ok(())
            }
        }
    }

    /// Stores consecutive elements of `size` bytes.
    #[inline]
    pub(crate) fn store(&mut self, space: Sp, addr: u64, size: usize, vals: &[u64]) -> Result<(), Fault> {
        let total = size * vals.len();
        let (region, a) = region(space, addr);
        match region {
            Region::Shared => {
                let off = self.check_range(region, a, total, self.shared.data.len(), true)?;
                if let Some(sh) = self.shared.shadow.as_mut() {
                    sh.write(off, total, &self.who).map_err(|c| conflict_fault(c, self.who.tid as usize, self.block, "store"))?;
                }
                for (i, &v) in vals.iter().enumerate() {
                    write_le(&mut self.shared.data[off + i * size..], size, v);
                }
                Ok(())
            }
            Region::Global => {
                if a % total as u64 != 0 {
                    return Err(Fault::new(Some(a), format!("misaligned global store of {total} bytes")));
                }
                match self.global.find(a, total, &mut self.hint) {
                    Some((alloc, off)) if alloc.writable => {
                        for (i, &v) in vals.iter().enumerate() {
                            alloc.store(off + i * size, size, v);
                        }
                        self.traffic.global_store += total as u64;
                        Ok(())
                    }
                    Some(_) => Err(Fault::new(Some(a), "store to read-only (.const) memory")),
                    None => Err(Fault::new(Some(a), format!("out-of-bounds global store of {total} bytes"))),
                }
            }
            Region::Local => {
                let off = self.check_range(region, a, total, self.local.len(), true)?;
                for (i, &v) in vals.iter().enumerate() {
                    write_le(&mut self.local[off + i * size..], size, v);
                }
                Ok(())
            }
            Region::Param => Err(Fault::new(Some(a), "store to the kernel parameter space")),
        }
    }
}
