"""Native kernels over the compressed forms: the thin, checking layer above deepcomp._C.

Torch tensors in and out (CPU, float32); weight arrays may be NumPy or torch. Inputs are
checked here, once, and handed to C++ without copies (a CPU tensor's ``.numpy()`` shares
its memory). All ops are inference only: they ignore autograd.

Sparse matmul, ``Y = X @ W.T (+ bias) (+ ReLU)`` with W in CSR (rows = out features):

* ``spmm_codebook(x, indptr, indices, codes, codebook, n_out, bias, relu)``: W's values are
  uint8 indices into an fp32 codebook (the .dcz sparse-shared form; no fp32 copy of W is
  built). ``spmm_csr(...)`` is the same with fp32 ``values``.
* Column ``indices`` are uint16 (in_features <= 65536) or int32, sorted or not.
* These two validate the arrays (every index and code) on each call, one pass over the
  weights. For repeated calls, validate once with ``pack_codebook`` / ``pack_csr``, which
  return a ``SparseWeight``, and call ``spmm_packed(x, w, bias, relu)`` (alias
  ``spmm_codebook_packed``). The packed form holds the same arrays as the .dcz
  SharedSparse tensor, exactly typed and contiguous (3 bytes per nonzero with uint16
  indices and uint8 codes), with indices sorted within rows, plus a small table of where
  each row enters each block of 256 columns: for wide layers at batch > 1 the kernel
  walks the columns block by block so that the slice of X it reads stays in L1.
* Batch 1 gathers 8 inputs at a time (16 on CPUs with AVX-512, which also walk inputs
  wider than 48 KiB in column slices of at most 32 KiB) and looks the codes up in the
  codebook held in registers; batch > 1 transposes X into blocks of up to 32 batch columns inside the op
  and applies each nonzero to a whole block with FMAs.

int8 GEMM for dense layers: ``pack_int8(w) -> Int8Weight`` quantizes weights symmetrically
per output channel (q in [-127, 127]); ``gemm_int8(x, packed, bias, relu)`` quantizes the
activations on the fly per batch row to 7-bit unsigned affine (as FBGEMM's reduce_range),
accumulates exactly in int32 and writes fp32. Seven-bit activations keep AVX2's
``maddubs`` from saturating, so the AVX2 and scalar paths agree bit for bit; on CPUs with
AVX-VNNI the AVX2 path uses ``vpdpbusd`` instead (same results; DEEPCOMP_NO_VNNI=1 or
``_C.set_int8_vnni(False)`` turns it off).

Conv2d (groups = 1) via im2col on both: ``conv2d_codebook`` / ``conv2d_codebook_packed``
and ``conv2d_int8``. Direct int8 convolution without im2col: ``pack_int8_conv(w) ->
Int8ConvWeight`` (the int8 GEMM's weight quantization, in a conv layout) and
``conv2d_int8_direct(x, packed, bias, stride, padding, relu)``: the input is quantized
once per image (7-bit, padding at the zero point, so it adds exactly 0), sums are exact
int32 (AVX512-VNNI ``vpdpbusd`` on zmm where present, AVX2 ``maddubs`` elsewhere, a scalar
twin; all bit-identical; DEEPCOMP_NO_VNNI=1 or DEEPCOMP_NO_AVX512=1 selects AVX2), and the
output is written NCHW fp32.

Direct NCHW convolutions without im2col: ``depthwise_conv2d`` (one filter per channel) and
``conv1x1_codebook`` / ``conv1x1_sparse_packed`` (a sparse 1x1 weight as a matmul over
channels, per image), with fused bias and relu / relu6 / hardswish.

Threads: ``set_num_threads(n)`` / ``get_num_threads()`` (the kernels' own setting; small
problems stay on one thread; results do not depend on the count). ``isa()`` says which
path runs: 'avx2' or 'scalar' (``DEEPCOMP_FORCE_SCALAR=1`` forces scalar). The AVX2
sparse kernels run on deepcomp's own worker threads, which sleep when idle and never make
a call wait for a late-waking thread (csrc/kernels/threads.cpp). The int8 GEMM and the
scalar twins use OpenMP, torch's own libgomp when torch is loaded first; that runtime reads
OMP_WAIT_POLICY once, when it is loaded: importing deepcomp before torch (or exporting
OMP_WAIT_POLICY=PASSIVE) is what keeps its idle threads from spinning.

Dense codebook weights (the .dcz dense shared form: uint8 codes [out, in] into an fp32
codebook of up to 256 entries): ``pack_lut(codes, codebook) -> LutWeight`` checks them
once and ``lut_gemm(x, w, bias, relu)`` computes ``x @ codebook[codes].T`` without ever
holding W in fp32: each call decodes tiles of codes into L1/L2 and reuses every tile for
all rows of x (1 byte read per weight per call). Exact fp32 arithmetic; the summation
order differs between the scalar and the SIMD paths, so they agree to rounding (each
output within (K + 2) * 2**-24 * sum_k |x_k w_k| of the exact value), and on one path a
result does not depend on the batch or the thread count. ``pack_int8_codebook`` maps the
same weight to int8 per output channel for ``gemm_int8`` (see its docstring for the error).

Non-finite inputs give unspecified (but memory-safe) outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepcomp import _C
from deepcomp.errors import OpInputError

__all__ = [
    "isa", "set_num_threads", "get_num_threads",
    "SparseWeight", "pack_codebook", "pack_csr", "spmm_codebook", "spmm_csr", "spmm_packed",
    "spmm_codebook_packed",
    "Int8Weight", "pack_int8", "gemm_int8",
    "conv2d_codebook", "conv2d_codebook_packed", "conv2d_int8",
    "LutWeight", "pack_lut", "lut_gemm", "lut_decode", "pack_int8_codebook",
    "Int8ConvWeight", "pack_int8_conv", "conv2d_int8_direct",
]

INT8_MAX_K = 133143  # K * 127 * 127 must stay below 2**31 for exact int32 sums


# ---- settings --------------------------------------------------------------------------

def isa() -> str:
    """The kernel path in use: 'avx2' or 'scalar'."""
    return _C.active_isa()


def set_num_threads(n: int) -> None:
    """Threads the kernels may use (does not change torch's or OpenMP's global setting)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise OpInputError(f"number of threads must be a positive integer, got {n!r}")
    _C.set_num_threads(n)


