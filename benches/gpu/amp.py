#!/usr/bin/env python3
"""GPU check and benchmark for Tessera's mixed-precision training kernels (cast, unscale, AdamW),
side by side with PyTorch.

Builds nothing: it drives a `tessera` binary built elsewhere (`cargo build --release`). One run:
  1. correctness on the GPU, through the CLI with `--backend cuda`, bit for bit against torch's own
     conversions and ops on the GPU (inputs are written as f32 .npy, already rounded to the kernel's
     element type, so the CLI's input rounding is exact; outputs come back as f32 .npy of the
     stored values):
     - cast `tessera run cast --from f32 --to bf16|f16|e4m3|e5m2 [--scale S] [--amax-out]` vs
       `(x [* S]).to(dtype)`; to fp8 the value is first clamped to +-448 (e4m3) / +-57344 (e5m2):
       the kernel saturates (infinities included), and torch's fp8 conversion is not guaranteed to
       (versions differ: NaN or inf beyond the limit).
       Inputs: random bit patterns (every class: NaN, inf, subnormals, ties) and wide-range values
       with hand-picked specials (fp8/f16 limits, rounding ties, subnormal boundaries, -0). NaN
       equals NaN (any payload); everything else must have the same f32 bits. amax is compared with
       max |x| over the non-NaN elements (infinities kept, as the kernel's fmaxf does);
     - unscale `tessera run unscale --grads ... --dtypes f16,bf16,f32 --inv-scale S
       --found-inf-out` vs `torch._amp_foreach_non_finite_check_and_unscale_` (called once per
       dtype group, as GradScaler does): values bit for bit, found_inf equal; finite cases, a case
       with an inf and a NaN injected, a 40-tensor mixed list;
     - AdamW `tessera run adamw --params ... --grads ... --grad-dtype bf16 --model-dtype bf16
       --lr 1e-3 --weight-decay 0.01 --step 0 --out-dir DIR` vs a torch float32 reimplementation of
       the exact op order of templates/amp/adamw.cuh (each f32 op computed in f64 and rounded once,
       which is the correctly rounded f32 result on any device; bias corrections through f64 like
       the kernel). Bit-exact is expected; the max ulp difference of master, exp_avg, exp_avg_sq (f32)
       and model (bf16 / f16 ulps) is reported and <= 1 ulp passes. Also f16 grads with an f16
       model, and one case at step 9 with given moments (`--exp-avg/--exp-avg-sq`) and the
       unscale fused into the step (`--inv-scale`).
  2. timing, one run, CUDA events, median of --reps after --warmup launches on both sides (Tessera
     through `tessera bench cast|unscale|adamw --json`, torch in this process):
     - device copy bandwidth: torch `dst.copy_(src)` of 4 GB, GB/s = 2 bytes / time: the ceiling;
     - cast f32 -> bf16 and bf16 -> e4m3 scaled with amax, 256M elements; bytes = n (size_from +
       size_to) (+ 4 + 4 for the scale read and amax written). torch: `y.copy_(x)` for the plain
       cast; for the fp8 one eager and unfused (abs + amax, widen, multiply, clamp, convert), the
       same byte count (what the job needs), so its GB/s is lower than what its kernels move;
     - unscale of 1,000 bf16 tensors totalling 1G elements (unequal lengths, the split of
       `tessera bench`, reproduced by split_sizes below), inv_scale 1 so every repetition sees
       the same data; bytes = 2 n size (read and written in place). torch:
       `torch._amp_foreach_non_finite_check_and_unscale_` on the same list;
     - AdamW on the same 1,000 tensors: Tessera with bf16 grads, f32 master / exp_avg / exp_avg_sq,
       bf16 model copy written (16 GB resident; bytes per element = 2 grad read + 3 * 4 * 2 f32
       read and written + 2 model written = 28); torch `torch.optim.AdamW(fused=True).step()`
       needs params and grads of one dtype, so it runs f32 params with f32 grads and no model copy
       (bytes per element under its own count: 4 grad + 3 * 4 * 2 = 28, the same number; its
       GB/s is reported under that count). For the like-for-like configuration, Tessera also
       runs f32 grads without a model copy (28 bytes per element too).
     Targets: Tessera GB/s >= 90 % of the copy bandwidth, and torch time / Tessera time >= 1.0
     (both sides process the same number of elements).
Writes results.json and results.md to --out and prints the table last. Exits non-zero when a
correctness case fails (the performance targets are reported, not enforced).

The headline kernel (AdamW vs torch's fused AdamW) is timed first, right after the copy bandwidth;
`--part headline` times only it (no checks), `--part rest` runs the checks, the casts and unscale.

Usage: python3 benches/gpu/amp.py --tessera target/release/tessera --out results/
       (--skip-bench: correctness only; --skip-checks: timing only; --total / --tensors / --cast-n
       change the sizes; --backend sim --device cpu: a dry run of the checks on Tessera's CPU
       simulator and CPU torch, no GPU needed, no timing)
"""
import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import torch

