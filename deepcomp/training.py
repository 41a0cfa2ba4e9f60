"""Deep Compression inside your own training loop: pruning and trained weight sharing.

In the spirit of ``torch.nn.utils.prune`` and TF-MOT's ``prune_low_magnitude`` /
``cluster_weights``, but with your optimizer, loss, data and schedule::

    pruning = deepcomp.prune_weights(model, keep=0.1, steps=3)       # or {"fc1": 0.08, ...},
    for _ in range(pruning.steps):                          # "std:1.0", "global:0.9", plan=
        pruning.step()                                      # next, tighter masks
        for x, y in loader:                                 # any optimizer: the pruned
            loss_fn(model(x), y).backward()                 # weights stay exactly 0
            optimizer.step(); optimizer.zero_grad()
    pruning.remove()
    sharing = deepcomp.share_weights(model, bits={"fc": 5, "conv": 8})
    optimizer = torch.optim.Adam(sharing.parameters(), lr=1e-4)   # codebooks + the rest
    ... train ...                                           # centroids train, zeros stay 0
    sharing.finalize()
    deepcomp.save(model, "model.dcz")

How the masks hold. Each pruned parameter gets a gradient hook that zeroes its pruned
entries' gradients (so momentum buffers and Adam moments never see them), and one
process-wide optimizer step post-hook (``torch.optim.optimizer.
register_optimizer_step_post_hook``) writes the zeros back after every ``step()`` of
*any* optimizer, which undoes what momentum accumulated before pruning or decoupled
weight decay would move. We do not re-parametrize (``weight = orig * mask``, as
torch.nn.utils.prune does) because that renames the parameters: an optimizer made
before pruning, a DistributedDataParallel wrapper and a saved state_dict all keep
working only while the parameters stay the same objects under the same names. A loop
that updates weights without ``torch.optim`` calls ``pruning.apply()`` after its update.

Weight sharing re-parametrizes each shared weight as ``codebook[index]`` (see
deepcomp.share): the model's trainable parameters change, so build the optimizer (and
a DDP wrapper) after ``deepcomp.share_weights``. Each centroid's gradient is the sum of its
member weights' gradients; pruned weights have no index and stay exactly 0.

A *plan* is a dict ``{layer: {"keep": fraction, "bits": int}}`` (module or parameter
names), as the planner produces; ``prune_weights(model, plan=plan)`` takes the ``keep`` entries
and ``share_weights(model, plan=plan)`` the ``bits`` entries.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_post_hook

from deepcomp.prune import (PruneReport, PruneSpecError, compute_masks, is_prunable,
                            mask_sparsity, parse_spec, report)
from deepcomp.share import (SharedWeight, ShareSpecError, _check_bits, _check_init,
                            quantize_model)
from deepcomp.share import finalize as _finalize

DEFAULT_BITS = {"fc": 5, "conv": 8}


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (else itself)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Linear / Conv weights (floating, two or more dimensions), by parameter name."""
    return {n: p for n, p in unwrap(model).named_parameters() if is_prunable(n, p)}


def _check_plan(plan) -> dict[str, dict]:
    if not isinstance(plan, Mapping):
        raise PruneSpecError(f"a plan is a dict {{layer: {{'keep': f, 'bits': b}}}}, "
                             f"got {type(plan).__name__}")
    for k, v in plan.items():
        if not isinstance(v, Mapping) or not set(v) <= {"keep", "bits"}:
            raise PruneSpecError(f"plan entry {k!r} must be a dict with 'keep' and/or 'bits', "
                                 f"got {v!r}")
    return {str(k): dict(v) for k, v in plan.items()}


def _resolve_names(keys, params: Mapping[str, Tensor], what: str) -> dict[str, str]:
    """{parameter name: the user's key} for keys naming a parameter or its module."""
    out: dict[str, str] = {}
    modules = {n.rsplit(".", 1)[0] if "." in n else n: n for n in params}
    unknown = []
    for k in keys:
        if k in params:
            out[k] = k
        elif k in modules:
            out.setdefault(modules[k], k)
        else:
            unknown.append(k)
    if unknown:
        raise PruneSpecError(
            f"{what} names layers the model lacks or cannot prune: {', '.join(map(str, unknown))}; "
            f"prunable layers: {', '.join(sorted(modules))}")
    return out


_MASK_HOLDERS: "dict[int, Pruning]" = {}
_STEP_HOOK = None


def _after_any_step(optimizer, args, kwargs) -> None:
    for pruning in list(_MASK_HOLDERS.values()):
        pruning.apply()


def _register(pruning: "Pruning") -> None:
    global _STEP_HOOK
    _MASK_HOLDERS[id(pruning)] = pruning
    if _STEP_HOOK is None:
        _STEP_HOOK = register_optimizer_step_post_hook(_after_any_step)


def _unregister(pruning: "Pruning") -> None:
    global _STEP_HOOK
    _MASK_HOLDERS.pop(id(pruning), None)
    if not _MASK_HOLDERS and _STEP_HOOK is not None:
        _STEP_HOOK.remove()
        _STEP_HOOK = None


