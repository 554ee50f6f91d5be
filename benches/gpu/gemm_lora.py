#!/usr/bin/env python3
"""GPU check and benchmark for Tessera's GEMM and fused LoRA kernels, side by side with PyTorch.

Builds nothing: it drives a `tessera` binary built elsewhere (`cargo build --release`). One run:
  1. correctness on the GPU, through the CLI with `--backend cuda`, on random .npy inputs, against
     a float64 reference computed by torch on the GPU from the same inputs pre-rounded to bf16 (the
     kernels round their inputs to the dtype); every case is bf16 in, f32 out:
     - GEMM `tessera run gemm` for (M, N, K) = (1, 1, 1), (37, 53, 19), (256, 384, 512),
       (130, 72, 200), W row-major [K, N] and column-major [N, K] (`--w-layout col`);
     - LoRA `tessera run lora --scale 0.5`, ranks 8/16/64/128, M = 1/7/300 with N = K = 256, plus
       the shape M = 33, N = 40, K = 72 at ranks 8 and 128; single adapter (A [K, r], B [r, N])
       and per-row (3 stacked adapters A [3, K, r], B [3, r, N], int32 ids [M] with -1 rows). The
       reference rounds the rank-r intermediate like the kernel: T' = bf16(s (X @ A_i)), then
       Y = X @ W + T' @ B_i, and rows with id -1 get no adapter term;
     relative L2 error <= 2e-2 passes; NaN or Inf never passes; each case's rel_l2 and max_abs
     are printed with PASS/FAIL.
  2. timing, bf16 in and bf16 out, CUDA events, median of --reps after --warmup launches for both
     sides (Tessera through `tessera bench gemm|lora --json`, torch in this process):
     - base GEMM vs torch.matmul (cuBLAS) at 4096^3 and 8192^3; FLOPs = 2 M N K; Tessera's time is
       the faster of two kernels (GEMM_TILES: the default, which is the sm_90a TMA + wgmma kernel on
       an H100/H200, and the mma.sync 128x256 tile), both recorded in results.json;
       target: Tessera / cuBLAS throughput >= 0.8 on mma.sync, >= 0.9 when the sm_90a kernel wins;
     - fused LoRA (single adapter) vs torch unfused `x @ W + s * (x @ A) @ B` and vs Tessera's own
       base GEMM of the same M, N, K alone, for M = 1, 16, 256, 4096, N = K = 4096, r = 16, 64;
       target: fused time / base GEMM time <= 1.10 at M = 4096;
     - multi-adapter rows with the per-row kernel: M = 4096 with 8 adapters in contiguous segments
       (prefill, SGMV-like) and M = 16 with 16 adapters, a different one on every row (decode,
       BGMV-like), r = 16. The torch reference is loop-free and dense: one GEMM of X against all
       adapters' A concatenated ([K, n r]), a one-hot mask built from the ids (inside the timed
       region) that keeps each row's own adapter's r columns, then one addmm against all B stacked
       ([n r, N]) onto X @ W. It does n times the low-rank FLOPs of a gathered kernel; its TFLOP/s
       column counts only the useful FLOPs, as Tessera's does.
     LoRA FLOPs (useful work) = 2 M N K + 2 M K r + 2 M r N.
Writes results.json and results.md to --out and prints the tables last. Exits non-zero when a
correctness case fails (the performance targets are reported, not enforced).

The headline rows (GEMM 8192^3, fused LoRA r16 at M = 4096) are timed first; `--part headline`
times only them (no checks), `--part rest` runs the checks and every other row.

Usage: python3 benches/gpu/gemm_lora.py --tessera target/release/tessera --out results/
       (--skip-bench: correctness only; --skip-checks: timing only; --part all|headline|rest)
"""
import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import torch

from common import (add_io_args, add_part_arg, add_seed_arg, add_skip_args, add_timing_args, cmd_timeout, device_line,
                    error_stats, finish, fmt, free_cuda, load_npy, pick_seed, print_check, remove_files, run_cli,
                    run_env, save_npy, shape_error, split_rows, tessera_bench, tessera_version, time_cuda, with_target,
                    write_results)

