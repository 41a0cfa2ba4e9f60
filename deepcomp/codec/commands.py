"""`deepcomp encode`, `deepcomp decode` and `deepcomp info`."""
from __future__ import annotations

import argparse
import json
import os

from deepcomp.errors import DeepcompError
from deepcomp.fileio import atomic_write


def add_codec_commands(sub) -> None:
    e = sub.add_parser("encode", help="one-shot compress a model file into a .dcz (no data needed)",
                       description="Load a model (or a .dcz), optionally prune and weight-share it, and code it "
                                   "into a .dcz file (per tensor the smaller of Huffman and arithmetic coding). Without --bits, weights with at most 256 distinct values "
                                   "are stored exactly as they are; others are shared at fc=5, conv=8 bits.")
    e.add_argument("input", help="state_dict .pt, torch.export .pt2, TorchScript archive, .safetensors, or a "
                                 ".dcz to write again (e.g. with --coder huffman)")
    e.add_argument("output", help="the .dcz file to write")
    e.add_argument("--prune", metavar="SPEC", help="std:S (threshold S * std per layer), sparsity:P, or auto "
                                                 "(with --bits auto --max-rel-error)")
    e.add_argument("--bits", metavar="SPEC", help="weight-sharing bits per layer kind, e.g. fc=5,conv=8, or "
                                                "auto (chosen per tensor; needs --max-rel-error)")
    e.add_argument("--init", default="linear", help="centroid init for sharing: linear (default), density, forgy or kmeans++")
    e.add_argument("--arch", metavar="NAME", help="pair a state_dict with an architecture, e.g. deepcomp:lenet5")
    e.add_argument("--unsafe-pickle", action="store_true",
                   help="allow a fully pickled model (torch.save(model)); this runs code from the file")
    e.add_argument("--fp16", action="store_true",
                   help="store weights that cannot be shared losslessly as float16 (lossy)")
    e.add_argument("--no-graph", action="store_true", help="store weights only, no model graph")
    e.add_argument("--max-rel-error", metavar="E", default=None,
                   help="with --bits auto: per weight tensor the fewest bits (8..2) whose relative L2 "
                        "error ||W - Q(W)|| / ||W|| stays <= E, e.g. 0.05; with --prune auto also "
                        "the kept fraction that makes the smallest section within E")
    e.add_argument("--seed", type=int, default=0, help="seed of the per-layer k-means init (forgy, kmeans++)")
    e.add_argument("--quiet", action="store_true",
                   help="no progress bars (they are only drawn on a terminal anyway)")
    e.add_argument("--snap", metavar="E", default=None,
                   help="lossy, opt-in: store every float value (biases, norm parameters, centroids) on a "
                        "power-of-two grid within E times its tensor's range, e.g. 1e-3 (smaller files)")
    from deepcomp.codec.v2 import CODERS

    e.add_argument("--coder", default="auto", choices=CODERS,
                   help="auto (default): the smallest file, arithmetic coding where it wins; huffman: "
                        "table-driven Huffman streams only, larger (8-13 %% on the LeNets) but "
                        "decoding about as fast as torch.load reads the dense .pt")
    e.set_defaults(func=_encode)

    d = sub.add_parser("decode", help="turn a .dcz back into a plain state_dict .pt")
    d.add_argument("input")
    d.add_argument("output", help="state_dict file that torch.load(..., weights_only=True) reads")
    d.set_defaults(func=_decode)

    i = sub.add_parser("info", help="per-tensor size table of a .dcz file")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="print the table as JSON")
    i.add_argument("--plot", metavar="F.png", default=None,
                   help="also plot, per layer, the weight histograms and the codebook with its "
                        "cluster counts")
    i.set_defaults(func=_info)


def _snap(args: argparse.Namespace):
    if args.snap is None:
        return None
    from deepcomp.codec.snap import check_rel

    try:
        value = float(args.snap)
    except ValueError:
        value = args.snap
    return check_rel(value)


