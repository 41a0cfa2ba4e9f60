"""Run under torchrun (2 CPU processes) by tests/test_distributed.py.

Three scenarios in one process group, printed one line each: checksums that agree,
checksums that differ (both ranks must raise), and a rank that stays alive but never
reaches a barrier (rank 0 must fail within the timeout, not hang).
"""
import sys
import time

import torch

from deepcomp.distributed import DistributedError, setup


def main() -> int:
    d = setup("cpu", timeout_s=3.0)
    t = {"a": torch.arange(10.0), "m": torch.tensor([True, False])}
    crcs = d.check_identical({"masks": t}, "agree")
    print(f"agree rank {d.rank} crc {crcs['masks']:08x}", flush=True)
    try:
        d.check_identical({"codebooks": {"a": torch.arange(10.0) + d.rank}}, "differ")
        print(f"differ rank {d.rank} passed", flush=True)
    except DistributedError as e:
        print(f"differ rank {d.rank} raised: {e}", flush=True)
    if d.rank == 1:
        time.sleep(60)  # alive, but never arrives; torchrun ends it when rank 0 fails
    try:
        d.barrier("stall")
    except DistributedError as e:
        print(f"stall rank {d.rank} raised: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
