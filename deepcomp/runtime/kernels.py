"""The paths a runtime layer can take, over deepcomp.ops (native) with torch fallbacks.

Each path is a pair: `prepare(form) -> state` (done once, outside timing) and
`run(x, state, bias, relu, ...)`. When the native ops are missing (a build without them)
the sparse path falls back to torch's CSR matmul and the int8 path is unavailable.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deepcomp.runtime.weights import WeightForm

try:  # the kernels module is optional at import time so that a partial build still loads
    from deepcomp import ops as _ops
except ImportError:  # pragma: no cover - exercised only on builds without the kernels
    _ops = None

INT8_MAX_K = 133143  # exact int32 accumulation bound of the native int8 GEMM


def native_available() -> bool:
    return _ops is not None


def set_num_threads(n: int) -> None:
    torch.set_num_threads(n)
    if _ops is not None:
        _ops.set_num_threads(n)


def get_num_threads() -> int:
    if _ops is not None:
        return int(_ops.get_num_threads())
    return torch.get_num_threads()


def _epilogue(y, bias, relu):
    if bias is not None:
        y = y + bias
    return torch.relu_(y) if relu else y


# ---- sparse ----------------------------------------------------------------------------

def sparse_prepare(form: WeightForm):
    f = form if form.is_sparse else form.csr_from_raw()
    if _ops is None:
        import warnings

        vals = f.codebook[f.codes] if f.codebook is not None else f.values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CSR support is in beta": we only use mm
            w = torch.sparse_csr_tensor(torch.from_numpy(f.indptr.astype("int64")),
                                        torch.from_numpy(f.indices.astype("int64")),
                                        torch.from_numpy(vals), size=(f.rows, f.cols),
                                        check_invariants=False)
        return ("torch", w)
    if f.codebook is not None:
        w = _ops.pack_codebook(f.indptr, f.indices, f.codes, f.codebook, f.rows, f.cols)
    else:
        w = _ops.pack_csr(f.indptr, f.indices, f.values, f.rows, f.cols)
    return ("packed", w, _direct(w, _direct_spmm))


def sparse_linear(x, state, bias, relu):
    kind, w = state[0], state[1]
    if kind == "torch":
        return _epilogue(torch.sparse.mm(w, x.t()).t(), bias, relu)
    if state[2] is not None:
        return state[2](x, bias, relu)
    return _ops.spmm_packed(x, w, bias=bias, relu=relu)


# ---- direct calls ----------------------------------------------------------------------
# deepcomp.ops re-checks every argument on every call, which costs several times the
# arithmetic of a small layer at batch 1 (LeNet's layers are a few thousand
# multiply-adds). A runtime layer has already checked its input (float32, contiguous,
# 2-D, right width) and its weight was checked once by ops.pack_*, so it may call the
# native function directly; the binding still checks dtypes and shapes itself. The
# direct call is used only if it reproduces ops' result on a probe input, so a change of
# the native signature falls back to ops instead of breaking.

def _direct_spmm(w):
    C, n_out = _ops._C, w.n_out
    args = (w.indptr, w.indices, w.values, w.codes, w.codebook)
    blocks = getattr(w, "blocks", None)
    extra = () if blocks is None else (blocks,)

    def run(x, bias, relu):
        out = torch.empty((x.shape[0], n_out), dtype=torch.float32)
        C.spmm(x.numpy(), *args, bias, bool(relu), out.numpy(), *extra)
        return out
    return run


def _direct_int8(p):
    C, n_out = _ops._C, p.n_out
    args = (p.packed, p.row_sums, p.scales)

    def run(x, bias, relu):
        out = torch.empty((x.shape[0], n_out), dtype=torch.float32)
        C.gemm_int8(x.numpy(), *args, bias, bool(relu), out.numpy())
        return out
    return run


def _direct(w, make):
    try:
        fn = make(w)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, w.n_in, generator=g)
        bias = np.linspace(-1, 1, w.n_out, dtype=np.float32)
        ref = _ops.spmm_packed(x, w, bias, True) if make is _direct_spmm else _ops.gemm_int8(x, w, bias, True)
        got = fn(x, bias, True)
        return fn if torch.equal(ref, got) else None
    except Exception:  # any mismatch with ops' calling convention: use ops
        return None


def sparse_conv(x, state, form: WeightForm, bias, stride, padding, relu):
    kind, w = state[0], state[1]
    if kind == "packed":
        return _ops.conv2d_codebook_packed(x, w, form.shape, bias=bias, stride=tuple(stride),
                                           padding=tuple(padding), relu=relu)
    # Without the native module: im2col in torch, then the sparse matmul over the patches.
    n, _, h, wd = x.shape
    kh, kw = form.shape[2], form.shape[3]
    cols = F.unfold(x, (kh, kw), padding=tuple(padding), stride=tuple(stride))  # [n, c*kh*kw, L]
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (wd + 2 * padding[1] - kw) // stride[1] + 1
    patches = cols.transpose(1, 2).reshape(n * oh * ow, -1).contiguous()
    y = sparse_linear(patches, state, bias, relu)  # [n*oh*ow, out]
    return y.reshape(n, oh * ow, -1).transpose(1, 2).reshape(n, -1, oh, ow).contiguous()


def state_arrays(state) -> list:
    """The arrays / tensors a prepared path state holds (for memory accounting)."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, tuple):
        if state[0] == "torch":
            w = state[1]
            return [w.crow_indices(), w.col_indices(), w.values()]
        state = state[1] if state[0] in ("packed", "lut", "conv") else state[0]
    out = []
    for name in ("indptr", "indices", "codes", "codebook", "values", "packed", "row_sums", "scales"):
        v = getattr(state, name, None)
        if isinstance(v, (np.ndarray, torch.Tensor)):
            out.append(v)
    return out


