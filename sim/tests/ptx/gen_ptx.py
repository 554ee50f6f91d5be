#!/usr/bin/env python3
"""Regenerates the checked-in PTX files of this folder with NVRTC 13.0 (run from the repository root):

    python3 sim/tests/ptx/gen_ptx.py

Each attention kernel is rendered by the tessera CLI (`tessera emit attention`) and compiled with the
options the runtime passes to NVRTC (--gpu-architecture=compute_80 -std=c++17 -lineinfo). The CUDA
sources of this folder (CUDA_SOURCES) are compiled as they are, for their architecture.
"""
import ctypes, os, subprocess, sys

LIB = os.environ.get("TESSERA_NVRTC_DIR", ".tessera/cuda/nvidia/cu13/lib")
ctypes.CDLL(os.path.join(LIB, "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
nvrtc = ctypes.CDLL(os.path.join(LIB, "libnvrtc.so.13"))

# (file stem, emit arguments); a list of argument lists puts several kernels in one module.
KERNELS = [
    ("attn_bf16_d128_causal", ["--dtype", "bf16", "--head-dim", "128", "--causal", "--heads-q", "2"]),
    ("attn_f16_d64_full", ["--dtype", "f16", "--head-dim", "64", "--heads-q", "4", "--heads-kv", "2"]),
    ("attn_f16_d256_causal", ["--dtype", "f16", "--head-dim", "256", "--causal", "--heads-q", "2"]),
    ("attn_bf16_d96_full_s1", ["--dtype", "bf16", "--head-dim", "96", "--heads-q", "2",
                               "--block-m", "64", "--block-n", "32", "--warps", "4", "--stages", "1"]),
]
KERNELS_EXTRA = {}
KERNELS.append(("attn_f16_d32_causal_s3_bf16_d192_full", [
    ["--dtype", "f16", "--head-dim", "32", "--causal", "--heads-q", "2",
     "--block-m", "64", "--block-n", "32", "--warps", "4", "--stages", "3"],
    ["--dtype", "bf16", "--head-dim", "192", "--heads-q", "2"],
]))

# (file stem of a .cu file in this folder, virtual architecture)
CUDA_SOURCES = [("hopper_tma", "compute_90a")]

MARK = "// ---- instantiation ----"


def render(args) -> str:
    """The CUDA source of one spec, or of several sharing the prelude and template."""
    specs = args if isinstance(args[0], list) else [args]
    srcs = [subprocess.run(["cargo", "run", "-q", "--", "emit", "attention", *a],
                           check=True, capture_output=True, text=True).stdout for a in specs]
    return srcs[0] + "".join(s[s.index(MARK):] for s in srcs[1:])


def compile_ptx(src: str, name: str, arch: str = "compute_80") -> str:
    prog = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None) == 0
    opts = [f"--gpu-architecture={arch}", "-std=c++17", "-lineinfo"]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        sys.exit(f"NVRTC failed for {name}:\n{log.value.decode()}")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    return ptx.value.decode()


def main():
    out_dir = os.path.dirname(os.path.abspath(__file__))
    wanted = sys.argv[1:]
    for stem, args in KERNELS + list(KERNELS_EXTRA.items()):
        if wanted and stem not in wanted:
            continue
        if not wanted and stem in KERNELS_EXTRA:
            continue
        src = render(args)
        ptx = compile_ptx(src, stem + ".cu")
        dest = os.path.join(os.environ.get("PTX_OUT", out_dir), stem + ".ptx")
        with open(dest, "w") as f:
            f.write(ptx)
        print(f"{dest}: {len(ptx)} bytes")
    for stem, arch in CUDA_SOURCES:
        if wanted and stem not in wanted:
            continue
        with open(os.path.join(out_dir, stem + ".cu")) as f:
            src = f.read()
        ptx = compile_ptx(src, stem + ".cu", arch)
        dest = os.path.join(os.environ.get("PTX_OUT", out_dir), stem + ".ptx")
        with open(dest, "w") as f:
            f.write(ptx)
        print(f"{dest}: {len(ptx)} bytes")


if __name__ == "__main__":
    main()
