// tiles.cuh: the tile machinery every kernel template shares, written only in terms of the
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
