"""`deepcomp run`: inference on a .dcz file's compressed form, with optional comparison.

    deepcomp run out.dcz --input x.npy [--output y.npy] [--batch N] [--threads T]
    deepcomp run out.dcz --data fashion-mnist [--data-dir D]
    ... [--compare] [--json PATH] [--arch NAME] [--policy compact|auto|exact|sparse|int8|decode|dense]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from deepcomp.errors import DataError, DeepcompError, ModelError, brief
from deepcomp.fileio import atomic_write

# Kept in step with deepcomp.runtime.layers.POLICIES (imported lazily: torch is slow to load).
POLICIES = ("auto", "exact", "compact", "sparse", "int8", "decode", "dense", "lut")

# Small, float-friendly printing for outputs sent to the terminal.
_PRINT_OPTS = dict(precision=5, suppress=True, threshold=2000, linewidth=120)


def add_run_command(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="run a .dcz model on its compressed form (native sparse / int8 kernels)",
        description="Run inference directly on the compressed weights of a .dcz file.")
    p.add_argument("file", help="the .dcz file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="[NAME=]X.npy", action="append",
                     help="input array (.npy, batch first); for a model with several inputs give "
                     "each by name, e.g. --input input_ids=a.npy --input attention_mask=b.npy")
    src.add_argument("--data", metavar="NAME", help="evaluate on a data set's test split: fashion-mnist")
    p.add_argument("--data-dir", metavar="D", help="where the data set's files are "
                   "(default $DEEPCOMP_DATA or /usr/share/datasets/fashion-mnist)")
    p.add_argument("--output", metavar="Y.npy", help="write the outputs here instead of printing them")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="batch size (default: the whole input for --input, 64 for --data)")
    p.add_argument("--threads", type=int, default=None, metavar="T", help="CPU threads to use")
    p.add_argument("--arch", metavar="NAME", help="architecture for a weights-only file, e.g. "
                   "deepcomp:lenet300 or torchvision:alexnet")
    p.add_argument("--policy", choices=POLICIES, default="compact",
                   help="kernel path per layer: the faster of sparse kernels and decode-on-use, "
                   "keeping only the file's form in memory (compact, the default), measured "
                   "fastest of all paths including resident int8/dense copies (auto), the "
                   "same without int8 rounding (exact), or one fixed path")
    p.add_argument("--compare", action="store_true",
                   help="also run the decoded dense model in PyTorch eager: largest output "
                   "difference and speed ratio")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON for scripts")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="with --data: use only the first N test examples")
    p.set_defaults(func=run_command)
    return p


def read_named(spec: str):
    """'name=path.npy' -> (name, tensor in the array's own dtype: token ids stay integers)."""
    import numpy as np
    import torch

    name, _, path = spec.partition("=")
    if not name or not path:
        raise DataError(f"--input {spec!r}: write NAME=FILE.npy")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such input file: {p}")
    with open(p, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"cannot read {p}: not a .npy file (save it with numpy.save)")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{p} is not a plain numeric array: {why}") from None
    if arr.dtype.kind not in "fiub" or arr.ndim < 1 or arr.shape[0] == 0:
        raise DataError(f"{p}: input '{name}' must be a numeric array with a batch dim, "
                        f"got {arr.dtype} {list(arr.shape)}")
    if arr.dtype.kind == "u" and arr.dtype != np.uint8:
        arr = arr.astype(np.int64)
    return name, torch.from_numpy(np.ascontiguousarray(arr))


def read_input(path: str):
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such input file: {p}")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"PK":
        raise DataError(f"{p} is an .npz archive of several arrays; give one .npy array")
    if magic != b"\x93NUMPY":
        raise DataError(f"cannot read {p}: not a .npy file (save it with numpy.save)")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{p} is not a plain numeric array (object arrays and pickles are "
                        f"refused): {why}") from None
    except Exception as e:
        raise DataError(f"cannot read {p} as a .npy array: {brief(e)}") from None
    if arr.dtype.kind != "f":
        raise DataError(f"{p} has dtype {arr.dtype}; the model takes floating point input "
                        "(float32, normalised as in training)")
    if arr.ndim < 2:
        raise DataError(f"{p} has shape {list(arr.shape)}; put the batch first (e.g. 1 x ...)")
    if arr.shape[0] == 0:
        raise DataError(f"{p} holds no samples")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _load_models(args):
    from deepcomp.runtime.loader import from_state_dict, load

    path = Path(args.file)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    model = None
    if args.arch:
        from deepcomp.models import get_model
        model = get_model(args.arch)
    rt = load(path, model=model, policy=args.policy)
    dense = None
    if args.compare:
        from deepcomp.codec import decode, open_dcz
        if args.arch:
            from deepcomp.models import get_model
            dense = get_model(args.arch)
            sd = decode(path)
            try:
                dense.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise ModelError(f"{path} does not match {args.arch}: {str(e).splitlines()[0]}") from None
            dense.eval()
        else:
            # The graph run by PyTorch's own dense ops on the decoded weights.
            f = open_dcz(path)
            dense = from_state_dict(decode(path), graph=f.graph, policy="dense")
    return rt, dense


def _batches(x, bs: int):
    for i in range(0, x.shape[0], bs):
        yield x[i:i + bs]


def _run_all(model, x, bs: int):
    """Outputs for all of x, and per-batch latencies (s) of the full-size batches.

    The first batch of each size is run once untimed: it is where runtime layers measure
    their candidate paths, and where PyTorch warms its own caches.
    """
    import torch

    outs, lat, warmed = [], [], set()
    with torch.inference_mode():
        for xb in _batches(x, bs):
            n = xb.shape[0]
            if n not in warmed:
                model(xb)
                warmed.add(n)
            t0 = time.perf_counter()
            y = model(xb)
            dt = time.perf_counter() - t0
            if n == bs or x.shape[0] < bs:
                lat.append(dt)
            outs.append(y if isinstance(y, torch.Tensor) else y[0])
    return torch.cat(outs), lat


def _stats_ms(lat: list) -> dict:
    import numpy as np

    a = np.asarray(lat) * 1e3
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "batches": int(a.size)}


