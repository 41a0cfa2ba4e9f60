"""Capture a model as a version-2 graph: torch.export, decomposed to core ATen, mapped op by op.

`capture(model, example_inputs)` exports the module with a symbolic batch dim (and a
symbolic sequence dim for integer token inputs), decomposes the program to core ATen
except for the ops the runtime wants whole (linear and conv2d map to compressed layers;
layer_norm, gelu, silu, hardswish, scaled_dot_product_attention and the pooling ops run
as single torch calls), then maps every ATen op onto the allow-list of deepcomp.graph.ops.
BatchNorm after a conv2d/linear is folded into that layer's weights. The result is
checked by the validator against the captured tensors, and each value's shape is compared
with the one torch.export recorded, so a capture that would not run is refused here.
"""
from __future__ import annotations

import inspect
import json
import operator
import re

import torch
import torch.fx
import torch.nn as nn

from deepcomp.errors import UnsupportedOpError
from deepcomp.graph import dims as D
from deepcomp.graph.ops import DTYPE_NAME
from deepcomp.graph.validate import GRAPH_FORMAT, GRAPH_VERSION, check

aten = torch.ops.aten

# Ops kept whole through decomposition (run by one torch call or a compressed layer).
_KEEP = ("linear.default", "conv2d.default", "layer_norm.default", "gelu.default", "silu.default",
         "hardswish.default", "hardsigmoid.default", "hardtanh.default",
         "scaled_dot_product_attention.default", "adaptive_avg_pool2d.default",
         "max_pool2d.default", "avg_pool2d.default", "matmul.default", "softmax.int",
         "log_softmax.int", "embedding.default", "flatten.using_ints", "mean.dim",
         "batch_norm.default", "linalg_vector_norm.default")

_IDENTITY = {"clone", "contiguous", "alias", "detach", "lift_fresh_copy", "dropout", "dropout_",
             "_assert_scalar", "type_as_", 
             "_assert_tensor_metadata", "feature_dropout", "alpha_dropout"}
_UNARY = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "silu": "silu",
          "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "exp": "exp", "sqrt": "sqrt",
          "rsqrt": "rsqrt", "erf": "erf", "neg": "neg", "abs": "abs", "logical_not": "logical_not",
          "log": "log", "bitwise_not": "bitwise_not", "cos": "cos", "sin": "sin"}
_ALIAS = {"__and__": "bitwise_and", "__or__": "bitwise_or", "__iand__": "bitwise_and",
          "__ior__": "bitwise_or", "true_divide": "div", "multiply": "mul", "subtract": "sub",
          "greater": "gt", "less": "lt", "greater_equal": "ge", "less_equal": "le", "not_equal": "ne",
          "masked_fill": "masked_fill", "concat": "cat", "concatenate": "cat", "swapaxes": "transpose"}
_BINARY = {"remainder", "fmod", "floor_divide", "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt",
           "ge", "bitwise_and", "bitwise_or", "logical_and", "logical_or"}


def _unsupported(what: str, where: str = "") -> UnsupportedOpError:
    at = f" at '{where}'" if where else ""
    return UnsupportedOpError(
        f"unsupported operation {what}{at}: the stored graph holds the ops listed in "
        "docs/FORMAT.md; save weights only (graph=False) and pass model=... to deepcomp.load")


def decomposition_table():
    table = torch.export.default_decompositions()
    for name in _KEEP:
        pkt, _, ov = name.partition(".")
        op = getattr(getattr(aten, pkt, None), ov, None)
        if op is not None:
            table.pop(op, None)
    return table


# ---- inputs ----------------------------------------------------------------------------

