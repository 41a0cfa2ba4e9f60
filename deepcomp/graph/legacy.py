"""Version-1 graphs: the torch.fx capture (the fallback where torch.export fails) and its checks.

Version 1 is the module-level graph of deepcomp 0.1; files holding it still load.
The text below describes it as it was.

The graph is what lets `deepcomp run out.dcz` work without the user's Python code: it is
plain data (a list of nodes naming ops from a fixed set, their inputs and attributes, and
the state_dict keys of their weights), so loading it never executes anything from the
file. docs/FORMAT.md ("Graph section") is the schema.

Capture uses torch.fx symbolic tracing of an nn.Module, or the ATen graph of a
torch.export ExportedProgram. BatchNorm that follows a conv2d / linear is folded into
that layer's weight and bias here, at capture time, so the stored weights are the ones
that run (and the ones later pruned and shared). Dropout and Identity disappear.
Anything outside the allow-list raises UnsupportedOpError naming the op.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from deepcomp.errors import DczFormatError, UnsupportedOpError

GRAPH_FORMAT = "deepcomp-graph"
GRAPH_VERSION = 1  # this module writes and checks version 1 only

# op name -> attributes each node of that op must carry (validated on load).
OP_ATTRS: dict[str, tuple[str, ...]] = {
    "linear": ("weight", "bias", "in_features", "out_features"),
    "conv2d": ("weight", "bias", "in_channels", "out_channels", "kernel_size", "stride",
               "padding", "dilation", "groups"),
    "relu": (),
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                   "divisor_override"),
    "adaptive_avg_pool2d": ("output_size",),
    "adaptive_max_pool2d": ("output_size",),
    "flatten": ("start_dim", "end_dim"),
    "reshape": ("shape",),
    "add": (),
    "cat": ("dim",),
    "softmax": ("dim",),
}
# How many tensor inputs each op takes (None: one or more).
OP_ARITY: dict[str, int | None] = {op: 1 for op in OP_ATTRS}
OP_ARITY.update({"add": 2, "cat": None})

SUPPORTED = ("conv2d, linear, relu, max/avg/adaptive pooling, flatten/view/reshape, add, "
             "cat, softmax, batchnorm (after conv2d/linear), dropout, identity")


class _TraceFailed(UnsupportedOpError):
    """torch.fx could not trace the model (Python control flow on tensors)."""


def _unsupported(what: str, where: str = "") -> UnsupportedOpError:
    at = f" at '{where}'" if where else ""
    return UnsupportedOpError(
        f"unsupported operation {what}{at}: the stored graph can only hold {SUPPORTED}; "
        "save weights only (graph=False) and pass model=... to deepcomp.load")


def _pair(v) -> list[int]:
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return [int(v[0]), int(v[0])]
        return [int(v[0]), int(v[1])]
    return [int(v), int(v)]


def _opt_pair(v) -> list:
    if isinstance(v, (list, tuple)):
        return [None if e is None else int(e) for e in v]
    return [None if v is None else int(v)] * 2


class _Builder:
    """Accumulates graph nodes and the weights they reference."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.state: dict[str, torch.Tensor] = {}
        self.names: set[str] = set()
        # node name -> index in self.nodes for layers that a BatchNorm may fold into
        self.layer_index: dict[str, int] = {}

    def unique(self, name: str) -> str:
        base = name.replace(".", "_") or "node"
        out, k = base, 1
        while out in self.names:
            k += 1
            out = f"{base}_{k}"
        self.names.add(out)
        return out

    def add(self, name: str, op: str, inputs: list[str], **attrs) -> str:
        name = self.unique(name)
        self.nodes.append({"name": name, "op": op, "inputs": list(inputs), "attrs": attrs})
        if op in ("linear", "conv2d"):
            self.layer_index[name] = len(self.nodes) - 1
        return name

    def param(self, key: str, t: torch.Tensor | None) -> str | None:
        if t is None:
            return None
        t = t.detach().to(torch.float32).clone().contiguous()
        if key in self.state and not torch.equal(self.state[key], t):
            raise UnsupportedOpError(f"weight '{key}' is used twice with different values")
        self.state[key] = t
        return key

    def linear(self, name, x, weight_key, weight, bias_key, bias) -> str:
        if weight.dim() != 2:
            raise _unsupported(f"linear with a {weight.dim()}-D weight", name)
        return self.add(name, "linear", [x],
                        weight=self.param(weight_key, weight),
                        bias=self.param(bias_key, bias),
                        in_features=int(weight.shape[1]), out_features=int(weight.shape[0]))

    def conv2d(self, name, x, weight_key, weight, bias_key, bias, stride, padding,
               dilation, groups) -> str:
        if weight.dim() != 4:
            raise _unsupported(f"conv with a {weight.dim()}-D weight", name)
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            elif padding == "same" and all(int(s) == 1 for s in _pair(stride)):
                d = _pair(dilation)
                k = list(weight.shape[2:])
                tot = [d[i] * (k[i] - 1) for i in range(2)]
                if any(t % 2 for t in tot):
                    raise _unsupported("conv2d padding='same' with asymmetric padding", name)
                padding = [t // 2 for t in tot]
            else:
                raise _unsupported(f"conv2d padding={padding!r}", name)
        return self.add(name, "conv2d", [x],
                        weight=self.param(weight_key, weight),
                        bias=self.param(bias_key, bias),
                        in_channels=int(weight.shape[1]) * int(groups),
                        out_channels=int(weight.shape[0]),
                        kernel_size=[int(weight.shape[2]), int(weight.shape[3])],
                        stride=_pair(stride), padding=_pair(padding),
                        dilation=_pair(dilation), groups=int(groups))

    def fold_bn(self, layer: str, mean, var, gamma, beta, eps: float, where: str) -> str:
        """Fold an inference-mode BatchNorm into the layer node `layer`; returns `layer`."""
        node = self.nodes[self.layer_index[layer]]
        a = node["attrs"]
        wkey = a["weight"]
        w = self.state[wkey].to(torch.float64)
        n_out = w.shape[0]
        if mean is None or var is None:
            raise _unsupported("batch_norm without running statistics", where)
        if mean.numel() != n_out:
            raise _unsupported(f"batch_norm over {mean.numel()} channels after a layer "
                               f"with {n_out} outputs", where)
        mean = mean.detach().to(torch.float64)
        var = var.detach().to(torch.float64)
        gamma = torch.ones_like(mean) if gamma is None else gamma.detach().to(torch.float64)
        beta = torch.zeros_like(mean) if beta is None else beta.detach().to(torch.float64)
        scale = gamma / torch.sqrt(var + eps)
        shape = [n_out] + [1] * (w.dim() - 1)
        w = w * scale.reshape(shape)
        b = self.state[a["bias"]].to(torch.float64) if a["bias"] else torch.zeros(n_out, dtype=torch.float64)
        b = (b - mean) * scale + beta
        self.state[wkey] = w.to(torch.float32).contiguous()
        bkey = a["bias"] or (wkey[:-len("weight")] + "bias" if wkey.endswith("weight") else wkey + ".bias")
        if a["bias"] is None and bkey in self.state:
            raise _unsupported(f"batch_norm folding would overwrite '{bkey}'", where)
        self.state[bkey] = b.to(torch.float32).contiguous()
        a["bias"] = bkey
        return layer

    def finish(self, inputs: list[str], outputs: list[str], input_shape) -> dict:
        graph = {
            "format": GRAPH_FORMAT,
            "version": GRAPH_VERSION,
            "inputs": inputs,
            "input_shape": input_shape,
            "nodes": self.nodes,
            "outputs": outputs,
        }
        validate(graph, self.state)
        return graph


# ---- torch.fx capture ------------------------------------------------------------------

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)

