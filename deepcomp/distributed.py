"""Devices and multi-process training with PyTorch's own engine (torchrun + DDP).

``torchrun --standalone --nproc-per-node N -m deepcomp compress ...`` starts N copies of
the command with RANK / WORLD_SIZE / LOCAL_RANK set; ``setup`` joins them into one
process group (gloo on the CPU, NCCL on CUDA, one GPU per local rank) with a timeout on
every collective, so a rank that stops answering ends the run with an error instead of a
hang (torchrun itself stops the other ranks when one exits with an error).

Masks and codebooks are derived on every rank from weights that DDP keeps identical
(it broadcasts rank 0's parameters and buffers when it wraps the model, then averages
gradients with an all-reduce whose result every rank receives bit for bit), and
``check_identical`` proves it after every stage: an all-gather of CRC32 checksums.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist

from deepcomp.errors import DeepcompError

DEVICES = ("auto", "cpu", "cuda")


class DistributedError(DeepcompError):
    """The process group cannot start, a rank failed or timed out, or ranks disagree."""


def resolve_device(device=None, local_rank: int = 0) -> torch.device:
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' -> a torch.device."""
    if isinstance(device, torch.device):
        return device
    text = "auto" if device is None else str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeepcompError(f"--device {text}: this machine has no CUDA device that torch "
                                f"can use (torch.cuda.is_available() is False); use --device cpu")
        if text == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(text)
    raise DeepcompError(f"unknown device {text!r}; use one of {', '.join(DEVICES)}")


def tensors_crc(tensors: Mapping[str, torch.Tensor]) -> int:
    """CRC32 over names, shapes, dtypes and raw bytes (order-independent of the dict)."""
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach()
        crc = zlib.crc32(f"{name}:{tuple(t.shape)}:{t.dtype};".encode(), crc)
        raw = t.cpu().contiguous().reshape(-1)
        if raw.numel():
            crc = zlib.crc32(raw.view(torch.uint8).numpy().tobytes(), crc)
    return crc


@dataclass
class Dist:
    """This process's place in the run (a single process is rank 0 of 1)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float = 1800.0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _fail(self, what: str, e: BaseException) -> DistributedError:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return DistributedError(
            f"rank {self.rank}/{self.world_size}: {what}: another process failed or did not "
            f"answer within {self.timeout_s:g} s ({first})")

    def barrier(self, what: str) -> None:
        if not self.enabled:
            return
        try:
            if self.backend == "gloo":
                # Names the ranks that did not arrive, rather than waiting forever.
                dist.monitored_barrier(timeout=timedelta(seconds=self.timeout_s), wait_all_ranks=True)
            else:
                dist.barrier()
        except RuntimeError as e:
            raise self._fail(what, e) from None

    def gather_ints(self, values: list[int], what: str) -> list[list[int]]:
        """Every rank's ``values`` (same length on all), in rank order."""
        if not self.enabled:
            return [list(values)]
        dev = self.device if self.backend == "nccl" else torch.device("cpu")
        mine = torch.tensor(values, dtype=torch.int64, device=dev)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        try:
            dist.all_gather(out, mine)
        except RuntimeError as e:
            raise self._fail(what, e) from None
        return [t.cpu().tolist() for t in out]

    def check_identical(self, groups: Mapping[str, Mapping[str, torch.Tensor]], what: str) -> dict:
        """CRC32 of each group of tensors on this rank; raises if any rank differs.

        Returns {group: crc} (the same on every rank once this returns).
        """
        names = list(groups)
        crcs = [tensors_crc(groups[g]) for g in names]
        every = self.gather_ints(crcs, what)
        for i, g in enumerate(names):
            seen = [r[i] for r in every]
            if len(set(seen)) > 1:
                raise DistributedError(
                    f"{what}: the {g} differ between ranks (CRC32 by rank: "
                    f"{', '.join(f'{r}: {c:08x}' for r, c in enumerate(seen))}); the ranks must "
                    f"start from the same model and options")
        return dict(zip(names, crcs))

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device=None, timeout_s: float = 1800.0) -> Dist:
    """One process (no environment) or this rank of a torchrun / torch.distributed run."""
    if timeout_s <= 0:
        raise DeepcompError(f"--dist-timeout must be > 0 seconds, got {timeout_s}")
    if dist.is_available() and dist.is_initialized():  # the caller set the group up
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = resolve_device(device, local)
        return Dist(dev, rank, world, local, dist.get_backend(), timeout_s, owns_group=False)
    if not launched_by_torchrun():
        return Dist(resolve_device(device), timeout_s=timeout_s)
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed")
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {rank}/{world}: cannot join the process group "
                               f"({backend}): {str(e).strip().splitlines()[0]}") from None
    return Dist(dev, rank, world, local, backend, timeout_s, owns_group=True)
