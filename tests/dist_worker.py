"""Run under torchrun (2 CPU processes) by tests/test_distributed.py.

Three scenarios in one process group, printed one line each: checksums that agree,
checksums that differ (both ranks must raise), and a rank that stays alive but never
reaches a barrier (rank 0 must fail within the timeout, not hang).
"""
import os
import sys
import time

import torch

from deepcomp.distributed import DistributedError, setup


def say(line: str, fd: int = 1) -> None:
    # One write per line: both ranks share the pipe, and print() may split a line from
    # its newline, which interleaves the ranks' lines.
    os.write(fd, (line + "\n").encode())


def main() -> int:
    d = setup("cpu", timeout_s=3.0)
    t = {"a": torch.arange(10.0), "m": torch.tensor([True, False])}
    crcs = d.check_identical({"masks": t}, "agree")
    say(f"agree rank {d.rank} crc {crcs['masks']:08x}")
    try:
        d.check_identical({"codebooks": {"a": torch.arange(10.0) + d.rank}}, "differ")
        say(f"differ rank {d.rank} passed")
    except DistributedError as e:
        say(f"differ rank {d.rank} raised: {e}")
    if d.rank == 1:
        time.sleep(60)  # alive, but never arrives; torchrun ends it when rank 0 fails
    try:
        d.barrier("stall")
    except DistributedError as e:
        say(f"stall rank {d.rank} raised: {e}", 2)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
