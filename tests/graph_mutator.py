"""Structure-aware mutation of stored graphs: every mutant must be refused typed or run.

A *subject* is a (graph, state_dict, example input) triple from a real model. Mutants are
made by generic edits of the graph's JSON tree (values replaced by extreme or wrong-typed
ones, containers deleted / duplicated / reordered / truncated, names pointed at missing,
later or unrelated things, nodes grafted from other models), written into a .dcz file
with valid CRCs next to the subject's tensors, then `deepcomp.load(path)` and one forward
pass. Outcomes: *refused* (a DeepcompError, at write, load or run), *ran*, or *untyped*
(any other exception: the bug this hunts).

Used by tests/test_graph_fuzz.py and as a script, e.g. against another checkout:

    cd /path/to/checkout && python /path/to/tests/graph_mutator.py --seconds 120 \
        --models lenet5,resnet18 --findings findings.md

To add a model family, register a factory in SUBJECTS that returns a Subject (the
factory may raise UnsupportedOpError while the graph cannot capture it; it is skipped).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __name__ == "__main__":
    # Script mode: test the deepcomp of the checkout we are run from, not the installed one.
    if (Path.cwd() / "deepcomp" / "__init__.py").is_file():
        sys.path.insert(0, str(Path.cwd()))

import torch  # noqa: E402

import deepcomp  # noqa: E402
from deepcomp.errors import DeepcompError, UnsupportedOpError  # noqa: E402


@dataclass
class Subject:
    name: str
    graph: dict
    state: dict
    example: object  # a tensor, or a dict of keyword tensors (token models)
    # raw: store every tensor uncompressed (fast to prepare; the graph is what is fuzzed).
    raw: bool = False
    _encoded: list | None = field(default=None, repr=False)

    def encoded(self) -> list:
        """The tensors encoded once; each mutant only replaces the graph section."""
        if self._encoded is None:
            from deepcomp.codec.tensors import _raw, choose_encoding
            from deepcomp.codec.tensors import TORCH_TO_NAME

            if self.raw:
                self._encoded = [_raw({"name": k, "dtype": TORCH_TO_NAME[v.dtype], "shape": list(v.shape)},
                                      v.detach().contiguous(), TORCH_TO_NAME[v.dtype])
                                 for k, v in self.state.items()]
            else:
                self._encoded = [choose_encoding(k, v) for k, v in self.state.items()]
        return self._encoded


def _captured(name: str, model: torch.nn.Module, x: torch.Tensor, prune: str | None = None,
              raw: bool = False) -> Subject:
    from deepcomp.graph import capture

    torch.manual_seed(0)
    model.eval()
    graph, sd = capture(model, x)
    if prune:
        # Pruned and shared weights take the sparse/codebook load paths, as real files do.
        from deepcomp.codec.writer import prepare_state_dict

        sd = prepare_state_dict(sd, prune=prune, bits={"conv": 5, "fc": 5})
    return Subject(name, json.loads(json.dumps(graph)), sd, x, raw=raw)


def _lenet300() -> Subject:
    from deepcomp.models import get_model

    torch.manual_seed(0)
    return _captured("lenet300", get_model("deepcomp:lenet300"), torch.randn(2, 1, 28, 28),
                     prune="sparsity:0.9")


def _lenet5() -> Subject:
    from deepcomp.models import get_model

    torch.manual_seed(0)
    return _captured("lenet5", get_model("deepcomp:lenet5"), torch.randn(2, 1, 28, 28), prune="sparsity:0.9")


def _torchvision(arch: str, size: int = 32, raw: bool = False, prune: str | None = None) -> Callable[[], Subject]:
    def make() -> Subject:
        import torchvision

        torch.manual_seed(0)
        m = getattr(torchvision.models, arch)(num_classes=10)
        return _captured(arch, m, torch.randn(1, 3, size, size), prune=prune, raw=raw)
    return make


def _text_encoder(name: str, family: str) -> Subject:
    """A 2-layer Hugging Face encoder (random weights) called with input_ids and attention_mask,
    padding in the first sequence."""
    import transformers

    torch.manual_seed(0)
    cfg = getattr(transformers, f"{family}Config")(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=4, intermediate_size=64,
                                                   max_position_embeddings=64)
    ids = torch.randint(0, 120, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 4:] = 0
    model = getattr(transformers, f"{family}Model")(cfg)
    return _captured(name, model, {"input_ids": ids, "attention_mask": mask})


def _bert_small() -> Subject:
    return _text_encoder("bert_small", "Bert")


def _resnet18_narrow() -> Subject:
    """ResNet-18's exact topology at 1/8 of its width: the fast suite's residual net."""
    from torchvision.models.resnet import BasicBlock, ResNet

    class Narrow(ResNet):
        def __init__(self) -> None:
            super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=10)

        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:  # the stem's width is fixed before the first stage is made
                self.inplanes = 8
                self.conv1 = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
                self.bn1 = torch.nn.BatchNorm2d(8)
            if planes == 512:
                self.fc = torch.nn.Linear(64, 10)
            return super()._make_layer(block, planes // 8, blocks, stride, dilate)

    torch.manual_seed(0)
    m = Narrow()
    m.fc = torch.nn.Linear(64, 10)  # ResNet.__init__ sets fc after the stages
    return _captured("resnet18_narrow", m, torch.randn(2, 3, 32, 32), prune="sparsity:0.7")


def _swin_small() -> Subject:
    """torchvision's Swin V2 code at a toy size (40 px, windows of 4 over 10 tokens a side):
    pad, roll, the shifted-window mask, cosine attention, computed linear biases."""
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    torch.manual_seed(0)
    m = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                        num_classes=10, block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    return _captured("swin_small", m, torch.randn(2, 3, 40, 40), raw=True)


def _roberta_small() -> Subject:
    """RoBERTa: position ids by cumsum over the non-padding tokens."""
    return _text_encoder("roberta_small", "Roberta")


def _lraspp() -> Subject:
    """A segmentation net: bilinear resizing back to the input's size."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                 num_classes=5)
    return _captured("lraspp", m, torch.randn(2, 3, 48, 48), raw=True)