def get_num_threads() -> int:
    return int(_C.get_num_threads())


# ---- argument checks ---------------------------------------------------------------------

def _input(x, name: str = "x", ndim: int = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise OpInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise OpInputError(f"{name} must be on the CPU, got device {x.device}")
    if x.dtype != torch.float32:
        raise OpInputError(f"{name} must be float32, got {x.dtype}")
    if x.dim() != ndim:
        raise OpInputError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if x.is_contiguous() and not x.requires_grad:
        return x
    return x.detach().contiguous()


def _array(a, name: str, dtypes: tuple) -> np.ndarray:
    """A contiguous 1-D NumPy view (or, for a convertible integer type, copy) of `a`."""
    if isinstance(a, torch.Tensor):
        if a.device.type != "cpu":
            raise OpInputError(f"{name} must be on the CPU, got device {a.device}")
        a = a.detach().contiguous().numpy()
    a = np.asarray(a)
    if a.ndim != 1:
        raise OpInputError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype not in dtypes:
        want = dtypes[0]
        # Lossless integer conversions (e.g. int64 indices from torch) are accepted.
        if np.issubdtype(a.dtype, np.integer) and np.issubdtype(want, np.integer):
            info = np.iinfo(want)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise OpInputError(f"{name} has values outside the {np.dtype(want).name} range")
            a = a.astype(want)
        elif np.issubdtype(a.dtype, np.floating) and np.issubdtype(want, np.floating):
            a = a.astype(want)
        else:
            names = ", ".join(np.dtype(d).name for d in dtypes)
            raise OpInputError(f"{name} must be {names}, got {a.dtype}")
    return np.ascontiguousarray(a)


def _bias(bias, n: int):
    if bias is None:
        return None
    if (type(bias) is torch.Tensor and bias.dtype == torch.float32 and bias.dim() == 1
            and bias.shape[0] == n and bias.device.type == "cpu" and bias.is_contiguous()):
        return bias.detach().numpy()  # the common case, without the general checks' cost
    b = _array(bias, "bias", (np.dtype(np.float32),))
    if b.shape[0] != n:
        raise OpInputError(f"bias must have {n} entries (one per output), got {b.shape[0]}")
    return b


# ---- sparse ------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SparseWeight:
    """A CSR weight checked once for the sparse kernels (see the module docstring).

    Exactly one of `codes` (with `codebook`) and `values` is set.
    """

    indptr: np.ndarray           # int32 [n_out + 1]
    indices: np.ndarray          # uint16 or int32 [nnz]
    n_out: int
    n_in: int
    codes: np.ndarray | None = None     # uint8 [nnz]
    codebook: np.ndarray | None = None  # float32 [K], K <= 256
    values: np.ndarray | None = None    # float32 [nnz]
    # Where each row enters each block of _C.SPMM_SEG_COLS columns (batch > 1 uses it
    # to keep the slice of X it reads in L1); None for the unpacked, per-call path.
    blocks: np.ndarray | None = None

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def nbytes(self) -> int:
        """Bytes the kernel reads per call at batch 1 (indptr, indices, codes or values, codebook)."""
        parts = [self.indptr, self.indices, self.codes, self.codebook, self.values]  # not `blocks`: batch 1 skips it
        return int(sum(p.nbytes for p in parts if p is not None))

    def dense(self) -> torch.Tensor:
        """The fp32 [n_out, n_in] matrix this weight stands for (for tests and debugging)."""
        vals = self.codebook[self.codes] if self.codes is not None else self.values
        rows = np.repeat(np.arange(self.n_out), np.diff(self.indptr))
        w = np.zeros((self.n_out, self.n_in), dtype=np.float32)
        np.add.at(w, (rows, self.indices.astype(np.int64)), vals)
        return torch.from_numpy(w)


def _sorted_rows(w: SparseWeight) -> SparseWeight:
    """The same weight with column indices ascending within each row, plus its block table."""
    ix = w.indices.astype(np.int64)
    row = np.repeat(np.arange(w.n_out, dtype=np.int64), np.diff(w.indptr))
    if ix.size > 1 and not np.all((np.diff(ix) > 0) | (np.diff(row) > 0)):
        order = np.lexsort((ix, row))
        w = SparseWeight(w.indptr, np.ascontiguousarray(w.indices[order]), w.n_out, w.n_in,
                         codes=None if w.codes is None else np.ascontiguousarray(w.codes[order]),
                         codebook=w.codebook,
                         values=None if w.values is None else np.ascontiguousarray(w.values[order]))
    blocks = _C.csr_block_starts(w.indptr, w.indices, w.n_in)
    return SparseWeight(w.indptr, w.indices, w.n_out, w.n_in, codes=w.codes, codebook=w.codebook,
                        values=w.values, blocks=blocks)


def _sparse(indptr, indices, n_out: int, n_in: int, codes=None, codebook=None, values=None) -> SparseWeight:
    if not isinstance(n_out, (int, np.integer)) or n_out < 0:
        raise OpInputError(f"n_out must be a non-negative integer, got {n_out!r}")
    if not isinstance(n_in, (int, np.integer)) or n_in < 1:
        raise OpInputError(f"in_features must be a positive integer, got {n_in!r}")
    n_out, n_in = int(n_out), int(n_in)
    ip = _array(indptr, "indptr", (np.dtype(np.int32),))
    if ip.shape[0] != n_out + 1:
        raise OpInputError(f"indptr must have n_out + 1 = {n_out + 1} entries, got {ip.shape[0]}")
    idx_dtypes = (np.dtype(np.uint16), np.dtype(np.int32)) if n_in <= 65536 else (np.dtype(np.int32),)
    ix = _array(indices, "indices", idx_dtypes)
    cd = cb = vl = None
    k = 0
    if codes is not None:
        cd = _array(codes, "codes", (np.dtype(np.uint8),))
        cb = _array(codebook, "codebook", (np.dtype(np.float32),))
        k = int(cb.shape[0])
        if not 1 <= k <= 256:
            raise OpInputError(f"codebook must have 1 to 256 entries, got {k}")
        if cd.shape[0] != ix.shape[0]:
            raise OpInputError(f"codes ({cd.shape[0]}) and indices ({ix.shape[0]}) differ in length")
    else:
        vl = _array(values, "values", (np.dtype(np.float32),))
        if vl.shape[0] != ix.shape[0]:
            raise OpInputError(f"values ({vl.shape[0]}) and indices ({ix.shape[0]}) differ in length")
    err = _C.check_csr(ip, ix, n_in, cd, k)
    if err:
        raise OpInputError(f"invalid sparse weight: {err}")
    return SparseWeight(ip, ix, n_out, n_in, codes=cd, codebook=cb, values=vl)


def pack_codebook(indptr, indices, codes, codebook, n_out: int, n_in: int) -> SparseWeight:
    """Check a codebook CSR weight once for spmm_packed / conv2d_codebook_packed.

    Sorts the column indices within rows if they are not (the product is unchanged) and
    adds the column block table that batch > 1 uses.
    """
    return _sorted_rows(_sparse(indptr, indices, n_out, n_in, codes=codes, codebook=codebook))


def pack_csr(indptr, indices, values, n_out: int, n_in: int) -> SparseWeight:
    """Check an fp32 CSR weight once for spmm_packed (sorted and blocked as pack_codebook)."""
    return _sorted_rows(_sparse(indptr, indices, n_out, n_in, values=values))


def spmm_packed(x: torch.Tensor, w: SparseWeight, bias=None, relu: bool = False) -> torch.Tensor:
    """Y[B, n_out] = x[B, n_in] @ W.T (+ bias) (+ ReLU) for a checked SparseWeight."""
    if not isinstance(w, SparseWeight):
        raise OpInputError(f"expected a SparseWeight from pack_codebook/pack_csr, got {type(w).__name__}")
    x = _input(x)
    if x.shape[1] != w.n_in:
        raise OpInputError(f"x has {x.shape[1]} features, the weight expects {w.n_in}")
    b = _bias(bias, w.n_out)
    out = torch.empty((x.shape[0], w.n_out), dtype=torch.float32)
    if x.shape[0] and w.n_out:
        _C.spmm(x.numpy(), w.indptr, w.indices, w.values, w.codes, w.codebook, b, bool(relu), out.numpy(),
                w.blocks)
    return out


spmm_codebook_packed = spmm_packed


def spmm_codebook(x, indptr, indices, codes, codebook, n_out: int, bias=None, relu: bool = False) -> torch.Tensor:
    """Y = x @ W.T (+ bias) (+ ReLU), W = codebook[codes] in CSR; checks W on every call."""
    x = _input(x)
    return spmm_packed(x, _sparse(indptr, indices, n_out, x.shape[1], codes=codes, codebook=codebook), bias, relu)


def spmm_csr(x, indptr, indices, values, n_out: int, bias=None, relu: bool = False) -> torch.Tensor:
    """Y = x @ W.T (+ bias) (+ ReLU), W in CSR with fp32 values; checks W on every call."""
    x = _input(x)
    return spmm_packed(x, _sparse(indptr, indices, n_out, x.shape[1], values=values), bias, relu)


# ---- int8 --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Int8Weight:
    """int8 weights, symmetric per output channel: w[o, :] ~= q[o, :] * scales[o]."""

    packed: np.ndarray    # int8, the GEMM's blocked layout (see csrc/kernels/kernels.h)
    row_sums: np.ndarray  # int32 [n_out], sum of q over each row
    scales: np.ndarray    # float32 [n_out]
    n_out: int
    n_in: int

    def q(self) -> np.ndarray:
        """The int8 [n_out, n_in] matrix, unpacked."""
        k4 = (self.n_in + 3) // 4
        nb = (self.n_out + 15) // 16 * 2
        blocks = self.packed.reshape(nb, k4, 8, 4).transpose(0, 2, 1, 3).reshape(nb * 8, k4 * 4)
        return np.ascontiguousarray(blocks[: self.n_out, : self.n_in])

    def dequantize(self) -> torch.Tensor:
        return torch.from_numpy(self.q().astype(np.float32) * self.scales[:, None])

    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.row_sums.nbytes + self.scales.nbytes)


