"""Every name the package, its benchmarks and its tests use is defined.

Paths that only a long run reaches (the end of a planned `compress`) once used a variable
from another function's scope; Python reports that only when the line runs. pyflakes
finds it without running anything.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_no_undefined_names():
    api = pytest.importorskip("pyflakes.api")
    messages = pytest.importorskip("pyflakes.messages")
    from pyflakes.reporter import Reporter

    found = []

    class Collect(Reporter):
        def __init__(self):
            super().__init__(None, None)

        def flake(self, m):
            if isinstance(m, (messages.UndefinedName, messages.UndefinedLocal,
                              messages.UndefinedExport)):
                found.append(str(m))

        def syntaxError(self, filename, msg, lineno, offset, text):
            found.append(f"{filename}:{lineno}: {msg}")

        def unexpectedError(self, filename, msg):
            found.append(f"{filename}: {msg}")

    paths = [str(ROOT / d) for d in ("deepcomp", "benchmarks", "tests")]
    api.checkRecursive(paths, Collect())
    assert not found, "\n".join(found)
