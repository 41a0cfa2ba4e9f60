"""Writing output files so that a failure never leaves a partial file behind."""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable

from deepcomp.errors import DeepcompError


def atomic_write(path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(f) on a temporary file next to `path`, then rename it into place.

    An interrupted or failed write leaves `path` as it was. Problems with the destination
    (missing folder, a directory in the way, no permission, disk full) become a
    DeepcompError naming the path.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise DeepcompError(f"cannot write {path}: directory {d} does not exist")
    if os.path.isdir(path):
        raise DeepcompError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as e:
        raise DeepcompError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode open() would
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise DeepcompError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
