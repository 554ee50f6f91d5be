// lora_hopper.cuh: single-adapter fused LoRA on the sm_90a GEMM main loop (gemm_hopper.cuh):
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
//   B[:, n0 .. n0 + BLOCK_N] (R x BLOCK_N) into a buffer of its own, once the consumers are done
//   with the previous tile's.
//   warpgroups 1 and 2 each own 64 rows. First column tile: per k-step one wgmma m64nBLOCK_Nk16
//   (acc += X W) and one m64nRk16 (T += X A) on the same X descriptor, so X is read from shared
//   memory for both and X A costs R / BLOCK_N of the main loop. T' = round(s T) is then packed in
//   registers straight into wgmma A fragments (the m64nNk16 accumulator layout of 16 columns is the
//   m64k16 A-fragment layout) and kept for the whole group. Every column tile: R / 16 wgmma with A
//   from registers (acc += T' B), then the epilogue from registers.
// The two main-loop shapes are separate loops (a compile-time flag), never a wgmma under a run-time
// condition: ptxas serialises the wgmma pipeline around conditional wgmma (warning C7514).
//
// Shared-memory operands are as gemm_hopper.cuh (128-byte swizzled X and W, loaded and described by
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

// Kernel arguments, passed as one __grid_constant__ struct so the tensor maps live in parameter
// memory. Must match `HopperLoraParams` in tessera-runtime.
struct HopperLoraParams {
    TensorMap x_map;  // as HopperGemmParams
    TensorMap w_map;
    TensorMap a_map;  // A as 2-D (r, K), box (min(R, 64), 64)
    TensorMap b_map;  // B as 2-D (N, r), box (64, R)
    LoraParams base;  // pointers, strides, sizes, scale, n_group (the mma.sync path's struct)
};

// Tile sizes in elements (every tile a multiple of 1024 bytes, so they stay 1024-byte aligned).
template <typename T, int BLOCK_N, int R> struct LoraHopperTiles {
    static constexpr int BLOCK_M = 128;                 // 64 rows per consumer warpgroup
    static constexpr int BLOCK_K = 64;                  // one 128-byte swizzle span of 16-bit elements
    static constexpr int BOX = 64 * 64;                 // one 64 x 64 X or W box
    static constexpr int A_COLS = R < 64 ? R : 64;      // columns of one A box
    static constexpr int A_SPAN = A_COLS * (int)sizeof(T);  // its swizzle span in bytes
    static constexpr int A_BOX = A_COLS * BLOCK_K;
    static constexpr int X = BLOCK_M * BLOCK_K;
    static constexpr int W = BLOCK_N * BLOCK_K;
    static constexpr int A = R * BLOCK_K;
    static constexpr int B_BOX = 64 * R;
    static constexpr int B = BLOCK_N * R;
};

// One consumer warpgroup's main loop over K for one column tile: acc += X W, and with WITH_A also
// tacc += X A. `t` counts the k-slices consumed over the whole group, so the ring's phases run on
// from one column tile to the next.
template <bool WITH_A, typename T, bool X_COL, bool W_COL, int BLOCK_N, int STAGES, int R, typename Ops>
TESSERA_DEVICE void lora_hopper_main_loop(float (&acc)[BLOCK_N / 2], float (&tacc)[R / 2], int& t, int k_tiles,
                                          const T* sX, const T* sW, const T* sA, u64* full, u64* empty, int consumer) {
    typedef LoraHopperTiles<T, BLOCK_N, R> Tiles;
    for (int kt = 0; kt < k_tiles; ++kt, ++t) {
        const int stage = t % STAGES;
        mbarrier_wait(full + stage, (u32)((t / STAGES) & 1));
        const T* tX = sX + stage * Tiles::X + consumer * Tiles::BOX;
        const T* tW = sW + stage * Tiles::W;
        const T* tA = sA + stage * Tiles::A;
        fence_operands(acc);
        if constexpr (WITH_A) fence_operands(tacc);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < Tiles::BLOCK_K / 16; ++ks) {
            u64 dx, dw;
            hopper_xw_descriptors<T, X_COL, W_COL>(tX, tW, ks, dx, dw);
            Ops::mma(acc, dx, dw, true);
            if constexpr (WITH_A) {
                const u64 da = swizzled_descriptor<Tiles::A_SPAN>(tA + ks * 16 * Tiles::A_COLS, Tiles::A_BOX * sizeof(T),
                                                                  8 * Tiles::A_SPAN);
                Ops::shrink(tacc, dx, da);
            }
        }
        wgmma_commit();
        // Slice t stays in flight; slice t - 1 has retired, so its stage can be refilled.
        wgmma_wait<1>();
        fence_operands(acc);
        if constexpr (WITH_A) fence_operands(tacc);
        if (kt > 0) mbarrier_arrive(empty + (t - 1) % STAGES);
    }
    wgmma_wait<0>();
    fence_operands(acc);
    if constexpr (WITH_A) fence_operands(tacc);
    // The last slice is done too: release it now, so the producer can fill every stage with the
    // next column tile while this one finishes (T' B, epilogue).
    if (k_tiles > 0) mbarrier_arrive(empty + (t - 1) % STAGES);
}

