"""Tensor encodings of .dcz v1: raw, shared-dense and shared-sparse.

The writer side (`choose_encoding`) prices every candidate exactly (code lengths times
symbol counts, no trial encoding) and keeps the fewest bytes. The reader side turns
decoded streams into the compressed forms the runtime consumes, or into dense tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from deepcomp import _C
from deepcomp.codec.layout import DTYPES, INDEX_BITS, MAX_CODEBOOK, TORCH_TO_NAME

MAX_STREAM_COUNT = 0xFFFFFFFF
from deepcomp.codec.streams import encode_stream, histogram, stream_cost

# ---- compressed forms handed to the runtime ---------------------------------------


@dataclass
class RawTensor:
    name: str
    shape: tuple
    array: np.ndarray


@dataclass
class SharedDense:
    name: str
    shape: tuple
    codebook: np.ndarray  # float32[K]
    codes: np.ndarray  # uint8[numel]


@dataclass
class SharedSparse:
    """CSR over the matrix view rows = shape[0], cols = prod(shape[1:])."""

    name: str
    shape: tuple
    codebook: np.ndarray  # float32[K]
    indptr: np.ndarray  # int32[rows + 1]
    indices: np.ndarray  # uint16 (cols <= 65536) or int32 [nnz], sorted within a row
    codes: np.ndarray  # uint8[nnz]


def matrix_view(shape: tuple) -> tuple[int, int]:
    rows = int(shape[0])
    return rows, math.prod(int(d) for d in shape[1:])


# ---- writer side -----------------------------------------------------------------


@dataclass
class Encoded:
    """One tensor ready for the file: its header fields and its section bytes."""

    fields: dict
    payload: bytes
    why: dict = field(default_factory=dict)


def _sparse_hists(gaps: np.ndarray, codes: np.ndarray, k: int, b: int):
    """Relative-index and cluster-code histograms for index width b, with fillers."""
    m = 1 << b
    fillers = int(np.sum(gaps >> b))
    rel = np.bincount(gaps & (m - 1), minlength=m).astype(np.uint64)
    rel[m - 1] += fillers
    cod = np.bincount(codes, minlength=k + 1).astype(np.uint64)
    cod[k] += fillers
    return rel, cod, fillers


def sparse_streams(positions: np.ndarray, codes: np.ndarray, k: int, b: int):
    """Relative index and cluster code streams (fillers included) for width b.

    Positions are in the row-major flattening of the whole tensor. Each entry advances
    the position by (relative index + 1); a filler advances it by 2**b at a zero and
    carries the reserved code k.
    """
    m = 1 << b
    gaps = np.diff(positions, prepend=-1) - 1
    nfill = gaps >> b
    slot = np.cumsum(nfill + 1) - 1  # where each real entry lands
    total = int(slot[-1]) + 1 if slot.size else 0
    rel = np.full(total, m - 1, np.uint16)
    cod = np.full(total, k, np.uint16)
    rel[slot] = gaps & (m - 1)
    cod[slot] = codes
    return rel, cod


def choose_encoding(name: str, t: torch.Tensor, *, fp16: bool = False) -> Encoded:
    dtype = TORCH_TO_NAME.get(t.dtype)
    if dtype is None:
        from deepcomp.errors import ModelError

        raise ModelError(f"tensor {name!r} has dtype {t.dtype}, which .dcz cannot store "
                         f"(supported: {', '.join(DTYPES)})")
    t = t.detach().cpu().contiguous()
    shape = list(t.shape)
    base = {"name": name, "dtype": dtype, "shape": shape}
    if t.dtype != torch.float32 or t.dim() == 0 or t.numel() == 0:
        return _raw(base, t, dtype)
    bits = t.view(torch.int32).numpy().view(np.uint32).reshape(-1)
    uniq = np.unique(bits)
    cands: dict[str, int] = {}
    nz_book = uniq[uniq != 0]
    lossless_shareable = uniq.size <= MAX_CODEBOOK or nz_book.size <= MAX_CODEBOOK
    use_fp16 = fp16 and not lossless_shareable
    cands["raw"] = bits.size * (2 if use_fp16 else 4)
    fits = bits.size <= MAX_STREAM_COUNT  # a stream counts its symbols in a u32
    if fits and uniq.size <= MAX_CODEBOOK:
        # a lookup into <= 256 values is cheaper than np.unique's return_inverse
        inverse = _C.table_index(bits, uniq)
        cost, _ = stream_cost(histogram(inverse, uniq.size))
        cands["shared_dense"] = 4 * uniq.size + cost
    if fits and nz_book.size <= MAX_CODEBOOK:
        positions = np.flatnonzero(bits)
        k0 = nz_book.size
        codes = _C.table_index(bits[positions], nz_book) if k0 else np.zeros(0, np.int64)
        gaps = np.diff(positions, prepend=-1) - 1
        k = int(nz_book.size)
        for b in INDEX_BITS:
            rel_h, cod_h, _ = _sparse_hists(gaps, codes, k, b)
            cands[f"b{b}"] = 4 * k + stream_cost(rel_h)[0] + stream_cost(cod_h)[0]
    best = min(cands, key=lambda c: (cands[c], list(cands).index(c)))  # ties: raw first
    why = _why(cands, best)
    if best == "raw":
        enc = _raw(base, t.to(torch.float16) if use_fp16 else t, dtype,
                   storage="float16" if use_fp16 else None)
    elif best == "shared_dense":
        book = uniq.view(np.float32)
        payload = book.astype("<f4").tobytes() + encode_stream(inverse, uniq.size)
        enc = Encoded({**base, "encoding": "shared_dense", "k": int(uniq.size)}, payload)
    else:
        b = int(best[1:])
        rel, cod = sparse_streams(positions, codes, k, b)
        payload = (nz_book.view(np.float32).astype("<f4").tobytes()
                   + encode_stream(rel, 1 << b) + encode_stream(cod, k + 1))
        enc = Encoded({**base, "encoding": "shared_sparse", "k": k, "index_bits": b,
                       "nnz": int(positions.size), "entries": int(rel.size)}, payload)
    assert len(enc.payload) == cands[best], (name, best, len(enc.payload), cands[best])
    enc.why = why
    return enc


def _why(cands: dict, best: str) -> dict:
    """The chosen candidate's size and the best rival of each other kind, for `info`."""
    if len(cands) < 2:
        return {}
    out = {best: cands[best]}
    for family in ("raw", "shared_dense", "b"):
        rivals = {c: v for c, v in cands.items() if c != best and c.startswith(family)}
        if rivals:
            c = min(rivals, key=rivals.get)
            out[c] = rivals[c]
    return out


def _raw(base: dict, t: torch.Tensor, dtype: str, storage: str | None = None) -> Encoded:
    storage = storage or dtype
    if t.dtype == torch.bfloat16:
        data = t.view(torch.int16).numpy().astype("<i2").tobytes()
    elif t.dtype == torch.bool:
        data = t.numpy().astype(np.uint8).tobytes()
    else:
        data = t.numpy().astype(DTYPES[storage][1]).tobytes()
    return Encoded({**base, "encoding": "raw", "storage": storage}, data)
