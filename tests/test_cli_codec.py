"""`deepcomp encode / decode / info` end to end, in process and through the real entry point."""
import json
import subprocess
import sys

import pytest
import torch

import deepcomp
from deepcomp.cli import main
from deepcomp.models import get_model


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8))


@pytest.fixture
def lenet300_pt(tmp_path):
    torch.manual_seed(0)
    p = tmp_path / "lenet300.pt"
    torch.save(get_model("deepcomp:lenet300").state_dict(), p)
    return p


def info_json(path, capsys):
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_encode_info_decode(tmp_path, lenet300_pt, capsys):
    out = tmp_path / "m.dcz"
    assert main(["encode", str(lenet300_pt), str(out), "--prune", "sparsity:0.9", "--bits", "fc=5"]) == 0
    assert "wrote" in capsys.readouterr().out
    t = info_json(out, capsys)
    assert t["file_bytes"] == out.stat().st_size
    assert sum(r["bytes"] for r in t["tensors"]) + sum(o["bytes"] for o in t["overhead"]) == out.stat().st_size
    w = {r["name"]: r for r in t["tensors"]}["fc1.weight"]
    assert w["encoding"] == "ac_shared" and w["density"] == pytest.approx(0.1, abs=0.005)
    assert 1 <= w["weight_bits"] <= 5
    # ac_shared reports all of its bits (positions, values, codebook) per non-zero
    assert 0 < w["code_bits_per_symbol"] <= 12
    assert t["ratio"] > 20

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    total = [ln for ln in text.splitlines() if ln.startswith("total (= file size)")][0]
    assert str(out.stat().st_size) in total.split()

    dense = tmp_path / "dense.pt"
    assert main(["decode", str(out), str(dense)]) == 0
    sd = torch.load(dense, weights_only=True)
    ref = deepcomp.decode(out)
    assert list(sd) == list(ref) and all(same_bits(sd[k], ref[k]) for k in sd)


def test_encode_without_bits_is_lossless_for_shared_models(tmp_path, lenet300_pt, capsys):
    first = tmp_path / "a.dcz"
    assert main(["encode", str(lenet300_pt), str(first), "--prune", "std:1.0"]) == 0
    dense = tmp_path / "a.pt"
    assert main(["decode", str(first), str(dense)]) == 0
    second = tmp_path / "b.dcz"
    assert main(["encode", str(dense), str(second)]) == 0
    a, b = deepcomp.decode(first), deepcomp.decode(second)
    assert all(same_bits(a[k], b[k]) for k in a)
    capsys.readouterr()


def test_encode_with_arch_stores_graph(tmp_path, lenet300_pt, capsys):
    out = tmp_path / "g.dcz"
    assert main(["encode", str(lenet300_pt), str(out), "--arch", "deepcomp:lenet300"]) == 0
    from deepcomp.codec import open_dcz

    f = open_dcz(out)
    assert isinstance(f.graph, dict) and f.meta["source_kind"].startswith("state_dict")
    assert main(["encode", str(lenet300_pt), str(out), "--arch", "deepcomp:lenet300", "--no-graph"]) == 0
    assert open_dcz(out).graph is None
    capsys.readouterr()


def test_encode_other_input_formats(tmp_path, capsys):
    from safetensors_writer import write_safetensors

    torch.manual_seed(1)
    m = get_model("deepcomp:lenet300").eval()
    sd = m.state_dict()
    st = tmp_path / "m.safetensors"
    write_safetensors(sd, st)
    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(m), ts)
    ep = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(2, 784),)), ep)
    for src in (st, ts, ep):
        out = tmp_path / (src.name + ".dcz")
        assert main(["encode", str(src), str(out), "--bits", "fc=6"]) == 0, src
        dec = deepcomp.decode(out)
        assert set(dec) >= {"fc1.weight", "fc3.bias"}
        assert torch.equal(dec["fc1.bias"], sd["fc1.bias"])
        assert torch.unique(dec["fc2.weight"]).numel() <= 64
    capsys.readouterr()


def test_pickled_module_needs_opt_in(tmp_path, capsys):
    p = tmp_path / "full.pt"
    torch.save(get_model("deepcomp:lenet300"), p)
    out = tmp_path / "o.dcz"
    assert main(["encode", str(p), str(out)]) == 2
    err = capsys.readouterr().err
    assert "--unsafe-pickle" in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["encode", str(p), str(out), "--unsafe-pickle"]) == 0
    assert out.exists()
    capsys.readouterr()


