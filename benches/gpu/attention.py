#!/usr/bin/env python3
"""GPU check and benchmark for Tessera's attention forward, side by side with PyTorch SDPA.

Builds nothing: it drives a `tessera` binary built elsewhere (`cargo build --release`). One run:
  1. correctness on the GPU: `tessera run attention --backend cuda` on random .npy inputs (odd
     sequence lengths, seq 1, seq_q != seq_k causal, GQA/MQA, fully masked rows, more query tiles
     than multiprocessors) against an f64 reference computed by torch on the GPU; NaN never passes.
     On a compute-capability 9.0 GPU (H100/H200) the plain head_dim 64/128/256 cases run the
     sm_90a TMA + wgmma kernel, the others the mma.sync kernel: each case records the kernel
     `tessera run` printed on stderr and its `path` (`sm90a` when the name carries `_sm90a_` and no
     fallback note was printed, else `mma.sync`) beside the path expected on this GPU;
  2. timing, for bf16, head_dim 64/128/256, causal and not, seq 1k-16k with batch*seq = 16k and
     heads*head_dim = 2048, all CUDA events and medians:
       - `tessera bench attention` (the launcher's choice: sm_90a on an H100/H200),
       - `tessera bench attention --path mma-sync` (the mma.sync kernel, its default tile),
       - torch.nn.functional.scaled_dot_product_attention pinned to each backend with
         torch.nn.attention.sdpa_kernel: FLASH_ATTENTION, CUDNN_ATTENTION, EFFICIENT_ATTENTION
         (a backend that raises for a shape is recorded as n/a with the reason); torch's host
         dispatch is hidden behind a GPU sleep queued before each start event, so its times are
         device times like Tessera's;
     FLOPs = 4*b*h*s_q*s_k*d, halved for causal; per row the ratios Tessera (auto) / fastest SDPA
     backend and Tessera (auto) / Tessera (mma.sync), both in throughput.
Targets (issue): bf16, head_dim 128, seq 8k, non-causal on an H200: Tessera (auto) >= 600 TFLOP/s
and >= 1.0x the fastest SDPA backend.
Writes results.json and results.md to --out and prints the table last.

results.json: {"env", "checks": [{"case", "ok", "rel_l2", "max_abs", "lse_ok", "non_finite", "kernel",
  "path", "expected_path", "note"?, "error"?}], "bench": [row], "target": {...}}; a bench row keeps
  the old fields (head_dim, causal, seq, batch, heads, tessera_ms, tessera_tflops, torch_ms,
  torch_tflops: torch = the fastest SDPA backend) and adds flops, tessera_kernel, tessera_path,
  tessera_note?, tessera_mma_sync_{ms,tflops,kernel,path}, sdpa {backend: {ms, tflops} | {error}},
  torch_backend, ratio_vs_sdpa, ratio_vs_mma_sync (each error as *_error).

The headline rows (d128 seq 8k, non-causal then causal) are timed first; `--part headline` times
only them (no checks), `--part rest` runs the checks and every other row.

Usage: python3 benches/gpu/attention.py --tessera target/release/tessera --out results/
       [--quick] [--warmup 10] [--reps 30] [--part all|headline|rest]
"""
import argparse
import json
import math
import os
import re
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F

from common import (add_io_args, add_part_arg, add_timing_args, cmd_timeout, device_line, error_stats, finish, load_npy,
                    parse_last_json, print_check, random_seed, remove_files, run_env, run_process, save_npy, split_rows,
                    time_cuda, write_results)

