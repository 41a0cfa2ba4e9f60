"""Mutation fuzzing of the .dcz reader: any input either decodes or raises DczFormatError.

The seeded loop runs in the fast suite for a bounded time (the seed and iteration of a
failure are in the assertion message, so it reproduces). Mutated files get their CRCs
repaired most of the time, otherwise the checksum would reject nearly all of them before
the deeper checks run. If atheris is installed, a coverage-guided run is added.
"""
import json
import os
import random
import subprocess
import sys
import textwrap
import time
import zlib

import pytest
import torch

from deepcomp.codec import layout as L
from deepcomp.codec.reader import DczFile, validate
from deepcomp.codec.tensors import choose_encoding
from deepcomp.codec.v2 import _deflate, assemble_v2, choose_encoding_v2, inflate_header
from deepcomp.codec.writer import assemble
from deepcomp.errors import DczFormatError
from tests.fuzz_limits import rss_limit_mb
from tests.image_weights import smooth_images
from tests.lenet5_header import lenet5_graph_and_meta

FAST_BUDGET_S = float(os.environ.get("DEEPCOMP_FUZZ_SECONDS", "10"))


def _corpus() -> list:
    g = torch.Generator().manual_seed(0)
    book = torch.randn(12, generator=g)
    sparse = torch.where(torch.rand(40, 30, generator=g) < 0.04,
                         book[torch.randint(0, 12, (40, 30), generator=g)], torch.zeros(()))
    tensors = {
        "fc.weight": sparse,
        "conv.weight": torch.where(torch.rand(4, 2, 3, 3, generator=g) < 0.3, book[3], torch.zeros(())),
        "dense.weight": torch.randint(0, 6, (9, 9), generator=g).float(),
        "ones": torch.ones(7, 3),
        "bias": torch.randn(5, generator=g),
        "steps": torch.tensor(3),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0),
    }
    encs = [choose_encoding(k, v) for k, v in tensors.items()]
    out = _corpus_v2(tensors)
    for blobs in ([], [("graph", b'{"nodes":[{"op":"linear"}]}'), ("meta", b'{"a":1}')]):
        image, _ = assemble(encs, blobs)
        out.append(_roomy(bytes(image)))
        image, _ = assemble(encs[:3], blobs)
        out.append(bytes(image))
    return out


def _corpus_v2(tensors: dict) -> list:
    """Version 2 images: every arithmetic-coded encoding, sparse and dense, and Huffman."""
    g = torch.Generator().manual_seed(1)
    extra = {"acd.weight": torch.randint(-3, 4, (12, 10), generator=g).float() * 0.25,
             "acf.bias": torch.randn(40, generator=g),
             "img.weight": smooth_images(12, 8, 0.3, 1)}
    encs = [choose_encoding_v2(k, v) for k, v in {**tensors, **extra}.items()]
    kinds = {e.fields["encoding"] for e in encs}
    assert {"ac_shared", "ac_float"} <= kinds, kinds
    assert any(e.fields.get("pp") for e in encs)  # the image-period model is in the corpus
    # coder="huffman": the compact container around version 1's streams only
    huff = [choose_encoding_v2(k, v, coder="huffman") for k, v in {**tensors, **extra}.items()]
    assert {"shared_sparse", "shared_dense"} <= {e.fields["encoding"] for e in huff}
    # a conv net's graph and a planned run's meta: the header takes preset dictionary 2
    _, graph, meta = lenet5_graph_and_meta()
    dict2 = assemble_v2(encs, graph, meta)
    assert L.PREFIX.unpack_from(dict2, 0)[2] == L.FLAG_HEADER_DICT_2
    return [assemble_v2(encs, {"nodes": [{"op": "linear"}]}, {"a": 1}), assemble_v2(encs[:3], None, None),
            assemble_v2(huff, None, {"a": 1}), dict2]


def _v2_header(image: bytes):
    _, _, flags, hlen, _ = L.PREFIX.unpack_from(image, 0)
    return json.loads(inflate_header(image[L.PREFIX.size:L.PREFIX.size + hlen], flags)), hlen