# ---- int8 ------------------------------------------------------------------------------

def int8_supported(form: WeightForm) -> bool:
    return _ops is not None and form.cols <= INT8_MAX_K


def int8_prepare(form: WeightForm):
    if form.kind == "codes":  # per-channel int8 straight from the codebook, no fp32 W
        packed = _ops.pack_int8_codebook(_ops.pack_lut(form.codes.reshape(form.rows, form.cols), form.codebook))
        return (packed, _direct(packed, _direct_int8))
    w = form.dense().reshape(form.rows, form.cols).contiguous()
    packed = _ops.pack_int8(w)
    return (packed, _direct(packed, _direct_int8))


def int8_linear(x, state, bias, relu):
    packed, direct = state
    if direct is not None:
        return direct(x, bias, relu)
    return _ops.gemm_int8(x, packed, bias=bias, relu=relu)


def int8_conv(x, state, form: WeightForm, bias, stride, padding, relu):
    return _ops.conv2d_int8(x, state[0], tuple(form.shape[2:]), bias=bias, stride=tuple(stride),
                            padding=tuple(padding), relu=relu)


# ---- lut (dense codebook codes) -----------------------------------------------------------

def lut_supported(form: WeightForm) -> bool:
    """Dense codes into a codebook (the file's dense shared form), with the native ops."""
    return _ops is not None and form.kind == "codes" and form.cols >= 1


def _direct_lut(w):
    C, n_out, codes, codebook = _ops._C, w.n_out, w.codes, w.codebook

    def run(x, bias, relu):
        out = torch.empty((x.shape[0], n_out), dtype=torch.float32)
        C.lut_gemm(x.numpy(), codes, codebook, bias, bool(relu), out.numpy())
        return out
    return run


def lut_prepare(form: WeightForm):
    """The file's codes and codebook as a LutWeight: views, no copy (nothing new resident)."""
    w = _ops.pack_lut(form.codes.reshape(form.rows, form.cols), form.codebook)
    direct = None
    try:  # the direct call is used only if it reproduces ops' result (see _direct)
        fn = _direct_lut(w)
        x = torch.randn(3, w.n_in, generator=torch.Generator().manual_seed(0))
        bias = np.linspace(-1, 1, w.n_out, dtype=np.float32)
        if torch.equal(fn(x, bias, True), _ops.lut_gemm(x, w, bias, True)):
            direct = fn
    except Exception:
        direct = None
    return ("lut", w, direct)


def lut_linear(x, state, bias, relu):
    _, w, direct = state
    if direct is not None:
        return direct(x, bias, relu)
    return _ops.lut_gemm(x, w, bias=bias, relu=relu)


def decoder(form: WeightForm):
    """A zero-argument callable giving the weight in fp32 (the `decode` path's state):
    native for dense codes (several times faster than NumPy's take), else the form's own."""
    if _ops is None or form.kind != "codes" or form.cols < 1:
        return form.dense
    w = _ops.pack_lut(form.codes.reshape(form.rows, form.cols), form.codebook)
    shape = tuple(form.shape)
    return lambda: _ops.lut_decode(w).reshape(shape)

# ---- int8 direct convolution ---------------------------------------------------------
# Conv2d with groups 1 and dilation 1 runs int8 on the direct kernel (no im2col; per-image
# activation quantization): measured 2-13x faster than im2col + gemm_int8 on ResNet-18's
# layers (benchmarks/bench_conv.py).

