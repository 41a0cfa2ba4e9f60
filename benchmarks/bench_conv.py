"""Convolution paths against PyTorch and ONNX Runtime fp32, same run, 1 thread, medians.

    .venv/bin/python benchmarks/bench_conv.py                    # layers, then ResNet-18
    .venv/bin/python benchmarks/bench_conv.py --skip-model --reps 9
    .venv/bin/python benchmarks/bench_conv.py --skip-layers --batches 1 16

Part 1, ResNet-18's conv layer shapes (stem, 3x3 at 56/28/14/7, the stride-2 3x3 and 1x1
downsamples) at batch 1 and 16, timed round-robin rep by rep (the order shuffled every
rep): PyTorch fp32 F.conv2d, ONNX Runtime fp32 (a one-Conv model built with onnx.helper,
intra_op_num_threads=1), deepcomp's direct int8 convolution on the AVX512-VNNI (zmm)
path and on the AVX2 (maddubs) path, the previous int8 path (im2col + gemm_int8), and the
sparse codebook path (im2col + SpMM) at 50, 70 and 90 % sparsity. A path whose first
call is both over 50 ms and over 5x the fastest first call is not timed further ("-").

Part 2, ResNet-18 whole (torchvision, random weights, deepcomp.save with
prune="sparsity:0.7", bits={"conv": 5, "fc": 5}): PyTorch eager and ONNX Runtime fp32
(torch.onnx.export of the decoded model) against deepcomp.load at policy 'auto' and
'compact', and 'auto' with the zmm paths off (the AVX2-only CPU's view), at batch 1 and
16; the runtime's first call per batch (its path measurement) is excluded. Also the
largest output difference from PyTorch fp32, relative to the output's largest magnitude
(not top-1 agreement: a random-weight ResNet's logits are near ties).
"""
from __future__ import annotations

import argparse
import io
import platform
import random
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deepcomp import _C, ops  # noqa: E402

# (name, out, in, k, stride, padding, input size)
LAYERS = [
    ("stem 7x7/2 3->64 @224", 64, 3, 7, 2, 3, 224),
    ("3x3 64 @56", 64, 64, 3, 1, 1, 56),
    ("3x3/2 64->128 @56", 128, 64, 3, 2, 1, 56),
    ("1x1/2 64->128 @56", 128, 64, 1, 2, 0, 56),
    ("3x3 128 @28", 128, 128, 3, 1, 1, 28),
    ("3x3/2 128->256 @28", 256, 128, 3, 2, 1, 28),
    ("1x1/2 128->256 @28", 256, 128, 1, 2, 0, 28),
    ("3x3 256 @14", 256, 256, 3, 1, 1, 14),
    ("3x3/2 256->512 @14", 512, 256, 3, 2, 1, 14),
    ("1x1/2 256->512 @14", 512, 256, 1, 2, 0, 14),
    ("3x3 512 @7", 512, 512, 3, 1, 1, 7),
]
SPARSITIES = (0.5, 0.7, 0.9)
REP_S = 0.02  # one rep of a fast call loops for at least this long
HOPELESS_S, HOPELESS_X = 0.05, 5.0


def ort_session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def ort_conv(w: torch.Tensor, bias: torch.Tensor, x_shape, stride: int, padding: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = w.shape[2]
    oh = (x_shape[2] + 2 * padding - k) // stride + 1
    out_shape = [x_shape[0], w.shape[0], oh, oh]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(w.shape[2:]),
                            strides=[stride, stride], pads=[padding] * 4)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(w.numpy(), "w"), numpy_helper.from_array(bias.numpy(), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort_session(model.SerializeToString())
    return lambda x: sess.run(None, {"x": x.numpy()})[0]


def with_avx512(allow: bool, f):
    def run(x):
        _C.set_allow_avx512(allow)
        try:
            return f(x)
        finally:
            _C.set_allow_avx512(True)
    return run


def sparse_weight(w: torch.Tensor, sparsity: float, bits: int = 5, seed: int = 0):
    """w pruned by magnitude to `sparsity` and shared onto 2**bits values; its CSR codebook form."""
    o = w.shape[0]
    flat = w.reshape(o, -1).numpy()
    thr = np.quantile(np.abs(flat), sparsity)
    mask = np.abs(flat) > thr
    codebook = np.linspace(flat.min(), flat.max(), 2 ** bits).astype(np.float32)
    codes_full = np.abs(flat[..., None] - codebook).argmin(-1).astype(np.uint8)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int32)
    idx = np.nonzero(mask)[1].astype(np.uint16 if flat.shape[1] <= 65536 else np.int32)
    return ops.pack_codebook(indptr, idx, codes_full[mask], codebook, o, flat.shape[1])


