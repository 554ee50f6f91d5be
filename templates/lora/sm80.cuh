// lora/sm80.cuh: fused LoRA and bottleneck-adapter kernels on the GEMM main loop (gemm/sm80.cuh).
//
//   LoRA (KIND = LORA_KIND_ADAPTER):        Y = act(X W + s (X A_i) B_i + bias) + residual
//   bottleneck (KIND = LORA_KIND_BOTTLENECK): Y = X + s f(X A) B          (N == K; f = T_ACT)
//
// A_i is [K, r] and B_i is [r, N], both row-major; with PER_ROW every row m of X picks its own
// adapter i = ids[m] from A stacked [n_adapters, K, r] and B stacked [n_adapters, r, N], and
// ids[m] = -1 (or anything outside [0, n_adapters)) means no adapter for that row. Without PER_ROW
// every row uses A [K, r], B [r, N].
//
// The rank-r intermediate never leaves the chip: T' = round(s T) (bottleneck: round(s f(T))),
// T = X A_i row by row, lives in shared memory as [BLOCK_M][R]. Per CTA (a BLOCK_M row tile and a
// group of `n_group` consecutive BLOCK_N column tiles), on the first column tile:
//   1. a0, the smallest adapter in the row tile, is multiplied on tensor cores. With FUSE the main
//      loop streams X, W and A_a0 together, so while acc += X W runs the warps also accumulate
//      X A_a0 from the X fragments already in registers; without FUSE (codegen's choice when the
//      main and low-rank accumulators would not fit in registers together) a0 gets passes of its
//      own over K (X and A_a0 only, at most 64 columns of T per pass) before the main loop.
//   2. PER_ROW: rows of further adapters, before the main loop (so no accumulators are live),
//      either with one such tensor-core pass per adapter (prefill batches sorted into segments:
//      (SGMV) one or two adapters per row tile, many rows each), or, when few rows are spread over
//      several adapters (decode batches, BGMV), all at once on CUDA cores: a warp per row, lanes
//      splitting K, A_i read straight from global memory (L2), a warp reduction per column. The
//      cost model picking between them is in `gathered_is_cheaper`.
//   3. every column tile: acc += T'_a B_a[:, tile] for each adapter a, with the A fragments of
//      rows that belong to another adapter zeroed in registers; then the epilogue.
// Later column tiles of the group reuse T' from shared memory: the low-rank product costs
// r / (n_group * BLOCK_N) of the main loop's tensor work, plus r / K for the expansion.
// Rounding T' to the input type before the second product is what an unfused
// `(x @ A) @ B` does as well; the f64 reference rounds at the same point.
#pragma once