def run_command(args) -> int:
    import numpy as np
    import torch

    from deepcomp.runtime.layers import path_summary, resident_weight_bytes

    if args.batch is not None and args.batch < 1:
        raise DeepcompError("--batch must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise DeepcompError("--threads must be at least 1")
        from deepcomp.runtime import kernels
        kernels.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise DeepcompError("--limit must be at least 1")
    if args.output and args.data:
        raise DeepcompError("--output goes with --input (with --data the figures are printed)")

    labels = None
    if args.input and (len(args.input) > 1 or "=" in args.input[0]):
        return _run_named(args)
    if args.input:
        x = read_input(args.input[0])
    else:
        from deepcomp.data import get_dataset
        ds = get_dataset(args.data, "test", args.data_dir)
        x, labels = ds.images, ds.targets
        if args.limit:
            x, labels = x[:args.limit], labels[:args.limit]
    bs = args.batch or (x.shape[0] if args.input else 64)

    t0 = time.perf_counter()
    rt, dense = _load_models(args)
    load_s = time.perf_counter() - t0
    y, lat = _run_all(rt, x, bs)
    report: dict = {
        "file": str(args.file), "samples": int(x.shape[0]), "batch": int(bs),
        "threads": int(torch.get_num_threads() if args.threads is None else args.threads),
        "policy": args.policy, "load_s": load_s, "latency_ms": _stats_ms(lat),
        "resident_weight_bytes": resident_weight_bytes(rt),
        "paths": path_summary(rt),
    }
    if labels is not None:
        report["accuracy"] = float((y.argmax(1) == labels).float().mean()) * 100
    if dense is not None:
        yd, lat_d = _run_all(dense, x, bs)
        report["dense_latency_ms"] = _stats_ms(lat_d)
        report["max_abs_diff"] = float((y - yd).abs().max())
        report["output_scale"] = float(yd.abs().max())
        report["speed_ratio"] = report["dense_latency_ms"]["median"] / report["latency_ms"]["median"]
        if labels is not None:
            report["dense_accuracy"] = float((yd.argmax(1) == labels).float().mean()) * 100
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    if args.output:
        arr = y.numpy()
        atomic_write(args.output, lambda f: np.save(f, arr, allow_pickle=False))
    if args.json:
        data = json.dumps(report, indent=2).encode()
        atomic_write(args.json, lambda f: f.write(data))
    _print(report, y if (args.input and not args.output) else None)
    return 0


def _run_named(args) -> int:
    """Inputs given by name (a token model's input_ids and attention_mask): one forward pass."""
    import numpy as np
    import torch

    from deepcomp.runtime.loader import load

    named = dict(read_named(s) for s in args.input)
    if len(named) != len(args.input):
        raise DataError("an input name is given twice")
    if args.compare or args.batch:
        raise DeepcompError("--compare and --batch go with a single --input X.npy")
    t0 = time.perf_counter()
    model = load(Path(args.file), policy=args.policy)
    load_s = time.perf_counter() - t0
    with torch.inference_mode():
        model(**named)  # untimed: layers choose their kernels here
        t0 = time.perf_counter()
        y = model(**named)
        dt = time.perf_counter() - t0
    outs = y if isinstance(y, dict) else {"output": y} if isinstance(y, torch.Tensor) else \
        {f"output_{i}": v for i, v in enumerate(y)}
    if args.output:
        arrs = {k: v.numpy() for k, v in outs.items()}
        if len(arrs) == 1:
            atomic_write(args.output, lambda f: np.save(f, next(iter(arrs.values())), allow_pickle=False))
        else:
            atomic_write(args.output, lambda f: np.savez(f, **arrs))
    else:
        with np.printoptions(**_PRINT_OPTS):
            for k, v in outs.items():
                print(f"{k}: shape {list(v.shape)}\n{v.numpy()}")
    report = {"file": str(args.file), "inputs": {k: list(v.shape) for k, v in named.items()},
              "load_s": load_s, "latency_ms": dt * 1e3}
    if args.json:
        data = json.dumps(report, indent=2).encode()
        atomic_write(args.json, lambda f: f.write(data))
    print(f"inputs {', '.join(f'{k} {list(v.shape)}' for k, v in named.items())}: "
          f"latency {dt * 1e3:.3f} ms (load {load_s:.2f} s)")
    return 0


def _print(r: dict, y) -> None:
    import numpy as np

    out = sys.stdout
    if y is not None:
        with np.printoptions(**_PRINT_OPTS):
            print(y.numpy(), file=out)
        if y.dim() == 2:
            print(f"top-1: {y.argmax(1).tolist()}", file=out)
    lat = r["latency_ms"]
    print(f"{r['samples']} samples, batch {r['batch']}, {r['threads']} threads, policy {r['policy']}: "
          f"latency median {lat['median']:.3f} ms, p90 {lat['p90']:.3f} ms per batch", file=out)
    if "accuracy" in r:
        print(f"top-1 accuracy: {r['accuracy']:.2f}%", file=out)
    if "max_abs_diff" in r:
        d = r["dense_latency_ms"]
        print(f"dense PyTorch: median {d['median']:.3f} ms; compressed is {r['speed_ratio']:.2f}x "
              f"its speed; largest output difference {r['max_abs_diff']:.3g} "
              f"(output scale {r['output_scale']:.3g})", file=out)
        if "dense_accuracy" in r:
            print(f"dense top-1 accuracy: {r['dense_accuracy']:.2f}%", file=out)
    print(f"weights resident: {r['resident_weight_bytes'] / 1e6:.3f} MB; "
          f"peak RSS {r['peak_rss_mb']:.1f} MB", file=sys.stdout)
