// gemm/sm90a.cuh: the GEMM of gemm/sm80.cuh for sm_90a: X and W k-slices brought in by the tensor
// memory accelerator into a STAGES-deep ring of mbarrier-completed buffers, the product on wgmma
// with both operands in shared memory, one producer warpgroup and two consumer warpgroups. Written
// in common/hopper.cuh's vocabulary (MbarrierRing, PipelineState, for_each_acc, SmemLayout).
//
//   Y[M,N] = act(alpha * (X @ W)[M,N] + beta * C[M,N] + bias[N]) + residual[M,N]
//
// Same epilogue, in the same order, as gemm/sm80.cuh (gemm_finish: bias, activation, residual; then the
// rounding to TO), so both kernels agree to the f32 accumulation order.
//
// Persistent: the grid has at most one CTA per SM (the launcher sizes it), and CTA b walks the
// 128 x BLOCK_N tiles of Y numbered b, b + gridDim.x, ... in a rasterised order: bands of
// RASTER_M row tiles, column by column inside a band, so the CTAs running at one time share a few
// W column slices and X row slices in L2.
// Roles (384 threads = 3 warpgroups):
//   warpgroup 0, the producer, gives its registers away (setmaxnreg.dec) and one thread issues every
//   copy: for each 64-deep k-slice (its pipeline state runs on over all of the CTA's tiles, so the
//   ring's phases run on from tile to tile), once the consumers released the next stage, it
//   announces the stage's bytes and loads the X slice (128 x 64) and the W slice (64 x BLOCK_N) as
//   2-D tensor-map boxes. It runs ahead into the next tile while the consumers are in the epilogue,
//   so the ring is full when they come back;
//   warpgroups 1 and 2 take the registers (setmaxnreg.inc) and each owns 64 rows of the tile: wait
//   for the stage, 4 wgmma m64nBLOCK_Nk16 on it, commit, and once the previous slice's group has
//   retired (wait_group 1) release the previous stage; the tile's last stage is released as soon as
//   it retires. The f32 accumulators stay in registers; the epilogue writes them straight to Y with
//   bounds checks.
//
// Any M, N, K: the tensor maps cover exactly the tensors, so box elements past M, N or K are
// zero-filled by the copy engine (and still counted in the stage's bytes), and the products of
// those zeros add nothing. The maps need 16-byte row strides, which the aligned spec guarantees.
//
// Shared-memory operands are 128-byte swizzled, as the TMA writes them: 64-element (128-byte) box
// rows, 8-row atoms of 1024 bytes, every box 1024-byte aligned.
//   X row-major [M, K] (K contiguous): one box of 64 k x 128 rows; the K-major A of consumer c
//     starts at row 64 c, steps 32 bytes per 16-deep k-step inside the 128-byte row (LBO unused,
//     encoded 16; SBO 1024 = the next 8 rows).
//   X column-major, stored [K, M] (M contiguous): two boxes of 64 m x 64 k, one per consumer; an
//     MN-major A: LBO = one box (the next 64 M, unused by m64), SBO = 1024 (the next 8 k), 2048
//     bytes per k-step.
//   W row-major [K, N] (N contiguous): BLOCK_N / 64 boxes of 64 n x 64 k; an MN-major B (trans-b):
//     LBO = one box (the next 64 N columns), SBO = 1024, 2048 bytes per k-step.
//   W column-major, stored [N, K] (K contiguous, nn.Linear's weight): one box of 64 k x BLOCK_N
//     rows; a K-major B, like row-major X.
#pragma once

