"""Symbolic dimensions of the stored graph: an integer, or a product of named symbols.

A graph input declares its shape with integers and symbol names ("batch", "seq").
Attributes that depend on them (a reshape to [batch, seq, 4, 8]) write a dim as a
string: one symbol, or a product such as "batch*seq" or "4*seq". Nothing else is
accepted, so a dim string is parsed, never evaluated. The validator propagates shapes
with these monomials; the executor substitutes the sizes bound from the inputs.

In memory a symbolic dim is a tuple (coef, (sym, ...)) with the symbols sorted, so
equal products compare equal; a static dim is a plain int; None is a size nobody
declared (an input dim written as null, as version-1 graphs leave image sizes), which
the rules accept where it cannot matter and the input check leaves free.
"""
from __future__ import annotations

import re

MAX_DIM = 1 << 40
_SYM_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


class DimError(ValueError):
    """A dim string or value that does not parse; the validator words the message."""


def is_sym_name(s) -> bool:
    return isinstance(s, str) and _SYM_RE.match(s) is not None


def norm(coef: int, syms) -> object:
    syms = tuple(sorted(syms))
    return coef if not syms else (coef, syms)


def parse(v, symbols) -> object:
    """A JSON dim (int >= 0 or product string over known symbols) -> int or (coef, syms)."""
    if isinstance(v, bool):
        raise DimError("a dim must be an integer or a symbol product, not a boolean")
    if isinstance(v, int):
        if not 0 <= v <= MAX_DIM:
            raise DimError(f"dim {v} is out of range 0..2^40")
        return v
    if not isinstance(v, str) or not v or len(v) > 128:
        raise DimError(f"a dim must be an integer or a symbol product like 'batch*seq', got {v!r}")
    coef, syms = 1, []
    for part in v.split("*"):
        if part.isdigit() and len(part) <= 12:
            coef *= int(part)
        elif part in symbols:
            syms.append(part)
        else:
            raise DimError(f"dim {v!r}: {part!r} is not a declared symbol "
                           f"({', '.join(sorted(symbols)) or 'none declared'})")
    if coef > MAX_DIM:
        raise DimError(f"dim {v!r} is out of range")
    return norm(coef, syms)


def to_json(d) -> object:
    if d is None or isinstance(d, int):
        return d
    coef, syms = d
    parts = list(syms) if coef == 1 else [str(coef), *syms]
    return "*".join(parts)


def mul(a, b):
    if a is None or b is None:
        return 0 if (a == 0 or b == 0) else None
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    ca, sa = (a, ()) if isinstance(a, int) else a
    cb, sb = (b, ()) if isinstance(b, int) else b
    if ca * cb == 0:
        return 0
    return norm(ca * cb, sa + sb)


def prod(ds):
    out = 1
    for d in ds:
        out = mul(out, d)
    return out


def div(a, b):
    """a / b when it is exact for every binding of the symbols, else None."""
    if a is None or b is None:
        return None
    ca, sa = (a, ()) if isinstance(a, int) else a
    cb, sb = (b, ()) if isinstance(b, int) else b
    if cb == 0 or ca % cb:
        return None
    rest = list(sa)
    for s in sb:
        if s not in rest:
            return None
        rest.remove(s)
    return norm(ca // cb, rest)


def is_static(d) -> bool:
    return isinstance(d, int)


def show(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(to_json(d)) for d in shape) + "]"


def resolve(d, bind: dict) -> int:
    """The concrete size of a dim for symbol sizes `bind`."""
    if isinstance(d, int):
        return d
    coef, syms = d
    for s in syms:
        coef *= bind[s]
    return coef
