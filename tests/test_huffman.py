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


def _random_lengths(rng):
    """Code lengths of a random table of 2..299 symbols, at least two of them used."""
    freqs = rng.integers(0, 50, int(rng.integers(2, 300))).astype(np.uint64)
    freqs[:2] += 1
    return _C.huffman_code_lengths(freqs)


@pytest.mark.parametrize("seed", range(30))
def test_decoder_survives_random_payloads(seed):
    rng = np.random.default_rng(100 + seed)
    lengths = _random_lengths(rng)
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


# ---- long streams: the multi-symbol table and the fused sparse decode ---------------

MULTI_MIN = 8192  # huffman::Decoder::kMultiMinCount: streams this long use the 4-symbol table


def _symbols(kind: str, n: int, rng) -> tuple[np.ndarray, int]:
    if kind == "skewed":  # geometric: short codes and rare ones up to the 15-bit limit
        return np.minimum(rng.geometric(0.45, n) - 1, 40).astype(np.uint16), 41
    if kind == "uniform257":  # the codes stream of a 256-entry codebook (8-9 bit codes)
        return rng.integers(0, 257, n).astype(np.uint16), 257
    if kind == "two":  # 1-bit codes: four symbols per lookup
        return rng.integers(0, 2, n).astype(np.uint16), 2
    if kind == "rare":  # one dominant symbol and one 15-bit one, met now and then
        a = np.zeros(n, np.uint16)
        a[rng.random(n) < 0.002] = 3
        a[rng.random(n) < 0.3] = 1
        a[: 4] = [0, 1, 2, 3]
        return a, 4
    if kind == "wide":  # the largest alphabet: symbols need all 12 bits of a slot
        return rng.integers(4000, 4096, n).astype(np.uint16), 4096
    raise ValueError(kind)


def _coded(sym: np.ndarray, alphabet: int):
    freqs = np.bincount(sym, minlength=alphabet).astype(np.uint64)
    lengths = _C.huffman_code_lengths(freqs)
    payload, _ = _C.huffman_encode(sym, lengths)
    return np.frombuffer(payload, np.uint8), lengths


@pytest.mark.parametrize("kind", ["skewed", "uniform257", "two", "rare", "wide"])
@pytest.mark.parametrize("n", [MULTI_MIN - 1, MULTI_MIN, MULTI_MIN + 3, 40_001])
def test_long_streams_round_trip_on_the_multi_symbol_path(kind, n):
    rng = np.random.default_rng(n + len(kind))
    sym, alphabet = _symbols(kind, n, rng)
    payload, lengths = _coded(sym, alphabet)
    assert np.array_equal(_C.huffman_decode(payload, lengths, n), sym)
    other = rng.integers(0, 257, n).astype(np.uint16)
    op, ol = _coded(other, 257)
    a, b = _C.huffman_decode_pair(payload, lengths, op, ol, n)
    assert np.array_equal(a, sym) and np.array_equal(b, other)
    table = rng.standard_normal(alphabet).astype(np.float32)
    assert np.array_equal(_C.huffman_decode_map(payload, lengths, n, table).view(np.uint32),
                          table.view(np.uint32)[sym])
    # the payload must be used exactly: one byte short, one byte over (a count one off
    # can be legal: the all-zero code of the commonest symbol may sit in the padding)
    for bad, count in ((payload[:-1], n), (np.append(payload, np.uint8(0)), n)):
        with pytest.raises(ValueError):
            _C.huffman_decode(bad, lengths, count)
        with pytest.raises(ValueError):
            _C.huffman_decode_map(bad, lengths, count, table)


def test_long_stream_matches_the_python_reference():
    rng = np.random.default_rng(3)
    sym, alphabet = _symbols("skewed", 12_000, rng)
    payload, lengths = _coded(sym, alphabet)
    assert bytes(payload) == ref_encode(sym.tolist(), lengths.tolist())
    assert _C.huffman_decode(payload, lengths, sym.size).tolist() == ref_decode(bytes(payload), lengths.tolist(),
                                                                               sym.size)


