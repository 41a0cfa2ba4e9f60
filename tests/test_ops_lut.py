"""Codebook GEMM over dense codes (ops.lut_gemm): every path against a float64 NumPy
reference within the stated rounding bound, the paths against each other, independence
from the thread count and the batch, typed errors, and the int8 form of a codebook."""
import itertools

import numpy as np
import pytest
import torch

from deepcomp import _C, ops
from deepcomp.errors import OpInputError
from isa_paths import scalar_and_avx2

U = 2.0 ** -24  # unit roundoff of float32


def make(n, k, ncb, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, ncb, size=(n, k)).astype(np.uint8)
    codebook = rng.standard_normal(ncb).astype(np.float32)
    return ops.pack_lut(codes, codebook)


def check_close(y, x, w, bias, relu):
    """|y - exact| <= (K + 2) u (sum_k |x_k w_k| + |bias|): the worst case of any order of
    float32 sums (one rounding per add and per product), so it holds on every path."""
    xd = x.numpy().astype(np.float64)
    wd = w.dense().numpy().astype(np.float64)
    exact = xd @ wd.T
    mag = np.abs(xd) @ np.abs(wd).T
    if bias is not None:
        exact = exact + bias.numpy().astype(np.float64)
        mag = mag + np.abs(bias.numpy().astype(np.float64))
    if relu:
        exact = np.maximum(exact, 0)
    bound = (w.n_in + 2) * U * mag + 1e-30
    err = np.abs(y.numpy().astype(np.float64) - exact)
    assert np.all(err <= bound), float((err / bound).max())


KS = [1, 7, 33, 384, 1000]
NS = [1, 7, 33]
BS = [1, 2, 7, 33, 64]
NCBS = [2, 32, 256]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("ncb", NCBS)
def test_every_path_within_the_rounding_bound(isa, k, ncb):
    for n, b in itertools.product(NS, BS):
        w = make(n, k, ncb, seed=k * 7 + n * 3 + ncb)
        g = torch.Generator().manual_seed(n + b + k)
        x = torch.randn(b, k, generator=g)
        bias = torch.randn(n, generator=g) if (n + b) % 2 else None
        relu = b % 3 == 1
        check_close(ops.lut_gemm(x, w, bias=bias, relu=relu), x, w, bias, relu)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("ncb", NCBS)
def test_scalar_ymm_and_zmm_agree(k, ncb):
    """The twins differ only in summation order: within twice the bound of each other."""
    if not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    for n, b in [(1, 1), (7, 2), (33, 7), (7, 33), (33, 64)]:
        w = make(n, k, ncb, seed=k + n + ncb)
        x = torch.randn(b, k, generator=torch.Generator().manual_seed(b * k))
        bias = torch.randn(n, generator=torch.Generator().manual_seed(n))
        ys, yv = scalar_and_avx2(lambda: ops.lut_gemm(x, w, bias=bias, relu=True))
        yz = ops.lut_gemm(x, w, bias=bias, relu=True) if _C.avx512_usable() else yv
        mag = np.abs(x.numpy().astype(np.float64)) @ np.abs(w.dense().numpy().astype(np.float64)).T + np.abs(bias.numpy())
        bound = 2 * (k + 2) * U * mag + 1e-30
        for other in (yv, yz):
            assert np.all(np.abs(ys.numpy().astype(np.float64) - other.numpy()) <= bound)


def test_exact_when_products_and_sums_are_exact(isa):
    """Small integer codebook and inputs: every partial sum is an exact float, so all paths
    must give exactly the integer result."""
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, size=(33, 1000)).astype(np.uint8)
    codebook = (np.arange(256) - 128).astype(np.float32)
    w = ops.pack_lut(codes, codebook)
    x = torch.from_numpy(rng.integers(-8, 9, size=(7, 1000)).astype(np.float32))
    want = (x.numpy().astype(np.int64) @ codebook[codes].astype(np.int64).T).astype(np.float32)
    assert torch.equal(ops.lut_gemm(x, w), torch.from_numpy(want))