namespace tessera {

// The kernel arguments (`LoraParams`) and the KIND codes (`LoraKind`: LORA_KIND_ADAPTER,
// LORA_KIND_BOTTLENECK) are generated from their Rust definitions (tessera-codegen, lora/params.rs)
// and precede this file.

template <typename T, typename TO, bool X_COL, bool W_COL, int BLOCK_M, int BLOCK_N, int BLOCK_K, int WARPS,
          int STAGES, bool ALIGNED, int R, bool FUSE, int KIND, int T_ACT, bool PER_ROW, bool HAS_BIAS, int ACT,
          bool HAS_USER, bool HAS_RESIDUAL>
TESSERA_DEVICE void lora(const LoraParams& p) {
    static_assert(KIND == LORA_KIND_ADAPTER || KIND == LORA_KIND_BOTTLENECK, "LoRA or bottleneck");
    constexpr bool WITH_W = KIND == LORA_KIND_ADAPTER;
    // Columns of T one pass accumulates: all R when fused, else at most PASS_COLS (what a pass's
    // low-rank accumulators may hold in registers).
    constexpr int PASS_COLS = 64;
    constexpr int T_COLS = FUSE || R <= PASS_COLS ? R : PASS_COLS;
    typedef GemmMainloop<T, X_COL, W_COL, BLOCK_M, BLOCK_N, BLOCK_K, WARPS, STAGES, ALIGNED, WITH_W, (FUSE ? R : 0)> Fused;
    typedef GemmMainloop<T, X_COL, W_COL, BLOCK_M, BLOCK_N, BLOCK_K, WARPS, STAGES, ALIGNED, false, T_COLS> ShrinkOnly;
    typedef WarpGrid<BLOCK_M, BLOCK_N, WARPS> Grid;
    typedef SwizzledTile<R> TPrimeTile;   // T' [BLOCK_M][R]: the A operand of the expansion
    typedef SwizzledTile<BLOCK_N> BTile;  // B [R][BLOCK_N]: n contiguous
    constexpr int MI = Grid::MI;
    constexpr int NI = Grid::NI;
    constexpr int T_M16 = ShrinkOnly::T_M16;
    constexpr int T_N8 = ShrinkOnly::T_N8;
    static_assert(!FUSE || (Fused::T_M16 == T_M16 && Fused::T_N8 == T_N8), "one low-rank accumulator shape");
    constexpr int THREADS = WARPS * 32;
    static_assert(R >= 16 && R % 16 == 0, "the padded rank is whole 16-wide k-steps");

    const int warp = thread_index() / 32;
    const int lane = thread_index() % 32;
    const int group = lane / 4;
    const int in_group = lane % 4;
    const int wm0 = (warp / Grid::WARPS_N) * Grid::WARP_M;
    const int wn0 = (warp % Grid::WARPS_N) * Grid::WARP_N;
    // First row of this warp's share of T (see GemmMainloop).
    const int t_row0 = wm0 + (warp % Grid::WARPS_N) * T_M16 * 16;

    const int m0 = block_index_x() * BLOCK_M;
    const int n_tiles = (p.n + BLOCK_N - 1) / BLOCK_N;
    const int nt_begin = block_index_y() * p.n_group;
    const int nt_end = nt_begin + p.n_group < n_tiles ? nt_begin + p.n_group : n_tiles;

    // Shared memory: the main loop's ring (the larger of the two loop shapes), B, T', row ids.
    T* ring = reinterpret_cast<T*>(dynamic_smem());
    constexpr int RING = Fused::RING_ELEMS > ShrinkOnly::RING_ELEMS ? Fused::RING_ELEMS : ShrinkOnly::RING_ELEMS;
    T* sB = ring + RING;
    T* sT = sB + R * BLOCK_N;
    int* s_ids = reinterpret_cast<int*>(sT + BLOCK_M * R);

    const T* x = static_cast<const T*>(p.x);
    const T* a_all = static_cast<const T*>(p.a);
    const T* b_all = static_cast<const T*>(p.b);
    const i64 a_stride = (i64)p.k * p.rank;
    const i64 b_stride = (i64)p.rank * p.n;

    // Row ids of the tile; rows past M and ids out of range are "no adapter".
    for (int r = thread_index(); r < BLOCK_M; r += THREADS) {
        int id = 0;
        if (PER_ROW) id = m0 + r < p.m ? load_global_i32(p.ids + m0 + r) : -1;
        if (id < 0 || id >= p.n_adapters || m0 + r >= p.m) id = -1;
        store_shared_u32(s_ids + r, (u32)id);
    }
    sync_threads();
    // The smallest adapter id above `after` among the tile's rows, or -1. Every thread scans the
    // same shared array, so the result (and every loop over it) is uniform across the CTA.
    auto next_adapter = [&](int after) {
        int best = -1;
        for (int r = 0; r < BLOCK_M; ++r) {
            int id = (int)load_shared_u32(s_ids + r);
            if (id > after && (best < 0 || id < best)) best = id;
        }
        return best;
    };
    auto row_id = [&](int r) { return (int)load_shared_u32(s_ids + r); };
    const int a0 = next_adapter(-1);

    MainloopOperands<T> op;
    op.x = x + (X_COL ? (i64)m0 : m0 * p.ldx);
    op.ldx = p.ldx;
    op.ldw = p.ldw;
    op.rank = p.rank;
    op.m_valid = p.m - m0;
    op.k = p.k;
    op.k_tile_begin = 0;
    op.k_tiles = (p.k + BLOCK_K - 1) / BLOCK_K;

    float tacc[T_M16][T_N8][4];
    auto zero_tacc = [&]() {
#pragma unroll
        for (int i = 0; i < T_M16; ++i) {
#pragma unroll
            for (int j = 0; j < T_N8; ++j) {
#pragma unroll
                for (int e = 0; e < 4; ++e) tacc[i][j][e] = 0.f;
            }
        }
    };
    auto t_value = [&](float t) { return p.scale * gemm_activation<T_ACT>(t); };
    // Columns c0.. of the T' rows of adapter `a` from the tensor-core accumulators.
    auto store_t = [&](int a, int c0) {
#pragma unroll
        for (int i = 0; i < T_M16; ++i) {
#pragma unroll
            for (int j = 0; j < T_N8; ++j) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    int row = t_row0 + i * 16 + group + 8 * h;
                    int col = c0 + j * 8 + in_group * 2;
                    if (row_id(row) == a) {
                        u32 v = pack2<T>(t_value(tacc[i][j][2 * h]), t_value(tacc[i][j][2 * h + 1]));
                        store_shared_u32(sT + TPrimeTile::offset(row, col), v);
                    }
                }
            }
        }
    };
    // Rows without an adapter contribute nothing to the expansion: zero them once.
    for (int i = thread_index(); i < BLOCK_M * (R / 2); i += THREADS) {
        int row = i / (R / 2);
        if (row_id(row) < 0) store_shared_u32(sT + TPrimeTile::offset(row, 2 * (i % (R / 2))), 0u);
    }
    // acc += T'_a B (B already in sB); rows of other adapters masked when PER_ROW.
    auto expand = [&](float (&acc)[MI][NI][4], int a) {
        // reg0 / reg2 of an A fragment hold row g of its m16 tile, reg1 / reg3 row g + 8.
        bool lo[MI], hi[MI];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
            lo[mi] = !PER_ROW || row_id(wm0 + mi * 16 + group) == a;
            hi[mi] = !PER_ROW || row_id(wm0 + mi * 16 + group + 8) == a;
        }
        // Not unrolled: the expansion is r / K of the work, and unrolling it would keep several
        // k-steps' fragments live beside the accumulators.
