// attention_main.hpp: host driver for one attention kernel instantiation under the emulator.
//
// Include after host_prelude.hpp and the kernel source (it needs tessera::AttentionParams); the
// generated main() calls attention_main(<entry point>, argc, argv). Usage: `binary DIR`, where
//   DIR/params.txt  "key value" lines: dims, buffer lengths (elements), strides (elements), launch
//                   geometry, scale_log2 as f32 bits, with_lse;
//   DIR/{q,k,v}.bin the raw 16-bit buffers.
// Writes DIR/o.bin (the whole O buffer, filled with 0xff bytes before the launch, so unwritten
// elements and untouched padding read 0xffff) and, with with_lse, DIR/lse.bin (f32, likewise
// 0xffffffff before the launch).
#pragma once

#include <string>

namespace tessera_host {

template <class Kernel> int attention_main(Kernel kernel, int argc, char** argv) {
    if (argc != 2) {
        fail("usage: %s DIR", argv[0]);
    }
    const std::string dir = argv[1];
    auto path = [&](const char* name) { return dir + "/" + name; };
    load_params(path("params.txt").c_str());

    tessera::AttentionParams p{};
    p.q = load_buffer(path("q.bin").c_str(), (size_t)param("q_len") * 2, false);
    p.k = load_buffer(path("k.bin").c_str(), (size_t)param("k_len") * 2, false);
    p.v = load_buffer(path("v.bin").c_str(), (size_t)param("v_len") * 2, false);
    const size_t o_bytes = (size_t)param("o_len") * 2;
    p.o = alloc_buffer(o_bytes, 0xff, true);
    const bool with_lse = param("with_lse") != 0;
    const size_t lse_bytes = (size_t)(param("batch") * param("heads_q") * param("seq_q")) * 4;
    p.lse = with_lse ? static_cast<float*>(alloc_buffer(lse_bytes, 0xff, true)) : nullptr;
    p.q_batch_stride = param("q_batch_stride");
    p.q_seq_stride = param("q_seq_stride");
    p.q_head_stride = param("q_head_stride");
    p.k_batch_stride = param("k_batch_stride");
    p.k_seq_stride = param("k_seq_stride");
    p.k_head_stride = param("k_head_stride");
    p.v_batch_stride = param("v_batch_stride");
    p.v_seq_stride = param("v_seq_stride");
    p.v_head_stride = param("v_head_stride");
    p.o_batch_stride = param("o_batch_stride");
    p.o_seq_stride = param("o_seq_stride");
    p.o_head_stride = param("o_head_stride");
    p.seq_q = (int)param("seq_q");
    p.seq_k = (int)param("seq_k");
    p.heads_q = (int)param("heads_q");
    p.scale_log2 = bits_f32((u32)param("scale_log2_bits"));

    Dim3 grid{(int)param("grid_x"), (int)param("grid_y"), (int)param("grid_z")};
    launch(grid, (int)param("threads"), (size_t)param("smem_bytes"), [&] { kernel(p); });

    save_buffer(path("o.bin").c_str(), p.o, o_bytes);
    if (with_lse) save_buffer(path("lse.bin").c_str(), p.lse, lse_bytes);
    return 0;
}

}  // namespace tessera_host