from common import (add_io_args, add_part_arg, add_seed_arg, add_skip_args, add_timing_args, cmd_timeout, copy_ms,
                    device_line, finish, fmt, free_cuda, load_npy, pick_seed, print_check, run_cli, run_env, save_npy,
                    shape_error, split_rows, tessera_bench, tessera_version, time_cuda, with_target, write_results)

CMD_TIMEOUT_S = cmd_timeout(900)
# Timed first (`--part headline`: only it): fused multi-tensor AdamW vs torch.optim.AdamW(fused=True).
HEADLINE_KERNELS = ["adamw"]
E4M3_MAX = 448.0
E5M2_MAX = 57344.0
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # the CLI's defaults (tessera run adamw)


def fp8_dtypes():
    return {"e4m3": (torch.float8_e4m3fn, E4M3_MAX), "e5m2": (torch.float8_e5m2, E5M2_MAX)}


def f32_scalar(x):
    """x rounded to f32, as a Python float (exact when passed back to torch as an f32 scalar)."""
    return float(np.float32(x))


# ---- bit comparisons ---------------------------------------------------------------------------

INT_VIEW = {torch.float32: (torch.int32, 0xFFFFFFFF, 0x80000000),
            torch.float16: (torch.int16, 0xFFFF, 0x8000),
            torch.bfloat16: (torch.int16, 0xFFFF, 0x8000)}


def ordered_bits(t, dtype):
    """The bits of t (values representable in dtype) as int64 ordered like the values (-0 = +0)."""
    view, mask, sign = INT_VIEW[dtype]
    bits = t.to(dtype).contiguous().view(view).to(torch.int64) & mask
    return torch.where(bits & sign != 0, -(bits & (sign - 1)), bits)


def ulp_diff(out, ref, dtype):
    """Max distance in ulps of dtype between out and ref (same shape, values of dtype); NaN matches
    NaN, NaN against a number is infinite; 0 for empty tensors."""
    if out.numel() == 0:
        return 0
    nan_o, nan_r = torch.isnan(out), torch.isnan(ref)
    if bool((nan_o ^ nan_r).any()):
        return math.inf
    d = (ordered_bits(out, dtype) - ordered_bits(ref, dtype)).abs()
    d = torch.where(nan_o, torch.zeros_like(d), d)
    return int(d.max())


def bit_mismatches(out, ref):
    """Elements whose f32 bits differ (any NaN equals any NaN; -0 differs from +0)."""
    out, ref = out.float().contiguous(), ref.float().contiguous()
    same = (out.view(torch.int32) == ref.view(torch.int32)) | (torch.isnan(out) & torch.isnan(ref))
    return int((~same).sum())


def first_mismatch(out, ref):
    out, ref = out.float().flatten(), ref.float().flatten()
    same = (out.view(torch.int32) == ref.view(torch.int32)) | (torch.isnan(out) & torch.isnan(ref))
    bad = (~same).nonzero()
    if bad.numel() == 0:
        return ""
    i = int(bad[0])
    return f"first at {i}: got {float(out[i])!r}, expected {float(ref[i])!r}"


# ---- inputs ------------------------------------------------------------------------------------