def _as_call(model, example_inputs):
    """(args, kwargs) for model(...) from a tensor, a tuple/list or a dict of tensors."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    raise UnsupportedOpError(f"example_inputs must be a tensor, a tuple or a dict of tensors, "
                             f"not {type(example_inputs).__name__}")


def _dynamic_shapes(args, kwargs, seq: bool, seq_max=None):
    batch = torch.export.Dim("batch", min=1)
    seqd = None
    if seq:
        seqd = torch.export.Dim("seq", min=1, max=seq_max) if seq_max else torch.export.Dim("seq", min=1)

    def spec(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return None
        d = {0: batch}
        if seqd is not None and t.dim() >= 2 and not t.is_floating_point():
            d[1] = seqd
        return d
    return tuple(spec(a) for a in args), {k: spec(v) for k, v in kwargs.items()}


def _export(model: nn.Module, args, kwargs):
    """torch.export with the most dynamic dims that export accepts."""
    has_tokens = any(isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dim() >= 2
                     for t in list(args) + list(kwargs.values()))
    attempts = ([True] if has_tokens else []) + [False, None]
    last = None
    seq_max = None
    for seq in attempts:
        for _ in range(2):
            try:
                if seq is None:
                    return torch.export.export(model, args, kwargs or None, strict=False)
                a_ds, k_ds = _dynamic_shapes(args, kwargs, seq, seq_max)
                ds = dict(zip(_arg_names(model, len(args)), a_ds))
                ds.update(k_ds)
                return torch.export.export(model, args, kwargs or None, dynamic_shapes=ds, strict=False)
            except Exception as e:  # export raises many kinds; the last one is reported
                last = e
                # A model that guards the sequence length (position embeddings) says so
                # in its suggested fix: Dim('seq', max=512). Take the bound and retry once.
                m = re.search(r"Dim\('seq', max=(\d+)\)", str(e))
                if not seq or not m or seq_max is not None:
                    break
                seq_max = int(m.group(1))
    first = str(last).strip().splitlines()[0][:300] if str(last).strip() else type(last).__name__
    raise UnsupportedOpError(f"torch.export cannot capture the model ({type(last).__name__}: {first}); "
                             "save weights only (graph=False) and pass model=... to deepcomp.load")


def _arg_names(model, n: int) -> list:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return [f"arg{i}" for i in range(n)]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return (names + [f"arg{i}" for i in range(len(names), n)])[:n]


def _out_structure(out):
    if isinstance(out, torch.Tensor):
        return None
    if isinstance(out, dict):  # includes Hugging Face ModelOutput
        keys = [k for k, v in out.items() if v is not None]
        if not all(isinstance(out[k], torch.Tensor) for k in keys):
            odd = [k for k in keys if not isinstance(out[k], torch.Tensor)]
            cache = any("cache" in k.lower() or "past" in k.lower() or "Cache" in type(out[k]).__name__
                        for k in odd)
            hint = " (a decoder's key/value cache: set model.config.use_cache = False before saving)" if cache else ""
            raise _unsupported(f"an output dict holding non-tensors: {', '.join(odd[:4])}{hint}")
        return keys
    if isinstance(out, (tuple, list)):
        if not all(isinstance(v, torch.Tensor) for v in out):
            raise _unsupported("a nested output (tuple of non-tensors)")
        return "tuple"
    raise _unsupported(f"a forward() returning {type(out).__name__}")


# ---- the walk --------------------------------------------------------------------------

class _Walk:
    def __init__(self, ep):
        self.ep = ep
        self.nodes: list[dict] = []
        self.state: dict[str, torch.Tensor] = {}
        self.env: dict = {}
        self.names: set[str] = set()
        self.syms: dict[str, str] = {}  # torch's symbol name -> ours
        self.users: dict = {}
        self.tensor_node: dict[str, str] = {}
        self.layer_of: dict[str, int] = {}  # value name -> index of its linear/conv node
        self.key_uses: dict[str, int] = {}

    # -- naming and emitting

    def unique(self, base: str) -> str:
        base = base or "v"
        out, k = base, 1
        while out in self.names:
            k += 1
            out = f"{base}_{k}"
        self.names.add(out)
        return out

    def emit(self, base, op, ins, **a) -> str:
        name = self.unique(base)
        node = {"name": name, "op": op}
        if ins:
            node["in"] = list(ins)
        a = {k: v for k, v in a.items() if v is not None or op in ("linear", "conv2d")}
        if a:
            node["a"] = a
        self.nodes.append(node)
        return name

    def param_tensor(self, key: str) -> torch.Tensor:
        t = self.params[key]
        return t.detach()

    def store(self, key: str, t: torch.Tensor) -> str:
        t = t.detach().contiguous().clone()
        if t.is_floating_point():
            t = t.to(torch.float32)
        if key in self.state and not torch.equal(self.state[key], t):
            raise _unsupported(f"tensor '{key}' used twice with different values")
        self.state[key] = t
        return key

    def tensor(self, key: str) -> str:
        if key not in self.tensor_node:
            self.store(key, self.param_tensor(key))
            self.tensor_node[key] = self.emit("@" + key, "tensor", [], key=key)
        return self.tensor_node[key]

    # -- operands

    def val(self, n, v) -> str:
        """Name of the value behind an fx argument that must be a tensor."""
        import torch.fx as fx

        if isinstance(v, fx.Node):
            r = self.env.get(v)
            if isinstance(r, str):
                return r
            if isinstance(r, tuple) and r[0] == "param":
                return self.tensor(r[1])
        raise _unsupported(f"a non-tensor argument ({str(v)[:40]}) where a tensor is expected", n.name)

    def operand(self, n, v):
        """A tensor value name or an inline number (elementwise ops)."""
        import torch.fx as fx

        if isinstance(v, (bool, int, float)):
            if isinstance(v, float) and not (v == v and abs(v) != float("inf")):
                raise _unsupported(f"a non-finite constant ({v})", n.name)
            return v
        if isinstance(v, fx.Node) and isinstance(self.env.get(v), tuple) and self.env[v][0] == "sym":
            raise _unsupported("arithmetic between a tensor and a size", n.name)
        return self.val(n, v)

    def dim(self, n, v):
        """A size argument: an int, or a symbolic size from the inputs."""
        import torch.fx as fx

        if isinstance(v, bool):
            raise _unsupported("a boolean where a size is expected", n.name)
        if isinstance(v, int):
            return v
        if isinstance(v, fx.Node):
            r = self.env.get(v)
            if isinstance(r, tuple) and r[0] == "sym":
                return r[1]
            return self.symval(n, v.meta.get("val"))
        if isinstance(v, torch.SymInt):
            return self.symval(n, v)
        raise _unsupported(f"a size given as {type(v).__name__}", n.name)

    def symval(self, n, v):
        if isinstance(v, int):
            return v
        if not isinstance(v, torch.SymInt):
            raise _unsupported("a computed size", n.name)
        expr = v.node.expr
        if expr.is_Integer:
            return int(expr)
        coef, factors = expr.as_coeff_mul()
        syms = []
        for f in factors:
            base, exp = f.as_base_exp()
            if not base.is_Symbol or not exp.is_Integer or str(base) not in self.syms:
                raise _unsupported(f"a size computed as {expr}", n.name)
            syms += [self.syms[str(base)]] * int(exp)
        if not coef.is_Integer:
            raise _unsupported(f"a size computed as {expr}", n.name)
        return D.to_json(D.norm(int(coef), syms))

    def dims(self, n, vs) -> list:
        return [self.dim(n, v) for v in vs]

    # -- the main loop

    def run(self):
        from torch.export.graph_signature import InputKind

        ep = self.ep
        self.params = dict(ep.state_dict)
        self.params.update(getattr(ep, "constants", {}) or {})
        ph_param: dict[str, str] = {}
        user_inputs: list = []
        for spec in ep.graph_signature.input_specs:
            if spec.kind == InputKind.USER_INPUT:
                user_inputs.append(spec.arg.name)
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                ph_param[spec.arg.name] = spec.target
            else:
                raise _unsupported(f"exported input kind {spec.kind.name}")
        graph = ep.graph_module.graph
        for n in graph.nodes:
            self.users[n] = len(n.users)
        for key in ph_param.values():
            self.key_uses[key] = 0
        for n in graph.nodes:
            if n.op == "placeholder" and n.name in ph_param:
                self.key_uses[ph_param[n.name]] += len(n.users)
        inputs, outputs = [], []
        # Symbols first: every user input's symbolic dims get our names.
        names = iter(("batch", "seq", "s2", "s3", "s4", "s5", "s6", "s7"))
        for n in graph.nodes:
            if n.op == "placeholder" and n.name not in ph_param:
                val = n.meta.get("val")
                for i, d in enumerate(getattr(val, "shape", ())):
                    if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol:
                        key = str(d.node.expr)
                        if key not in self.syms:
                            self.syms[key] = "batch" if i == 0 and "batch" not in self.syms.values() \
                                else ("seq" if "seq" not in self.syms.values() else next(names))
        for n in graph.nodes:
            if n.op == "placeholder":
                if n.name in ph_param:
                    self.env[n] = ("param", ph_param[n.name])
                    continue
                val = n.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise _unsupported(f"a non-tensor input '{n.name}'")
                name = self.unique(n.name)
                self.env[n] = name
                inputs.append({"name": name, "dtype": DTYPE_NAME.get(val.dtype, str(val.dtype)),
                               "shape": [self.symval(n, d) for d in val.shape]})
            elif n.op == "output":
                for o in n.args[0]:
                    outputs.append(self.val(n, o))
            elif n.op == "call_function":
                self.env[n] = self.call(n)
            else:
                raise _unsupported(f"fx node kind '{n.op}'", n.name)
        symbols = {}
        rc = getattr(ep, "range_constraints", {}) or {}
        for s, ours in self.syms.items():
            hi = None
            for k, r in rc.items():
                if str(k) == s:
                    up = r.upper
                    try:
                        hi = int(up) if up.is_finite and int(up) < D.MAX_DIM else None
                    except (TypeError, AttributeError, ValueError):
                        hi = None
            symbols[ours] = [1, hi]
        g = {"format": GRAPH_FORMAT, "version": GRAPH_VERSION, "inputs": inputs}
        if symbols:
            g["symbols"] = symbols
        g["nodes"] = self.nodes
        g["outputs"] = outputs
        return g

    def call(self, n):
        f = n.target
        a, kw = n.args, n.kwargs
        if f is operator.getitem:
            base = self.env.get(a[0])
            if isinstance(base, tuple) and base[0] == "tuple":
                return base[1][a[1]]
            if isinstance(base, tuple) and base[0] == "bn":
                if a[1] != 0:
                    raise _unsupported("batch_norm statistics as outputs", n.name)
                return base[1]
            raise _unsupported("indexing into a tuple", n.name)
        if f in (operator.mul, operator.add, operator.floordiv, operator.sub, aten.sym_size.int):
            return ("sym", self.symval(n, n.meta.get("val")))
        if not hasattr(f, "_schema"):
            raise _unsupported(f"function {getattr(f, '__name__', f)}", n.name)
        base = f._schema.name.split("::")[-1]
        ov = f._overloadname
        nm = n.name
        if base.endswith("_") and (base[:-1] in _UNARY or base[:-1] in _BINARY):
            base = base[:-1]
        base = _ALIAS.get(base, base)
        if base in _IDENTITY:
            return self.val(n, a[0])
        if base in ("unflatten", "view_as", "reshape_as"):
            return self.emit(nm, "reshape", [self.val(n, a[0])],
                             shape=[self.symval(n, d) for d in n.meta["val"].shape])
        if base == "expand_as":
            return self.emit(nm, "expand", [self.val(n, a[0])],
                             shape=[self.symval(n, d) for d in n.meta["val"].shape])
        if base in _UNARY:
            return self.emit(nm, _UNARY[base], [self.val(n, a[0])])
        if base == "rsub":
            alpha = kw.get("alpha", a[2] if len(a) > 2 else 1)
            if alpha != 1:
                raise _unsupported("rsub with alpha", nm)
            return self.emit(nm, "sub", [self.operand(n, a[1]), self.val(n, a[0])])
        if base in _BINARY:
            if ov == "Tensor_mode" or kw.get("rounding_mode") is not None:
                raise _unsupported("division with a rounding mode", nm)
            alpha = kw.get("alpha", 1)
            if alpha != 1:
                raise _unsupported(f"{base} with alpha", nm)
            return self.emit(nm, base, [self.operand(n, a[0]), self.operand(n, a[1])])
        if base == "masked_fill":
            return self.emit(nm, "where", [self.val(n, a[1]), self.operand(n, a[2]), self.val(n, a[0])])
        if base == "where":
            return self.emit(nm, "where", [self.val(n, a[0]), self.operand(n, a[1]), self.operand(n, a[2])])
        if base == "gelu":
            return self.emit(nm, "gelu", [self.val(n, a[0])], approx=kw.get("approximate", a[1] if len(a) > 1 else "none"))
        if base in ("hardtanh", "clamp"):
            lo = a[1] if len(a) > 1 else kw.get("min_val", kw.get("min", -1.0 if base == "hardtanh" else None))
            hi = a[2] if len(a) > 2 else kw.get("max_val", kw.get("max", 1.0 if base == "hardtanh" else None))
            if base == "hardtanh":
                return self.emit(nm, "hardtanh", [self.val(n, a[0])], min=lo, max=hi)
            return self.emit(nm, "clamp", [self.val(n, a[0])], min=lo, max=hi)
        if base in ("_to_copy", "to", "type_as"):
            src, dst = a[0].meta["val"].dtype, n.meta["val"].dtype
            if src == dst:
                return self.val(n, a[0])
            return self.emit(nm, "to", [self.val(n, a[0])], dtype=DTYPE_NAME[dst])
        if base == "linear":
            return self.linear(n)
        if base in ("conv2d", "convolution"):
            return self.conv(n, base)
        if base in ("_native_batch_norm_legit_no_training", "batch_norm"):
            return self.batch_norm(n, base)
        if base in ("view", "reshape", "_unsafe_view"):
            return self.emit(nm, "reshape", [self.val(n, a[0])], shape=self.dims(n, a[1]))
        if base == "expand":
            return self.emit(nm, "expand", [self.val(n, a[0])], shape=self.dims(n, a[1]))
        if base == "permute":
            return self.emit(nm, "permute", [self.val(n, a[0])], dims=list(a[1]))
        if base == "transpose":
            return self.emit(nm, "transpose", [self.val(n, a[0])], d0=a[1], d1=a[2])
        if base in ("t", "numpy_T"):
            return self.emit(nm, "transpose", [self.val(n, a[0])], d0=0, d1=-1)
        if base == "slice":
            return self.emit(nm, "slice", [self.val(n, a[0])], **self.slice_attrs(n, a[1:]))
        if base == "select":
            return self.emit(nm, "select", [self.val(n, a[0])], dim=a[1], index=self.dim(n, a[2]))
        if base == "unsqueeze":
            return self.emit(nm, "unsqueeze", [self.val(n, a[0])], dim=a[1])
        if base == "squeeze":
            shape = a[0].meta["val"].shape
            if ov == "dims":
                ds = list(a[1])
            elif ov == "dim":
                ds = [a[1]]
            else:
                ds = [i for i, d in enumerate(shape) if d == 1]
            ds = [d for d in ds if shape[d] == 1]
            if not ds:
                return self.val(n, a[0])
            return self.emit(nm, "squeeze", [self.val(n, a[0])], dims=ds)
        if base == "flatten":
            return self.emit(nm, "flatten", [self.val(n, a[0])], start=a[1] if len(a) > 1 else 0,
                             end=a[2] if len(a) > 2 else -1)
        if base in ("cat", "concat"):
            return self.emit(nm, "cat", [self.val(n, v) for v in a[0]], dim=a[1] if len(a) > 1 else kw.get("dim", 0))
        if base in ("split", "split_with_sizes", "chunk", "unbind"):
            return self.split(n, base)
        if base in ("mean", "sum", "amax"):
            if kw.get("dtype") is not None:
                raise _unsupported(f"{base} with a dtype", nm)
            dims = list(a[1]) if len(a) > 1 and a[1] is not None else None
            keep = bool(a[2] if len(a) > 2 else kw.get("keepdim", False))
            return self.emit(nm, base, [self.val(n, a[0])], dims=dims, keep=keep)
        if base in ("softmax", "_softmax", "log_softmax", "_log_softmax"):
            return self.emit(nm, base.lstrip("_"), [self.val(n, a[0])], dim=a[1])
        if base == "layer_norm":
            ins = [self.val(n, a[0])]
            w = a[2] if len(a) > 2 else None
            b = a[3] if len(a) > 3 else None
            if w is None and b is not None:
                raise _unsupported("layer_norm with a bias but no weight", nm)
            ins += [self.val(n, t) for t in (w, b) if t is not None]
            return self.emit(nm, "layer_norm", ins, shape=list(a[1]), eps=float(a[4] if len(a) > 4 else 1e-5))
        if base == "embedding":
            return self.emit(nm, "embedding", [self.val(n, a[0]), self.val(n, a[1])])
        if base == "scaled_dot_product_attention":
            mask = a[3] if len(a) > 3 else kw.get("attn_mask")
            drop = a[4] if len(a) > 4 else kw.get("dropout_p", 0.0)
            causal = a[5] if len(a) > 5 else kw.get("is_causal", False)
            if drop:
                raise _unsupported("attention dropout", nm)
            if kw.get("enable_gqa"):
                raise _unsupported("grouped-query attention", nm)
            ins = [self.val(n, t) for t in a[:3]] + ([self.val(n, mask)] if mask is not None else [])
            return self.emit(nm, "sdpa", ins, scale=kw.get("scale"), causal=bool(causal))
        if base == "addmm":
            # GPT-2's Conv1D: bias + x @ W with W stored [in, out]. The runtime's compressed
            # layers take [out, in]; a transposed copy would change the file's tensor, so
            # this runs as a product on the decoded weight.
            if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1:
                raise _unsupported("addmm with alpha or beta", nm)
            prod = self.emit(f"{nm}_mm", "matmul", [self.val(n, a[1]), self.val(n, a[2])])
            return self.emit(nm, "add", [prod, self.val(n, a[0])])
        if base in ("matmul", "mm", "bmm"):
            return self.emit(nm, "bmm" if base == "bmm" else "matmul", [self.val(n, a[0]), self.val(n, a[1])])
        if base in ("adaptive_avg_pool2d", "_adaptive_avg_pool2d"):
            size = list(a[1]) if isinstance(a[1], (list, tuple)) else [a[1], a[1]]
            if len(size) == 1:
                size = size * 2
            return self.emit(nm, "adaptive_avg_pool2d", [self.val(n, a[0])], size=size)
        if base in ("max_pool2d", "max_pool2d_with_indices"):
            k = _pair(a[1])
            s = _pair(a[2]) if len(a) > 2 and a[2] else k
            return self.emit(nm, "max_pool2d", [self.val(n, a[0])], k=k, s=s,
                             p=_pair(a[3] if len(a) > 3 else 0), d=_pair(a[4] if len(a) > 4 else 1),
                             ceil=bool(a[5] if len(a) > 5 else False))
        if base == "avg_pool2d":
            k = _pair(a[1])
            s = _pair(a[2]) if len(a) > 2 and a[2] else k
            return self.emit(nm, "avg_pool2d", [self.val(n, a[0])], k=k, s=s,
                             p=_pair(a[3] if len(a) > 3 else 0), ceil=bool(a[4] if len(a) > 4 else False),
                             cip=bool(a[5] if len(a) > 5 else True), div=a[6] if len(a) > 6 else None)
        if base == "index" and ov == "Tensor":
            pos, ins = [], [self.val(n, a[0])]
            for i, t in enumerate(a[1]):
                if t is not None:
                    pos.append(i)
                    ins.append(self.val(n, t))
            return self.emit(nm, "index", ins, pos=pos)
        if base == "gather":
            return self.emit(nm, "gather", [self.val(n, a[0]), self.val(n, a[2])], dim=a[1])
        if base == "cumsum":
            dt = kw.get("dtype")
            return self.emit(nm, "cumsum", [self.val(n, a[0])], dim=a[1], dtype=DTYPE_NAME[dt] if dt else None)
        if base in ("upsample_bilinear2d", "upsample_nearest2d", "_upsample_nearest_exact2d"):
            return self.resize(n, base)
        if base == "linalg_vector_norm":
            # F.normalize's norm, in ops the table has: 2 -> sqrt(sum(x * x)), 1 -> sum(|x|),
            # inf -> amax(|x|)
            order = a[1] if len(a) > 1 else kw.get("ord", 2)
            dims = a[2] if len(a) > 2 else kw.get("dim")
            keep = bool(a[3] if len(a) > 3 else kw.get("keepdim", False))
            if kw.get("dtype") is not None or order not in (1, 2, float("inf")):
                raise _unsupported(f"a vector norm of order {order}" + (" with a dtype" if kw.get("dtype") else ""), nm)
            dims = list(dims) if dims is not None else None
            x = self.val(n, a[0])
            if order == 2:
                sq = self.emit(f"{nm}_sq", "mul", [x, x])
                return self.emit(nm, "sqrt", [self.emit(f"{nm}_sum", "sum", [sq], dims=dims, keep=keep)])
            ab = self.emit(f"{nm}_abs", "abs", [x])
            if order == 1:
                return self.emit(nm, "sum", [ab], dims=dims, keep=keep)
            if not dims:
                dims = list(range(a[0].meta["val"].dim()))
            return self.emit(nm, "amax", [ab], dims=dims, keep=keep)
        if base == "index_select":
            return self.emit(nm, "index_select", [self.val(n, a[0]), self.val(n, a[2])], dim=a[1])
        if base in ("constant_pad_nd", "pad"):
            mode = a[2] if base == "pad" and len(a) > 2 else kw.get("mode", "constant")
            if mode != "constant":
                raise _unsupported(f"{mode} padding", nm)
            pad = [int(p) for p in a[1]]
            value = a[3] if base == "pad" and len(a) > 3 else a[2] if base != "pad" and len(a) > 2 \
                else kw.get("value")
            if any(p < 0 for p in pad):
                raise _unsupported("padding by a negative width (a crop)", nm)
            return self.emit(nm, "pad", [self.val(n, a[0])], pad=pad, value=float(value or 0.0))
        if base == "slice_scatter":
            return self.emit(nm, "slice_scatter", [self.val(n, a[0]), self.val(n, a[1])],
                             **self.slice_attrs(n, a[2:], kw))
        if base == "copy":
            # copy(dst, src): src's values in dst's shape and dtype (an in-place write
            # into a fresh tensor, as decomposition leaves it)
            dst, src = a[0].meta["val"], a[1].meta["val"]
            out = self.val(n, a[1])
            if tuple(src.shape) != tuple(dst.shape):
                out = self.emit(f"{nm}_expand", "expand", [out], shape=[self.symval(n, d) for d in dst.shape])
            if src.dtype != dst.dtype:
                out = self.emit(nm, "to", [out], dtype=DTYPE_NAME[dst.dtype])
            return out
        if base == "arange":
            if ov == "default":
                st, en, sp = 0, a[0], 1
            else:
                st, en = a[0], a[1]
                sp = a[2] if len(a) > 2 else 1
            dt = kw.get("dtype") or n.meta["val"].dtype
            return self.emit(nm, "arange", [], start=self.dim(n, st), end=self.dim(n, en), step=sp,
                             dtype=DTYPE_NAME[dt])
        if base in ("full", "scalar_tensor", "zeros", "ones", "new_ones", "new_zeros", "new_full",
                    "zeros_like", "ones_like", "full_like"):
            val = n.meta["val"]
            if base in ("full", "new_full", "full_like"):
                v = a[2] if base == "new_full" else a[1]
            elif base == "scalar_tensor":
                v = a[0]
            else:
                v = 0 if "zeros" in base else 1
            if not isinstance(v, (bool, int, float)):
                raise _unsupported(f"{base} with a computed value", nm)
            shape = [self.symval(n, d) for d in val.shape]
            dt = DTYPE_NAME[val.dtype]
            v = bool(v) if dt == "bool" else float(v) if dt.startswith(("float", "bfloat")) else int(v)
            return self.emit(nm, "full", [], shape=shape, value=v, dtype=dt)
        raise _unsupported(f"aten op {base}.{ov}", nm)

    # -- layers

    def _param_of(self, v):
        r = self.env.get(v)
        if isinstance(r, tuple) and r[0] == "param":
            return r[1]
        return None

    def linear(self, n):
        a = n.args
        wk = self._param_of(a[1])
        has_b = len(a) > 2 and a[2] is not None
        bk = self._param_of(a[2]) if has_b else None
        if wk is None:
            # A weight computed in the forward pass has no stored form to compress: it
            # runs as a product (Swin V2's position-bias MLP feeds on such values).
            out = self.emit(n.name, "matmul", [self.val(n, a[0]),
                                               self.emit(f"{n.name}_t", "transpose", [self.val(n, a[1])],
                                                         d0=0, d1=1)])
            return self.emit(f"{n.name}_bias", "add", [out, self.val(n, a[2])]) if has_b else out
        self.store(wk, self.param_tensor(wk))
        if bk:
            self.store(bk, self.param_tensor(bk))
        name = self.emit(n.name, "linear", [self.val(n, a[0])], w=wk, b=bk)
        self.layer_of[name] = len(self.nodes) - 1
        if has_b and bk is None:
            # a computed bias (Swin V2's q / zero / v concatenation) is added after the layer
            return self.emit(f"{n.name}_bias", "add", [name, self.val(n, a[2])])
        return name

    def conv(self, n, base):
        a = n.args
        wk = self._param_of(a[1])
        bk = self._param_of(a[2]) if len(a) > 2 and a[2] is not None else None
        if wk is None or (len(a) > 2 and a[2] is not None and bk is None):
            raise _unsupported("conv with a computed weight", n.name)
        w = self.param_tensor(wk)
        if w.dim() != 4:
            raise _unsupported(f"a {w.dim() - 2}-D convolution", n.name)
        if base == "convolution":
            stride, padding, dilation, transposed, groups = a[3], a[4], a[5], a[6], a[8]
            if transposed:
                raise _unsupported("transposed convolution", n.name)
        else:
            stride = a[3] if len(a) > 3 else 1
            padding = a[4] if len(a) > 4 else 0
            dilation = a[5] if len(a) > 5 else 1
            groups = a[6] if len(a) > 6 else 1
        if isinstance(padding, str):
            raise _unsupported(f"conv2d padding='{padding}'", n.name)
        self.store(wk, w)
        if bk:
            self.store(bk, self.param_tensor(bk))
        name = self.emit(n.name, "conv2d", [self.val(n, a[0])], w=wk, b=bk, stride=_pair(stride),
                         padding=_pair(padding), dilation=_pair(dilation), groups=int(groups))
        self.layer_of[name] = len(self.nodes) - 1
        return name

    def batch_norm(self, n, base):
        a = n.args
        if base == "batch_norm":
            w, b, mean, var, training, eps = a[1], a[2], a[3], a[4], a[5], a[7]
            if training:
                raise _unsupported("batch_norm in training mode (call model.eval() first)", n.name)
        else:
            w, b, mean, var, eps = a[1], a[2], a[3], a[4], a[6]
        keys = [self._param_of(v) if v is not None else None for v in (w, b, mean, var)]
        if keys[2] is None or keys[3] is None:
            raise _unsupported("batch_norm without running statistics", n.name)
        x = self.env.get(a[0])
        li = self.layer_of.get(x) if isinstance(x, str) else None
        if li is not None and self.users.get(a[0]) == 1 and self.nodes[li]["name"] == x:
            node = self.nodes[li]
            wk = node["a"]["w"]
            if self.key_uses.get(wk, 0) <= 1:
                out = self.fold(node, *[None if k is None else self.param_tensor(k) for k in keys],
                                float(eps), n.name)
                return ("bn", out) if base != "batch_norm" else out
        ins = [self.val(n, a[0])]
        c = self.param_tensor(keys[2]).numel()
        for k, fill in ((keys[2], None), (keys[3], None), (keys[0], 1.0), (keys[1], 0.0)):
            if k is None:
                k = self.store(f"{n.name}.{'weight' if fill == 1.0 else 'bias'}", torch.full((c,), fill))
                self.params[k] = self.state[k]
            ins.append(self.tensor(k))
        out = self.emit(n.name, "batch_norm", ins, eps=float(eps))
        return ("bn", out) if base != "batch_norm" else out

    def fold(self, node, gamma, beta, mean, var, eps, where):
        a = node["a"]
        wkey = a["w"]
        w = self.state[wkey].to(torch.float64)
        n_out = w.shape[0]
        if mean.numel() != n_out:
            raise _unsupported(f"batch_norm over {mean.numel()} channels after {n_out} outputs", where)
        mean, var = mean.to(torch.float64), var.to(torch.float64)
        gamma = torch.ones_like(mean) if gamma is None else gamma.to(torch.float64)
        beta = torch.zeros_like(mean) if beta is None else beta.to(torch.float64)
        scale = gamma / torch.sqrt(var + eps)
        w = w * scale.reshape([n_out] + [1] * (w.dim() - 1))
        b = self.state[a["b"]].to(torch.float64) if a["b"] else torch.zeros(n_out, dtype=torch.float64)
        b = (b - mean) * scale + beta
        self.state[wkey] = w.to(torch.float32).contiguous()
        bkey = a["b"] or (wkey[:-len("weight")] + "bias" if wkey.endswith("weight") else wkey + ".bias")
        if a["b"] is None and bkey in self.state:
            raise _unsupported(f"batch_norm folding would overwrite '{bkey}'", where)
        if a["b"] is not None and self.key_uses.get(a["b"], 0) > 1:
            raise _unsupported(f"batch_norm folding into a shared bias '{bkey}'", where)
        self.state[bkey] = b.to(torch.float32).contiguous()
        a["b"] = bkey
        return node["name"]

    def slice_attrs(self, n, a, kw=None) -> dict:
        """dim, start, end, step of aten's slice / slice_scatter (`a` from the dim on); an
        open end is 2^62, which the rule clamps like Python slicing."""
        kw = kw or {}

        def get(i, key, default):
            return a[i] if len(a) > i and a[i] is not None else kw.get(key, default)
        end = self.dim(n, get(2, "end", 1 << 62))
        if isinstance(end, int) and end > (1 << 62):
            end = 1 << 62
        return {"dim": get(0, "dim", 0), "start": self.dim(n, get(1, "start", 0)), "end": end,
                "step": get(3, "step", 1)}

    def resize(self, n, base):
        a = n.args
        mode = {"upsample_bilinear2d": "bilinear", "upsample_nearest2d": "nearest",
                "_upsample_nearest_exact2d": "nearest-exact"}[base]
        out = n.meta["val"].shape[-2:]
        if not all(isinstance(d, int) for d in out):
            raise _unsupported("resizing to a size that depends on the input's", n.name)
        if n.target._overloadname == "vec":
            align = bool(a[2]) if mode == "bilinear" else False
            scales = a[3] if mode == "bilinear" else (a[2] if len(a) > 2 else None)
        else:  # .default: (x, output_size, [align_corners,] scales_h, scales_w)
            align = bool(a[2]) if mode == "bilinear" else False
            rest = list(a[3:] if mode == "bilinear" else a[2:])
            scales = rest if len(rest) == 2 and all(v is not None for v in rest) else None
        has_size = a[1] is not None
        # a factor given by the caller sets where each output pixel samples; a size sets
        # the factor from the two sizes. Keep the factor only where it is what torch used.
        scale = [float(v) for v in scales] if scales is not None and not has_size else None
        return self.emit(n.name, "interpolate", [self.val(n, a[0])], size=[int(d) for d in out], mode=mode,
                         align=align, scale=scale)

    def split(self, n, base):
        a = n.args
        x = self.val(n, a[0])
        vals = n.meta["val"]
        if base == "unbind":
            dim = a[1] if len(a) > 1 else 0
            outs = [self.emit(f"{n.name}_{i}", "select", [x], dim=dim, index=i) for i in range(len(vals))]
            return ("tuple", outs)
        dim = a[2] if len(a) > 2 else n.kwargs.get("dim", 0)
        outs, start = [], 0
        for i, v in enumerate(vals):
            ln = v.shape[dim]
            if not isinstance(ln, int):
                raise _unsupported("a split along a symbolic dim", n.name)
            outs.append(self.emit(f"{n.name}_{i}", "slice", [x], dim=dim, start=start, end=start + ln, step=1))
            start += ln
        return ("tuple", outs)


def _pair(v) -> list:
    if isinstance(v, (list, tuple)):
        return [int(v[0]), int(v[0])] if len(v) == 1 else [int(v[0]), int(v[1])]
    return [int(v), int(v)]


def _check_against_export(graph: dict, state: dict, ep, syms: dict) -> None:
    """Validate, and compare each value's shape with the one torch.export recorded."""
    files = {k: (tuple(v.shape), DTYPE_NAME[v.dtype]) for k, v in state.items()}
    try:
        checked = check(graph, files)
    except Exception as e:
        raise UnsupportedOpError(f"the captured graph does not validate: {e}") from None
    return checked