template <typename T, typename TO, bool X_COL, bool W_COL, int BLOCK_N, int STAGES, int R, bool HAS_BIAS, int ACT,
          bool HAS_RESIDUAL, typename Ops>
TESSERA_DEVICE void lora_hopper(const HopperLoraParams& params) {
    typedef LoraHopperTiles<T, BLOCK_N, R> Tiles;
    constexpr int CONSUMERS = 2;
    constexpr int BLOCK_M = Tiles::BLOCK_M;
    constexpr int BLOCK_K = Tiles::BLOCK_K;
    constexpr u32 MAIN_BYTES = (Tiles::X + Tiles::W) * sizeof(T);
    constexpr u32 A_BYTES = Tiles::A * sizeof(T);
    constexpr u32 B_BYTES = Tiles::B * sizeof(T);
    constexpr int ACC = BLOCK_N / 2;  // f32 accumulators per consumer thread (m64nBLOCK_N)
    constexpr int T_ACC = R / 2;      // ... of T (m64nR)
    constexpr int T_STEPS = R / 16;   // k-steps of T' B
    static_assert(sizeof(T) == 2, "16-bit inputs");
    static_assert(BLOCK_N % 64 == 0 && BLOCK_N <= 256, "whole 64-column W and B boxes");
    static_assert(R == 16 || R == 32 || R == 64 || R == 128, "padded rank");
    static_assert(STAGES >= 2 && STAGES <= 8, "ring depth");
    const LoraParams& p = params.base;

    const int tid = thread_index();
    const int warpgroup = tid / 128;
    const int m0 = block_index_x() * BLOCK_M;
    const int n_tiles = (p.n + BLOCK_N - 1) / BLOCK_N;
    const int nt_begin = block_index_y() * p.n_group;
    const int nt_end = nt_begin + p.n_group < n_tiles ? nt_begin + p.n_group : n_tiles;
    const int k_tiles = (p.k + BLOCK_K - 1) / BLOCK_K;

    unsigned char* base = dynamic_smem();
    base += (1024 - (smem_address(base) & 1023)) & 1023;
    T* sX = reinterpret_cast<T*>(base);
    T* sW = sX + STAGES * Tiles::X;
    T* sA = sW + STAGES * Tiles::W;
    T* sB = sA + STAGES * Tiles::A;
    u64* full = reinterpret_cast<u64*>(sB + Tiles::B);
    u64* empty = full + STAGES;
    u64* b_full = empty + STAGES;
    u64* b_empty = b_full + 1;

    if (tid == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(full + s, 1);
            mbarrier_init(empty + s, 128 * CONSUMERS);
        }
        mbarrier_init(b_full, 1);
        mbarrier_init(b_empty, 128 * CONSUMERS);
        fence_barrier_init();
    }
    sync_threads();

    if (warpgroup == 0) {
        // ---- producer ----
        regs_decrease<PRODUCER_REGISTERS>();
        if (tid != 0) return;
        int t = 0;  // k-slices issued so far, over the whole group
        for (int nt = nt_begin; nt < nt_end; ++nt) {
            const bool first = nt == nt_begin;
            const int n0 = nt * BLOCK_N;
            for (int kt = 0; kt < k_tiles; ++kt, ++t) {
                const int stage = t % STAGES;
                if (t >= STAGES) mbarrier_wait(empty + stage, (u32)((t / STAGES - 1) & 1));
                mbarrier_arrive_expect_tx(full + stage, first ? MAIN_BYTES + A_BYTES : MAIN_BYTES);
                hopper_load_xw<T, X_COL, W_COL, BLOCK_N>(sX + stage * Tiles::X, sW + stage * Tiles::W, &params.x_map, &params.w_map,
                                                          full + stage, m0, n0, kt * BLOCK_K);
                if (first) {
#pragma unroll
                    for (int s = 0; s < R / Tiles::A_COLS; ++s)
                        tma_load_2d(sA + stage * Tiles::A + s * Tiles::A_BOX, &params.a_map, full + stage, Tiles::A_COLS * s, kt * BLOCK_K);
                }
            }
            // B of this column tile, once both consumers finished T' B of the previous one.
            const int u = nt - nt_begin;
            if (u > 0) mbarrier_wait(b_empty, (u32)((u - 1) & 1));
            mbarrier_arrive_expect_tx(b_full, B_BYTES);
#pragma unroll
            for (int s = 0; s < BLOCK_N / 64; ++s) tma_load_2d(sB + s * Tiles::B_BOX, &params.b_map, b_full, n0 + 64 * s, 0);
        }
        return;
    }

    // ---- consumers ----
    const ConsumerThread me = enter_consumer(tid);
    const int consumer = me.consumer, warp = me.warp, g = me.g, q4 = me.q4;

    float acc[ACC];
    float tacc[T_ACC];
    u32 tp[T_STEPS][4];  // T' as wgmma A fragments, 4 registers per 16-deep k-step, kept for the group
    int t = 0;

    const TO* bias = static_cast<const TO*>(p.bias);
    const TO* residual = static_cast<const TO*>(p.residual);
    TO* y = static_cast<TO*>(p.y);
    const int row0 = m0 + 64 * consumer + 16 * warp + g;
    for (int nt = nt_begin; nt < nt_end; ++nt) {
        const int u = nt - nt_begin;
#pragma unroll
        for (int i = 0; i < ACC; ++i) acc[i] = 0.f;
        if (u == 0) {
#pragma unroll
            for (int i = 0; i < T_ACC; ++i) tacc[i] = 0.f;
            lora_hopper_main_loop<true, T, X_COL, W_COL, BLOCK_N, STAGES, R, Ops>(acc, tacc, t, k_tiles, sX, sW, sA, full, empty, consumer);
            // Accumulator 8 kk + 2 r (+1) is row g (+8 for odd r), columns 16 kk + 8 (r >> 1) + 2 q4
            // (+1): register r of k-step kk's A fragment.
#pragma unroll
            for (int kk = 0; kk < T_STEPS; ++kk) {
#pragma unroll
                for (int r = 0; r < 4; ++r) tp[kk][r] = pack2<T>(p.scale * tacc[8 * kk + 2 * r], p.scale * tacc[8 * kk + 2 * r + 1]);
            }
        } else {
            lora_hopper_main_loop<false, T, X_COL, W_COL, BLOCK_N, STAGES, R, Ops>(acc, tacc, t, k_tiles, sX, sW, sA, full, empty, consumer);
        }

        // acc += T' B[:, n0 .. n0 + BLOCK_N]
        mbarrier_wait(b_full, (u32)(u & 1));
        fence_operands(acc);
        fence_operands(tp);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < T_STEPS; ++kk) {
            Ops::expand(acc, tp[kk], sw128_descriptor(sB + kk * 16 * 64, Tiles::B_BOX * sizeof(T), 1024));
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(acc);
        fence_operands(tp);
        mbarrier_arrive(b_empty);

        // ---- epilogue: accumulator i is row 16 warp + g + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2 q + (i & 1) ----
        const int col0 = nt * BLOCK_N + 2 * q4;
#pragma unroll
        for (int i = 0; i < ACC; ++i) {
            const int row = row0 + 8 * ((i >> 1) & 1);
            const int col = col0 + 8 * (i >> 2) + (i & 1);
            if (row < p.m && col < p.n) {
                const float v = gemm_finish<TO, HAS_BIAS, ACT, false, HAS_RESIDUAL>(acc[i], bias, residual, row, col, p.ldr);
                store_global_elem(y + row * p.ldy + col, v);
            }
        }
    }
}

}  // namespace tessera
