"""`deepcomp info OUT --plot F.png`: per layer, the weights before / after pruning and the codebook.

What a .dcz always records is the shared form: per layer a codebook and, per weight, its
cluster; so the codebook values and their cluster counts (how many weights use each
value) come from the file itself. The distribution of the weights before pruning and
after pruning (before sharing) is not recoverable from the shared form; `deepcomp
compress --record-hist` stores both as histograms in the meta section
(``meta["pipeline"]["weight_hist"]``) and the plot draws them when they are there.
"""
from __future__ import annotations

import numpy as np

from deepcomp.codec.reader import DczFile
from deepcomp.codec.tensors import SharedDense


def weight_histograms(weights: dict, bins: int = 48, ranges: dict | None = None) -> dict:
    """{name: {'lo', 'hi', 'counts'}} of the nonzero entries of each tensor (JSON-ready).

    ``ranges`` ({name: (lo, hi)}) reuses earlier bin edges so two histograms line up.
    """
    out = {}
    for n, t in weights.items():
        v = t.detach().reshape(-1).float().cpu().numpy()
        v = v[v != 0]
        if ranges and n in ranges:
            lo, hi = ranges[n]
        else:
            m = float(np.abs(v).max()) if v.size else 1.0
            lo, hi = -m, m
        counts, _ = np.histogram(v, bins=bins, range=(lo, hi))
        out[n] = {"lo": float(np.float32(lo)), "hi": float(np.float32(hi)),
                  "counts": [int(c) for c in counts]}
    return out


SHARED_ENCODINGS = ("shared_sparse", "shared_dense", "ac_shared")  # v1 Huffman, v2 arithmetic


def _codebook_counts(f: DczFile, name: str):
    c = f.compressed(name)
    book = np.asarray(c.codebook, dtype=np.float32)
    codes = np.asarray(c.codes).astype(np.int64)
    counts = np.bincount(codes, minlength=book.size)[:book.size]
    if isinstance(c, SharedDense):
        # The dense form's codebook holds the pruned zeros as one of its values.
        keep = book != 0
        book, counts = book[keep], counts[keep]
    return book, counts


def plot_file(f: DczFile, path) -> list[str]:
    """Write the PNG; returns the names of the layers drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r.name for r in f.parsed.tensors
              if r.encoding in SHARED_ENCODINGS and len(r.shape) >= 2]
    if not layers:
        from deepcomp.errors import DeepcompError

        raise DeepcompError("this file has no weight-shared layers to plot")
    hist = (f.meta.get("pipeline") or {}).get("weight_hist") or {}
    fig, axes = plt.subplots(len(layers), 2, figsize=(11, 2.6 * len(layers)), squeeze=False)
    for row, name in zip(axes, layers):
        ax = row[0]
        h = hist.get(name)
        if h:
            for key, colour in (("dense", "tab:blue"), ("pruned", "tab:orange")):
                if key in h:
                    e = np.linspace(h[key]["lo"], h[key]["hi"], len(h[key]["counts"]) + 1)
                    ax.stairs(h[key]["counts"], e, fill=key == "dense", alpha=0.5 if key == "dense" else 1,
                              color=colour, label=f"{'before' if key == 'dense' else 'after'} pruning")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        else:
            vals = f.dense(name).reshape(-1).numpy()
            vals = vals[vals != 0]
            ax.hist(vals, bins=48, color="tab:orange")
            ax.set_yscale("log")
            ax.text(0.02, 0.92, "kept weights (shared); no pre-pruning histogram recorded",
                    transform=ax.transAxes, fontsize=7, va="top")
        ax.set_title(f"{name}: weights", fontsize=9)
        book, counts = _codebook_counts(f, name)
        ax = row[1]
        ax.vlines(book, 0, counts, color="tab:green")
        ax.plot(book, counts, "o", ms=3, color="tab:green")
        ax.set_title(f"{name}: codebook ({book.size} values) and cluster counts", fontsize=9)
        ax.set_xlabel("centroid value")
        ax.set_ylabel("weights")
    fig.tight_layout()
    from deepcomp.fileio import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)
    return layers
