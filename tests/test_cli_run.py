"""`deepcomp run`: outputs, data-set evaluation, comparison, JSON, and clear errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import deepcomp
from deepcomp.cli import main
from deepcomp.codec import decode
from deepcomp.models import get_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = get_model("deepcomp:lenet300")
    full = d / "l300.dcz"
    deepcomp.save(model, full, prune="sparsity:0.8", bits={"fc": 5})
    weights = d / "weights.dcz"
    deepcomp.save(model, weights, prune="sparsity:0.8", bits={"fc": 5}, graph=False)
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3)).numpy()
    np.save(d / "x.npy", x)
    return {"dir": d, "full": full, "weights": weights, "x": d / "x.npy"}


def _reference(path, x):
    m = get_model("deepcomp:lenet300").eval()
    m.load_state_dict(decode(path))
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def test_output_file_matches_dense_model(files, capsys):
    out = files["dir"] / "y.npy"
    rc = main(["run", str(files["full"]), "--input", str(files["x"]), "--output", str(out),
               "--batch", "4", "--policy", "exact"])
    assert rc == 0
    y = np.load(out, allow_pickle=False)
    ref = _reference(files["full"], np.load(files["x"]))
    assert y.shape == (6, 10)
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
    assert "latency median" in capsys.readouterr().out


def test_prints_outputs_and_top1(files, capsys):
    assert main(["run", str(files["full"]), "--input", str(files["x"])]) == 0
    text = capsys.readouterr().out
    ref = _reference(files["full"], np.load(files["x"]))
    assert f"top-1: {ref.argmax(1).tolist()}" in text


def test_compare_and_json(files, capsys):
    js = files["dir"] / "r.json"
    assert main(["run", str(files["full"]), "--input", str(files["x"]), "--compare",
                 "--policy", "sparse", "--json", str(js), "--threads", "1"]) == 0
    r = json.loads(js.read_text())
    for k in ("max_abs_diff", "latency_ms", "dense_latency_ms", "speed_ratio", "peak_rss_mb",
              "resident_weight_bytes"):
        assert k in r
    assert r["max_abs_diff"] <= 1e-4 * r["output_scale"]
    assert r["speed_ratio"] > 0 and r["threads"] == 1
    assert "largest output difference" in capsys.readouterr().out


def test_data_set_accuracy(files, capsys):
    js = files["dir"] / "acc.json"
    assert main(["run", str(files["full"]), "--data", "fashion-mnist", "--limit", "300",
                 "--batch", "64", "--compare", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    from deepcomp.data import fashion_mnist
    ds = fashion_mnist("test")
    m = get_model("deepcomp:lenet300").eval()
    m.load_state_dict(decode(files["full"]))
    with torch.no_grad():
        want = (m(ds.images[:300]).argmax(1) == ds.targets[:300]).float().mean().item() * 100
    assert r["dense_accuracy"] == pytest.approx(want)
    assert abs(r["accuracy"] - want) <= 1.0  # auto may pick int8 for some layers
    assert r["samples"] == 300 and r["latency_ms"]["batches"] == 4  # the last, short batch is not timed
    assert "top-1 accuracy" in capsys.readouterr().out


def test_weights_only_needs_arch(files, capsys):
    rc = main(["run", str(files["weights"]), "--input", str(files["x"])])
    err = capsys.readouterr().err
    assert rc == 2 and "weights only" in err and "--arch" in err
    assert len(err.strip().splitlines()) == 1
    out = files["dir"] / "yw.npy"
    assert main(["run", str(files["weights"]), "--input", str(files["x"]), "--arch",
                 "deepcomp:lenet300", "--output", str(out), "--policy", "exact", "--compare"]) == 0
    ref = _reference(files["weights"], np.load(files["x"]))
    assert np.abs(np.load(out) - ref).max() <= 1e-4 * np.abs(ref).max()


def _bad(files, name, arr=None, raw=None):
    p = files["dir"] / name
    if arr is not None:
        np.save(p, arr, allow_pickle=True)
    if raw is not None:
        p.write_bytes(raw)
    return p


@pytest.mark.parametrize("case, message", [
    ("shape", "784 input features"),
    ("dtype", "dtype int64"),
    ("pickle", "pickle"),
    ("missing_input", "no such input file"),
    ("missing_file", "no such file"),
    ("garbage", "cannot read"),
    ("scalar", "batch first"),
])
def test_bad_inputs_are_one_line_errors(files, capsys, case, message):
    dcz, x = files["full"], files["x"]
    if case == "shape":
        x = _bad(files, "s.npy", np.zeros((2, 5, 5), np.float32))
    elif case == "dtype":
        x = _bad(files, "d.npy", np.zeros((2, 784), np.int64))
    elif case == "pickle":
        x = _bad(files, "p.npy", np.array([{"a": 1}], dtype=object))
    elif case == "missing_input":
        x = files["dir"] / "nope.npy"
    elif case == "missing_file":
        dcz = files["dir"] / "nope.dcz"
    elif case == "garbage":
        x = _bad(files, "g.npy", raw=b"not numpy at all")
    elif case == "scalar":
        x = _bad(files, "sc.npy", np.float32(3.0))
    rc = main(["run", str(dcz), "--input", str(x)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_flag_errors(files, capsys):
    assert main(["run", str(files["full"]), "--input", str(files["x"]), "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main(["run", str(files["full"]), "--data", "mnist-digits"]) == 2
    assert "fashion-mnist" in capsys.readouterr().err


def test_command_line_entry_point(files):
    # The real command, in a fresh process: what a user types.
    r = subprocess.run([sys.executable, "-m", "deepcomp", "run", str(files["full"]), "--input",
                        str(files["x"]), "--batch", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "top-1:" in r.stdout
