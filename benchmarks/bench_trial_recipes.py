"""One gradual trial at a fixed byte target, trained several ways: what a cut costs.

    python benchmarks/bench_trial_recipes.py --checkpoint ck/lenet300-holdout5000.pt --seed S \\
        [--target 16000] [--recipes plain,ls0.1,ls0.2,drop0.2] [--trial-seeds 1,2]

For LeNet-300-100 on the seeded validation split compress holds out (``--val``, the
checkpoint trained without it: train_baselines.py --holdout), the global allocation for
``--target`` bytes of weights at 4 bits (what compress's trial would cut to), then
``deepcomp.plan.gradual_prune`` on compress's schedule (``--epochs`` of cubic cut at
``--lr``, twice that of cosine recovery, the best of two validation points per epoch),
once per recipe and trial seed. Recipes: ``plain`` (cross-entropy), ``lsS`` (label
smoothing S), ``dropP`` (dropout P on the inputs of every fully connected layer but the
first, in training only). Prints validation and test top-1 of each pruned (fp32) model against
the dense one, and the mean over trial seeds: the drops a planned run's trials see, and
what the test set makes of them.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import deepcomp  # noqa: F401  (OMP_WAIT_POLICY before torch)
import torch
from torch import nn

from deepcomp.data import get_dataset, split_train_val
from deepcomp.models import get_model
from deepcomp.plan import RECOVER, global_allocation, gradual_prune, price_table
from deepcomp.train import evaluate


def parse_recipe(text: str) -> dict:
    if text == "plain":
        return {}
    if text.startswith("ls"):
        return {"label_smoothing": float(text[2:])}
    if text.startswith("drop"):
        return {"dropout": float(text[4:])}
    raise SystemExit(f"unknown recipe {text!r}: plain, lsS or dropP")


def run_trial(net: nn.Module, keep: dict, train_set, val_set, *, epochs: float, lr: float,
              seed: int, recipe: dict) -> tuple[float, float]:
    _, acc, at = gradual_prune(net, keep, train_set, val_set, epochs=epochs,
                               recover_epochs=RECOVER * epochs, lr=lr, seed=seed,
                               evals_per_epoch=2,
                               label_smoothing=recipe.get("label_smoothing", 0.0),
                               dropout=recipe.get("dropout", 0.0))
    return acc, at


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--seed", type=int, default=0, help="the split's seed (compress --seed)")
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--target", type=int, default=16000, help="weight bytes at 4 bits")
    ap.add_argument("--epochs", type=float, default=6.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--recipes", default="plain,ls0.1")
    ap.add_argument("--trial-seeds", default="1,2")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    train_set, val_set = split_train_val(get_dataset("fashion-mnist", "train"), args.val, args.seed)
    test_set = get_dataset("fashion-mnist", "test")
    net = get_model("deepcomp:lenet300")
    net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    net.eval()
    dense = copy.deepcopy(net.state_dict())
    vd, td = evaluate(net, val_set), evaluate(net, test_set)
    keep = global_allocation(net, price_table(net, seed=args.seed), args.target).keep
    print(f"split seed {args.seed}: dense val {vd:.2f} %, test {td:.2f} %; cut for "
          f"{args.target} B at 4 bits: "
          + ", ".join(f"{n.rsplit('.', 1)[0]} {100 * k:.2f} %" for n, k in keep.items()))
    print("\n| recipe | trial seed | val (drop) | test (drop) | best epoch | s |")
    print("|---|---:|---|---|---:|---:|")
    seeds = [int(s) for s in args.trial_seeds.split(",")]
    for name in args.recipes.split(","):
        recipe = parse_recipe(name)
        dv, dt = [], []
        for ts in seeds:
            net.load_state_dict(dense)
            t0 = time.perf_counter()
            acc, at = run_trial(net, keep, train_set, val_set, epochs=args.epochs, lr=args.lr,
                                seed=args.seed + ts, recipe=recipe)
            test = evaluate(net, test_set)
            dv.append(acc - vd)
            dt.append(test - td)
            print(f"| {name} | {ts} | {acc:.2f} ({acc - vd:+.2f}) | {test:.2f} ({test - td:+.2f}) "
                  f"| {at:.1f} | {time.perf_counter() - t0:.0f} |", flush=True)
        print(f"| {name} | mean | ({statistics.mean(dv):+.2f}) | ({statistics.mean(dt):+.2f}) | | |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
