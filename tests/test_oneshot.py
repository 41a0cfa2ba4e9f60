"""One-shot allocation (deepcomp.oneshot): --bits auto --max-rel-error, and calibrated min_cosine."""
import copy

import pytest
import torch
from torch import nn

import deepcomp
from deepcomp.cli import main
from deepcomp.codec import decode, open_dcz
from deepcomp.models import get_model
from deepcomp.oneshot import OneShotError, candidates, quantize, rel_error
from deepcomp.share import _layer_seed


@pytest.fixture
def lenet300_pt(tmp_path):
    torch.manual_seed(0)
    p = tmp_path / "lenet300.pt"
    torch.save(get_model("deepcomp:lenet300").state_dict(), p)
    return p


def _min_cosine(model, sd, items):
    """Worst per-sample cosine of model with ``sd`` loaded against model as it is."""
    other = copy.deepcopy(model).eval()
    other.load_state_dict(sd)
    model = model.eval()
    worst = 1.0
    with torch.no_grad():
        for x in items:
            a = model(x).reshape(x.shape[0], -1).double()
            b = other(x).reshape(x.shape[0], -1).double()
            worst = min(worst, float(torch.nn.functional.cosine_similarity(a, b, dim=1).min()))
    return worst


# ----------------------------------------------------------------------------- max_rel_error

