#!/usr/bin/env python3
"""First contact with a GPU: one prepared run that cannot waste the window.

Runs on a GPU machine with Python 3 (PyTorch for the timing scripts) but no Rust toolchain, from
the repository root, with the bundle that `benches/gpu/prepare.sh` built (the stripped `tessera`
binary, the GPU test binaries and the sim_diff driver, with a manifest). `first_contact.sh` is
the entry point; it calls this and makes sure an archive exists even if this is killed.

A run (the default) spends at most --budget-s seconds (540: a minute spare under a 10-minute
command) in phases, each step a subprocess with a hard timeout (budget.py):
  1. preflight (at most PREFLIGHT_CAP_S): the bundle's checksums, then preflight.py's steps:
     `tessera doctor` (NVRTC's path is pinned with TESSERA_NVRTC for everything after),
     `tessera demo` (the sm_90a and mma.sync attention kernels), one aligned `run gemm` and
     `run lora`, one `run cast` and `run adamw`, each checked against an exact reference. If any
     fails, the run stops there: the summary says which and why;
  2. tests (at most TESTS_CAP_S): the GPU test binaries of the bundle's manifest with `--ignored
     --test-threads=1` (never the exhaustive fp8 test: it is not in the manifest);
  3. headline (at most HEADLINE_CAP_S): attention bf16 d128 seq 8k causal and not vs every SDPA
     backend, GEMM 8192^3 vs cuBLAS, fused LoRA r16 vs unfused torch and vs Tessera's own GEMM,
     AdamW vs torch's fused AdamW (each script's `--part headline`), then the simulator-vs-GPU
     differential suite (sim_diff.py with the bundle's driver);
  4. sweep (whatever is left): every family's remaining checks and timing rows (`--part rest`,
     run_all.py's quick options), attention variants;
  5. finish (the last FINAL_RESERVE_S seconds, always): the merged results.json (run_all.py's
     schema) and plot.png, the summary, and one archive of everything:
       OUTDIR/first-contact.md       the summary (headline table for benches/RESULTS.md, every
                                     step with its status and the kernel that ran, failures)
       OUTDIR/first-contact.tar.gz   the work folder: logs, results, plot, summary.
With --tune (a second invocation, --budget-s default 240): doctor only, then `tessera tune` for the
headline shapes first (attention d128 seq 8k causal and not, GEMM 8192^3, LoRA r16), then more
shapes as time allows, into tuned.json, copied as tuned/<gpu>.json (the file to check in as
runtime/tuned/<gpu>.json); then the headline attention/GEMM/LoRA rows are timed again with the
tuned database. It writes OUTDIR/first-contact-tune.md and .tar.gz.

The process runs with TESSERA_SYNC_TIMEOUT_S (default here SYNC_TIMEOUT_S) so a hung kernel
becomes an error naming it in seconds; SIGALRM shortly before the end and SIGTERM raise OutOfTime,
which stops the current step and goes straight to finishing.

Exit status: 0 when everything ran and passed; 1 when the preflight, a test or a correctness check
failed; 2 when nothing failed but something did not finish (timeout, skipped for lack of time).

--backend sim is a dry run without a GPU (CI): the preflight runs on the CPU simulator; the
later phases run and fail as they must without a GPU or torch. --phases picks phases (tests).

Usage: python3 benches/gpu/first_contact.py OUTDIR --work DIR [--bundle target/gpu-bundle]
       [--budget-s 540] [--tune] [--backend cuda|sim] [--phases preflight,tests,headline,sweep]
"""
import argparse
import os
import random
import re
import shutil
import sys
import tarfile
import time

import preflight
from bundle import SCHEMA as BUNDLE_SCHEMA, sha256
from budget import Budget, OutOfTime, clear_deadline, describe, install_deadline, log_tail, run_step
from common import CMD_TIMEOUT_ENV, HERE, REPO_ROOT, write_json, write_text
from merge import FAMILIES, FAMILY_BY_NAME, merge, merge_family, plot, read_json, table
from run_all import TUNE_JOBS, run_families, save_record, tune_command

