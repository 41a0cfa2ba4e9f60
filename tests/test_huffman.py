"""The C++ canonical Huffman coder against a small pure-Python reference."""
import heapq

import numpy as np
import pytest

from deepcomp import _C
from deepcomp.codec import streams
from deepcomp.codec.layout import MODE_EMPTY, MODE_HUFFMAN, MODE_SINGLE, STREAM_HEADER

MAXLEN = _C.HUFFMAN_MAX_CODE_LEN


# ---- reference ---------------------------------------------------------------------

def ref_huffman_cost(freqs):
    """Total bits of an unconstrained optimal prefix code (classic heap merge)."""
    heap = [f for f in freqs if f > 0]
    if len(heap) < 2:
        return 0
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def ref_canonical_codes(lengths):
    order = sorted((l, s) for s, l in enumerate(lengths) if l)
    codes, code, prev = {}, 0, order[0][0]
    for i, (l, s) in enumerate(order):
        if i:
            code = (code + 1) << (l - prev)
        codes[s] = (code, l)
        prev = l
    return codes


def ref_encode(symbols, lengths):
    codes = ref_canonical_codes(lengths)
    bits = "".join(format(codes[s][0], f"0{codes[s][1]}b") for s in symbols)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def ref_decode(payload, lengths, count):
    table = {format(c, f"0{l}b"): s for s, (c, l) in ref_canonical_codes(lengths).items()}
    bits = "".join(format(b, "08b") for b in payload)
    out, cur = [], ""
    for bit in bits:
        if len(out) == count:
            break
        cur += bit
        if cur in table:
            out.append(table[cur])
            cur = ""
    assert len(out) == count
    return out


def kraft(lengths):
    return sum(2.0 ** -int(l) for l in lengths if l)


# ---- tests -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_code_lengths_optimal_and_encoding_matches_reference(seed):
    rng = np.random.default_rng(seed)
    alphabet = int(rng.integers(2, 258))
    probs = rng.dirichlet(np.full(alphabet, 0.3))
    symbols = rng.choice(alphabet, size=int(rng.integers(2, 3000)), p=probs).astype(np.uint16)
    freqs = np.bincount(symbols, minlength=alphabet).astype(np.uint64)
    if np.count_nonzero(freqs) < 2:
        symbols[0] = (symbols[0] + 1) % alphabet
        freqs = np.bincount(symbols, minlength=alphabet).astype(np.uint64)
    lengths = _C.huffman_code_lengths(freqs)
    assert lengths.max() <= MAXLEN
    assert kraft(lengths) == 1.0
    assert all((lengths[s] > 0) == (freqs[s] > 0) for s in range(alphabet))
    cost = int(np.dot(freqs.astype(np.int64), lengths.astype(np.int64)))
    # Small streams never need more than 15 bits, so the limited code is optimal.
    assert cost == ref_huffman_cost(freqs.tolist())
    payload, nbits = _C.huffman_encode(symbols, lengths)
    assert nbits == cost
    assert payload == ref_encode(symbols.tolist(), lengths.tolist())
    assert _C.huffman_decode(np.frombuffer(payload, np.uint8), lengths, symbols.size).tolist() == symbols.tolist()
    assert ref_decode(payload, lengths.tolist(), symbols.size) == symbols.tolist()


def test_length_limit_on_fibonacci_frequencies():
    # Fibonacci weights give an unconstrained code as deep as the alphabet is long.
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    freqs = np.array(fib, np.uint64)
    lengths = _C.huffman_code_lengths(freqs)
    assert lengths.max() == MAXLEN
    assert kraft(lengths) == 1.0
    limited = int(np.dot(freqs.astype(np.float64), lengths))
    assert limited >= ref_huffman_cost(fib)
    # Optimal under the limit: no brute force here, but tighter limits cost strictly more.
    tighter = _C.huffman_code_lengths(freqs, 8)
    assert tighter.max() == 8 and kraft(tighter) == 1.0
    assert int(np.dot(freqs.astype(np.float64), tighter)) > limited
    symbols = np.repeat(np.arange(40, dtype=np.uint16), [min(f, 50) for f in fib])
    payload, _ = _C.huffman_encode(symbols, lengths)
    assert np.array_equal(_C.huffman_decode(np.frombuffer(payload, np.uint8), lengths, symbols.size), symbols)
    assert payload == ref_encode(symbols.tolist(), lengths.tolist())