# Values the tracer produces that are not tensors: x.size(), x.shape, x.size(d).
class _Shape:
    def __init__(self, of: str, dim: int | None = None):
        self.of, self.dim = of, dim


def _fn_name(target) -> str:
    return getattr(target, "__name__", None) or str(target)


def _arg(node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _dims_arg(args: tuple) -> list:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    return list(args)


class _FxCapture:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.mods = dict(model.named_modules())
        self.b = _Builder()
        self.env: dict[Any, Any] = {}
        self.inputs: list[str] = []

    def run(self, example_input) -> tuple[dict, dict]:
        import torch.fx as fx

        try:
            gm = fx.symbolic_trace(self.model)
        except UnsupportedOpError:
            raise
        except Exception as e:  # the tracer raises many kinds for data-dependent code
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise _TraceFailed(
                f"cannot capture the model's graph with torch.fx ({type(e).__name__}: {first}); "
                "save weights only (graph=False) and pass model=... to deepcomp.load") from None
        self.users = {n: len(n.users) for n in gm.graph.nodes}
        calls: dict[str, int] = {}
        for n in gm.graph.nodes:
            if n.op == "call_module":
                calls[n.target] = calls.get(n.target, 0) + 1
        self.calls = calls
        outputs: list[str] = []
        for n in gm.graph.nodes:
            if n.op == "placeholder":
                if self.inputs:
                    raise _unsupported("a forward() with more than one input", n.name)
                self.env[n] = self.b.unique(n.name)
                self.inputs.append(self.env[n])
            elif n.op == "output":
                outs = n.args[0]
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                for o in outs:
                    v = self.env.get(o) if isinstance(o, fx.Node) else None
                    if not isinstance(v, str):
                        raise _unsupported("a forward() returning something other than tensors")
                    outputs.append(v)
            elif n.op == "call_module":
                self.env[n] = self.module(n)
            elif n.op == "call_function":
                self.env[n] = self.function(n, n.target)
            elif n.op == "call_method":
                self.env[n] = self.method(n)
            elif n.op == "get_attr":
                raise _unsupported(f"direct use of the tensor attribute '{n.target}'", n.name)
            else:
                raise _unsupported(f"fx node kind '{n.op}'", n.name)
        shape = None
        if isinstance(example_input, torch.Tensor):
            shape = [None] + [int(s) for s in example_input.shape[1:]]
        return self.b.finish(self.inputs, outputs, shape), self.b.state

    # -- helpers

    def t(self, node, v):
        """The graph value name behind an fx argument that must be a tensor."""
        import torch.fx as fx

        if isinstance(v, fx.Node):
            r = self.env.get(v)
            if isinstance(r, str):
                return r
        raise _unsupported(f"a non-tensor argument ({v!r}) where a tensor is expected", node.name)

    def const(self, node, v):
        import torch.fx as fx

        if isinstance(v, fx.Node):
            raise _unsupported(f"a computed value as an argument of '{_fn_name(node.target)}'",
                               node.name)
        return v

    def reshape_dims(self, node, dims) -> list:
        import torch.fx as fx

        out = []
        for d in dims:
            if isinstance(d, fx.Node):
                r = self.env.get(d)
                if isinstance(r, _Shape) and r.dim is not None:
                    out.append({"size_of": r.of, "dim": r.dim})
                    continue
                raise _unsupported("a reshape to a computed size", node.name)
            out.append(int(d))
        return out

    def maybe_fold(self, node, x_fx, bn: dict) -> str:
        layer = self.env.get(x_fx)
        if (isinstance(layer, str) and layer in self.b.layer_index
                and self.users.get(x_fx, 0) == 1 and bn["shared_ok"]):
            return self.b.fold_bn(layer, bn["mean"], bn["var"], bn["weight"], bn["bias"],
                                  bn["eps"], node.name)
        raise _unsupported("batch_norm that does not directly follow a conv2d/linear "
                           "(only foldable batch norms are stored)", node.name)

    # -- call_module

    def module(self, n):
        m = self.mods[n.target]
        x_fx = n.args[0] if n.args else None
        key = n.target
        if isinstance(m, nn.Linear):
            return self.b.linear(n.name, self.t(n, x_fx), f"{key}.weight", m.weight,
                                 f"{key}.bias", m.bias)
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise _unsupported(f"conv2d with padding_mode='{m.padding_mode}'", n.name)
            return self.b.conv2d(n.name, self.t(n, x_fx), f"{key}.weight", m.weight,
                                 f"{key}.bias", m.bias, m.stride, m.padding, m.dilation, m.groups)
        if isinstance(m, _BN):
            if m.training and not m.track_running_stats:
                raise _unsupported("batch_norm without running statistics", n.name)
            # Folding rewrites the layer's weight, so that layer must not be called elsewhere.
            prev = x_fx.target if getattr(x_fx, "op", None) == "call_module" else None
            shared_ok = prev is None or self.calls.get(prev, 0) == 1
            return self.maybe_fold(n, x_fx, dict(mean=m.running_mean, var=m.running_var,
                                                 weight=m.weight, bias=m.bias, eps=m.eps,
                                                 shared_ok=shared_ok))
        if isinstance(m, nn.ReLU):
            return self.b.add(n.name, "relu", [self.t(n, x_fx)])
        if isinstance(m, _DROPOUT) or isinstance(m, nn.Identity):
            return self.t(n, x_fx)
        if isinstance(m, nn.MaxPool2d):
            return self.pool_max(n, x_fx, m.kernel_size, m.stride, m.padding, m.dilation,
                                 m.ceil_mode, m.return_indices)
        if isinstance(m, nn.AvgPool2d):
            return self.pool_avg(n, x_fx, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                 m.count_include_pad, m.divisor_override)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.b.add(n.name, "adaptive_avg_pool2d", [self.t(n, x_fx)],
                              output_size=_opt_pair(m.output_size))
        if isinstance(m, nn.AdaptiveMaxPool2d):
            if m.return_indices:
                raise _unsupported("adaptive_max_pool2d with return_indices", n.name)
            return self.b.add(n.name, "adaptive_max_pool2d", [self.t(n, x_fx)],
                              output_size=_opt_pair(m.output_size))
        if isinstance(m, nn.Flatten):
            return self.b.add(n.name, "flatten", [self.t(n, x_fx)],
                              start_dim=int(m.start_dim), end_dim=int(m.end_dim))
        if isinstance(m, nn.Softmax):
            return self.softmax(n, x_fx, m.dim)
        raise _unsupported(f"module {type(m).__name__} ('{n.target}')", n.name)

    def pool_max(self, n, x_fx, k, s, p, d, ceil, ret_idx):
        if ret_idx:
            raise _unsupported("max_pool2d with return_indices", n.name)
        s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else s
        return self.b.add(n.name, "max_pool2d", [self.t(n, x_fx)], kernel_size=_pair(k),
                          stride=_pair(s), padding=_pair(p), dilation=_pair(d),
                          ceil_mode=bool(ceil))

    def pool_avg(self, n, x_fx, k, s, p, ceil, cip, div):
        s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else s
        return self.b.add(n.name, "avg_pool2d", [self.t(n, x_fx)], kernel_size=_pair(k),
                          stride=_pair(s), padding=_pair(p), ceil_mode=bool(ceil),
                          count_include_pad=bool(cip),
                          divisor_override=None if div is None else int(div))

    def softmax(self, n, x_fx, dim):
        if dim is None:
            raise _unsupported("softmax without an explicit dim", n.name)
        return self.b.add(n.name, "softmax", [self.t(n, x_fx)], dim=int(dim))

    # -- call_function

    def function(self, n, f):
        import torch.fx as fx

        a0 = n.args[0] if n.args else None
        if f in (F.relu, torch.relu, torch.relu_):
            return self.b.add(n.name, "relu", [self.t(n, a0)])
        if f in (torch.flatten,):
            return self.b.add(n.name, "flatten", [self.t(n, a0)],
                              start_dim=int(self.const(n, _arg(n, 1, "start_dim", 0))),
                              end_dim=int(self.const(n, _arg(n, 2, "end_dim", -1))))
        if f in (torch.reshape,):
            return self.b.add(n.name, "reshape", [self.t(n, a0)],
                              shape=self.reshape_dims(n, _dims_arg(tuple(_arg(n, 1, "shape")))))
        if f in (operator.add, operator.iadd, torch.add):
            if "alpha" in n.kwargs or len(n.args) != 2:
                raise _unsupported("add with alpha", n.name)
            return self.b.add(n.name, "add", [self.t(n, n.args[0]), self.t(n, n.args[1])])
        if f in (torch.cat, torch.concat):
            xs = _arg(n, 0, "tensors")
            return self.b.add(n.name, "cat", [self.t(n, v) for v in xs],
                              dim=int(self.const(n, _arg(n, 1, "dim", 0))))
        if f in (F.dropout, F.dropout2d, F.alpha_dropout, F.dropout1d, F.dropout3d):
            return self.t(n, a0)
        if f in (F.softmax, torch.softmax):
            return self.softmax(n, a0, self.const(n, _arg(n, 1, "dim")))
        if f in (F.max_pool2d, getattr(F, "max_pool2d_with_indices", None)):
            k = self.const(n, _arg(n, 1, "kernel_size"))
            return self.pool_max(n, a0, k, self.const(n, _arg(n, 2, "stride", None)),
                                 self.const(n, _arg(n, 3, "padding", 0)),
                                 self.const(n, _arg(n, 4, "dilation", 1)),
                                 self.const(n, _arg(n, 5, "ceil_mode", False)),
                                 self.const(n, _arg(n, 6, "return_indices", False)))
        if f in (F.avg_pool2d,):
            k = self.const(n, _arg(n, 1, "kernel_size"))
            return self.pool_avg(n, a0, k, self.const(n, _arg(n, 2, "stride", None)),
                                 self.const(n, _arg(n, 3, "padding", 0)),
                                 self.const(n, _arg(n, 4, "ceil_mode", False)),
                                 self.const(n, _arg(n, 5, "count_include_pad", True)),
                                 self.const(n, _arg(n, 6, "divisor_override", None)))
        if f in (F.adaptive_avg_pool2d,):
            return self.b.add(n.name, "adaptive_avg_pool2d", [self.t(n, a0)],
                              output_size=_opt_pair(self.const(n, _arg(n, 1, "output_size"))))
        if f is getattr and isinstance(a0, fx.Node) and n.args[1] == "shape":
            return _Shape(self.t(n, a0))
        if f is operator.getitem:
            base = self.env.get(a0)
            if isinstance(base, _Shape) and base.dim is None and isinstance(n.args[1], int):
                return _Shape(base.of, int(n.args[1]))
        raise _unsupported(f"function {_fn_name(f)}", n.name)

    # -- call_method

    def method(self, n):
        meth = n.target
        x_fx = n.args[0]
        if meth == "size":
            d = _arg(n, 1, "dim", None)
            return _Shape(self.t(n, x_fx), None if d is None else int(self.const(n, d)))
        if meth in ("view", "reshape"):
            dims = self.reshape_dims(n, _dims_arg(tuple(n.args[1:])))
            return self.b.add(n.name, "reshape", [self.t(n, x_fx)], shape=dims)
        if meth == "flatten":
            return self.b.add(n.name, "flatten", [self.t(n, x_fx)],
                              start_dim=int(self.const(n, _arg(n, 1, "start_dim", 0))),
                              end_dim=int(self.const(n, _arg(n, 2, "end_dim", -1))))
        if meth in ("relu", "relu_"):
            return self.b.add(n.name, "relu", [self.t(n, x_fx)])
        if meth == "softmax":
            return self.softmax(n, x_fx, self.const(n, _arg(n, 1, "dim")))
        if meth in ("add", "add_", "__add__", "__iadd__") and len(n.args) == 2 and not n.kwargs:
            return self.b.add(n.name, "add", [self.t(n, x_fx), self.t(n, n.args[1])])
        if meth in ("contiguous",):
            return self.t(n, x_fx)
        raise _unsupported(f"method Tensor.{meth}", n.name)


# ---- torch.export capture --------------------------------------------------------------

def _capture_exported(ep) -> tuple[dict, dict]:
    """Capture from an ExportedProgram's ATen graph (e.g. a .pt2 from torch.export.save)."""
    from torch.export.graph_signature import InputKind

    gs = ep.graph_signature
    params = dict(ep.state_dict)
    params.update(getattr(ep, "constants", {}) or {})
    ph_param: dict[str, str] = {}
    user_inputs: list[str] = []
    for spec in gs.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            user_inputs.append(spec.arg.name)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            ph_param[spec.arg.name] = spec.target
        else:
            raise _unsupported(f"exported input kind {spec.kind.name}")
    if len(user_inputs) != 1:
        raise _unsupported("an exported program with more than one tensor input")

    b = _Builder()
    env: dict = {}
    users = {}
    aten = torch.ops.aten
    graph = ep.graph_module.graph
    for n in graph.nodes:
        users[n] = len(n.users)

    def t(n, v):
        r = env.get(v)
        if isinstance(r, str):
            return r
        raise _unsupported("a non-tensor argument where a tensor is expected", n.name)

    def tensor(v):
        r = env.get(v)
        if isinstance(r, tuple) and r[0] == "param":
            return r[1], params[r[1]]
        return None, None

    outputs: list[str] = []
    input_shape = None
    for n in graph.nodes:
        if n.op == "placeholder":
            if n.name in ph_param:
                env[n] = ("param", ph_param[n.name])
            else:
                env[n] = n.name
                b.names.add(n.name)
                val = n.meta.get("val")
                if val is not None and hasattr(val, "shape"):
                    input_shape = [None] + [int(s) if isinstance(s, int) else None
                                            for s in list(val.shape)[1:]]
            continue
        if n.op == "output":
            outs = n.args[0]
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            for o in outs:
                outputs.append(t(n, o))
            continue
        if n.op != "call_function":
            raise _unsupported(f"fx node kind '{n.op}'", n.name)
        f = n.target
        a = n.args
        name = str(f).replace("aten.", "").split(".")[0]
        if f in (aten.linear.default,):
            wk, w = tensor(a[1])
            bk, bb = tensor(a[2]) if len(a) > 2 and a[2] is not None else (None, None)
            if w is None:
                raise _unsupported("linear with a computed weight", n.name)
            env[n] = b.linear(n.name, t(n, a[0]), wk, w, bk, bb)
        elif f in (aten.conv2d.default, aten.convolution.default):
            wk, w = tensor(a[1])
            bk, bb = tensor(a[2]) if len(a) > 2 and a[2] is not None else (None, None)
            if w is None:
                raise _unsupported("conv2d with a computed weight", n.name)
            if f is aten.convolution.default:
                stride, padding, dilation, transposed, groups = a[3], a[4], a[5], a[6], a[8]
                if transposed:
                    raise _unsupported("transposed convolution", n.name)
            else:
                stride = a[3] if len(a) > 3 else 1
                padding = a[4] if len(a) > 4 else 0
                dilation = a[5] if len(a) > 5 else 1
                groups = a[6] if len(a) > 6 else 1
            env[n] = b.conv2d(n.name, t(n, a[0]), wk, w, bk, bb, stride, padding, dilation, groups)
        elif f in (aten._native_batch_norm_legit_no_training.default, aten.batch_norm.default,
                   getattr(aten, "_native_batch_norm_legit_functional", aten.batch_norm).default):
            if f is aten.batch_norm.default:
                wk, g = tensor(a[1]); _, beta = tensor(a[2]); _, mean = tensor(a[3]); _, var = tensor(a[4])
                eps = a[7]
                if a[5]:
                    raise _unsupported("batch_norm in training mode (export the model in eval mode)", n.name)
            elif f is aten._native_batch_norm_legit_no_training.default:
                _, g = tensor(a[1]); _, beta = tensor(a[2]); _, mean = tensor(a[3]); _, var = tensor(a[4])
                eps = a[6]
            else:
                raise _unsupported("batch_norm in training mode (export the model in eval mode)", n.name)
            layer = env.get(a[0])
            if not (isinstance(layer, str) and layer in b.layer_index and users.get(a[0]) == 1):
                raise _unsupported("batch_norm that does not directly follow a conv2d/linear", n.name)
            env[n] = b.fold_bn(layer, mean, var, g, beta, float(eps), n.name)
        elif f is operator.getitem:
            base = env.get(a[0])
            if isinstance(base, str) and a[1] == 0:
                env[n] = base  # batch norm's tuple output: element 0 is the tensor
            else:
                raise _unsupported("indexing into a tuple", n.name)
        elif f in (aten.relu.default, aten.relu_.default):
            env[n] = b.add(n.name, "relu", [t(n, a[0])])
        elif f in (aten.dropout.default, aten.clone.default, aten.contiguous.default,
                   aten.alias.default, aten.detach.default):
            env[n] = t(n, a[0])
        elif f in (aten.max_pool2d.default, aten.max_pool2d_with_indices.default):
            k = a[1]
            s = a[2] if len(a) > 2 and a[2] else k
            env[n] = b.add(n.name, "max_pool2d", [t(n, a[0])], kernel_size=_pair(k), stride=_pair(s),
                           padding=_pair(a[3] if len(a) > 3 else 0),
                           dilation=_pair(a[4] if len(a) > 4 else 1),
                           ceil_mode=bool(a[5] if len(a) > 5 else False))
        elif f in (aten.avg_pool2d.default,):
            k = a[1]
            s = a[2] if len(a) > 2 and a[2] else k
            env[n] = b.add(n.name, "avg_pool2d", [t(n, a[0])], kernel_size=_pair(k), stride=_pair(s),
                           padding=_pair(a[3] if len(a) > 3 else 0),
                           ceil_mode=bool(a[4] if len(a) > 4 else False),
                           count_include_pad=bool(a[5] if len(a) > 5 else True),
                           divisor_override=a[6] if len(a) > 6 else None)
        elif f in (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default):
            env[n] = b.add(n.name, "adaptive_avg_pool2d", [t(n, a[0])], output_size=_opt_pair(a[1]))
        elif f in (aten.flatten.using_ints,):
            env[n] = b.add(n.name, "flatten", [t(n, a[0])],
                           start_dim=int(a[1] if len(a) > 1 else 0), end_dim=int(a[2] if len(a) > 2 else -1))
        elif f in (aten.view.default, aten.reshape.default, aten._unsafe_view.default):
            src = t(n, a[0])
            val = getattr(a[0], "meta", {}).get("val")
            src_batch = int(val.shape[0]) if val is not None and len(val.shape) and isinstance(val.shape[0], int) else None
            dims: list = []
            for i, d in enumerate(a[1]):
                if isinstance(d, int):
                    # Export specialises the batch size into view(); keep it free.
                    if i == 0 and src_batch is not None and d == src_batch:
                        dims.append({"size_of": src, "dim": 0})
                    else:
                        dims.append(d)
                elif i == 0:
                    dims.append({"size_of": src, "dim": 0})
                else:
                    raise _unsupported("a reshape to a computed size", n.name)
            env[n] = b.add(n.name, "reshape", [src], shape=dims)
        elif f in (aten.add.Tensor, aten.add_.Tensor):
            if len(a) != 2 or n.kwargs.get("alpha", 1) != 1:
                raise _unsupported("add with alpha or a scalar", n.name)
            env[n] = b.add(n.name, "add", [t(n, a[0]), t(n, a[1])])
        elif f in (aten.cat.default,):
            env[n] = b.add(n.name, "cat", [t(n, v) for v in a[0]], dim=int(a[1] if len(a) > 1 else 0))
        elif f in (aten.softmax.int, aten._softmax.default):
            env[n] = b.add(n.name, "softmax", [t(n, a[0])], dim=int(a[1]))
        elif f in (aten.sym_size.int,):
            raise _unsupported("a shape computation (export with static shapes)", n.name)
        else:
            raise _unsupported(f"aten op {name}", n.name)
    return b.finish(user_inputs, outputs, input_shape), b.state


# ---- public API ------------------------------------------------------------------------

def capture(model, example_input: torch.Tensor | None = None) -> tuple[dict, dict]:
    """Capture `model` as (graph_dict, state_dict) with BatchNorm folded into the weights.

    `model` is an nn.Module (traced with torch.fx) or a torch.export ExportedProgram.
    The state_dict holds exactly the tensors the graph references, as float32.
    With `example_input`, the graph records the input's shape (batch dimension free)
    so that `deepcomp run` can check inputs before running.
    """
    if hasattr(model, "graph_signature") and hasattr(model, "graph_module"):
        graph, sd = _capture_exported(model)
        if example_input is not None:
            graph["input_shape"] = [None] + [int(s) for s in example_input.shape[1:]]
        return graph, sd
    if not isinstance(model, nn.Module):
        raise UnsupportedOpError(f"cannot capture a graph from a {type(model).__name__}; "
                                 "pass an nn.Module or a torch.export ExportedProgram")
    try:
        graph, sd = _FxCapture(model).run(example_input)
    except _TraceFailed as e:
        # Python control flow on the input (e.g. `if x.dim() == 2`) defeats symbolic
        # tracing; torch.export specialises it on a concrete input instead.
        out = _capture_by_export(model, example_input)
        if out is None:
            raise UnsupportedOpError(str(e)) from None
        return out
    if graph["input_shape"] is None:
        graph["input_shape"] = _guess_input_shape(graph)
    return graph, sd


def _example_inputs(model: nn.Module):
    """Plausible inputs for a model whose input shape nobody told us (batch of 2)."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Linear):
        # Images first: an MLP over flattened images is fed image batches by `deepcomp run --data`.
        for hw in (28, 32):
            c, r = divmod(first.in_features, hw * hw)
            if r == 0 and c:
                yield torch.zeros(2, c, hw, hw)
        yield torch.zeros(2, first.in_features)
    elif isinstance(first, nn.Conv2d):
        for hw in (28, 32, 224, 64, 96, 227, 299):
            yield torch.zeros(2, first.in_channels, hw, hw)


def _capture_by_export(model: nn.Module, example_input):
    candidates = [example_input] if isinstance(example_input, torch.Tensor) else _example_inputs(model)
    was_training = model.training
    model.eval()
    try:
        for x in candidates:
            try:
                with torch.no_grad():
                    model(x)
            except Exception:
                continue  # not an input this model takes; try the next guess
            try:
                ep = torch.export.export(model, (x,))
            except Exception:
                return None
            graph, sd = _capture_exported(ep)
            graph["input_shape"] = [None] + [int(s) for s in x.shape[1:]]
            return graph, sd
        return None
    finally:
        model.train(was_training)


def _guess_input_shape(graph: dict):
    """The input's shape where the first layer pins it down (conv: channels only)."""
    nodes = graph["nodes"]
    x = graph["inputs"][0]
    for n in nodes:
        if x in n["inputs"]:
            if n["op"] == "conv2d":
                return [None, n["attrs"]["in_channels"], None, None]
            return None
    return None


# ---- validation ------------------------------------------------------------------------

def _bad(msg: str) -> DczFormatError:
    return DczFormatError(f"graph section: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(v, n: int, what: str, lo: int = 0, allow_none: bool = False) -> None:
    if not isinstance(v, list) or len(v) != n:
        raise _bad(f"{what} must be a list of {n} integers")
    for e in v:
        if e is None and allow_none:
            continue
        if not _is_int(e) or e < lo:
            raise _bad(f"{what} must be a list of {n} integers >= {lo}")


def validate(graph: dict, state: dict | None = None, shapes: dict | None = None) -> None:
    """Check a graph dict's structure, ops, attributes and references; raise DczFormatError.

    `state` (name -> tensor) or `shapes` (name -> shape tuple) lets it also check that
    every referenced weight exists with a shape that matches the node's attributes.
    """
    if shapes is None and state is not None:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
    if not isinstance(graph, dict):
        raise _bad("not a JSON object")
    if graph.get("format") != GRAPH_FORMAT:
        raise _bad(f"format must be '{GRAPH_FORMAT}'")
    ver = graph.get("version")
    if not _is_int(ver) or ver < 1:
        raise _bad("version must be a positive integer")
    if ver != GRAPH_VERSION:
        raise _bad(f"version {ver} is not a version-1 graph")
    inputs = graph.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], str):
        raise _bad("inputs must be a list of one name")
    ishape = graph.get("input_shape")
    if ishape is not None:
        if not isinstance(ishape, list) or not ishape or not all(
                e is None or (_is_int(e) and e > 0) for e in ishape):
            raise _bad("input_shape must be null or a list of positive integers / nulls")
    nodes = graph.get("nodes")
    if not isinstance(nodes, list):
        raise _bad("nodes must be a list")
    known = set(inputs)
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise _bad(f"node {i} is not an object")
        name, op, ins, attrs = node.get("name"), node.get("op"), node.get("inputs"), node.get("attrs")
        if not isinstance(name, str) or not name:
            raise _bad(f"node {i} has no name")
        if name in known:
            raise _bad(f"node name '{name}' is used twice")
        if op not in OP_ATTRS:
            raise _bad(f"node '{name}' has unknown op {op!r} (known: {', '.join(OP_ATTRS)})")
        if not isinstance(attrs, dict):
            raise _bad(f"node '{name}' has no attrs object")
        missing = [k for k in OP_ATTRS[op] if k not in attrs]
        extra = [k for k in attrs if k not in OP_ATTRS[op]]
        if missing or extra:
            raise _bad(f"node '{name}' ({op}) attrs: missing {missing}, unexpected {extra}")
        if not isinstance(ins, list) or not all(isinstance(v, str) for v in ins):
            raise _bad(f"node '{name}' inputs must be a list of names")
        arity = OP_ARITY[op]
        if (arity is not None and len(ins) != arity) or not ins:
            raise _bad(f"node '{name}' ({op}) takes {arity or 'one or more'} inputs, has {len(ins)}")
        for v in ins:
            if v not in known:
                raise _bad(f"node '{name}' uses '{v}' before it is defined")
        _check_attrs(name, op, attrs, known, shapes)
        known.add(name)
    outputs = graph.get("outputs")
    if not isinstance(outputs, list) or not outputs or not all(
            isinstance(o, str) and o in known for o in outputs):
        raise _bad("outputs must be a non-empty list of defined names")


