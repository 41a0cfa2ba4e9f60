"""The allow-list of the stored graph: one table, one entry per op.

Each entry gives
  * `ins`: how many operands the node takes (min, max); `scalars`: whether an operand
    may be a JSON number instead of a value name (elementwise ops);
  * `attrs`: the attribute schema, name -> type (see `ATTR_TYPES`; a trailing '?' means
    the attribute may be null or absent);
  * `shape`: the shape/dtype rule: from the operands' (shape, dtype) and the attributes,
    the result's (shape, dtype), raising `Bad` for anything the executor could not run;
  * `make`: the executor: from the attributes (symbolic dims already bound to sizes) a
    callable over the operand tensors.
docs/FORMAT.md ("Graph section, version 2") lists the same table in prose. Linear and
conv2d are here for their shape rules; the executor runs them through the compressed
runtime layers (deepcomp/runtime/layers.py), not through `make`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from deepcomp.graph import dims as D

FLOATS = ("float32", "float64", "float16", "bfloat16")
INTS = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
DTYPE_NAME = {v: k for k, v in DTYPES.items()}
# Python numbers as operands: their JSON type stands for a 0-d tensor of this dtype.
SCALAR = "scalar"
MAX_RANK = 8


class Bad(ValueError):
    """A node that fails its op's rule; the validator adds the node's name and op."""


@dataclass(frozen=True)
class Op:
    ins: tuple[int, int]
    attrs: dict
    shape: Callable
    make: Callable | None
    scalars: bool = False


# ---- dtype rules ---------------------------------------------------------------------

def _cat(dt: str) -> int:
    return 2 if dt in FLOATS else 1 if dt in INTS else 0


def _scalar_dtype(v) -> str:
    return "bool" if isinstance(v, bool) else "int64" if isinstance(v, int) else "float32"


def promote(a, b) -> str:
    """torch's promotion for (shape, dtype) operands; a scalar is a 0-d tensor."""
    (sa, da), (sb, db) = a, b
    if _cat(da) != _cat(db):
        return da if _cat(da) > _cat(db) else db
    if len(sa) == 0 and len(sb) > 0:
        return db
    if len(sb) == 0 and len(sa) > 0:
        return da
    return DTYPE_NAME[torch.promote_types(DTYPES[da], DTYPES[db])]


def _float(v, what="input"):
    if v[1] not in FLOATS:
        raise Bad(f"{what} must be floating point, got {v[1]}")


def _numeric(v, what="input"):
    if v[1] == "bool":
        raise Bad(f"{what} must be numeric, got bool")


# ---- shape helpers -------------------------------------------------------------------

def _dim(d: int, rank: int, what: str = "dim") -> int:
    if not -max(rank, 1) <= d < max(rank, 1):
        raise Bad(f"{what} {d} is out of range for a rank-{rank} input")
    return d % max(rank, 1)


def _dim_of(s: tuple, d: int) -> int:
    """A dim index into shape s, for ops that take or drop one: a 0-d value has none."""
    if not s:
        raise Bad("needs a value of rank >= 1, got a 0-d one")
    return _dim(d, len(s))


def broadcast(*shapes) -> tuple:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        ds = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        cur = 1
        for d in ds:
            if d == 1:
                continue
            if cur == 1:
                cur = d
            elif d is None or cur is None:
                cur = cur if d is None else d  # an undeclared size: checked when it runs
            elif cur != d:
                raise Bad(f"shapes {', '.join(D.show(s) for s in shapes)} do not broadcast")
        out.append(cur)
    return tuple(out)


def _rank(v, lo=0, hi=MAX_RANK, what="input"):
    if not lo <= len(v[0]) <= hi:
        raise Bad(f"{what} must have rank {lo}..{hi}, has shape {D.show(v[0])}")


def _static(d, what):
    if d is not None and not isinstance(d, int):
        raise Bad(f"{what} must be a fixed size, is symbolic ({D.to_json(d)})")
    return d


# ---- elementwise ---------------------------------------------------------------------

def _unary_float(ins, a):
    _float(ins[0])
    return ins[0]


def _unary_same(ins, a):
    _numeric(ins[0])
    return ins[0]


def _binary_rule(kind):
    def rule(ins, a):
        shape = broadcast(ins[0][0], ins[1][0])
        if kind == "cmp":
            return shape, "bool"
        if kind == "logic":
            return shape, "bool"
        dt = promote(ins[0], ins[1])
        if kind == "bits" and dt in FLOATS:
            raise Bad(f"bitwise ops need integer or bool operands, got {dt}")
        if kind == "arith_nobool" and dt == "bool":
            raise Bad("needs numeric operands, got bool")
        if kind == "div" and dt not in FLOATS:
            dt = "float32"
        return shape, dt
    return rule


def _scalar_to_tensor(v):
    return torch.tensor(v, dtype=DTYPES[_scalar_dtype(v)])


def _bin(fn):
    """make() for a binary op whose operands are values or inline JSON numbers."""
    def make(a, consts=()):
        # consts: ((position, number), ...) for operands written inline in the node
        if not consts:
            return fn
        (pos, v), = consts
        s = _scalar_to_tensor(v)
        if pos == 1:
            return lambda x: fn(x, s)
        return lambda x: fn(s, x)
    return make


def _where_rule(ins, a):
    if len(ins) != 3:
        raise Bad("takes a condition and two operands")
    if ins[0][1] != "bool":
        raise Bad(f"condition must be bool, got {ins[0][1]}")
    return broadcast(ins[0][0], ins[1][0], ins[2][0]), promote(ins[1], ins[2])


