"""Dead-neuron removal: drop hidden units that pruning left with no inputs or no outputs.

After pruning, a unit (a Linear output feature, a Conv2d output channel) whose incoming
weights are all zero outputs a constant: act(bias), whatever the input. Its consumer sees
that constant, so the consumer's bias can absorb it (the constant times the consumer's
weights on that unit) and the unit, its row in the producer and its column block in the
consumer go. A unit whose outgoing weights are all zero feeds nothing and goes as well.
Layer shapes shrink, so the file stores fewer biases and shorter index streams.

Which layer feeds which is not read from the source: candidate pairs are consecutive
Linear / Conv2d modules whose shapes chain (Linear -> Linear, Conv2d -> Conv2d,
Conv2d -> flatten -> Linear), and the constant a dead unit hands on is *observed* at the
consumer's input on the given example inputs (so ReLU, max-pooling or any other
per-unit activation in between is handled without being named). A pair is kept only if
the whole model's outputs on those inputs stay the same (to fp32 rounding); otherwise it
is rolled back. A conv consumer with zero padding sees the constant map cut off at its
borders, so a unit with no inputs is only folded into an unpadded conv.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from deepcomp.errors import ModelError

# Relative tolerance (against the output scale) for "the outputs did not change": the
# folds reorder fp32 sums, nothing more.
_RTOL = 1e-5


@dataclass
class ShrinkReport:
    """Per layer (module name): weight shape before and after, and units removed."""

    before: dict[str, list[int]] = field(default_factory=dict)
    after: dict[str, list[int]] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)     # producer: units dropped
    folded: dict[str, int] = field(default_factory=dict)      # producer: constants folded
    max_abs_diff: float = 0.0

    @property
    def changed(self) -> dict[str, tuple[list[int], list[int]]]:
        return {n: (self.before[n], self.after[n]) for n in self.before
                if self.before[n] != self.after[n]}

    def to_dict(self) -> dict:
        """Compact, for a file's meta: only the layers whose shape changed."""
        return {n: [b, a] for n, (b, a) in self.changed.items()}

    def table(self) -> str:
        if not self.changed:
            return "dead-neuron removal: no unit without inputs or outputs; shapes unchanged"
        lines = [f"dead-neuron removal (outputs unchanged, largest difference "
                 f"{self.max_abs_diff:.2g}):", f"{'layer':<16} {'before':>16} {'after':>16}"]
        for n, (b, a) in self.changed.items():
            lines.append(f"{n:<16} {'x'.join(map(str, b)):>16} {'x'.join(map(str, a)):>16}")
        return "\n".join(lines)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)]


