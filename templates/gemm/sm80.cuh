// gemm/sm80.cuh: mixed-precision GEMM with a fused epilogue on mma.sync.m16n8k16, and the main loop
// the LoRA kernels (lora/sm80.cuh) reuse.
//
//   Y[M,N] = act(alpha * (X @ W)[M,N] + beta * C[M,N] + bias[N]) + residual[M,N]
//
// evaluated per element in f32, in exactly this order:
//   1. acc = sum_k X[m,k] W[k,n]                   (f32 accumulation of T x T products)
//   2. v = alpha * acc
//   3. v += beta * C[m,n]                          (only when C is given: p.c != null)
//   4. v += bias[n]                                (HAS_BIAS)
//   5. v = act(v)                                  (ACT: GemmActivation, none / relu / gelu-tanh / silu)
//   5b. v = user(v)                                (HAS_USER: a #[tessera::elementwise] function)
//   6. v += residual[m,n]                          (HAS_RESIDUAL)
//   7. Y[m,n] = round_to_nearest_even(v) in TO     (f16, bf16 or f32)
// C, bias, residual and Y are all stored in the output type TO.
//
// X is row-major [M, K] (k contiguous; A fragments by plain ldmatrix) or column-major, stored
// [K, M] with m contiguous (ldmatrix.trans). W is row-major [K, N] (n contiguous; B fragments by
// ldmatrix.trans) or column-major, stored [N, K] with k contiguous (nn.Linear's weight; plain
// ldmatrix, like K in attention). Shared-memory tiles keep the global layout, so every load is a
// run of whole 16-byte chunks.
//
// One CTA owns a BLOCK_M x BLOCK_N tile of Y; its warps form a 2 x (WARPS/2) grid, each owning a
// (BLOCK_M/2) x (BLOCK_N/(WARPS/2)) sub-tile of f32 accumulators. X and W tiles of BLOCK_K stream
// through a STAGES-deep shared-memory ring. Elements past M, N or K are zero-filled (load_tile), so
// the mma loop never masks. ALIGNED kernels move 16-byte cp.async chunks and need K (N for
// row-major W, M for column-major X) and the row strides to be multiples of 8 elements with
// 16-byte aligned bases; the runtime checks that and otherwise picks the element-wise variant.
#pragma once

namespace tessera {

// The kernel arguments (`GemmParams`: pointers, leading dimensions in elements, sizes, alpha, beta)
// and the activation codes (`GemmActivation`: ACT_NONE, ACT_RELU, ACT_GELU_TANH, ACT_SILU) are
// generated from their Rust definitions (tessera-codegen, gemm/params.rs) and precede this file.

// Activations, in f32 with ex2.approx (relative error 2^-22):
//   relu(x)      = max(x, 0)
//   gelu_tanh(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
//                = x / (1 + exp(-2u))            (the same function, without 1 + tanh cancellation)
//   silu(x)      = x sigmoid(x) = x / (1 + exp(-x))
// exp overflowing to inf gives x / inf = -0 (the right limit); exp underflowing to 0 gives x.
template <int ACT> TESSERA_DEVICE float gemm_activation(float x) {
    constexpr float LOG2E = 1.4426950408889634f;          // exp(y) = 2^(y log2 e)
    constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
    constexpr float GELU_CUBIC = 0.044715f;               // the cubic term of the tanh approximation
    if (ACT == ACT_RELU) return x > 0.f ? x : 0.f;
    if (ACT == ACT_GELU_TANH) {
        float u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
        return x / (1.f + exp2_approx(-2.f * LOG2E * u));
    }
    if (ACT == ACT_SILU) return x / (1.f + exp2_approx(-LOG2E * x));
    return x;
}

// A user-defined epilogue step (a #[tessera::elementwise] function). Only declared here: a spec
// with one defines `UserEpilogue<T>::apply` after the templates, and the call below depends on the
// template argument, so it is looked up when the entry point instantiates the kernel.
template <typename T> struct UserEpilogue;

// Steps 4-6 of the epilogue: bias, activation, user function, residual.
template <typename TO, bool HAS_BIAS, int ACT, bool HAS_USER, bool HAS_RESIDUAL>
TESSERA_DEVICE float gemm_finish(float v, const TO* bias, const TO* residual, int row, int col, i64 ldr) {
    if (HAS_BIAS) v += load_global_f32(bias + col);
    v = gemm_activation<ACT>(v);
    if constexpr (HAS_USER) v = UserEpilogue<TO>::apply(v);
    if (HAS_RESIDUAL) v += load_global_f32(residual + row * ldr + col);
    return v;
}

// The warp grid over a BLOCK_M x BLOCK_N CTA tile: 2 x (WARPS/2) warps, each with MI x NI
// m16n8 accumulator tiles.
template <int BLOCK_M, int BLOCK_N, int WARPS> struct WarpGrid {
    static constexpr int WARPS_M = 2;
    static constexpr int WARPS_N = WARPS / WARPS_M;
    static constexpr int WARP_M = BLOCK_M / WARPS_M;
    static constexpr int WARP_N = BLOCK_N / WARPS_N;
    static constexpr int MI = WARP_M / 16;
    static constexpr int NI = WARP_N / 8;
    static_assert(WARPS % WARPS_M == 0, "warps form a 2 x (WARPS/2) grid");
    static_assert(WARP_M % 16 == 0 && WARP_N % 16 == 0, "a warp tile is whole 16x16 fragments");
};

// Calls f(acc element, row, col) for every element of a warp's MI x NI accumulator tiles, with the
// element's row and column in the output: C fragment element e of tile (mi, ni) is row
// g + 8(e/2), column 2t + e%2 of that m16n8 tile (tessera.cuh's fragment conventions).
template <int MI, int NI, typename F>
TESSERA_DEVICE void for_each_acc(float (&acc)[MI][NI][4], int row0, int col0, F&& f) {
    const int lane = thread_index() % 32;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                f(acc[mi][ni][e], row0 + mi * 16 + lane / 4 + 8 * (e / 2), col0 + ni * 8 + (lane % 4) * 2 + (e % 2));
            }
        }
    }
}

