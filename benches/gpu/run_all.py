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
  (the last family gets all that is left). The budget is a hard end: its last FINAL_RESERVE_S
  seconds are kept for merging, the plot and the table, and a family's timeout leaves room for
  stopping it (SIGTERM, then SIGKILL to its whole process group: budget.STOP_OVERHEAD_S), so a run
  whose families all time out still writes results.json and the plot before the budget ends.
  Its output goes to DIR/<family>/log.txt (echoed, prefixed with the family); the exit
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

Usage: python3 benches/gpu/run_all.py --tessera target/release/tessera --out results/ [--budget-s 540]
       python3 benches/gpu/run_all.py --merge-only results/ [--tessera target/release/tessera]
"""

import argparse
import os
import sys
import time

from budget import Budget, describe, run_step
from common import HERE, remove_files, write_json
from merge import FAMILIES, PLOT_TIMEOUT_S, merge, merge_family, plot, table

# The default budget: a minute spare under a 10-minute command limit.
DEFAULT_BUDGET_S = 540.0
# Kept at the end of the budget for merging, the plot and the table.
FINAL_RESERVE_S = PLOT_TIMEOUT_S + 10.0
# A family (or tune job) is not started with less than this.
MIN_STEP_S = 10.0


# `tessera tune` jobs, (label, arguments after `tune`): bf16, the shapes the timing families measure
# (attention.py's sequence lengths with batch x seq = 16k and heads x head_dim = 2048; gemm_lora.py's
# sizes), the headline shapes first (attention d128 seq 8k, GEMM 8192^3, LoRA r16), in case the time
# runs out. first_contact.py --tune runs the same list.
TUNE_JOBS = [
    ("attention d128 seq 8k", ["attention", "--head-dim", "128", "--heads-q", "16", "--shapes", "2x8192x8192"]),
    ("attention d128 causal seq 8k",
     ["attention", "--head-dim", "128", "--heads-q", "16", "--causal", "--shapes", "2x8192x8192"]),
    ("gemm 8192", ["gemm", "--shapes", "8192x8192x8192"]),
    ("lora r16 4096", ["lora", "--rank", "16", "--shapes", "4096x4096x4096"]),
    ("attention d128 seq 1k/4k",
     ["attention", "--head-dim", "128", "--heads-q", "16", "--shapes", "16x1024x1024,4x4096x4096"]),
    ("attention d128 causal seq 1k/4k",
     ["attention", "--head-dim", "128", "--heads-q", "16", "--causal", "--shapes", "16x1024x1024,4x4096x4096"]),
    ("gemm 4096", ["gemm", "--shapes", "4096x4096x4096"]),
    ("attention d64", ["attention", "--head-dim", "64", "--heads-q", "32", "--shapes",
                       "2x8192x8192,4x4096x4096,16x1024x1024"]),
    ("attention d256", ["attention", "--head-dim", "256", "--heads-q", "8", "--shapes",
                        "2x8192x8192,4x4096x4096,16x1024x1024"]),
    ("lora r64 4096", ["lora", "--rank", "64", "--shapes", "4096x4096x4096"]),
]


def tune_command(tessera, job, db):
    """`tessera tune` for one job (bf16, at most 24 candidates per shape) into the database `db`."""
    return [tessera, "tune"] + job[:1] + ["--dtype", "bf16"] + job[1:] + [
        "--tuning-db", db, "--max-candidates", "24", "--warmup", "3", "--reps", "10"]


def tune(tessera, out_dir, budget, share_s):
    """Runs TUNE_JOBS one after the other into out_dir/tuned.json within share_s seconds (and the
    budget); returns the record (also saved as out_dir/tune/run.json)."""
    tune_dir = os.path.join(out_dir, "tune")
    os.makedirs(tune_dir, exist_ok=True)
    db = os.path.join(out_dir, "tuned.json")
    started = time.monotonic()
    record = {"db": db, "jobs": [], "budget_s": round(share_s, 1)}
    for i, (label, job) in enumerate(TUNE_JOBS):
        timeout = budget.timeout_for(share_s - (time.monotonic() - started))
        if timeout < MIN_STEP_S:
            record["jobs"].append({"job": label, "skipped": "no time left"})
            continue
        step = run_step(f"tune {label}", tune_command(tessera, job, db), os.path.join(tune_dir, f"{i:02d}.log"),
                        timeout)
        record["jobs"].append({"job": label, "status": describe(step), "returncode": step["returncode"],
                               "elapsed_s": step["elapsed_s"], "timed_out": step["timed_out"], "log": step["log"]})
    record["elapsed_s"] = round(time.monotonic() - started, 1)
    record["db_written"] = os.path.isfile(db)
    write_json(os.path.join(tune_dir, "run.json"), record)
    return record


def run_family(fam, tessera, fam_dir, timeout_s, full, extra=(), python=sys.executable, env=None):
    """Runs one family's script with a timeout; returns its run record (also saved as run.json)."""
    os.makedirs(fam_dir, exist_ok=True)
    remove_files(os.path.join(fam_dir, stale) for stale in ("results.json", "results.md", "log.txt", "run.json"))
    args = ["--tessera", tessera, "--out", fam_dir] + ([] if full else fam.quick) + list(extra)
    cmd = [python, os.path.join(HERE, fam.script)] + args
    print(f"== {fam.name}: timeout {timeout_s:.0f} s", flush=True)
    env = dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1")
    step = run_step(fam.name, cmd, os.path.join(fam_dir, "log.txt"), timeout_s, env=env)
    record = {"args": args, "timeout_s": step["timeout_s"], "returncode": step["returncode"],
              "timed_out": step["timed_out"], "elapsed_s": step["elapsed_s"]}
    if step.get("error"):
        record["error"] = step["error"]
    if step["timed_out"]:
        print(f"== {fam.name}: timed out after {timeout_s:.0f} s, stopped", flush=True)
    return save_record(fam_dir, record)


