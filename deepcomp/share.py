"""Weight sharing: 1-D k-means per layer, centroid inits, trained quantization.

k-means runs over a layer's surviving (nonzero) weights only, with ``2**bits``
clusters. In one dimension Lloyd's algorithm needs no distance matrix: the values are
sorted once, the nearest-centroid assignment of sorted centroids is a set of contiguous
segments cut at the midpoints between neighbours (``np.searchsorted``), and each
centroid update is a segment mean read from prefix sums. One iteration is
O(k log n); the sort is the only O(n log n) step.

Centroid inits (``values`` = the surviving weights, ``k`` = 2**bits):
    linear    k points evenly spaced from min to max (the paper's best)
    density   the empirical quantiles at probabilities (i + 0.5) / k, i = 0..k-1, taken
              as ``sorted[ceil(p * n) - 1]`` (evenly spaced on the CDF's y-axis)
    forgy     k distinct weights drawn at random (numpy default_rng(seed))
    kmeans++  first centroid uniform at random, each next one drawn with probability
              proportional to its squared distance to the nearest chosen centroid
When a layer has no more than k distinct surviving values, the codebook is exactly
those values, so sharing an already-shared tensor changes nothing.

Trained quantization (``quantize_model``): a parametrization makes each shared layer's
weight ``codebook[index]`` (pruned entries exactly 0). Its backward gives each centroid
the sum of the gradients of its member weights; pruned weights get no gradient.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from deepcomp.errors import DeepcompError

INITS = ("linear", "density", "forgy", "kmeans++")


class ShareSpecError(DeepcompError):
    """Weight-sharing options (bits, init) cannot be used."""


# ----------------------------------------------------------------------------- init

def _check_init(init: str) -> None:
    if init not in INITS:
        raise ShareSpecError(f"unknown centroid init {init!r}; use one of {', '.join(INITS)}")


def init_centroids(values: np.ndarray, k: int, init: str = "linear", seed: int = 0,
                   sorted_values: np.ndarray | None = None) -> np.ndarray:
    """k initial centroids (float64, ascending) for 1-D ``values``."""
    _check_init(init)
    v = np.sort(np.asarray(values, dtype=np.float64).ravel()) if sorted_values is None \
        else sorted_values
    n = v.size
    if n == 0:
        return np.zeros(k, dtype=np.float64)
    if init == "linear":
        c = np.linspace(v[0], v[-1], k)
    elif init == "density":
        p = (np.arange(k) + 0.5) / k
        idx = np.clip(np.ceil(p * n).astype(np.int64) - 1, 0, n - 1)
        c = v[idx]
    elif init == "forgy":
        rng = np.random.default_rng(seed)
        c = v[rng.choice(n, size=min(k, n), replace=False)]
        if c.size < k:
            c = np.concatenate([c, np.full(k - c.size, c[-1])])
    else:  # kmeans++
        rng = np.random.default_rng(seed)
        chosen = [v[rng.integers(n)]]
        d2 = (v - chosen[0]) ** 2
        for _ in range(1, k):
            total = d2.sum()
            if total <= 0:  # every value already is a centroid
                chosen.append(chosen[-1])
                continue
            # Inverse-CDF draw on the D^2 weights, exact in float64.
            cdf = np.cumsum(d2)
            j = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
            j = min(j, n - 1)
            chosen.append(v[j])
            np.minimum(d2, (v - v[j]) ** 2, out=d2)
        c = np.asarray(chosen)
    return np.sort(c.astype(np.float64))


# ----------------------------------------------------------------------------- k-means

@dataclass
class KMeansResult:
    centroids: np.ndarray     # float64 [k], ascending
    labels: np.ndarray        # int64 [n], cluster of each input value (input order)
    losses: list[float]       # sum of squared errors after each assignment step
    iterations: int


def _segments(sv: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Start offsets (k + 1 entries) of each centroid's segment in sorted values ``sv``."""
    mids = (c[:-1] + c[1:]) * 0.5
    # side='right': a value exactly on a midpoint goes to the lower centroid.
    inner = np.searchsorted(sv, mids, side="right")
    return np.concatenate([[0], inner, [sv.size]])


