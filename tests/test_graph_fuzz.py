"""Structure-aware fuzzing of the stored graph: every mutant is refused typed or runs.

Mutants of real models' graphs (tests/graph_mutator.py) are written with valid CRCs,
loaded with deepcomp.load and run once; any exception that is not a DeepcompError fails
the test, with the mutations and the exception's last frame in the message. The seeded
loop is bounded by DEEPCOMP_GRAPH_FUZZ_SECONDS per model in the fast suite (default 1.5);
the slow suite runs longer, and an atheris run is added when atheris is installed.
The measurement of issue 12 is the script: `python tests/graph_mutator.py --seconds 120`.
"""
import copy
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import graph_mutator as gm
from fuzz_limits import rss_limit_mb
from graph_mutator import _attrs, _bad_view, _ins, _node, _set_first
from deepcomp.errors import UnsupportedOpError

FAST_BUDGET_S = float(os.environ.get("DEEPCOMP_GRAPH_FUZZ_SECONDS", "1.5"))
FAST_MODELS = ["lenet300", "lenet5", "resnet18_narrow"]
# Where the graph captures them (skipped otherwise): transformers and a depthwise net.
FAST_OPTIONAL = ["bert_small", "mobilenet_v3_small", "swin_small"]
SLOW_MODELS = ["lenet300", "lenet5", "resnet18", "mobilenet_v2", "efficientnet_b0", "mobilenet_v3_small",
               "bert_small", "swin_small", "roberta_small", "lraspp"]


def _subject(name):
    try:
        return gm.subject(name)
    except UnsupportedOpError as e:
        pytest.skip(f"{name} is not capturable by this graph yet: {str(e)[:100]}")


def _donors():
    return [gm.subject(n).graph for n in FAST_MODELS]


def _check(stats: gm.Stats, name: str) -> None:
    print(name, stats.row())
    assert stats.untyped == 0, (f"{stats.untyped} untyped exceptions on {name}:\n"
                                + gm.format_findings(list(stats.findings.values()), "this checkout"))


@pytest.mark.parametrize("name", FAST_MODELS + FAST_OPTIONAL)
def test_graph_fuzz_fast(name):
    sub = _subject(name)
    stats = gm.campaign(sub, FAST_BUDGET_S, seed=1234, donors=_donors())
    _check(stats, name)
    assert stats.tried >= 5
    assert stats.refused > 0


def test_mutator_is_deterministic_and_leaves_the_original_alone():
    sub = gm.subject("lenet5")
    before = json.dumps(sub.graph, sort_keys=True)
    runs = []
    for _ in range(2):
        m = gm.Mutator(random.Random(7), list(sub.state), _donors())
        runs.append([json.dumps(m.mutate(sub.graph), sort_keys=True) for _ in range(200)])
    assert runs[0] == runs[1]
    assert json.dumps(sub.graph, sort_keys=True) == before
    # The edits are varied: most mutants differ from each other.
    assert len(set(runs[0])) > 150


def _edit(graph, fn):
    g = copy.deepcopy(graph)
    fn(g)
    return g


# The untyped failures issue 12 lists, plus a few of the same families, as fixed mutants.
KNOWN = {
    "nodes is a bool": lambda g: g.__setitem__("nodes", True),
    "flatten start_dim past the rank / reshape off by one": lambda g: _bad_view(g, {"start_dim": 7}, [1, 801]),
    "flatten start after end / two -1 in reshape": lambda g: _bad_view(g, {"start_dim": 1, "end_dim": 0}, [-1, -1]),
    "a list where a name is expected": lambda g: _ins(g["nodes"][1], [["conv2d"]]),
    "an object as op": lambda g: g["nodes"][1].__setitem__("op", {"a": 1}),
    "huge padding": lambda g: _attrs(_node(g, "conv2d"))["padding"].__setitem__(0, 2 ** 32 + 1),
    "stride larger than the input": lambda g: _attrs(_node(g, "conv2d")).__setitem__("stride", [1000, 1]),
    "negative stride": lambda g: _attrs(_node(g, "conv2d")).__setitem__("stride", [-1, 1]),
    "zero groups": lambda g: _attrs(_node(g, "conv2d")).__setitem__("groups", 0),
    "pool kernel larger than the input": lambda g: _set_first(_attrs(_node(g, "max_pool2d", 1)),
                                                              ["kernel_size", "k"], [64, 64]),
    "linear weight of the wrong shape": lambda g: _set_first(_attrs(_node(g, "linear")), ["weight", "w"],
                                                             "conv1.weight"),
    "weight names a missing tensor": lambda g: _set_first(_attrs(_node(g, "linear")), ["weight", "w"], "nope"),
    "forward reference": lambda g: _ins(g["nodes"][0], [g["nodes"][3]["name"]]),
    "self reference": lambda g: _ins(g["nodes"][2], [g["nodes"][2]["name"]]),
    "outputs names a missing node": lambda g: g.__setitem__("outputs", ["nope"]),
    "inputs is an int": lambda g: g.__setitem__("inputs", 3),
    "duplicate node names": lambda g: g["nodes"][2].__setitem__("name", g["nodes"][1]["name"]),
}


