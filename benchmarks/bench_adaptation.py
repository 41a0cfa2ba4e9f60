"""How much do the arithmetic coder's probability estimates lose? (issue 13)

    python benchmarks/bench_adaptation.py [--models lenet300-5.2 lenet300 lenet5]

Every `ac_shared` payload of the v2 files that bench_entropy.py measures is decoded with
the independent Python decoder (tests/ac_reference.py), logging each coded bit with the
context it was coded in. The same bit sequences are then priced (sum of -log2 p) under
other ways of estimating each context's probability, with the context structure held
fixed:

  * `format`: the format's estimator (a count-driven shift that settles at `sh`,
    docs/FORMAT.md 7.4), at the tensor's `sh`, and at `sh - 1` / `sh + 1`;
  * `two a/b`: the mean of two such estimators settling at shifts a and b (a fast and a
    slow window, as VVC's CABAC does);
  * `KT`: the Krichevsky-Trofimov count estimator (optimal for a stationary source).

The `format` column reproduces the payload to within the codebook's raw bits and the
coder's flush (shown as `payload`). If the alternatives land within a fraction of a
percent of it, the bits left are in the contexts (what the coder knows about each
element), not in how fast it learns.

--minilm (HF_HUB_OFFLINE=1): the other question, for the dense 8-bit MiniLM matrices:
how much would richer contexts give? Each matrix's table indices are priced as adaptive
multi-symbol sources (a Dirichlet(alpha) mixture per context: the exact code length of
sequential Krichevsky-Trofimov-style counting, learning cost included, independent of
order) under: one context (order 0), the previous element's magnitude (4 buckets), and
that with the one above, the mean magnitude of the row so far and of the column so far
(9 buckets each: the row and column scales pretrained transformers have), both, and
both with the previous element. Compared with v2's real payload bytes.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import ac_reference as ar  # noqa: E402
import bench_entropy as be  # noqa: E402

from deepcomp.codec.v2 import choose_encoding_v2  # noqa: E402

ONE = ar.ONE


def logged_bits(sd: dict) -> dict:
    """name -> (context ids, bits, sh, payload bytes) for each ac_shared tensor."""
    log = []
    plain = ar.RangeDecoder.bit

    def bit(self, b):
        x = plain(self, b)
        log.append((b, x))  # the object, not its id: a freed context's id can be reused
        return x

    ar.RangeDecoder.bit = bit
    out = {}
    try:
        for name, w in sd.items():
            enc = choose_encoding_v2(name, w)
            f = enc.fields
            if f.get("encoding") != "ac_shared":
                continue
            rows = w.shape[0]
            log.clear()
            ar.decode_weights(enc.payload, rows, w.numel() // rows, f["neg"], f["k"] - f["neg"], f["sp"],
                              f["cm"], f["vc"], f["sc"], f["sh"], f.get("pp", 0))
            ids: dict = {}
            ctx = np.array([ids.setdefault(id(b), len(ids)) for b, _ in log], np.int64)
            out[name] = (ctx, np.array([b for _, b in log], np.int8), f["sh"], len(enc.payload))
    finally:
        ar.RangeDecoder.bit = plain
    return out


def cost_format(bits, sh: int) -> float:
    b, c = ar.Bit(), 0.0
    for x in bits:
        c -= math.log2((ONE - b.p0) / ONE if x else b.p0 / ONE)
        ar.adapt(b, x, sh)
    return c


def cost_two(bits, a: int, b2: int) -> float:
    """The mean of two of the format's estimators, settling at shifts a and b2."""
    fast, slow, c = ar.Bit(), ar.Bit(), 0.0
    for x in bits:
        m = (fast.p0 + slow.p0) >> 1
        c -= math.log2((ONE - m) / ONE if x else m / ONE)
        ar.adapt(fast, x, a)
        ar.adapt(slow, x, b2)
    return c


def cost_kt(bits) -> float:
    n0 = n1 = 0
    c = 0.0
    for b in bits:
        p1 = (n1 + 0.5) / (n0 + n1 + 1.0)
        c -= math.log2(p1 if b else 1.0 - p1)
        n1 += b
        n0 += 1 - b
    return c


def price(ctx, bits, sh: int) -> dict:
    order = np.argsort(ctx, kind="stable")
    groups = [g.tolist() for g in np.split(bits[order], np.flatnonzero(np.diff(ctx[order])) + 1)]
    res = {"format": sum(cost_format(g, sh) for g in groups),
           "format sh-1": sum(cost_format(g, sh - 1) for g in groups),
           "format sh+1": sum(cost_format(g, sh + 1) for g in groups)}
    for a, b2 in ((4, 8), (5, 9), (6, 9)):
        res[f"two {a}/{b2}"] = sum(cost_two(g, a, b2) for g in groups)
    res["KT"] = sum(cost_kt(g) for g in groups)
    return {k: v / 8 for k, v in res.items()}


