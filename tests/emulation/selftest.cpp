// selftest.cpp: checks of the host emulator itself, driven by tests/host_emulation.rs.
//
//   selftest oracles FILE   runs every case of FILE through the emulated ldmatrix / mma_16816 and
//                           prints the destination registers, one line per case:
//                             L num trans addr[32] smem_words n word[n]  ->  "L" d[32 * num]
//                             M f16|bf16 (a0 a1 a2 a3 b0 b1 c0 c1 c2 c3)[32]  ->  "M" d[32 * 4]
//                           (all u32; c and d are f32 bit patterns). The .x4 cases go through the
//                           public tessera::ldmatrix_x4{,_trans}, the others through the generic
//                           tessera_host::ldmatrix they are built on.
//   selftest convert FILE   FILE holds f32 bit patterns; prints "f16 bf16" bits of pack2<T>(x, 0)
//                           (and checks the high half against pack2<T>(0, x)), then the f32 bits of
//                           every f16 and bf16 bit pattern decoded.
//   selftest fault NAME     runs a small kernel with one deliberate bug; the emulator must catch it
//                           (exit status 3). NAME "clean" is the bug-free control (exit status 0).
//
// Built from this file and host_runtime.cpp, like every emulated kernel.
#include "host_prelude.hpp"

#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

using namespace tessera;
using tessera_host::Dim3;
using tessera_host::launch;

static int run_oracles(const char* path) {
    std::ifstream in(path);
    if (!in) tessera_host::fail("cannot open %s", path);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream s(line);
        std::string kind;
        s >> kind;
        if (kind == "L") {
            int num, trans;
            u32 addr[32];
            size_t n;
            s >> num >> trans;
            for (u32& a : addr) s >> a;
            s >> n;
            std::vector<u32> words(n);
            for (u32& w : words) s >> w;
            std::vector<u32> out(32 * num, 0);
            launch(Dim3{1, 1, 1}, 32, n * 4, [&] {
                int lane = thread_index();
                unsigned char* smem = dynamic_smem();
                for (size_t i = lane; i < n; i += 32) store_shared_u32(smem + 4 * i, words[i]);
                sync_threads();
                u32 r[4] = {0, 0, 0, 0};
                const void* row = smem + addr[lane];
                if (num == 4 && !trans) ldmatrix_x4(r, row);
                else if (num == 4) ldmatrix_x4_trans(r, row);
                else tessera_host::ldmatrix(r, num, trans != 0, row);
                for (int i = 0; i < num; ++i) out[lane * num + i] = r[i];
            });
            std::printf("L");
            for (u32 v : out) std::printf(" %u", v);
            std::printf("\n");
        } else if (kind == "M") {
            std::string type;
            s >> type;
            u32 regs[32][10];
            for (auto& lane : regs)
                for (u32& v : lane) s >> v;
            std::vector<u32> out(32 * 4, 0);
            launch(Dim3{1, 1, 1}, 32, 0, [&] {
                int lane = thread_index();
                u32 a[4] = {regs[lane][0], regs[lane][1], regs[lane][2], regs[lane][3]};
                float d[4];
                for (int e = 0; e < 4; ++e) d[e] = tessera_host::bits_f32(regs[lane][6 + e]);
                if (type == "bf16") mma_16816<bf16>(d, a, regs[lane][4], regs[lane][5]);
                else mma_16816<f16>(d, a, regs[lane][4], regs[lane][5]);
                for (int e = 0; e < 4; ++e) out[lane * 4 + e] = tessera_host::f32_bits(d[e]);
            });
            std::printf("M");
            for (u32 v : out) std::printf(" %u", v);
            std::printf("\n");
        } else if (!kind.empty()) {
            tessera_host::fail("oracle input: unknown line kind '%s'", kind.c_str());
        }
    }
    return 0;
}

static int run_convert(const char* path) {
    std::ifstream in(path);
    if (!in) tessera_host::fail("cannot open %s", path);
    u32 bits;
    while (in >> bits) {
        float x = tessera_host::bits_f32(bits);
        u32 h = pack2<f16>(x, 0.0f), b = pack2<bf16>(x, 0.0f);
        if ((pack2<f16>(0.0f, x) >> 16) != (h & 0xffffu) || (pack2<bf16>(0.0f, x) >> 16) != (b & 0xffffu))
            tessera_host::fail("pack2: the high half rounds differently from the low half for %08x", bits);
        std::printf("%u %u\n", h & 0xffffu, b & 0xffffu);
    }
    std::printf("decode\n");
    for (u32 h = 0; h < 65536; ++h)
        std::printf("%u %u\n", tessera_host::f32_bits(tessera_host::f16_to_f32((unsigned short)h)),
                    tessera_host::f32_bits(tessera_host::bf16_to_f32((unsigned short)h)));
    return 0;
}

