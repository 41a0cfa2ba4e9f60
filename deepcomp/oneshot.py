"""One-shot allocation for pretrained models: per-tensor bits (and kept fraction), no retraining.

Two ways to say how much loss is acceptable, both reached through
``deepcomp.save(..., bits="auto", ...)`` and ``deepcomp encode --bits auto``:

``max_rel_error=E`` (no data)
    Each weight tensor on its own: the fewest bits in 8..2 whose relative L2
    reconstruction error ||W - Q(W)|| / ||W|| is at most E, where Q is the writer's
    k-means (same init, same per-layer seed as ``deepcomp.share``). With
    ``prune="auto"`` the kept fraction is searched too (magnitude pruning, then k-means
    on the survivors, the error measured against the dense W): for each kept fraction
    of ``KEEP_GRID`` the fewest bits within E, and of those pairs the one whose section
    the writer makes smallest (``deepcomp.codec.tensor_bytes``; ties go to more
    pruning). A tensor that no choice keeps within E is stored unshared (fp32, exact).

``calibration=inputs, min_cosine=C`` (a few model inputs)
    See ``calibrated_plan``: the file as small as the greedy below makes it while the
    worst per-sample cosine between the original and the compressed model's outputs
    on the calibration inputs stays >= C.

Either way the result is a ``OneShotPlan``: per tensor the bits, kept fraction,
measured error and the writer's section bytes; it is stored in the file's meta under
"oneshot" and printed by the command. The same inputs and seed give the same plan.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from deepcomp.errors import DeepcompError, ModelError

AUTO_BITS = (8, 7, 6, 5, 4, 3, 2)
# Kept fractions tried with prune="auto" (magnitude cut). Coarse at the dense end, where
# one-shot pruning of a pretrained layer already costs a few percent of its norm.
KEEP_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)
# Floor of the estimated distortion of a move in the greedy, so that free moves (no
# measured loss) rank by the bytes they save rather than all tying at infinity.
_EPS_LOSS = 1e-9
# The calibrated greedy's level above 8 bits: the tensor stored unshared (exact fp32).
RAW = 32


class OneShotError(DeepcompError):
    """The one-shot allocation options cannot be used, or its target cannot be met."""


# ----------------------------------------------------------------------------- options

def check_max_rel_error(value) -> float:
    """A relative L2 error bound: a finite number > 0 (a string from the command line too)."""
    if isinstance(value, bool):
        value = None
    try:
        e = float(value)
    except (TypeError, ValueError):
        raise OneShotError(f"max_rel_error must be a number such as 0.05 (5 % relative L2 error), "
                           f"got {value!r}") from None
    if not math.isfinite(e) or e <= 0:
        raise OneShotError(f"max_rel_error must be a finite number above 0, such as 0.05; got {value!r}")
    return e


def check_min_cosine(value) -> float:
    if isinstance(value, bool):
        value = None
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise OneShotError(f"min_cosine must be a number such as 0.99, got {value!r}") from None
    if not math.isfinite(c) or not -1.0 < c <= 1.0:
        raise OneShotError(f"min_cosine must be above -1 and at most 1 (e.g. 0.99); got {value!r}")
    return c


WEIGHTINGS = (None, "activations")


def check_weighting(value) -> str | None:
    """k-means weighting of the calibrated mode: None (plain) or 'activations'."""
    if value in (None, "none", "plain"):
        return None
    if value not in WEIGHTINGS:
        raise OneShotError(f"unknown k-means weighting {value!r}; use 'activations' (with calibration) "
                           "or None")
    return value


def is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


# ----------------------------------------------------------------------------- plan

@dataclass
class OneShotPlan:
    """Per tensor: bits (None = stored unshared), kept fraction, error and section bytes."""

    bits: dict[str, int | None]
    keep: dict[str, float]
    error: dict[str, float] = field(default_factory=dict)     # relative L2 error per tensor
    bytes: dict[str, int] = field(default_factory=dict)       # the writer's section bytes
    target: dict = field(default_factory=dict)
    min_cosine: float | None = None                           # measured on the calibration set
    seed: int = 0
    init: str = "linear"

    @property
    def tensor_bytes(self) -> int:
        return sum(self.bytes.values())

    def to_dict(self) -> dict:
        layers = {}
        for n in self.bits:
            row = {"bits": self.bits[n], "keep": round(self.keep[n], 6)}
            if n in self.error:
                row["rel_error"] = round(self.error[n], 6)
            if n in self.bytes:
                row["bytes"] = self.bytes[n]
            layers[n] = row
        out = {"method": "oneshot", "target": self.target, "seed": self.seed, "init": self.init,
               "layers": layers}
        if self.min_cosine is not None:
            out["min_cosine"] = round(self.min_cosine, 6)
        return out

    def table(self) -> str:
        w = max([5] + [len(n) for n in self.bits])
        rows = [f"{'tensor':<{w}} {'bits':>4} {'kept':>7} {'rel err':>8} {'bytes':>10}"]
        for n in self.bits:
            b = self.bits[n]
            e = self.error.get(n)
            rows.append(f"{n:<{w}} {('raw' if b is None else b):>4} {100 * self.keep[n]:>6.1f}% "
                        f"{'-' if e is None else f'{e:.4f}':>8} {self.bytes.get(n, '-'):>10}")
        rows.append(f"{'weights total':<{w}} {'':>4} {'':>7} {'':>8} {self.tensor_bytes:>10}")
        if self.min_cosine is not None:
            rows.append(f"min cosine on the calibration inputs: {self.min_cosine:.5f}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# ----------------------------------------------------------------------------- pieces

def candidates(sd: Mapping) -> list[str]:
    """The tensors the writer would share: float32 weights with at least two dims."""
    from deepcomp.codec.writer import _is_weight

    return [n for n, t in sd.items() if isinstance(t, torch.Tensor) and _is_weight(t)]


def rel_error(w: torch.Tensor, q: torch.Tensor) -> float:
    a = w.detach().reshape(-1).to(torch.float64)
    b = q.detach().reshape(-1).to(torch.float64)
    norm = float(torch.linalg.vector_norm(a))
    if norm == 0.0:
        return 0.0 if bool(torch.equal(a, b)) else math.inf
    return float(torch.linalg.vector_norm(a - b)) / norm


def _pruned(w: torch.Tensor, keep: float) -> torch.Tensor:
    from deepcomp.plan import _pruned as cut

    return cut(w, keep)


def quantize(name: str, w: torch.Tensor, bits: int, *, keep: float = 1.0, init: str = "linear",
             seed: int = 0, importance: torch.Tensor | None = None) -> torch.Tensor:
    """Magnitude-prune to ``keep`` (1.0: no cut), then k-means at ``bits`` as the writer shares
    (weighted by ``importance`` if given)."""
    from deepcomp.share import _layer_seed, share_tensor

    return share_tensor(_pruned(w, keep), bits, init, _layer_seed(seed, name), importance=importance)


class Cache:
    """Quantized tensors, section prices and measured distortions, each computed once.

    k-means on a large embedding and the v2 encoder are the slow parts; pass one Cache
    to several allocations of the same weights (e.g. a benchmark trying several
    targets) and each (tensor, kept fraction, bits) is clustered and priced once.
    """

    def __init__(self, init: str = "linear", seed: int = 0, fp16: bool = False, coder: str = "auto"):
        self.init, self.seed, self.fp16, self.coder = init, seed, fp16, coder
        self.q: dict[tuple, torch.Tensor] = {}
        self.prices: dict[tuple, int] = {}
        self.loss: dict[tuple, np.ndarray] = {}

    def check(self, init: str, seed: int, fp16: bool, coder: str = "auto") -> None:
        if (init, seed, fp16, coder) != (self.init, self.seed, self.fp16, self.coder):
            raise OneShotError("a one-shot Cache serves one (init, seed, fp16, coder); make a new one")

    def quantized(self, name: str, w: torch.Tensor, bits: int, keep: float = 1.0,
                  importance: torch.Tensor | None = None, weighting: str | None = None) -> torch.Tensor:
        """``weighting`` names where ``importance`` came from: it keys the cache (a Cache
        serves one calibration set)."""
        k = (name, float(keep), int(bits)) + ((weighting,) if importance is not None else ())
        if k not in self.q:
            self.q[k] = quantize(name, w, bits, keep=keep, init=self.init, seed=self.seed,
                                 importance=importance)
        return self.q[k]

    def price(self, name: str, key: tuple, t: torch.Tensor) -> int:
        from deepcomp.codec import tensor_bytes

        k = (name, *key)
        if k not in self.prices:
            self.prices[k] = tensor_bytes(name, t, fp16=self.fp16, coder=self.coder)
        return self.prices[k]


# ----------------------------------------------------------------------------- rel-error plan

def rel_error_plan(sd: Mapping, max_rel_error, *, prune_auto: bool = False, init: str = "linear",
                   seed: int = 0, fp16: bool = False, keeps=KEEP_GRID, bits_grid=AUTO_BITS,
                   log=None, cache: Cache | None = None, progress: bool = False,
                   coder: str = "auto") -> tuple[dict, OneShotPlan]:
    """(state_dict with the chosen weights shared, plan) for the ``max_rel_error`` mode;
    ``coder``: the writer's coder the sections are priced with."""
    from deepcomp.progress import element_bar

    e = check_max_rel_error(max_rel_error)
    cache = cache or Cache(init, seed, fp16, coder)
    cache.check(init, seed, fp16, coder)
    out = dict(sd)
    plan = OneShotPlan({}, {}, target={"max_rel_error": e, "prune": "auto" if prune_auto else None},
                       seed=seed, init=init)
    fewest_first = sorted(bits_grid)
    names = candidates(sd)
    with element_bar([sd[n] for n in names], "bits auto", progress) as done:
        for n in names:
            _rel_error_choice(sd, n, e, prune_auto, keeps, fewest_first, bits_grid, cache, plan,
                              out, log)
            done(None, sd[n])
    return out, plan


