"""Depthwise conv2d (deepcomp.ops.depthwise_conv2d): against torch, across the scalar /
ymm / zmm paths and thread counts, and its input checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcomp import _C, ops
from deepcomp.errors import OpInputError

# The vector paths fuse multiply and add (FMA), the scalar one and torch do not: outputs
# differ by a few ulps of the sum of |w * x| over the window.
REL_TOL = 4e-7

ACTS = {"none": lambda y: y, "relu": torch.relu, "relu6": F.relu6, "hardswish": F.hardswish}


def reference(x, w, b, stride, padding, activation="none"):
    y = F.conv2d(x, w[:, None], b, stride, padding, groups=x.shape[1])
    return ACTS[activation](y)


def tol(x, w, stride, padding):
    mag = F.conv2d(x.abs(), w.abs()[:, None], None, stride, padding, groups=x.shape[1])
    return REL_TOL * w.shape[1] * w.shape[2] * (float(mag.max()) + 1.0)


def _pairs(v):
    return (v, v) if isinstance(v, int) else v


def cases():
    """Awkward shapes: 1 / 7 / 33 channels, 1x1 / 3x3 / 5x5 / 3x2 kernels, strides 1, 2,
    (2, 1) and 3, every padding below the kernel, 1x1 images up to odd 13x6."""
    out = []
    for c in (1, 7, 33):
        for k in ((1, 1), (3, 3), (5, 5), (3, 2)):
            for stride in (1, 2, (2, 1), 3):
                for pad in range(0, k[0]):
                    for h, w in ((1, 1), (2, 5), (7, 9), (13, 6)):
                        padding = (pad, min(pad, k[1] - 1))
                        if h + 2 * padding[0] < k[0] or w + 2 * padding[1] < k[1]:
                            continue
                        out.append((c, k, stride, padding, (h, w)))
    return out


CASES = cases()


def run_cases(activation="relu", batch=2):
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for c, k, stride, padding, (h, w) in CASES:
        x = torch.randn(batch, c, h, w, generator=g)
        wt = torch.randn(c, *k, generator=g)
        b = torch.randn(c, generator=g)
        y = ops.depthwise_conv2d(x, wt, b, stride, padding, activation)
        ref = reference(x, wt, b, stride, padding, activation)
        assert y.shape == ref.shape, (c, k, stride, padding, h, w)
        err = float((y - ref).abs().max())
        assert err <= tol(x, wt, stride, padding), (c, k, stride, padding, h, w, err)
        worst = max(worst, err)
    return worst


def test_matches_torch_on_awkward_shapes(isa):
    assert len(CASES) > 300
    run_cases()


@pytest.mark.parametrize("activation", ["none", "relu6", "hardswish"])
def test_activations(isa, activation):
    g = torch.Generator().manual_seed(1)
    x = 4 * torch.randn(2, 33, 15, 11, generator=g)
    w = torch.randn(33, 3, 3, generator=g)
    b = torch.randn(33, generator=g)
    for stride in (1, 2):
        y = ops.depthwise_conv2d(x, w, b, stride, 1, activation)
        ref = reference(x, w, b, stride, 1, activation)
        torch.testing.assert_close(y, ref, rtol=0, atol=tol(x, w, stride, 1))


def test_accepts_conv2d_weight_layout_and_no_bias(isa):
    conv = torch.nn.Conv2d(16, 16, 5, stride=2, padding=2, groups=16, bias=False)
    x = torch.randn(1, 16, 20, 17)
    y = ops.depthwise_conv2d(x, conv.weight, None, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(y, conv(x), rtol=0, atol=tol(x, conv.weight[:, 0].detach(), 2, 2))


# MobileNetV2 / V3 / EfficientNet depthwise shapes (channels, size, kernel, stride).
NET_SHAPES = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 2), (192, 28, 3, 1), (960, 7, 3, 1),
              (72, 56, 5, 2), (240, 14, 5, 1), (672, 14, 5, 2)]


def _path(name):
    _C.set_force_scalar(name == "scalar")
    _C.set_allow_avx512(name == "zmm")


@pytest.mark.parametrize("c,size,k,stride", NET_SHAPES)
def test_paths_agree_on_network_shapes(c, size, k, stride):
    if not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    g = torch.Generator().manual_seed(c)
    x = torch.randn(2, c, size, size, generator=g)
    w = torch.randn(c, k, k, generator=g)
    b = torch.randn(c, generator=g)
    pad = k // 2
    outs = {}
    try:
        for name in ("scalar", "ymm", "zmm"):
            if name == "zmm":
                _path(name)
                if not _C.avx512_usable():
                    continue
            _path(name)
            outs[name] = ops.depthwise_conv2d(x, w, b, stride, pad, "relu6")
    finally:
        _C.set_force_scalar(False)
        _C.set_allow_avx512(True)
    ref = reference(x, w, b, stride, pad, "relu6")
    for name, y in outs.items():
        torch.testing.assert_close(y, ref, rtol=0, atol=tol(x, w, stride, pad), msg=name)
    if "zmm" in outs:  # same operations per lane in the same order
        assert torch.equal(outs["ymm"], outs["zmm"])


def test_thread_count_does_not_change_results(isa):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, 29, 31, generator=g)
    w = torch.randn(40, 3, 3, generator=g)
    before = (_C.get_num_threads(), _C.parallel_min_work())
    try:
        _C.set_parallel_min_work(0)
        outs = []
        for n in (1, 2, 3):
            _C.set_num_threads(n)
            outs.append(ops.depthwise_conv2d(x, w, None, 2, 1, "relu"))
    finally:
        _C.set_num_threads(before[0])
        _C.set_parallel_min_work(before[1])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_empty_batch():
    y = ops.depthwise_conv2d(torch.randn(0, 4, 5, 5), torch.randn(4, 3, 3), None, 1, 1)
    assert y.shape == (0, 4, 5, 5)


def test_bad_inputs_raise_typed_errors():
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(4, 3, 3)
    with pytest.raises(OpInputError, match="channels"):
        ops.depthwise_conv2d(torch.randn(1, 5, 8, 8), w)
    with pytest.raises(OpInputError, match=r"\[C, 1, kh, kw\]"):
        ops.depthwise_conv2d(x, torch.randn(4, 2, 3, 3))
    with pytest.raises(OpInputError, match="float32"):
        ops.depthwise_conv2d(x, w.double())
    with pytest.raises(OpInputError, match="smaller than the kernel"):
        ops.depthwise_conv2d(x, w, padding=3)
    with pytest.raises(OpInputError, match="stride"):
        ops.depthwise_conv2d(x, w, stride=0)
    with pytest.raises(OpInputError, match="larger than the padded input"):
        ops.depthwise_conv2d(torch.randn(1, 4, 1, 8), w)
    with pytest.raises(OpInputError, match="activation"):
        ops.depthwise_conv2d(x, w, activation="gelu")
    with pytest.raises(OpInputError, match="4-D"):
        ops.depthwise_conv2d(torch.randn(4, 8, 8), w)
    with pytest.raises(OpInputError, match="bias"):
        ops.depthwise_conv2d(x, w, bias=torch.randn(3))
    with pytest.raises(OpInputError, match="float32"):
        ops.depthwise_conv2d(x.double(), w)


def test_decoded_weight_is_small_next_to_the_model():
    """The runtime keeps a depthwise weight decoded: C * kh * kw floats."""
    from deepcomp.runtime import kernels as K
    from deepcomp.runtime.weights import WeightForm

    w = torch.randn(960, 1, 3, 3)
    form = WeightForm.from_dense("dw", torch.round(w * 4) / 4)  # few distinct values: codebook form
    st = K.depthwise_prepare(form)
    assert st.values.shape == (960, 3, 3) and st.values.nbytes == 960 * 9 * 4
    np.testing.assert_array_equal(st.values, form.dense_np().reshape(960, 3, 3))
