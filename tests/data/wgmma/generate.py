#!/usr/bin/env python3
"""Generate independent test vectors for the Hopper warpgroup MMA instruction wgmma.mma_async.

Every rule used here is taken from the PTX ISA chapter "Asynchronous Warpgroup Level Matrix
Multiply-Accumulate Instructions" (see README.md next to this file for the exact section names):

  * accumulator D fragment layout for .m64nNk16 (figure "WGMMA .m64nNk16 register fragment layout
    for accumulator matrix D"),
  * A-in-registers fragment layout for .m64nNk16 (figure "WGMMA .m64nNk16 register fragment layout
    for matrix A"),
  * the canonical shared-memory layouts (table in "Canonical Layouts", with the "Leading Dimension
    Byte Offset" / "Stride Dimension Byte Offset" definitions),
  * the swizzle patterns (section "Swizzling Modes" of the tensor chapter; the canonical layout
    table names them Swizzle<1,4,3>, Swizzle<2,4,3>, Swizzle<3,4,3>),
  * the 64-bit "Matrix Descriptor Format".

Inputs are small integers (|x| <= 3, |c| <= 64), so every product and every partial sum is exact
in f32 regardless of the order in which the hardware accumulates.

The file is self-checking: before writing anything it rebuilds A and B from the shared-memory
image and the 64-bit descriptors alone with a second, differently structured decoder (descriptor
bit fields parsed back, byte addresses built from the prose LBO/SBO definitions, swizzle applied
by looking up the literal pattern tables rather than by XOR), re-checks the register fragments
against CuTe-style thread/value layouts, and recomputes D with a different loop order.

Usage: python3 generate.py [output_dir]     (default: the folder holding this script)
Only the Python 3 standard library is needed.  Output is deterministic (fixed seeds).
"""

import json
import os
import random
import struct
import sys

M = 64          # wgmma .m64nNk16: M is always 64
K = 16          # and K is 16 for .f16 / .bf16 inputs
T = 8           # 128 bits / 16-bit element: elements per 16-byte chunk ("T" in the ISA table)
POISON = 512.0  # value stored in every shared-memory slot that no operand element occupies

# Swizzling mode -> width W of one swizzle row in 16-byte chunks (1 for no swizzle / interleave).
SWZ_CHUNKS = {"none": 1, "32B": 2, "64B": 4, "128B": 8}
# Matrix Descriptor Format, bits 63-62: 0 no swizzle, 1 128-Byte, 2 64-Byte, 3 32-Byte.
SWZ_DESC_CODE = {"none": 0, "128B": 1, "64B": 2, "32B": 3}


# ---------------------------------------------------------------------------------------------
# Element encodings
# ---------------------------------------------------------------------------------------------

def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bits_of(x, dtype):
    """16-bit pattern of the exact value x in bf16 or f16 (asserts exactness)."""
    if dtype == "bf16":
        b = f32_bits(x)
        assert b & 0xFFFF == 0, "value not exactly representable in bf16"
        return b >> 16
    if dtype == "f16":
        b = struct.unpack("<H", struct.pack("<e", x))[0]
        assert struct.unpack("<e", struct.pack("<H", b))[0] == x, "value not exact in f16"
        return b
    raise ValueError(dtype)


def value_of(bits, dtype):
    if dtype == "bf16":
        return struct.unpack("<f", struct.pack("<I", bits << 16))[0]
    return struct.unpack("<e", struct.pack("<H", bits))[0]


# ---------------------------------------------------------------------------------------------
# Rule 1: Matrix Descriptor Format
#   bits 13-0  : matrix-descriptor-encode(start address)
#   bits 29-16 : matrix-descriptor-encode(leading dimension byte offset)
#   bits 45-32 : matrix-descriptor-encode(stride dimension byte offset)
#   bits 51-49 : matrix base offset (0 here: every swizzle pattern starts on a 1024-byte boundary)
#   bits 63-62 : swizzle mode (0 none, 1 128B, 2 64B, 3 32B)
#   matrix-descriptor-encode(x) = (x & 0x3FFFF) >> 4
# ---------------------------------------------------------------------------------------------

def desc_encode(x):
    assert x % 16 == 0 and 0 <= x < (1 << 18)
    return (x & 0x3FFFF) >> 4


