"""Reading .dcz files: the one validator, and the DczFile view built on what it returns.

`validate` checks the whole file before anything is decoded into tensors: the fixed
prefix, the header and its checksum, every tensor entry, the tiling of sections
(aligned, in bounds, no overlap, zero padding, nothing after the last one), each
section's checksum, each stream header and code table, and then the decoded streams
themselves (bitstream lengths, index ranges, relative-index structure). Allocations
sized from the file are bounded first: by the file size for raw data, by the payload for
Huffman streams (the C++ decoder re-checks), and by an expansion cap for the rest.

`decode` (a whole file to dense tensors) defers the Huffman payloads of shared tensors:
every header is checked first, and each payload is then decoded straight into its dense
tensor by one C++ pass that makes the same checks (no symbol arrays in between).
"""
from __future__ import annotations

import json
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from deepcomp import _C
from deepcomp.codec import layout as L
from deepcomp.codec.layout import MODE_HUFFMAN
from deepcomp.codec.streams import decode_pair, decode_stream, parse_stream
from deepcomp.codec.tensors import RawTensor, SharedDense, SharedSparse, matrix_view
from deepcomp.errors import (
    DczChecksumError,
    DczFormatError,
    DczTruncatedError,
    DczVersionError,
    DeepcompError,
)


@dataclass
class TensorRecord:
    name: str
    dtype: str
    shape: tuple
    encoding: str
    offset: int
    length: int
    fields: dict
    why: dict
    # filled once the section is decoded
    raw: np.ndarray | None = None
    codebook: np.ndarray | None = None  # float32[K]
    codes: np.ndarray | None = None  # uint16: per element (dense) or per entry, fillers included (sparse)
    rel: np.ndarray | None = None  # uint16 relative indices (sparse)
    streams: dict = field(default_factory=dict)  # label -> StreamInfo

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class ParsedFile:
    size: int
    header_bytes: int  # prefix + JSON header
    tensors: list
    graph: dict | None
    meta: dict
    extra_sections: dict  # 'graph' / 'meta' -> section length


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_field(d: dict, key: str, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    v = d.get(key)
    if not _is_int(v):
        raise DczFormatError(f"{what}: field {key!r} missing or not an integer")
    if not lo <= v <= hi:
        raise DczFormatError(f"{what}: {key} = {v} outside {lo}..{hi}")
    return v


def _section_ref(d, what: str, cap: int) -> tuple[int, int, int]:
    if not isinstance(d, dict):
        raise DczFormatError(f"{what}: section entry must be an object")
    off = _int_field(d, "offset", what)
    ln = _int_field(d, "length", what, 0, cap)
    crc = _int_field(d, "crc32", what, 0, 0xFFFFFFFF)
    return off, ln, crc


def _load_json(data: bytes, what: str):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DczFormatError(f"{what} is not valid UTF-8 JSON ({type(e).__name__}: {str(e)[:80]})") from None


def validate(buf: bytes | bytearray | memoryview, *, defer: bool = False) -> ParsedFile:
    """Check a whole .dcz image and decode its streams; raise DczFormatError if anything is off.

    ``defer=True`` (for a caller that wants only dense tensors, as `decode` does) checks
    everything down to each Huffman stream's header and code table but leaves the
    Huffman payloads of shared tensors to `DczFile.dense`, which decodes them straight
    into the tensor with the same checks (one pass instead of three) and raises the same
    DczFormatError for a bad stream: the error then comes from `dense`, not from here."""
    mv = memoryview(buf).cast("B")
    size = len(mv)
    if size < L.PREFIX.size:
        if size < 8 and bytes(mv) != L.MAGIC[:size]:
            raise DczFormatError("not a .dcz file (bad magic bytes)")
        raise DczTruncatedError(f"file is {size} bytes, shorter than the {L.PREFIX.size}-byte prefix")
    magic, version, flags, hlen, hcrc = L.PREFIX.unpack_from(mv, 0)
    if magic != L.MAGIC:
        raise DczFormatError(f"not a .dcz file (bad magic bytes {magic!r})")
    if version not in L.READ_VERSIONS:
        raise DczVersionError(f"format version {version}; this build reads versions "
                              f"{', '.join(map(str, L.READ_VERSIONS))}"
                              + (" (upgrade deepcomp)" if version > max(L.READ_VERSIONS) else ""))
    if flags & ~L.PREFIX_FLAGS[version]:
        raise DczFormatError(f"prefix flags are {flags:#x}; version {version} defines "
                             + (f"only {L.PREFIX_FLAGS[version]:#x}" if L.PREFIX_FLAGS[version] else "none")
                             + " (a newer deepcomp may read it)")
    if version == 2:
        from deepcomp.codec.v2 import validate_v2

        return validate_v2(mv, hlen, hcrc, flags, defer=defer)
    if hlen == 0 or hlen > L.MAX_HEADER_BYTES:
        raise DczFormatError(f"header length {hlen} outside 1..{L.MAX_HEADER_BYTES}")
    hend = L.PREFIX.size + hlen
    if hend > size:
        raise DczTruncatedError(f"header of {hlen} bytes runs past the end of the {size}-byte file")
    hdata = bytes(mv[L.PREFIX.size:hend])
    if zlib.crc32(hdata) != hcrc:
        raise DczChecksumError("header checksum mismatch (the file is corrupted)")
    header = _load_json(hdata, "header")
    if not isinstance(header, dict):
        raise DczFormatError("header must be a JSON object")
    declared = _int_field(header, "file_size", "header")
    if declared > size:
        raise DczTruncatedError(f"file is {size} bytes but its header says {declared} (truncated)")
    if declared < size:
        raise DczFormatError(f"{size - declared} bytes of trailing garbage after the end of the file")
    entries = header.get("tensors")
    if not isinstance(entries, list):
        raise DczFormatError("header field 'tensors' missing or not a list")
    if len(entries) > L.MAX_TENSORS:
        raise DczFormatError(f"header lists {len(entries)} tensors, more than {L.MAX_TENSORS}")

    records = [_check_entry(e, i) for i, e in enumerate(entries)]
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DczFormatError(f"tensor name {dup!r} appears more than once")
    dense_bytes = sum(r.numel * L.DTYPES[r.dtype][1].itemsize for r in records)
    cap = max(L.MIN_DENSE_CAP, L.EXPANSION_CAP * size)
    if dense_bytes > cap:
        raise DczFormatError(f"tensors declare {dense_bytes} decoded bytes, more than a {size}-byte "
                             f"file may expand to ({cap})")

    sections = [(r.offset, r.length, r.fields["crc32"], f"tensor {r.name!r}") for r in records]
    extra = {}
    for key, cap_bytes in (("graph", L.MAX_GRAPH_BYTES), ("meta", L.MAX_META_BYTES)):
        if header.get(key) is not None:
            off, ln, crc = _section_ref(header[key], f"{key} section", cap_bytes)
            if ln == 0:
                raise DczFormatError(f"{key} section is empty")
            sections.append((off, ln, crc, f"{key} section"))
            extra[key] = (off, ln)
    _check_tiling(mv, sections, hend, size)
    for off, ln, crc, what in sections:
        if zlib.crc32(mv[off:off + ln]) != crc:
            raise DczChecksumError(f"{what}: checksum mismatch (the file is corrupted)")

    for r in records:
        _parse_sections(mv, r)
    each_by_work(lambda r: _decode_content(mv, r, defer), records, [decode_work(r, defer) for r in records])

    graph = meta = None
    if "graph" in extra:
        off, ln = extra["graph"]
        graph = _load_json(bytes(mv[off:off + ln]), "graph section")
        if not isinstance(graph, dict):
            raise DczFormatError("graph section must be a JSON object")
    if "meta" in extra:
        off, ln = extra["meta"]
        meta = _load_json(bytes(mv[off:off + ln]), "meta section")
        if not isinstance(meta, dict):
            raise DczFormatError("meta section must be a JSON object")
    return ParsedFile(size, hend, records, graph, meta or {},
                      {k: ln for k, (off, ln) in extra.items()})


# Above this fraction of nonzeros a shared tensor is handed out as dense codes (the
# runtime's SPARSE_DENSITY: its sparse kernels lose to dense ones beyond it).
SPARSE_FORM_DENSITY = 0.5
MAX_THREADS = 4  # benchmarks set 1 to measure the single-threaded decoder


# Decoding runs on several threads (the C++ coders release the GIL) when there is enough
# of it. Arithmetic-coded tensors cost ~10 ns per element to decode (and more to encode),
# far more per byte than Huffman: the threshold counts elements of work, not bytes. Below
# ~10 ms of work, thread start-up and a busy shared machine cost more than a second core
# gains (LeNet files decoded 20-50 % slower on threads on a loaded 2-vCPU host).
PARALLEL_MIN_WORK = 1 << 20


# Items below this much work run on the calling thread while the pool takes the big ones:
# a pool task costs ~20 us of locking, more than a bias or a norm parameter takes.
INLINE_WORK = 1 << 14


def each_by_work(fn, items: list, work: list) -> list:
    """fn over items on a thread pool when their total work (element counts) is big.

    The biggest items are started first, so one large tensor does not start last and
    leave the other threads idle; small ones run on the calling thread meanwhile.
    Results come back in item order, and the first error in item order is the one
    raised (as serially)."""
    workers = min(MAX_THREADS, os.cpu_count() or 1, len(items))
    if workers < 2 or sum(work) < PARALLEL_MIN_WORK:
        return [fn(x) for x in items]
    big = sorted((i for i in range(len(items)) if work[i] >= INLINE_WORK), key=lambda i: -work[i])
    done: dict = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {i: pool.submit(fn, items[i]) for i in big}
        for i in range(len(items)):
            if i not in futures:
                try:
                    done[i] = (True, fn(items[i]))
                except Exception as e:  # noqa: BLE001 - re-raised below, in item order
                    done[i] = (False, e)
        out = []
        for i in range(len(items)):
            if i in futures:
                out.append(futures[i].result())
            else:
                ok, v = done[i]
                if not ok:
                    raise v
                out.append(v)
        return out


def _huffman_only(r) -> bool:
    """A shared tensor whose streams all carry Huffman payloads: what defer leaves to
    DczFile.dense (single-symbol and empty streams are decoded at once, for nothing)."""
    return bool(r.streams) and all(s.mode == MODE_HUFFMAN for s in r.streams.values())


def _deferred(r) -> bool:
    """Validated with defer=True and its streams not decoded yet."""
    return r.codes is None and r.encoding in ("shared_dense", "shared_sparse")


def decode_work(r, defer: bool = False) -> int:
    """Work in units of one arithmetic-decoded element (~10 ns): a Huffman byte holds two
    or three symbols at ~3.5 ns each, about one unit; a raw byte is a copy, ~1/64. A
    deferred Huffman payload costs nothing here (DczFile.dense decodes it)."""
    if r.encoding in ("ac_shared", "ac_float"):
        return r.numel
    if defer and _huffman_only(r):
        return 1
    return r.length if r.encoding in ("shared_dense", "shared_sparse") else r.length // 64


def _check_entry(e, i: int) -> TensorRecord:
    what = f"tensor #{i}"
    if not isinstance(e, dict):
        raise DczFormatError(f"{what}: entry must be a JSON object")
    name = e.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= L.MAX_NAME_CHARS:
        raise DczFormatError(f"{what}: name missing, not a string, or longer than {L.MAX_NAME_CHARS}")
    what = f"tensor {name!r}"
    dtype = e.get("dtype")
    if not isinstance(dtype, str) or dtype not in L.DTYPES:
        raise DczFormatError(f"{what}: unknown dtype {dtype!r}")
    shape = e.get("shape")
    if (not isinstance(shape, list) or len(shape) > L.MAX_NDIM
            or not all(_is_int(d) and 0 <= d <= L.MAX_NUMEL for d in shape)):
        raise DczFormatError(f"{what}: shape must be a list of at most {L.MAX_NDIM} non-negative integers")
    numel = math.prod(shape)
    if numel > L.MAX_NUMEL:
        raise DczFormatError(f"{what}: shape {shape} has {numel} elements, more than {L.MAX_NUMEL}")
    enc = e.get("encoding")
    if not isinstance(enc, str) or enc not in L.ENCODINGS:
        raise DczFormatError(f"{what}: unknown encoding {enc!r}")
    off = _int_field(e, "offset", what)
    ln = _int_field(e, "length", what)
    _int_field(e, "crc32", what, 0, 0xFFFFFFFF)
    why = e.get("why") if isinstance(e.get("why"), dict) else {}
    if enc == "raw":
        storage = e.get("storage")
        if not isinstance(storage, str) or (storage != dtype and not (dtype == "float32" and storage == "float16")):
            raise DczFormatError(f"{what}: raw storage {storage!r} cannot hold dtype {dtype}")
        need = numel * L.DTYPES[storage][1].itemsize
        if ln != need:
            raise DczFormatError(f"{what}: raw section is {ln} bytes, shape {shape} as {storage} needs {need}")
    else:
        if dtype != "float32":
            raise DczFormatError(f"{what}: {enc} holds float32 only, not {dtype}")
        if len(shape) == 0:
            raise DczFormatError(f"{what}: {enc} needs at least one dimension")
        if enc == "shared_dense":
            k = _int_field(e, "k", what, 1, L.MAX_CODEBOOK)
            if numel == 0:
                raise DczFormatError(f"{what}: shared_dense tensor with no elements")
        else:
            _int_field(e, "k", what, 0, L.MAX_CODEBOOK)
            _int_field(e, "index_bits", what, L.INDEX_BITS.start, L.INDEX_BITS.stop - 1)
            nnz = _int_field(e, "nnz", what, 0, min(numel, (1 << 31) - 1))
            _int_field(e, "entries", what, nnz, numel)
            if matrix_view(tuple(shape))[0] >= (1 << 31) - 1:
                raise DczFormatError(f"{what}: too many rows for int32 row pointers")
        k = e["k"]
        if ln < 4 * k:
            raise DczFormatError(f"{what}: section of {ln} bytes cannot hold a {k}-entry codebook")
    return TensorRecord(name, dtype, tuple(shape), enc, off, ln, e, why)


def _check_tiling(mv: memoryview, sections: list, first: int, size: int) -> None:
    live = []
    for off, ln, _crc, what in sections:
        if ln == 0:
            if off != 0:
                raise DczFormatError(f"{what}: empty section must have offset 0, not {off}")
            continue
        if off + ln > size:
            raise DczTruncatedError(f"{what}: section [{off}, {off + ln}) runs past the end of the {size}-byte file")
        if off % L.ALIGN:
            raise DczFormatError(f"{what}: offset {off} is not a multiple of {L.ALIGN}")
        if off < first:
            raise DczFormatError(f"{what}: section at {off} overlaps the header (ends at {first})")
        live.append((off, ln, what))
    live.sort()
    end, prev = first, "header"
    for off, ln, what in live:
        if off < end:
            raise DczFormatError(f"{what} overlaps {prev}: starts at {off}, {prev} ends at {end}")
        if off != L.align_up(end):
            raise DczFormatError(f"{what}: {off - end} unexplained bytes before it (expected at {L.align_up(end)})")
        if any(mv[end:off]):
            raise DczFormatError(f"non-zero padding bytes between {prev} and {what}")
        end, prev = off + ln, what
    if end != size:
        raise DczFormatError(f"{size - end} bytes of trailing garbage after {prev}")


def _parse_sections(mv: memoryview, r: TensorRecord) -> None:
    what = f"tensor {r.name!r}"
    start, end = r.offset, r.offset + r.length
    if r.encoding == "raw":
        return
    k = r.fields["k"]
    pos = start + 4 * k
    if r.encoding == "shared_dense":
        s = parse_stream(mv, pos, end, what=f"{what} cluster codes", alphabet=k, count=r.numel)
        r.streams["codes"] = s
        pos += s.nbytes
    else:
        n = r.fields["entries"]
        s1 = parse_stream(mv, pos, end, what=f"{what} relative indices",
                          alphabet=1 << r.fields["index_bits"], count=n)
        pos += s1.nbytes
        s2 = parse_stream(mv, pos, end, what=f"{what} cluster codes", alphabet=k + 1, count=n)
        pos += s2.nbytes
        r.streams["index"] = s1
        r.streams["codes"] = s2
    if pos != end:
        raise DczFormatError(f"{what}: {end - pos} unused bytes at the end of its section")


def _decode_content(mv: memoryview, r: TensorRecord, defer: bool = False) -> None:
    what = f"tensor {r.name!r}"
    if r.encoding == "raw":
        storage = L.DTYPES[r.fields["storage"]][1]
        r.raw = np.frombuffer(mv, storage, r.numel, r.offset)
        if r.dtype == "bool" and r.numel and int(r.raw.max()) > 1:
            raise DczFormatError(f"{what}: bool tensor holds bytes other than 0 and 1")
        return
    k = r.fields["k"]
    r.codebook = np.frombuffer(mv, "<f4", k, r.offset).astype(np.float32)
    if defer and _huffman_only(r):
        return  # DczFile.dense decodes the payloads straight into the tensor
    _decode_streams(r)


def _decode_streams(r: TensorRecord) -> None:
    what = f"tensor {r.name!r}"
    if r.encoding == "shared_dense":
        r.codes = decode_stream(r.streams["codes"], f"{what} cluster codes")
        return
    b, k = r.fields["index_bits"], r.fields["k"]
    rel, codes = decode_pair(r.streams["index"], r.streams["codes"], f"{what} relative indices",
                             f"{what} cluster codes")
    try:
        _C.sparse_check(rel, codes, b, k, r.numel, r.fields["nnz"])
    except ValueError as e:
        raise DczFormatError(f"{what}: {e} (shape {list(r.shape)}, {r.fields['nnz']} non-zeros)") from None
    r.rel, r.codes = rel, codes  # checked; expanded on demand (positions or dense)


class DczFile:
    """A validated .dcz file: names, graph, meta, and each tensor dense or compressed."""

    def __init__(self, parsed: ParsedFile, path: str | None = None):
        self._p = parsed
        self._by_name = {r.name: r for r in parsed.tensors}
        self.path = path

    @property
    def names(self) -> list:
        return [r.name for r in self._p.tensors]

    @property
    def graph(self) -> dict | None:
        return self._p.graph

    @property
    def meta(self) -> dict:
        return self._p.meta

    @property
    def parsed(self) -> ParsedFile:
        return self._p

    def record(self, name: str) -> TensorRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path or 'this file'}") from None

    def dense(self, name: str) -> torch.Tensor:
        r = self.record(name)
        if _deferred(r):
            return torch.from_numpy(_fused_dense(r)).reshape(r.shape)
        tdtype = L.DTYPES[r.dtype][0]
        if r.encoding in ("raw", "ac_float"):
            arr = r.raw.copy()
            if r.dtype == "bfloat16":
                return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16).reshape(r.shape)
            t = torch.from_numpy(arr)
            if r.dtype == "bool":
                t = t.to(torch.bool)
            elif r.fields.get("storage", r.dtype) != r.dtype:
                t = t.to(tdtype)
            return t.reshape(r.shape)
        if r.encoding in ("shared_dense", "ac_shared"):
            out = r.codebook.view(np.uint32)[r.codes].view(np.float32)
        else:
            out = _C.sparse_dense(r.rel, r.codes, r.fields["index_bits"], r.codebook, r.numel, r.fields["nnz"])
        return torch.from_numpy(out).reshape(r.shape)

    def compressed(self, name: str):
        r = self.record(name)
        if _deferred(r):
            _decode_streams(r)
        if r.encoding in ("raw", "ac_float"):
            return RawTensor(name, r.shape, np.ascontiguousarray(self.dense(name).numpy()))
        if r.encoding == "ac_shared":
            return _ac_compressed(name, r)
        if r.encoding == "shared_dense":
            return SharedDense(name, r.shape, r.codebook.copy(), r.codes.astype(np.uint8))
        positions, codes = _C.sparse_expand(r.rel, r.codes, r.fields["index_bits"], r.fields["k"], r.numel,
                                            r.fields["nnz"])
        rows, cols = matrix_view(r.shape)
        row = positions // cols if cols else positions
        indptr = np.zeros(rows + 1, np.int32)
        np.cumsum(np.bincount(row, minlength=rows), out=indptr[1:])
        idx_dtype = np.uint16 if cols <= 65536 else np.int32
        indices = (positions - row * cols).astype(idx_dtype)
        return SharedSparse(name, r.shape, r.codebook.copy(), indptr, indices, codes)

    def state_dict(self) -> dict:
        recs = self._p.tensors
        # Work ~ bytes to decode, plus the dense tensor to write for shared ones.
        work = [r.length + (r.numel // 16 if r.encoding.startswith(("shared", "ac_shared")) else 0)
                for r in recs]
        tensors = each_by_work(lambda r: self.dense(r.name), recs, work)
        return dict(zip(self.names, tensors))


def _fused_dense(r: TensorRecord) -> np.ndarray:
    """A deferred shared tensor, decoded from its Huffman streams straight to float32."""
    what = f"tensor {r.name!r}"
    if r.encoding == "shared_dense":
        s = r.streams["codes"]
        try:
            return _C.huffman_decode_map(np.frombuffer(s.payload, np.uint8), s.lengths, s.count, r.codebook)
        except ValueError as e:
            raise DczFormatError(f"{what} cluster codes: {e}") from None
    s1, s2 = r.streams["index"], r.streams["codes"]
    try:
        return _C.huffman_sparse_dense(np.frombuffer(s1.payload, np.uint8), s1.lengths,
                                       np.frombuffer(s2.payload, np.uint8), s2.lengths, s1.count,
                                       r.fields["index_bits"], r.codebook, r.numel, r.fields["nnz"])
    except ValueError as e:
        raise DczFormatError(f"{what} relative indices / cluster codes: {e} (shape {list(r.shape)}, "
                             f"{r.fields['nnz']} non-zeros)") from None


def _ac_compressed(name: str, r: TensorRecord):
    """The runtime's form of an ac_shared tensor: CSR when mostly zero, else dense codes.

    Density decides, not the coder's mode: the coder may code an unpruned tensor in its
    sparse mode when that is a few bytes smaller, and a CSR of a dense matrix would cost
    the runtime its dense-code (lut) path and five times the resident bytes."""
    if not r.fields["sp"]:
        return SharedDense(name, r.shape, r.codebook.copy(), r.codes.astype(np.uint8))
    positions = np.flatnonzero(r.codes)
    if positions.size > SPARSE_FORM_DENSITY * r.codes.size:
        # Code 0 is the zero weight; with no zeros it is dropped, so 256 centroids still
        # fit uint8 codes. With zeros and 256 centroids, dense codes cannot hold them.
        if positions.size == r.codes.size:
            return SharedDense(name, r.shape, r.codebook[1:].copy(), (r.codes - 1).astype(np.uint8))
        if r.codebook.size <= 256:
            return SharedDense(name, r.shape, r.codebook.copy(), r.codes.astype(np.uint8))
    codes = (r.codes[positions] - 1).astype(np.uint8)
    rows, cols = matrix_view(r.shape)
    row = positions // cols if cols else positions
    indptr = np.zeros(rows + 1, np.int32)
    np.cumsum(np.bincount(row, minlength=rows), out=indptr[1:])
    idx_dtype = np.uint16 if cols <= 65536 else np.int32
    indices = (positions - row * cols).astype(idx_dtype)
    return SharedSparse(name, r.shape, r.codebook[1:].copy(), indptr, indices, codes)


def read_bytes(path) -> bytes:
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DeepcompError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DeepcompError(f"{path}: is a directory, not a .dcz file") from None
    except OSError as e:
        raise DeepcompError(f"cannot read {path}: {e.strerror or e}") from None


def open_dcz(path, *, defer: bool = False) -> DczFile:
    """A validated file; ``defer=True`` for callers that want dense tensors (see validate)."""
    return DczFile(validate(read_bytes(path), defer=defer), os.fspath(path))


def decode(path) -> dict:
    return open_dcz(path, defer=True).state_dict()