namespace tessera {

// The kernel arguments (`HopperGemmParams`: the X and W tensor maps and the mma.sync path's
// `GemmParams`), passed as one __grid_constant__ struct so the tensor maps live in parameter memory,
// are generated from their Rust definitions (tessera-codegen, gemm/params.rs) and precede this file.

// Elements of one 64 x 64 box: the unit the X, W (and LoRA's B) tiles are copied in.
constexpr int SW128_BOX = SW128_COLS * SW128_COLS;

// The X and W k-slice at (m0, n0, k0) into dX (128 x 64) and dW (64 x BLOCK_N) as 2-D tensor-map
// boxes completing on `bar`: the producer's copies of one stage (the LoRA kernel's too).
template <typename T, bool X_COL, bool W_COL, int BLOCK_N>
TESSERA_DEVICE void hopper_load_xw(T* dX, T* dW, const TensorMap* x_map, const TensorMap* w_map, u64* bar, int m0, int n0, int k0) {
    if (X_COL) {
        // One 64 m x 64 k box per consumer's rows.
#pragma unroll
        for (int s = 0; s < CONSUMER_WARPGROUPS; ++s) tma_load_2d(dX + s * SW128_BOX, x_map, bar, m0 + SW128_COLS * s, k0);
    } else {
        tma_load_2d(dX, x_map, bar, k0, m0);
    }
    if (W_COL) {
        tma_load_2d(dW, w_map, bar, k0, n0);
    } else {
#pragma unroll
        for (int s = 0; s < BLOCK_N / SW128_COLS; ++s) tma_load_2d(dW + s * SW128_BOX, w_map, bar, n0 + SW128_COLS * s, k0);
    }
}

// The descriptors of k-step ks (16 deep) of a consumer's X rows tX and the stage's W slice tW, laid
// out as hopper_load_xw writes them (see the layout notes above).
template <typename T, bool X_COL, bool W_COL>
TESSERA_DEVICE void hopper_xw_descriptors(const T* tX, const T* tW, int ks, u64& dx, u64& dw) {
    constexpr u32 BOX_BYTES = SW128_BOX * sizeof(T);
    dx = X_COL ? mn_major_descriptor<SW128_SPAN_BYTES>(tX + ks * WGMMA_K * SW128_COLS, BOX_BYTES)
               : k_major_descriptor<SW128_SPAN_BYTES>(tX + ks * WGMMA_K);
    dw = W_COL ? k_major_descriptor<SW128_SPAN_BYTES>(tW + ks * WGMMA_K)
               : mn_major_descriptor<SW128_SPAN_BYTES>(tW + ks * WGMMA_K * SW128_COLS, BOX_BYTES);
}

// Dynamic shared memory, from a swizzle-atom aligned base: the X and W rings, then the ring's
// mbarriers. Codegen's `HopperGemmTile::shared_memory_bytes` is these regions plus SMEM_ALIGN_SLACK.
template <typename T, int BLOCK_N, int STAGES> struct HopperGemmSmem {
    static constexpr int BLOCK_M = WGMMA_M * CONSUMER_WARPGROUPS;
    static constexpr int BLOCK_K = SW128_COLS;   // one 128-byte swizzle span of 16-bit elements
    static constexpr int X_TILE = BLOCK_M * BLOCK_K;  // elements per stage
    static constexpr int W_TILE = BLOCK_N * BLOCK_K;
    SmemRegion x, w, barriers;
    u32 padding;
    __host__ __device__ constexpr HopperGemmSmem() : x{}, w{}, barriers{}, padding(0) {
        SmemLayout l;
        x = l.take<T, SW128_ATOM_BYTES>(STAGES * X_TILE);
        w = l.take<T, SW128_ATOM_BYTES>(STAGES * W_TILE);
        barriers = l.take<u64>(MbarrierRing<STAGES>::BARRIERS);
        padding = l.padding();
    }
};

template <typename T, typename TO, bool X_COL, bool W_COL, int BLOCK_N, int STAGES, bool HAS_BIAS, int ACT,
          bool HAS_RESIDUAL, typename Ops>
TESSERA_DEVICE void gemm_hopper(const HopperGemmParams& params) {
    typedef HopperGemmSmem<T, BLOCK_N, STAGES> Smem;
    constexpr int BLOCK_M = Smem::BLOCK_M;
    constexpr int BLOCK_K = Smem::BLOCK_K;
    constexpr int X_TILE = Smem::X_TILE;
    constexpr int W_TILE = Smem::W_TILE;
    constexpr u32 STAGE_BYTES = (X_TILE + W_TILE) * sizeof(T);
    constexpr int ACC = BLOCK_N / 2;                 // f32 accumulators per consumer thread (m64nBLOCK_N)
    constexpr int RASTER_M = 8;                      // row tiles per band of the tile order
    static_assert(sizeof(T) == 2, "16-bit inputs");
    static_assert(BLOCK_N % SW128_COLS == 0 && BLOCK_N <= 256, "whole 64-column W boxes, one m64nNk16 per k-step");
    static_assert(STAGES >= 2 && STAGES <= 8, "ring depth");
    const GemmParams& p = params.base;

    const int tid = thread_index();
    const int m_tiles = (p.m + BLOCK_M - 1) / BLOCK_M;
    const int n_tiles = (p.n + BLOCK_N - 1) / BLOCK_N;
    const int tiles = m_tiles * n_tiles;
    const int k_tiles = (p.k + BLOCK_K - 1) / BLOCK_K;
    // Tile `tile` in the rasterised order: band `tile / (RASTER_M n_tiles)` of RASTER_M row tiles
    // (the last band may be shorter), column-major inside the band.
    auto tile_origin = [&](int tile, int& m0, int& n0) {
        const int band = tile / (RASTER_M * n_tiles);
        const int first_m = band * RASTER_M;
        const int band_rows = m_tiles - first_m < RASTER_M ? m_tiles - first_m : RASTER_M;
        const int in_band = tile - band * RASTER_M * n_tiles;
        m0 = (first_m + in_band % band_rows) * BLOCK_M;
        n0 = (in_band / band_rows) * BLOCK_N;
    };

    constexpr Smem SMEM{};
    static_assert(SMEM.padding == 0, "codegen sizes shared memory as the plain sum of the regions");
    unsigned char* smem = aligned_dynamic_smem<SW128_ATOM_BYTES>();
    T* sX = smem_at<T>(smem, SMEM.x);
    T* sW = smem_at<T>(smem, SMEM.w);
    const MbarrierRing<STAGES> ring{smem_at<u64>(smem, SMEM.barriers)};

    if (tid == PRODUCER_THREAD) {
        ring.init();
        fence_barrier_init();
    }
    sync_threads();

    if (warpgroup_of(tid) == PRODUCER_WARPGROUP) {
        // ---- producer ----
        if (!enter_producer(tid)) return;
        PipelineState<STAGES> state = PipelineState<STAGES>::producer_start();
        for (int tile = block_index_x(); tile < tiles; tile += blocks_per_grid()) {
            int m0, n0;
            tile_origin(tile, m0, n0);
            // Rolled: every trip waits on a barrier, and unrolled copies only grow the code.
#pragma unroll 1
            for (int kt = 0; kt < k_tiles; ++kt) {
                // The stage's previous slice must be released by every consumer thread.
                u64* full = ring.producer_acquire(state, STAGE_BYTES);
                hopper_load_xw<T, X_COL, W_COL, BLOCK_N>(sX + state.index * X_TILE, sW + state.index * W_TILE, &params.x_map,
                                                          &params.w_map, full, m0, n0, kt * BLOCK_K);
                state.advance();
            }
        }
        return;
    }

    // ---- consumers ----
    const ConsumerThread me = enter_consumer(tid);
    const TO* c = static_cast<const TO*>(p.c);
    const TO* bias = static_cast<const TO*>(p.bias);
    const TO* residual = static_cast<const TO*>(p.residual);
    TO* y = static_cast<TO*>(p.y);

    float acc[ACC];
    PipelineState<STAGES> read = PipelineState<STAGES>::consumer_start();
    for (int tile = block_index_x(); tile < tiles; tile += blocks_per_grid()) {
        int m0, n0;
        tile_origin(tile, m0, n0);
#pragma unroll
        for (int i = 0; i < ACC; ++i) acc[i] = 0.f;
        // Every slice of the previous tile was released: the release state catches up with `read`.
        PipelineState<STAGES> release = read;
        for (int kt = 0; kt < k_tiles; ++kt) {
            ring.consumer_wait(read);
            // This consumer's 64 rows of X: rows 64 c.. of the row-major box, or box c of the
            // column-major pair; either way 64 x 64 elements in.
            const T* tX = sX + read.index * X_TILE + me.consumer * SW128_BOX;
            const T* tW = sW + read.index * W_TILE;
            fence_operands(acc);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < BLOCK_K / WGMMA_K; ++ks) {
                u64 dx, dw;
                hopper_xw_descriptors<T, X_COL, W_COL>(tX, tW, ks, dx, dw);
                Ops::mma(acc, dx, dw, true);
            }
            wgmma_commit();
            // Slice kt stays in flight; slice kt - 1 has retired, so its stage can be refilled.
            wgmma_wait<1>();
            fence_operands(acc);
            if (kt > 0) {
                ring.consumer_release(release);
                release.advance();
            }
            read.advance();
        }
        wgmma_wait<0>();
        fence_operands(acc);
        // The tile's last slice is done too: release it before the epilogue, so the producer can
        // fill every stage with the next tile meanwhile.
        if (k_tiles > 0) ring.consumer_release(release);

        // ---- epilogue: from registers, element by element with bounds checks ----
        for_each_acc(me, acc, m0 + WGMMA_M * me.consumer, n0, [&](int i, int row, int col) {
            if (row < p.m && col < p.n) {
                float v = p.alpha * acc[i];
                if (c != nullptr) v += p.beta * load_global_f32(c + row * p.ldc + col);
                v = gemm_finish<TO, HAS_BIAS, ACT, false, HAS_RESIDUAL>(v, bias, residual, row, col, p.ldr);
                store_global_elem(y + row * p.ldy + col, v);
            }
        });
    }
}

}  // namespace tessera
