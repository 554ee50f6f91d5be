// attention_hopper.cuh: attention forward for sm_90a (FlashAttention-3 structure): K/V tiles brought
// in by the tensor memory accelerator into a STAGES-deep ring of mbarrier-completed buffers, S = Q K^T
// and O += P V on wgmma, one producer warpgroup and two consumer warpgroups, persistent CTAs.
//
// Same mathematics as attention_fwd.cuh (online softmax in base 2, scale * log2 e folded on the
// host, causal aligned bottom-right, rows that see no key give O = 0 and LSE = -inf), including
// its score-side variants (FEATURES, the ATTN_* bits): LOCAL (sliding window: only the key tiles
// between the m_block's first row's left edge and its last row's right/causal edge are loaded),
// ALIBI (minus slope[head] |qpos - kpos|) and SOFTCAP (cap tanh(score / cap)). The variants that
// change addressing or the grid (prefix, tree, varlen, paged, GQA packing, split-KV) run on
// attention_fwd.cuh.
//
// Schedule.
//   Persistent: one CTA per SM walks the (m_block, head, batch) tiles t = blockIdx.x, + gridDim.x,
//   ...; with a causal mask the longest m_blocks (most keys) come first, so the short ones fill the
//   tail. The ring's stage/phase counters run on across tiles, so the producer loads the next
//   tile's Q and K/V while the consumers finish the current one.
//   Producer (warpgroup 0) gives its registers away (setmaxnreg.dec); one thread issues every copy:
//   Q once per tile after the consumers released the previous Q (q_empty), each K/V tile into stage
//   it % STAGES after the consumers released it (empty), announcing the bytes on full / q_full.
//   Consumers (warpgroups 1, 2) take the registers (setmaxnreg.inc) and own 64 query rows each.
//   Intra-warpgroup overlap: iteration j issues S_{j+1} = Q K_{j+1}^T and O += P_j V_j back to back,
//   waits only for the first, runs the softmax of S_{j+1} while the second is still on the tensor
//   cores, then waits for it, rescales O and releases tile j's stage.
//   Ping-pong: the two consumers take turns issuing their wgmma pairs (named barriers 1 and 2), so
//   one warpgroup's softmax overlaps the other's matrix products instead of both contending.
//
// Fragments. An m64nN wgmma accumulator gives thread (warp w, lane 4g + q) element i at row
// 16w + g + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2q + (i & 1). Sixteen keys of S (columns
// 16kk .. 16kk + 15) are therefore, pair by pair, exactly the A-register fragment of a k16 step of
// O += P V: P never leaves registers.
//
// Shared-memory operands are 128-byte swizzled, as the TMA writes them: each tile is split into
// head_dim/64 sub-tiles of 64 columns (128 bytes per row), 8-row atoms of 1024 bytes. Q and K are
// K-major operands (head_dim contiguous): the descriptor steps 32 bytes per 16-column k-step inside
// an atom row and jumps to the next sub-tile every 4 steps. V is the MN-major B of O += P V (its
// head_dim, the N of that product, is contiguous): leading byte offset = one sub-tile (the next 64
// columns of N), stride = 1024 (the next 8 keys), 2048 bytes per 16-key k-step.
#pragma once

