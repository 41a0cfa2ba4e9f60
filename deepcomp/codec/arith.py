"""Arithmetic-coded tensors of .dcz version 2 (docs/FORMAT.md, section 7).

Two encodings use the C++ adaptive binary range coder (csrc/coder):

* `ac_shared`: weight-shared tensors. The matrix view (shape[0] x the rest) is scanned
  row- or column-major; in sparse mode every row first gets an "empty row" flag and
  every element of a non-empty row a significance flag whose context comes from the
  neighbours already coded (left, above, how dense the column and the row are so far);
  each value is a sign flag plus its magnitude rank down an adaptive binary tree. The
  codebook travels at the head of the same payload. Model parameters are picked per
  tensor by exact size.
* `ac_float`: any float32 tensor, losslessly (sign, exponent and mantissa modelled).

The writer side returns `Encoded` like the Huffman encodings do, with exact byte counts,
so one size comparison picks among all of them (`choose_encoding_v2`).
"""
from __future__ import annotations

import itertools

import numpy as np

from deepcomp import _C
from deepcomp.errors import DczFormatError

SHIFTS = range(_C.AC_MIN_SHIFT, _C.AC_MAX_SHIFT + 1)
DEFAULT_SHIFT = 7
SAMPLE_NUMEL = 1 << 16


def weight_table(bits: np.ndarray, sparse: bool):
    """(table indices uint16, codebook uint32, nneg, npos) for a tensor's bit patterns.

    The codebook lists the "negative" patterns (sign bit set) by increasing magnitude,
    then the others by increasing magnitude, so a magnitude rank means the same thing on
    both sides of zero. In sparse mode +0.0 is table entry 0 and not in the codebook.
    """
    uniq = np.unique(bits)
    if sparse:
        uniq = uniq[uniq != 0]
    neg = uniq[uniq >= 0x80000000]
    pos = uniq[uniq < 0x80000000]
    # within one sign, the bit pattern as an integer grows with the magnitude (NaNs last)
    book = np.concatenate([neg, pos]).astype(np.uint32)
    base = 1 if sparse else 0
    idx = np.searchsorted(uniq, bits)
    # uniq, sorted as unsigned, lists the positive patterns first: remap to book order
    rank = np.empty(uniq.size, np.int64)
    rank[uniq < 0x80000000] = np.arange(pos.size) + neg.size
    rank[uniq >= 0x80000000] = np.arange(neg.size)
    out = np.zeros(bits.size, np.uint16)
    if sparse:
        nz = bits != 0
        out[nz] = base + rank[idx[nz]]
    else:
        out[:] = rank[idx]
    return out, book, int(neg.size), int(pos.size)


def encode_shared(idx, book, rows, cols, nneg, npos, p: dict) -> bytes:
    return _C.ac_encode_weights(idx, book, rows, cols, nneg, npos, bool(p["sp"]), bool(p["cm"]), p["vc"],
                                p["sc"], p["sh"])


AXES = {"sp": (1, 0), "cm": (0, 1), "vc": (0, 1, 2), "sc": (1, 0), "sh": (7, 5, 6, 8, 9)}
# Tensors up to FULL_GRID_NUMEL elements try every model; bigger ones search one parameter
# at a time (two rounds up to SAMPLE_NUMEL elements), on the whole tensor up to
# FULL_SEARCH_NUMEL elements and on about SAMPLE_NUMEL elements' worth of evenly spread
# rows beyond, then encode once in full.
FULL_GRID_NUMEL = 1 << 12
FULL_SEARCH_NUMEL = 1 << 19
BIG_SAMPLE_NUMEL = 1 << 18
SAMPLE_BLOCKS = 8


def _valid(p, rows, cols, options) -> bool:
    if p["sp"] not in options or (p["cm"] and (rows < 2 or cols < 2)):
        return False
    return p["sp"] or p["sc"] == 0  # dense mode has no significance flags


