"""Planned compression (compress --max-drop / --target-size) against the fixed paper recipe.

    .venv/bin/python benchmarks/train_baselines.py --only lenet300 --holdout 5000 --out ck
    .venv/bin/python benchmarks/bench_plan.py --model lenet300 --checkpoint ck/lenet300-holdout5000.pt \
        --max-drop 0.5 --epochs 6 --prune-steps 5 --lr 1e-3 --json r.json
    .venv/bin/python benchmarks/train_baselines.py --only lenet5 --holdout 10000 --threads 1 --out ck
    .venv/bin/python benchmarks/bench_plan.py --model lenet5 --checkpoint ck/lenet5-holdout10000.pt \
        --val 10000 --max-drop 0.5 --json r.json   # compress's defaults: 2-epoch cuts at 2e-3
    .venv/bin/python benchmarks/bench_plan.py --model lenet5 --fixed --json r.json
    .venv/bin/python benchmarks/bench_plan.py --table r1.json r2.json ... [--plot curve.png]

Each run compresses a dense checkpoint trained *without* the validation images
(train_baselines.py --holdout N, the same N and --seed as the run), so validation is a
held-out set for it; the test set
is evaluated on the dense and on the final model only. File bytes are the real file's;
the ratio is against the dense fp32 parameters (4 bytes each).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import deepcomp  # noqa: F401  (OMP_WAIT_POLICY before torch)
import torch

from deepcomp.pipeline import compress
from deepcomp.plan import ALLOCATION

HERE = Path(__file__).resolve().parent
BAR_RATIO = {"lenet300": 55, "lenet5": 70}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.prune_share is not None:
        from deepcomp import plan as plan_module

        plan_module.PRUNE_SHARE = args.prune_share
    ck = args.checkpoint or HERE / "checkpoints" / f"{args.model}-holdout{args.val}.pt"
    out = Path(args.out or f"/tmp/bench_plan_{args.model}_{args.label()}.dcz")
    kw = dict(arch=f"deepcomp:{args.model}", data="fashion-mnist", val=args.val, seed=args.seed,
              epochs=args.epochs, finetune_epochs=args.finetune_epochs, progress=False,
              prune_steps=args.prune_steps, lr=args.lr)
    if args.max_drop is not None or args.target_size is not None:
        kw["distill"] = args.distill
    if args.max_drop is not None:
        kw["max_drop"] = args.max_drop
    elif args.target_size is not None:
        kw["target_size"] = args.target_size
    # Options left unset take compress's defaults.
    for name in ("schedule", "allocation", "average", "search", "label_smoothing", "trial_dropout"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    # Dense bytes from the checkpoint: dead-neuron removal shrinks the returned model.
    dense_bytes = 4 * sum(v.numel() for v in torch.load(ck, weights_only=True).values())
    t0 = time.perf_counter()
    r = compress(str(ck), out, **kw)
    wall = time.perf_counter() - t0
    print(r.table())
    if r.plan is not None:
        print(r.plan.table())
    dense, final = r.stage("dense"), r.stages[-1]
    rec = {"model": args.model, "label": args.label(), "file_bytes": out.stat().st_size,
           "dense_param_bytes": dense_bytes,
           "shapes": r.shrink.to_dict() if r.shrink is not None else None,
           "val_dense": dense.accuracy, "val_final": final.accuracy,
           "test_dense": dense.test_accuracy, "test_final": final.test_accuracy,
           "wall_s": wall, "threads": args.threads, "epochs": args.epochs,
           "finetune_epochs": args.finetune_epochs,
           "plan": r.plan.to_dict() if r.plan is not None else None,
           "density": final.density, "bits": final.bits,
           "stages": [s.__dict__ for s in r.stages], "command": " ".join(sys.argv),
           "allocation": args.allocation or ALLOCATION, "schedule": args.schedule or "gradual",
           "average": args.average, "search": args.search or "bisect",
           "prune_share": args.prune_share,
           "label_smoothing": args.label_smoothing, "trial_dropout": args.trial_dropout,
           # split -> [images, lost, gained] against dense (compress's paired count)
           "paired": {k: list(v) for k, v in r.paired.items()}}
    rec["ratio"] = rec["dense_param_bytes"] / rec["file_bytes"]
    rec.update(container(out))
    return rec


def container(path: Path) -> dict:
    """Bytes of the file that are not tensor sections, and of those what meta costs.

    Meta is measured by writing the same tensors and graph again without it.
    """
    import tempfile

    from deepcomp.codec import decode, open_dcz, write_state_dict

    f = open_dcz(path)
    size = path.stat().st_size
    sections = sum(f.record(n).length for n in f.names)
    with tempfile.TemporaryDirectory() as d:
        bare = write_state_dict(decode(path), Path(d) / "bare.dcz", graph=f.graph)["file_bytes"]
    return {"container_bytes": size - sections, "container_share": (size - sections) / size,
            "meta_bytes": size - bare}


def table(paths, plot=None) -> None:
    recs = [json.loads(Path(p).read_text()) for p in paths]
    head = (f"{'model':<9} {'run':<14} {'bytes':>7} {'ratio':>6} {'val dense':>9} {'val':>6} "
            f"{'test dense':>10} {'test':>6} {'Δtest':>6} {'kept':>6} {'wall s':>7} "
            f"{'container':>9} {'meta':>5}")
    print(head)
    for r in sorted(recs, key=lambda r: (r["model"], -r["file_bytes"])):
        print(f"{r['model']:<9} {r['label']:<14} {r['file_bytes']:>7} {r['ratio']:>5.1f}x "
              f"{r['val_dense']:>8.2f}% {r['val_final']:>5.2f}% {r['test_dense']:>9.2f}% "
              f"{r['test_final']:>5.2f}% {r['test_final'] - r['test_dense']:>+6.2f} "
              f"{100 * r['density']:>5.2f}% {r['wall_s']:>7.0f} "
              f"{r.get('container_bytes', 0):>5} {100 * r.get('container_share', 0):>2.0f}% "
              f"{r.get('meta_bytes', 0):>5}")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        models = sorted({r["model"] for r in recs})
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
        for ax, m in zip(axes[0], models):
            rs = sorted((r for r in recs if r["model"] == m), key=lambda r: r["file_bytes"])
            planned = [r for r in rs if r["plan"] is not None]
            fixed = [r for r in rs if r["plan"] is None]
            # Records without the key were made while 'sensitivity' was the only allocation.
            def alloc(r):
                return r.get("allocation", "sensitivity")

            series = (("--max-drop", lambda r: r["label"].startswith("max-drop")
                       and alloc(r) == "global" and r.get("search", "bisect") == "bisect", "o-"),
                      ("--max-drop --allocation sensitivity", lambda r: r["label"].startswith(
                          "max-drop") and alloc(r) == "sensitivity"
                       and r.get("search", "bisect") == "bisect", "D"),
                      ("--max-drop --search false-position", lambda r: r.get("search") in
                       ("false position", "false-position"), "v"),
                      ("--target-size", lambda r: r["label"].startswith("target"), "^"))
            for name, want, style in series:
                pts = [r for r in planned if want(r)]
                if pts:
                    ax.plot([r["file_bytes"] for r in pts], [r["test_final"] for r in pts], style,
                            label=f"planned, {name}")
            for r in planned:
                ax.annotate(r["label"], (r["file_bytes"], r["test_final"]), fontsize=7)
            ax.plot([r["file_bytes"] for r in fixed], [r["test_final"] for r in fixed], "s",
                    color="tab:red", label="fixed paper recipe")
            ax.axhline(rs[0]["test_dense"], color="grey", ls="--", lw=0.8, label="dense")
            # Issue 10's bar: within 0.6 test points of dense at BAR_RATIO x.
            ax.axhline(rs[0]["test_dense"] - 0.6, color="tab:green", ls=":", lw=0.8,
                       label="dense - 0.6 points")
            if m in BAR_RATIO:
                ax.axvline(rs[0]["dense_param_bytes"] / BAR_RATIO[m], color="tab:green",
                           ls="-.", lw=0.8, label=f"{BAR_RATIO[m]}x")
            ax.set_xlabel("file bytes")
            ax.set_ylabel("test top-1 (%)")
            ax.set_title(m)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        print(f"wrote {plot}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["lenet300", "lenet5"])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--max-drop", type=float, default=None)
    ap.add_argument("--target-size", type=int, default=None)
    ap.add_argument("--fixed", action="store_true", help="the fixed paper recipe (keep/bits defaults)")
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--finetune-epochs", type=float, default=1.0)
    ap.add_argument("--prune-steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3, help="retraining learning rate (Adam)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--distill", type=float, default=0.0, help="planned runs: distillation weight")
    ap.add_argument("--schedule", default=None, choices=["gradual", "rounds"],
                    help="planned runs: pruning schedule (default compress's)")
    ap.add_argument("--allocation", default=None, choices=["global", "sensitivity"],
                    help="gradual schedule: how bytes are split over layers (default compress's)")
    ap.add_argument("--label-smoothing", type=float, default=None,
                    help="gradual schedule: label smoothing of the trials' loss (default compress's)")
    ap.add_argument("--trial-dropout", type=float, default=None,
                    help="gradual schedule: dropout in the trials' fc layers but the first "
                         "(default compress's)")
    ap.add_argument("--average", type=float, default=None,
                    help="gradual schedule: averaged share of each trial's recovery (default compress's)")
    ap.add_argument("--search", default=None, choices=["bisect", "false-position"],
                    help="gradual schedule: how trial bytes are searched (default compress's)")
    ap.add_argument("--prune-share", type=float, default=None,
                    help="share of --max-drop the pruning trials may spend (deepcomp.plan.PRUNE_SHARE)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", nargs="*", default=None, help="print a table of earlier --json files")
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    if args.table is not None:
        table(args.table, args.plot)
        return 0
    args.label = lambda: (f"max-drop {args.max_drop:g}" if args.max_drop is not None else
                          f"target {args.target_size}" if args.target_size is not None else "fixed recipe")
    rec = run(args)
    print(json.dumps({k: v for k, v in rec.items() if k not in ("stages",)}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
