"""The .dcz version 2 container (docs/FORMAT.md, sections 7-9): writer and validator.

Version 1 spends most of a small file on its container: ~170 bytes of JSON per tensor,
a CRC per section, 64-byte alignment, graph and meta stored as plain JSON. Version 2
keeps the 20-byte prefix and puts everything else that is not tensor data into one
deflate-compressed JSON header (tensor table, graph, meta, one CRC of the body); the
tensor sections follow back to back in table order, so offsets are implied by lengths.
Tensor encodings are those of version 1 (byte for byte) plus the arithmetic-coded
`ac_shared` and `ac_float`; the writer prices every candidate exactly and keeps the
smallest.
"""
from __future__ import annotations

import json
import math
import zlib

import numpy as np
import torch

from deepcomp import _C
from deepcomp.codec import arith
from deepcomp.codec import layout as L
from deepcomp.codec.hdict import HEADER_DICT, HEADER_DICT_2
from deepcomp.codec.tensors import Encoded, choose_encoding, matrix_view
from deepcomp.errors import DczChecksumError, DczFormatError, DczTruncatedError, DeepcompError

VERSION = 2
# The inflated header holds the tensor table plus the graph and meta objects.
MAX_INFLATED = L.MAX_HEADER_BYTES + L.MAX_GRAPH_BYTES + L.MAX_META_BYTES
V2_ENCODINGS = L.ENCODINGS + ("ac_shared", "ac_float")
AC_SHARED_KEYS = {"k": (0, L.MAX_CODEBOOK), "neg": (0, L.MAX_CODEBOOK), "sp": (0, 1), "cm": (0, 1),
                  "vc": (0, 2), "sc": (0, 1), "sh": (arith.SHIFTS.start, arith.SHIFTS.stop - 1)}


# ---- writer ------------------------------------------------------------------------------

CODERS = ("auto", "huffman")


def check_coder(coder) -> str:
    """The writer's coder choice, checked: 'auto' (smallest of every encoding) or
    'huffman' (version 1's table-driven streams and raw floats only)."""
    if not isinstance(coder, str) or coder.strip().lower() not in CODERS:
        raise DeepcompError(f"coder must be one of {', '.join(CODERS)}, not {coder!r}")
    return coder.strip().lower()


def choose_encoding_v2(name: str, t: torch.Tensor, *, fp16: bool = False, coder: str = "auto") -> Encoded:
    """The fewest-bytes encoding of one tensor among Huffman (v1) and arithmetic coding.

    Pure function of the tensor: callers (rate-distortion search) may use
    `len(choose_encoding_v2(...).payload)` as the exact price of a tensor in a v2 file.
    ``coder='huffman'`` leaves the arithmetic coder out: each tensor then takes version
    1's choice (3.4), whose streams decode with one table lookup per symbol, several
    times faster than the adaptive binary coder's one dependent decision per bin.
    """
    if check_coder(coder) == "huffman":
        return choose_encoding(name, t, fp16=fp16)  # its `why` compares version 1's candidates
    tt = t.detach().cpu().contiguous()
    if tt.dtype != torch.float32 or tt.dim() == 0 or tt.numel() == 0:
        return choose_encoding(name, t, fp16=fp16)
    bits = tt.view(torch.int32).numpy().view(np.uint32).reshape(-1)
    uniq = np.unique(bits)
    dense_ok = uniq.size <= L.MAX_CODEBOOK
    sparse_ok = (uniq[uniq != 0]).size <= L.MAX_CODEBOOK
    if fp16 and not (dense_ok or sparse_ok):
        return choose_encoding(name, t, fp16=fp16)  # asked-for lossy storage: raw float16
    base = {"name": name, "dtype": "float32", "shape": list(tt.shape)}
    ac = None
    if dense_ok or sparse_ok:
        pos = _C.table_index(bits, uniq)
        rows, cols = matrix_view(tuple(tt.shape))
        ac = arith.best_shared(bits, rows, cols, sparse_ok, dense_ok, uniq, pos, arith.image_periods(tuple(tt.shape)))
        if dense_ok and bits.size > arith.FULL_GRID_NUMEL and len(ac[0]) < _huffman_floor(pos, uniq, sparse_ok):
            # Huffman cannot win (its floor is above this payload) and, on a tensor this
            # big, shares below raw size, so the float trial is skipped too (as below):
            # the v1 pricing, a third of a big model's encode, is not needed.
            enc = Encoded({**base, "encoding": "ac_shared", **ac[1]}, ac[0])
            enc.why = {"ac_shared": len(ac[0]), "raw": bits.size * 4}
            return enc
    enc = choose_encoding(name, t, fp16=fp16)
    if enc.fields["encoding"] == "raw" and enc.fields.get("storage") == "float16":
        return enc  # asked-for lossy storage: keep it
    chosen = "b" if enc.fields["encoding"] == "shared_sparse" else enc.fields["encoding"]
    why = {"huffman" if chosen != "raw" else "raw": len(enc.payload)}
    if enc.fields["encoding"] != "raw":
        why["raw"] = bits.size * 4
    best = enc
    if enc.fields["encoding"] == "raw" or bits.size <= arith.FULL_GRID_NUMEL:
        # A tensor that shares well is never cheaper as floats; skip the trial on big ones.
        floats = arith.best_floats(bits)
        why["ac_float"] = len(floats[0])
        if len(floats[0]) < len(best.payload):
            best = Encoded({**base, "encoding": "ac_float", "sh": floats[1]}, floats[0])
    if ac is not None:
        payload, p = ac
        why["ac_shared"] = len(payload)
        if len(payload) < len(best.payload):
            best = Encoded({**base, "encoding": "ac_shared", **p}, payload)
    best.why = why
    return best


