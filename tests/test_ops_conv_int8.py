"""int8 direct convolution: exact against an integer reference, scalar / AVX2 / AVX512-VNNI
bit-identical on awkward shapes, thread-count independent, within the stated quantization
bound of fp32 conv2d, and typed errors for bad inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcomp import _C, ops
from deepcomp.errors import OpInputError
from isa_paths import _ENV_FORBIDS_AVX512, _forced, _restore


def reference(x: torch.Tensor, packed: ops.Int8ConvWeight, bias, stride, padding, relu):
    """The documented quantization (per image, range including 0, 7 bits, padding at the zero
    point) with exact integer sums; float64 for the last multiply-add, rounded once."""
    n = x.shape[0]
    xn = x.numpy().reshape(n, -1).astype(np.float32)
    lo = np.minimum(xn.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(xn.max(axis=1), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(127)).astype(np.float32)
    s = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / s).astype(np.float32)
    zp = np.clip(np.rint(-lo / s), 0, 127).astype(np.int64)
    xq = np.clip(np.rint(xn * inv[:, None]).astype(np.int64) + zp[:, None], 0, 127).reshape(x.shape)
    ph, pw = padding
    padded = np.empty((x.shape[0], x.shape[1], x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), np.int64)
    padded[...] = zp[:, None, None, None]
    padded[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = xq
    q = packed.q().astype(np.int64)
    # Integers below 2**53: float64 conv2d is exact here.
    acc = F.conv2d(torch.from_numpy(padded.astype(np.float64)), torch.from_numpy(q.astype(np.float64)),
                   stride=stride).numpy().round().astype(np.int64)
    acc -= zp[:, None, None, None] * q.sum(axis=(1, 2, 3))[None, :, None, None]
    scale = (s[:, None] * packed.scales[None, :]).astype(np.float32).astype(np.float64)
    b = np.zeros(packed.shape[0]) if bias is None else bias.numpy().astype(np.float64)
    y = (acc.astype(np.float32).astype(np.float64) * scale[:, :, None, None] + b[None, :, None, None]).astype(np.float32)
    return (np.maximum(y, 0) if relu else y), s


def all_paths(fn):
    """{path: fn()} on the scalar twin, AVX2 (maddubs, ymm) and the zmm paths where present."""
    before = _forced()
    out = {}
    try:
        _C.set_force_scalar(True)
        out["scalar"] = fn()
        if _C.cpu_has_avx2():
            _C.set_force_scalar(False)
            _C.set_allow_avx512(False)
            out["avx2"] = fn()
            if not _ENV_FORBIDS_AVX512:
                _C.set_allow_avx512(True)
                if _C.avx512_usable():
                    out["avx512"] = fn()
    finally:
        _restore(before)
    return out


# (out, in, kh, kw), (n, h, w), stride, padding
CASES = [
    ((1, 1, 1, 1), (1, 1, 1), 1, 0),
    ((7, 1, 3, 3), (3, 5, 7), 1, 1),
    ((33, 7, 3, 3), (1, 9, 11), 2, 1),
    ((7, 33, 5, 5), (3, 7, 5), 1, 2),
    ((33, 33, 1, 1), (1, 13, 3), 2, 0),
    ((1, 7, 1, 1), (3, 17, 19), 1, 0),
    ((7, 7, 5, 5), (1, 11, 9), 2, 2),
    ((16, 33, 3, 2), (3, 10, 9), (2, 1), (1, 0)),
    ((3, 2, 4, 4), (1, 4, 4), 3, 2),        # one output that sees mostly padding
    ((64, 64, 3, 3), (1, 14, 14), 1, 1),
    ((40, 36, 3, 3), (3, 29, 31), 2, 1),     # many tasks, partial 8-channel block
]


def _case(wshape, xshape, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*wshape, generator=g)
    x = torch.randn(xshape[0], wshape[1], xshape[1], xshape[2], generator=g) * 2 + 0.3
    bias = torch.randn(wshape[0], generator=g)
    return w, x, bias


@pytest.mark.parametrize("wshape,xshape,stride,padding", CASES)
def test_paths_bit_identical_and_exact(wshape, xshape, stride, padding):
    w, x, bias = _case(wshape, xshape, sum(wshape) + sum(xshape))
    packed = ops.pack_int8_conv(w)
    st = (stride, stride) if isinstance(stride, int) else stride
    pd = (padding, padding) if isinstance(padding, int) else padding
    for relu in (False, True):
        got = all_paths(lambda: ops.conv2d_int8_direct(x, packed, bias, stride, padding, relu=relu))
        ys = got.pop("scalar")
        for path, y in got.items():
            assert torch.equal(y, ys), path
        ref, _ = reference(x, packed, bias, st, pd, relu)
        assert ys.shape == ref.shape and ys.is_contiguous()
        # Exact sums; only the float64-vs-fused rounding of the last step may differ.
        np.testing.assert_array_max_ulp(ys.numpy(), ref, maxulp=1)


@pytest.mark.parametrize("wshape,xshape,stride,padding", CASES[1:8])
def test_within_quantization_bound_of_fp32(wshape, xshape, stride, padding):
    """Against F.conv2d on the dequantized weights: each activation is off by at most half
    a step s of its image, so an output is off by at most s / 2 * sum |w| over its taps."""
    w, x, bias = _case(wshape, xshape, 7 + sum(wshape))
    packed = ops.pack_int8_conv(w)
    y = ops.conv2d_int8_direct(x, packed, bias, stride, padding)
    wd = packed.dequantize()
    ref = F.conv2d(x, wd, bias, stride=stride, padding=padding)
    st = (stride, stride) if isinstance(stride, int) else stride
    pd = (padding, padding) if isinstance(padding, int) else padding
    _, s = reference(x, packed, bias, st, pd, False)
    bound = 0.5 * s[:, None] * wd.abs().sum(dim=(1, 2, 3)).numpy()[None, :]
    err = (y - ref).abs().amax(dim=(2, 3)).numpy()
    assert np.all(err <= bound * 1.001 + 1e-5)
    # And against the original fp32 weights, the error in practice: a few % of the scale.
    full = F.conv2d(x, w, bias, stride=stride, padding=padding)
    assert float((y - full).abs().max()) <= 0.06 * float(full.abs().max())


def test_result_does_not_depend_on_thread_count():
    w, x, bias = _case((40, 36, 3, 3), (3, 29, 31), 5)
    packed = ops.pack_int8_conv(w)
    before_n, before_w = ops.get_num_threads(), _C.parallel_min_work()
    try:
        runs = []
        for n in (1, 2, 3):
            ops.set_num_threads(n)
            _C.set_parallel_min_work(0)
            runs.append(all_paths(lambda: ops.conv2d_int8_direct(x, packed, bias, 2, 1, relu=True)))
    finally:
        ops.set_num_threads(before_n)
        _C.set_parallel_min_work(before_w)
    for r in runs[1:]:
        for path in r:
            assert torch.equal(r[path], runs[0][path]), path


def test_padding_adds_exactly_zero():
    """A constant image: every output pixel, padded or not, sees the same quantized value,
    so the outputs differ exactly by the weights of the taps that fall in the padding."""
    w = torch.ones(2, 3, 3, 3)
    w[1] = -1
    x = torch.full((1, 3, 4, 5), 0.75)
    packed = ops.pack_int8_conv(w)
    for y in all_paths(lambda: ops.conv2d_int8_direct(x, packed, padding=1)).values():
        taps = F.conv2d(torch.ones(1, 3, 4, 5), torch.ones(1, 3, 3, 3), padding=1)[0, 0]
        torch.testing.assert_close(y[0, 0], 0.75 * taps, rtol=0, atol=1e-5)
        torch.testing.assert_close(y[0, 1], -0.75 * taps, rtol=0, atol=1e-5)


def test_unpacked_weights_round_trip():
    w = torch.randn(9, 5, 3, 2)
    packed = ops.pack_int8_conv(w)
    scales = w.reshape(9, -1).abs().amax(dim=1) / 127
    assert np.array_equal(packed.q(), np.clip(np.rint(w.numpy() / scales.numpy()[:, None, None, None]), -127, 127))
    assert packed.row_sums.tolist() == packed.q().astype(np.int64).sum(axis=(1, 2, 3)).tolist()
    assert (packed.dequantize() - w).abs().max() <= scales.max() / 2 + 1e-6


def test_empty_batch_and_zero_weights():
    packed = ops.pack_int8_conv(torch.zeros(4, 3, 3, 3))
    assert ops.conv2d_int8_direct(torch.randn(0, 3, 5, 5), packed).shape == (0, 4, 3, 3)
    y = ops.conv2d_int8_direct(torch.randn(2, 3, 5, 5), packed, bias=torch.arange(4.0), padding=1)
    assert torch.equal(y, torch.arange(4.0)[None, :, None, None].expand(2, 4, 5, 5))


def test_bad_inputs_raise_typed_errors():
    packed = ops.pack_int8_conv(torch.randn(6, 3, 3, 3))
    with pytest.raises(OpInputError, match="channels"):
        ops.conv2d_int8_direct(torch.randn(1, 4, 8, 8), packed)
    with pytest.raises(OpInputError, match="4-D"):
        ops.conv2d_int8_direct(torch.randn(3, 8, 8), packed)
    with pytest.raises(OpInputError, match="float32"):
        ops.conv2d_int8_direct(torch.randn(1, 3, 8, 8, dtype=torch.float64), packed)
    with pytest.raises(OpInputError, match="stride"):
        ops.conv2d_int8_direct(torch.randn(1, 3, 8, 8), packed, stride=0)
    with pytest.raises(OpInputError, match="padding"):
        ops.conv2d_int8_direct(torch.randn(1, 3, 8, 8), packed, padding=-1)
    with pytest.raises(OpInputError, match="larger than the padded input"):
        ops.conv2d_int8_direct(torch.randn(1, 3, 2, 2), packed)
    with pytest.raises(OpInputError, match="bias"):
        ops.conv2d_int8_direct(torch.randn(1, 3, 8, 8), packed, bias=torch.randn(5))
    with pytest.raises(OpInputError, match="Int8ConvWeight"):
        ops.conv2d_int8_direct(torch.randn(1, 3, 8, 8), ops.pack_int8(torch.randn(6, 27)))
    with pytest.raises(OpInputError, match="4-D"):
        ops.pack_int8_conv(torch.randn(6, 27))
    with pytest.raises(OpInputError, match="finite"):
        ops.pack_int8_conv(torch.full((2, 2, 1, 1), float("nan")))
    with pytest.raises(OpInputError, match="exact int32"):
        ops.pack_int8_conv(torch.zeros(1, 20000, 3, 3))