def _meta(args: argparse.Namespace, loaded) -> dict:
    """What the file records of its source; a .dcz written again keeps its own record
    (source, pipeline, plan) and adds the file it was re-coded from."""
    if loaded.kind == "dcz":
        return {**(loaded.meta or {}), "recoded_from": os.path.basename(args.input)}
    return {"source": os.path.basename(args.input), "source_kind": loaded.kind}


def _encode(args: argparse.Namespace) -> int:
    from deepcomp.codec.writer import parse_bits, save
    from deepcomp.loaders import load_model_file

    auto = args.bits is not None and args.bits.strip().lower() == "auto"
    if auto:
        return _encode_auto(args)
    if args.max_rel_error is not None:
        raise DeepcompError("--max-rel-error is the target of --bits auto; add --bits auto "
                            "(or drop --max-rel-error and give fixed bits, e.g. --bits fc=5,conv=8)")
    if args.prune is not None and args.prune.strip().lower() == "auto":
        raise DeepcompError("--prune auto needs --bits auto --max-rel-error E")
    bits = parse_bits(args.bits) if args.bits else None
    loaded = load_model_file(args.input, arch=args.arch, unsafe_pickle=args.unsafe_pickle)
    graph = False if args.no_graph else (loaded.graph if loaded.graph is not None else None)
    meta = _meta(args, loaded)
    if args.prune:
        meta["prune"] = args.prune
    if bits:
        meta["bits"] = bits
    summary = save(loaded.obj, args.output, prune=args.prune, bits=bits, init=args.init,
                   graph=graph, meta=meta, fp16=args.fp16, progress=not args.quiet, snap=_snap(args),
                   coder=args.coder)
    print(f"wrote {args.output}: {summary['file_bytes']} bytes, {summary['ratio']:.1f}x smaller than the "
          f"{summary['dense_bytes']} bytes of dense tensors ({loaded.kind})")
    return 0


def _encode_auto(args: argparse.Namespace) -> int:
    from deepcomp.codec.writer import save
    from deepcomp.loaders import load_model_file
    from deepcomp.oneshot import check_max_rel_error

    if args.max_rel_error is None:
        raise DeepcompError("--bits auto needs a target here: --max-rel-error E (e.g. 0.05); "
                            "calibration with min_cosine is in the Python API, deepcomp.save")
    e = check_max_rel_error(args.max_rel_error)
    loaded = load_model_file(args.input, arch=args.arch, unsafe_pickle=args.unsafe_pickle)
    graph = False if args.no_graph else (loaded.graph if loaded.graph is not None else None)
    meta = _meta(args, loaded)
    summary = save(loaded.obj, args.output, prune=args.prune, bits="auto", init=args.init,
                   graph=graph, meta=meta, fp16=args.fp16, max_rel_error=e, seed=args.seed,
                   progress=not args.quiet, snap=_snap(args), coder=args.coder)
    print(summary["oneshot"].table())
    print(f"wrote {args.output}: {summary['file_bytes']} bytes, {summary['ratio']:.1f}x smaller than the "
          f"{summary['dense_bytes']} bytes of dense tensors ({loaded.kind})")
    return 0


def _decode(args: argparse.Namespace) -> int:
    import torch

    from deepcomp.codec.reader import decode

    sd = decode(args.input)
    atomic_write(args.output, lambda f: torch.save(sd, f))
    print(f"wrote {args.output}: {len(sd)} tensors")
    return 0


def _info(args: argparse.Namespace) -> int:
    from deepcomp.codec.info import render, table
    from deepcomp.codec.reader import open_dcz

    f = open_dcz(args.input)
    t = table(f)
    print(json.dumps(t, indent=1) if args.json else render(t))
    if getattr(args, "plot", None):
        from deepcomp.codec.plot import plot_file

        plot_file(f, args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0
