"""Conv2d through im2col on the codebook and int8 kernels, against torch's conv2d."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcomp import ops
from deepcomp.errors import OpInputError
from isa_paths import scalar_and_avx2


def sparse_conv_weight(shape, density, k=16, seed=0):
    rng = np.random.default_rng(seed)
    o = shape[0]
    cols = int(np.prod(shape[1:]))
    codebook = rng.standard_normal(k).astype(np.float32)
    codes_full = rng.integers(0, k, size=(o, cols)).astype(np.uint8)
    mask = rng.random((o, cols)) < density
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    indices = np.nonzero(mask)[1].astype(np.uint16)
    dense = torch.from_numpy(np.where(mask, codebook[codes_full], 0).astype(np.float32)).reshape(shape)
    return dense, indptr, indices, codes_full[mask], codebook


# (weight shape, input shape, stride, padding)
CASES = [
    ((20, 1, 5, 5), (2, 1, 28, 28), 1, 0),      # LeNet-5 conv1
    ((50, 20, 5, 5), (3, 20, 12, 12), 1, 0),    # LeNet-5 conv2
    ((8, 3, 3, 3), (1, 3, 9, 7), 1, 1),
    ((7, 4, 3, 2), (2, 4, 10, 9), (2, 1), (1, 0)),
    ((5, 6, 1, 1), (2, 6, 5, 5), 2, 0),
    ((3, 2, 4, 4), (1, 2, 4, 4), 3, 2),         # more padding than input on one output
]


@pytest.mark.parametrize("wshape,xshape,stride,padding", CASES)
def test_conv2d_codebook_matches_torch(isa, wshape, xshape, stride, padding):
    w, indptr, indices, codes, codebook = sparse_conv_weight(wshape, 0.3, seed=wshape[0])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*xshape, generator=g)
    bias = torch.randn(wshape[0], generator=g)
    for relu in (False, True):
        y = ops.conv2d_codebook(x, indptr, indices, codes, codebook, wshape, bias=bias, stride=stride,
                                padding=padding, relu=relu)
        ref = F.conv2d(x, w, bias, stride=stride, padding=padding)
        if relu:
            ref = torch.relu(ref)
        assert y.shape == ref.shape and y.is_contiguous()
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("wshape,xshape,stride,padding", CASES)
def test_conv2d_int8_close_to_torch_and_exact_across_paths(wshape, xshape, stride, padding):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(*wshape, generator=g)
    x = torch.randn(*xshape, generator=g)
    bias = torch.randn(wshape[0], generator=g)
    packed = ops.pack_int8(w.reshape(wshape[0], -1))
    run = lambda: ops.conv2d_int8(x, packed, wshape[2:], bias=bias, stride=stride, padding=padding)  # noqa: E731
    ys, yv = scalar_and_avx2(run)
    assert yv is None or torch.equal(yv, ys)
    ref = F.conv2d(x, w, bias, stride=stride, padding=padding)
    assert ys.shape == ref.shape
    err = float((ys - ref).abs().max()) / (float(ref.abs().max()) + 1e-6)
    assert err < 0.05


def test_packed_conv_weight_is_reusable(isa):
    wshape = (6, 3, 3, 3)
    w, indptr, indices, codes, codebook = sparse_conv_weight(wshape, 0.5, seed=3)
    packed = ops.pack_codebook(indptr, indices, codes, codebook, 6, 27)
    x = torch.randn(2, 3, 8, 8)
    y = ops.conv2d_codebook_packed(x, packed, wshape, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-4)


def test_bad_conv_inputs_raise_typed_errors():
    wshape = (6, 3, 3, 3)
    w, indptr, indices, codes, codebook = sparse_conv_weight(wshape, 0.5, seed=4)
    with pytest.raises(OpInputError, match="channels"):
        ops.conv2d_codebook(torch.randn(1, 4, 8, 8), indptr, indices, codes, codebook, wshape)
    with pytest.raises(OpInputError, match="larger than the padded input"):
        ops.conv2d_codebook(torch.randn(1, 3, 2, 2), indptr, indices, codes, codebook, wshape)
    with pytest.raises(OpInputError, match="4-D"):
        ops.conv2d_codebook(torch.randn(3, 8, 8), indptr, indices, codes, codebook, wshape)
    with pytest.raises(OpInputError, match="stride"):
        ops.conv2d_codebook(torch.randn(1, 3, 8, 8), indptr, indices, codes, codebook, wshape, stride=0)
    packed = ops.pack_int8(torch.randn(6, 27))
    with pytest.raises(OpInputError, match="kernel_size"):
        ops.conv2d_int8(torch.randn(1, 3, 8, 8), packed, (2, 2))