@pytest.mark.parametrize("kind", ["skewed", "uniform", "single", "empty", "two"])
def test_stream_round_trip(kind):
    rng = np.random.default_rng(1)
    if kind == "skewed":
        sym = np.minimum(rng.geometric(0.4, 20000) - 1, 255)
        alphabet = 256
    elif kind == "uniform":
        sym = rng.integers(0, 256, 20000)
        alphabet = 256
    elif kind == "single":
        sym = np.full(12345, 7)
        alphabet = 9
    elif kind == "two":
        sym = rng.integers(0, 2, 999)
        alphabet = 2
    else:
        sym = np.zeros(0, np.int64)
        alphabet = 4
    data = streams.encode_stream(sym, alphabet)
    mode = STREAM_HEADER.unpack_from(data, 0)[2]
    assert mode == {"single": MODE_SINGLE, "empty": MODE_EMPTY}.get(kind, MODE_HUFFMAN)
    info = streams.parse_stream(memoryview(data), 0, len(data), what="t", alphabet=alphabet, count=sym.size)
    assert info.nbytes == len(data)
    out = streams.decode_stream(info, "t")
    assert out.dtype == np.uint16 and out.tolist() == sym.tolist()
    hist = streams.histogram(sym.astype(np.uint16), alphabet)
    assert streams.stream_cost(hist)[0] == len(data)
    if kind == "uniform":
        assert len(data) <= STREAM_HEADER.size + 128 + 20000 + 1
    if kind == "skewed":
        entropy = -sum(c / sym.size * np.log2(c / sym.size) for c in np.bincount(sym) if c)
        assert len(data) * 8 < (entropy + 0.1) * sym.size + 2000


def test_alphabet_257_for_filler_code():
    rng = np.random.default_rng(2)
    sym = rng.integers(0, 257, 5000)
    data = streams.encode_stream(sym, 257)
    info = streams.parse_stream(memoryview(data), 0, len(data), what="t", alphabet=257, count=5000)
    assert streams.decode_stream(info, "t").tolist() == sym.tolist()


def test_decoder_rejects_bad_input():
    lengths = np.array([1, 2, 2], np.uint8)
    # codes 0 -> 0, 1 -> 10, 2 -> 11: the stream is 0 10 11 10 10 + 7 padding bits
    payload, nbits = _C.huffman_encode(np.array([0, 1, 2, 1, 1], np.uint16), lengths)
    assert nbits == 9 and len(payload) == 2
    buf = np.frombuffer(payload, np.uint8)
    assert _C.huffman_decode(buf, lengths, 5).tolist() == [0, 1, 2, 1, 1]
    with pytest.raises(ValueError, match="before the stated symbol count"):
        _C.huffman_decode(buf, lengths, 13)
    with pytest.raises(ValueError, match="padding"):
        _C.huffman_decode(np.append(buf, np.uint8(0)), lengths, 5)
    with pytest.raises(ValueError, match="padding"):
        _C.huffman_decode(buf, lengths, 4)
    with pytest.raises(ValueError, match="complete prefix code"):
        _C.huffman_decode(buf, np.array([1, 2, 3], np.uint8), 5)
    with pytest.raises(ValueError, match="complete prefix code"):
        _C.huffman_decode(buf, np.array([1, 0, 0], np.uint8), 5)
    with pytest.raises(ValueError, match="maximum"):
        _C.huffman_decode(buf, np.array([1, 16, 16], np.uint8), 5)
    with pytest.raises(ValueError, match="larger than the bitstream"):
        _C.huffman_decode(buf, lengths, 10**12)
    with pytest.raises(ValueError, match="outside the code table"):
        _C.huffman_encode(np.array([3], np.uint16), lengths)