// Where one CTA's main loop reads: X and W at the CTA's tile origin, and an optional low-rank
// operand A ([K, rank], row-major) whose product with X accumulates beside X @ W.
template <typename T> struct MainloopOperands {
    const T* x;      // element (m0, 0) of X
    i64 ldx;
    const T* w;      // element (0, n0) of W
    i64 ldw;
    const T* a;      // null: no low-rank product; else element (0, c0) of A
    int rank;        // A's row stride
    int a_cols;      // columns of A left from c0 (R of them are read)
    int m_valid;     // rows of X left from m0
    int n_valid;     // columns of W left from n0
    int k;
    int k_tile_begin;  // first BLOCK_K slice of K this CTA covers (split-K)
    int k_tiles;       // slices it covers
};

// acc += X W over all of K (WITH_W) and, when R > 0 and op.a is set, tacc += X A.
// tacc holds the CTA's BLOCK_M x R product split by rows: warp (i, j) of the grid owns the T_M16
// m16 tiles starting at its warp row's m16 tile j * T_M16, i.e. rows that are already among its
// own A fragments, so the low-rank product costs only A's B fragments and the mma.
template <typename T, bool X_COL, bool W_COL, int BLOCK_M, int BLOCK_N, int BLOCK_K, int WARPS, int STAGES,
          bool ALIGNED, bool WITH_W, int R>
struct GemmMainloop {
    typedef WarpGrid<BLOCK_M, BLOCK_N, WARPS> Grid;
    static constexpr int MI = Grid::MI;
    static constexpr int NI = Grid::NI;
    static constexpr int THREADS = WARPS * 32;
    static constexpr int K_STEPS = BLOCK_K / 16;
    static constexpr int X_COLS = X_COL ? BLOCK_M : BLOCK_K;   // stored [K][M] or [M][K]
    static constexpr int W_COLS = W_COL ? BLOCK_K : BLOCK_N;   // stored [N][K] or [K][N]
    static constexpr int X_TILE = BLOCK_M * BLOCK_K;
    static constexpr int W_TILE = WITH_W ? BLOCK_N * BLOCK_K : 0;
    static constexpr int A_TILE = BLOCK_K * R;
    static constexpr int STAGE = X_TILE + W_TILE + A_TILE;
    // Elements of T the ring occupies.
    static constexpr int RING_ELEMS = STAGES * STAGE;
    static constexpr int T_M16 = R > 0 ? MI / Grid::WARPS_N : 1;
    static constexpr int T_N8 = R > 0 ? R / 8 : 2;
    static_assert(BLOCK_K % 16 == 0, "mma k-steps are 16 wide");
    static_assert(STAGES >= 1 && STAGES <= 3, "ring depth");
    static_assert(R == 0 || (R % 16 == 0 && T_M16 >= 1 && MI % Grid::WARPS_N == 0),
                  "each warp owns whole m16 tiles of the low-rank product");