TOL = 2e-2  # relative L2, bf16 inputs, f32 output
SCALE = 0.5  # LoRA scale in the correctness cases
CMD_TIMEOUT_S = cmd_timeout(600)
GEMM_SIZES = (4096, 8192)
# (M, rank, adapters, mix) of the timed LoRA rows.
LORA_ROWS = [(m, r, 1, "same") for m in (1, 16, 256, 4096) for r in (16, 64)]
LORA_ROWS += [(4096, 16, 8, "segments"), (16, 16, 16, "distinct")]
# Timed first (`--part headline`: only these): GEMM 8192^3 vs cuBLAS, and fused LoRA r16 at
# M = N = K = 4096 vs the unfused torch chain and vs Tessera's own base GEMM.
HEADLINE_GEMM = [8192]
HEADLINE_LORA = [(4096, 16, 1, "same")]


def rounded(t):
    """The kernel's input rounding: to bf16 (round to nearest even), back to f32."""
    return t.to(torch.bfloat16).float()


def compare(name, path, ref):
    """rel_l2 / max_abs of the .npy at `path` against the f64 reference; NaN/Inf never pass."""
    out = load_npy(path, "cuda").double()
    err = shape_error(out, ref)
    if err:
        return {"case": name, "ok": False, "error": err}
    non_finite, rel, max_abs = error_stats(out, ref)
    ok = non_finite == 0 and rel <= TOL
    return {"case": name, "ok": ok, "rel_l2": rel, "max_abs": max_abs, "non_finite": non_finite}


def check_gemm(tessera, tmp, gen, m, n, k, w_layout):
    name = f"gemm bf16->f32 M{m} N{n} K{k} W {w_layout}"
    x = rounded(torch.randn(m, k, device="cuda", generator=gen))
    w = rounded(torch.randn(k, n, device="cuda", generator=gen))
    paths = {t: os.path.join(tmp, f"{t}.npy") for t in ("x", "w", "y")}
    remove_files(paths.values())
    save_npy(paths["x"], x)
    save_npy(paths["w"], w if w_layout == "row" else w.t().contiguous())  # col: stored [N, K]
    cmd = [tessera, "run", "gemm", "--dtype", "bf16", "--out-type", "f32", "--x", paths["x"], "--w", paths["w"],
           "--out", paths["y"], "--w-layout", w_layout, "--backend", "cuda"]
    _, err = run_cli(cmd, CMD_TIMEOUT_S)
    if err:
        return {"case": name, "ok": False, "error": err}
    return compare(name, paths["y"], x.double() @ w.double())


def lora_reference(x, w, a, b, ids, scale):
    """f64 Y = X W + T' B_i with T' = bf16(s X A_i), the kernel's rounding of the intermediate;
    single adapter when ids is None (a [K, r], b [r, N]), else a [n, K, r], b [n, r, N] and rows
    with id -1 get no adapter term."""
    xd = x.double()
    y = xd @ w.double()
    if ids is None:
        t = (scale * (xd @ a.double())).to(torch.bfloat16).double()
        return y + t @ b.double()
    sel = ids.clamp(min=0).long()
    t = torch.einsum("mk,mkr->mr", xd, a.double()[sel])
    t = (scale * t).to(torch.bfloat16).double()
    t[ids < 0] = 0.0
    return y + torch.einsum("mr,mrn->mn", t, b.double()[sel])