def _v2_rebuild(h: dict, image: bytes, hlen: int, fix_body_crc: bool) -> bytes:
    body = image[L.PREFIX.size + hlen:]
    if fix_body_crc:
        h["c"] = zlib.crc32(body)
    packed = _deflate(json.dumps(h, separators=(",", ":")).encode())
    return L.PREFIX.pack(L.MAGIC, 2, 0, len(packed), zlib.crc32(packed)) + packed + body


def _version(image: bytes) -> int:
    return L.PREFIX.unpack_from(image, 0)[1] if len(image) >= L.PREFIX.size else 0


def _header(image):
    _, _, _, hlen, _ = L.PREFIX.unpack_from(image, 0)
    return hlen


def _roomy(image, extra=128):
    hlen = _header(image)
    h = json.loads(image[L.PREFIX.size:L.PREFIX.size + hlen])
    for t in h["tensors"]:
        if t["length"]:
            t["offset"] += extra
    for k in ("graph", "meta"):
        if k in h:
            h[k]["offset"] += extra
    h["file_size"] += extra
    data = json.dumps(h, separators=(",", ":")).encode()
    data += b" " * (hlen + extra - len(data))
    return L.PREFIX.pack(L.MAGIC, 1, 0, len(data), zlib.crc32(data)) + data + image[L.PREFIX.size + hlen:]


def _fix_crcs(image: bytes) -> bytes:
    """Recompute section and header CRCs where the header still parses."""
    if len(image) < L.PREFIX.size:
        return image
    if _version(image) == 2:
        try:
            h, hlen = _v2_header(image)
            return _v2_rebuild(h, image, hlen, True)
        except Exception:  # noqa: BLE001 - a header the mutator already broke stays broken
            return image
    magic, ver, flags, hlen, _ = L.PREFIX.unpack_from(image, 0)
    if L.PREFIX.size + hlen > len(image):
        return image
    raw = image[L.PREFIX.size:L.PREFIX.size + hlen]
    try:
        h = json.loads(raw)
        items = list(h.get("tensors", [])) + [h.get("graph"), h.get("meta")]
        for e in items:
            if isinstance(e, dict):
                off, ln = e.get("offset"), e.get("length")
                if isinstance(off, int) and isinstance(ln, int) and 0 <= off <= off + ln <= len(image):
                    e["crc32"] = zlib.crc32(image[off:off + ln])
        data = json.dumps(h, separators=(",", ":")).encode()
        if len(data) <= hlen:
            raw = data + b" " * (hlen - len(data))
    except Exception:
        pass
    return L.PREFIX.pack(magic, ver, flags, hlen, zlib.crc32(raw)) + raw + image[L.PREFIX.size + hlen:]


INTERESTING = [0, 1, -1, 2, 7, 8, 9, 15, 16, 63, 64, 255, 256, 257, 65535, 65536, 2 ** 31 - 1, 2 ** 31,
               2 ** 32, 2 ** 40, 2 ** 63, -2 ** 63, 0.5, None, "x", [], {}, [1, 2], True]


def _mutate_json_v2(image: bytes, rng: random.Random) -> bytes:
    h, hlen = _v2_header(image)
    rows = [r for r in h.get("t", []) if isinstance(r, list) and r]
    targets = [h] + rows + [r[5] for r in rows if len(r) == 6 and isinstance(r[5], dict) and r[5]]
    t = rng.choice(targets)
    if isinstance(t, list):
        i = rng.randrange(len(t))
        if i == 2 and isinstance(t[2], list) and t[2] and rng.random() < 0.5:
            t[2][rng.randrange(len(t[2]))] = rng.choice(INTERESTING)
        elif rng.random() < 0.1:
            del t[i]
        else:
            t[i] = rng.choice(INTERESTING)
    else:
        key = rng.choice(list(t))
        if rng.random() < 0.1:
            del t[key]
        else:
            t[key] = rng.choice(INTERESTING + [0, 1, 2, 3, 4, 5, 9, 10, 11])
    return _v2_rebuild(h, image, hlen, rng.random() < 0.8)