@pytest.mark.parametrize("what", list(KNOWN))
def test_known_bad_graphs_are_refused_typed(what, tmp_path):
    sub = gm.subject("lenet5")
    g = _edit(sub.graph, KNOWN[what])
    outcome, e = gm.try_graph(sub, g, str(tmp_path / "m.dcz"))
    # Each of these breaks a rule the validator checks: refused before anything runs.
    assert outcome == "refused", f"{what}: {outcome} {type(e).__name__ if e else ''}: {e}"


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_MODELS)
@pytest.mark.parametrize("seed", [1, 2])
def test_graph_fuzz_long(name, seed):
    sub = _subject(name)
    stats = gm.campaign(sub, 30, seed=seed, donors=_donors())
    _check(stats, name)
    assert stats.ran > 0


ATHERIS_HARNESS = textwrap.dedent("""
    import json, os, random, sys
    sys.path.insert(0, {tests!r})
    sys.path.insert(0, {root!r})
    import atheris
    import torch
    with atheris.instrument_imports(include=["deepcomp"]):
        import deepcomp.graph, deepcomp.runtime.loader, deepcomp.runtime.executor
    import graph_mutator as gm

    torch.set_num_threads(1)
    # Captured by the test process: capture under instrumentation would take a minute.
    saved = torch.load(os.path.join({work!r}, "subject.pt"), weights_only=True)
    SUB = gm.Subject("lenet5", saved["graph"], saved["state"], saved["example"])
    MUT = gm.Mutator(random.Random(0), list(SUB.state), saved["donors"])
    PATH = os.path.join({work!r}, "mutant.dcz")

    def one(data):
        try:
            g = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        outcome, e = gm.try_graph(SUB, g, PATH)
        if e is not None:
            raise e

    def mutator(data, max_size, seed):
        # Half the time a structural edit of the parsed graph, else libFuzzer's byte edits.
        try:
            g = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            g = None
        if isinstance(g, dict) and seed % 2 == 0:
            MUT.rng.seed(seed)
            out = json.dumps(MUT.mutate(g)[0]).encode()
            if len(out) <= max_size:
                return out
        return atheris.Mutate(data, max_size)

    atheris.Setup(sys.argv, one, custom_mutator=mutator)
    with gm.memory_cap():
        atheris.Fuzz()
""")


def test_atheris_guided_graph_fuzz(tmp_path):
    pytest.importorskip("atheris")
    tests = Path(__file__).resolve().parent
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in ("lenet5", "lenet300"):
        (corpus / f"{n}.json").write_text(json.dumps(gm.subject(n).graph))
    import torch
    sub = gm.subject("lenet5")
    torch.save({"graph": sub.graph, "state": sub.state, "example": sub.example,
                "donors": [gm.subject(n).graph for n in FAST_MODELS]}, tmp_path / "subject.pt")
    script = tmp_path / "fuzz_graph.py"
    # The deepcomp this test imported (another checkout's, when run from there).
    import deepcomp
    root = Path(deepcomp.__file__).resolve().parent.parent
    script.write_text(ATHERIS_HARNESS.format(tests=str(tests), root=str(root), work=str(tmp_path)))
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_WAIT_POLICY="PASSIVE")
    budget = max(2, int(2 * FAST_BUDGET_S))
    out = subprocess.run([sys.executable, str(script), f"-max_total_time={budget}", "-max_len=65536",
                          f"-rss_limit_mb={rss_limit_mb(8192)}", str(corpus)],
                         capture_output=True, text=True, env=env, timeout=budget + 180, cwd=tmp_path)
    text = out.stdout + out.stderr
    at = text.find("Uncaught Python exception")
    tail = text[at:at + 4000] if at >= 0 else text[-3000:]
    assert out.returncode == 0, tail
    assert "Done" in tail or "done" in tail, tail