def check_lora(tessera, tmp, gen, m, n, k, rank, adapters):
    mode = "single" if adapters is None else f"per-row x{adapters}"
    name = f"lora bf16->f32 M{m} N{n} K{k} r{rank} {mode}"
    x = rounded(torch.randn(m, k, device="cuda", generator=gen))
    w = rounded(torch.randn(k, n, device="cuda", generator=gen))
    # A scaled by 1/sqrt(r) keeps the adapter term about as large as X W, so errors in either show.
    lead = () if adapters is None else (adapters,)
    a = rounded(torch.randn(*lead, k, rank, device="cuda", generator=gen) / math.sqrt(rank))
    b = rounded(torch.randn(*lead, rank, n, device="cuda", generator=gen))
    ids = None
    if adapters is not None:
        ids = torch.randint(0, adapters, (m,), device="cuda", generator=gen, dtype=torch.int32)
        if m == 1:
            ids[0] = adapters - 1  # the last adapter: the largest offset into A and B
        else:
            ids[::5] = -1  # rows without an adapter, including the first
    paths = {t: os.path.join(tmp, f"{t}.npy") for t in ("x", "w", "a", "b", "ids", "y")}
    remove_files(paths.values())
    for t, v in (("x", x), ("w", w), ("a", a), ("b", b)):
        save_npy(paths[t], v)
    cmd = [tessera, "run", "lora", "--dtype", "bf16", "--out-type", "f32", "--x", paths["x"], "--w", paths["w"],
           "--a", paths["a"], "--b", paths["b"], "--scale", str(SCALE), "--out", paths["y"], "--backend", "cuda"]
    if ids is not None:
        save_npy(paths["ids"], ids, np.int32)
        cmd += ["--adapter-ids", paths["ids"]]
    _, err = run_cli(cmd, CMD_TIMEOUT_S)
    if err:
        return {"case": name, "ok": False, "error": err}
    return compare(name, paths["y"], lora_reference(x, w, a, b, ids, SCALE))


def bf16_bench(tessera, family, flags, warmup, reps):
    """`tessera bench FAMILY --dtype bf16 ... --json`: the parsed JSON object, or {"error": ...}."""
    return tessera_bench(tessera, family, flags, warmup, reps, CMD_TIMEOUT_S, dtype="bf16")


# GEMM kernels timed side by side (the fastest is reported): the default (sm_90a: the TMA + wgmma
# kernel; elsewhere the 128x128 mma.sync tile) and the 128x256 mma.sync tile (64x64 warp tiles).
GEMM_TILES = ([], ["--block-n", 256])


def bench_gemm(tessera, size, warmup, reps):
    m = n = k = size
    flops = 2 * m * n * k
    row = {"m": m, "n": n, "k": k}
    runs = [bf16_bench(tessera, "gemm", ["--m", m, "--n", n, "--k", k] + tile, warmup, reps) for tile in GEMM_TILES]
    row["tiles"] = {r.get("kernel", f"tile {i}"): r.get("median_ms", r.get("error")) for i, r in enumerate(runs)}
    ok = [r for r in runs if "error" not in r]
    t = min(ok, key=lambda r: r["median_ms"]) if ok else runs[0]
    if "error" in t:
        row["tessera_error"] = t["error"]
    else:
        row.update(tessera_ms=t["median_ms"], tessera_tflops=flops / t["median_ms"] / 1e9, kernel=t["kernel"])
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    ms = time_cuda(lambda: torch.matmul(x, w), warmup, reps)
    row.update(cublas_ms=ms, cublas_tflops=flops / ms / 1e9)
    if "tessera_ms" in row:
        row["vs_cublas"] = row["tessera_tflops"] / row["cublas_tflops"]
        row["target"] = 0.9 if "_sm90a_" in row["kernel"] else 0.8
        row["target_met"] = row["vs_cublas"] >= row["target"]
    return row


def adapter_ids(m, adapters, mix):
    """The ids `tessera bench lora --mix` assigns (src/bin/tessera/bench.rs)."""
    rows = torch.arange(m, device="cuda")
    if mix == "same":
        ids = torch.zeros_like(rows)
    elif mix == "distinct":
        ids = rows % adapters
    else:  # segments
        ids = rows * adapters // m
    return ids.to(torch.int32)


