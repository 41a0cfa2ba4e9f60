"""Compressed Linear and Conv2d that run on the file's form, with a measured path choice.

Each layer can take up to four paths: `sparse` (CSR + codebook kernels), `int8`
(per-channel int8 GEMM; for convolutions the direct int8 kernel, no im2col), `dense` (PyTorch on a decoded fp32 weight kept resident) and
`decode` (the same, decoding the weight afresh on every call and dropping it after:
for convolutions, whose arithmetic dwarfs the decode, dense speed at compressed
memory). A linear layer whose weight is dense codes into a codebook also has `lut`
(deepcomp.ops.lut_gemm: the codes decoded tile by tile inside the kernel, exact fp32,
nothing but the file's form resident). Which is fastest depends on the layer's shape and density, the batch size and the machine, so the layer
measures instead of guessing: the first time it sees an input shape (for a thread
count) it times each candidate on that very input and remembers the winner. Forms that
no remembered choice uses are then freed again, so memory follows the choices.

Policies (set_policy): 'auto' (fastest measured of all; int8 changes outputs by
about 1% of their scale), 'exact' (fastest of the fp32 paths: sparse, decode and dense), 'compact' (within issue 14's memory bar: a layer's
resident weight at most 1/4 of its dense fp32 bytes plus per-channel scales, codebook
and bias; see below), or a fixed 'sparse' / 'int8' / 'decode' / 'dense'. (`lut` counts as
an fp32 path and a compact one, and can be fixed too.)

'compact' and int8: the paths that keep nothing but the file's form (sparse, decode, lut,
depthwise, sparse1x1, sparsekxk) are always allowed; int8 is allowed when the layer was loaded from
a .dcz file and is chosen only when it measured fastest AND its packed form (int8 +
per-channel scales and row sums) is at most 1/4 of the dense fp32 bytes plus those
per-channel arrays (kernel-layout padding counts: a conv with 3 input channels, or a
linear layer with 1000 outputs, does not fit and stays on an fp32 path). A layer that
takes int8 under 'compact' hands its whole weight over to it: every input shape, earlier
and later, runs int8, and the file form (CSR / codes) is dropped, so that only the int8
form stays resident. It is re-read from the .dcz file (and checked against a digest of
what was dropped) only when the policy changes. Measuring a later input shape would need
the file form again; int8's lead comes from its arithmetic, which the batch size does
not change (convolutions are timed on a batch-independent slice anyway), so later
shapes do not re-measure.

Stated error of int8 (weights rounded per output channel to 8 bits, activations per
row / per image to 7 bits): each layer's output differs from the decoded dense layer's
by at most 3 % of that output's largest magnitude (typically about 1 %); end to end,
LeNet-5's logits by at most 3 % of the largest logit (measured 1.2-1.7 %) and
ResNet-18's (random weights, 70 % sparse, 5 bits) by 3.4-4.3 %.
tests/test_runtime_compact.py asserts the per-layer and the LeNet-5 bound.
'exact' never takes int8: it keeps an fp32 path that matches the decoded model.

Convolutions add three direct paths where they apply: `depthwise` (groups = channels,
one filter each), `sparse1x1` (a sparse 1x1 weight as a matmul over channels on the
NCHW input) and `sparsekxk` (any other sparse conv with groups 1, straight on NCHW:
no im2col, no transpose; wins on small images such as LeNet-5's); 'auto', 'exact' and
'compact' offer them.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deepcomp.errors import DeepcompError, ModelError
from deepcomp.runtime import kernels as K
from deepcomp.runtime.weights import SPARSE_DENSITY, WeightForm

POLICIES = ("auto", "exact", "compact", "sparse", "int8", "decode", "dense", "lut")
PATHS = ("sparse", "int8", "decode", "dense", "lut")

# Measuring: every candidate runs once to warm up, then the candidates take turns for a
# few rounds (turns, so that a burst of load from elsewhere hits all of them alike) and
# each keeps its fastest run. Fewer rounds when runs are slow: noise matters less there
# than the time spent measuring.
_ROUNDS_FAST, _ROUNDS_MID, _ROUNDS_SLOW = 7, 3, 1
_FAST_S, _SLOW_S = 0.002, 0.05
# Measured times are multiplied by these before the fastest is picked: int8 rounds the
# weights and a resident dense copy costs memory, so near-ties go to the paths that
# keep only the file's form.
_HANDICAP = {"sparse": 1.0, "decode": 1.0, "dense": 1.05, "int8": 1.10, "lut": 1.0}
_HOPELESS = 3.0
# Convolutions are timed on just enough samples for this many output positions: their
# cost grows linearly with the batch beyond that, so the choice carries over to bigger
# batches of the same image size, and VGG at batch 64 is not run four times over.
_CONV_CALIBRATION_ROWS = 4096
# Above this many dense fp32 bytes a layer compares its candidates one at a time.
_BIG_LAYER_BYTES = 64 << 20
# Whether 'compact' may pick int8: its resident form (int8 + per-channel scales) is about
# 1/4 of dense fp32, within issue 14's memory bar, but it changes outputs by about 1 % of
# their scale. The lead decides; this is the one switch.
COMPACT_ALLOWS_INT8 = True
# Bytes per output channel int8 may add to the 1/4 bar under 'compact': its scale (fp32)
# and row sum (int32), which the bar counts as it counts codebooks and biases.
_INT8_PER_CHANNEL = 8


class _RuntimeLayer(nn.Module):
    def __init__(self, name: str, form: WeightForm, bias: torch.Tensor | None, relu: bool) -> None:
        super().__init__()
        self.layer_name = name
        self.form = form
        self.bias = None if bias is None else bias.detach().to(torch.float32).contiguous()
        # The native ops take NumPy directly; converting the tensor on every call costs
        # more than a small layer's arithmetic. Same memory as self.bias.
        self._bias_np = None if self.bias is None else self.bias.numpy()
        self.relu = relu
        self.policy = "auto"
        self._prepared: dict[str, object] = {}
        self._choice: dict[tuple, str] = {}
        self._fast: dict[tuple, object] = {}  # (input shape, threads) -> bound path
        self.used_paths: dict[tuple, str] = {}  # (input shape, threads) -> path it runs
        self.timings: dict[tuple, dict[str, float]] = {}
        # Where the file form can be re-read from once 'compact' has handed it over to
        # int8: (a FileSource, tensor name), set by the loader; None for layers built
        # from memory, which then never drop their file form.
        self.source = None
        self._dropped = None  # (file form's digest) while the int8 form stands in for it

    # -- which paths exist

    def candidates(self) -> list[str]:
        out = []
        sparse_ok = self.form.is_sparse or (self.form.kind == "raw" and self._raw_density() <= SPARSE_DENSITY)
        if sparse_ok and self._sparse_shape_ok():
            out.append("sparse")
        if K.int8_supported(self.form) and self._int8_shape_ok():
            out.append("int8")
        if self.form.kind != "raw":
            out.append("decode")
        out.append("dense")
        if K.lut_supported(self.form) and self._lut_shape_ok():
            out.append("lut")
        return out

    def _raw_density(self) -> float:
        if not hasattr(self, "_raw_density_cache"):
            self._raw_density_cache = self.form.density()
        return self._raw_density_cache

    def _sparse_shape_ok(self) -> bool:
        return True

    def _int8_shape_ok(self) -> bool:
        return True

    def _lut_shape_ok(self) -> bool:
        return True

    def _allowed(self) -> list[str]:
        cands = self.candidates()
        p = self.policy
        if p == "auto":
            return cands
        if p == "exact":
            return [c for c in cands if c != "int8"]
        if p == "compact":
            # Only paths that keep nothing but the file form resident (a raw tensor's
            # dense view is the file form itself).
            return [c for c in cands if c in ("sparse", "decode", "lut") or
                    (c == "dense" and self.form.kind == "raw") or
                    (c == "int8" and COMPACT_ALLOWS_INT8 and self.source is not None)]
        if p in cands:
            return [p]
        if p == "int8" and not K.native_available():
            raise ModelError("the int8 path needs deepcomp's native kernels (deepcomp.ops), "
                             "which this build lacks")
        return ["dense"]

    # -- preparing forms

    def _prepare(self, path: str):
        st = self._prepared.get(path)
        if st is None:
            if path == "dense":
                st = self.form.dense()
            elif path == "decode":
                st = K.decoder(self.form)  # called per run: nothing extra stays resident
            elif path == "sparse":
                st = K.sparse_prepare(self.form)
            elif path == "lut":
                st = K.lut_prepare(self.form)
            else:
                st = self._int8_prepare()
            self._prepared[path] = st
        return st

    def _int8_prepare(self):
        return K.int8_prepare(self.form)

    def _release_unused(self) -> None:
        keep = set(self._choice.values())
        for p in list(self._prepared):
            if p not in keep:
                del self._prepared[p]

    def resident_bytes(self) -> int:
        """Bytes of weight data this layer holds now (file form + prepared forms).

        Prepared forms often share the file form's arrays (a packed CSR view, the dense
        view of a raw tensor); each buffer is counted once.
        """
        arrays = [a for a in (self.form.codebook, self.form.codes, self.form.indptr,
                              self.form.indices, self.form.values, self.form.array) if a is not None]
        if self.bias is not None:
            arrays.append(self.bias)
        for st in self._prepared.values():
            arrays.extend(K.state_arrays(st))
        return _count_unique(arrays)

    # -- choosing

    def _calibration_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input the paths are timed on (and the choice is keyed by)."""
        return x

    def choose(self, x: torch.Tensor) -> str:
        x = self._calibration_input(x)
        key = (tuple(x.shape), K.get_num_threads(), self.policy)
        path = self._choice.get(key)
        if path is not None:
            self._fast.setdefault(key[:2], self._bind(path))
            return path
        if self._dropped is not None:
            # The file form was handed over to int8 (see the module docstring).
            self._choice[key] = "int8"
            self._fast[key[:2]] = self._bind("int8")
            return "int8"
        allowed = self._allowed()
        if len(allowed) == 1:
            path = allowed[0]
            self._prepare(path)
        else:
            with torch.no_grad():
                if self.form.rows * self.form.cols * 4 <= _BIG_LAYER_BYTES:
                    runs = {p: (lambda p=p, st=self._prepare(p): self._run(p, st, x)) for p in allowed}
                    times = _measure(runs)
                else:
                    times = self._measure_one_by_one(allowed, x)
            self.timings[key] = times
            ranked = sorted(times, key=lambda p: times[p] * _HANDICAP[p])
            if self.policy == "compact" and ranked[0] == "int8" and len(ranked) > 1 \
                    and not self._int8_fits():
                ranked.remove("int8")
            path = ranked[0]
        self._choice[key] = path
        self._fast[key[:2]] = self._bind(path)
        if self.policy == "compact" and path == "int8":
            self._hand_over_to_int8()
        self._release_unused()
        return path

    # -- 'compact' within the memory bar

    def dense_bytes(self) -> int:
        return self.form.rows * self.form.cols * 4

    def _int8_fits(self) -> bool:
        """Whether the int8 form, as packed, is within 1/4 of dense fp32 plus its
        per-channel arrays (the bar 'compact' keeps)."""
        st = self._prepared.get("int8")
        if st is None:
            return False
        extra = sum(a.nbytes for a in K.state_arrays(st)) - self.form.rows * self.form.cols
        return extra <= _INT8_PER_CHANNEL * self.form.rows

    def _hand_over_to_int8(self) -> None:
        """Every input shape runs int8 from now on; the file form is dropped (a digest
        kept) and re-read from the file when the policy changes."""
        for k in self._choice:
            self._choice[k] = "int8"
        for k in self._fast:
            self._fast[k] = self._bind("int8")
        for k in self.used_paths:
            self.used_paths[k] = "int8"
        f = self.form
        self._dropped = (f.kind, form_digest(f))
        self.form = WeightForm(f.name, f.shape)
        if hasattr(self, "_raw_density_cache"):
            del self._raw_density_cache

    def file_form_dropped(self) -> bool:
        return self._dropped is not None

    def _restore(self, form: WeightForm | None = None) -> None:
        if self._dropped is None:
            return
        if form is None:
            form = self.source[0].forms([self.source[1]])[self.source[1]]
        _check_restored(self.layer_name, self.source, form, self._dropped)
        self.form, self._dropped = form, None

    def _measure_one_by_one(self, allowed: list, x) -> dict:
        """For big layers: one candidate form at a time, so that a dense and an int8 copy
        of a 400 MB weight never sit in memory together just to be compared."""
        times: dict[str, float] = {}
        keep = set(self._choice.values())
        for p in allowed:
            st = self._prepare(p)
            times[p] = _measure({p: lambda: self._run(p, st, x)})[p]
            best = min(times, key=lambda q: times[q] * _HANDICAP[q])
            for q in list(self._prepared):
                if q != best and q not in keep:
                    del self._prepared[q]
        return times

    def _bind(self, path: str):
        st, run = self._prepared[path], self._run
        return lambda x: run(path, st, x)

    def chosen(self) -> dict:
        """The remembered choices: {(input shape, threads, policy): path}."""
        return dict(self._choice)

    def set_policy(self, policy: str) -> None:
        if policy not in POLICIES:
            raise ModelError(f"unknown runtime policy {policy!r}; choose one of {', '.join(POLICIES)}")
        self._restore()
        self.policy = policy
        self._choice.clear()
        self._fast.clear()
        self.used_paths.clear()
        self.timings.clear()
        self._prepared.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        key = (tuple(x.shape), K.get_num_threads())
        fn = self._fast.get(key)
        if fn is None:
            path = self.choose(x)
            self.used_paths[key] = path
            fn = self._fast[key] = self._bind(path)
        return fn(x)


