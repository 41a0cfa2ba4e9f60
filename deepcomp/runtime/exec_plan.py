"""Execution plans: a stored graph's steps bound once per input shape, for small models.

A model like LeNet-5 does a few thousand multiply-adds per layer at batch 1, so the
Python around each kernel (dict lookups, argument checks, tensor allocation, NumPy views,
PyTorch's own pooling) costs as much as the kernels. After a graph has run once on an
input shape (the runtime layers have then measured and chosen their paths), the executor
asks for a plan for that shape and thread count:

- each runtime layer whose chosen path is a native kernel (`sparse` linear, `sparsekxk`
  convolution) becomes one direct call into C++ with every argument bound beforehand;
- a max-pool that is the only consumer of such a convolution is fused into its epilogue
  (conv + bias + ReLU + pool in one pass, one call); other max-pools run the native
  kernel (PyTorch's costs 10-25 us at LeNet's sizes, and far more at batch 16);
- outputs of those steps go to buffers allocated once (unless the plan's buffers would
  exceed PLAN_BUFFER_BYTES: then each call allocates, which is noise next to the
  arithmetic of a model that big), and flatten / reshape of a buffer is a view made once;
- every other step (other paths, other ops) calls the same function the executor calls.

The plan is checked on every call against the layers' current choices (a policy change
or 'compact' handing a layer over to int8 rebinds them) and rebuilt when they moved.
Buffers are reused across calls, so a plan runs one call at a time: a call that finds it
busy (another thread inside the same model) runs the ordinary, allocating path. The
model's outputs are never a plan buffer: they are copied out.
"""
from __future__ import annotations

import threading

import torch

from deepcomp.runtime import kernels as K

# Above this many bytes of activation buffers a plan allocates per call instead.
PLAN_BUFFER_BYTES = 16 << 20


def _pool_tuple(a: dict):
    """The native pool's (kh, kw, sh, sw, ph, pw, ceil_mode), or None where it does not
    apply (dilation, padding over half the kernel: PyTorch's own then runs)."""
    k, s, p, d = a["kernel_size"], a["stride"], a["padding"], a["dilation"]
    if list(d) != [1, 1] or 2 * p[0] > k[0] or 2 * p[1] > k[1]:
        return None
    return (int(k[0]), int(k[1]), int(s[0]), int(s[1]), int(p[0]), int(p[1]), bool(a["ceil_mode"]))


def native_max_pool(k, s, p, d, ceil):
    """x -> max_pool2d(x) on the native kernel for float32 input (PyTorch's for any other
    dtype), or None where the kernel does not apply (dilation, padding over half the
    kernel). PyTorch's CPU max-pool takes a branch per element: 10.6 ms of ResNet-18's
    stem pool at batch 1 on the 2-vCPU VM, against 0.6 ms here."""
    if not K.native_available() or list(d) != [1, 1] or 2 * p[0] > k[0] or 2 * p[1] > k[1]:
        return None
    pool = (int(k[0]), int(k[1]), int(s[0]), int(s[1]), int(p[0]), int(p[1]), bool(ceil))
    C = K._ops._C
    import torch.nn.functional as F

    def size(i, kk, ss, pp):
        span = i + 2 * pp - kk + (ss - 1 if ceil else 0)
        o = span // ss + 1 if span >= 0 else 0
        return o - 1 if ceil and o > 0 and (o - 1) * ss >= i + pp else o

    def run(x):
        if x.dtype is not torch.float32 or x.dim() != 4 or x.requires_grad:
            return F.max_pool2d(x, pool[:2], pool[2:4], pool[4:6], 1, ceil_mode=pool[6])
        n, c, h, w = x.shape
        oh, ow = size(h, pool[0], pool[2], pool[4]), size(w, pool[1], pool[3], pool[5])
        if oh < 1 or ow < 1 or n * c == 0:  # PyTorch's own error / empty result
            return F.max_pool2d(x, pool[:2], pool[2:4], pool[4:6], 1, ceil_mode=pool[6])
        out = torch.empty((n, c, oh, ow), dtype=torch.float32)
        C.max_pool2d(x.contiguous().numpy(), pool, out.numpy())
        return out
    return run


def _native_layer(layer, lkey):
    """('kxk', state) / ('spmm', state) when the layer's chosen path for lkey is one the
    plan calls directly, else None."""
    from deepcomp.runtime.layers import RuntimeConv2d, RuntimeLinear

    if not K.native_available():
        return None
    path = layer.used_paths.get(lkey)
    st = layer._prepared.get(path) if path is not None else None
    if not (isinstance(st, tuple) and st and st[0] == "packed"):
        return None
    if isinstance(layer, RuntimeConv2d) and path == "sparsekxk":
        return ("kxk", st)
    if isinstance(layer, RuntimeLinear) and path == "sparse" and st[2] is not None and len(lkey[0]) == 2:
        return ("spmm", st)
    return None


