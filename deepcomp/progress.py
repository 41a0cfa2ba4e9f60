"""Progress bars (tqdm) for training, sweeps and long encodes.

A bar is drawn only when asked for and when stderr is a terminal: logs and pipes get
the callers' one line per stage instead (a bar redrawn with carriage returns is noise
in a file).
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterable

from tqdm import tqdm


def progress_bar(total: int, desc: str = "", enabled: bool = True, unit: str = "step",
                 stream=None, unit_scale: bool = False) -> tqdm:
    """A tqdm bar on stderr, or a silent one when ``enabled`` is off or stderr is no terminal."""
    stream = stream or sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(total=max(1, int(total)), desc=desc, unit=unit, file=stream, leave=True,
                disable=not (enabled and tty), dynamic_ncols=True, mininterval=0.2,
                unit_scale=unit_scale)


@contextmanager
def element_bar(tensors: Iterable, desc: str, enabled: bool):
    """A bar counting the elements of ``tensors`` as each one is done.

    Yields ``done(result, tensor) -> result``, safe to call from worker threads (the
    writer codes tensors on a pool). Progress is by elements, not tensors, because one
    embedding matrix can hold half of a model's weights.
    """
    sizes = [int(t.numel()) for t in tensors]
    bar = progress_bar(sum(sizes), desc, enabled=enabled, unit="w", unit_scale=True)
    lock = threading.Lock()

    def done(result, t):
        with lock:
            bar.update(int(t.numel()))
        return result

    try:
        yield done
    finally:
        bar.close()
