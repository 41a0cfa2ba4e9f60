"""Codec benchmark: real .dcz sizes, Huffman vs entropy and general compressors, speed.

    python benchmarks/bench_codec.py [--json PATH] [--dcz FILE ...] [--repeats N] [--no-resnet]

Models, made here so the run is self-contained and reproducible:
  * LeNet-300-100 and LeNet-5 from the shipped checkpoints (deepcomp/checkpoints/lenet300.pt,
    lenet5.pt; random weights, flagged as such, when a checkpoint is missing), pruned one
    shot to the paper's per-layer densities (LeNet-300-100: 8% / 9% / 26%; LeNet-5:
    66% / 12% / 8% / 19%, by magnitude) and shared at the paper's bits (LeNet-300-100:
    6 bits on every layer; LeNet-5: conv 8, fc1 5, fc2 4) with linear init. No
    retraining, so this measures the codec, not accuracy.
  * ResNet-18 (torchvision, random init, seed 0), pruned to 70% sparsity per layer and
    shared at the defaults (fc 5, conv 8 bits): a model big enough for throughput.
  * any .dcz given with --dcz.
Printed: per-layer table (paper style), stream sizes against their empirical entropy and
against zlib -9, lzma (preset 9e) and zstd -19 on the same quantized streams (one byte
per symbol), encode / decode throughput in MB/s of dense fp32, and deepcomp.decode
against torch.load of the dense state_dict (both files in the page cache).
"""
from __future__ import annotations

import argparse
import json
import lzma
import math
import platform
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deepcomp  # noqa: E402
from deepcomp.codec.info import table as info_table  # noqa: E402
from deepcomp.codec.reader import DczFile, open_dcz, validate  # noqa: E402
from deepcomp.codec.streams import decode_stream  # noqa: E402
from deepcomp.codec.writer import write_state_dict  # noqa: E402
from deepcomp.models import checkpoint_dir  # noqa: E402

try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None

PAPER = {
    "lenet300": {"density": {"fc1.weight": 0.08, "fc2.weight": 0.09, "fc3.weight": 0.26},
                 "bits": {"fc1.weight": 6, "fc2.weight": 6, "fc3.weight": 6}, "paper_ratio": 40},
    "lenet5": {"density": {"conv1.weight": 0.66, "conv2.weight": 0.12, "fc1.weight": 0.08, "fc2.weight": 0.19},
               "bits": {"conv1.weight": 8, "conv2.weight": 8, "fc1.weight": 5, "fc2.weight": 4}, "paper_ratio": 39},
}


def make_lenet(name: str) -> tuple[dict, str]:
    from deepcomp.models import get_model
    from deepcomp.prune import mask_sparsity
    from deepcomp.share import share_tensor

    path = checkpoint_dir() / f"{name}.pt"
    if path.is_file():
        sd, source = dict(torch.load(path, map_location="cpu", weights_only=True)), f"deepcomp/checkpoints/{name}.pt"
    else:
        torch.manual_seed(0)
        sd, source = dict(get_model(f"deepcomp:{name}").state_dict()), "RANDOM WEIGHTS (checkpoint missing)"
    spec = PAPER[name]
    for k, density in spec["density"].items():
        w = sd[k]
        w = torch.where(mask_sparsity(w, 1.0 - density), w, torch.zeros((), dtype=w.dtype))
        sd[k] = share_tensor(w, spec["bits"][k], init="linear")
    return sd, source


def make_resnet18() -> dict:
    import torchvision

    from deepcomp.codec.writer import prepare_state_dict

    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    return prepare_state_dict(sd, prune="sparsity:0.7", bits={"fc": 5, "conv": 8})


def entropy_bits(symbols: np.ndarray) -> float:
    if symbols.size == 0:
        return 0.0
    p = np.bincount(symbols).astype(np.float64)
    p = p[p > 0] / symbols.size
    return float(-(p * np.log2(p)).sum() * symbols.size)


