"""Run a checked version-2 graph (deepcomp.graph) as an nn.Module.

Nothing from the file is evaluated: each node's callable comes from the op table
(deepcomp.graph.ops.OPS), and linear / conv2d nodes are the compressed runtime layers
the loader built. The node list is turned once into a *plan*: a flat list of steps
(callable, operand slots, result slot, slots to free), with symbolic sizes bound to
numbers, no names and no dispatch on op strings. A plan is made per binding of the
symbols (batch size, sequence length) and cached. A ReLU that is the only consumer of
a layer is fused into it. Version-1 graphs run through runtime/legacy_exec.py.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from deepcomp.errors import ModelError
from deepcomp.graph import dims as D
from deepcomp.graph.ops import DTYPES, FLOATS, INTS, OPS
from deepcomp.graph.validate import Checked
from deepcomp.runtime import kernels as K
from deepcomp.runtime.exec_plan import native_max_pool

_PLAN_CACHE = 8
_DIM_TYPES = ("dims", "dims-1", "dim+", "dim+-")


def _bind_attrs(op: str, a: dict, bind: dict) -> dict:
    spec = OPS[op].attrs
    out = dict(a)
    for k, typ in spec.items():
        t = typ.rstrip("?")
        v = a.get(k)
        if t not in _DIM_TYPES or v is None:
            continue
        if isinstance(v, list):
            out[k] = [d if d == -1 else D.resolve(d, bind) for d in v]
        else:
            out[k] = D.resolve(v, bind)
    return out


_LAYER_OPS = ("linear", "conv2d")


def _guarded(layer, key, direct, forward, shape, stale):
    fast = layer._fast
    f32 = torch.float32

    def run(x):
        if x.shape == shape and x.dtype is f32 and x.is_contiguous():
            if fast.get(key) is direct:
                return direct(x)
            stale()  # the layer was rebound: bind the steps again on the next call
        return forward(x)
    return run


class GraphModule(nn.Module):
    """An nn.Module that runs a checked graph: model(*inputs) or model(**named_inputs)."""

    def __init__(self, checked: Checked, layers: dict, tensors: dict) -> None:
        super().__init__()
        self.checked = checked
        self.input_names = [n for n, _, _ in checked.inputs]
        self.input_specs = checked.inputs
        self.symbols = checked.symbols
        order = list(layers)
        self.layers = nn.ModuleList([layers[k] for k in order])
        self._layer = dict(zip(order, self.layers))
        self._tensors = tensors  # file tensors the graph reads, dense, in their dtype
        self._plans: OrderedDict = OrderedDict()
        # deepcomp's native kernels for ops outside the runtime layers (max-pool); False
        # runs PyTorch's own for every op but linear / conv2d (set before the first call),
        # as benchmarks/bench_run.py does for its "PyTorch fp32" twin.
        self.native_ops = True
        self._bound: dict = {}  # (binding, threads) -> (plan steps, steps with bound layers)
        self._fuse_relu()

    def _fuse_relu(self) -> None:
        uses: dict[str, int] = {}
        for n in self.checked.nodes:
            for v in n.ins:
                if isinstance(v, str):
                    uses[v] = uses.get(v, 0) + 1
        for o in self.checked.outputs:
            uses[o] = uses.get(o, 0) + 1
        self._alias: dict[str, str] = {}
        self._skip: set[str] = set()
        for n in self.checked.nodes:
            if n.op != "relu":
                continue
            src = n.ins[0]
            layer = self._layer.get(src)
            if layer is not None and uses.get(src) == 1 and hasattr(layer, "relu") and not layer.relu:
                layer.relu = True
                self._alias[n.name] = src
                self._skip.add(n.name)

    # -- plans

    def _plan(self, bind: dict):
        key = tuple(sorted(bind.items()))
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = self._build(bind)
        self._plans[key] = plan
        if len(self._plans) > _PLAN_CACHE:
            self._plans.popitem(last=False)
        return plan

    def _build(self, bind: dict):
        ck = self.checked
        slot: dict[str, int] = {}
        template: list = []
        for name in self.input_names:
            slot[name] = len(template)
            template.append(None)
        steps = []
        for n in ck.nodes:
            if n.name in self._skip:
                slot[n.name] = slot[self._alias[n.name]]
                continue
            if n.op == "tensor":
                slot[n.name] = len(template)
                template.append(self._tensors[n.a["key"]])
                continue
            if n.op in ("linear", "conv2d"):
                fn = self._layer[n.name].forward  # skips nn.Module.__call__'s hook machinery
            elif n.op == "max_pool2d" and self.native_ops and \
                    (fn := native_max_pool(n.a["k"], n.a["s"], n.a["p"], n.a["d"], n.a["ceil"])) is not None:
                pass
            else:
                spec = OPS[n.op]
                a = _bind_attrs(n.op, n.a, bind)
                if spec.scalars:
                    consts = tuple((i, v) for i, v in enumerate(n.ins) if not isinstance(v, str))
                    fn = spec.make(a, consts)
                else:
                    fn = spec.make(a)
            ins = tuple(slot[v] for v in n.ins if isinstance(v, str))
            slot[n.name] = len(template)
            template.append(None)
            steps.append([fn, ins, slot[n.name], (), n.name, n.op])
        outs = tuple(slot[o] for o in ck.outputs)
        # Free each value after its last use: peak memory stays near the largest few
        # activations rather than their sum. Constants stay in the template.
        last: dict[int, int] = {}
        for i, st in enumerate(steps):
            for s in st[1]:
                last[s] = i
        keep = set(outs)
        for i, st in enumerate(steps):
            st[3] = tuple(s for s in set(st[1]) if last.get(s) == i and s not in keep
                          and template[s] is None)
        return template, [tuple(s) for s in steps], outs

    # -- inputs

    def _collect(self, args, kwargs) -> list:
        names = self.input_names
        if len(args) > len(names):
            raise ModelError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(args)}")
        got = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise ModelError(f"unknown input '{k}'; the model takes {', '.join(names)}")
            if k in got:
                raise ModelError(f"input '{k}' given twice")
            got[k] = v
        missing = [n for n in names if n not in got]
        if missing:
            raise ModelError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(names)}")
        return [got[n] for n in names]

    def check_inputs(self, xs: list):
        bind: dict[str, int] = {}
        out = []
        for x, (name, shape, dt) in zip(xs, self.input_specs):
            if not isinstance(x, torch.Tensor):
                raise ModelError(f"input '{name}' must be a tensor, got {type(x).__name__}")
            want = DTYPES[dt]
            if x.dtype != want:
                ok = ((dt in FLOATS and x.is_floating_point())
                      or (dt in INTS and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool)
                      or (dt == "bool" and x.dtype == torch.bool))
                if not ok:
                    raise ModelError(f"input '{name}' must be {dt}, got {str(x.dtype).replace('torch.', '')}")
                x = x.to(want)
            if x.dim() != len(shape):
                raise ModelError(f"input '{name}' has shape {list(x.shape)}; the model takes "
                                 f"{D.show(shape)}")
            for i, (d, g) in enumerate(zip(shape, x.shape)):
                g = int(g)
                if d is None:
                    if g < 1:
                        raise ModelError(f"input '{name}' dim {i} is empty")
                elif isinstance(d, int):
                    if g != d:
                        raise ModelError(f"input '{name}' has shape {list(x.shape)}; the model takes "
                                         f"{D.show(shape)}")
                else:
                    s = d[1][0]
                    lo, hi = self.symbols.get(s, (1, None))
                    if g < lo or (hi is not None and g > hi):
                        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                        raise ModelError(f"input '{name}' dim {i} ('{s}') is {g}; the model takes {rng}")
                    if bind.setdefault(s, g) != g:
                        raise ModelError(f"input '{name}' dim {i} ('{s}') is {g}, but another input "
                                         f"has '{s}' = {bind[s]}")
            out.append(x.contiguous())
        return out, bind

    # -- running

    def forward(self, *args, **kwargs):
        xs, bind = self.check_inputs(self._collect(args, kwargs))
        template, steps, outs = self._plan(bind)
        # After one run per binding and thread count, the layer steps call the path each
        # layer chose directly (see _bind_layers); the first run records their inputs.
        bkey = (tuple(sorted(bind.items())), K.get_num_threads())
        bound = self._bound.get(bkey)
        seen = None
        if bound is not None and bound[0] is steps:
            steps = bound[1]
        else:
            seen = {}
        vals = list(template)
        vals[:len(xs)] = xs
        i = -1
        try:
            for i, (fn, ins, out, dead, _name, _op) in enumerate(steps):
                if seen is not None and _op in _LAYER_OPS:
                    seen[i] = vals[ins[0]]
                vals[out] = fn(*[vals[s] for s in ins])
                for s in dead:
                    vals[s] = None
        except ModelError as e:
            raise ModelError(f"{e} (inputs {self._shapes(xs)})") from None
        except (RuntimeError, IndexError, ValueError, TypeError) as e:
            # The validator has checked everything shapes decide; what is left depends on
            # input values (an index outside a table, for instance).
            _, _, _, _, name, op = steps[i]
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelError(f"graph node '{name}' ({op}) failed on inputs {self._shapes(xs)}: {msg}") from None
        if seen is not None:
            self._bind_layers(bkey, steps, seen)
        st = self.checked.out
        if st is None:
            return vals[outs[0]]
        if st == "tuple":
            return tuple(vals[s] for s in outs)
        return {k: vals[s] for k, s in zip(st, outs)}

    def _bind_layers(self, bkey, steps, seen: dict) -> None:
        """Steps whose layers call their chosen path directly: forward() re-checks the
        input, builds its key and looks the path up on every call (a few microseconds a
        layer, a real share of a small model). A guard keeps it honest: the same shape,
        contiguous float32, and the layer still bound to that path (a policy change rebinds
        it), else forward() as before."""
        nt = bkey[1]
        out = list(steps)
        for i, x in seen.items():
            fn, ins, o, dead, name, op = steps[i]
            layer = self._layer[name]
            if not isinstance(x, torch.Tensor):
                continue
            key = (tuple(x.shape), nt)
            direct = layer._fast.get(key)
            if direct is not None:
                out[i] = (_guarded(layer, key, direct, fn, x.shape, self._bound.clear), ins, o, dead, name, op)
        if len(self._bound) >= _PLAN_CACHE:
            self._bound.pop(next(iter(self._bound)))
        self._bound[bkey] = (steps, out)

    def _shapes(self, xs) -> str:
        return ", ".join(f"{n} {list(x.shape)}" for n, x in zip(self.input_names, xs))
