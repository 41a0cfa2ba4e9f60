"""Compressed modules and the graph executor that run a .dcz file directly.

Names are imported on first use so that `deepcomp --help` does not pay for torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load": "loader", "from_state_dict": "loader",
    "set_policy": "layers", "resident_weight_bytes": "layers", "path_summary": "layers",
    "RuntimeLinear": "layers", "RuntimeConv2d": "layers", "runtime_layers": "layers",
    "POLICIES": "layers",
    "RuntimeEmbedding": "embedding",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'deepcomp.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deepcomp.runtime.{mod}"), name)
