//! Bulk asynchronous copies (PTX ISA "cp.async.bulk", "cp.async.bulk.tensor"): issuing them, and
//! completing bulk stores. How they complete is described in [`crate::mbarrier`].
//!
//! Tensor copies use `.tile` mode ("Tensors: Tiled Mode"): the box at the given coordinates (which
//! may be negative or reach past the tensor's end) is laid out densely in shared memory, innermost
//! dimension contiguous, then every 16-byte chunk moves to its swizzled shared address
//! ([`Swizzle::apply`] on the absolute address, which is what the ISA's "swizzle base offset" for
//! destinations off the pattern's repeat boundary amounts to). Loads fill elements outside the
//! tensor with zeros (or the NaN of [`OobFill::Nan`]) and signal the full box size with complete-tx;
//! stores write only the elements inside the tensor. The shared address of a tensor copy must be
//! 128-byte aligned (CUDA Programming Guide, "Alignment requirements for multi-dimensional bulk
//! tensor asynchronous copy operations"); 1D bulk copies need 16-byte aligned addresses and a size
//! that is a multiple of 16.

use crate::ir::Sp;
use crate::mbarrier::{CtaAsync, PendingLoad, PendingStore, ThreadAsync};
use crate::space::{region, Fault, Mem, Region};
use crate::tensor_map::{OobFill, Swizzle, TensorMap};

/// The shared-memory offset an mbarrier or copy operand in `space` (`.shared*` or generic) names.
pub(crate) fn shared_offset(space: Sp, addr: u64, what: &str) -> Result<u64, Fault> {
    match region(space, addr) {
        (Region::Shared, off) => Ok(off),
        _ => Err(Fault::new(Some(addr), format!("{what}: address {addr:#x} is not in shared memory"))),
    }
}

/// The shared offset of an mbarrier operand: 8-byte aligned and inside shared memory.
pub(crate) fn mbar_offset(space: Sp, addr: u64, shared_len: usize, what: &str) -> Result<u32, Fault> {
    let off = shared_offset(space, addr, what)?;
    if off % 8 != 0 {
        return Err(Fault::new(Some(off), format!("{what}: misaligned mbarrier object (8-byte alignment)")));
    }
    if off + 8 > shared_len as u64 {
        return Err(Fault::new(Some(off), format!("{what}: out-of-bounds mbarrier object (shared memory is {shared_len} bytes)")));
    }
    Ok(off as u32)
}

/// Reads and decodes the tensor map at generic address `addr` (param, const or global memory).
pub(crate) fn read_tensor_map(mem: &mut Mem, addr: u64) -> Result<TensorMap, Fault> {
    let mut bytes = [0u8; TensorMap::BYTES];
    if addr % 64 != 0 {
        return Err(Fault::new(Some(addr), "tensor map operand is not 64-byte aligned (a CUtensorMap is)"));
    }
    match region(Sp::Generic, addr) {
        (Region::Param, off) => {
            let off = off as usize;
            if off + bytes.len() > mem.params.len() {
                return Err(Fault::new(Some(addr), "tensor map operand reaches past the kernel parameters"));
            }
            bytes.copy_from_slice(&mem.params[off..off + TensorMap::BYTES]);
        }
        (Region::Global, a) => match mem.global.find(a, bytes.len(), &mut mem.hint) {
            Some((alloc, off)) => alloc.read(off, &mut bytes),
            None => return Err(Fault::new(Some(addr), "tensor map operand is outside every global allocation")),
        },
        _ => return Err(Fault::new(Some(addr), "tensor map operand is not in param, const or global memory")),
    }
    TensorMap::decode(&bytes).map_err(|e| Fault::new(Some(addr), format!("{e} (tensor map at {addr:#x})")))
}