def _huffman_floor(pos: np.ndarray, uniq: np.ndarray, sparse_ok: bool) -> int:
    """Bytes below every Huffman encoding of a shareable tensor (v1's shared_dense and
    shared_sparse): codebook plus the order-0 entropy of the codes (a Huffman code never
    beats it; shared_sparse's code stream holds every non-zero, plus fillers, and its
    relative-index stream is not counted)."""

    def bits_of(counts: np.ndarray) -> float:
        c = counts[counts > 0]
        return float((c * np.log2(c.sum() / c)).sum()) if c.size else 0.0

    counts = np.bincount(pos, minlength=uniq.size).astype(np.float64)
    floor = 4 * uniq.size + bits_of(counts) / 8
    if sparse_ok:
        nz = counts[1:] if uniq[0] == 0 else counts
        floor = min(floor, 4 * nz.size + bits_of(nz) / 8)
    return math.floor(floor * (1 - 1e-9)) - 1


def _entry(enc: Encoded) -> list:
    f = enc.fields
    params = {k: v for k, v in f.items() if k not in ("name", "dtype", "shape", "encoding")}
    if f["encoding"] == "raw" and params.get("storage") == f["dtype"]:
        params = {}
    row = [f["name"], f["dtype"], f["shape"], f["encoding"], len(enc.payload)]
    if params:
        row.append(params)
    return row


def _zdict(flags: int) -> dict:
    """zlib's keyword for the preset dictionary the prefix flags name (none for 0)."""
    if flags & L.FLAG_HEADER_DICT_2:
        return {"zdict": HEADER_DICT_2}
    return {"zdict": HEADER_DICT} if flags & L.FLAG_HEADER_DICT else {}