def skip_family(fam_dir, why):
    os.makedirs(fam_dir, exist_ok=True)
    remove_files(os.path.join(fam_dir, stale) for stale in ("results.json", "log.txt"))
    return save_record(fam_dir, {"skipped": why, "returncode": None, "timeout_s": 0, "elapsed_s": 0, "args": None,
                                 "error": why})


def save_record(fam_dir, record):
    write_json(os.path.join(fam_dir, "run.json"), record)
    return record


def run_families(families, tessera, out_dir, budget, full, extra=lambda fam: [], python=sys.executable, env=None):
    """Runs `families` one after the other into out_dir/<family>/, each with its weighted share of
    the time left before the budget's reserve, and `extra(family)` appended to its arguments; a
    family with less than MIN_STEP_S left is skipped."""
    for i, fam in enumerate(families):
        room = budget.left_for_steps()
        share = room * fam.weight / sum(f.weight for f in families[i:])
        fam_dir = os.path.join(out_dir, fam.name)
        timeout = budget.timeout_for(share)
        if timeout < MIN_STEP_S:
            skip_family(fam_dir, "no time left in the budget")
            print(f"== {fam.name}: skipped, {room:.0f} s left in the budget", flush=True)
            continue
        run_family(fam, tessera, fam_dir, timeout, full, extra(fam), python, env)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", default="target/release/tessera", help="the tessera binary (built elsewhere)")
    ap.add_argument("--out", default="results", help="output folder")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                    help="time for the whole run, merge and plot included (a hard end)")
    ap.add_argument("--full", action="store_true", help="each script's own defaults instead of the quick options")
    ap.add_argument("--families", default=",".join(f.name for f in FAMILIES),
                    help="comma-separated subset of: " + ", ".join(f.name for f in FAMILIES))
    ap.add_argument("--merge-only", metavar="DIR", help="merge DIR/<family>/ results and plot; run nothing")
    ap.add_argument("--tune", action="store_true", help="tune first (DIR/tuned.json) and time the tuned kernels")
    ap.add_argument("--tune-share", type=float, default=0.25, help="share of the budget for --tune")
    args = ap.parse_args()
    budget = Budget(args.budget_s, FINAL_RESERVE_S)
    wanted = [w.strip() for w in args.families.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in {f.name for f in FAMILIES}]
    if unknown:
        print(f"error: unknown families: {', '.join(unknown)}", file=sys.stderr)
        return 2
    families = [f for f in FAMILIES if f.name in wanted]
    tessera = os.path.abspath(args.tessera) if args.tessera else None

    tuned = None
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
        if args.tune:
            tuned = tune(tessera, out_dir, budget, budget.left_for_steps() * args.tune_share)
            if tuned["db_written"]:
                # The families' subprocesses (and the tessera they run) read the tuned winners.
                os.environ["TESSERA_TUNING_DB"] = os.path.abspath(tuned["db"])
        run_families(families, tessera, out_dir, budget, args.full)

    results = os.path.join(out_dir, "results.json")
    entries = [merge_family(f, [os.path.join(out_dir, f.name)]) for f in families]
    merged = merge(entries, mode, args.budget_s, budget.elapsed())
    if mode == "run":
        merged["tune"] = tuned
    write_json(results, merged, atomic=True)
    merged["plot"] = plot(tessera, results, os.path.join(out_dir, "plot.png"),
                          min(PLOT_TIMEOUT_S, budget.left() - 5.0) if mode == "run" else PLOT_TIMEOUT_S)
    merged["elapsed_s"] = round(budget.elapsed(), 1)
    write_json(results, merged, atomic=True)
    print(f"\nwrote {results}\n")
    print(table(merged))
    return merged["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
