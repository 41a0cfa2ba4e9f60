"""The direct sparse KxK convolution (_C.conv_sparse_kxk, runtime path `sparsekxk`): against
torch on awkward sizes, scalar against AVX2, thread counts, binding checks, and the
runtime layer offering it under every measuring policy with nothing new resident."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcomp import _C, ops
from deepcomp.runtime import RuntimeConv2d
from deepcomp.runtime import kernels as K
from deepcomp.runtime.weights import WeightForm

from isa_paths import scalar_and_avx2

pytestmark = pytest.mark.skipif(not K.native_available(), reason="native kernels missing")

REL_TOL = 4e-7  # times the number of terms, times the largest sum of |w * x|


def make(o, c, kh, kw, density, seed, codebook=True, index_dtype=np.uint16):
    """A CSR conv weight with some empty rows: (dense [o, c, kh, kw], packed SparseWeight)."""
    rng = np.random.default_rng(seed)
    cols = c * kh * kw
    mask = rng.random((o, cols)) < density
    if o > 2:
        mask[rng.choice(o, size=max(1, o // 4), replace=False)] = False
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    indices = np.nonzero(mask)[1].astype(index_dtype)
    if codebook:
        book = rng.standard_normal(16).astype(np.float32)
        codes = rng.integers(0, 16, size=(o, cols)).astype(np.uint8)
        dense = np.where(mask, book[codes], 0).astype(np.float32)
        w = ops.pack_codebook(indptr, indices, codes[mask], book, o, cols)
    else:
        vals = rng.standard_normal((o, cols)).astype(np.float32)
        dense = np.where(mask, vals, 0).astype(np.float32)
        w = ops.pack_csr(indptr, indices, vals[mask], o, cols)
    return torch.from_numpy(dense.reshape(o, c, kh, kw)), w


def run(x, w, shape, bias=None, stride=(1, 1), padding=(0, 0), act=0):
    o, _, kh, kw = shape
    n, _, h, wd = x.shape
    out = torch.empty((n, o, (h + 2 * padding[0] - kh) // stride[0] + 1,
                       (wd + 2 * padding[1] - kw) // stride[1] + 1), dtype=torch.float32)
    _C.conv_sparse_kxk(x.numpy(), w.indptr, w.indices, w.values, w.codes, w.codebook, w.n_in, kh, kw,
                       stride[0], stride[1], padding[0], padding[1], bias, act, out.numpy())
    return out


def tol(x, dense, stride, padding):
    mag = F.conv2d(x.abs(), dense.abs(), None, stride, padding)
    return REL_TOL * max(1, dense[0].numel()) * (float(mag.max()) if mag.numel() else 0.0) + 1e-6


# (out, in, kh, kw, stride, padding, h, w, batch): 1 / 7 / 33 channels, 1x1 / 3x3 / 5x5 /
# 7x7 / non-square kernels, stride 2 and 3, padding, rows wider than 32 columns, a 1x1 image.
CASES = [
    (1, 1, 1, 1, (1, 1), (0, 0), 1, 1, 1),
    (7, 3, 3, 3, (1, 1), (1, 1), 9, 11, 2),
    (33, 7, 5, 5, (2, 2), (2, 2), 13, 17, 1),
    (16, 33, 3, 3, (2, 1), (1, 1), 40, 37, 3),
    (20, 1, 5, 5, (1, 1), (0, 0), 28, 28, 1),
    (50, 20, 5, 5, (1, 1), (0, 0), 12, 12, 4),
    (8, 4, 7, 7, (2, 2), (3, 3), 33, 70, 1),
    (5, 2, 3, 5, (3, 3), (1, 2), 20, 21, 2),
    (9, 7, 3, 3, (1, 1), (4, 4), 2, 3, 1),  # padding wider than the kernel: border rows all zero
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("codebook", [True, False])
def test_matches_torch_on_scalar_and_avx2(case, codebook):
    o, c, kh, kw, stride, padding, h, wd, n = case
    dense, w = make(o, c, kh, kw, 0.3, seed=o * c + kh, codebook=codebook)
    g = torch.Generator().manual_seed(o + h)
    x = torch.randn(n, c, h, wd, generator=g)
    b = np.linspace(-1, 1, o, dtype=np.float32)
    ref = torch.relu(F.conv2d(x, dense, torch.from_numpy(b), stride, padding))
    ys, yv = scalar_and_avx2(lambda: run(x, w, dense.shape, b, stride, padding, act=1))
    t = tol(x, dense, stride, padding)
    torch.testing.assert_close(ys, ref, rtol=0, atol=t)
    if yv is not None:
        torch.testing.assert_close(yv, ref, rtol=0, atol=t)
        torch.testing.assert_close(yv, ys, rtol=0, atol=t)


@pytest.mark.parametrize("act,fn", [(0, lambda y: y), (2, F.relu6), (3, F.hardswish)])
def test_activations_and_int32_indices(act, fn):
    dense, w = make(12, 5, 3, 3, 0.4, seed=3, index_dtype=np.int32)
    x = torch.randn(2, 5, 10, 9)
    ref = fn(F.conv2d(x, dense, None, 1, 1))
    ys, yv = scalar_and_avx2(lambda: run(x, w, dense.shape, None, (1, 1), (1, 1), act=act))
    for y in (ys, yv):
        if y is not None:
            torch.testing.assert_close(y, ref, rtol=0, atol=tol(x, dense, 1, 1))


@pytest.mark.parametrize("path", ["scalar", "avx2"])
def test_thread_count_does_not_change_results(path):
    if path == "avx2" and not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    dense, w = make(40, 16, 3, 3, 0.3, seed=7)
    x = torch.randn(3, 16, 15, 15)
    before = (_C.get_num_threads(), _C.parallel_min_work(), _C.active_isa() == "scalar")
    try:
        _C.set_force_scalar(path == "scalar")
        _C.set_parallel_min_work(0)
        outs = []
        for nt in (1, 2, 3):
            _C.set_num_threads(nt)
            outs.append(run(x, w, dense.shape, None, (1, 1), (1, 1), act=1))
    finally:
        _C.set_num_threads(before[0])
        _C.set_parallel_min_work(before[1])
        _C.set_force_scalar(before[2] and _C.cpu_has_avx2())
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_binding_checks_shapes():
    dense, w = make(6, 4, 3, 3, 0.5, seed=9)
    x = np.zeros((1, 4, 8, 8), np.float32)
    out = np.zeros((1, 6, 6, 6), np.float32)
    args = (w.indptr, w.indices, w.values, w.codes, w.codebook)
    with pytest.raises(ValueError, match="columns"):  # 5 channels do not make 36 columns
        _C.conv_sparse_kxk(np.zeros((1, 5, 8, 8), np.float32), *args, w.n_in, 3, 3, 1, 1, 0, 0, None, 0, out)
    with pytest.raises(ValueError, match="out must be"):
        _C.conv_sparse_kxk(x, *args, w.n_in, 3, 3, 1, 1, 1, 1, None, 0, out)  # padding 1: 8x8 out
    with pytest.raises(ValueError, match="larger than"):
        _C.conv_sparse_kxk(np.zeros((1, 4, 2, 2), np.float32), *args, w.n_in, 3, 3, 1, 1, 0, 0, None, 0, out)
    with pytest.raises(ValueError, match="bias"):
        _C.conv_sparse_kxk(x, *args, w.n_in, 3, 3, 1, 1, 0, 0, np.zeros(5, np.float32), 0, out)


def _layer(policy, stride=(1, 1), padding=(2, 2)):
    g = torch.Generator().manual_seed(0)
    wt = torch.randn(24, 6, 5, 5, generator=g)
    wt[torch.rand(24, 6, 5, 5, generator=g) < 0.9] = 0
    book = torch.linspace(-2, 2, 32)
    wt = torch.where(wt == 0, wt, book[torch.bucketize(wt.clamp(-2, 2), book).clamp(max=31)])
    layer = RuntimeConv2d("c", WeightForm.from_dense("c", wt), torch.randn(24, generator=g), stride=stride,
                          padding=padding, relu=True)
    layer.set_policy(policy)
    return layer, wt


@pytest.mark.parametrize("policy", ["auto", "exact", "compact"])
def test_runtime_layer_offers_sparsekxk_and_keeps_one_packed_weight(policy):
    layer, wt = _layer(policy)
    assert "sparsekxk" in layer._allowed()
    x = torch.randn(2, 6, 14, 14)
    y = layer(x)
    ref = torch.relu(F.conv2d(x, wt, layer.bias, 1, 2))
    tol_ = 0.05 * float(ref.abs().max()) if "int8" in layer.used_paths.values() else 1e-4
    assert float((y - ref).abs().max()) <= tol_
    assert "sparsekxk" in next(iter(layer.timings.values()))
    # sparse and sparsekxk share one packed CSR weight when both are kept.
    layer._prepare("sparse")
    layer._prepare("sparsekxk")
    assert layer._prepared["sparse"] is layer._prepared["sparsekxk"]


def test_runtime_layer_fixed_sparse_path_and_kxk_agree():
    layer, wt = _layer("exact", stride=(2, 2), padding=(1, 1))
    x = torch.randn(3, 6, 17, 16)
    a = layer._run("sparse", layer._prepare("sparse"), x)
    b = layer._run("sparsekxk", layer._prepare("sparsekxk"), x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_grouped_or_dilated_conv_has_no_sparsekxk_path():
    form = WeightForm.from_dense("c", torch.zeros(8, 4, 3, 3).index_fill_(0, torch.tensor([1]), 1.0))
    assert "sparsekxk" not in RuntimeConv2d("c", form, dilation=(2, 2)).candidates()
    assert "sparsekxk" not in RuntimeConv2d("c", form, groups=2).candidates()
    assert "sparsekxk" in RuntimeConv2d("c", form).candidates()


# Outputs at most 8 wide (LeNet-5's conv2 and smaller), with and without the fused pool, on
# every path: odd row counts, more than 8 rows, 1-wide rows, padding.
NARROW = [
    (50, 20, 5, 5, (1, 1), (0, 0), 12, 12, 3),  # LeNet-5's conv2
    (33, 7, 3, 3, (1, 1), (1, 1), 5, 6, 2),
    (5, 2, 5, 5, (1, 1), (2, 2), 3, 8, 1),
    (9, 4, 3, 3, (1, 1), (0, 0), 20, 4, 2),
    (4, 3, 1, 1, (1, 1), (0, 0), 2, 1, 1),
    (6, 1, 2, 3, (1, 1), (1, 0), 9, 10, 1),
]


@pytest.mark.parametrize("case", NARROW)
@pytest.mark.parametrize("pool", [None, (2, 2, 2, 2, 0, 0, True)])
def test_narrow_outputs_on_every_path(isa, case, pool):
    o, c, kh, kw, stride, padding, h, wd, n = case
    dense, w = make(o, c, kh, kw, 0.4, seed=o + h)
    x = torch.randn(n, c, h, wd, generator=torch.Generator().manual_seed(wd))
    b = np.linspace(-1, 1, o, dtype=np.float32)
    ref = torch.relu(F.conv2d(x, dense, torch.from_numpy(b), stride, padding))
    if pool is not None:
        ref = F.max_pool2d(ref, 2, 2, 0, ceil_mode=True)
        out = torch.full(ref.shape, 7.0)
        _C.conv_sparse_kxk(x.numpy(), w.indptr, w.indices, w.values, w.codes, w.codebook, w.n_in, kh, kw,
                           1, 1, padding[0], padding[1], b, 1, out.numpy(), pool)
    else:
        out = run(x, w, dense.shape, b, stride, padding, act=1)
    torch.testing.assert_close(out, ref, rtol=0, atol=tol(x, dense, stride, padding))
