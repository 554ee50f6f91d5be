// attention_fwd.cuh: tiled online-softmax attention forward (FlashAttention-2 schedule) on
// mma.sync.m16n8k16.
//
//   O[i] = sum_j softmax_j(scale * Q[i].K[j]) V[j]   over the keys j that query i may see,
//   LSE[i] = log sum_j exp(scale * Q[i].K[j])         (natural log, f32).
//
// One CTA owns BLOCK_M query rows of one (batch, head); each warp owns 16 of them, so every row's
// softmax state lives in one warp and the warps never talk to each other about softmax. K and V tiles
// of BLOCK_N keys stream through a STAGES-deep shared-memory ring filled with cp.async.
//
// Online softmax in base 2: with s = scale*log2(e) * q.k, a row keeps its running max m and
// sum l = sum 2^(s - m). A new tile with max m' rescales l and the O accumulator by 2^(m - m').
// log2(e) is folded into the scale on the host, so the inner loop has one FMUL and one ex2 per score.
//
// Masking: key j is visible to query i when j < seq_k and, for causal, j <= i + seq_k - seq_q (causal
// aligned bottom-right, as in FlashAttention 2.1+). Tiles entirely past the causal diagonal are never
// loaded. A row that sees no key keeps m = -inf; it subtracts 0 instead of m (so no inf - inf) and
// ends with l = 0, output 0 and LSE -inf.
#pragma once

