"""Weights whose rows are smooth images, as a trained first layer over pixels is (tests only)."""
from __future__ import annotations

import torch


def smooth_images(rows: int, side: int, density: float, seed: int, k: int = 8) -> torch.Tensor:
    """rows x side*side: per row a few signed Gaussian blobs, the largest `density` kept,
    shared to k levels per sign; so neighbours share sign and survival."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    out = torch.zeros(rows, side, side)
    for r in range(rows):
        for _ in range(3):
            cy, cx = torch.rand(2, generator=g) * side
            amp = torch.randn((), generator=g)
            out[r] += amp * torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.1 * side * side))
    w = out.reshape(rows, -1)
    cut = w.abs().flatten().kthvalue(max(1, int(w.numel() * (1 - density)))).values
    levels = torch.round(w / w.abs().max() * k) / k
    return torch.where(w.abs() > cut, levels, torch.zeros(()))