def pack_int8(w: torch.Tensor) -> Int8Weight:
    """Quantize fp32 weights [out, in] to int8 per output channel and pack them."""
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w)
    if w.dim() != 2:
        raise OpInputError(f"int8 weights must be 2-D [out, in], got shape {tuple(w.shape)}")
    if w.shape[1] > INT8_MAX_K:
        raise OpInputError(f"in_features {w.shape[1]} exceeds {INT8_MAX_K}, the exact int32 accumulation limit")
    wf = w.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    if not np.isfinite(wf).all():
        raise OpInputError("int8 weights must be finite")
    amax = np.abs(wf).max(axis=1) if wf.shape[1] else np.zeros(wf.shape[0], np.float32)
    scales = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(wf / scales[:, None]), -127, 127).astype(np.int8)
    packed = _C.int8_pack(np.ascontiguousarray(q))
    return Int8Weight(packed, q.astype(np.int32).sum(axis=1).astype(np.int32), scales, int(wf.shape[0]), int(wf.shape[1]))


def gemm_int8(x: torch.Tensor, packed: Int8Weight, bias=None, relu: bool = False) -> torch.Tensor:
    """Y[B, n_out] = x @ W.T (+ bias) (+ ReLU) with W int8 and x quantized per row to 7 bits."""
    if not isinstance(packed, Int8Weight):
        raise OpInputError(f"expected an Int8Weight from pack_int8, got {type(packed).__name__}")
    x = _input(x)
    if x.shape[1] != packed.n_in:
        raise OpInputError(f"x has {x.shape[1]} features, the weight expects {packed.n_in}")
    b = _bias(bias, packed.n_out)
    out = torch.empty((x.shape[0], packed.n_out), dtype=torch.float32)
    if x.shape[0] and packed.n_out:
        _C.gemm_int8(x.numpy(), packed.packed, packed.row_sums, packed.scales, b, bool(relu), out.numpy())
    return out


