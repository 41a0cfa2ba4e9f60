"""The deployable zoo runs from the .dcz alone: capture, save, load in a fresh process, compare.

Weights are rounded to 64 levels per tensor first and BatchNorm keeps its default
statistics, so every stored tensor is exact (a codebook of at most 256 values holds it
losslessly, and folding a default BatchNorm scales a weight by one constant): the
compressed model must then match PyTorch on the same weights to 1e-4 of the output scale.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision

import deepcomp

_CHILD = textwrap.dedent("""
    import sys, torch, deepcomp
    path, ins, outs = sys.argv[1:4]
    m = deepcomp.load(path, policy="exact")  # the default may take int8 (within its stated error)
    res = []
    with torch.no_grad():
        for args, kwargs in torch.load(ins, weights_only=True):
            y = m(*args, **kwargs)
            res.append(y if isinstance(y, (dict, tuple)) else (y,))
    torch.save(res, outs)
""")


def _round_weights(model: torch.nn.Module, levels: int = 64) -> torch.nn.Module:
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
    if isinstance(y, dict):
        return [v for v in y.values() if isinstance(v, torch.Tensor)]
    return [v for v in y if isinstance(v, torch.Tensor)]


def _check(model, example, calls, tmp_path):
    path = tmp_path / "m.dcz"
    deepcomp.save(model, path, example_inputs=example, graph=True)
    ins, outs = tmp_path / "ins.pt", tmp_path / "outs.pt"
    torch.save(calls, ins)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(ins), str(outs)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = torch.load(outs, weights_only=True)
    for (args, kwargs), y in zip(calls, got):
        with torch.no_grad():
            ref = model(*args, **kwargs)
        if isinstance(ref, dict):
            assert list(y) == [k for k, v in ref.items() if v is not None]
        for r_, o in zip(_flat(ref), _flat(y)):
            assert r_.shape == o.shape
            err = (r_ - o).abs().max().item()
            assert err <= 1e-4 * r_.abs().max().item(), (err, r_.abs().max().item())
    return path


def _vision(name, hw, tmp_path):
    torch.manual_seed(0)
    model = _round_weights(getattr(torchvision.models, name)(num_classes=10))
    calls = [((torch.randn(b, 3, hw, hw),), {}) for b in (1, 3)]
    path = _check(model, torch.randn(2, 3, hw, hw), calls, tmp_path)
    return deepcomp.codec.open_dcz(path).graph


def test_mobilenet_v3_small_depthwise(tmp_path):
    g = _vision("mobilenet_v3_small", 64, tmp_path)
    convs = [n for n in g["nodes"] if n["op"] == "conv2d"]
    assert any(n["a"]["groups"] > 1 for n in convs)  # depthwise convs run compressed
    assert {"hardswish", "hardsigmoid"} <= {n["op"] for n in g["nodes"]}


@pytest.mark.slow
@pytest.mark.parametrize("name, hw", [("resnet18", 64), ("resnet50", 64), ("mobilenet_v2", 64),
                                      ("efficientnet_b0", 64), ("regnet_y_400mf", 64),
                                      ("convnext_tiny", 64), ("vit_b_16", 224), ("swin_t", 224),
                                      ("swin_v2_t", 256)])
def test_torchvision_models(name, hw, tmp_path):
    _vision(name, hw, tmp_path)


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_small_swin_transformer(v2, tmp_path):
    # torchvision's Swin code at a toy size; 40 px / patch 4 = 10 tokens a side, padded
    # to windows of 4: pad, roll, the shifted-window mask, and V2's cosine attention
    from torchvision.models.swin_transformer import (PatchMergingV2, SwinTransformer,
                                                     SwinTransformerBlockV2)

    torch.manual_seed(0)
    kw = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    model = _round_weights(SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                           window_size=[4, 4], num_classes=10, **kw))
    calls = [((torch.randn(b, 3, 40, 40),), {}) for b in (1, 3)]
    path = _check(model, torch.randn(2, 3, 40, 40), calls, tmp_path)
    ops = {n["op"] for n in deepcomp.codec.open_dcz(path).graph["nodes"]}
    assert {"pad", "index_select", "slice_scatter", "softmax"} <= ops


def _bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    return _round_weights(BertModel(cfg))


def _tokens(b, t):
    ids = torch.randint(0, 120, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t // 2:] = 0  # padding in the first sequence
    return ids, mask


def test_small_bert_encoder(tmp_path):
    pytest.importorskip("transformers")
    model = _bert()
    ids, mask = _tokens(2, 8)
    calls = []
    for b, t in ((1, 5), (3, 12)):
        i, m = _tokens(b, t)
        calls.append(((), {"input_ids": i, "attention_mask": m}))
    calls.append(((i, m), {}))  # positionally, in forward()'s order
    path = _check(model, {"input_ids": ids, "attention_mask": mask}, calls, tmp_path)
    g = deepcomp.codec.open_dcz(path).graph
    assert [i["name"] for i in g["inputs"]] == ["input_ids", "attention_mask"]
    assert g["out"] == ["last_hidden_state", "pooler_output"]
    assert {"embedding", "layer_norm", "sdpa", "gelu"} <= {n["op"] for n in g["nodes"]}


def _hf(kind: str):
    import transformers as T

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 vocab_size=120)
    torch.manual_seed(0)
    if kind == "roberta":  # also XLM-R's and (with cumsum too) MPNet's position ids
        return T.RobertaModel(T.RobertaConfig(max_position_embeddings=64, **small))
    if kind == "llama":  # rotary cos/sin, grouped-query attention, no key/value cache
        return T.LlamaModel(T.LlamaConfig(use_cache=False, num_key_value_heads=2, **small))
    if kind == "t5":  # log-spaced relative position buckets
        return T.T5EncoderModel(T.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                           vocab_size=120))
    if kind == "gpt2":  # Conv1D layers (addmm on a [in, out] weight), no key/value cache
        return T.GPT2Model(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=120, use_cache=False))
    if kind == "deberta_v2":  # relative attention with bitwise_not masks
        return T.DebertaV2Model(T.DebertaV2Config(**small))
    raise AssertionError(kind)


def _text(kind, tmp_path):
    model = _round_weights(_hf(kind))
    calls = [((), dict(zip(("input_ids", "attention_mask"), _tokens(b, t)))) for b, t in ((1, 5), (3, 12))]
    ids, mask = _tokens(2, 8)
    path = _check(model, {"input_ids": ids, "attention_mask": mask}, calls, tmp_path)
    return {n["op"] for n in deepcomp.codec.open_dcz(path).graph["nodes"]}


@pytest.mark.parametrize("kind, ops", [("roberta", {"cumsum"}), ("llama", {"cos", "sin"}), ("gpt2", {"matmul"})])
def test_small_text_models(kind, ops, tmp_path):
    pytest.importorskip("transformers")
    assert ops <= _text(kind, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind, ops", [("t5", {"log"}), ("deberta_v2", {"bitwise_not"})])
def test_more_text_models(kind, ops, tmp_path):
    pytest.importorskip("transformers")
    assert ops <= _text(kind, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"])
def test_segmentation_models(name, tmp_path):
    torch.manual_seed(0)
    model = _round_weights(torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5))
    calls = [((torch.randn(b, 3, 96, 96),), {}) for b in (1, 3)]
    path = _check(model, torch.randn(2, 3, 96, 96), calls, tmp_path)
    assert "interpolate" in {n["op"] for n in deepcomp.codec.open_dcz(path).graph["nodes"]}