SPECIALS = [0.0, -0.0, 1.0, -1.0, 448.0, -448.0, 449.0, 463.9, 464.0, 480.0, 1e4, 57344.0, 61439.0,
            61440.0, 65504.0, 65519.0, 65520.0, -65520.0, 1e30, 3e38, 2.0 ** -6, 2.0 ** -7, 2.0 ** -9,
            2.0 ** -10, 3 * 2.0 ** -10, 2.0 ** -14, 2.0 ** -16, 2.0 ** -17, 3 * 2.0 ** -17, 2.0 ** -24,
            2.0 ** -25, 3 * 2.0 ** -26, 1e-40, -1e-45, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -11,
            1 + 3 * 2.0 ** -11, 1.0625, 1.1875, 1.125 + 2.0 ** -20, 240.0, 248.0, 256.0, -272.0, 0.1]


def cast_input(kind, n, gen, device):
    """f32 inputs: `bits` = uniformly random bit patterns (NaN, inf, subnormals all appear);
    `wide` = normal values times 2^[-40, 40) with SPECIALS (and a NaN, no inf) at the front."""
    if kind == "bits":
        bits = torch.randint(-2 ** 31, 2 ** 31, (n,), generator=gen, device=device, dtype=torch.int64)
        x = bits.to(torch.int32).view(torch.float32).clone()
        x[:3] = torch.tensor([math.inf, -math.inf, math.nan], device=device)
        return x
    e = torch.randint(-40, 40, (n,), generator=gen, device=device).float()
    x = torch.randn(n, generator=gen, device=device) * torch.exp2(e)
    specials = torch.tensor(SPECIALS + [math.nan] + [-s for s in SPECIALS], dtype=torch.float32, device=device)
    k = min(n, specials.numel())
    x[:k] = specials[:k]
    return x


