"""Huffman-coded symbol streams: the glue between the container and the C++ coder.

A stream is a 14-byte header followed by an optional code-length table and the payload
(docs/FORMAT.md, "Huffman streams"). Code lengths are built by the C++ coder
(package-merge, at most 15 bits) and codes are canonical, so the table is all a decoder
needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepcomp import _C
from deepcomp.codec.layout import (
    MAX_ALPHABET,
    MODE_EMPTY,
    MODE_HUFFMAN,
    MODE_SINGLE,
    STREAM_HEADER,
)
from deepcomp.errors import DczFormatError, DczTruncatedError

MAX_CODE_LEN = _C.HUFFMAN_MAX_CODE_LEN


def histogram(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    return np.bincount(symbols, minlength=alphabet).astype(np.uint64)


def _plan(hist: np.ndarray) -> tuple[int, np.ndarray | None, int]:
    """(mode, code lengths or None, number of table entries) for a histogram."""
    used = np.flatnonzero(hist)
    if used.size == 0:
        return MODE_EMPTY, None, 0
    if used.size == 1:
        return MODE_SINGLE, None, 0
    lengths = _C.huffman_code_lengths(np.ascontiguousarray(hist, dtype=np.uint64), MAX_CODE_LEN)
    ntab = int(used[-1]) + 1
    return MODE_HUFFMAN, lengths, ntab


def stream_cost(hist: np.ndarray) -> tuple[int, int]:
    """(bytes the stream will take, exact payload bits) without encoding it."""
    mode, lengths, ntab = _plan(hist)
    if mode != MODE_HUFFMAN:
        return STREAM_HEADER.size, 0
    bits = int(np.dot(hist.astype(np.float64), lengths.astype(np.float64)))
    return STREAM_HEADER.size + (ntab + 1) // 2 + (bits + 7) // 8, bits


def encode_stream(symbols: np.ndarray, alphabet: int) -> bytes:
    if not 1 <= alphabet <= MAX_ALPHABET:
        raise ValueError(f"alphabet size {alphabet} outside 1..{MAX_ALPHABET}")
    symbols = np.ascontiguousarray(symbols, dtype=np.uint16)
    hist = histogram(symbols, alphabet)
    if hist.size > alphabet:
        raise ValueError("symbol outside the alphabet")
    mode, lengths, ntab = _plan(hist)
    count = int(symbols.size)
    if mode == MODE_EMPTY:
        return STREAM_HEADER.pack(0, alphabet, mode, 0, 0, 0)
    if mode == MODE_SINGLE:
        return STREAM_HEADER.pack(count, alphabet, mode, 0, 0, int(symbols[0]))
    payload, _bits = _C.huffman_encode(symbols, lengths)
    table = lengths[:ntab]
    if ntab % 2:
        table = np.append(table, np.uint8(0))
    nibbles = (table[0::2] << 4) | table[1::2]
    head = STREAM_HEADER.pack(count, alphabet, mode, 0, len(payload), ntab)
    return head + nibbles.astype(np.uint8).tobytes() + payload


@dataclass
class StreamInfo:
    """A stream's header, checked against its container but not yet decoded."""

    count: int
    alphabet: int
    mode: int
    aux: int  # the symbol of a single-symbol stream; table entries of a Huffman one
    lengths: np.ndarray | None  # full alphabet, for MODE_HUFFMAN
    payload: memoryview
    nbytes: int  # header + table + payload