class Plan:
    """The bound steps of one graph for one input shape and thread count (steps None: no
    step gains from binding, run the graph step by step while the guards hold)."""

    def __init__(self, steps, nslots: int, outs: list, guards: list, persistent: bool) -> None:
        self.steps = steps
        self.nslots = nslots
        self.outs = outs          # [(slot, copy?)]
        self.guards = guards      # [(layer, key, bound fn the layer had)]
        self.persistent = persistent
        self.lock = threading.Lock()

    def valid(self) -> bool:
        for layer, key, fn in self.guards:
            if layer._fast.get(key) is not fn:
                return False
        return True

    def run(self, x: torch.Tensor):
        vals = [None] * self.nslots
        vals[0] = x
        for f in self.steps:
            f(vals)
        return [vals[s].clone() if copy else vals[s] for s, copy in self.outs]


def build_legacy_plan(gm, trace: dict) -> Plan:
    """A plan for runtime/legacy_exec.GraphModule `gm` from one traced run: trace maps each
    value name (input included) to (shape, contiguous) as it was."""
    C = K._ops._C if K.native_available() else None
    threads = K.get_num_threads()
    steps_in = gm._steps
    ops = gm._ops  # name -> (op, attrs)
    consumers: dict[str, int] = {}
    for _name, _fn, ins, _dead, _ns in steps_in:
        for v in ins:
            consumers[v] = consumers.get(v, 0) + 1
    for o in gm.outputs:
        consumers[o] = consumers.get(o, 0) + 1

    slot = {gm.input_name: 0}
    nslots = 1
    # slot -> (tensor, ndarray) for values that live in a buffer made once (or None)
    fixed: dict[int, tuple] = {}
    planned_bytes = 0
    pending = []  # (kind, data) per step, bound below once the buffer decision is made
    guards = []
    fused_into: dict[str, str] = {}  # pool node name -> conv name whose step writes it
    gains = False

    def new_slot(name):
        nonlocal nslots
        slot[name] = nslots
        nslots += 1
        return slot[name]

    for i, (name, fn, ins, dead, needs_shapes) in enumerate(steps_in):
        if name in fused_into:
            continue
        op, a = ops[name]
        layer = gm.layers[name] if name in gm.layers else None
        out_shape = trace[name][0]
        if layer is not None:
            lkey = (trace[ins[0]][0], threads)
            nat = _native_layer(layer, lkey)
            bound = layer._fast.get(lkey)
            if bound is None:
                # Its forward() reshapes the input first (a linear layer on N-D input):
                # called as the executor calls it, choosing for itself.
                pending.append(("generic", (fn, needs_shapes, [slot[v] for v in ins], new_slot(name), ins)))
                continue
            guards.append((layer, lkey, bound))
            if nat is not None and C is not None:
                kind, st = nat
                pool, out_name = None, name
                if kind == "kxk" and consumers.get(name) == 1 and name not in gm.outputs \
                        and getattr(gm, "native_ops", True):
                    nxt = [s for s in steps_in if s[2] == [name]]
                    if len(nxt) == 1 and ops[nxt[0][0]][0] == "max_pool2d":
                        pool = _pool_tuple(ops[nxt[0][0]][1])
                        if pool is not None:
                            out_name = nxt[0][0]
                            fused_into[out_name] = name
                shape = trace[out_name][0]
                planned_bytes += 4 * _numel(shape)
                pending.append(("native", (kind, layer, st, slot[ins[0]], new_slot(out_name), shape, pool)))
                gains = True
                continue
            pending.append(("bound", (bound, slot[ins[0]], new_slot(name))))
            continue
        if op == "max_pool2d" and C is not None and getattr(gm, "native_ops", True):
            pool = _pool_tuple(a)
            x_shape, x_contiguous = trace[ins[0]]
            if pool is not None and len(x_shape) == 4 and x_contiguous:
                planned_bytes += 4 * _numel(out_shape)
                pending.append(("pool", (pool, slot[ins[0]], new_slot(name), out_shape)))
                gains = True
                continue
        if op in ("flatten", "reshape"):
            pending.append(("view", (fn, needs_shapes, [slot[v] for v in ins], new_slot(name),
                                     out_shape)))
            continue
        pending.append(("generic", (fn, needs_shapes, [slot[v] for v in ins], new_slot(name), ins)))
    if not gains:
        # Nothing to bind: the step-by-step run stays, until the layers choose anew.
        return Plan(None, nslots, [], guards, False)
    persistent = planned_bytes <= PLAN_BUFFER_BYTES
    shapes_of = {n: torch.Size(t[0]) for n, t in trace.items()}

    def buffer(s, shape):
        t = torch.empty(shape, dtype=torch.float32)
        fixed[s] = (t, t.numpy())
        return fixed[s]

    steps = []
    for kind, d in pending:
        if kind == "native":
            steps.append(_native_step(C, d, fixed, persistent, buffer))
        elif kind == "pool":
            steps.append(_pool_step(C, d, fixed, persistent, buffer))
        elif kind == "bound":
            bound, si, so = d
            steps.append(_bound_step(bound, si, so))
        elif kind == "view":
            fn, needs_shapes, sins, so, shape = d
            if persistent and sins[0] in fixed:
                t = fixed[sins[0]][0].reshape(shape)
                fixed[so] = (t, t.numpy())
                steps.append(_const_step(so, t))
            else:
                steps.append(_generic_step(fn, needs_shapes, sins, so, shapes_of))
        else:
            fn, needs_shapes, sins, so, _ins = d
            steps.append(_generic_step(fn, needs_shapes, sins, so, shapes_of))
    # Outputs that are (views of) plan buffers are copied out: the caller may keep them.
    outs = [(slot[o], slot[o] in fixed) for o in gm.outputs]
    return Plan(steps, nslots, outs, guards, persistent)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _np_in(fixed, si):
    """The input's ndarray if it lives in a fixed buffer, else None (taken per call)."""
    return fixed[si][1] if si in fixed else None


