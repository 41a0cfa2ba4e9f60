"""Reading the model files users hand to `deepcomp encode`.

Accepted, decided by content rather than by file name:
  * a state_dict saved with torch.save (read with weights_only=True: no code runs);
  * a torch.export archive (.pt2), whose graph is captured as well;
  * a TorchScript archive (torch.jit.save);
  * a .safetensors file, read with the safetensors package (its errors made ModelErrors);
  * a fully pickled object (torch.save(model)) only with unsafe_pickle=True, because
    unpickling it runs code from the file;
  * a .dcz file (validated, decoded; its graph and meta come along), so that a file can
    be written again with other writer settings, e.g. `--coder huffman`.
`arch` pairs a state_dict with deepcomp.models.get_model(arch), so the result is a
module whose graph can be captured.
"""
from __future__ import annotations

import os
import re
import warnings
import struct
import zipfile
from dataclasses import dataclass

import torch

from deepcomp.errors import ModelError, UnsupportedOpError, brief, weights_only_reason

# What the codec takes from a .safetensors file; other dtypes the library reads (complex,
# float8, unsigned wider than 8 bits) are refused with a message naming them.
_ST_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
# Only for recognising a safetensors file by its first bytes; parsing is the library's.
_ST_MAX_HEADER = 100 << 20


@dataclass
class LoadedModel:
    obj: object  # nn.Module or dict[str, Tensor]
    graph: dict | None  # captured already (torch.export archives)
    kind: str  # 'state_dict', 'torch.export', 'torchscript', 'safetensors', 'pickled module', 'dcz'
    meta: dict | None = None  # a .dcz's own meta section


def load_model_file(path, *, arch: str | None = None, unsafe_pickle: bool = False) -> LoadedModel:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path} is a directory; give a model file (.pt, .pt2, .safetensors)")
    loaded = _load(path, unsafe_pickle)
    if arch is not None:
        if not isinstance(loaded.obj, dict):
            raise ModelError(f"--arch pairs an architecture with a state_dict; {path} is a {loaded.kind}, "
                             "which already carries its own")
        from deepcomp.models import get_model, load_into

        model = get_model(arch)
        load_into(model, loaded.obj, path)
        loaded = LoadedModel(model.eval(), None, f"{loaded.kind} + {arch}")
    return loaded


def _load(path: str, unsafe_pickle: bool) -> LoadedModel:
    with open(path, "rb") as f:
        head = f.read(16)
    from deepcomp.codec import layout as L

    if head.startswith(L.MAGIC):
        from deepcomp.codec.reader import open_dcz

        f = open_dcz(path, defer=True)
        return LoadedModel(f.state_dict(), f.graph, "dcz", dict(f.meta))
    if _looks_like_safetensors(head):
        return LoadedModel(read_safetensors(path), None, "safetensors")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelError(f"{path}: damaged zip archive ({e})") from None
        base = {n.split("/", 1)[1] for n in names if "/" in n}
        if "archive_format" in base or any(n.startswith("models/") for n in base):
            return _load_export(path)
        if "constants.pkl" in base or any(n.startswith("code/") for n in base):
            return _load_torchscript(path)
    return _load_pickle(path, unsafe_pickle)


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack_from("<Q", head)
    return 2 <= n <= _ST_MAX_HEADER and head[8:9] == b"{"


def read_safetensors(path) -> dict:
    """A .safetensors file as a state_dict, read by the ``safetensors`` package.

    The library checks the header, every offset and size (and is fuzzed upstream); its
    errors become one-line ModelErrors here. Tensors come back in the file's data order.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    out = {}
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            names = f.offset_keys() if hasattr(f, "offset_keys") else f.keys()
            for name in names:
                out[name] = f.get_tensor(name)
    except SafetensorError as e:
        raise ModelError(f"{path}: not a valid safetensors file ({_st_reason(e)}); it may be "
                         f"truncated or damaged, write it again with safetensors.torch.save_file") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (TypeError, ValueError, RuntimeError) as e:  # a dtype this torch cannot hold
        raise ModelError(f"{path}: cannot read a tensor from this safetensors file ({brief(e)})") from None
    for name, t in out.items():
        if t.dtype not in _ST_DTYPES:
            raise ModelError(f"{path}: tensor {name!r} has unsupported safetensors dtype {t.dtype} "
                             f"(deepcomp reads {', '.join(_ST_DTYPES.values())}); convert it first, "
                             f"e.g. to float32")
    return out


def _st_reason(e: Exception) -> str:
    """The library's message without its prefix and JSON position ("at line 1 column 60")."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    for prefix in ("Error while deserializing header: ", "Error while deserializing: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    msg = re.sub(r" at line \d+ column \d+$", "", msg)
    return brief(msg, 200)


def _load_export(path: str) -> LoadedModel:
    from deepcomp.graph import capture

    try:
        ep = torch.export.load(path)
    except Exception as e:
        raise ModelError(f"cannot read {path} as a torch.export archive ({type(e).__name__}: {brief(e)})") from None
    try:
        graph, sd = capture(ep)
    except UnsupportedOpError as e:
        # As deepcomp.save does for a module: the weights are still worth storing.
        warnings.warn(f"{path}: storing weights only, the graph cannot be stored: {e}", stacklevel=2)
        return LoadedModel(dict(ep.state_dict), None, "torch.export (weights only)")
    return LoadedModel(dict(sd), graph, "torch.export")


def _load_torchscript(path: str) -> LoadedModel:
    try:
        m = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise ModelError(f"cannot read {path} as a TorchScript archive ({type(e).__name__}: {brief(e)})") from None
    return LoadedModel({k: v for k, v in m.state_dict().items()}, None, "torchscript")


def _load_pickle(path: str, unsafe_pickle: bool) -> LoadedModel:
    if unsafe_pickle:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ModelError(f"cannot read {path} with torch.load ({type(e).__name__}: {brief(e)})") from None
        if isinstance(obj, torch.nn.Module):
            return LoadedModel(obj.eval(), None, "pickled module")
        return LoadedModel(_as_state_dict(obj, path), None, "pickled state_dict")
    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive, or (legacy format) a pickle opening with PROTO.
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise ModelError(f"{path} is not a model file deepcomp can read: expected a state_dict .pt, "
                         f"a torch.export .pt2, a TorchScript archive or a .safetensors file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        reason = weights_only_reason(msg)
        if reason is not None:
            why = f" (torch.load refused: {reason.rstrip('.')})"
            raise ModelError(
                f"{path} holds pickled Python objects (for example a whole nn.Module saved with "
                f"torch.save(model)); loading it would run code from the file{why}. Save "
                f"model.state_dict() instead, or pass --unsafe-pickle if you trust the file") from None
        raise ModelError(f"{path} is not a model file deepcomp can read: expected a state_dict .pt, "
                         f"a torch.export .pt2, a TorchScript archive or a .safetensors file "
                         f"({type(e).__name__}: {brief(msg, 160)})") from None
    return LoadedModel(_as_state_dict(obj, path), None, "state_dict")


def _as_state_dict(obj, path: str) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ModelError(f"{path} does not hold a state_dict (a dict of name -> tensor)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{path}: entry {bad[0]!r} of the state_dict is not a tensor")
    return dict(obj)
