// Bit manipulation (and/or/xor/not, shifts past the width, bfe/bfi, popc/clz/brev/bfind, funnel
// shifts), prmt in every mode, and setp/selp/set with every comparison, including the unordered
// ones on NaN, combined with .and/.or/.xor. sd_bits_ext: lop3, dp4a, dp2a, slct. Each entry is
// compiled on its own (SD_ENTRY_<entry>).
#include "common.cuh"


#ifdef SD_ENTRY_sd_bits
// 3 inputs (mixed integers), 26 outputs.
extern "C" __global__ void sd_bits(const DiffParams p) {
    const u32 K = 3, W = 26;
    u32 a = input(p, K, 0), b = input(p, K, 1), c = input(p, K, 2);
    u32 sh = b % 40;  // shift amounts past 32 too
    u32 o[W];
    u32 j = 0;
    BIN_R(o[j++], "and.b32", a, b);
    BIN_R(o[j++], "or.b32", a, b);
    BIN_R(o[j++], "xor.b32", a, b);
    UN_R(o[j++], "not.b32", a);
    UN_R(o[j++], "cnot.b32", a & 3);
    BIN_R(o[j++], "shl.b32", a, sh);
    BIN_R(o[j++], "shr.u32", a, sh);
    BIN_R(o[j++], "shr.s32", a, sh);
    {
        u64 w;
        asm volatile("shl.b64 %0, %1, %2;" : "=l"(w) : "l"(((u64)a << 32) | c), "r"(b % 70));
        o[j++] = (u32)w; o[j++] = (u32)(w >> 32);
        asm volatile("shr.s64 %0, %1, %2;" : "=l"(w) : "l"(((u64)a << 32) | c), "r"(b % 70));
        o[j++] = (u32)w;
    }
    TRI_R(o[j++], "bfe.u32", a, b & 63, c & 63);
    TRI_R(o[j++], "bfe.s32", a, b & 31, (c & 31) + 1);
    {
        u32 r;
        asm volatile("bfi.b32 %0, %1, %2, %3, %4;" : "=r"(r) : "r"(a), "r"(b), "r"(c & 63), "r"((c >> 8) & 63));
        o[j++] = r;
    }
    UN_R(o[j++], "popc.b32", a);
    {
        u32 r;
        asm volatile("popc.b64 %0, %1;" : "=r"(r) : "l"(((u64)a << 32) | b));
        o[j++] = r;
        asm volatile("clz.b64 %0, %1;" : "=r"(r) : "l"((u64)(a >> (b & 31))));
        o[j++] = r;
    }
    UN_R(o[j++], "clz.b32", a >> (b & 31));
    UN_R(o[j++], "brev.b32", a);
    UN_R(o[j++], "bfind.u32", a >> (b & 31));
    UN_R(o[j++], "bfind.s32", a);
    UN_R(o[j++], "bfind.shiftamt.u32", a >> (c & 31));
    TRI_R(o[j++], "shf.l.wrap.b32", a, b, c);
    TRI_R(o[j++], "shf.r.wrap.b32", a, b, c);
    TRI_R(o[j++], "shf.l.clamp.b32", a, b, c & 63);
    TRI_R(o[j++], "shf.r.clamp.b32", a, b, c & 63);
    for (u32 i = 0; i < W; ++i) output(p, W, i, i < j ? o[i] : 0u);
}
#endif