DEFAULT_BUDGET_S = 540.0
DEFAULT_TUNE_BUDGET_S = 240.0
# Kept at the end of every run for merging, the plot, the summary and the archive.
FINAL_RESERVE_S = 30.0
# The safety-net alarm fires this long before the end (finishing takes a few seconds).
ALARM_MARGIN_S = 20.0
PLOT_CAP_S = 15.0
# No step starts with less than this.
MIN_STEP_S = 5.0
PREFLIGHT_CAP_S = 75.0
PREFLIGHT_STEP_CAP_S = 30.0
TESTS_CAP_S = 150.0
TEST_BINARY_CAP_S = 100.0
HEADLINE_CAP_S = 210.0
TUNE_JOB_CAP_S = 90.0
# The GPU run's own sync deadline: a kernel that has not finished after this long is hung.
SYNC_TIMEOUT_S = "20"
SYNC_TIMEOUT_ENV = "TESSERA_SYNC_TIMEOUT_S"
# And the most one `tessera` command inside a timing script may take (common.cmd_timeout).
BENCH_CMD_TIMEOUT_S = "90"
NVRTC_ENV = "TESSERA_NVRTC"
TUNING_DB_ENV = "TESSERA_TUNING_DB"
DEFAULT_BUNDLE = os.path.join(REPO_ROOT, "target", "gpu-bundle")
# Files larger than this are cut (head and tail kept) before they go into the archive.
ARCHIVE_FILE_LIMIT = 4 << 20
PHASES = ("preflight", "tests", "headline", "sweep")
TUNE_PHASES = ("preflight", "tune", "headline")
# Headline timing, in this order: (family, script arguments after --tessera/--out, cap seconds).
HEADLINE = [
    ("attention", ["--part", "headline", "--warmup", "5", "--reps", "20"], 75.0),
    ("gemm_lora", ["--part", "headline", "--warmup", "5", "--reps", "20"], 60.0),
    ("amp", ["--part", "headline", "--warmup", "5", "--reps", "20", "--total", str(2 ** 28)], 60.0),
]
SIM_DIFF_CAP_S = 45.0
# The families whose scripts take --part (the sweep runs their rest).
PART_FAMILIES = {name for name, _, _ in HEADLINE}
# The headline rows timed again with the tuned database.
TUNED_HEADLINE = [("attention", ["--part", "headline", "--warmup", "5", "--reps", "20"], 75.0),
                  ("gemm_lora", ["--part", "headline", "--warmup", "5", "--reps", "20"], 60.0)]
LIBTEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)\b")


