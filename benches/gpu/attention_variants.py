#!/usr/bin/env python3
"""GPU check and benchmark for Tessera's attention variants: paged decode and local attention.

Builds nothing: it drives a `tessera` binary built elsewhere (`cargo build --release`). One run:
  1. correctness on the GPU: `tessera run attention --backend cuda` on random .npy inputs against an
     f64 reference computed by torch on the GPU from the same inputs pre-rounded to the kernel dtype.
     The reference follows the rules of runtime/src/attention/reference.rs: query i of a sequence
     sits at qpos = i + seq_k - seq_q (bottom-right alignment), own key j at kpos = j; an own key is
     visible when every enabled rule allows it (causal j <= qpos; window qpos - left <= j <=
     qpos + right; tree: when query node t = i - (seq_q - n) and key node u = j - (seq_k - n) are
     both >= 0, u must be t or an ancestor of t); prefix key p is always visible, at kpos =
     p - prefix_len. Score s = scale q.k, then s = cap tanh(s / cap) (softcap), then
     s -= slope[h] |qpos - kpos| (ALiBi); out = softmax(s) v, lse = ln sum exp(s); a query that
     sees no key has out 0 and lse -inf. Varlen runs it per sequence of cu_seqlens, paged per
     sequence on the keys gathered through the block table. Cases:
       - window + GQA + varlen (f16; an empty key sequence among them),
       - prefix + causal (bf16),
       - tree + paged + pack_gqa, --num-splits 4 (bf16; a tree per sequence),
       - ALiBi + softcap (f16),
       - paged decode, seq_q 1 and 4, --pack-gqa --num-splits 0 (bf16),
       - fully masked rows: window 0, 0 with seq_q > seq_k (f16).
     Relative L2 error <= 1e-2 (bf16) / 2e-3 (f16), the LSE within 1e-2 + 1e-3 |lse| with -inf
     exactly where the reference has it; NaN or Inf in the output never passes.
  2. timing (CUDA events, medians of --reps after --warmup; Tessera through
     `tessera bench attention --json`, torch in this process), bf16, head_dim 128:
     a. paged decode: batch 64, heads 32 on 4 KV heads (GQA 8:1), seq_q 1, contexts 4k, 16k, 64k
        in pages of 64 (and pages of 16 at 16k), --pack-gqa --num-splits 0. KV GB/s = the K and V
        bytes read once (64 ctx 4 128 2 tensors 2 bytes) / time, against the device copy bandwidth
        (dst.copy_(src) of 2 GiB: 2 bytes moved / time; target: >= 80 %) and against torch SDPA on
        the dense tensors q [64, 32, 1, 128], K/V [64, 4, ctx, 128] (enable_gqa=True when the
        installed torch has it, else K/V repeated to 32 heads outside the timed region when that
        fits); a size whose memory would exceed ~60 GB is skipped;
     b. local attention: batch 1, 16 heads, seq 32768, causal with --window-left 1024 against full
        causal (both Tessera) and torch SDPA causal (flash) at the same shape; target: local >= 10x
        faster than full causal. FLOPs: 4 d per visible (query, key) pair and head (Tessera's JSON
        counts the window's pairs exactly; full causal counts half of seq^2).
Writes results.json and results.md (date, shapes, the exact commands) to --out and prints the
tables last. Exits non-zero when a correctness case fails (performance targets are reported, not
enforced).

Usage: python3 benches/gpu/attention_variants.py --tessera target/release/tessera --out results/
       (--skip-bench: correctness only; --skip-checks: timing only; --backend sim --device cpu
       --skip-bench runs the correctness cases on the CPU simulator, without a GPU)
"""
import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import (add_io_args, add_seed_arg, add_skip_args, add_timing_args, bench_command, bench_json, cmd_timeout,
                    copy_ms, device_line, error_stats, finish, fmt, free_cuda, pick_seed, print_check, remove_files,
                    run_cli, run_env, save_npy, tessera_version, time_cuda, with_target, write_results)

TOL = {"bf16": 1e-2, "f16": 2e-3}  # relative L2 of O
LSE_ABS, LSE_REL = 1e-2, 1e-3
TORCH_DTYPE = {"bf16": torch.bfloat16, "f16": torch.float16}
CMD_TIMEOUT_S = cmd_timeout(300)
MEMORY_LIMIT = 60e9  # bytes a timing case may hold on the device
COPY_BYTES = 2 ** 31  # the copy-bandwidth tensor: 2 GiB


