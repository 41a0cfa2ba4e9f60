"""int8 GEMM: exact against an integer reference, AVX2 bit-identical to scalar, the
maddubs worst case, and the quantization error against fp32."""
import numpy as np
import pytest
import torch

from deepcomp import _C, ops
from deepcomp.errors import OpInputError
from isa_paths import scalar_and_avx2


def reference(x: torch.Tensor, packed: ops.Int8Weight, bias=None, relu=False) -> np.ndarray:
    """The documented quantization, in float32 NumPy and exact int64 sums; float64 for the
    last multiply-add (rounded once to float32, as the kernel's fused multiply-add)."""
    xn = x.numpy().astype(np.float32)
    lo = np.minimum(xn.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(xn.max(axis=1), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(127)).astype(np.float32)
    s = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / s).astype(np.float32)
    zp = np.clip(np.rint(-lo / s), 0, 127).astype(np.int64)
    xq = np.clip(np.rint(xn * inv[:, None]).astype(np.int64) + zp[:, None], 0, 127)
    q = packed.q().astype(np.int64)
    acc = xq @ q.T - zp[:, None] * q.sum(axis=1)[None, :]
    scale = (s[:, None] * packed.scales[None, :]).astype(np.float32)
    b = np.zeros(packed.n_out) if bias is None else bias.numpy().astype(np.float64)
    y = (acc.astype(np.float32).astype(np.float64) * scale.astype(np.float64) + b).astype(np.float32)
    return np.maximum(y, 0) if relu else y


SHAPES = [(1, 5), (7, 33), (33, 300), (300, 784), (10, 4)]
BATCHES = [1, 3, 5, 64]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_avx2_equals_scalar_bit_for_bit(shape, batch):
    if not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    out_f, in_f = shape
    g = torch.Generator().manual_seed(out_f * 13 + batch)
    w = torch.randn(out_f, in_f, generator=g)
    x = torch.randn(batch, in_f, generator=g) * 3 + 0.5
    bias = torch.randn(out_f, generator=g)
    packed = ops.pack_int8(w)
    for relu in (False, True):
        ys, yv = scalar_and_avx2(lambda: ops.gemm_int8(x, packed, bias=bias, relu=relu))
        assert torch.equal(ys, yv)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_matches_integer_reference(isa, shape, batch):
    out_f, in_f = shape
    g = torch.Generator().manual_seed(out_f + batch)
    w = torch.randn(out_f, in_f, generator=g)
    x = torch.randn(batch, in_f, generator=g)
    bias = torch.randn(out_f, generator=g)
    packed = ops.pack_int8(w)
    y = ops.gemm_int8(x, packed, bias=bias, relu=True).numpy()
    ref = reference(x, packed, bias, relu=True)
    # Exact up to the one float64-vs-fused rounding of the last step: at most 1 ulp.
    np.testing.assert_array_max_ulp(y, ref, maxulp=1)


@pytest.mark.parametrize("shape,batch", [((40, 25088), 24), ((37, 1030), 9), ((33, 300), 129)])
def test_long_and_odd_shapes_equal_scalar_on_every_path(isa, shape, batch):
    """K long enough to be split in chunks (activations over 512 KiB), K not a multiple of
    4, and batches that leave partial tiles of rows and channels."""
    out_f, in_f = shape
    g = torch.Generator().manual_seed(in_f + batch)
    w = torch.randn(out_f, in_f, generator=g)
    x = torch.randn(batch, in_f, generator=g) * 2 - 0.3
    bias = torch.randn(out_f, generator=g)
    packed = ops.pack_int8(w)
    y = ops.gemm_int8(x, packed, bias=bias)
    forced = _C.active_isa() == "scalar"
    _C.set_force_scalar(True)
    try:
        ys = ops.gemm_int8(x, packed, bias=bias)
    finally:
        _C.set_force_scalar(forced)
    assert torch.equal(y, ys)