def _deflate(data: bytes, flags: int = 0) -> bytes:
    """Raw DEFLATE, level 9, against the preset dictionary the flags name."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, **_zdict(flags))
    return c.compress(data) + c.flush()


def assemble_v2(encoded: list, graph: dict | None, meta: dict | None) -> bytes:
    body = b"".join(enc.payload for enc in encoded)
    header = {"t": [_entry(e) for e in encoded], "c": zlib.crc32(body)}
    if graph is not None:
        header["g"] = graph
    if meta:
        header["m"] = meta
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    # whichever dictionary gives the shorter header (dictionary 1 on a tie)
    flags, packed = min(((f, _deflate(text, f)) for f in (L.FLAG_HEADER_DICT, L.FLAG_HEADER_DICT_2)),
                        key=lambda fp: len(fp[1]))
    if len(packed) > L.MAX_HEADER_BYTES:
        raise DczFormatError(f"compressed header of {len(packed)} bytes exceeds {L.MAX_HEADER_BYTES}")
    prefix = L.PREFIX.pack(L.MAGIC, VERSION, flags, len(packed), zlib.crc32(packed))
    return prefix + packed + body


# ---- reader ------------------------------------------------------------------------------

def inflate_header(data: bytes, flags: int) -> bytes:
    """The header's JSON text from its deflate stream (with the preset dictionary the
    prefix flags name), within MAX_INFLATED bytes."""
    d = zlib.decompressobj(-15, **_zdict(flags))
    try:
        out = d.decompress(data, MAX_INFLATED + 1)
    except zlib.error as e:
        raise DczFormatError(f"header is not a valid deflate stream ({e})") from None
    if len(out) > MAX_INFLATED or d.unconsumed_tail:
        raise DczFormatError(f"header inflates to more than {MAX_INFLATED} bytes")
    if not d.eof:
        raise DczTruncatedError("header deflate stream ends early (truncated)")
    if d.unused_data:
        raise DczFormatError(f"{len(d.unused_data)} bytes after the end of the header's deflate stream")
    return out


def validate_v2(mv: memoryview, hlen: int, hcrc: int, flags: int = 0, *, defer: bool = False):
    """Checks a version 2 image (prefix already read); returns the reader's ParsedFile."""
    from deepcomp.codec import reader as R

    size = len(mv)
    hend = L.PREFIX.size + hlen
    if hlen == 0 or hlen > L.MAX_HEADER_BYTES:
        raise DczFormatError(f"header length {hlen} outside 1..{L.MAX_HEADER_BYTES}")
    if hend > size:
        raise DczTruncatedError(f"header of {hlen} bytes runs past the end of the {size}-byte file")
    if flags & L.FLAG_HEADER_DICT and flags & L.FLAG_HEADER_DICT_2:
        raise DczFormatError(f"prefix flags are {flags:#x}: a header has one preset dictionary, not two")
    packed = bytes(mv[L.PREFIX.size:hend])
    if zlib.crc32(packed) != hcrc:
        raise DczChecksumError("header checksum mismatch (the file is corrupted)")
    header = R._load_json(inflate_header(packed, flags), "header")
    if not isinstance(header, dict):
        raise DczFormatError("header must be a JSON object")
    rows = header.get("t")
    if not isinstance(rows, list):
        raise DczFormatError("header field 't' (tensor table) missing or not a list")
    if len(rows) > L.MAX_TENSORS:
        raise DczFormatError(f"header lists {len(rows)} tensors, more than {L.MAX_TENSORS}")
    body_crc = R._int_field(header, "c", "header", 0, 0xFFFFFFFF)
    records, pos = [], hend
    for i, row in enumerate(rows):
        r = _check_row(row, i, pos)
        records.append(r)
        pos += r.length
    if pos > size:
        raise DczTruncatedError(f"file is {size} bytes but its tensor table needs {pos} (truncated)")
    if pos < size:
        raise DczFormatError(f"{size - pos} bytes of trailing garbage after the last tensor")
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DczFormatError(f"tensor name {dup!r} appears more than once")
    dense_bytes = sum(r.numel * L.DTYPES[r.dtype][1].itemsize for r in records)
    cap = max(L.MIN_DENSE_CAP, L.EXPANSION_CAP * size)
    if dense_bytes > cap:
        raise DczFormatError(f"tensors declare {dense_bytes} decoded bytes, more than a {size}-byte "
                             f"file may expand to ({cap})")
    if zlib.crc32(mv[hend:size]) != body_crc:
        raise DczChecksumError("tensor data checksum mismatch (the file is corrupted)")
    for r in records:
        if r.encoding in L.ENCODINGS:
            R._parse_sections(mv, r)
    R.each_by_work(lambda r: _decode(mv, r, R, defer), records, [R.decode_work(r, defer) for r in records])
    graph, meta = header.get("g"), header.get("m", {})
    if graph is not None and not isinstance(graph, dict):
        raise DczFormatError("header field 'g' (graph) must be a JSON object")
    if not isinstance(meta, dict):
        raise DczFormatError("header field 'm' (meta) must be a JSON object")
    return R.ParsedFile(size, hend, records, graph, meta, {})


