"""ResNet-18 on a generated ImageFolder: one prune + retrain stage through the public API.

Generates CLASSES x PER_CLASS training PNGs (and a few validation ones) of SIZE x SIZE
under a temporary folder in /tmp (never in the repository), reads them with
``deepcomp.data.get_dataset('imagefolder:...')`` (torchvision ImageFolder, ImageNet
normalisation) and trains torchvision's ResNet-18 (random init, num_classes = the
folder's classes) with SGD:

  * dense:  plain PyTorch training steps (the peer);
  * pruned: the same after ``deepcomp.prune_weights(model, keep=KEEP, start=True)``,
            masks held through the optimizer by deepcomp's hooks.

Configurations run round-robin (dense/pruned x each thread count, ROUNDS times) so that
load on a shared machine hits them alike. Step time is forward + backward + optimizer
step on a batch already decoded; loading a batch (PNG decode + transforms, DataLoader
with no workers) is timed apart. Medians over all timed steps.

    python benchmarks/bench_imagefolder.py [--threads 1,2] [--rounds 3] [--steps 6]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deepcomp  # noqa: E402  (before torch: see README, OpenMP threads sleep)
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from deepcomp.data import get_dataset  # noqa: E402
from deepcomp.train import evaluate  # noqa: E402


def make_folder(root: Path, classes: int, per_class: int, val_per_class: int, size: int) -> None:
    """Each class its own mean colour and stripe frequency, plus noise: learnable, not trivial."""
    g = torch.Generator().manual_seed(0)
    yy = torch.arange(size).view(size, 1).expand(size, size).float()
    colours = torch.rand(classes, 3, generator=g) * 160 + 40  # the same in train/ and val/
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            colour = colours[c]
            stripes = 30 * torch.sin(yy * (c + 1) * 3.1416 / size)
            for i in range(n):
                noise = torch.randn(size, size, 3, generator=g) * 25
                px = colour.view(1, 1, 3) + stripes.unsqueeze(-1) + noise
                Image.fromarray(px.clamp(0, 255).to(torch.uint8).numpy(), "RGB").save(d / f"{i:03d}.png")


def batches(ds, batch: int, seed: int):
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    while True:
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            yield x, y, time.perf_counter() - t0


def build(classes: int, pruned: bool, keep: float):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=classes)
    pruning = deepcomp.prune_weights(model, keep=keep, steps=1, start=True) if pruned else None
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    return model.train(), pruning, opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--val-per-class", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--keep", type=float, default=0.5, help="kept fraction per layer")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per configuration and round")
    ap.add_argument("--folder", default=None, help="reuse/keep this folder (default: a /tmp one, removed)")
    args = ap.parse_args()

    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="dc-imgfolder-", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        if not (folder / "train").is_dir():
            make_folder(folder, args.classes, args.per_class, args.val_per_class, args.size)
        gen_s = time.perf_counter() - t0
        train_set = get_dataset(f"imagefolder:{folder}", "train", image_size=args.size)
        val_set = get_dataset(f"imagefolder:{folder}", "test", image_size=args.size)
        n_cls = len(train_set.classes)
        print(f"ImageFolder {folder}: {len(train_set)} train / {len(val_set)} val images, "
              f"{n_cls} classes, {args.size}x{args.size} PNG (generated in {gen_s:.1f} s)")
        print(f"ResNet-18 (torchvision, random init, num_classes={n_cls}), SGD, batch {args.batch}, "
              f"keep {args.keep:g} per layer; CPU: {cpu_name()}; load average at start "
              f"{os.getloadavg()[0]:.2f}")

        threads = [int(t) for t in args.threads.split(",")]
        configs = [(kind, t) for t in threads for kind in ("dense", "pruned")]
        state = {c: build(n_cls, c[0] == "pruned", args.keep) for c in configs}
        feeds = {c: batches(train_set, args.batch, seed=1) for c in configs}
        step_s = {c: [] for c in configs}
        load_s = {c: [] for c in configs}
        loss_last = {}
        for r in range(args.rounds + 1):  # round 0 warms up (allocator, first-call costs)
            for c in configs:
                torch.set_num_threads(c[1])
                model, _, opt = state[c]
                for _ in range(args.steps if r else 2):
                    x, y, tl = next(feeds[c])
                    t = time.perf_counter()
                    opt.zero_grad(set_to_none=True)
                    loss = nn.functional.cross_entropy(model(x), y)
                    loss.backward()
                    opt.step()
                    dt = time.perf_counter() - t
                    if r:
                        step_s[c].append(dt)
                        load_s[c].append(tl)
                    loss_last[c] = loss.item()

        print()
        print(f"{'config':<8} {'threads':>7} {'step ms (median)':>17} {'img/s':>8} "
              f"{'load ms/batch':>14} {'pruned/dense':>13} {'kept':>7} {'val top-1':>9} {'loss':>7}")
        for c in configs:
            model, pruning, _ = state[c]
            med = statistics.median(step_s[c])
            dense_med = statistics.median(step_s[("dense", c[1])])
            kept = "-"
            if pruning is not None:
                # Counted on the trained weights, not the masks: do the masks hold?
                ws = [model.get_parameter(n) for n in pruning.masks]
                nz = sum(int((w != 0).sum()) for w in ws)
                kept = f"{100 * nz / sum(w.numel() for w in ws):.1f}%"
            torch.set_num_threads(c[1])
            acc = evaluate(model, val_set, batch_size=100)
            print(f"{c[0]:<8} {c[1]:>7} {1000 * med:>17.1f} {args.batch / med:>8.1f} "
                  f"{1000 * statistics.median(load_s[c]):>14.1f} {med / dense_med:>13.3f} "
                  f"{kept:>7} {acc:>8.1f}% {loss_last[c]:>7.3f}")
        print(f"\n{args.rounds} rounds x {args.steps} timed steps per config (round-robin), "
              f"after a warm-up round; load average at end {os.getloadavg()[0]:.2f}")
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
