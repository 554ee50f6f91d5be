// Warp-level primitives: shfl.sync (idx, up, down, bfly; full and segmented widths; the "in range"
// predicate), vote.sync (all, any, uni, ballot; full and partial member masks), redux.sync,
// match.sync (any, all; b32 and b64) and activemask (converged, divergent, partial last warp).
// Each entry is compiled on its own (SD_ENTRY_<entry>).
#include "common.cuh"

// shfl.sync with the lane operand and the clamp/segment operand in registers; returns the value
// and stores the predicate.
#define SHFL(d, MODE, v, b, c, pred)                                                      \
    asm volatile("{ .reg .pred q; shfl.sync." MODE ".b32 %0|q, %2, %3, %4, 0xffffffff;"     \
                 " selp.u32 %1, 1, 0, q; }"                                                 \
                 : "=r"(d), "=r"(pred) : "r"(v), "r"(b), "r"(c))

#ifdef SD_ENTRY_sd_shfl
// 4 inputs per thread, 24 outputs: for each mode x {width 32, 8, 16}: value, predicate.
extern "C" __global__ void sd_shfl(const DiffParams p) {
    const u32 K = 4, W = 24;
    u32 v = input(p, K, 0);
    u32 r = input(p, K, 1);
    u32 b_idx = r;                 // any bits: only [4:0] count
    u32 b_delta = r % 34;          // deltas 0..33, past the warp too
    u32 j = 0, pred;
    const u32 widths[3] = {32, 8, 16};
    for (int w = 0; w < 3; ++w) {
        u32 seg = (32 - widths[w]) << 8;
        u32 c_hi = seg | 0x1f;     // idx, down, bfly: clamp to the segment's top lane
        u32 c_lo = seg;            // up: clamp to the segment's first lane
        u32 d;
        SHFL(d, "idx", v, b_idx, c_hi, pred); output(p, W, j++, d); output(p, W, j++, pred);
        SHFL(d, "up", v, b_delta, c_lo, pred); output(p, W, j++, d); output(p, W, j++, pred);
        SHFL(d, "down", v, b_delta, c_hi, pred); output(p, W, j++, d); output(p, W, j++, pred);
        SHFL(d, "bfly", v, b_idx & 31, c_hi, pred); output(p, W, j++, d); output(p, W, j++, pred);
    }
}
#endif

#ifdef SD_ENTRY_sd_vote
// 1 input, 8 outputs. Predicates from input bits: sparse, dense, and warp-uniform ones.
extern "C" __global__ void sd_vote(const DiffParams p) {
    const u32 K = 1, W = 8;
    u32 x = input(p, K, 0);
    u32 lane = lane_id();
    u32 outs[W];
    u32 pd = (x & 7) == 0;        // sparse
    u32 pu = (blockIdx.x & 1);    // uniform over the warp
    u32 pall = (x & 63) != 0;     // nearly always
    asm volatile("{ .reg .pred a, d; setp.ne.u32 a, %1, 0; vote.sync.all.pred d, a, 0xffffffff; selp.u32 %0, 1, 0, d; }" : "=r"(outs[0]) : "r"(pall));
    asm volatile("{ .reg .pred a, d; setp.ne.u32 a, %1, 0; vote.sync.any.pred d, a, 0xffffffff; selp.u32 %0, 1, 0, d; }" : "=r"(outs[1]) : "r"(pd));
    asm volatile("{ .reg .pred a, d; setp.ne.u32 a, %1, 0; vote.sync.uni.pred d, a, 0xffffffff; selp.u32 %0, 1, 0, d; }" : "=r"(outs[2]) : "r"(pu));
    asm volatile("{ .reg .pred a, d; setp.ne.u32 a, %1, 0; vote.sync.uni.pred d, a, 0xffffffff; selp.u32 %0, 1, 0, d; }" : "=r"(outs[3]) : "r"(pd));
    asm volatile("{ .reg .pred a; setp.ne.u32 a, %1, 0; vote.sync.ballot.b32 %0, a, 0xffffffff; }" : "=r"(outs[4]) : "r"(pd));
    asm volatile("{ .reg .pred a; setp.eq.u32 a, %1, 0; vote.sync.ballot.b32 %0, !a, 0xffffffff; }" : "=r"(outs[5]) : "r"(pall));
    // Partial member masks: each half-warp votes on its own.
    u32 half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    asm volatile("{ .reg .pred a; setp.ne.u32 a, %1, 0; vote.sync.ballot.b32 %0, a, %2; }" : "=r"(outs[6]) : "r"(pd), "r"(half));
    asm volatile("{ .reg .pred a, d; setp.ne.u32 a, %1, 0; vote.sync.any.pred d, a, %2; selp.u32 %0, 1, 0, d; }" : "=r"(outs[7]) : "r"(pd), "r"(half));
    for (u32 j = 0; j < W; ++j) output(p, W, j, outs[j]);
}
#endif