def test_maddubs_worst_case_is_exact(isa):
    # Activations at the top of the 7-bit range against weights of both extreme signs:
    # every maddubs pair sums to +-2 * 127 * 127 = +-32258, just inside int16. With 8-bit
    # activations (255) the pair would be 64770 and saturate; the result must be exact.
    k = 1024
    x = torch.full((2, k), 127.0)
    x[:, 0] = 0.0  # the row range is [0, 127]: scale 1, zero point 0, xq == x
    x[1, 1::2] = 0.0
    w = torch.full((16, k), 127.0)
    w[1::2] = -127.0
    w[2, ::3] = -127.0
    packed = ops.pack_int8(w)
    assert np.array_equal(packed.q(), w.numpy().astype(np.int8))
    assert np.all(packed.scales == 1.0)
    y = ops.gemm_int8(x, packed)
    exact = (x.double() @ w.double().T)
    assert float(exact.abs().max()) >= (k - 1) * 127 * 127
    assert torch.equal(y.double(), exact)


def test_negative_activations_use_the_zero_point(isa):
    k = 64
    x = torch.arange(k, dtype=torch.float32).reshape(1, k) - 63.0  # [-63, 0]: scale 63/127
    x = x * (127.0 / 63.0)  # [-127, 0]: scale 1, zero point 127
    w = torch.ones(3, k) * 127
    packed = ops.pack_int8(w)
    y = ops.gemm_int8(x, packed)
    ref = reference(x, packed)
    np.testing.assert_array_max_ulp(y.numpy(), ref, maxulp=1)
    torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("batch", [1, 16])
def test_quantization_error_is_small(isa, batch):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 784, generator=g)
    x = torch.randn(batch, 784, generator=g)
    y = ops.gemm_int8(x, ops.pack_int8(w))
    ref = x @ w.T
    err = float((y - ref).abs().max()) / float(ref.abs().max())
    assert err < 0.03


def test_zero_rows_and_zero_input(isa):
    w = torch.randn(9, 20)
    w[3] = 0
    packed = ops.pack_int8(w)
    assert packed.scales[3] == 1.0 and not packed.q()[3].any()
    x = torch.zeros(2, 20)
    bias = torch.arange(9, dtype=torch.float32)
    assert torch.equal(ops.gemm_int8(x, packed, bias=bias), bias.expand(2, 9))


def test_pack_layout_roundtrip_and_dequantize():
    w = torch.randn(13, 10)
    packed = ops.pack_int8(w)
    q = np.clip(np.rint(w.numpy() / packed.scales[:, None]), -127, 127).astype(np.int8)
    assert np.array_equal(packed.q(), q)
    assert np.array_equal(packed.row_sums, q.astype(np.int32).sum(axis=1))
    assert float((packed.dequantize() - w).abs().max()) <= float(packed.scales.max()) / 2 + 1e-6


