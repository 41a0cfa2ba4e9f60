"""Kernel benchmark: deepcomp's native sparse-codebook SpMM and int8 GEMM against PyTorch
dense fp32 (F.linear), PyTorch CSR (int32 indices), scipy.sparse.csr_matrix and PyTorch's
dynamically quantized int8 Linear (FBGEMM), all in one run.

    python benchmarks/bench_kernels.py --quick               # 4096x9216, batch 1 and 16, 90%, 1 thread
    python benchmarks/bench_kernels.py                       # the full grid (long)
    python benchmarks/bench_kernels.py --shapes 4096x9216 --batches 1 --threads 1,2 --json out.json

Weights: a normal matrix pruned to the given sparsity (largest magnitudes kept), then its
surviving values shared on a 5-bit codebook (1-D k-means, linear init). Every baseline
gets the same (pruned, shared) matrix, so all compute the same product.

Timing: implementations are run round-robin, one call each per turn in an order shuffled
every turn, so that a burst of load from another process hits all of them alike and none
always follows the same neighbour; the figure is the median per-call time.
Ratios are against torch dense fp32 of the same row. On one thread, the "cpu ms" column is
the calling thread's CPU time per call (median): every implementation then runs on the
calling thread, so it is the cost without the time spent waiting for a busy CPU, the
better figure on a shared machine. The roofline column is the bytes of
weights an implementation must read per call divided by the memory bandwidth measured at
start (a streaming read of a 512 MiB buffer with the row's thread count): the time the
kernel would take if reading its weights from DRAM were its only cost. (Weights smaller than
the last-level cache can beat it in a loop like this one.)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from deepcomp import ops  # noqa: E402

# torch's notices about beta sparse tensors and the deprecated quantization namespace say
# nothing about these measurements.
for _msg in ("Sparse CSR tensor support is in beta", "Sparse invariant checks", "torch.ao.quantization is deprecated",
             "torch.quantize_per_tensor"):
    warnings.filterwarnings("ignore", message=_msg)

ALL_SHAPES = [(300, 784), (4096, 9216), (4096, 4096), (1000, 4096), (4096, 25088)]
ALL_BATCHES = [1, 16, 128]
ALL_SPARSITIES = [0.90, 0.95]
ALL_THREADS = [1, 2]
BITS = 5

IMPLS = ["torch_dense", "torch_csr", "scipy_csr", "fbgemm_int8",
         "deepcomp_codebook", "deepcomp_csr", "deepcomp_int8"]


# ---- weights -------------------------------------------------------------------------------

def make_weight(out_f: int, in_f: int, sparsity: float, bits: int, seed: int):
    """(dense fp32 matrix, indptr, indices, codes, codebook) of a pruned, shared matrix."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    keep = max(1, int(round(w.numel() * (1.0 - sparsity))))
    thresh = w.abs().flatten().kthvalue(w.numel() - keep + 1).values
    mask = w.abs() >= thresh
    vals = w[mask]
    k = 2 ** bits
    cents = torch.linspace(float(vals.min()), float(vals.max()), k)
    for _ in range(8):  # Lloyd iterations, 1-D: nearest centroid via the midpoints
        order = torch.argsort(cents)
        cents = cents[order]
        assign = torch.bucketize(vals, (cents[1:] + cents[:-1]) / 2)
        sums = torch.zeros(k).index_add_(0, assign, vals)
        counts = torch.bincount(assign, minlength=k).float()
        cents = torch.where(counts > 0, sums / counts.clamp(min=1), cents)
    assign = torch.bucketize(vals, (cents[1:] + cents[:-1]) / 2)
    dense = torch.zeros_like(w)
    dense[mask] = cents[assign]
    csr = sp.csr_matrix(mask.numpy())
    indptr = csr.indptr.astype(np.int32)
    # mask is row-major, so w[mask] enumerates nonzeros in CSR order.
    indices = csr.indices.astype(np.uint16 if in_f <= 65536 else np.int32)
    codes = assign.to(torch.uint8).numpy()
    return dense, indptr, indices, codes, cents.numpy().astype(np.float32)


# ---- memory bandwidth --------------------------------------------------------------------

_BW_CACHE: dict[int, float] = {}