def _rel_error_choice(sd, n, e, prune_auto, keeps, fewest_first, bits_grid, cache, plan, out, log):
    """Choose (keep, bits) for tensor ``n``: the smallest section within error ``e``."""
    w = sd[n]
    options = []  # (keep, bits, error, tensor)
    start = 0
    for keep in (keeps if prune_auto else (1.0,)):
        # Pruning alone already costs this much; no bits can bring the error below it.
        cut = _pruned(w, keep) if keep < 1.0 else w
        if rel_error(w, cut) > e:
            break
        # Less kept never needs fewer bits, so each keep starts where the last one found.
        found = None
        for i in range(start, len(fewest_first)):
            q = cache.quantized(n, w, fewest_first[i], keep)
            err = rel_error(w, q)
            if err <= e:
                found = (keep, fewest_first[i], err, q)
                start = i
                break
        if found is None:
            break
        options.append(found)
    if not options:
        plan.bits[n], plan.keep[n] = None, 1.0
        plan.bytes[n] = cache.price(n, ("raw",), w)
        if log:
            log(f"[oneshot] {n}: no choice within {e:g} even at {max(bits_grid)} bits; stored unshared")
        return
    priced = [(cache.price(n, (k, b), q), k, b, err, q) for k, b, err, q in options]
    # Smallest section wins; among equal sizes the one that keeps least.
    size, keep, bits, err, q = min(priced, key=lambda r: (r[0], r[1]))
    out[n] = q
    plan.bits[n], plan.keep[n], plan.error[n], plan.bytes[n] = bits, keep, err, size


