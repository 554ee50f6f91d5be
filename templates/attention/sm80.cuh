// attention/sm80.cuh: tiled online-softmax attention forward (FlashAttention-2 schedule) on
// mma.sync.m16n8k16, with the variants real workloads run decided at compile time (FEATURES).
//
//   O[i] = sum_j softmax_j(score(i, j)) V[j]   over the keys j that query i may see,
//   LSE[i] = log sum_j exp(score(i, j))         (natural log, f32),
//   score(i, j) = scale * Q[i].K[j], or cap * tanh(scale * Q[i].K[j] / cap) with SOFTCAP,
//                 minus slope[head] * |qpos(i) - kpos(j)| with ALIBI.
//
// One CTA owns BLOCK_M query rows of one (batch, head); each warp owns 16 of them, so every row's
// softmax state lives in one warp and the warps never talk to each other about softmax. K and V tiles
// of BLOCK_N keys stream through a STAGES-deep shared-memory ring filled with cp.async.
//
// Online softmax in base 2: with s = scale*log2(e) * q.k, a row keeps its running max m and
// sum l = sum 2^(s - m). A new tile with max m' rescales l and the O accumulator by 2^(m - m').
// log2(e) is folded into the scale on the host, so the inner loop has one FMUL and one ex2 per score.
//
// Positions and masks, per sequence. With diag = seq_k - seq_q, query i sits at qpos = i + diag and
// its own key j at kpos = j (causal aligned bottom-right, as in FlashAttention 2.1+: the last query
// sees every key). Key j is visible to query i when j < seq_k and
//   CAUSAL:  j <= qpos;
//   LOCAL:   qpos - left <= j <= qpos + right (a negative bound is unbounded: FlashAttention's
//            window_size);
//   TREE:    the last n_tree queries and the last n_tree keys are the same candidate tokens; inside
//            that block key u is visible to query t only when u is t or one of t's ancestors
//            (tree_bits, built from the parent array on the host). TREE implies CAUSAL.
// PREFIX keys (prefix tuning) come logically before every sequence's own keys, at kpos -prefix_len..-1,
// and are visible to every query whatever the mask.
// The key tiles a CTA can see form one contiguous range (prefix tiles, then own tiles from the
// window's left edge to the causal/right edge of its last row); tiles outside it are never loaded,
// so local attention costs O(window), not O(seq_k).
// A row that sees no key keeps m = -inf; it subtracts 0 instead of m (so no inf - inf) and ends with
// l = 0, output 0 and LSE -inf.
//
// Layouts. VARLEN packs sequences without padding: sequence b's queries are rows cu_seqlens_q[b] ..
// cu_seqlens_q[b+1] (likewise keys, unless PAGED), batch strides are 0, and the LSE is
// [heads_q, total_q]. PAGED keeps K/V in pages of 2^page_shift keys: key j of sequence b is row
// j % page of page block_table[b][j / page]; the batch stride of K/V is the page stride.
// PACK_GQA gives one CTA all GROUP query heads of one KV head: CTA row r is query (row0 + r) / GROUP
// of head kv_head * GROUP + (row0 + r) % GROUP, so a decode step (seq_q 1..16) still fills the
// 16-row mma tiles and each K/V tile is read once for the whole group.
// SPLIT divides a CTA's key tiles among num_splits CTAs (grid z = batch * num_splits); each writes
// its normalised partial O and LSE in f32, and the last to finish (a per-tile ticket) merges them:
// O = sum_s 2^(lse_s - m) O_s / sum_s 2^(lse_s - m), LSE = m + log sum_s 2^(lse_s - m).
#pragma once