@pytest.mark.parametrize("content,args,match", [
    (b"hello, not a model", [], "not a model file"),
    (b"\x89DCZ\r\n\x1a\n\x02\0\0\0garbage", [], "shorter than the 20-byte prefix"),
    (None, [], "no such file"),
    ("sd", ["--bits", "fc=nine"], "--bits"),
    ("sd", ["--bits", "attn=4"], "unknown layer kind"),
    ("sd", ["--prune", "magic:3"], "prune"),
    ("sd", ["--arch", "deepcomp:lenet5"], "does not match"),
    ("sd", ["--arch", "nonsense"], "unknown model"),
])
def test_encode_user_errors_are_one_line(tmp_path, lenet300_pt, capsys, content, args, match):
    src = tmp_path / "in.pt"
    if content == "sd":
        src = lenet300_pt
    elif content is not None:
        src.write_bytes(content)
    out = tmp_path / "out.dcz"
    out.write_bytes(b"old")
    assert main(["encode", str(src), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith("deepcomp encode: error:") and err.count("\n") == 1
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_decode_and_info_errors(tmp_path, capsys):
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(b"\x89DCZ\r\n\x1a\n" + b"\0" * 40)
    assert main(["decode", str(bad), str(tmp_path / "x.pt")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    assert main(["info", str(tmp_path / "missing.dcz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_console_entry_point(tmp_path, lenet300_pt):
    out = tmp_path / "c.dcz"
    r = subprocess.run([sys.executable, "-m", "deepcomp", "encode", str(lenet300_pt), str(out), "--bits", "fc=4"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "deepcomp", "info", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "fc1.weight" in r.stdout


def test_decode_to_a_directory_is_one_line_error(tmp_path, lenet300_pt, capsys):
    out = tmp_path / "m.dcz"
    assert main(["encode", str(lenet300_pt), str(out)]) == 0
    capsys.readouterr()
    assert main(["decode", str(out), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and err.count("\n") == 1
    assert main(["encode", str(lenet300_pt), str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_encode_snap_is_smaller_within_its_bound(tmp_path, lenet300_pt, capsys):
    exact, snapped = tmp_path / "a.dcz", tmp_path / "b.dcz"
    common = [str(lenet300_pt), "--prune", "sparsity:0.9", "--bits", "fc=5"]
    assert main(["encode", common[0], str(exact), *common[1:]]) == 0
    assert main(["encode", common[0], str(snapped), *common[1:], "--snap", "1e-3"]) == 0
    assert snapped.stat().st_size < exact.stat().st_size
    from deepcomp.codec.snap import max_rel_error

    assert 0 < max_rel_error(deepcomp.decode(exact), deepcomp.decode(snapped)) <= 1e-3
    for bad in ("0", "abc", "0.7"):
        assert main(["encode", common[0], str(tmp_path / "c.dcz"), *common[1:], "--snap", bad]) != 0
        assert "snap" in capsys.readouterr().err
        assert not (tmp_path / "c.dcz").exists()


def test_reencode_a_dcz_with_the_huffman_coder(tmp_path, lenet300_pt, capsys):
    small, fast = tmp_path / "a.dcz", tmp_path / "b.dcz"
    assert main(["encode", str(lenet300_pt), str(small), "--prune", "sparsity:0.9", "--bits", "fc=5",
                 "--arch", "deepcomp:lenet300"]) == 0
    # a .dcz is an input too: same tensors, its graph and meta carried over
    assert main(["encode", str(small), str(fast), "--coder", "huffman"]) == 0
    capsys.readouterr()
    t = info_json(fast, capsys)
    kinds = {r["name"]: r["encoding"] for r in t["tensors"]}
    assert not any(k.startswith("ac_") for k in kinds.values())
    assert kinds["fc1.weight"] == "shared_sparse"
    assert "ac_shared" in {r["encoding"] for r in info_json(small, capsys)["tensors"]}
    assert fast.stat().st_size > small.stat().st_size  # the arithmetic coder is smaller here
    a, b = deepcomp.decode(small), deepcomp.decode(fast)
    assert list(a) == list(b) and all(same_bits(a[k], b[k]) for k in a)
    from deepcomp.codec import open_dcz

    fa, fb = open_dcz(small), open_dcz(fast)
    assert fb.graph == fa.graph and fb.meta["prune"] == "sparsity:0.9"
    assert fb.meta["source"] == "lenet300.pt" and fb.meta["source_kind"] == "state_dict + deepcomp:lenet300"
    assert fb.meta["recoded_from"] == "a.dcz" and "recoded_from" not in fa.meta
    # and back again: the smallest coder gives the first file's tensor sections
    again = tmp_path / "c.dcz"
    assert main(["encode", str(fast), str(again)]) == 0
    capsys.readouterr()
    sizes = lambda p: {r["name"]: r["bytes"] for r in info_json(p, capsys)["tensors"]}  # noqa: E731
    assert sizes(again) == sizes(small)
    with pytest.raises(SystemExit) as e:
        main(["encode", str(small), str(tmp_path / "d.dcz"), "--coder", "rans"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err and not (tmp_path / "d.dcz").exists()
