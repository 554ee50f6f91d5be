// common/tiles.cuh: the tile machinery every kernel template shares, written only in terms of the
// primitives of tessera.cuh (so the host emulation, which replaces tessera.cuh, compiles it as is).
#pragma once

namespace tessera {

// A tile of ROWS x COLS 16-bit values in shared memory, stored as 16-byte chunks. Chunk c of row r
// sits at chunk position c ^ (r % W), W the largest power of two up to 8 that divides the row's
// chunk count (8 for 64/128/192/256 columns, 4 for 32 and 96): the row addresses of one ldmatrix
// phase then fall into different 16-byte bank groups instead of one, and the XOR never leaves the
// row (W must divide CHUNKS, or 96 columns' chunk 11 ^ 7 would land in the next row).
template <int COLS> struct SwizzledTile {
    static constexpr int CHUNKS = COLS / 8;
    static constexpr int SWIZZLE = (CHUNKS % 8 == 0 ? 8 : CHUNKS % 4 == 0 ? 4 : CHUNKS % 2 == 0 ? 2 : 1) - 1;
    TESSERA_DEVICE static int offset(int row, int col) {
        int chunk = (col / 8) ^ (row & SWIZZLE);
        return row * COLS + chunk * 8 + (col % 8);
    }
};

// Cooperative load of a ROWS x COLS tile whose rows start `ld` elements apart in global memory into
// a SwizzledTile<COLS>; elements at or past `valid_rows` / `valid_cols` become zeros, so mma loops
// over a partial tile never mask (zeros contribute nothing).
//   ALIGNED: 16-byte cp.async chunks. The caller guarantees 16-byte aligned row starts and a
//            valid_cols that is a multiple of 8, so a chunk is wholly inside or wholly outside.
//   else:    element-wise 16-bit loads and a synchronous 16-byte shared store per chunk, for any
//            shape and stride; the ring's barriers order these stores like cp.async data.
template <typename T, int ROWS, int COLS, int THREADS, bool ALIGNED>
TESSERA_DEVICE void load_tile(T* tile, const T* src, i64 ld, int valid_rows, int valid_cols) {
    typedef SwizzledTile<COLS> Tile;
    constexpr int TOTAL = ROWS * Tile::CHUNKS;
#pragma unroll
    for (int i = thread_index(); i < TOTAL; i += THREADS) {
        int row = i / Tile::CHUNKS;
        int col = (i % Tile::CHUNKS) * 8;
        if (ALIGNED) {
            bool valid = row < valid_rows && col + 8 <= valid_cols;
            const T* from = valid ? src + row * ld + col : src;
            cp_async_16(tile + Tile::offset(row, col), from, valid);
        } else {
            u32 words[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                int c = col + 2 * j;
                const T* p = src + row * ld + c;
                u32 lo = row < valid_rows && c < valid_cols ? load_global_bits16(p) : 0u;
                u32 hi = row < valid_rows && c + 1 < valid_cols ? load_global_bits16(p + 1) : 0u;
                words[j] = lo | (hi << 16);
            }
            chunk16 v = {words[0], words[1], words[2], words[3]};
            store_shared_16(tile + Tile::offset(row, col), v);
        }
    }
}

// mma.m16n8k16 operand fragments from swizzled shared tiles (layouts in tessera.cuh's header).
// A: the 16 x 16 block at rows m0, k0 of an operand stored k-contiguous ([m][k], K_CONTIG) or
// m-contiguous ([k][m]). ldmatrix's matrix j = lane / 8 must be A's (rows 8(j%2), k 8(j/2)) block:
// from [m][k] that is row m0 + lane%16 at k0 + 8(lane/16); from [k][m] the block is stored
// transposed, so lanes address k-rows k0 + 8(lane/16) + lane%8 at m0 + 8((lane/8)%2) and .trans
// hands each lane A[g][2t..2t+1] as it would from [m][k].
template <bool K_CONTIG, int COLS, typename T>
TESSERA_DEVICE void load_a_fragment(u32 (&a)[4], const T* tile, int m0, int k0, int lane) {
    typedef SwizzledTile<COLS> Tile;
    if (K_CONTIG) {
        ldmatrix_x4(a, tile + Tile::offset(m0 + lane % 16, k0 + (lane / 16) * 8));
    } else {
        ldmatrix_x4_trans(a, tile + Tile::offset(k0 + (lane / 16) * 8 + lane % 8, m0 + ((lane / 8) % 2) * 8));
    }
}

// B: the fragments of two n8 tiles, columns n0..n0+15, k0..k0+15, of an operand stored
// k-contiguous ([n][k], K_CONTIG: B "col" as mma wants it, plain ldmatrix) or n-contiguous
// ([k][n], .trans). Registers: b[0], b[1] = tile n0 (k 0-7, 8-15); b[2], b[3] = tile n0 + 8.
template <bool K_CONTIG, int COLS, typename T>
TESSERA_DEVICE void load_b_fragments(u32 (&b)[4], const T* tile, int n0, int k0, int lane) {
    typedef SwizzledTile<COLS> Tile;
    if (K_CONTIG) {
        ldmatrix_x4(b, tile + Tile::offset(n0 + (lane / 16) * 8 + lane % 8, k0 + ((lane / 8) % 2) * 8));
    } else {
        ldmatrix_x4_trans(b, tile + Tile::offset(k0 + lane % 16, n0 + (lane / 16) * 8));
    }
}

// A STAGES-deep cp.async ring of shared-memory slots streaming tiles 0..n_tiles-1; `load(tile, slot)`
// issues one tile's copies. The caller commits its own earlier groups (e.g. a Q tile) first.
//   ring_prologue: tiles 0..STAGES-2 in flight, one commit group each (empty groups keep the
//                  wait_group arithmetic uniform).
//   ring_acquire:  waits for tile t, makes it visible to the whole CTA, queues tile t+STAGES-1 into
//                  the slot tile t-1 used (every warp is past it after the barrier), returns t's slot.
// STAGES == 1 loads each tile on demand into the one slot, with a barrier before overwriting it.
template <int STAGES, typename Load> TESSERA_DEVICE void ring_prologue(int n_tiles, Load&& load) {
    if (STAGES > 1) {
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < n_tiles) load(s, s);
            cp_async_commit();
        }
    }
}

template <int STAGES, typename Load> TESSERA_DEVICE int ring_acquire(int t, int n_tiles, Load&& load) {
    if (STAGES == 1) {
        if (t > 0) sync_threads();
        load(t, 0);
        cp_async_commit();
        cp_async_wait<0>();
        sync_threads();
        return 0;
    }
    cp_async_wait<(STAGES > 1 ? STAGES - 2 : 0)>();
    // Tile t has landed for every thread, and every warp is done with tile t-1's slot.
    sync_threads();
    int ahead = t + STAGES - 1;
    if (ahead < n_tiles) load(ahead, ahead % STAGES);
    cp_async_commit();
    return t % STAGES;
}

}  // namespace tessera