def capture_exported(ep, out_struct=None) -> tuple[dict, dict]:
    # Decomposition costs seconds; many programs map onto the allow-list as exported.
    try:
        w = _Walk(ep)
        graph = w.run()
        return _finish(graph, w, ep, out_struct)
    except UnsupportedOpError:
        pass
    try:
        ep = ep.run_decompositions(decomposition_table())
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UnsupportedOpError(f"cannot decompose the exported program ({type(e).__name__}: {first})") from None
    w = _Walk(ep)
    graph = w.run()
    return _finish(graph, w, ep, out_struct)


def _finish(graph, w, ep, out_struct):
    if out_struct is not None:
        if isinstance(out_struct, list) and len(out_struct) != len(graph["outputs"]):
            raise _unsupported("an output structure that does not flatten to its tensors")
        graph["out"] = out_struct
    elif len(graph["outputs"]) > 1:
        graph["out"] = "tuple"
    _check_against_export(graph, w.state, ep, w.syms)
    return graph, w.state


def capture_module(model: nn.Module, example_inputs) -> tuple[dict, dict]:
    args, kwargs = _as_call(model, example_inputs)
    was_training = model.training
    _set_mode(model, False)
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
        struct = _out_structure(out)
        ep = _export(model, args, kwargs)
        graph, sd = capture_exported(ep, struct)
        if "symbols" not in graph:
            _free_batch(model, graph, sd, args, kwargs)
        _free_image_size(model, graph, sd, args, kwargs)
    finally:
        _set_mode(model, was_training)
    return graph, sd