def form_digest(form: WeightForm) -> int:
    """CRC-32 over a form's arrays: enough to tell that a re-read file form is the one
    that was dropped (the file could have been replaced since)."""
    import zlib

    crc = zlib.crc32(repr((form.kind, tuple(form.shape))).encode())
    for a in (form.codebook, form.codes, form.indptr, form.indices, form.values, form.array):
        if a is not None:
            crc = zlib.crc32(memoryview(a.reshape(-1).view(np.uint8)), crc)
    return crc


def _check_restored(name: str, source, form: WeightForm, dropped) -> None:
    if (form.kind, form_digest(form)) != dropped:
        where = source[0].path if source is not None else "its file"
        raise ModelError(f"layer '{name}': {where} no longer holds the weight this model was loaded "
                         "from (the file changed on disk); load the file again")


class FileSource:
    """Re-reads weight forms from the .dcz a model was loaded from (for layers that
    dropped theirs; see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def forms(self, names) -> dict:
        from deepcomp.codec import open_dcz

        try:
            f = open_dcz(self.path)
            return {n: WeightForm.from_stored(n, f.compressed(n)) for n in names}
        except (DeepcompError, KeyError) as e:
            raise ModelError(f"cannot re-read the weights from {self.path} ({e}); the model "
                             "dropped its file form for int8 under policy 'compact' and needs "
                             "the file to change policy: load the file again") from None


def _count_unique(arrays) -> int:
    seen, total = set(), 0
    for a in arrays:
        if isinstance(a, torch.Tensor):
            key, n = a.data_ptr(), a.numel() * a.element_size()
        else:
            key, n = a.__array_interface__["data"][0], a.nbytes
        if n and key not in seen:
            seen.add(key)
            total += n
    return total


def _measure(runs: dict) -> dict:
    """Fastest seconds per call of each zero-argument callable, measured in turns."""
    best = {}
    for p, f in runs.items():
        t0 = time.perf_counter()
        f()
        best[p] = time.perf_counter() - t0
    # A candidate far behind on its first run is not timed again: it cannot win, and
    # a slow path on a big input costs seconds per run.
    lead = min(best.values())
    active = {p: f for p, f in runs.items() if best[p] <= _HOPELESS * lead}
    slowest = max(best[p] for p in active)
    rounds = _ROUNDS_FAST if slowest < _FAST_S else _ROUNDS_MID if slowest < _SLOW_S else _ROUNDS_SLOW
    for _ in range(rounds):
        for p, f in active.items():
            t0 = time.perf_counter()
            f()
            best[p] = min(best[p], time.perf_counter() - t0)
    return best


class RuntimeLinear(_RuntimeLayer):
    """y = x W^T + b on the compressed weight; input [..., in_features]."""

    def __init__(self, name: str, form: WeightForm, bias=None, relu: bool = False) -> None:
        if len(form.shape) != 2:
            raise ModelError(f"layer '{name}': a linear weight must be 2-D, got {list(form.shape)}")
        super().__init__(name, form, bias, relu)
        self.out_features, self.in_features = form.shape

    def _check(self, x):
        if (isinstance(x, torch.Tensor) and x.dtype is torch.float32 and x.dim() == 2
                and x.shape[1] == self.in_features and x.is_contiguous()):
            return x  # the common case, checked cheaply: small layers are overhead-bound
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ModelError(f"layer '{self.layer_name}' expects a float tensor")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ModelError(f"layer '{self.layer_name}' expects {self.in_features} input features, "
                             f"got an input of shape {list(x.shape)}")
        if x.dim() != 2:
            x = x.reshape(-1, self.in_features)
        if x.dtype != torch.float32:
            x = x.float()
        return x.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() != 2:
            lead = x.shape[:-1]
            return super().forward(x).reshape(*lead, self.out_features)
        return super().forward(x)

    def _run(self, path, st, x):
        if path == "dense" or path == "decode":
            y = F.linear(x, st if path == "dense" else st(), self.bias)
            return torch.relu_(y) if self.relu else y
        if path == "sparse":
            return K.sparse_linear(x, st, self._bias_np if st[0] == "packed" else self.bias, self.relu)
        if path == "lut":
            return K.lut_linear(x, st, self._bias_np, self.relu)
        return K.int8_linear(x, st, self._bias_np, self.relu)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"form={self.form.kind}, relu={self.relu}, policy={self.policy}")


class RuntimeConv2d(_RuntimeLayer):
    """2-D convolution on the compressed weight; input N x C x H x W."""

    def __init__(self, name: str, form: WeightForm, bias=None, stride=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups: int = 1, relu: bool = False) -> None:
        if len(form.shape) != 4:
            raise ModelError(f"layer '{name}': a conv2d weight must be 4-D, got {list(form.shape)}")
        super().__init__(name, form, bias, relu)
        self.out_channels = form.shape[0]
        self.in_channels = form.shape[1] * groups
        self.kernel_size = tuple(form.shape[2:])
        self.stride, self.padding = tuple(stride), tuple(padding)
        self.dilation, self.groups = tuple(dilation), int(groups)

    def _calibration_input(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        oh = (x.shape[2] + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (x.shape[3] + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        k = max(1, -(-_CONV_CALIBRATION_ROWS // max(1, oh * ow)))
        return x[:k] if x.shape[0] > k else x

    def _plain(self) -> bool:
        return self.groups == 1 and self.dilation == (1, 1)

    def _sparse_shape_ok(self) -> bool:
        return self._plain()

    def _int8_shape_ok(self) -> bool:
        return self._plain()

    def _lut_shape_ok(self) -> bool:
        return False  # no conv over dense codes yet: convolutions keep their other paths

    def _int8_prepare(self):
        # The direct int8 kernel (no im2col); _int8_shape_ok admits only what it runs.
        return K.int8_conv_prepare(self.form)

    def _check(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ModelError(f"layer '{self.layer_name}' expects a float tensor")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelError(f"layer '{self.layer_name}' expects N x {self.in_channels} x H x W input, "
                             f"got shape {list(x.shape)}")
        kh, kw = self.kernel_size
        if (x.shape[2] + 2 * self.padding[0] < self.dilation[0] * (kh - 1) + 1
                or x.shape[3] + 2 * self.padding[1] < self.dilation[1] * (kw - 1) + 1):
            raise ModelError(f"layer '{self.layer_name}': input {list(x.shape)} is smaller than "
                             f"its {kh}x{kw} kernel")
        if x.dtype != torch.float32:
            x = x.float()
        return x.contiguous()

    def _run(self, path, st, x):
        if path in _CONVSP_PATHS:
            return self._run_convsp(path, st, x)
        if path == "dense" or path == "decode":
            w = st if path == "dense" else st()
            y = F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return torch.relu_(y) if self.relu else y
        if path == "sparse":
            bias = self._bias_np if st[0] == "packed" else self.bias
            return K.sparse_conv(x, st, self.form, bias, self.stride, self.padding, self.relu)
        if st[0] == "conv":
            return K.int8_conv_direct(x, st, self._bias_np, self.stride, self.padding, self.relu)
        return K.int8_conv(x, st, self.form, self._bias_np, self.stride, self.padding, self.relu)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, form={self.form.kind}, "
                f"relu={self.relu}, policy={self.policy}")

    # -- depthwise and sparse 1x1 paths: direct NCHW kernels without im2col. Both keep
    # only the file form resident (the depthwise weight decoded once: C x kh x kw floats,
    # a few KiB), so 'compact' and 'exact' offer them as well as 'auto'.

    def _convsp_candidates(self) -> list[str]:
        if not K.native_available() or self.dilation != (1, 1):
            return []
        c, per_group, kh, kw = self.form.shape
        if (self.groups == self.in_channels == self.out_channels and per_group == 1
                and self.padding[0] < kh and self.padding[1] < kw):
            return ["depthwise"]
        sparse_ok = self.form.is_sparse or (self.form.kind == "raw" and self._raw_density() <= SPARSE_DENSITY)
        if self.groups == 1 and (kh, kw) == (1, 1) and self.padding == (0, 0) and sparse_ok:
            return ["sparse1x1"]
        if self.groups == 1 and sparse_ok:
            return ["sparsekxk"]
        return []

    def candidates(self) -> list[str]:
        return super().candidates() + self._convsp_candidates()

    def _allowed(self) -> list[str]:
        allowed = super()._allowed()
        if self.policy in ("auto", "exact", "compact"):
            allowed = allowed + [p for p in self._convsp_candidates() if p not in allowed]
        return allowed

    def _prepare(self, path: str):
        if path in _PACKED_CSR_PATHS and path not in self._prepared:
            for q in _PACKED_CSR_PATHS:  # one packed CSR weight serves all three paths
                st = self._prepared.get(q)
                if st is not None and st[0] == "packed":
                    self._prepared[path] = st
                    return st
        if path not in _CONVSP_PATHS:
            return super()._prepare(path)
        st = self._prepared.get(path)
        if st is None:
            if path == "depthwise":
                # 'compact' decodes on use (see K.DepthwiseOnUse); raw weights are fp32 already.
                compact = self.policy == "compact" and self.form.kind != "raw"
                st = K.DepthwiseOnUse(self.form) if compact else K.depthwise_prepare(self.form)
            elif path == "sparsekxk":
                st = K.sparse_prepare(self.form)
            else:
                st = K.conv1x1_prepare(self.form, self._prepared.get("sparse"))
            self._prepared[path] = st
        return st

    def _run_convsp(self, path, st, x):
        if path == "depthwise":
            return K.depthwise_conv(x, st, self._bias_np, self.stride, self.padding, self.relu)
        if path == "sparsekxk":
            return K.sparse_kxk_conv(x, st, self.form.shape, self._bias_np, self.stride, self.padding, self.relu)
        return K.sparse_conv1x1(x, st, self._bias_np, self.stride, self.relu)


_CONVSP_PATHS = ("depthwise", "sparse1x1", "sparsekxk")
_PACKED_CSR_PATHS = ("sparse", "sparse1x1", "sparsekxk")
_HANDICAP.update({"depthwise": 1.0, "sparse1x1": 1.0, "sparsekxk": 1.0})


def runtime_layers(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, _RuntimeLayer)]


def set_policy(module: nn.Module, policy: str) -> nn.Module:
    """Set the path policy of every runtime layer in `module` (see the module docstring)."""
    if policy not in POLICIES:
        raise ModelError(f"unknown runtime policy {policy!r}; choose one of {', '.join(POLICIES)}")
    # Layers that dropped their file form get it back with one read of each file.
    by_source: dict = {}
    for m in runtime_layers(module):
        if m.file_form_dropped():
            by_source.setdefault(id(m.source[0]), (m.source[0], []))[1].append(m)
    for src, ms in by_source.values():
        forms = src.forms([m.source[1] for m in ms])
        for m in ms:
            m._restore(forms[m.source[1]])
    for m in runtime_layers(module):
        m.set_policy(policy)
    return module


def resident_weight_bytes(module: nn.Module) -> int:
    """Weight bytes held by the model now: runtime layers' forms plus ordinary tensors."""
    total = sum(m.resident_bytes() for m in runtime_layers(module))
    seen = set()
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def path_summary(module: nn.Module) -> dict:
    """{layer name: {str(input shape): path}} for the inputs each layer has run on."""
    return {m.layer_name: {str(k[0]): v for k, v in m.used_paths.items()} for m in runtime_layers(module)}