@pytest.mark.parametrize("seed", range(6))
def test_random_long_payloads_decode_as_the_reference_reads_them(seed):
    # random bytes under a valid table, read symbol by symbol by the reference: the C++
    # decoder (multi-symbol path) must return the same symbols, and accept the payload
    # exactly when what is left after the last whole code is under a byte of zero bits
    rng = np.random.default_rng(900 + seed)
    lengths = _random_lengths(rng)
    payload = rng.integers(0, 256, int(rng.integers(14_000, 16_000)), dtype=np.uint8)
    if seed % 2:
        payload[-2:] = 0  # ends in zero bits: often a legal end
    table = {format(c, f"0{l}b"): s for s, (c, l) in ref_canonical_codes(lengths.tolist()).items()}
    bits = "".join(format(b, "08b") for b in payload.tolist())
    syms, cur = [], ""
    for bit in bits:
        cur += bit
        if cur in table:
            syms.append(table[cur])
            cur = ""
    assert len(syms) >= MULTI_MIN
    legal = len(cur) < 8 and "1" not in cur
    if not legal:
        with pytest.raises(ValueError):
            _C.huffman_decode(payload, lengths, len(syms))
    else:
        assert _C.huffman_decode(payload, lengths, len(syms)).tolist() == syms
        a, b = _C.huffman_decode_pair(payload, lengths, payload, lengths, len(syms))
        assert a.tolist() == syms and b.tolist() == syms
    # a count well short leaves whole bytes unread
    with pytest.raises(ValueError, match="after the last symbol"):
        _C.huffman_decode(payload, lengths, len(syms) - int(rng.integers(100, 2000)))


def _sparse_streams(rng, n_entries: int, b: int, k: int, filler_share: float):
    rel = rng.integers(0, 1 << b, n_entries).astype(np.uint16)
    codes = rng.integers(0, k, n_entries).astype(np.uint16)
    filler = rng.random(n_entries) < filler_share
    filler[-1] = False
    codes[filler] = k
    rel[filler] = (1 << b) - 1
    rel[:2], codes[:2] = [0, 1], [0, 1 % k]  # at least two symbols per stream
    nnz = int((~filler).sum())
    numel = int((rel.astype(np.int64) + 1).sum()) + int(rng.integers(0, 7))
    rp, rl = _coded(rel, 1 << b)
    cp, cl = _coded(codes, k + 1)
    return rel, codes, rp, rl, cp, cl, nnz, numel


@pytest.mark.parametrize("n_entries,b,k", [(5, 2, 2), (511, 3, 5), (513, 5, 24), (MULTI_MIN + 1, 5, 31),
                                            (30_000, 8, 256), (20_000, 2, 1)])
def test_fused_sparse_decode_equals_the_two_pass_decode(n_entries, b, k):
    rng = np.random.default_rng(n_entries)
    rel, codes, rp, rl, cp, cl, nnz, numel = _sparse_streams(rng, n_entries, b, k, 0.1)
    book = rng.standard_normal(k).astype(np.float32)
    two_pass = _C.sparse_dense(rel, codes, b, book, numel, nnz)
    fused = _C.huffman_sparse_dense(rp, rl, cp, cl, n_entries, b, book, numel, nnz)
    assert np.array_equal(fused.view(np.uint32), two_pass.view(np.uint32))
    # every check of the two passes holds in the fused one
    cases = {"past the end": dict(numel=numel - 7 - 1 if numel - 7 - 1 > 0 else 0),
             "non-zeros": dict(nnz=nnz - 1),
             "symbol count": dict(cp=cp[:-1]),
             "after the last symbol": dict(rp=np.append(rp, np.uint8(0)))}
    for match, change in cases.items():
        args = dict(rp=rp, cp=cp, numel=numel, nnz=nnz, **{})
        args.update(change)
        with pytest.raises(ValueError, match=match):
            _C.huffman_sparse_dense(args["rp"], rl, args["cp"], cl, n_entries, b, book, args["numel"], args["nnz"])
    with pytest.raises(ValueError, match="code tables"):
        _C.huffman_sparse_dense(rp, rl, cp, cl[:-1], n_entries, b, book, numel, nnz)


@pytest.mark.parametrize("seed", range(20))
def test_fused_sparse_decode_agrees_on_corrupted_streams(seed):
    # flipped bits in either payload: the fused decoder rejects exactly what the two
    # passes (decode_pair, then the walk) reject, and writes the same tensor otherwise
    rng = np.random.default_rng(4000 + seed)
    n = int(rng.choice([300, MULTI_MIN + 100]))
    rel, codes, rp, rl, cp, cl, nnz, numel = _sparse_streams(rng, n, 3, 7, 0.05)
    book = rng.standard_normal(7).astype(np.float32)
    rp, cp = rp.copy(), cp.copy()
    for _ in range(int(rng.integers(1, 4))):
        target = rp if rng.random() < 0.5 else cp
        target[int(rng.integers(0, target.size))] ^= np.uint8(1 << int(rng.integers(0, 8)))
    try:
        r2, c2 = _C.huffman_decode_pair(rp, rl, cp, cl, n)
        expect = _C.sparse_dense(r2, c2, 3, book, numel, nnz)
    except ValueError:
        expect = None
    try:
        got = _C.huffman_sparse_dense(rp, rl, cp, cl, n, 3, book, numel, nnz)
    except ValueError:
        got = None
    assert (got is None) == (expect is None)
    if got is not None:
        assert np.array_equal(got.view(np.uint32), expect.view(np.uint32))