/// The box's rows: for each row (all box coordinates but the innermost, innermost first), the
/// global byte address of its element 0 if the row lies inside the tensor in dimensions 1.., and
/// the range of innermost box indices inside the tensor.
fn rows(tm: &TensorMap, coords: &[i64]) -> (Vec<Option<u64>>, usize, usize) {
    let rank = tm.rank as usize;
    let nrows: usize = tm.box_dims[1..rank].iter().map(|&b| b as usize).product();
    let mut out = Vec::with_capacity(nrows);
    for r in 0..nrows {
        let mut idx = r;
        let mut addr = tm.global_address;
        let mut inside = true;
        for (k, &c) in coords.iter().enumerate().take(rank).skip(1) {
            let i = idx % tm.box_dims[k] as usize;
            idx /= tm.box_dims[k] as usize;
            let g = c + i as i64;
            if g < 0 || g >= tm.global_dims[k] as i64 {
                inside = false;
                break;
            }
            addr = addr.wrapping_add(g as u64 * tm.global_strides[k - 1]);
        }
        out.push(inside.then_some(addr));
    }
    let (c0, box0, dim0) = (coords[0], tm.box_dims[0] as i64, tm.global_dims[0] as i64);
    let lo = (-c0).clamp(0, box0) as usize;
    let hi = (dim0 - c0).clamp(0, box0) as usize;
    (out, lo, hi.max(lo))
}

/// Checks the 16-byte chunks of a shared box at `base` (`bytes` long): alignment and bounds of
/// every swizzled chunk. Returns the chunk addresses.
fn chunk_addrs(base: u64, bytes: usize, swizzle: Swizzle, align: u64, shared_len: usize, what: &str) -> Result<Vec<u32>, Fault> {
    if base % align != 0 {
        return Err(Fault::new(Some(base), format!("{what}: misaligned shared address ({align}-byte alignment)")));
    }
    let mut out = Vec::with_capacity(bytes / 16);
    for k in 0..bytes / 16 {
        let a = swizzle.apply(base + 16 * k as u64);
        if a + 16 > shared_len as u64 {
            return Err(Fault::new(
                Some(a),
                format!("{what}: out-of-bounds shared access of {bytes} bytes at {base:#x} (shared memory is {shared_len} bytes)"),
            ));
        }
        out.push(a as u32);
    }
    Ok(out)
}

/// Marks the destination chunks in flight and queues the load.
fn queue_load(mem: &mut Mem, sync: &mut CtaAsync, dst: Vec<u32>, data: Vec<u8>, mbar: u32, line: u32, what: &str) -> Result<(), Fault> {
    if let Some(sh) = mem.shared.shadow.as_mut() {
        for &a in &dst {
            sh.start_async(a as usize, 16, &mem.who, true)
                .map_err(|c| crate::space::conflict_fault(c, mem.who.tid as usize, mem.block, what))?;
        }
    }
    let chunks = dst
        .into_iter()
        .zip(data.chunks_exact(16))
        .map(|(a, c)| {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            (a, b)
        })
        .collect();
    sync.loads.push(PendingLoad { issuer: mem.who, line, mbar, bytes: data.len() as u32, chunks });
    sync.events += 1;
    Ok(())
}

fn check_mbar_valid(sync: &CtaAsync, mbar: u32, what: &str) -> Result<(), Fault> {
    match sync.bar(mbar) {
        Some(_) => Ok(()),
        None => Err(Fault::new(Some(mbar as u64), format!("{what}: the mbarrier operand holds no valid mbarrier object"))),
    }
}

