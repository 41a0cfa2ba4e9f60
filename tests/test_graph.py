"""Graph capture (deepcomp.graph): round trips through JSON and the executor, refusals."""
import copy
import json
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import deepcomp
from deepcomp.codec import decode, open_dcz
from deepcomp.errors import DczFormatError, UnsupportedOpError
from deepcomp.graph import GRAPH_VERSION, capture, validate
from deepcomp.graph import legacy
from deepcomp.models import get_model
from deepcomp.runtime import from_state_dict


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so that folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _roundtrip(model: nn.Module, x: torch.Tensor, **kw):
    """Capture, pass the graph through JSON text, rebuild with dense PyTorch paths, compare."""
    model.eval()
    with torch.no_grad():
        ref = model(x)
    graph, sd = capture(model, **kw)
    graph = json.loads(json.dumps(graph))  # what the file stores is text
    rt = from_state_dict(sd, graph, policy="dense")
    with torch.no_grad():
        out = rt(x)
    assert out.shape == ref.shape
    err = (out - ref).abs().max().item()
    assert err <= 1e-4 * ref.abs().max().item(), err
    return graph, sd


def test_lenet300_roundtrip():
    torch.manual_seed(0)
    graph, sd = _roundtrip(get_model("deepcomp:lenet300"), torch.randn(5, 1, 28, 28))
    assert [n["op"] for n in graph["nodes"]] == ["flatten", "linear", "relu", "linear", "relu", "linear"]
    assert set(sd) == {f"fc{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")}
    assert graph["version"] == legacy.GRAPH_VERSION  # without example inputs fx's v1 graph stays


def test_lenet300_with_example_inputs_is_version_2():
    torch.manual_seed(0)
    model = get_model("deepcomp:lenet300")
    graph, sd = _roundtrip(model, torch.randn(5, 1, 28, 28), example_inputs=torch.randn(2, 1, 28, 28))
    assert graph["version"] == GRAPH_VERSION
    assert graph["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 1, 28, 28]}]
    assert [n["op"] for n in graph["nodes"]].count("linear") == 3


def test_lenet5_roundtrip():
    # LeNet5.forward branches on x.dim(): fx cannot trace that, torch.export specialises it.
    torch.manual_seed(0)
    graph, sd = _roundtrip(get_model("deepcomp:lenet5"), torch.randn(3, 1, 28, 28),
                           example_inputs=torch.randn(2, 1, 28, 28))
    ops = [n["op"] for n in graph["nodes"]]
    assert ops.count("conv2d") == 2 and ops.count("linear") == 2 and ops.count("max_pool2d") == 2
    assert graph["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    assert "conv1.weight" in sd and "fc2.bias" in sd


def test_resnet18_roundtrip_with_batchnorm_folded():
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10))
    graph, sd = _roundtrip(model, torch.randn(2, 3, 64, 64))
    ops = [n["op"] for n in graph["nodes"]]
    assert "add" in ops and "adaptive_avg_pool2d" in ops
    assert not any("bn" in k or "running" in k for k in sd)  # every BatchNorm was folded
    assert all(n["attrs"]["bias"] for n in graph["nodes"] if n["op"] == "conv2d")
    assert ops.count("conv2d") == 20


def test_resnet18_v2_folds_batchnorm_and_frees_the_image_size():
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10))
    graph, sd = _roundtrip(model, torch.randn(2, 3, 40, 40), example_inputs=torch.randn(2, 3, 32, 32))
    assert graph["inputs"][0]["shape"] == ["batch", 3, None, None]
    assert not any("running" in k for k in sd)
    assert [n["op"] for n in graph["nodes"]].count("conv2d") == 20