# name -> factory. Factories are called lazily; a family the graph cannot capture yet
# raises UnsupportedOpError and is reported as skipped.
SUBJECTS: dict[str, Callable[[], Subject]] = {
    "lenet300": _lenet300,
    "lenet5": _lenet5,
    "resnet18_narrow": _resnet18_narrow,
    "resnet18": _torchvision("resnet18", prune="sparsity:0.7"),
    "mobilenet_v2": _torchvision("mobilenet_v2", raw=True),
    "efficientnet_b0": _torchvision("efficientnet_b0", raw=True),
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small", raw=True),
    "bert_small": _bert_small,
    "swin_small": _swin_small,
    "roberta_small": _roberta_small,
    "lraspp": _lraspp,
}
# Families the graph may not capture yet: any capture failure means "skipped", not a bug
# of the fuzzer's subject.
OPTIONAL = {"mobilenet_v2", "efficientnet_b0", "mobilenet_v3_small", "bert_small", "swin_small", "roberta_small", "lraspp"}
_CACHE: dict[str, Subject] = {}


def subject(name: str) -> Subject:
    if name not in _CACHE:
        try:
            _CACHE[name] = SUBJECTS[name]()
        except UnsupportedOpError:
            raise
        except Exception as e:
            if name not in OPTIONAL:
                raise
            raise UnsupportedOpError(f"capture failed: {type(e).__name__}: {e}") from None
    return _CACHE[name]


# ---- mutations -----------------------------------------------------------------------

