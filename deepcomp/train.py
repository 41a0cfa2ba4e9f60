"""Training and evaluation loops with a small progress bar.

The loops batch directly from in-memory tensors (``dataset.images`` / ``.targets``, see
deepcomp.data) and fall back to a DataLoader for any other Dataset. A ``after_step``
hook runs after every optimizer step: the pruning and weight-sharing stages use it to
hold their masks (see deepcomp.prune.MaskSet).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


class Progress:
    """A one-line progress bar on stderr; on a non-terminal it prints one line at the end."""

    def __init__(self, total: int, desc: str = "", enabled: bool = True, stream=None):
        self.total = max(1, total)
        self.desc = desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.n = 0
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.postfix = ""

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self.enabled and self.tty:
            now = time.perf_counter()
            if now - self._last > 0.1 or self.n >= self.total:
                self._last = now
                self.stream.write("\r" + self._line())
                self.stream.flush()

    def _line(self) -> str:
        frac = min(1.0, self.n / self.total)
        width = 24
        fill = int(frac * width)
        el = time.perf_counter() - self.t0
        eta = el / frac - el if frac > 0 else 0.0
        bar = "#" * fill + "." * (width - fill)
        return (f"{self.desc:<18} [{bar}] {self.n}/{self.total} "
                f"{el:5.1f}s<{eta:4.1f}s {self.postfix}")

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self._line() + "\n")
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()


def _batches(dataset, batch_size: int, shuffle: bool,
             generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(dataset, "images") and hasattr(dataset, "targets"):
        x_all, y_all = dataset.images, dataset.targets
        n = y_all.shape[0]
        order = torch.randperm(n, generator=generator) if shuffle else None
        for i in range(0, n, batch_size):
            if order is None:
                yield x_all[i:i + batch_size], y_all[i:i + batch_size]
            else:
                idx = order[i:i + batch_size]
                yield x_all[idx], y_all[idx]
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                             shuffle=shuffle, generator=generator)
        yield from loader


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent."""
    was_training = model.training
    model.eval()
    correct = 0
    total = 0
    for x, y in _batches(dataset, batch_size, False, None):
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.shape[0])
    model.train(was_training)
    return 100.0 * correct / max(1, total)


def make_optimizer(params, name: str = "adam", lr: float = 1e-3,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use adam, adamw or sgd")


def train(model: nn.Module, dataset, *, epochs: float = 1, lr: float = 1e-3,
          optimizer: str | torch.optim.Optimizer = "adam", weight_decay: float = 0.0,
          batch_size: int = 128, seed: int = 0, lr_decay: bool = True,
          after_backward: Callable[[], None] | None = None,
          after_step: Callable[[], None] | None = None,
          progress: bool = True, desc: str = "train") -> dict:
    """Train with cross-entropy for ``epochs`` passes (a fraction is allowed).

    ``after_backward`` runs between backward() and step() (gradient masking),
    ``after_step`` right after step() (weight masking). With ``lr_decay`` the learning
    rate follows a cosine from ``lr`` to zero over the run.
    Returns {'loss': last epoch's mean loss, 'steps': n, 'seconds': wall time}.
    """
    g = torch.Generator().manual_seed(seed)
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else \
        make_optimizer(model.parameters(), optimizer, lr, weight_decay)
    n = len(dataset)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, int(round(epochs * steps_per_epoch)))
    base_lrs = [grp["lr"] for grp in opt.param_groups]
    bar = Progress(total_steps, desc, enabled=progress)
    model.train()
    t0 = time.perf_counter()
    step = 0
    loss_sum, loss_n = 0.0, 0
    while step < total_steps:
        loss_sum, loss_n = 0.0, 0
        for x, y in _batches(dataset, batch_size, True, g):
            if step >= total_steps:
                break
            if lr_decay:
                scale = 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
                for grp, base in zip(opt.param_groups, base_lrs):
                    grp["lr"] = base * scale
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            if after_step is not None:
                after_step()
            step += 1
            loss_sum += loss.item() * y.shape[0]
            loss_n += int(y.shape[0])
            bar.update(1, f"loss {loss_sum / loss_n:.4f}")
    for grp, base in zip(opt.param_groups, base_lrs):
        grp["lr"] = base
    bar.close()
    model.eval()
    return {"loss": loss_sum / max(1, loss_n), "steps": step,
            "seconds": time.perf_counter() - t0}
