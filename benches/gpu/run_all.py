#!/usr/bin/env python3
"""Every family's GPU correctness check and its timing against PyTorch, in one run within a budget.

Builds nothing: it drives a `tessera` binary built elsewhere (`cargo build --release`) through the
per-family scripts beside it, one after the other (one GPU; running them side by side would spoil
the timings), each as a subprocess writing into DIR/<family>/:
  - attention.py --quick --warmup 5 --reps 20 (seq 1k, 4k, 8k instead of 1k-16k; each shape timed
    on Tessera's own kernel choice (sm_90a on an H100/H200), on `--path mma-sync` and on every SDPA
    backend);
  - gemm_lora.py --warmup 5 --reps 20;
  - amp.py --warmup 5 --reps 20 --total 268435456 (2^28 elements over the 1,000 unscale / AdamW
    tensors instead of 2^30: still far beyond the L2 cache);
  - attention_variants.py --warmup 5 --reps 20 (its own defaults too: about 1-3 minutes);
  (--full: each script's own defaults). Each family gets a timeout: its share (weights 0.25, 0.35,
  0.40, 0.20) of the budget left when it starts, so time one family leaves unused goes to the next
  (the last family gets all that is left).
  Its output streams through, prefixed with the family, and into DIR/<family>/log.txt; the exit
  status, time and timeout go to DIR/<family>/run.json. A family that times out or crashes
  before writing its results.json is merged from its log (the PASS/FAIL lines of the checks and
  the JSON line each timing row prints), marked partial.
Then it merges the per-family results into DIR/results.json (schema below), draws DIR/plot.png
with `tessera plot` (a failure to plot is reported, not fatal) and prints a short table last: per
family, the checks passed, the best Tessera / PyTorch throughput ratio and whether the family's
performance target was met.

Exit status: 0 when every family ran to the end and every correctness check passed; 1 when a
correctness check failed; 2 when none failed but a family did not finish (timeout, crash, missing
results) or the binary is missing. Performance targets are reported, not enforced.

--tune: first, `tessera tune` (attention, GEMM, LoRA; bf16, the shapes the families time, at most
24 candidates per shape: every sm_90a tile and the first mma.sync ones) into DIR/tuned.json within --tune-share of the budget (log in
DIR/tune/log.txt); the families then run with TESSERA_TUNING_DB=DIR/tuned.json, so they time the
tuned kernels. DIR/tuned.json is the file to check in as runtime/tuned/<gpu>.json (the shipped
defaults, see runtime/src/tuning/shipped.rs).

--merge-only DIR: no GPU, no torch, no script run: merge the existing DIR/<family>/results.json
(or log.txt) into DIR/results.json and plot, as above (with --tessera, when the binary exists).

DIR/results.json:
  {"schema": "tessera-gpu-bench/1", "mode": "run" | "merge-only", "created", "command",
   "budget_s", "elapsed_s", "env": {device, torch, cuda, ...: the first family's},
   "families": [
     {"family": "attention" | "gemm_lora" | "amp" | "attention_variants", "script",
      "status": "ok" | "checks_failed" |
        "timeout" | "error" | "missing" | "skipped", "partial": bool (merged from the log),
      "returncode", "elapsed_s", "timeout_s", "args" (run mode; null when unknown),
      "title", "unit": "TFLOP/s" | "GB/s", "x_label": "sequence length" | "M" | "kernel" | "context",
      "checks": {"passed", "total", "failed": [case names]},
      "points": [{"series", "x", "x_label", "category" (amp only: the kernel), "tessera", "torch",
                  "unit"}],   one per timing row; a value is null when that side has none
                  (attention: tessera = Tessera's own kernel choice, torch = the fastest SDPA
                  backend, plus "path" (sm90a | mma.sync), "tessera_mma_sync" (TFLOP/s with
                  --path mma-sync) and "torch_backend" (flash | cudnn | efficient), null when absent)
      "reference_lines": [{"label", "value"}],   amp, attention_variants: the device copy bandwidth
      "best_ratio": {"ratio": tessera / torch, "series", "x"} | null,
      "target": {"text", "met": true | false | null, "rows_met", "rows"},
      "raw": the script's own results.json object (or the part read from its log) | null}],
   "exit_code", "plot": {"path", "ok", "error"}}

Usage: python3 benches/gpu/run_all.py --tessera target/release/tessera --out results/ [--budget-s 600]
       python3 benches/gpu/run_all.py --merge-only results/ [--tessera target/release/tessera]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

from common import HERE, is_number, remove_files, write_json

SCHEMA = "tessera-gpu-bench/1"
PLOT_TIMEOUT_S = 60


class Family:
    def __init__(self, name, script, weight, quick):
        self.name, self.script, self.weight, self.quick = name, script, weight, quick


FAMILIES = [
    Family("attention", "attention.py", 0.25, ["--quick", "--warmup", "5", "--reps", "20"]),
    Family("gemm_lora", "gemm_lora.py", 0.35, ["--warmup", "5", "--reps", "20"]),
    Family("amp", "amp.py", 0.40, ["--warmup", "5", "--reps", "20", "--total", str(2 ** 28)]),
    Family("attention_variants", "attention_variants.py", 0.20, ["--warmup", "5", "--reps", "20"]),
]


# (label, `tessera tune` arguments): bf16, the shapes the timing families measure (attention.py's
# quick sequence lengths with batch x seq = 16k and heads x head_dim = 2048; gemm_lora.py's sizes).
ATTENTION_SHAPES = "16x1024x1024,4x4096x4096,2x8192x8192"
TUNE_JOBS = [
    ("attention d128", ["attention", "--head-dim", "128", "--heads-q", "16", "--shapes", ATTENTION_SHAPES]),
    ("attention d128 causal", ["attention", "--head-dim", "128", "--heads-q", "16", "--causal", "--shapes", ATTENTION_SHAPES]),
    ("attention d64", ["attention", "--head-dim", "64", "--heads-q", "32", "--shapes", ATTENTION_SHAPES]),
    ("attention d256", ["attention", "--head-dim", "256", "--heads-q", "8", "--shapes", ATTENTION_SHAPES]),
    ("gemm", ["gemm", "--shapes", "4096x4096x4096,8192x8192x8192"]),
    ("lora r16", ["lora", "--rank", "16", "--shapes", "4096x4096x4096"]),
    ("lora r64", ["lora", "--rank", "64", "--shapes", "4096x4096x4096"]),
]


def tune(tessera, out_dir, budget_s):
    """Runs TUNE_JOBS one after the other into out_dir/tuned.json within budget_s; returns the record
    (also saved as out_dir/tune/run.json)."""
    tune_dir = os.path.join(out_dir, "tune")
    os.makedirs(tune_dir, exist_ok=True)
    db = os.path.join(out_dir, "tuned.json")
    started = time.monotonic()
    record = {"db": db, "jobs": [], "budget_s": round(budget_s, 1)}
    with open(os.path.join(tune_dir, "log.txt"), "w") as log:
        for label, job in TUNE_JOBS:
            left = budget_s - (time.monotonic() - started)
            if left < 10:
                record["jobs"].append({"job": label, "skipped": "no time left"})
                continue
            cmd = [tessera, "tune"] + job[:1] + ["--dtype", "bf16"] + job[1:] + [
                "--tuning-db", db, "--max-candidates", "24", "--warmup", "3", "--reps", "10"]
            print(f"== tune {label}: {' '.join(cmd)}", flush=True)
            log.write(f"== {label}: {' '.join(cmd)}\n")
            log.flush()
            t0 = time.monotonic()
            try:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=left)
                record["jobs"].append({"job": label, "returncode": proc.returncode, "elapsed_s": round(time.monotonic() - t0, 1)})
            except subprocess.TimeoutExpired:
                record["jobs"].append({"job": label, "timed_out": True, "elapsed_s": round(time.monotonic() - t0, 1)})
    record["elapsed_s"] = round(time.monotonic() - started, 1)
    record["db_written"] = os.path.isfile(db)
    write_json(os.path.join(tune_dir, "run.json"), record)
    return record


# ---- running ---------------------------------------------------------------------------------------

def run_family(fam, tessera, fam_dir, timeout_s, full):
    """Runs one family's script with a timeout; returns its run record (also saved as run.json)."""
    os.makedirs(fam_dir, exist_ok=True)
    remove_files(os.path.join(fam_dir, stale) for stale in ("results.json", "results.md", "log.txt", "run.json"))
    args = ["--tessera", tessera, "--out", fam_dir] + ([] if full else fam.quick)
    cmd = [sys.executable, os.path.join(HERE, fam.script)] + args
    print(f"== {fam.name}: timeout {timeout_s:.0f} s: {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    record = {"args": args, "timeout_s": round(timeout_s, 1), "returncode": None, "timed_out": False}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(os.path.join(fam_dir, "log.txt"), "w") as log:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", env=env, start_new_session=True)
        except OSError as e:
            record.update(error=str(e), elapsed_s=0.0)
            return save_record(fam_dir, record)

        def pump():
            try:
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    print(f"[{fam.name}] {line}", end="", flush=True)
            except (OSError, ValueError):  # the log closed under a straggler after a timeout
                pass

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            record["returncode"] = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            record["timed_out"] = True
            stop(proc)
            record["returncode"] = proc.returncode
            print(f"== {fam.name}: timed out after {timeout_s:.0f} s, stopped", flush=True)
        reader.join(timeout=10)
    record["elapsed_s"] = round(time.monotonic() - started, 1)
    return save_record(fam_dir, record)


