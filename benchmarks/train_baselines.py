"""Train the dense Fashion-MNIST baselines that ship in deepcomp/checkpoints/.

    .venv/bin/python benchmarks/train_baselines.py            # both nets
    .venv/bin/python benchmarks/train_baselines.py --only lenet300
    .venv/bin/python benchmarks/train_baselines.py --holdout 5000 --out benchmarks/checkpoints

``--holdout N`` trains without the N validation images that ``deepcomp compress --val N
--seed S`` holds out (the same seeded split), so that the pipeline's decisions on them
are made on images the dense model never saw; it writes NAME-holdoutN.pt.

Fixed seed, Adam with a cosine learning-rate decay, no augmentation. Writes plain
state_dicts (they load with torch.load(..., weights_only=True)) and prints the test
accuracy of each.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import deepcomp  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before torch loads its OpenMP)
import torch

from deepcomp.data import fashion_mnist
from deepcomp.models import checkpoint_dir, get_model
from deepcomp.train import evaluate, train

ROOT = Path(__file__).resolve().parent.parent

RECIPES = {
    # name: (epochs, lr, batch, weight_decay, threads). One thread for the MLP: its
    # matrices are too small for a second thread to pay on a shared 2-vCPU machine.
    "lenet300": (20, 1e-3, 128, 0.0, 1),
    "lenet5": (10, 1e-3, 128, 0.0, 2),
}


def save_atomic(sd: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    # mkstemp creates 0600; give the file the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        torch.save(sd, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(RECIPES), action="append")
    ap.add_argument("--out", type=Path, default=checkpoint_dir())
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="override the recipe's threads")
    ap.add_argument("--epochs", type=float, default=None, help="override every recipe's epochs")
    ap.add_argument("--holdout", type=int, default=None, metavar="N",
                    help="leave out compress's seeded validation split of N images")
    args = ap.parse_args(argv)
    train_set = fashion_mnist("train", args.data_dir)
    if args.holdout:
        from deepcomp.data import split_train_val

        train_set, _ = split_train_val(train_set, args.holdout, args.seed)
    test_set = fashion_mnist("test", args.data_dir)
    for name in args.only or list(RECIPES):
        epochs, lr, batch, wd, threads = RECIPES[name]
        torch.set_num_threads(args.threads or threads)
        if args.epochs is not None:
            epochs = args.epochs
        torch.manual_seed(args.seed)
        model = get_model(f"deepcomp:{name}")
        t0 = time.perf_counter()
        train(model, train_set, epochs=epochs, lr=lr, batch_size=batch, weight_decay=wd,
              seed=args.seed, desc=name, progress=True)
        secs = time.perf_counter() - t0
        acc = evaluate(model, test_set)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        fname = f"{name}-holdout{args.holdout}.pt" if args.holdout else f"{name}.pt"
        save_atomic(state, args.out / fname)
        print(f"{name}: test top-1 {acc:.2f}%  ({epochs} epochs, {secs:.0f} s) -> "
              f"{args.out / fname}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