# ---- conv2d ------------------------------------------------------------------------------

def _pair(v, name: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(i, (int, np.integer)) for i in t):
        raise OpInputError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(t[0]), int(t[1])


def _im2col(x: torch.Tensor, c_w: int, kh: int, kw: int, stride, padding):
    x = _input(x, "x", ndim=4)
    n, c, h, w = x.shape
    if c != c_w:
        raise OpInputError(f"x has {c} channels, the weight expects {c_w} (groups=1 only)")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise OpInputError(f"stride must be >= 1 and padding >= 0, got {stride!r}, {padding!r}")
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise OpInputError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = torch.empty((n * oh * ow, c * kh * kw), dtype=torch.float32)
    if cols.numel():
        _C.im2col(x.numpy(), kh, kw, sh, sw, ph, pw, cols.numpy())
    return cols, n, oh, ow


def _to_nchw(y: torch.Tensor, n: int, oh: int, ow: int) -> torch.Tensor:
    return y.reshape(n, oh, ow, -1).permute(0, 3, 1, 2).contiguous()


def _conv_shape(shape) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise OpInputError(f"a conv weight shape must be [out, in, kh, kw], got {shape}")
    return shape  # type: ignore[return-value]


def conv2d_codebook_packed(x, w: SparseWeight, shape, bias=None, stride=1, padding=0, relu: bool = False):
    """Conv2d (groups=1) over a checked SparseWeight whose matrix view is [out, in*kh*kw]."""
    o, c, kh, kw = _conv_shape(shape)
    if not isinstance(w, SparseWeight) or w.n_out != o or w.n_in != c * kh * kw:
        raise OpInputError(f"the sparse weight does not match the conv shape {(o, c, kh, kw)}")
    cols, n, oh, ow = _im2col(x, c, kh, kw, stride, padding)
    return _to_nchw(spmm_packed(cols, w, bias, relu), n, oh, ow)