def split_sizes(tensors, total):
    """The split of `tessera bench unscale|adamw` (src/bin/tessera/bench_amp.rs): one element each,
    the rest in proportion to w_i = 500 + (7919 i + 13) mod 1000 (rounded down), the remainder one
    each to the first tensors."""
    weights = [500 + (7919 * i + 13) % 1000 for i in range(tensors)]
    s, rest = sum(weights), total - tensors
    sizes = [1 + rest * w // s for w in weights]
    for i in range(total - sum(sizes)):
        sizes[i] += 1
    return sizes


# ---- correctness -------------------------------------------------------------------------------

def cast_reference(x, to, scale):
    """torch's conversion of x [* scale] to `to`, widened to f32 (fp8 saturated first)."""
    v = x * scale if scale is not None else x
    if to in ("bf16", "f16"):
        return v.to(TORCH_DTYPES[to]).float()
    dtype, limit = fp8_dtypes()[to]
    return v.clamp(-limit, limit).to(dtype).float()


def check_cast(ctx, tmp, gen, to, kind, n, scale, amax, shape=None):
    name = f"cast f32->{to} {kind} n{n}" + (f" scale {scale}" if scale is not None else "") + (" amax" if amax else "")
    x = cast_input(kind, n, gen, ctx.device)
    if shape is not None:
        x = x.reshape(shape)
    px, py, pa = (os.path.join(tmp, f) for f in ("x.npy", "y.npy", "amax.npy"))
    save_npy(px, x)
    cmd = [ctx.tessera, "run", "cast", "--from", "f32", "--to", to, "--x", px, "--out", py, "--backend", ctx.backend]
    if scale is not None:
        cmd += ["--scale", repr(scale)]
    if amax:
        cmd += ["--amax-out", pa]
    _, err = run_cli(cmd, CMD_TIMEOUT_S)
    if err:
        return {"case": name, "ok": False, "error": err}
    y = load_npy(py, ctx.device)
    ref = cast_reference(x, to, scale)
    err = shape_error(y, ref)
    if err:
        return {"case": name, "ok": False, "error": err}
    bad = bit_mismatches(y, ref)
    res = {"case": name, "mismatches": bad, "detail": first_mismatch(y, ref)}
    ok = bad == 0
    if amax:
        got = float(load_npy(pa, ctx.device).flatten()[0])
        want = float(torch.nan_to_num(x.abs(), nan=0.0, posinf=math.inf).max())
        res.update(amax=got, amax_ref=want)
        ok = ok and got == want
    res["ok"] = ok
    return res


def unscale_reference(grads, inv_scale, device):
    """torch._amp_foreach_non_finite_check_and_unscale_ on copies, one call per dtype group."""
    out = [g.clone() for g in grads]
    found = torch.zeros(1, dtype=torch.float32, device=device)
    inv = torch.full((1,), inv_scale, dtype=torch.float32, device=device)
    for dtype in {g.dtype for g in out}:
        group = [g for g in out if g.dtype == dtype]
        torch._amp_foreach_non_finite_check_and_unscale_(group, found, inv)
    return out, float(found[0])


def check_unscale(ctx, tmp, gen, name, sizes, dtypes, inv_scale, inject):
    grads = []
    for i, (n, dt) in enumerate(zip(sizes, dtypes)):
        e = torch.randint(-20, 12, (n,), generator=gen, device=ctx.device).float()
        g = (torch.randn(n, generator=gen, device=ctx.device) * torch.exp2(e)).to(TORCH_DTYPES[dt])
        if inject and i == 1 and n > 2:
            g[n // 2] = math.inf
            g[-1] = math.nan
        grads.append(g)
    gp = [os.path.join(tmp, f"g{i}.npy") for i in range(len(grads))]
    op = [os.path.join(tmp, f"o{i}.npy") for i in range(len(grads))]
    pf = os.path.join(tmp, "found_inf.npy")
    for p, g in zip(gp, grads):
        save_npy(p, g.float())
    cmd = [ctx.tessera, "run", "unscale", "--grads", ",".join(gp), "--dtypes", ",".join(dtypes),
           "--inv-scale", repr(inv_scale), "--out", ",".join(op), "--found-inf-out", pf, "--backend", ctx.backend]
    _, err = run_cli(cmd, CMD_TIMEOUT_S)
    if err:
        return {"case": name, "ok": False, "error": err}
    ref, found_ref = unscale_reference(grads, inv_scale, ctx.device)
    bad, detail = 0, ""
    for p, r in zip(op, ref):
        out = load_npy(p, ctx.device)
        if out.numel() != r.numel():
            return {"case": name, "ok": False, "error": f"{p}: {out.numel()} elements, expected {r.numel()}"}
        m = bit_mismatches(out.flatten(), r.float().flatten())
        if m and not detail:
            detail = f"{os.path.basename(p)}: " + first_mismatch(out, r)
        bad += m
    found = float(load_npy(pf, ctx.device).flatten()[0])
    return {"case": name, "ok": bad == 0 and found == found_ref, "mismatches": bad, "detail": detail,
            "found_inf": found, "found_inf_ref": found_ref}


def powi_exact(b, n):
    """b^n in f64 by square-and-multiply from the exponent's least significant bit (adamw.cuh)."""
    r = 1.0
    while n:
        if n & 1:
            r *= b
        b *= b
        n >>= 1
    return r


def adamw_scalars(lr, wd, step):
    """The kernel's per-step scalars for the new step count `step` (adamw.cuh, AdamWScalars)."""
    f = np.float32
    b1, b2 = f(BETA1), f(BETA2)
    bc1 = f(1.0 - powi_exact(float(b1), step))
    bc2 = f(1.0 - powi_exact(float(b2), step))
    return {"step_size": float(f(lr) / bc1), "bc2_sqrt": float(np.sqrt(bc2)), "lr_wd": float(f(lr) * f(wd)),
            "beta1": float(b1), "beta2": float(b2), "omb1": float(f(1.0) - b1), "omb2": float(f(1.0) - b2),
            "eps": float(f(EPS))}


def adamw_reference(p, g, m, v, lr, wd, step, inv_scale, model_dtype):
    """One step as f32 ops, one per line of adamw.cuh, in its order. Each op is computed in f64 on
    f32 operands and rounded to f32 once, which is exactly the correctly rounded f32 result for
    + - * / and sqrt (53 >= 2 * 24 + 2 bits), whatever the device's f32 kernels do (torch's CPU
    sqrt is not always correctly rounded, and torch turns a division by a scalar into a multiply by
    its reciprocal: divisions here are by full tensors)."""
    s = adamw_scalars(lr, wd, step)

    def op(fn, *xs):
        return fn(*(x.double() if torch.is_tensor(x) else x for x in xs)).float()

    def div(a, b):
        b = b if torch.is_tensor(b) else torch.full_like(a, b)
        return op(torch.div, a, b)

    g = g.float()
    if inv_scale is not None:
        g = op(torch.mul, g, f32_scalar(inv_scale))
    t = op(torch.mul, p, s["lr_wd"])
    p = op(torch.sub, p, t)
    a = op(torch.mul, m, s["beta1"])
    b = op(torch.mul, g, s["omb1"])
    m = op(torch.add, a, b)
    gg = op(torch.mul, g, g)
    a = op(torch.mul, v, s["beta2"])
    b = op(torch.mul, gg, s["omb2"])
    v = op(torch.add, a, b)
    q = op(torch.sqrt, v)
    q = div(q, s["bc2_sqrt"])
    denom = op(torch.add, q, s["eps"])
    t = op(torch.mul, m, s["step_size"])
    t = div(t, denom)
    p = op(torch.sub, p, t)
    return {"master": p, "exp_avg": m, "exp_avg_sq": v, "model": p.to(TORCH_DTYPES[model_dtype])}


def check_adamw(ctx, tmp, gen, name, sizes, grad_dtype, model_dtype, step=0, moments=False, inv_scale=None):
    lr, wd = "1e-3", "0.01"
    params, grads, ms, vs = [], [], [], []
    for n in sizes:
        params.append(torch.randn(n, generator=gen, device=ctx.device))
        g = torch.randn(n, generator=gen, device=ctx.device) * (1.0 / inv_scale if inv_scale else 1.0)
        grads.append(g.to(TORCH_DTYPES[grad_dtype]))
        if moments:
            ms.append(torch.randn(n, generator=gen, device=ctx.device) * 0.1)
            vs.append(torch.rand(n, generator=gen, device=ctx.device) * 0.01)
        else:
            ms.append(torch.zeros(n, device=ctx.device))
            vs.append(torch.zeros(n, device=ctx.device))
    files = {}
    for what, ts in (("p", params), ("g", grads), ("m", ms), ("v", vs)):
        files[what] = [os.path.join(tmp, f"{what}{i}.npy") for i in range(len(ts))]
        for path, t in zip(files[what], ts):
            save_npy(path, t.float())
    out_dir = os.path.join(tmp, "adamw_out")
    cmd = [ctx.tessera, "run", "adamw", "--params", ",".join(files["p"]), "--grads", ",".join(files["g"]),
           "--grad-dtype", grad_dtype, "--model-dtype", model_dtype, "--lr", lr, "--weight-decay", wd,
           "--step", step, "--out-dir", out_dir, "--backend", ctx.backend]
    if moments:
        cmd += ["--exp-avg", ",".join(files["m"]), "--exp-avg-sq", ",".join(files["v"])]
    if inv_scale is not None:
        cmd += ["--inv-scale", repr(inv_scale)]
    _, err = run_cli(cmd, CMD_TIMEOUT_S)
    if err:
        return {"case": name, "ok": False, "error": err}
    ulps = {"master": 0, "exp_avg": 0, "exp_avg_sq": 0, "model": 0}
    for i in range(len(sizes)):
        ref = adamw_reference(params[i], grads[i], ms[i], vs[i], float(lr), float(wd), step + 1, inv_scale,
                              model_dtype)
        for what in ulps:
            path = os.path.join(out_dir, f"{what}{i}.npy")
            if not os.path.exists(path):
                return {"case": name, "ok": False, "error": f"missing output {path}"}
            out = load_npy(path, ctx.device).flatten()
            if out.numel() != sizes[i]:
                return {"case": name, "ok": False, "error": f"{path}: {out.numel()} elements, expected {sizes[i]}"}
            dtype = TORCH_DTYPES[model_dtype] if what == "model" else torch.float32
            ulps[what] = max(ulps[what], ulp_diff(out, ref[what].float(), dtype))
    worst = max(ulps.values())
    return {"case": name, "ok": worst <= 1, "max_ulp": ulps, "bit_exact": worst == 0}


def run_checks(ctx, seed):
    gen = torch.Generator(device=ctx.device).manual_seed(seed)
    checks = []

    def record(res):
        checks.append(res)
        if "error" in res:
            detail = res["error"]
        elif "max_ulp" in res:
            detail = "max ulp " + ", ".join(f"{k} {v}" for k, v in res["max_ulp"].items())
        else:
            detail = f"{res['mismatches']} mismatches"
            if "amax" in res:
                detail += f", amax {res['amax']!r} (torch {res['amax_ref']!r})"
            if "found_inf" in res:
                detail += f", found_inf {res['found_inf']} (torch {res['found_inf_ref']})"
            if res.get("detail"):
                detail += f"; {res['detail']}"
        print_check(res, detail)

    scale = f32_scalar(0.37)
    with tempfile.TemporaryDirectory() as tmp:
        for to in ("bf16", "f16", "e4m3", "e5m2"):
            for kind in ("bits", "wide"):
                record(check_cast(ctx, tmp, gen, to, kind, 100_003, None, False))
                record(check_cast(ctx, tmp, gen, to, kind, 65_537, scale, True))
            record(check_cast(ctx, tmp, gen, to, "wide", 37 * 129, None, True, shape=(37, 129)))
            record(check_cast(ctx, tmp, gen, to, "wide", 1, scale, True))

        mixed = ["f16", "bf16", "f32"]
        record(check_unscale(ctx, tmp, gen, "unscale f16,bf16,f32 inv 2^-10", [1, 4097, 70_001], mixed,
                             2.0 ** -10, False))
        record(check_unscale(ctx, tmp, gen, "unscale f16,bf16,f32 inv 1/3000", [33, 8191, 65_536], mixed,
                             f32_scalar(1 / 3000), False))
        record(check_unscale(ctx, tmp, gen, "unscale inf + NaN injected", [5, 10_007, 3], mixed,
                             f32_scalar(1 / 65536), True))
        sizes = split_sizes(40, 200_000)
        record(check_unscale(ctx, tmp, gen, "unscale 40 tensors mixed", sizes, [mixed[i % 3] for i in range(40)],
                             f32_scalar(0.125), False))

        record(check_adamw(ctx, tmp, gen, "adamw bf16 grads, bf16 model, step 0", [1, 4099, 65_537], "bf16", "bf16"))
        record(check_adamw(ctx, tmp, gen, "adamw f16 grads, f16 model, step 0", [7, 2048, 30_001], "f16", "f16"))
        record(check_adamw(ctx, tmp, gen, "adamw f32 grads, bf16 model, step 9, moments, inv_scale 2^-12",
                           [3, 5000, 40_000], "f32", "bf16", step=9, moments=True, inv_scale=2.0 ** -12))
        record(check_adamw(ctx, tmp, gen, "adamw bf16 grads, 30 tensors", split_sizes(30, 100_000), "bf16", "bf16"))
    return checks


# ---- timing ------------------------------------------------------------------------------------

def gbps(nbytes, ms):
    return nbytes / (ms * 1e-3) / 1e9


def bench_copy(warmup, reps, nbytes=4 * 10 ** 9):
    ms = copy_ms(lambda: torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device="cuda"), warmup, reps)
    return {"bytes": 2 * nbytes, "ms": ms, "gbps": gbps(2 * nbytes, ms)}


def row_from(name, config, t, torch_ms, torch_bytes, copy_gbps, torch_impl):
    row = {"name": name, "config": config, "torch_impl": torch_impl, "torch_ms": torch_ms,
           "torch_bytes": torch_bytes, "torch_gbps": gbps(torch_bytes, torch_ms) if torch_ms else None}
    if "error" in t:
        row["tessera_error"] = t["error"]
        return row
    row.update(tessera_ms=t["median_ms"], tessera_min_ms=t["min_ms"], tessera_max_ms=t["max_ms"],
               tessera_bytes=t["bytes"], tessera_gbps=t["gbps"], kernel=t["kernel"], tile=t.get("tile"))
    row["of_copy"] = t["gbps"] / copy_gbps
    row["copy_target_met"] = row["of_copy"] >= 0.9
    if torch_ms:
        row["torch_over_tessera"] = torch_ms / t["median_ms"]
        row["torch_target_met"] = row["torch_over_tessera"] >= 1.0
    return row


def bench_cast(tessera, n, copy_gbps, warmup, reps):
    rows = []
    t = tessera_bench(tessera, "cast", ["--from", "f32", "--to", "bf16", "--n", n], warmup, reps, CMD_TIMEOUT_S)
    x = torch.randn(n, device="cuda")
    y = torch.empty(n, device="cuda", dtype=torch.bfloat16)
    ms = time_cuda(lambda: y.copy_(x), warmup, reps)
    del x, y
    free_cuda()
    rows.append(row_from("cast f32->bf16", f"n {n}", t, ms, n * 6, copy_gbps, "y.copy_(x)"))
    print(json.dumps(rows[-1]), flush=True)

    t = tessera_bench(tessera, "cast", ["--from", "bf16", "--to", "e4m3", "--n", n, "--scaled", "--amax"], warmup, reps,
                      CMD_TIMEOUT_S)
    x = torch.randn(n, device="cuda").to(torch.bfloat16)
    y = torch.empty(n, device="cuda", dtype=torch.float8_e4m3fn)
    scale = torch.full((), 1.5, device="cuda")
    amax = torch.zeros((), device="cuda", dtype=torch.bfloat16)  # max |x| of bf16 values is a bf16 value

    def fp8_cast():
        torch.amax(x.abs(), dim=0, out=amax)
        y.copy_(x.float().mul_(scale).clamp_(-E4M3_MAX, E4M3_MAX))
    ms = time_cuda(fp8_cast, warmup, reps)
    del x, y
    free_cuda()
    rows.append(row_from("cast bf16->e4m3 scaled+amax", f"n {n}", t, ms, n * 3 + 8, copy_gbps,
                         "eager: amax(|x|); y.copy_((x.float() * s).clamp(+-448))"))
    print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_unscale(tessera, tensors, total, copy_gbps, warmup, reps):
    t = tessera_bench(tessera, "unscale", ["--tensors", tensors, "--total", total, "--dtype", "bf16"], warmup, reps,
                      CMD_TIMEOUT_S)
    grads = [torch.randn(n, device="cuda").to(torch.bfloat16) for n in split_sizes(tensors, total)]
    found = torch.zeros(1, device="cuda")
    inv = torch.ones(1, device="cuda")
    ms = time_cuda(lambda: torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv), warmup, reps)
    del grads
    free_cuda()
    row = row_from("unscale bf16", f"{tensors} tensors, {total} elements", t, ms, 4 * total, copy_gbps,
                   "torch._amp_foreach_non_finite_check_and_unscale_")
    print(json.dumps(row), flush=True)
    return [row]