def _native_step(C, d, fixed, persistent, buffer):
    kind, layer, st, si, so, shape, pool = d
    w = st[1]
    bias = layer._bias_np
    xin = _np_in(fixed, si)
    if persistent:
        out_t, out_np = buffer(so, shape)
    if kind == "kxk":
        o, _, kh, kw = layer.form.shape
        (sh, sw), (ph, pw) = layer.stride, layer.padding
        act = 1 if layer.relu else 0
        head = (w.indptr, w.indices, w.values, w.codes, w.codebook, w.n_in, kh, kw, sh, sw, ph, pw, bias, act)
        fn = C.conv_sparse_kxk

        def call(x_np, out_np):
            fn(x_np, *head, out_np, pool)
    else:
        blocks = getattr(w, "blocks", None)
        head = (w.indptr, w.indices, w.values, w.codes, w.codebook, bias, bool(layer.relu))
        tail = () if blocks is None else (blocks,)
        fn = C.spmm

        def call(x_np, out_np):
            fn(x_np, *head, out_np, *tail)
    if persistent and xin is not None:
        def step(vals):
            call(xin, out_np)
            vals[so] = out_t
    elif persistent:
        def step(vals):
            call(vals[si].contiguous().numpy(), out_np)
            vals[so] = out_t
    else:
        def step(vals):
            t = torch.empty(shape, dtype=torch.float32)
            call(vals[si].contiguous().numpy(), t.numpy())
            vals[so] = t
    return step


def _pool_step(C, d, fixed, persistent, buffer):
    pool, si, so, shape = d
    fn = C.max_pool2d
    xin = _np_in(fixed, si)
    if persistent:
        out_t, out_np = buffer(so, shape)
        if xin is not None:
            def step(vals):
                fn(xin, pool, out_np)
                vals[so] = out_t
        else:
            def step(vals):
                fn(vals[si].contiguous().numpy(), pool, out_np)
                vals[so] = out_t
        return step

    def step(vals):
        t = torch.empty(shape, dtype=torch.float32)
        fn(vals[si].contiguous().numpy(), pool, t.numpy())
        vals[so] = t
    return step


def _bound_step(bound, si, so):
    # The layer's own bound path (the function forward() would end in), fed a contiguous
    # float32 input of the shape it chose for: what forward()'s checks would pass through.
    def step(vals):
        vals[so] = bound(vals[si].contiguous())
    return step


def _const_step(so, t):
    def step(vals):
        vals[so] = t
    return step


def _generic_step(fn, needs_shapes, sins, so, shapes_of):
    if needs_shapes:
        def step(vals):
            vals[so] = fn(*[vals[s] for s in sins], _shapes=shapes_of)
    elif len(sins) == 1:
        s0 = sins[0]

        def step(vals):
            vals[so] = fn(vals[s0])
    else:
        def step(vals):
            vals[so] = fn(*[vals[s] for s in sins])
    return step
