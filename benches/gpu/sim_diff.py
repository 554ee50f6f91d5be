#!/usr/bin/env python3
"""Differential check of Tessera's CPU simulator (tessera-sim) against a real GPU.

Runs the suite of small CUDA kernels in benches/gpu/sim_diff/ (every instruction family the
simulator implements: shfl in all modes and widths, vote, redux, match, activemask, ldmatrix
x1/x2/x4 with and without .trans, mma.sync m16n8k16 and m16n8k8 in f16 and bf16, cp.async ca/cg
with zero fill and wait_group, vector and narrow loads and stores, global and shared atomics, cvt in
every rounding mode, the MUFU approximations, fma/mul/add rounding modes, packed f16x2/bf16x2 math,
integer arithmetic, min/max with NaN, bit operations, prmt, setp/selp/set/slct) twice with the same
random inputs: once on the GPU (--backend cuda) and once on the simulator (--backend sim), through
the driver runtime/examples/sim_diff.rs, then compares the outputs word by word:

  bits              identical words
  f32               identical, or both NaN (NaN payloads may differ)
  f16, bf16         the low 16 bits identical, or both NaN in that format
  f16x2, bf16x2     each half identical, or both NaN
  f64pair           this word and the next as one f64: identical, or both NaN
  ulps:N            f32 within N units in the last place (specials identical)
  ulps_or_abs:N:A   within N ulps or within A absolutely
  rel:R             |gpu - sim| <= R |gpu|
  abs:A             |gpu - sim| <= A
  mma               (d, m) word pairs, m = mma(|A|, |B|, |C|): |d_gpu - d_sim| <= 2^-20 m_gpu;
                    the tensor core does not round like sequential IEEE f32 adds
  skip              not compared

Bounds for the approximations are the PTX ISA's maximum errors, doubled because both sides
approximate. Everything else (conversions, roundings, integer and bit operations, exact-input mma)
must match bit for bit.

Usage (on a machine with a CUDA GPU, from the repository root):
  python3 benches/gpu/sim_diff.py [--seed N] [--only NAME] [--out DIR] [--driver PATH]
  python3 benches/gpu/sim_diff.py --compare GPU_DIR SIM_DIR [--out DIR]   # compare saved runs

Without --driver it runs the driver of a GPU-run bundle (target/gpu-bundle/bin/sim_diff, built by
benches/gpu/prepare.sh) or of the last release build (target/release/examples/sim_diff); --build
builds it with cargo first. It never builds on its own: a GPU machine may have no Rust toolchain.
Each driver run has a timeout (--timeout-s); a driver that writes no manifest is one failed row.
Writes DIR/report.md and DIR/report.json (default DIR: sim_diff_results) and exits 1 on any
mismatch or failed case.
"""
import argparse
import json
import math
import os
import random
import struct
import subprocess
import sys

from common import REPO_ROOT as ROOT, write_json, write_text

# Where a built driver is looked for, in this order (relative to the repository root).
DRIVER_CANDIDATES = ("target/gpu-bundle/bin/sim_diff", "target/release/examples/sim_diff")
DRIVER_TIMEOUT_S = 120


def run_driver(driver, backend, out, seed, only, timeout_s):
    """Runs the driver on one backend: (exit status, its manifest.json). A driver that fails before
    writing its manifest (no GPU, a crash, the timeout) gives a manifest with no cases and the error."""
    cmd = [driver, "--backend", backend, "--out", out, "--seed", str(seed)]
    if only:
        cmd += ["--only", only]
    print("$", " ".join(cmd), flush=True)
    if os.path.exists(os.path.join(out, "manifest.json")):
        os.remove(os.path.join(out, "manifest.json"))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=timeout_s)
        status, why = proc.returncode, f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        status, why = None, f"timed out after {timeout_s} s"
    try:
        with open(os.path.join(out, "manifest.json")) as f:
            return status, json.load(f)
    except (OSError, ValueError) as e:
        return status, {"backend": backend, "device": None, "cases": [],
                        "error": f"the {backend} driver wrote no manifest ({why}): {e}"}


def find_driver(explicit, build):
    """The driver to run: --driver, else (with --build) a fresh cargo build, else the one a
    GPU-run bundle holds (benches/gpu/prepare.sh), else the last release build. None when none is
    there: building is never implicit (the GPU machine has no Rust toolchain)."""
    if explicit:
        return explicit
    if build:
        subprocess.run(["cargo", "build", "--release", "-p", "tessera-runtime", "--example", "sim_diff"], cwd=ROOT,
                       check=True)
        return os.path.join(ROOT, "target", "release", "examples", "sim_diff")
    for candidate in DRIVER_CANDIDATES:
        path = os.path.join(ROOT, candidate)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def words(path):
    with open(path, "rb") as f:
        data = f.read()
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def f32(w):
    return struct.unpack("<f", struct.pack("<I", w))[0]


