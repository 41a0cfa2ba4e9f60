"""Switching the native kernels between their scalar, AVX2 and AVX-512 paths in a test."""
import os

import pytest

from deepcomp import _C

_ENV_FORBIDS_AVX512 = os.environ.get("DEEPCOMP_NO_AVX512", "0") not in ("", "0")


def _forced() -> bool:
    return _C.active_isa() == "scalar" and _C.cpu_has_avx2()


def _restore(forced: bool) -> None:
    _C.set_force_scalar(forced)
    _C.set_allow_avx512(not _ENV_FORBIDS_AVX512)


def scalar_and_avx2(fn):
    """(scalar result, AVX2 (ymm) result) of fn(); the second is None without AVX2."""
    before = _forced()
    try:
        _C.set_force_scalar(True)
        ys = fn()
        yv = None
        if _C.cpu_has_avx2():
            _C.set_force_scalar(False)
            _C.set_allow_avx512(False)
            yv = fn()
    finally:
        _restore(before)
    return ys, yv


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def isa(request):
    """Runs the test on each kernel path: scalar, AVX2 on ymm, and the zmm variants where
    the CPU has AVX-512 (the same *_avx2.cpp kernels; skipped elsewhere)."""
    if request.param != "scalar" and not _C.cpu_has_avx2():
        pytest.skip("CPU without AVX2")
    before = _forced()
    _C.set_force_scalar(request.param == "scalar")
    _C.set_allow_avx512(request.param == "avx512")
    if request.param == "avx512" and not _C.avx512_usable():
        _restore(before)
        pytest.skip("CPU without AVX-512")
    try:
        yield request.param
    finally:
        _restore(before)
