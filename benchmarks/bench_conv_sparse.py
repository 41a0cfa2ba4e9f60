"""Depthwise and sparse 1x1 convolutions against PyTorch and ONNX Runtime, same run, medians.

    .venv/bin/python benchmarks/bench_conv_sparse.py                  # layers, then MobileNetV2 whole
    .venv/bin/python benchmarks/bench_conv_sparse.py --skip-model --batches 1
    DEEPCOMP_NO_AVX512=1 .venv/bin/python benchmarks/bench_conv_sparse.py   # AVX2-only CPU

One thread everywhere (torch.set_num_threads(1), deepcomp's own setting, ONNX Runtime's
intra_op_num_threads=1). Every peer runs in turn, in a new random order every round, and
keeps the median of its rounds (the machine is shared: ratios measured side by side are
what to trust, not single times). Times are the calling thread's CPU time by default
(--clock wall for wall time): at one thread every peer computes on the calling thread,
and CPU time leaves out the spans a loaded machine keeps the thread waiting.

Layers (random weights, pruned at random to the stated sparsity, 5-bit codebook):
* depthwise 3x3 / 5x5 layers of MobileNetV2 / V3: PyTorch's F.conv2d(groups=C), ONNX
  Runtime on a one-Conv model (onnx.helper, group=C), deepcomp's depthwise kernel on zmm
  and on ymm (the AVX2-only path, same run). Depthwise weights are tiny and the direct
  kernel runs them dense, so their sparsity does not matter and is not varied.
* 1x1 layers of MobileNetV2 and ResNet-50 at 50 / 70 / 90 % sparsity: PyTorch and ONNX
  Runtime on the dense weight (neither exploits zeros), deepcomp's sparse 1x1 kernel (SpMM
  over channels on the NCHW input, zmm and ymm) and deepcomp's older sparse path (im2col
  + sparse matmul) for comparison.
The deepcomp kernel columns write into an output allocated once, as ONNX Runtime's arena
reuses its buffers; PyTorch and the im2col path allocate per call as they do in use (a
fresh 10-80 MB output at batch 16 costs its page faults: tens of ms on 112 px layers).
The runtime layer still allocates per call; preallocated plans are the executor's work.
Model: torchvision MobileNetV2 (random weights) one-shot pruned to 50 / 70 % and shared at
5 bits, saved weights-only and run through deepcomp.load(path, model=mobilenet_v2()):
PyTorch eager and ONNX Runtime (torch.onnx.export) on the decoded weights, deepcomp
(policy 'auto'), and deepcomp with the depthwise / sparse1x1 paths withheld (what the
runtime did before them), at batch 1 and 16.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deepcomp  # noqa: E402
from deepcomp import _C, ops  # noqa: E402
from deepcomp.runtime import kernels as K  # noqa: E402
from deepcomp.runtime import layers as L  # noqa: E402
from deepcomp.runtime.weights import WeightForm  # noqa: E402

# (channels, image size, kernel, stride): MobileNetV2 (3x3) and MobileNetV3 / EfficientNet (5x5).
DEPTHWISE = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 3, 2), (192, 28, 3, 1),
             (384, 14, 3, 1), (576, 14, 3, 2), (960, 7, 3, 1), (72, 56, 5, 2), (240, 14, 5, 1), (672, 14, 5, 2)]
# (out, in, image size, stride, network)
ONE_BY_ONE = [(96, 16, 112, 1, "MobileNetV2"), (24, 144, 56, 1, "MobileNetV2"), (192, 32, 28, 1, "MobileNetV2"),
              (64, 384, 14, 1, "MobileNetV2"), (960, 160, 7, 1, "MobileNetV2"), (1280, 320, 7, 1, "MobileNetV2"),
              (64, 256, 56, 1, "ResNet-50"), (256, 64, 56, 1, "ResNet-50"), (128, 512, 28, 1, "ResNet-50"),
              (1024, 256, 14, 1, "ResNet-50"), (512, 2048, 7, 1, "ResNet-50"), (512, 256, 56, 2, "ResNet-50")]


# Which clock the tables report: 'cpu' (this thread's CPU time: every peer runs on the
# calling thread at 1 thread, and on a loaded shared machine it leaves out the time the
# thread sat preempted) or 'wall'.
CLOCK = {"name": "cpu"}


def round_robin(fns: dict, rounds: int, min_round_s: float = 0.01) -> dict:
    """Median ms per call of each zero-argument callable; a round of a fast callable loops
    for about min_round_s and counts the mean."""
    clock = time.thread_time if CLOCK["name"] == "cpu" else time.perf_counter
    names = list(fns)
    calls = {}
    for n in names:
        fns[n]()
        t0 = time.perf_counter()
        fns[n]()
        dt = time.perf_counter() - t0
        calls[n] = max(1, min(200, int(min_round_s / max(dt, 1e-7))))
    samples = {n: [] for n in names}
    order = random.Random(0)
    for _ in range(rounds):
        order.shuffle(names)
        for n in names:
            f, k = fns[n], calls[n]
            t0 = clock()
            for _ in range(k):
                f()
            samples[n].append((clock() - t0) / k)
    return {n: statistics.median(s) * 1e3 for n, s in samples.items()}


def ort_session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def ort_conv(weight: np.ndarray, bias: np.ndarray | None, stride: int, pad: int, groups: int, xshape):
    """A one-Conv ONNX model with the weight as an initializer, in an ORT session (1 thread)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    o, _, kh, kw = weight.shape
    n, c, h, w = xshape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    inits = [numpy_helper.from_array(weight, "W")]
    inputs = ["X", "W"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "B"))
        inputs.append("B")
    node = helper.make_node("Conv", inputs, ["Y"], kernel_shape=[kh, kw], strides=[stride, stride],
                            pads=[pad, pad, pad, pad], group=groups)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(xshape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, o, oh, ow])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ort_session(model.SerializeToString())