def is_nan16(h, bf16):
    if bf16:
        return (h & 0x7F80) == 0x7F80 and (h & 0x7F) != 0
    return (h & 0x7C00) == 0x7C00 and (h & 0x3FF) != 0


def ordered(w):
    """Maps f32 bits to integers whose order is the float order (for ulp distances)."""
    return w if w < 0x80000000 else 0x80000000 - (w & 0x7FFFFFFF)


def special(x):
    return math.isnan(x) or math.isinf(x) or x == 0.0


def same_special(g, s):
    """None when neither is special; else whether they agree (NaN == NaN, signed zeros exact)."""
    gx, sx = f32(g), f32(s)
    if math.isnan(gx) or math.isnan(sx):
        return math.isnan(gx) and math.isnan(sx)
    if math.isinf(gx) or math.isinf(sx):
        return g == s
    return None


def compare_word(mode, g, s, g_next=None, s_next=None):
    """True when the GPU word g and the simulator word s agree under mode."""
    if mode == "skip" or g == s:
        return True
    if mode == "bits":
        return False
    if mode == "f32":
        return math.isnan(f32(g)) and math.isnan(f32(s))
    if mode in ("f16", "bf16"):
        bf = mode == "bf16"
        return (g & 0xFFFF) == (s & 0xFFFF) or (is_nan16(g & 0xFFFF, bf) and is_nan16(s & 0xFFFF, bf))
    if mode in ("f16x2", "bf16x2"):
        bf = mode == "bf16x2"
        for shift in (0, 16):
            gh, sh = (g >> shift) & 0xFFFF, (s >> shift) & 0xFFFF
            if gh != sh and not (is_nan16(gh, bf) and is_nan16(sh, bf)):
                return False
        return True
    if mode == "f64pair":
        gd = struct.unpack("<d", struct.pack("<II", g, g_next))[0]
        sd = struct.unpack("<d", struct.pack("<II", s, s_next))[0]
        return (g, g_next) == (s, s_next) or (math.isnan(gd) and math.isnan(sd))
    agree = same_special(g, s)
    if agree is not None:
        return agree
    gx, sx = f32(g), f32(s)
    if mode.startswith("ulps:"):
        return abs(ordered(g) - ordered(s)) <= int(mode.split(":")[1])
    if mode.startswith("ulps_or_abs:"):
        _, n, a = mode.split(":")
        return abs(ordered(g) - ordered(s)) <= int(n) or abs(gx - sx) <= float(a)
    if mode.startswith("rel:"):
        return abs(gx - sx) <= float(mode.split(":")[1]) * abs(gx)
    if mode.startswith("abs:"):
        return abs(gx - sx) <= float(mode.split(":")[1])
    raise ValueError(f"unknown compare mode {mode!r}")