def conv2d_codebook(x, indptr, indices, codes, codebook, shape, bias=None, stride=1, padding=0,
                    relu: bool = False) -> torch.Tensor:
    """Conv2d (groups=1) with a codebook CSR weight of 4-D `shape`; checks it on every call."""
    o, c, kh, kw = _conv_shape(shape)
    w = _sparse(indptr, indices, o, c * kh * kw, codes=codes, codebook=codebook)
    return conv2d_codebook_packed(x, w, shape, bias, stride, padding, relu)


def conv2d_int8(x, packed: Int8Weight, kernel_size, bias=None, stride=1, padding=0,
                relu: bool = False) -> torch.Tensor:
    """Conv2d (groups=1) with int8 weights packed from the [out, in*kh*kw] view."""
    kh, kw = _pair(kernel_size, "kernel_size")
    if not isinstance(packed, Int8Weight) or packed.n_in % (kh * kw):
        raise OpInputError(f"the int8 weight does not match kernel_size {(kh, kw)}")
    c = packed.n_in // (kh * kw)
    cols, n, oh, ow = _im2col(x, c, kh, kw, stride, padding)
    return _to_nchw(gemm_int8(cols, packed, bias, relu), n, oh, ow)


# ---- dense codebook weights ------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LutWeight:
    """A dense codebook weight checked once for lut_gemm: W[o, i] = codebook[codes[o, i]]."""

    codes: np.ndarray     # uint8 [n_out, n_in], C-contiguous (a view of the caller's array when it was one)
    codebook: np.ndarray  # float32 [1..256]
    n_out: int
    n_in: int

    def nbytes(self) -> int:
        """Bytes lut_gemm reads per call (codes and codebook)."""
        return int(self.codes.nbytes + self.codebook.nbytes)

    def dense(self) -> torch.Tensor:
        """The fp32 [n_out, n_in] matrix (for tests and debugging)."""
        return torch.from_numpy(self.codebook[self.codes])


def pack_lut(codes, codebook, n_out: int | None = None, n_in: int | None = None) -> LutWeight:
    """Check dense codebook codes once for lut_gemm.

    `codes`: uint8 [n_out, n_in], or flat with `n_out` and `n_in` given; `codebook`:
    float32, 1 to 256 entries; every code must index into it. Contiguous uint8 input is
    used without a copy.
    """
    if isinstance(codes, torch.Tensor):
        if codes.device.type != "cpu":
            raise OpInputError(f"codes must be on the CPU, got device {codes.device}")
        codes = codes.detach().contiguous().numpy()
    c = np.asarray(codes)
    if c.dtype != np.uint8:
        if not np.issubdtype(c.dtype, np.integer):
            raise OpInputError(f"codes must be uint8 (or integers in 0..255), got {c.dtype}")
        if c.size and (c.min() < 0 or c.max() > 255):
            raise OpInputError("codes have values outside 0..255")
        c = c.astype(np.uint8)
    if n_out is not None or n_in is not None:
        if not all(isinstance(v, (int, np.integer)) and v >= 0 for v in (n_out, n_in)):
            raise OpInputError(f"n_out and n_in must both be non-negative integers, got {n_out!r}, {n_in!r}")
        if c.size != int(n_out) * int(n_in):
            raise OpInputError(f"{c.size} codes do not make a [{n_out}, {n_in}] weight")
        c = c.reshape(int(n_out), int(n_in))
    if c.ndim != 2:
        raise OpInputError(f"codes must be 2-D [out, in] (or give n_out and n_in), got shape {c.shape}")
    if c.shape[1] < 1:
        raise OpInputError("the weight must have at least one input feature")
    c = np.ascontiguousarray(c)
    cb = _array(codebook, "codebook", (np.dtype(np.float32),))
    if not 1 <= cb.shape[0] <= 256:
        raise OpInputError(f"codebook must have 1 to 256 entries, got {cb.shape[0]}")
    if c.size and int(c.max()) >= cb.shape[0]:
        raise OpInputError(f"code {int(c.max())} is out of range for a codebook of {cb.shape[0]} entries")
    return LutWeight(c, cb, int(c.shape[0]), int(c.shape[1]))