# ----------------------------------------------------------------------------- calibrated plan

def _check_calibration(calibration) -> list[tuple]:
    if isinstance(calibration, (torch.Tensor, str, bytes)) or not isinstance(calibration, Sequence):
        raise OneShotError("calibration must be a list of model inputs (each a tensor or a tuple of "
                           f"positional tensors), not a {type(calibration).__name__}")
    if len(calibration) == 0:
        raise OneShotError("calibration is an empty list; give at least one model input")
    items = []
    for i, item in enumerate(calibration):
        args = (item,) if isinstance(item, torch.Tensor) else item
        if not isinstance(args, tuple) or not args or not all(isinstance(a, torch.Tensor) for a in args):
            raise OneShotError(f"calibration[{i}] is a {type(item).__name__}; each item must be a tensor "
                               "or a tuple of positional tensors")
        items.append(args)
    return items


def _first_tensor(out, where: str = "output") -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        values = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = list(out)
    else:
        values = []
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise ModelError(f"the model's {where} is a {type(out).__name__} without a tensor in it; the "
                     "calibration compares a tensor, or the first tensor of a tuple or dict")


@torch.no_grad()
def _outputs(model: nn.Module, items: list[tuple]) -> list[torch.Tensor]:
    outs = []
    for args in items:
        y = _first_tensor(model(*args)).detach().to(torch.float64)
        outs.append(y.reshape(1, -1) if y.dim() == 0 else y.reshape(y.shape[0], -1))
    return outs


