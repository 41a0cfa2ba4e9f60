"""Magnitude pruning: thresholds, masks that hold through training, and reports.

Only the weights of Linear / Conv layers are pruned (floating tensors named ``*weight``
with two or more dimensions); biases and normalisation parameters are kept.

Thresholds
    ``std:S``        per layer, drop |w| <= S * std(W), the paper's quality parameter.
                     std is the population standard deviation of all the layer's
                     entries (pruned zeros included, so a repeated cut keeps tightening).
    ``sparsity:P``   per layer, drop the fraction P of weights with the smallest |w|.
    ``global:P``     one magnitude cut over all prunable layers together so that a
                     fraction P of all their weights is dropped.
A spec may add per-layer overrides after a comma, by parameter or module name:
``sparsity:0.9,fc3=0.74`` or ``std:1.0,conv1=0.5``.

Masks survive any optimizer (SGD with momentum, Adam / AdamW with weight decay)
through ``MaskSet.attach``: a gradient hook zeroes the pruned entries' gradients and an
optimizer step post-hook zeroes the pruned weights again after every step, so neither
momentum nor decoupled weight decay can bring a weight back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deepcomp.errors import DeepcompError


class PruneSpecError(DeepcompError):
    """A pruning spec string cannot be parsed."""


# ----------------------------------------------------------------------------- masks

def std_threshold(w: Tensor, s: float) -> float:
    """``s`` times the population standard deviation of all entries of ``w``."""
    return float(s) * float(w.detach().double().std(unbiased=False))


def mask_std(w: Tensor, s: float) -> Tensor:
    """True where |w| > s * std(w) (the weights that stay)."""
    return w.detach().abs() > std_threshold(w, s)


def _keep_count(numel: int, sparsity: float) -> int:
    if not 0.0 <= sparsity <= 1.0:
        raise PruneSpecError(f"sparsity must lie in [0, 1], got {sparsity}")
    return int(round((1.0 - sparsity) * numel))


def mask_sparsity(w: Tensor, sparsity: float) -> Tensor:
    """Keep the ``round((1 - sparsity) * numel)`` entries of largest |w| (ties: lowest index)."""
    flat = w.detach().reshape(-1).abs()
    k = _keep_count(flat.numel(), sparsity)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        # A stable descending sort makes the choice among equal magnitudes deterministic.
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:k]] = True
    return mask.reshape(w.shape)


def global_threshold(weights: list[Tensor], sparsity: float) -> float:
    """The magnitude t such that dropping |w| <= t over all tensors drops ~``sparsity``."""
    flat = torch.cat([w.detach().reshape(-1).abs().float() for w in weights])
    drop = flat.numel() - _keep_count(flat.numel(), sparsity)
    if drop <= 0:
        return -1.0
    return float(torch.kthvalue(flat, drop).values)


def is_prunable(name: str, t: Tensor) -> bool:
    return name.endswith("weight") and t.dim() >= 2 and t.is_floating_point()


# ----------------------------------------------------------------------------- specs

@dataclass
class PruneSpec:
    kind: str                      # 'std' | 'sparsity' | 'global'
    value: float
    overrides: dict[str, float] = field(default_factory=dict)

    def value_for(self, param_name: str) -> float:
        module = param_name.rsplit(".", 1)[0] if "." in param_name else param_name
        for key in (param_name, module):
            if key in self.overrides:
                return self.overrides[key]
        return self.value


def parse_spec(spec: str | PruneSpec) -> PruneSpec:
    if isinstance(spec, PruneSpec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise PruneSpecError(
            f"bad prune spec {spec!r}; use 'std:S', 'sparsity:P' or 'global:P', "
            f"optionally followed by ',layer=value' overrides")
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if kind not in ("std", "sparsity", "global"):
        raise PruneSpecError(f"unknown prune kind {kind!r} in {spec!r}; use std, sparsity or global")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if not parts:
        raise PruneSpecError(f"prune spec {spec!r} has no value")
    try:
        value = float(parts[0])
        overrides = {}
        for p in parts[1:]:
            k, eq, v = p.partition("=")
            if not eq:
                raise ValueError(p)
            overrides[k.strip()] = float(v)
    except ValueError:
        raise PruneSpecError(f"bad number in prune spec {spec!r}") from None
    if kind == "global" and overrides:
        raise PruneSpecError("a global prune spec takes no per-layer overrides")
    for v in [value, *overrides.values()]:
        if kind == "std" and v < 0:
            raise PruneSpecError(f"std quality parameter must be >= 0, got {v}")
        if kind != "std" and not 0.0 <= v <= 1.0:
            raise PruneSpecError(f"sparsity must lie in [0, 1], got {v}")
    return PruneSpec(kind, value, overrides)


def compute_masks(tensors: dict[str, Tensor], spec: str | PruneSpec,
                  previous: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Masks (True = keep) for every prunable tensor; ANDed with ``previous`` if given."""
    spec = parse_spec(spec)
    names = [n for n, t in tensors.items() if is_prunable(n, t)]
    masks: dict[str, Tensor] = {}
    if spec.kind == "global":
        t = global_threshold([tensors[n] for n in names], spec.value)
        for n in names:
            masks[n] = tensors[n].detach().abs() > t
    else:
        for n in names:
            v = spec.value_for(n)
            masks[n] = mask_std(tensors[n], v) if spec.kind == "std" else \
                mask_sparsity(tensors[n], v)
    if previous:
        for n in names:
            if n in previous:
                masks[n] = masks[n] & previous[n].to(masks[n].device)
    return masks


# ----------------------------------------------------------------------------- reports

