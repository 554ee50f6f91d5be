#!/usr/bin/env python3
"""GPU check and benchmark for Tessera's attention forward, side by side with PyTorch SDPA.

Builds nothing: it drives a `tessera` binary built elsewhere (`cargo build --release`). One run:
  1. correctness on the GPU: `tessera run attention --backend cuda` on random .npy inputs (odd
     sequence lengths, seq 1, seq_q != seq_k causal, GQA/MQA, fully masked rows) against an f64
     reference computed by torch on the GPU; NaN never passes;
  2. timing: `tessera bench attention` (CUDA events, median) vs
     torch.nn.functional.scaled_dot_product_attention (CUDA events, median) for bf16,
     head_dim 64/128/256, causal and not, seq 1k-16k with batch*seq = 16k and heads*head_dim = 2048;
     FLOPs = 4*b*h*s_q*s_k*d, halved for causal.
Writes results.json and results.md to --out and prints the table last.

Usage: python3 benches/gpu/attention.py --tessera target/release/tessera --out results/
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def reference(q, k, v, causal, scale):
    """f64 attention on the GPU; q [b,sq,hq,d], k/v [b,sk,hkv,d]; returns out, lse [b,hq,sq]."""
    q, k, v = (t.double() for t in (q, k, v))
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    k = k.repeat_interleave(g, dim=2)
    v = v.repeat_interleave(g, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if causal:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (sk - sq), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    p = torch.nan_to_num(p, nan=0.0)
    out = torch.einsum("bhqk,bkhd->bqhd", p, v)
    return out, lse


def check_case(tessera, tmp, dtype, d, causal, b, sq, sk, hq, hkv):
    tdt = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    gen = torch.Generator(device="cuda").manual_seed(int.from_bytes(os.urandom(4), "little"))
    q = torch.randn(b, sq, hq, d, device="cuda", generator=gen)
    k = torch.randn(b, sk, hkv, d, device="cuda", generator=gen)
    v = torch.randn(b, sk, hkv, d, device="cuda", generator=gen)
    q, k, v = (t.to(tdt).float() for t in (q, k, v))  # the kernel's rounding, done here too
    paths = {n: os.path.join(tmp, f"{n}.npy") for n in ("q", "k", "v", "o", "lse")}
    for n, t in (("q", q), ("k", k), ("v", v)):
        np.save(paths[n], t.cpu().numpy().astype(np.float32))
    for n in ("o", "lse"):
        if os.path.exists(paths[n]):
            os.remove(paths[n])
    cmd = [tessera, "run", "attention", "--dtype", dtype, "--q", paths["q"], "--k", paths["k"], "--v", paths["v"],
           "--out", paths["o"], "--lse", paths["lse"], "--backend", "cuda"] + (["--causal"] if causal else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    name = f"{dtype} d{d} {'causal' if causal else 'full'} b{b} sq{sq} sk{sk} h{hq}/{hkv}"
    if r.returncode != 0:
        return {"case": name, "ok": False, "error": r.stderr.strip()}
    out = torch.from_numpy(np.load(paths["o"])).cuda().double()
    lse = torch.from_numpy(np.load(paths["lse"])).cuda().double()
    ref, ref_lse = reference(q, k, v, causal, 1.0 / math.sqrt(d))
    non_finite = int((~torch.isfinite(out)).sum())
    rel = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    max_abs = float((out - ref).abs().max()) if out.numel() else 0.0
    masked = torch.isinf(ref_lse)
    lse_ok = bool(torch.equal(torch.isinf(lse) & (lse < 0), masked)) and (
        float((lse[~masked] - ref_lse[~masked]).abs().max()) < 1e-2 if (~masked).any() else True)
    tol = {"bf16": 2e-2, "f16": 5e-3}[dtype]
    ok = non_finite == 0 and rel <= tol and lse_ok
    return {"case": name, "ok": ok, "rel_l2": rel, "max_abs": max_abs, "lse_ok": lse_ok, "non_finite": non_finite}


def time_cuda(fn, warmup=10, reps=50):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def bench_case(tessera, d, causal, seq, total_tokens=16384, hidden=2048):
    b, h = total_tokens // seq, hidden // d
    flops = 4 * b * h * seq * seq * d / (2 if causal else 1)
    cmd = [tessera, "bench", "attention", "--dtype", "bf16", "--head-dim", str(d), "--heads-q", str(h),
           "--batch", str(b), "--seq-q", str(seq), "--warmup", "10", "--reps", "30", "--json"] + (["--causal"] if causal else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    row = {"head_dim": d, "causal": causal, "seq": seq, "batch": b, "heads": h}
    if r.returncode == 0:
        t = json.loads(r.stdout.strip().splitlines()[-1])
        row["tessera_ms"] = t["median_ms"]
        row["tessera_tflops"] = flops / t["median_ms"] / 1e9
    else:
        row["tessera_error"] = r.stderr.strip()[-300:]
    q = torch.randn(b, h, seq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, h, seq, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, h, seq, d, device="cuda", dtype=torch.bfloat16)
    ms = time_cuda(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    row["torch_ms"] = ms
    row["torch_tflops"] = flops / ms / 1e9
    del q, k, v
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", default="target/release/tessera")
    ap.add_argument("--out", default=".")
    ap.add_argument("--quick", action="store_true", help="fewer timing cases")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    props = torch.cuda.get_device_properties(0)
    env = {"device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda,
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    print(f"device: {props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)

    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        grid = [
            ("bf16", 128, True, 2, 300, 300, 4, 4), ("f16", 128, False, 2, 257, 257, 4, 2),
            ("bf16", 64, False, 1, 77, 190, 8, 2), ("f16", 64, True, 1, 190, 77, 4, 1),
            ("bf16", 256, True, 2, 1, 129, 2, 1), ("f16", 256, False, 1, 130, 65, 2, 2),
            ("bf16", 32, True, 1, 65, 65, 2, 2), ("f16", 96, True, 1, 200, 64, 2, 2),
            ("bf16", 192, False, 1, 17, 333, 2, 1), ("bf16", 128, True, 1, 1, 1, 1, 1),
        ]
        for case in grid:
            res = check_case(args.tessera, tmp, *case)
            checks.append(res)
            print(("ok  " if res["ok"] else "FAIL") + f" {res['case']}: " +
                  (f"rel {res['rel_l2']:.2e} max {res['max_abs']:.2e}" if "rel_l2" in res else res.get("error", "")), flush=True)

    seqs = [1024, 4096, 8192] if args.quick else [1024, 2048, 4096, 8192, 16384]
    rows = []
    for d in (64, 128, 256):
        for causal in (False, True):
            for seq in seqs:
                rows.append(bench_case(args.tessera, d, causal, seq))
                print(json.dumps(rows[-1]), flush=True)

    lines = ["| head_dim | causal | seq | batch x heads | Tessera ms | Tessera TFLOP/s | SDPA ms | SDPA TFLOP/s | ratio |",
             "|---:|:---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = f"{r['tessera_ms']:.3f} | {r['tessera_tflops']:.0f}" if "tessera_ms" in r else "error | -"
        ratio = f"{r['tessera_tflops'] / r['torch_tflops']:.2f}" if "tessera_ms" in r else "-"
        lines.append(f"| {r['head_dim']} | {'yes' if r['causal'] else 'no'} | {r['seq']} | {r['batch']} x {r['heads']} | "
                     f"{t} | {r['torch_ms']:.3f} | {r['torch_tflops']:.0f} | {ratio} |")
    passed = sum(c["ok"] for c in checks)
    table = "\n".join(lines)
    summary = f"correctness: {passed}/{len(checks)} cases passed; {time.time() - started:.0f} s"
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"env": env, "checks": checks, "bench": rows}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"{env}\n\n{summary}\n\n{table}\n")
    print("\n" + table + "\n" + summary)
    sys.exit(0 if passed == len(checks) else 1)


if __name__ == "__main__":
    main()