def _per_sample_loss(ref: list[torch.Tensor], outs: list[torch.Tensor]) -> np.ndarray:
    """1 - cosine of each sample's flattened output (0: same direction)."""
    res = []
    for a, b in zip(ref, outs):
        na, nb = a.norm(dim=1), b.norm(dim=1)
        cos = (a * b).sum(1) / (na * nb)
        # Two zero outputs agree; one zero output against a nonzero one does not.
        cos = torch.where((na == 0) & (nb == 0), torch.ones_like(cos), torch.nan_to_num(cos, nan=0.0))
        res.append(1.0 - cos)
    return torch.cat(res).numpy()


class _Weights:
    """Swaps the candidate tensors of a private copy of the model."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.model = copy.deepcopy(model).eval()
        held = self.model.state_dict(keep_vars=True)
        self.slots = {n: held[n] for n in names}
        self.original = {n: t.detach().clone() for n, t in self.slots.items()}

    @torch.no_grad()
    def set(self, chosen: Mapping[str, torch.Tensor]) -> None:
        for n, slot in self.slots.items():
            slot.data.copy_(chosen.get(n, self.original[n]))


def _activation_importance(model: nn.Module, names: list[str], items: list[tuple]) -> dict:
    """Per Linear weight among ``names``: the mean square of each input feature on the
    calibration inputs, broadcast over the output rows.

    A Linear's output error is (W - Q) x, whose expected square is, keeping only the
    diagonal of E[x x^T], sum_ij (W - Q)_ij^2 E[x_j^2]: weighting k-means by E[x_j^2]
    minimises that instead of the plain weight error. A floor of 1 % of the mean keeps
    inputs that the calibration set never excites from being ignored altogether.
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook(pname):
        def fn(mod, args):
            x = args[0].detach().to(torch.float64)
            x = x.reshape(-1, x.shape[-1])
            sums[pname] = sums.get(pname, 0) + (x * x).sum(0)
            counts[pname] = counts.get(pname, 0) + x.shape[0]
        return fn

    for mname, mod in model.named_modules():
        pname = f"{mname}.weight" if mname else "weight"
        if isinstance(mod, nn.Linear) and pname in names:
            hooks.append(mod.register_forward_pre_hook(hook(pname)))
    try:
        with torch.no_grad():
            _outputs(model, items)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for pname, s2 in sums.items():
        m = (s2 / max(counts[pname], 1)).to(torch.float32)
        m = m + 0.01 * m.mean()
        w = model.get_parameter(pname)
        out[pname] = m.expand(w.shape[0], -1).contiguous()
    return out