namespace tessera {

// Kernel arguments, passed as one __grid_constant__ struct so the tensor maps live in parameter
// memory. Must match `HopperAttentionParams` in tessera-runtime.
struct HopperAttentionParams {
    TensorMap q_map;   // Q [batch, seq_q, heads_q, head_dim] as 4-D (d, head, seq, batch), box (64, 1, BLOCK_M, 1)
    TensorMap k_map;   // K, box (64, 1, BLOCK_N, 1)
    TensorMap v_map;   // V, box (64, 1, BLOCK_N, 1)
    AttentionParams base;  // pointers, strides, sizes, scale (the mma.sync path's struct)
    int batch;
    int num_tiles;         // m_blocks * heads_q * batch
};

// Named barriers 1 and 2: consumer c waits on 1 + c before issuing its wgmma, then lets the other go.
TESSERA_DEVICE void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
TESSERA_DEVICE void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// The work unit t of a persistent CTA: m_block (longest first when causal), head, batch.
struct HopperTileIndex {
    int m_block, head, batch;
};

template <bool CAUSAL>
TESSERA_DEVICE HopperTileIndex hopper_tile(int t, int m_blocks, int heads, int batch) {
    const int per_block = heads * batch;
    const int rank = t / per_block, rest = t % per_block;
    return HopperTileIndex{CAUSAL ? m_blocks - 1 - rank : rank, rest % heads, rest / heads};
}

template <typename T, int HEAD_DIM, int BLOCK_N, int STAGES, bool CAUSAL, int GROUP, int FEATURES, typename Ops>
TESSERA_DEVICE void attention_hopper(const HopperAttentionParams& params) {
    constexpr bool LOCAL = (FEATURES & ATTN_LOCAL) != 0;
    constexpr bool ALIBI = (FEATURES & ATTN_ALIBI) != 0;
    constexpr bool SOFTCAP = (FEATURES & ATTN_SOFTCAP) != 0;
    static_assert((FEATURES & ~(ATTN_LOCAL | ATTN_ALIBI | ATTN_SOFTCAP)) == 0, "score-side variants only");
    constexpr int CONSUMERS = 2;
    constexpr int BLOCK_M = 64 * CONSUMERS;
    constexpr int CONSUMER_THREADS = 128 * CONSUMERS;
    constexpr int SUB = HEAD_DIM / 64;                 // 64-column sub-tiles per row
    constexpr int Q_SUB = BLOCK_M * 64;                // elements per Q sub-tile
    constexpr int KV_SUB = BLOCK_N * 64;               // elements per K or V sub-tile
    constexpr u32 Q_BYTES = BLOCK_M * HEAD_DIM * sizeof(T);
    constexpr u32 KV_BYTES = 2 * BLOCK_N * HEAD_DIM * sizeof(T);
    constexpr int S_REGS = BLOCK_N / 2;                // S accumulators per thread (m64nBLOCK_N)
    constexpr int O_REGS = HEAD_DIM / 2;               // O accumulators per thread (m64nHEAD_DIM)
    static_assert(HEAD_DIM % 64 == 0 && BLOCK_N % 16 == 0 && BLOCK_N <= 256, "tile shape");
    static_assert(STAGES >= 2 && STAGES <= 4, "ring depth");
    const AttentionParams& p = params.base;
    const float NEG_INF = neg_inf();
    const int tid = thread_index();
    const int warpgroup = tid / 128;
    const int m_blocks = (p.seq_q + BLOCK_M - 1) / BLOCK_M;
    const int diag = p.seq_k - p.seq_q;
    // Key tiles [j0, j1) of one m_block: up to the causal / right-window edge of its last row, from
    // the left-window edge of its first row.
    auto key_tiles = [&](int m_block, int& j0, int& j1) {
        const int q_first = m_block * BLOCK_M;
        const int q_last = min_i32(q_first + BLOCK_M, p.seq_q) - 1;
        int lo = 0, hi = p.seq_k;
        if (CAUSAL) hi = min_i32(hi, q_last + diag + 1);
        if (LOCAL && p.window_left >= 0) lo = max_i32(lo, q_first + diag - p.window_left);
        if (LOCAL && p.window_right >= 0) hi = min_i32(hi, q_last + diag + p.window_right + 1);
        j0 = lo / BLOCK_N;
        j1 = hi > lo ? (hi + BLOCK_N - 1) / BLOCK_N : j0;
    };

    // Shared memory: 1024-byte aligned for the 128-byte swizzle (its pattern repeats every 8 rows).
    unsigned char* base = dynamic_smem();
    base += (1024 - (smem_address(base) & 1023)) & 1023;
    T* sQ = reinterpret_cast<T*>(base);
    T* sK = sQ + SUB * Q_SUB;
    T* sV = sK + STAGES * SUB * KV_SUB;
    u64* q_full = reinterpret_cast<u64*>(sV + STAGES * SUB * KV_SUB);
    u64* q_empty = q_full + 1;
    u64* full = q_empty + 1;
    u64* empty = full + STAGES;

    if (tid == 0) {
        mbarrier_init(q_full, 1);
        mbarrier_init(q_empty, CONSUMER_THREADS);
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(full + s, 1);
            mbarrier_init(empty + s, CONSUMER_THREADS);
        }
        fence_barrier_init();
    }
    sync_threads();