def _where_make(a, consts=()):
    c = {pos: _scalar_to_tensor(v) for pos, v in consts}
    if not c:
        return torch.where
    if 1 in c and 2 in c:
        raise Bad("two scalars")  # refused by the rule; kept for a clear message
    if 1 in c:
        s = c[1]
        return lambda cond, y: torch.where(cond, s, y)
    s = c[2]
    return lambda cond, x: torch.where(cond, x, s)


def _gelu_make(a):
    approx = a["approx"]
    return lambda x: F.gelu(x, approximate=approx)


def _hardtanh_rule(ins, a):
    _float(ins[0])
    if not a["min"] <= a["max"]:
        raise Bad(f"min {a['min']} is above max {a['max']}")
    return ins[0]


def _clamp_rule(ins, a):
    _numeric(ins[0])
    if a.get("min") is not None and a.get("max") is not None and a["min"] > a["max"]:
        raise Bad(f"min {a['min']} is above max {a['max']}")
    return ins[0]


def _to_rule(ins, a):
    return ins[0][0], a["dtype"]


# ---- reductions ----------------------------------------------------------------------

def _reduce_rule(need_float, nonempty=False):
    def rule(ins, a):
        (s, dt), = ins
        if need_float:
            _float(ins[0])
        dims = a.get("dims")
        if dims is None or len(dims) == 0:
            if nonempty:
                raise Bad("needs at least one dim")
            dims = list(range(len(s)))
        ds = [_dim(d, len(s)) for d in dims]
        if len(set(ds)) != len(ds):
            raise Bad(f"dims {dims} repeat a dim")
        keep = a.get("keep", False)
        out = tuple(1 if i in ds else d for i, d in enumerate(s)) if keep else \
            tuple(d for i, d in enumerate(s) if i not in ds)
        if dt == "bool" and not need_float:
            dt = "int64"
        return out, dt
    return rule


def _dims_or_all(a, rank):
    dims = a.get("dims")
    return tuple(range(rank)) if not dims else tuple(dims)


def _mean_make(a):
    dims, keep = a.get("dims"), a.get("keep", False)
    if not dims:
        return lambda x: x.mean(dim=tuple(range(x.dim())), keepdim=keep)
    dims = tuple(dims)
    return lambda x: torch.mean(x, dims, keep)


def _sum_make(a):
    dims, keep = a.get("dims"), a.get("keep", False)
    if not dims:
        return lambda x: x.sum(dim=tuple(range(x.dim())), keepdim=keep)
    dims = tuple(dims)
    return lambda x: torch.sum(x, dims, keep)


def _amax_make(a):
    dims, keep = tuple(a["dims"]), a.get("keep", False)
    return lambda x: torch.amax(x, dims, keep)


def _softmax_rule(ins, a):
    _float(ins[0])
    _dim(a["dim"], len(ins[0][0]))
    return ins[0]


# ---- shape ops -----------------------------------------------------------------------

def _reshape_rule(ins, a):
    (s, dt), = ins
    shape = a["shape"]
    if sum(1 for d in shape if d == -1) > 1:
        raise Bad("at most one -1 in shape")
    total = D.prod(s)
    known = D.prod([d for d in shape if d != -1])
    if total is None:  # an undeclared input size: the reshape is checked when it runs
        return tuple(None if d == -1 else d for d in shape), dt
    if -1 in shape:
        rest = D.div(total, known) if known != 0 else None
        if rest is None:
            raise Bad(f"cannot reshape {D.show(s)} into {D.show(shape)}: sizes do not divide")
        out = tuple(rest if d == -1 else d for d in shape)
    else:
        out = tuple(shape)
        if known != total:
            raise Bad(f"cannot reshape {D.show(s)} ({D.to_json(total)} elements) into "
                      f"{D.show(shape)} ({D.to_json(known)} elements)")
    return out, dt


def _reshape_make(a):
    shape = tuple(a["shape"])
    return lambda x: x.reshape(shape)


def _permute_rule(ins, a):
    (s, dt), = ins
    p = [_dim(d, len(s)) for d in a["dims"]]
    if sorted(p) != list(range(len(s))):
        raise Bad(f"dims {a['dims']} are not a permutation of the input's {len(s)} dims")
    return tuple(s[i] for i in p), dt


def _transpose_rule(ins, a):
    (s, dt), = ins
    i, j = _dim(a["d0"], len(s)), _dim(a["d1"], len(s))
    if not s:
        return s, dt  # torch transposes a 0-d value by (0, 0) / (-1, -1) into itself
    out = list(s)
    out[i], out[j] = out[j], out[i]
    return tuple(out), dt


def _expand_rule(ins, a):
    (s, dt), = ins
    shape = a["shape"]
    if len(shape) < len(s):
        raise Bad(f"cannot expand {D.show(s)} to fewer dims {D.show(shape)}")
    lead = len(shape) - len(s)
    out = []
    for i, d in enumerate(shape):
        if i < lead:
            if d == -1:
                raise Bad("-1 in a new leading dim")
            out.append(d)
            continue
        cur = s[i - lead]
        if d == -1 or d == cur:
            out.append(cur)
        elif cur == 1:
            out.append(d)
        else:
            raise Bad(f"cannot expand dim {i - lead} of {D.show(s)} to {D.to_json(d)}")
    return tuple(out), dt