@pytest.mark.parametrize("seed", range(30))
def test_decoder_survives_random_payloads(seed):
    rng = np.random.default_rng(100 + seed)
    freqs = rng.integers(0, 50, int(rng.integers(2, 300))).astype(np.uint64)
    freqs[:2] += 1
    lengths = _C.huffman_code_lengths(freqs)
    payload = rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)
    count = int(rng.integers(0, payload.size * 8 + 2))
    try:
        out = _C.huffman_decode(payload, lengths, count)
    except ValueError:
        return
    assert out.size == count and int(out.max(initial=0)) < lengths.size


@pytest.mark.parametrize("seed", range(8))
def test_pair_decoder_matches_single_decoder(seed):
    rng = np.random.default_rng(500 + seed)
    n = int(rng.integers(1, 5000))
    a = np.minimum(rng.geometric(0.3, n) - 1, 15).astype(np.uint16)
    b = rng.integers(0, 257, n).astype(np.uint16)
    a[:2], b[:2] = [0, 1], [0, 1]
    la = _C.huffman_code_lengths(np.bincount(a, minlength=16).astype(np.uint64))
    lb = _C.huffman_code_lengths(np.bincount(b, minlength=257).astype(np.uint64))
    pa, _ = _C.huffman_encode(a, la)
    pb, _ = _C.huffman_encode(b, lb)
    ba, bb = np.frombuffer(pa, np.uint8), np.frombuffer(pb, np.uint8)
    oa, ob = _C.huffman_decode_pair(ba, la, bb, lb, n)
    assert np.array_equal(oa, a) and np.array_equal(ob, b)
    with pytest.raises(ValueError):
        _C.huffman_decode_pair(ba, la, bb[:-1], lb, n)
    with pytest.raises(ValueError):
        _C.huffman_decode_pair(np.append(ba, np.uint8(1)), la, bb, lb, n)


def ref_walk(rel, codes, b, k, numel):
    pos, out = -1, []
    for r, c in zip(rel, codes):
        pos += r + 1
        if c != k:
            out.append((pos, c))
    return out


def test_sparse_walks_agree_with_reference():
    rng = np.random.default_rng(7)
    for _ in range(30):
        b = int(rng.integers(2, 9))
        k = int(rng.integers(1, 257))
        n = int(rng.integers(1, 300))
        rel = rng.integers(0, 1 << b, n).astype(np.uint16)
        codes = rng.integers(0, k, n).astype(np.uint16)
        filler = rng.random(n) < 0.2
        filler[-1] = False
        codes[filler] = k
        rel[filler] = (1 << b) - 1
        ref = ref_walk(rel.tolist(), codes.tolist(), b, k, None)
        numel = ref[-1][0] + 1 + int(rng.integers(0, 5))
        book = rng.standard_normal(k).astype(np.float32)
        _C.sparse_check(rel, codes, b, k, numel, len(ref))
        pos, c = _C.sparse_expand(rel, codes, b, k, numel, len(ref))
        assert list(zip(pos.tolist(), c.tolist())) == ref
        dense = _C.sparse_dense(rel, codes, b, book, numel, len(ref))
        expect = np.zeros(numel, np.float32)
        expect[pos] = book[c]
        assert np.array_equal(dense, expect)
        with pytest.raises(ValueError, match="past the end"):
            _C.sparse_check(rel, codes, b, k, ref[-1][0], len(ref))
        with pytest.raises(ValueError, match="non-zeros"):
            _C.sparse_dense(rel, codes, b, book, numel, len(ref) - 1)