def make_descriptor(start, lbo, sbo, swizzle, base_offset=0):
    return (desc_encode(start)
            | desc_encode(lbo) << 16
            | desc_encode(sbo) << 32
            | (base_offset & 7) << 49
            | SWZ_DESC_CODE[swizzle] << 62)


# ---------------------------------------------------------------------------------------------
# Rule 2: canonical layouts, written exactly as the ISA's CuTe table (units: elements; LBO and
# SBO converted from bytes to elements), followed by the swizzle functor on byte addresses.
#
#   MN-major, none : ((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO))     Swizzle<0,4,3>
#   MN-major, 32B  : ((T,2,m),(8,k)) : ((1,T,LBO),(2T,SBO))     Swizzle<1,4,3>
#   MN-major, 64B  : ((T,4,m),(8,k)) : ((1,T,LBO),(4T,SBO))     Swizzle<2,4,3>
#   MN-major, 128B : ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))     Swizzle<3,4,3>
#   K-major,  none : ((8,m),(T,2k))  : ((1T,SBO),(1,LBO))       Swizzle<0,4,3>
#   K-major,  32B  : ((8,m),(T,2k))  : ((2T,SBO),(1,T))         Swizzle<1,4,3>
#   K-major,  64B  : ((8,m),(T,2k))  : ((4T,SBO),(1,T))         Swizzle<2,4,3>
#   K-major,  128B : ((8,m),(T,2k))  : ((8T,SBO),(1,T))         Swizzle<3,4,3>
#
# Mode 0 is the M (or N) coordinate, mode 1 the K coordinate.  For the swizzled K-major layouts
# the K mode is contiguous for the whole swizzle row (W*T elements), which is what lets a kernel
# keep a K=64 (128B) or K=32 (64B) tile in one atom and point successive instructions at
# successive 32-byte K slices of it (the "k_offset" cases below).
# ---------------------------------------------------------------------------------------------

def cute_eval(coord, shape, stride):
    """Offset of integer coordinate `coord` in a (flat) CuTe mode shape:stride (colexicographic)."""
    off = 0
    for s, d in zip(shape, stride):
        off += (coord % s) * d
        coord //= s
    assert coord == 0, "coordinate out of the mode's range"
    return off


