"""Run a stored graph (deepcomp.graph's JSON node list) as an nn.Module.

The executor only dispatches on the op names of the allow-list to functions defined
here; nothing from the file is evaluated. Layers (linear / conv2d) are runtime modules
supplied by the loader. A ReLU that is the only consumer of a layer is fused into it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from deepcomp.errors import ModelError
from deepcomp.graph.legacy import validate
from deepcomp.runtime import kernels as K
from deepcomp.runtime.exec_plan import build_legacy_plan

_PLAN_CACHE = 8  # input shapes with a plan kept per model


def _max_pool(a):
    return lambda x: F.max_pool2d(x, a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                                  ceil_mode=a["ceil_mode"])


def _avg_pool(a):
    return lambda x: F.avg_pool2d(x, a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                                  a["count_include_pad"], a["divisor_override"])


def _adaptive(fn, a):
    size = tuple(a["output_size"])
    return lambda x: fn(x, size)


def _flatten(a):
    return lambda x: torch.flatten(x, a["start_dim"], a["end_dim"])


def _softmax(a):
    return lambda x: torch.softmax(x, a["dim"])


def _cat(a):
    return lambda *xs: torch.cat(xs, a["dim"])


_SIMPLE: dict[str, Callable] = {
    "relu": lambda a: torch.relu,
    "max_pool2d": _max_pool,
    "avg_pool2d": _avg_pool,
    "adaptive_avg_pool2d": lambda a: _adaptive(F.adaptive_avg_pool2d, a),
    "adaptive_max_pool2d": lambda a: _adaptive(F.adaptive_max_pool2d, a),
    "flatten": _flatten,
    "add": lambda a: torch.add,
    "cat": _cat,
    "softmax": _softmax,
}


class GraphModule(nn.Module):
    """An nn.Module that runs the node list of a stored graph."""

    def __init__(self, graph: dict, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        validate(graph)
        self.graph = graph
        self.input_name = graph["inputs"][0]
        self.input_shape = graph.get("input_shape")
        self.output_names = list(graph["outputs"])
        # ModuleDict keys cannot contain '.'; node names never do (graph.py replaces them).
        self.layers = nn.ModuleDict(layers)
        nodes = graph["nodes"]
        consumers: dict[str, int] = {}
        for n in nodes:
            for v in n["inputs"]:
                consumers[v] = consumers.get(v, 0) + 1
            for e in n["attrs"].get("shape", []) if n["op"] == "reshape" else []:
                if isinstance(e, dict):
                    consumers[e["size_of"]] = consumers.get(e["size_of"], 0) + 1
        for o in self.output_names:
            consumers[o] = consumers.get(o, 0) + 1
        alias: dict[str, str] = {}
        steps = []
        self._ops: dict[str, tuple] = {}  # step name -> (op, attrs), for exec_plan
        for n in nodes:
            name, op, a = n["name"], n["op"], n["attrs"]
            self._ops[name] = (op, a)
            ins = [alias.get(v, v) for v in n["inputs"]]
            if op == "relu" and ins[0] in self.layers and consumers.get(n["inputs"][0]) == 1 \
                    and hasattr(self.layers[ins[0]], "relu"):
                self.layers[ins[0]].relu = True
                alias[name] = ins[0]
                continue
            if op in ("linear", "conv2d"):
                if name not in self.layers:
                    raise ModelError(f"graph node '{name}' has no runtime layer")
                fn = self.layers[name]
            elif op == "reshape":
                fn = self._reshape_fn(a["shape"], alias)
            else:
                fn = _SIMPLE[op](a)
            # Runtime layers are called through forward(): nn.Module.__call__'s hook
            # machinery costs microseconds, a real share of a small layer's time.
            steps.append((name, fn.forward if isinstance(fn, nn.Module) else fn, ins))
        self.outputs = [alias.get(o, o) for o in self.output_names]
        # Free each intermediate after its last use: keeps peak memory near the largest
        # pair of activations rather than the sum of them all.
        last_use: dict[str, int] = {}
        for i, (name, fn, ins) in enumerate(steps):
            for v in ins:
                last_use[v] = i
        keep = set(self.outputs)
        self._plans: dict = {}  # (input shape, threads) -> exec_plan.Plan
        self.native_ops = True  # as runtime/executor.py's: False keeps PyTorch's max-pool
        self._steps = [
            (name, fn, ins, [v for v in set(ins) if last_use.get(v) == i and v not in keep],
             hasattr(fn, "_size_refs"))
            for i, (name, fn, ins) in enumerate(steps)
        ]

    @staticmethod
    def _reshape_fn(shape: list, alias: dict):
        refs = [(i, alias.get(e["size_of"], e["size_of"]), e["dim"])
                for i, e in enumerate(shape) if isinstance(e, dict)]
        if not refs:
            fixed = tuple(shape)
            return lambda x: x.reshape(fixed)
        # Sizes come from the shapes forward() records as values are computed, so the
        # value itself may already be freed.
        def fn(x, _shapes=None):
            dims = list(shape)
            for i, of, d in refs:
                dims[i] = _shapes[of][d]
            return x.reshape(dims)
        fn._size_refs = [r[1] for r in refs]
        return fn

    def check_input(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ModelError(f"input must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ModelError(f"input must be floating point (float32), got {x.dtype}")
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        want = self.input_shape
        if want is not None:
            got = list(x.shape)
            if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
                spec = "x".join("N" if w is None else str(w) for w in want)
                raise ModelError(f"input has shape {'x'.join(map(str, got))}; "
                                 f"the model takes {spec}")
        if x.dim() == 0 or x.shape[0] == 0:
            raise ModelError("input must have a batch dimension of at least one sample")
        return x.contiguous()

    def forward(self, x):
        x = self.check_input(x)
        try:
            return self._run(x)
        except ModelError as e:
            raise ModelError(f"{e} (model input shape {list(x.shape)})") from None
        except (RuntimeError, IndexError, ValueError, TypeError, KeyError) as e:
            # Version-1 graphs declare no full input shape, so some checks wait for the input.
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelError(f"the graph cannot run on an input of shape {list(x.shape)}: {msg}") from None

    def _run(self, x):
        # The first call on an input shape (and thread count) runs step by step, the layers
        # choosing their paths; later ones run the plan bound from it (runtime/exec_plan.py).
        key = (tuple(x.shape), K.get_num_threads())
        plan = self._plans.get(key)
        if plan is not None and plan.valid():
            if plan.steps is None or not plan.lock.acquire(blocking=False):
                # Nothing bound for this shape, or another thread is in the plan's buffers.
                return self._forward(x)
            try:
                outs = plan.run(x)
            finally:
                plan.lock.release()
            return outs[0] if len(outs) == 1 else tuple(outs)
        if plan is not None:
            # The layers chose anew (a policy change): every plan holds the forms they used,
            # which may be gone from the layers now; drop them all, rebuild on use.
            self._plans.clear()
        trace: dict = {}
        out = self._forward(x, trace)
        if key not in self._plans and len(self._plans) >= _PLAN_CACHE:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = build_legacy_plan(self, trace)
        return out

    def _forward(self, x, trace: dict | None = None):
        env = {self.input_name: x}
        shapes = {self.input_name: x.shape}
        if trace is not None:  # shapes and layouts only: the values are freed as usual
            trace[self.input_name] = (tuple(x.shape), x.is_contiguous())
        for name, fn, ins, dead, needs_shapes in self._steps:
            args = [env[v] for v in ins]
            if needs_shapes:
                out = fn(*args, _shapes=shapes)
            else:
                out = fn(*args)
            env[name] = out
            shapes[name] = out.shape
            if trace is not None:
                trace[name] = (tuple(out.shape), isinstance(out, torch.Tensor) and out.is_contiguous())
            for v in dead:
                del env[v]
        outs = [env[o] for o in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)
