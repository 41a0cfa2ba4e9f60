"""The command line never shows a traceback for a file's content (issue 12 item 3).

Every sub-command that reads a file is run on crafted files (truncated, wrong magic,
corrupted, a bad graph, pickled payloads, damaged archives, bad input arrays): each must
exit with status 2 and print exactly one line, `deepcomp CMD: error: ...`, and leave no
output file behind. The whole matrix runs in-process through deepcomp.cli.main (an
untyped exception fails the test with its traceback); a subset runs as real `python -m
deepcomp` subprocesses in the fast suite, the whole matrix in the slow one.
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import deepcomp
from deepcomp import cli
from deepcomp.codec import layout as L
from deepcomp.codec.writer import write_state_dict
from deepcomp.errors import brief, weights_only_reason
from deepcomp.graph import capture
from deepcomp.models import get_model
from graph_mutator import _attrs, _bad_view, _ins, _node, _set_first

ROOT = Path(__file__).resolve().parent.parent


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo PWNED-BY-PICKLE",))


def _rewrite_header(image: bytes, edit) -> bytes:
    """Edit a .dcz header's JSON and keep every CRC valid (the header gets room to grow)."""
    _, ver, flags, hlen, _ = L.PREFIX.unpack_from(image, 0)
    h = json.loads(image[L.PREFIX.size:L.PREFIX.size + hlen])
    extra = 256
    for t in h["tensors"]:
        if t["length"]:
            t["offset"] += extra
    for k in ("graph", "meta"):
        if k in h:
            h[k]["offset"] += extra
    h["file_size"] += extra
    edit(h)
    data = json.dumps(h, separators=(",", ":")).encode()
    data += b" " * (hlen + extra - len(data))
    return L.PREFIX.pack(L.MAGIC, ver, flags, len(data), zlib.crc32(data)) + data + image[L.PREFIX.size + hlen:]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("crafted")
    torch.manual_seed(0)
    model = get_model("deepcomp:lenet5").eval()
    good = d / "good.dcz"
    deepcomp.save(model, good)
    b = good.read_bytes()
    graph, sd = capture(model, torch.randn(1, 1, 28, 28))
    graph = json.loads(json.dumps(graph))

    dcz = {}

    def put(name, data):
        p = d / name
        p.write_bytes(data)
        return p

    dcz["truncated"] = put("truncated.dcz", b[: len(b) // 2])
    dcz["wrong_magic"] = put("magic.dcz", b"XXXX" + b[4:])
    dcz["empty"] = put("empty.dcz", b"")
    dcz["random"] = put("random.dcz", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    flipped = bytearray(b)
    flipped[-100] ^= 0x10
    dcz["bit_flip"] = put("flip.dcz", bytes(flipped))
    dcz["header_not_json"] = put("hdr.dcz", L.PREFIX.pack(L.MAGIC, 1, 0, 8, zlib.crc32(b"{notjson")) + b"{notjson")

    def huge(h):
        h["tensors"][0]["shape"] = [2 ** 17, 2 ** 17]
    # _rewrite_header edits a v1 (plain JSON) header; the same tensors written as v1
    write_state_dict(model.state_dict(), d / "good_v1.dcz", version=1)
    v1 = (d / "good_v1.dcz").read_bytes()
    dcz["declares_64GiB"] = put("huge.dcz", _rewrite_header(v1, huge))

    def bad_graph(name, fn):
        g = json.loads(json.dumps(graph))
        fn(g)
        p = d / f"{name}.dcz"
        write_state_dict(sd, p, graph=g)
        dcz[name] = p

    bad_graph("graph_nodes_bool", lambda g: g.__setitem__("nodes", True))
    bad_graph("graph_flatten_dim_7", lambda g: _bad_view(g, {"start_dim": 7}, [1, 801]))
    bad_graph("graph_missing_tensor", lambda g: _set_first(_attrs(_node(g, "linear")), ["weight", "w"],
                                                           "nope.weight"))
    bad_graph("graph_name_is_list", lambda g: _ins(g["nodes"][1], [["conv2d"]]))
    bad_graph("graph_cycle", lambda g: _ins(g["nodes"][0], [g["nodes"][-1]["name"]]))
    weights_only = d / "weights_only.dcz"
    write_state_dict(sd, weights_only)

    models = {}
    models["pickled_module"] = d / "module.pt"
    torch.save(model, models["pickled_module"])
    models["pickle_payload"] = put("payload.pt", pickle.dumps({"w": _Evil()}, protocol=2))
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        for n in src.namelist():
            z.writestr(n, pickle.dumps({"w": _Evil()}, protocol=2) if n.endswith("data.pkl") else src.read(n))
    models["pickle_payload_in_zip"] = put("payload_zip.pt", zbuf.getvalue())
    sd_bytes = io.BytesIO()
    torch.save(model.state_dict(), sd_bytes)
    models["truncated_state_dict"] = put("trunc_sd.pt", sd_bytes.getvalue()[:3000])
    models["garbage_pt"] = put("garbage.pt", np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    models["safetensors_huge_header"] = put("huge.safetensors", struct.pack("<Q", 10 ** 12) + b"{}")
    models["safetensors_bad_json"] = put("badjson.safetensors", struct.pack("<Q", 9) + b"{not json")
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02junk")
        z.writestr("archive/version", b"3\n")
    models["pt2_junk"] = put("junk.pt2", zb.getvalue())
    models["empty_pt"] = put("empty.pt", b"")
    # encode reads a .dcz (to write it again); a damaged one is refused like any model file
    models["dcz_truncated"] = put("trunc.dcz", good.read_bytes()[:-7])
    models["dcz_bad_body_crc"] = put("badcrc.dcz", good.read_bytes()[:-1] + bytes([good.read_bytes()[-1] ^ 1]))

    x = d / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32))
    arrays = {}
    arrays["object_array"] = d / "obj.npy"
    np.save(arrays["object_array"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    arrays["wrong_shape"] = d / "shape.npy"
    np.save(arrays["wrong_shape"], np.zeros((1, 3, 5), np.float32))
    arrays["integers"] = d / "int.npy"
    np.save(arrays["integers"], np.zeros((1, 1, 28, 28), np.int64))
    arrays["truncated"] = put("trunc.npy", x.read_bytes()[:200])
    arrays["npz"] = d / "arr.npz"
    np.savez(arrays["npz"], a=np.zeros(3))
    arrays["not_npy"] = put("text.npy", b"1,2,3\n")
    return {"dir": d, "good": good, "dcz": dcz, "weights_only": weights_only, "models": models,
            "x": x, "arrays": arrays}


def _cases(f) -> list:
    """(id, argv, output path or None, whether exit 0 is also acceptable)."""
    out = str(f["dir"] / "out.file")
    cases = []
    for name, p in f["dcz"].items():
        # decode only reads the tensors: a file whose graph is bad may still decode.
        graph_only = name.startswith("graph_")
        cases += [
            (f"info-{name}", ["info", str(p)], None, False),
            (f"info-json-{name}", ["info", str(p), "--json"], None, False),
            (f"decode-{name}", ["decode", str(p), out], out, graph_only),
            (f"run-{name}", ["run", str(p), "--input", str(f["x"])], None, False),
            (f"run-output-{name}", ["run", str(p), "--input", str(f["x"]), "--output", out], out, False),
        ]
    cases.append(("run-weights-only-no-arch", ["run", str(f["weights_only"]), "--input", str(f["x"])], None, False))
    cases.append(("run-wrong-arch", ["run", str(f["good"]), "--arch", "deepcomp:lenet300", "--input",
                                     str(f["x"])], None, False))
    for name, p in f["models"].items():
        cases.append((f"encode-{name}", ["encode", str(p), out], out, False))
        cases.append((f"encode-arch-{name}", ["encode", str(p), out, "--arch", "deepcomp:lenet5"], out, False))
        cases.append((f"compress-{name}", ["compress", str(p), out, "--arch", "deepcomp:lenet5", "--data",
                                           "fashion-mnist", "--data-dir", str(f["dir"]), "--quiet"], out, False))
    for name, p in f["arrays"].items():
        cases.append((f"run-input-{name}", ["run", str(f["good"]), "--input", str(p)], None, False))
    return cases


def _check(cid, argv, out, may_succeed, code, stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, f"{cid}: {' '.join(argv)}\n{stderr[-3000:]}"
    if may_succeed and code == 0:
        return
    assert code == 2, f"{cid}: exit {code}, stderr:\n{stderr[-2000:]}"
    assert len(lines) == 1, f"{cid}: {len(lines)} lines on stderr:\n{stderr[-2000:]}"
    assert lines[0].startswith(f"deepcomp {argv[0]}: error: "), lines[0]
    if out is not None:
        assert not os.path.exists(out), f"{cid}: left {out} behind"


def test_every_subcommand_refuses_crafted_files_in_one_line(files, capsys):
    failures = []
    for cid, argv, out, may_succeed in _cases(files):
        if out and os.path.exists(out):
            os.unlink(out)
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        except Exception as e:  # noqa: BLE001 - the traceback a user would see
            capsys.readouterr()
            failures.append(f"{cid}: untyped {type(e).__name__}: {e}")
            continue
        err = capsys.readouterr().err
        try:
            _check(cid, argv, out, may_succeed, code, err)
        except AssertionError as e:
            failures.append(str(e).splitlines()[0] + " | " + err.strip()[:200])
    assert not failures, f"{len(failures)} cases:\n" + "\n".join(failures)


def test_good_file_runs(files, capsys):
    assert cli.main(["info", str(files["good"])]) == 0
    assert cli.main(["run", str(files["good"]), "--input", str(files["x"])]) == 0


def test_pickle_payload_message_names_the_refused_global(files, capsys):
    code = cli.main(["encode", str(files["models"]["pickle_payload"]), str(files["dir"] / "o.dcz")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "posix.system" in err or "nt.system" in err, err
    assert err.endswith("if you trust the file"), err
    assert "PWNED" not in err


def _subprocess(argv):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "deepcomp", *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


FAST_SUBPROCESS = {"info-truncated", "decode-wrong_magic", "run-graph_nodes_bool",
                   "encode-pickle_payload", "compress-pickle_payload_in_zip", "run-input-object_array"}


@pytest.mark.parametrize("which", sorted(FAST_SUBPROCESS))
def test_subprocess_shows_no_traceback(files, which):
    case = {c[0]: c for c in _cases(files)}[which]
    cid, argv, out, may_succeed = case
    r = _subprocess(argv)
    assert "PWNED" not in r.stdout + r.stderr
    _check(cid, argv, out, may_succeed, r.returncode, r.stderr)


@pytest.mark.slow
def test_subprocess_whole_matrix(files):
    failures = []
    for cid, argv, out, may_succeed in _cases(files):
        if out and os.path.exists(out):
            os.unlink(out)  # a case that may succeed (decode of a bad graph) leaves its output
        r = _subprocess(argv)
        try:
            assert "PWNED" not in r.stdout + r.stderr
            _check(cid, argv, out, may_succeed, r.returncode, r.stderr)
        except AssertionError as e:
            failures.append(str(e)[:400])
    assert not failures, "\n".join(failures)


def test_brief_cuts_at_sentence_or_word():
    torch_msg = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the "
                 "`weights_only` argument in `torch.load` from `False` to `True`. Re-running `torch.load` "
                 "with `weights_only` set to `False` will likely succeed.")
    s = brief(torch_msg, 160)
    assert s.endswith("to `True`.") and torch_msg.startswith(s)
    s = brief("word " * 60, 50)
    assert s.endswith(" ...") and all(w == "word" for w in s[:-4].split())
    assert brief("a\n\tb  c", 100) == "a b c"
    assert brief("x" * 300, 100) == "x" * 100 + " ..."


def test_weights_only_reason():
    assert weights_only_reason("some other error") is None
    msg = ("Weights only load failed. Advice.\n\n\nTrying to load unsupported GLOBAL posix.system whose "
           "module posix is blocked.\n\nCheck the documentation of torch.load to learn more.")
    assert weights_only_reason(msg) == "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
