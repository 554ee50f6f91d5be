"""The preflight of a GPU run: a minute that proves the toolchain and one kernel of every family
work before the rest of the window is spent (first_contact.py runs it; stdlib only, because it
must also run where neither numpy nor torch is installed, e.g. CI on the simulator).

Each step is one `tessera` command under a hard timeout, and a check of what it wrote:
  doctor  `tessera doctor --json`: NVRTC found (its path is then pinned with TESSERA_NVRTC for every
          later process, so the whole run compiles with one NVRTC), the backend opens;
  demo    `tessera demo`: four attention cases against the CPU f64 reference; on an sm_90a device
          both the sm_90a (TMA + wgmma) kernel and the mma.sync kernel must have run;
  gemm    `tessera run gemm` bf16 -> f32, aligned: inputs are multiples of 1/16 in [-2, 2], so
          every product and every partial sum is exact in f32 and the output must equal the exact
          result bit for bit, whatever the summation order;
  lora    `tessera run lora` rank 16 single adapter, aligned: the rank-r intermediate T' =
          bf16(s X A) is exact before its rounding, so the reference rounds it like the kernel;
          the output must be within the a-priori f32 summation bound n 2^-24 sum|terms|;
  cast    `tessera run cast --from f32 --to bf16`: round to nearest even, bit for bit (ties,
          infinities, signed zeros, NaN);
  adamw   `tessera run adamw`, one step: master weights, moments and the bf16 model copy bit for
          bit against the kernel's operation order emulated in f32 (each op computed in f64 and
          rounded once, which is the correctly rounded f32 result).
On an sm_90a device the GEMM and LoRA cases are expected to run the sm_90a kernel; a fallback is
reported as a warning, not a failure (the numbers are still checked).
"""
import json
import math
import os
import random
import re
import struct

# Sizes: aligned (rows of whole 16-byte chunks, so the sm_90a kernels' tensor maps apply), small
# enough for a pure-Python reference in well under a second.
GEMM_M, GEMM_N, GEMM_K = 64, 128, 128
LORA_RANK = 16
LORA_SCALE = 0.5
CAST_N = 4096
ADAMW_N = 1000
# Inputs on a grid of 1/16 (bf16-exact; products and sums of a few hundred stay exact in f32).
GRID = 16
F32_UNIT_ROUNDOFF = 2.0 ** -24
BF16_HALF_ULP_BITS = 0x7FFF


# ---- numbers -------------------------------------------------------------------------------------

def f32(x):
    """x rounded to the nearest f32 (struct rounds to nearest even)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bf16(x):
    """x (an f32 value) rounded to bf16, round to nearest even; NaN stays NaN."""
    bits = f32_bits(x)
    if (bits & 0x7F800000) == 0x7F800000 and (bits & 0x7FFFFF):
        return float("nan")
    bits = (bits + BF16_HALF_ULP_BITS + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def same_value(a, b):
    """Bit-identical f32 values (NaN equals NaN, -0 differs from 0)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return f32_bits(a) == f32_bits(b)


def grid_values(rng, n, limit):
    """n multiples of 1/GRID in [-limit, limit]."""
    steps = int(limit * GRID)
    return [rng.randint(-steps, steps) / GRID for _ in range(n)]


# ---- .npy (C order, little-endian f32 / i32) --------------------------------------------------------

NPY_MAGIC = b"\x93NUMPY"


