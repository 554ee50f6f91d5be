// lora/sm90a.cuh: single-adapter fused LoRA on the sm_90a GEMM main loop (gemm/sm90a.cuh), written
// in common/hopper.cuh's vocabulary (MbarrierRing, PipelineState, for_each_acc, acc_to_a_fragments,
// SmemLayout):
//
//   Y = act(X W + T' B + bias) + residual,   T' = round(s X A)   (rounded to the input type, as an
//                                                                 unfused (x @ A) @ B rounds it)
//
// X [M, K] (or [K, M] column-major), W [K, N] (or [N, K]), A [K, r] and B [r, N] row-major.
//
// Roles (384 threads = 3 warpgroups), one CTA per 128-row tile and a group of `n_group` consecutive
// BLOCK_N-column tiles (grid (row tiles, column groups)):
//   warpgroup 0, the producer, gives its registers away and one thread issues every copy. For each
//   column tile of the group, k-slice by k-slice into a STAGES-deep mbarrier ring: X (128 x 64),
//   W (64 x BLOCK_N), and, for the group's first column tile only, A (64 x R); then the tile's
//   B[:, n0 .. n0 + BLOCK_N] (R x BLOCK_N) into a buffer of its own (a single-buffer ring, b_ring),
//   once the consumers are done with the previous tile's.
//   warpgroups 1 and 2 each own 64 rows. First column tile: per k-step one wgmma m64nBLOCK_Nk16
//   (acc += X W) and one m64nRk16 (T += X A) on the same X descriptor, so X is read from shared
//   memory for both and X A costs R / BLOCK_N of the main loop. T' = round(s T) is then packed in
//   registers straight into wgmma A fragments (acc_to_a_fragments: the m64nNk16 accumulator layout
//   of 16 columns is the m64k16 A-fragment layout) and kept for the whole group. Every column tile: R / 16 wgmma with A
//   from registers (acc += T' B), then the epilogue from registers.
// The two main-loop shapes are separate loops (a compile-time flag), never a wgmma under a run-time
// condition: ptxas serialises the wgmma pipeline around conditional wgmma (warning C7514).
//
// Shared-memory operands are as gemm/sm90a.cuh (128-byte swizzled X and W, loaded and described by
// its hopper_load_xw / hopper_xw_descriptors). A and B are MN-major (r, resp. N, contiguous):
//   A: boxes of A_COLS = min(R, 64) columns x 64 k, swizzled over A_COLS * 2 bytes (32, 64 or 128:
//     the widest swizzle whose span the R columns fill, as wgmma's canonical MN-major layouts
//     want); SBO = 8 k-rows = 8 * A_COLS * 2 bytes, LBO = one box (R = 128 only).
//   B: BLOCK_N / 64 boxes of 64 n x R k, 128-byte swizzled; LBO = one box (the next 64 N), SBO =
//     1024 (the next 8 k), 2048 bytes per 16-deep k-step.
// Rank 8 runs as R = 16: the tensor maps zero-fill A's columns and B's rows 8..15, which add 0.
// Any M, N, K: boxes past the tensors are zero-filled (and counted in the stage's bytes), the
// epilogue checks bounds.
#pragma once

