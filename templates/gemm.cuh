// gemm.cuh: mixed-precision GEMM with a fused epilogue on mma.sync.m16n8k16.
//
//   Y[M,N] = act(alpha * (X @ W)[M,N] + beta * C[M,N] + bias[N]) + residual[M,N]
//
// evaluated per element in f32, in exactly this order:
//   1. acc = sum_k X[m,k] W[k,n]                   (f32 accumulation of T x T products)
//   2. v = alpha * acc
//   3. v += beta * C[m,n]                          (only when C is given: p.c != null)
//   4. v += bias[n]                                (HAS_BIAS)
//   5. v = act(v)                                  (ACT: 0 none, 1 relu, 2 gelu-tanh, 3 silu)
//   6. v += residual[m,n]                          (HAS_RESIDUAL)
//   7. Y[m,n] = round_to_nearest_even(v) in TO     (f16, bf16 or f32)
// C, bias, residual and Y are all stored in the output type TO.
//
// X is row-major [M, K] (k contiguous). W is either row-major [K, N] (n contiguous; B fragments via
// ldmatrix.trans) or column-major, i.e. stored as [N, K] with k contiguous (nn.Linear's weight;
// B fragments via plain ldmatrix, like K in attention).
//
// One CTA owns a BLOCK_M x BLOCK_N tile of Y; its warps form a 2 x (WARPS/2) grid, each owning a
// (BLOCK_M/2) x (BLOCK_N/(WARPS/2)) sub-tile of f32 accumulators. X and W tiles of BLOCK_K stream
// through a STAGES-deep shared-memory ring filled with cp.async. Rows or 16-byte chunks past M, N or
// K are zero-filled by cp.async (src-size 0), so the mma loop never masks: zeros contribute nothing.
// The runtime guarantees K (and N for row-major W) row strides of whole 16-byte chunks, so a chunk
// is either entirely inside the tensor or entirely outside.
#pragma once