    if (warpgroup == 0) {
        // ---- producer ----
        regs_decrease<PRODUCER_REGISTERS>();
        if (tid != 0) return;
        int it = 0;      // K/V tiles loaded by this CTA so far: the ring position
        int local = 0;   // work tiles of this CTA so far: the Q buffer's phase
        for (int t = block_index_x(); t < params.num_tiles; t += blocks_per_grid(), ++local) {
            const HopperTileIndex w = hopper_tile<CAUSAL>(t, m_blocks, p.heads_q, params.batch);
            // The previous tile's Q must be released by every consumer thread.
            if (local > 0) mbarrier_wait(q_empty, (u32)((local - 1) & 1));
            mbarrier_arrive_expect_tx(q_full, Q_BYTES);
            for (int s = 0; s < SUB; ++s)
                tma_load_4d(sQ + s * Q_SUB, &params.q_map, q_full, 64 * s, w.head, w.m_block * BLOCK_M, w.batch);
            const int kv_head = w.head / GROUP;
            int j0, j1;
            key_tiles(w.m_block, j0, j1);
            for (int j = j0; j < j1; ++j, ++it) {
                const int stage = it % STAGES;
                // The stage's previous tile (it - STAGES) must be released by every consumer thread.
                if (it >= STAGES) mbarrier_wait(empty + stage, (u32)((it / STAGES - 1) & 1));
                mbarrier_arrive_expect_tx(full + stage, KV_BYTES);
                T* dK = sK + stage * SUB * KV_SUB;
                T* dV = sV + stage * SUB * KV_SUB;
                for (int s = 0; s < SUB; ++s) {
                    tma_load_4d(dK + s * KV_SUB, &params.k_map, full + stage, 64 * s, kv_head, j * BLOCK_N, w.batch);
                    tma_load_4d(dV + s * KV_SUB, &params.v_map, full + stage, 64 * s, kv_head, j * BLOCK_N, w.batch);
                }
            }
        }
        return;
    }

