// common/tessera.cuh: the device primitives every Tessera kernel template is written in.
//
// Deliberately free of CUDA toolkit headers: NVRTC ships without cuda_fp16.h / cuda_bf16.h, so the
// 16-bit storage types and their conversions are defined here on top of inline PTX. Everything that
// touches hardware goes through a function of this file; a kernel template uses nothing else, so a
// host emulation can stand in for this file alone.
//
// Fragment conventions (PTX ISA, "Matrix Fragments for mma.m16n8k16"): in a warp, lane l is in
// group g = l / 4 and has index t = l % 4 inside it.
//   A (16x16, row-major)  reg0 = A[g][2t..2t+1]    reg1 = A[g+8][2t..2t+1]
//                         reg2 = A[g][2t+8..+9]    reg3 = A[g+8][2t+8..+9]
//   B (16x8,  "col")      reg0 = B[2t..2t+1][g]    reg1 = B[2t+8..2t+9][g]
//   C/D (16x8, f32)       c0,c1 = C[g][2t..2t+1]   c2,c3 = C[g+8][2t..2t+1]
// Each 32-bit register holds two 16-bit values, the lower column (or row, for B) in the low half.
#pragma once

#define TESSERA_DEVICE __device__ __forceinline__

namespace tessera {

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

// 16-bit storage types: bit patterns only; arithmetic happens in f32.
struct __align__(2) f16 { unsigned short bits; };
struct __align__(2) bf16 { unsigned short bits; };

// 16 bytes, the unit of cp.async and of vectorised global stores.
struct __align__(16) chunk16 { u32 x, y, z, w; };

// log(2): converts a base-2 log-sum-exp back to the natural log the API reports.
constexpr float LN2 = 0.693147180559945309f;

// ---- thread geometry ------------------------------------------------------------------------
TESSERA_DEVICE int thread_index() { return (int)threadIdx.x; }
TESSERA_DEVICE int block_index_x() { return (int)blockIdx.x; }
TESSERA_DEVICE int block_index_y() { return (int)blockIdx.y; }
TESSERA_DEVICE int block_index_z() { return (int)blockIdx.z; }
TESSERA_DEVICE void sync_threads() { __syncthreads(); }
TESSERA_DEVICE void sync_warp() { __syncwarp(0xffffffffu); }

// Dynamic shared memory; the runtime sizes it from KernelSource::geometry. 128-byte alignment keeps
// every 16-byte chunk of the swizzled tiles aligned.
TESSERA_DEVICE unsigned char* dynamic_smem() {
    extern __shared__ __align__(128) unsigned char tessera_dynamic_smem[];
    return tessera_dynamic_smem;
}

TESSERA_DEVICE u32 smem_address(const void* p) {
    u32 addr;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(addr) : "l"(p));
    return addr;
}

// ---- conversions -----------------------------------------------------------------------------
// Round-to-nearest-even packing of two f32 into one register; `lo` lands in the low half.
template <typename T> TESSERA_DEVICE u32 pack2(float lo, float hi);
template <> TESSERA_DEVICE u32 pack2<f16>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <> TESSERA_DEVICE u32 pack2<bf16>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// ---- math ------------------------------------------------------------------------------------
TESSERA_DEVICE float neg_inf() { return __int_as_float(0xff800000u); }
// 2^x with the MUFU unit: max relative error 2^-22 (PTX ISA), ex2(-inf) = +0.
TESSERA_DEVICE float exp2_approx(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
TESSERA_DEVICE float log2_approx(float x) {
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
TESSERA_DEVICE float max_f32(float a, float b) { return fmaxf(a, b); }
// f32 arithmetic with exactly one rounding per operation: NVRTC contracts a * b + c into an FMA by
// default, and kernels that promise a CPU reference's exact op order (the optimizer, user-defined
// elementwise functions) use these instead of the operators.
TESSERA_DEVICE float mul_rn(float a, float b) { return __fmul_rn(a, b); }
TESSERA_DEVICE float add_rn(float a, float b) { return __fadd_rn(a, b); }
TESSERA_DEVICE float sub_rn(float a, float b) { return __fsub_rn(a, b); }
TESSERA_DEVICE float div_rn(float a, float b) { return __fdiv_rn(a, b); }
TESSERA_DEVICE float sqrt_rn(float a) { return __fsqrt_rn(a); }
TESSERA_DEVICE float shfl_xor(float v, int lane_mask) {
    return __shfl_xor_sync(0xffffffffu, v, lane_mask);
}

// ---- asynchronous copies (sm_80) -------------------------------------------------------------
// Copies 16 bytes global -> shared, bypassing L1 (.cg). With `valid` false nothing is read and the
// destination is zero-filled (src-size 0), which is how out-of-range rows become harmless zeros.
TESSERA_DEVICE void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
    u32 src_size = valid ? 16u : 0u;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(smem_address(smem_dst)), "l"(gmem_src), "r"(src_size) : "memory");
}
TESSERA_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> TESSERA_DEVICE void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

