"""One test per kind of malformed .dcz: each is rejected with a typed error naming the problem."""
import json
import struct
import zlib

import numpy as np
import pytest
import torch

from deepcomp.codec import layout as L
from deepcomp.codec.reader import DczFile
from deepcomp.codec.reader import validate as full_validate
from deepcomp.codec.streams import encode_stream
from deepcomp.codec.tensors import Encoded, choose_encoding
from deepcomp.codec.writer import assemble
from deepcomp.errors import DczChecksumError, DczFormatError, DczTruncatedError, DczVersionError
from tests.test_codec_fuzz import same_bits


def validate(image):
    """The validator, with `decode`'s deferred path run beside it on the same bytes.

    `decode` checks stream headers up front and decodes Huffman payloads straight into
    tensors later (validate(defer=True), then DczFile.dense): it must reject every
    malformed image with the same error type as the full validator, and accept the
    others with bit-identical tensors."""
    try:
        deferred, deferred_err = DczFile(full_validate(image, defer=True)).state_dict(), None
    except DczFormatError as e:
        deferred, deferred_err = None, e
    try:
        parsed = full_validate(image)
    except DczFormatError as e:
        assert type(deferred_err) is type(e), f"deferred path gave {deferred_err!r} where validate gave {e!r}"
        raise
    assert deferred_err is None, f"deferred path rejected a valid image: {deferred_err!r}"
    full = DczFile(parsed).state_dict()
    assert all(same_bits(deferred[k], full[k]) for k in full)
    return parsed


def sparse_weight():
    g = torch.Generator().manual_seed(0)
    book = torch.randn(16, generator=g)
    w = torch.where(torch.rand(60, 50, generator=g) < 0.05, book[torch.randint(0, 16, (60, 50), generator=g)],
                    torch.zeros(()))
    w[59, 49] = book[0]
    return w


def encodings():
    return [
        choose_encoding("fc.weight", sparse_weight()),
        choose_encoding("dense.weight", torch.randint(0, 5, (20, 20), generator=torch.Generator().manual_seed(1)).float()),
        choose_encoding("bias", torch.randn(60, generator=torch.Generator().manual_seed(2))),
    ]


def build(encoded=None, graph=None):
    blobs = [("graph", json.dumps(graph).encode())] if graph is not None else []
    image, _ = assemble(encoded if encoded is not None else encodings(), blobs)
    return bytes(image)


def header_of(image):
    _, _, _, hlen, _ = L.PREFIX.unpack_from(image, 0)
    return json.loads(image[L.PREFIX.size:L.PREFIX.size + hlen]), hlen


def patch(image, fn):
    """Mutate the header JSON in place (padded with spaces to its old length), fix its CRC."""
    header, hlen = header_of(image)
    fn(header)
    data = json.dumps(header, separators=(",", ":")).encode()
    assert len(data) <= hlen, "mutation grew the header; use a roomier base"
    data = data + b" " * (hlen - len(data))
    prefix = L.PREFIX.pack(L.MAGIC, L.VERSION, 0, hlen, zlib.crc32(data))
    return prefix + data + image[L.PREFIX.size + hlen:]


def roomy(image, extra=256):
    """The same file with `extra` bytes of header slack, so patches may grow the header."""
    header, hlen = header_of(image)
    for t in header["tensors"]:
        if t["length"]:
            t["offset"] += extra
    for k in ("graph", "meta"):
        if k in header:
            header[k]["offset"] += extra
    header["file_size"] += extra
    data = json.dumps(header, separators=(",", ":")).encode()
    data += b" " * (hlen + extra - len(data))
    prefix = L.PREFIX.pack(L.MAGIC, L.VERSION, 0, len(data), zlib.crc32(data))
    return prefix + data + image[L.PREFIX.size + hlen:]


def rewrite_section(encs, i, payload, **fields):
    e = encs[i]
    encs[i] = Encoded({**e.fields, **fields}, payload)
    return build(encs)


