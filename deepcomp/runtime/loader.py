"""Build a runnable nn.Module from a .dcz file: from its graph, or inside a user's model."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from deepcomp.errors import DczFormatError, ModelError
from deepcomp.graph import validate
from deepcomp.runtime.embedding import RuntimeEmbedding, can_keep_codes
from deepcomp.runtime.executor import GraphModule
from deepcomp.runtime.legacy_exec import GraphModule as LegacyGraphModule
from deepcomp.runtime.layers import FileSource, RuntimeConv2d, RuntimeLinear, runtime_layers, set_policy
from deepcomp.runtime.weights import WeightForm


class _StateSource:
    """The slice of the codec's DczFile the loader uses, over an in-memory state_dict."""

    def __init__(self, state: dict, graph: dict | None = None, raw: bool = False) -> None:
        self._state = state
        self.names = list(state)
        self.graph = graph
        self.meta: dict = {}
        self._raw = raw

    def dense(self, name):
        return self._state[name].detach().to(torch.float32)

    def compressed(self, name):
        if self._raw:  # a dense-only model needs no codebook search
            return WeightForm(name, tuple(self._state[name].shape),
                              array=self.dense(name).contiguous().numpy())
        return WeightForm.from_dense(name, self._state[name])


def _form(src, name: str) -> WeightForm:
    obj = src.compressed(name)
    return obj if isinstance(obj, WeightForm) else WeightForm.from_stored(name, obj)


def _shape_of(src, name: str) -> tuple:
    obj = src.compressed(name)
    return tuple(int(s) for s in obj.shape)


def _bias(src, name: str | None):
    if name is None:
        return None
    return src.dense(name).reshape(-1).to(torch.float32).contiguous()


def _file_table(src) -> dict:
    """name -> (shape, dtype) of every tensor in the file, without decoding any."""
    if isinstance(src, _StateSource):
        from deepcomp.graph.ops import DTYPE_NAME

        return {k: (tuple(v.shape), DTYPE_NAME.get(v.dtype, str(v.dtype))) for k, v in src._state.items()}
    out = {}
    for name in src.names:
        r = src.record(name)
        out[name] = (tuple(int(d) for d in r.shape), r.dtype)
    return out


def _tensor(src, name: str) -> torch.Tensor:
    if isinstance(src, _StateSource):
        return src._state[name].detach().contiguous()
    return src.dense(name)


def _build_from_graph(src, graph: dict):
    checked = validate(graph, _file_table(src))
    if checked is None:
        return _build_v1(src, graph)
    layers, tensors = {}, {}
    for n in checked.nodes:
        a = n.a
        if n.op == "linear":
            layers[n.name] = RuntimeLinear(n.name, _form(src, a["w"]), _bias(src, a.get("b")))
        elif n.op == "conv2d":
            layers[n.name] = RuntimeConv2d(n.name, _form(src, a["w"]), _bias(src, a.get("b")),
                                           stride=a["stride"], padding=a["padding"],
                                           dilation=a["dilation"], groups=a["groups"])
        elif n.op == "tensor" and a["key"] not in tensors:
            t = _tensor(src, a["key"])
            tensors[a["key"]] = t.to(torch.float32) if t.dtype in (torch.float16, torch.bfloat16) else t
    return GraphModule(checked, layers, tensors).eval()


def _build_v1(src, graph: dict) -> LegacyGraphModule:
    layers = {}
    for n in graph["nodes"]:
        a = n["attrs"]
        if n["op"] == "linear":
            layers[n["name"]] = RuntimeLinear(n["name"], _form(src, a["weight"]), _bias(src, a["bias"]))
        elif n["op"] == "conv2d":
            layers[n["name"]] = RuntimeConv2d(n["name"], _form(src, a["weight"]), _bias(src, a["bias"]),
                                              stride=a["stride"], padding=a["padding"],
                                              dilation=a["dilation"], groups=a["groups"])
    return LegacyGraphModule(graph, layers).eval()


