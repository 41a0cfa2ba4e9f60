"""Runtime modules and loading: the compressed model matches the decoded dense model."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import deepcomp
from deepcomp.codec import SharedSparse, decode
from deepcomp.errors import DczFormatError, ModelError
from deepcomp.models import get_model
from deepcomp.runtime import (RuntimeConv2d, RuntimeLinear, load, path_summary,
                              resident_weight_bytes, runtime_layers, set_policy)
from deepcomp.runtime import kernels
from deepcomp.runtime.weights import WeightForm

FP_POLICIES = ("exact", "sparse", "decode", "dense", "compact")
needs_native = pytest.mark.skipif(not kernels.native_available(), reason="native kernels missing")


def _dense_reference(name: str, path):
    model = get_model(name).eval()
    model.load_state_dict(decode(path))
    return model


def _save(tmp_path, name, **kw):
    torch.manual_seed(0)
    p = tmp_path / (name.split(":")[1] + ".dcz")
    deepcomp.save(get_model(name), p, prune="sparsity:0.9", bits={"fc": 5, "conv": 8}, **kw)
    return p


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lenet")
    return {n: _save(d, n) for n in ("deepcomp:lenet300", "deepcomp:lenet5")}


@pytest.mark.parametrize("name", ["deepcomp:lenet300", "deepcomp:lenet5"])
@pytest.mark.parametrize("policy", FP_POLICIES)
@pytest.mark.parametrize("batch", [1, 13])
def test_fp_paths_match_decoded_dense_model(lenet_files, name, policy, batch):
    p = lenet_files[name]
    ref_model = _dense_reference(name, p)
    m = load(p, policy=policy)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref, out = ref_model(x), m(x)
    paths = {path for d in path_summary(m).values() for path in d.values()}
    # 'compact' may take int8 where it is faster and fits the memory bar; then its outputs
    # are within int8's stated error (test_runtime_compact.py), else exact.
    tol = 0.03 if policy == "compact" and "int8" in paths else 1e-4
    assert (out - ref).abs().max().item() <= tol * ref.abs().max().item()
    if policy == "sparse":
        assert paths == {"sparse"}
    if policy == "exact":
        assert "int8" not in paths


def test_file_form_is_kept_compressed(lenet_files):
    m = load(lenet_files["deepcomp:lenet300"])
    kinds = {l.layer_name: l.form.kind for l in runtime_layers(m)}
    assert set(kinds.values()) == {"csr_codebook"}
    # Loading builds no dense or int8 copy: that waits for the first input.
    assert all(not l._prepared for l in runtime_layers(m))
    dense_bytes = sum(v.numel() * 4 for v in decode(lenet_files["deepcomp:lenet300"]).values())
    set_policy(m, "compact")
    m(torch.randn(4, 784))
    assert resident_weight_bytes(m) * 8 <= dense_bytes


@needs_native
def test_int8_path_is_close(lenet_files):
    p = lenet_files["deepcomp:lenet5"]
    ref_model = _dense_reference("deepcomp:lenet5", p)
    m = load(p, policy="int8")
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = ref_model(x), m(x)
    assert {p for d in path_summary(m).values() for p in d.values()} == {"int8"}
    # 8-bit weights and 7-bit activations: about a percent of the output scale.
    assert (out - ref).abs().max().item() <= 0.05 * ref.abs().max().item()


@needs_native
def test_int8_accuracy_on_fashion_mnist(tmp_path):
    # The whole 10,000-image test set; a few seconds, so it stays in the fast suite.
    from deepcomp.data import fashion_mnist
    from deepcomp.models import load_checkpoint

    ds = fashion_mnist("test")
    p = tmp_path / "l300.dcz"
    # One-shot pruning without retraining: mild, so that the model stays accurate.
    deepcomp.save(load_checkpoint("deepcomp:lenet300"), p, prune="sparsity:0.5", bits={"fc": 6})
    ref_model = _dense_reference("deepcomp:lenet300", p)
    m = load(p, policy="int8")
    with torch.no_grad():
        ref = ref_model(ds.images).argmax(1)
        got = torch.cat([m(ds.images[i:i + 500]) for i in range(0, len(ds), 500)]).argmax(1)
    acc_ref = (ref == ds.targets).float().mean().item() * 100
    acc = (got == ds.targets).float().mean().item() * 100
    assert acc_ref > 50  # a trained model, not noise
    assert abs(acc - acc_ref) <= 0.3, (acc, acc_ref)


def test_choice_is_cached_per_batch_size_and_unused_forms_are_freed(lenet_files):
    m = load(lenet_files["deepcomp:lenet300"], policy="exact")
    fc1 = runtime_layers(m)[0]
    m(torch.randn(1, 784))
    m(torch.randn(1, 784))
    m(torch.randn(32, 784))
    keys = list(fc1.chosen())
    assert sorted(k[0] for k in keys) == [(1, 784), (32, 784)]
    assert set(fc1.timings[keys[0]]) == {"sparse", "decode", "dense"}  # all fp32 paths measured
    assert set(fc1._prepared) == set(fc1.chosen().values())
    set_policy(m, "sparse")
    assert not fc1.chosen() and not fc1._prepared


def test_weights_only_file_needs_a_model(tmp_path):
    p = _save(tmp_path, "deepcomp:lenet300", graph=False)
    with pytest.raises(ModelError, match="weights only"):
        load(p)
    m = load(p, model=get_model("deepcomp:lenet300"), policy="sparse")
    assert isinstance(m.fc1, RuntimeLinear)
    ref_model = _dense_reference("deepcomp:lenet300", p)
    x = torch.randn(3, 784)
    with torch.no_grad():
        assert (m(x) - ref_model(x)).abs().max() <= 1e-4 * ref_model(x).abs().max()


def test_model_swap_keeps_other_layers(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    net.bn.running_mean.uniform_(-1, 1)
    p = tmp_path / "net.dcz"
    deepcomp.save(net.state_dict(), p, prune="sparsity:0.5", bits={"fc": 5, "conv": 6})
    ref = Net().eval()
    ref.load_state_dict(decode(p))
    m = load(p, model=Net(), policy="sparse")
    assert isinstance(m.conv, RuntimeConv2d) and isinstance(m.bn, nn.BatchNorm2d)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert (m(x) - ref(x)).abs().max() <= 1e-4 * ref(x).abs().max()


def test_file_with_graph_and_non_persistent_buffer_loads_into_the_model(tmp_path):
    # A graph capture stores non-persistent buffers (BERT's position_ids) that the model's
    # state_dict() leaves out; load(model=...) must take them, and refuse a wrong shape.
    class Net(nn.Module):
        def __init__(self, n=6):
            super().__init__()
            self.fc = nn.Linear(6, 4)
            self.register_buffer("offset", torch.zeros(n), persistent=False)

        def forward(self, x):
            return self.fc(x + self.offset)

    torch.manual_seed(0)
    net = Net().eval()
    net.offset.uniform_(-1, 1)
    p = tmp_path / "net.dcz"
    deepcomp.save({**net.state_dict(), "offset": net.offset.clone()}, p, bits={"fc": 8})
    assert "offset" in decode(p)
    m = load(p, model=Net(), policy="exact")
    assert torch.equal(m.offset, net.offset)
    ref = Net().eval()
    ref.load_state_dict({k: v for k, v in decode(p).items() if k != "offset"})
    ref.offset.copy_(net.offset)
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert (m(x) - ref(x)).abs().max() <= 1e-5 * ref(x).abs().max()
    with pytest.raises(ModelError, match="offset"):
        load(p, model=Net(n=6 + 1))


def test_wrong_model_is_refused(lenet_files):
    with pytest.raises(ModelError, match="fc1.weight|conv1"):
        load(lenet_files["deepcomp:lenet300"], model=get_model("deepcomp:lenet5"))


def test_bad_inputs_give_clear_errors(lenet_files):
    m = load(lenet_files["deepcomp:lenet5"])
    with pytest.raises(ModelError, match="shape"):
        m(torch.randn(2, 1, 30, 28))
    with pytest.raises(ModelError, match="floating point"):
        m(torch.zeros(2, 1, 28, 28, dtype=torch.int64))
    m300 = load(lenet_files["deepcomp:lenet300"])
    with pytest.raises(ModelError, match="784 input features"):
        m300(torch.randn(2, 100))
    with pytest.raises(ModelError, match="no such file"):
        load(lenet_files["deepcomp:lenet300"].with_name("missing.dcz"))


def test_corrupt_sparse_form_is_refused():
    good = SharedSparse("w", (2, 3), np.array([0.5], np.float32), np.array([0, 1, 2], np.int32),
                        np.array([0, 2], np.uint16), np.array([0, 0], np.uint8))
    WeightForm.from_stored("w", good)
    bad_index = SharedSparse("w", (2, 3), good.codebook, good.indptr, np.array([0, 3], np.uint16), good.codes)
    with pytest.raises(DczFormatError, match="column index"):
        WeightForm.from_stored("w", bad_index)
    bad_code = SharedSparse("w", (2, 3), good.codebook, good.indptr, good.indices, np.array([0, 1], np.uint8))
    with pytest.raises(DczFormatError, match="code"):
        WeightForm.from_stored("w", bad_code)
    bad_ptr = SharedSparse("w", (2, 3), good.codebook, np.array([0, 2, 1], np.int32), good.indices, good.codes)
    with pytest.raises(DczFormatError, match="row pointers"):
        WeightForm.from_stored("w", bad_ptr)


def test_weight_form_from_dense_roundtrips():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 5, generator=g)
    w[w.abs() < 1.0] = 0
    w = torch.round(w * 4) / 4  # few distinct values: codebook form
    f = WeightForm.from_dense("w", w)
    assert f.kind == "csr_codebook"
    assert torch.equal(f.dense(), w)
    raw = torch.randn(300, 3, generator=g)  # more distinct values than a codebook holds
    f = WeightForm.from_dense("r", raw)
    assert f.kind == "raw" and torch.equal(f.dense(), raw)
    assert torch.equal(f.csr_from_raw().dense(), raw)


@needs_native
def test_threads_are_part_of_the_choice(lenet_files):
    m = load(lenet_files["deepcomp:lenet300"], policy="exact")
    fc1 = runtime_layers(m)[0]
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(1)
        m(torch.randn(2, 784))
        kernels.set_num_threads(2)
        m(torch.randn(2, 784))
    finally:
        kernels.set_num_threads(before)
    assert sorted(k[1] for k in fc1.chosen()) == [1, 2]


def test_big_layers_compare_paths_one_at_a_time(lenet_files, monkeypatch):
    from deepcomp.runtime import layers

    monkeypatch.setattr(layers, "_BIG_LAYER_BYTES", 0)  # every layer counts as big
    p = lenet_files["deepcomp:lenet5"]
    ref_model = _dense_reference("deepcomp:lenet5", p)
    m = load(p, policy="exact")
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref, out = ref_model(x), m(x)
    assert (out - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()
    for layer in runtime_layers(m):
        (times,) = layer.timings.values()
        direct = {"sparsekxk"} if isinstance(layer, RuntimeConv2d) else set()  # the direct sparse conv
        assert set(times) == {"sparse", "decode", "dense"} | direct
        assert set(layer._prepared) == set(layer.chosen().values())


def test_conv_choice_carries_over_to_bigger_batches(lenet_files):
    m = load(lenet_files["deepcomp:lenet5"], policy="exact")
    conv1 = runtime_layers(m)[0]
    assert isinstance(conv1, RuntimeConv2d)
    for n in (9, 40):
        m(torch.randn(n, 1, 28, 28))
    # 24 x 24 output positions: 8 samples already give 4,608 rows to time on, so both
    # batch sizes share one measurement (taken on 8 samples) but each ran.
    assert [k[0] for k in conv1.chosen()] == [(8, 1, 28, 28)]
    assert sorted(k[0][0] for k in conv1.used_paths) == [9, 40]


class _ZeroHead(nn.Module):
    """A zero-initialised head (torchvision's ViT) and an all-zero 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.mix = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 6 * 6, 16)
        self.head = nn.Linear(16, 4)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.head.weight)

    def forward(self, x):
        h = torch.relu(self.mix(torch.relu(self.conv(x)))).flatten(1)
        return self.head(torch.relu(self.fc(h))) + self.fc(h)[:, :4]


@pytest.mark.parametrize("coder", ["arithmetic", "huffman"])
@pytest.mark.parametrize("policy", ["compact", "exact", "auto", "sparse", "decode", "dense"])
def test_all_zero_weights_run(tmp_path, coder, policy):
    torch.manual_seed(0)
    model = _ZeroHead().eval()
    x = torch.randn(3, 3, 8, 8)
    p = tmp_path / "zero.dcz"
    deepcomp.save(model, p, example_inputs=x, **({"coder": "huffman"} if coder == "huffman" else {}))
    assert not decode(p)["head.weight"].any() and not decode(p)["mix.weight"].any()
    ref = _ZeroHead().eval()
    ref.load_state_dict(decode(p))
    with torch.no_grad():
        want = ref(x)
        got = load(p, policy=policy)(x)
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item())
