"""Sparse 1x1 conv2d as SpMM over channels (deepcomp.ops.conv1x1_*): against torch, across
the scalar / ymm / zmm paths and thread counts, input checks, and the runtime layer's
depthwise / sparse1x1 paths."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcomp import _C, ops
from deepcomp.errors import OpInputError
from deepcomp.runtime import kernels as K
from deepcomp.runtime.layers import RuntimeConv2d
from deepcomp.runtime.weights import WeightForm

REL_TOL = 4e-7  # times the number of terms, times the largest sum of |w * x|


def make_sparse(o, i, density, k=16, seed=0, empty_rows=True, index_dtype=np.uint16):
    rng = np.random.default_rng(seed)
    mask = rng.random((o, i)) < density
    if empty_rows and o > 2:
        mask[rng.choice(o, size=max(1, o // 4), replace=False)] = False
    codebook = rng.standard_normal(k).astype(np.float32)
    codes_full = rng.integers(0, k, size=(o, i)).astype(np.uint8)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    indices = np.nonzero(mask)[1].astype(index_dtype)
    dense = torch.from_numpy(np.where(mask, codebook[codes_full], 0).astype(np.float32))
    return dense, indptr, indices, codes_full[mask], codebook


def reference(x, w, b, stride=1, activation="none"):
    y = F.conv2d(x, w[:, :, None, None], b, stride)
    return {"none": y, "relu": torch.relu(y), "relu6": F.relu6(y), "hardswish": F.hardswish(y)}[activation]


def tol(x, w, stride=1):
    mag = F.conv2d(x.abs(), w.abs()[:, :, None, None], None, stride)
    return REL_TOL * max(1, w.shape[1]) * (float(mag.max()) if mag.numel() else 0.0) + 1e-6


SHAPES = [(1, 1), (7, 33), (33, 7), (64, 96), (20, 300)]
IMAGES = [(1, 1), (7, 7), (9, 13), (28, 28), (5, 30)]


@pytest.mark.parametrize("o,i", SHAPES)
def test_codebook_matches_torch(isa, o, i):
    g = torch.Generator().manual_seed(o * 100 + i)
    for h, w in IMAGES:
        for batch in (1, 3):
            dense, indptr, indices, codes, codebook = make_sparse(o, i, 0.3, seed=h * w + batch)
            x = torch.randn(batch, i, h, w, generator=g)
            b = torch.randn(o, generator=g)
            y = ops.conv1x1_codebook(x, indptr, indices, codes, codebook, o, b, activation="relu")
            ref = reference(x, dense, b, activation="relu")
            assert y.shape == ref.shape and y.is_contiguous()
            torch.testing.assert_close(y, ref, rtol=0, atol=tol(x, dense), msg=f"{o}x{i} on {h}x{w}, batch {batch}")


@pytest.mark.parametrize("activation", ["none", "relu6", "hardswish"])
@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
def test_fp32_values_int32_indices_stride_and_activations(isa, activation, stride):
    dense, indptr, indices, codes, codebook = make_sparse(24, 40, 0.5, seed=7, index_dtype=np.int32)
    w = ops.pack_csr(indptr, indices, codebook[codes], 24, 40)
    x = 3 * torch.randn(2, 40, 11, 14)
    b = torch.randn(24)
    y = ops.conv1x1_sparse_packed(x, w, b, stride, activation)
    ref = reference(x, dense, b, stride, activation)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=0, atol=tol(x, dense, stride))


def test_no_nonzeros_gives_the_bias(isa):
    indptr = np.zeros(6, np.int32)
    empty = np.zeros(0, np.uint16)
    x = torch.randn(2, 9, 5, 7)
    b = torch.randn(5)
    y = ops.conv1x1_codebook(x, indptr, empty, np.zeros(0, np.uint8), np.ones(4, np.float32), 5, b)
    torch.testing.assert_close(y, b[None, :, None, None].expand(2, 5, 5, 7).contiguous(), rtol=0, atol=0)
    y = ops.conv1x1_codebook(x, indptr, empty, np.zeros(0, np.uint8), np.ones(4, np.float32), 5, -b.abs() - 1,
                             activation="relu")
    assert torch.equal(y, torch.zeros_like(y))


# MobileNetV2 / ResNet-50 1x1 layers (out, in, image size), sparse to 70 %.
NET_SHAPES = [(96, 16, 112), (24, 144, 56), (192, 32, 28), (64, 384, 14), (1280, 320, 7), (256, 64, 56),
              (1024, 256, 14), (512, 2048, 7)]


@pytest.mark.parametrize("o,i,size", NET_SHAPES)
def test_paths_agree_on_network_shapes(o, i, size):
    if not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    dense, indptr, indices, codes, codebook = make_sparse(o, i, 0.3, seed=o + i)
    w = ops.pack_codebook(indptr, indices, codes, codebook, o, i)
    x = torch.randn(1, i, size, size)
    b = torch.randn(o)
    outs = {}
    try:
        for name in ("scalar", "ymm", "zmm"):
            _C.set_force_scalar(name == "scalar")
            _C.set_allow_avx512(name == "zmm")
            if name == "zmm" and not _C.avx512_usable():
                continue
            outs[name] = ops.conv1x1_sparse_packed(x, w, b, activation="relu")
    finally:
        _C.set_force_scalar(False)
        _C.set_allow_avx512(True)
    ref = reference(x, dense, b, activation="relu")
    for name, y in outs.items():
        torch.testing.assert_close(y, ref, rtol=0, atol=tol(x, dense), msg=name)
    if "zmm" in outs:  # the same FMAs per lane in the same order
        assert torch.equal(outs["ymm"], outs["zmm"])


@pytest.mark.parametrize("batch,size", [(1, 7), (1, 30), (4, 9)])
def test_thread_count_does_not_change_results(isa, batch, size):
    dense, indptr, indices, codes, codebook = make_sparse(200, 64, 0.3, seed=5)
    w = ops.pack_codebook(indptr, indices, codes, codebook, 200, 64)
    x = torch.randn(batch, 64, size, size)
    before = (_C.get_num_threads(), _C.parallel_min_work())
    try:
        _C.set_parallel_min_work(0)
        outs = []
        for n in (1, 2, 3):
            _C.set_num_threads(n)
            outs.append(ops.conv1x1_sparse_packed(x, w, None, activation="relu"))
    finally:
        _C.set_num_threads(before[0])
        _C.set_parallel_min_work(before[1])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_bad_inputs_raise_typed_errors():
    dense, indptr, indices, codes, codebook = make_sparse(6, 8, 0.5, seed=9)
    w = ops.pack_codebook(indptr, indices, codes, codebook, 6, 8)
    with pytest.raises(OpInputError, match="channels"):
        ops.conv1x1_sparse_packed(torch.randn(1, 7, 4, 4), w)
    with pytest.raises(OpInputError, match="4-D"):
        ops.conv1x1_sparse_packed(torch.randn(8, 4, 4), w)
    with pytest.raises(OpInputError, match="SparseWeight"):
        ops.conv1x1_sparse_packed(torch.randn(1, 8, 4, 4), dense)
    with pytest.raises(OpInputError, match="stride"):
        ops.conv1x1_sparse_packed(torch.randn(1, 8, 4, 4), w, stride=0)
    with pytest.raises(OpInputError, match="activation"):
        ops.conv1x1_sparse_packed(torch.randn(1, 8, 4, 4), w, activation="tanh")
    with pytest.raises(OpInputError, match="bias"):
        ops.conv1x1_sparse_packed(torch.randn(1, 8, 4, 4), w, bias=torch.randn(5))
    bad = indices.copy()
    bad[0] = 8
    with pytest.raises(OpInputError, match="out of range"):
        ops.conv1x1_codebook(torch.randn(1, 8, 4, 4), indptr, bad, codes, codebook, 6)
    bad_codes = codes.copy()
    bad_codes[0] = 200
    with pytest.raises(OpInputError, match="out of range"):
        ops.conv1x1_codebook(torch.randn(1, 8, 4, 4), indptr, indices, bad_codes, codebook, 6)


# ---- the runtime layer's paths -------------------------------------------------------------

def _layer(weight, bias, **conv):
    form = WeightForm.from_dense("conv", weight)
    return RuntimeConv2d("conv", form, bias, **conv)


def _pruned(shape, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.round(torch.randn(*shape, generator=g) * 4) / 4  # few distinct values: codebook form
    return w * (torch.rand(*shape, generator=g) < density)


@pytest.mark.parametrize("policy", ["auto", "exact", "compact"])
def test_runtime_offers_and_runs_depthwise(policy):
    w = _pruned((48, 1, 3, 3), 0.9, 1)
    b = torch.randn(48)
    layer = _layer(w, b, stride=(2, 2), padding=(1, 1), groups=48, relu=True)
    assert "depthwise" in layer.candidates()
    layer.set_policy(policy)
    assert "depthwise" in layer._allowed()
    x = torch.randn(2, 48, 17, 17)
    for path in ("depthwise", "decode"):
        y = layer._run(path, layer._prepare(path), x)
        ref = torch.relu(F.conv2d(x, w, b, 2, 1, groups=48))
        torch.testing.assert_close(y, ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(layer(x), torch.relu(F.conv2d(x, w, b, 2, 1, groups=48)), rtol=0, atol=1e-4)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_runtime_offers_and_runs_sparse1x1(stride):
    w = _pruned((40, 24, 1, 1), 0.3, 2)
    b = torch.randn(40)
    layer = _layer(w, b, stride=stride)
    assert layer.form.is_sparse and "sparse1x1" in layer.candidates()
    for policy in ("auto", "exact", "compact"):
        layer.set_policy(policy)
        assert "sparse1x1" in layer._allowed()
    x = torch.randn(3, 24, 15, 10)
    y = layer._run("sparse1x1", layer._prepare("sparse1x1"), x)
    torch.testing.assert_close(y, F.conv2d(x, w, b, stride), rtol=0, atol=1e-4)
    torch.testing.assert_close(layer(x), F.conv2d(x, w, b, stride), rtol=0, atol=1e-4)
    # The packed CSR weight is shared with the im2col sparse path: counted once.
    assert layer._prepare("sparse") is layer._prepare("sparse1x1")
    layer.set_policy("auto")
    assert layer._prepare("sparse") is layer._prepare("sparse1x1")
    assert layer.resident_bytes() <= layer.form.nbytes() + b.numel() * 4 + (40 + 1) * 4 * 2


def test_runtime_does_not_offer_them_where_they_do_not_apply():
    assert "sparse1x1" not in _layer(_pruned((8, 4, 1, 1), 0.3, 3), None, padding=(1, 1)).candidates()
    assert "sparse1x1" not in _layer(_pruned((8, 4, 3, 3), 0.3, 3), None).candidates()
    assert "sparse1x1" not in _layer(torch.randn(8, 4, 1, 1), None).candidates()  # dense raw weight
    grouped = _layer(_pruned((8, 2, 3, 3), 0.5, 4), None, groups=4)
    assert not {"depthwise", "sparse1x1"} & set(grouped.candidates())
    multiplier = _layer(_pruned((8, 1, 3, 3), 0.5, 5), None, groups=4)  # 2 filters per channel
    assert "depthwise" not in multiplier.candidates()
    dilated = _layer(_pruned((4, 1, 3, 3), 0.5, 6), None, groups=4, dilation=(2, 2), padding=(2, 2))
    assert "depthwise" not in dilated.candidates()
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(dilated(x), F.conv2d(x, dilated.form.dense(), None, 1, 2, 2, 4), rtol=0, atol=1e-5)


def test_state_arrays_count_the_decoded_depthwise_weight():
    layer = _layer(_pruned((16, 1, 5, 5), 0.9, 7), None, padding=(2, 2), groups=16)
    before = layer.resident_bytes()
    st = layer._prepare("depthwise")
    assert layer.resident_bytes() == before + st.values.nbytes
    assert K.state_arrays(st) == [st.values]