def stop(proc):
    """SIGTERM to the script's process group (it and the tessera it runs), SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def save_record(fam_dir, record):
    write_json(os.path.join(fam_dir, "run.json"), record)
    return record


# ---- merging ---------------------------------------------------------------------------------------

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def raw_from_log(name, path):
    """What a script printed before it stopped: its checks (PASS/ok/FAIL lines) and timing rows
    (one JSON object a line), in the shape of its results.json; None without a log."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    raw = {"env": {}, "checks": [], "partial_from_log": True}
    if name == "gemm_lora":
        raw.update(gemm=[], lora=[])
    else:
        raw["bench"] = []
    if name in ("amp", "attention_variants"):
        raw["copy"] = None
    for line in lines:
        for tag, ok in (("PASS ", True), ("ok  ", True), ("FAIL ", False)):
            if line.startswith(tag):
                case = line[len(tag):].strip().partition(": ")[0]
                if case:
                    raw["checks"].append({"case": case, "ok": ok})
                break
        else:
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            if name == "gemm_lora":
                raw["lora" if "rank" in row else "gemm"].append(row)
            elif name in ("amp", "attention_variants") and "copy" in row:
                raw["copy"] = row["copy"]
            else:
                raw["bench"].append(row)
    return raw


def log_tail(path):
    """The last non-empty line of a log (a traceback's exception line, say), or None."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


def num(v):
    return float(v) if is_number(v) else None


def point(series, x, x_label, tessera, torch, unit, category=None):
    p = {"series": series, "x": x, "x_label": x_label, "tessera": num(tessera), "torch": num(torch), "unit": unit}
    if category is not None:
        p["category"] = category
    return p


ATTENTION_TARGET_TFLOPS = 600.0
ATTENTION_TARGET_VS_SDPA = 1.0


def attention_view(raw):
    rows = [r for r in raw.get("bench") or [] if isinstance(r, dict)]
    points = []
    for r in rows:
        if not isinstance(r.get("seq"), (int, float)):
            continue
        p = point(f"d{r.get('head_dim')} {'causal' if r.get('causal') else 'full'}", r.get("seq"),
                  "sequence length", r.get("tessera_tflops"), r.get("torch_tflops"), "TFLOP/s")
        p.update(path=r.get("tessera_path") if isinstance(r.get("tessera_path"), str) else None,
                 tessera_mma_sync=num(r.get("tessera_mma_sync_tflops")),
                 torch_backend=r.get("torch_backend") if isinstance(r.get("torch_backend"), str) else None)
        points.append(p)
    # The targets on one row: Tessera's own choice (sm_90a on an H200) >= 600 TFLOP/s and
    # >= 1.0x the fastest SDPA backend; rows / rows_met count those two criteria where measured.
    key = [r for r in rows if r.get("head_dim") == 128 and not r.get("causal") and r.get("seq") == 8192]
    flags = []
    if key:
        tflops, sdpa = num(key[0].get("tessera_tflops")), num(key[0].get("torch_tflops"))
        if tflops is not None:
            flags.append(tflops >= ATTENTION_TARGET_TFLOPS)
        if tflops is not None and sdpa:
            flags.append(tflops / sdpa >= ATTENTION_TARGET_VS_SDPA)
    met = False if False in flags else (True if len(flags) == 2 else None)
    target = {"text": f">= {ATTENTION_TARGET_TFLOPS:.0f} TFLOP/s and >= {ATTENTION_TARGET_VS_SDPA:.1f}x the "
                      "fastest SDPA backend at head_dim 128, seq 8k, non-causal (H200)",
              "met": met, "rows_met": sum(flags), "rows": len(flags)}
    return {"title": "attention forward, bf16, Tessera (own kernel choice) vs the fastest SDPA backend "
                     "(batch x seq = 16k, heads x head_dim = 2048)",
            "unit": "TFLOP/s", "x_label": "sequence length", "points": points, "reference_lines": [],
            "target": target}


def gemm_lora_view(raw):
    gemm, lora = raw.get("gemm") or [], raw.get("lora") or []
    points = [point("GEMM M=N=K vs cuBLAS", r.get("m"), "M", r.get("tessera_tflops"), r.get("cublas_tflops"), "TFLOP/s")
              for r in gemm if isinstance(r.get("m"), (int, float))]
    for r in lora:
        if not isinstance(r.get("m"), (int, float)):
            continue
        series = f"LoRA r{r.get('rank')}"
        if (r.get("adapters") or 1) > 1:
            series += f" x{r.get('adapters')} {r.get('mix')}"
        points.append(point(series, r["m"], "M", r.get("fused_tflops"), r.get("torch_tflops"), "TFLOP/s"))
    flags = [r["target_met"] for r in gemm + lora if isinstance(r.get("target_met"), bool)]
    target = {"text": "GEMM >= 0.8 x cuBLAS; fused LoRA <= 1.10 x base GEMM time at M = 4096",
              "met": all(flags) if flags else None, "rows_met": sum(flags), "rows": len(flags)}
    return {"title": "GEMM vs cuBLAS, fused LoRA vs unfused PyTorch (bf16; LoRA N = K = 4096)",
            "unit": "TFLOP/s", "x_label": "M", "points": points, "reference_lines": [], "target": target}


def amp_view(raw):
    rows = [r for r in raw.get("bench") or [] if isinstance(r.get("name"), str)]
    points = [point(r["name"], i, "kernel", r.get("tessera_gbps"), r.get("torch_gbps"), "GB/s", category=r["name"])
              for i, r in enumerate(rows)]
    copy = raw.get("copy") if isinstance(raw.get("copy"), dict) else {}
    refs = [{"label": "device copy", "value": float(copy["gbps"])}] if num(copy.get("gbps")) is not None else []
    flags = [r[k] for r in rows for k in ("copy_target_met", "torch_target_met") if isinstance(r.get(k), bool)]
    target = {"text": ">= 90 % of the device copy bandwidth and torch time / Tessera time >= 1.0, every kernel",
              "met": all(flags) if flags else None, "rows_met": sum(flags), "rows": len(flags)}
    return {"title": "mixed-precision training kernels vs PyTorch (effective bandwidth)", "unit": "GB/s",
            "x_label": "kernel", "points": points, "reference_lines": refs, "target": target}


def attention_variants_view(raw):
    rows = [r for r in raw.get("bench") or [] if isinstance(r, dict)]
    points = [point(f"paged decode, pages of {r.get('page_size')}", r.get("context"), "context",
                    r.get("tessera_kv_gbps"), r.get("torch_kv_gbps"), "GB/s")
              for r in rows if r.get("kind") == "paged_decode" and isinstance(r.get("context"), (int, float))]
    copy = raw.get("copy") if isinstance(raw.get("copy"), dict) else {}
    refs = [{"label": "device copy", "value": float(copy["gbps"])}] if num(copy.get("gbps")) is not None else []
    flags = [r["target_met"] for r in rows if isinstance(r.get("target_met"), bool)]
    target = {"text": "paged decode KV bandwidth >= 80 % of the device copy bandwidth; local attention "
                      "(window 1024, seq 32k) >= 10x faster than full causal",
              "met": all(flags) if flags else None, "rows_met": sum(flags), "rows": len(flags)}
    return {"title": "paged decode KV bandwidth vs SDPA (bf16, d128, batch 64, GQA 32:4)", "unit": "GB/s",
            "x_label": "context", "points": points, "reference_lines": refs, "target": target}


VIEWS = {"attention": attention_view, "gemm_lora": gemm_lora_view, "amp": amp_view,
         "attention_variants": attention_variants_view}


def best_ratio(points):
    best = None
    for p in points:
        if p["tessera"] is not None and p["torch"]:
            r = p["tessera"] / p["torch"]
            if best is None or r > best["ratio"]:
                best = {"ratio": r, "series": p["series"], "x": p["x"]}
    return best


def merge_family(fam, out_dir, mode):
    fam_dir = os.path.join(out_dir, fam.name)
    record = read_json(os.path.join(fam_dir, "run.json")) or {}
    raw = read_json(os.path.join(fam_dir, "results.json"))
    partial = False
    if not isinstance(raw, dict):
        raw = raw_from_log(fam.name, os.path.join(fam_dir, "log.txt"))
        partial = raw is not None
    checks = [c for c in (raw or {}).get("checks") or [] if isinstance(c, dict)]
    failed = [str(c.get("case")) for c in checks if not c.get("ok")]
    if record.get("skipped"):
        status = "skipped"
    elif record.get("timed_out"):
        status = "timeout"
    elif failed:
        status = "checks_failed"
    elif raw is None:
        status = "missing" if not record else "error"
    elif partial or record.get("returncode") not in (None, 0):
        status = "error"
    else:
        status = "ok"
    entry = {"family": fam.name, "script": f"benches/gpu/{fam.script}", "status": status, "partial": partial,
             "returncode": record.get("returncode"), "elapsed_s": record.get("elapsed_s"),
             "timeout_s": record.get("timeout_s"), "args": record.get("args")}
    if record.get("error"):
        entry["error"] = record["error"]
    elif status == "timeout":
        entry["error"] = f"timed out after {record.get('timeout_s')} s"
    elif status == "error":
        entry["error"] = log_tail(os.path.join(fam_dir, "log.txt")) or f"exit status {record.get('returncode')}"
    view = VIEWS[fam.name](raw or {})
    entry.update(title=view["title"], unit=view["unit"], x_label=view["x_label"],
                 checks={"passed": len(checks) - len(failed), "total": len(checks), "failed": failed},
                 points=view["points"], reference_lines=view["reference_lines"],
                 best_ratio=best_ratio(view["points"]), target=view["target"], raw=raw)
    return entry


def merge(out_dir, families, mode, budget_s, started):
    entries = [merge_family(f, out_dir, mode) for f in families]
    env = next((e["raw"]["env"] for e in entries if e["raw"] and e["raw"].get("env")), {})
    if any(e["checks"]["failed"] for e in entries):
        code = 1
    elif any(e["status"] != "ok" for e in entries):
        code = 2
    else:
        code = 0
    return {"schema": SCHEMA, "mode": mode, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv), "budget_s": budget_s,
            "elapsed_s": round(time.monotonic() - started, 1), "env": env, "families": entries,
            "exit_code": code, "plot": None}


def plot(tessera, results, png):
    """`tessera plot`; returns {"path", "ok", "error"}, never raises."""
    if not tessera or not os.path.isfile(tessera):
        return {"path": png, "ok": False, "error": f"no tessera binary at {tessera!r}"}
    try:
        r = subprocess.run([tessera, "plot", "--results", results, "--out", png], capture_output=True, text=True,
                           timeout=PLOT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"path": png, "ok": False, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    if r.returncode != 0:
        msg = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()
        return {"path": png, "ok": False, "error": msg[-1] if msg else f"exit {r.returncode}"}
    return {"path": png, "ok": True, "error": None}


# ---- the table -------------------------------------------------------------------------------------

def table(merged):
    head = ("family", "status", "checks", "best Tessera / PyTorch", "target")
    rows = []
    for e in merged["families"]:
        c = e["checks"]
        b = e["best_ratio"]
        best = f"{b['ratio']:.2f} ({where(b, e)})" if b else "-"
        t = e["target"]
        target = "-" if t["met"] is None else ("met" if t["met"] else f"MISSED ({t['rows_met']}/{t['rows']})")
        status = e["status"] + (" (partial)" if e["partial"] else "")
        rows.append((e["family"], status, f"{c['passed']}/{c['total']}", best, target))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
    out = [line(head), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    for e in merged["families"]:
        if e.get("error"):
            out.append(f"{e['family']} {e['status']}: {e['error']} (log: {e['family']}/log.txt)")
        if e["checks"]["failed"]:
            shown = e["checks"]["failed"][:5]
            more = len(e["checks"]["failed"]) - len(shown)
            out.append(f"{e['family']} failed: " + "; ".join(shown) + (f"; and {more} more" if more else ""))
    p = merged["plot"]
    if p:
        out.append(f"plot: {p['path']}" if p["ok"] else f"plot not drawn: {p['error']}")
    reason = {0: "all checks passed", 1: "a correctness check failed",
              2: "a family did not finish"}[merged["exit_code"]]
    spent = f"{merged['elapsed_s']:.0f} s of a {merged['budget_s']:g} s budget"
    if merged["mode"] == "merge-only":
        spent = "merged only"
    out.append(f"{spent}; exit {merged['exit_code']}: {reason}")
    return "\n".join(out)


def where(best, entry):
    """The point of a best ratio: its series, and its x unless x is a category index."""
    if any("category" in p for p in entry["points"]):
        return best["series"]
    x = best["x"]
    return f"{best['series']}, {entry['x_label']} {x:g}" if isinstance(x, (int, float)) else best["series"]


# ---- main ------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", default="target/release/tessera", help="the tessera binary (built elsewhere)")
    ap.add_argument("--out", default="results", help="output folder")
    ap.add_argument("--budget-s", type=float, default=600.0, help="time for the whole run, merge and plot included")
    ap.add_argument("--full", action="store_true", help="each script's own defaults instead of the quick options")
    ap.add_argument("--families", default=",".join(f.name for f in FAMILIES),
                    help="comma-separated subset of: " + ", ".join(f.name for f in FAMILIES))
    ap.add_argument("--merge-only", metavar="DIR", help="merge DIR/<family>/ results and plot; run nothing")
    ap.add_argument("--tune", action="store_true", help="tune first (DIR/tuned.json) and time the tuned kernels")
    ap.add_argument("--tune-share", type=float, default=0.25, help="share of the budget for --tune")
    args = ap.parse_args()
    started = time.monotonic()
    wanted = [w.strip() for w in args.families.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in {f.name for f in FAMILIES}]
    if unknown:
        print(f"error: unknown families: {', '.join(unknown)}", file=sys.stderr)
        return 2
    families = [f for f in FAMILIES if f.name in wanted]
    tessera = os.path.abspath(args.tessera) if args.tessera else None
    budget = args.budget_s

    if args.merge_only:
        out_dir, mode = args.merge_only, "merge-only"
        if not os.path.isdir(out_dir):
            print(f"error: --merge-only {out_dir}: not a folder", file=sys.stderr)
            return 2
    else:
        out_dir, mode = args.out, "run"
        if not (os.path.isfile(tessera) and os.access(tessera, os.X_OK)):
            print(f"error: --tessera {args.tessera}: no executable there (build it first: cargo build --release)",
                  file=sys.stderr)
            return 2
        os.makedirs(out_dir, exist_ok=True)
        tuned = None
        if args.tune:
            tuned = tune(tessera, out_dir, budget * args.tune_share)
            if tuned["db_written"]:
                # The families' subprocesses (and the tessera they run) read the tuned winners.
                os.environ["TESSERA_TUNING_DB"] = os.path.abspath(tuned["db"])
        reserve = min(30.0, 0.05 * budget)  # merge, plot, table
        for i, fam in enumerate(families):
            left = budget - reserve - (time.monotonic() - started)
            share = left * fam.weight / sum(f.weight for f in families[i:])
            fam_dir = os.path.join(out_dir, fam.name)
            if share < 10:
                os.makedirs(fam_dir, exist_ok=True)
                remove_files(os.path.join(fam_dir, stale) for stale in ("results.json", "log.txt"))
                save_record(fam_dir, {"skipped": True, "returncode": None, "timeout_s": 0, "elapsed_s": 0,
                                      "args": None, "error": "no time left in the budget"})
                print(f"== {fam.name}: skipped, {left:.0f} s left in the budget", flush=True)
                continue
            run_family(fam, tessera, fam_dir, share, args.full)

    results = os.path.join(out_dir, "results.json")
    merged = merge(out_dir, families, mode, budget, started)
    if mode == "run":
        merged["tune"] = tuned
    write_json(results, merged, atomic=True)
    merged["plot"] = plot(tessera, results, os.path.join(out_dir, "plot.png"))
    merged["elapsed_s"] = round(time.monotonic() - started, 1)
    write_json(results, merged, atomic=True)
    print(f"\nwrote {results}\n")
    print(table(merged))
    return merged["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