def bench_adamw(tessera, tensors, total, copy_gbps, warmup, reps):
    sizes = split_sizes(tensors, total)
    params = [torch.nn.Parameter(torch.randn(n, device="cuda")) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(BETA1, BETA2), eps=EPS, weight_decay=0.01, fused=True)
    ms = time_cuda(opt.step, warmup, reps)
    del opt, params
    free_cuda()
    impl = "torch.optim.AdamW(fused=True).step(), f32 params and grads, no model copy"
    rows = []
    for grad, model in (("bf16", "bf16"), ("f32", "none")):
        t = tessera_bench(tessera, "adamw", ["--tensors", tensors, "--total", total, "--grad-dtype", grad,
                                              "--model-dtype", model], warmup, reps, CMD_TIMEOUT_S)
        rows.append(row_from(f"adamw {grad} grads, model {model}", f"{tensors} tensors, {total} elements", t, ms,
                             28 * total, copy_gbps, impl))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(copy, rows):
    lines = ["### Mixed-precision training kernels vs torch (effective bandwidth)", "",
             f"Device copy (torch `dst.copy_(src)`, {copy['bytes'] / 2 / 1e9:g} GB): "
             f"{copy['ms']:.3f} ms, {copy['gbps']:.0f} GB/s (bytes read + written).", "",
             "| kernel | size | Tessera ms | Tessera GB/s | % of copy (target >= 90) | torch ms | torch GB/s "
             "| torch / Tessera time (target >= 1.0) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        of_copy = with_target(fmt(100 * r["of_copy"], ".1f") if "of_copy" in r else "-", r, "copy_target_met")
        ratio = with_target(fmt(r.get("torch_over_tessera"), ".2f"), r, "torch_target_met")
        lines.append(f"| {r['name']} | {r['config']} | {fmt(r.get('tessera_ms'), '.3f')} | "
                     f"{fmt(r.get('tessera_gbps'), '.0f')} | {of_copy} | {fmt(r.get('torch_ms'), '.3f')} | "
                     f"{fmt(r.get('torch_gbps'), '.0f')} | {ratio} |")
    lines += ["", "Bytes: cast n (size_from + size_to) (+ 8 with scale and amax); unscale 2 n size; AdamW 28 per "
              "element on both sides (Tessera bf16: 2 grad + 24 master/m/v + 2 model; f32: 4 + 24; torch: "
              "4 grad + 24). torch implementations:"]
    lines += [f"- {r['name']}: {r['torch_impl']}" for r in rows]
    errors = [r for r in rows if "tessera_error" in r]
    if errors:
        lines += ["", "Errors:"] + [f"- {r['name']}: {r['tessera_error']}" for r in errors]
    return "\n".join(lines)


class Context:
    def __init__(self, tessera, backend, device):
        self.tessera, self.backend, self.device = tessera, backend, device


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_io_args(ap)
    add_timing_args(ap, 10, 30)
    ap.add_argument("--cast-n", type=int, default=256 * 2 ** 20, help="elements of the timed casts")
    ap.add_argument("--tensors", type=int, default=1000, help="tensors of the timed unscale / AdamW")
    ap.add_argument("--total", type=int, default=2 ** 30, help="elements over those tensors")
    add_skip_args(ap)
    add_seed_arg(ap)
    add_part_arg(ap)
    ap.add_argument("--backend", default="cuda", choices=["cuda", "sim"],
                    help="the CLI backend of the checks (sim: a dry run without a GPU, implies --skip-bench)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="torch device of the references")
    args = ap.parse_args()
    if args.backend == "sim":
        args.skip_bench = True
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    seed = pick_seed(args.seed)
    version = tessera_version(args.tessera)
    device_name = torch.cuda.get_device_properties(0).name if args.device == "cuda" else "cpu"
    env = run_env(device_name, {"tessera": version, "seed": seed, "backend": args.backend})
    print(device_line(device_name, (version, f"seed {seed}")), flush=True)

    run_checks_now = not args.skip_checks and args.part != "headline"
    checks = run_checks(Context(args.tessera, args.backend, args.device), seed) if run_checks_now else []

    copy, rows = None, []
    if not args.skip_bench:
        free_cuda()
        copy = bench_copy(args.warmup, args.reps)
        print(json.dumps({"copy": copy}), flush=True)
        timed = {
            "cast": lambda: bench_cast(args.tessera, args.cast_n, copy["gbps"], args.warmup, args.reps),
            "unscale": lambda: bench_unscale(args.tessera, args.tensors, args.total, copy["gbps"], args.warmup,
                                             args.reps),
            "adamw": lambda: bench_adamw(args.tessera, args.tensors, args.total, copy["gbps"], args.warmup, args.reps),
        }
        for name in split_rows(list(timed), HEADLINE_KERNELS, args.part):
            rows += timed[name]()

    passed = sum(c["ok"] for c in checks)
    summary = (f"correctness: {passed}/{len(checks)} cases passed (bit-exact casts and unscale, AdamW <= 1 ulp); "
               f"{time.time() - started:.0f} s")
    text = table(copy, rows) if copy is not None else "(timing skipped)"
    write_results(args.out, {"env": env, "checks": checks, "copy": copy, "bench": rows},
                  f"{env}\n\n{summary}\n\n{text}\n")
    finish(text, summary, checks)


if __name__ == "__main__":
    main()