def write_npy(path, shape, values, descr="<f4"):
    fmt = {"<f4": "f", "<i4": "i"}[descr]
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else ""))
    # The header (with its newline) pads the preamble to a multiple of 64 bytes.
    pad = 64 - (len(NPY_MAGIC) + 4 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    with open(path, "wb") as f:
        f.write(NPY_MAGIC + b"\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(struct.pack(f"<{len(values)}{fmt}", *values))


def read_npy(path):
    """(shape, values) of a little-endian f32 .npy in C order; raises ValueError otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(NPY_MAGIC):
        raise ValueError(f"{path}: not a .npy file")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    else:
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    header = data[start:start + hlen].decode("latin1")
    if "'<f4'" not in header or "'fortran_order': False" not in header:
        raise ValueError(f"{path}: expected little-endian f32 in C order, header {header.strip()}")
    m = re.search(r"'shape':\s*\(([^)]*)\)", header)
    shape = tuple(int(d) for d in m.group(1).replace(" ", "").split(",") if d) if m else ()
    n = math.prod(shape)
    body = data[start + hlen:]
    if len(body) != 4 * n:
        raise ValueError(f"{path}: {len(body)} data bytes for shape {shape}")
    return shape, list(struct.unpack(f"<{n}f", body))


# ---- what ran --------------------------------------------------------------------------------------

NOTE_MARK = "tessera: note:"


def launched_kernel(log_text, family):
    """The entry point a `tessera run FAMILY` printed (`FAMILY KERNEL on DEVICE ...`), or None."""
    m = re.search(rf"^{re.escape(family)} (\S+) on ", log_text, re.M)
    return m.group(1) if m else None


def fallback_note(log_text):
    return next((line.split(NOTE_MARK, 1)[1].strip() for line in log_text.splitlines() if NOTE_MARK in line), None)


def path_of(kernel, note=None):
    """sm90a when the entry point is an sm_90a kernel and nothing fell back, else mma.sync."""
    return "sm90a" if kernel and "_sm90a_" in kernel and not note else "mma.sync"


def read_log(record):
    try:
        with open(record["log"], errors="replace") as f:
            return f.read()
    except (OSError, KeyError):
        return ""


# ---- steps -----------------------------------------------------------------------------------------

class Context:
    """What the steps share: the binary, the backend (cuda, or sim for a dry run), a folder for
    their files, and what doctor found (arch)."""

    def __init__(self, tessera, backend, work, seed):
        self.tessera, self.backend, self.work, self.seed = tessera, backend, work, seed
        self.arch = None
        self.nvrtc = None

    def path(self, name):
        return os.path.join(self.work, name)

    def sm90a(self):
        return self.arch == "sm_90a"


class Step:
    """One preflight step: `command(ctx)` prepares inputs and returns the command line;
    `verify(ctx, record, log_text)` returns {"ok", "detail", "kernel"?, "path"?, "warning"?}."""

    def __init__(self, name, command, verify):
        self.name, self.command, self.verify = name, command, verify


def doctor_command(ctx):
    return [ctx.tessera, "doctor", "--backend", ctx.backend, "--json"]


def doctor_verify(ctx, record, text):
    lines = [line for line in text.splitlines() if line.startswith("{")]
    try:
        info = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"ok": False, "detail": "no JSON line from `tessera doctor --json`"}
    nvrtc = info.get("nvrtc") or {}
    backend = info.get("backend") or {}
    ctx.arch = backend.get("arch")
    ctx.nvrtc = nvrtc.get("path")
    detail = (f"{backend.get('device', '?')} ({ctx.arch or '?'}, driver {backend.get('driver_version') or '-'}); "
              f"NVRTC {nvrtc.get('version', '?')} at {nvrtc.get('path', '?')} ({nvrtc.get('origin', '?')})")
    if record["returncode"] != 0 or not ctx.nvrtc or not backend:
        return {"ok": False, "detail": info.get("backend_error") or detail, "doctor": info}
    return {"ok": True, "detail": detail, "doctor": info}


def demo_command(ctx):
    return [ctx.tessera, "demo", "--backend", ctx.backend, "--seed", str(ctx.seed)]


def demo_rows(text):
    """[(case, result, kernel)] of the demo's table: rows after the header line starting `case`."""
    rows, in_table = [], False
    for line in text.splitlines():
        if line.startswith("case "):
            in_table = True
            continue
        if in_table and line.strip():
            parts = line.split()
            if "FAIL" in line:
                rows.append((line[:44].strip(), "FAIL", parts[-1] if "tessera_" in parts[-1] else None))
            elif len(parts) >= 2 and parts[-2] == "ok":
                rows.append((line[:44].strip(), "ok", parts[-1]))
    return rows


def demo_verify(ctx, record, text):
    rows = demo_rows(text)
    kernels = [k for _, _, k in rows if k]
    detail = f"{sum(r == 'ok' for _, r, _ in rows)}/{len(rows)} cases ok"
    if record["returncode"] != 0 or not rows or any(r != "ok" for _, r, _ in rows):
        return {"ok": False, "detail": detail, "kernels": kernels}
    out = {"ok": True, "detail": detail, "kernels": kernels}
    if ctx.sm90a():
        paths = {path_of(k) for k in kernels}
        if paths != {"sm90a", "mma.sync"}:
            out["warning"] = f"expected both the sm_90a and the mma.sync attention kernel to run, ran {sorted(paths)}"
    return out


def matmul_inputs(ctx, with_adapter):
    rng = random.Random(ctx.seed)
    x = grid_values(rng, GEMM_M * GEMM_K, 2)
    w = grid_values(rng, GEMM_K * GEMM_N, 2)
    write_npy(ctx.path("x.npy"), (GEMM_M, GEMM_K), x)
    write_npy(ctx.path("w.npy"), (GEMM_K, GEMM_N), w)
    a = b = None
    if with_adapter:
        a = grid_values(rng, GEMM_K * LORA_RANK, 1)
        b = grid_values(rng, LORA_RANK * GEMM_N, 1)
        write_npy(ctx.path("a.npy"), (GEMM_K, LORA_RANK), a)
        write_npy(ctx.path("b.npy"), (LORA_RANK, GEMM_N), b)
    return x, w, a, b


def matmul(x, w, m, n, k):
    """(y, sum |terms|) of x [m, k] @ w [k, n] in f64 (exact for these inputs)."""
    y, mag = [0.0] * (m * n), [0.0] * (m * n)
    for i in range(m):
        row = x[i * k:(i + 1) * k]
        for j in range(n):
            col = w[j::n]
            terms = [p * q for p, q in zip(row, col)]
            y[i * n + j] = sum(terms)
            mag[i * n + j] = sum(abs(t) for t in terms)
    return y, mag


def gemm_command(ctx):
    matmul_inputs(ctx, with_adapter=False)
    return [ctx.tessera, "run", "gemm", "--dtype", "bf16", "--out-type", "f32", "--x", ctx.path("x.npy"),
            "--w", ctx.path("w.npy"), "--out", ctx.path("y_gemm.npy"), "--backend", ctx.backend]


def expect_sm90a(ctx, out, kernel, note, family):
    if ctx.sm90a() and path_of(kernel, note) != "sm90a":
        out["warning"] = f"the sm_90a {family} kernel was expected on this GPU; ran {kernel}" + (
            f" ({note})" if note else "")
    return out


def read_output(ctx, name, shape):
    """(values, None) of the f32 .npy `name` in the work folder, or (None, why not)."""
    try:
        got_shape, values = read_npy(ctx.path(name))
    except (OSError, ValueError) as e:
        return None, str(e)
    if got_shape != shape:
        return None, f"output shape {got_shape}, expected {shape}"
    return values, None


def gemm_verify(ctx, record, text):
    kernel, note = launched_kernel(text, "gemm"), fallback_note(text)
    if record["returncode"] != 0:
        return {"ok": False, "detail": "tessera failed", "kernel": kernel}
    x, w, _, _ = matmul_inputs(ctx, with_adapter=False)
    want, _ = matmul(x, w, GEMM_M, GEMM_N, GEMM_K)
    got, error = read_output(ctx, "y_gemm.npy", (GEMM_M, GEMM_N))
    if error:
        return {"ok": False, "detail": error, "kernel": kernel}
    wrong = sum(not same_value(g, f32(r)) for g, r in zip(got, want))
    out = {"ok": wrong == 0, "kernel": kernel, "path": path_of(kernel, note),
           "detail": f"{GEMM_M}x{GEMM_N}x{GEMM_K}: " + ("bit-exact" if not wrong else f"{wrong} elements differ "
                                                       "from the exact result")}
    return expect_sm90a(ctx, out, kernel, note, "GEMM")


def lora_command(ctx):
    matmul_inputs(ctx, with_adapter=True)
    return [ctx.tessera, "run", "lora", "--dtype", "bf16", "--out-type", "f32", "--x", ctx.path("x.npy"),
            "--w", ctx.path("w.npy"), "--a", ctx.path("a.npy"), "--b", ctx.path("b.npy"), "--scale", str(LORA_SCALE),
            "--out", ctx.path("y_lora.npy"), "--backend", ctx.backend]


def lora_reference(x, w, a, b):
    """(y, sum |terms|): y = x w + T' b with T' = bf16(s x a), as the kernel rounds it."""
    base, base_mag = matmul(x, w, GEMM_M, GEMM_N, GEMM_K)
    t, _ = matmul(x, a, GEMM_M, LORA_RANK, GEMM_K)
    t = [bf16(f32(LORA_SCALE * v)) for v in t]
    side, side_mag = matmul(t, b, GEMM_M, GEMM_N, LORA_RANK)
    return [p + q for p, q in zip(base, side)], [p + q for p, q in zip(base_mag, side_mag)]


def lora_verify(ctx, record, text):
    kernel, note = launched_kernel(text, "lora"), fallback_note(text)
    if record["returncode"] != 0:
        return {"ok": False, "detail": "tessera failed", "kernel": kernel}
    x, w, a, b = matmul_inputs(ctx, with_adapter=True)
    want, mag = lora_reference(x, w, a, b)
    got, error = read_output(ctx, "y_lora.npy", (GEMM_M, GEMM_N))
    if error:
        return {"ok": False, "detail": error, "kernel": kernel}
    # An f32 sum of n exact products is within n u sum|terms| of the exact sum, in any order.
    terms = GEMM_K + LORA_RANK
    wrong = sum(not (abs(g - r) <= terms * F32_UNIT_ROUNDOFF * m) for g, r, m in zip(got, want, mag))
    worst = max((abs(g - r) for g, r in zip(got, want) if not math.isnan(g)), default=float("nan"))
    out = {"ok": wrong == 0, "kernel": kernel, "path": path_of(kernel, note),
           "detail": f"{GEMM_M}x{GEMM_N}x{GEMM_K} r{LORA_RANK}: max abs error {worst:.2e}"
                     + (f", {wrong} elements outside the f32 bound" if wrong else " (within the f32 bound)")}
    return expect_sm90a(ctx, out, kernel, note, "LoRA")


def cast_inputs(ctx):
    rng = random.Random(ctx.seed + 1)
    specials = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1.0, -1.0,
                # Exact ties between two bf16 values: round to the even one.
                1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, -(1.0 + 2.0 ** -8),
                # The largest f32 rounds up to bf16 infinity; subnormals.
                3.4028234663852886e38, 1e-40, -1e-40]
    values = specials + [struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
                         for _ in range(CAST_N - len(specials))]
    return values


def cast_command(ctx):
    write_npy(ctx.path("cast_x.npy"), (CAST_N,), cast_inputs(ctx))
    return [ctx.tessera, "run", "cast", "--from", "f32", "--to", "bf16", "--x", ctx.path("cast_x.npy"),
            "--out", ctx.path("cast_y.npy"), "--backend", ctx.backend]


def cast_verify(ctx, record, text):
    kernel = launched_kernel(text, "cast")
    if record["returncode"] != 0:
        return {"ok": False, "detail": "tessera failed", "kernel": kernel}
    try:
        _, got = read_npy(ctx.path("cast_y.npy"))
    except (OSError, ValueError) as e:
        return {"ok": False, "detail": str(e), "kernel": kernel}
    # What the kernel reads: the f32 value of each input (the .npy holds f32 already).
    want = [bf16(f32(v)) for v in cast_inputs(ctx)]
    wrong = sum(not same_value(g, w) for g, w in zip(got, want)) + abs(len(got) - len(want))
    return {"ok": wrong == 0, "kernel": kernel,
            "detail": f"{CAST_N} values f32 -> bf16: " + ("bit-exact" if not wrong else f"{wrong} differ")}


def powi_exact(base, n):
    """base^n by square-and-multiply in f64, in the kernel's order (reference::powi_exact)."""
    result = 1.0
    while n:
        if n & 1:
            result *= base
        n >>= 1
        if n:
            base *= base
    return result


class AdamW:
    """The CLI's defaults, as f32, and one step of templates/amp/adamw.cuh's operation order."""
    lr, beta1, beta2, eps, weight_decay = (f32(v) for v in (1e-3, 0.9, 0.999, 1e-8, 0.01))

    @classmethod
    def step(cls, p, m, v, g, step):
        """(p, m, v) after one step; `step` is the count after it (1 for the first)."""
        bc1 = f32(1.0 - powi_exact(cls.beta1, step))
        bc2 = f32(1.0 - powi_exact(cls.beta2, step))
        step_size = f32(cls.lr / bc1)
        bc2_sqrt = f32(math.sqrt(bc2))
        lr_wd = f32(cls.lr * cls.weight_decay)
        omb1, omb2 = f32(1.0 - cls.beta1), f32(1.0 - cls.beta2)
        pk = f32(p - f32(lr_wd * p))
        m = f32(f32(cls.beta1 * m) + f32(omb1 * g))
        v = f32(f32(cls.beta2 * v) + f32(omb2 * f32(g * g)))
        denom = f32(f32(f32(math.sqrt(v)) / bc2_sqrt) + cls.eps)
        p = f32(pk - f32(f32(step_size * m) / denom))
        return p, m, v


def adamw_inputs(ctx):
    rng = random.Random(ctx.seed + 2)
    params = [f32(rng.uniform(-1, 1)) for _ in range(ADAMW_N)]
    grads = [bf16(f32(rng.gauss(0, 1e-2))) for _ in range(ADAMW_N)]
    return params, grads


def adamw_command(ctx):
    params, grads = adamw_inputs(ctx)
    write_npy(ctx.path("adamw_p.npy"), (ADAMW_N,), params)
    write_npy(ctx.path("adamw_g.npy"), (ADAMW_N,), grads)
    return [ctx.tessera, "run", "adamw", "--params", ctx.path("adamw_p.npy"), "--grads", ctx.path("adamw_g.npy"),
            "--grad-dtype", "bf16", "--model-dtype", "bf16", "--step", "0", "--out-dir", ctx.path("adamw_out"),
            "--backend", ctx.backend]


def adamw_verify(ctx, record, text):
    kernel = launched_kernel(text, "adamw")
    if record["returncode"] != 0:
        return {"ok": False, "detail": "tessera failed", "kernel": kernel}
    params, grads = adamw_inputs(ctx)
    want = [AdamW.step(p, 0.0, 0.0, g, 1) for p, g in zip(params, grads)]
    expected = {"master0": [w[0] for w in want], "exp_avg0": [w[1] for w in want],
                "exp_avg_sq0": [w[2] for w in want], "model0": [bf16(w[0]) for w in want]}
    wrong = {}
    for name, values in expected.items():
        try:
            _, got = read_npy(os.path.join(ctx.path("adamw_out"), f"{name}.npy"))
        except (OSError, ValueError) as e:
            return {"ok": False, "detail": str(e), "kernel": kernel}
        bad = sum(not same_value(g, w) for g, w in zip(got, values)) + abs(len(got) - len(values))
        if bad:
            wrong[name] = bad
    detail = f"{ADAMW_N} elements, one step: " + (
        "master, moments and bf16 model bit-exact" if not wrong else
        "; ".join(f"{n}: {k} differ" for n, k in wrong.items()))
    return {"ok": not wrong, "kernel": kernel, "detail": detail}


STEPS = [
    Step("doctor", doctor_command, doctor_verify),
    Step("demo", demo_command, demo_verify),
    Step("gemm", gemm_command, gemm_verify),
    Step("lora", lora_command, lora_verify),
    Step("cast", cast_command, cast_verify),
    Step("adamw", adamw_command, adamw_verify),
]