/// cp.async.bulk.tensor.Nd.shared::{cta,cluster}.global.tile.mbarrier::complete_tx::bytes.
pub(crate) fn tensor_load(mem: &mut Mem, sync: &mut CtaAsync, tmap: u64, coords: &[i64], dst: u64, mbar: u32, line: u32) -> Result<(), Fault> {
    let what = "cp.async.bulk.tensor (load)";
    let tm = read_tensor_map(mem, tmap)?;
    if coords.len() != tm.rank as usize {
        return Err(Fault::new(Some(tmap), format!("{what}: a {}d copy with a tensor map of rank {}", coords.len(), tm.rank)));
    }
    check_mbar_valid(sync, mbar, what)?;
    let eb = tm.elem_bytes as usize;
    let inner = tm.box_dims[0] as usize * eb;
    let total = tm.box_bytes();
    let dsts = chunk_addrs(dst, total, tm.swizzle, 128, mem.shared.data.len(), what)?;
    let mut data = vec![0u8; total];
    if tm.oob_fill == OobFill::Nan {
        let nan: u64 = match eb {
            2 => 0x7fff,
            4 => 0x7fff_ffff,
            _ => 0x7fff_ffff_ffff_ffff,
        };
        for e in data.chunks_exact_mut(eb) {
            e.copy_from_slice(&nan.to_le_bytes()[..eb]);
        }
    }
    let (rows, lo, hi) = rows(&tm, coords);
    let c0 = coords[0];
    for (r, row) in rows.iter().enumerate() {
        let (Some(addr), true) = (row, hi > lo) else { continue };
        let src = addr.wrapping_add(((c0 + lo as i64) as u64).wrapping_mul(eb as u64));
        let len = (hi - lo) * eb;
        let out = &mut data[r * inner + lo * eb..r * inner + hi * eb];
        match mem.global.find(src, len, &mut mem.hint) {
            Some((alloc, off)) => alloc.read(off, out),
            None => {
                return Err(Fault::new(Some(src), format!("{what}: out-of-bounds global read of {len} bytes (the tensor map's extent is outside every allocation)")))
            }
        }
        mem.traffic.async_copy += len as u64;
    }
    queue_load(mem, sync, dsts, data, mbar, line, what)
}

/// cp.async.bulk.shared::{cta,cluster}.global.mbarrier::complete_tx::bytes.
pub(crate) fn bulk_load(mem: &mut Mem, sync: &mut CtaAsync, dst: u64, src: u64, size: u64, mbar: u32, line: u32) -> Result<(), Fault> {
    let what = "cp.async.bulk (load)";
    if size % 16 != 0 {
        return Err(Fault::new(Some(src), format!("{what}: size {size} is not a multiple of 16")));
    }
    if src % 16 != 0 {
        return Err(Fault::new(Some(src), format!("{what}: misaligned global source (16-byte alignment)")));
    }
    check_mbar_valid(sync, mbar, what)?;
    let dsts = chunk_addrs(dst, size as usize, Swizzle::None, 16, mem.shared.data.len(), what)?;
    let mut data = vec![0u8; size as usize];
    if size > 0 {
        match mem.global.find(src, size as usize, &mut mem.hint) {
            Some((alloc, off)) => alloc.read(off, &mut data),
            None => return Err(Fault::new(Some(src), format!("{what}: out-of-bounds global read of {size} bytes"))),
        }
    }
    mem.traffic.async_copy += size;
    queue_load(mem, sync, dsts, data, mbar, line, what)
}

/// Reads a store's source chunks through the async proxy and marks them as being read.
fn read_source(mem: &mut Mem, chunks: &[u32], what: &str) -> Result<Vec<u8>, Fault> {
    let mut data = Vec::with_capacity(chunks.len() * 16);
    for &a in chunks {
        let who = mem.who;
        let bytes = mem.shared.async_read(a as u64, 16, &who, mem.block, what)?;
        data.extend_from_slice(bytes);
    }
    if let Some(sh) = mem.shared.shadow.as_mut() {
        for &a in chunks {
            sh.set_reading(a as usize, 16, true);
        }
    }
    Ok(data)
}

fn check_global_write(mem: &mut Mem, addr: u64, len: usize, what: &str) -> Result<(), Fault> {
    match mem.global.find(addr, len, &mut mem.hint) {
        Some((alloc, _)) if alloc.writable => Ok(()),
        Some(_) => Err(Fault::new(Some(addr), format!("{what}: store to read-only (.const) memory"))),
        None => Err(Fault::new(Some(addr), format!("{what}: out-of-bounds global write of {len} bytes"))),
    }
}

