"""The native module builds, imports and dispatches."""
import subprocess
import sys

from deepcomp import _C


def test_isa_is_reported():
    assert _C.active_isa() in ("avx2", "scalar")


def test_force_scalar_switch_in_process():
    before = _C.active_isa()
    _C.set_force_scalar(True)
    try:
        assert _C.active_isa() == "scalar"
    finally:
        _C.set_force_scalar(False)
    assert _C.active_isa() == ("avx2" if _C.cpu_has_avx2() else "scalar")
    assert before == _C.active_isa()


def test_force_scalar_environment_variable():
    code = "from deepcomp import _C; print(_C.active_isa())"
    env = {"DEEPCOMP_FORCE_SCALAR": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"