def test_encode_max_rel_error_keeps_every_tensor_within_e(tmp_path, lenet300_pt, capsys):
    src = torch.load(lenet300_pt, weights_only=True)
    out = tmp_path / "auto.dcz"
    assert main(["encode", str(lenet300_pt), str(out), "--bits", "auto", "--max-rel-error", "0.04"]) == 0
    printed = capsys.readouterr().out
    sd = decode(out)
    plan = open_dcz(out).meta["oneshot"]
    assert plan["target"]["max_rel_error"] == 0.04
    assert set(plan["layers"]) == set(candidates(src)) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    for n, row in plan["layers"].items():
        assert n in printed
        err = rel_error(src[n], sd[n])
        assert err <= 0.04 and err == pytest.approx(row["rel_error"], abs=1e-6)
        assert torch.unique(sd[n]).numel() <= 2 ** row["bits"]
        # Fewest bits: one bit fewer (same k-means) would break the bound.
        if row["bits"] > 2:
            fewer = quantize(n, src[n], row["bits"] - 1)
            assert rel_error(src[n], fewer) > 0.04
    for n in ("fc1.bias", "fc2.bias", "fc3.bias"):
        assert torch.equal(sd[n], src[n])
    # The plan's bytes are the sections the file holds.
    f = open_dcz(out)
    for n, row in plan["layers"].items():
        assert row["bytes"] == f.record(n).length
    # Reproducible: the same command writes the same bytes.
    again = tmp_path / "again.dcz"
    assert main(["encode", str(lenet300_pt), str(again), "--bits", "auto", "--max-rel-error", "0.04"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_tighter_error_never_takes_fewer_bits(lenet300_pt, tmp_path):
    src = torch.load(lenet300_pt, weights_only=True)
    loose = deepcomp.save(src, tmp_path / "a.dcz", bits="auto", max_rel_error=0.1)["oneshot"]
    tight = deepcomp.save(src, tmp_path / "b.dcz", bits="auto", max_rel_error=0.01)["oneshot"]
    assert all(tight.bits[n] >= loose.bits[n] for n in loose.bits)
    assert sum(tight.bits.values()) > sum(loose.bits.values())
    assert (tmp_path / "b.dcz").stat().st_size > (tmp_path / "a.dcz").stat().st_size


def test_prune_auto_prunes_within_e(tmp_path, capsys):
    # Trained weights are peaked at zero (Laplace-like); there a magnitude cut is cheap in
    # L2 and the sparse layout pays. (Uniform init weights are better left dense.)
    g = torch.Generator().manual_seed(0)
    lap = torch.distributions.Laplace(0.0, 0.05)
    torch.manual_seed(0)
    src = {"fc1.weight": lap.sample((200, 300)), "fc1.bias": torch.randn(200),
           "fc2.weight": torch.randn(50, 200, generator=g) * 0.05}
    pt = tmp_path / "lap.pt"
    torch.save(src, pt)
    out = tmp_path / "p.dcz"
    assert main(["encode", str(pt), str(out), "--bits", "auto", "--prune", "auto",
                 "--max-rel-error", "0.2"]) == 0
    sd = decode(out)
    plan = open_dcz(out).meta["oneshot"]
    assert plan["target"]["prune"] == "auto"
    assert any(row["keep"] < 0.95 for row in plan["layers"].values())
    for n, row in plan["layers"].items():
        assert rel_error(src[n], sd[n]) <= 0.2
        kept = float((sd[n] != 0).float().mean())
        assert kept == pytest.approx(row["keep"], abs=1e-6)
    plain = tmp_path / "plain.dcz"
    assert main(["encode", str(pt), str(plain), "--bits", "auto", "--max-rel-error", "0.2"]) == 0
    assert out.stat().st_size <= plain.stat().st_size


def test_unreachable_bound_stores_the_tensor_exactly(tmp_path):
    torch.manual_seed(1)
    sd = {"fc.weight": torch.randn(40, 50), "fc.bias": torch.randn(40)}
    r = deepcomp.save(sd, tmp_path / "x.dcz", bits="auto", max_rel_error=1e-7)
    assert r["oneshot"].bits["fc.weight"] is None
    assert torch.equal(decode(tmp_path / "x.dcz")["fc.weight"], sd["fc.weight"])


@pytest.mark.parametrize("args,match", [
    (["--bits", "auto", "--max-rel-error", "0"], "above 0"),
    (["--bits", "auto", "--max-rel-error", "-0.1"], "above 0"),
    (["--bits", "auto", "--max-rel-error", "nan"], "above 0"),
    (["--bits", "auto", "--max-rel-error", "five"], "must be a number"),
    (["--max-rel-error", "0.05"], "--bits auto"),
    (["--bits", "fc=5", "--max-rel-error", "0.05"], "--bits auto"),
    (["--bits", "auto"], "--max-rel-error"),
    (["--prune", "auto"], "--bits auto"),
])
def test_encode_auto_user_errors_are_one_line(tmp_path, lenet300_pt, capsys, args, match):
    out = tmp_path / "out.dcz"
    out.write_bytes(b"old")
    assert main(["encode", str(lenet300_pt), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith("deepcomp encode: error:") and err.count("\n") == 1
    assert out.read_bytes() == b"old"


# ----------------------------------------------------------------------------- calibration

def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 96), nn.ReLU(), nn.Linear(96, 64), nn.Tanh(), nn.Linear(64, 16))


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 12, 3, padding=1)
        self.c2 = nn.Conv2d(12, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("make,shape,c", [(_mlp, (8, 32), 0.995), (_mlp, (8, 32), 0.98),
                                          (lambda: (torch.manual_seed(0), _CNN())[1], (4, 3, 16, 16), 0.99)])
def test_min_cosine_holds_on_calibration_inputs(tmp_path, make, shape, c):
    model = make().eval()
    g = torch.Generator().manual_seed(5)
    items = [torch.randn(*shape, generator=g) for _ in range(4)]
    out = tmp_path / "cal.dcz"
    r = deepcomp.save(model, out, bits="auto", calibration=items, min_cosine=c, graph=False)
    plan = r["oneshot"]
    sd = decode(out)
    measured = _min_cosine(model, sd, items)
    assert measured >= c
    assert plan.min_cosine == pytest.approx(measured, abs=1e-9)
    # It really allocates: something goes below 8 bits, and not everything to the floor.
    assert min(b or 32 for b in plan.bits.values()) < 8
    # The plan's byte price is the file's weight sections.
    assert plan.tensor_bytes == sum(r["tensors"][n]["bytes"] for n in plan.bits)
    meta = open_dcz(out).meta["oneshot"]
    assert meta["target"]["min_cosine"] == c and meta["min_cosine"] >= c
    assert {n: v["bits"] for n, v in meta["layers"].items()} == plan.bits


def test_lower_min_cosine_gives_a_smaller_file(tmp_path):
    model = _mlp().eval()
    g = torch.Generator().manual_seed(2)
    items = [torch.randn(8, 32, generator=g) for _ in range(3)]
    hi = deepcomp.save(model, tmp_path / "hi.dcz", bits="auto", calibration=items, min_cosine=0.999, graph=False)
    lo = deepcomp.save(model, tmp_path / "lo.dcz", bits="auto", calibration=items, min_cosine=0.95, graph=False)
    assert lo["oneshot"].tensor_bytes < hi["oneshot"].tensor_bytes


def test_tuple_inputs_and_dict_outputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 24)
            self.b = nn.Linear(8, 24)

        def forward(self, x, y):
            return {"out": self.a(x) + self.b(y), "aux": "not a tensor"}

    torch.manual_seed(0)
    from deepcomp.oneshot import calibrated_plan

    m = Two()
    items = [(torch.randn(5, 16), torch.randn(5, 8)) for _ in range(2)]
    sd, plan = calibrated_plan(m, items, 0.99)
    other = Two()
    other.load_state_dict(sd)
    with torch.no_grad():
        pairs = [(m(x, y)["out"].double(), other(x, y)["out"].double()) for x, y in items]
    for a, b in pairs:
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
        assert float(cos.min()) >= 0.99
    assert set(plan.bits) == {"a.weight", "b.weight"}


@pytest.mark.parametrize("kw,match", [
    (dict(bits="auto"), "needs a target"),
    (dict(bits="auto", min_cosine=0.99), "go together"),
    (dict(bits="auto", calibration="items"), "go together"),
    (dict(bits="auto", calibration=[], min_cosine=0.99), "empty"),
    (dict(bits="auto", calibration=[[1, 2]], min_cosine=0.99), r"calibration\[0\]"),
    (dict(bits="auto", calibration="CAL", min_cosine=1.5), "at most 1"),
    (dict(bits="auto", calibration="CAL", min_cosine="high"), "must be a number"),
    (dict(bits="auto", calibration="CAL", min_cosine=0.99, max_rel_error=0.1), "not both"),
    (dict(bits="auto", calibration="CAL", min_cosine=0.99, prune="auto"), "prune='auto'"),
    (dict(bits="auto", max_rel_error=-1), "above 0"),
    (dict(bits="auto", max_rel_error=True), "must be a number"),
    (dict(max_rel_error=0.1), "bits='auto'"),
    (dict(bits={"fc": 5}, min_cosine=0.9), "bits='auto'"),
    (dict(prune="auto"), "prune='auto'"),
    (dict(bits="auto", max_rel_error=0.1, weighting="activations"), "calibration"),
    (dict(bits="auto", calibration="CAL", min_cosine=0.99, weighting="fisher"), "unknown k-means weighting"),
    (dict(bits={"fc": 5}, weighting="activations"), "bits='auto'"),
    (dict(bits="auto", calibration="CAL", min_cosine=0.99, prune="sparsity:0.99"), "not reached"),
])
def test_save_auto_user_errors(tmp_path, kw, match):
    model = _mlp()
    if kw.get("calibration") == "CAL":
        kw["calibration"] = [torch.randn(4, 32)]
    out = tmp_path / "e.dcz"
    with pytest.raises(deepcomp.DeepcompError, match=match):
        deepcomp.save(model, out, graph=False, **kw)
    assert not out.exists()


def test_a_target_no_codebook_meets_keeps_tensors_exact(tmp_path):
    model = _mlp().eval()
    items = [torch.randn(4, 32)]
    r = deepcomp.save(model, tmp_path / "x.dcz", bits="auto", calibration=items,
                      min_cosine=0.9999999999, graph=False)
    sd = decode(tmp_path / "x.dcz")
    # The most sensitive tensors stay unshared; whatever is shared still meets the target.
    assert None in r["oneshot"].bits.values()
    for n, b in r["oneshot"].bits.items():
        if b is None:
            assert torch.equal(sd[n], model.state_dict()[n])
    assert _min_cosine(model, sd, items) >= 0.9999999999


def test_calibration_needs_the_module(tmp_path):
    with pytest.raises(OneShotError, match="nn.Module"):
        deepcomp.save(_mlp().state_dict(), tmp_path / "e.dcz", bits="auto",
                      calibration=[torch.randn(2, 32)], min_cosine=0.9)


def test_share_matches_the_writers_kmeans():
    # The plan's quantizer is deepcomp.share with the planner's per-layer seed.
    from deepcomp.share import share_tensor

    w = torch.randn(30, 20)
    assert torch.equal(quantize("x.weight", w, 4, init="forgy", seed=3),
                       share_tensor(w, 4, "forgy", _layer_seed(3, "x.weight")))


def test_activation_importance_is_each_inputs_mean_square():
    from deepcomp.oneshot import _activation_importance

    model = _mlp().eval()
    items = [torch.randn(5, 32), torch.randn(3, 32)]
    imp = _activation_importance(model, candidates(model.state_dict()), [(x,) for x in items])
    assert set(imp) == {"0.weight", "2.weight", "4.weight"}
    x = torch.cat(items).double()
    want = (x * x).mean(0)
    want = (want + 0.01 * want.mean()).float()
    assert imp["0.weight"].shape == (96, 32)
    torch.testing.assert_close(imp["0.weight"][7], want)
    # The second layer sees the first one's ReLU output.
    h = torch.relu(model[0](x.float())).double()
    m2 = (h * h).mean(0)
    torch.testing.assert_close(imp["2.weight"][0], (m2 + 0.01 * m2.mean()).float())


def test_weighted_kmeans_cuts_the_output_error_where_inputs_differ_in_scale():
    # One input feature 100x louder than the rest: plain k-means spends its centroids on
    # all weights alike; weighted by the inputs' mean squares it matches that feature's
    # weights more closely, which decide most of the output.
    from deepcomp.oneshot import _activation_importance

    ratios = []
    for seed in range(5):
        torch.manual_seed(seed)
        lin = nn.Linear(40, 24)
        scale = torch.ones(40)
        scale[0] = 100.0
        xs = [torch.randn(64, 40) * scale for _ in range(2)]
        imp = _activation_importance(nn.Sequential(lin), ["0.weight"], [(x,) for x in xs])["0.weight"]
        w = lin.weight.detach()
        plain = quantize("0.weight", w, 4)
        weighted = quantize("0.weight", w, 4, importance=imp)
        # What weighted k-means minimises (the diagonal model of the output error) is lower ...
        assert float((imp * (w - weighted) ** 2).sum()) < float((imp * (w - plain) ** 2).sum())
        x = torch.cat(xs)
        err = lambda q: float(((x @ (w - q).T) ** 2).mean())
        ratios.append(err(weighted) / err(plain))
    # ... and so is the real output error, by about half on average.
    assert sum(ratios) / len(ratios) < 0.75


def test_save_with_activation_weighting_meets_the_target_and_records_it(tmp_path):
    model = _mlp().eval()
    g = torch.Generator().manual_seed(5)
    items = [torch.randn(8, 32, generator=g) * torch.linspace(0.1, 10, 32) for _ in range(3)]
    out = tmp_path / "w.dcz"
    r = deepcomp.save(model, out, bits="auto", calibration=items, min_cosine=0.99, graph=False,
                      weighting="activations")
    assert _min_cosine(model, decode(out), items) >= 0.99
    assert r["oneshot"].target["weighting"] == "activations"
    assert open_dcz(out).meta["oneshot"]["target"]["weighting"] == "activations"


@pytest.mark.parametrize("target", [{"max_rel_error": 0.05}, {"min_cosine": 0.99}])
def test_huffman_coder_plans_in_its_own_bytes(tmp_path, target):
    model = _mlp().eval()
    g = torch.Generator().manual_seed(5)
    kw = dict(target)
    if "min_cosine" in kw:
        kw["calibration"] = [torch.randn(8, 32, generator=g) for _ in range(3)]
    out = tmp_path / "h.dcz"
    r = deepcomp.save(model, out, bits="auto", graph=False, coder="huffman", **kw)
    f = open_dcz(out)
    assert not any(f.record(n).encoding.startswith("ac_") for n in f.names)
    # priced with the coder that wrote the file: the plan's bytes are its sections
    assert r["oneshot"].tensor_bytes == sum(f.record(n).length for n in r["oneshot"].bits)