# ---- masks and layouts (numpy) ---------------------------------------------------------------------

def ancestors(parents):
    """anc[t, u]: node u is t or an ancestor of t, for parents[t] in -1 (root) or 0..t-1."""
    n = len(parents)
    anc = np.zeros((n, n), dtype=bool)
    for t in range(n):
        u = t
        while u >= 0:
            anc[t, u] = True
            u = parents[u]
    return anc


def own_key_mask(seq_q, seq_k, causal=False, left=None, right=None, parents=None):
    """bool [seq_q, seq_k]: which own keys each query sees. qpos = i + seq_k - seq_q; causal:
    j <= qpos; window: qpos - left <= j <= qpos + right (None: unbounded); tree of n = len(parents)
    nodes over the last n queries and keys: where both are nodes, the key must be the query's node
    or one of its ancestors."""
    i = np.arange(seq_q)[:, None]
    j = np.arange(seq_k)[None, :]
    qpos = i + (seq_k - seq_q)
    vis = np.ones((seq_q, seq_k), dtype=bool)
    if causal:
        vis &= j <= qpos
    if left is not None:
        vis &= j >= qpos - left
    if right is not None:
        vis &= j <= qpos + right
    if parents is not None and seq_q and seq_k:
        n = len(parents)
        anc = ancestors(parents)
        t = i - (seq_q - n)
        u = j - (seq_k - n)
        in_tree = (t >= 0) & (u >= 0)
        vis &= ~in_tree | anc[np.clip(t, 0, n - 1), np.clip(u, 0, n - 1)]
    return vis


def positions(seq_q, seq_k, prefix_len=0):
    """qpos [seq_q] and kpos [prefix_len + seq_k]: prefix key p at p - prefix_len, own key j at j."""
    qpos = np.arange(seq_q) + (seq_k - seq_q)
    kpos = np.concatenate([np.arange(prefix_len) - prefix_len, np.arange(seq_k)])
    return qpos, kpos


def cu_seqlens(lens):
    """[batch + 1] offsets: 0, then the running sums of `lens`."""
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)