def test_base_file_is_valid():
    p = validate(roomy(build(graph={"nodes": []})))
    assert [r.name for r in p.tensors] == ["fc.weight", "dense.weight", "bias"]
    assert p.tensors[0].encoding == "shared_sparse" and p.tensors[1].encoding == "shared_dense"
    assert p.graph == {"nodes": []}


@pytest.mark.parametrize("cut", [0, 5, 19, 30, -1, -100])
def test_truncated_file(cut):
    image = build()
    _, hlen = header_of(image)
    n = {30: L.PREFIX.size + hlen // 2}.get(cut, cut if cut >= 0 else len(image) + cut)
    with pytest.raises(DczTruncatedError):
        validate(image[:n])


def test_bad_magic():
    image = build()
    with pytest.raises(DczFormatError, match="magic"):
        validate(b"PK\x03\x04" + image[4:])
    with pytest.raises(DczFormatError, match="magic"):
        validate(b"hi")


def test_future_version():
    image = bytearray(build())
    struct.pack_into("<H", image, 8, 3)
    with pytest.raises(DczVersionError, match="version 3"):
        validate(bytes(image))


def test_unknown_flags():
    image = bytearray(build())
    struct.pack_into("<H", image, 10, 1)
    with pytest.raises(DczFormatError, match="flags"):
        validate(bytes(image))


def test_header_past_eof():
    image = bytearray(build())
    struct.pack_into("<I", image, 12, len(image))
    with pytest.raises(DczTruncatedError, match="header"):
        validate(bytes(image))


def test_absurd_header_length():
    image = bytearray(build())
    struct.pack_into("<I", image, 12, 0xFFFFFFFF)
    with pytest.raises(DczFormatError, match="header length"):
        validate(bytes(image))


def test_header_checksum_mismatch():
    image = bytearray(build())
    image[L.PREFIX.size + 3] ^= 0x20
    with pytest.raises(DczChecksumError, match="header"):
        validate(bytes(image))


def test_header_not_json():
    data = b"{not json" + b" " * 20
    image = L.PREFIX.pack(L.MAGIC, 1, 0, len(data), zlib.crc32(data)) + data
    with pytest.raises(DczFormatError, match="JSON"):
        validate(image)
    deep = b"[" * 100000 + b"]" * 100000
    image = L.PREFIX.pack(L.MAGIC, 1, 0, len(deep), zlib.crc32(deep)) + deep
    with pytest.raises(DczFormatError, match="JSON"):
        validate(image)


@pytest.mark.parametrize("shape,match", [
    ([2 ** 40, 2 ** 40], "elements"),
    ([-1, 50], "shape"),
    ([1] * 9, "shape"),
    ("60x50", "shape"),
    ([60, 50.0], "shape"),
    ([600000, 50000], "decoded bytes"),
])
def test_absurd_shape(shape, match):
    image = patch(roomy(build()), lambda h: h["tensors"][0].__setitem__("shape", shape))
    with pytest.raises(DczFormatError, match=match):
        validate(image)


@pytest.mark.parametrize("field,value,match", [
    ("entries", 10 ** 9, "entries"),
    ("nnz", -1, "nnz"),
    ("k", 300, "k = 300"),
    ("index_bits", 9, "index_bits"),
    ("encoding", "lz4", "unknown encoding"),
    ("dtype", "float128", "unknown dtype"),
    ("crc32", 2 ** 40, "crc32"),
    ("length", True, "length"),
])
def test_absurd_counts(field, value, match):
    image = patch(roomy(build()), lambda h: h["tensors"][0].__setitem__(field, value))
    with pytest.raises(DczFormatError, match=match):
        validate(image)


def test_tensor_list_not_a_list():
    image = patch(roomy(build()), lambda h: h.__setitem__("tensors", {"a": 1}))
    with pytest.raises(DczFormatError, match="tensors"):
        validate(image)


def test_duplicate_names():
    image = patch(roomy(build()), lambda h: h["tensors"][1].__setitem__("name", "fc.weight"))
    with pytest.raises(DczFormatError, match="more than once"):
        validate(image)


def test_overlapping_sections():
    def fn(h):
        h["tensors"][1]["offset"] = h["tensors"][0]["offset"]
    with pytest.raises(DczFormatError, match="overlaps"):
        validate(patch(build(), fn))


def test_misaligned_section():
    with pytest.raises(DczFormatError, match="multiple of 64"):
        validate(patch(roomy(build()), lambda h: h["tensors"][1].__setitem__("offset", h["tensors"][1]["offset"] + 4)))


def test_section_past_eof():
    with pytest.raises(DczTruncatedError, match="past the end"):
        validate(patch(roomy(build()), lambda h: h["tensors"][2].__setitem__("offset", 2 ** 40)))


def test_section_inside_header():
    with pytest.raises(DczFormatError, match="header"):
        validate(patch(build(), lambda h: h["tensors"][0].__setitem__("offset", 0)))


def test_trailing_garbage():
    image = build()
    with pytest.raises(DczFormatError, match="trailing garbage"):
        validate(image + b"\0" * 10)
    # a file whose header also claims the garbage still has bytes no section explains
    bigger = patch(image + b"\0" * 128, lambda h: h.__setitem__("file_size", h["file_size"] + 128))
    with pytest.raises(DczFormatError, match="trailing garbage"):
        validate(bigger)


def test_nonzero_padding():
    image = bytearray(build())
    header, hlen = header_of(image)
    first = header["tensors"][0]["offset"]
    assert first > L.PREFIX.size + hlen
    image[first - 1] = 7
    with pytest.raises(DczFormatError, match="padding"):
        validate(bytes(image))


def test_section_checksum_mismatch():
    image = bytearray(build())
    header, _ = header_of(image)
    image[header["tensors"][2]["offset"] + 5] ^= 1
    with pytest.raises(DczChecksumError, match="'bias'"):
        validate(bytes(image))


def test_bad_code_lengths():
    encs = encodings()
    e = encs[1]  # shared_dense: codebook then one stream
    k = e.fields["k"]
    payload = bytearray(e.payload)
    table = 4 * k + L.STREAM_HEADER.size
    payload[table] = 0x11  # two 1-bit codes plus the rest: Kraft sum above one
    with pytest.raises(DczFormatError, match="complete prefix code"):
        validate(rewrite_section(encs, 1, bytes(payload)))


def test_short_bitstream():
    encs = encodings()
    e = encs[1]
    k = e.fields["k"]
    payload = bytearray(e.payload)
    hdr = 4 * k
    count, a, mode, res, plen, aux = L.STREAM_HEADER.unpack_from(payload, hdr)
    assert mode == L.MODE_HUFFMAN
    L.STREAM_HEADER.pack_into(payload, hdr, count, a, mode, res, plen - 20, aux)
    with pytest.raises(DczFormatError, match="before the stated symbol count"):
        validate(rewrite_section(encs, 1, bytes(payload[:-20])))


def test_stream_count_disagrees_with_table():
    encs = encodings()
    with pytest.raises(DczFormatError, match="symbols"):
        validate(rewrite_section(encs, 1, encs[1].payload, shape=[20, 21]))


def test_stream_payload_past_section():
    encs = encodings()
    e = encs[1]
    hdr = 4 * e.fields["k"]
    payload = bytearray(e.payload)
    count, a, mode, res, plen, aux = L.STREAM_HEADER.unpack_from(payload, hdr)
    L.STREAM_HEADER.pack_into(payload, hdr, count, a, mode, res, plen + 5, aux)
    with pytest.raises(DczTruncatedError, match="payload"):
        validate(rewrite_section(encs, 1, bytes(payload)))


def test_unknown_stream_mode():
    encs = encodings()
    e = encs[1]
    hdr = 4 * e.fields["k"]
    payload = bytearray(e.payload)
    payload[hdr + 6] = 9
    with pytest.raises(DczFormatError, match="unknown stream mode"):
        validate(rewrite_section(encs, 1, bytes(payload)))


def test_index_out_of_range():
    encs = encodings()
    # same streams, declared over fewer elements: the last entry lands past the end
    f = encs[0].fields
    with pytest.raises(DczFormatError, match="past the"):
        validate(rewrite_section(encs, 0, encs[0].payload, shape=[59, 50], entries=min(f["entries"], 59 * 50)))


def sparse_payload(rel, codes, k, b, book=None):
    book = np.arange(1, k + 1, dtype=np.float32) if book is None else book
    return book.astype("<f4").tobytes() + encode_stream(np.array(rel), 1 << b) + encode_stream(np.array(codes), k + 1)


def sparse_enc(rel, codes, k=2, b=2, shape=(4, 8), nnz=None):
    nnz = sum(c != k for c in codes) if nnz is None else nnz
    return Encoded({"name": "s", "dtype": "float32", "shape": list(shape), "encoding": "shared_sparse",
                    "k": k, "index_bits": b, "nnz": nnz, "entries": len(rel)},
                   sparse_payload(rel, codes, k, b))


def test_handmade_sparse_is_valid_and_decodes():
    # entries at 0, 2, (filler at 6), 9: rel 0, 1, 3(filler), 2
    f = DczFile(validate(build([sparse_enc([0, 1, 3, 2], [0, 1, 2, 1])])))
    dense = f.dense("s").reshape(-1)
    assert dense[[0, 2, 9]].tolist() == [1.0, 2.0, 2.0] and int((dense != 0).sum()) == 3


def test_filler_with_wrong_step():
    with pytest.raises(DczFormatError, match="filler"):
        validate(build([sparse_enc([0, 1, 2, 2], [0, 1, 2, 1])]))


def test_trailing_filler():
    with pytest.raises(DczFormatError, match="last entry is a filler"):
        validate(build([sparse_enc([0, 3], [0, 2])]))


def test_nnz_mismatch():
    with pytest.raises(DczFormatError, match="non-zeros"):
        validate(build([sparse_enc([0, 1, 3, 2], [0, 1, 2, 1], nnz=4)]))


def test_extra_bytes_in_section():
    enc = sparse_enc([0, 1], [0, 1])
    enc.payload += b"\0\0"
    with pytest.raises(DczFormatError, match="unused bytes"):
        validate(build([enc]))


def test_raw_length_mismatch():
    encs = encodings()
    with pytest.raises(DczFormatError, match="raw section"):
        validate(rewrite_section(encs, 2, encs[2].payload[:-4]))


def test_shared_encoding_on_integer_dtype():
    encs = encodings()
    with pytest.raises(DczFormatError, match="float32 only"):
        validate(rewrite_section(encs, 1, encs[1].payload, dtype="int32"))


def test_bool_with_bad_bytes():
    enc = Encoded({"name": "m", "dtype": "bool", "shape": [3], "encoding": "raw", "storage": "bool"}, b"\x00\x01\x05")
    with pytest.raises(DczFormatError, match="bool"):
        validate(build([enc]))


def test_graph_section_not_json():
    image, _ = assemble(encodings(), [("graph", b"\xff\xfe not json")])
    with pytest.raises(DczFormatError, match="graph section"):
        validate(bytes(image))
    image, _ = assemble(encodings(), [("graph", b"[1, 2]")])
    with pytest.raises(DczFormatError, match="graph section must be a JSON object"):
        validate(bytes(image))


def test_decode_bomb_is_refused():
    # a single-symbol stream costs no payload: 14 bytes could claim a huge tensor
    enc = Encoded({"name": "z", "dtype": "float32", "shape": [1 << 20, 1 << 10], "encoding": "shared_dense",
                   "k": 1}, np.float32(1).tobytes() + L.STREAM_HEADER.pack(1 << 30, 1, L.MODE_SINGLE, 0, 0, 0))
    with pytest.raises(DczFormatError, match="expand"):
        validate(build([enc]))


def test_errors_from_the_command_line_are_one_line(tmp_path, capsys):
    from deepcomp.cli import main

    p = tmp_path / "bad.dcz"
    p.write_bytes(build()[:-3])
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepcomp info: error:") and "\n" not in err and "Traceback" not in err