def lut_gemm(x: torch.Tensor, w: LutWeight, bias=None, relu: bool = False) -> torch.Tensor:
    """Y[B, n_out] = x[B, n_in] @ W.T (+ bias) (+ ReLU) for W = codebook[codes] (a LutWeight)."""
    if not isinstance(w, LutWeight):
        raise OpInputError(f"expected a LutWeight from pack_lut, got {type(w).__name__}")
    x = _input(x)
    if x.shape[1] != w.n_in:
        raise OpInputError(f"x has {x.shape[1]} features, the weight expects {w.n_in}")
    b = _bias(bias, w.n_out)
    out = torch.empty((x.shape[0], w.n_out), dtype=torch.float32)
    if x.shape[0] and w.n_out:
        _C.lut_gemm(x.numpy(), w.codes, w.codebook, b, bool(relu), out.numpy())
    return out


def lut_decode(w: LutWeight) -> torch.Tensor:
    """W = codebook[codes] as a new fp32 [n_out, n_in] tensor, decoded by the native kernels
    (bit-exact: entries are copied, not computed)."""
    if not isinstance(w, LutWeight):
        raise OpInputError(f"expected a LutWeight from pack_lut, got {type(w).__name__}")
    out = torch.empty((w.n_out, w.n_in), dtype=torch.float32)
    if out.numel():
        _C.lut_decode(w.codes, w.codebook, out.numpy())
    return out


def pack_int8_codebook(w: LutWeight) -> Int8Weight:
    """The int8 form of a dense codebook weight for gemm_int8, without an fp32 copy of W.

    Per output channel n: s_n = max |codebook[c]| over the row's codes / 127 and
    q = round(codebook[c] / s_n), a 256-entry int8 table per row looked up by the codes.
    The same numbers as pack_int8(w.dense()). Weight error: |w - q s_n| <= s_n / 2, i.e.
    at most 1/254 (0.39 %) of the channel's max |w|; gemm_int8 adds its 7-bit activation
    rounding on top (output error about 1 % of the output scale, tests/test_ops_lut.py).
    """
    if not isinstance(w, LutWeight):
        raise OpInputError(f"expected a LutWeight from pack_lut, got {type(w).__name__}")
    if w.n_in > INT8_MAX_K:
        raise OpInputError(f"in_features {w.n_in} exceeds {INT8_MAX_K}, the exact int32 accumulation limit")
    if not np.isfinite(w.codebook).all():
        raise OpInputError("int8 weights must be finite")
    absval = np.abs(w.codebook)
    n = w.n_out
    q = np.empty((n, w.n_in), dtype=np.int8)
    scales = np.empty(n, dtype=np.float32)
    step = max(1, (1 << 20) // w.n_in)  # rows at a time: temporaries of about 4 MiB, not an fp32 W
    for r0 in range(0, n, step):
        c = w.codes[r0:r0 + step]
        amax = absval[c].max(axis=1).astype(np.float32)
        s = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        table = np.clip(np.rint(w.codebook[None, :] / s[:, None]), -127, 127).astype(np.int8)
        q[r0:r0 + step] = np.take_along_axis(table, c.astype(np.intp), axis=1)
        scales[r0:r0 + step] = s
    packed = _C.int8_pack(q)
    return Int8Weight(packed, q.astype(np.int32).sum(axis=1).astype(np.int32), scales, n, w.n_in)

# ---- int8 direct convolution -------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Int8ConvWeight:
    """int8 conv weights, symmetric per output channel: w[o] ~= q[o] * scales[o]."""

    packed: np.ndarray    # int8, conv_int8's layout (see csrc/kernels/kernels.h)
    row_sums: np.ndarray  # int32 [out], sum of q over (in, kh, kw)
    scales: np.ndarray    # float32 [out]
    shape: tuple          # (out, in, kh, kw)

    def q(self) -> np.ndarray:
        """The int8 [out, in, kh, kw] weights, unpacked."""
        o, c, kh, kw = self.shape
        c4, ob = (c + 3) // 4, (o + 7) // 8
        blocks = self.packed.reshape(ob, c4, kh, kw, 8, 4).transpose(0, 4, 1, 5, 2, 3)
        return np.ascontiguousarray(blocks.reshape(ob * 8, c4 * 4, kh, kw)[:o, :c])

    def dequantize(self) -> torch.Tensor:
        return torch.from_numpy(self.q().astype(np.float32) * self.scales[:, None, None, None])

    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.row_sums.nbytes + self.scales.nbytes)


