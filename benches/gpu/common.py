"""Helpers the GPU scripts beside this file share: locating things, argument parsing, running the
`tessera` binary and reading its output, CUDA-event timing, f64 reference comparisons, table
cells and writing the results.

The scripts import it as `common` (a script's own folder is first on sys.path when it runs as
`python3 benches/gpu/<name>.py`). Importing it needs neither torch nor numpy: the helpers that use
them import them when called, so run_all.py (--merge-only) and sim_diff.py stay free of both.
"""
import json
import os
import statistics
import subprocess
import sys
import time

# ---- locations -----------------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))  # benches/gpu
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_TESSERA = "target/release/tessera"


# ---- limits --------------------------------------------------------------------------------------

# Caps every script's timeout for one `tessera` command (first_contact.py sets it: within a short
# GPU window a hung command must not take a family's whole share; the runtime's own sync watchdog,
# TESSERA_SYNC_TIMEOUT_S, normally turns a hung kernel into an error much sooner).
CMD_TIMEOUT_ENV = "TESSERA_BENCH_CMD_TIMEOUT_S"


def cmd_timeout(default_s):
    """`default_s`, or less when CMD_TIMEOUT_ENV holds a smaller positive number of seconds."""
    try:
        cap = float(os.environ.get(CMD_TIMEOUT_ENV, ""))
    except ValueError:
        return default_s
    return min(default_s, cap) if cap > 0 else default_s


# ---- arguments -----------------------------------------------------------------------------------

def add_io_args(ap):
    """--tessera (the binary, built elsewhere) and --out (the results folder)."""
    ap.add_argument("--tessera", default=DEFAULT_TESSERA)
    ap.add_argument("--out", default=".")


def add_timing_args(ap, warmup, reps, warmup_help=None, reps_help=None):
    ap.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    ap.add_argument("--reps", type=int, default=reps, help=reps_help)


def add_skip_args(ap):
    ap.add_argument("--skip-checks", action="store_true", help="timing only")
    ap.add_argument("--skip-bench", action="store_true", help="correctness only")


# --part: which half of a script's work a run does. first_contact.py runs the headline rows (the
# figures that matter most, first, before anything can eat the GPU window) and later, as time
# allows, the rest; a plain run does all of it, headline rows first.
PARTS = ("all", "headline", "rest")


def add_part_arg(ap):
    ap.add_argument("--part", default="all", choices=PARTS,
                    help="headline: only the headline timing rows, no checks; rest: the checks and every other "
                         "row; all (default): both, headline rows first")


def split_rows(rows, headline, part):
    """The rows of `part`: the `headline` rows, the other `rows`, or both with the headline first."""
    head = list(headline)
    rest = [r for r in rows if r not in head]
    return {"headline": head, "rest": rest, "all": head + rest}[part]


def add_seed_arg(ap):
    ap.add_argument("--seed", type=int, default=None, help="input seed (default: random, printed)")


def random_seed():
    """A random 32-bit seed from the OS."""
    return int.from_bytes(os.urandom(4), "little")


def pick_seed(seed):
    """--seed when given, else a random one."""
    return seed if seed is not None else random_seed()


# ---- the tessera binary --------------------------------------------------------------------------

def tessera_version(tessera):
    """`tessera --version`, stripped."""
    return subprocess.run([tessera, "--version"], capture_output=True, text=True).stdout.strip()


def run_process(cmd, timeout, show_cmd=False):
    """subprocess.run with text output captured: (the completed process, None) whatever its exit
    status, or (None, "timed out after T s") (with ": COMMAND" when show_cmd)."""
    cmd = [str(c) for c in cmd]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout), None
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s" + (f": {' '.join(cmd)}" if show_cmd else "")


def run_cli(cmd, timeout, show_cmd=True):
    """Runs a CLI command: (the completed process, None), or (None, the error): a timeout (see
    run_process) or, on a non-zero exit, the last 500 characters of stderr (of stdout without)."""
    r, err = run_process(cmd, timeout, show_cmd)
    if err:
        return None, err
    if r.returncode != 0:
        return None, (r.stderr.strip() or r.stdout.strip())[-500:]
    return r, None


def parse_last_json(stdout):
    """The JSON object on the last line of `stdout`: (object, None) or (None, the error)."""
    try:
        return json.loads(stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError) as e:
        return None, f"unreadable output ({e}): {stdout[-300:]}"


def bench_command(tessera, family, flags, warmup, reps, dtype=None):
    """`tessera bench FAMILY [--dtype DTYPE] FLAGS --warmup W --reps R --json` as a list of str."""
    return ([tessera, "bench", family] + (["--dtype", dtype] if dtype else []) + [str(f) for f in flags]
            + ["--warmup", str(warmup), "--reps", str(reps), "--json"])