def kmeans_1d(values, k: int, init: str = "linear", seed: int = 0, max_iter: int = 100,
              tol: float = 0.0, weights=None) -> KMeansResult:
    """Lloyd's k-means in one dimension (see the module docstring).

    ``weights`` (non-negative, one per value) makes it weighted k-means: each centroid is
    the weighted mean of its segment and the loss the weighted squared error. The
    nearest-centroid assignment does not depend on the weights, so the segments are cut
    as before.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if k < 1:
        raise ShareSpecError(f"need at least one cluster, got k={k}")
    wt = None
    if weights is not None:
        wt = np.asarray(weights, dtype=np.float64).ravel()
        if wt.size != n or not np.all(np.isfinite(wt)) or (wt.size and wt.min() < 0):
            raise ShareSpecError(f"k-means weights must be {n} finite non-negative numbers, one per value")
    order = np.argsort(x, kind="stable")
    sv = x[order]
    if n == 0:
        return KMeansResult(np.zeros(k), np.zeros(0, np.int64), [], 0)
    uniq = np.unique(sv)
    if uniq.size <= k:
        # Exact: every distinct value gets its own centroid (pad by repeating the last).
        c = np.concatenate([uniq, np.full(k - uniq.size, uniq[-1])])
        labels = np.searchsorted(uniq, x)
        return KMeansResult(c, labels.astype(np.int64), [0.0], 0)
    c = init_centroids(sv, k, init, seed, sorted_values=sv)
    sw = np.ones(n) if wt is None else wt[order]
    s0 = np.concatenate([[0.0], np.cumsum(sw)])
    s1 = np.concatenate([[0.0], np.cumsum(sw * sv)])
    s2 = np.concatenate([[0.0], np.cumsum(sw * sv * sv)])
    losses: list[float] = []
    it = 0
    for it in range(1, max_iter + 1):
        b = _segments(sv, c)
        cnt = s0[b[1:]] - s0[b[:-1]]  # the segment's weight (its count when unweighted)
        seg1 = s1[b[1:]] - s1[b[:-1]]
        seg2 = s2[b[1:]] - s2[b[:-1]]
        # SSE of the assignment just made, from prefix sums: sum (x - c)^2 per segment.
        loss = float(np.maximum(seg2 - 2.0 * c * seg1 + cnt * c * c, 0.0).sum())
        losses.append(loss)
        nonempty = cnt > 0
        new_c = np.where(nonempty, seg1 / np.where(nonempty, cnt, 1.0), c)
        # Float rounding can nudge a segment mean a hair outside its range; clamping
        # to the segment's own extremes keeps the centroids sorted.
        lo = sv[np.minimum(b[:-1], n - 1)]
        hi = sv[np.maximum(b[1:] - 1, 0)]
        new_c = np.where(nonempty, np.clip(new_c, lo, hi), new_c)
        new_c = np.sort(new_c)
        shift = float(np.max(np.abs(new_c - c)))
        c = new_c
        if shift <= tol:
            break
    b = _segments(sv, c)
    sorted_labels = np.repeat(np.arange(k, dtype=np.int64), np.diff(b))
    labels = np.empty(n, dtype=np.int64)
    labels[order] = sorted_labels
    return KMeansResult(c, labels, losses, it)


def _layer_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) & 0x7FFFFFFF


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ShareSpecError(f"bits must be an integer from 1 to 8, got {bits!r}")
    return int(bits)


def cluster_tensor(w: Tensor, bits: int, init: str = "linear", seed: int = 0,
                   max_iter: int = 100, importance: Tensor | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means over the nonzero entries of ``w`` (weighted by ``importance``, same shape, if given).

    Returns (codebook float32 [2**bits], index int64 [nnz], flat positions int64 [nnz]).
    """
    bits = _check_bits(bits)
    _check_init(init)
    flat = w.detach().reshape(-1).to(torch.float32).cpu().numpy()
    pos = np.flatnonzero(flat)
    weights = None
    if importance is not None:
        if tuple(importance.shape) != tuple(w.shape):
            raise ShareSpecError(f"importance has shape {tuple(importance.shape)}, the weight "
                                 f"{tuple(w.shape)}; give one number per weight")
        weights = importance.detach().reshape(-1).to(torch.float64).cpu().numpy()[pos]
    res = kmeans_1d(flat[pos], 2 ** bits, init, seed, max_iter=max_iter, weights=weights)
    return res.centroids.astype(np.float32), res.labels, pos


def share_tensor(w: Tensor, bits: int, init: str = "linear", seed: int = 0,
                 importance: Tensor | None = None) -> Tensor:
    """``w`` with every nonzero weight replaced by its centroid; zeros stay +0.0.

    ``importance`` (same shape, >= 0): weighted k-means, so that the weights whose
    errors cost the model most are matched most closely (see deepcomp.oneshot).
    """
    if not w.is_floating_point():
        raise ShareSpecError(f"can only share floating tensors, got {w.dtype}")
    codebook, labels, pos = cluster_tensor(w, bits, init, seed, importance=importance)
    out = np.zeros(w.numel(), dtype=np.float32)
    # + 0.0 turns a -0.0 centroid into +0.0.
    out[pos] = codebook[labels] + np.float32(0.0)
    return torch.from_numpy(out).reshape(w.shape).to(dtype=w.dtype, device=w.device)


def layer_kind(name: str, t: Tensor) -> str | None:
    """'fc' for 2-D weights, 'conv' for 4-D weights, None for what is never shared."""
    if not (name.endswith("weight") and t.is_floating_point()):
        return None
    return {2: "fc", 4: "conv"}.get(t.dim())


