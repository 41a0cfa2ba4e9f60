import os

import pytest

# Tests must not depend on how many threads the machine offers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