MODELS = {"lenet300-5.2": ("LeNet-300-100 5.2 %, 5 bit", lambda: be.lenet_sparse_52()[0]),
          "lenet300": ("LeNet-300-100 (paper)", lambda: be.lenet_paper("lenet300")[0]),
          "lenet5": ("LeNet-5 (paper)", lambda: be.lenet_paper("lenet5")[0])}


def dirichlet_bytes(ctx, sym, k: int, alpha: float = 0.02) -> float:
    from scipy.special import gammaln

    nctx = int(ctx.max()) + 1
    cnt = np.bincount(ctx.astype(np.int64) * k + sym, minlength=nctx * k).reshape(nctx, k).astype(float)
    n = cnt.sum(1)
    cnt, n = cnt[n > 0], n[n > 0]
    bits = (gammaln(n + k * alpha) - gammaln(k * alpha) - (gammaln(cnt + alpha) - gammaln(alpha)).sum(1)).sum()
    return float(bits / np.log(2) / 8)


def scale_contexts(m: np.ndarray) -> dict:
    """name -> context id per element of the matrix m (row-major scan)."""
    mag = np.abs(m) / np.abs(m).mean()
    edges, coarse = np.array([0.4, 0.6, 0.8, 1.0, 1.25, 1.6, 2.0]), np.array([0.5, 1.0, 2.0])

    def running(a):  # mean of the earlier elements of each row; 8 = none yet
        prev = np.concatenate([np.zeros((a.shape[0], 1)), np.cumsum(a, 1)[:, :-1]], 1)
        n = np.arange(a.shape[1])[None, :]
        return np.where(n > 0, np.searchsorted(edges, prev / np.maximum(n, 1)), 8)

    rb, cb = running(mag), running(mag.T).T
    pb = np.searchsorted(coarse, np.concatenate([np.zeros((m.shape[0], 1)), mag[:, :-1]], 1))
    ab = np.searchsorted(coarse, np.concatenate([np.zeros((1, m.shape[1])), mag[:-1]], 0))
    return {"order 0": np.zeros(m.shape, np.int64), "previous": pb, "previous, above": pb * 4 + ab,
            "row scale": rb, "column scale": cb, "row, column scale": rb * 9 + cb,
            "row, column scale, previous": (rb * 9 + cb) * 4 + pb}


def minilm_table() -> None:
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sd, _ = be.minilm()
    tot: dict = {}
    for name, w in sd.items():
        if w.dim() < 2 or w.numel() < 100_000:
            continue
        m = w.reshape(w.shape[0], -1).numpy()
        vals, idx = np.unique(m, return_inverse=True)
        row = {"v2 payload": float(len(choose_encoding_v2(name, w.to(torch.float32)).payload))}
        for label, ctx in scale_contexts(m).items():
            row[label] = dirichlet_bytes(ctx.reshape(-1), idx.reshape(-1), len(vals))
        for k, v in row.items():
            tot[k] = tot.get(k, 0.0) + v
    print()
    print("| MiniLM-L6, 8 bit, the 38 matrices of >= 100,000 elements | bytes | vs order 0 |")
    print("|---|---:|---:|")
    for k, v in tot.items():
        print(f"| {k} | {v:,.0f} | {100 * (v / tot['order 0'] - 1):+.2f} % |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", choices=sorted(MODELS), default=list(MODELS))
    ap.add_argument("--minilm", action="store_true", help="also the context table for MiniLM's dense matrices")
    args = ap.parse_args(argv)
    cols = None
    for key in args.models:
        label, make = MODELS[key]
        rows = []
        for name, (ctx, bits, sh, nbytes) in logged_bits(make()).items():
            r = price(ctx, bits, sh)
            rows.append((name, nbytes, len(bits), int(ctx.max()) + 1, r))
        if cols is None:
            cols = list(rows[0][4])
            print("| model, tensor | payload B | coded bits | contexts | " + " | ".join(cols) + " |")
            print("|---|---:|---:|---:|" + "---:|" * len(cols))
        for name, nbytes, n, nctx, r in rows:
            print(f"| {label}, {name} | {nbytes:,} | {n:,} | {nctx} | "
                  + " | ".join(f"{r[c]:,.0f}" for c in cols) + " |")
        tot = {c: sum(r[c] for *_, r in rows) for c in cols}
        print(f"| {label}, all | {sum(x[1] for x in rows):,} | | | " + " | ".join(
            f"{tot[c]:,.0f} ({100 * (tot[c] / tot['format'] - 1):+.2f} %)" for c in cols) + " |")
    if args.minilm:
        minilm_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