def _expand_make(a):
    shape = tuple(a["shape"])
    return lambda x: x.expand(shape)


def _slice_len(size, start, end, step):
    """Length of x[start:end:step] along a dim of `size`, or Bad when unknowable."""
    if isinstance(size, int) and isinstance(start, int) and isinstance(end, int):
        return len(range(*slice(start, end, step).indices(size)))
    if start == 0 and step == 1:
        if end == size or (isinstance(end, int) and end >= D.MAX_DIM):
            return size
    raise Bad(f"slice [{D.to_json(start)}:{D.to_json(end)}:{step}] of a dim of size "
              f"{D.to_json(size)} has no size known before the inputs are")


def _slice_rule(ins, a, bounds=None):
    (s, dt), = ins
    d = _dim_of(s, a["dim"])
    start, end, step = a["start"], a["end"], a["step"]
    n = s[d]
    if (bounds and not isinstance(end, int) and isinstance(n, int) and start == 0 and step == 1
            and len(end[1]) == 1 and end[0] == 1):
        hi = bounds.get(end[1][0], (1, None))[1]
        if hi is not None and hi <= n:
            ln = end  # a symbol that the input check keeps at most the dim's size
        else:
            raise Bad(f"slice end '{D.to_json(end)}' may exceed the dim's size {n} "
                      "(declare an upper bound for the symbol)")
    else:
        ln = _slice_len(n, start, end, step)
    out = list(s)
    out[d] = ln
    return tuple(out), dt


def _slice_make(a):
    d, st, en, sp = a["dim"], a["start"], a["end"], a["step"]
    return lambda x: torch.ops.aten.slice.Tensor(x, d, st, en, sp)


def _select_rule(ins, a):
    (s, dt), = ins
    d = _dim_of(s, a["dim"])
    i, n = a["index"], s[d]
    if isinstance(n, int):
        if not -n <= i < n:
            raise Bad(f"index {i} is out of range for a dim of size {n}")
    elif i not in (0, -1):
        raise Bad(f"index {i} of a symbolic dim ({D.to_json(n)}): only 0 and -1 are known to exist")
    return tuple(x for k, x in enumerate(s) if k != d), dt


def _select_make(a):
    d, i = a["dim"], a["index"]
    return lambda x: torch.select(x, d, i)


def _unsqueeze_rule(ins, a):
    (s, dt), = ins
    if len(s) >= MAX_RANK:
        raise Bad(f"rank would exceed {MAX_RANK}")
    d = _dim(a["dim"], len(s) + 1)
    out = list(s)
    out.insert(d, 1)
    return tuple(out), dt


def _squeeze_rule(ins, a):
    (s, dt), = ins
    ds = {_dim(d, len(s)) for d in a["dims"]}
    for d in ds:
        if s[d] != 1:
            raise Bad(f"dim {d} of {D.show(s)} is not of size 1")
    return tuple(x for k, x in enumerate(s) if k not in ds), dt


def _squeeze_make(a):
    dims = tuple(a["dims"])
    return lambda x: torch.squeeze(x, dims)


def _flatten_rule(ins, a):
    (s, dt), = ins
    r = max(len(s), 1)
    i, j = _dim(a["start"], r, "start"), _dim(a["end"], r, "end")
    if i > j:
        raise Bad(f"start {a['start']} comes after end {a['end']}")
    if not s:
        return (1,), dt
    return tuple(s[:i]) + (D.prod(s[i:j + 1]),) + tuple(s[j + 1:]), dt


def _flatten_make(a):
    i, j = a["start"], a["end"]
    return lambda x: torch.flatten(x, i, j)


def _cat_rule(ins, a):
    r = len(ins[0][0])
    if r == 0:
        raise Bad("cannot concatenate 0-d tensors")
    d = _dim(a["dim"], r)
    dt = ins[0][1]
    total = 0
    for s, t in ins:
        if len(s) != r:
            raise Bad("operands differ in rank")
        if t != dt:
            raise Bad(f"operands differ in dtype ({dt}, {t})")
        for k in range(r):
            if k != d and s[k] != ins[0][0][k]:
                raise Bad(f"operands differ in dim {k}: {D.show(ins[0][0])} vs {D.show(s)}")
        total = _add_dims(total, s[d])
    out = list(ins[0][0])
    out[d] = total
    return tuple(out), dt