def shuffled_block_table(rng, lens, page_size, spare_pages=0):
    """A block table [batch, max_pages] (int32) handing each sequence ceil(len / page_size) pages of
    a cache of sum(those) + spare_pages pages, in a random order (so a sequence's pages are not
    contiguous); entries past a sequence's last page are -1 (never read). Returns (table, num_pages)."""
    need = [-(-n // page_size) for n in lens]
    num_pages = sum(need) + spare_pages
    order = rng.permutation(num_pages)
    table = np.full((len(lens), max(max(need), 1)), -1, dtype=np.int32)
    at = 0
    for b, n in enumerate(need):
        table[b, :n] = order[at:at + n]
        at += n
    return table, num_pages


def paged_rows(table_row, seq_len, page_size):
    """Rows of the flattened cache [num_pages * page_size] holding keys 0..seq_len-1 of a sequence:
    key j is row j % page_size of page table_row[j // page_size]."""
    j = np.arange(seq_len)
    return table_row[j // page_size].astype(np.int64) * page_size + j % page_size


def causal_window_pairs(seq, left):
    """Visible (query, key) pairs of causal self-attention (seq_q = seq_k = seq) with a left window:
    query i sees keys max(0, i - left)..i, min(i, left) + 1 of them; summed: queries below `left`
    give 1 + 2 + ... + left, the rest left + 1 each."""
    head = min(seq, left)
    return head * (head + 1) // 2 + max(seq - left, 0) * (left + 1)


# ---- the f64 reference (torch) ---------------------------------------------------------------------

def reference_sequence(q, k, v, mask, qpos, kpos, scale, softcap=None, slopes=None):
    """One sequence in f64: q [sq, hq, d], k/v [nk, hkv, d] (prefix rows first), mask bool [sq, nk],
    qpos [sq], kpos [nk] (numpy). Returns out [sq, hq, d] and lse [hq, sq] on q's device."""
    sq, hq, d = q.shape
    nk, hkv = k.shape[0], k.shape[1]
    dev = q.device
    if sq == 0 or nk == 0:
        return torch.zeros(sq, hq, d, dtype=torch.float64, device=dev), \
            torch.full((hq, sq), -math.inf, dtype=torch.float64, device=dev)
    g = hq // hkv  # query head h reads KV head h // g
    kd = k.double().repeat_interleave(g, dim=1)
    vd = v.double().repeat_interleave(g, dim=1)
    s = torch.einsum("qhd,khd->hqk", q.double(), kd) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if slopes is not None:
        dist = torch.from_numpy(np.abs(qpos[:, None] - kpos[None, :]).astype(np.float64)).to(dev)
        s = s - slopes.double().to(dev)[:, None, None] * dist[None]
    s = s.masked_fill(~torch.from_numpy(mask).to(dev)[None], -math.inf)
    lse = torch.logsumexp(s, dim=-1)  # [hq, sq]; -inf where a query sees nothing
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    return torch.einsum("hqk,khd->qhd", p, vd), lse


def reference_rules(q, k, v, scale, causal=False, left=None, right=None, parents=None, softcap=None,
                    slopes=None, prefix=None):
    """One sequence under the mask rules (see own_key_mask), with optional prefix (pk, pv)
    [prefix_len, hkv, d] keys that every query sees."""
    sq, sk = q.shape[0], k.shape[0]
    plen = 0 if prefix is None else prefix[0].shape[0]
    mask = np.concatenate([np.ones((sq, plen), dtype=bool), own_key_mask(sq, sk, causal, left, right, parents)],
                          axis=1)
    qpos, kpos = positions(sq, sk, plen)
    if prefix is not None:
        k = torch.cat([prefix[0], k])
        v = torch.cat([prefix[1], v])
    return reference_sequence(q, k, v, mask, qpos, kpos, scale, softcap, slopes)


def reference_dense(q, k, v, scale, **rules):
    """Dense batch: q [b, sq, hq, d], k/v [b, sk, hkv, d]; out like q, lse [b, hq, sq]. A `parents`
    rule that is a list of lists gives each sequence its own tree."""
    outs, lses = [], []
    trees = rules.pop("trees", None)
    for b in range(q.shape[0]):
        tree = None if trees is None else trees[b]
        o, l = reference_rules(q[b], k[b], v[b], scale, parents=tree, **rules)
        outs.append(o)
        lses.append(l)
    return torch.stack(outs), torch.stack(lses)


def reference_paged(q, k_cache, v_cache, table, seq_lens, page_size, scale, trees=None, **rules):
    """Paged batch: q [b, sq, hq, d], caches [num_pages, page_size, hkv, d]; each sequence's keys are
    gathered through its block-table row, then it is a dense sequence of seq_lens[b] keys."""
    hkv, d = k_cache.shape[2], k_cache.shape[3]
    flat_k, flat_v = k_cache.reshape(-1, hkv, d), v_cache.reshape(-1, hkv, d)
    outs, lses = [], []
    for b in range(q.shape[0]):
        rows = torch.from_numpy(paged_rows(table[b], int(seq_lens[b]), page_size)).to(q.device)
        tree = None if trees is None else trees[b]
        o, l = reference_rules(q[b], flat_k[rows], flat_v[rows], scale, parents=tree, **rules)
        outs.append(o)
        lses.append(l)
    return torch.stack(outs), torch.stack(lses)


# ---- running the CLI and comparing ------------------------------------------------------------------

class Checks:
    """What every correctness case shares: the binary, the backend, a scratch folder, the RNGs."""

    def __init__(self, tessera, backend, device, tmp, seed):
        self.tessera, self.backend, self.device, self.tmp = tessera, backend, device, tmp
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    def randn(self, *shape, dtype, mul=1.0):
        """Random normal values rounded to the kernel dtype (as the kernel rounds its inputs), f32."""
        t = torch.randn(*shape, device=self.device, generator=self.gen) * mul
        return t.to(TORCH_DTYPE[dtype]).float()

    def run(self, name, dtype, arrays, flags, ref_out, ref_lse):
        """Saves `arrays` ({flag: tensor or ndarray}) as .npy, runs `tessera run attention` with
        them and `flags`, and compares O and LSE with the reference."""
        paths = []
        for flag, a in arrays.items():
            path = os.path.join(self.tmp, f"{flag}.npy")
            if torch.is_tensor(a):
                save_npy(path, a)
            else:
                np.save(path, a)
            paths += [f"--{flag}", path]
        out_path, lse_path = os.path.join(self.tmp, "o.npy"), os.path.join(self.tmp, "lse.npy")
        remove_files((out_path, lse_path))
        cmd = [self.tessera, "run", "attention", "--dtype", dtype, "--backend", self.backend] + paths + [
            "--out", out_path, "--lse", lse_path] + [str(f) for f in flags]
        shown = " ".join(os.path.basename(c) if c.startswith(self.tmp) else c for c in cmd[1:])
        _, err = run_cli(cmd, CMD_TIMEOUT_S, show_cmd=False)
        if err:
            return {"case": name, "ok": False, "error": err, "command": shown}
        res = compare(name, dtype, np.load(out_path), np.load(lse_path), ref_out, ref_lse, self.device)
        res["command"] = shown
        return res


def compare(name, dtype, out, lse, ref_out, ref_lse, device):
    """rel-L2 of O (NaN/Inf never pass) and the LSE: -inf exactly where the reference has it, else
    within LSE_ABS + LSE_REL |lse|."""
    if tuple(out.shape) != tuple(ref_out.shape) or tuple(lse.shape) != tuple(ref_lse.shape):
        return {"case": name, "ok": False,
                "error": f"shapes O {out.shape} LSE {lse.shape}, expected {tuple(ref_out.shape)} {tuple(ref_lse.shape)}"}
    out = torch.from_numpy(out).to(device).double()
    lse = torch.from_numpy(lse).to(device).double()
    non_finite, rel, max_abs = error_stats(out, ref_out)
    masked = torch.isinf(ref_lse)
    lse_ok = bool(torch.equal(torch.isinf(lse) & (lse < 0), masked)) and not bool(torch.isnan(lse).any())
    if lse_ok and (~masked).any():
        err = (lse[~masked] - ref_lse[~masked]).abs()
        lse_ok = bool((err <= LSE_ABS + LSE_REL * ref_lse[~masked].abs()).all())
    ok = non_finite == 0 and rel <= TOL[dtype] and lse_ok
    return {"case": name, "ok": ok, "rel_l2": rel, "max_abs": max_abs, "lse_ok": lse_ok, "non_finite": non_finite,
            "masked_rows": int(masked.sum())}


# ---- correctness cases ------------------------------------------------------------------------------

def case_window_gqa_varlen(c):
    """f16, d64, 8 query heads on 2 KV heads, packed sequences (the last has no keys: all its
    queries see nothing), window 16 left / 5 right, not causal."""
    dtype, d, hq, hkv, left, right = "f16", 64, 8, 2, 16, 5
    lens_q, lens_k = [37, 1, 130, 5], [50, 17, 130, 0]
    cu_q, cu_k = cu_seqlens(lens_q), cu_seqlens(lens_k)
    q = c.randn(int(cu_q[-1]), hq, d, dtype=dtype)
    k = c.randn(int(cu_k[-1]), hkv, d, dtype=dtype)
    v = c.randn(int(cu_k[-1]), hkv, d, dtype=dtype)
    out = torch.zeros(q.shape, dtype=torch.float64, device=c.device)
    lse = torch.full((hq, q.shape[0]), -math.inf, dtype=torch.float64, device=c.device)
    for b in range(len(lens_q)):
        (q0, q1), (k0, k1) = (cu_q[b], cu_q[b + 1]), (cu_k[b], cu_k[b + 1])
        o, l = reference_rules(q[q0:q1], k[k0:k1], v[k0:k1], 1 / math.sqrt(d), left=left, right=right)
        out[q0:q1], lse[:, q0:q1] = o, l
    name = f"window {left}/{right} + GQA {hq}/{hkv} + varlen q{lens_q} k{lens_k} {dtype} d{d}"
    arrays = {"q": q, "k": k, "v": v, "cu-seqlens-q": cu_q, "cu-seqlens-k": cu_k}
    return c.run(name, dtype, arrays, ["--window-left", left, "--window-right", right], out, lse)


def case_prefix_causal(c):
    """bf16, d128, 4 query heads on 2 KV heads, 33 prefix keys before 90 own keys, causal."""
    dtype, d, hq, hkv, b, sq, sk, plen = "bf16", 128, 4, 2, 2, 70, 90, 33
    q = c.randn(b, sq, hq, d, dtype=dtype)
    k, v = c.randn(b, sk, hkv, d, dtype=dtype), c.randn(b, sk, hkv, d, dtype=dtype)
    pk, pv = c.randn(plen, hkv, d, dtype=dtype), c.randn(plen, hkv, d, dtype=dtype)
    out, lse = reference_dense(q, k, v, 1 / math.sqrt(d), causal=True, prefix=(pk, pv))
    name = f"prefix {plen} + causal {dtype} d{d} b{b} sq{sq} sk{sk} h{hq}/{hkv}"
    arrays = {"q": q, "k": k, "v": v, "prefix-k": pk, "prefix-v": pv}
    return c.run(name, dtype, arrays, ["--causal"], out, lse)


def case_tree_paged(c):
    """bf16, d128, 8 query heads on 2 KV heads, causal, a 7-node tree per sequence over the last 7
    queries and keys (seq_q = 7: a verification step), keys in a shuffled paged cache of 16-key
    pages, GQA packing, 4 splits."""
    dtype, d, hq, hkv, page = "bf16", 128, 8, 2, 16
    trees = [[-1, 0, 0, 1, 1, 2, 3], [-1, 0, 1, 2, -1, 4, 4]]
    seq_lens = np.array([100, 45], dtype=np.int32)
    sq = len(trees[0])
    table, num_pages = shuffled_block_table(c.rng, seq_lens, page, spare_pages=3)
    q = c.randn(len(seq_lens), sq, hq, d, dtype=dtype)
    kc, vc = c.randn(num_pages, page, hkv, d, dtype=dtype), c.randn(num_pages, page, hkv, d, dtype=dtype)
    out, lse = reference_paged(q, kc, vc, table, seq_lens, page, 1 / math.sqrt(d), trees=trees, causal=True)
    name = f"tree 7 + paged p{page} + pack_gqa + 4 splits {dtype} d{d} sq{sq} seq_lens {seq_lens.tolist()} h{hq}/{hkv}"
    arrays = {"q": q, "k": kc, "v": vc, "block-table": table, "seq-lens": seq_lens,
              "tree-parents": np.array(trees, dtype=np.int32)}
    return c.run(name, dtype, arrays, ["--causal", "--pack-gqa", "--num-splits", 4], out, lse)


def case_alibi_softcap(c):
    """f16, d64, 4 query heads on 2 KV heads, causal, Q scaled by 4 so that the cap 5 bends the
    scores, random ALiBi slopes in [0.01, 0.3)."""
    dtype, d, hq, hkv, b, sq, sk, cap = "f16", 64, 4, 2, 2, 100, 150, 5.0
    q = c.randn(b, sq, hq, d, dtype=dtype, mul=4.0)
    k, v = c.randn(b, sk, hkv, d, dtype=dtype), c.randn(b, sk, hkv, d, dtype=dtype)
    slopes = torch.from_numpy(c.rng.uniform(0.01, 0.3, hq).astype(np.float32))
    out, lse = reference_dense(q, k, v, 1 / math.sqrt(d), causal=True, softcap=cap, slopes=slopes)
    name = f"alibi + softcap {cap:g} + causal {dtype} d{d} b{b} sq{sq} sk{sk} h{hq}/{hkv}"
    arrays = {"q": q, "k": k, "v": v, "alibi-slopes": slopes.numpy()}
    return c.run(name, dtype, arrays, ["--causal", "--softcap", cap], out, lse)


def case_paged_decode(c, sq):
    """bf16, d128, 16 query heads on 2 KV heads, causal, seq_q 1 or 4 over sequences of 300, 1 and
    129 keys (with seq_q 4 the 1-key sequence's first queries see nothing), pages of 16, GQA
    packing, the automatic split count."""
    dtype, d, hq, hkv, page = "bf16", 128, 16, 2, 16
    seq_lens = np.array([300, 1, 129], dtype=np.int32)
    table, num_pages = shuffled_block_table(c.rng, seq_lens, page, spare_pages=1)
    q = c.randn(len(seq_lens), sq, hq, d, dtype=dtype)
    kc, vc = c.randn(num_pages, page, hkv, d, dtype=dtype), c.randn(num_pages, page, hkv, d, dtype=dtype)
    out, lse = reference_paged(q, kc, vc, table, seq_lens, page, 1 / math.sqrt(d), causal=True)
    name = f"paged decode p{page} sq{sq} + pack_gqa + auto splits {dtype} d{d} seq_lens {seq_lens.tolist()} h{hq}/{hkv}"
    arrays = {"q": q, "k": kc, "v": vc, "block-table": table, "seq-lens": seq_lens}
    return c.run(name, dtype, arrays, ["--causal", "--pack-gqa", "--num-splits", 0], out, lse)


def case_fully_masked(c):
    """f16, d64, 2 query heads on 1 KV head (MQA), window 0 / 0 (each query sees only the key on
    its diagonal) with seq_q 50 > seq_k 20: the first 30 queries see no key at all."""
    dtype, d, hq, hkv, b, sq, sk = "f16", 64, 2, 1, 1, 50, 20
    q = c.randn(b, sq, hq, d, dtype=dtype)
    k, v = c.randn(b, sk, hkv, d, dtype=dtype), c.randn(b, sk, hkv, d, dtype=dtype)
    out, lse = reference_dense(q, k, v, 1 / math.sqrt(d), left=0, right=0)
    name = f"fully masked rows: window 0/0 {dtype} d{d} sq{sq} > sk{sk} h{hq}/{hkv}"
    return c.run(name, dtype, {"q": q, "k": k, "v": v}, ["--window-left", 0, "--window-right", 0], out, lse)


CASES = [
    case_window_gqa_varlen,
    case_prefix_causal,
    case_tree_paged,
    case_alibi_softcap,
    lambda c: case_paged_decode(c, 1),
    lambda c: case_paged_decode(c, 4),
    case_fully_masked,
]


# ---- timing -----------------------------------------------------------------------------------------

def attention_bench(tessera, flags, warmup, reps):
    """`tessera bench attention --dtype bf16 FLAGS --json`: (the parsed JSON or {"error"}, the command)."""
    cmd = bench_command(tessera, "attention", flags, warmup, reps, dtype="bf16")
    return bench_json(cmd, CMD_TIMEOUT_S, show_cmd=False), " ".join(cmd)


def copy_bandwidth(warmup, reps):
    """Device copy bandwidth: dst.copy_(src) of COPY_BYTES of bf16, 2 x bytes (read + write) / time."""
    ms = copy_ms(lambda: torch.empty(COPY_BYTES // 2, dtype=torch.bfloat16, device="cuda").uniform_(), warmup, reps)
    return {"bytes": COPY_BYTES, "ms": ms, "gbps": 2 * COPY_BYTES / ms / 1e6}


def bench_decode(tessera, ctx, page, copy_gbps, warmup, reps, batch=64, hq=32, hkv=4, d=128):
    """Paged decode at one context: Tessera's KV GB/s vs the copy bandwidth and vs torch SDPA."""
    kv_bytes = batch * ctx * hkv * d * 2 * 2  # K and V, bf16, each key row read once
    row = {"kind": "paged_decode", "context": ctx, "page_size": page, "batch": batch, "heads_q": hq, "heads_kv": hkv,
           "head_dim": d, "seq_q": 1, "kv_bytes": kv_bytes}
    if kv_bytes > MEMORY_LIMIT:
        row["skipped"] = f"K/V take {kv_bytes / 1e9:.0f} GB, above {MEMORY_LIMIT / 1e9:.0f} GB"
        return row
    flags = ["--head-dim", d, "--heads-q", hq, "--heads-kv", hkv, "--batch", batch, "--seq-q", 1, "--seq-k", ctx,
             "--page-size", page, "--pack-gqa", "--num-splits", 0]
    t, row["command"] = attention_bench(tessera, flags, warmup, reps)
    if "error" in t:
        row["tessera_error"] = t["error"]
    else:
        row.update(tessera_ms=t["median_ms"], tessera_kv_gbps=t["kv_gbps"], num_splits=t.get("num_splits"),
                   kernel=t.get("kernel"), features=t.get("features"))
        if t.get("kv_bytes") != kv_bytes:
            row["kv_bytes_tessera"] = t.get("kv_bytes")
        if copy_gbps:
            row["vs_copy"] = t["kv_gbps"] / copy_gbps
            row["target_met"] = row["vs_copy"] >= 0.8
    # torch: the same decode step on dense tensors (no paging), q [b, hq, 1, d], K/V [b, hkv, ctx, d].
    q = torch.randn(batch, hq, 1, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, hkv, ctx, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(batch, hkv, ctx, d, device="cuda", dtype=torch.bfloat16)
    fn = None
    try:
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        fn, row["torch_impl"] = (lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)), "sdpa enable_gqa"
    except (TypeError, RuntimeError):
        if 2 * kv_bytes * (hq // hkv + 1) <= MEMORY_LIMIT:
            k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)
            fn, row["torch_impl"] = (lambda: F.scaled_dot_product_attention(q, k, v)), "sdpa on K/V repeated to heads_q"
        else:
            row["torch_skipped"] = "no enable_gqa and the repeated K/V would not fit"
    if fn is not None:
        ms = time_cuda(fn, warmup, reps)
        row.update(torch_ms=ms, torch_kv_gbps=kv_bytes / ms / 1e6)
        if "tessera_ms" in row:
            row["torch_over_tessera"] = ms / row["tessera_ms"]
    del q, k, v, fn
    free_cuda()
    return row


def sdpa_flash(q, k, v, warmup, reps):
    """torch SDPA causal, the flash backend when this torch can pin it: (ms, impl)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return time_cuda(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), warmup, reps), "flash"
    except (ImportError, RuntimeError):
        ms = time_cuda(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), warmup, reps)
        return ms, "default"


def bench_local(tessera, warmup, reps, seq=32768, heads=16, d=128, left=1024):
    """Local (window-left 1024) vs full causal attention, both Tessera, and torch SDPA causal."""
    row = {"kind": "local", "seq": seq, "heads": heads, "head_dim": d, "batch": 1, "window_left": left}
    base = ["--head-dim", d, "--heads-q", heads, "--batch", 1, "--seq-q", seq, "--causal"]
    local, row["command_local"] = attention_bench(tessera, base + ["--window-left", left], warmup, reps)
    full, row["command_full"] = attention_bench(tessera, base, warmup, reps)
    for key, t in (("local", local), ("full", full)):
        if "error" in t:
            row[f"{key}_error"] = t["error"]
        else:
            row.update({f"{key}_ms": t["median_ms"], f"{key}_tflops": t["tflops"], f"{key}_kernel": t.get("kernel")})
    full_flops = 4 * heads * seq * seq * d / 2  # causal: half of the square (as `tessera bench` counts)
    row["local_flops"] = 4 * heads * causal_window_pairs(seq, left) * d  # what Tessera's local TFLOP/s counts
    if "local_ms" in row and "full_ms" in row:
        row["speedup_local_vs_full"] = row["full_ms"] / row["local_ms"]
        row["target_met"] = row["speedup_local_vs_full"] >= 10
    q, k, v = (torch.randn(1, heads, seq, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ms, impl = sdpa_flash(q, k, v, warmup, reps)
    row.update(torch_ms=ms, torch_tflops=full_flops / ms / 1e9, torch_impl=impl)
    if "local_ms" in row:
        row["torch_over_local"] = ms / row["local_ms"]
    del q, k, v
    free_cuda()
    return row


# ---- the report ---------------------------------------------------------------------------------

def tables(checks, copy, rows):
    lines = ["### Correctness (f64 torch reference)", "",
             "| case | rel L2 | max abs | LSE | result |", "|:---|---:|---:|:---:|:---:|"]
    for c in checks:
        lse = "-" if "lse_ok" not in c else ("ok" if c["lse_ok"] else "WRONG")
        lines.append(f"| {c['case']} | {fmt(c.get('rel_l2'), '.2e')} | {fmt(c.get('max_abs'), '.2e')} | {lse} | "
                     f"{'PASS' if c['ok'] else 'FAIL'} |")
    decode = [r for r in rows if r["kind"] == "paged_decode"]
    local = [r for r in rows if r["kind"] == "local"]
    if copy:
        lines += ["", f"Device copy bandwidth (dst.copy_(src), {copy['bytes'] / 2 ** 30:.0f} GiB bf16, 2 x bytes / time): "
                      f"{copy['gbps']:.0f} GB/s"]
    if decode:
        lines += ["", "### Paged decode (bf16, d128, batch 64, heads 32 / 4 KV, seq_q 1, --pack-gqa --num-splits 0)", "",
                  "| context | page | Tessera ms | KV GB/s | of copy (target >= 80 %) | splits | SDPA ms | SDPA KV GB/s "
                  "| SDPA / Tessera time | SDPA impl |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
        for r in decode:
            if "skipped" in r:
                lines.append(f"| {r['context']} | {r['page_size']} | skipped: {r['skipped']} | | | | | | | |")
                continue
            share = with_target(fmt(100 * r["vs_copy"], ".0f") + " %" if "vs_copy" in r else "-", r)
            lines.append(f"| {r['context']} | {r['page_size']} | {fmt(r.get('tessera_ms'), '.4f')} | "
                         f"{fmt(r.get('tessera_kv_gbps'), '.0f')} | {share} | {r.get('num_splits', '-')} | "
                         f"{fmt(r.get('torch_ms'), '.4f')} | {fmt(r.get('torch_kv_gbps'), '.0f')} | "
                         f"{fmt(r.get('torch_over_tessera'), '.2f')} | {r.get('torch_impl', r.get('torch_skipped', '-'))} |")
    if local:
        lines += ["", "### Local attention (bf16, d128, batch 1, 16 heads, causal)", "",
                  "| seq | window left | Tessera local ms | TFLOP/s (visible) | Tessera full causal ms | TFLOP/s "
                  "| full / local (target >= 10) | SDPA causal ms | TFLOP/s | SDPA / local time |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in local:
            speed = with_target(fmt(r.get("speedup_local_vs_full"), ".1f"), r)
            lines.append(f"| {r['seq']} | {r['window_left']} | {fmt(r.get('local_ms'), '.3f')} | "
                         f"{fmt(r.get('local_tflops'), '.0f')} | {fmt(r.get('full_ms'), '.3f')} | "
                         f"{fmt(r.get('full_tflops'), '.0f')} | {speed} | {fmt(r.get('torch_ms'), '.3f')} | "
                         f"{fmt(r.get('torch_tflops'), '.0f')} | {fmt(r.get('torch_over_local'), '.2f')} |")
    errors = [(r, k) for r in rows for k in ("tessera_error", "local_error", "full_error") if k in r]
    if errors:
        lines += ["", "Errors:"] + [f"- {r['kind']} {r.get('context', r.get('seq'))}, {k}: {r[k]}" for r, k in errors]
    commands = [r[k] for r in rows for k in ("command", "command_local", "command_full") if r.get(k)]
    if commands:
        lines += ["", "Commands:", ""] + [f"    {c}" for c in commands]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_io_args(ap)
    add_timing_args(ap, 5, 20)
    add_skip_args(ap)
    ap.add_argument("--backend", default="cuda", help="the correctness runs' --backend (sim: the CPU simulator)")
    ap.add_argument("--device", default="cuda", help="torch device of the reference (cpu without a GPU)")
    add_seed_arg(ap)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    seed = pick_seed(args.seed)
    version = tessera_version(args.tessera)
    device = torch.cuda.get_device_properties(0).name if torch.cuda.is_available() else "no CUDA device"
    env = run_env(device, {"tessera": version, "seed": seed})
    print(device_line(device, (version, f"seed {seed}")), flush=True)

    checks = []
    if not args.skip_checks:
        with tempfile.TemporaryDirectory() as tmp:
            c = Checks(args.tessera, args.backend, args.device, tmp, seed)
            for case in CASES:
                res = case(c)
                checks.append(res)
                detail = (f"rel_l2 {res['rel_l2']:.2e} max_abs {res['max_abs']:.2e} lse {'ok' if res['lse_ok'] else 'WRONG'}"
                          if "rel_l2" in res else res.get("error", ""))
                print_check(res, detail)

    copy, rows = None, []
    if not args.skip_bench:
        copy = copy_bandwidth(args.warmup, args.reps)
        print(json.dumps({"copy": copy}), flush=True)
        for ctx, page in ((4096, 64), (16384, 64), (16384, 16), (65536, 64)):
            rows.append(bench_decode(args.tessera, ctx, page, copy["gbps"], args.warmup, args.reps))
            print(json.dumps(rows[-1]), flush=True)
        rows.append(bench_local(args.tessera, args.warmup, args.reps))
        print(json.dumps(rows[-1]), flush=True)

    passed = sum(c["ok"] for c in checks)
    summary = (f"correctness: {passed}/{len(checks)} cases passed (rel L2 <= {TOL['bf16']} bf16, {TOL['f16']} f16); "
               f"{time.time() - started:.0f} s")
    table = tables(checks, copy, rows)
    write_results(args.out, {"env": env, "checks": checks, "copy": copy, "bench": rows},
                  f"## Attention variants ({env['date']}, {device}, torch {env['torch']}, {version})\n\n"
                  f"Command: `{env['command']}` (seed {seed})\n\n{summary}\n\n{table}\n")
    finish(table, summary, checks)


if __name__ == "__main__":
    main()
