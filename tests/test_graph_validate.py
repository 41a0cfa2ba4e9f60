"""The version-2 graph validator: one malformed graph per rule (docs/FORMAT.md, "Graph section").

The graph is written by hand over a tiny file table, so every rule is tested without a
capture; the last test runs the same checks through a real file and deepcomp.load.
"""
import copy
import json

import pytest
import torch

import deepcomp
from deepcomp.codec.writer import write_state_dict
from deepcomp.errors import DczFormatError, ModelError
from deepcomp.graph import check, validate
from deepcomp.runtime import from_state_dict

FILES = {"c.w": ((4, 3, 3, 3), "float32"), "c.b": ((4,), "float32"), "fc.w": ((5, 4), "float32"),
         "emb": ((10, 4), "float32"), "ids": ((1, 16), "int64")}


def _good():
    return {
        "format": "deepcomp-graph", "version": 2,
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 8, 8]},
                   {"name": "t", "dtype": "int64", "shape": ["batch", "seq"]}],
        "symbols": {"batch": [1, None], "seq": [1, 16]},
        "nodes": [
            {"name": "conv", "op": "conv2d", "in": ["x"],
             "a": {"w": "c.w", "b": "c.b", "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}},
            {"name": "act", "op": "relu", "in": ["conv"]},
            {"name": "pool", "op": "mean", "in": ["act"], "a": {"dims": [2, 3], "keep": False}},
            {"name": "fc", "op": "linear", "in": ["pool"], "a": {"w": "fc.w", "b": None}},
            {"name": "half", "op": "mul", "in": ["fc", 0.5]},
            {"name": "flat", "op": "reshape", "in": ["half"], "a": {"shape": ["batch", 5, 1]}},
            {"name": "sm", "op": "softmax", "in": ["flat"], "a": {"dim": 1}},
            {"name": "E", "op": "tensor", "a": {"key": "emb"}},
            {"name": "h", "op": "embedding", "in": ["E", "t"]},
            {"name": "hs", "op": "sum", "in": ["h"], "a": {"dims": [1], "keep": False}},
            {"name": "hv", "op": "reshape", "in": ["h"], "a": {"shape": ["batch*seq", 4]}},
            {"name": "first", "op": "select", "in": ["h"], "a": {"dim": 1, "index": 0}},
        ],
        "outputs": ["sm", "hs", "hv", "first"], "out": ["probs", "pooled", "flat", "cls"],
    }


def test_the_good_graph_passes_and_shapes_are_propagated():
    ck = check(_good(), FILES)
    vals = ck.values
    assert vals["conv"] == (((1, ("batch",)), 4, 8, 8), "float32")
    assert vals["hv"][0] == ((1, ("batch", "seq")), 4)
    assert vals["h"][1] == "float32" and vals["first"][0] == ((1, ("batch",)), 4)


def _set(path, value):
    def f(g):
        obj = g
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return f


def _node(i, key, value):
    return _set(["nodes", i, key], value)


def _attr(i, key, value):
    return _set(["nodes", i, "a", key], value)


RULES = [
    # the envelope
    ("not an object", lambda g: g.clear(), "format"),
    ("format", _set(["format"], "other"), "format must be"),
    ("newer version", _set(["version"], 3), "newer"),
    ("unknown top-level key", _set(["code"], "print(1)"), "unknown keys"),
    # symbols and inputs
    ("symbols type", _set(["symbols"], []), "symbols must be"),
    ("symbol name", _set(["symbols", "Bad-Name"], [1, None]), "lowercase identifier"),
    ("symbol bounds", _set(["symbols", "seq"], [5, 2]), "bounds"),
    ("unbound symbol", _set(["symbols", "extra"], [1, None]), "no input's shape uses it"),
    ("inputs type", _set(["inputs"], {}), "inputs must be"),
    ("input fields", _set(["inputs", 0, "extra"], 1), "name, dtype and shape"),
    ("input dtype type", _set(["inputs", 0, "dtype"], []), "dtype must be one of"),
    ("input dtype", _set(["inputs", 0, "dtype"], "complex64"), "dtype must be one of"),
    ("input rank", _set(["inputs", 0, "shape"], [1] * 9), "at most 8"),
    ("input undeclared symbol", _set(["inputs", 0, "shape", 0], "height"), "not a declared symbol"),
    ("input product dim", _set(["inputs", 1, "shape", 1], "batch*seq"), "single symbol"),
    ("input zero dim", _set(["inputs", 0, "shape", 1], 0), "at least 1"),
    ("duplicate input", _set(["inputs", 1, "name"], "x"), "used twice"),
    # nodes: structure, names, order
    ("nodes type", _set(["nodes"], True), "nodes must be a list"),
    ("node type", _set(["nodes", 0], []), "not an object"),
    ("node keys", _node(0, "code", "x"), "must have name, op"),
    ("node name type", _node(0, "name", ["conv"]), "name of 1 to"),
    ("node name length", _node(0, "name", "n" * 300), "name of 1 to"),
    ("unknown op", _node(1, "op", "exec"), "unknown op"),
    ("op type", _node(1, "op", {"x": 1}), "unknown op"),
    ("duplicate name", _node(2, "name", "conv"), "used twice"),
    ("operand defined later (cycle)", _node(1, "in", ["pool"]), "not defined before"),
    ("operand type", _node(1, "in", [["conv"]]), "operands must be names"),
    ("arity", _node(1, "in", ["conv", "conv"]), "list of 1 operands"),
    ("scalar where not allowed", _node(1, "in", [1.0]), "operands must be names"),
    ("two scalars", _node(4, "in", [1.0, 2.0]), "at least one operand"),
    ("non-finite scalar", _node(4, "in", ["fc", 1e400]), "operands must be names"),
    ("attrs type", _node(0, "a", []), "'a' must be an object"),
    ("unknown attribute", _attr(2, "inplace", True), "unknown attributes"),
    ("missing attribute", lambda g: g["nodes"][0]["a"].pop("groups"), "'groups' is missing"),
    # attributes typed and range-checked
    ("bool where int", _attr(6, "dim", True), "must be an integer"),
    ("stride zero", _attr(0, "stride", [0, 1]), "two integers from 1"),
    ("padding negative", _attr(0, "padding", [-1, 0]), "two integers from 0"),
    ("groups zero", _attr(0, "groups", 0), "positive integer"),
    ("eps range", lambda g: g["nodes"].insert(3, {"name": "ln", "op": "layer_norm", "in": ["pool"],
                                                   "a": {"shape": [4], "eps": 5}}), "number in"),
    ("gelu approximation", lambda g: g["nodes"].insert(2, {"name": "ge", "op": "gelu", "in": ["act"],
                                                          "a": {"approx": "erf"}}), "'none' or 'tanh'"),
    ("dtype attribute", lambda g: g["nodes"].insert(2, {"name": "cv", "op": "to", "in": ["act"],
                                                       "a": {"dtype": "object"}}), "one of float32"),
    ("dim string with code", _attr(5, "shape", ["__import__('os')", 5, 1]), "not a declared symbol"),
    ("dims list too long", _attr(5, "shape", [1] * 9), "at most 8 dims"),
    # shapes propagated
    ("tensor not in file", _attr(0, "w", "nope"), "not in the file"),
    ("conv channels", _set(["inputs", 0, "shape", 1], 2), "channels"),
    ("groups divide channels", _attr(0, "groups", 3), "does not divide"),
    ("kernel larger than input", lambda g: _set(["inputs", 0, "shape"], ["batch", 3, 1, 1])(g)
     or _attr(0, "padding", [0, 0])(g), "smaller than the kernel"),
    ("linear features", _attr(3, "w", "c.b"), "must be 2-D"),
    ("dim out of rank", _attr(6, "dim", 3), "out of range"),
    ("reduce dims repeat", _attr(2, "dims", [2, -2]), "repeat"),
    ("reshape does not multiply out", _attr(5, "shape", ["batch", 4, 1]), "cannot reshape"),
    ("reshape two -1", _attr(5, "shape", [-1, -1, 5]), "at most one -1"),
    ("reshape symbolic mismatch", _attr(10, "shape", ["seq", 4]), "cannot reshape"),
    ("broadcast", lambda g: g["nodes"].insert(5, {"name": "bad", "op": "add", "in": ["fc", "pool"]}),
     "do not broadcast"),
    ("embedding indices integer", _node(8, "in", ["E", "x"]), "int64 or int32"),
    ("embedding table 2-D", lambda g: g["nodes"][7]["a"].__setitem__("key", "c.b"), "2-D float table"),
    ("select index range", _attr(11, "index", 4), "only 0 and -1"),
    ("select static range", _set(["nodes", 11, "a"], {"dim": 2, "index": 4}), "out of range"),
    ("flatten start after end", lambda g: g["nodes"].insert(2, {"name": "fl", "op": "flatten", "in": ["act"],
                                                               "a": {"start": 3, "end": 1}}), "comes after"),
    ("permute not a permutation", lambda g: g["nodes"].insert(2, {"name": "pm", "op": "permute", "in": ["act"],
                                                                 "a": {"dims": [0, 0, 1, 2]}}), "permutation"),
    ("slice past a bound", lambda g: g["nodes"].insert(8, {"name": "ps", "op": "slice", "in": ["ids_t"],
                                                          "a": {"dim": 1, "start": 0, "end": "seq", "step": 1}})
     or g["nodes"].insert(8, {"name": "ids_t", "op": "tensor", "a": {"key": "ids"}})
     or g["symbols"].__setitem__("seq", [1, 32]), "may exceed"),
    ("pool padding over half kernel", lambda g: g["nodes"].insert(2, {
        "name": "mp", "op": "max_pool2d", "in": ["act"],
        "a": {"k": [2, 2], "s": [2, 2], "p": [2, 2], "d": [1, 1], "ceil": False}}), "more than half"),
    ("sdpa shapes", lambda g: g["nodes"].insert(11, {"name": "at", "op": "sdpa", "in": ["h", "h", "hv"],
                                                     "a": {"scale": None, "causal": False}}), "differ"),
    ("pad odd widths", lambda g: g["nodes"].insert(2, {"name": "pd", "op": "pad", "in": ["act"],
                                                      "a": {"pad": [1, 1, 1], "value": 0}}), "two widths"),
    ("pad past the rank", lambda g: g["nodes"].insert(2, {"name": "pd", "op": "pad", "in": ["act"],
                                                         "a": {"pad": [1] * 10, "value": 0}}), "at most 8"),
    ("pad negative (crop)", lambda g: g["nodes"].insert(2, {"name": "pd", "op": "pad", "in": ["act"],
                                                           "a": {"pad": [-1, 0], "value": 0}}), "0 to 65536"),
    ("pad a symbolic dim", lambda g: g["nodes"].insert(2, {"name": "pd", "op": "pad", "in": ["act"],
                                                          "a": {"pad": [0] * 6 + [1, 0], "value": 0}}), "symbolic"),
    ("pad value", lambda g: g["nodes"].insert(2, {"name": "pd", "op": "pad", "in": ["act"],
                                                 "a": {"pad": [1, 1], "value": "0"}}), "finite number"),
    ("pad huge", lambda g: g["nodes"].insert(2, {"name": "pd", "op": "pad", "in": ["act"],
                                                "a": {"pad": [65536] * 6, "value": 0}}), "2\\^31"),
    ("pad integer with a fraction", lambda g: g["nodes"].insert(8, {"name": "pd", "op": "pad", "in": ["t"],
                                                                   "a": {"pad": [1, 1], "value": 0.5}}), "does not fit"),
    ("slice_scatter source shape", lambda g: g["nodes"].insert(2, {
        "name": "ss", "op": "slice_scatter", "in": ["act", "act"],
        "a": {"dim": 2, "start": 0, "end": 4, "step": 1}}), "does not fill"),
    ("slice_scatter source dtype", lambda g: g["nodes"].insert(2, {
        "name": "ss", "op": "slice_scatter", "in": ["act", "a64"],
        "a": {"dim": 2, "start": 0, "end": 8, "step": 1}})
     or g["nodes"].insert(2, {"name": "a64", "op": "to", "in": ["act"], "a": {"dtype": "float64"}}), "dtype"),
    ("index_select 2-D index", lambda g: g["nodes"].insert(8, {"name": "is", "op": "index_select", "in": ["E", "t"],
                                                              "a": {"dim": 0}}), "1-D"),
    ("index_select float index", lambda g: g["nodes"].insert(8, {"name": "is", "op": "index_select",
                                                                "in": ["E", "pool"], "a": {"dim": 0}}), "int64/int32"),
    ("select from a 0-d value", lambda g: g["nodes"].insert(2, {"name": "z0", "op": "select", "in": ["z"],
                                                               "a": {"dim": 0, "index": 0}})
     or g["nodes"].insert(2, {"name": "z", "op": "sum", "in": ["act"], "a": {"dims": None, "keep": False}}),
     "rank >= 1"),
    ("slice a 0-d value", lambda g: g["nodes"].insert(2, {"name": "z0", "op": "slice", "in": ["z"],
                                                         "a": {"dim": -1, "start": 0, "end": 1, "step": 1}})
     or g["nodes"].insert(2, {"name": "z", "op": "sum", "in": ["act"], "a": {"dims": None, "keep": False}}),
     "rank >= 1"),
    ("interpolate mode", lambda g: g["nodes"].insert(2, {"name": "up", "op": "interpolate", "in": ["act"], "a": {"size": [16, 16], "mode": "bicubic", "align": False, "scale": None}}), "mode must be"),
    ("interpolate align with nearest", lambda g: g["nodes"].insert(2, {"name": "up", "op": "interpolate", "in": ["act"], "a": {"size": [16, 16], "mode": "nearest", "align": True, "scale": None}}), "bilinear resizing only"),
    ("interpolate scale disagrees", lambda g: g["nodes"].insert(2, {"name": "up", "op": "interpolate", "in": ["act"], "a": {"size": [16, 16], "mode": "nearest", "align": False, "scale": [3.0, 2.0]}}), "is not floor"),
    ("interpolate scale count", lambda g: g["nodes"].insert(2, {"name": "up", "op": "interpolate", "in": ["act"], "a": {"size": [16, 16], "mode": "nearest", "align": False, "scale": [2.0]}}), "two numbers"),
    ("interpolate rank", lambda g: g["nodes"].insert(3, {"name": "up", "op": "interpolate", "in": ["pool"], "a": {"size": [16, 16], "mode": "nearest", "align": False, "scale": None}}), "N x C x H x W"),
    ("interpolate huge", lambda g: g["nodes"].insert(2, {"name": "up", "op": "interpolate", "in": ["act"], "a": {"size": [65536, 65536], "mode": "nearest", "align": False, "scale": None}}), "2\\^28"),
    ("cumsum dim", lambda g: g["nodes"].insert(8, {"name": "cs", "op": "cumsum", "in": ["t"], "a": {"dim": 2, "dtype": None}}), "out of range"),
    ("bitwise_not of floats", lambda g: g["nodes"].insert(2, {"name": "bn", "op": "bitwise_not", "in": ["act"]}), "integer or bool"),
    ("log of integers", lambda g: g["nodes"].insert(8, {"name": "lg", "op": "log", "in": ["t"]}), "floating point"),
    # outputs
    ("outputs undefined", _set(["outputs"], ["nowhere"]), "not a defined value"),
    ("outputs type", _set(["outputs"], "sm"), "outputs must be"),
    ("out keys count", _set(["out"], ["a"]), "one per output"),
    ("out single with many", _set(["out"], None), "several outputs"),
    ("out type", _set(["out"], 3), "'out' must be"),
]


@pytest.mark.parametrize("rule, mutate, message", RULES, ids=[r[0] for r in RULES])
def test_each_rule_refuses_a_malformed_graph(rule, mutate, message):
    g = _good()
    mutate(g)
    with pytest.raises(DczFormatError, match=message):
        validate(json.loads(json.dumps(g)), FILES)


def _state():
    torch.manual_seed(0)
    return {k: (torch.randn(s) if dt == "float32" else torch.arange(s[1]).reshape(s)) for k, (s, dt) in FILES.items()}


def test_the_good_graph_runs_and_checks_its_inputs():
    rt = from_state_dict(_state(), _good(), policy="dense")
    x, t = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2, 5))
    out = rt(x, t=t)
    assert set(out) == {"probs", "pooled", "flat", "cls"}
    assert out["probs"].shape == (2, 5, 1) and out["flat"].shape == (10, 4) and out["cls"].shape == (2, 4)
    with pytest.raises(ModelError, match="missing input"):
        rt(x)
    with pytest.raises(ModelError, match="unknown input"):
        rt(x, t, z=t)
    with pytest.raises(ModelError, match="1..16"):
        rt(x, torch.zeros(2, 17, dtype=torch.long))
    with pytest.raises(ModelError, match="the model takes"):
        rt(torch.randn(2, 3, 9, 8), t)


def test_every_load_path_validates_first(tmp_path, capsys):
    from deepcomp.cli import main

    g = _good()
    g["nodes"][0]["a"]["groups"] = 3
    p = tmp_path / "bad.dcz"
    write_state_dict(_state(), p, graph=g)
    with pytest.raises(DczFormatError, match="does not divide"):
        deepcomp.load(p)
    assert main(["info", str(p)]) == 2
    assert "does not divide" in capsys.readouterr().err