namespace tessera {

// Kernel arguments, passed by value. Must match `AttentionParams` in tessera-runtime field by field.
// Strides are in elements; the last dimension of every tensor is contiguous.
struct AttentionParams {
    const void* q;          // [batch, seq_q, heads_q, head_dim]
    const void* k;          // [batch, seq_k, heads_kv, head_dim]
    const void* v;          // [batch, seq_k, heads_kv, head_dim]
    void* o;                // [batch, seq_q, heads_q, head_dim]
    float* lse;             // [batch, heads_q, seq_q] contiguous, or null
    i64 q_batch_stride, q_seq_stride, q_head_stride;
    i64 k_batch_stride, k_seq_stride, k_head_stride;
    i64 v_batch_stride, v_seq_stride, v_head_stride;
    i64 o_batch_stride, o_seq_stride, o_head_stride;
    int seq_q;
    int seq_k;
    int heads_q;
    float scale_log2;       // softmax scale * log2(e)
};

// Cooperative cp.async of `rows` rows starting at `src` (row stride in elements) into a swizzled tile;
// rows at or past `valid_rows` are zero-filled without touching global memory.
template <typename T, int ROWS, int HEAD_DIM, int THREADS>
TESSERA_DEVICE void load_tile_async(T* tile, const T* src, i64 row_stride, int valid_rows) {
    typedef SwizzledTile<HEAD_DIM> Tile;
    constexpr int TOTAL = ROWS * Tile::CHUNKS;
#pragma unroll
    for (int i = thread_index(); i < TOTAL; i += THREADS) {
        int row = i / Tile::CHUNKS;
        int col = (i % Tile::CHUNKS) * 8;
        bool valid = row < valid_rows;
        const T* from = valid ? src + row * row_stride + col : src;
        cp_async_16(tile + Tile::offset(row, col), from, valid);
    }
}

template <typename T, int HEAD_DIM, int BLOCK_M, int BLOCK_N, int WARPS, int STAGES, bool CAUSAL,
          int GROUP, bool Q_IN_REGS>
TESSERA_DEVICE void attention_fwd(const AttentionParams& p) {
    static_assert(BLOCK_M == 16 * WARPS, "each warp owns 16 query rows");
    static_assert(HEAD_DIM % 16 == 0 && BLOCK_N % 16 == 0, "mma k-steps are 16 wide");
    static_assert(STAGES >= 1 && STAGES <= 3, "K/V ring depth");
    constexpr int THREADS = WARPS * 32;
    constexpr int D_STEPS = HEAD_DIM / 16;   // k-steps of S = Q K^T
    constexpr int D_TILES = HEAD_DIM / 8;    // n-tiles of O
    constexpr int N_TILES = BLOCK_N / 8;     // n-tiles of S
    constexpr int N_STEPS = BLOCK_N / 16;    // k-steps of O += P V
    typedef SwizzledTile<HEAD_DIM> Tile;

    const float NEG_INF = neg_inf();
    const int tid = thread_index();
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int group = lane / 4;        // fragment row inside the warp's 16 rows
    const int in_group = lane % 4;     // fragment column pair

    const int m_block = block_index_x();
    const int head = block_index_y();
    const int batch = block_index_z();
    const int kv_head = head / GROUP;
    const int row0 = m_block * BLOCK_M;
    // Causal: query i sees keys j <= i + diag.
    const int diag = p.seq_k - p.seq_q;

    const T* q = static_cast<const T*>(p.q) + batch * p.q_batch_stride + head * p.q_head_stride;
    const T* k = static_cast<const T*>(p.k) + batch * p.k_batch_stride + kv_head * p.k_head_stride;
    const T* v = static_cast<const T*>(p.v) + batch * p.v_batch_stride + kv_head * p.v_head_stride;

    T* sQ = reinterpret_cast<T*>(dynamic_smem());
    T* sK = sQ + BLOCK_M * HEAD_DIM;
    T* sV = sK + STAGES * BLOCK_N * HEAD_DIM;

    // Keys this CTA can see: all of them, or up to the diagonal of its last row.
    int kv_end = p.seq_k;
    if (CAUSAL) {
        int last_visible = row0 + BLOCK_M - 1 + diag;
        kv_end = last_visible + 1 < kv_end ? last_visible + 1 : kv_end;
    }
    const int n_tiles = kv_end > 0 ? (kv_end + BLOCK_N - 1) / BLOCK_N : 0;

    auto load_kv = [&](int tile_index, int slot) {
        int key0 = tile_index * BLOCK_N;
        int valid = p.seq_k - key0;
        load_tile_async<T, BLOCK_N, HEAD_DIM, THREADS>(sK + slot * BLOCK_N * HEAD_DIM,
                                                       k + key0 * p.k_seq_stride, p.k_seq_stride, valid);
        load_tile_async<T, BLOCK_N, HEAD_DIM, THREADS>(sV + slot * BLOCK_N * HEAD_DIM,
                                                       v + key0 * p.v_seq_stride, p.v_seq_stride, valid);
    };

    // Q is a cp.async group of its own, the oldest: every wait below that covers the first K/V tile
    // covers Q too, and the epilogue's wait<0> covers it even when no K/V tile is loaded at all.
    load_tile_async<T, BLOCK_M, HEAD_DIM, THREADS>(sQ, q + row0 * p.q_seq_stride, p.q_seq_stride,
                                                   p.seq_q - row0);
    cp_async_commit();
    ring_prologue<STAGES>(n_tiles, load_kv);

    // This warp's 16 query rows start at sQ row warp*16. ldmatrix_x4 address for an A fragment:
    // lane l points at row l%16, column block l/16 of the 16x16 sub-tile.
    const int a_row = warp * 16 + (lane % 16);
    const int a_col = (lane / 16) * 8;
    u32 q_frag[Q_IN_REGS ? D_STEPS : 1][4];

    float o_acc[D_TILES][4];
#pragma unroll
    for (int d = 0; d < D_TILES; ++d) {
#pragma unroll
        for (int e = 0; e < 4; ++e) o_acc[d][e] = 0.f;
    }
    // Softmax state of the two rows this lane touches: group and group + 8.
    float row_max[2] = {NEG_INF, NEG_INF};
    float row_sum[2] = {0.f, 0.f};
    const int q_row[2] = {row0 + warp * 16 + group, row0 + warp * 16 + group + 8};

    for (int t = 0; t < n_tiles; ++t) {
        const int slot = ring_acquire<STAGES>(t, n_tiles, load_kv);
        if (Q_IN_REGS && t == 0) {
#pragma unroll
            for (int ks = 0; ks < D_STEPS; ++ks)
                ldmatrix_x4(q_frag[Q_IN_REGS ? ks : 0], sQ + Tile::offset(a_row, ks * 16 + a_col));
        }
        const T* tK = sK + slot * BLOCK_N * HEAD_DIM;
        const T* tV = sV + slot * BLOCK_N * HEAD_DIM;

        // ---- S = Q K^T (16 x BLOCK_N per warp) ----
        float s[N_TILES][4];
#pragma unroll
        for (int n = 0; n < N_TILES; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
        }
        // Without Q in registers the k-loop stays rolled: unrolled, ptxas hoists every step's
        // ldmatrix and runs out of registers at head_dim 256.
#pragma unroll (Q_IN_REGS ? D_STEPS : 1)
        for (int ks = 0; ks < D_STEPS; ++ks) {
            u32 a[4];
            if (Q_IN_REGS) {
#pragma unroll
                for (int e = 0; e < 4; ++e) a[e] = q_frag[Q_IN_REGS ? ks : 0][e];
            } else {
                ldmatrix_x4(a, sQ + Tile::offset(a_row, ks * 16 + a_col));
            }
            // One ldmatrix_x4 yields the B fragments of two 8-key tiles: matrices (n, cols 0-7),
            // (n, cols 8-15), (n+1, cols 0-7), (n+1, cols 8-15). K is [key][d] in shared memory, which
            // is exactly B = K^T in the "col" layout mma wants, so no transpose.
#pragma unroll
            for (int n = 0; n < N_TILES; n += 2) {
                u32 b[4];
                int key = (n + lane / 16) * 8 + (lane % 8);
                int col = ks * 16 + ((lane / 8) % 2) * 8;
                ldmatrix_x4(b, tK + Tile::offset(key, col));
                mma_16816<T>(s[n], a, b[0], b[1]);
                mma_16816<T>(s[n + 1], a, b[2], b[3]);
            }
        }

        // ---- mask, online softmax ----
        const int key0 = t * BLOCK_N;
        const bool needs_mask = key0 + BLOCK_N > p.seq_k || (CAUSAL && key0 + BLOCK_N - 1 > row0 + diag);
#pragma unroll
        for (int n = 0; n < N_TILES; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = s[n][e] * p.scale_log2;
                if (needs_mask) {
                    int key = key0 + n * 8 + in_group * 2 + (e % 2);
                    int qi = q_row[e / 2];
                    bool hidden = key >= p.seq_k || (CAUSAL && key > qi + diag);
                    x = hidden ? NEG_INF : x;
                }
                s[n][e] = x;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float m = row_max[r];
#pragma unroll
            for (int n = 0; n < N_TILES; ++n) m = max_f32(m, max_f32(s[n][2 * r], s[n][2 * r + 1]));
            // The 4 lanes of a group hold the same row: reduce across them.
            m = max_f32(m, shfl_xor(m, 1));
            m = max_f32(m, shfl_xor(m, 2));
            const float base = m == NEG_INF ? 0.f : m;
            const float correction = exp2_approx(row_max[r] - base);
            row_max[r] = m;
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < N_TILES; ++n) {
                s[n][2 * r] = exp2_approx(s[n][2 * r] - base);
                s[n][2 * r + 1] = exp2_approx(s[n][2 * r + 1] - base);
                sum += s[n][2 * r] + s[n][2 * r + 1];
            }
            // Per-lane partial sums: the group reduction happens once, after the last tile.
            row_sum[r] = row_sum[r] * correction + sum;
#pragma unroll
            for (int d = 0; d < D_TILES; ++d) {
                o_acc[d][2 * r] *= correction;
                o_acc[d][2 * r + 1] *= correction;
            }
        }

        // ---- O += P V ----
        // The S accumulators of 8-key tiles n and n+1 are, element for element, the A fragment of one
        // 16-key k-step (C layout rows g/g+8, columns 2t..2t+1 == A layout), so P never leaves
        // registers.
#pragma unroll
        for (int kk = 0; kk < N_STEPS; ++kk) {
            u32 a[4];
            a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            // V is [key][d]: B[k=key][n=d] needs the transposed load. Matrices: (keys 0-7, d tile),
            // (keys 8-15, d tile), (keys 0-7, d tile+1), (keys 8-15, d tile+1).
#pragma unroll
            for (int d = 0; d < D_TILES; d += 2) {
                u32 b[4];
                int key = kk * 16 + (lane % 16);
                int col = (d + lane / 16) * 8;
                ldmatrix_x4_trans(b, tV + Tile::offset(key, col));
                mma_16816<T>(o_acc[d], a, b[0], b[1]);
                mma_16816<T>(o_acc[d + 1], a, b[2], b[3]);
            }
        }
    }

