import os

# Set before torch or deepcomp load libgomp: idle OpenMP threads then sleep instead of
# spinning, which on a 2-vCPU machine would steal the core the test runs on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from isa_paths import isa  # noqa: E402,F401  (fixture: runs a test on each kernel path)


@pytest.fixture
def one_thread():
    """Small nets train fastest on one thread here; restore the caller's setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