def calibrated_plan(model: nn.Module, calibration, min_cosine, *, prune: str | None = None,
                    init: str = "linear", seed: int = 0, fp16: bool = False, bits_grid=AUTO_BITS,
                    log=None, cache: Cache | None = None, progress: bool = False,
                    weighting: str | None = None, coder: str = "auto") -> tuple[dict, OneShotPlan]:
    """(state_dict with the chosen weights shared, plan) keeping min cosine >= ``min_cosine``.

    Method. Distortions of separately quantized layers add, to first order: with output
    y and small independent perturbations d_i from layers i, 1 - cos(y, y + sum d_i) is
    about |sum d_i|^2 / 2|y|^2 (the part of the error orthogonal to y), and independent
    errors add in squared norm. So each candidate tensor is measured alone at every bit
    width (the others exact; unshared fp32 is a level too, with no loss), giving per calibration sample a loss 1 - cos; the loss of an
    allocation is estimated as the per-sample sum, and its worst sample is the one the
    target constrains. From the exact model, a greedy takes the move (one tensor to any
    fewer bits) with the most bytes saved (the writer's own section sizes,
    ``tensor_bytes``) per unit of the tensor's worst per-sample loss increase, while the
    estimated worst loss stays within 1 - C; this is the rate-distortion slope rule, which
    is optimal for the additive model with convex per-layer curves. The estimate is then
    checked by running the model: if the measured minimum cosine misses C, the longest
    prefix of the greedy's moves that holds is found by bisection (the moves only add
    loss), and the moves after it are retried one by one, each kept only if the measured
    minimum still holds. The target is thus always met on the calibration inputs as
    measured, never merely as estimated. Cost: bits x tensors + ~log(moves) + retries
    passes over the calibration inputs, and one price per (tensor, bits).

    ``prune``: an optional fixed pruning spec (``std:S`` / ``sparsity:P``) applied before.
    ``weighting="activations"``: k-means of each Linear weight weighted by its inputs'
    mean squares on the calibration inputs (``_activation_importance``); other tensors
    are clustered plainly.
    """
    c = check_min_cosine(min_cosine)
    if not isinstance(model, nn.Module):
        raise OneShotError("calibration needs the model itself (an nn.Module), not a state_dict")
    items = _check_calibration(calibration)
    cache = cache or Cache(init, seed, fp16, coder)
    cache.check(init, seed, fp16, coder)
    say = log or (lambda s: None)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if prune:
        from deepcomp.prune import prune_state_dict

        sd, _ = prune_state_dict(sd, prune)
    names = candidates(sd)
    if not names:
        raise OneShotError("the model has no weight tensors to share (float32, 2 or more dims)")
    grid = sorted({int(b) for b in bits_grid}, reverse=True)
    # The greedy starts from the exact model: a tensor too sensitive for any codebook
    # (or too small to gain from one) may stay unshared. With fp16 that copy would be
    # rounded, which the measurement would not see, so there every tensor is shared.
    if not fp16:
        grid = [RAW] + grid
    top = grid[0]
    slots = _Weights(model, names)
    with torch.no_grad():
        ref = _outputs(slots.model, items)
    budget = 1.0 - c
    base = dict(sd) if prune else {}

    weighting = check_weighting(weighting)
    importance = _activation_importance(model, names, items) if weighting else {}

    def weight(n: str, b: int) -> torch.Tensor:
        return sd[n] if b == RAW else cache.quantized(n, sd[n], b, importance=importance.get(n),
                                                      weighting=weighting)

    def measure(choice: Mapping[str, int]) -> np.ndarray:
        slots.set({**base, **{n: weight(n, b) for n, b in choice.items()}})
        return _per_sample_loss(ref, _outputs(slots.model, items))

    # Per tensor alone at each bit width (the cache key keeps pruned and dense apart).
    tag = f"cal:{prune or ''}"
    loss: dict[str, dict[int, np.ndarray]] = {}
    price: dict[str, dict[int, int]] = {}
    from deepcomp.progress import progress_bar

    bar = progress_bar(len(names) * len(grid), "bits auto: measure", enabled=progress, unit="pass")
    for i, n in enumerate(names):
        loss[n], price[n] = {}, {}
        for b in grid:
            wtag = (weighting,) if n in importance and b != RAW else ()
            key = (tag, n, b) + wtag
            if key not in cache.loss:
                cache.loss[key] = measure({n: b})
            loss[n][b] = cache.loss[key]
            price[n][b] = cache.price(n, (1.0, b) + wtag if b != RAW else (f"raw{tag}",), weight(n, b))
            bar.update(1)
        say(f"[oneshot] measured {i + 1}/{len(names)} {n}: worst 1-cos "
            + " ".join(f"{b}:{loss[n][b].max():.1e}" for b in grid if b != RAW))

    bar.close()
    cur = {n: top for n in names}
    start = measure(cur)
    if start.max() > budget:
        raise OneShotError(f"min_cosine {c:g} is not reached even with every weight at "
                           f"{'its pruned value' if top == RAW else f'{top} bits'} "
                           f"(measured minimum {1 - start.max():.5f}); lower min_cosine")
    est = sum(loss[n][top] for n in names)
    moves: list[tuple[str, int]] = []
    while True:
        best = None
        for n in names:
            for b in grid:
                if b >= cur[n]:
                    continue
                new = est - loss[n][cur[n]] + loss[n][b]
                if new.max() > budget:
                    continue
                saved = price[n][cur[n]] - price[n][b]
                if saved <= 0:
                    continue
                cost = max(float((loss[n][b] - loss[n][cur[n]]).max()), _EPS_LOSS)
                slope = saved / cost
                if best is None or slope > best[0]:
                    best = (slope, n, b, new)
        if best is None:
            break
        _, n, b, est = best
        moves.append((n, b))
        cur[n] = b

    def replay(k: int) -> dict[str, int]:
        ch = {n: top for n in names}
        for n, b in moves[:k]:
            ch[n] = b
        return ch

    final = measure(cur)
    tried = 1
    if final.max() > budget:
        lo, hi = 0, len(moves)  # replay(lo) holds (lo = 0 was measured), replay(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            tried += 1
            if measure(replay(mid)).max() <= budget:
                lo = mid
            else:
                hi = mid
        cur = replay(lo)
        frozen = {moves[lo][0]}  # the move that broke the target
        for n, b in moves[lo + 1:]:
            if n in frozen or b >= cur[n]:
                continue
            trial = {**cur, n: b}
            tried += 1
            if measure(trial).max() <= budget:
                cur = trial
            else:
                frozen.add(n)
        final = measure(cur)
    say(f"[oneshot] greedy took {len(moves)} moves; {tried} checks on the calibration inputs")

    out = dict(sd)
    plan = OneShotPlan({}, {}, target={"min_cosine": c, "calibration_items": len(items),
                                       "calibration_samples": int(start.size),
                                       **({"prune": prune} if prune else {}),
                                       **({"weighting": weighting} if weighting else {})},
                       seed=seed, init=init, min_cosine=float(1.0 - final.max()))
    for n in names:
        q = weight(n, cur[n])
        out[n] = q
        plan.bits[n], plan.keep[n] = (None if cur[n] == RAW else cur[n]), _kept(sd[n])
        plan.error[n] = rel_error(model.state_dict()[n], q)
        plan.bytes[n] = price[n][cur[n]]
    return out, plan


