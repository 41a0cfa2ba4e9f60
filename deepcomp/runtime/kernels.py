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
        return ("packed", _ops.pack_codebook(f.indptr, f.indices, f.codes, f.codebook, f.rows, f.cols))
    return ("packed", _ops.pack_csr(f.indptr, f.indices, f.values, f.rows, f.cols))


def sparse_linear(x, state, bias, relu):
    kind, w = state
    if kind == "torch":
        return _epilogue(torch.sparse.mm(w, x.t()).t(), bias, relu)
    return _ops.spmm_packed(x, w, bias=bias, relu=relu)


def sparse_conv(x, state, form: WeightForm, bias, stride, padding, relu):
    kind, w = state
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
        kind, w = state
        if kind == "torch":
            return [w.crow_indices(), w.col_indices(), w.values()]
        state = w
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
    w = form.dense().reshape(form.rows, form.cols).contiguous()
    return _ops.pack_int8(w)


def int8_linear(x, packed, bias, relu):
    return _ops.gemm_int8(x, packed, bias=bias, relu=relu)


def int8_conv(x, packed, form: WeightForm, bias, stride, padding, relu):
    return _ops.conv2d_int8(x, packed, tuple(form.shape[2:]), bias=bias, stride=tuple(stride),
                            padding=tuple(padding), relu=relu)