def time_round_robin(impls: dict, x, reps: int, rng: random.Random, keep=("torch", "ort")):
    """(median wall, median CPU) seconds per call for each impl, rep by rep in a shuffled
    order. CPU time is the process's own (every path here runs on the calling thread at
    1 thread): on a shared VM it leaves out the time other processes held the CPU.
    Impls in `keep` (the baselines) are always timed."""
    first, inner = {}, {}
    live = dict(impls)
    for k, f in impls.items():
        t0 = time.perf_counter()
        f(x)
        first[k] = time.perf_counter() - t0
    lead = min(first.values())
    for k in list(live):
        if k not in keep and first[k] > HOPELESS_S and first[k] > HOPELESS_X * lead:
            del live[k]
    for k, f in live.items():
        t0 = time.perf_counter()
        f(x)
        inner[k] = max(1, min(200, int(REP_S / max(time.perf_counter() - t0, 1e-7))))
    out = {k: [] for k in live}
    cpu = {k: [] for k in live}
    keys = list(live)
    for _ in range(reps):
        rng.shuffle(keys)
        for k in keys:
            n = inner[k]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                live[k](x)
            out[k].append((time.perf_counter() - t0) / n)
            cpu[k].append((time.process_time() - c0) / n)
    return {k: statistics.median(v) for k, v in out.items()}, {k: statistics.median(v) for k, v in cpu.items()}


def bench_layers(batches, reps: int, log) -> list:
    rng = random.Random(0)
    rows = []
    for name, o, c, k, s, p, hw in LAYERS:
        g = torch.Generator().manual_seed(o * 7 + c + k)
        w = torch.randn(o, c, k, k, generator=g) * (2.0 / (c * k * k)) ** 0.5
        bias = torch.randn(o, generator=g) * 0.1
        i8 = ops.pack_int8_conv(w)
        gemm8 = ops.pack_int8(w.reshape(o, -1))
        sparse = {sp: sparse_weight(w, sp) for sp in SPARSITIES}
        for n in batches:
            x = torch.relu(torch.randn(n, c, hw, hw, generator=g))
            impls = {
                "torch": lambda x: F.conv2d(x, w, bias, s, p),
                "ort": ort_conv(w, bias, x.shape, s, p),
                "int8 zmm": with_avx512(True, lambda x: ops.conv2d_int8_direct(x, i8, bias, s, p)),
                "int8 avx2": with_avx512(False, lambda x: ops.conv2d_int8_direct(x, i8, bias, s, p)),
                "int8 im2col": lambda x: ops.conv2d_int8(x, gemm8, (k, k), bias, s, p),
            }
            for sp, sw in sparse.items():
                impls[f"sparse {int(sp * 100)}%"] = (lambda sw: lambda x: ops.conv2d_codebook_packed(
                    x, sw, (o, c, k, k), bias, s, p))(sw)
            with torch.inference_mode():
                t, tmin = time_round_robin(impls, x, reps, rng)
                ref = F.conv2d(x, w, bias, s, p)
                err = float((ops.conv2d_int8_direct(x, i8, bias, s, p) - ref).abs().max() / ref.abs().max())
            row = {"layer": name, "batch": n, "ms": {kk: v * 1e3 for kk, v in t.items()},
                   "cpu_ms": {kk: v * 1e3 for kk, v in tmin.items()}, "int8_err": err}
            rows.append(row)
            log(f"{name} b{n}: " + "  ".join(f"{kk} {v * 1e3:.3f}" for kk, v in t.items()) + f"  err {err:.4f}")
    return rows


def layers_markdown(rows) -> str:
    cols = ["torch", "ort", "int8 zmm", "int8 avx2", "int8 im2col", "sparse 50%", "sparse 70%", "sparse 90%"]
    out = ["| layer | batch | " + " | ".join(cols) + " | int8 zmm vs ORT | int8 avx2 vs ORT | best sparse vs ORT | "
           "zmm / avx2 vs ORT, CPU time | int8 err |",
           "|---|---:|" + "---:|" * (len(cols) + 5)]
    for r in rows:
        ms = r["ms"]
        cells = [f"{ms[c]:.3f}" if c in ms else "-" for c in cols]
        ort_ms = ms["ort"]
        sp = [ms[c] for c in cols if c.startswith("sparse") and c in ms]
        ratio = lambda v: f"{ort_ms / v:.2f}x"  # noqa: E731
        out.append(f"| {r['layer']} | {r['batch']} | " + " | ".join(cells) +
                   f" | {ratio(ms['int8 zmm'])} | {ratio(ms['int8 avx2'])} | "
                   f"{ratio(min(sp)) if sp else '-'} | {r['cpu_ms']['ort'] / r['cpu_ms']['int8 zmm']:.2f}x / "
                   f"{r['cpu_ms']['ort'] / r['cpu_ms']['int8 avx2']:.2f}x | "
                   f"{r['int8_err'] * 100:.2f} % |")
    return "\n".join(out)


def folded_resnet18(state: dict):
    """torchvision ResNet-18 with the file's weights: deepcomp.save folds each BatchNorm into
    the conv before it (weights and a bias), so the BatchNorms become identities."""
    import torch.nn as nn
    from deepcomp.models import get_model

    m = get_model("torchvision:resnet18").eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.Conv2d) and f"{name}.bias" in state:
            mod.bias = nn.Parameter(torch.zeros(mod.out_channels))
    for name, mod in list(m.named_modules()):
        for child, sub in list(mod.named_children()):
            if isinstance(sub, nn.BatchNorm2d):
                setattr(mod, child, nn.Identity())
    m.load_state_dict(state)
    return m.eval()


