#!/usr/bin/env python3
"""Assembles the GPU-run bundle from cargo's build messages (prepare.sh runs it after building).

The GPU machine has no Rust toolchain, so everything compiled that a GPU run needs is built here
and taken along in one folder:
  bin/tessera            the CLI (release, stripped)
  bin/sim_diff           the simulator-vs-GPU driver (runtime/examples/sim_diff.rs)
  tests/<name>           the GPU test binaries (`cargo test --release --no-run`), stripped
  manifest.json          schema, creation time, git commit (and whether the tree was dirty),
                         rustc, each file's size and SHA-256, and the tests with their arguments
The whole folder must stay under --limit-mib (40 MiB by default); first_contact.py verifies every
checksum before it runs anything. Stdlib only.

Usage: python3 benches/gpu/bundle.py --messages cargo-messages.json --out target/gpu-bundle
       python3 benches/gpu/bundle.py --tessera PATH --sim-diff PATH --test NAME=PATH ... --out DIR
       (the second form, with --no-strip, assembles a bundle from given files: the tests of the
       GPU run's budget logic use it with fakes)
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

SCHEMA = "tessera-gpu-bundle/1"
DEFAULT_LIMIT_MIB = 40
MIB = 1 << 20
# The GPU tests, in the order a run takes them: (package, test target, extra libtest arguments).
# Only tests marked `#[ignore = "needs a CUDA GPU"]` run (`--ignored`), one at a time (one GPU).
# The exhaustive fp8 oracle test (a unit test of tessera-runtime's library) is not among them.
GPU_TESTS = [
    ("tessera-runtime", "gpu_attention", []),
    ("tessera-runtime", "gpu_matmul", []),
    ("tessera-runtime", "gpu_amp", []),
    ("tessera", "sim_attention_variants", ["--exact", "gpu_every_scenario_matches_reference"]),
    # Last: it hangs a (bounded) kernel on purpose to prove the sync deadline, about 10 s.
    ("tessera-runtime", "gpu_watchdog", []),
]
LIBTEST_ARGS = ["--ignored", "--test-threads=1"]
BINARIES = {"tessera": ("bin", "tessera"), "sim_diff": ("example", "sim_diff")}


def artifacts(messages_path):
    """{(kind, target name): executable} from cargo's JSON messages."""
    found = {}
    with open(messages_path) as f:
        for line in f:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
                continue
            target = msg.get("target") or {}
            for kind in target.get("kind") or []:
                found[(kind, target.get("name"))] = msg["executable"]
    return found


def strip_into(src, dst):
    """Copies `src` to `dst` without symbols or debug information (strip, else objcopy)."""
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755)
    for tool in (["strip", "--strip-all"], ["objcopy", "--strip-all"]):
        if shutil.which(tool[0]):
            subprocess.run(tool + [dst], check=True)
            return True
    return False


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def git(*args):
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def rustc_version():
    try:
        return subprocess.run(["rustc", "-V"], capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", help="cargo's --message-format=json output of the builds")
    ap.add_argument("--tessera", help="instead of --messages: the tessera binary")
    ap.add_argument("--sim-diff", help="instead of --messages: the sim_diff driver")
    ap.add_argument("--test", action="append", default=[], metavar="NAME=PATH",
                    help="instead of --messages: a GPU test binary (one of the GPU_TESTS names)")
    ap.add_argument("--no-strip", action="store_true", help="copy the files as they are")
    ap.add_argument("--out", required=True, help="the bundle folder (replaced)")
    ap.add_argument("--limit-mib", type=float, default=DEFAULT_LIMIT_MIB)
    args = ap.parse_args()
    if args.messages:
        found = artifacts(args.messages)
    else:
        given = dict(t.split("=", 1) for t in args.test)
        found = {("bin", "tessera"): args.tessera, ("example", "sim_diff"): args.sim_diff}
        found.update({("test", name): path for name, path in given.items()})
    wanted = [(f"bin/{name}", found.get(key)) for name, key in BINARIES.items()]
    wanted += [(f"tests/{target}", found.get(("test", target))) for _, target, _ in GPU_TESTS]
    missing = [path for path, exe in wanted if not exe]
    if missing:
        print(f"bundle: no {', '.join(missing)} was built (see the build output above)", file=sys.stderr)
        return 1
    tmp = args.out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "bin"))
    os.makedirs(os.path.join(tmp, "tests"))
    stripped = not args.no_strip
    files = {}
    for path, exe in wanted:
        if args.no_strip:
            shutil.copyfile(exe, os.path.join(tmp, path))
            os.chmod(os.path.join(tmp, path), 0o755)
        else:
            stripped &= strip_into(exe, os.path.join(tmp, path))
        files[path] = {"bytes": os.path.getsize(os.path.join(tmp, path)), "sha256": sha256(os.path.join(tmp, path))}
    total = sum(f["bytes"] for f in files.values())
    manifest = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "rustc": rustc_version(),
        "stripped": stripped,
        "bytes": total,
        "tessera": "bin/tessera",
        "sim_diff": "bin/sim_diff",
        "tests": [{"name": target, "package": package, "path": f"tests/{target}", "args": LIBTEST_ARGS + extra}
                  for package, target, extra in GPU_TESTS],
        "files": files,
    }
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total += os.path.getsize(os.path.join(tmp, "manifest.json"))
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    for path, meta in files.items():
        print(f"  {path:<32} {meta['bytes'] / MIB:6.1f} MiB")
    print(f"bundle: {args.out}: {total / MIB:.1f} MiB in {len(files)} files (limit {args.limit_mib:g} MiB)"
          + ("" if stripped or args.no_strip else "; NOT stripped: no strip or objcopy found"))
    if total > args.limit_mib * MIB:
        print(f"bundle: {total / MIB:.1f} MiB is over the {args.limit_mib:g} MiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