def test_capture_does_not_change_the_model():
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10)).train()
    before = copy.deepcopy(model.state_dict())
    capture(model)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class _Zoo(nn.Module):
    """Many allow-listed ops in one model: view with a computed size, cat, avg pool,
    softmax, dropout, identity, BatchNorm1d after a linear, functional relu."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.branch = nn.Conv2d(8, 4, 1)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.ident = nn.Identity()
        self.fc = nn.Linear(12 * 4 * 4, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 5)
        self.soft = nn.Softmax(dim=1)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = torch.cat([x, self.branch(x)], dim=1)
        x = F.max_pool2d(self.pool(x), kernel_size=2, stride=2)
        x = self.ident(self.drop(x))
        x = x.view(x.size(0), -1)
        x = F.dropout(F.relu(self.bn1(self.fc(x))), p=0.1, training=self.training)
        return self.soft(self.head(x))


def test_many_ops_roundtrip():
    torch.manual_seed(0)
    graph, sd = _roundtrip(_randomise_bn(_Zoo()), torch.randn(4, 3, 16, 16))
    ops = [n["op"] for n in graph["nodes"]]
    for op in ("cat", "avg_pool2d", "max_pool2d", "reshape", "softmax"):
        assert op in ops
    reshape = next(n for n in graph["nodes"] if n["op"] == "reshape")
    assert isinstance(reshape["attrs"]["shape"][0], dict)  # the batch size stays free (v1)
    # A different batch size runs too.
    rt = from_state_dict(sd, graph, policy="dense")
    assert rt(torch.randn(7, 3, 16, 16)).shape == (7, 5)


def test_exported_program_roundtrip():
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    ep = torch.export.export(model, (x,))
    graph, sd = capture(ep)
    rt = from_state_dict(sd, json.loads(json.dumps(graph)), policy="dense")
    with torch.no_grad():
        ref, out = model(x), rt(x)
    assert (out - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


class _Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, x):
        return self.act(self.fc(x))


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sigmoid(self.fc(x)) * 0.5 - x.mean(dim=1, keepdim=True)


class _LoneBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.bn(x))


class _Masked(nn.Module):
    """Attention-mask arithmetic: integer mask -> bool -> where, with a stored buffer."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.register_buffer("pos", torch.arange(16).unsqueeze(0))

    def forward(self, ids, mask):
        h = self.emb(ids) + self.emb(self.pos[:, :ids.shape[1]] % 10)
        keep = (mask == 1).unsqueeze(-1)
        return torch.where(keep, h, torch.zeros_like(h)).sum(dim=1), h


@pytest.mark.parametrize("model, ops", [
    (_Gelu(), {"gelu"}), (_Sigmoid(), {"sigmoid", "mean", "mul", "sub"}), (_LoneBN(), {"batch_norm"}),
])
def test_new_ops_roundtrip(model, ops):
    torch.manual_seed(0)
    _randomise_bn(model)
    graph, _ = _roundtrip(model, torch.randn(5, 4), example_inputs=torch.randn(3, 4))
    assert ops <= {n["op"] for n in graph["nodes"]}


class _Shifted(nn.Module):
    """Swin's pieces: pad, roll (arange, fmod, index_select), a mask built by slice
    assignment into a fresh tensor (slice_scatter, copy), F.normalize (a vector norm),
    a linear layer with a computed bias and one with a computed weight."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.q_bias = nn.Parameter(torch.randn(3))
        self.w2 = nn.Parameter(torch.randn(5, 6))

    def forward(self, x):
        y = F.pad(x, (0, 1, 0, 2), value=0.5)  # (B, 4, 7, 6)
        y = torch.roll(y, shifts=(-2, 3), dims=(2, 3))
        mask = y.new_zeros((7, 6))
        mask[:3, :] = 1.0
        mask[3:, 4:] = 2.0
        t = (y + mask).flatten(2).transpose(1, 2)  # (B, 42, 4)
        t = F.normalize(t, dim=-1) + t.abs().amax(-1, keepdim=True) * F.normalize(t, p=1, dim=-1)
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias)])
        h = F.linear(t, self.fc.weight, bias)
        return F.linear(h, self.w2 * 0.5).mean(1)


def test_swin_pieces_roundtrip():
    torch.manual_seed(0)
    graph, sd = _roundtrip(_Shifted(), torch.randn(3, 4, 5, 5), example_inputs=torch.randn(2, 4, 5, 5))
    ops = [n["op"] for n in graph["nodes"]]
    for op in ("pad", "index_select", "fmod", "slice_scatter", "sqrt", "matmul", "linear"):
        assert op in ops, op
    pad = next(n for n in graph["nodes"] if n["op"] == "pad")
    assert pad["a"] == {"pad": [0, 1, 0, 2], "value": 0.5}
    # the layer with a stored weight stays a compressed layer; its computed bias follows it
    lin = next(n for n in graph["nodes"] if n["op"] == "linear")
    assert lin["a"]["w"] == "fc.weight" and lin["a"]["b"] is None
    assert "w2" in sd and "fc.weight" in sd


class _Resize(nn.Module):
    """Segmentation heads' resizing in every stored form: to a size, by an integer and a
    fractional factor (torch samples by the factor, not the sizes), align_corners."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.conv(x)  # 4 x 5 x 5 for 10 x 10 images
        a = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        b = F.interpolate(y, size=(10, 10), mode="bilinear", align_corners=True)
        c = F.interpolate(y, scale_factor=2.0, mode="nearest")
        d = F.interpolate(y, scale_factor=2.1, mode="bilinear")  # 5 * 2.1 -> 10, sampled at 1/2.1
        e = F.interpolate(y, size=(10, 10), mode="nearest-exact")
        return a + b + c + d + e


