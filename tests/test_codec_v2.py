"""Version 2 of .dcz: the arithmetic coder, the compact container, its validation."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch

from deepcomp import _C
from deepcomp.codec import arith
from deepcomp.codec import layout as L
from deepcomp.codec.reader import decode, open_dcz, validate
from deepcomp.codec.tensors import SharedDense, SharedSparse
from deepcomp.codec.v2 import _deflate, assemble_v2, choose_encoding_v2, inflate_header
from deepcomp.codec.writer import write_state_dict
from deepcomp.errors import DczChecksumError, DczFormatError, DczTruncatedError
from tests.image_weights import smooth_images
from tests.lenet5_header import lenet5_graph_and_meta


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def shared(shape, density, k, seed=0, signed=True):
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(k, generator=g) if signed else torch.rand(k, generator=g) + 0.1
    w = book[torch.randint(0, k, shape, generator=g)]
    return torch.where(torch.rand(shape, generator=g) < density, w, torch.zeros(()))


# ---- the C++ coder on its own -----------------------------------------------------------

MODELS = [dict(sp=sp, cm=cm, vc=vc, sc=sc, sh=sh) for sp in (0, 1) for cm in (0, 1) for vc in (0, 1, 2)
          for sc in ((0, 1) if sp else (0,)) for sh in (4, 7, 10)]


def _roundtrip_weights(w: torch.Tensor, p: dict):
    bits = w.contiguous().view(torch.int32).numpy().view(np.uint32).reshape(-1)
    idx, book, nn, npn = arith.weight_table(bits, bool(p["sp"]))
    rows, cols = w.shape[0], w.numel() // w.shape[0]
    payload = arith.encode_shared(idx, book, rows, cols, nn, npn, p)
    i2, b2 = arith.decode_shared(payload, rows, cols, {**p, "k": nn + npn, "neg": nn}, "t")
    assert np.array_equal(i2, idx) and np.array_equal(b2, book)
    table = book if not p["sp"] else np.concatenate([[0], book]).astype(np.uint32)
    assert np.array_equal(table[i2], bits)
    return payload


@pytest.mark.parametrize("p", MODELS, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_weights_round_trip_every_model(p):
    for seed, (shape, density, k) in enumerate([((17, 23), 0.1, 9), ((1, 50), 0.5, 3), ((40, 1), 0.3, 200),
                                                 ((9, 4, 3, 3), 1.0, 31), ((30, 30), 0.0, 1)]):
        w = shared(shape, density, k, seed)
        if not p["sp"] and np.unique(w.view(torch.int32).numpy()).size > 256:
            continue
        _roundtrip_weights(w, p)


@pytest.mark.parametrize("case", ["one_symbol", "uniform", "one_rare", "positive_only", "negative_only",
                                  "specials"])
def test_weights_adversarial_distributions(case):
    rng = np.random.default_rng(3)
    if case == "one_symbol":
        w = torch.full((64, 64), 0.5)
    elif case == "uniform":
        w = torch.from_numpy(rng.integers(-128, 128, (64, 64)).astype(np.float32))
    elif case == "one_rare":
        w = torch.zeros(64, 64)
        w[63, 63] = -3.0
    elif case == "positive_only":
        w = torch.from_numpy(rng.integers(0, 5, (30, 30)).astype(np.float32))
    elif case == "negative_only":
        w = -torch.from_numpy(rng.integers(0, 5, (30, 30)).astype(np.float32))
    else:
        w = torch.tensor([[float("nan"), -0.0, float("inf")], [-float("inf"), 0.0, 1e-45]])
    for p in MODELS[::5]:
        if not p["sp"] and np.unique(w.view(torch.int32).numpy()).size > 256:
            continue
        _roundtrip_weights(w, p)
    if case == "one_symbol":
        # an adaptive model pays almost nothing per element for a certain symbol
        assert len(_roundtrip_weights(w, dict(sp=0, cm=0, vc=0, sc=0, sh=10))) < 64 * 64 / 64


def test_floats_round_trip_any_bit_pattern():
    rng = np.random.default_rng(0)
    for bits in (rng.integers(0, 2 ** 32, 1000, dtype=np.uint64).astype(np.uint32),
                 np.zeros(5, np.uint32), np.array([0x7FC00001, 0xFF800000, 0x80000000], np.uint32),
                 np.zeros(0, np.uint32)):
        for sh in (4, 7, 10):
            payload = _C.ac_encode_floats(bits, sh)
            assert np.array_equal(_C.ac_decode_floats(np.frombuffer(payload, np.uint8), bits.size, sh), bits)


def test_decoder_rejects_truncated_spare_and_garbage_payloads():
    w = shared((50, 60), 0.2, 16, seed=4)
    p = dict(sp=1, cm=0, vc=1, sc=1, sh=7)
    payload = _roundtrip_weights(w, p)
    bits = w.view(torch.int32).numpy().view(np.uint32).reshape(-1)
    _, _, nn, npn = arith.weight_table(bits, True)
    q = {**p, "k": nn + npn, "neg": nn}
    with pytest.raises(DczFormatError, match="truncated"):
        arith.decode_shared(payload[:len(payload) // 2], 50, 60, q, "t")
    with pytest.raises(DczFormatError, match="spare bytes"):
        arith.decode_shared(payload + b"\0", 50, 60, q, "t")
    with pytest.raises(DczFormatError):
        arith.decode_shared(b"\xff" * 4, 50, 60, q, "t")
    with pytest.raises(DczFormatError, match="truncated"):
        arith.decode_floats(b"", 10, 7, "t")
    rng = np.random.default_rng(1)
    for _ in range(200):  # garbage never crashes: it decodes to something or is rejected
        junk = rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
        try:
            arith.decode_shared(junk, 50, 60, q, "t")
        except DczFormatError:
            pass


def test_bad_model_parameters_are_value_errors():
    idx = np.zeros(4, np.uint16)
    with pytest.raises(ValueError, match="parameters"):
        _C.ac_encode_weights(idx, np.zeros(0, np.uint32), 2, 2, 0, 0, True, False, 3, 0, 7)
    with pytest.raises(ValueError, match="parameters"):
        _C.ac_encode_weights(idx, np.zeros(0, np.uint32), 2, 2, 0, 0, True, False, 0, 0, 11)
    with pytest.raises(ValueError, match="parameters"):  # a codebook group must be strictly increasing
        _C.ac_encode_weights(np.ones(4, np.uint16), np.array([5, 5], np.uint32), 2, 2, 0, 2, True, False, 0, 0, 7)
    with pytest.raises(ValueError, match="outside the codebook"):
        _C.ac_encode_weights(np.full(4, 5, np.uint16), np.zeros(2, np.uint32), 2, 2, 1, 1, True, False, 0, 0, 7)


# ---- the container ------------------------------------------------------------------------

def test_v2_round_trip_and_runtime_forms(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {"fc1.weight": shared((300, 200), 0.08, 32, 1), "fc1.bias": torch.randn(300, generator=g),
          "dense.weight": shared((64, 64), 1.0, 200, 2), "conv.weight": shared((16, 8, 3, 3), 0.3, 100, 3),
          "steps": torch.tensor(5), "mask": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
          "half": torch.randn(4, generator=g).half(), "scalar": torch.tensor(1.5)}
    p = tmp_path / "m.dcz"
    s = write_state_dict(sd, p, graph={"format": "x"}, meta={"who": "test"})
    assert s["version"] == 2 and s["file_bytes"] == p.stat().st_size
    f = open_dcz(p)
    assert f.graph == {"format": "x"} and f.meta == {"who": "test"}
    out = f.state_dict()
    for k in sd:
        assert same_bits(out[k], sd[k]), k
    enc = {r.name: r.encoding for r in f.parsed.tensors}
    assert enc["fc1.weight"] in ("ac_shared", "shared_sparse") and enc["fc1.bias"] == "ac_float"
    assert "ac_shared" in enc.values()
    for k in ("fc1.weight", "dense.weight", "conv.weight"):
        c = f.compressed(k)
        if isinstance(c, SharedSparse):
            rows, cols = c.shape[0], int(np.prod(c.shape[1:]))
            m = np.zeros((rows, cols), np.float32)
            for r in range(rows):
                a, b = c.indptr[r], c.indptr[r + 1]
                m[r, c.indices[a:b]] = c.codebook[c.codes[a:b]]
            assert np.array_equal(m.reshape(-1).view(np.uint32), out[k].numpy().reshape(-1).view(np.uint32))
        else:
            assert isinstance(c, SharedDense) and c.codes.dtype == np.uint8
            assert np.array_equal(c.codebook[c.codes].view(np.uint32), out[k].numpy().reshape(-1).view(np.uint32))
    # the writer never does worse than Huffman, and v1 stays writable and readable
    v1 = write_state_dict(sd, tmp_path / "v1.dcz", version=1, graph={"format": "x"}, meta={"who": "test"})
    assert s["file_bytes"] < v1["file_bytes"]
    for k in sd:
        assert s["tensors"][k]["bytes"] <= v1["tensors"][k]["bytes"]
        assert same_bits(decode(tmp_path / "v1.dcz")[k], sd[k])


def test_choice_is_exact_price():
    w = shared((100, 100), 0.1, 16, 5)
    enc = choose_encoding_v2("w", w)
    assert enc.why[enc.fields["encoding"] if enc.fields["encoding"].startswith("ac") else "huffman"] == len(enc.payload)
    assert len(enc.payload) == min(v for v in enc.why.values())


def _image(**kw):
    sd = {"w": shared((30, 20), 0.2, 8, 1), "b": torch.randn(20, generator=torch.Generator().manual_seed(1)),
          "d": shared((10, 10), 1.0, 5, 2), "h": torch.randint(0, 3, (6,)).float()}
    encs = [choose_encoding_v2(k, v) for k, v in sd.items()]
    return assemble_v2(encs, kw.get("graph"), kw.get("meta"))


def _header(image):
    _, _, flags, hlen, _ = L.PREFIX.unpack_from(image, 0)
    return json.loads(inflate_header(image[L.PREFIX.size:L.PREFIX.size + hlen], flags)), hlen


def _rebuild(image, h, hlen, fix_body=True):
    body = image[L.PREFIX.size + hlen:]
    if fix_body:
        h["c"] = zlib.crc32(body)
    return _with_header(_deflate(json.dumps(h).encode()), body)


def _with_header(packed, body, flags=0):
    return L.PREFIX.pack(L.MAGIC, 2, flags, len(packed), zlib.crc32(packed)) + packed + body


def _edit(fn):
    image = _image()
    h, hlen = _header(image)
    h["c"] = zlib.crc32(image[L.PREFIX.size + hlen:])
    fn(h)
    return _rebuild(image, h, hlen, False)


def test_base_v2_image_is_valid():
    image = _image(graph={"g": 1}, meta={"m": 2})
    p = validate(image)
    assert [r.encoding for r in p.tensors][:2] == ["ac_shared", "ac_float"]
    assert p.graph == {"g": 1} and p.meta == {"m": 2}


def _row(name):
    return lambda h: next(r for r in h["t"] if r[0] == name)


@pytest.mark.parametrize("edit, exc, match", [
    (lambda h: h.pop("t"), DczFormatError, "tensor table"),
    (lambda h: h.pop("c"), DczFormatError, "'c'"),
    (lambda h: h["t"].append(["x"]), DczFormatError, "table row must be a list"),
    (lambda h: h["t"][0].__setitem__(3, "zip"), DczFormatError, "unknown encoding"),
    (lambda h: h["t"][0].__setitem__(4, -1), DczFormatError, "section length"),
    (lambda h: h["t"][0].__setitem__(5, []), DczFormatError, "parameters must be a JSON object"),
    (lambda h: h["t"][0][5].pop("vc"), DczFormatError, "takes the parameters"),
    (lambda h: h["t"][0][5].__setitem__("vc", 3), DczFormatError, "vc = 3"),
    (lambda h: h["t"][0][5].__setitem__("sh", 11), DczFormatError, "sh = 11"),
    (lambda h: h["t"][0][5].__setitem__("sh", 3), DczFormatError, "sh = 3"),
    (lambda h: h["t"][0][5].__setitem__("k", 257), DczFormatError, "k = 257"),
    (lambda h: h["t"][0][5].__setitem__("neg", 9), DczFormatError, "negative codebook entries"),
    (lambda h: h["t"][0][5].__setitem__("sp", 2), DczFormatError, "sp = 2"),
    (lambda h: h["t"][0][5].__setitem__("cm", -1), DczFormatError, "cm = -1"),
    (lambda h: h["t"][0][5].__setitem__("sc", 2), DczFormatError, "sc = 2"),
    (lambda h: h["t"][0][5].__setitem__("zz", 1), DczFormatError, "optionally 'pp'"),
    (lambda h: h["t"][0][5].__setitem__("pp", 0), DczFormatError, "pp = 0"),
    (lambda h: h["t"][0][5].__setitem__("pp", 20), DczFormatError, "pp = 20"),
    (lambda h: h["t"][0][5].__setitem__("pp", "3"), DczFormatError, "'pp'"),
    (lambda h: h["t"][0][5].update(pp=3, cm=1), DczFormatError, "row-major"),
    (lambda h: h["t"][0][5].__setitem__("k", 7), DczFormatError, "tensor 'w'"),
    (lambda h: h["t"][0].__setitem__(1, "int32"), DczFormatError, "float32 only"),
    (lambda h: h["t"][0].__setitem__(2, []), DczFormatError, "at least one dimension"),
    (lambda h: h["t"][0].__setitem__(2, [2 ** 41]), DczFormatError, "shape"),
    (lambda h: h["t"][1][5].__setitem__("sh", 99), DczFormatError, "sh = 99"),
    (lambda h: h["t"][1][5].__setitem__("extra", 1), DczFormatError, "exactly the parameter"),
    (lambda h: h["t"][1].__setitem__(0, "w"), DczFormatError, "more than once"),
    (lambda h: h.__setitem__("g", [1]), DczFormatError, "graph"),
    (lambda h: h.__setitem__("m", 3), DczFormatError, "meta"),
    (lambda h: h["t"][2][5].__setitem__("sc", 1) if h["t"][2][5]["sp"] == 0 else h["t"][2][5].__setitem__(
        "sp", 0), DczFormatError, "tensor 'd'"),
    (lambda h: h["t"][0].__setitem__(4, h["t"][0][4] - 1), DczFormatError, "trailing garbage"),
    (lambda h: h["t"][-1].__setitem__(4, h["t"][-1][4] + 1), DczTruncatedError, "truncated"),
    (lambda h: h["t"][-1].__setitem__(4, h["t"][-1][4] - 1), DczFormatError, "trailing garbage"),
])
def test_malformed_v2_fields(edit, exc, match):
    with pytest.raises(exc, match=match):
        validate(_edit(edit))


def test_v2_checksums_and_header_stream():
    image = _image()
    h, hlen = _header(image)
    bad = bytearray(image)
    bad[-1] ^= 1
    with pytest.raises(DczChecksumError, match="tensor data"):
        validate(bytes(bad))
    bad = bytearray(image)
    bad[L.PREFIX.size] ^= 1
    with pytest.raises(DczChecksumError, match="header"):
        validate(bytes(bad))
    body = image[L.PREFIX.size + hlen:]
    packed = image[L.PREFIX.size:L.PREFIX.size + hlen]
    with pytest.raises(DczFormatError, match="deflate"):
        validate(_with_header(b"\xff" * 8, body))
    D = L.PREFIX.unpack_from(image, 0)[2]  # the dictionary the writer chose
    assert D in (L.FLAG_HEADER_DICT, L.FLAG_HEADER_DICT_2)
    with pytest.raises(DczTruncatedError, match="ends early"):
        validate(_with_header(packed[:-3], body, D))
    with pytest.raises(DczFormatError, match="after the end of the header"):
        validate(_with_header(packed + b"\0", body, D))
    # the writer's header points into the preset dictionary: without the flag it is refused
    with pytest.raises(DczFormatError, match="deflate"):
        validate(_with_header(packed, body, 0))
    # a deflate bomb in the header is refused without inflating it all
    bomb = _deflate(b"{" + b" " * (L.MAX_HEADER_BYTES + L.MAX_GRAPH_BYTES + L.MAX_META_BYTES + 10) + b"}")
    with pytest.raises(DczFormatError, match="inflates to more than"):
        validate(_with_header(bomb, b""))
    with pytest.raises(DczFormatError, match="not valid UTF-8 JSON"):
        validate(_with_header(_deflate(b"{nope"), b""))
    with pytest.raises(DczFormatError, match="header length"):
        validate(L.PREFIX.pack(L.MAGIC, 2, 0, 0, 0))
    with pytest.raises(DczTruncatedError, match="runs past"):
        validate(image[:L.PREFIX.size + hlen - 1])


def test_v2_payload_corruption_is_rejected_not_crashed():
    image = _image()
    h, hlen = _header(image)
    start = L.PREFIX.size + hlen
    rejected = 0
    for i in range(start, len(image)):
        for bit in (0, 3, 7):
            bad = bytearray(image)
            bad[i] ^= 1 << bit
            h["c"] = zlib.crc32(bytes(bad[start:]))
            try:
                validate(_with_header(_deflate(json.dumps(h).encode()), bytes(bad[start:])))
            except DczFormatError:
                rejected += 1
    assert rejected > 0


def test_v2_expansion_cap():
    def grow(h):
        h["t"][0][2] = [1 << 20, 1 << 20]
        h["t"][0][5].update(sp=1)
    with pytest.raises(DczFormatError, match="expand"):
        validate(_edit(grow))


def test_unknown_version_and_v1_still_read(tmp_path):
    image = bytearray(_image())
    struct.pack_into("<H", image, 8, 3)
    from deepcomp.errors import DczVersionError
    with pytest.raises(DczVersionError, match="version 3"):
        validate(bytes(image))
    sd = {"w": shared((30, 20), 0.2, 8, 1)}
    write_state_dict(sd, tmp_path / "a.dcz", version=1)
    assert same_bits(decode(tmp_path / "a.dcz")["w"], sd["w"])
    with pytest.raises(Exception, match="version 7"):
        write_state_dict(sd, tmp_path / "b.dcz", version=7)


# ---- the C++ decoder against an independent Python one ------------------------------------

@pytest.mark.parametrize("p", MODELS[::3], ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_cpp_decoder_matches_python_reference(p):
    from tests.ac_reference import decode_weights

    for seed, (shape, density, k) in enumerate([((7, 9), 0.3, 6), ((5, 12), 1.0, 3), ((9, 4), 0.1, 20)]):
        w = shared(shape, density, k, seed)
        bits = w.contiguous().view(torch.int32).numpy().view(np.uint32).reshape(-1)
        idx, book, nn, npn = arith.weight_table(bits, bool(p["sp"]))
        rows, cols = shape[0], int(np.prod(shape[1:]))
        payload = arith.encode_shared(idx, book, rows, cols, nn, npn, p)
        out, ref_book = decode_weights(payload, rows, cols, nn, npn, **p)
        assert out == idx.tolist() and ref_book == book.tolist()


def test_float_decoder_matches_python_reference():
    from tests.ac_reference import decode_floats

    rng = np.random.default_rng(2)
    bits = np.concatenate([rng.standard_normal(50).astype(np.float32).view(np.uint32),
                           np.array([0, 0x80000000, 0x3F800000, 0x7FC00000], np.uint32)])
    for sh in (4, 7, 10):
        assert decode_floats(_C.ac_encode_floats(bits, sh), bits.size, sh) == bits.tolist()


@pytest.mark.parametrize("density,k,want", [(1.0, 256, SharedDense), (0.8, 16, SharedDense),
                                            (0.8, 256, SharedSparse), (0.1, 16, SharedSparse)])
def test_runtime_form_follows_density_not_the_coders_mode(tmp_path, density, k, want):
    # Whatever mode the coder picked, a mostly-nonzero tensor reaches the runtime as dense
    # codes (its lut path); only a 256-centroid tensor with zeros cannot be uint8 codes.
    t = shared((96, 80), density, k, seed=3)
    write_state_dict({"w": t}, tmp_path / "a.dcz")
    f = open_dcz(tmp_path / "a.dcz")
    form = f.compressed("w")
    assert isinstance(form, want)
    if want is SharedDense:
        back = form.codebook[form.codes.astype(np.int64)]
    else:
        back = np.zeros(t.shape, np.float32)
        rows = np.repeat(np.arange(t.shape[0]), np.diff(form.indptr))
        back[rows, form.indices.astype(np.int64)] = form.codebook[form.codes.astype(np.int64)]
    assert same_bits(torch.from_numpy(np.ascontiguousarray(back, np.float32)).reshape(t.shape), t)


# ---- speed paths: they must not change a byte ---------------------------------------------

def test_table_index_is_searchsorted():
    rng = np.random.default_rng(3)
    for k in (1, 2, 3, 7, 255, 256, 257, 1000):
        table = np.unique(rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32))
        for vals in (rng.choice(table, 777), rng.integers(0, 1 << 32, 513, dtype=np.uint64).astype(np.uint32),
                     np.array([0, 0xFFFFFFFF, table[0], table[-1]], np.uint32), np.zeros(0, np.uint32)):
            assert np.array_equal(_C.table_index(vals, table), np.searchsorted(table, vals))
    with pytest.raises(ValueError, match="empty"):
        _C.table_index(np.zeros(3, np.uint32), np.zeros(0, np.uint32))


def _weight_table_reference(bits, sparse):
    """The table as FORMAT.md defines it, spelled out the slow way."""
    vals = sorted(set(int(b) for b in bits) - ({0} if sparse else set()))
    book = [v for v in vals if v >= 0x80000000] + [v for v in vals if v < 0x80000000]
    where = {v: i + (1 if sparse else 0) for i, v in enumerate(book)}
    idx = [0 if sparse and b == 0 else where[int(b)] for b in bits]
    return idx, book, sum(v >= 0x80000000 for v in vals)


@pytest.mark.parametrize("seed", range(6))
def test_weight_tables_match_the_definition(seed):
    rng = np.random.default_rng(seed)
    vals = rng.standard_normal(int(rng.integers(1, 30))).astype(np.float32)
    if seed % 2:
        vals = np.concatenate([vals, np.float32([0.0, -0.0])])
    if seed % 3 == 0:
        vals = np.abs(vals)
    bits = rng.choice(vals, 300).view(np.uint32)
    both = arith.weight_tables(bits, (0, 1))
    for sp in (0, 1):
        idx, book, nneg = _weight_table_reference(bits, bool(sp))
        got = both[sp]
        assert got[0].tolist() == idx and got[1].tolist() == book and got[2] == nneg
        assert got[3] == len(book) - nneg
        assert all(np.array_equal(a, b) for a, b in zip(arith.weight_table(bits, bool(sp)), got))


@pytest.mark.parametrize("shape", [(300, 400), (1500, 30)])
def test_sampled_choice_prices_exactly(tmp_path, shape):
    """Big tensors choose their model on a sample; the price is still the written bytes."""
    from deepcomp.codec.writer import tensor_bytes

    g = torch.Generator().manual_seed(11)
    # like a pruned, shared layer: bell-shaped code frequencies, dead and busy columns
    w = torch.round(torch.randn(shape, generator=g) * 3) / 8
    w = torch.where(torch.rand(shape, generator=g) < 0.2 * torch.rand(shape[1], generator=g) ** 2, w,
                    torch.zeros(()))
    assert w.numel() > arith.FULL_SEARCH_NUMEL
    sd = {"w": w}
    info = write_state_dict(sd, tmp_path / "s.dcz", version=2)
    r = open_dcz(tmp_path / "s.dcz").record("w")
    assert r.encoding == "ac_shared"
    assert tensor_bytes("w", w) == r.length == info["tensors"]["w"]["bytes"]
    assert same_bits(decode(tmp_path / "s.dcz")["w"], w)


def test_sampled_choice_never_worse_than_the_default_model():
    w = shared((400, 300), 0.06, 24, 12)
    bits = w.view(torch.int32).numpy().view(np.uint32).reshape(-1)
    payload, p = arith.best_shared(bits, 400, 300, True, False)
    idx, book, nn, npn = arith.weight_table(bits, True)
    default = {a: v[0] for a, v in arith.AXES.items()}
    # the chosen model is one of those fully encoded, so it is at least as small as the start
    assert len(payload) <= len(arith.encode_shared(idx, book, 400, 300, nn, npn, default))
    assert arith.encode_shared(idx, book, 400, 300, nn, npn, p) == payload


def _parallel(monkeypatch, threads: int):
    from deepcomp.codec import reader as R

    monkeypatch.setattr(R, "MAX_THREADS", threads)
    monkeypatch.setattr(R, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(R.os, "cpu_count", lambda: 4)


def _several():
    return {f"l{i}.weight": shared((40 + 10 * i, 60), 0.1 + 0.2 * i, 8 + i, i) for i in range(4)} | {
        "b": torch.randn(30, generator=torch.Generator().manual_seed(9))}


def test_parallel_encode_and_decode_match_serial(tmp_path, monkeypatch):
    sd = _several()
    _parallel(monkeypatch, 1)
    write_state_dict(sd, tmp_path / "serial.dcz", version=2)
    serial = decode(tmp_path / "serial.dcz")
    _parallel(monkeypatch, 4)
    write_state_dict(sd, tmp_path / "par.dcz", version=2)
    assert (tmp_path / "par.dcz").read_bytes() == (tmp_path / "serial.dcz").read_bytes()
    par = decode(tmp_path / "serial.dcz")
    assert list(par) == list(serial) and all(same_bits(par[k], serial[k]) for k in sd)


@pytest.mark.parametrize("inline", [0, 50, 1000])
def test_parallel_decode_reports_the_first_bad_tensor_in_order(tmp_path, monkeypatch, inline):
    from deepcomp.codec import reader as R

    def fn(x):
        if x in (1, 3):
            raise DczFormatError(f"bad {x}")
        return x * 2

    _parallel(monkeypatch, 4)
    # inline 0: all on the pool; 50: the big item on the pool, the rest on the caller;
    # 1000: all on the caller
    monkeypatch.setattr(R, "INLINE_WORK", inline)
    # the biggest item (3) starts first, yet item 1's error is the one raised, as serially
    with pytest.raises(DczFormatError, match="bad 1"):
        R.each_by_work(fn, [0, 1, 2, 3], [1, 1, 1, 100])
    with pytest.raises(DczFormatError, match="bad 1"):
        R.each_by_work(fn, [0, 1, 2, 3], [1, 100, 1, 1])
    with pytest.raises(DczFormatError, match="bad 3"):
        R.each_by_work(fn, [0, 2, 3, 4], [100, 1, 1, 100])
    assert R.each_by_work(fn, [0, 2, 4, 5], [5, 1, 90, 1]) == [0, 4, 8, 10]


def _pruned_layer(rows=48, cols=70, seed=2026):
    g = torch.Generator().manual_seed(seed)
    w = torch.round(torch.randn(rows, cols, generator=g) * 3) / 8
    return torch.where(torch.rand(rows, cols, generator=g) < 0.5 * torch.rand(cols, generator=g) ** 2, w,
                       torch.zeros(()))


# Digests of payloads written by the coder of 2026-12-02 (before the decoder's loop was
# reworked for speed): the bitstream of files already written must not move.
GOLDEN = [(dict(sp=1, cm=0, vc=1, sc=1, sh=7), 539, "e30acf2118e5ab2e"),
          (dict(sp=1, cm=1, vc=2, sc=1, sh=5), 543, "dd89f049fedb036f"),
          (dict(sp=1, cm=0, vc=0, sc=0, sh=9), 532, "4f364a46b98fc5a2"),
          (dict(sp=0, cm=0, vc=2, sc=0, sh=6), 651, "fde35682fce321a1")]


@pytest.mark.parametrize("p,n,digest", GOLDEN, ids=lambda x: str(x))
def test_bitstream_unchanged_and_reference_agrees(p, n, digest):
    import hashlib

    from tests.ac_reference import decode_weights

    bits = _pruned_layer().view(torch.int32).numpy().view(np.uint32).reshape(-1)
    idx, book, nn, npn = arith.weight_table(bits, bool(p["sp"]))
    payload = arith.encode_shared(idx, book, 48, 70, nn, npn, p)
    assert (len(payload), hashlib.sha256(payload).hexdigest()[:16]) == (n, digest)
    out, ref_book = decode_weights(payload, 48, 70, nn, npn, **p)
    assert out == idx.tolist() and ref_book == book.tolist()
    i2, b2 = arith.decode_shared(payload, 48, 70, {**p, "k": nn + npn, "neg": nn}, "t")
    assert np.array_equal(i2, idx) and np.array_equal(b2, book)


def _dense_shared(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(k, generator=g)
    # bell-shaped use of the centroids, like k-means on trained weights
    codes = (torch.randn(shape, generator=g) * k / 6 + k / 2).clamp(0, k - 1).long()
    return book.sort().values[codes]


@pytest.mark.parametrize("case", ["dense256", "dense16", "sparse", "sparse_dense_book", "fp16"])
def test_huffman_shortcut_picks_what_the_full_comparison_picks(case, monkeypatch):
    import deepcomp.codec.v2 as V2
    from deepcomp.codec.tensors import choose_encoding

    w = {"dense256": lambda: _dense_shared((90, 80), 256, 1), "dense16": lambda: _dense_shared((70, 90), 16, 2),
         "sparse": lambda: shared((120, 70), 0.1, 20, 3), "sparse_dense_book": lambda: _pruned_layer(100, 90, 4),
         "fp16": lambda: torch.randn(80, 70)}[case]()
    assert w.numel() > arith.FULL_GRID_NUMEL
    fast = choose_encoding_v2("w", w, fp16=case == "fp16")
    monkeypatch.setattr(V2, "_huffman_floor", lambda *a: 0)  # never skip the v1 pricing
    full = choose_encoding_v2("w", w, fp16=case == "fp16")
    assert fast.fields == full.fields and fast.payload == full.payload
    huff = choose_encoding("w", w)
    if huff.fields["encoding"] != "raw":
        bits = w.view(torch.int32).numpy().view(np.uint32).reshape(-1)
        uniq = np.unique(bits)
        monkeypatch.undo()
        sparse_ok = uniq[uniq != 0].size <= 256
        assert V2._huffman_floor(_C.table_index(bits, uniq), uniq, sparse_ok) <= len(huff.payload)


# ---- rows read as images (the `pp` parameter) ---------------------------------------------

def _smooth_dense(rows, side, seed, k=6):
    w = smooth_images(rows, side, 1.0, seed, k)
    return torch.where(w == 0, torch.full((), 0.5 / k), w)  # every element a value


@pytest.mark.parametrize("sp", [1, 0])
@pytest.mark.parametrize("pp", [1, 3, 8, 15])
def test_image_period_round_trips_and_reference_agrees(sp, pp):
    from tests.ac_reference import decode_weights

    w = smooth_images(5, 4, 0.4, pp) if sp else _smooth_dense(5, 4, pp)
    bits = w.contiguous().view(torch.int32).numpy().view(np.uint32).reshape(-1)
    idx, book, nn, npn = arith.weight_table(bits, bool(sp))
    for vc, sc in ((0, 0), (2, sp), (1, sp)):
        p = dict(sp=sp, cm=0, vc=vc, sc=sc, sh=5, pp=pp)
        payload = arith.encode_shared(idx, book, 5, 16, nn, npn, p)
        i2, b2 = arith.decode_shared(payload, 5, 16, {**p, "k": nn + npn, "neg": nn}, "t")
        assert np.array_equal(i2, idx) and np.array_equal(b2, book)
        out, ref_book = decode_weights(payload, 5, 16, nn, npn, **p)
        assert out == idx.tolist() and ref_book == book.tolist()


def test_image_period_pays_on_smooth_rows_and_the_writer_picks_it(tmp_path):
    w = smooth_images(60, 12, 0.15, 3)
    bits = w.contiguous().view(torch.int32).numpy().view(np.uint32).reshape(-1)
    idx, book, nn, npn = arith.weight_table(bits, True)
    flat = dict(sp=1, cm=0, vc=2, sc=1, sh=7)
    plain = arith.encode_shared(idx, book, 60, 144, nn, npn, flat)
    image = arith.encode_shared(idx, book, 60, 144, nn, npn, {**flat, "pp": 12})
    assert len(image) < 0.9 * len(plain)
    # 144 is a 12 x 12 image or 16 channels of 3 x 3
    assert arith.image_periods((60, 144)) == (3, 12) and arith.image_periods((8, 3, 5, 5)) == (5,)
    assert arith.image_periods((60, 143)) == () and arith.image_periods((4, 1, 1, 1)) == ()
    enc = choose_encoding_v2("fc1.weight", w)
    assert enc.fields["encoding"] == "ac_shared" and enc.fields["pp"] == 12
    sd = {"fc1.weight": w, "conv.weight": smooth_images(16, 5, 0.3, 4).reshape(16, 1, 5, 5)}
    write_state_dict(sd, tmp_path / "img.dcz", version=2)
    back = decode(tmp_path / "img.dcz")
    assert all(same_bits(back[k], sd[k]) for k in sd)


def test_flattened_feature_maps_are_read_as_images(tmp_path):
    # A classifier's first layer over 32 channels of 5 x 5 maps (as LeNet-5's fc1 reads
    # 50 x 4 x 4): 800 inputs, tried at widths 4 and 5; the maps' own width must win.
    assert arith.image_periods((40, 800)) == (4, 5)
    assert arith.image_periods((10, 9216)) == (3, 4, 6, 8, 96)   # AlexNet's 256 x 6 x 6 among them
    w = smooth_images(40 * 32, 5, 0.2, 7).reshape(40, 800)
    enc = choose_encoding_v2("fc1.weight", w)
    assert enc.fields["encoding"] == "ac_shared" and enc.fields["pp"] == 5
    bits = w.contiguous().view(torch.int32).numpy().view(np.uint32).reshape(-1)
    idx, book, nn, npn = arith.weight_table(bits, True)
    p = {k: enc.fields[k] for k in ("sp", "cm", "vc", "sc", "sh")}
    flat = arith.encode_shared(idx, book, 40, 800, nn, npn, p)
    assert len(enc.payload) < len(flat)
    write_state_dict({"fc1.weight": w}, tmp_path / "maps.dcz", version=2)
    assert same_bits(decode(tmp_path / "maps.dcz")["fc1.weight"], w)


def test_no_period_is_written_as_before():
    # pp is left out of the parameters when the writer does not use it, so files of
    # models without image rows are byte for byte those of the earlier writer
    enc = choose_encoding_v2("w", shared((30, 20), 0.2, 8, 1))
    assert enc.fields["encoding"] == "ac_shared" and "pp" not in enc.fields


# ---- the header's preset dictionary (prefix flag 1) ----------------------------------------

def test_header_dictionary_flag_old_form_and_unknown_flags(tmp_path):
    image = _image(graph={"format": "deepcomp-graph", "nodes": []}, meta={"pipeline": {"stages": []}})
    assert L.PREFIX.unpack_from(image, 0)[2] in (L.FLAG_HEADER_DICT, L.FLAG_HEADER_DICT_2)  # what writers emit
    h, hlen = _header(image)
    body = image[L.PREFIX.size + hlen:]
    # the same header without the dictionary (flags 0, as files written before it) still
    # reads, to the same tensors, and is larger
    plain = _deflate(json.dumps(h, separators=(",", ":")).encode())
    old = _with_header(plain, body, 0)
    assert len(plain) > hlen
    a, b = validate(image), validate(old)
    assert [r.name for r in a.tensors] == [r.name for r in b.tensors] and a.graph == b.graph and a.meta == b.meta
    (tmp_path / "old.dcz").write_bytes(old)
    (tmp_path / "new.dcz").write_bytes(image)
    assert same_bits(decode(tmp_path / "old.dcz")["w"], decode(tmp_path / "new.dcz")["w"])
    for flags in (4, 0x8000):
        with pytest.raises(DczFormatError, match="prefix flags"):
            validate(_with_header(plain, body, flags))
    with pytest.raises(DczFormatError, match="one preset dictionary"):
        validate(_with_header(plain, body, L.FLAG_HEADER_DICT | L.FLAG_HEADER_DICT_2))
    write_state_dict({"w": shared((8, 6), 0.5, 4, 3)}, tmp_path / "v1.dcz", version=1)
    v1 = bytearray((tmp_path / "v1.dcz").read_bytes())
    struct.pack_into("<H", v1, 10, L.FLAG_HEADER_DICT)  # version 1 defines no flags
    with pytest.raises(DczFormatError, match="defines none"):
        validate(bytes(v1))


def test_header_dictionary_matches_the_specification():
    import pathlib

    from deepcomp.codec.hdict import FRAGMENTS, HEADER_DICT

    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()
    block = doc.split("<!-- header dictionary begin -->")[1].split("<!-- header dictionary end -->")[0]
    lines = block.strip().strip("`").strip().splitlines()
    assert tuple(lines) == FRAGMENTS
    assert HEADER_DICT == "".join(lines).encode("ascii") and len(HEADER_DICT) <= 32768
    from deepcomp.codec.hdict import FRAGMENTS_2, HEADER_DICT_2

    block = doc.split("<!-- header dictionary 2 begin -->")[1].split("<!-- header dictionary 2 end -->")[0]
    lines = block.strip().strip("`").strip().splitlines()
    assert tuple(lines) == FRAGMENTS_2
    assert HEADER_DICT_2 == HEADER_DICT + "".join(lines).encode("ascii") and len(HEADER_DICT_2) <= 32768


def _lenet5_like(tmp_path):
    """A small conv net file with the graph torch.fx writes and a planned run's meta."""
    model, graph, meta = lenet5_graph_and_meta()
    sd = {k: shared(tuple(v.shape), 0.1, 8, i) if v.dim() > 1 else v.detach().clone()
          for i, (k, v) in enumerate(model.state_dict().items())}
    path = tmp_path / "l5.dcz"
    write_state_dict(sd, path, graph=graph, meta=meta)
    return sd, path