/// cp.async.bulk.tensor.Nd.global.shared::cta.tile.bulk_group.
pub(crate) fn tensor_store(mem: &mut Mem, th: &mut ThreadAsync, tmap: u64, coords: &[i64], src: u64) -> Result<(), Fault> {
    let what = "cp.async.bulk.tensor (store)";
    let tm = read_tensor_map(mem, tmap)?;
    if coords.len() != tm.rank as usize {
        return Err(Fault::new(Some(tmap), format!("{what}: a {}d copy with a tensor map of rank {}", coords.len(), tm.rank)));
    }
    // PTX ISA "Restriction on Tensor Copy instructions": the .global.shared::cta direction needs
    // non-negative starting coordinates; the box is clipped at the tensor's far end.
    if let Some(c) = coords.iter().find(|&&c| c < 0) {
        return Err(Fault::new(Some(tmap), format!("{what}: negative tensor coordinate {c} (stores need non-negative coordinates)")));
    }
    let eb = tm.elem_bytes as usize;
    let inner = tm.box_dims[0] as usize * eb;
    let chunks = chunk_addrs(src, tm.box_bytes(), tm.swizzle, 128, mem.shared.data.len(), what)?;
    let (rows, lo, hi) = rows(&tm, coords);
    let mut writes = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let (Some(addr), true) = (row, hi > lo) else { continue };
        let dst = addr.wrapping_add(coords[0] as u64 * eb as u64);
        check_global_write(mem, dst, (hi - lo) * eb, what)?;
        writes.push((r, dst));
    }
    let data = read_source(mem, &chunks, what)?;
    let writes = writes.into_iter().map(|(r, dst)| (dst, data[r * inner..r * inner + hi * eb].to_vec())).collect();
    th.stores.push(PendingStore { group: th.committed, src_chunks: chunks, writes });
    Ok(())
}

/// cp.async.bulk.global.shared::cta.bulk_group.
pub(crate) fn bulk_store(mem: &mut Mem, th: &mut ThreadAsync, dst: u64, src: u64, size: u64) -> Result<(), Fault> {
    let what = "cp.async.bulk (store)";
    if size % 16 != 0 {
        return Err(Fault::new(Some(dst), format!("{what}: size {size} is not a multiple of 16")));
    }
    if dst % 16 != 0 {
        return Err(Fault::new(Some(dst), format!("{what}: misaligned global destination (16-byte alignment)")));
    }
    let chunks = chunk_addrs(src, size as usize, Swizzle::None, 16, mem.shared.data.len(), what)?;
    if size > 0 {
        check_global_write(mem, dst, size as usize, what)?;
    }
    let data = read_source(mem, &chunks, what)?;
    th.stores.push(PendingStore { group: th.committed, src_chunks: chunks, writes: vec![(dst, data)] });
    Ok(())
}

/// Completes the bulk stores of groups below `below` (all, uncommitted ones included, when
/// `None`): their sources are no longer being read; unless `read_only`, their global writes happen
/// and they are done.
pub(crate) fn complete_stores(mem: &mut Mem, th: &mut ThreadAsync, below: Option<u32>, read_only: bool) -> Result<(), Fault> {
    let mut i = 0;
    while i < th.stores.len() {
        if below.is_some_and(|g| th.stores[i].group >= g) {
            i += 1;
            continue;
        }
        let st = &mut th.stores[i];
        if let Some(sh) = mem.shared.shadow.as_mut() {
            for &a in &st.src_chunks {
                sh.set_reading(a as usize, 16, false);
            }
        }
        st.src_chunks.clear();
        if read_only {
            i += 1;
            continue;
        }
        let st = th.stores.remove(i);
        for (addr, bytes) in st.writes {
            match mem.global.find(addr, bytes.len(), &mut mem.hint) {
                Some((alloc, off)) if alloc.writable => alloc.write(off, &bytes),
                _ => return Err(Fault::new(Some(addr), "bulk store destination vanished")),
            }
            mem.traffic.global_store += bytes.len() as u64;
        }
    }
    Ok(())
}
