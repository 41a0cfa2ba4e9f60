import os

# Set before torch or deepcomp load libgomp: idle OpenMP threads then sleep instead of
# spinning, which on a 2-vCPU machine would steal the core the test runs on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from isa_paths import isa  # noqa: E402,F401  (fixture: runs a test on each kernel path)
