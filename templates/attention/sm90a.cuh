// attention/sm90a.cuh: attention forward for sm_90a (FlashAttention-3 structure): K/V tiles brought
// in by the tensor memory accelerator into a STAGES-deep ring of mbarrier-completed buffers, S = Q K^T
// and O += P V on wgmma, one producer warpgroup and two consumer warpgroups, persistent CTAs. Written
// in common/hopper.cuh's vocabulary (MbarrierRing, PipelineState, ConsumerTurns, for_each_acc,
// SmemLayout).
//
// Same mathematics as attention/sm80.cuh (online softmax in base 2, scale * log2 e folded on the
// host, causal aligned bottom-right, rows that see no key give O = 0 and LSE = -inf), including
// its score-side variants (FEATURES, the ATTN_* bits): LOCAL (sliding window: only the key tiles
// between the m_block's first row's left edge and its last row's right/causal edge are loaded),
// ALIBI (minus slope[head] |qpos - kpos|) and SOFTCAP (cap tanh(score / cap)). The variants that
// change addressing or the grid (prefix, tree, varlen, paged, GQA packing, split-KV) run on
// attention/sm80.cuh.
//
// Schedule.
//   Persistent: one CTA per SM walks the (m_block, head, batch) tiles t = blockIdx.x, + gridDim.x,
//   ...; with a causal mask the longest m_blocks (most keys) come first, so the short ones fill the
//   tail. The rings' pipeline states run on across tiles, so the producer loads the next tile's Q
//   and K/V while the consumers finish the current one.
//   Producer (warpgroup 0) gives its registers away (setmaxnreg.dec); one thread issues every copy:
//   Q once per tile into a single-buffer ring (q_ring) once the consumers released the previous Q,
//   each K/V tile into the next stage of kv_ring once the consumers released it.
//   Consumers (warpgroups 1, 2) take the registers (setmaxnreg.inc) and own 64 query rows each.
//   Intra-warpgroup overlap: iteration j issues S_{j+1} = Q K_{j+1}^T and O += P_j V_j back to back,
//   waits only for the first, runs the softmax of S_{j+1} while the second is still on the tensor
//   cores, then waits for it, rescales O and releases tile j's stage.
//   Ping-pong: the two consumers take turns issuing their wgmma pairs (ConsumerTurns, on named
//   barriers), so one warpgroup's softmax overlaps the other's matrix products instead of both
//   contending.
//
// Fragments (for_each_acc in hopper.cuh has the accumulator layout). Sixteen keys of S (columns
// 16kk .. 16kk + 15) are, pair by pair, exactly the A-register fragment of a k16 step of O += P V
// (acc_to_a_fragments): P never leaves registers.
//
// Shared-memory operands are 128-byte swizzled, as the TMA writes them: each tile is split into
// head_dim/64 sub-tiles of 64 columns (128 bytes per row), 8-row atoms of 1024 bytes. Q and K are
// K-major operands (head_dim contiguous): the descriptor steps 32 bytes per 16-column k-step inside
// an atom row and jumps to the next sub-tile every 4 steps. V is the MN-major B of O += P V (its
// head_dim, the N of that product, is contiguous): leading byte offset = one sub-tile (the next 64
// columns of N), stride = 1024 (the next 8 keys), 2048 bytes per 16-key k-step.
#pragma once