def test_same_result_whatever_the_threads_and_the_batch(isa):
    restore = ops.get_num_threads(), _C.parallel_min_work()
    _C.set_parallel_min_work(0)  # every call on the whole team
    try:
        w = make(333, 517, 256, seed=3)
        x = torch.randn(37, 517, generator=torch.Generator().manual_seed(1))
        bias = torch.randn(333, generator=torch.Generator().manual_seed(2))
        ops.set_num_threads(1)
        y1 = ops.lut_gemm(x, w, bias=bias)
        ops.set_num_threads(2)
        y2 = ops.lut_gemm(x, w, bias=bias)
        ops.set_num_threads(3)
        y3 = ops.lut_gemm(x, w, bias=bias)
        assert torch.equal(y1, y2) and torch.equal(y1, y3)
        # Each output is one dot product in a fixed order: a row alone or in another batch
        # gives the same bits.
        assert torch.equal(ops.lut_gemm(x[5:6], w, bias=bias), y1[5:6])
        assert torch.equal(ops.lut_gemm(x[3:10].contiguous(), w, bias=bias), y1[3:10])
    finally:
        ops.set_num_threads(restore[0])
        _C.set_parallel_min_work(restore[1])


def test_wide_rows_and_many_outputs(isa):
    """K long enough that a tile holds only a few rows, N not a multiple of the tile."""
    w = make(70, 9000, 256, seed=11)
    x = torch.randn(5, 9000, generator=torch.Generator().manual_seed(4))
    check_close(ops.lut_gemm(x, w), x, w, None, False)


def test_codebook_of_one_and_empty_batch():
    w = ops.pack_lut(np.zeros((4, 3), np.uint8), np.array([2.5], np.float32))
    x = torch.ones(2, 3)
    assert torch.equal(ops.lut_gemm(x, w), torch.full((2, 4), 7.5))
    assert ops.lut_gemm(torch.empty(0, 3), w).shape == (0, 4)


def test_flat_codes_and_torch_inputs_and_no_copy():
    codes = np.arange(12, dtype=np.uint8).reshape(3, 4) % 5
    w = ops.pack_lut(codes.reshape(-1), torch.arange(5, dtype=torch.float32), n_out=3, n_in=4)
    assert np.shares_memory(w.codes, codes) and w.codes.shape == (3, 4)
    y = ops.lut_gemm(torch.ones(1, 4), w)
    assert torch.equal(y, torch.from_numpy(codes.sum(axis=1, keepdims=True).T.astype(np.float32)))


@pytest.mark.parametrize("bad", [
    lambda: ops.pack_lut(np.zeros((2, 3), np.uint8), np.zeros(0, np.float32)),
    lambda: ops.pack_lut(np.zeros((2, 3), np.uint8), np.zeros(257, np.float32)),
    lambda: ops.pack_lut(np.full((2, 3), 4, np.uint8), np.zeros(4, np.float32)),
    lambda: ops.pack_lut(np.zeros((2, 3), np.float32), np.zeros(4, np.float32)),
    lambda: ops.pack_lut(np.full((2, 3), 300), np.zeros(4, np.float32)),
    lambda: ops.pack_lut(np.zeros(6, np.uint8), np.zeros(4, np.float32)),
    lambda: ops.pack_lut(np.zeros(6, np.uint8), np.zeros(4, np.float32), n_out=4, n_in=2),
    lambda: ops.pack_lut(np.zeros((2, 0), np.uint8), np.zeros(4, np.float32)),
    lambda: ops.lut_gemm(torch.zeros(1, 3), "not a weight"),
    lambda: ops.lut_gemm(torch.zeros(1, 4), ops.pack_lut(np.zeros((2, 3), np.uint8), np.ones(1, np.float32))),
    lambda: ops.lut_gemm(torch.zeros(1, 3, dtype=torch.float64), ops.pack_lut(np.zeros((2, 3), np.uint8), np.ones(1, np.float32))),
    lambda: ops.lut_gemm(torch.zeros(3), ops.pack_lut(np.zeros((2, 3), np.uint8), np.ones(1, np.float32))),
    lambda: ops.lut_gemm(torch.zeros(1, 3), ops.pack_lut(np.zeros((2, 3), np.uint8), np.ones(1, np.float32)),
                         bias=torch.zeros(3)),
])
def test_bad_inputs_raise_typed_errors(bad):
    with pytest.raises(OpInputError):
        bad()


