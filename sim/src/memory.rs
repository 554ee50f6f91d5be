//! Device global memory: allocations at distinct, 256-byte aligned, non-zero addresses.
//!
//! CTAs run on several host threads at once and a kernel may legitimately (or, if buggy, racily)
//! touch the same bytes from several of them, so the bytes live in relaxed atomic 32-bit words: any
//! interleaving is then defined behaviour on the host, and an aligned 4/8/16-byte access costs one,
//! two or four word operations. Sub-word stores use a compare-and-swap on their word.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::SimError;

/// Where the allocator places global allocations (a plausible device pointer; far from the
/// windows [`crate::exec`] uses for generic shared/local/param addresses).
pub(crate) const GLOBAL_BASE: u64 = 0x7000_0000_0000;
/// Gap kept free after every allocation, so a small overrun faults instead of landing in the next.
const GUARD: u64 = 256;

/// One allocation: `size` bytes starting at `base`.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub base: u64,
    pub size: usize,
    pub writable: bool,
    words: Box<[AtomicU32]>,
}

impl Allocation {
    pub(crate) fn new(base: u64, size: usize, writable: bool) -> Allocation {
        let words = (0..size.div_ceil(4)).map(|_| AtomicU32::new(0)).collect();
        Allocation { base, size, writable, words }
    }

    /// [`Allocation::new`], or `None` when the host cannot provide `size` bytes (the size comes
    /// from the simulated program's caller, so it must not abort the process).
    fn try_new(base: u64, size: usize, writable: bool) -> Option<Allocation> {
        let len = size.div_ceil(4);
        let mut words = Vec::new();
        words.try_reserve_exact(len).ok()?;
        words.resize_with(len, || AtomicU32::new(0));
        Some(Allocation { base, size, writable, words: words.into_boxed_slice() })
    }

    pub(crate) fn end(&self) -> u64 {
        self.base + self.size as u64
    }

    /// Reads `out.len()` bytes at byte offset `off` (the caller has checked the range).
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) {
        if off % 4 == 0 && out.len() % 4 == 0 {
            for (i, chunk) in out.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&self.words[off / 4 + i].load(Relaxed).to_le_bytes());
            }
            return;
        }
        for (i, b) in out.iter_mut().enumerate() {
            let o = off + i;
            *b = self.words[o / 4].load(Relaxed).to_le_bytes()[o % 4];
        }
    }

    /// Writes `data` at byte offset `off` (the caller has checked the range).
    pub(crate) fn write(&self, off: usize, data: &[u8]) {
        if off % 4 == 0 && data.len() % 4 == 0 {
            for (i, chunk) in data.chunks_exact(4).enumerate() {
                let w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                self.words[off / 4 + i].store(w, Relaxed);
            }
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            let o = off + i;
            let shift = 8 * (o % 4);
            let mask = !(0xffu32 << shift);
            let _ = self.words[o / 4].fetch_update(Relaxed, Relaxed, |w| Some((w & mask) | ((b as u32) << shift)));
        }
    }

    /// Loads an aligned value of 1, 2, 4 or 8 bytes, zero-extended.
    #[inline]
    pub(crate) fn load(&self, off: usize, size: usize) -> u64 {
        match size {
            4 => self.words[off / 4].load(Relaxed) as u64,
            8 => {
                let lo = self.words[off / 4].load(Relaxed) as u64;
                let hi = self.words[off / 4 + 1].load(Relaxed) as u64;
                lo | (hi << 32)
            }
            _ => {
                let w = self.words[off / 4].load(Relaxed) as u64;
                let shift = 8 * (off % 4);
                (w >> shift) & ((1u64 << (8 * size)) - 1)
            }
        }
    }

    /// Stores an aligned value of 1, 2, 4 or 8 bytes.
    #[inline]
    pub(crate) fn store(&self, off: usize, size: usize, value: u64) {
        match size {
            4 => self.words[off / 4].store(value as u32, Relaxed),
            8 => {
                self.words[off / 4].store(value as u32, Relaxed);
                self.words[off / 4 + 1].store((value >> 32) as u32, Relaxed);
            }
            _ => {
                let shift = 8 * (off % 4);
                let field = ((1u32 << (8 * size)) - 1) << shift;
                let v = ((value as u32) << shift) & field;
                let _ = self.words[off / 4].fetch_update(Relaxed, Relaxed, |w| Some((w & !field) | v));
            }
        }
    }
}

#[derive(Debug, Default)]
struct Heap {
    allocations: BTreeMap<u64, Arc<Allocation>>,
    next: u64,
}

/// The simulated device's global memory. `Sync`: allocate, copy and launch from any thread.
#[derive(Debug, Default)]
pub struct GlobalMemory {
    heap: RwLock<Heap>,
    /// Serialises read-modify-write atomics (`atom` / `red`) across CTAs running in parallel.
    pub(crate) atomic_lock: Mutex<()>,
}