def pack_int8_conv(w: torch.Tensor) -> Int8ConvWeight:
    """Quantize fp32 conv weights [out, in, kh, kw] to int8 per output channel and pack them
    for conv2d_int8_direct (q = round(w / s), s = max|w[o]| / 127, as pack_int8)."""
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w)
    if w.dim() != 4:
        raise OpInputError(f"int8 conv weights must be 4-D [out, in, kh, kw], got shape {tuple(w.shape)}")
    o, c, kh, kw = (int(s) for s in w.shape)
    if min(o, c, kh, kw) < 1:
        raise OpInputError(f"int8 conv weights must have no empty dimension, got shape {tuple(w.shape)}")
    if c * kh * kw > INT8_MAX_K:
        raise OpInputError(f"in_channels * kh * kw = {c * kh * kw} exceeds {INT8_MAX_K}, "
                           "the exact int32 accumulation limit")
    wf = w.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().reshape(o, -1)
    if not np.isfinite(wf).all():
        raise OpInputError("int8 conv weights must be finite")
    amax = np.abs(wf).max(axis=1)
    scales = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(wf / scales[:, None]), -127, 127).astype(np.int8)
    packed = _C.conv_int8_pack(np.ascontiguousarray(q.reshape(o, c, kh, kw)))
    return Int8ConvWeight(packed, q.astype(np.int32).sum(axis=1).astype(np.int32), scales, (o, c, kh, kw))


def conv2d_int8_direct(x, packed: Int8ConvWeight, bias=None, stride=1, padding=0,
                       relu: bool = False) -> torch.Tensor:
    """Conv2d (groups=1, dilation 1) with int8 weights, without im2col; NCHW in and out.

    The input is quantized per image to 7 bits (scale and zero point from its range,
    which always includes 0); outputs differ from fp32 by the two roundings, about 1-1.5 %
    of the output's largest magnitude on ResNet-18's layers (benchmarks/RESULTS.md;
    tests/test_ops_conv_int8.py states the per-output bound).
    """
    if not isinstance(packed, Int8ConvWeight):
        raise OpInputError(f"expected an Int8ConvWeight from pack_int8_conv, got {type(packed).__name__}")
    o, c, kh, kw = packed.shape
    x = _input(x, "x", ndim=4)
    n, cx, h, w = x.shape
    if cx != c:
        raise OpInputError(f"x has {cx} channels, the weight expects {c} (groups=1 only)")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise OpInputError(f"stride must be >= 1 and padding >= 0, got {stride!r}, {padding!r}")
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise OpInputError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    b = _bias(bias, o)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = torch.empty((n, o, oh, ow), dtype=torch.float32)
    if out.numel():
        _C.conv_int8(x.numpy(), packed.packed, packed.row_sums, packed.scales, kh, kw, sh, sw, ph, pw, b,
                     bool(relu), out.numpy())
    return out

# ---- depthwise and sparse 1x1 convolution ------------------------------------------------
# Direct NCHW kernels, no im2col: a depthwise conv (one filter per channel) and a 1x1 conv
# whose weight is sparse, run as Y[c_out, h*w] = W @ X[c_in, h*w] per image (Elsen et al.,
# "Fast Sparse ConvNets"). Both fuse the bias and an activation: 'none', 'relu', 'relu6'
# or 'hardswish'. The vector paths use FMA, so they differ from the scalar twin (and from
# torch) by rounding only; ymm and zmm give identical results, as do all thread counts.

__all__ += ["depthwise_conv2d", "conv1x1_sparse_packed", "conv1x1_codebook"]

ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2, "hardswish": 3}