    TESSERA_DEVICE static void run(const MainloopOperands<T>& op, T* ring, float (&acc)[MI][NI][4],
                                   float (&tacc)[T_M16][T_N8][4]) {
        const int lane = thread_index() % 32;
        const int warp = thread_index() / 32;
        const int wm0 = (warp / Grid::WARPS_N) * Grid::WARP_M;
        const int wn0 = (warp % Grid::WARPS_N) * Grid::WARP_N;
        const int t_owner = warp % Grid::WARPS_N;
        const bool with_a = R > 0 && op.a != nullptr;
        const int n_tiles = op.k_tiles;

        auto load = [&](int tile_index, int slot) {
            const int k0 = (op.k_tile_begin + tile_index) * BLOCK_K;
            T* s = ring + slot * STAGE;
            if (X_COL) {
                load_tile<T, BLOCK_K, BLOCK_M, THREADS, ALIGNED>(s, op.x + k0 * op.ldx, op.ldx, op.k - k0, op.m_valid);
            } else {
                load_tile<T, BLOCK_M, BLOCK_K, THREADS, ALIGNED>(s, op.x + k0, op.ldx, op.m_valid, op.k - k0);
            }
            if (WITH_W) {
                if (W_COL) {
                    load_tile<T, BLOCK_N, BLOCK_K, THREADS, ALIGNED>(s + X_TILE, op.w + k0, op.ldw, op.n_valid, op.k - k0);
                } else {
                    load_tile<T, BLOCK_K, BLOCK_N, THREADS, ALIGNED>(s + X_TILE, op.w + k0 * op.ldw, op.ldw, op.k - k0,
                                                                      op.n_valid);
                }
            }
            if (R > 0 && with_a) {
                load_tile<T, BLOCK_K, (R > 0 ? R : 8), THREADS, ALIGNED>(s + X_TILE + W_TILE, op.a + k0 * op.rank,
                                                                         op.rank, op.k - k0, op.a_cols);
            }
        };

        ring_prologue<STAGES>(n_tiles, load);
        for (int t = 0; t < n_tiles; ++t) {
            const int slot = ring_acquire<STAGES>(t, n_tiles, load);
            const T* tX = ring + slot * STAGE;
            const T* tW = tX + X_TILE;
            const T* tA = tW + W_TILE;
#pragma unroll
            for (int ks = 0; ks < K_STEPS; ++ks) {
                u32 a[MI][4];
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    // Without W only the warp's own rows of the low-rank product are needed
                    // (ldmatrix is volatile: an unused load would still be issued).
                    if (WITH_W || mi / T_M16 == t_owner) {
                        load_a_fragment<!X_COL, X_COLS>(a[mi], tX, wm0 + mi * 16, ks * 16, lane);
                    }
                }
                if (WITH_W) {
#pragma unroll
                    for (int ni = 0; ni < NI; ni += 2) {
                        u32 b[4];
                        load_b_fragments<W_COL, W_COLS>(b, tW, wn0 + ni * 8, ks * 16, lane);
#pragma unroll
                        for (int mi = 0; mi < MI; ++mi) {
                            mma_16816<T>(acc[mi][ni], a[mi], b[0], b[1]);
                            mma_16816<T>(acc[mi][ni + 1], a[mi], b[2], b[3]);
                        }
                    }
                }
                if (R > 0 && with_a) {
#pragma unroll
                    for (int tn = 0; tn < T_N8; tn += 2) {
                        u32 b[4];
                        load_b_fragments<false, (R > 0 ? R : 8)>(b, tA, tn * 8, ks * 16, lane);
                        // Compile-time fragment indices (a runtime index would put `a` in local
                        // memory); the owner test is uniform across the warp.
#pragma unroll
                        for (int mi = 0; mi < MI; ++mi) {
                            if (mi / T_M16 == t_owner) {
                                mma_16816<T>(tacc[mi % T_M16][tn], a[mi], b[0], b[1]);
                                mma_16816<T>(tacc[mi % T_M16][tn + 1], a[mi], b[2], b[3]);
                            }
                        }
                    }
                }
            }
        }
        cp_async_wait<0>();  // only empty groups can remain; leave nothing in flight
    }
};