INTERESTING = [
    0, 1, -1, 2, 3, -2, 7, 8, 64, 255, 256, 4096, 65537, 2 ** 31 - 1, 2 ** 31, -2 ** 31, 2 ** 32 + 1,
    2 ** 53 + 1, 2 ** 63, -2 ** 63, 10 ** 30, 0.5, -0.0, 1.5, 1e308, -1e308, 1e-300,
    None, True, False, "", "x", "linear", "conv2d", "relu", "flatten", "../x", "\u0000", "é" * 3,
    [], {}, [0], [1], [-1], [1, 2], [0, 0], [2 ** 31, 2 ** 31], [-1, -1], [None, None], [1, 2, 3],
    [[1]], ["x"], {"a": 1}, {"size_of": "x", "dim": 0},
]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _fmt(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _short(v, n: int = 80) -> str:
    s = json.dumps(v, ensure_ascii=False, allow_nan=True)
    return s if len(s) <= n else s[:n] + "..."


class Mutator:
    """Generic edits of a JSON tree, with knowledge only of which strings are names."""

    def __init__(self, rng: random.Random, tensor_names: list[str], donors: list[dict] = ()) -> None:
        self.rng = rng
        self.tensor_names = list(tensor_names)
        self.donors = [d for d in donors if isinstance(d.get("nodes"), list) and d["nodes"]]
        self.ops = [
            (self.replace, 6), (self.swap_type, 3), (self.nudge, 4), (self.delete, 3),
            (self.duplicate, 2), (self.reorder, 2), (self.truncate, 1), (self.rename, 4),
            (self.add_key, 1), (self.graft, 1), (self.copy_attrs, 1),
        ]

    def mutate(self, graph: dict, n: int | None = None) -> tuple[dict, list[str]]:
        g = copy.deepcopy(graph)
        n = n or self.rng.choice([1, 1, 1, 1, 2, 2, 3, 5])
        done = []
        for _ in range(n):
            for _attempt in range(8):
                fn = self.rng.choices([f for f, _ in self.ops], [w for _, w in self.ops])[0]
                what = fn(g)
                if what:
                    done.append(what)
                    break
        return g, done

    # Paths below the root; containers only when asked.
    def _pick(self, g, want=None):
        paths = [p for p in _paths(g) if p]
        if want is not None:
            paths = [p for p in paths if isinstance(_get(g, p), want)]
        return self.rng.choice(paths) if paths else None

    def _set(self, g, path, v):
        _get(g, path[:-1])[path[-1]] = v

    def _names(self, g) -> list[str]:
        out = []
        for p in _paths(g):
            if p and p[-1] == "name":
                v = _get(g, p)
                if isinstance(v, str):
                    out.append(v)
        return out

    def replace(self, g):
        p = self._pick(g)
        if p is None:
            return None
        v = copy.deepcopy(self.rng.choice(INTERESTING))
        self._set(g, p, v)
        return f"{_fmt(p)} = {_short(v)}"

    def swap_type(self, g):
        p = self._pick(g)
        if p is None:
            return None
        v = _get(g, p)
        if isinstance(v, bool):
            new = self.rng.choice([int(v), str(v).lower(), [v]])
        elif isinstance(v, int):
            new = self.rng.choice([str(v), float(v), [v], {"v": v}, v != 0])
        elif isinstance(v, float):
            new = self.rng.choice([str(v), int(v) if math.isfinite(v) else 0, [v]])
        elif isinstance(v, str):
            new = self.rng.choice([[v], {v: v}, len(v), v.encode().hex(), None])
        elif isinstance(v, list):
            new = self.rng.choice([{str(i): e for i, e in enumerate(v)}, json.dumps(v), len(v),
                                   v[0] if v else None, [v]])
        elif isinstance(v, dict):
            new = self.rng.choice([list(v.values()), list(v), json.dumps(v), len(v), [v]])
        else:
            new = self.rng.choice([0, "", [], {}])
        self._set(g, p, new)
        return f"{_fmt(p)}: {type(v).__name__} -> {_short(new)}"

    def nudge(self, g):
        p = self._pick(g, int)
        if p is None:
            return None
        v = _get(g, p)
        if isinstance(v, bool):
            new = not v
        else:
            new = self.rng.choice([v + 1, v - 1, -v, 2 * v, v // 2, 0, v + 1000, v * 1000, -v - 1, 1 - v])
        self._set(g, p, new)
        return f"{_fmt(p)}: {v} -> {new}"

    def delete(self, g):
        p = self._pick(g)
        if p is None:
            return None
        parent = _get(g, p[:-1])
        del parent[p[-1]]
        return f"del {_fmt(p)}"

    def duplicate(self, g):
        p = self._pick(g, list)
        if p is None:
            return None
        lst = _get(g, p)
        if not lst:
            return None
        i = self.rng.randrange(len(lst))
        j = self.rng.randrange(len(lst) + 1)
        lst.insert(j, copy.deepcopy(lst[i]))
        return f"{_fmt(p)}: copy of [{i}] inserted at [{j}]"

    def reorder(self, g):
        p = self._pick(g, list)
        if p is None:
            return None
        lst = _get(g, p)
        if len(lst) < 2:
            return None
        how = self.rng.randrange(3)
        if how == 0:
            i, j = self.rng.sample(range(len(lst)), 2)
            lst[i], lst[j] = lst[j], lst[i]
            return f"{_fmt(p)}: swapped [{i}] and [{j}]"
        if how == 1:
            lst.reverse()
            return f"{_fmt(p)}: reversed"
        self.rng.shuffle(lst)
        return f"{_fmt(p)}: shuffled"

    def truncate(self, g):
        p = self._pick(g, (list, dict))
        if p is None:
            return None
        c = _get(g, p)
        if not c:
            return None
        k = self.rng.randrange(len(c))
        if isinstance(c, list):
            del c[k:]
        else:
            for key in list(c)[k:]:
                del c[key]
        return f"{_fmt(p)}: cut to {k} entries"

    def rename(self, g):
        """Point a string (a name, a reference, an op) somewhere else."""
        p = self._pick(g, str)
        if p is None:
            return None
        names = self._names(g)
        old = _get(g, p)
        pool = ["missing_name", old + "_", old.upper() if old.upper() != old else old + "x"]
        pool += names + self.tensor_names + list(g.get("inputs", []) if isinstance(g.get("inputs"), list) else [])
        if old in names:  # a later node's name: a forward reference or a cycle
            later = names[names.index(old) + 1:]
            pool += later * 3
        new = self.rng.choice([x for x in pool if isinstance(x, str)] or ["missing_name"])
        self._set(g, p, new)
        return f"{_fmt(p)}: {_short(old)} -> {_short(new)}"

    def add_key(self, g):
        p = self._pick(g, dict) if self.rng.random() < 0.8 else ()
        if p is None:
            return None
        d = _get(g, p)
        key = self.rng.choice(["extra", "op", "inputs", "attrs", "name", "shape", "dim", "weight", "groups"])
        v = copy.deepcopy(self.rng.choice(INTERESTING))
        d[key] = v
        return f"{_fmt(p + (key,))} = {_short(v)} (added)"

    def graft(self, g):
        """A node from another model's graph (or this one's) replaces or joins this one's."""
        nodes = g.get("nodes")
        if not isinstance(nodes, list) or not self.donors:
            return None
        donor = self.rng.choice(self.donors)
        node = copy.deepcopy(self.rng.choice(donor["nodes"]))
        i = self.rng.randrange(len(nodes) + 1)
        if nodes and i < len(nodes) and self.rng.random() < 0.5:
            if isinstance(nodes[i], dict) and isinstance(node, dict) and "name" in nodes[i]:
                node["name"] = nodes[i]["name"]  # keep the wiring, change the op
            nodes[i] = node
            return f"nodes[{i}] replaced by donor node {_short(node, 160)}"
        nodes.insert(i, node)
        return f"donor node inserted at nodes[{i}]: {_short(node, 160)}"

    def copy_attrs(self, g):
        nodes = g.get("nodes")
        if not isinstance(nodes, list) or len(nodes) < 2:
            return None
        i, j = self.rng.sample(range(len(nodes)), 2)
        if not (isinstance(nodes[i], dict) and isinstance(nodes[j], dict)):
            return None
        key = self.rng.choice(["attrs", "inputs", "op"])
        if key not in nodes[i]:
            return None
        nodes[j][key] = copy.deepcopy(nodes[i][key])
        return f"nodes[{j}].{key} = copy of nodes[{i}].{key} ({_short(nodes[i][key])})"


# ---- format-independent edits (graph v1: attrs / inputs; v2: a / in) ------------------

def _node(g, op, k=0):
    return [n for n in g["nodes"] if n["op"] == op][k]


# Field names of graph format v1 (attrs / inputs / kernel_size) and v2 (a / in / k): the
# cases below hold for either, so they survive the format change.
def _attrs(n):
    return n["attrs"] if "attrs" in n else n.setdefault("a", {})


def _set_first(d, keys, v):
    d[next((k for k in keys if k in d), keys[0])] = v


def _ins(n, v):
    n["inputs" if "inputs" in n else "in"] = v


def _bad_view(g, v1, v2):
    """flatten dims (v1) or a reshape that does not multiply out (v2)."""
    ops = [n["op"] for n in g["nodes"]]
    if "flatten" in ops:
        _attrs(_node(g, "flatten")).update(v1)
    else:
        _attrs(_node(g, "reshape"))["shape"] = v2


# ---- running a mutant ------------------------------------------------------------------

@dataclass
class Finding:
    signature: str
    exc: str
    last_frame: str
    deepcomp_frame: str
    mutations: list
    excerpt: str
    model: str
    count: int = 1


@dataclass
class Stats:
    tried: int = 0
    refused: int = 0
    ran: int = 0
    untyped: int = 0
    findings: dict = field(default_factory=dict)
    slowest_s: float = 0.0

    def row(self) -> dict:
        return {"tried": self.tried, "refused": self.refused, "ran": self.ran, "untyped": self.untyped,
                "distinct": len(self.findings)}


def _frames(tb) -> tuple[str, str]:
    frames = traceback.extract_tb(tb)
    if not frames:
        return "?", "?"
    last = frames[-1]
    dc = [f for f in frames if "deepcomp" in f.filename.replace("\\", "/").split("/tests/")[0]
          and "/tests/" not in f.filename]
    d = dc[-1] if dc else last

    def fmt(f):
        return f"{Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()[:100]}"
    return fmt(last), fmt(d)


def _excerpt(g, mutations: list[str]) -> str:
    """The node(s) a mutation touched, as JSON, or the top-level keys."""
    out = []
    nodes = g.get("nodes") if isinstance(g, dict) else None
    for m in mutations:
        if m.startswith("nodes[") and isinstance(nodes, list):
            try:
                i = int(m[6:m.index("]")])
                if 0 <= i < len(nodes):
                    out.append(_short(nodes[i], 400))
            except ValueError:
                pass
    if not out and isinstance(g, dict):
        out.append(_short({k: v for k, v in g.items() if k != "nodes"}, 400))
    return "\n".join(dict.fromkeys(out))


def write_mutant(sub: Subject, graph, path: str) -> None:
    """The subject's tensors and `graph` as a .dcz file (the codec's own writer steps)."""
    from deepcomp.codec.writer import _json_bytes, assemble
    from deepcomp.codec import layout as L

    if not isinstance(graph, dict):
        raise DeepcompError(f"graph must be a dict, not {type(graph).__name__}")
    data = _json_bytes(graph, "graph", L.MAX_GRAPH_BYTES)
    image, _ = assemble(sub.encoded(), [("graph", data)])
    with open(path, "wb") as f:
        f.write(image)


def try_graph(sub: Subject, graph, path: str) -> tuple[str, BaseException | None]:
    """'refused', 'ran' or 'untyped' (with the exception)."""
    try:
        write_mutant(sub, graph, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = deepcomp.load(path)
            with torch.no_grad():
                if isinstance(sub.example, dict):
                    m(**{k: v.clone() for k, v in sub.example.items()})
                else:
                    m(sub.example.clone())
    except DeepcompError:
        return "refused", None
    except Exception as e:  # noqa: BLE001 - any other exception is what we hunt
        return "untyped", e
    return "ran", None


@contextlib.contextmanager
def memory_cap(extra_gib: float = 6.0):
    """Cap the address space so that a mutant asking for a huge tensor fails, not the machine."""
    try:
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm + int(extra_gib * 2 ** 30)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def campaign(sub: Subject, seconds: float, seed: int, donors: list[dict] = (), max_tries: int | None = None,
             workdir: str | None = None) -> Stats:
    rng = random.Random(f"{seed}:{sub.name}")
    mut = Mutator(rng, list(sub.state), donors)
    stats = Stats()
    with tempfile.TemporaryDirectory(dir=workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)) as td:
        path = os.path.join(td, "mutant.dcz")
        outcome, e = try_graph(sub, sub.graph, path)
        if outcome != "ran":
            raise AssertionError(f"{sub.name}: the unmutated graph does not run: {e!r}")
        deadline = time.monotonic() + seconds
        with memory_cap():
            while time.monotonic() < deadline and (max_tries is None or stats.tried < max_tries):
                g, what = mut.mutate(sub.graph)
                t0 = time.monotonic()
                outcome, e = try_graph(sub, g, path)
                stats.slowest_s = max(stats.slowest_s, time.monotonic() - t0)
                stats.tried += 1
                setattr(stats, outcome, getattr(stats, outcome) + 1)
                if e is not None:
                    last, dcf = _frames(e.__traceback__)
                    sig = f"{type(e).__name__} at {dcf.split(':')[0]}:{dcf.split(':')[1]}"
                    if sig in stats.findings:
                        stats.findings[sig].count += 1
                    else:
                        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                        stats.findings[sig] = Finding(sig, msg, last, dcf, what, _excerpt(g, what), sub.name)
                    e = None  # drop the traceback's frames (and their tensors)
    return stats


def format_findings(findings: list[Finding], where: str) -> str:
    out = []
    for f in findings:
        out.append(f"### {f.model}: {f.signature} (x{f.count})\n"
                   f"- checkout: {where}\n- exception: `{f.exc}`\n- last frame: `{f.last_frame}`\n"
                   f"- last deepcomp frame: `{f.deepcomp_frame}`\n"
                   f"- mutations: {'; '.join(f'`{m}`' for m in f.mutations)}\n"
                   f"- mutant excerpt:\n\n```json\n{f.excerpt}\n```\n")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120, help="budget per model (default 120)")
    ap.add_argument("--models", default="lenet300,lenet5,resnet18,mobilenet_v2,bert_small",
                    help=f"comma-separated, from: {', '.join(SUBJECTS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--findings", metavar="PATH", help="append distinct untyped exceptions (markdown)")
    ap.add_argument("--real-encodings", action="store_true",
                    help="encode the big models' tensors as deepcomp would (slow to prepare)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(1)
    print(f"deepcomp from {Path(deepcomp.__file__).parent}", flush=True)
    names = [m for m in args.models.split(",") if m]
    subs = []
    for n in names:
        if n not in SUBJECTS:
            ap.error(f"unknown model {n!r}")
        try:
            s = subject(n)
        except UnsupportedOpError as e:
            print(f"{n}: skipped, not capturable here ({str(e)[:120]})", flush=True)
            continue
        if args.real_encodings:
            s.raw = False
        subs.append(s)
    donors = [s.graph for s in subs]
    print(f"{'model':<20}{'seconds':>8}{'tried':>8}{'refused':>9}{'ran':>7}{'untyped':>9}{'distinct':>9}"
          f"{'slowest':>9}", flush=True)
    allf = []
    for s in subs:
        t0 = time.monotonic()
        st = campaign(s, args.seconds, args.seed, donors)
        r = st.row()
        print(f"{s.name:<20}{time.monotonic() - t0:>8.0f}{r['tried']:>8}{r['refused']:>9}{r['ran']:>7}"
              f"{r['untyped']:>9}{r['distinct']:>9}{st.slowest_s:>8.2f}s", flush=True)
        allf += list(st.findings.values())
    for f in allf:
        print(f"  untyped: {f.model}: {f.signature} x{f.count}: {f.exc[:160]}\n    after {f.mutations}")
    if args.findings and allf:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        where = f"{Path.cwd()} (deepcomp from {Path(deepcomp.__file__).parent})"
        with open(args.findings, "a") as fh:
            fh.write(f"\n## Graph fuzz run {stamp}, seed {args.seed}, {args.seconds:.0f} s per model\n\n")
            fh.write(format_findings(allf, where))
    return 1 if allf else 0


if __name__ == "__main__":
    sys.exit(main())
