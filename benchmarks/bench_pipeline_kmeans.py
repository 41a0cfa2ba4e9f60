"""Speed of the 1-D k-means behind weight sharing, against a textbook Lloyd loop.

    .venv/bin/python benchmarks/bench_pipeline_kmeans.py

deepcomp.share sorts once and then needs O(k log n) per iteration (assignment by
midpoints, update by prefix sums). The baseline is the usual Lloyd iteration on the
unsorted values (nearest centroid of every value, then a bincount mean), vectorised in
NumPy; both run the same number of iterations from the same linear init, and the
baseline's final centroids are checked against ours.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from deepcomp.share import init_centroids, kmeans_1d


def lloyd_textbook(x: np.ndarray, c: np.ndarray, iters: int) -> np.ndarray:
    c = c.copy()
    for _ in range(iters):
        # Nearest centroid through the sorted-centroid midpoints would be our trick;
        # the textbook way compares every value with every centroid, in chunks.
        labels = np.empty(x.size, dtype=np.int64)
        step = max(1, (1 << 22) // c.size)
        for i in range(0, x.size, step):
            labels[i:i + step] = np.abs(x[i:i + step, None] - c[None, :]).argmin(1)
        cnt = np.bincount(labels, minlength=c.size)
        sums = np.bincount(labels, weights=x, minlength=c.size)
        c = np.where(cnt > 0, sums / np.maximum(cnt, 1), c)
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 3_400_000])
    ap.add_argument("--bits", nargs="+", type=int, default=[5, 8])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{args.iters} Lloyd iterations from the linear init; medians of {args.repeats} runs\n")
    print("| values | bits | deepcomp sort + segments (s) | textbook NumPy Lloyd (s) | speed-up | max centroid diff |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        # Surviving weights of a pruned layer: a bimodal, zero-free distribution.
        x = rng.laplace(0, 0.02, n)
        x = x[x != 0]
        for bits in args.bits:
            k = 2 ** bits
            ours, base = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = kmeans_1d(x, k, "linear", max_iter=args.iters, tol=-1.0)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                c = lloyd_textbook(x, init_centroids(x, k, "linear"), args.iters)
                base.append(time.perf_counter() - t)
            diff = float(np.max(np.abs(np.sort(c) - r.centroids)))
            a, b = float(np.median(ours)), float(np.median(base))
            print(f"| {x.size:,} | {bits} | {a:.3f} | {b:.3f} | {b / a:.1f}x | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
