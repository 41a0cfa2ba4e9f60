"""Deep Compression stages 1-2 on the shipped Fashion-MNIST LeNets: accuracy and wall time.

    .venv/bin/python benchmarks/bench_pipeline.py                 # both nets
    .venv/bin/python benchmarks/bench_pipeline.py --nets lenet300 --json out.json

For each net: dense baseline, iterative pruning to the paper's per-layer targets with
retraining (deepcomp.pipeline.PAPER_KEEP), k-means weight sharing (linear init) and
centroid fine-tuning, all on the full Fashion-MNIST training set, scored on its test
set. Prints Markdown tables (the ones in benchmarks/RESULTS.md). Fixed seeds; results
can still move by a few hundredths of a point with the thread count.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import deepcomp  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)
import torch

from deepcomp.data import fashion_mnist
from deepcomp.pipeline import PAPER_KEEP, compress

# (prune steps, retrain epochs per step, retrain lr, bits, fine-tune epochs, threads).
# One thread for the MLP, whose matrices are too small for a second one to pay on a
# shared 2-vCPU machine; two for LeNet-5's convolutions.
RECIPES = {
    "lenet300": dict(prune_steps=4, epochs=3, lr=2e-3, bits={"fc": 5}, finetune_epochs=1,
                     threads=1),
    "lenet5": dict(prune_steps=4, epochs=2, lr=2e-3, bits={"conv": 8, "fc": 5},
                   finetune_epochs=1, threads=2),
}


def markdown(name: str, res, recipe: dict, total_s: float) -> str:
    dense = res.stage("dense").accuracy
    lines = [
        f"**{name}** (keep {', '.join(f'{k} {100 * v:g}%' for k, v in PAPER_KEEP[name].items())}; "
        f"{recipe['prune_steps']} prune steps x {recipe['epochs']:g} epochs, Adam lr "
        f"{recipe['lr']:g}; bits {', '.join(f'{k} {v}' for k, v in recipe['bits'].items())}; "
        f"{recipe['finetune_epochs']:g} epoch centroid fine-tuning; "
        f"{recipe['threads']} thread(s); total {total_s:.0f} s)",
        "",
        "| stage | top-1 (%) | vs dense (points) | weights kept | bits | wall time (s) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for s in res.stages:
        lines.append(f"| {s.name} | {s.accuracy:.2f} | {s.accuracy - dense:+.2f} | "
                     f"{s.kept:,} / {s.total:,} ({100 * s.density:.2f}%) | {s.bits} | "
                     f"{s.seconds:.1f} |")
    lines += ["", "Per-layer density after pruning:", "", "| layer | shape | kept | density | dead out | dead in |",
              "|---|---|---:|---:|---:|---:|"]
    for l in res.prune_report.layers:
        lines.append(f"| {l.name} | {'x'.join(map(str, l.shape))} | {l.kept:,} | "
                     f"{100 * l.density:.2f}% | {l.dead_out} | {l.dead_in} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", choices=sorted(RECIPES), default=["lenet300", "lenet5"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)
    train_set = fashion_mnist("train", args.data_dir)
    test_set = fashion_mnist("test", args.data_dir)
    dump = {}
    for name in args.nets:
        recipe = dict(RECIPES[name])
        torch.set_num_threads(recipe["threads"])
        t0 = time.perf_counter()
        res = compress(f"deepcomp:{name}", None, keep=PAPER_KEEP[name],
                       prune_steps=recipe["prune_steps"], epochs=recipe["epochs"],
                       lr=recipe["lr"], bits=recipe["bits"],
                       finetune_epochs=recipe["finetune_epochs"], seed=args.seed,
                       progress=args.progress, train_set=train_set, test_set=test_set,
                       log=lambda s: print(s, file=sys.stderr, flush=True))
        total = time.perf_counter() - t0
        print(markdown(name, res, recipe, total), "\n", flush=True)
        dump[name] = {"recipe": {k: v for k, v in recipe.items()}, "total_s": total,
                      "stages": [s.__dict__ for s in res.stages],
                      "prune_report": res.prune_report.to_dict()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