def _activation(activation) -> int:
    if activation is None:
        return 0
    if activation not in ACTIVATIONS:
        raise OpInputError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def depthwise_conv2d(x, weight, bias=None, stride=1, padding=0, activation="none") -> torch.Tensor:
    """Depthwise conv2d: groups = channels, one filter per channel, dilation 1.

    weight is [C, 1, kh, kw] (as nn.Conv2d stores it) or [C, kh, kw], float32; padding
    must be smaller than the kernel (larger padding only adds outputs that see zeros).
    """
    x = _input(x, "x", ndim=4)
    if isinstance(weight, torch.Tensor):
        if weight.device.type != "cpu":
            raise OpInputError(f"weight must be on the CPU, got device {weight.device}")
        weight = weight.detach().contiguous().numpy()
    w = np.asarray(weight)
    if w.dtype != np.float32:
        raise OpInputError(f"weight must be float32, got {w.dtype}")
    if w.ndim == 4 and w.shape[1] == 1:
        w = w.reshape(w.shape[0], w.shape[2], w.shape[3])
    if w.ndim != 3:
        raise OpInputError(f"a depthwise weight must be [C, 1, kh, kw] or [C, kh, kw], got shape {w.shape}")
    w = np.ascontiguousarray(w)
    n, c, h, wd = x.shape
    if w.shape[0] != c:
        raise OpInputError(f"x has {c} channels, the depthwise weight has {w.shape[0]} filters")
    kh, kw = int(w.shape[1]), int(w.shape[2])
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if kh < 1 or kw < 1:
        raise OpInputError(f"the kernel must be at least 1x1, got {kh}x{kw}")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise OpInputError(f"stride must be >= 1 and padding >= 0, got {stride!r}, {padding!r}")
    if ph >= kh or pw >= kw:
        raise OpInputError(f"padding {(ph, pw)} must be smaller than the kernel {(kh, kw)}")
    if h + 2 * ph < kh or wd + 2 * pw < kw:
        raise OpInputError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{wd + 2 * pw}")
    b = _bias(bias, c)
    act = _activation(activation)
    out = torch.empty((n, c, (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1), dtype=torch.float32)
    if out.numel():
        _C.depthwise_conv2d(x.numpy(), w, b, sh, sw, ph, pw, act, out.numpy())
    return out


def conv1x1_sparse_packed(x, w: SparseWeight, bias=None, stride=1, activation="none") -> torch.Tensor:
    """1x1 conv2d (groups = 1, no padding) over a checked SparseWeight [c_out, c_in].

    Runs as a sparse matmul over channels on the NCHW input directly; a stride > 1 first
    takes every stride-th pixel.
    """
    if not isinstance(w, SparseWeight):
        raise OpInputError(f"expected a SparseWeight from pack_codebook/pack_csr, got {type(w).__name__}")
    x = _input(x, "x", ndim=4)
    if x.shape[1] != w.n_in:
        raise OpInputError(f"x has {x.shape[1]} channels, the 1x1 weight expects {w.n_in}")
    sh, sw = _pair(stride, "stride")
    if sh < 1 or sw < 1:
        raise OpInputError(f"stride must be >= 1, got {stride!r}")
    if (sh, sw) != (1, 1):
        x = x[:, :, ::sh, ::sw].contiguous()
    b = _bias(bias, w.n_out)
    act = _activation(activation)
    n, _, h, wd = x.shape
    out = torch.empty((n, w.n_out, h, wd), dtype=torch.float32)
    if out.numel():
        _C.conv1x1_sparse(x.numpy(), w.indptr, w.indices, w.values, w.codes, w.codebook, b, act, out.numpy())
    return out


def conv1x1_codebook(x, indptr, indices, codes, codebook, n_out: int, bias=None, stride=1,
                     activation="none") -> torch.Tensor:
    """1x1 conv2d with a codebook CSR weight [n_out, channels]; checks the weight on every call."""
    x = _input(x, "x", ndim=4)
    w = _sparse(indptr, indices, n_out, x.shape[1], codes=codes, codebook=codebook)
    return conv1x1_sparse_packed(x, w, bias, stride, activation)


# ---- max-pool 2-D (csrc/kernels/max_pool*) --------------------------------------------------

__all__ += ["max_pool2d"]


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False) -> torch.Tensor:
    """torch.nn.functional.max_pool2d for float32 NCHW, dilation 1, on the native kernel
    (AVX2 vectors over output columns for strides 1 and 2, a NaN kept as PyTorch keeps it).

    stride defaults to the kernel size; padding may be at most half the kernel, as in PyTorch.
    """
    x = _input(x, "x", ndim=4)
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise OpInputError(f"kernel and stride must be >= 1 and padding >= 0, got {kernel_size!r}, "
                           f"{stride!r}, {padding!r}")
    if 2 * ph > kh or 2 * pw > kw:
        raise OpInputError(f"padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    n, c, h, w = x.shape

    def size(i, k, s, p):
        span = i + 2 * p - k + (s - 1 if ceil_mode else 0)
        o = span // s + 1 if span >= 0 else 0
        return o - 1 if ceil_mode and o > 0 and (o - 1) * s >= i + p else o
    oh, ow = size(h, kh, sh, ph), size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise OpInputError(f"the pool window {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    out = torch.empty((n, c, oh, ow), dtype=torch.float32)
    if out.numel():
        _C.max_pool2d(x.numpy(), (kh, kw, sh, sw, ph, pw, bool(ceil_mode)), out.numpy())
    return out
