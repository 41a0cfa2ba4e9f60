"""Writing .dcz files: state_dict -> lossless encodings -> one file, renamed into place.

`save` is the whole encode path: capture the graph (if asked and possible), optionally
prune and share, then code every tensor losslessly. Lossy steps happen only in prune and
share; whatever reaches `write_state_dict` comes back from `decode` bit for bit.
"""
from __future__ import annotations

import json
import os
import warnings
import zlib
from collections.abc import Mapping

import numpy as np
import torch

from deepcomp.codec import layout as L
from deepcomp.fileio import atomic_write
from deepcomp.progress import element_bar
from deepcomp.codec.tensors import choose_encoding
from deepcomp.errors import DeepcompError, ModelError, UnsupportedOpError

DEFAULT_BITS = {"fc": 5, "conv": 8}


def _json_bytes(obj, what: str, cap: int) -> bytes:
    try:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise DeepcompError(f"{what} cannot be stored as JSON: {e}") from None
    if len(data) > cap:
        raise DeepcompError(f"{what} is {len(data)} bytes of JSON, more than the {cap}-byte limit")
    return data


def write_state_dict(sd: Mapping, path, *, graph: dict | None = None, meta: dict | None = None,
                     fp16: bool = False, version: int = L.WRITE_VERSION, progress: bool = False,
                     coder: str = "auto") -> dict:
    """Encode a state_dict losslessly (fp16 only if asked) into `path`; returns a summary.

    version 2 (the default) is the compact container with arithmetic coding; version 1
    writes the original JSON-header, Huffman-only layout that every reader understands.
    ``coder='huffman'`` (version 2): Huffman streams only, for files that must decode
    fast (about torch.load's speed) at more bytes (8-13 % on the LeNets); 'auto' keeps
    the smallest.
    ``progress``: a tqdm bar over the weights coded (on a terminal only).
    """
    if version not in L.READ_VERSIONS:
        raise DeepcompError(f"cannot write .dcz version {version}; choose one of {L.READ_VERSIONS}")
    from deepcomp.codec.v2 import check_coder

    coder = check_coder(coder)
    if version == 2:
        return _write_v2(sd, path, graph=graph, meta=meta, fp16=fp16, progress=progress, coder=coder)
    _check_items(sd)
    with element_bar(sd.values(), "encode", progress) as done:
        encoded = [done(choose_encoding(name, t, fp16=fp16), t) for name, t in sd.items()]
    blobs = []
    if graph is not None:
        if not isinstance(graph, dict):
            raise DeepcompError(f"graph must be a dict, not {type(graph).__name__}")
        blobs.append(("graph", _json_bytes(graph, "graph", L.MAX_GRAPH_BYTES)))
    if meta:
        blobs.append(("meta", _json_bytes(meta, "meta", L.MAX_META_BYTES)))
    image, entries = assemble(encoded, blobs)
    atomic_write(path, lambda f: f.write(image))
    dense = sum(t.numel() * t.element_size() for t in sd.values())
    return {
        "path": os.fspath(path),
        "file_bytes": len(image),
        "dense_bytes": dense,
        "ratio": dense / len(image) if image else float("inf"),
        "tensors": {e["name"]: {"encoding": e["encoding"], "bytes": e["length"]} for e in entries},
    }


def _check_items(sd: Mapping):
    for name, t in sd.items():
        if not isinstance(name, str):
            raise ModelError(f"state_dict key {name!r} is not a string")
        if not isinstance(t, torch.Tensor):
            raise ModelError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        if t.is_sparse or t.layout != torch.strided:
            raise ModelError(f"tensor {name!r} has layout {t.layout}; store it dense")


def _write_v2(sd: Mapping, path, *, graph, meta, fp16, progress=False, coder="auto") -> dict:
    from deepcomp.codec.v2 import assemble_v2, choose_encoding_v2

    _check_items(sd)
    if graph is not None:
        if not isinstance(graph, dict):
            raise DeepcompError(f"graph must be a dict, not {type(graph).__name__}")
        _json_bytes(graph, "graph", L.MAX_GRAPH_BYTES)
    if meta:
        _json_bytes(meta, "meta", L.MAX_META_BYTES)
    from deepcomp.codec.reader import each_by_work

    # Tensors are priced independently (the coder and numpy release the GIL).
    items = list(sd.items())
    with element_bar(sd.values(), "encode", progress) as done:
        encoded = each_by_work(lambda kv: done(choose_encoding_v2(kv[0], kv[1], fp16=fp16, coder=coder), kv[1]),
                               items, [t.numel() for _, t in items])
    image = assemble_v2(encoded, graph, meta)
    atomic_write(path, lambda f: f.write(image))
    dense = sum(t.numel() * t.element_size() for t in sd.values())
    return {
        "path": os.fspath(path),
        "file_bytes": len(image),
        "dense_bytes": dense,
        "ratio": dense / len(image) if image else float("inf"),
        "version": 2,
        "tensors": {e.fields["name"]: {"encoding": e.fields["encoding"], "bytes": len(e.payload), "why": e.why}
                    for e in encoded},
    }


