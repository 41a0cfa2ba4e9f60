"""Switching the native kernels between their scalar and AVX2 paths inside a test."""
import pytest

from deepcomp import _C


def _forced() -> bool:
    return _C.active_isa() == "scalar" and _C.cpu_has_avx2()


def scalar_and_avx2(fn):
    """(scalar result, AVX2 result) of fn(); the AVX2 result is None on a CPU without AVX2."""
    before = _forced()
    try:
        _C.set_force_scalar(True)
        ys = fn()
        yv = None
        if _C.cpu_has_avx2():
            _C.set_force_scalar(False)
            yv = fn()
    finally:
        _C.set_force_scalar(before)
    return ys, yv


@pytest.fixture(params=["scalar", "avx2"])
def isa(request):
    """Runs the test once on each kernel path."""
    if request.param == "avx2" and not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    before = _forced()
    _C.set_force_scalar(request.param == "scalar")
    try:
        yield request.param
    finally:
        _C.set_force_scalar(before)