def best_shared(bits: np.ndarray, rows: int, cols: int, sparse_ok: bool, dense_ok: bool):
    """The smallest ac_shared payload found for this tensor: (payload, params) or None."""
    options = [sp for sp, ok in ((1, sparse_ok), (0, dense_ok)) if ok]
    if not options:
        return None
    tabs = {sp: weight_table(bits, bool(sp)) for sp in options}
    numel = rows * cols
    if numel <= FULL_SEARCH_NUMEL:
        sample_rows = np.arange(rows)
    else:
        # blocks of consecutive rows (so "above" keeps its meaning) spread over the whole
        # tensor, whose first rows need not be typical
        n = max(1, min(rows, BIG_SAMPLE_NUMEL // max(cols, 1)))
        per = max(1, n // SAMPLE_BLOCKS)
        starts = np.linspace(0, rows - per, SAMPLE_BLOCKS).astype(np.int64)
        sample_rows = np.unique((starts[:, None] + np.arange(per)[None, :]).reshape(-1))
    samples = {}
    for sp, (idx, book, nn, npn) in tabs.items():
        sub = idx if sample_rows.size == rows else np.ascontiguousarray(idx.reshape(rows, cols)[sample_rows].reshape(-1))
        samples[sp] = (sub, book, nn, npn)
    trial_rows = int(sample_rows.size)
    cache: dict = {}

    def size(p) -> int:
        key = tuple(sorted(p.items()))
        if key not in cache:
            idx, book, nn, npn = samples[p["sp"]]
            cache[key] = len(encode_shared(idx, book, trial_rows, cols, nn, npn, p))
        return cache[key]

    if numel <= FULL_GRID_NUMEL:
        grid = [dict(zip(AXES, vals)) for vals in itertools.product(*AXES.values())]
        best = min((p for p in grid if _valid(p, rows, cols, options)), key=size)
    else:
        best = {a: v[0] for a, v in AXES.items()}
        best["sp"] = options[0]
        if not best["sp"]:
            best["sc"] = 0
        for _round in range(2 if numel <= SAMPLE_NUMEL else 1):
            for axis, values in AXES.items():
                for v in values:
                    q = {**best, axis: v}
                    if _valid(q, rows, cols, options) and size(q) < size(best):
                        best = q
    idx, book, nn, npn = tabs[best["sp"]]
    payload = encode_shared(idx, book, rows, cols, nn, npn, best)
    if trial_rows < rows:
        # What a sample cannot show: a long tensor settles on slower adaptation, and a
        # column-major scan pays off when each column has its own statistics (embedding
        # dimensions) that only long columns reveal. One full trial each.
        finals = []
        if best["sh"] < max(AXES["sh"]):
            finals.append({**best, "sh": best["sh"] + 1})
        if rows > 1 and cols > 1:
            finals.append({**best, "cm": 1 - best["cm"]})
        for q in finals:
            other = encode_shared(idx, book, rows, cols, nn, npn, q)
            if len(other) < len(payload):
                payload, best = other, q
    return payload, {**best, "k": nn + npn, "neg": nn}


def best_floats(bits: np.ndarray):
    best = None
    for sh in (5, 7, 9) if bits.size > 64 else (5,):
        payload = _C.ac_encode_floats(bits, sh)
        if best is None or len(payload) < len(best[0]):
            best = (payload, sh)
    return best


# ---- reader side ----------------------------------------------------------------------

def decode_shared(payload, rows: int, cols: int, p: dict, what: str):
    nn = p["neg"]
    npos = p["k"] - nn
    try:
        return _C.ac_decode_weights(np.frombuffer(payload, np.uint8), rows, cols, nn, npos, bool(p["sp"]),
                                    bool(p["cm"]), p["vc"], p["sc"], p["sh"])
    except ValueError as e:
        raise DczFormatError(f"{what}: {e}") from None


def decode_floats(payload, count: int, shift: int, what: str) -> np.ndarray:
    try:
        return _C.ac_decode_floats(np.frombuffer(payload, np.uint8), count, shift)
    except ValueError as e:
        raise DczFormatError(f"{what}: {e}") from None