def bench_resnet(batches, reps: int, work: Path, log) -> list:
    import deepcomp
    from deepcomp.codec import decode
    from deepcomp.models import get_model
    from deepcomp.runtime import load, path_summary, resident_weight_bytes

    work.mkdir(parents=True, exist_ok=True)
    path = work / "resnet18_s70_b5.dcz"
    if not path.exists():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deepcomp.save(get_model("torchvision:resnet18").eval(), path, prune="sparsity:0.7",
                          bits={"conv": 5, "fc": 5})
    fp32 = folded_resnet18(decode(path))
    dense_bytes = sum(p.numel() * 4 for p in fp32.parameters())
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(fp32, (torch.randn(1, 3, 224, 224),), buf, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}}, opset_version=17)
    sess = ort_session(buf.getvalue())
    models = {"auto": load(path, policy="auto"), "compact": load(path, policy="compact"),
              "auto avx2": load(path, policy="auto")}
    rng = random.Random(1)
    rows = []
    for n in batches:
        x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))
        impls = {"torch": lambda x: fp32(x), "ort": lambda x: sess.run(None, {"x": x.numpy()})[0]}
        for k, m in models.items():
            impls[k] = with_avx512(k != "auto avx2", m)
        with torch.inference_mode():
            calib = {}
            for k, m in models.items():  # first call: the layers measure their paths
                t0 = time.perf_counter()
                impls[k](x)
                calib[k] = time.perf_counter() - t0
            t, tmin = time_round_robin(impls, x, reps, rng, keep=tuple(impls))
            ref = fp32(x)
            errs = {k: float((impls[k](x) - ref).abs().max() / ref.abs().max()) for k in models}
        paths = {k: {} for k in models}
        for k, m in models.items():
            for d in path_summary(m).values():
                for shape, pth in d.items():
                    if shape.startswith(f"({n},"):
                        paths[k][pth] = paths[k].get(pth, 0) + 1
        row = {"batch": n, "ms": {k: v * 1e3 for k, v in t.items()}, "cpu_ms": {k: v * 1e3 for k, v in tmin.items()},
               "calib_s": calib, "err": errs,
               "paths": paths}
        rows.append(row)
        log(f"resnet18 b{n}: " + "  ".join(f"{k} {v * 1e3:.2f}" for k, v in t.items()) + f"  err {errs}  paths {paths}")
    for k, m in models.items():
        log(f"resident ({k}): {resident_weight_bytes(m)} B of dense fp32 {dense_bytes} B")
    rows.append({"resident": {k: resident_weight_bytes(m) for k, m in models.items()}, "dense_bytes": dense_bytes,
                 "file_bytes": path.stat().st_size})
    return rows


def resnet_markdown(rows) -> str:
    out = ["| batch | PyTorch eager | ONNX Runtime | deepcomp auto | auto, AVX2 only | compact | auto vs ORT | "
           "auto AVX2 vs ORT | compact vs ORT | auto vs PyTorch | auto / AVX2 / compact vs ORT, CPU time | auto max err | "
           "auto paths |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "batch" not in r:
            continue
        ms = r["ms"]
        o = ms["ort"]
        out.append(f"| {r['batch']} | {ms['torch']:.2f} | {o:.2f} | {ms['auto']:.2f} | {ms['auto avx2']:.2f} | "
                   f"{ms['compact']:.2f} | {o / ms['auto']:.2f}x | {o / ms['auto avx2']:.2f}x | {o / ms['compact']:.2f}x | "
                   f"{ms['torch'] / ms['auto']:.2f}x | " + " / ".join(f"{r['cpu_ms']['ort'] / r['cpu_ms'][k]:.2f}x" for k in
                                                          ("auto", "auto avx2", "compact")) + " | "
                   f"{r['err']['auto'] * 100:.2f} % | "
                   + ", ".join(f"{p} {c}" for p, c in sorted(r["paths"]["auto"].items())) + " |")
    mem = rows[-1]
    out.append("")
    out.append(f"File {mem['file_bytes']} B; dense fp32 parameters {mem['dense_bytes']} B; resident weights: " +
               ", ".join(f"{k} {v} B ({v / mem['dense_bytes']:.3f} of dense)" for k, v in mem["resident"].items()))
    return "\n".join(out)


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except Exception:
        model = platform.processor()
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else []
    import onnxruntime
    return (f"{model}; AVX2 {_C.cpu_has_avx2()}, AVX-512 {_C.avx512_usable()}; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}; load average {' '.join(load)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "bench")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ops.set_num_threads(1)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    print(f"Machine: {machine()}; 1 thread\n")
    if not args.skip_layers:
        rows = bench_layers(args.batches, args.reps, log)
        print("Conv layers (ms per call, medians; ratios > 1: faster than ONNX Runtime fp32):\n")
        print(layers_markdown(rows))
        print()
    if not args.skip_model:
        rows = bench_resnet(args.batches, args.reps, args.work, log)
        print("ResNet-18, 70 % sparse, 5 bits (ms per call, medians):\n")
        print(resnet_markdown(rows))
    print(f"\nAfter: load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
