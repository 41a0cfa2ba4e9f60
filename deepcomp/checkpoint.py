"""Checkpoints of a compress run after every stage, and resuming from the last one.

A checkpoint is ``DIR/stage-NN.pt``: a dict of plain tensors, numbers, strings, lists and
dicts written with ``torch.save`` through write-to-temporary-and-rename (a crash leaves
the previous checkpoint, never half a file) and read back with
``torch.load(weights_only=True)``, which refuses anything but those types, so a
checkpoint from elsewhere cannot run code. It holds the weights, the masks, the
codebooks, the last stage's optimizer state, the RNG states and the stage table.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from deepcomp.errors import DeepcompError
from deepcomp.fileio import atomic_write

FORMAT = "deepcomp-checkpoint"
VERSION = 1
_NAME = re.compile(r"stage-(\d{2,})\.pt")


class CheckpointError(DeepcompError):
    """A checkpoint folder or file cannot be used to resume."""


def rng_state() -> dict:
    py_version, py_state, py_gauss = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": None if py_gauss is None else float(py_gauss)},
    }


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and \
            len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def checkpoint_path(folder, stage: int) -> Path:
    return Path(folder) / f"stage-{stage:02d}.pt"


def write(folder, stage: int, payload: dict) -> Path:
    """Write the checkpoint after ``stage`` (0-based), then drop the older ones."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the checkpoint folder {folder}: {e.strerror}") from None
    path = checkpoint_path(folder, stage)
    obj = {"format": FORMAT, "version": VERSION, "stage": int(stage), **payload}
    atomic_write(path, lambda f: torch.save(obj, f))
    for old in folder.iterdir():
        m = _NAME.fullmatch(old.name)
        if m and int(m.group(1)) < stage:
            old.unlink(missing_ok=True)
    return path


def latest(folder) -> Path | None:
    """The newest complete checkpoint in ``folder`` (temporary files never match)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name))]
    return max(found)[1] if found else None


def read(path) -> dict:
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, refused globals, I/O errors ...
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a deepcomp checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {obj.get('version')}; this build "
                              f"reads version {VERSION}")
    for key in ("stage", "stages", "config", "model", "rng"):
        if key not in obj:
            raise CheckpointError(f"checkpoint {path} lacks its {key!r} entry")
    return obj