// Split-K (SPLIT_K > 1): CTA z of an output tile covers the z-th run of BLOCK_K slices, stores its
// f32 partial tile in the workspace, fences, and takes a ticket from the tile's counter. The CTA
// that draws the last ticket adds the SPLIT_K partials in order z = 0, 1, ... (the same sum
// whichever CTA finishes last), applies the epilogue, and re-arms the counter. Nobody waits for
// anybody, so CTAs may run in any order.
template <typename T, typename TO, bool X_COL, bool W_COL, int BLOCK_M, int BLOCK_N, int BLOCK_K, int WARPS,
          int STAGES, int SPLIT_K, bool ALIGNED, bool HAS_BIAS, int ACT, bool HAS_USER, bool HAS_RESIDUAL>
TESSERA_DEVICE void gemm(const GemmParams& p) {
    typedef GemmMainloop<T, X_COL, W_COL, BLOCK_M, BLOCK_N, BLOCK_K, WARPS, STAGES, ALIGNED, true, 0> Mainloop;
    typedef WarpGrid<BLOCK_M, BLOCK_N, WARPS> Grid;
    constexpr int MI = Grid::MI;
    constexpr int NI = Grid::NI;

    const int warp = thread_index() / 32;
    const int lane = thread_index() % 32;
    const int wm0 = (warp / Grid::WARPS_N) * Grid::WARP_M;
    const int wn0 = (warp % Grid::WARPS_N) * Grid::WARP_N;
    const int m0 = block_index_x() * BLOCK_M;
    const int n0 = block_index_y() * BLOCK_N;

    MainloopOperands<T> op;
    op.x = static_cast<const T*>(p.x) + (X_COL ? (i64)m0 : m0 * p.ldx);
    op.ldx = p.ldx;
    op.w = static_cast<const T*>(p.w) + (W_COL ? n0 * p.ldw : (i64)n0);
    op.ldw = p.ldw;
    op.a = nullptr;
    op.rank = 0;
    op.a_cols = 0;
    op.m_valid = p.m - m0;
    op.n_valid = p.n - n0;
    op.k = p.k;
    const int k_tiles_total = (p.k + BLOCK_K - 1) / BLOCK_K;
    const int split = SPLIT_K > 1 ? block_index_z() : 0;
    const int per_split = (k_tiles_total + SPLIT_K - 1) / SPLIT_K;
    op.k_tile_begin = split * per_split;
    op.k_tiles = k_tiles_total - op.k_tile_begin < per_split ? k_tiles_total - op.k_tile_begin : per_split;
    if (op.k_tiles < 0) op.k_tiles = 0;

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;
        }
    }
    float unused[Mainloop::T_M16][Mainloop::T_N8][4];
    Mainloop::run(op, reinterpret_cast<T*>(dynamic_smem()), acc, unused);

    if constexpr (SPLIT_K > 1) {
        // Publish this CTA's partial tile, then see whether it is the last of the tile's CTAs.
        for_each_acc(acc, m0 + wm0, n0 + wn0, [&](float& a, int row, int col) {
            if (row < p.m && col < p.n) p.workspace[((i64)split * p.m + row) * p.n + col] = a;
        });
        fence_device();
        sync_threads();  // every thread's partial is out, and the ring is no longer read
        u32* ticket = reinterpret_cast<u32*>(dynamic_smem());
        const int tile_id = block_index_y() * blocks_per_grid() + block_index_x();
        if (thread_index() == 0) *ticket = atomic_add_u32(p.counters + tile_id, 1u);
        sync_threads();
        if (*ticket != (u32)(SPLIT_K - 1)) return;
        fence_device();
        for_each_acc(acc, m0 + wm0, n0 + wn0, [&](float& a, int row, int col) {
            float sum = 0.f;
            if (row < p.m && col < p.n) {
                for (int z = 0; z < SPLIT_K; ++z) sum += load_global_f32_cg(p.workspace + ((i64)z * p.m + row) * p.n + col);
            }
            a = sum;
        });
        if (thread_index() == 0) p.counters[tile_id] = 0u;
    }

    const TO* c = static_cast<const TO*>(p.c);
    const TO* bias = static_cast<const TO*>(p.bias);
    const TO* residual = static_cast<const TO*>(p.residual);
    TO* y = static_cast<TO*>(p.y);
    for_each_acc(acc, m0 + wm0, n0 + wn0, [&](float& a, int row, int col) {
        if (row < p.m && col < p.n) {
            float v = p.alpha * a;
            if (c != nullptr) v += p.beta * load_global_f32(c + row * p.ldc + col);
            v = gemm_finish<TO, HAS_BIAS, ACT, HAS_USER, HAS_RESIDUAL>(v, bias, residual, row, col, p.ldr);
            store_global_elem(y + row * p.ldy + col, v);
        }
    });
}

}  // namespace tessera