def test_bad_inputs_raise_typed_errors():
    packed = ops.pack_int8(torch.randn(4, 8))
    with pytest.raises(OpInputError, match="features"):
        ops.gemm_int8(torch.randn(2, 9), packed)
    with pytest.raises(OpInputError, match="Int8Weight"):
        ops.gemm_int8(torch.randn(2, 8), torch.randn(4, 8))
    with pytest.raises(OpInputError, match="2-D"):
        ops.pack_int8(torch.randn(4, 8, 2))
    with pytest.raises(OpInputError, match="finite"):
        ops.pack_int8(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(OpInputError, match="exceeds"):
        ops.pack_int8(torch.zeros(1, ops.INT8_MAX_K + 1))
    with pytest.raises(OpInputError, match="bias"):
        ops.gemm_int8(torch.randn(2, 8), packed, bias=torch.zeros(5))


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_vnni_and_maddubs_paths_agree(batch):
    if not _C.int8_vnni_available():
        pytest.skip("CPU without AVX-VNNI")
    g = torch.Generator().manual_seed(batch)
    w = torch.randn(40, 2100, generator=g)  # K spans several 2048-wide chunks
    x = torch.randn(batch, 2100, generator=g)
    packed = ops.pack_int8(w)
    before = _C.int8_vnni_enabled() or _C.int8_vnni512_enabled()
    try:
        _C.set_int8_vnni(False)
        y_madd = ops.gemm_int8(x, packed, relu=True)
        _C.set_int8_vnni(True)
        y_vnni = ops.gemm_int8(x, packed, relu=True)
    finally:
        _C.set_int8_vnni(before)
    assert torch.equal(y_madd, y_vnni)
    np.testing.assert_array_max_ulp(y_vnni.numpy(), reference(x, packed, relu=True), maxulp=1)


@pytest.mark.parametrize("vnni", [False, True])
@pytest.mark.parametrize("shape,batch", [((70, 4100), 129), ((16, 8200), 256), ((40, 25088), 24),
                                         ((37, 1030), 9), ((300, 784), 4), ((50, 2053), 2)])
def test_ymm_paths_equal_scalar(vnni, shape, batch):
    """The ymm kernel with maddubs + madd and with AVX-VNNI, on shapes where K is cut into
    several L2-sized passes (batch <= 256), where the next weights are prefetched (batch >= 4)
    and where rows and channels leave partial tiles; bit for bit against the scalar twin."""
    if not _C.cpu_has_avx2() or (vnni and not _C.int8_vnni_available()):
        pytest.skip("CPU without AVX2 / AVX-VNNI")
    out_f, in_f = shape
    g = torch.Generator().manual_seed(in_f * 3 + batch)
    w = torch.randn(out_f, in_f, generator=g)
    x = torch.randn(batch, in_f, generator=g) * 1.5 + 0.2
    x[0, ::7] = 0.0
    bias = torch.randn(out_f, generator=g)
    packed = ops.pack_int8(w)
    before = _C.int8_vnni_enabled() or _C.int8_vnni512_enabled()
    try:
        _C.set_int8_vnni(vnni)
        ys, yv = scalar_and_avx2(lambda: ops.gemm_int8(x, packed, bias=bias, relu=True))
    finally:
        _C.set_int8_vnni(before)
    assert torch.equal(ys, yv)


@pytest.mark.parametrize("shape,batch", [((70, 4100), 129), ((16, 8200), 256), ((40, 25088), 24),
                                         ((37, 1030), 9), ((300, 784), 4), ((50, 2053), 5)])
def test_zmm_vnni_path_equals_scalar(shape, batch):
    """The AVX512-VNNI kernel (batches >= 4) bit for bit against the scalar twin. It runs on
    every CPU with AVX512-VNNI, also those without AVX-VNNI (Zen 4, Ice Lake servers)."""
    from isa_paths import _forced, _restore

    out_f, in_f = shape
    g = torch.Generator().manual_seed(in_f * 5 + batch)
    w = torch.randn(out_f, in_f, generator=g)
    x = torch.randn(batch, in_f, generator=g) * 1.5 + 0.2
    x[1, ::5] = 0.0
    bias = torch.randn(out_f, generator=g)
    packed = ops.pack_int8(w)
    forced, before = _forced(), _C.int8_vnni_enabled() or _C.int8_vnni512_enabled()
    try:
        _C.set_force_scalar(False)
        _C.set_allow_avx512(True)
        _C.set_int8_vnni(True)
        if not _C.int8_vnni512_enabled():
            pytest.skip("CPU without AVX512-VNNI")
        yz = ops.gemm_int8(x, packed, bias=bias, relu=True)
        _C.set_force_scalar(True)
        ys = ops.gemm_int8(x, packed, bias=bias, relu=True)
    finally:
        _C.set_int8_vnni(before)
        _restore(forced)
    assert torch.equal(ys, yz)


@pytest.mark.parametrize("in_f", [31, 32, 33, 95, 100, 129])
def test_quantization_tails_equal_scalar(in_f):
    """The activation quantizer's 32-wide loop, its 8-wide tail and its scalar tail agree
    with the scalar twin, with values at and just inside the ends of each row's range."""
    if not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    g = torch.Generator().manual_seed(in_f)
    x = torch.randn(6, in_f, generator=g) * 40
    x[1] = x[1].abs()          # zero point 0
    x[2] = -x[2].abs()         # zero point 127
    x[3, ::2] = x[3].max()     # many values at the top of the range
    x[4] = torch.nextafter(x[4], torch.full_like(x[4], float("inf")))
    packed = ops.pack_int8(torch.randn(17, in_f, generator=g))
    ys, yv = scalar_and_avx2(lambda: ops.gemm_int8(x, packed))
    assert torch.equal(ys, yv)
