"""Opt-in, bounded-error storage of float values: snap them to a power-of-two grid.

A lossless coder spends ~27 bits on every fp32 bias or norm parameter (the low mantissa
bits of trained values are noise) and ~20 bits on every codebook centroid. Near-lossless
coders (NNCodec's codebook and uniform modes) quantize those too, to a step bounded by
the tensor's range. `snap_state_dict(sd, rel)` does the same, only when asked: every
float32 value v of a tensor becomes round(v / step) * step with step = the largest power
of two <= 2 * rel * range(tensor), so |error| <= step / 2 <= rel * range. The snapped
values have few significant mantissa bits (the coders' adaptive mantissa models learn
that) and fewer distinct values (shared tensors keep their codebook or merge entries).
The file is then coded exactly as usual: decoding gives the snapped values bit for bit.

A power of two, not the exact bound: k * 2^e is exact in fp32 while |k| < 2^24, so
snapping is one rounding, and the grid is the same on every platform.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from deepcomp.errors import DeepcompError


def check_rel(rel) -> float:
    if isinstance(rel, bool) or not isinstance(rel, (int, float)) or not math.isfinite(rel) or not 0 < rel < 0.5:
        raise DeepcompError(f"snap must be a relative error bound in (0, 0.5), e.g. 1e-3, not {rel!r}")
    return float(rel)


def grid_step(t: torch.Tensor, rel: float) -> float | None:
    """The snapping step of a tensor (a power of two), or None when it stays as it is
    (not float32, empty, non-finite values, or all zeros)."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.numel() == 0:
        return None
    tt = t.detach()
    if not bool(torch.isfinite(tt).all()):
        return None
    lo, hi = float(tt.min()), float(tt.max())
    span = hi - lo if hi > lo else abs(hi)
    if span == 0:
        return None
    return 2.0 ** math.floor(math.log2(2 * rel * span))


def snap_tensor(t: torch.Tensor, rel: float) -> torch.Tensor:
    """t with every value on its grid (see the module doc); other tensors unchanged."""
    step = grid_step(t, check_rel(rel))
    if step is None:
        return t
    x = t.detach().cpu().to(torch.float64)
    q = torch.round(x / step) * step
    # max |v| / step <= 1 / rel < 2^24 only for spans near max |v|; a tiny span next to a
    # big offset (a norm weight of 1.0 +- 1e-6) could need more bits than fp32 holds, so
    # such a tensor is kept as it is rather than rounded twice.
    if float(q.abs().max()) / step >= 2 ** 24:
        return t
    out = q.to(torch.float32)
    return out + 0.0  # -0.0 -> +0.0: a snapped zero is a structural zero of the sparse layout


def snap_state_dict(sd: Mapping, rel: float) -> dict:
    rel = check_rel(rel)
    return {k: snap_tensor(v, rel) if isinstance(v, torch.Tensor) else v for k, v in sd.items()}


def max_rel_error(before: Mapping, after: Mapping) -> float:
    """The largest |after - before| over a tensor's range, over every float32 tensor."""
    worst = 0.0
    for k, a in before.items():
        if not isinstance(a, torch.Tensor) or a.dtype != torch.float32 or a.numel() == 0:
            continue
        a64, b64 = a.detach().double(), after[k].detach().double()
        lo, hi = float(a64.min()), float(a64.max())
        span = hi - lo if hi > lo else abs(hi)
        if span > 0:
            worst = max(worst, float((b64 - a64).abs().max()) / span)
    return worst