def _mutate_json(image: bytes, rng: random.Random) -> bytes:
    if _version(image) == 2:
        return _mutate_json_v2(image, rng)
    hlen = _header(image)
    try:
        h = json.loads(image[L.PREFIX.size:L.PREFIX.size + hlen])
    except ValueError:
        return image
    targets = [h] + [t for t in h.get("tensors", []) if isinstance(t, dict)]
    t = rng.choice(targets)
    if not t:
        return image
    key = rng.choice(list(t))
    if key == "shape" and isinstance(t[key], list) and t[key] and rng.random() < 0.5:
        t[key][rng.randrange(len(t[key]))] = rng.choice(INTERESTING)
    elif rng.random() < 0.1:
        del t[key]
    else:
        t[key] = rng.choice(INTERESTING)
    data = json.dumps(h, separators=(",", ":")).encode()
    if len(data) > hlen:
        return image
    data += b" " * (hlen - len(data))
    return image[:L.PREFIX.size] + data + image[L.PREFIX.size + hlen:]


def mutate(image: bytes, rng: random.Random) -> bytes:
    b = bytearray(image)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        op = rng.randrange(9)
        n = len(b)
        if n == 0:
            break
        i = rng.randrange(n)
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.randrange(256)
        elif op == 2:
            b[i] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, 0x0F, 0xF0])
        elif op == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4:
            del b[i:i + rng.randint(1, 64)]
        elif op == 5:
            del b[rng.randrange(n):]
        elif op == 6:
            j = rng.randrange(n)
            b[i:i] = b[j:j + rng.randint(1, 64)]
        elif op == 7:
            try:
                b = bytearray(_mutate_json(bytes(b), rng))
            except Exception:  # noqa: BLE001 - the mutator may meet a header it already broke
                pass
        else:
            # a multi-byte little-endian field (stream headers are full of them)
            v = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 2, 3, 256, 257])
            w = rng.choice([2, 4])
            b[i:i + w] = v.to_bytes(8, "little")[:w]
    return bytes(b)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN payloads and -0.0 included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.numel() == 0 or torch.equal(a.contiguous().reshape(-1).view(torch.uint8),
                                         b.contiguous().reshape(-1).view(torch.uint8))


def check_one(data: bytes) -> str:
    """'ok' or 'rejected'; anything else escapes and fails the test.

    `decode`'s deferred path (stream payloads decoded straight into the tensors) must
    reject exactly what the validator rejects, and give the same bytes otherwise."""
    try:
        deferred = DczFile(validate(data, defer=True)).state_dict()
    except DczFormatError:
        deferred = None
    try:
        parsed = validate(data)
    except DczFormatError:
        assert deferred is None, "the deferred decode accepted a file the validator rejects"
        return "rejected"
    assert deferred is not None, "the deferred decode rejected a file the validator accepts"
    f = DczFile(parsed)
    # Once validation passes, decoding must not fail at all.
    for name in f.names:
        t = f.dense(name)
        assert same_bits(t, deferred[name]), name
        f.compressed(name)
    return "ok"


def run_loop(seed: int, budget_s: float) -> dict:
    corpus = _corpus()
    for c in corpus:
        assert check_one(c) == "ok"
    rng = random.Random(seed)
    stats = {"ok": 0, "rejected": 0}
    deadline = time.monotonic() + budget_s
    it = 0
    while time.monotonic() < deadline:
        it += 1
        m = mutate(rng.choice(corpus), rng)
        if rng.random() < 0.7:
            m = _fix_crcs(m)
        try:
            stats[check_one(m)] += 1
        except Exception as e:  # noqa: BLE001 - any other exception is the bug we look for
            raise AssertionError(f"seed {seed}, iteration {it}: {type(e).__name__}: {e}") from e
    stats["iterations"] = it
    return stats