def bench_lora(tessera, m, rank, adapters, mix, base_cache, warmup, reps, n=4096, k=4096, scale=SCALE):
    flops = 2 * m * n * k + 2 * m * k * rank + 2 * m * rank * n
    row = {"m": m, "n": n, "k": k, "rank": rank, "adapters": adapters, "mix": mix if adapters > 1 else "-"}
    t = bf16_bench(tessera, "lora", ["--m", m, "--n", n, "--k", k, "--rank", rank, "--adapters", adapters,
                                        "--mix", mix, "--scale", scale], warmup, reps)
    if "error" in t:
        row["fused_error"] = t["error"]
    else:
        row.update(fused_ms=t["median_ms"], fused_tflops=flops / t["median_ms"] / 1e9, kernel=t["kernel"],
                   n_group=t.get("n_group"))
    if (m, n, k) not in base_cache:
        base_cache[(m, n, k)] = bf16_bench(tessera, "gemm", ["--m", m, "--n", n, "--k", k], warmup, reps)
    base = base_cache[(m, n, k)]
    if "error" in base:
        row["base_error"] = base["error"]
    else:
        row["base_gemm_ms"] = base["median_ms"]
        if "fused_ms" in row:
            row["fused_vs_base"] = row["fused_ms"] / row["base_gemm_ms"]
            if m == 4096:
                row["target_met"] = row["fused_vs_base"] <= 1.10

    bf = torch.bfloat16
    x = torch.randn(m, k, device="cuda", dtype=bf)
    w = torch.randn(k, n, device="cuda", dtype=bf)
    if adapters == 1:
        a = torch.randn(k, rank, device="cuda", dtype=bf)
        b = torch.randn(rank, n, device="cuda", dtype=bf)
        row["torch_impl"] = "x @ W + s * (x @ A) @ B"

        def fn():
            return x @ w + scale * (x @ a) @ b
    else:
        # Weights as a serving system would keep them for this reference: all A side by side,
        # all B stacked; the ids (per batch) become a one-hot mask inside the timed region.
        a_cat = torch.randn(k, adapters * rank, device="cuda", dtype=bf)  # A [n, K, r] as [K, n r]
        b_cat = torch.randn(adapters * rank, n, device="cuda", dtype=bf)  # B [n, r, N] as [n r, N]
        ids = adapter_ids(m, adapters, mix)
        which = torch.arange(adapters, device="cuda", dtype=torch.int32)
        row["torch_impl"] = "dense one-hot: (x @ A_cat masked to each row's adapter) @ B_cat + x @ W"

        def fn():
            mask = (ids[:, None] == which[None, :]).to(bf) * scale  # [M, n]; id -1 matches nothing
            t = (x @ a_cat).view(m, adapters, rank) * mask[:, :, None]
            return torch.addmm(x @ w, t.view(m, adapters * rank), b_cat)
    ms = time_cuda(fn, warmup, reps)
    row.update(torch_ms=ms, torch_tflops=flops / ms / 1e9)
    if "fused_ms" in row:
        row["speedup_vs_torch"] = ms / row["fused_ms"]
    return row