namespace tessera {

// The kernel arguments (`AttentionParams`: pointers, strides in elements with the last dimension of
// every tensor contiguous, sizes, the scale, and the variants' fields, zero unless FEATURES uses
// them) and the FEATURES bits (ATTN_LOCAL, ATTN_ALIBI, ATTN_SOFTCAP, ATTN_PREFIX, ATTN_TREE,
// ATTN_VARLEN, ATTN_PAGED, ATTN_PACK_GQA, ATTN_SPLIT) are generated from their Rust definitions
// (tessera-codegen, attention/params.rs) and precede this file.

// Cooperative cp.async of ROWS rows into a swizzled tile; `row_src(r)` gives row r's global address
// or null, and null rows are zero-filled without touching global memory (`fallback` is any valid
// address, never read).
template <typename T, int ROWS, int HEAD_DIM, int THREADS, typename RowSrc>
TESSERA_DEVICE void load_rows_async(T* tile, RowSrc&& row_src, const T* fallback) {
    typedef SwizzledTile<HEAD_DIM> Tile;
    constexpr int TOTAL = ROWS * Tile::CHUNKS;
#pragma unroll
    for (int i = thread_index(); i < TOTAL; i += THREADS) {
        int row = i / Tile::CHUNKS;
        int col = (i % Tile::CHUNKS) * 8;
        const T* src = row_src(row);
        bool valid = src != nullptr;
        cp_async_16(tile + Tile::offset(row, col), valid ? src + col : fallback, valid);
    }
}

// The K and V rows of one key tile: `rows(r, k_row, v_row)` sets both addresses and says whether key
// r exists, so a paged row's block-table lookup is done once for K and V. ROLLED keeps the loop
// rolled: unrolled, ptxas hoists every iteration's block-table load and address pair ahead of the
// copies, and those registers are what a head_dim-256 accumulator cannot spare.
template <typename T, int ROWS, int HEAD_DIM, int THREADS, bool ROLLED, typename KvRows>
TESSERA_DEVICE void load_kv_async(T* tile_k, T* tile_v, KvRows&& rows, const T* fallback) {
    typedef SwizzledTile<HEAD_DIM> Tile;
    constexpr int TOTAL = ROWS * Tile::CHUNKS;
#pragma unroll (ROLLED ? 1 : (TOTAL + THREADS - 1) / THREADS)
    for (int i = thread_index(); i < TOTAL; i += THREADS) {
        int row = i / Tile::CHUNKS;
        int col = (i % Tile::CHUNKS) * 8;
        const T* k_row = fallback;
        const T* v_row = fallback;
        bool valid = rows(row, k_row, v_row);
        cp_async_16(tile_k + Tile::offset(row, col), valid ? k_row + col : fallback, valid);
        cp_async_16(tile_v + Tile::offset(row, col), valid ? v_row + col : fallback, valid);
    }
}

TESSERA_DEVICE int min_i32(int a, int b) { return a < b ? a : b; }
TESSERA_DEVICE int max_i32(int a, int b) { return a > b ? a : b; }
TESSERA_DEVICE int abs_i32(int a) { return a < 0 ? -a : a; }
// log2(e): turns e^x into 2^(x log2 e), the ex2 the kernels exponentiate with.
constexpr float LOG2E_F32 = 1.4426950408889634f;
// 2 log2(e), for e^(2x) = 2^(2 log2(e) x) in tanh; exactly 2 * LOG2E_F32 (doubling is exact in f32).
constexpr float TWO_LOG2E_F32 = 2.8853900817779268f;
static_assert(TWO_LOG2E_F32 == 2.f * LOG2E_F32, "2 log2(e) is LOG2E_F32 doubled");

// tanh through one ex2: 1 - 2 / (2^(2x log2 e) + 1). Saturates to +-1 (2^x overflows to inf or
// underflows to 0) and keeps ex2.approx's relative accuracy (~2^-22), where tanh.approx has ~2^-11:
// a softcap of 30-50 turns that into visible logit error.
TESSERA_DEVICE float tanh_ex2(float x) {
    return 1.f - 2.f / (exp2_approx(x * TWO_LOG2E_F32) + 1.f);
}

// TREE: ancestor bits are packed TREE_WORD_BITS to a 64-bit word (tree_bits).
enum : int { TREE_WORD_SHIFT = 6, TREE_WORD_BITS = 1 << TREE_WORD_SHIFT };

template <typename T, int HEAD_DIM, int BLOCK_M, int BLOCK_N, int WARPS, int STAGES, bool CAUSAL,
          int GROUP, bool Q_IN_REGS, int FEATURES = 0>
TESSERA_DEVICE void attention_fwd(const AttentionParams& p) {
    static_assert(BLOCK_M == 16 * WARPS, "each warp owns 16 query rows");
    static_assert(HEAD_DIM % 16 == 0 && BLOCK_N % 16 == 0, "mma k-steps are 16 wide");
    static_assert(STAGES >= 1 && STAGES <= 3, "K/V ring depth");
    constexpr bool LOCAL = (FEATURES & ATTN_LOCAL) != 0;
    constexpr bool ALIBI = (FEATURES & ATTN_ALIBI) != 0;
    constexpr bool SOFTCAP = (FEATURES & ATTN_SOFTCAP) != 0;
    constexpr bool PREFIX = (FEATURES & ATTN_PREFIX) != 0;
    constexpr bool TREE = (FEATURES & ATTN_TREE) != 0;
    constexpr bool VARLEN = (FEATURES & ATTN_VARLEN) != 0;
    constexpr bool PAGED = (FEATURES & ATTN_PAGED) != 0;
    constexpr bool PACK = (FEATURES & ATTN_PACK_GQA) != 0;
    constexpr bool SPLIT = (FEATURES & ATTN_SPLIT) != 0;
    static_assert(!TREE || CAUSAL, "the tree mask refines the causal mask");
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
    const int head_y = block_index_y();   // query head, or KV head with PACK
    const int batch = SPLIT ? block_index_z() / p.num_splits : block_index_z();
    const int split = SPLIT ? block_index_z() % p.num_splits : 0;
    const int kv_head = PACK ? head_y : head_y / GROUP;

    // ---- this sequence's extent ----
    int q_start = 0, seq_q = p.seq_q, k_start = 0, seq_k = p.seq_k;
    if (VARLEN) {
        q_start = p.cu_seqlens_q[batch];
        seq_q = p.cu_seqlens_q[batch + 1] - q_start;
    }
    if (PAGED) {
        seq_k = p.seq_lens[batch];
    } else if (VARLEN) {
        k_start = p.cu_seqlens_k[batch];
        seq_k = p.cu_seqlens_k[batch + 1] - k_start;
    }
    const int row0 = m_block * BLOCK_M;
    // A varlen grid is sized for the longest sequence; the others leave CTAs idle (uniformly, before
    // any barrier, and for every split of the tile alike).
    if (row0 >= (PACK ? seq_q * GROUP : seq_q)) return;
    const int diag = seq_k - seq_q;
    // CTA row r -> (query index, query head).
    auto row_query = [&](int r) { return PACK ? (row0 + r) / GROUP : row0 + r; };
    auto row_head = [&](int r) { return PACK ? kv_head * GROUP + (row0 + r) % GROUP : head_y; };

    const T* q = static_cast<const T*>(p.q) + batch * p.q_batch_stride + q_start * p.q_seq_stride;
    const T* k = static_cast<const T*>(p.k) + kv_head * p.k_head_stride;
    const T* v = static_cast<const T*>(p.v) + kv_head * p.v_head_stride;
    if (!PAGED) {
        k += batch * p.k_batch_stride + k_start * p.k_seq_stride;
        v += batch * p.v_batch_stride + k_start * p.v_seq_stride;
    }
    const int* pages = PAGED ? p.block_table + batch * p.block_table_stride : nullptr;
    const unsigned long long* tree = TREE ? p.tree_bits + batch * p.tree_batch_stride : nullptr;
    const int tree_q0 = seq_q - p.n_tree;   // first tree query
    const int tree_k0 = seq_k - p.n_tree;   // first tree key

    T* sQ = reinterpret_cast<T*>(dynamic_smem());
    T* sK = sQ + BLOCK_M * HEAD_DIM;
    T* sV = sK + STAGES * BLOCK_N * HEAD_DIM;

    // ---- the key tiles this CTA can see ----
    const int q_first = row_query(0);
    const int q_last = min_i32(row_query(BLOCK_M - 1), seq_q - 1);
    int key_lo = 0, key_hi = seq_k;
    if (CAUSAL) key_hi = min_i32(key_hi, q_last + diag + 1);
    if (LOCAL && p.window_left >= 0) key_lo = max_i32(key_lo, q_first + diag - p.window_left);
    if (LOCAL && p.window_right >= 0) key_hi = min_i32(key_hi, q_last + diag + p.window_right + 1);
    const int own_first = key_lo / BLOCK_N;
    const int own_tiles = key_hi > key_lo ? (key_hi + BLOCK_N - 1) / BLOCK_N - own_first : 0;
    const int prefix_tiles = PREFIX ? (p.prefix_len + BLOCK_N - 1) / BLOCK_N : 0;
    const int all_tiles = prefix_tiles + own_tiles;
    int t_begin = 0, n_tiles = all_tiles;
    if (SPLIT) {
        const int per_split = (all_tiles + p.num_splits - 1) / p.num_splits;
        t_begin = min_i32(split * per_split, all_tiles);
        n_tiles = min_i32(per_split, all_tiles - t_begin);
    }
    // Tile t of the CTA's range: prefix tiles first, then own tiles from the window's left edge.
    auto is_prefix_tile = [&](int t) { return PREFIX && t_begin + t < prefix_tiles; };
    auto tile_key0 = [&](int t) {
        int g = t_begin + t;
        return (PREFIX && g < prefix_tiles) ? g * BLOCK_N : (own_first + g - prefix_tiles) * BLOCK_N;
    };

    auto load_kv = [&](int tile_index, int slot) {
        const int key0 = tile_key0(tile_index);
        T* dK = sK + slot * BLOCK_N * HEAD_DIM;
        T* dV = sV + slot * BLOCK_N * HEAD_DIM;
        if (is_prefix_tile(tile_index)) {
            const T* pk = static_cast<const T*>(p.prefix_k) + kv_head * p.prefix_k_head_stride;
            const T* pv = static_cast<const T*>(p.prefix_v) + kv_head * p.prefix_v_head_stride;
            load_kv_async<T, BLOCK_N, HEAD_DIM, THREADS, PAGED>(dK, dV, [&](int r, const T*& kr, const T*& vr) {
                int key = key0 + r;
                if (key >= p.prefix_len) return false;
                kr = pk + key * p.prefix_k_seq_stride;
                vr = pv + key * p.prefix_v_seq_stride;
                return true;
            }, k);
        } else {
            load_kv_async<T, BLOCK_N, HEAD_DIM, THREADS, PAGED>(dK, dV, [&](int r, const T*& kr, const T*& vr) {
                int key = key0 + r;
                if (key >= seq_k) return false;
                if (PAGED) {
                    const i64 page = load_global_i32(pages + (key >> p.page_shift));
                    const int in_page = key & ((1 << p.page_shift) - 1);
                    kr = k + page * p.k_batch_stride + in_page * p.k_seq_stride;
                    vr = v + page * p.v_batch_stride + in_page * p.v_seq_stride;
                } else {
                    kr = k + key * p.k_seq_stride;
                    vr = v + key * p.v_seq_stride;
                }
                return true;
            }, k);
        }
    };

    // Q is a cp.async group of its own, the oldest: every wait below that covers the first K/V tile
    // covers Q too, and the epilogue's wait<0> covers it even when no K/V tile is loaded at all.
    load_rows_async<T, BLOCK_M, HEAD_DIM, THREADS>(sQ, [&](int r) -> const T* {
        int qi = row_query(r);
        return qi < seq_q ? q + qi * p.q_seq_stride + row_head(r) * p.q_head_stride : nullptr;
    }, q);
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
    const int cta_row[2] = {warp * 16 + group, warp * 16 + group + 8};
    const int q_idx[2] = {row_query(cta_row[0]), row_query(cta_row[1])};
    float slope_log2[2] = {0.f, 0.f};
    if (ALIBI) {
        // log2(e) folded in like the scale; rows past seq_q read a valid head and are never stored.
#pragma unroll
        for (int r = 0; r < 2; ++r) slope_log2[r] = p.alibi_slopes[row_head(cta_row[r])] * LOG2E_F32;
    }

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

        // ---- score modifiers, mask, online softmax ----
        const bool prefix_tile = is_prefix_tile(t);
        const int key0 = tile_key0(t);
        const int key_last = key0 + BLOCK_N - 1;
        // Whether any (row, key) pair of this tile could be hidden; tiles wholly inside every rule
        // (most of a long causal or local sweep) skip the per-element test.
        bool needs_mask;
        if (prefix_tile) {
            needs_mask = key_last >= p.prefix_len;
        } else {
            needs_mask = key_last >= seq_k || (CAUSAL && key_last > q_first + diag) ||
                         (TREE && key_last >= tree_k0);
            if (LOCAL) {
                needs_mask = needs_mask || (p.window_left >= 0 && key0 < q_last + diag - p.window_left) ||
                             (p.window_right >= 0 && key_last > q_first + diag + p.window_right);
            }
        }
#pragma unroll
        for (int n = 0; n < N_TILES; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = SOFTCAP ? p.softcap_log2 * tanh_ex2(s[n][e] * p.softcap_scale) : s[n][e] * p.scale_log2;
                const int key = key0 + n * 8 + in_group * 2 + (e % 2);
                const int qi = q_idx[e / 2];
                if (ALIBI) {
                    const int kpos = prefix_tile ? key - p.prefix_len : key;
                    x -= slope_log2[e / 2] * (float)abs_i32(qi + diag - kpos);
                }
                if (needs_mask) {
                    bool hidden;
                    if (prefix_tile) {
                        hidden = key >= p.prefix_len;
                    } else {
                        const int qpos = qi + diag;
                        hidden = key >= seq_k || (CAUSAL && key > qpos);
                        if (LOCAL) {
                            hidden = hidden || (p.window_left >= 0 && key < qpos - p.window_left) ||
                                     (p.window_right >= 0 && key > qpos + p.window_right);
                        }
                        if (TREE && !hidden && qi >= tree_q0 && qi < seq_q && key >= tree_k0) {
                            const int tq = qi - tree_q0, tk = key - tree_k0;
                            const unsigned long long word = tree[(i64)tq * p.tree_words + (tk >> TREE_WORD_SHIFT)];
                            hidden = ((word >> (tk & (TREE_WORD_BITS - 1))) & 1ull) == 0ull;
                        }
                    }
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

    // ---- epilogue ----
    cp_async_wait<0>();
    sync_threads();  // every warp is done with sQ / the ring; nothing is in flight

    float inv_sum[2], lse2[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = row_sum[r];
        l += shfl_xor(l, 1);
        l += shfl_xor(l, 2);
        inv_sum[r] = l > 0.f ? 1.f / l : 0.f;
        lse2[r] = l > 0.f ? row_max[r] + log2_approx(l) : NEG_INF;   // base 2
    }
    T* o = static_cast<T*>(p.o) + batch * p.o_batch_stride + q_start * p.o_seq_stride;
    auto lse_index = [&](int qi, int h) -> i64 {
        return VARLEN ? (i64)h * p.total_q + q_start + qi : ((i64)batch * p.heads_q + h) * p.seq_q + qi;
    };

    if constexpr (SPLIT) {
        // Publish this split's normalised partial rows, then see whether it is the tile's last CTA.
        const i64 rows_before = VARLEN ? q_start : (i64)batch * p.seq_q;
        auto partial_row = [&](int s, int qi, int h) -> i64 {
            return ((i64)s * p.total_q + rows_before + qi) * p.heads_q + h;
        };
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int qi = q_idx[r];
            if (qi >= seq_q) continue;
            const i64 row = partial_row(split, qi, row_head(cta_row[r]));
#pragma unroll
            for (int d = 0; d < D_TILES; ++d) {
                float* dst = p.partial_o + row * HEAD_DIM + d * 8 + in_group * 2;
                dst[0] = o_acc[d][2 * r] * inv_sum[r];
                dst[1] = o_acc[d][2 * r + 1] * inv_sum[r];
            }
            if (in_group == 0) p.partial_lse[row] = lse2[r];
        }
        fence_device();
        sync_threads();
        u32* ticket = reinterpret_cast<u32*>(dynamic_smem());
        const int heads_y = PACK ? p.heads_q / GROUP : p.heads_q;
        const i64 tile_id = ((i64)batch * heads_y + head_y) * blocks_per_grid() + m_block;
        if (tid == 0) *ticket = atomic_add_u32(p.counters + tile_id, 1u);
        sync_threads();
        if (*ticket != (u32)(p.num_splits - 1)) return;
        fence_device();
        // The last CTA merges: per row the base-2 max and 1 / sum of 2^(lse_s - m), then every element
        // (row_m and row_inv in shared memory after the ticket's word).
        float* row_m = reinterpret_cast<float*>(dynamic_smem() + sizeof(u32));
        float* row_inv = row_m + BLOCK_M;
        for (int r = tid; r < BLOCK_M; r += THREADS) {
            const int qi = row_query(r);
            if (qi >= seq_q) continue;
            const int h = row_head(r);
            float m = NEG_INF;
            for (int s = 0; s < p.num_splits; ++s) m = max_f32(m, load_global_f32_cg(p.partial_lse + partial_row(s, qi, h)));
            float sum = 0.f;
            if (m != NEG_INF) {
                for (int s = 0; s < p.num_splits; ++s)
                    sum += exp2_approx(load_global_f32_cg(p.partial_lse + partial_row(s, qi, h)) - m);
            }
            row_m[r] = m;
            row_inv[r] = sum > 0.f ? 1.f / sum : 0.f;
            if (p.lse != nullptr) store_global_f32(p.lse + lse_index(qi, h), sum > 0.f ? (m + log2_approx(sum)) * LN2 : NEG_INF);
        }
        sync_threads();
        for (int i = tid; i < BLOCK_M * HEAD_DIM; i += THREADS) {
            const int r = i / HEAD_DIM, col = i % HEAD_DIM;
            const int qi = row_query(r);
            if (qi >= seq_q) continue;
            const int h = row_head(r);
            float acc = 0.f;
            if (row_inv[r] > 0.f) {
                for (int s = 0; s < p.num_splits; ++s) {
                    const i64 row = partial_row(s, qi, h);
                    const float w = exp2_approx(load_global_f32_cg(p.partial_lse + row) - row_m[r]);
                    acc += w * load_global_f32_cg(p.partial_o + row * HEAD_DIM + col);
                }
            }
            store_global_elem(o + qi * p.o_seq_stride + h * p.o_head_stride + col, acc * row_inv[r]);
        }
        if (tid == 0) p.counters[tile_id] = 0u;
        return;
    }

    // ---- unsplit: normalise, stage through shared memory, 16-byte stores ----
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (p.lse != nullptr && in_group == 0 && q_idx[r] < seq_q)
            store_global_f32(p.lse + lse_index(q_idx[r], row_head(cta_row[r])), lse2[r] * LN2);
    }
    // Each warp writes only its own 16 rows of sQ, so a warp barrier suffices.
#pragma unroll
    for (int d = 0; d < D_TILES; ++d) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            int col = d * 8 + in_group * 2;
            u32 packed = pack2<T>(o_acc[d][2 * r] * inv_sum[r], o_acc[d][2 * r + 1] * inv_sum[r]);
            store_shared_u32(sQ + Tile::offset(cta_row[r], col), packed);
        }
    }
    sync_warp();
#pragma unroll
    for (int i = lane; i < 16 * Tile::CHUNKS; i += 32) {
        int row = warp * 16 + i / Tile::CHUNKS;
        int col = (i % Tile::CHUNKS) * 8;
        int qi = row_query(row);
        if (qi < seq_q)
            store_global_16(o + qi * p.o_seq_stride + row_head(row) * p.o_head_stride + col,
                            load_shared_16(sQ + Tile::offset(row, col)));
    }
}

}  // namespace tessera