    // ---- consumers ----
    const ConsumerThread me = enter_consumer(tid);
    const int consumer = me.consumer, warp = me.warp, g = me.g, q4 = me.q4;
    // Ping-pong: consumer 1 lets consumer 0 go first.
    if (consumer == 1) named_barrier_arrive(1, CONSUMER_THREADS);
    int it = 0;
    int local = 0;
    for (int t = block_index_x(); t < params.num_tiles; t += blocks_per_grid(), ++local) {
        const HopperTileIndex w = hopper_tile<CAUSAL>(t, m_blocks, p.heads_q, params.batch);
        const int first_row = w.m_block * BLOCK_M + 64 * consumer;
        const int q_row[2] = {first_row + 16 * warp + g, first_row + 16 * warp + g + 8};
        int j0, j1;
        key_tiles(w.m_block, j0, j1);
        const int n_tiles = j1 - j0;
        // ALiBi in log2 units, like the scale: every row of a work tile has the same head.
        const float slope_log2 = ALIBI ? p.alibi_slopes[w.head] * LOG2E_F32 : 0.f;

        float o[O_REGS];
#pragma unroll
        for (int i = 0; i < O_REGS; ++i) o[i] = 0.f;
        float row_max[2] = {NEG_INF, NEG_INF};
        float row_sum[2] = {0.f, 0.f};
        float s[S_REGS];
        u32 pa[BLOCK_N / 16][4];

        // S = Q K_j^T for the tile in stage `stage`: head_dim / 16 k-steps, both operands in shared memory.
        auto issue_qk = [&](int stage) {
            const T* tK = sK + stage * SUB * KV_SUB;
#pragma unroll
            for (int ks = 0; ks < HEAD_DIM / 16; ++ks) {
                const int sub = ks / 4, k_in = (ks % 4) * 16;
                const u64 da = sw128_descriptor(sQ + sub * Q_SUB + consumer * 64 * 64 + k_in, 16, 1024);
                const u64 db = sw128_descriptor(tK + sub * KV_SUB + k_in, 16, 1024);
                Ops::qk(s, da, db, ks > 0);
            }
        };
        // O += P V for the tile in stage `stage`, P from registers, 16 keys per k-step.
        auto issue_pv = [&](int stage) {
            const T* tV = sV + stage * SUB * KV_SUB;
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
                const u64 db = sw128_descriptor(tV + kk * 16 * 64, (u32)(KV_SUB * sizeof(T)), 1024);
                Ops::pv(o, pa[kk], db);
            }
        };
        // Mask and exponentiate S for key tile j in place (new row maxima); returns nothing, leaves
        // the rescale factor of O in `correction`.
        float correction[2] = {1.f, 1.f};
        auto softmax = [&](int j) {
            const int key0 = j * BLOCK_N;
            const int key_last = key0 + BLOCK_N - 1;
            // Whether any (row, key) pair of this consumer's 64 rows could be hidden in this tile.
            bool needs_mask = key_last >= p.seq_k || (CAUSAL && key_last > first_row + diag);
            if (LOCAL) {
                needs_mask = needs_mask || (p.window_left >= 0 && key0 < first_row + 63 + diag - p.window_left) ||
                             (p.window_right >= 0 && key_last > first_row + diag + p.window_right);
            }
#pragma unroll
            for (int i = 0; i < S_REGS; ++i) {
                float x = SOFTCAP ? p.softcap_log2 * tanh_ex2(s[i] * p.softcap_scale) : s[i] * p.scale_log2;
                const int key = key0 + 8 * (i >> 2) + 2 * q4 + (i & 1);
                const int qpos = q_row[(i >> 1) & 1] + diag;
                if (ALIBI) x -= slope_log2 * (float)abs_i32(qpos - key);
                if (needs_mask) {
                    bool hidden = key >= p.seq_k || (CAUSAL && key > qpos);
                    if (LOCAL) {
                        hidden = hidden || (p.window_left >= 0 && key < qpos - p.window_left) ||
                                 (p.window_right >= 0 && key > qpos + p.window_right);
                    }
                    x = hidden ? NEG_INF : x;
                }
                s[i] = x;
            }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                float m = row_max[r];
#pragma unroll
                for (int i = 0; i < S_REGS; ++i) {
                    if (((i >> 1) & 1) == r) m = max_f32(m, s[i]);
                }
                m = max_f32(m, shfl_xor(m, 1));
                m = max_f32(m, shfl_xor(m, 2));
                const float base_m = m == NEG_INF ? 0.f : m;
                correction[r] = exp2_approx(row_max[r] - base_m);
                row_max[r] = m;
                float sum = 0.f;
#pragma unroll
                for (int i = 0; i < S_REGS; ++i) {
                    if (((i >> 1) & 1) == r) {
                        s[i] = exp2_approx(s[i] - base_m);
                        sum += s[i];
                    }
                }
                row_sum[r] = row_sum[r] * correction[r] + sum;
            }
        };
        auto pack_p = [&]() {
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
#pragma unroll
                for (int r = 0; r < 4; ++r) pa[kk][r] = pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
            }
        };
        auto rescale_o = [&]() {
#pragma unroll
            for (int i = 0; i < O_REGS; ++i) o[i] *= correction[(i >> 1) & 1];
        };

        mbarrier_wait(q_full, (u32)(local & 1));
        if (n_tiles > 0) {
            // Prologue: S_0 alone.
            const int stage0 = it % STAGES;
            mbarrier_wait(full + stage0, (u32)((it / STAGES) & 1));
            named_barrier_sync(1 + consumer, CONSUMER_THREADS);
            fence_operands(s);
            wgmma_fence();
            issue_qk(stage0);
            wgmma_commit();
            named_barrier_arrive(1 + (1 - consumer), CONSUMER_THREADS);
            wgmma_wait<0>();
            fence_operands(s);
            softmax(j0);
            pack_p();
            // O is still 0: the first correction has nothing to rescale. Steady state: issue
            // S_{j+1} and O += P_j V_j, softmax S_{j+1} under the second product. The loop body
            // issues both unconditionally (a conditional wgmma defeats ptxas's tracking of which
            // group wait_group 1 retires, and it serialises the pipeline); the last P V is peeled.
            for (int j = 0; j + 1 < n_tiles; ++j) {
                const int stage = (it + j) % STAGES;
                const int next_stage = (it + j + 1) % STAGES;
                mbarrier_wait(full + next_stage, (u32)(((it + j + 1) / STAGES) & 1));
                named_barrier_sync(1 + consumer, CONSUMER_THREADS);
                fence_operands(s);
                fence_operands(o);
                fence_operands(pa);
                wgmma_fence();  // P, and O rescaled at the end of the last iteration, are register writes
                issue_qk(next_stage);
                wgmma_commit();
                issue_pv(stage);
                wgmma_commit();
                named_barrier_arrive(1 + (1 - consumer), CONSUMER_THREADS);
                wgmma_wait<1>();  // S_{j+1} is ready; O += P_j V_j may still run
                fence_operands(s);
                softmax(j0 + j + 1);
                wgmma_wait<0>();
                fence_operands(o);
                fence_operands(pa);
                mbarrier_arrive(empty + stage);
                rescale_o();
                pack_p();
            }
            const int last = (it + n_tiles - 1) % STAGES;
            named_barrier_sync(1 + consumer, CONSUMER_THREADS);
            fence_operands(o);
            fence_operands(pa);
            wgmma_fence();
            issue_pv(last);
            wgmma_commit();
            named_barrier_arrive(1 + (1 - consumer), CONSUMER_THREADS);
            wgmma_wait<0>();
            fence_operands(o);
            // Every use of this tile's Q and of the last stage is done.
            mbarrier_arrive(q_empty);
            mbarrier_arrive(empty + last);
            it += n_tiles;
        } else {
            mbarrier_arrive(q_empty);
        }

        // ---- epilogue: normalise, LSE, O straight from registers (two elements per store) ----
        T* out = static_cast<T*>(p.o) + w.batch * p.o_batch_stride + w.head * p.o_head_stride;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float l = row_sum[r];
            l += shfl_xor(l, 1);
            l += shfl_xor(l, 2);
            const float inv = l > 0.f ? 1.f / l : 0.f;
            const int qi = q_row[r];
            if (qi >= p.seq_q) continue;
            if (p.lse != nullptr && q4 == 0) {
                const float lse = l > 0.f ? (row_max[r] + log2_approx(l)) * LN2 : NEG_INF;
                store_global_f32(p.lse + ((i64)w.batch * p.heads_q + w.head) * p.seq_q + qi, lse);
            }
            T* row = out + qi * p.o_seq_stride;
#pragma unroll
            for (int j = 0; j < HEAD_DIM / 8; ++j) {
                const u32 packed = pack2<T>(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
                *reinterpret_cast<u32*>(row + 8 * j + 2 * q4) = packed;
            }
        }
    }
    // Balance the ping-pong: every sync above was matched by the other consumer's arrive except the
    // very first one consumer 1 gave; consumer 0 absorbs it so no barrier is left half-arrived.
    if (consumer == 0) named_barrier_sync(1, CONSUMER_THREADS);
}

}  // namespace tessera