class Run:
    """Everything the run did, saved as work/run.json after every step."""

    def __init__(self, args, work):
        self.args, self.work = args, work
        self.mode = "tune" if args.tune else "run"
        self.steps = []
        self.info = {"mode": self.mode, "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "budget_s": args.budget_s, "backend": args.backend}
        self.stopped = None  # why the run ended early, if it did
        self.fatal = False  # the bundle or the preflight failed: nothing else was worth running
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env.setdefault(SYNC_TIMEOUT_ENV, SYNC_TIMEOUT_S)
        self.env.setdefault(CMD_TIMEOUT_ENV, BENCH_CMD_TIMEOUT_S)
        self.tessera = None
        self.sim_diff = None

    def add(self, phase, name, status, detail="", record=None, **extra):
        entry = {"phase": phase, "name": name, "status": status, "detail": detail, **extra}
        if record is not None:
            entry.update(elapsed_s=record.get("elapsed_s"), timeout_s=record.get("timeout_s"),
                         log=rel(self.work, record.get("log")))
        self.steps.append(entry)
        print(f"== {phase} {name}: {status}" + (f": {detail}" if detail else ""), flush=True)
        self.save()
        return entry

    def save(self):
        write_json(os.path.join(self.work, "run.json"), {"info": self.info, "steps": self.steps,
                                                         "stopped": self.stopped}, atomic=True)

    def failed(self, phase=None):
        return [s for s in self.steps if s["status"] == "failed" and (phase is None or s["phase"] == phase)]


def rel(root, path):
    return os.path.relpath(path, root) if path else None


def status_of(record):
    """ok, failed (ran and exited non-zero or crashed), timeout, or error (did not start)."""
    if record.get("timed_out"):
        return "timeout"
    if record.get("returncode") is None:
        return "error"
    return "ok" if record["returncode"] == 0 else "failed"


def skip(run, phase, name, why="no time left in the budget"):
    return run.add(phase, name, "skipped", why)


# ---- the bundle ------------------------------------------------------------------------------------

def check_bundle(run, bundle):
    """Reads and verifies the bundle's manifest (every file's size and SHA-256); sets run.tessera and
    run.sim_diff; returns the manifest, or None when the bundle cannot be used."""
    manifest = read_json(os.path.join(bundle, "manifest.json"))
    if not isinstance(manifest, dict) or manifest.get("schema") != BUNDLE_SCHEMA:
        run.add("preflight", "bundle", "failed", f"no {BUNDLE_SCHEMA} manifest.json in {bundle} "
                "(build it with benches/gpu/prepare.sh and take the folder along)")
        return None
    bad = []
    for path, want in (manifest.get("files") or {}).items():
        full = os.path.join(bundle, path)
        if not os.path.isfile(full):
            bad.append(f"{path}: missing")
        elif os.path.getsize(full) != want.get("bytes") or sha256(full) != want.get("sha256"):
            bad.append(f"{path}: differs from the manifest")
        elif not os.access(full, os.X_OK):
            bad.append(f"{path}: not executable")
    write_json(os.path.join(run.work, "bundle-manifest.json"), manifest)
    run.info["bundle"] = {k: manifest.get(k) for k in ("created", "commit", "dirty", "rustc")}
    if bad:
        run.add("preflight", "bundle", "failed", "; ".join(bad[:5]))
        return None
    run.tessera = os.path.join(bundle, manifest["tessera"])
    run.sim_diff = os.path.join(bundle, manifest["sim_diff"]) if manifest.get("sim_diff") else None
    run.add("preflight", "bundle", "ok", f"{len(manifest.get('files') or {})} files verified, built from "
            f"{(manifest.get('commit') or '?')[:12]}{' (dirty)' if manifest.get('dirty') else ''}")
    return manifest


# ---- phases ----------------------------------------------------------------------------------------

def phase_preflight(run, budget, only_doctor=False):
    """Doctor, demo, gemm, lora, cast, adamw; False when one failed (the run then stops)."""
    started = time.monotonic()
    work = os.path.join(run.work, "preflight")
    os.makedirs(work, exist_ok=True)
    ctx = preflight.Context(run.tessera, run.args.backend, work, run.args.seed)
    for step in preflight.STEPS[:1] if only_doctor else preflight.STEPS:
        room = PREFLIGHT_CAP_S - (time.monotonic() - started)
        timeout = budget.timeout_for(PREFLIGHT_STEP_CAP_S, room)
        if timeout < MIN_STEP_S:
            run.add("preflight", step.name, "failed", "no time left for the preflight")
            return False
        try:
            cmd = step.command(ctx)
        except OSError as e:
            run.add("preflight", step.name, "failed", f"could not prepare the inputs: {e}")
            return False
        record = run_step(f"preflight {step.name}", cmd, os.path.join(work, f"{step.name}.log"), timeout, env=run.env)
        status = status_of(record)
        text = preflight.read_log(record)
        try:
            verdict = step.verify(ctx, record, text) if status in ("ok", "failed") else {"ok": False}
        except (OSError, ValueError, KeyError) as e:
            verdict = {"ok": False, "detail": f"could not check the output: {e}"}
        detail = verdict.get("detail") or describe(record)
        if status == "ok" and not verdict["ok"]:
            status = "failed"
        if status != "ok":
            tail = log_tail(record["log"], lines=3)
            detail = f"{describe(record)}: {detail}" + (f" | {' / '.join(tail)}" if tail else "")
        extra = {k: verdict[k] for k in ("kernel", "kernels", "path", "warning") if verdict.get(k)}
        run.add("preflight", step.name, status, detail, record, **extra)
        if step.name == "doctor" and verdict.get("doctor"):
            run.info["doctor"] = verdict["doctor"]
            write_json(os.path.join(run.work, "doctor.json"), verdict["doctor"])
            if ctx.nvrtc:
                # Found once: every later process compiles with exactly this NVRTC.
                run.env[NVRTC_ENV] = ctx.nvrtc
        if status != "ok":
            return False
    return True


def parse_libtest(text):
    """{test name: ok | FAILED | ignored} from libtest's output."""
    return {m.group(1): m.group(2) for m in map(LIBTEST_LINE.match, text.splitlines()) if m}


def phase_tests(run, budget, manifest):
    started = time.monotonic()
    work = os.path.join(run.work, "tests")
    os.makedirs(work, exist_ok=True)
    bundle = run.args.bundle
    for test in manifest.get("tests") or []:
        name = test["name"]
        room = TESTS_CAP_S - (time.monotonic() - started)
        timeout = budget.timeout_for(TEST_BINARY_CAP_S, room)
        if timeout < MIN_STEP_S:
            skip(run, "tests", name)
            continue
        cmd = [os.path.join(bundle, test["path"])] + list(test.get("args") or [])
        record = run_step(f"test {name}", cmd, os.path.join(work, f"{name}.log"), timeout, env=run.env,
                          cwd=REPO_ROOT)
        results = parse_libtest(preflight.read_log(record))
        passed = sorted(t for t, r in results.items() if r == "ok")
        failed = sorted(t for t, r in results.items() if r == "FAILED")
        status = status_of(record)
        if status == "ok" and (failed or not passed):
            status = "failed"
        detail = f"{len(passed)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
        if status not in ("ok",):
            detail = f"{describe(record)}; {detail}"
        run.add("tests", name, status, detail, record, passed=passed, failed_tests=failed)


def run_script(run, budget, phase, family_dir, name, script, args, cap, until_s=None):
    """One timing script into family_dir (log.txt, run.json: what merge.py reads)."""
    timeout = budget.timeout_for(cap, until_s)
    os.makedirs(family_dir, exist_ok=True)
    if timeout < MIN_STEP_S:
        save_record(family_dir, {"skipped": "no time left", "returncode": None, "timeout_s": 0, "elapsed_s": 0})
        return skip(run, phase, name)
    cmd = [run.args.python, os.path.join(HERE, script), "--tessera", run.tessera, "--out", family_dir] + args
    record = run_step(f"{phase} {name}", cmd, os.path.join(family_dir, "log.txt"), timeout, env=run.env)
    save_record(family_dir, {"args": args, "timeout_s": record["timeout_s"], "returncode": record["returncode"],
                             "timed_out": record["timed_out"], "elapsed_s": record["elapsed_s"],
                             **({"error": record["error"]} if record.get("error") else {})})
    status = status_of(record)
    tail = log_tail(record["log"], lines=1) if status != "ok" else []
    return run.add(phase, name, status, describe(record) + (f": {tail[0]}" if tail else ""), record)


def phase_headline(run, budget, jobs=HEADLINE, folder="headline", with_sim_diff=True):
    started = time.monotonic()
    for family, args, cap in jobs:
        room = HEADLINE_CAP_S - (time.monotonic() - started)
        run_script(run, budget, folder, os.path.join(run.work, folder, family), family,
                   FAMILY_BY_NAME[family].script, args, cap, room)
    if not with_sim_diff:
        return
    room = HEADLINE_CAP_S - (time.monotonic() - started)
    timeout = budget.timeout_for(SIM_DIFF_CAP_S, room)
    out = os.path.join(run.work, folder, "sim_diff")
    if timeout < MIN_STEP_S or not run.sim_diff:
        why = "no time left in the budget" if run.sim_diff else "no sim_diff driver in the bundle"
        skip(run, folder, "sim_diff", why)
        return
    cmd = [run.args.python, os.path.join(HERE, "sim_diff.py"), "--driver", run.sim_diff, "--out", out]
    record = run_step(f"{folder} sim_diff", cmd, os.path.join(out, "log.txt"), timeout, env=run.env)
    report = read_json(os.path.join(out, "report.json")) or {}
    cases = report.get("cases") or []
    ok = sum(c.get("status") == "ok" for c in cases)
    bad = [c.get("name") for c in cases if c.get("status") in ("MISMATCH", "error")]
    detail = (f"{ok}/{len(cases)} cases identical" + (f"; differ or failed: {', '.join(map(str, bad[:8]))}" if bad
                                                      else "")) if cases else describe(record)
    run.add(folder, "sim_diff", status_of(record), detail, record, cases=len(cases), mismatched=bad)


def phase_sweep(run, budget):
    out = os.path.join(run.work, "sweep")
    os.makedirs(out, exist_ok=True)
    before = budget.elapsed()
    run_families(FAMILIES, run.tessera, out, budget, full=False,
                 extra=lambda fam: ["--part", "rest"] if fam.name in PART_FAMILIES else [],
                 python=run.args.python, env=run.env)
    for fam in FAMILIES:
        record = read_json(os.path.join(out, fam.name, "run.json")) or {}
        if record.get("skipped"):
            skip(run, "sweep", fam.name, record["skipped"])
            continue
        step = {"log": os.path.join(out, fam.name, "log.txt"), **record}
        status = status_of(step)
        tail = log_tail(step["log"], lines=1) if status != "ok" else []
        run.add("sweep", fam.name, status, describe(step) + (f": {tail[0]}" if tail else ""), step)
    run.info["sweep_s"] = round(budget.elapsed() - before, 1)


def gpu_slug(device):
    """`NVIDIA H100 80GB HBM3` -> `nvidia-h100-80gb-hbm3` (the file name of a shipped database)."""
    return re.sub(r"[^a-z0-9]+", "-", (device or "unknown-gpu").lower()).strip("-") or "unknown-gpu"


def phase_tune(run, budget):
    work = os.path.join(run.work, "tune")
    os.makedirs(work, exist_ok=True)
    db = os.path.join(run.work, "tuned.json")
    # Leave the headline re-timing about a third of what is left.
    tune_until = budget.left_for_steps() * 2 / 3
    started = time.monotonic()
    for i, (label, job) in enumerate(TUNE_JOBS):
        timeout = budget.timeout_for(TUNE_JOB_CAP_S, tune_until - (time.monotonic() - started))
        if timeout < MIN_STEP_S:
            skip(run, "tune", label)
            continue
        record = run_step(f"tune {label}", tune_command(run.tessera, job, db), os.path.join(work, f"{i:02d}.log"),
                          timeout, env=run.env)
        tail = log_tail(record["log"], lines=1)
        run.add("tune", label, status_of(record), describe(record) + (f": {tail[0]}" if tail else ""), record)
    if os.path.isfile(db):
        device = ((run.info.get("doctor") or {}).get("backend") or {}).get("device")
        shipped = os.path.join(run.work, "tuned", f"{gpu_slug(device)}.json")
        os.makedirs(os.path.dirname(shipped), exist_ok=True)
        shutil.copyfile(db, shipped)
        run.info["tuned"] = rel(run.work, shipped)
        timeout = budget.timeout_for(10.0)
        if timeout >= 1.0:
            run_step("tune db show", [run.tessera, "db", "show", "--tuning-db", db],
                     os.path.join(work, "db-show.log"), timeout, env=run.env)
        run.env[TUNING_DB_ENV] = db


# ---- finishing: results, summary, archive -----------------------------------------------------------

def merged_results(run, budget):
    """results.json in run_all.py's schema (headline and sweep parts of each family) and the plot."""
    folders = ["headline", "sweep"] if run.mode == "run" else ["headline"]
    families = [f for f in FAMILIES if any(os.path.isdir(os.path.join(run.work, d, f.name)) for d in folders)]
    entries = [merge_family(f, [os.path.join(run.work, d, f.name) for d in folders
                                if os.path.isdir(os.path.join(run.work, d, f.name))]) for f in families]
    merged = merge(entries, run.mode, run.args.budget_s, budget.elapsed(), command=run.info["command"])
    path = os.path.join(run.work, "results.json")
    write_json(path, merged, atomic=True)
    room = budget.left() - ALARM_MARGIN_S / 2
    if entries and room > 2:
        merged["plot"] = plot(run.tessera, path, os.path.join(run.work, "plot.png"), min(PLOT_CAP_S, room))
        merged["plot"]["path"] = "plot.png"  # where it is in the archive
        write_json(path, merged, atomic=True)
    return merged


def fmt(v, spec, missing="-"):
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else missing


def headline_raw(run, family):
    """A headline script's results: its results.json, or what its log printed before it stopped."""
    return merge_family(FAMILY_BY_NAME[family], [os.path.join(run.work, "headline", family)])["raw"] or {}


def headline_rows(run):
    """Markdown rows of the headline table, from the headline scripts' results."""
    rows = []
    for r in headline_raw(run, "attention").get("bench") or []:
        sdpa = r.get("sdpa") or {}
        sdpa_text = ", ".join(f"{k} {fmt(v.get('tflops'), '.0f', 'n/a')}" for k, v in sdpa.items())
        mask = "causal" if r.get("causal") else "full"
        rows.append((f"attention bf16 d{r.get('head_dim')} seq {r.get('seq')} {mask} (b{r.get('batch')} h{r.get('heads')})",
                     f"{fmt(r.get('tessera_tflops'), '.0f')} TFLOP/s ({r.get('tessera_path', '-')}); mma.sync "
                     f"{fmt(r.get('tessera_mma_sync_tflops'), '.0f')}",
                     f"SDPA {sdpa_text or '-'}", fmt(r.get("ratio_vs_sdpa"), ".2f"),
                     r.get("tessera_kernel") or r.get("tessera_error") or "-"))
    gl = headline_raw(run, "gemm_lora")
    for r in gl.get("gemm") or []:
        rows.append((f"GEMM bf16 {r.get('m')}^3", f"{fmt(r.get('tessera_tflops'), '.0f')} TFLOP/s",
                     f"cuBLAS {fmt(r.get('cublas_tflops'), '.0f')} TFLOP/s", fmt(r.get("vs_cublas"), ".2f"),
                     r.get("kernel") or r.get("tessera_error") or "-"))
    for r in gl.get("lora") or []:
        rows.append((f"fused LoRA r{r.get('rank')} M=N=K={r.get('m')}",
                     f"{fmt(r.get('fused_ms'), '.3f')} ms, {fmt(r.get('fused_tflops'), '.0f')} TFLOP/s; "
                     f"{fmt(r.get('fused_vs_base'), '.3f')}x our base GEMM",
                     f"unfused torch {fmt(r.get('torch_ms'), '.3f')} ms", fmt(r.get("speedup_vs_torch"), ".2f"),
                     r.get("kernel") or r.get("fused_error") or "-"))
    amp = headline_raw(run, "amp")
    copy = (amp.get("copy") or {}).get("gbps")
    for r in amp.get("bench") or []:
        rows.append((f"{r.get('name')} ({r.get('config')})",
                     f"{fmt(r.get('tessera_gbps'), '.0f')} GB/s "
                     f"({fmt(100 * r['of_copy'] if 'of_copy' in r else None, '.0f')} % of copy {fmt(copy, '.0f')} GB/s)",
                     f"torch fused {fmt(r.get('torch_gbps'), '.0f')} GB/s", fmt(r.get("torch_over_tessera"), ".2f"),
                     r.get("kernel") or r.get("tessera_error") or "-"))
    return rows


def summary_text(run, budget, merged):
    doctor = run.info.get("doctor") or {}
    # What doctor reported; "-" where it had nothing (no driver on the simulator, say).
    backend = {k: v for k, v in (doctor.get("backend") or {}).items() if v is not None}
    nvrtc = {k: v for k, v in (doctor.get("nvrtc") or {}).items() if v is not None}
    failed = run.failed()
    unfinished = [s for s in run.steps if s["status"] in ("timeout", "skipped", "error")]
    verdict = "FAILED" if failed or run.fatal else ("INCOMPLETE" if unfinished or run.stopped else "PASSED")
    title = "tune run" if run.mode == "tune" else "run"
    failed_names = ", ".join(f"{s['phase']} {s['name']}" for s in failed[:6]) + (", ..." if len(failed) > 6 else "")
    lines = [f"# Tessera first contact ({title}): {backend.get('device', 'no device')}, "
             f"{time.strftime('%Y-%m-%d')}", "",
             f"- result: **{verdict}**" + (f" ({len(failed)} failed: {failed_names})" if failed else "")
             + (f"; stopped early: {run.stopped}" if run.stopped else ""),
             f"- device: {backend.get('device', '-')}, {backend.get('arch', '-')}, compute capability "
             f"{backend.get('compute_capability', '-')}, driver {backend.get('driver_version', '-')}, "
             f"{backend.get('multiprocessors', '-')} SMs",
             f"- NVRTC {nvrtc.get('version', '-')}: {nvrtc.get('path', '-')} (found by: {nvrtc.get('origin', '-')}); "
             f"tessera {doctor.get('tessera', '?')}",
             f"- bundle: built from {((run.info.get('bundle') or {}).get('commit') or '?')[:12]}"
             f"{' (dirty)' if (run.info.get('bundle') or {}).get('dirty') else ''} with "
             f"{(run.info.get('bundle') or {}).get('rustc', '?')}",
             f"- budget {run.args.budget_s:.0f} s, used {budget.elapsed():.0f} s; sync deadline "
             f"{run.env.get(SYNC_TIMEOUT_ENV)} s; command: `{run.info['command']}`", ""]
    warnings = [f"{s['phase']} {s['name']}: {s['warning']}" for s in run.steps if s.get("warning")]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    rows = headline_rows(run)
    lines += ["## Headline (for benches/RESULTS.md)", "",
              "| what | Tessera | PyTorch | PyTorch time / Tessera time | kernel that ran |",
              "|---|---|---|---:|---|"]
    lines += [f"| {' | '.join(str(c) for c in r)} |" for r in rows] or ["| (no headline results) | | | | |"]
    sim = next((s for s in run.steps if s["name"] == "sim_diff"), None)
    if sim:
        lines += ["", f"Simulator vs GPU differential suite: {sim['status']}: {sim['detail']}"]
    if run.info.get("tuned"):
        lines += ["", f"Tuned database: `{run.info['tuned']}` in the archive (check in as runtime/tuned/"
                      f"{os.path.basename(run.info['tuned'])})."]
    lines += ["", "## Steps", "", "| phase | step | status | s | detail | kernel |", "|---|---|---|---:|---|---|"]
    for s in run.steps:
        kernel = s.get("kernel") or ", ".join(s.get("kernels") or []) or ""
        detail = str(s.get("detail", "")).replace("|", "/")
        lines.append(f"| {s['phase']} | {s['name']} | {s['status']} | {fmt(s.get('elapsed_s'), '.0f')} | {detail} | "
                     f"{kernel} |")
    if merged and merged.get("families"):
        lines += ["", "## Families (checks, best ratio, targets)", "", "```", table(merged, footer=False), "```"]
    problems = [s for s in run.steps if s["status"] not in ("ok", "skipped") and s.get("log")]
    if problems:
        lines += ["", "## Logs of what did not pass (last lines; the whole log is in the archive)"]
        for s in problems:
            lines += ["", f"### {s['phase']} {s['name']}: {s['status']} ({s['log']})", "", "```"]
            lines += log_tail(os.path.join(run.work, s["log"]), lines=12) + ["```"]
    lines += ["", f"Archive: `{archive_name(run)}` (this summary, run.json, results.json, plot.png, every log).", ""]
    return "\n".join(lines)


def archive_name(run):
    return "first-contact-tune.tar.gz" if run.mode == "tune" else "first-contact.tar.gz"


def summary_name(run):
    return "first-contact-tune.md" if run.mode == "tune" else "first-contact.md"


def add_to_archive(tar, path, arcname):
    """Adds a file, cut to its first and last ARCHIVE_FILE_LIMIT / 2 bytes when larger."""
    size = os.path.getsize(path)
    if size <= ARCHIVE_FILE_LIMIT:
        tar.add(path, arcname=arcname, recursive=False)
        return
    import io
    half = ARCHIVE_FILE_LIMIT // 2
    with open(path, "rb") as f:
        head = f.read(half)
        f.seek(size - half)
        tail = f.read(half)
    data = head + f"\n[... {size - 2 * half} bytes cut ...]\n".encode() + tail
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def write_archive(run, out_dir):
    target = os.path.join(out_dir, archive_name(run))
    tmp = target + ".tmp"
    root = os.path.basename(archive_name(run)).split(".")[0]
    with tarfile.open(tmp, "w:gz") as tar:
        for folder, _, files in os.walk(run.work):
            for name in sorted(files):
                path = os.path.join(folder, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                add_to_archive(tar, path, os.path.join(root, os.path.relpath(path, run.work)))
    os.replace(tmp, target)
    return target


def finish(run, budget, out_dir):
    """Results, summary, archive: always, whatever happened before."""
    clear_deadline()
    merged = None
    try:
        merged = merged_results(run, budget)
    except Exception as e:  # noqa: BLE001 - the summary and archive must still be written
        run.info["merge_error"] = f"{type(e).__name__}: {e}"
    run.info["elapsed_s"] = round(budget.elapsed(), 1)
    try:
        text = summary_text(run, budget, merged)
    except Exception as e:  # noqa: BLE001
        text = (f"# Tessera first contact: the summary could not be built ({type(e).__name__}: {e})\n\n"
                f"See run.json in the archive.\n")
    run.save()
    write_text(os.path.join(run.work, "summary.md"), text)
    os.makedirs(out_dir, exist_ok=True)
    summary = os.path.join(out_dir, summary_name(run))
    write_text(summary + ".tmp", text)
    os.replace(summary + ".tmp", summary)
    archive = write_archive(run, out_dir)
    print("\n" + text)
    print(f"wrote {summary} and {archive} ({os.path.getsize(archive)} bytes) in {budget.elapsed():.0f} s", flush=True)


def exit_code(run):
    if run.failed() or run.fatal:
        return 1
    if run.stopped or any(s["status"] in ("timeout", "skipped", "error") for s in run.steps):
        return 2
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", metavar="OUTDIR", help="where the summary and the archive go")
    ap.add_argument("--work", required=True, help="the work folder (everything the archive holds)")
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE, help="the folder prepare.sh built")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"hard end of the run (default {DEFAULT_BUDGET_S:.0f}; "
                         f"with --tune {DEFAULT_TUNE_BUDGET_S:.0f})")
    ap.add_argument("--tune", action="store_true", help="tune the headline shapes (a separate invocation)")
    ap.add_argument("--backend", default="cuda", choices=["cuda", "sim"], help="sim: a dry run without a GPU")
    ap.add_argument("--phases", default=None, help="comma-separated subset of the phases (default: all)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the timing scripts")
    ap.add_argument("--seed", type=int, default=None, help="seed of the preflight inputs (default: random)")
    args = ap.parse_args()
    args.budget_s = args.budget_s or (DEFAULT_TUNE_BUDGET_S if args.tune else DEFAULT_BUDGET_S)
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    args.bundle = os.path.abspath(args.bundle)
    allowed = TUNE_PHASES if args.tune else PHASES
    phases = [p.strip() for p in (args.phases or ",".join(allowed)).split(",") if p.strip()]
    unknown = [p for p in phases if p not in allowed]
    if unknown:
        print(f"error: unknown phases {unknown}; allowed: {', '.join(allowed)}", file=sys.stderr)
        return 2

    budget = Budget(args.budget_s, FINAL_RESERVE_S)
    install_deadline(args.budget_s - ALARM_MARGIN_S)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    run = Run(args, work)
    run.info["phases"] = phases
    run.info["seed"] = args.seed
    print(f"first contact ({run.mode}): budget {args.budget_s:.0f} s, work folder {work}", flush=True)
    try:
        manifest = check_bundle(run, args.bundle)
        if manifest is None:
            run.stopped, run.fatal = "the bundle is missing or damaged", True
        elif "preflight" in phases and not phase_preflight(run, budget, only_doctor=args.tune):
            run.stopped, run.fatal = "the preflight failed", True
        else:
            if "tests" in phases:
                phase_tests(run, budget, manifest)
            if "tune" in phases:
                phase_tune(run, budget)
            if "headline" in phases:
                if args.tune:
                    phase_headline(run, budget, TUNED_HEADLINE, with_sim_diff=False)
                else:
                    phase_headline(run, budget)
            if "sweep" in phases:
                phase_sweep(run, budget)
    except OutOfTime as e:
        run.stopped = f"out of time ({e})"
    except Exception as e:  # noqa: BLE001 - a bug here must still leave the summary and the archive
        import traceback
        traceback.print_exc()
        run.stopped, run.fatal = f"internal error: {type(e).__name__}: {e}", True
    finally:
        finish(run, budget, args.out_dir)
    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