namespace tessera {

// The kernel arguments (`HopperAttentionParams`: the Q, K and V tensor maps, the mma.sync path's
// `AttentionParams`, the batch and the persistent scheduler's tile count), passed as one
// __grid_constant__ struct so the tensor maps live in parameter memory, are generated from their
// Rust definitions (tessera-codegen, attention/params.rs) and precede this file.

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

// Dynamic shared memory, from a swizzle-atom aligned base: Q, the K and V rings, then the
// mbarriers (Q's single-buffer ring, then the K/V ring's). Codegen's `HopperTile::shared_memory_bytes`
// is these regions plus SMEM_ALIGN_SLACK.
template <typename T, int HEAD_DIM, int BLOCK_N, int STAGES> struct HopperAttentionSmem {
    SmemRegion q, k, v, barriers;
    u32 padding;
    __host__ __device__ constexpr HopperAttentionSmem() : q{}, k{}, v{}, barriers{}, padding(0) {
        constexpr int BLOCK_M = WGMMA_M * CONSUMER_WARPGROUPS;
        SmemLayout l;
        q = l.take<T, SW128_ATOM_BYTES>(BLOCK_M * HEAD_DIM);
        k = l.take<T, SW128_ATOM_BYTES>(STAGES * BLOCK_N * HEAD_DIM);
        v = l.take<T, SW128_ATOM_BYTES>(STAGES * BLOCK_N * HEAD_DIM);
        barriers = l.take<u64>(MbarrierRing<1>::BARRIERS + MbarrierRing<STAGES>::BARRIERS);
        padding = l.padding();
    }
};

template <typename T, int HEAD_DIM, int BLOCK_N, int STAGES, bool CAUSAL, int GROUP, int FEATURES, typename Ops>
TESSERA_DEVICE void attention_hopper(const HopperAttentionParams& params) {
    constexpr bool LOCAL = (FEATURES & ATTN_LOCAL) != 0;
    constexpr bool ALIBI = (FEATURES & ATTN_ALIBI) != 0;
    constexpr bool SOFTCAP = (FEATURES & ATTN_SOFTCAP) != 0;
    static_assert((FEATURES & ~(ATTN_LOCAL | ATTN_ALIBI | ATTN_SOFTCAP)) == 0, "score-side variants only");
    constexpr int BLOCK_M = WGMMA_M * CONSUMER_WARPGROUPS;
    constexpr int SUB = HEAD_DIM / SW128_COLS;         // 64-column sub-tiles per row
    constexpr int Q_SUB = BLOCK_M * SW128_COLS;        // elements per Q sub-tile
    constexpr int KV_SUB = BLOCK_N * SW128_COLS;       // elements per K or V sub-tile
    constexpr int STEPS_PER_SUB = SW128_COLS / WGMMA_K;  // k-steps of S = Q K^T per sub-tile
    constexpr u32 Q_BYTES = BLOCK_M * HEAD_DIM * sizeof(T);
    constexpr u32 KV_BYTES = 2 * BLOCK_N * HEAD_DIM * sizeof(T);
    constexpr int S_REGS = BLOCK_N / 2;                // S accumulators per thread (m64nBLOCK_N)
    constexpr int O_REGS = HEAD_DIM / 2;               // O accumulators per thread (m64nHEAD_DIM)
    static_assert(HEAD_DIM % SW128_COLS == 0 && BLOCK_N % WGMMA_K == 0 && BLOCK_N <= 256, "tile shape");
    static_assert(STAGES >= 2 && STAGES <= 4, "ring depth");
    const AttentionParams& p = params.base;
    const float NEG_INF = neg_inf();
    const int tid = thread_index();
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

    constexpr HopperAttentionSmem<T, HEAD_DIM, BLOCK_N, STAGES> SMEM{};
    static_assert(SMEM.padding == 0, "codegen sizes shared memory as the plain sum of the regions");
    unsigned char* smem = aligned_dynamic_smem<SW128_ATOM_BYTES>();
    T* sQ = smem_at<T>(smem, SMEM.q);
    T* sK = smem_at<T>(smem, SMEM.k);
    T* sV = smem_at<T>(smem, SMEM.v);
    u64* bars = smem_at<u64>(smem, SMEM.barriers);
    const MbarrierRing<1> q_ring{bars};  // Q: one buffer, refilled per work tile
    const MbarrierRing<STAGES> kv_ring{bars + MbarrierRing<1>::BARRIERS};

    if (tid == PRODUCER_THREAD) {
        q_ring.init();
        kv_ring.init();
        fence_barrier_init();
    }
    sync_threads();

    if (warpgroup_of(tid) == PRODUCER_WARPGROUP) {
        // ---- producer ----
        if (!enter_producer(tid)) return;
        PipelineState<1> q_state = PipelineState<1>::producer_start();
        PipelineState<STAGES> kv_state = PipelineState<STAGES>::producer_start();
        for (int t = block_index_x(); t < params.num_tiles; t += blocks_per_grid()) {
            const HopperTileIndex w = hopper_tile<CAUSAL>(t, m_blocks, p.heads_q, params.batch);
            // The previous tile's Q must be released by every consumer thread.
            u64* q_full = q_ring.producer_acquire(q_state, Q_BYTES);
            q_state.advance();
            for (int s = 0; s < SUB; ++s)
                tma_load_4d(sQ + s * Q_SUB, &params.q_map, q_full, SW128_COLS * s, w.head, w.m_block * BLOCK_M, w.batch);
            const int kv_head = w.head / GROUP;
            int j0, j1;
            key_tiles(w.m_block, j0, j1);
            // Rolled: every trip waits on a barrier, and unrolled copies only grow the code.
#pragma unroll 1
            for (int j = j0; j < j1; ++j) {
                // The stage's previous tile must be released by every consumer thread.
                u64* full = kv_ring.producer_acquire(kv_state, KV_BYTES);
                T* dK = sK + kv_state.index * SUB * KV_SUB;
                T* dV = sV + kv_state.index * SUB * KV_SUB;
                for (int s = 0; s < SUB; ++s) {
                    tma_load_4d(dK + s * KV_SUB, &params.k_map, full, SW128_COLS * s, kv_head, j * BLOCK_N, w.batch);
                    tma_load_4d(dV + s * KV_SUB, &params.v_map, full, SW128_COLS * s, kv_head, j * BLOCK_N, w.batch);
                }
                kv_state.advance();
            }
        }
        return;
    }

    // ---- consumers ----
    const ConsumerThread me = enter_consumer(tid);
    const int consumer = me.consumer;
    const ConsumerTurns turns{consumer};
    turns.start();
    PipelineState<1> q_state = PipelineState<1>::consumer_start();
    PipelineState<STAGES> kv = PipelineState<STAGES>::consumer_start();
    for (int t = block_index_x(); t < params.num_tiles; t += blocks_per_grid()) {
        const HopperTileIndex w = hopper_tile<CAUSAL>(t, m_blocks, p.heads_q, params.batch);
        const int first_row = w.m_block * BLOCK_M + WGMMA_M * consumer;
        int j0, j1;
        key_tiles(w.m_block, j0, j1);
        const int n_tiles = j1 - j0;
        // ALiBi in log2 units, like the scale: every row of a work tile has the same head.
        const float slope_log2 = ALIBI ? p.alibi_slopes[w.head] * LOG2E_F32 : 0.f;

        float o[O_REGS];
#pragma unroll
        for (int i = 0; i < O_REGS; ++i) o[i] = 0.f;
        // Softmax state of the thread's two rows (accumulator halves 0 and 1).
        float row_max[2] = {NEG_INF, NEG_INF};
        float row_sum[2] = {0.f, 0.f};
        float s[S_REGS];
        u32 pa[BLOCK_N / WGMMA_K][4];

        // S = Q K_j^T for the tile in stage `stage`: head_dim / 16 k-steps, both operands in shared memory.
        auto issue_qk = [&](int stage) {
            const T* tK = sK + stage * SUB * KV_SUB;
#pragma unroll
            for (int ks = 0; ks < HEAD_DIM / WGMMA_K; ++ks) {
                const int sub = ks / STEPS_PER_SUB, k_in = (ks % STEPS_PER_SUB) * WGMMA_K;
                const u64 da = k_major_descriptor<SW128_SPAN_BYTES>(sQ + sub * Q_SUB + consumer * WGMMA_M * SW128_COLS + k_in);
                const u64 db = k_major_descriptor<SW128_SPAN_BYTES>(tK + sub * KV_SUB + k_in);
                Ops::qk(s, da, db, ks > 0);
            }
        };
        // O += P V for the tile in stage `stage`, P from registers, 16 keys per k-step.
        auto issue_pv = [&](int stage) {
            const T* tV = sV + stage * SUB * KV_SUB;
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / WGMMA_K; ++kk) {
                const u64 db = mn_major_descriptor<SW128_SPAN_BYTES>(tV + kk * WGMMA_K * SW128_COLS, (u32)(KV_SUB * sizeof(T)));
                Ops::pv(o, pa[kk], db);
            }
        };
        // Mask and exponentiate S for key tile j in place (new row maxima); leaves the rescale
        // factor of O in `correction`.
        float correction[2] = {1.f, 1.f};
        auto softmax = [&](int j) {
            const int key0 = j * BLOCK_N;
            const int key_last = key0 + BLOCK_N - 1;
            // Whether any (row, key) pair of this consumer's 64 rows could be hidden in this tile.
            bool needs_mask = key_last >= p.seq_k || (CAUSAL && key_last > first_row + diag);
            if (LOCAL) {
                needs_mask = needs_mask || (p.window_left >= 0 && key0 < first_row + WGMMA_M - 1 + diag - p.window_left) ||
                             (p.window_right >= 0 && key_last > first_row + diag + p.window_right);
            }
            for_each_acc(me, s, first_row, key0, [&](int i, int row, int key) {
                float x = SOFTCAP ? p.softcap_log2 * tanh_ex2(s[i] * p.softcap_scale) : s[i] * p.scale_log2;
                const int qpos = row + diag;
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
            });
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                float m = row_max[r];
                for_each_acc_in_row(s, r, [&](int i) { m = max_f32(m, s[i]); });
                // The 4 threads of a quad hold the same row: reduce across them.
                m = max_f32(m, shfl_xor(m, 1));
                m = max_f32(m, shfl_xor(m, 2));
                const float base_m = m == NEG_INF ? 0.f : m;
                correction[r] = exp2_approx(row_max[r] - base_m);
                row_max[r] = m;
                float sum = 0.f;
                for_each_acc_in_row(s, r, [&](int i) {
                    s[i] = exp2_approx(s[i] - base_m);
                    sum += s[i];
                });
                row_sum[r] = row_sum[r] * correction[r] + sum;
            }
        };
        auto rescale_o = [&]() {
#pragma unroll
            for (int i = 0; i < O_REGS; ++i) o[i] *= correction[acc_half(i)];
        };