impl GlobalMemory {
    pub fn new() -> Self {
        GlobalMemory::default()
    }

    /// Allocates `bytes` zeroed bytes (at least one) and returns the device address, 256-byte
    /// aligned; 0 when the host cannot provide them or the address space is used up.
    pub fn alloc(&self, bytes: usize) -> u64 {
        let mut heap = self.heap.write().unwrap_or_else(|e| e.into_inner());
        if heap.next == 0 {
            heap.next = GLOBAL_BASE;
        }
        let base = heap.next;
        let size = bytes.max(1);
        let Some(next) = base.checked_add(size as u64).and_then(|end| end.checked_add(GUARD)).and_then(|end| end.checked_next_multiple_of(256))
        else {
            return 0;
        };
        let Some(allocation) = Allocation::try_new(base, size, true) else { return 0 };
        heap.next = next;
        heap.allocations.insert(base, Arc::new(allocation));
        base
    }

    /// Frees the allocation that starts at `addr`.
    pub fn free(&self, addr: u64) -> Result<(), SimError> {
        let mut heap = self.heap.write().unwrap_or_else(|e| e.into_inner());
        match heap.allocations.remove(&addr) {
            Some(_) => Ok(()),
            None => Err(SimError::Memory(format!("free of {addr:#x}, which is not the start of an allocation"))),
        }
    }

    /// Copies `data` to `addr`; the range must lie inside one allocation.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), SimError> {
        let a = self.find(addr, data.len(), "write")?;
        a.write((addr - a.base) as usize, data);
        Ok(())
    }

    /// Copies from `addr` into `out`; the range must lie inside one allocation.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), SimError> {
        let a = self.find(addr, out.len(), "read")?;
        a.read((addr - a.base) as usize, out);
        Ok(())
    }

    /// Whether `[addr, addr + bytes)` lies inside one allocation.
    pub fn contains(&self, addr: u64, bytes: usize) -> bool {
        self.find(addr, bytes, "").is_ok()
    }

    /// The size of the allocation starting at `addr`, if there is one.
    pub fn allocation_size(&self, addr: u64) -> Option<usize> {
        let heap = self.heap.read().unwrap_or_else(|e| e.into_inner());
        heap.allocations.get(&addr).map(|a| a.size)
    }

    fn find(&self, addr: u64, bytes: usize, what: &str) -> Result<Arc<Allocation>, SimError> {
        let heap = self.heap.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, a)) = heap.allocations.range(..=addr).next_back() {
            if addr.checked_add(bytes as u64).is_some_and(|end| end <= a.end()) {
                return Ok(a.clone());
            }
        }
        Err(SimError::Memory(format!(
            "host {what} of {bytes} bytes at {addr:#x} is not inside one allocation"
        )))
    }

    /// The allocations, sorted by address, for a launch to look addresses up without locking.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Allocation>> {
        let heap = self.heap.read().unwrap_or_else(|e| e.into_inner());
        heap.allocations.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_read_write_free() {
        let m = GlobalMemory::new();
        let a = m.alloc(10);
        let b = m.alloc(0);
        assert!(a != 0 && a % 256 == 0 && b % 256 == 0 && b >= a + 10 + GUARD);
        m.write(a + 1, &[1, 2, 3]).unwrap();
        m.write(a + 4, &[4, 5, 6, 7, 8, 9]).unwrap();
        let mut out = [0u8; 10];
        m.read(a, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(m.contains(a, 10) && !m.contains(a, 11) && !m.contains(a + 10, 1));
        assert!(m.write(a + 8, &[0; 3]).is_err());
        m.free(a).unwrap();
        assert!(m.free(a).is_err());
        assert!(!m.contains(a, 1));
    }

    #[test]
    fn an_impossible_alloc_returns_zero_and_leaves_the_heap_usable() {
        let m = GlobalMemory::new();
        assert_eq!(m.alloc(usize::MAX), 0);
        assert_eq!(m.alloc(usize::MAX / 2), 0);
        let a = m.alloc(8);
        assert_eq!(a, GLOBAL_BASE);
        m.write(a, &[1; 8]).unwrap();
    }

    #[test]
    fn sub_word_load_store() {
        let a = Allocation::new(GLOBAL_BASE, 16, true);
        a.store(2, 2, 0xBEEF);
        a.store(5, 1, 0x7F);
        a.store(8, 8, 0x0102_0304_0506_0708);
        assert_eq!(a.load(2, 2), 0xBEEF);
        assert_eq!(a.load(0, 4), 0xBEEF_0000);
        assert_eq!(a.load(4, 4), 0x7F00);
        assert_eq!(a.load(8, 8), 0x0102_0304_0506_0708);
    }
}