def _set_mode(model, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:
        pass  # an ExportedProgram's module() is already in the mode it was exported in


def _agrees(model, graph, sd, args, kwargs, change) -> bool:
    """Does `graph` run on inputs changed by `change` and match the model there?"""
    from deepcomp.runtime.loader import from_state_dict

    names = [e["name"] for e in graph["inputs"]]
    call = list(args) + [kwargs[k] for k in names[len(args):] if k in kwargs]
    if len(call) != len(names):
        return False
    new = [change(i, x) for i, x in enumerate(call)]
    try:
        rt = from_state_dict(sd, graph, policy="dense")
        with torch.no_grad():
            ref = model(*new[:len(args)], **dict(zip(names[len(args):], new[len(args):])))
            got = rt(*new)
        ref = ref if isinstance(ref, torch.Tensor) else list(ref.values() if isinstance(ref, dict) else ref)
        got = got if isinstance(got, torch.Tensor) else list(got.values() if isinstance(got, dict) else got)
        pairs = [(ref, got)] if isinstance(ref, torch.Tensor) else list(zip(ref, got))
        return all(r.shape == o.shape and (r - o).abs().max() <= 1e-3 * (1 + r.abs().max())
                   for r, o in pairs)
    except Exception:  # any failure keeps the sizes fixed, which is always safe
        return False


def _free_batch(model, graph, sd, args, kwargs) -> None:
    """A program export could only capture with fixed shapes: free the batch size if it is safe.

    The example's batch size B becomes the symbol 'batch' in the inputs' first dim and
    in the first entry of reshape/expand/full shapes that equal B; the result is kept
    only if it validates and matches the model at another batch size.
    """
    ins = graph["inputs"]
    bs = {e["shape"][0] for e in ins if e["shape"] and isinstance(e["shape"][0], int)}
    if len(bs) != 1 or len(bs & {0}):
        return
    b = bs.pop()
    trial = json.loads(json.dumps(graph))
    for e in trial["inputs"]:
        if e["shape"]:
            e["shape"][0] = "batch"
    for n in trial["nodes"]:
        a = n.get("a", {})
        if n["op"] in ("reshape", "expand", "full") and a.get("shape") and a["shape"][0] == b:
            a["shape"][0] = "batch"
    trial["symbols"] = {"batch": [1, None]}
    trial = {k: trial[k] for k in ("format", "version", "inputs", "symbols", "nodes", "outputs", "out")
             if k in trial}
    files = {k: (tuple(v.shape), DTYPE_NAME[v.dtype]) for k, v in sd.items()}
    try:
        check(trial, files)
    except Exception:
        return

    def grow(i, x):
        return torch.cat([x, x[:1].expand(3, *x.shape[1:])]) if x.dim() else x
    # An ExportedProgram's module() guards its own batch size, so there is nothing to
    # compare with; the validator's shape propagation is the check there (as in 0.1).
    if isinstance(model, torch.fx.GraphModule) or _agrees(model, trial, sd, args, kwargs, grow):
        graph.clear()
        graph.update(trial)


def _free_image_size(model, graph, sd, args, kwargs) -> None:
    """Leave an image input's height and width undeclared where the graph runs at other sizes.

    Export fixes them to the example's; a CNN takes any size its layers accept. The
    graph is run at a second size against the model itself, and only if both run and
    agree are H and W written as null (sizes the validator leaves to run time).
    """
    from deepcomp.runtime.loader import from_state_dict

    imgs = [i for i, e in enumerate(graph["inputs"]) if e["dtype"] == "float32" and len(e["shape"]) == 4
            and all(isinstance(d, int) for d in e["shape"][2:])]
    if not imgs:
        return
    trial = [dict(e) for e in graph["inputs"]]
    for i in imgs:
        trial[i]["shape"] = trial[i]["shape"][:2] + [None, None]
    g2 = dict(graph, inputs=trial)
    names = [e["name"] for e in graph["inputs"]]
    call = list(args) + [kwargs[k] for k in names[len(args):] if k in kwargs]
    if len(call) != len(names):
        return
    bigger = [torch.nn.functional.pad(x, (0, 8, 0, 8)) if i in imgs else x for i, x in enumerate(call)]
    try:
        rt = from_state_dict(sd, g2, policy="dense")
        with torch.no_grad():
            ref = model(*bigger[:len(args)], **dict(zip(names[len(args):], bigger[len(args):])))
            got = rt(*bigger)
        ref = ref if isinstance(ref, torch.Tensor) else list(ref.values() if isinstance(ref, dict) else ref)
        got = got if isinstance(got, torch.Tensor) else list(got.values() if isinstance(got, dict) else got)
        pairs = [(ref, got)] if isinstance(ref, torch.Tensor) else list(zip(ref, got))
        for r, o in pairs:
            if r.shape != o.shape or (r - o).abs().max() > 1e-3 * (1 + r.abs().max()):
                return
    except Exception:  # any failure keeps the sizes fixed, which is always safe
        return
    graph["inputs"] = trial
