// host_prelude.hpp: a host C++17 stand-in for templates/common/tessera.cuh.
//
// Every name templates/common/tessera.cuh provides exists here, in the same namespace with the same
// signature, so the *unmodified* kernel templates compile with g++ and run on the CPU. This is how
// tests/host_emulation.rs checks the numerics of the generated kernels without a GPU. The
// primitives forward to the emulator in host_runtime.cpp, which is compiled once and linked into
// every emulated kernel: this header stays light, so each kernel instantiation compiles quickly.
//
// Execution model (host_runtime.cpp)
//   - A launch runs the grid's CTAs one after another (TESSERA_EMU_CTAS of them at a time, default
//     1). A CTA runs one std::thread per warp, so warps really run concurrently; the 32 lanes of a
//     warp are fibers of that thread (own stack, threadIdx / blockIdx and per-thread state), sharing
//     the CTA's dynamic shared memory.
//   - A lane runs until it reaches a warp collective (shfl_xor, ldmatrix, mma, sync_warp), a
//     sync_threads() or the end of the kernel, then yields to its warp's scheduler, which runs the
//     next lane. When all 32 lanes wait at a collective, the scheduler computes it from the operands
//     they posted and resumes them with their results. When all 32 wait at sync_threads(), the warp
//     thread joins the CTA barrier (a real barrier between the warp threads).
//   - All lanes of a warp must reach the same collective with the same arguments and all threads of
//     a CTA the same barrier; a mismatch is reported as divergence, a CTA barrier that waits longer
//     than TESSERA_EMU_TIMEOUT seconds (default 60) as a deadlock.
//   - cp.async copies are deferred: cp_async_16 records the copy, cp_async_commit closes a group,
//     cp_async_wait<N> lands all but the N most recent committed groups, oldest first (PTX
//     cp.async.wait_group). Copies never committed are not waited for. So a kernel that reads
//     shared memory without the right wait reads stale bytes - and the checker reports it first.
//
// Checks (a failure prints "tessera-emu: error: ..." to stderr and exits with status 3)
//   - shared memory: bounds and alignment of every access; reads of never-written bytes; any access
//     to a word whose cp.async is still in flight; read-after-write, write-after-read and
//     write-after-write between threads with no sync_threads() in between (inside one warp, a warp
//     collective or sync_warp() also orders: those instructions run on the converged warp). Tracked
//     per 4-byte word: last writer, last reader(s) and the barrier epochs they accessed in.
//   - global memory: every cp.async source and every store lies inside a buffer registered with
//     tessera_host::register_global (stores only into writable ones), aligned; each byte of a
//     writable buffer is stored at most once per launch.
//
// Numerics
//   - pack2<T>: round-to-nearest-even f32 -> f16/bf16 (cvt.rn), overflow to inf, NaN -> 0x7fff.
//   - mma_16816<T>: the products of two 16-bit values are exact in f32; they and C are summed in
//     double and rounded once to f32 (the hardware's order and internal precision are unspecified;
//     it is at least f32-accurate).
//   - exp2_approx / log2_approx: exp2f / log2f with the .ftz flushes (ex2.approx's max relative
//     error is 2^-22, far below what the tests resolve).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- CUDA keywords -----------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define TESSERA_DEVICE inline

namespace tessera {

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

struct __align__(2) f16 { unsigned short bits; };
struct __align__(2) bf16 { unsigned short bits; };
struct __align__(16) chunk16 { u32 x, y, z, w; };

constexpr float LN2 = 0.693147180559945309f;

}  // namespace tessera