def canonical_modes(major, swizzle, lbo_bytes, sbo_bytes, mn_extent, k_extent):
    """Returns ((shape0, stride0), (shape1, stride1)) of the canonical layout in elements."""
    W = SWZ_CHUNKS[swizzle]
    lbo, sbo = lbo_bytes // 2, sbo_bytes // 2
    if major == "K":
        assert mn_extent % 8 == 0
        if swizzle == "none":
            assert k_extent % T == 0
            return (((8, mn_extent // 8), (T, sbo)),
                    ((T, k_extent // T), (1, lbo)))
        assert k_extent <= W * T, "swizzled K-major: K extent must fit one swizzle row"
        return (((8, mn_extent // 8), (W * T, sbo)),
                ((T, k_extent // T), (1, T)))
    if major == "MN":
        assert k_extent % 8 == 0
        if swizzle == "none":
            assert mn_extent % T == 0
            return (((T, 1, mn_extent // T), (1, T, sbo)),
                    ((8, k_extent // 8), (T, lbo)))
        assert mn_extent % (W * T) == 0
        return (((T, W, mn_extent // (W * T)), (1, T, lbo)),
                ((8, k_extent // 8), (W * T, sbo)))
    raise ValueError(major)


def swizzle_functor(addr, swizzle):
    """CuTe Swizzle<B,4,3> applied to a byte address: bits [4,4+B) ^= bits [7,7+B)."""
    B = {"none": 0, "32B": 1, "64B": 2, "128B": 3}[swizzle]
    mask = ((1 << B) - 1) << 4
    return addr ^ ((addr >> 3) & mask)


def layout_byte_address(region, mn, k):
    """Physical byte address of stored-tile element (mn, k) of an operand region."""
    (s0, d0), (s1, d1) = canonical_modes(region["major"], region["swizzle"], region["lbo"],
                                         region["sbo"], region["mn_stored"], region["k_stored"])
    off = cute_eval(mn, s0, d0) + cute_eval(k, s1, d1)
    return swizzle_functor(region["base"] + 2 * off, region["swizzle"])


def instruction_start(region):
    """Descriptor start address: the unswizzled address of element (0, k_offset)."""
    (s0, d0), (s1, d1) = canonical_modes(region["major"], region["swizzle"], region["lbo"],
                                         region["sbo"], region["mn_stored"], region["k_stored"])
    return region["base"] + 2 * (cute_eval(0, s0, d0) + cute_eval(region["k_offset"], s1, d1))


def region_footprint(region):
    hi = 0
    for mn in range(region["mn_stored"]):
        for k in range(region["k_stored"]):
            hi = max(hi, layout_byte_address(region, mn, k) + 2)
    return hi - region["base"]


# ---------------------------------------------------------------------------------------------
# Rule 3: register fragments (warp w = tid/32 of the warpgroup owns rows 16w..16w+15;
# groupID g = lane/4, threadID_in_group q = lane%4).
#   D (f32, N/2 registers d0..):  row = 16w + g + 8*((i>>1)&1),  col = 8*(i>>2) + 2q + (i&1)
#   A (4 x .f16x2/.bf16x2 registers holding a0..a7, low half first):
#                                 row = 16w + g + 8*((i>>1)&1),  col = 8*(i>>2) + 2q + (i&1)
#   (i.e. the mma.m16n8k16 A pattern per warp; for D the m16n8 C pattern repeated over N/8.)
# ---------------------------------------------------------------------------------------------

def frag_coord(tid, i):
    w, lane = divmod(tid, 32)
    g, q = divmod(lane, 4)
    return 16 * w + g + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * q + (i & 1)


# ---------------------------------------------------------------------------------------------
# Case construction
# ---------------------------------------------------------------------------------------------

def region_spec(major, swizzle, lbo, sbo, mn_stored, k_stored=K, k_offset=0):
    if major == "K" and swizzle != "none":
        assert lbo == 16, "K-major swizzled: LBO unused, encoded as 1 (16 bytes)"
    return {"major": major, "swizzle": swizzle, "lbo": lbo, "sbo": sbo,
            "mn_stored": mn_stored, "k_stored": k_stored, "k_offset": k_offset}


def round_up(x, a):
    return (x + a - 1) // a * a


def rand_matrix(rng, rows, cols, lo, hi):
    return [[rng.randint(lo, hi) for _ in range(cols)] for _ in range(rows)]


def build_case(spec, seed):
    rng = random.Random(seed)
    dtype, N, scale_d = spec["dtype"], spec["N"], spec["scale_d"]
    a_reg = spec["a"] == "reg"
    regions = {}
    if not a_reg:
        regions["A"] = dict(spec["a"])
    regions["B"] = dict(spec["b"])

    # Stored tiles (MN x K_stored); the instruction consumes columns k_offset..k_offset+15.
    stored = {}
    if not a_reg:
        stored["A"] = rand_matrix(rng, M, regions["A"]["k_stored"], -3, 3)
    else:
        stored["A"] = rand_matrix(rng, M, K, -3, 3)
    stored["B"] = rand_matrix(rng, N, regions["B"]["k_stored"], -3, 3)   # B^T: n x k
    C = rand_matrix(rng, M, N, -64, 64)

    a_off = regions["A"]["k_offset"] if not a_reg else 0
    b_off = regions["B"]["k_offset"]
    A = [[stored["A"][m][a_off + k] for k in range(K)] for m in range(M)]
    B = [[stored["B"][n][b_off + k] for n in range(N)] for k in range(K)]   # k-by-n
    D = [[sum(A[m][k] * B[k][n] for k in range(K)) + (C[m][n] if scale_d else 0)
          for n in range(N)] for m in range(M)]

    # Place the operands in one shared-memory image: each region starts on a 1024-byte boundary
    # (so every swizzle pattern starts on its repeat boundary and the base offset field is 0).
    base = 0
    for name in ("A", "B"):
        if name not in regions:
            continue
        r = regions[name]
        assert r["mn_stored"] == (M if name == "A" else N)
        r["base"] = base
        base = round_up(base + region_footprint(r), 1024)
    smem_bytes = base
    smem = [bits_of(POISON, dtype)] * (smem_bytes // 2)
    used = set()
    for name, r in regions.items():
        tile = stored[name]
        for mn in range(r["mn_stored"]):
            for k in range(r["k_stored"]):
                addr = layout_byte_address(r, mn, k)
                assert addr % 2 == 0 and r["base"] <= addr < smem_bytes
                assert addr not in used, "layout is not injective"
                used.add(addr)
                smem[addr // 2] = bits_of(float(tile[mn][k]), dtype)

    descs = {}
    for name, r in regions.items():
        r["start"] = instruction_start(r)
        descs[name] = make_descriptor(r["start"], r["lbo"], r["sbo"], r["swizzle"])

    threads = []
    for tid in range(128):
        t = {"tid": tid}
        if a_reg:
            vals = []
            for i in range(8):
                row, col = frag_coord(tid, i)
                vals.append(bits_of(float(A[row][col]), dtype))
            t["a"] = [vals[2 * j] | vals[2 * j + 1] << 16 for j in range(4)]
        t["c"] = [float(C[r_][c_]) for r_, c_ in (frag_coord(tid, i) for i in range(N // 2))]
        t["d"] = [float(D[r_][c_]) for r_, c_ in (frag_coord(tid, i) for i in range(N // 2))]
        threads.append(t)

    instr = "wgmma.mma_async.sync.aligned.m64n%dk16.f32.%s.%s" % (N, dtype, dtype)
    tnsp_a = 0 if a_reg else (1 if regions["A"]["major"] == "MN" else 0)
    tnsp_b = 1 if regions["B"]["major"] == "MN" else 0
    dregs = "{d0, ..., d%d}" % (N // 2 - 1)
    if a_reg:
        operands = "%s, {a0, a1, a2, a3}, desc_b, %d, 1, 1, %d" % (dregs, scale_d, tnsp_b)
    else:
        operands = "%s, desc_a, desc_b, %d, 1, 1, %d, %d" % (dregs, scale_d, tnsp_a, tnsp_b)

    def region_json(r):
        # Whether the instruction's reads depend on the LBO / SBO value at all for this shape
        # (K = 16 always spans two 8-element K chunks / two 8-row K groups).
        mn_ext = M if r is regions.get("A") else N
        W = SWZ_CHUNKS[r["swizzle"]]
        if r["major"] == "K":
            lbo_exercised = r["swizzle"] == "none"
            sbo_exercised = mn_ext > 8
        elif r["swizzle"] == "none":
            lbo_exercised, sbo_exercised = True, mn_ext > T
        else:
            lbo_exercised, sbo_exercised = mn_ext > W * T, True
        return {
            "major": r["major"],
            "swizzle": r["swizzle"],
            "region_base": r["base"],
            "stored_tile": [r["mn_stored"], r["k_stored"]],
            "k_offset": r["k_offset"],
            "start_address": r["start"],
            "lbo_bytes": r["lbo"],
            "sbo_bytes": r["sbo"],
            "lbo_exercised": lbo_exercised,
            "sbo_exercised": sbo_exercised,
            "base_offset": 0,
        }

    case = {
        "name": spec["name"],
        "instr": instr,
        "operands": operands,
        "a_source": "registers" if a_reg else "shared",
        "N": N,
        "atype": dtype,
        "scale_d": scale_d,
        "imm_scale_a": 1,
        "imm_scale_b": 1,
        "tnspA": None if a_reg else tnsp_a,
        "tnspB": tnsp_b,
        "A": A,
        "B": B,
        "C": C,
        "D": D,
        "smem_bytes": smem_bytes,
        "smem_b16": smem,
    }
    if not a_reg:
        case["a_smem"] = region_json(regions["A"])
        case["desc_a"] = "0x%016x" % descs["A"]
    case["b_smem"] = region_json(regions["B"])
    case["desc_b"] = "0x%016x" % descs["B"]
    case["threads"] = threads
    if spec.get("note"):
        case["note"] = spec["note"]
    return case


# ---------------------------------------------------------------------------------------------
# Independent self-check (second decoder, differently structured)
# ---------------------------------------------------------------------------------------------

# The literal 16-byte-chunk patterns of the tensor chapter's "Swizzling Modes" section: row r of a
# table is the r-th 128-byte shared-memory line of the repeating pattern, entry p is the chunk that
# sits at position p of that line.
PATTERN_TABLES = {
    "none": [[0, 1, 2, 3, 4, 5, 6, 7]],
    "32B": [[0, 1, 2, 3, 4, 5, 6, 7],
            [1, 0, 3, 2, 5, 4, 7, 6]],
    "64B": [[0, 1, 2, 3, 4, 5, 6, 7],
            [1, 0, 3, 2, 5, 4, 7, 6],
            [2, 3, 0, 1, 6, 7, 4, 5],
            [3, 2, 1, 0, 7, 6, 5, 4]],
    "128B": [[0, 1, 2, 3, 4, 5, 6, 7],
             [1, 0, 3, 2, 5, 4, 7, 6],
             [2, 3, 0, 1, 6, 7, 4, 5],
             [3, 2, 1, 0, 7, 6, 5, 4],
             [4, 5, 6, 7, 0, 1, 2, 3],
             [5, 4, 7, 6, 1, 0, 3, 2],
             [6, 7, 4, 5, 2, 3, 0, 1],
             [7, 6, 5, 4, 3, 2, 1, 0]],
}
DESC_MODE = {0: "none", 1: "128B", 2: "64B", 3: "32B"}


def parse_descriptor(desc):
    assert desc >> 52 & 0x3FF == 0 and desc >> 46 & 7 == 0 and desc >> 30 & 3 == 0 \
        and desc >> 14 & 3 == 0, "reserved descriptor bits set"
    return {"start": (desc & 0x3FFF) << 4,
            "lbo": (desc >> 16 & 0x3FFF) << 4,
            "sbo": (desc >> 32 & 0x3FFF) << 4,
            "base_offset": desc >> 49 & 7,
            "mode": DESC_MODE[desc >> 62 & 3]}


def physical_from_pattern(addr, mode):
    """Where the chunk that the unswizzled address names really lives (table lookup)."""
    table = PATTERN_TABLES[mode]
    line, within_line = divmod(addr, 128)
    chunk, byte = divmod(within_line, 16)
    row = table[line % len(table)]
    return line * 128 + row.index(chunk) * 16 + byte


def decode_operand(smem, desc, major, mn_extent, dtype):
    """Rebuild an operand (mn_extent x 16, indexed [mn][k]) from the image and the descriptor,
    using the prose definitions of LBO / SBO in "Leading/Stride Dimension Byte Offset"."""
    f = parse_descriptor(desc)
    assert f["base_offset"] == 0
    mode, start, lbo, sbo = f["mode"], f["start"], f["lbo"], f["sbo"]
    row_bytes = 16 * SWZ_CHUNKS[mode]          # bytes per row of the swizzle atom
    out, addrs = [], []
    for mn in range(mn_extent):
        row = []
        for k in range(K):
            if major == "K":
                # K-major: rows are M/N, 16-byte chunks along K.
                #   SBO: offset from the first 8 rows to the next 8 rows.
                #   LBO (no swizzle only): offset between the two 8-element K chunks.
                group, r8 = divmod(mn, 8)
                kchunk, e = divmod(k, 8)
                if mode == "none":
                    addr = start + group * sbo + kchunk * lbo + r8 * 16 + e * 2
                else:
                    addr = start + group * sbo + r8 * row_bytes + kchunk * 16 + e * 2
            else:
                # MN-major: rows are K, 16-byte chunks along M/N.
                kgroup, kr = divmod(k, 8)
                if mode == "none":
                    # interleave: SBO = offset between 8-element M/N chunks,
                    #             LBO = offset from the first 8 K rows to the next 8.
                    chunk, e = divmod(mn, 8)
                    addr = start + chunk * sbo + kgroup * lbo + kr * 16 + e * 2
                else:
                    # swizzled: LBO = offset between (swizzle-bytes/16)-chunk groups along M/N,
                    #           SBO = offset from the first 8 K rows to the next 8.
                    per_row = row_bytes // 2
                    atom, within = divmod(mn, per_row)
                    addr = start + atom * lbo + kgroup * sbo + kr * row_bytes + within * 2
            p = physical_from_pattern(addr, mode)
            addrs.append(p)
            row.append(value_of(smem[p // 2], dtype))
        out.append(row)
    assert len(set(addrs)) == len(addrs), "decoded addresses collide"
    return out


def check_isa_examples():
    """The worked bf16 examples under "Canonical Layouts" (MN-major, no-swizzle / 32B / 64B):
    exact layout in elements, and the LBO / SBO descriptor encodings quoted there."""
    examples = [
        # (swizzle, LBO elems, SBO elems, MN extent, exact layout, enc LBO, enc SBO)
        ("none", 128, 64, 16, (((8, 1, 2), (1, 8, 64)), ((8, 2), (8, 128))), 16, 8),
        ("32B", 128, 256, 32, (((8, 2, 2), (1, 8, 128)), ((8, 2), (16, 256))), 16, 32),
        ("64B", 256, 512, 64, (((8, 4, 2), (1, 8, 256)), ((8, 2), (32, 512))), 32, 64),
    ]
    for swz, lbo, sbo, mn, exact, enc_lbo, enc_sbo in examples:
        assert canonical_modes("MN", swz, 2 * lbo, 2 * sbo, mn, 16) == exact, swz
        d = make_descriptor(0, 2 * lbo, 2 * sbo, swz)
        assert (d >> 16) & 0x3FFF == enc_lbo and (d >> 32) & 0x3FFF == enc_sbo, swz
    # The swizzle functor and the literal pattern tables must describe the same permutation.
    for swz in SWZ_CHUNKS:
        for addr in range(0, 4096, 2):
            assert swizzle_functor(addr, swz) == physical_from_pattern(addr, swz)


def cute_tv(shape_t, stride_t, shape_v, stride_v, t, v):
    return cute_eval(t, shape_t, stride_t) + cute_eval(v, shape_v, stride_v)


def self_check(case):
    dtype, N = case["atype"], case["N"]
    smem = case["smem_b16"]
    A, B, C, D = case["A"], case["B"], case["C"], case["D"]
    assert len(A) == M and all(len(r) == K for r in A)
    assert len(B) == K and all(len(r) == N for r in B)

    # 1. operands rebuilt from image + descriptors only
    if case["a_source"] == "shared":
        major_a = "MN" if case["tnspA"] else "K"
        A2 = decode_operand(smem, int(case["desc_a"], 16), major_a, M, dtype)
        assert A2 == [[float(x) for x in r] for r in A], case["name"] + ": A mismatch"
    major_b = "MN" if case["tnspB"] else "K"
    Bt = decode_operand(smem, int(case["desc_b"], 16), major_b, N, dtype)
    assert [[Bt[n][k] for n in range(N)] for k in range(K)] == \
        [[float(x) for x in r] for r in B], case["name"] + ": B mismatch"

    # 2. D recomputed (k-outer loop order, exact integers)
    acc = [[C[m][n] if case["scale_d"] else 0 for n in range(N)] for m in range(M)]
    for k in range(K):
        for m in range(M):
            a = A[m][k]
            for n in range(N):
                acc[m][n] += a * B[k][n]
    assert acc == D, case["name"] + ": D mismatch"
    assert max(abs(x) for r in D for x in r) < (1 << 24)

    # 3. register fragments against CuTe thread/value layouts (idx = m + 64*n):
    #    C/D: ((4,8,4),(2,2,N/8)) : ((128,1,16),(64,8,512));  A: same with N = 16.
    seen = set()
    for t in case["threads"]:
        tid = t["tid"]
        assert len(t["c"]) == N // 2 and len(t["d"]) == N // 2
        for v in range(N // 2):
            idx = cute_tv((4, 8, 4), (128, 1, 16), (2, 2, N // 8), (64, 8, 512), tid, v)
            m, n = idx % 64, idx // 64
            seen.add((m, n))
            assert t["d"][v] == float(D[m][n]) and t["c"][v] == float(C[m][n])
        if case["a_source"] == "registers":
            for v in range(8):
                idx = cute_tv((4, 8, 4), (128, 1, 16), (2, 2, 2), (64, 8, 512), tid, v)
                m, k = idx % 64, idx // 64
                word = t["a"][v // 2]
                half = (word >> (16 * (v % 2))) & 0xFFFF
                assert value_of(half, dtype) == float(A[m][k])
    assert len(seen) == M * N


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

def R(major, swizzle, lbo, sbo, mn, k_stored=K, k_offset=0):
    return region_spec(major, swizzle, lbo, sbo, mn, k_stored, k_offset)


SPECS = [
    # ---- A and B from shared memory, both K-major (tnspA = tnspB = 0) -------------------------
    dict(name="ss_k_none_n8_bf16", dtype="bf16", N=8, scale_d=1,
         a=R("K", "none", 128, 256, 64), b=R("K", "none", 128, 256, 8),
         note="no swizzle; 8x16B core matrices; K chunks adjacent (LBO=128), row groups at SBO=256"),
    dict(name="ss_k_none_n8_f16_lbo_sbo_swapped", dtype="f16", N=8, scale_d=1,
         a=R("K", "none", 1024, 128, 64), b=R("K", "none", 256, 512, 8),
         note="no swizzle; A stores the eight row groups first (SBO=128) and the second K chunk "
              "after them (LBO=1024); B leaves a 128-byte gap between its K chunks (LBO=256)"),
    dict(name="ss_k_sw32_n16_bf16", dtype="bf16", N=16, scale_d=1,
         a=R("K", "32B", 16, 256, 64), b=R("K", "32B", 16, 256, 16)),
    dict(name="ss_k_sw64_n16_f16_scale_d0", dtype="f16", N=16, scale_d=0,
         a=R("K", "64B", 16, 512, 64), b=R("K", "64B", 16, 1024, 16),
         note="scale-d = 0: D = A*B, the c registers must be ignored; B row groups 1024 apart"),
    dict(name="ss_k_sw128_n64_bf16", dtype="bf16", N=64, scale_d=1,
         a=R("K", "128B", 16, 1024, 64), b=R("K", "128B", 16, 1024, 64)),
    dict(name="ss_k_sw128_none_n64_f16", dtype="f16", N=64, scale_d=1,
         a=R("K", "128B", 16, 2048, 64), b=R("K", "none", 128, 256, 64),
         note="A row groups 2048 apart (half of each 2 KiB slot unused)"),
    dict(name="ss_k_sw64_sw128_n128_bf16", dtype="bf16", N=128, scale_d=1,
         a=R("K", "64B", 16, 512, 64), b=R("K", "128B", 16, 1024, 128)),
    dict(name="ss_k_none_sw32_n128_f16_scale_d0", dtype="f16", N=128, scale_d=0,
         a=R("K", "none", 128, 256, 64), b=R("K", "32B", 16, 256, 128)),
    dict(name="ss_k_sw128_kslice_n32_bf16", dtype="bf16", N=32, scale_d=1,
         a=R("K", "128B", 16, 1024, 64, k_stored=64, k_offset=16),
         b=R("K", "128B", 16, 1024, 32, k_stored=64, k_offset=48),
         note="K=64 tiles stored in one 128B swizzle atom per 8 rows; the descriptors point at "
              "K slice 1 of A (start = base + 32) and K slice 3 of B (start = base + 96); the "
              "swizzle is applied to the full address, so the slice is read through the XOR"),
    dict(name="ss_k_sw64_kslice_n32_f16", dtype="f16", N=32, scale_d=1,
         a=R("K", "64B", 16, 512, 64, k_stored=32, k_offset=16),
         b=R("K", "64B", 16, 512, 32, k_stored=32, k_offset=16),
         note="K=32 tiles in 64B swizzle atoms; descriptors point at K slice 1 (start = base + 32)"),
    # ---- transposed (MN-major) B -------------------------------------------------------------
    dict(name="ss_tnspB_sw128_n128_bf16", dtype="bf16", N=128, scale_d=1,
         a=R("K", "128B", 16, 1024, 64), b=R("MN", "128B", 1024, 2048, 128),
         note="B N-major 128B: 64 n per 128-byte row, 8 k rows per atom; next 64 n at LBO=1024, "
              "next 8 k at SBO=2048"),
    dict(name="ss_tnspB_none_n16_f16", dtype="f16", N=16, scale_d=1,
         a=R("K", "none", 128, 256, 64), b=R("MN", "none", 256, 128, 16),
         note="B N-major interleave: core matrix = 8 k rows x 8 n; next 8 n at SBO=128, "
              "next 8 k at LBO=256"),
    dict(name="ss_tnspB_sw32_n64_bf16", dtype="bf16", N=64, scale_d=1,
         a=R("K", "32B", 16, 256, 64), b=R("MN", "32B", 256, 1024, 64),
         note="B N-major 32B: 16 n per 32-byte row; four atoms along N at LBO=256; next 8 k at "
              "SBO=1024"),
    dict(name="ss_tnspB_sw64_n64_f16_scale_d0", dtype="f16", N=64, scale_d=0,
         a=R("K", "64B", 16, 512, 64), b=R("MN", "64B", 1024, 512, 64),
         note="B N-major 64B: 32 n per 64-byte row; next 32 n at LBO=1024, next 8 k at SBO=512"),
    # ---- transposed (M-major) A --------------------------------------------------------------
    dict(name="ss_tnspA_sw32_n16_bf16", dtype="bf16", N=16, scale_d=1,
         a=R("MN", "32B", 256, 1024, 64), b=R("K", "none", 128, 256, 16),
         note="A M-major 32B: 16 m per 32-byte row; four atoms along M at LBO=256; next 8 k at "
              "SBO=1024"),
    dict(name="ss_tnspA_none_tnspB_sw64_n32_f16", dtype="f16", N=32, scale_d=1,
         a=R("MN", "none", 1024, 128, 64), b=R("MN", "64B", 1024, 512, 32),
         note="A M-major interleave (next 8 m at SBO=128, next 8 k at LBO=1024); B N-major 64B "
              "(one atom along N, so its LBO is not exercised)"),
    # ---- A from registers ---------------------------------------------------------------------
    dict(name="rs_k_none_n8_bf16", dtype="bf16", N=8, scale_d=1, a="reg",
         b=R("K", "none", 128, 256, 8)),
    dict(name="rs_k_sw32_n16_f16_scale_d0", dtype="f16", N=16, scale_d=0, a="reg",
         b=R("K", "32B", 16, 256, 16)),
    dict(name="rs_k_sw128_n24_bf16", dtype="bf16", N=24, scale_d=1, a="reg",
         b=R("K", "128B", 16, 1024, 24),
         note="N=24: three 8-row groups of B, last one in a half-used 1024-byte atom"),
    dict(name="rs_k_sw128_n64_f16", dtype="f16", N=64, scale_d=1, a="reg",
         b=R("K", "128B", 16, 1024, 64)),
    dict(name="rs_k_sw64_n128_bf16", dtype="bf16", N=128, scale_d=1, a="reg",
         b=R("K", "64B", 16, 512, 128)),
    dict(name="rs_tnspB_sw128_n128_bf16", dtype="bf16", N=128, scale_d=1, a="reg",
         b=R("MN", "128B", 2048, 1024, 128),
         note="B N-major 128B with the other arrangement: next 8 k at SBO=1024, next 64 n at "
              "LBO=2048"),
    dict(name="rs_tnspB_none_n32_f16", dtype="f16", N=32, scale_d=1, a="reg",
         b=R("MN", "none", 512, 128, 32)),
]

ABOUT = (
    "Independent test vectors for wgmma.mma_async (sm_90a), .m64nNk16 with .f16/.bf16 inputs and "
    ".f32 accumulators. Derived from the PTX ISA tables (register fragment figures for "
    ".m64nNk16, canonical shared-memory layouts, swizzling modes, matrix descriptor format); see "
    "README.md. smem_b16: u16 values, byte address = 2*index, address 0 = start of a 1024-byte "
    "aligned shared-memory region; unused slots hold 512.0. desc_a/desc_b: 64-bit descriptors as "
    "hex strings. threads[tid].c/.d: f32 values of registers d0..d(N/2-1) before/after; "
    "threads[tid].a: u32 registers (two 16-bit elements, low half = lower element index). "
    "Inputs are small integers, so every result is exact in f32 in any summation order."
)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    check_isa_examples()
    cases = []
    for i, spec in enumerate(SPECS):
        case = build_case(spec, seed=0x5EED0 + i)
        self_check(case)
        cases.append(case)
    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names)
    doc = {"about": ABOUT, "cases": cases}
    path = os.path.join(out_dir, "wgmma.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("wrote %d cases, %d bytes" % (len(cases), os.path.getsize(path)))


if __name__ == "__main__":
    main()
