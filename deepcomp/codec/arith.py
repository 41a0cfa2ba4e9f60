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
from deepcomp.codec.tensors import matrix_view
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
    return weight_tables(bits, (int(sparse),))[int(sparse)]


def weight_tables(bits: np.ndarray, modes, uniq: np.ndarray | None = None, pos: np.ndarray | None = None) -> dict:
    """weight_table for each mode (1 sparse, 0 dense) from one pass over the tensor.

    Both tables are a small lookup over the sorted distinct patterns, so the per-element
    search (the costly part on a big tensor) is done once; `uniq`, np.unique(bits), may
    be passed when the caller has it, and then `pos`, _C.table_index(bits, uniq)."""
    if uniq is None:
        uniq = np.unique(bits)
    pos_all = _C.table_index(bits, uniq) if pos is None else pos
    out = {}
    for sp in modes:
        keep = uniq != 0 if sp else np.ones(uniq.size, bool)
        u = uniq[keep]
        # within one sign, the bit pattern as an integer grows with the magnitude (NaNs
        # last); sorted as unsigned, u lists the positive patterns first
        neg = u >= 0x80000000
        nneg = int(neg.sum())
        book = np.concatenate([u[neg], u[~neg]]).astype(np.uint32)
        rank = np.empty(u.size, np.int64)
        rank[~neg] = np.arange(u.size - nneg) + nneg
        rank[neg] = np.arange(nneg)
        lut = np.zeros(uniq.size, np.uint16)  # in sparse mode +0.0 stays entry 0
        lut[keep] = rank + (1 if sp else 0)
        out[sp] = (lut[pos_all], book, nneg, int(u.size - nneg))
    return out


def encode_shared(idx, book, rows, cols, nneg, npos, p: dict) -> bytes:
    return _C.ac_encode_weights(idx, book, rows, cols, nneg, npos, bool(p["sp"]), bool(p["cm"]), p["vc"],
                                p["sc"], p["sh"], p.get("pp", 0))


AXES = {"sp": (1, 0), "cm": (0, 1), "pp": (0,), "vc": (0, 1, 2), "sc": (1, 0), "sh": (7, 5, 6, 8, 9)}


def image_periods(shape: tuple) -> tuple:
    """Widths at which a tensor's rows may be images (the `pp` model parameter).

    A convolution's kernel rows are shape[-1] wide; a layer whose input count is a
    square is tried as a square image (a first layer over pixels); and one whose input
    count is C * w * w with C >= w * w channels is tried at each such width w >= 3, as a
    classifier's first layer over flattened feature maps (LeNet-5's 50 x 4 x 4,
    AlexNet's 256 x 6 x 6, VGG's 512 x 7 x 7; the channel count of such a head is
    usually the larger factor, which keeps the trials to a few). Trained ones are
    smooth there, so a weight's neighbours "above" predict whether it survived pruning
    and its sign; the writer keeps a period only when it makes the payload smaller.
    """
    cols = matrix_view(shape)[1]
    out = set()
    if len(shape) == 4 and 1 < int(shape[-1]) < cols:
        out.add(int(shape[-1]))
    if len(shape) == 2:
        side = int(round(cols ** 0.5))
        if side > 1 and side * side == cols:
            out.add(side)
        w = 3
        while w ** 4 <= cols:
            if cols % (w * w) == 0:
                out.add(w)
            w += 1
    return tuple(sorted(out))


# Tensors up to FULL_GRID_NUMEL elements try every model. Bigger ones search one
# parameter at a time (two rounds up to SAMPLE_NUMEL elements): on the whole tensor up to
# FULL_SEARCH_NUMEL elements, beyond on evenly spread blocks of rows holding about
# 1/TRIAL_FRACTION of it (at least FULL_SEARCH_NUMEL elements), so the ~8 trials cost
# about one full encode; then they encode once in full, plus up to MAX_FINALS full trials
# of what a sample cannot judge (best_shared). On the benchmark models this costs 0-10
# bytes per model against a search on the whole tensor, at about a third of the coder
# work (a second final bought 1 KB of MiniLM's 15.4 MB for a quarter of its encode).
FULL_GRID_NUMEL = 1 << 12
FULL_SEARCH_NUMEL = 1 << 15
TRIAL_FRACTION = 8
SAMPLE_BLOCKS = 8
FINALS_MARGIN = 0.01
MAX_FINALS = 1


def _valid(p, rows, cols, options) -> bool:
    if p["sp"] not in options or (p["cm"] and (rows < 2 or cols < 2)):
        return False
    if p["pp"] and (p["cm"] or p["pp"] >= cols):
        return False  # a period reads along the rows of the row-major scan
    return p["sp"] or p["sc"] == 0  # dense mode has no significance flags