class Pruning:
    """Magnitude masks on a model's weights, held through training, tightened in rounds.

    Build it with ``deepcomp.prune_weights``. ``step()`` computes the next round's masks (each
    round's masks include the previous round's: a pruned weight never comes back) and
    zeroes the pruned weights; the hooks (see the module docstring) then hold them at 0
    through any optimizer until ``remove()``.

    Targets: a kept fraction for every prunable layer (``0.1``), per layer
    (``{"fc1": 0.08, "conv1": 0.66}``; unnamed layers stay dense), a spec string
    (``"std:S"``: round i of n cuts ``|w| <= S*i/n * std(W)``; ``"sparsity:P"``;
    ``"global:P"``: one magnitude cut across layers; overrides as in deepcomp.prune) or a
    ``plan``. Kept fractions are reached geometrically: round i keeps ``final**(i/n)``.
    """

    def __init__(self, model: nn.Module, keep=None, *, steps: int = 1, plan=None):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise PruneSpecError(f"steps must be a positive number of pruning rounds, got {steps!r}")
        self.model = unwrap(model)
        self.steps = steps
        self.round = 0
        self.params = prunable_parameters(self.model)
        if not self.params:
            raise PruneSpecError("the model has no prunable weights (Linear / Conv weights)")
        self._targets: dict[str, float] | None = None
        self._spec = None
        if plan is not None:
            if keep is not None:
                raise PruneSpecError("give either keep= or plan=, not both")
            plan = _check_plan(plan)
            keep = {k: v["keep"] for k, v in plan.items() if "keep" in v}
        if keep is None:
            raise PruneSpecError("say how much to keep: keep=0.1, keep={'fc1': 0.08}, "
                                 "keep='std:1.0' or plan={...}")
        if isinstance(keep, str):
            spec = parse_spec(keep)
            if spec.kind == "sparsity":
                self._targets = {n: 1.0 - spec.value_for(n) for n in self.params}
            else:
                self._spec = spec
        elif isinstance(keep, (int, float)) and not isinstance(keep, bool):
            self._targets = {n: self._fraction(keep, n) for n in self.params}
        elif isinstance(keep, Mapping):
            names = _resolve_names(keep, self.params, "keep")
            self._targets = {n: self._fraction(keep[k], k) for n, k in names.items()}
        else:
            raise PruneSpecError(f"cannot prune to {keep!r}: give a fraction, a dict or a spec string")
        self.masks: dict[str, Tensor] = {}
        self._handles: list = []
        self._attached = False

    @staticmethod
    def _fraction(v, name) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if not 0.0 < f <= 1.0:
            raise PruneSpecError(f"kept fraction for {name} must lie in (0, 1], got {v!r}")
        return f

    # -- the schedule

    def round_spec(self, i: int):
        """What round ``i`` (1-based) cuts to: {param: kept fraction} or a spec."""
        t = i / self.steps
        if self._targets is not None:
            return {n: f ** t for n, f in self._targets.items()}
        s = self._spec
        if s.kind == "std":
            return s.__class__("std", s.value * t, {k: v * t for k, v in s.overrides.items()})
        return s.__class__("global", 1.0 - (1.0 - s.value) ** t)

    @torch.no_grad()
    def step(self) -> int:
        """Advance to the next round: new masks (within the old ones), pruned weights zeroed.

        Returns the round number (1..steps). Calling it after the last round is an error.
        """
        if self.round >= self.steps:
            raise PruneSpecError(f"all {self.steps} pruning rounds are done")
        spec = self.round_spec(self.round + 1)
        prev = self.masks or None
        if isinstance(spec, dict):
            masks = {}
            for n, f in spec.items():
                w = self.params[n]
                if prev is not None and n in prev:
                    # Rank only what the last round kept, so the count is exact even if
                    # something moved a pruned weight while the hooks were off.
                    w = torch.where(prev[n], w, torch.zeros((), dtype=w.dtype, device=w.device))
                m = mask_sparsity(w, 1.0 - f)
                if prev is not None and n in prev:
                    m &= prev[n]
                masks[n] = m
        else:
            masks = compute_masks(self.params, spec, prev)
        self.set_masks(masks)
        self.round += 1
        return self.round

    def set_masks(self, masks: Mapping[str, Tensor]) -> None:
        """Use these masks (True = keep), e.g. ones broadcast from another process."""
        unknown = [n for n in masks if n not in self.params]
        if unknown:
            raise PruneSpecError(f"masks name weights the model lacks: {', '.join(unknown)}")
        self.masks = {n: m.to(device=self.params[n].device, dtype=torch.bool)
                      for n, m in masks.items()}
        for n, m in self.masks.items():
            if m.shape != self.params[n].shape:
                raise PruneSpecError(f"mask for {n} has shape {tuple(m.shape)}, the weight "
                                     f"{tuple(self.params[n].shape)}")
        self._attach()
        self.apply()

    # -- holding the masks

    def _attach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for n in self.masks:
            p = self.params[n]
            if p.requires_grad:
                self._handles.append(p.register_hook(lambda g, n=n: g.masked_fill(~self.masks[n], 0.0)))
        _register(self)
        self._attached = True

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights now (the step hook does it after every optimizer step)."""
        for n, m in self.masks.items():
            p = self.params[n]
            if m.device != p.device:  # the model moved (model.to(...)) after pruning
                m = self.masks[n] = m.to(p.device)
            p.masked_fill_(~m, 0.0)

    def remove(self) -> None:
        """Stop holding the masks (the pruned weights stay 0 until something trains them)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        _unregister(self)
        self._attached = False

    def __enter__(self) -> "Pruning":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- reports and checkpoints

    @property
    def done(self) -> bool:
        return self.round >= self.steps

    def report(self) -> PruneReport:
        return report({n: self.params[n] for n in self.masks} if self.masks else self.params)

    def density(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.numel() for m in self.masks.values())
        return kept / total if total else 1.0

    def state_dict(self) -> dict:
        """Plain tensors and ints (``torch.load(weights_only=True)`` reads it back)."""
        return {"round": self.round, "steps": self.steps,
                "masks": {n: m.detach().cpu() for n, m in self.masks.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        if int(state["steps"]) != self.steps:
            raise PruneSpecError(f"saved pruning has {state['steps']} rounds, this one {self.steps}")
        self.round = int(state["round"])
        if state["masks"]:
            self.set_masks(state["masks"])


def prune_weights(model: nn.Module, keep=None, *, steps: int = 1, plan=None,
          start: bool = False) -> Pruning:
    """Start pruning ``model`` (see ``Pruning``); ``start=True`` also takes the first round."""
    p = Pruning(model, keep, steps=steps, plan=plan)
    if start:
        p.step()
    return p


# ----------------------------------------------------------------------------- sharing

def _bits_spec(bits, plan) -> dict:
    spec = dict(DEFAULT_BITS if bits is None else bits)
    if plan is not None:
        plan = _check_plan(plan)
        for k, v in plan.items():
            if "bits" in v:
                spec[k] = v["bits"]
    for v in spec.values():
        _check_bits(v)
    return spec


class Sharing:
    """Trained weight sharing on a model (build it with ``deepcomp.share_weights``).

    ``layers``: {parameter name: SharedWeight}; ``codebooks``: {name: the trainable
    centroid tensor}. ``finalize()`` bakes ``codebook[index]`` back into plain weights.
    """

    def __init__(self, model: nn.Module, layers: dict[str, SharedWeight]):
        self.model = unwrap(model)
        self.layers = layers

    @property
    def codebooks(self) -> dict[str, nn.Parameter]:
        return {n: sw.codebook for n, sw in self.layers.items()}

    def parameters(self) -> Iterator[nn.Parameter]:
        """What trains now: the codebooks and every parameter that was not shared."""
        return (p for p in self.model.parameters() if p.requires_grad)

    def finalize(self) -> nn.Module:
        _finalize(self.model)
        return self.model

    def state_dict(self) -> dict:
        return {n: {"codebook": sw.codebook.detach().cpu(), "index": sw.index.cpu(),
                    "pos": sw.pos.cpu(), "shape": list(sw.shape)}
                for n, sw in self.layers.items()}

    @classmethod
    def from_state_dict(cls, model: nn.Module, state: Mapping) -> "Sharing":
        """Re-create saved sharing on a model holding the same (plain) weights."""
        model = unwrap(model)
        mods = dict(model.named_modules())
        layers = {}
        for full, st in state.items():
            mname, _, pname = full.rpartition(".")
            module = mods.get(mname)
            p = getattr(module, pname, None) if module is not None else None
            if not isinstance(p, Tensor) or list(p.shape) != list(st["shape"]):
                raise ShareSpecError(f"saved sharing names {full}, which this model lacks "
                                     f"or holds in another shape")
            sw = SharedWeight(st["codebook"], st["index"], st["pos"], tuple(p.shape), p.dtype)
            sw = sw.to(p.device)
            parametrize.register_parametrization(module, pname, sw, unsafe=True)
            getattr(module.parametrizations, pname).original.requires_grad_(False)
            layers[full] = sw
        return cls(model, layers)


def share_weights(model: nn.Module, bits=None, *, plan=None, init: str = "linear",
          seed: int = 0) -> Sharing:
    """Switch ``model`` to trained weight sharing: per-layer k-means over the nonzero weights.

    ``bits``: by layer kind, module or parameter name (default {'fc': 5, 'conv': 8});
    ``plan`` entries' ``bits`` override. ``init``: linear, density, forgy or kmeans++.
    k-means runs on the CPU over each layer's sorted surviving values; the codebook and
    indices then live on the weight's device.
    """
    _check_init(init)
    model = unwrap(model)
    return Sharing(model, quantize_model(model, _bits_spec(bits, plan), init, seed))


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state_dict with every parametrized weight under its plain name, as used."""
    model = unwrap(model)
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        if ".parametrizations." not in f".{k}":
            out[k] = v
    for mname, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for pname in module.parametrizations.keys():
                full = f"{mname}.{pname}" if mname else pname
                out[full] = getattr(module, pname).detach()
    return out
