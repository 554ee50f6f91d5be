// Hopper TMA kernels for the simulator's tests (compiled by sim/tests/ptx/gen_ptx.py with NVRTC,
// --gpu-architecture=compute_90a). Inline PTX in the style of CUTLASS's SM90 primitives.
//
// tma_ring: warpgroup 0 is the producer (one elected lane of warp 0 issues the loads), warpgroup 1
// the consumers. A 2-stage ring of 32x32 f32 tiles of a [tiles*32 x 32] matrix: the producer waits
// for a free slot (empty barrier), arms the full barrier with the tile's bytes and issues a 2D
// tensor load; the consumers wait on the full barrier, write tile + 1 to `out`, and release the slot.
//
// tma_store: loads one 32x32 f32 tile, doubles it in shared memory, fences the generic-proxy writes
// for the async proxy, and stores the tile through a second tensor map.
typedef struct alignas(64) CUtensorMap_st { unsigned long long opaque[16]; } CUtensorMap;
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(u64* bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_arrive_expect_tx(u64* bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(smem_u32(bar)), "r"(bytes));
}
__device__ __forceinline__ void mbar_arrive(u64* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(smem_u32(bar)));
}
__device__ __forceinline__ void mbar_wait(u64* bar, u32 phase) {
  asm volatile(
      "{\n\t.reg .pred P1;\n"
      "LAB_WAIT:\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1, %2;\n\t"
      "@P1 bra DONE;\n\t"
      "bra LAB_WAIT;\n"
      "DONE:\n\t}" :: "r"(smem_u32(bar)), "r"(phase), "r"(0x989680));
}
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, u64* bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
      :: "r"(smem_u32(dst)), "l"((u64)map), "r"(smem_u32(bar)), "r"(c0), "r"(c1) : "memory");
}
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, const void* src, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];"
               :: "l"((u64)map), "r"(smem_u32(src)), "r"(c0), "r"(c1) : "memory");
}
__device__ __forceinline__ bool elect_one() {
  u32 pred = 0;
  asm volatile("{\n\t.reg .b32 %%rx;\n\t.reg .pred %%px;\n\telect.sync %%rx|%%px, %1;\n\t@%%px mov.s32 %0, 1;\n\t}"
               : "+r"(pred) : "r"(0xffffffffu));
  return pred != 0;
}

extern "C" __global__ void __launch_bounds__(256) tma_ring(const __grid_constant__ CUtensorMap map, float* out, int tiles) {
  __shared__ alignas(1024) float buf[2][32 * 32];
  __shared__ alignas(8) u64 full[2], empty[2];
  if (threadIdx.x == 0) {
    asm volatile("prefetch.tensormap [%0];" :: "l"((u64)&map) : "memory");
    for (int s = 0; s < 2; ++s) { mbar_init(&full[s], 1); mbar_init(&empty[s], 128); }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x < 128) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (threadIdx.x < 32 && elect_one()) {
      for (int t = 0; t < tiles; ++t) {
        int s = t % 2;
        if (t >= 2) mbar_wait(&empty[s], ((t / 2) - 1) & 1);
        mbar_arrive_expect_tx(&full[s], 32 * 32 * 4);
        tma_load_2d(buf[s], &map, &full[s], 0, t * 32);
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    int c = threadIdx.x - 128;
    for (int t = 0; t < tiles; ++t) {
      int s = t % 2;
      mbar_wait(&full[s], (t / 2) & 1);
      for (int i = c; i < 32 * 32; i += 128) out[t * 1024 + i] = buf[s][i] + 1.0f;
      mbar_arrive(&empty[s]);
    }
  }
}

extern "C" __global__ void __launch_bounds__(128) tma_store(const __grid_constant__ CUtensorMap in_map,
                                                            const __grid_constant__ CUtensorMap out_map) {
  __shared__ alignas(128) float tile[32 * 32];
  __shared__ alignas(8) u64 bar;
  if (threadIdx.x == 0) {
    mbar_init(&bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    mbar_arrive_expect_tx(&bar, 32 * 32 * 4);
    tma_load_2d(tile, &in_map, &bar, 0, 0);
  }
  mbar_wait(&bar, 0);
  for (int i = threadIdx.x; i < 32 * 32; i += 128) tile[i] *= 2.0f;
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
  if (threadIdx.x == 0) {
    tma_store_2d(&out_map, tile, 0, 0);
    asm volatile("cp.async.bulk.commit_group;");
    asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
  }
}