#ifdef SD_ENTRY_sd_prmt
// 3 inputs (random bits), 8 outputs: prmt with a selector from the input, and every mode.
extern "C" __global__ void sd_prmt(const DiffParams p) {
    const u32 K = 3, W = 8;
    u32 a = input(p, K, 0), b = input(p, K, 1), s = input(p, K, 2);
    u32 o[W];
    TRI_R(o[0], "prmt.b32", a, b, s);
    TRI_R(o[1], "prmt.b32", a, b, s & 0x7777);
    TRI_R(o[2], "prmt.b32.f4e", a, b, s);
    TRI_R(o[3], "prmt.b32.b4e", a, b, s);
    TRI_R(o[4], "prmt.b32.rc8", a, b, s);
    TRI_R(o[5], "prmt.b32.ecl", a, b, s);
    TRI_R(o[6], "prmt.b32.ecr", a, b, s);
    TRI_R(o[7], "prmt.b32.rc16", a, b, s);
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
#endif

#define SETP_F(CMP, a, b, bit)                                                                     \
    asm volatile("{ .reg .pred q; setp." CMP ".f32 q, %1, %2; selp.u32 %0, %3, 0, q; }"            \
                 : "=r"(t) : "f"(a), "f"(b), "r"(1u << (bit)));                                     \
    m |= t
#define SETP_I(CMP, TY, a, b, bit)                                                                 \
    asm volatile("{ .reg .pred q; setp." CMP "." TY " q, %1, %2; selp.u32 %0, %3, 0, q; }"          \
                 : "=r"(t) : "r"(a), "r"(b), "r"(1u << (bit)));                                     \
    m |= t

#ifdef SD_ENTRY_sd_setp
// 2 inputs (mixed f32 with NaN, infinities, zeros of both signs), 6 outputs: bit masks of every
// comparison, combined predicates, selp, set and slct.
extern "C" __global__ void sd_setp(const DiffParams p) {
    const u32 K = 2, W = 6;
    u32 ai = input(p, K, 0), bi = input(p, K, 1);
    // Equal operands often enough for eq/le/ge to matter.
    if ((ai & 0xf00) == 0) bi = ai;
    float a = as_f32(ai), b = as_f32(bi);
    u32 m = 0, t;
    SETP_F("eq", a, b, 0); SETP_F("ne", a, b, 1); SETP_F("lt", a, b, 2); SETP_F("le", a, b, 3);
    SETP_F("gt", a, b, 4); SETP_F("ge", a, b, 5); SETP_F("equ", a, b, 6); SETP_F("neu", a, b, 7);
    SETP_F("ltu", a, b, 8); SETP_F("leu", a, b, 9); SETP_F("gtu", a, b, 10); SETP_F("geu", a, b, 11);
    SETP_F("num", a, b, 12); SETP_F("nan", a, b, 13);
    SETP_I("lt", "s32", ai, bi, 16); SETP_I("le", "s32", ai, bi, 17); SETP_I("gt", "s32", ai, bi, 18);
    SETP_I("ge", "s32", ai, bi, 19); SETP_I("eq", "s32", ai, bi, 20); SETP_I("ne", "s32", ai, bi, 21);
    SETP_I("lo", "u32", ai, bi, 22); SETP_I("ls", "u32", ai, bi, 23); SETP_I("hi", "u32", ai, bi, 24);
    SETP_I("hs", "u32", ai, bi, 25);
    // 16-bit compare of the low halves.
    asm volatile("{ .reg .pred q; .reg .b16 x, y; cvt.u16.u32 x, %1; cvt.u16.u32 y, %2; setp.lt.s16 q, x, y;"
                 " selp.u32 %0, %3, 0, q; }"
                 : "=r"(t) : "r"(ai), "r"(bi), "r"(1u << 26));
    m |= t;
    u32 o[W];
    o[0] = m;
    // Predicate combination: setp.CmpOp.BoolOp d|e, a, b, c  (d = cmp BoolOp c, e = !cmp BoolOp c).
    u32 comb;
    asm volatile("{ .reg .pred c, d, e; .reg .u32 u; setp.ne.u32 c, %1, 0; setp.lt.and.f32 d|e, %2, %3, c;"
                 " selp.u32 %0, 1, 0, d; selp.u32 u, 2, 0, e; or.b32 %0, %0, u; }"
                 : "=r"(comb) : "r"(ai & 1), "f"(a), "f"(b));
    {
        u32 x;
        asm volatile("{ .reg .pred c, d; setp.ne.u32 c, %1, 0; setp.gtu.or.f32 d, %2, %3, c; selp.u32 %0, 4, 0, d; }"
                     : "=r"(x) : "r"(bi & 1), "f"(a), "f"(b));
        comb |= x;
        asm volatile("{ .reg .pred c, d; setp.ne.u32 c, %1, 0; setp.eq.xor.s32 d, %2, %3, !c; selp.u32 %0, 8, 0, d; }"
                     : "=r"(x) : "r"(ai & 2), "r"(ai & 0xff), "r"(bi & 0xff));
        comb |= x;
    }
    o[1] = comb;
    {
        float r;
        asm volatile("{ .reg .pred q; setp.lt.f32 q, %1, %2; selp.f32 %0, %1, %2, q; }" : "=f"(r) : "f"(a), "f"(b));
        o[2] = as_u32(r);
        asm volatile("set.gtu.f32.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
        o[3] = as_u32(r);
    }
    asm volatile("set.le.u32.s32 %0, %1, %2;" : "=r"(o[4]) : "r"(ai), "r"(bi));
    asm volatile("{ .reg .pred q; setp.ge.s32 q, %3, 0; selp.b32 %0, %1, %2, q; }" : "=r"(o[5]) : "r"(ai), "r"(bi), "r"(ai ^ bi));
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
#endif

#ifdef SD_ENTRY_sd_bits_ext
// Forms the simulator does not run yet (its loader reports them as unsupported): lop3, dp4a, dp2a,
// slct. 3 inputs (mixed integers), 8 outputs.
extern "C" __global__ void sd_bits_ext(const DiffParams p) {
    const u32 K = 3, W = 8;
    u32 a = input(p, K, 0), b = input(p, K, 1), c = input(p, K, 2);
    u32 o[W];
    asm volatile("lop3.b32 %0, %1, %2, %3, 0x96;" : "=r"(o[0]) : "r"(a), "r"(b), "r"(c));
    asm volatile("lop3.b32 %0, %1, %2, %3, 0xe8;" : "=r"(o[1]) : "r"(a), "r"(b), "r"(c));
    asm volatile("lop3.b32 %0, %1, %2, %3, 0xca;" : "=r"(o[2]) : "r"(a), "r"(b), "r"(c));
    asm volatile("lop3.b32 %0, %1, %2, %3, 0x1e;" : "=r"(o[3]) : "r"(a), "r"(b), "r"(c));
    TRI_R(o[4], "dp4a.u32.u32", a, b, c);
    TRI_R(o[5], "dp4a.s32.s32", a, b, c);
    TRI_R(o[6], "dp2a.lo.s32.u32", a, b, c);
    asm volatile("slct.u32.s32 %0, %1, %2, %3;" : "=r"(o[7]) : "r"(a), "r"(b), "r"(a ^ c));
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
#endif
