"""Training and evaluation loops with a tqdm progress bar.

The loops batch directly from in-memory tensors (``dataset.images`` / ``.targets``, see
deepcomp.data) and fall back to a DataLoader for any other Dataset. A ``after_step``
hook runs after every optimizer step: the pruning and weight-sharing stages use it to
hold their masks (see deepcomp.prune.MaskSet).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from deepcomp.progress import progress_bar


def _batches(dataset, batch_size: int, shuffle: bool,
             generator: torch.Generator | None,
             sampler=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(dataset, "images") and hasattr(dataset, "targets"):
        x_all, y_all = dataset.images, dataset.targets
        n = y_all.shape[0]
        if sampler is not None:
            # This rank's shard, in the sampler's order, batched straight from memory.
            order = torch.as_tensor(list(sampler), dtype=torch.int64)
            n = order.numel()
        else:
            order = torch.randperm(n, generator=generator) if shuffle else None
        for i in range(0, n, batch_size):
            if order is None:
                yield x_all[i:i + batch_size], y_all[i:i + batch_size]
            else:
                idx = order[i:i + batch_size]
                yield x_all[idx], y_all[idx]
    elif sampler is not None:
        yield from torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                             shuffle=shuffle, generator=generator)
        yield from loader


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 1000, device=None,
             per_example: bool = False):
    """Top-1 accuracy in percent (on ``device``, by default the model's).

    ``per_example``: (accuracy, a bool CPU tensor saying which examples, in dataset
    order, the model gets right), to pair two models' answers on the same images.
    """
    device = _device_of(model) if device is None else device
    was_training = model.training
    model.eval()
    right = []
    for x, y in _batches(dataset, batch_size, False, None):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        right.append((model(x).argmax(1) == y).cpu())
    model.train(was_training)
    hits = torch.cat(right) if right else torch.zeros(0, dtype=torch.bool)
    acc = 100.0 * int(hits.sum()) / max(1, hits.numel())
    return (acc, hits) if per_example else acc


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
          progress: bool = True, desc: str = "train", device=None, amp: bool = False,
          shard: tuple[int, int] | None = None) -> dict:
    """Train with cross-entropy for ``epochs`` passes (a fraction is allowed).

    ``after_backward`` runs between backward() and step() (gradient masking),
    ``after_step`` right after step() (weight masking). With ``lr_decay`` the learning
    rate follows a cosine from ``lr`` to zero over the run.
    Batches go to ``device`` (by default the model's). ``amp`` trains under CUDA autocast
    (float16) with a gradient scaler. ``shard=(rank, world_size)`` trains on this rank's
    part of every epoch through a DistributedSampler seeded with ``seed`` (the same
    permutation on every rank, disjoint shards, equal step counts; ``batch_size`` is per
    rank); ``model`` is then normally a DistributedDataParallel wrapper.
    Returns {'loss': last epoch's mean loss, 'steps': n, 'seconds': wall time}.
    """
    g = torch.Generator().manual_seed(seed)
    device = _device_of(model) if device is None else torch.device(device)
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else \
        make_optimizer(model.parameters(), optimizer, lr, weight_decay)
    sampler = None
    if shard is not None and shard[1] > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=shard[1], rank=shard[0],
                                                      shuffle=True, seed=seed, drop_last=False)
    n = len(sampler) if sampler is not None else len(dataset)
    amp = bool(amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, int(round(epochs * steps_per_epoch)))
    base_lrs = [grp["lr"] for grp in opt.param_groups]
    bar = progress_bar(total_steps, desc, enabled=progress)
    epochs_total = max(1, math.ceil(total_steps / max(1, steps_per_epoch)))
    model.train()
    t0 = time.perf_counter()
    step = 0
    loss_sum, loss_n = 0.0, 0
    seen = 0
    epoch = 0
    while step < total_steps:
        loss_sum, loss_n = 0.0, 0
        if sampler is not None:
            sampler.set_epoch(epoch)
        epoch += 1
        for x, y in _batches(dataset, batch_size, True, g, sampler):
            if step >= total_steps:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if lr_decay:
                scale = 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
                for grp, base in zip(opt.param_groups, base_lrs):
                    grp["lr"] = base * scale
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = F.cross_entropy(model(x), y)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # after_backward sees true gradients
                if after_backward is not None:
                    after_backward()
                scaler.step(opt)  # skipped on inf/NaN gradients; the mask hooks still hold
                scaler.update()
            else:
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
            if not bar.disable:
                el = time.perf_counter() - t0
                seen += int(y.shape[0])
                bar.set_postfix(epoch=f"{epoch}/{epochs_total}", loss=f"{loss_sum / loss_n:.4f}",
                                img_s=f"{seen / el:.0f}" if el > 0 else "-", refresh=False)
                bar.update(1)
    for grp, base in zip(opt.param_groups, base_lrs):
        grp["lr"] = base
    bar.close()
    model.eval()
    return {"loss": loss_sum / max(1, loss_n), "steps": step,
            "seconds": time.perf_counter() - t0}