        q_ring.consumer_wait(q_state);
        if (n_tiles > 0) {
            // Prologue: S_0 alone.
            kv_ring.consumer_wait(kv);
            turns.wait();
            fence_operands(s);
            wgmma_fence();
            issue_qk(kv.index);
            wgmma_commit();
            turns.hand_over();
            wgmma_wait<0>();
            fence_operands(s);
            softmax(j0);
            acc_to_a_fragments<T>(s, pa);
            // O is still 0: the first correction has nothing to rescale. Steady state: issue
            // S_{j+1} and O += P_j V_j, softmax S_{j+1} under the second product. The loop body
            // issues both unconditionally (a conditional wgmma defeats ptxas's tracking of which
            // group wait_group 1 retires, and it serialises the pipeline); the last P V is peeled.
            for (int j = 0; j + 1 < n_tiles; ++j) {
                PipelineState<STAGES> next = kv;
                next.advance();
                kv_ring.consumer_wait(next);
                turns.wait();
                fence_operands(s);
                fence_operands(o);
                fence_operands(pa);
                wgmma_fence();  // P, and O rescaled at the end of the last iteration, are register writes
                issue_qk(next.index);
                wgmma_commit();
                issue_pv(kv.index);
                wgmma_commit();
                turns.hand_over();
                wgmma_wait<1>();  // S_{j+1} is ready; O += P_j V_j may still run
                fence_operands(s);
                softmax(j0 + j + 1);
                wgmma_wait<0>();
                fence_operands(o);
                fence_operands(pa);
                kv_ring.consumer_release(kv);
                kv = next;
                rescale_o();
                acc_to_a_fragments<T>(s, pa);
            }
            turns.wait();
            fence_operands(o);
            fence_operands(pa);
            wgmma_fence();
            issue_pv(kv.index);
            wgmma_commit();
            turns.hand_over();
            wgmma_wait<0>();
            fence_operands(o);
            // Every use of this tile's Q and of the last stage is done.
            q_ring.consumer_release(q_state);
            kv_ring.consumer_release(kv);
            kv.advance();
        } else {
            q_ring.consumer_release(q_state);
        }
        q_state.advance();

        // ---- epilogue: normalise, LSE, O straight from registers (two elements per store) ----
        T* out = static_cast<T*>(p.o) + w.batch * p.o_batch_stride + w.head * p.o_head_stride;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float l = row_sum[r];
            l += shfl_xor(l, 1);
            l += shfl_xor(l, 2);
            const float inv = l > 0.f ? 1.f / l : 0.f;
            const int qi = first_row + me.acc_row(r);
            if (qi >= p.seq_q) continue;
            if (p.lse != nullptr && me.q4 == 0) {
                const float lse = l > 0.f ? (row_max[r] + log2_approx(l)) * LN2 : NEG_INF;
                store_global_f32(p.lse + ((i64)w.batch * p.heads_q + w.head) * p.seq_q + qi, lse);
            }
            T* row = out + qi * p.o_seq_stride + me.acc_col0();
            for_each_acc_pair_in_row(o, r, [&](int i) {
                *reinterpret_cast<u32*>(row + acc_col(i)) = pack2<T>(o[i] * inv, o[i + 1] * inv);
            });
        }
    }
    turns.finish();
}

}  // namespace tessera