namespace tessera {

// The kernel arguments (`HopperLoraParams`: the X, W, A and B tensor maps and the mma.sync path's
// `LoraParams`), passed as one __grid_constant__ struct so the tensor maps live in parameter memory,
// are generated from their Rust definitions (tessera-codegen, lora/params.rs) and precede this file.

// Tile sizes in elements (every tile a multiple of 1024 bytes, so they stay 1024-byte aligned).
template <typename T, int BLOCK_N, int R> struct LoraHopperTiles {
    static constexpr int BLOCK_M = WGMMA_M * CONSUMER_WARPGROUPS;  // 64 rows per consumer warpgroup
    static constexpr int BLOCK_K = SW128_COLS;          // one 128-byte swizzle span of 16-bit elements
    static constexpr int A_COLS = R < SW128_COLS ? R : SW128_COLS;  // columns of one A box
    static constexpr int A_SPAN = A_COLS * (int)sizeof(T);  // its swizzle span in bytes
    static constexpr int A_BOX = A_COLS * BLOCK_K;
    static constexpr int X = BLOCK_M * BLOCK_K;
    static constexpr int W = BLOCK_N * BLOCK_K;
    static constexpr int A = R * BLOCK_K;
    static constexpr int B_BOX = SW128_COLS * R;
    static constexpr int B = BLOCK_N * R;
};

// Dynamic shared memory, from a swizzle-atom aligned base: the X, W and A rings, B, then the
// mbarriers (the X/W/A ring's, then B's single-buffer ring). Codegen's
// `HopperLoraTile::shared_memory_bytes` is these regions plus SMEM_ALIGN_SLACK.
template <typename T, int BLOCK_N, int STAGES, int R> struct HopperLoraSmem {
    SmemRegion x, w, a, b, barriers;
    u32 padding;
    __host__ __device__ constexpr HopperLoraSmem() : x{}, w{}, a{}, b{}, barriers{}, padding(0) {
        typedef LoraHopperTiles<T, BLOCK_N, R> Tiles;
        SmemLayout l;
        x = l.take<T, SW128_ATOM_BYTES>(STAGES * Tiles::X);
        w = l.take<T, SW128_ATOM_BYTES>(STAGES * Tiles::W);
        a = l.take<T, SW128_ATOM_BYTES>(STAGES * Tiles::A);
        b = l.take<T, SW128_ATOM_BYTES>(Tiles::B);
        barriers = l.take<u64>(MbarrierRing<STAGES>::BARRIERS + MbarrierRing<1>::BARRIERS);
        padding = l.padding();
    }
};

// One consumer warpgroup's main loop over K for one column tile: acc += X W, and with WITH_A also
// tacc += X A. `read` runs on over the whole group, so the ring's phases run on from one column tile
// to the next.
template <bool WITH_A, typename T, bool X_COL, bool W_COL, int BLOCK_N, int STAGES, int R, typename Ops>
TESSERA_DEVICE void lora_hopper_main_loop(float (&acc)[BLOCK_N / 2], float (&tacc)[R / 2], const MbarrierRing<STAGES>& ring,
                                          PipelineState<STAGES>& read, int k_tiles, const T* sX, const T* sW, const T* sA,
                                          int consumer) {
    typedef LoraHopperTiles<T, BLOCK_N, R> Tiles;
    // Every slice of the previous column tile was released: the release state starts at `read`.
    PipelineState<STAGES> release = read;
    for (int kt = 0; kt < k_tiles; ++kt) {
        ring.consumer_wait(read);
        const T* tX = sX + read.index * Tiles::X + consumer * SW128_BOX;
        const T* tW = sW + read.index * Tiles::W;
        const T* tA = sA + read.index * Tiles::A;
        fence_operands(acc);
        if constexpr (WITH_A) fence_operands(tacc);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < Tiles::BLOCK_K / WGMMA_K; ++ks) {
            u64 dx, dw;
            hopper_xw_descriptors<T, X_COL, W_COL>(tX, tW, ks, dx, dw);
            Ops::mma(acc, dx, dw, true);
            if constexpr (WITH_A) {
                const u64 da = mn_major_descriptor<Tiles::A_SPAN>(tA + ks * WGMMA_K * Tiles::A_COLS, Tiles::A_BOX * sizeof(T));
                Ops::shrink(tacc, dx, da);
            }
        }
        wgmma_commit();
        // Slice kt stays in flight; slice kt - 1 has retired, so its stage can be refilled.
        wgmma_wait<1>();
        fence_operands(acc);
        if constexpr (WITH_A) fence_operands(tacc);
        if (kt > 0) {
            ring.consumer_release(release);
            release.advance();
        }
        read.advance();
    }
    wgmma_wait<0>();
    fence_operands(acc);
    if constexpr (WITH_A) fence_operands(tacc);
    // The last slice is done too: release it now, so the producer can fill every stage with the
    // next column tile while this one finishes (T' B, epilogue).
    if (k_tiles > 0) ring.consumer_release(release);
}

template <typename T, typename TO, bool X_COL, bool W_COL, int BLOCK_N, int STAGES, int R, bool HAS_BIAS, int ACT,
          bool HAS_RESIDUAL, typename Ops>
