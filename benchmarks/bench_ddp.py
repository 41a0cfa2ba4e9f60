"""`deepcomp compress` on 1 process against `torchrun --nproc-per-node 2` (CPU, gloo).

For each LeNet: one process with 1 thread, one process with 2 threads, and two gloo
processes with 1 thread each (torchrun), all with --checkpoint-dir. Prints the wall time
per training epoch of the second prune stage and of the centroid fine-tuning (the stage's
seconds / its epochs; the first stage also pays a one-time import of torch._dynamo by the
first optimizer, so it is left out), the final top-1,
the checkpointing seconds and the whole command's wall time. Then checks that a run
interrupted after a stage and resumed ends bit for bit where an uninterrupted run ends.

    python benchmarks/bench_ddp.py [--models lenet300,lenet5] [--subset N] [--epochs E]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(model: str, mode: str, args, workdir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1" if mode != "1x2" else "2")
    common = ["compress", f"deepcomp:{model}", "out.dcz", "--data", "fashion-mnist",
              "--subset", str(args.subset), "--prune-steps", "2", "--epochs", str(args.epochs),
              "--finetune-epochs", str(args.finetune_epochs), "--quiet", "--device", "cpu",
              "--checkpoint-dir", "ck"]
    if mode == "2x1":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "deepcomp", *common]
    else:
        cmd = [sys.executable, "-m", "deepcomp", *common, "--threads", mode[-1]]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{model} {mode} failed:\n{r.stderr[-3000:]}")
    stages = {m.group(1).strip(): (float(m.group(2)), float(m.group(3)))
              for m in re.finditer(r"^(\S.*?)\s+([\d.]+)% .*?\s([\d.]+)$", r.stdout, re.M)}
    ck = re.search(r"\[checkpoints\] (\d+) written .*\(([\d.]+) s\)", r.stderr)
    return {"stages": stages, "wall": wall, "ck_n": int(ck.group(1)), "ck_s": float(ck.group(2)),
            "bytes": (workdir / "out.dcz").stat().st_size}


def resume_check(model: str, args) -> tuple[bool, float]:
    import torch

    import deepcomp.pipeline as pipeline
    from deepcomp.codec import decode

    torch.set_num_threads(1)
    kw = dict(prune_steps=2, epochs=args.epochs / 2, finetune_epochs=args.finetune_epochs,
              subset=args.subset, seed=0, progress=False, log=lambda s: None, device="cpu")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        a = pipeline.compress(f"deepcomp:{model}", d / "a.dcz", **kw)
        real, calls = pipeline.train, [0]

        def failing(*p, **k):
            calls[0] += 1
            if calls[0] == 2:
                raise KeyboardInterrupt("injected after stage 'prune 1/2'")
            return real(*p, **k)

        pipeline.train = failing
        try:
            pipeline.compress(f"deepcomp:{model}", d / "b.dcz", checkpoint_dir=d / "ck", **kw)
        except KeyboardInterrupt:
            pass
        finally:
            pipeline.train = real
        b = pipeline.compress(f"deepcomp:{model}", d / "b.dcz", checkpoint_dir=d / "ck",
                              resume=True, **kw)
        da, db = decode(d / "a.dcz"), decode(d / "b.dcz")
        same = all(torch.equal(da[k], db[k]) for k in da) and \
            [s.accuracy for s in a.stages] == [s.accuracy for s in b.stages]
        return same, a.stage("share + fine-tune").accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--subset", type=int, default=20000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--finetune-epochs", type=float, default=0.5)
    args = ap.parse_args()
    print(f"subset {args.subset} training images, 2 prune steps x {args.epochs} epoch, "
          f"fine-tune {args.finetune_epochs} epoch; load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    for model in args.models.split(","):
        for mode in ("1x1", "1x2", "2x1"):
            with tempfile.TemporaryDirectory() as d:
                res = run(model, mode, args, Path(d))
            rows.append((model, mode, res))
            print(f"  done {model} {mode}: {res['wall']:.1f} s", flush=True)
    print()
    print(f"{'model':<9} {'procs x threads':>15} {'prune 2 s/epoch':>15} {'fine-tune s/epoch':>18} "
          f"{'final top-1':>11} {'ckpt s':>7} {'ckpts':>5} {'command s':>9}")
    for model, mode, r in rows:
        p = r["stages"]["prune 2/2"][1] / args.epochs
        f = r["stages"]["share + fine-tune"][1] / max(args.finetune_epochs, 1e-9)
        print(f"{model:<9} {mode:>15} {p:>15.1f} {f:>18.1f} "
              f"{r['stages']['share + fine-tune'][0]:>10.2f}% {r['ck_s']:>7.2f} {r['ck_n']:>5} "
              f"{r['wall']:>9.1f}")
    print()
    for model in args.models.split(","):
        t0 = time.perf_counter()
        same, acc = resume_check(model, args)
        print(f"resume {model}: interrupted in 'prune 2/2' and resumed == uninterrupted "
              f"(decoded tensors and every stage's top-1): {same}; final top-1 {acc:.2f}% "
              f"({time.perf_counter() - t0:.0f} s)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