def test_interpolate_roundtrip():
    torch.manual_seed(0)
    graph, _ = _roundtrip(_Resize(), torch.randn(3, 3, 10, 10), example_inputs=torch.randn(2, 3, 10, 10))
    got = sorted((n["a"]["mode"], n["a"]["align"], n["a"].get("scale") is not None)
                 for n in graph["nodes"] if n["op"] == "interpolate")
    assert got == [("bilinear", False, False), ("bilinear", False, True), ("bilinear", True, False),
                   ("nearest", False, True), ("nearest-exact", False, False)]


class _Positions(nn.Module):
    """Token-side ops of RoBERTa (cumsum position ids), DeBERTa (bitwise_not of a mask),
    T5 (log-spaced relative buckets) and LLaMA (rotary cos / sin)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.pos = nn.Embedding(40, 8)

    def forward(self, ids, mask):
        keep = mask.bool()
        pos = torch.cumsum(keep.int(), dim=1) * keep + 1
        h = self.emb(ids) + self.pos(pos)
        rel = torch.log(pos.float() + 1.0) / 3.0
        ang = rel.unsqueeze(-1) * torch.arange(8).float()
        h = h * torch.cos(ang) + torch.sin(ang)
        return torch.where((~keep).unsqueeze(-1), torch.zeros_like(h), h).sum(1)


def test_token_position_ops_roundtrip():
    torch.manual_seed(0)
    model = _Positions().eval()
    ex = {"ids": torch.randint(0, 20, (2, 6)), "mask": torch.ones(2, 6, dtype=torch.long)}
    graph, sd = capture(model, ex)
    graph = json.loads(json.dumps(graph))
    assert {"cumsum", "log", "cos", "sin", "bitwise_not"} <= {n["op"] for n in graph["nodes"]}
    rt = from_state_dict(sd, graph, policy="dense")
    for b, t in ((1, 3), (4, 9)):
        ids, mask = torch.randint(0, 20, (b, t)), (torch.rand(b, t) > 0.3).long()
        with torch.no_grad():
            ref, out = model(ids, mask), rt(ids, mask)
        assert torch.allclose(ref, out, atol=1e-5)


def test_decoder_cache_output_names_the_fix():
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                      vocab_size=50)
    ex = {"input_ids": torch.randint(0, 50, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    with pytest.raises(UnsupportedOpError, match="use_cache = False"):
        capture(LlamaModel(cfg).eval(), ex)


def test_token_inputs_get_batch_and_seq_symbols():
    torch.manual_seed(0)
    model = _Masked().eval()
    ex = {"ids": torch.randint(0, 10, (2, 6)), "mask": torch.ones(2, 6, dtype=torch.long)}
    graph, sd = capture(model, ex)
    graph = json.loads(json.dumps(graph))
    assert [i["shape"] for i in graph["inputs"]] == [["batch", "seq"], ["batch", "seq"]]
    assert graph["symbols"]["seq"] == [1, 16] and graph["out"] == "tuple"
    assert "pos" in sd and sd["pos"].dtype == torch.int64  # a buffer is a file tensor
    rt = from_state_dict(sd, graph, policy="dense")
    for b, t in ((1, 3), (4, 9)):
        ids, mask = torch.randint(0, 10, (b, t)), (torch.rand(b, t) > 0.5).long()
        with torch.no_grad():
            ref, out = model(ids, mask), rt(mask=mask, ids=ids)  # by name, any order
        for r, o in zip(ref, out):
            assert torch.allclose(r, o, atol=1e-6)
    from deepcomp.errors import ModelError
    with pytest.raises(ModelError, match="seq"):
        rt(torch.zeros(1, 17, dtype=torch.long), torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ModelError, match="another input"):
        rt(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ModelError, match="int64"):
        rt(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ModelError, match="embedding"):
        rt(torch.full((1, 3), 99), torch.zeros(1, 3, dtype=torch.long))  # index out of the table


class _Cumprod(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x).cumprod(1)


def test_unsupported_ops_are_named():
    with pytest.raises(UnsupportedOpError, match="cumprod"):
        capture(_Cumprod(), torch.randn(2, 4))


def test_unsupported_model_is_saved_weights_only(tmp_path):
    p = tmp_path / "cumprod.dcz"
    with pytest.warns(UserWarning, match="cumprod"):
        deepcomp.save(_Cumprod(), p, example_inputs=torch.randn(2, 4))
    assert open_dcz(p).graph is None
    with pytest.raises(UnsupportedOpError, match="cumprod"):
        deepcomp.save(_Cumprod(), tmp_path / "again.dcz", graph=True, example_inputs=torch.randn(2, 4))


def test_graph_is_stored_in_the_file(tmp_path):
    model = get_model("deepcomp:lenet300")
    p = tmp_path / "m.dcz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deepcomp.save(model, p)
    graph, sd = capture(model)
    assert open_dcz(p).graph == json.loads(json.dumps(graph))
    dec = decode(p)  # save() shares weights by default, so compare what it keeps
    assert {k: tuple(v.shape) for k, v in dec.items()} == {k: tuple(v.shape) for k, v in sd.items()}


def _good_graph():
    graph, _ = legacy.capture(get_model("deepcomp:lenet300"))
    return json.loads(json.dumps(graph))


@pytest.mark.parametrize("mutate, message", [
    (lambda g: g["nodes"][1].__setitem__("op", "exec"), "unknown op"),
    (lambda g: g["nodes"][1].__setitem__("inputs", ["later"]), "before it is defined"),
    (lambda g: g["nodes"][1]["attrs"].__setitem__("in_features", "784"), "in_features"),
    (lambda g: g["nodes"][1]["attrs"].pop("bias"), "missing"),
    (lambda g: g.__setitem__("version", GRAPH_VERSION + 1), "newer"),
    (lambda g: g["nodes"][0]["attrs"].__setitem__("start_dim", 9), "start_dim"),
    (lambda g: g.__setitem__("outputs", ["nowhere"]), "outputs"),
    (lambda g: g["nodes"][2].__setitem__("name", g["nodes"][1]["name"]), "used twice"),
    (lambda g: g["nodes"][0]["attrs"].__setitem__("start_dim", True), "start_dim"),
])
def test_validate_rejects_malformed_v1_graphs(mutate, message):
    g = _good_graph()
    validate(g)
    mutate(g)
    with pytest.raises(DczFormatError, match=message):
        validate(g)


def test_validate_checks_weight_shapes():
    graph, sd = legacy.capture(get_model("deepcomp:lenet300"))
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    validate(graph, shapes=shapes)
    shapes["fc2.weight"] = (100, 301)
    with pytest.raises(DczFormatError, match="fc2.weight"):
        validate(graph, shapes=shapes)


def test_capture_from_a_pt2_archive(tmp_path):
    from deepcomp.errors import ModelError
    from deepcomp.loaders import load_model_file

    torch.manual_seed(0)
    model = get_model("deepcomp:lenet5").eval()
    x = torch.randn(2, 1, 28, 28)
    path = tmp_path / "lenet5.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    loaded = load_model_file(path)
    rt = from_state_dict(loaded.obj, json.loads(json.dumps(loaded.graph)), policy="dense")
    y = torch.randn(5, 1, 28, 28)  # another batch size than the one exported with
    with torch.no_grad():
        assert (rt(y) - model(y)).abs().max() <= 1e-4 * model(y).abs().max()
    with pytest.raises(ModelError, match="no such file"):
        load_model_file(tmp_path / "missing.pt2")


def test_cli_runs_named_inputs_and_info_shows_the_graph(tmp_path, capsys):
    import numpy as np

    from deepcomp.cli import main

    torch.manual_seed(0)
    model = _Masked().eval()
    p = tmp_path / "masked.dcz"
    deepcomp.save(model, p, example_inputs=(torch.randint(0, 10, (2, 6)), torch.ones(2, 6, dtype=torch.long)))
    ids, mask = np.random.randint(0, 10, (3, 5)).astype(np.int64), np.ones((3, 5), np.int64)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "mask.npy", mask)
    out = tmp_path / "y.npz"
    assert main(["run", str(p), "--input", f"mask={tmp_path / 'mask.npy'}", "--input",
                 f"ids={tmp_path / 'ids.npy'}", "--output", str(out)]) == 0
    with open(out, "rb") as f:
        y = np.load(f)
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask))
        assert np.allclose(y["output_0"], ref[0].detach().numpy(), atol=1e-5)
    assert main(["run", str(p), "--input", f"nope={tmp_path / 'ids.npy'}"]) == 2
    assert "unknown input 'nope'" in capsys.readouterr().err
    assert main(["info", str(p)]) == 0
    text = capsys.readouterr().out
    assert "input  ids: int64 batchxseq" in text and "output (tuple)" in text and "embedding 2" in text