// Small kernels, each with one bug the emulator must report (and one without).
static int run_fault(const std::string& name) {
    static unsigned char global_in[64 * 16] __attribute__((aligned(16)));
    static float global_out[256];
    tessera_host::register_global(global_in, sizeof global_in, false);
    tessera_host::register_global(global_out, sizeof global_out, true);
    const size_t smem_bytes = 128 * 16;
    std::function<void()> kernel;
    if (name == "clean") {
        // Everything a kernel does, correctly: async copies, waits, barriers, warp collectives.
        kernel = [] {
            int t = thread_index();
            unsigned char* smem = dynamic_smem();
            cp_async_16(smem + 16 * t, global_in + 16 * t, t % 3 != 0);
            cp_async_commit();
            cp_async_wait<0>();
            sync_threads();
            chunk16 c = load_shared_16(smem + 16 * ((t + 32) % 64));
            u32 r[4];
            ldmatrix_x4(r, smem + 16 * (t % 32));
            float d[4] = {0, 0, 0, 0};
            mma_16816<f16>(d, r, r[0], r[1]);
            float v = shfl_xor(d[0] + (float)c.x, 1);
            sync_threads();
            store_shared_u32(smem + 4 * t, r[0]);
            sync_warp();
            chunk16 back = load_shared_16(smem + 16 * (t / 4));
            store_global_f32(global_out + 64 * block_index_x() + t, v + (float)back.y);
        };
    } else if (name == "missing_wait") {
        kernel = [] {
            int t = thread_index();
            unsigned char* smem = dynamic_smem();
            cp_async_16(smem + 16 * t, global_in + 16 * t, true);
            cp_async_commit();
            sync_threads();  // the barrier alone does not make the copy land
            load_shared_16(smem + 16 * t);
        };
    } else if (name == "wait_too_shallow") {
        // Two groups in flight, wait<1> completes only the first: the second tile is still in flight.
        kernel = [] {
            int t = thread_index();
            unsigned char* smem = dynamic_smem();
            cp_async_16(smem + 16 * t, global_in + 16 * t, true);
            cp_async_commit();
            cp_async_16(smem + 16 * (64 + t), global_in + 16 * t, true);
            cp_async_commit();
            cp_async_wait<1>();
            sync_threads();
            load_shared_16(smem + 16 * (64 + (t + 1) % 64));
        };
    } else if (name == "missing_barrier") {
        // Each thread rewrites its word, then reads a word of the other warp with no barrier.
        kernel = [] {
            int t = thread_index();
            unsigned char* smem = dynamic_smem();
            for (int w = 0; w < 4; ++w) store_shared_u32(smem + 16 * t + 4 * w, 1u);
            sync_threads();
            store_shared_u32(smem + 16 * t, 2u);
            load_shared_16(smem + 16 * ((t + 32) % 64));
        };
    } else if (name == "missing_sync_warp") {
        // Lanes of one warp exchange data through shared memory with no sync_warp in between.
        kernel = [] {
            int t = thread_index();
            unsigned char* smem = dynamic_smem();
            store_shared_u32(smem + 4 * t, 1u);
            sync_threads();
            store_shared_u32(smem + 4 * t, 2u);
            load_shared_16(smem + 128 * (t / 32) + 16 * ((t % 32 / 4 + 1) % 8));
        };
    } else if (name == "overwrite_while_read") {
        // A ring slot refilled by cp.async while the other warp may still read it.
        kernel = [] {
            int t = thread_index();
            unsigned char* smem = dynamic_smem();
            cp_async_16(smem + 16 * t, global_in + 16 * t, true);
            cp_async_commit();
            cp_async_wait<0>();
            sync_threads();
            load_shared_16(smem + 16 * ((t + 32) % 64));
            cp_async_16(smem + 16 * t, global_in + 16 * t, true);  // needs a sync_threads before it
            cp_async_commit();
            cp_async_wait<0>();
        };
    } else if (name == "uninitialized") {
        kernel = [] { load_shared_16(dynamic_smem() + 16 * thread_index()); };
    } else if (name == "out_of_bounds") {
        kernel = [] { store_shared_u32(dynamic_smem() + 128 * 16 + 4 * thread_index(), 0u); };
    } else if (name == "misaligned") {
        kernel = [] { cp_async_16(dynamic_smem() + 8, global_in, true); };
    } else if (name == "global_out_of_bounds") {
        kernel = [] {
            int t = thread_index();
            cp_async_16(dynamic_smem() + 16 * t, global_in + 16 * (t + 8), true);  // 8 chunks past the end
        };
    } else if (name == "stored_twice") {
        kernel = [] { store_global_f32(global_out + thread_index() / 2, 1.0f); };
    } else if (name == "warp_divergence") {
        kernel = [] {
            if (thread_index() % 32 < 16) shfl_xor(1.0f, 1);
            else sync_warp();
        };
    } else if (name == "barrier_divergence") {
        kernel = [] {
            if (thread_index() < 32) sync_threads();
        };
    } else {
        std::fprintf(stderr, "unknown fault %s\n", name.c_str());
        return 2;
    }
    launch(Dim3{2, 1, 1}, 64, smem_bytes, kernel);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "oracles") return run_oracles(argv[2]);
    if (argc == 3 && std::string(argv[1]) == "convert") return run_convert(argv[2]);
    if (argc == 3 && std::string(argv[1]) == "fault") return run_fault(argv[2]);
    std::fprintf(stderr, "usage: %s oracles FILE | convert FILE | fault NAME\n", argv[0]);
    return 2;
}
