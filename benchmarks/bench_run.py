"""End-to-end latency of `deepcomp.load`ed models against PyTorch, same run, medians.

    .venv/bin/python benchmarks/bench_run.py                       # everything (VGG-16 is slow)
    .venv/bin/python benchmarks/bench_run.py --models lenet300 lenet5 alexnet --reps 7

For each model: PyTorch eager fp32 on the decoded dense weights, PyTorch dynamic int8
(torch.ao quantize_dynamic of the Linear layers) and the compressed runtime (policy
'auto', and policy 'compact', which keeps only the file's form resident), timed in turn, rep by rep (a rep of a fast model loops for ~20 ms and counts
the mean call), at batch 1, 16 and 64; the runtime's first call at
each batch size (where it measures its paths) is timed apart as "calibration". For
AlexNet and VGG-16 the classifier (the Linear stack on the conv features) is also timed
alone. Resident weight memory is counted from the tensors the runtime holds after all
batch sizes ran ('auto': whatever paths won, dense copies included; 'compact': the
sparse file form only), against the dense fp32 parameters.

Models: LeNet-300-100 and LeNet-5 from the shipped checkpoints, one-shot pruned and
shared as the paper's figures (92% sparse; 6-bit fc / 8-bit conv), or the pipeline's
retrained files when given with --lenet300-dcz / --lenet5-dcz; torchvision AlexNet and
VGG-16 with random weights pruned to 90% and shared at 5 bits (speed only). Encoded
files are cached in --work (default out/bench); --reencode rebuilds them.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deepcomp  # noqa: E402
from deepcomp.codec import decode  # noqa: E402
from deepcomp.runtime import kernels, load, path_summary, resident_weight_bytes  # noqa: E402

SPECS = {
    # name: (model name, prune spec, bits, input shape without batch)
    "lenet300": ("deepcomp:lenet300", "sparsity:0.92", {"fc": 6}, (1, 28, 28)),
    "lenet5": ("deepcomp:lenet5", "sparsity:0.92", {"fc": 5, "conv": 8}, (1, 28, 28)),
    "alexnet": ("torchvision:alexnet", "sparsity:0.9", {"fc": 5, "conv": 5}, (3, 224, 224)),
    "vgg16": ("torchvision:vgg16", "sparsity:0.9", {"fc": 5, "conv": 5}, (3, 224, 224)),
}


def build_model(name: str):
    from deepcomp.models import get_model, load_checkpoint

    arch = SPECS[name][0]
    if arch.startswith("deepcomp:"):
        return load_checkpoint(arch)
    torch.manual_seed(0)
    return get_model(arch)


def encode(name: str, work: Path, reencode: bool, given: str | None) -> tuple[Path, dict]:
    if given:
        return Path(given), {"source": given}
    path = work / f"{name}.dcz"
    info = {"source": f"{SPECS[name][0]}, {SPECS[name][1]}, bits {SPECS[name][2]}"}
    if path.exists() and not reencode:
        info["encode_s"] = None
        return path, info
    model = build_model(name).eval()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deepcomp.save(model, path, prune=SPECS[name][1], bits=SPECS[name][2])
    info["encode_s"] = time.perf_counter() - t0
    return path, info


def dense_models(name: str, path: Path):
    """PyTorch fp32 with the decoded weights, and its dynamic-int8 twin."""
    from deepcomp.models import get_model

    fp32 = get_model(SPECS[name][0]).eval()
    fp32.load_state_dict(decode(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated but still the baseline
        from torch.ao.quantization import quantize_dynamic
        int8 = quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    return fp32, int8


# One rep of a fast model loops over calls for at least this long, so that a median is
# not of timer-resolution-sized samples (LeNet-300-100 at batch 1 is tens of microseconds).
REP_S = 0.02


def time_impls(impls: dict, x: torch.Tensor, reps: int) -> dict:
    """Median seconds per call for each impl, interleaved rep by rep against drift."""
    out = {k: [] for k in impls}
    first, inner = {}, {}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, f in impls.items():
            t0 = time.perf_counter()
            f(x)
            first[k] = time.perf_counter() - t0
            t0 = time.perf_counter()
            f(x)
            inner[k] = max(1, min(1000, int(REP_S / max(time.perf_counter() - t0, 1e-7))))
        for _ in range(reps):
            for k, f in impls.items():
                n = inner[k]
                t0 = time.perf_counter()
                for _ in range(n):
                    f(x)
                out[k].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in out.items()}, first


def classifier_input(fp32, name: str, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        f = fp32.avgpool(fp32.features(x))
        return torch.flatten(f, 1).clone()


def bench_model(name: str, path: Path, batches, reps: int, log) -> dict:
    fp32, int8 = dense_models(name, path)
    t0 = time.perf_counter()
    ours = load(path, policy="auto")
    load_s = time.perf_counter() - t0
    compact = load(path, policy="compact")
    res = {"file_bytes": path.stat().st_size, "load_s": load_s, "rows": [], "classifier": []}
    dense_bytes = sum(p.numel() * 4 for p in fp32.parameters())
    res["dense_param_bytes"] = dense_bytes
    shape = SPECS[name][3]
    g = torch.Generator().manual_seed(0)
    classifier = None
    if hasattr(fp32, "classifier"):
        from deepcomp.models import get_model
        from deepcomp.runtime import set_policy as _sp
        swapped = load(path, model=get_model(SPECS[name][0]))
        classifier = (fp32.classifier, int8.classifier, _sp(swapped, "auto").classifier)
    for b in batches:
        x = torch.randn(b, *shape, generator=g)
        med, first = time_impls({"fp32": fp32, "int8": int8, "deepcomp": ours, "compact": compact},
                                x, reps)
        row = {"batch": b, "fp32_ms": med["fp32"] * 1e3, "int8_ms": med["int8"] * 1e3,
               "deepcomp_ms": med["deepcomp"] * 1e3, "calibration_s": first["deepcomp"],
               "compact_ms": med["compact"] * 1e3}
        row["vs_fp32"] = med["fp32"] / med["deepcomp"]
        row["vs_best"] = min(med["fp32"], med["int8"]) / med["deepcomp"]
        row["compact_vs_best"] = min(med["fp32"], med["int8"]) / med["compact"]
        paths = [p for d in path_summary(ours).values() for k, p in d.items() if k.startswith(f"({b},")]
        row["paths"] = {p: paths.count(p) for p in sorted(set(paths))}
        res["rows"].append(row)
        log(f"  {name} batch {b}: fp32 {row['fp32_ms']:.3f} ms, int8 {row['int8_ms']:.3f} ms, "
            f"deepcomp {row['deepcomp_ms']:.3f} ms ({row['vs_fp32']:.2f}x fp32, "
            f"{row['vs_best']:.2f}x best) paths {row['paths']}; compact {row['compact_ms']:.3f} ms "
            f"({row['compact_vs_best']:.2f}x best)")
        if classifier is not None:
            feats = classifier_input(fp32, name, x)
            cm, _ = time_impls(dict(zip(("fp32", "int8", "deepcomp"), classifier)), feats, reps)
            crow = {"batch": b, **{f"{k}_ms": v * 1e3 for k, v in cm.items()},
                    "vs_fp32": cm["fp32"] / cm["deepcomp"],
                    "vs_best": min(cm["fp32"], cm["int8"]) / cm["deepcomp"]}
            res["classifier"].append(crow)
            log(f"  {name} classifier batch {b}: fp32 {crow['fp32_ms']:.3f} ms, int8 "
                f"{crow['int8_ms']:.3f} ms, deepcomp {crow['deepcomp_ms']:.3f} ms "
                f"({crow['vs_fp32']:.2f}x fp32, {crow['vs_best']:.2f}x best)")
    res["resident_auto_bytes"] = resident_weight_bytes(ours)
    res["resident_compact_bytes"] = resident_weight_bytes(compact)
    return res


def markdown(results: dict, meta: dict) -> str:
    lines = [f"Machine: {meta['cpu']}, {meta['threads']} threads, kernels {meta['isa']}; "
             f"torch {meta['torch']}; {meta['reps']} reps, medians.", ""]
    lines.append("| model | batch | PyTorch fp32 ms | PyTorch dyn. int8 ms | deepcomp (auto) ms | vs fp32 | "
                 "vs faster of the two | first call (calibration) s | paths chosen (auto) | "
                 "deepcomp (compact) ms | compact vs faster |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for name, r in results.items():
        for row in r["rows"]:
            paths = ", ".join(f"{k} {v}" for k, v in row["paths"].items())
            lines.append(f"| {name} | {row['batch']} | {row['fp32_ms']:.3f} | {row['int8_ms']:.3f} | "
                         f"{row['deepcomp_ms']:.3f} | {row['vs_fp32']:.2f}x | {row['vs_best']:.2f}x | "
                         f"{row['calibration_s']:.2f} | {paths} | {row['compact_ms']:.3f} | "
                         f"{row['compact_vs_best']:.2f}x |")
    cls = {n: r for n, r in results.items() if r["classifier"]}
    if cls:
        lines += ["", "Classifier only (the Linear stack on the conv features):", "",
                  "| model | batch | fp32 ms | dyn. int8 ms | deepcomp ms | vs fp32 | vs faster of the two |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in cls.items():
            for row in r["classifier"]:
                lines.append(f"| {name} | {row['batch']} | {row['fp32_ms']:.3f} | {row['int8_ms']:.3f} | "
                             f"{row['deepcomp_ms']:.3f} | {row['vs_fp32']:.2f}x | {row['vs_best']:.2f}x |")
    lines += ["", "| model | file bytes | encode s | load s | dense fp32 weights | resident (auto) | "
              "resident (compact) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        d = r["dense_param_bytes"]
        enc = r.get("encode_s")
        lines.append(f"| {name} | {r['file_bytes']:,} | {'cached' if enc is None else f'{enc:.1f}'} | "
                     f"{r['load_s']:.2f} | {d / 1e6:.2f} MB | {r['resident_auto_bytes'] / 1e6:.2f} MB "
                     f"(1/{d / r['resident_auto_bytes']:.1f}) | {r['resident_compact_bytes'] / 1e6:.2f} MB "
                     f"(1/{d / r['resident_compact_bytes']:.1f}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--work", default=str(ROOT / "out" / "bench"))
    p.add_argument("--reencode", action="store_true")
    p.add_argument("--lenet300-dcz", default=None, help="a pipeline-made LeNet-300-100 .dcz")
    p.add_argument("--lenet5-dcz", default=None, help="a pipeline-made LeNet-5 .dcz")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    kernels.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from deepcomp import ops
    meta = {"cpu": cpu, "threads": args.threads, "isa": ops.isa(), "torch": torch.__version__,
            "reps": args.reps, "command": " ".join(sys.argv)}
    results = {}
    for name in args.models:
        given = {"lenet300": args.lenet300_dcz, "lenet5": args.lenet5_dcz}.get(name)
        path, info = encode(name, work, args.reencode, given)
        log(f"{name}: {info['source']}" + (f", encoded in {info['encode_s']:.1f} s"
                                           if info.get("encode_s") else ""))
        r = bench_model(name, path, args.batches, args.reps, log)
        r.update(info)
        results[name] = r
    md = markdown(results, meta)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
