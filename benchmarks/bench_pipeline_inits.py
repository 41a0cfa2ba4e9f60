"""Centroid inits compared (linear, density, forgy, kmeans++) at 2-8 bits on pruned LeNet-300-100.

    .venv/bin/python benchmarks/bench_pipeline_inits.py
    .venv/bin/python benchmarks/bench_pipeline_inits.py --bits 2 3 4 --finetune-epochs 0.5

The dense shipped LeNet-300-100 is pruned once with the recipe of bench_pipeline.py
(paper targets, iterative, retrained); then, for every init and bit width, every fc
layer is shared with that many bits and the centroids are fine-tuned. Reports top-1
on the Fashion-MNIST test set before and after the fine-tuning, like Figure 9 of Han
et al. (2016). ``--pruned FILE`` reuses (or, if missing, caches) the pruned weights.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import deepcomp  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)
import torch

from bench_pipeline import RECIPES
from deepcomp.data import fashion_mnist
from deepcomp.models import get_model, load_into, load_state_dict_file
from deepcomp.pipeline import PAPER_KEEP, compress, share_and_finetune
from deepcomp.share import INITS
from deepcomp.train import evaluate


def pruned_lenet300(train_set, test_set, cache: Path | None, seed: int):
    if cache is not None and cache.is_file():
        m = get_model("deepcomp:lenet300")
        return load_into(m, load_state_dict_file(cache), str(cache)).eval()
    r = RECIPES["lenet300"]
    res = compress("deepcomp:lenet300", None, keep=PAPER_KEEP["lenet300"],
                   prune_steps=r["prune_steps"], epochs=r["epochs"], lr=r["lr"], share=False,
                   seed=seed, progress=False, train_set=train_set, test_set=test_set,
                   log=lambda s: print(s, file=sys.stderr, flush=True))
    if cache is not None:
        torch.save(res.model.state_dict(), cache)
    return res.model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", nargs="+", type=int, default=list(range(2, 9)))
    ap.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS))
    ap.add_argument("--finetune-epochs", type=float, default=1.0)
    ap.add_argument("--finetune-lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pruned", type=Path, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set = fashion_mnist("train", args.data_dir)
    test_set = fashion_mnist("test", args.data_dir)
    base = pruned_lenet300(train_set, test_set, args.pruned, args.seed)
    base_acc = evaluate(base, test_set)
    rows = {}
    t_start = time.perf_counter()
    for init in args.inits:
        for bits in args.bits:
            net = copy.deepcopy(base)
            accs = {}
            times = {}

            def on_stage(name, t0, label, accs=accs, times=times, net=net):
                times[name] = time.perf_counter() - t0
                accs[name] = evaluate(net, test_set)

            share_and_finetune(net, train_set, bits={"fc": bits}, init=init,
                               epochs=args.finetune_epochs, lr=args.finetune_lr,
                               seed=args.seed, progress=False, on_stage=on_stage)
            before, after = accs[f"share ({init})"], accs["share + fine-tune"]
            rows[(init, bits)] = (before, after, times[f"share ({init})"])
            print(f"{init:>9} {bits} bits: {before:.2f} -> {after:.2f}  "
                  f"(k-means {times[f'share ({init})']:.2f} s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - t_start
    print(f"Pruned LeNet-300-100 (fp32, {100 * sum(int((p != 0).sum()) for n, p in base.named_parameters() if n.endswith('weight')) / 266200:.2f}% "
          f"of weights kept): top-1 {base_acc:.2f}%. Every fc layer shared with the given bits; "
          f"{args.finetune_epochs:g} epoch of centroid fine-tuning (Adam lr {args.finetune_lr:g}); "
          f"{args.threads} thread(s); {total:.0f} s for the grid.\n")
    head = "| bits | " + " | ".join(f"{i} before | {i} after" for i in args.inits) + " |"
    print(head)
    print("|---:|" + "---:|---:|" * len(args.inits))
    for bits in args.bits:
        cells = " | ".join(f"{rows[(i, bits)][0]:.2f} | {rows[(i, bits)][1]:.2f}" for i in args.inits)
        print(f"| {bits} | {cells} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"base_accuracy": base_acc, "total_s": total,
                       "rows": [dict(init=i, bits=b, before=v[0], after=v[1], kmeans_s=v[2])
                                for (i, b), v in rows.items()]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