def _units(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _inputs(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _block(a: nn.Module, b: nn.Module) -> int | None:
    """How many of ``b``'s input features each unit of ``a`` feeds, or None if they do not chain."""
    if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
        return 1 if a.out_features == b.in_features else None
    if isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d):
        return 1 if a.out_channels == b.in_channels else None
    if isinstance(a, nn.Conv2d) and isinstance(b, nn.Linear):
        # NCHW flattened: channel j is a contiguous block of H*W features.
        q, r = divmod(b.in_features, a.out_channels)
        return q if r == 0 and q > 0 else None
    return None


def _forward(model: nn.Module, inputs) -> torch.Tensor:
    out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out


@torch.no_grad()
def _seen_by(model: nn.Module, consumer: nn.Module, inputs) -> torch.Tensor:
    """The consumer's input on ``inputs`` (one forward pass, hooked)."""
    got = []
    h = consumer.register_forward_pre_hook(lambda mod, args: got.append(args[0].detach()))
    try:
        _forward(model, inputs)
    finally:
        h.remove()
    return got[0]


def _set(m: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if value is None:
        setattr(m, name, None)
    else:
        setattr(m, name, nn.Parameter(value.contiguous(), requires_grad=True))


@torch.no_grad()
def _shrink_pair(model, a, b, block, inputs) -> tuple[int, int]:
    """Remove ``a``'s dead units feeding ``b``; (units removed, constants folded)."""
    wa, wb = a.weight.detach(), b.weight.detach()
    n = _units(a)
    no_in = (wa.reshape(n, -1) == 0).all(1)
    if isinstance(b, nn.Linear):
        cols = wb.reshape(wb.shape[0], n, block)           # [out, unit, block]
        no_out = (cols == 0).all(2).all(0)
    else:
        no_out = (wb == 0).transpose(0, 1).reshape(n, -1).all(1)
    fold = no_in & ~no_out
    if fold.any():
        if isinstance(b, nn.Conv2d) and any(p != 0 for p in _pair(b.padding)) \
                or (isinstance(b, nn.Conv2d) and b.padding == "same"):
            fold = torch.zeros_like(fold)  # the border would see zeros, not the constant
        else:
            seen = _seen_by(model, b, inputs)
            per_unit = seen.reshape(seen.shape[0], n, -1)  # [batch, unit, positions]
            lo, hi = per_unit.amin((0, 2)), per_unit.amax((0, 2))
            scale = seen.abs().max().clamp_min(1.0)
            constant = (hi - lo) <= 1e-6 * scale
            fold &= constant
            value = per_unit.mean((0, 2))
    drop = no_out | fold
    if not drop.any():
        return 0, 0
    if int(drop.sum()) == n:
        drop[int(torch.argmax((~no_out).to(torch.int)))] = False  # a layer keeps one unit
        fold &= drop
    if fold.any():
        if isinstance(b, nn.Linear):
            add = (cols[:, fold, :] * value[fold][None, :, None]).sum((1, 2))
        else:
            add = (wb[:, fold].sum((2, 3)) * value[fold][None, :]).sum(1)
        bias = b.bias.detach() if b.bias is not None else \
            torch.zeros(wb.shape[0], dtype=wb.dtype, device=wb.device)
        _set(b, "bias", bias + add.to(wb.dtype))
    keep = ~drop
    _set(a, "weight", wa[keep])
    if a.bias is not None:
        _set(a, "bias", a.bias.detach()[keep])
    if isinstance(b, nn.Linear):
        _set(b, "weight", cols[:, keep, :].reshape(wb.shape[0], -1))
        b.in_features = int(b.weight.shape[1])
    else:
        _set(b, "weight", wb[:, keep])
        b.in_channels = int(b.weight.shape[1])
    if isinstance(a, nn.Linear):
        a.out_features = int(keep.sum())
    else:
        a.out_channels = int(keep.sum())
    return int(drop.sum()), int(fold.sum())


def _pair(p):
    return p if isinstance(p, tuple) else (p, p)


@torch.no_grad()
def remove_dead_units(model: nn.Module, example_inputs) -> ShrinkReport:
    """Drop units without inputs or outputs from ``model`` in place (see the module docstring).

    ``example_inputs``: a batch the model accepts (a tensor or a tuple of tensors), used
    to observe the constants dead units hand on and to check that the outputs stay the
    same. Repeats until no pair changes (a fold can leave a consumer unit without inputs).
    Shared weights must be baked first (deepcomp.share.finalize): parametrized layers are
    left alone.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = example_inputs.detach()
    was = model.training
    model.eval()
    layers = [(n, m) for n, m in _layers(model) if not hasattr(m, "parametrizations")]
    rep = ShrinkReport()
    for n, m in layers:
        rep.before[n] = list(m.weight.shape)
    try:
        reference = _forward(model, example_inputs).detach().clone()
    except Exception as e:  # a user's model on a user's inputs: say which
        raise ModelError(f"the model does not run on the example inputs given for "
                         f"dead-neuron removal: {type(e).__name__}: {e}") from None
    scale = float(reference.abs().max().clamp_min(1.0))
    pairs = [(layers[i], layers[i + 1]) for i in range(len(layers) - 1)]
    unsafe: set[tuple[str, str]] = set()
    changed = True
    while changed:
        changed = False
        for (na, a), (nb, b) in pairs:
            if (na, nb) in unsafe:
                continue
            block = _block(a, b)
            if block is None:
                continue
            saved = [(m, k, getattr(m, k)) for m in (a, b) for k in ("weight", "bias")]
            dims = (_units(a), _inputs(b))
            try:
                removed, folded = _shrink_pair(model, a, b, block, example_inputs)
            except RuntimeError:
                removed, folded = -1, 0
            if removed == 0:
                continue
            ok = removed > 0
            if ok:
                try:
                    out = _forward(model, example_inputs)
                    diff = float((out - reference).abs().max())
                    ok = out.shape == reference.shape and diff <= _RTOL * scale
                except RuntimeError:
                    ok = False
            if not ok:
                # Not a chain after all (a skip connection, a unit-mixing op, padding):
                # put the pair back as it was and leave it alone.
                for m, k, v in saved:
                    setattr(m, k, v)
                if isinstance(a, nn.Linear):
                    a.out_features = dims[0]
                else:
                    a.out_channels = dims[0]
                if isinstance(b, nn.Linear):
                    b.in_features = dims[1]
                else:
                    b.in_channels = dims[1]
                unsafe.add((na, nb))
                continue
            rep.removed[na] = rep.removed.get(na, 0) + removed
            rep.folded[na] = rep.folded.get(na, 0) + folded
            rep.max_abs_diff = max(rep.max_abs_diff, diff)
            changed = True
    for n, m in layers:
        rep.after[n] = list(m.weight.shape)
    model.train(was)
    return rep