// ---- the emulator's interface (host_runtime.cpp) -------------------------------------------------------
namespace tessera_host {

using tessera::u32;
using tessera::u64;

struct Dim3 {
    int x = 0, y = 0, z = 0;
};

// Reports an error of the emulated program (with the current block / thread) and exits with 3.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

int current_thread_index();
Dim3 current_block_index();
Dim3 current_grid_dim();
void cta_barrier();
void warp_barrier();
unsigned char* cta_shared_memory();
u32 shared_offset(const void* p);
float warp_shfl_xor(float v, int lane_mask);
void async_copy_16(void* smem_dst, const void* gmem_src, bool valid);
void async_commit();
void async_wait(int n);
void shared_load(void* out, const void* p, size_t bytes);
void shared_store(void* p, const void* v, size_t bytes);
void global_store(void* p, const void* v, size_t bytes);
// ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16 (num 1, 2 or 4); tessera.cuh uses x4 only.
void ldmatrix(u32* r, int num, bool trans, const void* smem_row);
void mma_m16n8k16(float* d, const u32* a, u32 b0, u32 b1, bool bf16);

// Makes [p, p + bytes) addressable by kernels; register every buffer before the launch.
void register_global(const void* p, size_t bytes, bool writable);
void launch_raw(Dim3 grid, int threads, size_t smem_bytes, void (*kernel)(void*), void* context);

// Runs `kernel()` as every thread of every CTA of `grid`, with `threads` threads per CTA (a
// multiple of 32) and `smem_bytes` of dynamic shared memory.
template <class F> void launch(Dim3 grid, int threads, size_t smem_bytes, F&& kernel) {
    typedef typename std::remove_reference<F>::type K;
    launch_raw(grid, threads, smem_bytes, [](void* k) { (*static_cast<K*>(k))(); },
               const_cast<void*>(static_cast<const void*>(&kernel)));
}

// Host-side helpers for drivers: "key value" parameter files and raw binary buffers, allocated
// 256-byte aligned and registered as global memory.
void load_params(const char* path);
long long param(const char* key);
void* load_buffer(const char* path, size_t bytes, bool writable);
void* alloc_buffer(size_t bytes, int fill_byte, bool writable);
void save_buffer(const char* path, const void* p, size_t bytes);

// ---- 16-bit conversions --------------------------------------------------------------------------------
inline u32 f32_bits(float f) {
    u32 u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float bits_f32(u32 u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// f32 -> f16, round to nearest even; overflow to inf, NaN to 0x7fff (PTX's canonical NaN).
inline unsigned short f32_to_f16_rn(float f) {
    u32 x = f32_bits(f);
    u32 sign = (x >> 16) & 0x8000u;
    u32 exp = (x >> 23) & 0xffu;
    u32 man = x & 0x7fffffu;
    if (exp == 0xff) return (unsigned short)(man ? 0x7fffu : (sign | 0x7c00u));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (unsigned short)(sign | 0x7c00u);
    if (e <= 0) {
        // f16 subnormal (or zero): count units of 2^-24 in the 24-bit significand.
        if (e < -10) return (unsigned short)sign;  // at most half the smallest subnormal
        u32 full = man | 0x800000u;
        int shift = 14 - e;
        u32 q = full >> shift;
        u32 rem = full & ((1u << shift) - 1);
        u32 half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) ++q;
        return (unsigned short)(sign | q);  // a carry into the smallest normal is still right
    }
    u32 q = ((u32)e << 10) | (man >> 13);
    u32 rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) ++q;  // a carry into inf is right for RN
    return (unsigned short)(sign | q);
}

// f32 -> bf16, round to nearest even; NaN to 0x7fff.
inline unsigned short f32_to_bf16_rn(float f) {
    u32 x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    x += 0x7fffu + ((x >> 16) & 1u);
    return (unsigned short)(x >> 16);
}

inline float f16_to_f32(unsigned short h) {
    u32 sign = (u32)(h & 0x8000u) << 16;
    u32 exp = (h >> 10) & 0x1fu;
    u32 man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        float v = (float)man * 5.9604644775390625e-8f;  // man * 2^-24, exact
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

inline float bf16_to_f32(unsigned short h) { return bits_f32((u32)h << 16); }

inline float flush_subnormal(float x) {
    return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x;
}

}  // namespace tessera_host

// CUDA's built-in index variables, for templates that read them directly (tessera.cuh's do not).
extern thread_local tessera_host::Dim3 threadIdx;
extern thread_local tessera_host::Dim3 blockIdx;

// ---- everything templates/common/tessera.cuh provides ---------------------------------------------------------
namespace tessera {

TESSERA_DEVICE int thread_index() { return tessera_host::current_thread_index(); }
TESSERA_DEVICE int block_index_x() { return tessera_host::current_block_index().x; }
TESSERA_DEVICE int block_index_y() { return tessera_host::current_block_index().y; }
TESSERA_DEVICE int block_index_z() { return tessera_host::current_block_index().z; }
TESSERA_DEVICE void sync_threads() { tessera_host::cta_barrier(); }
TESSERA_DEVICE void sync_warp() { tessera_host::warp_barrier(); }

TESSERA_DEVICE unsigned char* dynamic_smem() { return tessera_host::cta_shared_memory(); }
TESSERA_DEVICE u32 smem_address(const void* p) { return tessera_host::shared_offset(p); }

template <typename T> TESSERA_DEVICE u32 pack2(float lo, float hi);
template <> TESSERA_DEVICE u32 pack2<f16>(float lo, float hi) {
    return (u32)tessera_host::f32_to_f16_rn(lo) | ((u32)tessera_host::f32_to_f16_rn(hi) << 16);
}
template <> TESSERA_DEVICE u32 pack2<bf16>(float lo, float hi) {
    return (u32)tessera_host::f32_to_bf16_rn(lo) | ((u32)tessera_host::f32_to_bf16_rn(hi) << 16);
}

TESSERA_DEVICE float neg_inf() { return tessera_host::bits_f32(0xff800000u); }
// .ftz: subnormal inputs and results are flushed to sign-preserving zero; ex2(-inf) = +0.
TESSERA_DEVICE float exp2_approx(float x) {
    return tessera_host::flush_subnormal(std::exp2(tessera_host::flush_subnormal(x)));
}
TESSERA_DEVICE float log2_approx(float x) { return std::log2(tessera_host::flush_subnormal(x)); }
TESSERA_DEVICE float max_f32(float a, float b) { return std::fmax(a, b); }
TESSERA_DEVICE float mul_rn(float a, float b) { return a * b; }
TESSERA_DEVICE float add_rn(float a, float b) { return a + b; }
TESSERA_DEVICE float sub_rn(float a, float b) { return a - b; }
TESSERA_DEVICE float div_rn(float a, float b) { return a / b; }
TESSERA_DEVICE float sqrt_rn(float a) { return std::sqrt(a); }
TESSERA_DEVICE float shfl_xor(float v, int lane_mask) { return tessera_host::warp_shfl_xor(v, lane_mask); }

TESSERA_DEVICE void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
    tessera_host::async_copy_16(smem_dst, gmem_src, valid);
}
TESSERA_DEVICE void cp_async_commit() { tessera_host::async_commit(); }
template <int N> TESSERA_DEVICE void cp_async_wait() {
    static_assert(N >= 0, "cp.async.wait_group takes a non-negative count");
    tessera_host::async_wait(N);
}

TESSERA_DEVICE chunk16 load_shared_16(const void* p) {
    chunk16 v;
    tessera_host::shared_load(&v, p, 16);
    return v;
}
TESSERA_DEVICE void store_shared_u32(void* p, u32 v) { tessera_host::shared_store(p, &v, 4); }
TESSERA_DEVICE u32 load_shared_u32(const void* p) {
    u32 v;
    tessera_host::shared_load(&v, p, 4);
    return v;
}
TESSERA_DEVICE void store_shared_16(void* p, chunk16 v) { tessera_host::shared_store(p, &v, 16); }
TESSERA_DEVICE u32 load_global_bits16(const void* p) { return *static_cast<const unsigned short*>(p); }
TESSERA_DEVICE int load_global_i32(const int* p) { return *p; }
TESSERA_DEVICE chunk16 load_global_16(const void* p) {
    chunk16 v;
    std::memcpy(&v, p, 16);
    return v;
}
template <typename T> TESSERA_DEVICE float bits16_to_f32(u32 bits);
template <> TESSERA_DEVICE float bits16_to_f32<f16>(u32 bits) { return tessera_host::f16_to_f32((unsigned short)bits); }
template <> TESSERA_DEVICE float bits16_to_f32<bf16>(u32 bits) { return tessera_host::bf16_to_f32((unsigned short)bits); }
TESSERA_DEVICE float round_f16(float x) { return tessera_host::f16_to_f32(tessera_host::f32_to_f16_rn(x)); }
TESSERA_DEVICE float round_bf16(float x) { return tessera_host::bf16_to_f32(tessera_host::f32_to_bf16_rn(x)); }
TESSERA_DEVICE void store_global_16(void* p, chunk16 v) { tessera_host::global_store(p, &v, 16); }
TESSERA_DEVICE void store_global_f32(float* p, float v) { tessera_host::global_store(p, &v, 4); }

TESSERA_DEVICE float load_global_f32(const float* p) { return *p; }
TESSERA_DEVICE float load_global_f32_cg(const float* p) { return *p; }
TESSERA_DEVICE int blocks_per_grid() { return tessera_host::current_grid_dim().x; }
// CTAs of one launch run as host threads: a sequentially consistent fence and atomic are at least
// as strong as __threadfence / atomicAdd.
TESSERA_DEVICE void fence_device() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
TESSERA_DEVICE u32 atomic_add_u32(u32* p, u32 v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
TESSERA_DEVICE float load_global_f32(const f16* p) { return tessera_host::f16_to_f32(p->bits); }
TESSERA_DEVICE float load_global_f32(const bf16* p) { return tessera_host::bf16_to_f32(p->bits); }
TESSERA_DEVICE void store_global_elem(float* p, float v) { tessera_host::global_store(p, &v, 4); }
TESSERA_DEVICE void store_global_elem(f16* p, float v) {
    unsigned short h = tessera_host::f32_to_f16_rn(v);
    tessera_host::global_store(p, &h, 2);
}
TESSERA_DEVICE void store_global_elem(bf16* p, float v) {
    unsigned short h = tessera_host::f32_to_bf16_rn(v);
    tessera_host::global_store(p, &h, 2);
}

TESSERA_DEVICE void ldmatrix_x4(u32 (&r)[4], const void* smem_row) {
    tessera_host::ldmatrix(r, 4, false, smem_row);
}
TESSERA_DEVICE void ldmatrix_x4_trans(u32 (&r)[4], const void* smem_row) {
    tessera_host::ldmatrix(r, 4, true, smem_row);
}

template <typename T> TESSERA_DEVICE void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1);
template <> TESSERA_DEVICE void mma_16816<f16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    tessera_host::mma_m16n8k16(d, a, b0, b1, false);
}
template <> TESSERA_DEVICE void mma_16816<bf16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    tessera_host::mma_m16n8k16(d, a, b0, b1, true);
}

}  // namespace tessera