def bits_for(name: str, t: Tensor, bits_spec: dict) -> int | None:
    """Bits for a tensor: by parameter name, then module name, then its kind."""
    kind = layer_kind(name, t)
    if kind is None:
        return None
    module = name.rsplit(".", 1)[0] if "." in name else name
    for key in (name, module, kind):
        if key in bits_spec:
            return bits_spec[key]
    return None


def parse_bits(text: str) -> dict[str, int]:
    """'fc=5,conv=8' (or per layer, 'fc1=6') -> {'fc': 5, 'conv': 8}."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        k, eq, v = part.partition("=")
        try:
            if not eq:
                raise ValueError
            out[k.strip()] = _check_bits(int(v))
        except ValueError:
            raise ShareSpecError(f"bad bits spec {part!r} in {text!r}; use e.g. fc=5,conv=8") from None
    if not out:
        raise ShareSpecError(f"empty bits spec {text!r}; use e.g. fc=5,conv=8")
    return out


def share_state_dict(sd: dict[str, Tensor], bits_spec: dict, init: str = "linear",
                     seed: int = 0, progress: bool = False) -> dict[str, Tensor]:
    """Share every fc (2-D) / conv (4-D) weight named by ``bits_spec``; the rest passes through."""
    from deepcomp.progress import element_bar

    _check_init(init)
    for v in bits_spec.values():
        _check_bits(v)
    todo = {n: bits_for(n, t, bits_spec) for n, t in sd.items()}
    out = {}
    with element_bar([sd[n] for n, b in todo.items() if b is not None], "share", progress) as done:
        for n, t in sd.items():
            b = todo[n]
            out[n] = t if b is None else done(share_tensor(t, b, init, _layer_seed(seed, n)), t)
    return out


# ----------------------------------------------------------------------------- trained quantization

class _CodebookLookup(torch.autograd.Function):
    """weight.flat[pos] = codebook[index], 0 elsewhere; d codebook = per-cluster sum of d weight."""

    @staticmethod
    def forward(ctx, codebook: Tensor, index: Tensor, pos: Tensor, numel: int) -> Tensor:
        out = codebook.new_zeros(numel)
        out[pos] = codebook[index]
        ctx.save_for_backward(index, pos)
        ctx.k = codebook.numel()
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        index, pos = ctx.saved_tensors
        g = grad_out.new_zeros(ctx.k).index_add_(0, index, grad_out[pos])
        return g, None, None, None


class SharedWeight(nn.Module):
    """Parametrization: the weight is ``codebook[index]`` at the kept positions, else 0."""

    def __init__(self, codebook: np.ndarray, index: np.ndarray, pos: np.ndarray,
                 shape: tuple, dtype=torch.float32):
        super().__init__()
        self.codebook = nn.Parameter(torch.as_tensor(codebook, dtype=torch.float32).clone())
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.int64).clone())
        self.register_buffer("pos", torch.as_tensor(pos, dtype=torch.int64).clone())
        self.shape = tuple(shape)
        self.numel = int(np.prod(shape))
        self.dtype = dtype

    def forward(self, original: Tensor) -> Tensor:  # the original weight is ignored
        flat = _CodebookLookup.apply(self.codebook, self.index, self.pos, self.numel)
        return flat.reshape(self.shape).to(self.dtype)


def quantize_model(model: nn.Module, bits_spec: dict, init: str = "linear",
                   seed: int = 0) -> dict[str, SharedWeight]:
    """Replace each fc/conv weight named by ``bits_spec`` with a trainable codebook.

    The original weights stop training (requires_grad False); ``model.parameters()``
    now yields the codebooks (plus every parameter that was not shared, e.g. biases).
    Returns {parameter name: SharedWeight}. Call ``finalize`` to bake the weights back.
    """
    _check_init(init)
    shared: dict[str, SharedWeight] = {}
    targets = []
    for mname, module in model.named_modules():
        for pname, p in list(module.named_parameters(recurse=False)):
            full = f"{mname}.{pname}" if mname else pname
            b = bits_for(full, p, bits_spec)
            if b is not None:
                targets.append((full, module, pname, p, b))
    for full, module, pname, p, b in targets:
        codebook, labels, pos = cluster_tensor(p, b, init, _layer_seed(seed, full))
        sw = SharedWeight(codebook, labels, pos, tuple(p.shape), p.dtype).to(p.device)
        parametrize.register_parametrization(module, pname, sw, unsafe=True)
        getattr(module.parametrizations, pname).original.requires_grad_(False)
        shared[full] = sw
    return shared


def finalize(model: nn.Module) -> nn.Module:
    """Bake every SharedWeight parametrization into a plain weight (in place)."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for pname in list(module.parametrizations.keys()):
                if any(isinstance(p, SharedWeight) for p in module.parametrizations[pname]):
                    parametrize.remove_parametrizations(module, pname, leave_parametrized=True)
                    getattr(module, pname).requires_grad_(True)
    return model