CMD_TIMEOUT_S = cmd_timeout(180)
# Head dimensions the sm_90a kernel covers (plain attention, no explicit tile, compute capability 9.0).
SM90A_HEAD_DIMS = (64, 128, 256)
FALLBACK_NOTE = "sm_90a attention kernel not used"
# About 1 ms of GPU sleep at H100/H200 clocks: longer than torch's host dispatch of one SDPA call.
SLEEP_CYCLES = 2_000_000
SDPA_BACKENDS = (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"))
# What a pinned backend raises for a shape it does not take (or a torch without it).
SDPA_ERRORS = (RuntimeError, NotImplementedError, ValueError, TypeError)
TARGET = {"head_dim": 128, "causal": False, "seq": 8192, "tflops": 600.0, "vs_sdpa": 1.0}
# The headline rows, (head_dim, causal, seq), timed first: the target row and its causal twin.
HEADLINE_ROWS = [(128, False, 8192), (128, True, 8192)]
TARGET_TEXT = ("bf16, head_dim 128, seq 8k, non-causal on an H200: Tessera (auto, sm_90a) >= 600 TFLOP/s "
               "and >= 1.0x the fastest SDPA backend")


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


def is_sm90a_gpu():
    return torch.cuda.get_device_capability(0) == (9, 0)


def expected_path(d, sm90a_gpu):
    """The kernel plain attention should take on this GPU (`tessera run` gives no tile)."""
    return "sm90a" if sm90a_gpu and d in SM90A_HEAD_DIMS else "mma.sync"


def run_path(stderr):
    """(kernel, path, note) from `tessera run attention`'s stderr: it prints `attention KERNEL on ...`
    (the spec's kernel) and, when the sm_90a kernel could not be used, a note before falling back."""
    m = re.search(r"^attention (\S+) on ", stderr, re.M)
    kernel = m.group(1) if m else None
    note = next((line.strip() for line in stderr.splitlines() if FALLBACK_NOTE in line), None)
    if kernel is None:
        return None, None, note
    return kernel, ("sm90a" if "_sm90a_" in kernel and note is None else "mma.sync"), note


def check_case(tessera, tmp, sm90a_gpu, dtype, d, causal, b, sq, sk, hq, hkv):
    tdt = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    gen = torch.Generator(device="cuda").manual_seed(random_seed())
    q = torch.randn(b, sq, hq, d, device="cuda", generator=gen)
    k = torch.randn(b, sk, hkv, d, device="cuda", generator=gen)
    v = torch.randn(b, sk, hkv, d, device="cuda", generator=gen)
    q, k, v = (t.to(tdt).float() for t in (q, k, v))  # the kernel's rounding, done here too
    paths = {n: os.path.join(tmp, f"{n}.npy") for n in ("q", "k", "v", "o", "lse")}
    for n, t in (("q", q), ("k", k), ("v", v)):
        save_npy(paths[n], t)
    remove_files((paths["o"], paths["lse"]))
    cmd = [tessera, "run", "attention", "--dtype", dtype, "--q", paths["q"], "--k", paths["k"], "--v", paths["v"],
           "--out", paths["o"], "--lse", paths["lse"], "--backend", "cuda"] + (["--causal"] if causal else [])
    name = f"{dtype} d{d} {'causal' if causal else 'full'} b{b} sq{sq} sk{sk} h{hq}/{hkv}"
    res = {"case": name, "expected_path": expected_path(d, sm90a_gpu)}
    r, err = run_process(cmd, CMD_TIMEOUT_S)
    if err:
        res.update(ok=False, error=err, kernel=None, path=None)
        return res
    res["kernel"], res["path"], note = run_path(r.stderr)
    if note:
        res["note"] = note
    if r.returncode != 0:
        res.update(ok=False, error=r.stderr.strip()[-500:])
        return res
    out = load_npy(paths["o"], "cuda").double()
    lse = load_npy(paths["lse"], "cuda").double()
    ref, ref_lse = reference(q, k, v, causal, 1.0 / math.sqrt(d))
    non_finite, rel, max_abs = error_stats(out, ref, nan_if_non_finite=False)
    masked = torch.isinf(ref_lse)
    lse_ok = bool(torch.equal(torch.isinf(lse) & (lse < 0), masked)) and (
        float((lse[~masked] - ref_lse[~masked]).abs().max()) < 1e-2 if (~masked).any() else True)
    tol = {"bf16": 2e-2, "f16": 5e-3}[dtype]
    ok = non_finite == 0 and rel <= tol and lse_ok
    res.update(ok=ok, rel_l2=rel, max_abs=max_abs, lse_ok=lse_ok, non_finite=non_finite)
    return res


# (dtype, head_dim, causal, batch, seq_q, seq_k, heads_q, heads_kv). Head dims 64/128/256 (the
# sm_90a kernel on an H100/H200) causal and not, sequences that are not multiples of 128, GQA/MQA,
# seq_q != seq_k both ways, seq 1, and shapes with more 128-row query tiles than an H200 has
# multiprocessors (the persistent sm_90a grid loops); 32/96/192: the mma.sync kernel only.
CHECK_CASES = [
    ("bf16", 128, True, 2, 300, 300, 4, 4), ("f16", 128, False, 2, 257, 257, 4, 2),
    ("bf16", 64, False, 1, 77, 190, 8, 2), ("f16", 64, True, 1, 190, 77, 4, 1),
    ("bf16", 256, True, 2, 1, 129, 2, 1), ("f16", 256, False, 1, 130, 65, 2, 2),
    ("bf16", 32, True, 1, 65, 65, 2, 2), ("f16", 96, True, 1, 200, 64, 2, 2),
    ("bf16", 192, False, 1, 17, 333, 2, 1), ("bf16", 128, True, 1, 1, 1, 1, 1),
    ("bf16", 128, False, 2, 2047, 2047, 8, 2), ("bf16", 64, True, 2, 1000, 1100, 16, 4),
    ("bf16", 256, True, 1, 700, 900, 8, 2), ("f16", 256, False, 2, 513, 383, 4, 4),
]


def short(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def sdpa_backends():
    """[(name, context factory or None, reason)]: each SDPA backend this torch can pin."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError as e:
        return [(name, None, f"torch.nn.attention.sdpa_kernel unavailable: {e}") for name, _ in SDPA_BACKENDS]
    out = []
    for name, enum in SDPA_BACKENDS:
        backend = getattr(SDPBackend, enum, None)
        if backend is None:
            out.append((name, None, f"SDPBackend.{enum} not in torch {torch.__version__}"))
        else:
            out.append((name, (lambda b=backend: sdpa_kernel(b)), None))
    return out


def time_sdpa(q, k, v, causal, flops, context, warmup, reps):
    """One pinned SDPA backend: {"ms", "tflops"}, or {"error"} when it raises for this shape."""
    fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
    try:
        with context():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    fn()
                    torch.cuda.synchronize()
                except SDPA_ERRORS as e:
                    why = [str(w.message) for w in caught]
                    return {"error": short("; ".join([str(e).splitlines()[0] if str(e) else type(e).__name__] + why))}
            ms = time_cuda(fn, warmup, reps, sleep_cycles=SLEEP_CYCLES)  # device time, host dispatch hidden
    except SDPA_ERRORS as e:
        return {"error": short(f"{type(e).__name__}: {e}")}
    return {"ms": ms, "tflops": flops / ms / 1e9}


def tessera_path_bench(tessera, d, causal, b, h, seq, warmup, reps, path):
    """`tessera bench attention ... --path PATH --json`: {"ms", "kernel", "path", "note"?} or {"error"}."""
    cmd = [tessera, "bench", "attention", "--dtype", "bf16", "--head-dim", str(d), "--heads-q", str(h),
           "--batch", str(b), "--seq-q", str(seq), "--warmup", str(warmup), "--reps", str(reps), "--json"]
    cmd += (["--causal"] if causal else []) + (["--path", path] if path != "auto" else [])
    r, err = run_process(cmd, CMD_TIMEOUT_S)
    if err:
        return {"error": err}
    if r.returncode != 0:
        return {"error": short(r.stderr.strip() or r.stdout.strip(), 500)}
    t, err = parse_last_json(r.stdout)
    if err:
        return {"error": short(err)}
    kernel = t.get("kernel") or ""
    out = {"ms": t["median_ms"], "kernel": kernel,
           "path": t.get("path") or ("sm90a" if "_sm90a_" in kernel else "mma.sync")}
    note = next((line.strip() for line in r.stderr.splitlines() if "note:" in line), None)
    if note:
        out["note"] = note
    return out


def bench_case(tessera, backends, d, causal, seq, warmup, reps, total_tokens=16384, hidden=2048):
    b, h = total_tokens // seq, hidden // d
    flops = 4 * b * h * seq * seq * d / (2 if causal else 1)
    row = {"head_dim": d, "causal": causal, "seq": seq, "batch": b, "heads": h, "flops": flops}
    auto = tessera_path_bench(tessera, d, causal, b, h, seq, warmup, reps, "auto")
    if "error" in auto:
        row["tessera_error"] = auto["error"]
    else:
        row.update(tessera_ms=auto["ms"], tessera_tflops=flops / auto["ms"] / 1e9, tessera_kernel=auto["kernel"],
                   tessera_path=auto["path"])
        if "note" in auto:
            row["tessera_note"] = auto["note"]
    mma = tessera_path_bench(tessera, d, causal, b, h, seq, warmup, reps, "mma-sync")
    if "error" in mma:
        row["tessera_mma_sync_error"] = mma["error"]
    else:
        row.update(tessera_mma_sync_ms=mma["ms"], tessera_mma_sync_tflops=flops / mma["ms"] / 1e9,
                   tessera_mma_sync_kernel=mma["kernel"], tessera_mma_sync_path=mma["path"])
    q = torch.randn(b, h, seq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, h, seq, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, h, seq, d, device="cuda", dtype=torch.bfloat16)
    row["sdpa"] = {}
    for name, context, reason in backends:
        row["sdpa"][name] = {"error": reason} if context is None else time_sdpa(q, k, v, causal, flops, context,
                                                                                  warmup, reps)
    del q, k, v
    torch.cuda.empty_cache()
    timed = [(r["ms"], name) for name, r in row["sdpa"].items() if "ms" in r]
    if timed:
        ms, name = min(timed)
        row.update(torch_ms=ms, torch_tflops=flops / ms / 1e9, torch_backend=name)
        if "tessera_ms" in row:
            row["ratio_vs_sdpa"] = ms / row["tessera_ms"]
    else:
        row["torch_error"] = "no SDPA backend ran this shape"
    if "tessera_ms" in row and "tessera_mma_sync_ms" in row:
        row["ratio_vs_mma_sync"] = row["tessera_mma_sync_ms"] / row["tessera_ms"]
    return row


def target_status(rows):
    """The issue's targets on the bf16 d128 seq 8k non-causal row."""
    key = [r for r in rows if r.get("head_dim") == TARGET["head_dim"] and r.get("causal") == TARGET["causal"]
           and r.get("seq") == TARGET["seq"]]
    status = {"text": TARGET_TEXT, "tflops": None, "ratio_vs_sdpa": None, "tflops_met": None, "vs_sdpa_met": None,
              "met": None}
    if not key:
        return status
    r = key[0]
    if r.get("tessera_tflops") is not None:
        status["tflops"] = r["tessera_tflops"]
        status["tflops_met"] = r["tessera_tflops"] >= TARGET["tflops"]
    if r.get("ratio_vs_sdpa") is not None:
        status["ratio_vs_sdpa"] = r["ratio_vs_sdpa"]
        status["vs_sdpa_met"] = r["ratio_vs_sdpa"] >= TARGET["vs_sdpa"]
    flags = [status["tflops_met"], status["vs_sdpa_met"]]
    status["met"] = False if False in flags else (True if None not in flags else None)
    return status


def fmt_tflops(r, key):
    return f"{r[key]:.0f}" if r.get(key) is not None else "-"


def fmt_ratio(r, key):
    return f"{r[key]:.2f}" if r.get(key) is not None else "-"


def fmt_sdpa(entry):
    return f"{entry['tflops']:.0f}" if "tflops" in entry else "n/a"


def bench_table(rows, target, sm90a_gpu):
    names = [name for name, _ in SDPA_BACKENDS]
    lines = [f"Attention forward, bf16, batch x seq = 16k, heads x head_dim = 2048; TFLOP/s = 4 b h s_q s_k d "
             f"(halved for causal) / median time. Tessera auto = the launcher's kernel "
             f"({'sm_90a TMA + wgmma on this GPU where it applies' if sm90a_gpu else 'mma.sync: no sm_90a on this GPU'}); "
             f"mma.sync = `--path mma-sync`; SDPA pinned to each backend, n/a where it raised. "
             f"Targets (issue): {TARGET_TEXT}.", "",
             "| head_dim | causal | seq | batch x heads | auto path | auto ms | auto TFLOP/s | mma.sync TFLOP/s | "
             + " | ".join(f"SDPA {n} TFLOP/s" for n in names)
             + " | fastest SDPA | auto / SDPA | auto / mma.sync |",
             "|---:|:---:|---:|---:|:---:|---:|---:|---:|" + "---:|" * len(names) + ":---:|---:|---:|"]
    for r in rows:
        sdpa = r.get("sdpa") or {}
        cells = [r["head_dim"], "yes" if r["causal"] else "no", r["seq"], f"{r['batch']} x {r['heads']}",
                 r.get("tessera_path", "-"),
                 f"{r['tessera_ms']:.3f}" if r.get("tessera_ms") is not None else "error",
                 fmt_tflops(r, "tessera_tflops"), fmt_tflops(r, "tessera_mma_sync_tflops")]
        cells += [fmt_sdpa(sdpa.get(n, {})) for n in names]
        cells += [r.get("torch_backend", "-"), fmt_ratio(r, "ratio_vs_sdpa"), fmt_ratio(r, "ratio_vs_mma_sync")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    got = []
    if target["tflops"] is not None:
        got.append(f"{target['tflops']:.0f} TFLOP/s")
    if target["ratio_vs_sdpa"] is not None:
        got.append(f"{target['ratio_vs_sdpa']:.2f}x the fastest SDPA backend")
    met = {True: "met", False: "MISSED", None: "not fully measured" if got else "not measured"}[target["met"]]
    lines += ["", f"Target: {met}" + (f" ({', '.join(got)})" if got else "")]
    errors = []
    for r in rows:
        where = f"d{r['head_dim']} {'causal' if r['causal'] else 'full'} seq {r['seq']}"
        for key, what in (("tessera_error", "Tessera auto"), ("tessera_mma_sync_error", "Tessera mma.sync"),
                          ("tessera_note", "Tessera auto note")):
            if r.get(key):
                errors.append(f"{where}, {what}: {r[key]}")
        for name, entry in (r.get("sdpa") or {}).items():
            if "error" in entry:
                errors.append(f"{where}, SDPA {name} n/a: {entry['error']}")
    if errors:
        lines += [""] + [f"- {e}" for e in errors]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    add_io_args(ap)
    ap.add_argument("--quick", action="store_true", help="fewer timing cases (seq 1k, 4k, 8k)")
    add_part_arg(ap)
    add_timing_args(ap, 10, 30, warmup_help="warm-up launches per timing",
                    reps_help="timed launches per timing (median)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    props = torch.cuda.get_device_properties(0)
    sm90a_gpu = is_sm90a_gpu()
    env = run_env(props.name, {"compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(0)),
                               "cudnn": torch.backends.cudnn.version()},
                  {"warmup": args.warmup, "reps": args.reps})
    print(device_line(f"{props.name} (compute capability {env['compute_capability']})"), flush=True)

    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in (CHECK_CASES if args.part != "headline" else []):
            res = check_case(args.tessera, tmp, sm90a_gpu, *case)
            checks.append(res)
            detail = (f"rel {res['rel_l2']:.2e} max {res['max_abs']:.2e}" if "rel_l2" in res
                      else short(res.get("error", "")))
            path = res.get("path") or "?"
            if res.get("path") and res["path"] != res["expected_path"]:
                path += f", expected {res['expected_path']}"
            print_check(res, f"{detail} [{path}]", tags=("ok   ", "FAIL "))

    seqs = [1024, 4096, 8192] if args.quick else [1024, 2048, 4096, 8192, 16384]
    backends = sdpa_backends()
    sweep = [(d, causal, seq) for d in (64, 128, 256) for causal in (False, True) for seq in seqs]
    rows = []
    for d, causal, seq in split_rows(sweep, HEADLINE_ROWS, args.part):
        rows.append(bench_case(args.tessera, backends, d, causal, seq, args.warmup, args.reps))
        print(json.dumps(rows[-1]), flush=True)

    target = target_status(rows)
    passed = sum(c["ok"] for c in checks)
    wanted = [c for c in checks if c["expected_path"] == "sm90a"]
    took = sum(c.get("path") == "sm90a" for c in wanted)
    table = bench_table(rows, target, sm90a_gpu)
    summary = f"correctness: {passed}/{len(checks)} cases passed"
    if wanted:
        summary += f"; the sm_90a kernel ran {took} of the {len(wanted)} cases expected to take it"
    summary += f"; {time.time() - started:.0f} s"
    write_results(args.out, {"env": env, "checks": checks, "bench": rows, "target": target},
                  f"{env}\n\n{summary}\n\n{table}\n")
    finish(table, summary, checks)


if __name__ == "__main__":
    main()