def test_header_dictionary_2_is_chosen_when_shorter_and_both_read(tmp_path):
    sd, path = _lenet5_like(tmp_path)
    image = path.read_bytes()
    flags = L.PREFIX.unpack_from(image, 0)[2]
    assert flags == L.FLAG_HEADER_DICT_2           # a LeNet-5 header: dictionary 2 is shorter
    h, hlen = _header(image)
    body = image[L.PREFIX.size + hlen:]
    text = json.dumps(h, separators=(",", ":"), ensure_ascii=False).encode()
    with1 = _deflate(text, L.FLAG_HEADER_DICT)
    assert hlen < len(with1) - 100                # and by much, not by chance
    # the same header as a writer before dictionary 2 made it (flags 1) reads the same
    old = _with_header(with1, body, L.FLAG_HEADER_DICT)
    a, b = validate(image), validate(old)
    assert a.graph == b.graph and a.meta == b.meta and [r.name for r in a.tensors] == [r.name for r in b.tensors]
    (tmp_path / "old.dcz").write_bytes(old)
    got = decode(tmp_path / "old.dcz")
    for k in sd:
        assert same_bits(got[k], sd[k])
    # a stream made against one dictionary, labelled with the other, is refused
    with pytest.raises(DczFormatError):
        validate(_with_header(bytes(image[L.PREFIX.size:L.PREFIX.size + hlen]), body, L.FLAG_HEADER_DICT))
    # a LeNet-300-100-like header without graph keeps dictionary 1 unless 2 is shorter
    sd3 = {f"fc{i}.weight": shared(s, 0.1, 8, i) for i, s in ((1, (30, 78)), (2, (10, 30)))}
    img3 = assemble_v2([choose_encoding_v2(k, v) for k, v in sd3.items()], None, None)
    h3, hlen3 = _header(img3)
    t3 = json.dumps(h3, separators=(",", ":"), ensure_ascii=False).encode()
    sizes = {f: len(_deflate(t3, f)) for f in (L.FLAG_HEADER_DICT, L.FLAG_HEADER_DICT_2)}
    assert hlen3 == min(sizes.values())
    assert L.PREFIX.unpack_from(img3, 0)[2] == min(sizes, key=sizes.get)  # dictionary 1 on a tie


