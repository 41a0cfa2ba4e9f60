"""The one validator of the stored graph, run before anything is built from it.

`check(graph, files)` takes the JSON object as read from the file and the file's tensor
table (name -> (shape, dtype)) and returns a `Checked` graph: every field typed, every
size bounded, every name unique and defined before use (so the node list is in
topological order and has no cycles), every op from the allow-list (ops.OPS) with its
attributes typed and range-checked, and the shape and dtype of every value propagated
from the declared inputs (symbolic dims kept symbolic) through the op's rule. The
executor builds from a `Checked` graph only. Every refusal is a DczFormatError that
names the node and op. docs/FORMAT.md ("Graph section") states the same rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from deepcomp.errors import DczFormatError
from deepcomp.graph import dims as D
from deepcomp.graph.ops import DTYPES, FILE_OPS, MAX_RANK, OPS, Bad

GRAPH_FORMAT = "deepcomp-graph"
GRAPH_VERSION = 2

MAX_NODES = 100_000
MAX_INPUTS = 16
MAX_OUTPUTS = 256
MAX_NAME = 256
MAX_LIST = 64
MAX_INT = 1 << 62
MAX_SYMBOLS = 8
GRAPH_KEYS = {"format", "version", "inputs", "symbols", "nodes", "outputs", "out"}
NODE_KEYS = {"name", "op", "in", "a"}


@dataclass
class Node:
    name: str
    op: str
    ins: list  # value names, or numbers for inline scalar operands
    a: dict  # attributes, dims parsed (ints or (coef, syms))
    shape: tuple = ()
    dtype: str = ""


@dataclass
class Checked:
    inputs: list  # [(name, shape, dtype)]
    symbols: dict  # name -> (lo, hi or None)
    nodes: list
    outputs: list
    out: object  # None (one tensor), "tuple", or [keys] (a dict)
    values: dict = field(default_factory=dict)  # name -> (shape, dtype)


def _bad(msg: str) -> DczFormatError:
    return DczFormatError(f"graph section: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -MAX_INT <= v <= MAX_INT
    return isinstance(v, float) and math.isfinite(v)


def _name(v, what: str) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME:
        raise _bad(f"{what} must be a name of 1 to {MAX_NAME} characters, got {_short(v)}")
    return v


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _attr(where: str, key: str, typ: str, v, symbols):
    """One attribute checked against its schema type; returns its parsed value."""
    opt = typ.endswith("?")
    if opt:
        typ = typ[:-1]
        if v is None:
            return None

    def need(ok, what):
        if not ok:
            raise _bad(f"{where}: attribute '{key}' must be {what}, got {_short(v)}")

    if typ == "key":
        need(isinstance(v, str) and 0 < len(v) <= MAX_NAME, "a tensor name")
        return v
    if typ == "int":
        need(_is_int(v) and -D.MAX_DIM <= v <= D.MAX_DIM, "an integer")
        return v
    if typ == "pos":
        need(_is_int(v) and 1 <= v <= D.MAX_DIM, "a positive integer")
        return v
    if typ == "bool":
        need(isinstance(v, bool), "true or false")
        return v
    if typ == "num":
        need(_is_num(v), "a finite number")
        return v
    if typ == "numb":
        need(isinstance(v, bool) or _is_num(v), "a finite number or a boolean")
        return v
    if typ == "eps":
        need(_is_num(v) and 0 < v < 1, "a number in (0, 1)")
        return float(v)
    if typ == "str":
        need(isinstance(v, str) and 0 < len(v) <= 32, "a short string")
        return v
    if typ == "nums":
        need(isinstance(v, list) and len(v) <= MAX_LIST and all(_is_num(e) for e in v),
             f"a list of at most {MAX_LIST} finite numbers")
        return list(v)
    if typ == "gelu":
        need(v in ("none", "tanh"), "'none' or 'tanh'")
        return v
    if typ == "dtype":
        need(isinstance(v, str) and v in DTYPES, f"one of {', '.join(DTYPES)}")
        return v
    if typ in ("pair0", "pair1", "pair1n"):
        lo = 0 if typ == "pair0" else 1
        need(isinstance(v, list) and len(v) == 2 and all(
            (e is None and typ == "pair1n") or (_is_int(e) and lo <= e <= (1 << 16)) for e in v),
            f"a list of two integers from {lo} to 65536" + (" (or null)" if typ == "pair1n" else ""))
        return list(v)
    if typ == "ints":
        need(isinstance(v, list) and len(v) <= MAX_LIST and all(
            _is_int(e) and -D.MAX_DIM <= e <= D.MAX_DIM for e in v), f"a list of at most {MAX_LIST} integers")
        return list(v)
    if typ in ("dims", "dims-1"):
        need(isinstance(v, list) and len(v) <= MAX_RANK, f"a list of at most {MAX_RANK} dims")
        out = []
        for e in v:
            if typ == "dims-1" and e == -1 and not isinstance(e, bool):
                out.append(-1)
                continue
            try:
                out.append(D.parse(e, symbols))
            except D.DimError as err:
                raise _bad(f"{where}: attribute '{key}': {err}") from None
        return out
    if typ in ("dim+", "dim+-"):
        if typ == "dim+-" and _is_int(v) and -MAX_INT <= v < (1 << 63):
            return v
        try:
            return D.parse(v, symbols)
        except D.DimError as err:
            raise _bad(f"{where}: attribute '{key}': {err}") from None
    raise AssertionError(typ)  # a schema type without a checker is a bug here


def _symbols(g) -> dict:
    sy = g.get("symbols", {})
    if not isinstance(sy, dict) or len(sy) > MAX_SYMBOLS:
        raise _bad(f"symbols must be an object of at most {MAX_SYMBOLS} entries")
    out = {}
    for k, v in sy.items():
        if not D.is_sym_name(k):
            raise _bad(f"symbol {_short(k)} must be a lowercase identifier")
        if not (isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and 1 <= v[0] <= D.MAX_DIM
                and (v[1] is None or (_is_int(v[1]) and v[0] <= v[1] <= D.MAX_DIM))):
            raise _bad(f"symbol '{k}' bounds must be [min >= 1, max >= min or null]")
        out[k] = (v[0], v[1])
    return out


def _inputs(g, symbols) -> list:
    ins = g.get("inputs")
    if not isinstance(ins, list) or not 1 <= len(ins) <= MAX_INPUTS:
        raise _bad(f"inputs must be a list of 1 to {MAX_INPUTS} input declarations")
    out = []
    for i, e in enumerate(ins):
        if not isinstance(e, dict) or set(e) != {"name", "dtype", "shape"}:
            raise _bad(f"input {i} must be an object with name, dtype and shape")
        name = _name(e["name"], f"input {i} name")
        if not isinstance(e["dtype"], str) or e["dtype"] not in DTYPES:
            raise _bad(f"input '{name}' dtype must be one of {', '.join(DTYPES)}")
        s = e["shape"]
        if not isinstance(s, list) or len(s) > MAX_RANK:
            raise _bad(f"input '{name}' shape must be a list of at most {MAX_RANK} dims")
        shape = []
        for d in s:
            if d is None:
                shape.append(None)
                continue
            try:
                pd = D.parse(d, symbols)
            except D.DimError as err:
                raise _bad(f"input '{name}' shape: {err}") from None
            if not (isinstance(pd, int) or (pd[0] == 1 and len(pd[1]) == 1)):
                raise _bad(f"input '{name}' shape: a dim must be an integer or a single symbol")
            if pd == 0:
                raise _bad(f"input '{name}' shape: a dim must be at least 1")
            shape.append(pd)
        out.append((name, tuple(shape), e["dtype"]))
    return out


def check(graph, files: dict | None = None) -> Checked:
    """Validate a version-2 graph against the file's tensors (name -> (shape, dtype)).

    With `files` None the tensor references are checked for form only (capture-time
    self-checks pass the real table).
    """
    if not isinstance(graph, dict):
        raise _bad("not a JSON object")
    if graph.get("format") != GRAPH_FORMAT:
        raise _bad(f"format must be '{GRAPH_FORMAT}'")
    ver = graph.get("version")
    if not _is_int(ver) or ver < 1:
        raise _bad("version must be a positive integer")
    if ver > GRAPH_VERSION:
        raise DczFormatError(f"graph section version {ver} is newer than this deepcomp "
                             f"understands ({GRAPH_VERSION}); upgrade deepcomp")
    if ver != GRAPH_VERSION:
        raise _bad(f"version {ver} graphs are converted before checking")
    extra = set(graph) - GRAPH_KEYS
    if extra:
        raise _bad(f"unknown keys {sorted(extra)[:5]}")
    symbols = _symbols(graph)
    inputs = _inputs(graph, symbols)
    # Only symbols an input binds have a size when the graph runs.
    bound = {d[1][0] for _, shape, _ in inputs for d in shape if isinstance(d, tuple)}
    unbound = sorted(set(symbols) - bound)
    if unbound:
        raise _bad(f"symbol '{unbound[0]}' is declared but no input's shape uses it")
    values: dict = {}
    for name, shape, dt in inputs:
        if name in values:
            raise _bad(f"input name '{name}' is used twice")
        values[name] = (shape, dt)

    def file_info(key, rank=None, float_=False, info=False):
        if files is None:
            raise Bad("the file's tensor table is needed to check this node")
        if key not in files:
            raise Bad(f"tensor '{key}' is not in the file")
        shape, dt = files[key]
        if info:
            return tuple(shape), dt
        if rank is not None and len(shape) != rank:
            raise Bad(f"tensor '{key}' must be {rank}-D, has shape {list(shape)}")
        if float_ and dt not in ("float32", "float16", "bfloat16", "float64"):
            raise Bad(f"tensor '{key}' must be floating point, is {dt}")
        return tuple(shape)

    nodes_in = graph.get("nodes")
    if not isinstance(nodes_in, list) or len(nodes_in) > MAX_NODES:
        raise _bad(f"nodes must be a list of at most {MAX_NODES} nodes")
    nodes = []
    for i, n in enumerate(nodes_in):
        if not isinstance(n, dict):
            raise _bad(f"node {i} is not an object")
        if not set(n) <= NODE_KEYS or "name" not in n or "op" not in n:
            raise _bad(f"node {i} must have name, op and optionally in and a (got keys "
                       f"{sorted(map(str, n))[:6]})")
        name = _name(n["name"], f"node {i} name")
        op = n["op"]
        if not isinstance(op, str) or op not in OPS:
            raise _bad(f"node '{name}' has unknown op {_short(op)} (the allow-list is in docs/FORMAT.md)")
        where = f"node '{name}' ({op})"
        if name in values:
            raise _bad(f"{where}: name is used twice")
        spec = OPS[op]
        ins = n.get("in", [])
        if not isinstance(ins, list) or not spec.ins[0] <= len(ins) <= spec.ins[1]:
            lo, hi = spec.ins
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise _bad(f"{where}: 'in' must be a list of {want} operands, got {_short(ins)}")
        if spec.scalars:
            if op == "where":
                if not isinstance(ins[0], str) or not any(isinstance(v, str) for v in ins[1:]):
                    raise _bad(f"{where}: the condition and at least one operand must be value names")
            elif not any(isinstance(v, str) for v in ins):
                raise _bad(f"{where}: at least one operand must be a value name")
        args = []
        for v in ins:
            if isinstance(v, str):
                if v not in values:
                    raise _bad(f"{where}: operand '{v[:MAX_NAME]}' is not defined before this node")
                args.append(values[v])
            elif spec.scalars and _is_num(v) or (spec.scalars and isinstance(v, bool)):
                args.append(((), _scalar_dt(v)))
            else:
                raise _bad(f"{where}: operands must be names of earlier values"
                           + (" or finite numbers" if spec.scalars else "") + f", got {_short(v)}")
        a = n.get("a", {})
        if not isinstance(a, dict):
            raise _bad(f"{where}: 'a' must be an object")
        unknown = set(a) - set(spec.attrs)
        if unknown:
            raise _bad(f"{where}: unknown attributes {sorted(map(str, unknown))[:5]}")
        parsed = {}
        for k, typ in spec.attrs.items():
            if k not in a and not typ.endswith("?"):
                raise _bad(f"{where}: attribute '{k}' is missing")
            parsed[k] = _attr(where, k, typ, a.get(k), symbols)
        try:
            if op in FILE_OPS:
                shape, dt = spec.shape(args, parsed, file_info)
            elif op in ("slice", "slice_scatter"):
                shape, dt = spec.shape(args, parsed, symbols)
            else:
                shape, dt = spec.shape(args, parsed)
        except Bad as e:
            raise _bad(f"{where}: {e}") from None
        if len(shape) > MAX_RANK:
            raise _bad(f"{where}: result rank {len(shape)} exceeds {MAX_RANK}")
        values[name] = (tuple(shape), dt)
        nodes.append(Node(name, op, list(ins), parsed, tuple(shape), dt))

    outs = graph.get("outputs")
    if not isinstance(outs, list) or not 1 <= len(outs) <= MAX_OUTPUTS:
        raise _bad(f"outputs must be a list of 1 to {MAX_OUTPUTS} value names")
    for o in outs:
        if not isinstance(o, str) or o not in values:
            raise _bad(f"output {_short(o)} is not a defined value")
    st = graph.get("out")
    if st is None:
        if len(outs) != 1:
            raise _bad("'out' is null (one tensor) but there are several outputs")
    elif st == "tuple":
        pass
    elif isinstance(st, list):
        if len(st) != len(outs) or not all(isinstance(k, str) and 0 < len(k) <= MAX_NAME for k in st) \
                or len(set(st)) != len(st):
            raise _bad("'out' keys must be distinct names, one per output")
    else:
        raise _bad("'out' must be null, 'tuple' or a list of keys")
    return Checked(inputs, symbols, nodes, list(outs), st, values)


def _scalar_dt(v) -> str:
    return "bool" if isinstance(v, bool) else "int64" if isinstance(v, int) else "float32"


def validate(graph, files: dict | None = None, *, shapes: dict | None = None) -> Checked | None:
    """Validate a stored graph of either version before any use; raise DczFormatError.

    `files`: the file's tensors, name -> (shape, dtype). Returns the checked form of a
    version-2 graph, or None for a version-1 graph (checked by its own rules, run by
    the version-1 executor).
    """
    from deepcomp.graph import legacy

    if isinstance(graph, dict) and graph.get("version") == 1 and graph.get("format") == GRAPH_FORMAT:
        if shapes is None and files is not None:
            shapes = {k: tuple(v[0]) for k, v in files.items()}
        legacy.validate(graph, shapes=shapes)
        return None
    return check(graph, files)