def compare_case(case, gpu_dir, sim_dir):
    g = words(os.path.join(gpu_dir, case["out"]))
    s = words(os.path.join(sim_dir, case["out"]))
    if len(g) != len(s):
        return [f"length: gpu {len(g)} words, sim {len(s)}"], len(g)
    per = case["words_per_thread"]
    modes = case["compare"]
    bad = []
    for i in range(len(g)):
        slot = i % per
        mode = modes[slot % len(modes)]
        if mode == "mma":
            # Pairs (d, m): both compared with the bound from the GPU's magnitude word.
            m = f32(g[i | 1]) if (i | 1) < len(g) else 0.0
            ok = g[i] == s[i] or (
                same_special(g[i], s[i]) is None and abs(f32(g[i]) - f32(s[i])) <= 2.0**-20 * m
            ) or (math.isnan(f32(g[i])) and math.isnan(f32(s[i])))
        elif mode == "f64pair":
            ok = compare_word(mode, g[i], s[i], g[i + 1], s[i + 1])
        else:
            ok = compare_word(mode, g[i], s[i])
        if not ok:
            thread, word = divmod(i, per)
            bad.append(
                f"thread {thread} word {word} ({mode}): gpu {g[i]:#010x} ({f32(g[i]):.9g}), "
                f"sim {s[i]:#010x} ({f32(s[i]):.9g})"
            )
    return bad, len(g)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="input seed (default: random, printed)")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    ap.add_argument("--out", default="sim_diff_results")
    ap.add_argument("--driver", default=None,
                    help=f"a built sim_diff example (default: the first of {', '.join(DRIVER_CANDIDATES)})")
    ap.add_argument("--build", action="store_true", help="build the driver with cargo first (needs Rust)")
    ap.add_argument("--timeout-s", type=float, default=DRIVER_TIMEOUT_S, help="per driver run")
    ap.add_argument(
        "--compare",
        nargs=2,
        metavar=("GPU_DIR", "SIM_DIR"),
        help="only compare two existing driver output folders (no GPU needed)",
    )
    args = ap.parse_args()
    if args.compare:
        gpu_dir, sim_dir = args.compare
        with open(os.path.join(gpu_dir, "manifest.json")) as f:
            gpu = json.load(f)
        with open(os.path.join(sim_dir, "manifest.json")) as f:
            sim = json.load(f)
        sys.exit(report(args.out, gpu.get("seed"), gpu, sim, gpu_dir, sim_dir))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"seed {seed}")
    driver = find_driver(args.driver, args.build)
    if driver is None:
        sys.exit("sim_diff.py: no driver found; pass --driver, or --build (needs cargo), or build one with "
                 "`cargo build --release -p tessera-runtime --example sim_diff` or benches/gpu/prepare.sh")
    gpu_dir = os.path.join(args.out, "cuda")
    sim_dir = os.path.join(args.out, "sim")
    _, gpu = run_driver(driver, "cuda", gpu_dir, seed, args.only, args.timeout_s)
    _, sim = run_driver(driver, "sim", sim_dir, seed, args.only, args.timeout_s)
    sys.exit(report(args.out, seed, gpu, sim, gpu_dir, sim_dir))


def report(out, seed, gpu, sim, gpu_dir, sim_dir):
    """Compares, writes report.md/report.json to out, prints the table; returns the exit status."""
    sim_cases = {c["name"]: c for c in sim["cases"]}

    results = []
    failed = 0
    for side in (gpu, sim):
        if side.get("error"):
            # A side that ran nothing: one failed row, so the report says why.
            results.append({"name": f"({side['backend']} driver)", "entry": "-", "gpu_ms": None, "sim_ms": None,
                            "status": "error", "errors": {"gpu": side["error"] if side is gpu else None,
                                                          "sim": side["error"] if side is sim else None}})
            failed += 1
    for case in gpu["cases"]:
        name = case["name"]
        other = sim_cases.get(name, {"error": "missing from the simulator run"})
        row = {"name": name, "entry": case["entry"], "gpu_ms": case.get("ms"), "sim_ms": other.get("ms")}
        if "unsupported" in other and "error" not in case:
            # An *_ext case: forms the simulator's loader does not run yet. Listed, not a failure.
            row["status"] = "not simulated"
            row["errors"] = {"gpu": None, "sim": other["unsupported"]}
        elif "error" in case or "error" in other:
            row["status"] = "error"
            row["errors"] = {"gpu": case.get("error"), "sim": other.get("error")}
            failed += 1
        else:
            bad, total = compare_case(case, gpu_dir, sim_dir)
            row["words"] = total
            row["mismatches"] = len(bad)
            row["examples"] = bad[:8]
            row["status"] = "ok" if not bad else "MISMATCH"
            failed += bool(bad)
        results.append(row)

    report = {"seed": seed, "gpu": gpu.get("device"), "sim": sim.get("device"), "cases": results}
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "report.json"), report, indent=2)
    lines = [
        f"# tessera-sim vs {gpu.get('device')} (seed {seed})",
        "",
        "| case | entry | words | result | gpu ms | sim ms |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['entry']} | {r.get('words', '-')} | {r['status']}"
            f"{' (' + str(r['mismatches']) + ')' if r.get('mismatches') else ''} | {r['gpu_ms']} | {r['sim_ms']} |"
        )
    for r in results:
        if r["status"] != "ok":
            lines += ["", f"## {r['name']}: {r['status']}"]
            if r["status"] in ("error", "not simulated"):
                lines += [f"- gpu: {r['errors']['gpu']}", f"- sim: {r['errors']['sim']}"]
            else:
                lines += [f"- {e}" for e in r["examples"]]
    text = "\n".join(lines) + "\n"
    write_text(os.path.join(out, "report.md"), text)
    print(text)
    print(f"{len(results)} cases, {failed} with mismatches or errors (seed {seed}); report in {out}/")
    return 1 if failed else 0


if __name__ == "__main__":
    main()