def _add_dims(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0:
        return b
    if b == 0:
        return a
    raise Bad("cannot concatenate along a symbolic dim")


def _cat_make(a):
    d = a["dim"]
    return lambda *xs: torch.cat(xs, d)


# ---- layers --------------------------------------------------------------------------

def _linear_rule(ins, a, files):
    (s, dt), = ins
    _float(ins[0])
    if len(s) < 1:
        raise Bad("input must have at least one dim")
    w = files(a["w"], rank=2, float_=True)
    if s[-1] != w[1]:
        raise Bad(f"input's last dim {D.to_json(s[-1])} does not match weight "
                  f"'{a['w']}' of shape {list(w)}")
    if a.get("b") is not None:
        b = files(a["b"], rank=1, float_=True)
        if b[0] != w[0]:
            raise Bad(f"bias '{a['b']}' has {b[0]} entries, the weight {w[0]} rows")
    return tuple(s[:-1]) + (w[0],), "float32"


def _conv_out(n, k, st, p, dl, what):
    if n is None:
        return None
    span = dl * (k - 1) + 1
    if n + 2 * p < span:
        raise Bad(f"{what}: input size {n} (+2x{p} padding) is smaller than the kernel span {span}")
    return (n + 2 * p - span) // st + 1


def _conv2d_rule(ins, a, files):
    (s, dt), = ins
    _float(ins[0])
    if len(s) != 4:
        raise Bad(f"input must be N x C x H x W, has shape {D.show(s)}")
    w = files(a["w"], rank=4, float_=True)
    g = a["groups"]
    if w[0] % g:
        raise Bad(f"groups {g} does not divide the {w[0]} output channels")
    if s[1] != w[1] * g:
        raise Bad(f"input has {D.to_json(s[1])} channels, weight '{a['w']}' {list(w)} with "
                  f"groups {g} needs {w[1] * g}")
    if a.get("b") is not None:
        b = files(a["b"], rank=1, float_=True)
        if b[0] != w[0]:
            raise Bad(f"bias '{a['b']}' has {b[0]} entries, the weight {w[0]} output channels")
    h = _static(s[2], "height")
    wd = _static(s[3], "width")
    oh = _conv_out(h, w[2], a["stride"][0], a["padding"][0], a["dilation"][0], "height")
    ow = _conv_out(wd, w[3], a["stride"][1], a["padding"][1], a["dilation"][1], "width")
    return (s[0], w[0], oh, ow), "float32"


def _pool_check(s, k, st, p, d, ceil, what="pool"):
    if len(s) not in (3, 4):
        raise Bad(f"input must be (N x) C x H x W, has shape {D.show(s)}")
    out = []
    for i in range(2):
        n = _static(s[-2 + i], "height" if i == 0 else "width")
        if p[i] * 2 > k[i]:
            raise Bad(f"padding {p[i]} is more than half the kernel size {k[i]}")
        span = d[i] * (k[i] - 1) + 1
        if n is None:
            out.append(None)
            continue
        if n + 2 * p[i] < span:
            raise Bad(f"input size {n} (+2x{p[i]} padding) is smaller than the kernel span {span}")
        num = n + 2 * p[i] - span
        o = (-(-num // st[i]) if ceil else num // st[i]) + 1
        if ceil and (o - 1) * st[i] >= n + p[i]:
            o -= 1
        out.append(o)
    return tuple(s[:-2]) + tuple(out)


def _maxpool_rule(ins, a):
    (s, dt), = ins
    _float(ins[0])
    return _pool_check(s, a["k"], a["s"], a["p"], a["d"], a["ceil"]), dt


def _maxpool_make(a):
    k, s, p, d, c = tuple(a["k"]), tuple(a["s"]), tuple(a["p"]), tuple(a["d"]), a["ceil"]
    return lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=c)


def _avgpool_rule(ins, a):
    (s, dt), = ins
    _float(ins[0])
    return _pool_check(s, a["k"], a["s"], a["p"], (1, 1), a["ceil"]), dt


def _avgpool_make(a):
    k, s, p, c, cip, dv = tuple(a["k"]), tuple(a["s"]), tuple(a["p"]), a["ceil"], a["cip"], a.get("div")
    return lambda x: F.avg_pool2d(x, k, s, p, c, cip, dv)


def _adaptive_rule(ins, a):
    (s, dt), = ins
    _float(ins[0])
    if len(s) not in (3, 4):
        raise Bad(f"input must be (N x) C x H x W, has shape {D.show(s)}")
    out = [s[-2 + i] if v is None else v for i, v in enumerate(a["size"])]
    for i, v in enumerate(a["size"]):
        if v is None or s[-2 + i] is None or isinstance(s[-2 + i], int):
            continue
        raise Bad("adaptive pooling of a symbolic spatial dim")
    return tuple(s[:-2]) + tuple(out), dt


def _adaptive_make(fn):
    def make(a):
        size = tuple(a["size"])
        return lambda x: fn(x, size)
    return make


def _bn_rule(ins, a):
    x = ins[0]
    _float(x)
    if len(x[0]) < 2:
        raise Bad(f"input must be N x C x ..., has shape {D.show(x[0])}")
    c = x[0][1]
    for i, v in enumerate(ins[1:]):
        if v[0] != (c,) or v[1] not in FLOATS:
            raise Bad(f"operand {i + 1} must be a float vector of the {D.to_json(c)} channels, "
                      f"is {D.show(v[0])} {v[1]}")
    return x


def _bn_make(a):
    eps = a["eps"]
    return lambda x, mean, var, w, b: F.batch_norm(x, mean, var, w, b, False, 0.0, eps)


def _ln_rule(ins, a):
    x = ins[0]
    _float(x)
    ns = tuple(a["shape"])
    if not ns or len(ns) > len(x[0]) or tuple(x[0][-len(ns):]) != ns:
        raise Bad(f"normalized shape {list(ns)} is not the end of the input's {D.show(x[0])}")
    for i, v in enumerate(ins[1:]):
        if v[0] != ns or v[1] not in FLOATS:
            raise Bad(f"operand {i + 1} must be float of shape {list(ns)}, is {D.show(v[0])}")
    return x


def _ln_make(a):
    ns, eps = tuple(a["shape"]), a["eps"]
    return lambda x, w=None, b=None: F.layer_norm(x, ns, w, b, eps)


def _embedding_rule(ins, a):
    (ws, wdt), (ids, idt) = ins
    if len(ws) != 2 or wdt not in FLOATS:
        raise Bad(f"weight must be a 2-D float table, is {D.show(ws)} {wdt}")
    if idt not in ("int64", "int32"):
        raise Bad(f"indices must be int64 or int32, are {idt}")
    if len(ids) >= MAX_RANK:
        raise Bad("indices of too high a rank")
    return tuple(ids) + (ws[1],), wdt


def _embedding_make(a):
    return lambda w, ids: F.embedding(ids, w)


def _sdpa_rule(ins, a):
    q, k, v = ins[:3]
    for t, nm in ((q, "query"), (k, "key"), (v, "value")):
        _float(t, nm)
        if len(t[0]) < 2:
            raise Bad(f"{nm} must have rank >= 2")
    if not (q[1] == k[1] == v[1]):
        raise Bad("query, key and value differ in dtype")
    if q[0][-1] != k[0][-1]:
        raise Bad(f"query {D.show(q[0])} and key {D.show(k[0])} differ in the last dim")
    if k[0][-2] != v[0][-2]:
        raise Bad(f"key {D.show(k[0])} and value {D.show(v[0])} differ in length")
    if not (len(q[0]) == len(k[0]) == len(v[0])) or not (q[0][:-2] == k[0][:-2] == v[0][:-2]):
        raise Bad("query, key and value differ in their leading dims")
    if len(ins) == 4:
        m = ins[3]
        if m[1] != "bool" and m[1] != q[1]:
            raise Bad(f"mask must be bool or {q[1]}, is {m[1]}")
        want = tuple(q[0][:-1]) + (k[0][-2],)
        if len(m[0]) > len(want) or broadcast(m[0], want) != want:
            raise Bad(f"mask {D.show(m[0])} does not broadcast to {D.show(want)}")
    sc = a.get("scale")
    if sc is not None and not math.isfinite(sc):
        raise Bad("scale must be finite")
    return tuple(q[0][:-1]) + (v[0][-1],), q[1]


def _sdpa_make(a):
    sc, causal = a.get("scale"), a.get("causal", False)

    def fn(q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=sc)
    return fn


def _matmul_rule(ins, a):
    (sa, da), (sb, db) = ins
    _float(ins[0])
    _float(ins[1])
    if da != db:
        raise Bad(f"operands differ in dtype ({da}, {db})")
    if not sa or not sb:
        raise Bad("operands must have at least one dim")
    ka = sa[-1]
    kb = sb[-2] if len(sb) >= 2 else sb[0]
    if ka != kb:
        raise Bad(f"inner dims differ: {D.show(sa)} @ {D.show(sb)}")
    if len(sa) == 1 and len(sb) == 1:
        return (), da
    if len(sa) == 1:
        return tuple(sb[:-2]) + (sb[-1],), da
    if len(sb) == 1:
        return tuple(sa[:-1]), da
    batch = broadcast(sa[:-2], sb[:-2])
    return batch + (sa[-2], sb[-1]), da


def _bmm_rule(ins, a):
    (sa, _), (sb, _) = ins
    if len(sa) != 3 or len(sb) != 3 or sa[0] != sb[0]:
        raise Bad(f"bmm needs B x N x K and B x K x M, got {D.show(sa)} and {D.show(sb)}")
    return _matmul_rule(ins, a)


def _index_rule(ins, a):
    (s, dt) = ins[0]
    pos = a["pos"]
    idx = ins[1:]
    if len(pos) != len(idx) or not idx:
        raise Bad("pos must name one dim per index operand")
    ps = [_dim(p, len(s)) for p in pos]
    if ps != sorted(set(ps)):
        raise Bad("pos must be increasing dims")
    for v in idx:
        if v[1] not in ("int64", "int32"):
            raise Bad(f"index operands must be int64/int32 (no masks), got {v[1]}")
    b = broadcast(*[v[0] for v in idx])
    rest_before = tuple(s[:ps[0]])
    rest_after = tuple(s[ps[-1] + 1:])
    if ps == list(range(ps[0], ps[0] + len(ps))):
        out = rest_before + b + rest_after
    else:
        out = b + tuple(d for k, d in enumerate(s) if k not in ps)
    if len(out) > MAX_RANK:
        raise Bad(f"result rank exceeds {MAX_RANK}")
    return out, dt


def _index_make(a):
    pos = list(a["pos"])

    def fn(x, *idx):
        full = [None] * (max(p % x.dim() for p in pos) + 1)
        for p, t in zip(pos, idx):
            full[p % x.dim()] = t
        return torch.ops.aten.index.Tensor(x, full)
    return fn


def _gather_rule(ins, a):
    (s, dt), (si, it) = ins
    if it not in ("int64",):
        raise Bad(f"index must be int64, is {it}")
    d = _dim(a["dim"], len(s))
    if len(si) != len(s):
        raise Bad(f"index {D.show(si)} and input {D.show(s)} differ in rank")
    for k in range(len(s)):
        if k == d:
            continue
        if isinstance(s[k], int) and isinstance(si[k], int):
            if si[k] > s[k]:
                raise Bad(f"index dim {k} ({si[k]}) exceeds the input's ({s[k]})")
        elif si[k] != s[k]:
            raise Bad(f"index dim {k} ({D.to_json(si[k])}) may exceed the input's ({D.to_json(s[k])})")
    return si, dt


def _gather_make(a):
    d = a["dim"]
    return lambda x, i: torch.gather(x, d, i)


def _bitwise_not_rule(ins, a):
    if ins[0][1] in FLOATS:
        raise Bad(f"bitwise_not needs an integer or bool input, got {ins[0][1]}")
    return ins[0]


def _cumsum_rule(ins, a):
    (s, dt), = ins
    _dim(a["dim"], len(s))  # a 0-d value has dims 0 and -1, as in torch
    out = a.get("dtype") or ("int64" if dt in INTS or dt == "bool" else dt)
    return s, out


def _cumsum_make(a):
    d, dt = a["dim"], a.get("dtype")
    dt = DTYPES[dt] if dt else None
    return lambda x: torch.cumsum(x, d, dtype=dt)


_RESIZE_MODES = ("nearest", "nearest-exact", "bilinear")


def _interpolate_rule(ins, a):
    (s, dt), = ins
    _float((s, dt))
    if len(s) != 4:
        raise Bad(f"needs an N x C x H x W input, got {D.show(s)}")
    mode, size, scale = a["mode"], a["size"], a.get("scale")
    if mode not in _RESIZE_MODES:
        raise Bad(f"mode must be one of {', '.join(_RESIZE_MODES)}, got {mode!r}")
    if a["align"] and mode != "bilinear":
        raise Bad("align applies to bilinear resizing only")
    if scale is not None:
        if len(scale) != 2 or not all(isinstance(v, (int, float)) and 0 < v <= 1024 for v in scale):
            raise Bad("scale must be two numbers in (0, 1024]")
        for k in (0, 1):
            h = s[2 + k]
            if not isinstance(h, int):
                raise Bad("a scale needs a fixed input size")
            if math.floor(h * scale[k]) != size[k]:
                raise Bad(f"size {size[k]} is not floor({h} * {scale[k]})")
    if size[0] * size[1] > (1 << 28):
        raise Bad("the resized image would hold over 2^28 pixels")
    return (s[0], s[1], size[0], size[1]), dt


def _interpolate_make(a):
    mode, size, scale = a["mode"], tuple(a["size"]), a.get("scale")
    align = a["align"] if mode == "bilinear" else None
    if scale is not None:
        # the source position of each output pixel follows the given factor (torch does
        # not recompute it from the sizes), so the stored factor is what reproduces it
        sc = tuple(float(v) for v in scale)
        return lambda x: F.interpolate(x, scale_factor=sc, mode=mode, align_corners=align,
                                       recompute_scale_factor=False)
    return lambda x: F.interpolate(x, size=size, mode=mode, align_corners=align)


def _index_select_rule(ins, a):
    (s, dt), (si, it) = ins
    if it not in ("int64", "int32"):
        raise Bad(f"index must be int64/int32, is {it}")
    if len(si) != 1:
        raise Bad(f"index must be 1-D, is {D.show(si)}")
    d = _dim_of(s, a["dim"])
    out = list(s)
    out[d] = si[0]
    return tuple(out), dt


def _index_select_make(a):
    d = a["dim"]
    return lambda x, i: torch.index_select(x, d, i)


def _slice_scatter_rule(ins, a, bounds=None):
    (s, dt), (ss, sdt) = ins
    want, _ = _slice_rule([(s, dt)], a, bounds)
    if tuple(ss) != tuple(want):
        raise Bad(f"source {D.show(ss)} does not fill the slice {D.show(want)}")
    if sdt != dt:
        raise Bad(f"source dtype {sdt} differs from the input's {dt}")
    return tuple(s), dt


def _slice_scatter_make(a):
    d, st, en, sp = a["dim"], a["start"], a["end"], a["step"]
    return lambda x, src: torch.slice_scatter(x, src, d, st, en, sp)


def _pad_rule(ins, a):
    (s, dt), = ins
    pad, v = a["pad"], a["value"]
    if not pad or len(pad) % 2 or len(pad) > 2 * len(s):
        raise Bad(f"pad must hold two widths per padded dim, at most {2 * len(s)} in all, "
                  f"got {len(pad)}")
    if any(not 0 <= p <= (1 << 16) for p in pad):
        raise Bad("pad widths must be 0 to 65536 (cropping is not stored)")
    if dt == "bool" or (dt in INTS and not float(v).is_integer()):
        raise Bad(f"pad value {v} does not fit {dt}")
    out = list(s)
    for k in range(len(pad) // 2):
        d = len(s) - 1 - k
        lo, hi = pad[2 * k], pad[2 * k + 1]
        if lo or hi:
            if not isinstance(s[d], int):
                raise Bad(f"pads dim {d}, whose size is symbolic ({D.to_json(s[d])})")
            out[d] = s[d] + lo + hi
    if math.prod(d for d in out if isinstance(d, int)) > (1 << 31):
        raise Bad("the padded result would hold over 2^31 elements (times any symbolic dims)")
    return tuple(out), dt


def _pad_make(a):
    pad, v = tuple(a["pad"]), a["value"]
    return lambda x: F.pad(x, pad, mode="constant", value=v)


def _arange_rule(ins, a):
    st, en, sp = a["start"], a["end"], a["step"]
    if sp < 1:
        raise Bad("step must be >= 1")
    if isinstance(en, int):
        n = max(0, -(-(en - st) // sp))
    elif st == 0 and sp == 1:
        n = en
    else:
        raise Bad("a symbolic end needs start 0 and step 1")
    if isinstance(n, int) and n > D.MAX_DIM:
        raise Bad("too long")
    return (n,), a["dtype"]


def _arange_make(a):
    st, en, sp, dt = a["start"], a["end"], a["step"], DTYPES[a["dtype"]]
    return lambda: torch.arange(st, en, sp, dtype=dt)


def _full_rule(ins, a):
    v, dt = a["value"], a["dtype"]
    if dt == "bool" and not isinstance(v, bool):
        raise Bad("a bool tensor needs a boolean value")
    if dt in INTS and not isinstance(v, int):
        raise Bad(f"an {dt} tensor needs an integer value")
    shape = tuple(a["shape"])
    if any(d == -1 for d in shape):
        raise Bad("-1 in shape")
    n = D.prod(shape)
    if isinstance(n, int) and n > (1 << 28):
        raise Bad("too many elements")
    return shape, dt


def _full_make(a):
    shape, v, dt = tuple(a["shape"]), a["value"], DTYPES[a["dtype"]]
    return lambda: torch.full(shape, v, dtype=dt)


def _tensor_rule(ins, a, files):
    s, dt = files(a["key"], info=True)
    return tuple(s), dt


# ---- the table -----------------------------------------------------------------------

def _u(fn):
    return lambda a: fn


ONE = (1, 1)
TWO = (2, 2)
T_NUM = "num"
OPS: dict[str, Op] = {
    # layers: run by the compressed runtime layers (make is None)
    "linear": Op(ONE, {"w": "key", "b": "key?"}, _linear_rule, None),
    "conv2d": Op(ONE, {"w": "key", "b": "key?", "stride": "pair1", "padding": "pair0",
                       "dilation": "pair1", "groups": "pos"}, _conv2d_rule, None),
    "tensor": Op((0, 0), {"key": "key"}, _tensor_rule, None),
    # elementwise, one operand
    "relu": Op(ONE, {}, _unary_same, _u(torch.relu)),
    "sigmoid": Op(ONE, {}, _unary_float, _u(torch.sigmoid)),
    "tanh": Op(ONE, {}, _unary_float, _u(torch.tanh)),
    "silu": Op(ONE, {}, _unary_float, _u(F.silu)),
    "hardswish": Op(ONE, {}, _unary_float, _u(F.hardswish)),
    "hardsigmoid": Op(ONE, {}, _unary_float, _u(F.hardsigmoid)),
    "gelu": Op(ONE, {"approx": "gelu"}, _unary_float, _gelu_make),
    "hardtanh": Op(ONE, {"min": T_NUM, "max": T_NUM}, _hardtanh_rule,
                   lambda a: (lambda x, lo=a["min"], hi=a["max"]: F.hardtanh(x, lo, hi))),
    "clamp": Op(ONE, {"min": "num?", "max": "num?"}, _clamp_rule,
                lambda a: (lambda x, lo=a.get("min"), hi=a.get("max"): torch.clamp(x, lo, hi))),
    "exp": Op(ONE, {}, _unary_float, _u(torch.exp)),
    "sqrt": Op(ONE, {}, _unary_float, _u(torch.sqrt)),
    "rsqrt": Op(ONE, {}, _unary_float, _u(torch.rsqrt)),
    "erf": Op(ONE, {}, _unary_float, _u(torch.erf)),
    "neg": Op(ONE, {}, _unary_same, _u(torch.neg)),
    "abs": Op(ONE, {}, _unary_same, _u(torch.abs)),
    "logical_not": Op(ONE, {}, lambda ins, a: (ins[0][0], "bool"), _u(torch.logical_not)),
    "bitwise_not": Op(ONE, {}, _bitwise_not_rule, _u(torch.bitwise_not)),
    "log": Op(ONE, {}, _unary_float, _u(torch.log)),
    "cos": Op(ONE, {}, _unary_float, _u(torch.cos)),
    "sin": Op(ONE, {}, _unary_float, _u(torch.sin)),
    "to": Op(ONE, {"dtype": "dtype"}, _to_rule,
             lambda a: (lambda x, dt=DTYPES[a["dtype"]]: x.to(dt))),
    # elementwise, two operands (broadcasting; a JSON number may stand for either)
    "add": Op(TWO, {}, _binary_rule("arith"), _bin(torch.add), True),
    "sub": Op(TWO, {}, _binary_rule("arith_nobool"), _bin(torch.sub), True),
    "mul": Op(TWO, {}, _binary_rule("arith"), _bin(torch.mul), True),
    "div": Op(TWO, {}, _binary_rule("div"), _bin(torch.div), True),
    "remainder": Op(TWO, {}, _binary_rule("arith_nobool"), _bin(torch.remainder), True),
    "fmod": Op(TWO, {}, _binary_rule("arith_nobool"), _bin(torch.fmod), True),
    "floor_divide": Op(TWO, {}, _binary_rule("arith_nobool"), _bin(torch.floor_divide), True),
    "pow": Op(TWO, {}, _binary_rule("arith_nobool"), _bin(torch.pow), True),
    "maximum": Op(TWO, {}, _binary_rule("arith"), _bin(torch.maximum), True),
    "minimum": Op(TWO, {}, _binary_rule("arith"), _bin(torch.minimum), True),
    "eq": Op(TWO, {}, _binary_rule("cmp"), _bin(torch.eq), True),
    "ne": Op(TWO, {}, _binary_rule("cmp"), _bin(torch.ne), True),
    "lt": Op(TWO, {}, _binary_rule("cmp"), _bin(torch.lt), True),
    "le": Op(TWO, {}, _binary_rule("cmp"), _bin(torch.le), True),
    "gt": Op(TWO, {}, _binary_rule("cmp"), _bin(torch.gt), True),
    "ge": Op(TWO, {}, _binary_rule("cmp"), _bin(torch.ge), True),
    "bitwise_and": Op(TWO, {}, _binary_rule("bits"), _bin(torch.bitwise_and), True),
    "bitwise_or": Op(TWO, {}, _binary_rule("bits"), _bin(torch.bitwise_or), True),
    "logical_and": Op(TWO, {}, _binary_rule("logic"), _bin(torch.logical_and), True),
    "logical_or": Op(TWO, {}, _binary_rule("logic"), _bin(torch.logical_or), True),
    "where": Op((3, 3), {}, _where_rule, _where_make, True),
    # reductions and normalisation
    "mean": Op(ONE, {"dims": "ints?", "keep": "bool"}, _reduce_rule(True), _mean_make),
    "sum": Op(ONE, {"dims": "ints?", "keep": "bool"}, _reduce_rule(False), _sum_make),
    "amax": Op(ONE, {"dims": "ints", "keep": "bool"}, _reduce_rule(False, True), _amax_make),
    "softmax": Op(ONE, {"dim": "int"}, _softmax_rule,
                  lambda a: (lambda x, d=a["dim"]: torch.softmax(x, d))),
    "log_softmax": Op(ONE, {"dim": "int"}, _softmax_rule,
                      lambda a: (lambda x, d=a["dim"]: torch.log_softmax(x, d))),
    "batch_norm": Op((5, 5), {"eps": "eps"}, _bn_rule, _bn_make),
    "layer_norm": Op((1, 3), {"shape": "ints", "eps": "eps"}, _ln_rule, _ln_make),
    # shape ops
    "reshape": Op(ONE, {"shape": "dims-1"}, _reshape_rule, _reshape_make),
    "permute": Op(ONE, {"dims": "ints"}, _permute_rule,
                  lambda a: (lambda x, p=tuple(a["dims"]): x.permute(p))),
    "transpose": Op(ONE, {"d0": "int", "d1": "int"}, _transpose_rule,
                    lambda a: (lambda x, i=a["d0"], j=a["d1"]: x.transpose(i, j))),
    "expand": Op(ONE, {"shape": "dims-1"}, _expand_rule, _expand_make),
    "slice": Op(ONE, {"dim": "int", "start": "dim+-", "end": "dim+-", "step": "pos"}, _slice_rule,
                _slice_make),
    "select": Op(ONE, {"dim": "int", "index": "int"}, _select_rule, _select_make),
    "unsqueeze": Op(ONE, {"dim": "int"}, _unsqueeze_rule,
                    lambda a: (lambda x, d=a["dim"]: x.unsqueeze(d))),
    "squeeze": Op(ONE, {"dims": "ints"}, _squeeze_rule, _squeeze_make),
    "flatten": Op(ONE, {"start": "int", "end": "int"}, _flatten_rule, _flatten_make),
    "cat": Op((1, 64), {"dim": "int"}, _cat_rule, _cat_make),
    "cumsum": Op(ONE, {"dim": "int", "dtype": "dtype?"}, _cumsum_rule, _cumsum_make),
    "pad": Op(ONE, {"pad": "ints", "value": T_NUM}, _pad_rule, _pad_make),
    "slice_scatter": Op(TWO, {"dim": "int", "start": "dim+-", "end": "dim+-", "step": "pos"},
                        _slice_scatter_rule, _slice_scatter_make),
    # lookups, attention, products
    "embedding": Op(TWO, {}, _embedding_rule, _embedding_make),
    "index": Op((2, 9), {"pos": "ints"}, _index_rule, _index_make),
    "gather": Op(TWO, {"dim": "int"}, _gather_rule, _gather_make),
    "index_select": Op(TWO, {"dim": "int"}, _index_select_rule, _index_select_make),
    "sdpa": Op((3, 4), {"scale": "num?", "causal": "bool"}, _sdpa_rule, _sdpa_make),
    "matmul": Op(TWO, {}, _matmul_rule, _u(torch.matmul)),
    "bmm": Op(TWO, {}, _bmm_rule, _u(torch.bmm)),
    # pooling
    "max_pool2d": Op(ONE, {"k": "pair1", "s": "pair1", "p": "pair0", "d": "pair1", "ceil": "bool"},
                     _maxpool_rule, _maxpool_make),
    "avg_pool2d": Op(ONE, {"k": "pair1", "s": "pair1", "p": "pair0", "ceil": "bool", "cip": "bool",
                           "div": "pos?"}, _avgpool_rule, _avgpool_make),
    "adaptive_avg_pool2d": Op(ONE, {"size": "pair1n"}, _adaptive_rule, _adaptive_make(F.adaptive_avg_pool2d)),
    "adaptive_max_pool2d": Op(ONE, {"size": "pair1n"}, _adaptive_rule, _adaptive_make(F.adaptive_max_pool2d)),
    "interpolate": Op(ONE, {"size": "pair1", "mode": "str", "align": "bool", "scale": "nums?"},
                      _interpolate_rule, _interpolate_make),
    # sources
    "arange": Op((0, 0), {"start": "int", "end": "dim+", "step": "pos", "dtype": "dtype"}, _arange_rule,
                 _arange_make),
    "full": Op((0, 0), {"shape": "dims", "value": "numb", "dtype": "dtype"}, _full_rule, _full_make),
}

# Ops whose shape rule also reads the file's tensors (name -> shape, dtype).
FILE_OPS = ("linear", "conv2d", "tensor")
LAYER_OPS = ("linear", "conv2d")
