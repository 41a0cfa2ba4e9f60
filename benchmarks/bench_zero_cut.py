"""Does retraining alone cost validation accuracy? A planned trial that cuts nothing.

    python benchmarks/bench_zero_cut.py --checkpoint ck/lenet300-holdout5000.pt --seed S [--epochs 6 --lr 1e-3]

Runs `deepcomp.plan.gradual_prune` on the dense LeNet-300-100 with every layer kept
whole, on the schedule compress's gradual trials use (`--epochs` of cut at a constant
rate, twice that of recovery with a cosine rate, the best of two validation points per
epoch), on the same seeded 5,000-image validation split. If the result sat well below
dense, a planned run's budget would be spent by the retraining before any cut; if it
does not, a plateau of the pruned trials below dense is the cut's.
"""
from __future__ import annotations

import argparse

import deepcomp  # noqa: F401  (OMP_WAIT_POLICY before torch)
import torch

from deepcomp.data import get_dataset, split_train_val
from deepcomp.models import get_model
from deepcomp.plan import RECOVER, gradual_prune
from deepcomp.train import evaluate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--epochs", type=float, default=6.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    train_set, val_set = split_train_val(get_dataset("fashion-mnist", "train"), args.val, args.seed)
    net = get_model("deepcomp:lenet300")
    net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    net.eval()
    dense = evaluate(net, val_set)
    _, acc, at = gradual_prune(net, {"fc1": 1.0, "fc2": 1.0, "fc3": 1.0}, train_set, val_set,
                               epochs=args.epochs, recover_epochs=RECOVER * args.epochs, lr=args.lr,
                               seed=args.seed + 1, evals_per_epoch=2)
    print(f"seed {args.seed}, {args.epochs:g} + {RECOVER * args.epochs:g} epochs at {args.lr:g}: "
          f"dense val {dense:.2f} %, retrained without a cut {acc:.2f} % (best point, epoch {at:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