@dataclass
class LayerReport:
    name: str
    shape: tuple
    numel: int
    kept: int
    dead_out: int      # output units / filters left with no weight at all
    dead_in: int       # input units / channels no kept weight reads

    @property
    def density(self) -> float:
        return self.kept / self.numel if self.numel else 0.0


@dataclass
class PruneReport:
    layers: list[LayerReport]

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def density(self) -> float:
        return self.kept / self.numel if self.numel else 0.0

    def to_dict(self) -> dict:
        return {
            "layers": [dict(name=l.name, shape=list(l.shape), numel=l.numel, kept=l.kept,
                            density=l.density, dead_out=l.dead_out, dead_in=l.dead_in)
                       for l in self.layers],
            "numel": self.numel, "kept": self.kept, "density": self.density,
        }

    def table(self) -> str:
        rows = [f"{'layer':<24} {'shape':<18} {'kept':>9} {'density':>8} {'dead out':>9} {'dead in':>8}"]
        for l in self.layers:
            rows.append(f"{l.name:<24} {'x'.join(map(str, l.shape)):<18} {l.kept:>9} "
                        f"{100 * l.density:>7.2f}% {l.dead_out:>9} {l.dead_in:>8}")
        rows.append(f"{'total':<24} {'':<18} {self.kept:>9} {100 * self.density:>7.2f}%")
        return "\n".join(rows)


def layer_report(name: str, w: Tensor) -> LayerReport:
    nz = w.detach() != 0
    per_out = nz.reshape(nz.shape[0], -1).any(1)
    per_in = nz.transpose(0, 1).reshape(nz.shape[1], -1).any(1)
    return LayerReport(name, tuple(w.shape), w.numel(), int(nz.sum()),
                       int((~per_out).sum()), int((~per_in).sum()))


def report(tensors: dict[str, Tensor]) -> PruneReport:
    """Density and dead units of every prunable tensor, counting exact zeros."""
    return PruneReport([layer_report(n, t) for n, t in tensors.items() if is_prunable(n, t)])


def prune_state_dict(sd: dict[str, Tensor], spec: str | PruneSpec
                     ) -> tuple[dict[str, Tensor], PruneReport]:
    """Zero the pruned weights of a state_dict (one shot); returns (new_sd, report).

    Tensors that are not Linear/Conv weights are passed through unchanged (same objects).
    """
    masks = compute_masks(sd, spec)
    out = {}
    for n, t in sd.items():
        if n in masks:
            # where() rather than multiply: -0.0 and NaN * 0 would not give a clean +0.0.
            out[n] = torch.where(masks[n], t, torch.zeros((), dtype=t.dtype)).contiguous()
        else:
            out[n] = t
    return out, report(out)


# ----------------------------------------------------------------------------- training

class MaskSet:
    """Masks held on a model's parameters through training.

    ``attach(optimizer)`` installs the hooks; ``apply()`` zeroes the pruned weights now.
    Use it as a context manager, or call ``detach()`` to remove the hooks.
    """

    def __init__(self, model: nn.Module, masks: dict[str, Tensor]):
        params = dict(model.named_parameters())
        missing = [n for n in masks if n not in params]
        if missing:
            raise KeyError(f"masks name parameters the model lacks: {missing}")
        self.params = {n: params[n] for n in masks}
        self.masks = {n: m.to(device=params[n].device, dtype=torch.bool) for n, m in masks.items()}
        self._handles: list = []

    @classmethod
    def from_spec(cls, model: nn.Module, spec: str | PruneSpec,
                  previous: "MaskSet | None" = None) -> "MaskSet":
        tensors = {n: p for n, p in model.named_parameters()}
        prev = previous.masks if previous is not None else None
        return cls(model, compute_masks(tensors, spec, prev))

    @classmethod
    def from_targets(cls, model: nn.Module, keep: dict[str, float],
                     previous: "MaskSet | None" = None) -> "MaskSet":
        """Per-layer kept fractions by parameter or module name (unnamed layers stay dense)."""
        masks = {}
        for n, p in model.named_parameters():
            if not is_prunable(n, p):
                continue
            module = n.rsplit(".", 1)[0]
            frac = keep.get(n, keep.get(module))
            if frac is None:
                continue
            m = mask_sparsity(p, 1.0 - frac)
            if previous is not None and n in previous.masks:
                m &= previous.masks[n]
            masks[n] = m
        return cls(model, masks)

    @torch.no_grad()
    def apply(self) -> None:
        for n, p in self.params.items():
            p.masked_fill_(~self.masks[n], 0.0)

    def mask_grads(self) -> None:
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.masked_fill_(~self.masks[n], 0.0)

    def attach(self, optimizer: torch.optim.Optimizer | None = None) -> "MaskSet":
        self.apply()
        for n, p in self.params.items():
            mask = self.masks[n]
            self._handles.append(p.register_hook(lambda g, m=mask: g.masked_fill(~m, 0.0)))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda *a, **k: self.apply()))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "MaskSet":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def report(self) -> PruneReport:
        return report({n: p for n, p in self.params.items()})

    def density(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.numel() for m in self.masks.values())
        return kept / total if total else 1.0


def geometric_schedule(final_keep: dict[str, float], steps: int) -> list[dict[str, float]]:
    """Kept fractions for each of ``steps`` pruning rounds, each dropping the same share.

    Step i keeps ``final ** (i / steps)`` of each layer, so the last step hits the target.
    """
    if steps < 1:
        raise PruneSpecError(f"the number of prune steps must be >= 1, got {steps}")
    return [{k: float(v) ** ((i + 1) / steps) for k, v in final_keep.items()}
            for i in range(steps)]