#ifdef SD_ENTRY_sd_redux
// 1 input, 10 outputs: every redux.sync operation, plus a half-warp add.
extern "C" __global__ void sd_redux(const DiffParams p) {
    const u32 K = 1, W = 10;
    u32 x = input(p, K, 0);
    u32 lane = lane_id();
    u32 o[W];
    asm volatile("redux.sync.add.u32 %0, %1, 0xffffffff;" : "=r"(o[0]) : "r"(x));
    asm volatile("redux.sync.min.u32 %0, %1, 0xffffffff;" : "=r"(o[1]) : "r"(x));
    asm volatile("redux.sync.max.u32 %0, %1, 0xffffffff;" : "=r"(o[2]) : "r"(x));
    asm volatile("redux.sync.min.s32 %0, %1, 0xffffffff;" : "=r"(o[3]) : "r"(x));
    asm volatile("redux.sync.max.s32 %0, %1, 0xffffffff;" : "=r"(o[4]) : "r"(x));
    asm volatile("redux.sync.and.b32 %0, %1, 0xffffffff;" : "=r"(o[5]) : "r"(x | 0x10101010u));
    asm volatile("redux.sync.or.b32 %0, %1, 0xffffffff;" : "=r"(o[6]) : "r"(x & 0x01010101u));
    asm volatile("redux.sync.xor.b32 %0, %1, 0xffffffff;" : "=r"(o[7]) : "r"(x));
    asm volatile("redux.sync.add.s32 %0, %1, 0xffffffff;" : "=r"(o[8]) : "r"(x & 0xff));
    u32 half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    asm volatile("redux.sync.add.u32 %0, %1, %2;" : "=r"(o[9]) : "r"(x), "r"(half));
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
#endif

#ifdef SD_ENTRY_sd_match
// 2 inputs, 6 outputs: match.any and match.all on values with few distinct ones.
extern "C" __global__ void sd_match(const DiffParams p) {
    const u32 K = 2, W = 6;
    u32 x = input(p, K, 0);
    u32 y = input(p, K, 1);
    u32 few = x & 3;                       // 4 distinct values
    u32 mostly = (y & 15) == 0 ? x : 7u;   // usually all equal, sometimes not
    u32 uniform = blockIdx.x;              // always all equal
    u64 wide = ((u64)(y & 1) << 40) | few;
    u32 o[W];
    asm volatile("match.any.sync.b32 %0, %1, 0xffffffff;" : "=r"(o[0]) : "r"(few));
    asm volatile("{ .reg .pred q; match.all.sync.b32 %0|q, %2, 0xffffffff; selp.u32 %1, 1, 0, q; }" : "=r"(o[1]), "=r"(o[2]) : "r"(mostly));
    asm volatile("{ .reg .pred q; match.all.sync.b32 %0|q, %2, 0xffffffff; selp.u32 %1, 1, 0, q; }" : "=r"(o[3]), "=r"(o[4]) : "r"(uniform));
    asm volatile("match.any.sync.b64 %0, %1, 0xffffffff;" : "=r"(o[5]) : "l"(wide));
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
#endif

#ifdef SD_ENTRY_sd_activemask
// 1 input, 3 outputs; launched with 48 threads per block so the second warp is half full.
extern "C" __global__ void sd_activemask(const DiffParams p) {
    const u32 K = 1, W = 3;
    u32 x = input(p, K, 0);
    u32 full, branch, after;
    asm volatile("activemask.b32 %0;" : "=r"(full));
    // A branch on data: inside it, the lanes that took it. (Independent thread scheduling allows
    // the hardware to run a subset; in practice a simple branch like this one is not split.)
    if (x & 1) {
        asm volatile("activemask.b32 %0;" : "=r"(branch));
    } else {
        asm volatile("activemask.b32 %0;" : "=r"(branch));
        branch = ~branch;
    }
    __syncwarp(full);  // the lanes that exist: a partial warp has no lanes past the block's end
    asm volatile("activemask.b32 %0;" : "=r"(after));
    output(p, W, 0, full);
    output(p, W, 1, branch);
    output(p, W, 2, after);
}
#endif
