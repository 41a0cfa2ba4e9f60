"""RuntimeConv2d's int8 path on the direct int8 convolution: what it runs, its memory, and
which policies may choose it."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcomp import ops
from deepcomp.runtime import RuntimeConv2d, kernels
from deepcomp.runtime import layers as L
from deepcomp.runtime.weights import WeightForm

pytestmark = pytest.mark.skipif(not kernels.native_available(), reason="native kernels missing")


def _layer(shape=(32, 16, 3, 3), stride=(2, 2), padding=(1, 1), sparsity=0.7, seed=0, relu=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    w[torch.rand(*shape, generator=g) < sparsity] = 0
    codebook = torch.linspace(-2, 2, 32)
    w = torch.where(w == 0, w, codebook[torch.bucketize(w.clamp(-2, 2), codebook).clamp(max=31)])
    form = WeightForm.from_dense("conv", w)
    bias = torch.randn(shape[0], generator=g)
    return RuntimeConv2d("conv", form, bias, stride=stride, padding=padding, relu=relu), w, bias


def test_int8_policy_runs_the_direct_kernel_with_fused_bias_and_relu():
    layer, w, bias = _layer()
    layer.set_policy("int8")
    x = torch.randn(3, 16, 15, 13)
    y = layer(x)
    st = layer._prepared["int8"]
    assert st[0] == "conv" and isinstance(st[1], ops.Int8ConvWeight)
    want = ops.conv2d_int8_direct(x, ops.pack_int8_conv(w), bias, 2, 1, relu=True)
    assert torch.equal(y, want)
    ref = torch.relu(F.conv2d(x, w, bias, 2, 1))
    assert float((y - ref).abs().max()) <= 0.05 * float(ref.abs().max())


def test_int8_form_is_a_quarter_of_dense():
    layer, w, _ = _layer(shape=(64, 64, 3, 3))
    layer.set_policy("int8")
    layer(torch.randn(1, 64, 8, 8))
    int8_bytes = sum(a.nbytes for a in kernels.state_arrays(layer._prepared["int8"]))
    dense_bytes = w.numel() * 4
    # int8 codes plus one scale and one row sum per output channel.
    assert int8_bytes <= dense_bytes / 4 + 8 * w.shape[0]


def test_exact_never_picks_int8_and_compact_only_with_a_file_to_reread(monkeypatch):
    layer, _, _ = _layer()
    assert "int8" in layer.candidates()
    for policy in ("exact", "compact"):
        layer.set_policy(policy)
        assert "int8" not in layer._allowed()
    # A layer loaded from a file may drop its file form for int8 (test_runtime_compact.py).
    layer.source = (L.FileSource("unused.dcz"), "conv")
    layer.set_policy("compact")
    assert "int8" in layer._allowed()
    layer.set_policy("exact")
    assert "int8" not in layer._allowed()
    # The lead's one switch turns int8 off for 'compact' again.
    monkeypatch.setattr(L, "COMPACT_ALLOWS_INT8", False)
    layer.set_policy("compact")
    assert "int8" not in layer._allowed()


def test_auto_measures_the_int8_candidate():
    layer, _, _ = _layer(shape=(64, 64, 3, 3), stride=(1, 1))
    layer.set_policy("auto")
    x = torch.randn(2, 64, 14, 14)
    layer(x)
    (times,) = layer.timings.values()
    assert "int8" in times and all(t > 0 for t in times.values())
    assert np.isfinite(list(times.values())).all()


def test_dilated_or_grouped_conv_has_no_int8_path():
    form = WeightForm.from_dense("conv", torch.randn(8, 4, 3, 3))
    assert "int8" not in RuntimeConv2d("c", form, dilation=(2, 2)).candidates()
    assert "int8" not in RuntimeConv2d("c", form, groups=2).candidates()