def sparse_codebook_weight(shape, sparsity: float, bits: int, seed: int) -> torch.Tensor:
    """A random weight pruned at random to `sparsity`, its survivors on 2**bits values."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    codebook = torch.linspace(-2, 2, 2 ** bits)
    w = codebook[torch.bucketize(w.clamp(-2, 2), codebook).clamp(max=2 ** bits - 1)]
    return w * (torch.rand(*shape, generator=g) >= sparsity)


def with_isa(fn, zmm: bool):
    def run():
        _C.set_allow_avx512(zmm)
        return fn()
    return run


def layer_tables(batches, rounds: int) -> list[str]:
    have_zmm = _C.avx512_usable()
    lines = []
    lines.append("### Depthwise layers (ms per call, 1 thread; ratio = ORT / deepcomp)")
    lines.append("")
    head = "| layer | batch | PyTorch | ORT | deepcomp zmm | deepcomp ymm | vs PyTorch | vs ORT | ymm vs ORT |"
    lines += [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for c, size, k, s in DEPTHWISE:
        w = sparse_codebook_weight((c, 1, k, k), 0.0, 5, c + k)
        b = torch.randn(c)
        st = K.depthwise_prepare(WeightForm.from_dense("dw", w))
        for n in batches:
            x = torch.randn(n, c, size, size)
            xn = x.numpy()
            sess = ort_conv(w.numpy(), b.numpy(), s, k // 2, c, tuple(x.shape))
            out = torch.empty_like(F.conv2d(x, w, b, s, k // 2, groups=c))
            bn = b.numpy()

            def dc():  # into a preallocated output, as ORT's arena does (see the docstring)
                _C.depthwise_conv2d(xn, st.values, bn, s, s, k // 2, k // 2, 0, out.numpy())
                return out
            fns = {"torch": lambda: F.conv2d(x, w, b, s, k // 2, groups=c),
                   "ort": lambda: sess.run(None, {"X": xn}),
                   "ymm": with_isa(dc, False)}
            if have_zmm:
                fns["zmm"] = with_isa(dc, True)
            ref = F.conv2d(x, w, b, s, k // 2, groups=c)
            for name in ("ymm", "zmm") if have_zmm else ("ymm",):
                assert torch.allclose(fns[name](), ref, atol=1e-3), name
            t = round_robin(fns, rounds)
            _C.set_allow_avx512(True)
            best = t.get("zmm", t["ymm"])
            row = (f"| dw {k}x{k}/{s} {c}ch {size}px | {n} | {t['torch']:.3f} | {t['ort']:.3f} | "
                   f"{t.get('zmm', float('nan')):.3f} | {t['ymm']:.3f} | {t['torch'] / best:.2f}x | "
                   f"{t['ort'] / best:.2f}x | {t['ort'] / t['ymm']:.2f}x |")
            lines.append(row)
            print(row, flush=True)
    lines += ["", "### 1x1 layers (ms per call, 1 thread; ratio = ORT / deepcomp sparse1x1 zmm)", ""]
    head = ("| layer | batch | sparsity | PyTorch | ORT | deepcomp sparse1x1 zmm | ymm | deepcomp im2col sparse | "
            "vs PyTorch | vs ORT | ymm vs ORT |")
    lines += [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines[-3:]), flush=True)
    for o, i, size, s, net in ONE_BY_ONE:
        for sparsity in (0.5, 0.7, 0.9):
            w = sparse_codebook_weight((o, i, 1, 1), sparsity, 5, o * 7 + i)
            b = torch.randn(o)
            form = WeightForm.from_dense("pw", w)
            st = K.conv1x1_prepare(form)
            for n in batches:
                x = torch.randn(n, i, size, size)
                xn = x.numpy()
                sess = ort_conv(w.numpy(), b.numpy(), s, 0, 1, tuple(x.shape))
                out = torch.empty_like(F.conv2d(x, w, b, s))
                wp, bn = st[1], b.numpy()
                xs = x[:, :, ::s, ::s].contiguous().numpy()  # the runtime subsamples likewise

                def dc():
                    if s > 1:
                        np.copyto(xs, xn[:, :, ::s, ::s])
                    _C.conv1x1_sparse(xs, wp.indptr, wp.indices, wp.values, wp.codes, wp.codebook, bn, 0,
                                      out.numpy())
                    return out
                fns = {"torch": lambda: F.conv2d(x, w, b, s),
                       "ort": lambda: sess.run(None, {"X": xn}),
                       "ymm": with_isa(dc, False),
                       "im2col": lambda: K.sparse_conv(x, st, form, b.numpy(), (s, s), (0, 0), False)}
                if have_zmm:
                    fns["zmm"] = with_isa(dc, True)
                ref = F.conv2d(x, w, b, s)
                for name in ("ymm", "zmm") if have_zmm else ("ymm",):
                    assert torch.allclose(fns[name](), ref, atol=1e-3), name
                t = round_robin(fns, rounds)
                _C.set_allow_avx512(True)
                best = t.get("zmm", t["ymm"])
                row = (f"| {net} 1x1{'/2' if s > 1 else ''} {i}->{o} {size}px | {n} | {sparsity:.0%} | "
                       f"{t['torch']:.3f} | {t['ort']:.3f} | {t.get('zmm', float('nan')):.3f} | {t['ymm']:.3f} | "
                       f"{t['im2col']:.3f} | {t['torch'] / best:.2f}x | {t['ort'] / best:.2f}x | "
                       f"{t['ort'] / t['ymm']:.2f}x |")
                lines.append(row)
                print(row, flush=True)
    return lines


def model_table(batches, sparsities, rounds: int, work: Path) -> list[str]:
    import torchvision

    lines = ["", "### MobileNetV2 whole, deepcomp.load(path, model=mobilenet_v2()) (ms per call, 1 thread)", "",
             "| sparsity | batch | PyTorch eager | ORT | deepcomp auto | deepcomp without depthwise/sparse1x1 | "
             "vs PyTorch | vs ORT | resident weights / dense fp32 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for sparsity in sparsities:
        torch.manual_seed(0)
        src = torchvision.models.mobilenet_v2().eval()
        path = work / f"mobilenet_v2_{int(sparsity * 100)}.dcz"
        if not path.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                deepcomp.save(src, str(path), prune=f"sparsity:{sparsity}", bits={"conv": 5, "fc": 5}, graph=False)
        dense = torchvision.models.mobilenet_v2().eval()
        dense.load_state_dict(deepcomp.decode(str(path)))
        dense_bytes = sum(p.numel() * 4 for p in dense.parameters())
        dc = deepcomp.load(str(path), model=torchvision.models.mobilenet_v2()).eval()
        before = deepcomp.load(str(path), model=torchvision.models.mobilenet_v2()).eval()
        for m in L.runtime_layers(before):
            m._convsp_candidates = lambda: []
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(dense, torch.randn(1, 3, 224, 224), buf, dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "n"}})
        sess = ort_session(buf.getvalue())
        for n in batches:
            x = torch.randn(n, 3, 224, 224)
            xn = x.numpy()
            with torch.no_grad():
                ref = dense(x)
                t0 = time.perf_counter()
                got = dc(x)  # the first call at a new shape measures the paths
                calib = time.perf_counter() - t0
                before(x)
                scale = float(ref.abs().max())
                err = float((got - ref).abs().max()) / scale
                assert err < 1e-3, err
                fns = {"torch": lambda: dense(x), "ort": lambda: sess.run(None, {"x": xn}),
                       "dc": lambda: dc(x), "before": lambda: before(x)}
                t = round_robin(fns, rounds, min_round_s=0.0)
            paths = L.path_summary(dc)
            used = {}
            for per in paths.values():
                for p in per.values():
                    used[p] = used.get(p, 0) + 1
            res = L.resident_weight_bytes(dc)
            row = (f"| {sparsity:.0%} | {n} | {t['torch']:.2f} | {t['ort']:.2f} | {t['dc']:.2f} | {t['before']:.2f} | "
                   f"{t['torch'] / t['dc']:.2f}x | {t['ort'] / t['dc']:.2f}x | {res / dense_bytes:.3f} |")
            lines.append(row)
            print(row, f"  (paths {used}; first call with calibration {calib * 1e3:.0f} ms; "
                       f"max rel. error vs decoded {err:.1e})", flush=True)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--model-rounds", type=int, default=5)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7])
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "bench")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="report the calling thread's CPU time (default; robust to a loaded machine) or wall time")
    args = ap.parse_args(argv)
    CLOCK["name"] = args.clock
    torch.set_num_threads(1)
    ops.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"kernel path: {ops.isa()}, zmm: {_C.avx512_usable()}; clock: {args.clock}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_layers:
        layer_tables(args.batches, args.rounds)
    if not args.skip_model:
        model_table(args.batches, args.sparsities, args.model_rounds, args.work)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