def parse_stream(buf: memoryview, start: int, end: int, *, what: str, alphabet: int,
                 count: int) -> StreamInfo:
    """Reads and checks one stream header at buf[start:end]; decodes nothing."""
    if end - start < STREAM_HEADER.size:
        raise DczTruncatedError(f"{what}: stream header needs {STREAM_HEADER.size} bytes, "
                                f"{end - start} left in the section")
    n, a, mode, reserved, plen, aux = STREAM_HEADER.unpack_from(buf, start)
    pos = start + STREAM_HEADER.size
    if a != alphabet:
        raise DczFormatError(f"{what}: stream alphabet {a}, expected {alphabet}")
    if n != count:
        raise DczFormatError(f"{what}: stream holds {n} symbols, the tensor table says {count}")
    if reserved != 0:
        raise DczFormatError(f"{what}: reserved stream byte is {reserved}, must be 0")
    lengths = None
    if mode == MODE_EMPTY:
        if n != 0 or plen != 0 or aux != 0:
            raise DczFormatError(f"{what}: empty stream with non-zero count, payload or symbol")
    elif mode == MODE_SINGLE:
        if n == 0 or plen != 0:
            raise DczFormatError(f"{what}: single-symbol stream needs count >= 1 and no payload")
        if aux >= a:
            raise DczFormatError(f"{what}: single-stream symbol {aux} outside alphabet {a}")
    elif mode == MODE_HUFFMAN:
        if not 1 <= aux <= a:
            raise DczFormatError(f"{what}: code table has {aux} entries for alphabet {a}")
        tbytes = (aux + 1) // 2
        if end - pos < tbytes:
            raise DczTruncatedError(f"{what}: code table runs past the end of its section")
        raw = np.frombuffer(buf, np.uint8, tbytes, pos)
        pos += tbytes
        nib = np.empty(tbytes * 2, np.uint8)
        nib[0::2] = raw >> 4
        nib[1::2] = raw & 15
        if aux % 2 and nib[-1] != 0:
            raise DczFormatError(f"{what}: unused half of the last code-table byte is not zero")
        lengths = np.zeros(a, np.uint8)
        lengths[:aux] = nib[:aux]
        _check_lengths(lengths, what)
        if n == 0 or plen == 0:
            raise DczFormatError(f"{what}: Huffman stream with no symbols or no payload")
        if n > plen * 8:
            raise DczFormatError(f"{what}: {n} symbols cannot fit in {plen} payload bytes")
        if plen > (n * MAX_CODE_LEN + 7) // 8:
            raise DczFormatError(f"{what}: payload of {plen} bytes is longer than {n} codes can be")
    else:
        raise DczFormatError(f"{what}: unknown stream mode {mode}")
    if end - pos < plen:
        raise DczTruncatedError(f"{what}: stream payload of {plen} bytes runs past its section")
    payload = buf[pos:pos + plen]
    pos += plen
    return StreamInfo(n, a, mode, aux, lengths, payload, pos - start)


def _check_lengths(lengths: np.ndarray, what: str) -> None:
    if lengths.max(initial=0) > MAX_CODE_LEN:
        raise DczFormatError(f"{what}: code length above {MAX_CODE_LEN}")
    used = lengths[lengths > 0].astype(np.int64)
    kraft = int(np.sum(np.left_shift(1, MAX_CODE_LEN - used)))
    if used.size < 2 or kraft != 1 << MAX_CODE_LEN:
        raise DczFormatError(f"{what}: code lengths do not form a complete prefix code "
                             f"(Kraft sum {kraft}/{1 << MAX_CODE_LEN}, {used.size} codes)")


def decode_stream(info: StreamInfo, what: str) -> np.ndarray:
    """The stream's symbols as uint16; the C++ decoder re-checks everything it is given."""
    if info.mode == MODE_EMPTY:
        return np.zeros(0, np.uint16)
    if info.mode == MODE_SINGLE:
        return np.full(info.count, info.aux, np.uint16)
    try:
        return _C.huffman_decode(np.frombuffer(info.payload, np.uint8), info.lengths, info.count)
    except ValueError as e:
        raise DczFormatError(f"{what}: {e}") from None


def decode_pair(a: StreamInfo, b: StreamInfo, what_a: str, what_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Two streams of equal count; Huffman pairs are decoded in one interleaved C++ pass."""
    if a.mode == MODE_HUFFMAN and b.mode == MODE_HUFFMAN and a.count == b.count:
        try:
            return _C.huffman_decode_pair(np.frombuffer(a.payload, np.uint8), a.lengths,
                                          np.frombuffer(b.payload, np.uint8), b.lengths, a.count)
        except ValueError as e:
            raise DczFormatError(f"{what_a} / {what_b}: {e}") from None
    return decode_stream(a, what_a), decode_stream(b, what_b)