def _check_row(row, i: int, offset: int):
    from deepcomp.codec import reader as R

    what = f"tensor #{i}"
    if not isinstance(row, list) or len(row) not in (5, 6):
        raise DczFormatError(f"{what}: table row must be a list [name, dtype, shape, encoding, length, params?]")
    name, dtype, shape, enc, length = row[:5]
    params = row[5] if len(row) == 6 else {}
    if not isinstance(params, dict):
        raise DczFormatError(f"{what}: encoding parameters must be a JSON object")
    if not isinstance(enc, str) or enc not in V2_ENCODINGS:
        raise DczFormatError(f"{what}: unknown encoding {enc!r}")
    if not R._is_int(length) or not 0 <= length <= 1 << 62:
        raise DczFormatError(f"{what}: section length {length!r} is not a non-negative integer")
    e = {**params, "name": name, "dtype": dtype, "shape": shape, "encoding": enc,
         "offset": offset if length else 0, "length": length, "crc32": 0}
    if enc == "raw" and "storage" not in params:
        e["storage"] = dtype
    if enc in L.ENCODINGS:
        return R._check_entry(e, i)
    # the ac_* encodings: shared checks by way of a raw float32 stand-in, then their own
    if dtype != "float32":
        raise DczFormatError(f"{what}: {enc} holds float32 only, not {dtype!r}")
    r = R._check_entry({**e, "encoding": "raw", "storage": "float32",
                        "length": 4 * math.prod(shape) if isinstance(shape, list) and all(
                            R._is_int(d) for d in shape) else -1}, i)
    what = f"tensor {r.name!r}"
    if r.dtype != "float32":
        raise DczFormatError(f"{what}: {enc} holds float32 only, not {r.dtype}")
    if not r.shape or r.numel == 0:
        raise DczFormatError(f"{what}: {enc} needs at least one dimension and one element")
    if length < 4:
        raise DczFormatError(f"{what}: {enc} section of {length} bytes is shorter than the coder's 4-byte start")
    if enc == "ac_float":
        if set(params) != {"sh"}:
            raise DczFormatError(f"{what}: ac_float takes exactly the parameter 'sh'")
        R._int_field(params, "sh", what, arith.SHIFTS.start, arith.SHIFTS.stop - 1)
    else:
        if set(params) - {"pp"} != set(AC_SHARED_KEYS):
            raise DczFormatError(f"{what}: ac_shared takes the parameters {sorted(AC_SHARED_KEYS)} "
                                 f"(and optionally 'pp'), got {sorted(params)}")
        for key, (lo, hi) in AC_SHARED_KEYS.items():
            R._int_field(params, key, what, lo, hi)
        if "pp" in params:
            # a period of 0 is written by leaving 'pp' out; it reads along row-major rows
            cols = matrix_view(tuple(r.shape))[1]
            if params["cm"] != 0 or cols < 2:
                raise DczFormatError(f"{what}: 'pp' needs a row-major scan (cm = 0) of rows at least 2 long")
            R._int_field(params, "pp", what, 1, cols - 1)
        if params["neg"] > params["k"]:
            raise DczFormatError(f"{what}: {params['neg']} negative codebook entries of {params['k']}")
        if params["sp"] == 0 and (params["k"] == 0 or params["sc"] != 0):
            raise DczFormatError(f"{what}: dense ac_shared needs k >= 1 and sc = 0")
    r.encoding, r.length = enc, length
    r.offset = offset if length else 0
    r.fields = {**params, "name": r.name}
    return r


def _decode(mv: memoryview, r, R, defer: bool = False) -> None:
    what = f"tensor {r.name!r}"
    if r.encoding in L.ENCODINGS:
        R._decode_content(mv, r, defer)
        return
    payload = mv[r.offset:r.offset + r.length]
    if r.encoding == "ac_float":
        r.raw = arith.decode_floats(payload, r.numel, r.fields["sh"], what).view("<f4")
        return
    rows, cols = matrix_view(r.shape)
    idx, book = arith.decode_shared(payload, rows, cols, r.fields, what)
    table = book if not r.fields["sp"] else np.concatenate([np.zeros(1, np.uint32), book])
    r.codebook = table.view(np.float32)
    r.codes = idx
