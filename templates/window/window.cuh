// window/window.cuh: sliding-window max / min / sum along the last axis of x [rows, n]:
//
//   y[r][i] = op(x[r][i], x[r][i + 1], ..., x[r][i + k - 1])      i in [0, n - k + 1)
//
// in T (f32, f16, bf16) in and out, computed in f32. van Herk / Gil-Werman: the row is cut into
// blocks of k aligned at multiples of k; within each block S is the suffix scan (S[i] = op of
// x[i .. block end]) and P the prefix scan (P[j] = op of x[block start .. j]). Window i covers the
// tail of i's block and the head of the next one, so
//
//   y[i] = S[i]                      when i is a multiple of k (the window is one whole block)
//   y[i] = op(S[i], P[i + k - 1])    otherwise,
//
// O(n) work per row whatever k is. op: fmaxf / fminf (NaN ignored unless every element of the
// window is NaN; -0 orders below +0), or f32 addition (IEEE: a window holding a NaN, or both
// infinities, sums to NaN). Max and min are exact (op is associative and commutative, so the
// order of the parallel scans does not matter); the sum's association order follows the scans
// below (an element reaches its result through at most 4 ELEMS + log2(THREADS) + 2 additions in
// its own tile, one more per tile carry, and the final S + P), so it is compared with that error
// bound (reference::window_sum_bound in the runtime), not bit for bit.
//
// Work division (TILE = THREADS x ELEMS):
//   k <= TILE  each CTA owns BLOCKS = TILE / k whole blocks of outputs (BLOCKS k <= TILE): it
//              loads those blocks plus the next one (at most 2 TILE elements) into shared memory
//              once, scans S over its blocks and P over all of them, and writes its outputs.
//              Reads (BLOCKS + 1) / BLOCKS elements per output (at most 2), writes 1.
//   k > TILE   each CTA owns one block of outputs: it streams that block right to left in tiles
//              (S, with a carry between tiles) into the f32 workspace, then the next block left
//              to right (P), combining with the workspace into y. Reads 2 elements and 4 + 4
//              workspace bytes per output (the workspace round trip stays in L2 when it can).
#pragma once