namespace tessera {

// Kernel arguments, passed by value. Must match `GemmParams` in tessera-runtime field by field.
// Leading dimensions (row strides) are in elements.
struct GemmParams {
    const void* x;         // [M, K] row-major, T
    const void* w;         // [K, N] row-major or [N, K] (column-major W), T
    const void* c;         // [M, N] TO, or null
    const void* bias;      // [N] TO, or null (read only when HAS_BIAS)
    const void* residual;  // [M, N] TO, or null (read only when HAS_RESIDUAL)
    void* y;               // [M, N] TO
    i64 ldx, ldw, ldc, ldr, ldy;
    int m, n, k;
    float alpha, beta;
    int reserved;          // keeps the struct free of padding
};

// Cooperative cp.async of a ROWS x COLS tile starting at `src`; chunks at or past `valid_rows` /
// `valid_cols` are zero-filled without touching global memory.
template <typename T, int ROWS, int COLS, int THREADS>
TESSERA_DEVICE void gemm_load_tile(T* tile, const T* src, i64 ld, int valid_rows, int valid_cols) {
    typedef SwizzledTile<COLS> Tile;
    constexpr int TOTAL = ROWS * Tile::CHUNKS;
#pragma unroll
    for (int i = thread_index(); i < TOTAL; i += THREADS) {
        int row = i / Tile::CHUNKS;
        int col = (i % Tile::CHUNKS) * 8;
        bool valid = row < valid_rows && col + 8 <= valid_cols;
        const T* from = valid ? src + row * ld + col : src;
        cp_async_16(tile + Tile::offset(row, col), from, valid);
    }
}

// Activations, in f32 with ex2.approx (relative error 2^-22):
//   relu(x)      = max(x, 0)
//   gelu_tanh(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
//                = x / (1 + exp(-2u))            (the same function, without 1 + tanh cancellation)
//   silu(x)      = x sigmoid(x) = x / (1 + exp(-x))
// exp overflowing to inf gives x / inf = -0 (the right limit); exp underflowing to 0 gives x.
template <int ACT> TESSERA_DEVICE float gemm_activation(float x) {
    constexpr float LOG2E = 1.4426950408889634f;
    constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
    if (ACT == 1) return x > 0.f ? x : 0.f;
    if (ACT == 2) {
        float u = SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
        return x / (1.f + exp2_approx(-2.f * LOG2E * u));
    }
    if (ACT == 3) return x / (1.f + exp2_approx(-LOG2E * x));
    return x;
}

template <typename T, typename TO, bool W_COL, int BLOCK_M, int BLOCK_N, int BLOCK_K, int WARPS,
          int STAGES, bool HAS_BIAS, int ACT, bool HAS_RESIDUAL>
TESSERA_DEVICE void gemm(const GemmParams& p) {
    constexpr int WARPS_M = 2;
    constexpr int WARPS_N = WARPS / WARPS_M;
    constexpr int WARP_M = BLOCK_M / WARPS_M;
    constexpr int WARP_N = BLOCK_N / WARPS_N;
    constexpr int MI = WARP_M / 16;   // m16 tiles per warp
    constexpr int NI = WARP_N / 8;    // n8 tiles per warp
    constexpr int K_STEPS = BLOCK_K / 16;
    constexpr int THREADS = WARPS * 32;
    static_assert(WARPS % WARPS_M == 0, "warps form a 2 x (WARPS/2) grid");
    static_assert(WARP_M % 16 == 0 && WARP_N % 16 == 0, "a warp tile is whole 16x16 fragments");
    static_assert(BLOCK_K % 16 == 0, "mma k-steps are 16 wide");
    static_assert(STAGES >= 1 && STAGES <= 3, "ring depth");
    constexpr int X_TILE = BLOCK_M * BLOCK_K;
    constexpr int W_TILE = BLOCK_N * BLOCK_K;
    typedef SwizzledTile<BLOCK_K> XTile;
    // Column-major W is [n][k] in shared memory; row-major W is [k][n].
    typedef SwizzledTile<(W_COL ? BLOCK_K : BLOCK_N)> WTile;

    const int tid = thread_index();
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int group = lane / 4;
    const int in_group = lane % 4;
    const int wm0 = (warp / WARPS_N) * WARP_M;
    const int wn0 = (warp % WARPS_N) * WARP_N;

    const int m0 = block_index_x() * BLOCK_M;
    const int n0 = block_index_y() * BLOCK_N;

    const T* x = static_cast<const T*>(p.x) + m0 * p.ldx;
    const T* w = static_cast<const T*>(p.w) + (W_COL ? n0 * p.ldw : (i64)n0);

    T* sX = reinterpret_cast<T*>(dynamic_smem());
    T* sW = sX + STAGES * X_TILE;

    const int n_tiles = (p.k + BLOCK_K - 1) / BLOCK_K;

    auto load = [&](int tile_index, int slot) {
        int k0 = tile_index * BLOCK_K;
        gemm_load_tile<T, BLOCK_M, BLOCK_K, THREADS>(sX + slot * X_TILE, x + k0, p.ldx, p.m - m0, p.k - k0);
        if (W_COL) {
            gemm_load_tile<T, BLOCK_N, BLOCK_K, THREADS>(sW + slot * W_TILE, w + k0, p.ldw, p.n - n0, p.k - k0);
        } else {
            gemm_load_tile<T, BLOCK_K, BLOCK_N, THREADS>(sW + slot * W_TILE, w + k0 * p.ldw, p.ldw, p.k - k0,
                                                         p.n - n0);
        }
    };

    ring_prologue<STAGES>(n_tiles, load);

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;
        }
    }

    for (int t = 0; t < n_tiles; ++t) {
        const int slot = ring_acquire<STAGES>(t, n_tiles, load);
        const T* tX = sX + slot * X_TILE;
        const T* tW = sW + slot * W_TILE;
#pragma unroll
        for (int ks = 0; ks < K_STEPS; ++ks) {
            // A fragments: lane l addresses row l%16, column block l/16 of each 16x16 sub-tile.
            u32 a[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                ldmatrix_x4(a[mi], tX + XTile::offset(wm0 + mi * 16 + (lane % 16), ks * 16 + (lane / 16) * 8));
            // One ldmatrix_x4 yields the B fragments of two n8 tiles: (ni, k 0-7), (ni, k 8-15),
            // (ni+1, k 0-7), (ni+1, k 8-15).
#pragma unroll
            for (int ni = 0; ni < NI; ni += 2) {
                u32 b[4];
                if (W_COL) {
                    // [n][k] is B^T row-major == B "col": no transpose.
                    int n = wn0 + (ni + lane / 16) * 8 + (lane % 8);
                    int k = ks * 16 + ((lane / 8) % 2) * 8;
                    ldmatrix_x4(b, tW + WTile::offset(n, k));
                } else {
                    // [k][n] needs the transposed load.
                    int k = ks * 16 + (lane % 16);
                    int n = wn0 + (ni + lane / 16) * 8;
                    ldmatrix_x4_trans(b, tW + WTile::offset(k, n));
                }
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    mma_16816<T>(acc[mi][ni], a[mi], b[0], b[1]);
                    mma_16816<T>(acc[mi][ni + 1], a[mi], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>();  // only empty groups can remain; leave nothing in flight

    // ---- epilogue: C fragment element e of tile (mi, ni) is row g + 8(e/2), column 2t + e%2 ----
    const TO* c = static_cast<const TO*>(p.c);
    const TO* bias = static_cast<const TO*>(p.bias);
    const TO* residual = static_cast<const TO*>(p.residual);
    TO* y = static_cast<TO*>(p.y);
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int row = m0 + wm0 + mi * 16 + group + 8 * (e / 2);
                int col = n0 + wn0 + ni * 8 + in_group * 2 + (e % 2);
                if (row < p.m && col < p.n) {
                    float v = p.alpha * acc[mi][ni][e];
                    if (c != nullptr) v += p.beta * load_global_f32(c + row * p.ldc + col);
                    if (HAS_BIAS) v += load_global_f32(bias + col);
                    v = gemm_activation<ACT>(v);
                    if (HAS_RESIDUAL) v += load_global_f32(residual + row * p.ldr + col);
                    store_global_elem(y + row * p.ldy + col, v);
                }
            }
        }
    }
}

}  // namespace tessera
