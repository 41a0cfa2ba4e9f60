"""The stored model graph: capture (torch.export -> core ATen -> allow-list), validation.

A graph is JSON data over a closed allow-list of ops (deepcomp.graph.ops); loading one
never executes anything from the file. docs/FORMAT.md ("Graph section") is the schema.
  * capture(model, example_inputs) -> (graph, state_dict)   (exporter.py; legacy.py is
    the torch.fx fallback that writes version-1 graphs)
  * validate(graph, files) -> Checked                         (validate.py)
  * summary(graph) -> inputs, outputs and op counts, for `deepcomp info`
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn as nn

from deepcomp.errors import UnsupportedOpError
from deepcomp.graph.validate import GRAPH_FORMAT, GRAPH_VERSION, Checked, check, validate

__all__ = ["capture", "validate", "check", "summary", "Checked", "GRAPH_FORMAT", "GRAPH_VERSION"]


def _is_exported(model) -> bool:
    return hasattr(model, "graph_signature") and hasattr(model, "graph_module")


def capture(model, example_inputs=None) -> tuple[dict, dict]:
    """Capture `model` as (graph, state_dict): the tensors the graph references, BatchNorm folded.

    `model`: an nn.Module or a torch.export ExportedProgram. `example_inputs`: what the
    module is called with, a tensor, a tuple of tensors, or a dict of keyword tensors
    (as Hugging Face models take input_ids and attention_mask); without it a plausible
    image or feature batch is guessed from the first layer. The batch dim (and the
    sequence dim of integer token inputs) stays symbolic.
    """
    from deepcomp.graph import exporter as C
    from deepcomp.graph import legacy

    if _is_exported(model):
        # A program exported with fixed shapes has its batch size baked in; exported
        # again from its own module with a free batch dim, it runs at any batch size.
        try:
            return C.capture_module(model.module(), _placeholder_inputs(model))
        except Exception:  # noqa: BLE001 - any failure falls back to the program as given
            return C.capture_exported(model)
    if not isinstance(model, nn.Module):
        raise UnsupportedOpError(f"cannot capture a graph from a {type(model).__name__}; "
                                 "pass an nn.Module or a torch.export ExportedProgram")
    if example_inputs is None:
        # Without inputs, a model torch.fx can trace keeps the version-1 graph, which
        # takes any input shape its layers accept (as deepcomp 0.1 did).
        try:
            return legacy.capture(model, None)
        except UnsupportedOpError:
            pass
        example_inputs = _guess_inputs(model)
    try:
        if example_inputs is None:
            raise UnsupportedOpError("no example input: pass example_inputs=... "
                                     "(a tensor, a tuple or a dict of tensors)")
        return C.capture_module(model, example_inputs)
    except UnsupportedOpError as first:
        # torch.fx writes the module-level version-1 graph, which still runs where
        # export cannot trace (the model's Python refuses fake tensors, for instance).
        x = example_inputs if isinstance(example_inputs, torch.Tensor) else None
        try:
            return legacy.capture(model, x)
        except UnsupportedOpError:
            raise first from None


def _placeholder_inputs(ep) -> tuple:
    """Example tensors (zeros, so indices are in range) shaped like the program's inputs."""
    from torch.export.graph_signature import InputKind

    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    out = []
    for n in ep.graph_module.graph.nodes:
        if n.op == "placeholder" and n.name in user:
            v = n.meta["val"]
            out.append(torch.zeros([int(d) for d in v.shape], dtype=v.dtype))
    return tuple(out)


def _guess_inputs(model: nn.Module):
    from deepcomp.graph.legacy import _example_inputs

    was = model.training
    model.eval()
    try:
        for x in _example_inputs(model):
            try:
                with torch.no_grad():
                    model(x)
            except Exception:
                continue  # not a size this model takes; try the next guess
            return x
    finally:
        model.train(was)
    return None


def summary(graph) -> dict:
    """Inputs, outputs and op counts of a validated graph (either version)."""
    if graph.get("version") == 1:
        ops = Counter(n["op"] for n in graph["nodes"])
        shape = graph.get("input_shape")
        ins = [{"name": graph["inputs"][0], "dtype": "float32",
                "shape": None if shape is None else ["batch" if d is None and i == 0 else d
                                                     for i, d in enumerate(shape)]}]
        return {"version": 1, "inputs": ins, "outputs": list(graph["outputs"]), "out": None,
                "nodes": len(graph["nodes"]), "ops": dict(sorted(ops.items()))}
    ops = Counter(n["op"] for n in graph["nodes"])
    return {"version": graph["version"], "inputs": graph["inputs"], "symbols": graph.get("symbols", {}),
            "outputs": list(graph["outputs"]), "out": graph.get("out"), "nodes": len(graph["nodes"]),
            "ops": dict(sorted(ops.items()))}