namespace tessera {

// The kernel arguments (`WindowParams`: x [rows, n] T, y [rows, n_out] T, the f32 workspace or
// null, the sizes and the work division) and the op codes (`WindowOp`: WINDOW_MAX, WINDOW_MIN,
// WINDOW_SUM) are generated from their Rust definitions (tessera-codegen, window/) and precede
// this file.

TESSERA_DEVICE i64 window_min(i64 a, i64 b) { return a < b ? a : b; }

template <int OP> TESSERA_DEVICE float window_op(float a, float b) {
    if (OP == WINDOW_MAX) return fmaxf(a, b);
    if (OP == WINDOW_MIN) return fminf(a, b);
    return add_rn(a, b);
}

// The identity of op: NaN for max / min (fmaxf(NaN, x) = x, and an all-NaN run stays NaN), -0 for
// the sum (-0 + x = x for every x, +0 included). The NaN is 0x7fffffff (every exponent and mantissa
// bit set).
template <int OP> TESSERA_DEVICE float window_identity() {
    return OP == WINDOW_SUM ? bits_f32(F32_SIGN_BIT) : bits_f32(F32_ABS_MASK);
}

// In-place inclusive segmented scan of buf[0, len) in direction FWD (else backwards), segments of
// k aligned on multiples of k of the row position; buf[0] sits at offset off0 (0 <= off0 < k) of
// its segment, and either k <= 2 TILE or buf lies inside one segment (so offsets are reduced
// without 64-bit division, which ptxas would call out of line). A segment restarts at its first
// element in scan order (FWD: position % k == 0; backwards: (position + 1) % k == 0). `carry` is
// the scan value just before buf's first element in scan order (the identity where none); the
// return value is the scan value at buf's last element in scan order (identity when len == 0).
// Thread t owns the contiguous run [t * per, (t + 1) * per) in scan order; the runs' carries come
// from a Hillis-Steele segmented scan over the threads.
template <int OP, int THREADS, int TILE, bool FWD>
TESSERA_DEVICE float window_scan(float* buf, int len, i64 off0, i64 k, float carry, float* sv, int* sf) {
    const int t = thread_index();
    const int per = (len + THREADS - 1) / THREADS;
    const int lo = (int)window_min((i64)t * per, len);
    const int hi = (int)window_min(lo + per, len);
    // Position of the run's first element in scan order, as an index into buf and an offset into
    // its segment in scan order.
    const int first = FWD ? lo : hi - 1;
    i64 fo = off0 + first;  // forward offset of the run's first element in its segment
    if (k <= 2 * TILE) fo = (int)fo % (int)k;
    else if (fo >= k) fo -= k;
    i64 off = 0;
    if (hi > lo) off = FWD ? fo : (k - 1) - fo;
    // 1. The run's own aggregate since its last segment start, and whether it holds a start.
    float agg = window_identity<OP>();
    int head = 0;
    {
        i64 o = off;
        for (int e = 0; e < hi - lo; ++e) {
            const int idx = FWD ? lo + e : hi - 1 - e;
            const float v = buf[idx];
            if (o == 0) {
                agg = v;
                head = 1;
            } else {
                agg = window_op<OP>(agg, v);
            }
            o = o + 1 == k ? 0 : o + 1;
        }
    }
    // 2. Inclusive segmented scan of (head, agg) over the runs in scan order.
    const int r = FWD ? t : THREADS - 1 - t;
    for (int d = 1; d < THREADS; d *= 2) {
        sv[r] = agg;
        sf[r] = head;
        sync_threads();
        if (r >= d && !head) {
            agg = window_op<OP>(sv[r - d], agg);
            head = sf[r - d];
        }
        sync_threads();
    }
    sv[r] = agg;
    sf[r] = head;
    sync_threads();
    float run_carry = carry;
    if (r > 0) run_carry = sf[r - 1] ? sv[r - 1] : window_op<OP>(carry, sv[r - 1]);
    const float last = sf[THREADS - 1] ? sv[THREADS - 1] : window_op<OP>(carry, sv[THREADS - 1]);
    sync_threads();
    // 3. Rescan the run from its carry, writing the scan.
    {
        i64 o = off;
        float acc = run_carry;
        for (int e = 0; e < hi - lo; ++e) {
            const int idx = FWD ? lo + e : hi - 1 - e;
            const float v = buf[idx];
            acc = o == 0 ? v : window_op<OP>(acc, v);
            buf[idx] = acc;
            o = o + 1 == k ? 0 : o + 1;
        }
    }
    sync_threads();
    return len > 0 ? last : carry;
}

template <typename T>
TESSERA_DEVICE void window_load(float* buf, const T* row, i64 begin, int len) {
    for (int e = thread_index(); e < len; e += threads_per_block()) {
        float v[1];
        load_elems<T, 1, false>(row, begin + e, v);
        buf[e] = v[0];
    }
}

template <typename T>
TESSERA_DEVICE void window_store(T* row, i64 i, float value) {
    float v[1] = {value};
    store_elems<T, 1, false>(row, i, v);
}

template <typename T, int OP, int THREADS, int ELEMS>
TESSERA_DEVICE void window(const WindowParams& p) {
    constexpr int TILE = THREADS * ELEMS;
    __shared__ float pbuf[2 * TILE];
    __shared__ float sbuf[TILE];
    __shared__ float sv[THREADS];
    __shared__ int sf[THREADS];

    // The runtime keeps the grid below 2^31 CTAs: 32-bit division.
    const u32 cta = (u32)block_index_x();
    const i64 r = (i64)(cta / (u32)p.ctas_per_row);
    const i64 g = (i64)(cta % (u32)p.ctas_per_row);
    const i64 k = p.k;
    const T* x = static_cast<const T*>(p.x) + r * p.n;
    T* y = static_cast<T*>(p.y) + r * p.n_out;
    const i64 begin = g * p.blocks_per_cta * k;  // first output (a multiple of k)
    if (begin >= p.n_out) return;
    const i64 end = window_min(begin + p.blocks_per_cta * k, p.n_out);
    const float id = window_identity<OP>();

    if (k <= TILE) {
        // S over [begin, end)'s blocks, P over those and the next; all in shared memory.
        // Every block that holds an output ends inside the row: (i / k + 1) k - 1 <= n - 1.
        const int kk = (int)k;
        const int s_len = ((int)(end - begin) + kk - 1) / kk * kk;
        const int p_len = (int)(window_min(end + k - 1, p.n) - begin);
        window_load<T>(sbuf, x, begin, s_len);
        window_load<T>(pbuf, x, begin, p_len);
        sync_threads();
        window_scan<OP, THREADS, TILE, false>(sbuf, s_len, 0, k, id, sv, sf);
        window_scan<OP, THREADS, TILE, true>(pbuf, p_len, 0, k, id, sv, sf);
        const int count = (int)(end - begin);
        for (int e = thread_index(); e < count; e += THREADS) {
            const float s = sbuf[e];
            window_store<T>(y, begin + e, e % kk == 0 ? s : window_op<OP>(s, pbuf[e + k - 1]));
        }
        return;
    }

    // k > TILE: this CTA owns the block [begin, begin + k); outputs [begin, end).
    float* ws = p.ws + r * p.n_out;
    float carry = id;
    const i64 block_end = begin + k;  // <= n
    const i64 tiles = (k + TILE - 1) / TILE;
    for (i64 tile = tiles - 1; tile >= 0; --tile) {
        const i64 t0 = begin + tile * TILE;
        const int len = (int)window_min(TILE, block_end - t0);
        window_load<T>(sbuf, x, t0, len);
        sync_threads();
        carry = window_scan<OP, THREADS, TILE, false>(sbuf, len, t0 - begin, k, carry, sv, sf);
        for (int e = thread_index(); e < len; e += THREADS) {
            const i64 i = t0 + e;
            if (i == begin) window_store<T>(y, i, sbuf[e]);
            else if (i < end) ws[i] = sbuf[e];
        }
        sync_threads();
    }
    // P over [begin + k, end + k - 1): output i = j - k + 1 in (begin, end).
    carry = id;
    const i64 p_end = end + k - 1;
    for (i64 t0 = block_end; t0 < p_end; t0 += TILE) {
        const int len = (int)window_min(TILE, p_end - t0);
        window_load<T>(pbuf, x, t0, len);
        sync_threads();
        carry = window_scan<OP, THREADS, TILE, true>(pbuf, len, t0 - block_end, k, carry, sv, sf);
        for (int e = thread_index(); e < len; e += THREADS) {
            const i64 i = t0 + e - k + 1;
            window_store<T>(y, i, window_op<OP>(ws[i], pbuf[e]));
        }
        sync_threads();
    }
}

}  // namespace tessera