    // ---- epilogue: normalise, stage through shared memory, 16-byte stores ----
    cp_async_wait<0>();
    sync_threads();  // every warp is done with sQ / the ring; nothing is in flight

    float inv_sum[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = row_sum[r];
        l += shfl_xor(l, 1);
        l += shfl_xor(l, 2);
        inv_sum[r] = l > 0.f ? 1.f / l : 0.f;
        if (p.lse != nullptr && in_group == 0 && q_row[r] < p.seq_q) {
            float lse = l > 0.f ? (row_max[r] + log2_approx(l)) * LN2 : NEG_INF;
            i64 index = ((i64)batch * p.heads_q + head) * p.seq_q + q_row[r];
            store_global_f32(p.lse + index, lse);
        }
    }
    // Each warp writes only its own 16 rows of sQ, so a warp barrier suffices.
#pragma unroll
    for (int d = 0; d < D_TILES; ++d) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            int row = warp * 16 + group + 8 * r;
            int col = d * 8 + in_group * 2;
            u32 packed = pack2<T>(o_acc[d][2 * r] * inv_sum[r], o_acc[d][2 * r + 1] * inv_sum[r]);
            store_shared_u32(sQ + Tile::offset(row, col), packed);
        }
    }
    sync_warp();
    T* o = static_cast<T*>(p.o) + batch * p.o_batch_stride + head * p.o_head_stride;
#pragma unroll
    for (int i = lane; i < 16 * Tile::CHUNKS; i += 32) {
        int row = warp * 16 + i / Tile::CHUNKS;
        int col = (i % Tile::CHUNKS) * 8;
        int qi = row0 + row;
        if (qi < p.seq_q) store_global_16(o + qi * p.o_seq_stride + col, load_shared_16(sQ + Tile::offset(row, col)));
    }
}

}  // namespace tessera