def tensor_bytes(name: str, t: torch.Tensor, *, fp16: bool = False, coder: str = "auto") -> int:
    """The exact bytes `t`'s section would take in a .dcz file written now.

    This is the writer's own per-tensor path (every candidate encoding priced, the
    smallest kept; with ``coder='huffman'`` version 1's choice), so a planner that prices
    choices with it follows any coder the writer gains. Header entry, alignment padding
    and meta are not included.
    """
    if L.WRITE_VERSION >= 2:
        from deepcomp.codec.v2 import choose_encoding_v2

        return len(choose_encoding_v2(name, t, fp16=fp16, coder=coder).payload)
    return len(choose_encoding(name, t, fp16=fp16).payload)


def assemble(encoded: list, blobs: list) -> tuple[bytearray, list]:
    """Lay out prefix, header and sections (docs/FORMAT.md); returns the image and entries."""
    # Offsets depend on the header length and the header lists the offsets, so lay the
    # sections out for a guessed header length and redo it until the length settles.
    guess = 0
    for _ in range(16):
        pos = L.align_up(L.PREFIX.size + guess)
        entries, places = [], []
        for enc in encoded:
            ln = len(enc.payload)
            off = pos if ln else 0
            e = {**enc.fields, "offset": off, "length": ln, "crc32": zlib.crc32(enc.payload)}
            if enc.why:
                e["why"] = enc.why
            entries.append(e)
            places.append((off, enc.payload))
            if ln:
                pos = L.align_up(off + ln)
        extra = {}
        for key, data in blobs:
            extra[key] = {"offset": pos, "length": len(data), "crc32": zlib.crc32(data)}
            places.append((pos, data))
            pos = L.align_up(pos + len(data))
        last_end = max((off + len(d) for off, d in places if d), default=L.PREFIX.size + guess)
        header = {"dcz": L.VERSION, "file_size": last_end, "tensors": entries, **extra}
        hbytes = _json_bytes(header, "header", L.MAX_HEADER_BYTES)
        if len(hbytes) == guess:
            break
        guess = len(hbytes)
    else:  # pragma: no cover - the length is monotone in a few rounds
        raise RuntimeError("header layout did not converge")
    image = bytearray(last_end)
    image[:L.PREFIX.size] = L.PREFIX.pack(L.MAGIC, L.VERSION, 0, len(hbytes), zlib.crc32(hbytes))
    image[L.PREFIX.size:L.PREFIX.size + len(hbytes)] = hbytes
    for off, data in places:
        if data:
            image[off:off + len(data)] = data
    return image, entries


def _distinct_at_most(t: torch.Tensor, n: int) -> bool:
    bits = t.detach().contiguous().view(torch.int32).numpy()
    return np.unique(bits).size <= n


def _is_weight(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.dim() >= 2 and t.numel() > 0


def parse_bits(spec) -> dict:
    """'fc=5,conv=8' or {'fc': 5} -> validated dict."""
    if isinstance(spec, str):
        out = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, val = part.partition("=")
            if not sep or not val.strip().isdigit():
                raise DeepcompError(f"--bits: cannot read {part!r}; write e.g. fc=5,conv=8")
            out[key.strip()] = int(val)
        spec = out
    if not isinstance(spec, Mapping) or not spec:
        raise DeepcompError("bits must name at least one layer kind, e.g. {'fc': 5, 'conv': 8}")
    for k, v in spec.items():
        if k not in DEFAULT_BITS:
            raise DeepcompError(f"bits: unknown layer kind {k!r}; use fc and/or conv")
        if not isinstance(v, int) or not 1 <= v <= 8:
            raise DeepcompError(f"bits: {k}={v} must be an integer from 1 to 8 (at most 256 centroids)")
    return dict(spec)


def prepare_state_dict(sd: Mapping, *, prune: str | None = None, bits=None, init: str = "linear",
                       progress: bool = False, snap: float | None = None) -> dict:
    """Optional prune and share; weights that are still not shareable losslessly get the
    defaults. `snap=E` (opt-in, lossy) then puts every float32 value on a power-of-two
    grid within E of its tensor's range (deepcomp.codec.snap)."""
    sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}
    if prune:
        from deepcomp.prune import prune_state_dict

        # prune_state_dict writes +0.0 (never -0.0) where it cuts, so pruned zeros are
        # structural zeros of the sparse layout.
        sd, _report = prune_state_dict(sd, prune)
    if bits is not None:
        from deepcomp.share import share_state_dict

        sd = share_state_dict(sd, parse_bits(bits), init=init, progress=progress)
    else:
        todo = [k for k, v in sd.items() if isinstance(v, torch.Tensor) and _is_weight(v)
                and not _distinct_at_most(v, L.MAX_CODEBOOK)]
        if todo:
            from deepcomp.share import share_tensor

            sd = dict(sd)
            with element_bar([sd[k] for k in todo], "share", progress) as done:
                for k in todo:
                    kind = "fc" if sd[k].dim() == 2 else "conv"
                    sd[k] = done(share_tensor(sd[k], DEFAULT_BITS[kind], init=init), sd[k])
    if snap is not None:
        from deepcomp.codec.snap import snap_state_dict

        sd = snap_state_dict(sd, snap)
    return sd