#pragma unroll 1
        for (int ks = 0; ks < R / 16; ++ks) {
            u32 af[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                load_a_fragment<true, R>(af[mi], sT, wm0 + mi * 16, ks * 16, lane);
                if (!lo[mi]) af[mi][0] = af[mi][2] = 0u;
                if (!hi[mi]) af[mi][1] = af[mi][3] = 0u;
            }
#pragma unroll
            for (int ni = 0; ni < NI; ni += 2) {
                u32 b[4];
                load_b_fragments<false, BLOCK_N>(b, sB, wn0 + ni * 8, ks * 16, lane);
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    mma_16816<T>(acc[mi][ni], af[mi], b[0], b[1]);
                    mma_16816<T>(acc[mi][ni + 1], af[mi], b[2], b[3]);
                }
            }
        }
    };
    // B_a's rows 0..rank-1 of column tile n0 into sB; rows rank..R-1 (rank 8 padded to 16) are zero.
    auto load_b = [&](int a, int n0) {
        load_tile<T, R, BLOCK_N, THREADS, ALIGNED>(sB, b_all + a * b_stride + n0, p.n, p.rank, p.n - n0);
        cp_async_commit();
    };
    // Tensor-core passes over K for adapter `a` alone (X and A_a, T_COLS columns at a time).
    auto shrink_pass = [&](int a) {
        for (int c0 = 0; c0 < R; c0 += T_COLS) {
            sync_threads();  // the ring is free again
            zero_tacc();
            op.a = a_all + a * a_stride + c0;
            op.a_cols = p.rank - c0;
            float unused[MI][NI][4];
            ShrinkOnly::run(op, ring, unused, tacc);
            store_t(a, c0);
        }
    };
    // CUDA-core T' for every row whose adapter is neither -1 nor a0: warp w takes the w-th,
    // (w + WARPS)-th, ... such row; lane l sums k = l, l + 32, ... for 32 columns at a time, then
    // the warp reduces each column with shuffles and lane j writes column j.
    auto gathered_shrink = [&]() {
        constexpr int GC = 32;
        int nth = 0;
        for (int r = 0; r < BLOCK_M; ++r) {
            const int id = row_id(r);
            if (id < 0 || id == a0) continue;
            if (nth++ % WARPS != warp) continue;
            const T* xr = x + (X_COL ? (i64)(m0 + r) : (m0 + r) * p.ldx);
            const i64 x_step = X_COL ? p.ldx : 1;
            const T* ar = a_all + id * a_stride;
            for (int c0 = 0; c0 < R; c0 += GC) {
                float s[GC];
#pragma unroll
                for (int j = 0; j < GC; ++j) s[j] = 0.f;
                for (int k = lane; k < p.k; k += 32) {
                    const float xv = load_global_f32(xr + k * x_step);
                    const T* arow = ar + (i64)k * p.rank + c0;
#pragma unroll
                    for (int j = 0; j < GC; j += 8) {
                        if (c0 + j < p.rank) {
                            u32 w[4];
                            if (ALIGNED) {
                                chunk16 v = load_global_16(arow + j);
                                w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
                            } else {
#pragma unroll
                                for (int e = 0; e < 4; ++e) {
                                    w[e] = load_global_bits16(arow + j + 2 * e) | (load_global_bits16(arow + j + 2 * e + 1) << 16);
                                }
                            }
#pragma unroll
                            for (int e = 0; e < 4; ++e) {
                                s[j + 2 * e] += xv * bits16_to_f32<T>(w[e]);
                                s[j + 2 * e + 1] += xv * bits16_to_f32<T>(w[e] >> 16);
                            }
                        }
                    }
                }
                float mine = 0.f;
#pragma unroll
                for (int j = 0; j < GC; ++j) {
                    float v = s[j];
#pragma unroll
                    for (int o = 16; o > 0; o /= 2) v += shfl_xor(v, o);
                    if (lane == j) mine = v;
                }
                // Columns past the rank (rank 8 padded to 16) are zero: A has none there. Two
                // lanes share a 32-bit word of T', so even lanes take their odd neighbour's value
                // (the shuffle outside any branch: every lane must take part).
                const float v = c0 + lane < p.rank ? t_value(mine) : 0.f;
                const float neighbour = shfl_xor(v, 1);
                if (lane % 2 == 0 && c0 + lane < R) {
                    store_shared_u32(sT + TPrimeTile::offset(r, c0 + lane), pack2<T>(v, neighbour));
                }
            }
        }
    };
    // Whether the CUDA-core path beats one tensor-core pass per further adapter. A pass costs
    // about K / BLOCK_K pipeline steps of ~PASS_STEP_CYCLES latency each; the gathered path about
    // rank x K / 32 fused multiply-adds per lane, for ceil(rows / WARPS) rows per warp.
    auto gathered_is_cheaper = [&]() {
        constexpr int PASS_STEP_CYCLES = 400;
        int rows = 0, adapters = 0;
        for (int a = next_adapter(a0); a >= 0; a = next_adapter(a)) ++adapters;
        for (int r = 0; r < BLOCK_M; ++r) rows += row_id(r) >= 0 && row_id(r) != a0;
        i64 gathered = (i64)((rows + WARPS - 1) / WARPS) * R * (p.k / 32 + 1);
        i64 passes = (i64)adapters * ((R + T_COLS - 1) / T_COLS) * (p.k / BLOCK_K + 1) * PASS_STEP_CYCLES;
        return gathered < passes;
    };

    for (int nt = nt_begin; nt < nt_end; ++nt) {
        const int n0 = nt * BLOCK_N;
        const bool first = nt == nt_begin;
        // Every warp is done with the previous tile's ring, sB and T' reads.
        sync_threads();
        if (first && a0 >= 0) {
            if (!FUSE) shrink_pass(a0);
            if (PER_ROW && next_adapter(a0) >= 0) {
                if (gathered_is_cheaper()) {
                    gathered_shrink();
                } else {
                    for (int a = next_adapter(a0); a >= 0; a = next_adapter(a)) shrink_pass(a);
                }
            }
            sync_threads();  // the ring is free for the main loop
        }
        // B_a0 lands while the main loop runs: its group is older than every ring group, so the
        // ring's first wait covers it.
        if (a0 >= 0) load_b(a0, n0);

        float acc[MI][NI][4];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
            for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;
            }
        }
        op.w = static_cast<const T*>(p.w) + (W_COL ? n0 * p.ldw : (i64)n0);
        op.n_valid = p.n - n0;
        const bool fused_shrink = FUSE && first && a0 >= 0;
        if (WITH_W) {
            zero_tacc();
            op.a = fused_shrink ? a_all + a0 * a_stride : nullptr;
            op.a_cols = p.rank;
            if constexpr (FUSE) {
                Fused::run(op, ring, acc, tacc);
            } else {
                float none[Fused::T_M16][Fused::T_N8][4];
                Fused::run(op, ring, acc, none);
            }
            if (fused_shrink) store_t(a0, 0);
        } else {
            cp_async_wait<0>();
        }
        // T' complete and B_a0 visible to every warp.
        sync_threads();
        if (a0 >= 0) {
            expand(acc, a0);
            if (PER_ROW) {
                for (int a = next_adapter(a0); a >= 0; a = next_adapter(a)) {
                    sync_threads();  // everyone is done reading the previous B
                    load_b(a, n0);
                    cp_async_wait<0>();
                    sync_threads();
                    expand(acc, a);
                }
            }
        }

        // Epilogue.
        const TO* bias = static_cast<const TO*>(p.bias);
        const TO* residual = static_cast<const TO*>(p.residual);
        TO* y = static_cast<TO*>(p.y);
        for_each_acc(acc, m0 + wm0, n0 + wn0, [&](float& a, int row, int col) {
            if (row < p.m && col < p.n) {
                float v = a;
                if (KIND == LORA_KIND_BOTTLENECK) {
                    // The bottleneck's residual is X itself (N == K).
                    v += load_global_f32(x + (X_COL ? col * p.ldx + row : row * p.ldx + col));
                } else {
                    v = gemm_finish<TO, HAS_BIAS, ACT, HAS_USER, HAS_RESIDUAL>(v, bias, residual, row, col, p.ldr);
                }
                store_global_elem(y + row * p.ldy + col, v);
            }
        });
    }
}

}  // namespace tessera