def test_header_dictionary_keeps_small_headers_small():
    # a LeNet-300-100-like table and graph: the dictionary must pay for itself
    sd = {f"fc{i}.weight": shared(s, 0.1, 8, i) for i, s in ((1, (30, 78)), (2, (10, 30)), (3, (10, 10)))}
    encs = [choose_encoding_v2(k, v) for k, v in sd.items()]
    image = assemble_v2(encs, None, {"pipeline": {"stages": [{"name": "dense", "val": 90.1, "test": 89.9}]}})
    h, hlen = _header(image)
    plain = _deflate(json.dumps(h, separators=(",", ":")).encode())
    assert hlen < 0.7 * len(plain)


def test_huffman_coder_choice_is_version_1s_and_decodes_the_same(tmp_path):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(64, 300, generator=g)
    w[torch.rand(64, 300, generator=g) < 0.9] = 0
    book = torch.linspace(-2, 2, 31)
    sd = {"w": torch.where(w != 0, book[(w.abs() * 7).long().clamp(0, 30)], w),
          "b": torch.randn(64, generator=g), "dense": book[torch.randint(0, 31, (40, 40), generator=g)]}
    from deepcomp.codec.tensors import choose_encoding

    for name, t in sd.items():
        enc = choose_encoding_v2(name, t, coder="huffman")
        ref = choose_encoding(name, t)
        assert enc.fields == ref.fields and bytes(enc.payload) == bytes(ref.payload)
        assert not enc.fields["encoding"].startswith("ac_")
    small, fast = tmp_path / "a.dcz", tmp_path / "b.dcz"
    write_state_dict(sd, small)
    write_state_dict(sd, fast, coder="HUFFMAN")
    assert small.stat().st_size < fast.stat().st_size
    a, b = decode(small), decode(fast)
    for k in sd:
        assert torch.equal(a[k].view(torch.int32), sd[k].view(torch.int32))
        assert torch.equal(b[k].view(torch.int32), sd[k].view(torch.int32))
    from deepcomp.errors import DeepcompError

    for bad in ("rans", 3, None):
        with pytest.raises(DeepcompError, match="coder must be one of auto, huffman"):
            write_state_dict(sd, tmp_path / "c.dcz", coder=bad)
    assert not (tmp_path / "c.dcz").exists()