def memory_bandwidth(threads: int, mib: int = 512) -> float:
    """Bytes per second of a streaming read (torch.sum over a buffer larger than the caches)."""
    if threads in _BW_CACHE:
        return _BW_CACHE[threads]
    torch.set_num_threads(threads)
    buf = torch.ones(mib * 1024 * 1024 // 4)
    buf.sum()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        buf.sum()
        times.append(time.perf_counter() - t0)
    bw = buf.numel() * 4 / statistics.median(times)
    _BW_CACHE[threads] = bw
    return bw


# Switches that change which SIMD code runs, for the record: deepcomp's own, and FBGEMM's and
# ATen's (FBGEMM_ENABLE_INSTRUCTIONS=AVX2 and ATEN_CPU_CAPABILITY=avx2 make an AVX-512 machine
# stand in for an AVX2-only one).
PATH_SWITCHES = ("DEEPCOMP_FORCE_SCALAR", "DEEPCOMP_NO_AVX512", "DEEPCOMP_NO_VNNI", "FBGEMM_ENABLE_INSTRUCTIONS",
                 "ATEN_CPU_CAPABILITY")


def kernel_paths() -> str:
    from deepcomp import _C

    dc = "scalar" if ops.isa() == "scalar" else "avx2" + ("+avx512" if _C.avx512_usable() else "") + (
        "+vnni" if _C.int8_vnni_enabled() else "+vnni512" if _C.int8_vnni512_enabled() else "")
    env = [f"{k}={os.environ[k]}" for k in PATH_SWITCHES if os.environ.get(k)]
    return ", ".join([f"deepcomp {dc}"] + env)


# ---- implementations -----------------------------------------------------------------------

def build_impls(dense, indptr, indices, codes, codebook, bias, selected):
    out_f, in_f = dense.shape
    impls = {}
    nbytes = {}
    if "torch_dense" in selected:
        impls["torch_dense"] = lambda x: F.linear(x, dense, bias)
        nbytes["torch_dense"] = dense.numel() * 4
    values = codebook[codes]
    if "torch_csr" in selected:
        wt = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices.astype(np.int32)),
                                     torch.from_numpy(values), size=(out_f, in_f))
        impls["torch_csr"] = lambda x: torch.addmm(bias.unsqueeze(1), wt, x.t()).t()
        nbytes["torch_csr"] = indptr.nbytes + len(indices) * 8
    if "scipy_csr" in selected:
        ws = sp.csr_matrix((values, indices.astype(np.int32), indptr), shape=(out_f, in_f))
        bnp = bias.numpy()

        def scipy_run(x):
            xn = x.numpy()
            if xn.shape[0] == 1:
                return (ws @ xn[0] + bnp)[None, :]
            return (ws @ xn.T).T + bnp
        impls["scipy_csr"] = scipy_run
        nbytes["scipy_csr"] = indptr.nbytes + len(indices) * 8
    if "fbgemm_int8" in selected:
        torch.backends.quantized.engine = "fbgemm"
        lin = torch.nn.Linear(in_f, out_f)
        with torch.no_grad():
            lin.weight.copy_(dense)
            lin.bias.copy_(bias)
        q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
        impls["fbgemm_int8"] = lambda x: q(x)
        nbytes["fbgemm_int8"] = dense.numel()
    if "deepcomp_codebook" in selected:
        wc = ops.pack_codebook(indptr, indices, codes, codebook, out_f, in_f)
        impls["deepcomp_codebook"] = lambda x: ops.spmm_packed(x, wc, bias)
        nbytes["deepcomp_codebook"] = wc.nbytes()
    if "deepcomp_csr" in selected:
        wf = ops.pack_csr(indptr, indices, values, out_f, in_f)
        impls["deepcomp_csr"] = lambda x: ops.spmm_packed(x, wf, bias)
        nbytes["deepcomp_csr"] = wf.nbytes()
    if "deepcomp_int8" in selected:
        wq = ops.pack_int8(dense)
        impls["deepcomp_int8"] = lambda x: ops.gemm_int8(x, wq, bias)
        nbytes["deepcomp_int8"] = wq.nbytes()
    return impls, nbytes


def time_round_robin(impls: dict, x, min_time: float, min_calls: int, max_calls: int):
    names = list(impls)
    samples = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for n in names:  # warm-up: first-touch allocations, lazy packing, cache fill
        for _ in range(2):
            impls[n](x)
    start = time.perf_counter()
    calls = 0
    # A new order every turn: in a fixed order each implementation always runs after the
    # same neighbour, whose cache and thread state it inherits (the one after SciPy came
    # out 4-8 % slower in a helper's A/B of two identical builds).
    order = random.Random(0)
    while calls < max_calls and (calls < min_calls or time.perf_counter() - start < min_time):
        order.shuffle(names)
        for n in names:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            impls[n](x)
            samples[n].append(time.perf_counter() - t0)
            cpu[n].append(time.thread_time() - c0)
        calls += 1
    med = {n: statistics.median(s) * 1e3 for n, s in samples.items()}
    med_cpu = {n: statistics.median(s) * 1e3 for n, s in cpu.items()}
    return med, med_cpu, calls


def check_agreement(impls: dict, x, dense, bias):
    ref = F.linear(x, dense, bias)
    scale = float(ref.abs().max()) + 1e-6
    for n, f in impls.items():
        y = torch.as_tensor(np.asarray(f(x))).reshape(ref.shape).float()
        tol = 0.08 if "int8" in n else 1e-3
        err = float((y - ref).abs().max()) / scale
        if err > tol:
            raise SystemExit(f"{n} disagrees with torch dense: max error {err:.3g} of the output range")