def test_binding_never_reads_past_the_codebook(isa):
    """Codes past a short codebook (which ops rejects) read a codebook entry or 0 in the raw
    binding, on every path, never memory after the codebook."""
    codes = np.array([[0, 1, 200, 255]], np.uint8)
    cb = np.array([1.0, 2.0], np.float32)
    out = np.empty((1, 1), np.float32)
    _C.lut_gemm(np.ones((1, 4), np.float32), codes, cb, None, False, out)
    assert out[0, 0] in (3.0, 4.0, 5.0, 6.0, 7.0)  # 1 + 2 + two of {0, 1, 2}


@pytest.mark.parametrize("shape,ncb", [((7, 33), 256), ((33, 384), 32), ((64, 1000), 256)])
def test_int8_from_the_codebook(shape, ncb):
    n, k = shape
    w = make(n, k, ncb, seed=n + k)
    p = ops.pack_int8_codebook(w)
    ref = ops.pack_int8(w.dense())
    # The same quantization as pack_int8 on the decoded weight, without decoding it.
    assert np.array_equal(p.packed, ref.packed) and np.array_equal(p.scales, ref.scales)
    assert np.array_equal(p.row_sums, ref.row_sums)
    # Stated weight error: at most half a step, 1/254 of each channel's max |w|.
    wd = w.dense().numpy()
    err = np.abs(wd - p.dequantize().numpy()).max(axis=1)
    assert np.all(err <= np.abs(wd).max(axis=1) / 254 * (1 + 1e-6))
    # Output error through gemm_int8 (7-bit activations on top): within 2 % of the output
    # scale on random data, against the exact lut_gemm.
    x = torch.randn(9, k, generator=torch.Generator().manual_seed(k))
    y8 = ops.gemm_int8(x, p)
    y = ops.lut_gemm(x, w)
    assert float((y8 - y).abs().max()) <= 0.02 * float(y.abs().max())


def test_int8_from_the_codebook_checks_its_input():
    with pytest.raises(OpInputError):
        ops.pack_int8_codebook(np.zeros((2, 2), np.uint8))
    with pytest.raises(OpInputError):
        ops.pack_int8_codebook(ops.pack_lut(np.zeros((1, 2), np.uint8), np.array([np.inf], np.float32)))


@pytest.mark.parametrize("ncb", [33, 64, 65, 128, 129, 256])
def test_zmm_decoders_agree_bit_for_bit(ncb):
    """On zmm, codebooks over 64 entries decode with VBMI byte planes where the CPU has them,
    else with a vpermt2ps chain: the same floats either way (entries are moved, not
    computed), so the products are identical."""
    if not _C.avx512_usable():
        pytest.skip("CPU without AVX-512 (or AVX-512 switched off)")
    w = make(37, 515, ncb, seed=ncb)
    x = torch.randn(6, 515, generator=torch.Generator().manual_seed(ncb))
    y = ops.lut_gemm(x, w)
    _C.set_lut_vbmi(False)
    try:
        y_chain = ops.lut_gemm(x, w)
    finally:
        _C.set_lut_vbmi(True)
    assert torch.equal(y, y_chain)
    check_close(y, x, w, None, False)


@pytest.mark.parametrize("ncb", [2, 9, 17, 33, 65, 256])
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (33, 1000), (5, 4100)])
def test_decode_is_bit_exact(isa, ncb, shape):
    w = make(*shape, ncb, seed=ncb + shape[1])
    assert torch.equal(ops.lut_decode(w), w.dense())