def _check_attrs(name: str, op: str, a: dict, known: set, shapes: dict | None) -> None:
    where = f"node '{name}' ({op})"
    if op in ("linear", "conv2d"):
        if not isinstance(a["weight"], str) or not (a["bias"] is None or isinstance(a["bias"], str)):
            raise _bad(f"{where}: weight/bias must be tensor names")
        if op == "linear":
            for k in ("in_features", "out_features"):
                if not _is_int(a[k]) or a[k] < 1:
                    raise _bad(f"{where}: {k} must be a positive integer")
            want_w = (a["out_features"], a["in_features"])
        else:
            for k in ("in_channels", "out_channels", "groups"):
                if not _is_int(a[k]) or a[k] < 1:
                    raise _bad(f"{where}: {k} must be a positive integer")
            _int_list(a["kernel_size"], 2, f"{where}: kernel_size", 1)
            _int_list(a["stride"], 2, f"{where}: stride", 1)
            _int_list(a["padding"], 2, f"{where}: padding", 0)
            _int_list(a["dilation"], 2, f"{where}: dilation", 1)
            if a["in_channels"] % a["groups"] or a["out_channels"] % a["groups"]:
                raise _bad(f"{where}: channels not divisible by groups")
            want_w = (a["out_channels"], a["in_channels"] // a["groups"], *a["kernel_size"])
        if shapes is not None:
            if a["weight"] not in shapes:
                raise _bad(f"{where}: weight '{a['weight']}' is not in the file")
            if tuple(shapes[a["weight"]]) != tuple(want_w):
                raise _bad(f"{where}: weight '{a['weight']}' has shape {list(shapes[a['weight']])}, "
                           f"the node needs {list(want_w)}")
            if a["bias"] is not None:
                if a["bias"] not in shapes:
                    raise _bad(f"{where}: bias '{a['bias']}' is not in the file")
                if tuple(shapes[a["bias"]]) != (want_w[0],):
                    raise _bad(f"{where}: bias '{a['bias']}' has shape {list(shapes[a['bias']])}")
    elif op == "max_pool2d":
        _int_list(a["kernel_size"], 2, f"{where}: kernel_size", 1)
        _int_list(a["stride"], 2, f"{where}: stride", 1)
        _int_list(a["padding"], 2, f"{where}: padding", 0)
        _int_list(a["dilation"], 2, f"{where}: dilation", 1)
        if not isinstance(a["ceil_mode"], bool):
            raise _bad(f"{where}: ceil_mode must be a boolean")
    elif op == "avg_pool2d":
        _int_list(a["kernel_size"], 2, f"{where}: kernel_size", 1)
        _int_list(a["stride"], 2, f"{where}: stride", 1)
        _int_list(a["padding"], 2, f"{where}: padding", 0)
        if not isinstance(a["ceil_mode"], bool) or not isinstance(a["count_include_pad"], bool):
            raise _bad(f"{where}: ceil_mode/count_include_pad must be booleans")
        d = a["divisor_override"]
        if d is not None and (not _is_int(d) or d < 1):
            raise _bad(f"{where}: divisor_override must be null or a positive integer")
    elif op in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        _int_list(a["output_size"], 2, f"{where}: output_size", 1, allow_none=True)
    elif op == "flatten":
        if not _is_int(a["start_dim"]) or not _is_int(a["end_dim"]):
            raise _bad(f"{where}: start_dim/end_dim must be integers")
        sd_, ed_ = a["start_dim"], a["end_dim"]
        if not (-8 <= sd_ < 8 and -8 <= ed_ < 8) or (sd_ >= 0 and ed_ >= 0 and sd_ > ed_) \
                or (sd_ < 0 and ed_ < 0 and sd_ > ed_):
            raise _bad(f"{where}: start_dim/end_dim must be within -8..7 with start_dim <= end_dim")
    elif op == "reshape":
        s = a["shape"]
        if not isinstance(s, list) or not s or len(s) > 8:
            raise _bad(f"{where}: shape must be a list of 1 to 8 entries")
        for e in s:
            if isinstance(e, dict):
                if set(e) != {"size_of", "dim"} or e["size_of"] not in known or not _is_int(e["dim"]):
                    raise _bad(f"{where}: a computed size must be {{'size_of': defined name, 'dim': int}}")
            elif not _is_int(e) or e < -1:
                raise _bad(f"{where}: shape entries must be integers >= -1")
        if sum(1 for e in s if e == -1) > 1:
            raise _bad(f"{where}: at most one -1 in shape")
    elif op in ("cat", "softmax"):
        if not _is_int(a["dim"]):
            raise _bad(f"{where}: dim must be an integer")