def stream_report(f: DczFile) -> list:
    """Per shared tensor and stream: symbols, entropy, Huffman and general compressors."""
    rows = []
    for r in f.parsed.tensors:
        if r.encoding == "raw":
            continue
        # the symbols as stored, fillers included
        for label, s in r.streams.items():
            sym = decode_stream(s, label)
            raw8 = sym.astype(np.uint8 if s.alphabet <= 256 else np.uint16).tobytes()
            h = entropy_bits(sym)
            row = {"tensor": r.name, "stream": label, "symbols": int(sym.size), "alphabet": s.alphabet,
                   "entropy_bytes": h / 8, "huffman_payload_bytes": len(s.payload),
                   "huffman_stream_bytes": s.nbytes, "zlib9": len(zlib.compress(raw8, 9)),
                   "lzma": len(lzma.compress(raw8, preset=9 | lzma.PRESET_EXTREME)),
                   "fixed_width_bytes": math.ceil(sym.size * max(1, math.ceil(math.log2(max(s.alphabet, 2)))) / 8)}
            if zstandard is not None:
                row["zstd19"] = len(zstandard.ZstdCompressor(level=19).compress(raw8))
            rows.append(row)
    return rows


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, sd: dict | None, dcz_path: Path, repeats: int, tmp: Path) -> dict:
    data = dcz_path.read_bytes()
    f = open_dcz(dcz_path)
    sd = sd if sd is not None else f.state_dict()
    dense_fp32 = sum(t.numel() * 4 for t in sd.values() if t.is_floating_point())
    info = info_table(f)
    dense_pt = tmp / ("".join(c if c.isalnum() else "_" for c in name) + ".dense.pt")
    torch.save({k: v.contiguous() for k, v in sd.items()}, dense_pt)

    from deepcomp.codec.tensors import choose_encoding
    from deepcomp.codec.writer import assemble

    def encode():
        assemble([choose_encoding(k, v) for k, v in sd.items()], [])

    def decode_mem():
        DczFile(validate(data)).state_dict()

    import deepcomp.codec.reader as reader

    t_enc = timed(encode, max(3, repeats // 5))
    t_dec = timed(decode_mem, repeats)
    t_dec_file = timed(lambda: deepcomp.decode(dcz_path), repeats)
    t_torch = timed(lambda: torch.load(dense_pt, map_location="cpu", weights_only=True), repeats)
    threads, reader.MAX_THREADS = reader.MAX_THREADS, 1
    try:
        t_dec_file_1t = timed(lambda: deepcomp.decode(dcz_path), repeats)
    finally:
        reader.MAX_THREADS = threads
    mb = dense_fp32 / 1e6
    return {
        "model": name, "file_bytes": len(data), "dense_fp32_bytes": dense_fp32,
        "ratio": dense_fp32 / len(data), "dense_pt_bytes": dense_pt.stat().st_size,
        "layers": info["tensors"], "overhead": info["overhead"],
        "streams": stream_report(f),
        "encode_s": t_enc, "decode_mem_s": t_dec, "decode_file_s": t_dec_file, "torch_load_s": t_torch,
        "encode_MBps": mb / t_enc, "decode_MBps": mb / t_dec,
        "decode_vs_torch_load": t_dec_file / t_torch,
        "decode_file_1thread_s": t_dec_file_1t, "decode_1thread_vs_torch_load": t_dec_file_1t / t_torch,
    }


def print_model(m: dict) -> None:
    print(f"\n== {m['model']}: {m['file_bytes']} bytes on disk, dense fp32 {m['dense_fp32_bytes']} bytes, "
          f"ratio {m['ratio']:.1f}x" + (f" (paper: {m['paper_ratio']}x)" if m.get("paper_ratio") else "")
          + (f"   [{m['source']}]" if m.get("source") else ""))
    print(f"{'layer':<22} {'#weights':>9} {'density':>8} {'enc':<13} {'w bits':>6} {'idx b':>5} "
          f"{'code b/sym':>10} {'idx b/sym':>9} {'bytes':>8} {'bits/nz':>7} {'ratio':>7}")
    small = [r for r in m["layers"] if (math.prod(r["shape"]) if r["shape"] else 1) < 1000]
    shown = m["layers"] if len(m["layers"]) <= 20 else [r for r in m["layers"] if r not in small]
    for r in shown:
        n = math.prod(r["shape"]) if r["shape"] else 1
        nz = max(1, round(n * (r["density"] or 0)))
        bpn = 8 * r["bytes"] / nz if r["encoding"] == "shared_sparse" else float("nan")
        ratio = r["dense_fp32_bytes"] / r["bytes"] if r["bytes"] else float("inf")
        cb = "-" if r["code_bits_per_symbol"] is None else f"{r['code_bits_per_symbol']:.2f}"
        ib = "-" if r["index_bits_per_symbol"] is None else f"{r['index_bits_per_symbol']:.2f}"
        print(f"{r['name'][:22]:<22} {n:>9} {r['density']:>8.1%} {r['encoding']:<13} {r['weight_bits']:>6} "
              f"{r['index_bits'] or '-':>5} {cb:>10} {ib:>9} {r['bytes']:>8} {bpn:>7.2f} {ratio:>6.1f}x")
    if shown is not m["layers"]:
        print(f"{'(%d tensors < 1000 el.)' % len(small):<22} {sum(math.prod(r['shape']) if r['shape'] else 1 for r in small):>9} "
              f"{'':>8} {'':<13} {'':>6} {'':>5} {'':>10} {'':>9} {sum(r['bytes'] for r in small):>8}")
    for o in m["overhead"]:
        print(f"{o['name']:<22} {'':>9} {'':>8} {'':<13} {'':>6} {'':>5} {'':>10} {'':>9} {o['bytes']:>8}")
    s = m["streams"]
    if s:
        tot = {k: sum(r.get(k, 0) for r in s) for k in
               ("entropy_bytes", "huffman_payload_bytes", "huffman_stream_bytes", "zlib9", "lzma", "zstd19",
                "fixed_width_bytes")}
        over = 100 * (tot["huffman_payload_bytes"] / tot["entropy_bytes"] - 1) if tot["entropy_bytes"] else 0.0
        print("streams (all shared tensors, same quantized symbols, 1 byte/symbol for the general compressors):")
        print(f"  entropy {tot['entropy_bytes']:.0f} B | Huffman payload {tot['huffman_payload_bytes']} B "
              f"(+{over:.2f}% over entropy) | Huffman with headers+tables {tot['huffman_stream_bytes']} B | "
              f"fixed-width {tot['fixed_width_bytes']} B | zlib -9 {tot['zlib9']} B | lzma 9e {tot['lzma']} B | "
              f"zstd -19 {tot['zstd19']} B")
        print(f"  {'tensor/stream':<30} {'symbols':>8} {'entropy B':>10} {'huff B':>8} {'over%':>6} "
              f"{'zlib9':>7} {'lzma':>7} {'zstd19':>7}")
        for r in s:
            ov = 100 * (r["huffman_payload_bytes"] / r["entropy_bytes"] - 1) if r["entropy_bytes"] else 0.0
            print(f"  {(r['tensor'] + '/' + r['stream'])[:30]:<30} {r['symbols']:>8} {r['entropy_bytes']:>10.0f} "
                  f"{r['huffman_payload_bytes']:>8} {ov:>6.2f} {r['zlib9']:>7} {r['lzma']:>7} {r.get('zstd19', 0):>7}")
    print(f"speed: encode {m['encode_MBps']:.0f} MB/s, decode {m['decode_MBps']:.0f} MB/s (dense fp32 MB, "
          f"in memory, median); deepcomp.decode(file) {m['decode_file_s'] * 1e3:.2f} ms vs torch.load(dense .pt, "
          f"{m['dense_pt_bytes']} B) {m['torch_load_s'] * 1e3:.2f} ms -> {m['decode_vs_torch_load']:.2f}x the time; "
          f"single-threaded decode {m['decode_file_1thread_s'] * 1e3:.2f} ms -> {m['decode_1thread_vs_torch_load']:.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write all figures to this JSON file")
    ap.add_argument("--dcz", nargs="*", default=[], help="also measure these .dcz files")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-resnet", action="store_true", help="skip the ResNet-18 throughput model")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
               "torch": torch.__version__, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
               "models": []}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        jobs = []
        for name in ("lenet300", "lenet5"):
            sd, source = make_lenet(name)
            jobs.append((f"LeNet-{'300-100' if name == 'lenet300' else '5'}", sd, source, PAPER[name]["paper_ratio"]))
        if not args.no_resnet:
            jobs.append(("ResNet-18 (random init, 70% pruned, fc5/conv8)", make_resnet18(), "torchvision random init", None))
        for label, sd, source, paper in jobs:
            p = tmp / "m.dcz"
            write_state_dict(sd, p)
            m = measure(label, sd, p, args.repeats, tmp)
            m["source"], m["paper_ratio"] = source, paper
            results["models"].append(m)
            print_model(m)
        for path in args.dcz:
            m = measure(Path(path).name, None, Path(path), args.repeats, tmp)
            m["source"] = path
            results["models"].append(m)
            print_model(m)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