def _swap_into(src, model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ModelError(f"model= must be an nn.Module, got {type(model).__name__}")
    names = set(src.names)
    replaced: set[str] = set()
    swaps = []
    for qual, m in model.named_modules():
        if type(m) is nn.Embedding and qual and f"{qual}.weight" in names:
            ekey = f"{qual}.weight"
            if _shape_of(src, ekey) != tuple(m.weight.shape):
                raise ModelError(f"'{ekey}' is {list(_shape_of(src, ekey))} in the file but "
                                 f"{list(m.weight.shape)} in the model")
            eform = _form(src, ekey)
            if can_keep_codes(m, eform):
                swaps.append((qual, RuntimeEmbedding(qual, eform)))
                replaced.add(ekey)
            continue
        if type(m) not in (nn.Linear, nn.Conv2d):
            continue
        wkey = f"{qual}.weight" if qual else "weight"
        bkey = f"{qual}.bias" if qual else "bias"
        if wkey not in names:
            raise ModelError(f"the file has no '{wkey}' for the model's {type(m).__name__} '{qual}'; "
                             "is this the model the file was saved from?")
        shape = _shape_of(src, wkey)
        if shape != tuple(m.weight.shape):
            raise ModelError(f"'{wkey}' is {list(shape)} in the file but {list(m.weight.shape)} in the model")
        if m.bias is not None and bkey not in names:
            raise ModelError(f"the file has no '{bkey}' for the model's layer '{qual}'")
        if m.bias is None and bkey in names:
            raise ModelError(f"the file has a bias '{bkey}' the model's layer '{qual}' lacks "
                             "(was BatchNorm folded into it? then load without model=)")
        if isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            continue  # kept as a dense PyTorch layer; its weights load below
        bias = _bias(src, bkey if m.bias is not None else None)
        if isinstance(m, nn.Linear):
            new = RuntimeLinear(qual, _form(src, wkey), bias)
        else:
            new = RuntimeConv2d(qual, _form(src, wkey), bias, stride=m.stride, padding=m.padding,
                                dilation=m.dilation, groups=m.groups)
        swaps.append((qual, new))
        replaced.update({wkey, bkey})
    for qual, new in swaps:
        parent_name, _, child = qual.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not qual:
            raise ModelError("model= is itself a single Linear/Conv2d; wrap it in a module")
        setattr(parent, child, new)
    rest = model.state_dict()
    missing = [k for k in rest if k not in names]
    if missing:
        raise ModelError(f"the file lacks {len(missing)} of the model's tensors "
                         f"(first: {', '.join(missing[:3])}); is this the model it was saved from?")
    extra = [k for k in names if k not in rest and k not in replaced]
    # A file saved with its graph also holds the model's non-persistent buffers (a
    # BertModel's position_ids), which state_dict() leaves out: they belong to this model.
    buffers = dict(model.named_buffers())
    for k in [k for k in extra if k in buffers]:
        t = src.dense(k)
        if tuple(t.shape) != tuple(buffers[k].shape):
            raise ModelError(f"'{k}' is {list(t.shape)} in the file but {list(buffers[k].shape)} in the model")
        with torch.no_grad():
            buffers[k].copy_(t.to(buffers[k].dtype))
        extra.remove(k)
    if extra:
        raise ModelError(f"the file has {len(extra)} tensors the model does not "
                         f"(first: {', '.join(extra[:3])}); is this the model it was saved from?")
    loaded = {}
    for k, v in rest.items():
        t = src.dense(k)
        if tuple(t.shape) != tuple(v.shape):
            raise ModelError(f"'{k}' is {list(t.shape)} in the file but {list(v.shape)} in the model")
        loaded[k] = t.to(v.dtype)
    model.load_state_dict(loaded, strict=True)
    return model.eval()


def from_state_dict(state: dict, graph: dict | None = None, model: nn.Module | None = None,
                    policy: str = "auto") -> nn.Module:
    """Runtime model from dense tensors in memory (shared weights get the codebook form)."""
    src = _StateSource(state, graph, raw=policy == "dense")
    m = _build_from_graph(src, graph) if model is None else _swap_into(src, model)
    return set_policy(m, policy)


def load(path, model: nn.Module | None = None, policy: str = "compact") -> nn.Module:
    """Load a .dcz file as an nn.Module that runs on the compressed weights.

    Without `model`, the module is built from the graph stored in the file (no pickle, no
    user code). With `model` (an instance of the architecture the file was saved from),
    its Linear / Conv2d layers are replaced by runtime layers, an nn.Embedding whose table
    the file stores shared (dense codes) by a RuntimeEmbedding that keeps the codes, and
    the other tensors are loaded into it; this is how weights-only files run.

    The default policy, 'compact', keeps each layer within 1/4 of its dense fp32 bytes
    (plus codebook, scales and bias) and picks per layer by measurement between the
    sparse kernels, decode-on-use and, where it is faster and fits, int8 (which then
    replaces the file form in memory; within the error stated in runtime/layers.py);
    'exact' never rounds to int8; 'auto' may also keep int8 or dense copies where they
    measured faster (see runtime/layers.py).
    """
    from deepcomp.codec import open_dcz

    p = Path(os.fspath(path))
    if not p.is_file():
        raise ModelError(f"no such file: {p}")
    src = open_dcz(p)
    if model is not None:
        m = _swap_into(src, model)
    else:
        if src.graph is None:
            raise ModelError(f"{p} holds weights only (no model graph); pass the architecture: "
                             "deepcomp.load(path, model=MyNet()) or `deepcomp run --arch NAME`")
        m = _build_from_graph(src, src.graph)
    # Where a layer may re-read its file form after 'compact' handed it over to int8.
    fs = FileSource(str(p))
    for layer in runtime_layers(m):
        layer.source = (fs, layer.form.name)
    return set_policy(m, policy)
