"""Merging the GPU scripts' results into one results.json, the short table, and the plot: shared by
run_all.py and first_contact.py (stdlib only: it runs without torch, and with --merge-only without a
GPU).

A family's results come from one or more run folders (first_contact.py times the headline rows in
one and the rest in another); each folder holds the script's results.json (or, when it stopped
early, its log.txt, from which the PASS/FAIL lines and the JSON timing rows are read back) and the
runner's run.json (exit status, time, timeout). The merged entry's schema is run_all.py's.
"""
import json
import os
import subprocess
import sys
import time

from budget import describe, log_tail as tail_lines
from common import is_number

SCHEMA = "tessera-gpu-bench/1"
# `tessera plot` draws one PNG in about a second; this bounds a broken one.
PLOT_TIMEOUT_S = 20


class Family:
    def __init__(self, name, script, weight, quick):
        self.name, self.script, self.weight, self.quick = name, script, weight, quick


# Quick options (run_all.py without --full; first_contact.py's sweep) and the share of a budget each
# family gets.
FAMILIES = [
    Family("attention", "attention.py", 0.25, ["--quick", "--warmup", "5", "--reps", "20"]),
    Family("gemm_lora", "gemm_lora.py", 0.35, ["--warmup", "5", "--reps", "20"]),
    Family("amp", "amp.py", 0.40, ["--warmup", "5", "--reps", "20", "--total", str(2 ** 28)]),
    Family("attention_variants", "attention_variants.py", 0.20, ["--warmup", "5", "--reps", "20"]),
]
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


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


# List-valued parts of a script's results.json: a family split over several runs has the rows of all.
LIST_KEYS = ("checks", "bench", "gemm", "lora")


def combine_raw(parts):
    """One raw results object from the raw objects of several runs of one family: lists
    concatenated in run order, anything else from the first run that has it; None when none has any."""
    parts = [p for p in parts if isinstance(p, dict)]
    if not parts:
        return None
    out = {}
    for p in parts:
        for key, value in p.items():
            if key in LIST_KEYS and isinstance(value, list):
                out.setdefault(key, []).extend(value)
            elif out.get(key) is None:
                out[key] = value
    return out


def part_status(record, raw, partial):
    """A run's status: skipped, timeout, checks_failed, missing, error or ok."""
    checks = [c for c in (raw or {}).get("checks") or [] if isinstance(c, dict)]
    if record.get("skipped"):
        return "skipped"
    if record.get("timed_out"):
        return "timeout"
    if any(not c.get("ok") for c in checks):
        return "checks_failed"
    if raw is None:
        return "missing" if not record else "error"
    if partial or record.get("returncode") not in (None, 0):
        return "error"
    return "ok"


# The status of a family run in parts: the most serious of its parts' statuses.
STATUS_ORDER = ("checks_failed", "timeout", "error", "missing", "skipped", "ok")


def load_part(name, fam_dir):
    """(run record, raw results, partial) of one run folder of family `name`."""
    record = read_json(os.path.join(fam_dir, "run.json")) or {}
    raw = read_json(os.path.join(fam_dir, "results.json"))
    partial = False
    if not isinstance(raw, dict):
        raw = raw_from_log(name, os.path.join(fam_dir, "log.txt"))
        partial = raw is not None
    return record, raw, partial


def merge_family(fam, fam_dirs):
    """The merged entry of family `fam` from its run folders `fam_dirs` (in run order)."""
    parts = [(d,) + load_part(fam.name, d) for d in fam_dirs]
    statuses = [part_status(record, raw, partial) for _, record, raw, partial in parts]
    status = min(statuses, key=STATUS_ORDER.index) if statuses else "missing"
    raw = combine_raw([raw for _, _, raw, _ in parts])
    partial = any(partial for _, _, _, partial in parts)
    worst = parts[statuses.index(status)] if parts else (None, {}, None, False)
    fam_dir, record = worst[0], worst[1]
    checks = [c for c in (raw or {}).get("checks") or [] if isinstance(c, dict)]
    failed = [str(c.get("case")) for c in checks if not c.get("ok")]
    entry = {"family": fam.name, "script": f"benches/gpu/{fam.script}", "status": status, "partial": partial,
             "returncode": record.get("returncode"),
             "elapsed_s": round(sum(r.get("elapsed_s") or 0 for _, r, _, _ in parts), 1),
             "timeout_s": record.get("timeout_s"), "args": record.get("args")}
    if len(parts) > 1:
        entry["parts"] = [{"dir": d, "status": s} for (d, _, _, _), s in zip(parts, statuses)]
    if status not in ("ok", "checks_failed"):
        if record.get("error"):
            entry["error"] = record["error"]
        elif status == "timeout":
            entry["error"] = f"timed out after {record.get('timeout_s')} s"
        elif status == "error" and fam_dir:
            lines = tail_lines(os.path.join(fam_dir, "log.txt"), lines=1)
            entry["error"] = lines[-1] if lines else describe(record)
    view = VIEWS[fam.name](raw or {})
    entry.update(title=view["title"], unit=view["unit"], x_label=view["x_label"],
                 checks={"passed": len(checks) - len(failed), "total": len(checks), "failed": failed},
                 points=view["points"], reference_lines=view["reference_lines"],
                 best_ratio=best_ratio(view["points"]), target=view["target"], raw=raw)
    return entry


def merge(entries, mode, budget_s, elapsed_s, command=None):
    """results.json's object from merged family entries; exit_code 1 when a check failed, 2 when a
    family did not finish, else 0."""
    env = next((e["raw"]["env"] for e in entries if e["raw"] and e["raw"].get("env")), {})
    if any(e["checks"]["failed"] for e in entries):
        code = 1
    elif any(e["status"] != "ok" for e in entries):
        code = 2
    else:
        code = 0
    return {"schema": SCHEMA, "mode": mode, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": command or " ".join(sys.argv), "budget_s": budget_s, "elapsed_s": round(elapsed_s, 1),
            "env": env, "families": entries, "exit_code": code, "plot": None}


def plot(tessera, results, png, timeout_s=PLOT_TIMEOUT_S):
    """`tessera plot`; returns {"path", "ok", "error"}, never raises."""
    if not tessera or not os.path.isfile(tessera):
        return {"path": png, "ok": False, "error": f"no tessera binary at {tessera!r}"}
    if timeout_s <= 0:
        return {"path": png, "ok": False, "error": "no time left in the budget"}
    try:
        r = subprocess.run([tessera, "plot", "--results", results, "--out", png], capture_output=True, text=True,
                           timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"path": png, "ok": False, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    if r.returncode != 0:
        msg = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()
        return {"path": png, "ok": False, "error": msg[-1] if msg else f"exit {r.returncode}"}
    return {"path": png, "ok": True, "error": None}


# ---- the table -------------------------------------------------------------------------------------

def table(merged, footer=True):
    """The short table: per family status, checks, best ratio, target; then errors, failed checks,
    the plot and (with `footer`) the time spent and the exit status."""
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
    if not footer:
        return "\n".join(out)
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




if __name__ == "__main__":
    sys.exit("merge.py is a module of run_all.py and first_contact.py")