def int8_conv_prepare(form: WeightForm):
    w = form.dense().reshape(tuple(form.shape)).contiguous()
    return ("conv", _ops.pack_int8_conv(w))


def int8_conv_direct(x, state, bias, stride, padding, relu):
    """The layer has checked x (float32, contiguous, 4-D, its channels); the binding checks
    the shapes again, so ops' per-call checks are skipped (they cost more than a 7x7 layer)."""
    p = state[1]
    o, _, kh, kw = p.shape
    n, _, h, w = x.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    out = torch.empty((n, o, oh, ow), dtype=torch.float32)
    if out.numel():
        _ops._C.conv_int8(x.numpy(), p.packed, p.row_sums, p.scales, kh, kw, stride[0], stride[1],
                          padding[0], padding[1], bias, bool(relu), out.numpy())
    return out


# ---- depthwise and sparse 1x1 convolution ----------------------------------------------
# The runtime layer has checked its input (float32, contiguous NCHW, its channel count)
# and its stride / padding at construction, so these call the native functions directly
# (the bindings still check shapes); deepcomp.ops has the checking versions.

class DepthwiseState:
    """A depthwise weight decoded once to fp32 [C, kh, kw]: C * kh * kw floats (34 KiB for
    MobileNetV2's widest, 960 x 3 x 3), negligible next to the layers it sits between."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


def depthwise_prepare(form: WeightForm) -> DepthwiseState:
    c, _, kh, kw = form.shape
    return DepthwiseState(np.ascontiguousarray(form.dense_np().reshape(c, kh, kw), dtype=np.float32))


class DepthwiseOnUse:
    """Policy 'compact': the depthwise weight decoded from the file form on every call and
    dropped after (a few thousand codes, microseconds), so that no fp32 copy stays
    resident next to it; MobileNetV2's 17 depthwise copies alone put the model over the
    1/4 memory bar. No `values` attribute: state_arrays counts nothing extra."""

    def __init__(self, form: WeightForm) -> None:
        self.form = form
        c, _, kh, kw = form.shape
        self.shape = (c, kh, kw)

    def weight(self) -> np.ndarray:
        return np.ascontiguousarray(self.form.dense_np().reshape(self.shape), dtype=np.float32)


def depthwise_conv(x, state: DepthwiseState, bias, stride, padding, relu):
    n, c, h, w = x.shape
    values = state.weight() if isinstance(state, DepthwiseOnUse) else state.values
    _, kh, kw = values.shape
    (sh, sw), (ph, pw) = stride, padding
    out = torch.empty((n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1), dtype=torch.float32)
    _ops._C.depthwise_conv2d(x.numpy(), values, bias, sh, sw, ph, pw, 1 if relu else 0, out.numpy())
    return out


def conv1x1_prepare(form: WeightForm, sparse_state=None):
    """The packed CSR weight, shared with the im2col sparse path's state when it has one."""
    if sparse_state is not None and sparse_state[0] == "packed":
        return sparse_state
    return sparse_prepare(form)


def sparse_conv1x1(x, state, bias, stride, relu):
    w = state[1]
    if tuple(stride) != (1, 1):
        x = x[:, :, ::stride[0], ::stride[1]].contiguous()
    n, _, h, wd = x.shape
    out = torch.empty((n, w.n_out, h, wd), dtype=torch.float32)
    _ops._C.conv1x1_sparse(x.numpy(), w.indptr, w.indices, w.values, w.codes, w.codebook, bias,
                           1 if relu else 0, out.numpy())
    return out


# ---- direct sparse KxK convolution -------------------------------------------------------
# NCHW in and out, no im2col and no transpose of the result (csrc/kernels/conv_sparse_kxk*):
# for LeNet-sized layers the patch matrix and the NHWC-to-NCHW copy of the im2col path
# cost more than the multiply-adds. The weight is the same packed CSR as the sparse path's.

def sparse_kxk_conv(x, state, shape, bias, stride, padding, relu):
    w = state[1]
    o, _, kh, kw = shape
    n, _, h, wd = x.shape
    (sh, sw), (ph, pw) = stride, padding
    out = torch.empty((n, o, (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1), dtype=torch.float32)
    _ops._C.conv_sparse_kxk(x.numpy(), w.indptr, w.indices, w.values, w.codes, w.codebook, w.n_in, kh, kw,
                            sh, sw, ph, pw, bias, 1 if relu else 0, out.numpy())
    return out