# ---- main -------------------------------------------------------------------------------------

def parse_list(text, conv):
    return [conv(t) for t in text.split(",") if t]


def parse_shape(t):
    o, i = t.lower().split("x")
    return int(o), int(i)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4096x9216 at batch 1 and 16, 90%%, 1 thread (< 1 minute)")
    p.add_argument("--json", metavar="PATH", help="write one record per (row, implementation)")
    p.add_argument("--shapes", help="comma-separated OUTxIN, e.g. 4096x9216,300x784")
    p.add_argument("--batches", help="comma-separated, e.g. 1,16,128")
    p.add_argument("--sparsities", help="comma-separated fractions, e.g. 0.9,0.95")
    p.add_argument("--threads", help="comma-separated, e.g. 1,2")
    p.add_argument("--impls", help="comma-separated subset of " + ",".join(IMPLS))
    p.add_argument("--min-time", type=float, default=None, help="seconds per row (default 1.0, quick 0.6)")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. 'contended')")
    args = p.parse_args(argv)

    if args.quick:
        shapes, batches, sparsities, threads = [(4096, 9216)], [1, 16], [0.90], [1]
    else:
        shapes, batches, sparsities, threads = ALL_SHAPES, ALL_BATCHES, ALL_SPARSITIES, ALL_THREADS
    if args.shapes:
        shapes = parse_list(args.shapes, parse_shape)
    if args.batches:
        batches = parse_list(args.batches, int)
    if args.sparsities:
        sparsities = parse_list(args.sparsities, float)
    if args.threads:
        threads = parse_list(args.threads, int)
    selected = parse_list(args.impls, str) if args.impls else IMPLS
    unknown = set(selected) - set(IMPLS)
    if unknown:
        p.error(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    min_time = args.min_time if args.min_time is not None else (0.6 if args.quick else 1.0)

    load = os.getloadavg()
    paths = kernel_paths()
    print(f"# deepcomp kernels, isa={ops.isa()}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start{', ' + args.note if args.note else ''}")
    print(f"# paths: {paths}")
    for t in sorted(set(threads)):
        print(f"# memory bandwidth ({t} thread{'s' if t > 1 else ''}): {memory_bandwidth(t) / 1e9:.1f} GB/s")
    header = (f"{'shape':>11} {'batch':>5} {'sparse':>6} {'thr':>3} {'implementation':<18} {'median ms':>10} "
              f"{'x dense':>8} {'weight MB':>9} {'roofline ms':>11} {'% roof':>6} {'cpu ms':>8}")
    print(header)
    records = []
    torch.set_grad_enabled(False)
    for (o, i) in shapes:
        for s in sparsities:
            dense, indptr, indices, codes, codebook = make_weight(o, i, s, BITS, seed=o * 7 + i)
            bias = torch.randn(o, generator=torch.Generator().manual_seed(1))
            impls, nbytes = build_impls(dense, indptr, indices, codes, codebook, bias, selected)
            for t in threads:
                torch.set_num_threads(t)
                ops.set_num_threads(t)
                bw = memory_bandwidth(t)
                torch.set_num_threads(t)
                for b in batches:
                    x = torch.randn(b, i, generator=torch.Generator().manual_seed(b))
                    check_agreement(impls, x, dense, bias)
                    med, med_cpu, calls = time_round_robin(impls, x, min_time, min_calls=5, max_calls=2000)
                    base = med.get("torch_dense")
                    for n in impls:
                        roof = nbytes[n] / bw * 1e3
                        ratio = base / med[n] if base else float("nan")
                        print(f"{o:>5}x{i:<5} {b:>5} {s:>6.2f} {t:>3} {n:<18} {med[n]:>10.3f} {ratio:>8.2f} "
                              f"{nbytes[n] / 1e6:>9.2f} {roof:>11.3f} {100 * roof / med[n]:>5.0f}%"
                              + (f" {med_cpu[n]:>8.3f}" if t == 1 else ""))
                        records.append({
                            "shape": [o, i], "batch": b, "sparsity": s, "threads": t, "implementation": n,
                            "median_ms": med[n], "speedup_vs_dense": ratio, "weight_bytes": nbytes[n],
                            "roofline_ms": roof, "calls": calls,
                            # Thread CPU time: unaffected by waiting for a contended CPU, and
                            # the whole cost when one thread does all the work.
                            "cpu_ms_calling_thread": med_cpu[n],
                        })
                    sys.stdout.flush()
            del impls
    if args.json:
        meta = {"isa": ops.isa(), "paths": paths, "torch": torch.__version__, "cpus": os.cpu_count(),
                "load_average_start": load,
                "load_average_end": os.getloadavg(), "note": args.note,
                "bandwidth_gbps": {str(k): v / 1e9 for k, v in _BW_CACHE.items()},
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = Path(args.json)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
        os.replace(tmp, path)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
