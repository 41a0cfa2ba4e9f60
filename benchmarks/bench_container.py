"""Container overhead of .dcz version 2 files: prefix + header against the whole file.

    python benchmarks/bench_container.py [FILE.dcz ...]

Each file is re-encoded losslessly with the current writer (same tensors, graph and
meta; checked bit for bit), then its container (20-byte prefix + deflated header: the
tensor table, graph and meta; version 2 has no padding) is reported with the header's
preset dictionary (the shorter of dictionaries 1 and 2, prefix flag 1 or 2, as the
writer chooses) and without one (the same JSON deflated plainly, flags 0, as files
before 2026-12-04). Without arguments it makes
one-shot files to measure: the shipped LeNet-300-100 and LeNet-5 at the paper's
densities and bits with their graphs (bench_codec.py's recipe), and a ResNet-18 (random
init, 70 % pruned, 5 bit).
Sizes are real file bytes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import deepcomp  # noqa: E402
from deepcomp.codec import layout as L  # noqa: E402
from deepcomp.codec.reader import open_dcz  # noqa: E402
from deepcomp.codec.v2 import _deflate, inflate_header  # noqa: E402
from deepcomp.codec.writer import write_state_dict  # noqa: E402


def default_files(tmp: Path) -> list[Path]:
    """The paper-recipe LeNets with their graphs (bench_entropy's, as bench_codec makes
    them) and a one-shot ResNet-18 saved with its graph."""
    import torchvision
    from bench_entropy import lenet_paper

    out = []
    for arch in ("lenet300", "lenet5"):
        sd, graph = lenet_paper(arch)
        out.append(tmp / f"{arch}_paper.dcz")
        write_state_dict(sd, out[-1], graph=graph)
    torch.manual_seed(0)
    out.append(tmp / "resnet18_30pct.dcz")
    deepcomp.save(torchvision.models.resnet18(weights=None).eval(), out[-1], prune="sparsity:0.7",
                  bits={"fc": 5, "conv": 5}, example_inputs=(torch.zeros(1, 3, 64, 64),))
    return out


def measure(src: Path, tmp: Path) -> dict:
    f = open_dcz(src)
    sd = f.state_dict()
    dst = tmp / (src.stem + ".recoded.dcz")
    write_state_dict(sd, dst, graph=f.graph, meta=f.meta)
    back = open_dcz(dst).state_dict()
    assert all(torch.equal(back[k].reshape(-1).view(torch.uint8), sd[k].reshape(-1).view(torch.uint8))
               for k in sd if sd[k].numel()), src
    image = dst.read_bytes()
    _, _, flags, hlen, _ = L.PREFIX.unpack_from(image, 0)
    text = inflate_header(image[L.PREFIX.size:L.PREFIX.size + hlen], flags)
    plain = len(_deflate(text))
    size = len(image)
    header = json.loads(text)
    parts = {k: len(_deflate(json.dumps(header[k], separators=(",", ":")).encode(), flags))
             for k in ("t", "g", "m") if k in header}
    return {"file": src.name, "bytes": size, "container": L.PREFIX.size + hlen,
            "pct": 100 * (L.PREFIX.size + hlen) / size, "plain_container": L.PREFIX.size + plain,
            "plain_pct": 100 * (L.PREFIX.size + plain) / (size - hlen + plain), "inflated": len(text), "parts": parts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        files = args.files or default_files(tmp)
        rows = [measure(p, tmp) for p in files]
    print("| file | bytes | container, preset dictionary | % | container, plain deflate (before) | % | header JSON | table / graph / meta alone (dict) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        parts = " / ".join(str(r["parts"].get(k, "-")) for k in ("t", "g", "m"))
        print(f"| {r['file']} | {r['bytes']:,} | {r['container']:,} | {r['pct']:.2f} % | {r['plain_container']:,} | "
              f"{r['plain_pct']:.2f} % | {r['inflated']:,} | {parts} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
