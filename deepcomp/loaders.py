"""Reading the model files users hand to `deepcomp encode`.

Accepted, decided by content rather than by file name:
  * a state_dict saved with torch.save (read with weights_only=True: no code runs);
  * a torch.export archive (.pt2), whose graph is captured as well;
  * a TorchScript archive (torch.jit.save);
  * a .safetensors file, parsed here (u64 header length, JSON header, raw bytes);
  * a fully pickled object (torch.save(model)) only with unsafe_pickle=True, because
    unpickling it runs code from the file.
`arch` pairs a state_dict with deepcomp.models.get_model(arch), so the result is a
module whose graph can be captured.
"""
from __future__ import annotations

import json
import math
import os
import warnings
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from deepcomp.errors import ModelError, UnsupportedOpError, brief, weights_only_reason

# safetensors dtype tag -> (torch dtype, stored numpy dtype, bytes per element)
_ST_DTYPES = {
    "F32": (torch.float32, "<f4"), "F16": (torch.float16, "<f2"), "BF16": (torch.bfloat16, "<i2"),
    "F64": (torch.float64, "<f8"), "I64": (torch.int64, "<i8"), "I32": (torch.int32, "<i4"),
    "I16": (torch.int16, "<i2"), "I8": (torch.int8, "i1"), "U8": (torch.uint8, "u1"),
    "BOOL": (torch.bool, "u1"),
}
_ST_MAX_HEADER = 100 << 20


@dataclass
class LoadedModel:
    obj: object  # nn.Module or dict[str, Tensor]
    graph: dict | None  # captured already (torch.export archives)
    kind: str  # 'state_dict', 'torch.export', 'torchscript', 'safetensors', 'pickled module'


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
    """A .safetensors file as a state_dict; every offset and size is checked first."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read()
    if size < 8:
        raise ModelError(f"{path}: too short for a safetensors file")
    (hlen,) = struct.unpack_from("<Q", data)
    if hlen > _ST_MAX_HEADER or 8 + hlen > size:
        raise ModelError(f"{path}: safetensors header length {hlen} does not fit the {size}-byte file")
    try:
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: safetensors header is not a JSON object")
    body = memoryview(data)[8 + hlen:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ModelError(f"{path}: safetensors entry {name!r} lacks dtype/shape/data_offsets") from None
        if dtype not in _ST_DTYPES:
            raise ModelError(f"{path}: tensor {name!r} has unsupported safetensors dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ModelError(f"{path}: tensor {name!r} has a bad shape {shape!r}")
        tdtype, npdtype = _ST_DTYPES[dtype]
        nbytes = math.prod(shape) * np.dtype(npdtype).itemsize
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(body)
                and end - start == nbytes):
            raise ModelError(f"{path}: tensor {name!r} data_offsets [{start}, {end}) do not fit "
                             f"shape {shape} {dtype} in a {len(body)}-byte body")
        arr = np.frombuffer(body, npdtype, math.prod(shape), start).copy()
        t = torch.from_numpy(arr)
        if tdtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        elif tdtype == torch.bool:
            t = t.to(torch.bool)
        out[name] = t.reshape(shape)
    return out


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