def save(obj, path, *, prune: str | None = None, bits=None, init: str = "linear",
         graph=None, meta: dict | None = None, fp16: bool = False, example_inputs=None,
         max_rel_error=None, calibration=None, min_cosine=None, seed: int = 0, log=None,
         progress: bool = False, snap: float | None = None,
         weighting: str | None = None, coder: str = "auto") -> dict:
    """Compress a model (nn.Module) or a state_dict into a .dcz file (see docs/FORMAT.md).

    ``snap=E`` (opt-in, lossy; default off = every value stored exactly) rounds every
    float32 value (biases, norm parameters, codebook centroids) to a power-of-two grid
    with error at most E times its tensor's range (max - min), e.g. 1e-3: biases then
    cost ~11 bits instead of ~27. Recorded in the file's meta as "snap".

    ``bits="auto"`` chooses the bits per weight tensor (deepcomp.oneshot): with
    ``max_rel_error=E`` the fewest bits keeping each tensor's relative L2 error within E
    (``prune="auto"`` also chooses its kept fraction); with ``calibration=inputs,
    min_cosine=C`` the smallest file whose outputs on those inputs keep cosine >= C, and
    ``weighting="activations"`` weighs each Linear's k-means by its inputs on them.
    The plan is stored in the file's meta under "oneshot" and returned as "oneshot".
    ``progress=True`` shows tqdm bars for the long steps (k-means, the one-shot search,
    coding) when stderr is a terminal.
    ``coder='huffman'`` trades bytes for decode speed: only version 1's Huffman streams
    (one table lookup per symbol) instead of the smallest of those and the arithmetic
    coder (benchmarks/RESULTS.md: 8-13 % larger on the LeNets, decoding in 0.6-0.8x
    torch.load's time).
    """
    from deepcomp.codec.v2 import check_coder

    coder = check_coder(coder)
    plan = None
    if snap is not None:
        from deepcomp.codec.snap import check_rel

        snap = check_rel(snap)
        meta = {**(meta or {}), "snap": snap}
    if isinstance(bits, str) and bits.strip().lower() == "auto":
        from deepcomp.oneshot import apply

        obj, plan = apply(obj, prune=prune, max_rel_error=max_rel_error, calibration=calibration,
                          min_cosine=min_cosine, init=init, seed=seed, fp16=fp16, log=log,
                          progress=progress, weighting=weighting, coder=coder)
        meta = {**(meta or {}), "oneshot": plan.to_dict()}
        prune = None
    else:
        for key, value in (("max_rel_error", max_rel_error), ("calibration", calibration),
                           ("min_cosine", min_cosine), ("weighting", weighting)):
            if value is not None:
                raise DeepcompError(f"{key} is a target for bits='auto'; pass bits='auto' with it "
                                    "(or drop it and give fixed bits such as {'fc': 5})")
        if isinstance(prune, str) and prune.strip().lower() == "auto":
            raise DeepcompError("prune='auto' is chosen together with bits='auto' and max_rel_error")
    graph_dict = None
    if isinstance(obj, torch.nn.Module):
        sd = None
        if graph is not False:
            capture = _graph_capture()
            if capture is None:
                if graph is True:
                    raise ModelError("graph capture (deepcomp.graph) is not available in this build")
            else:
                try:
                    graph_dict, sd = capture(obj, example_inputs)
                except UnsupportedOpError as e:
                    if graph is True:
                        raise
                    warnings.warn(f"storing weights only, without a graph: {e}", stacklevel=2)
                    graph_dict = None
        if isinstance(graph, dict):
            graph_dict = graph
        if sd is None:
            sd = obj.state_dict()
    elif isinstance(obj, Mapping):
        sd = obj
        if graph is True:
            raise ModelError("graph=True needs an nn.Module; a state_dict has no graph to capture")
        if isinstance(graph, dict):
            graph_dict = graph
    else:
        raise ModelError(f"save() takes an nn.Module or a state_dict, not {type(obj).__name__}")
    if plan is None:
        sd = prepare_state_dict(sd, prune=prune, bits=bits, init=init, progress=progress, snap=snap)
    else:
        # The plan's weights are already shared; a tensor it left unshared (no bit width
        # met the target) stays exact rather than getting the default bits.
        sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}
        if snap is not None:
            from deepcomp.codec.snap import snap_state_dict

            sd = snap_state_dict(sd, snap)
    summary = write_state_dict(sd, path, graph=graph_dict, meta=meta, fp16=fp16, progress=progress,
                               coder=coder)
    if plan is not None:
        summary["oneshot"] = plan
    return summary


def _graph_capture():
    try:
        from deepcomp.graph import capture
    except ImportError:
        return None
    return capture