TESSERA_DEVICE void lora_hopper(const HopperLoraParams& params) {
    typedef LoraHopperTiles<T, BLOCK_N, R> Tiles;
    constexpr int BLOCK_M = Tiles::BLOCK_M;
    constexpr int BLOCK_K = Tiles::BLOCK_K;
    constexpr u32 MAIN_BYTES = (Tiles::X + Tiles::W) * sizeof(T);
    constexpr u32 A_BYTES = Tiles::A * sizeof(T);
    constexpr u32 B_BYTES = Tiles::B * sizeof(T);
    constexpr int ACC = BLOCK_N / 2;  // f32 accumulators per consumer thread (m64nBLOCK_N)
    constexpr int T_ACC = R / 2;      // ... of T (m64nR)
    constexpr int T_STEPS = R / WGMMA_K;  // k-steps of T' B
    static_assert(sizeof(T) == 2, "16-bit inputs");
    static_assert(BLOCK_N % SW128_COLS == 0 && BLOCK_N <= 256, "whole 64-column W and B boxes");
    static_assert(R == 16 || R == 32 || R == 64 || R == 128, "padded rank");
    static_assert(STAGES >= 2 && STAGES <= 8, "ring depth");
    const LoraParams& p = params.base;

    const int tid = thread_index();
    const int m0 = block_index_x() * BLOCK_M;
    const int n_tiles = (p.n + BLOCK_N - 1) / BLOCK_N;
    const int nt_begin = block_index_y() * p.n_group;
    const int nt_end = nt_begin + p.n_group < n_tiles ? nt_begin + p.n_group : n_tiles;
    const int k_tiles = (p.k + BLOCK_K - 1) / BLOCK_K;

    constexpr HopperLoraSmem<T, BLOCK_N, STAGES, R> SMEM{};
    static_assert(SMEM.padding == 0, "codegen sizes shared memory as the plain sum of the regions");
    unsigned char* smem = aligned_dynamic_smem<SW128_ATOM_BYTES>();
    T* sX = smem_at<T>(smem, SMEM.x);
    T* sW = smem_at<T>(smem, SMEM.w);
    T* sA = smem_at<T>(smem, SMEM.a);
    T* sB = smem_at<T>(smem, SMEM.b);
    u64* bars = smem_at<u64>(smem, SMEM.barriers);
    const MbarrierRing<STAGES> ring{bars};  // X, W (and A) k-slices
    const MbarrierRing<1> b_ring{bars + MbarrierRing<STAGES>::BARRIERS};  // B, one column tile at a time

    if (tid == PRODUCER_THREAD) {
        ring.init();
        b_ring.init();
        fence_barrier_init();
    }
    sync_threads();

    if (warpgroup_of(tid) == PRODUCER_WARPGROUP) {
        // ---- producer ----
        if (!enter_producer(tid)) return;
        PipelineState<STAGES> state = PipelineState<STAGES>::producer_start();  // k-slices over the whole group
        PipelineState<1> b_state = PipelineState<1>::producer_start();
        for (int nt = nt_begin; nt < nt_end; ++nt) {
            const bool first = nt == nt_begin;
            const int n0 = nt * BLOCK_N;
            // Rolled: every trip waits on a barrier, and unrolled copies only grow the code.
#pragma unroll 1
            for (int kt = 0; kt < k_tiles; ++kt) {
                u64* full = ring.producer_acquire(state, first ? MAIN_BYTES + A_BYTES : MAIN_BYTES);
                hopper_load_xw<T, X_COL, W_COL, BLOCK_N>(sX + state.index * Tiles::X, sW + state.index * Tiles::W, &params.x_map,
                                                          &params.w_map, full, m0, n0, kt * BLOCK_K);
                if (first) {
#pragma unroll
                    for (int s = 0; s < R / Tiles::A_COLS; ++s)
                        tma_load_2d(sA + state.index * Tiles::A + s * Tiles::A_BOX, &params.a_map, full, Tiles::A_COLS * s, kt * BLOCK_K);
                }
                state.advance();
            }
            // B of this column tile, once both consumers finished T' B of the previous one.
            u64* b_full = b_ring.producer_acquire(b_state, B_BYTES);
            b_state.advance();
#pragma unroll
            for (int s = 0; s < BLOCK_N / SW128_COLS; ++s) tma_load_2d(sB + s * Tiles::B_BOX, &params.b_map, b_full, n0 + SW128_COLS * s, 0);
        }
        return;
    }

    // ---- consumers ----
    const ConsumerThread me = enter_consumer(tid);

    float acc[ACC];
    float tacc[T_ACC];
    u32 tp[T_STEPS][4];  // T' as wgmma A fragments, 4 registers per 16-deep k-step, kept for the group
    PipelineState<STAGES> read = PipelineState<STAGES>::consumer_start();
    PipelineState<1> b_state = PipelineState<1>::consumer_start();

    const TO* bias = static_cast<const TO*>(p.bias);
    const TO* residual = static_cast<const TO*>(p.residual);
    TO* y = static_cast<TO*>(p.y);
    for (int nt = nt_begin; nt < nt_end; ++nt) {
#pragma unroll
        for (int i = 0; i < ACC; ++i) acc[i] = 0.f;
        if (nt == nt_begin) {
#pragma unroll
            for (int i = 0; i < T_ACC; ++i) tacc[i] = 0.f;
            lora_hopper_main_loop<true, T, X_COL, W_COL, BLOCK_N, STAGES, R, Ops>(acc, tacc, ring, read, k_tiles, sX, sW, sA,
                                                                                  me.consumer);
            acc_to_a_fragments<T>(tacc, tp, [&](float t) { return p.scale * t; });
        } else {
            lora_hopper_main_loop<false, T, X_COL, W_COL, BLOCK_N, STAGES, R, Ops>(acc, tacc, ring, read, k_tiles, sX, sW, sA,
                                                                                   me.consumer);
        }

        // acc += T' B[:, n0 .. n0 + BLOCK_N]
        b_ring.consumer_wait(b_state);
        fence_operands(acc);
        fence_operands(tp);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < T_STEPS; ++kk) {
            Ops::expand(acc, tp[kk], mn_major_descriptor<SW128_SPAN_BYTES>(sB + kk * WGMMA_K * SW128_COLS, Tiles::B_BOX * sizeof(T)));
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(acc);
        fence_operands(tp);
        b_ring.consumer_release(b_state);
        b_state.advance();

        // ---- epilogue: from registers, element by element with bounds checks ----
        for_each_acc(me, acc, m0 + WGMMA_M * me.consumer, nt * BLOCK_N, [&](int i, int row, int col) {
            if (row < p.m && col < p.n) {
                const float v = gemm_finish<TO, HAS_BIAS, ACT, false, HAS_RESIDUAL>(acc[i], bias, residual, row, col, p.ldr);
                store_global_elem(y + row * p.ldy + col, v);
            }
        });
    }
}

}  // namespace tessera