def _sample_rows(rows: int, cols: int) -> np.ndarray:
    numel = rows * cols
    if numel <= FULL_SEARCH_NUMEL:
        return np.arange(rows)
    # blocks of consecutive rows (so "above" keeps its meaning) spread over the whole
    # tensor, whose first rows need not be typical
    want = max(FULL_SEARCH_NUMEL, numel // TRIAL_FRACTION)
    n = max(1, min(rows, want // max(cols, 1)))
    per = max(1, n // SAMPLE_BLOCKS)
    starts = np.linspace(0, rows - per, SAMPLE_BLOCKS).astype(np.int64)
    return np.unique((starts[:, None] + np.arange(per)[None, :]).reshape(-1))


def best_shared(bits: np.ndarray, rows: int, cols: int, sparse_ok: bool, dense_ok: bool,
                uniq: np.ndarray | None = None, pos: np.ndarray | None = None, periods: tuple = ()):
    """The smallest ac_shared payload found for this tensor: (payload, params) or None.

    `periods` (image_periods) are tried as the `pp` parameter; `pp` is left out of the
    parameters when 0, so files without images read as before."""
    options = [sp for sp, ok in ((1, sparse_ok), (0, dense_ok)) if ok]
    if not options:
        return None
    tabs = weight_tables(bits, options, uniq, pos)
    numel = rows * cols
    sample_rows = _sample_rows(rows, cols)
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

    axes = {**AXES, "pp": (0,) + tuple(periods)}
    if numel <= FULL_GRID_NUMEL:
        grid = [dict(zip(axes, vals)) for vals in itertools.product(*axes.values())]
        best = min((p for p in grid if _valid(p, rows, cols, options)), key=size)
    else:
        best = {a: v[0] for a, v in axes.items()}
        best["sp"] = options[0]
        if not best["sp"]:
            best["sc"] = 0
        for _round in range(2 if numel <= SAMPLE_NUMEL else 1):
            for axis, values in axes.items():
                if axis == "sh":
                    best = _best_shift(best, size)
                    continue
                for v in values:
                    q = {**best, axis: v}
                    if _valid(q, rows, cols, options) and size(q) < size(best):
                        best = q
    idx, book, nn, npn = tabs[best["sp"]]
    payload = encode_shared(idx, book, rows, cols, nn, npn, best)
    if trial_rows < rows:
        # What a sample cannot show: a shorter scan favours models that learn fast (few
        # contexts, fast adaptation), while a whole tensor pays back richer contexts and
        # slower, more precise adaptation. So the richer and slower neighbours of the
        # sample's best, then its runner-ups on the sample, get full trials (at most
        # MAX_FINALS).
        finals = []
        slower = {"sh": min(best["sh"] + 1, max(AXES["sh"]))}
        if best["sp"] and best["sc"] == 0:
            finals += [{**best, "sc": 1, **slower}, {**best, "sc": 1}]
        finals.append({**best, **slower})
        sbest = size(best)
        finals += [dict(k) for v, k in sorted((v, k) for k, v in cache.items() if v <= sbest * (1 + FINALS_MARGIN))]
        tried = [best]
        for q in finals:
            if len(tried) > MAX_FINALS:
                break
            if q in tried or not _valid(q, rows, cols, options):
                continue
            tried.append(q)
            other = encode_shared(idx, book, rows, cols, nn, npn, q)
            if len(other) < len(payload):
                payload, best = other, q
    if not best["pp"]:
        best = {a: v for a, v in best.items() if a != "pp"}
    return payload, {**best, "k": nn + npn, "neg": nn}


def _best_shift(best: dict, size) -> dict:
    """The adaptation limit, walking from the current one towards the better neighbour.

    Size against the limit is close to convex (too fast: noisy probabilities, too slow:
    late learning), so once a step up or down does not help, further steps in that
    direction are not tried."""
    lo, hi = min(AXES["sh"]), max(AXES["sh"])
    for step in (1, -1):
        moved = False
        while lo <= best["sh"] + step <= hi:
            q = {**best, "sh": best["sh"] + step}
            if size(q) >= size(best):
                break
            best, moved = q, True
        if moved:
            break
    return best


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
                                    bool(p["cm"]), p["vc"], p["sc"], p["sh"], p.get("pp", 0))
    except ValueError as e:
        raise DczFormatError(f"{what}: {e}") from None


def decode_floats(payload, count: int, shift: int, what: str) -> np.ndarray:
    try:
        return _C.ac_decode_floats(np.frombuffer(payload, np.uint8), count, shift)
    except ValueError as e:
        raise DczFormatError(f"{what}: {e}") from None
