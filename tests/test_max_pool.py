"""The native max-pool (_C.max_pool2d) and the max-pool fused into the direct sparse KxK
convolution (_C.conv_sparse_kxk(..., pool=...)): against PyTorch on awkward sizes, scalar
against AVX2 (exactly: max is exact), NaN kept, thread counts, and the binding's checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcomp import _C
from deepcomp.runtime import kernels as K

from isa_paths import scalar_and_avx2
from test_conv_sparse_kxk import make, run as conv_run, tol

pytestmark = pytest.mark.skipif(not K.native_available(), reason="native kernels missing")


def pool(x, k, s, p, ceil=False):
    ref = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
    out = torch.full_like(ref, 7.0)
    _C.max_pool2d(x.numpy(), (k[0], k[1], s[0], s[1], p[0], p[1], ceil), out.numpy())
    return ref, out


def same(a, b) -> bool:
    """Equal, NaN where the other has NaN."""
    return a.shape == b.shape and torch.equal(torch.nan_to_num(a, nan=1e30), torch.nan_to_num(b, nan=1e30))


# (n, c, h, w, kernel, stride, padding, ceil_mode): 1 / 7 / 33 channels, 1x1 .. 5x4 windows,
# strides 1, 2, 3 (3: scalar columns in the AVX2 twin), padding, ceil_mode, rows narrower
# and wider than a vector, LeNet's 24x24 and 8x8, ResNet's 3x3 / 2 / 1.
CASES = [
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0), False),
    (2, 20, 24, 24, (2, 2), (2, 2), (0, 0), False),
    (3, 50, 8, 8, (2, 2), (2, 2), (0, 0), False),
    (1, 7, 33, 35, (3, 3), (2, 2), (1, 1), False),
    (1, 7, 33, 35, (3, 3), (2, 2), (1, 1), True),
    (2, 33, 7, 40, (3, 2), (1, 1), (1, 1), False),
    (1, 3, 9, 41, (2, 3), (3, 3), (1, 1), True),
    (1, 1, 5, 70, (5, 4), (1, 2), (2, 2), True),
    (1, 2, 13, 13, (2, 2), (2, 2), (0, 0), True),  # odd size: ceil_mode's half window
    (1, 64, 56, 56, (3, 3), (2, 2), (1, 1), False),
    # 2-wide stride-2 windows (their own AVX2 loop): padding, odd widths whose last vector
    # is partial at the very end of the tensor, 3 rows, 1 row, ceil_mode's clipped rows
    (3, 5, 9, 17, (2, 2), (2, 2), (1, 1), False),
    (1, 3, 8, 30, (3, 2), (2, 2), (1, 1), True),
    (2, 4, 5, 33, (1, 2), (1, 2), (0, 1), True),
    (1, 1, 2, 2, (2, 2), (2, 2), (0, 0), False),
    (1, 2, 3, 49, (2, 2), (3, 2), (0, 0), True),
]


@pytest.mark.parametrize("case", CASES)
def test_max_pool_matches_torch_on_scalar_and_avx2(case):
    n, c, h, w, k, s, p, ceil = case
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(h * w + c))
    x[0, 0, 0, min(3, w - 1)] = float("nan")
    ys, yv = scalar_and_avx2(lambda: pool(x, k, s, p, ceil))
    for got in (ys, yv):
        if got is not None:
            ref, out = got
            assert same(ref, out), case
    if yv is not None:
        assert same(ys[1], yv[1])


@pytest.mark.parametrize("case", CASES + [(1, 2, 6, 6, (2, 2), (2, 2), (0, 0), False),
                                  (1, 1, 4, 4, (2, 2), (2, 2), (0, 0), False)])
def test_max_pool_writes_nothing_past_its_output(case):
    n, c, h, w, k, s, p, ceil = case
    ref = F.max_pool2d(torch.randn(n, c, h, w), k, s, p, ceil_mode=ceil)
    x = torch.randn(n, c, h, w)
    guard = np.full(ref.numel() + 64, 7.0, np.float32)
    out = guard[:ref.numel()].reshape(ref.shape)

    def once():
        _C.max_pool2d(x.numpy(), (k[0], k[1], s[0], s[1], p[0], p[1], ceil), out)
        return guard.copy()
    for g in scalar_and_avx2(once):
        if g is not None:
            assert (g[ref.numel():] == 7.0).all()


def test_max_pool_all_nan_and_infinite_planes():
    x = torch.full((1, 2, 6, 6), float("-inf"))
    x[0, 1] = float("nan")
    for got in scalar_and_avx2(lambda: pool(x, (2, 2), (2, 2), (0, 0))):
        if got is not None:
            assert same(*got)


def test_max_pool_thread_count_does_not_change_results():
    x = torch.randn(4, 9, 31, 29)
    before = (_C.get_num_threads(), _C.parallel_min_work())
    try:
        _C.set_parallel_min_work(0)
        outs = []
        for nt in (1, 2, 3):
            _C.set_num_threads(nt)
            outs.append(pool(x, (3, 3), (2, 2), (1, 1))[1])
    finally:
        _C.set_num_threads(before[0])
        _C.set_parallel_min_work(before[1])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_max_pool_binding_checks():
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="half the kernel"):
        _C.max_pool2d(x, (2, 2, 2, 2, 2, 0, False), np.zeros((1, 2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        _C.max_pool2d(x, (2, 2, 2, 2, 0, 0, False), np.zeros((1, 2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="larger than"):
        _C.max_pool2d(x, (9, 2, 1, 1, 0, 0, False), np.zeros((1, 2, 1, 7), np.float32))
    with pytest.raises(ValueError, match=r"\(kh, kw"):
        _C.max_pool2d(x, (2, 2, 2, 2), np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=">= 1"):
        _C.max_pool2d(x, (2, 2, 0, 2, 0, 0, False), np.zeros((1, 2, 4, 4), np.float32))


# ---- fused into the direct sparse convolution -------------------------------------------

def fused(x, w, shape, bias, stride, padding, act, pk, ps, pp, ceil=False):
    o, _, kh, kw = shape
    n, _, h, wd = x.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (wd + 2 * padding[1] - kw) // stride[1] + 1
    py = F.max_pool2d(torch.zeros(1, 1, oh, ow), pk, ps, pp, ceil_mode=ceil)
    out = torch.full((n, o, py.shape[2], py.shape[3]), 7.0)
    _C.conv_sparse_kxk(x.numpy(), w.indptr, w.indices, w.values, w.codes, w.codebook, w.n_in, kh, kw,
                       stride[0], stride[1], padding[0], padding[1], bias, act, out.numpy(),
                       (pk[0], pk[1], ps[0], ps[1], pp[0], pp[1], ceil))
    return out


# (out, in, kh, kw, stride, padding, h, w, batch, pool kernel, pool stride, pool padding, ceil)
FUSED = [
    (20, 1, 5, 5, (1, 1), (0, 0), 28, 28, 2, (2, 2), (2, 2), (0, 0), False),  # LeNet-5 conv1
    (50, 20, 5, 5, (1, 1), (0, 0), 12, 12, 3, (2, 2), (2, 2), (0, 0), False),  # LeNet-5 conv2
    (1, 1, 1, 1, (1, 1), (0, 0), 1, 1, 1, (1, 1), (1, 1), (0, 0), False),
    (7, 3, 3, 3, (2, 1), (1, 1), 17, 19, 1, (3, 3), (2, 2), (1, 1), True),
    (33, 7, 3, 3, (1, 1), (1, 1), 9, 35, 2, (3, 2), (1, 3), (1, 1), False),
]


@pytest.mark.parametrize("case", FUSED)
@pytest.mark.parametrize("act", [0, 1])
def test_fused_pool_is_the_pool_of_the_convolution(case, act):
    o, c, kh, kw, stride, padding, h, wd, n, pk, ps, pp, ceil = case
    dense, w = make(o, c, kh, kw, 0.3, seed=o + c)
    x = torch.randn(n, c, h, wd, generator=torch.Generator().manual_seed(o * h))
    b = np.linspace(-1, 1, o, dtype=np.float32)
    ref = F.conv2d(x, dense, torch.from_numpy(b), stride, padding)
    ref = F.max_pool2d(torch.relu(ref) if act else ref, pk, ps, pp, ceil_mode=ceil)
    ys, yv = scalar_and_avx2(lambda: fused(x, w, dense.shape, b, stride, padding, act, pk, ps, pp, ceil))
    # The same conv unfused, then the same pool: the fused twin must give exactly that.
    unf = scalar_and_avx2(lambda: pool(conv_run(x, w, dense.shape, b, stride, padding, act), pk, ps, pp, ceil)[1])
    for y, u in zip((ys, yv), unf):
        if y is not None:
            assert torch.equal(y, u)
            torch.testing.assert_close(y, ref, rtol=0, atol=tol(x, dense, stride, padding))


def test_fused_pool_binding_checks_the_pooled_output_shape():
    dense, w = make(6, 4, 3, 3, 0.5, seed=9)
    x = np.zeros((1, 4, 8, 8), np.float32)
    args = (w.indptr, w.indices, w.values, w.codes, w.codebook, w.n_in, 3, 3, 1, 1, 0, 0, None, 1)
    with pytest.raises(ValueError, match="pooled"):
        _C.conv_sparse_kxk(x, *args, np.zeros((1, 6, 6, 6), np.float32), (2, 2, 2, 2, 0, 0, False))
    out = np.zeros((1, 6, 3, 3), np.float32)
    _C.conv_sparse_kxk(x, *args, out, (2, 2, 2, 2, 0, 0, False))
    with pytest.raises(ValueError, match="half the kernel"):
        _C.conv_sparse_kxk(x, *args, out, (2, 2, 2, 2, 2, 2, False))


def test_ops_max_pool2d_checks_and_matches_torch():
    from deepcomp import ops
    from deepcomp.errors import OpInputError

    x = torch.randn(2, 3, 11, 9)
    for k, s, p, ceil in (((2, 2), None, 0, False), (3, 2, 1, True), ((3, 1), (1, 2), (1, 0), False)):
        assert torch.equal(ops.max_pool2d(x, k, s, p, ceil), F.max_pool2d(x, k, s, p, ceil_mode=ceil))
    assert torch.equal(ops.max_pool2d(torch.randn(0, 3, 4, 4), 2), torch.empty(0, 3, 2, 2))
    with pytest.raises(OpInputError, match="half the kernel"):
        ops.max_pool2d(x, 2, 2, 2)
    with pytest.raises(OpInputError, match="larger than"):
        ops.max_pool2d(x, 12)
    with pytest.raises(OpInputError, match="float32"):
        ops.max_pool2d(x.double(), 2)
    with pytest.raises(OpInputError, match="4-D"):
        ops.max_pool2d(x[0], 2)