def test_mutation_fuzz_fast():
    stats = run_loop(seed=1234, budget_s=FAST_BUDGET_S)
    print(stats)
    assert stats["iterations"] > 100
    # The CRC repair must let a share of mutants through to the deep checks.
    assert stats["rejected"] > 0 and stats["ok"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutation_fuzz_long(seed):
    stats = run_loop(seed=seed, budget_s=60)
    print(stats)
    assert stats["iterations"] > 1000


# The coverage-guided run checks what the seeded loop checks (check_one: the eager and
# the deferred decode agree, and nothing but DczFormatError escapes), and repairs the
# CRCs of what it is given: without that nearly every mutant stops at the checksum
# (coverage plateaued at ~220 edges in 5 minutes), with it the fuzzer reaches the
# decoders. Checksum failures have tests of their own.
ATHERIS_HARNESS = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import atheris
    with atheris.instrument_imports(include=["deepcomp.codec"]):
        from deepcomp.codec.reader import validate
    from tests.test_codec_fuzz import _fix_crcs, check_one

    def one(data):
        check_one(_fix_crcs(data))

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
""")


def test_atheris_guided_fuzz(tmp_path):
    pytest.importorskip("atheris")
    from pathlib import Path

    import deepcomp
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, c in enumerate(_corpus()):
        (corpus / f"seed{i}.dcz").write_bytes(c)
    script = tmp_path / "fuzz_dcz.py"
    # the deepcomp (and tests) this test imported: another checkout's, when run from there
    script.write_text(ATHERIS_HARNESS.format(root=str(Path(deepcomp.__file__).resolve().parent.parent)))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    budget = max(2, int(FAST_BUDGET_S))
    # cwd: libFuzzer writes crash-*/oom-* reproducers into the working directory
    out = subprocess.run([sys.executable, str(script), f"-max_total_time={budget}", f"-rss_limit_mb={rss_limit_mb(4096)}",
                          "-max_len=8192", str(corpus)],
                         capture_output=True, text=True, env=env, timeout=budget + 120, cwd=tmp_path)
    tail = (out.stdout + out.stderr)[-3000:]
    assert out.returncode == 0, tail
    assert "Done" in tail or "done" in tail, tail


@pytest.mark.slow
def test_cpp_decoder_fuzz_driver_under_sanitizers(tmp_path):
    """The libFuzzer target's standalone driver, built with ASan + UBSan (clang not needed)."""
    import shutil
    from pathlib import Path

    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    root = Path(__file__).resolve().parent.parent
    exe = tmp_path / "fuzz_huffman_standalone"
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-g", "-fsanitize=address,undefined",
                            "-fno-sanitize-recover=all", "-DDEEPCOMP_FUZZ_STANDALONE", f"-I{root / 'csrc'}",
                            str(root / "csrc/fuzz/fuzz_huffman_decode.cpp"), str(root / "csrc/huffman/huffman.cpp"),
                            str(root / "csrc/huffman/sparse_index.cpp"),
                            "-o", str(exe)], capture_output=True, text=True)
    if build.returncode != 0 and "sanitize" in build.stderr:
        pytest.skip("sanitizer runtime not available")
    assert build.returncode == 0, build.stderr[-2000:]
    run = subprocess.run([str(exe), "50000"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    assert "without a fault" in run.stdout


@pytest.mark.slow
def test_cpp_arith_decoder_fuzz_driver_under_sanitizers(tmp_path):
    """csrc/fuzz/fuzz_ac_decode.cpp's standalone driver, built with ASan + UBSan."""
    import shutil
    from pathlib import Path

    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    root = Path(__file__).resolve().parent.parent
    exe = tmp_path / "fuzz_ac_standalone"
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-g", "-fsanitize=address,undefined",
                            "-fno-sanitize-recover=all", "-DDEEPCOMP_FUZZ_STANDALONE", f"-I{root / 'csrc'}",
                            str(root / "csrc/fuzz/fuzz_ac_decode.cpp"), str(root / "csrc/coder/weights.cpp"),
                            "-o", str(exe)], capture_output=True, text=True)
    if build.returncode != 0 and "sanitize" in build.stderr:
        pytest.skip("sanitizer runtime not available")
    assert build.returncode == 0, build.stderr[-2000:]
    run = subprocess.run([str(exe), "20000"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    assert "without a fault" in run.stdout