// ---- shared <-> register moves ---------------------------------------------------------------
TESSERA_DEVICE chunk16 load_shared_16(const void* p) { return *reinterpret_cast<const chunk16*>(p); }
TESSERA_DEVICE void store_shared_u32(void* p, u32 v) { *reinterpret_cast<u32*>(p) = v; }
TESSERA_DEVICE u32 load_shared_u32(const void* p) { return *reinterpret_cast<const u32*>(p); }
TESSERA_DEVICE void store_shared_16(void* p, chunk16 v) { *reinterpret_cast<chunk16*>(p) = v; }
// One 16-bit element's bits from global memory, zero-extended: the element-wise path for tensors
// whose rows are not whole 16-byte chunks.
TESSERA_DEVICE u32 load_global_bits16(const void* p) { return *reinterpret_cast<const unsigned short*>(p); }
TESSERA_DEVICE int load_global_i32(const int* p) { return *p; }
TESSERA_DEVICE chunk16 load_global_16(const void* p) { return *reinterpret_cast<const chunk16*>(p); }
TESSERA_DEVICE void atomic_max_u32(u32* p, u32 v) { atomicMax(p, v); }
TESSERA_DEVICE u32 atomic_add_u32(u32* p, u32 v) { return atomicAdd(p, v); }
// Orders this thread's global writes before its later ones as seen by the whole device.
TESSERA_DEVICE void fence_device() { __threadfence(); }
TESSERA_DEVICE int threads_per_block() { return (int)blockDim.x; }
TESSERA_DEVICE int blocks_per_grid() { return (int)gridDim.x; }
// An f32 another CTA wrote (after its fence): read at L2, past this SM's L1.
TESSERA_DEVICE float load_global_f32_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
    return v;
}
// Widens one 16-bit value of type T held in the low half of `bits`.
template <typename T> TESSERA_DEVICE float bits16_to_f32(u32 bits);
template <> TESSERA_DEVICE float bits16_to_f32<f16>(u32 bits) {
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"((unsigned short)bits));
    return r;
}
template <> TESSERA_DEVICE float bits16_to_f32<bf16>(u32 bits) { return __int_as_float((bits & 0xffffu) << 16); }
// Round to the nearest f16 / bf16 value (ties to even) and widen back: how a kernel that carries
// 16-bit values in f32 registers keeps them exactly at their type.
TESSERA_DEVICE float round_f16(float x) { return bits16_to_f32<f16>(pack2<f16>(x, 0.f)); }
TESSERA_DEVICE float round_bf16(float x) { return bits16_to_f32<bf16>(pack2<bf16>(x, 0.f)); }
TESSERA_DEVICE void store_global_16(void* p, chunk16 v) { *reinterpret_cast<chunk16*>(p) = v; }
TESSERA_DEVICE void store_global_f32(float* p, float v) { *p = v; }

// Scalar element access for epilogues (bias, C, residual, outputs of any width): loads widen to
// f32, stores round to nearest even (the rounding of pack2).
TESSERA_DEVICE float load_global_f32(const float* p) { return *p; }
TESSERA_DEVICE float load_global_f32(const f16* p) {
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(p->bits));
    return r;
}
TESSERA_DEVICE float load_global_f32(const bf16* p) { return __int_as_float((u32)p->bits << 16); }
TESSERA_DEVICE void store_global_elem(float* p, float v) { *p = v; }
TESSERA_DEVICE void store_global_elem(f16* p, float v) { p->bits = (unsigned short)(pack2<f16>(v, 0.f) & 0xffffu); }
TESSERA_DEVICE void store_global_elem(bf16* p, float v) { p->bits = (unsigned short)(pack2<bf16>(v, 0.f) & 0xffffu); }

// Four 8x8 b16 matrices; lane l supplies the row address for row l%8 of matrix l/8, and register i
// receives matrix i in the fragment layout above (row l/4, columns 2(l%4)..+1).
TESSERA_DEVICE void ldmatrix_x4(u32 (&r)[4], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_address(smem_row)));
}
// The same with each 8x8 matrix transposed: register i gets M_i[2(l%4)..+1][l/4].
TESSERA_DEVICE void ldmatrix_x4_trans(u32 (&r)[4], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_address(smem_row)));
}

// ---- tensor cores ----------------------------------------------------------------------------
// D = A * B + D for one m16n8k16 tile, f32 accumulation.
template <typename T> TESSERA_DEVICE void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1);
template <> TESSERA_DEVICE void mma_16816<f16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> TESSERA_DEVICE void mma_16816<bf16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace tessera