def bench_json(cmd, timeout, show_cmd=True):
    """Runs a `tessera bench ... --json` command: the parsed JSON object, or {"error": ...}."""
    r, err = run_cli(cmd, timeout, show_cmd)
    if err:
        return {"error": err}
    t, err = parse_last_json(r.stdout)
    return {"error": err} if err else t


def tessera_bench(tessera, family, flags, warmup, reps, timeout, dtype=None, show_cmd=True):
    """`tessera bench FAMILY ... --json`: the parsed JSON object, or {"error": ...}."""
    return bench_json(bench_command(tessera, family, flags, warmup, reps, dtype), timeout, show_cmd)


# ---- timing (torch) ------------------------------------------------------------------------------

def time_cuda(fn, warmup, reps, sleep_cycles=None):
    """Median device time of `fn` in ms, CUDA events around each call. With sleep_cycles, a GPU
    sleep of that many cycles queued before each start event keeps the GPU busy while the host
    issues `fn`, so host dispatch is not timed (where torch has torch.cuda._sleep)."""
    import torch
    sleep = getattr(torch.cuda, "_sleep", None) if sleep_cycles else None
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if sleep is not None:
            sleep(sleep_cycles)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def free_cuda():
    import torch
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def copy_ms(make_src, warmup, reps):
    """Median time in ms of dst.copy_(src) for src = make_src() on the device; both are freed after."""
    import torch
    src = make_src()
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), warmup, reps)
    del src, dst
    free_cuda()
    return ms


# ---- files and f64 references (numpy, torch) -----------------------------------------------------

def save_npy(path, t, dtype=None):
    """A tensor as .npy, converted to `dtype` (default float32)."""
    import numpy as np
    np.save(path, t.detach().cpu().numpy().astype(np.float32 if dtype is None else dtype))


def load_npy(path, device):
    """A .npy as a tensor on `device`."""
    import numpy as np
    import torch
    return torch.from_numpy(np.load(path)).to(device)


def remove_files(paths):
    """Removes those of `paths` that exist (stale outputs of an earlier case or run)."""
    for p in paths:
        if os.path.exists(p):
            os.remove(p)


def shape_error(out, ref):
    """None when out and ref have the same shape, else the error text."""
    if tuple(out.shape) != tuple(ref.shape):
        return f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
    return None


def error_stats(out, ref, nan_if_non_finite=True):
    """(non_finite, rel_l2, max_abs) of out against the f64 reference ref (same shape, same device):
    non_finite counts NaN/Inf in out; rel_l2 = |out - ref| / max(|ref|, 1e-30); max_abs is 0 for
    empty tensors. With nan_if_non_finite both errors are NaN when out holds a NaN or Inf."""
    import torch
    non_finite = int((~torch.isfinite(out)).sum())
    if non_finite and nan_if_non_finite:
        return non_finite, float("nan"), float("nan")
    rel = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    max_abs = float((out - ref).abs().max()) if out.numel() else 0.0
    return non_finite, rel, max_abs


# ---- output --------------------------------------------------------------------------------------

def is_number(v):
    """int or float, not bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v, spec):
    """A number formatted with `spec`; "-" for anything else (None, missing)."""
    return format(v, spec) if is_number(v) else "-"


def with_target(text, row, key="target_met"):
    """A table cell with " ok" or " MISSED" appended when row[key] says whether a target was met."""
    if key in row:
        text += " ok" if row[key] else " MISSED"
    return text


def print_check(res, detail, tags=("PASS ", "FAIL ")):
    """One correctness case's line: TAG CASE: DETAIL (run_all.py reads these back from the log)."""
    print((tags[0] if res["ok"] else tags[1]) + f"{res['case']}: {detail}", flush=True)


def run_env(device, middle=None, tail=None):
    """results.json's env: device, torch and CUDA versions, `middle`, date, command, `tail`."""
    import torch
    return {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, **(middle or {}),
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), **(tail or {})}


def device_line(device, extra=()):
    """The first line a script prints: device, torch and CUDA versions, then `extra`."""
    import torch
    return ", ".join([f"device: {device}", f"torch {torch.__version__}", f"CUDA {torch.version.cuda}", *extra])


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_json(path, obj, indent=1, atomic=False):
    """json.dump to `path`; atomic: through path.tmp and a rename, so a reader never sees half a file."""
    target = path + ".tmp" if atomic else path
    with open(target, "w") as f:
        json.dump(obj, f, indent=indent)
    if atomic:
        os.replace(target, path)


def write_results(out_dir, results, md):
    """A script's results.json (`results`) and results.md (`md`) in out_dir."""
    write_json(os.path.join(out_dir, "results.json"), results)
    write_text(os.path.join(out_dir, "results.md"), md)


def finish(table, summary, checks):
    """Prints the table and the summary last and exits: 0 when every check passed, else 1."""
    print("\n" + table + "\n" + summary)
    sys.exit(0 if sum(c["ok"] for c in checks) == len(checks) else 1)