def tables(gemm_rows, lora_rows):
    lines = ["### GEMM (bf16 in, bf16 out) vs torch.matmul (cuBLAS)", "",
             "| M = N = K | kernel | Tessera ms | Tessera TFLOP/s | cuBLAS ms | cuBLAS TFLOP/s | Tessera / cuBLAS (target >= 0.9 sm_90a, 0.8 mma.sync) |",
             "|---:|:---|---:|---:|---:|---:|---:|"]
    for r in gemm_rows:
        ratio = with_target(fmt(r.get("vs_cublas"), ".2f"), r)
        lines.append(f"| {r['m']} | {r.get('kernel', '-')} | {fmt(r.get('tessera_ms'), '.3f')} | {fmt(r.get('tessera_tflops'), '.0f')} | "
                     f"{fmt(r.get('cublas_ms'), '.3f')} | {fmt(r.get('cublas_tflops'), '.0f')} | {ratio} |")
    lines += ["", "### Fused LoRA (bf16, N = K = 4096) vs Tessera's base GEMM and torch", "",
              "| M | r | adapters | mix | fused ms | fused TFLOP/s | base GEMM ms | fused / base (target <= 1.10 at M = 4096) "
              "| torch ms | torch TFLOP/s | torch / fused | n_group |",
              "|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in lora_rows:
        ratio = with_target(fmt(r.get("fused_vs_base"), ".3f"), r)
        lines.append(f"| {r['m']} | {r['rank']} | {r['adapters']} | {r['mix']} | {fmt(r.get('fused_ms'), '.4f')} | "
                     f"{fmt(r.get('fused_tflops'), '.1f')} | {fmt(r.get('base_gemm_ms'), '.4f')} | {ratio} | "
                     f"{fmt(r.get('torch_ms'), '.4f')} | {fmt(r.get('torch_tflops'), '.1f')} | "
                     f"{fmt(r.get('speedup_vs_torch'), '.2f')} | {r.get('n_group', '-')} |")
    errors = [(r, key) for r in gemm_rows + lora_rows for key in ("tessera_error", "fused_error", "base_error") if key in r]
    if errors:
        label = lambda r: f"LoRA M {r['m']} r {r['rank']} adapters {r['adapters']}" if "rank" in r else f"GEMM {r['m']}^3"
        lines += ["", "Errors:"] + [f"- {label(r)}, {key}: {r[key]}" for r, key in errors]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_io_args(ap)
    add_timing_args(ap, 10, 30)
    add_skip_args(ap)
    add_seed_arg(ap)
    add_part_arg(ap)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    props = torch.cuda.get_device_properties(0)
    seed = pick_seed(args.seed)
    version = tessera_version(args.tessera)
    env = run_env(props.name, {"tessera": version, "seed": seed})
    print(device_line(props.name, (version, f"seed {seed}")), flush=True)

    checks = []
    if not args.skip_checks and args.part != "headline":
        gen = torch.Generator(device="cuda").manual_seed(seed)
        cases = [("gemm", (m, n, k, lay)) for (m, n, k) in ((1, 1, 1), (37, 53, 19), (256, 384, 512), (130, 72, 200))
                 for lay in ("row", "col")]
        cases += [("lora", (m, 256, 256, r, ad)) for r in (8, 16, 64, 128) for m in (1, 7, 300) for ad in (None, 3)]
        cases += [("lora", (33, 40, 72, r, ad)) for r in (8, 128) for ad in (None, 3)]
        with tempfile.TemporaryDirectory() as tmp:
            for family, case in cases:
                res = (check_gemm if family == "gemm" else check_lora)(args.tessera, tmp, gen, *case)
                checks.append(res)
                detail = (f"rel_l2 {res['rel_l2']:.2e} max_abs {res['max_abs']:.2e}" if "rel_l2" in res
                          else res.get("error", ""))
                print_check(res, detail)

    gemm_rows, lora_rows = [], []
    if not args.skip_bench:
        for size in split_rows(GEMM_SIZES, HEADLINE_GEMM, args.part):
            gemm_rows.append(bench_gemm(args.tessera, size, args.warmup, args.reps))
            free_cuda()  # the tensors of the case are gone; return their memory before the next
            print(json.dumps(gemm_rows[-1]), flush=True)
        base_cache = {}
        for m, r, adapters, mix in split_rows(LORA_ROWS, HEADLINE_LORA, args.part):
            lora_rows.append(bench_lora(args.tessera, m, r, adapters, mix, base_cache, args.warmup, args.reps))
            free_cuda()
            print(json.dumps(lora_rows[-1]), flush=True)

    passed = sum(c["ok"] for c in checks)
    summary = f"correctness: {passed}/{len(checks)} cases passed (rel L2 <= {TOL}); {time.time() - started:.0f} s"
    table = tables(gemm_rows, lora_rows) if not args.skip_bench else "(timing skipped)"
    write_results(args.out, {"env": env, "checks": checks, "gemm": gemm_rows, "lora": lora_rows},
                  f"{env}\n\n{summary}\n\n{table}\n")
    finish(table, summary, checks)


if __name__ == "__main__":
    main()