def _kept(w: torch.Tensor) -> float:
    return float((w != 0).sum()) / max(1, w.numel())


# ----------------------------------------------------------------------------- entry point

def apply(obj, *, prune=None, max_rel_error=None, calibration=None, min_cosine=None,
          init: str = "linear", seed: int = 0, fp16: bool = False, log=None,
          cache: Cache | None = None, progress: bool = False, weighting: str | None = None,
          coder: str = "auto"):
    """``bits="auto"`` for ``save``: returns (the model or state_dict with shared weights, plan).

    A module comes back as a copy with its weights replaced, so the graph is captured
    from exactly the weights the file stores.
    """
    from deepcomp.share import _check_init

    _check_init(init)
    have_cal = calibration is not None or min_cosine is not None
    if have_cal and (calibration is None or min_cosine is None):
        raise OneShotError("calibration and min_cosine go together: bits='auto', calibration=inputs, "
                           "min_cosine=0.99")
    if have_cal and max_rel_error is not None:
        raise OneShotError("choose one target for bits='auto': max_rel_error (no data) or "
                           "calibration with min_cosine, not both")
    if not have_cal and max_rel_error is None:
        raise OneShotError("bits='auto' needs a target: max_rel_error=E (e.g. 0.05), or "
                           "calibration=inputs with min_cosine=C")
    prune_auto = is_auto(prune)
    weighting = check_weighting(weighting)
    if weighting and not have_cal:
        raise OneShotError(f"weighting={weighting!r} weighs k-means by the calibration inputs; "
                           "give calibration=inputs with min_cosine=C")
    if have_cal:
        if prune_auto:
            raise OneShotError("prune='auto' is chosen by max_rel_error; with calibration give a fixed "
                               "prune spec (std:S or sparsity:P) or none")
        sd, plan = calibrated_plan(obj, calibration, min_cosine, prune=prune, init=init, seed=seed,
                                   fp16=fp16, log=log, cache=cache, progress=progress,
                                   weighting=weighting, coder=coder)
    else:
        if isinstance(obj, nn.Module):
            sd = {k: v.detach().cpu() for k, v in obj.state_dict().items()}
        elif isinstance(obj, Mapping):
            sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in obj.items()}
        else:
            raise ModelError(f"save() takes an nn.Module or a state_dict, not {type(obj).__name__}")
        if prune and not prune_auto:
            from deepcomp.prune import prune_state_dict

            sd, _ = prune_state_dict(sd, prune)
        sd, plan = rel_error_plan(sd, max_rel_error, prune_auto=prune_auto, init=init, seed=seed,
                                  fp16=fp16, log=log, cache=cache, progress=progress, coder=coder)
        if prune and not prune_auto:
            plan.target["prune"] = prune
        for n in plan.bits:
            plan.keep[n] = _kept(sd[n]) if plan.bits[n] is not None else plan.keep[n]
    if isinstance(obj, nn.Module):
        model = copy.deepcopy(obj)
        model.load_state_dict(sd)
        return model, plan
    return sd, plan
