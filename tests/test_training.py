"""The public training API: masks held through any optimizer, schedules, plans, sharing."""
import io
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import deepcomp
from deepcomp.errors import DeepcompError
from deepcomp.training import Pruning, Sharing, plain_state_dict


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 24), nn.ReLU(), nn.Linear(24, 4))


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 2, 6, 6, generator=g), torch.randint(0, 4, (16,), generator=g))
            for _ in range(n)]


def _train(model, opt, n, seed=1):
    for x, y in _batches(n, seed):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam-l2": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_masks_hold_through_any_optimizer_made_before(opt_name):
    model = _net()
    opt = OPTIMIZERS[opt_name](model.parameters())  # made before pruning, never passed in
    _train(model, opt, 5)  # momentum / moments warmed with dense gradients
    pruning = deepcomp.prune_weights(model, keep=0.3, steps=2)
    for r in range(pruning.steps):
        pruning.step()
        before = {n: p.detach().clone() for n, p in pruning.params.items()}
        _train(model, opt, 10, seed=10 + r)
        for n, p in pruning.params.items():
            dropped = ~pruning.masks[n]
            assert (p[dropped] == 0).all(), n
            assert not torch.signbit(p[dropped]).any(), n
            assert (p.grad[dropped] == 0).all(), n
            assert not torch.equal(p[~dropped], before[n][~dropped]), n  # kept ones train
    assert pruning.density() == pytest.approx(0.3, abs=0.01)
    # Without the hooks the optimizer's state moves the pruned weights again.
    pruning.remove()
    _train(model, opt, 3, seed=99)
    assert any((p[~pruning.masks[n]] != 0).any() for n, p in pruning.params.items())


def test_schedule_is_geometric_and_monotone():
    model = _net()
    pruning = deepcomp.prune_weights(model, keep={"3": 0.1, "5": 0.5}, steps=3)
    seen = []
    while not pruning.done:
        r = pruning.step()
        m = {n: v.clone() for n, v in pruning.masks.items()}
        assert set(m) == {"3.weight", "5.weight"}  # the conv layer was not named: dense
        d3 = m["3.weight"].float().mean().item()
        assert d3 == pytest.approx(0.1 ** (r / 3), abs=2 / m["3.weight"].numel())
        for prev in seen:
            for n in m:
                assert not (m[n] & ~prev[n]).any()  # nothing pruned comes back
        with torch.no_grad():  # make the pruned weights huge: they still stay out
            for n, p in pruning.params.items():
                if n in m:
                    p[~m[n]] = 100.0
        seen.append(m)
    with pytest.raises(DeepcompError, match="rounds are done"):
        pruning.step()
    pruning.remove()


def test_std_global_and_sparsity_specs():
    model = _net()
    p = deepcomp.prune_weights(model, keep="std:1.0", steps=2)
    assert p.round_spec(1).value == pytest.approx(0.5)
    p.step()
    d1 = p.density()
    p.step()
    assert p.density() < d1 and 0.2 < p.density() < 0.5
    p.remove()
    model = _net()
    g = deepcomp.prune_weights(model, keep="global:0.8", steps=2, start=True)
    assert g.round == 1
    g.step()
    total = sum(m.numel() for m in g.masks.values())
    kept = sum(int(m.sum()) for m in g.masks.values())
    assert kept / total == pytest.approx(0.2, abs=0.01)
    assert len({round(float(m.float().mean()), 3) for m in g.masks.values()}) > 1  # one cut, not per layer
    g.remove()
    s = deepcomp.prune_weights(_net(), keep="sparsity:0.75,5=0.5", start=True)
    assert s.masks["5.weight"].float().mean().item() == pytest.approx(0.5)
    assert s.masks["3.weight"].float().mean().item() == pytest.approx(0.25, abs=0.01)
    s.remove()


def test_plan_drives_prune_and_share():
    model = _net()
    plan = {"0": {"keep": 0.5, "bits": 3}, "3": {"keep": 0.2, "bits": 2}, "5.weight": {"keep": 0.5}}
    with deepcomp.prune_weights(model, plan=plan, start=True) as pruning:
        dens = {n: m.float().mean().item() for n, m in pruning.masks.items()}
    assert dens == pytest.approx({"0.weight": 0.5, "3.weight": 0.2, "5.weight": 0.5}, abs=0.01)
    sharing = deepcomp.share_weights(model, bits={"fc": 4}, plan=plan)
    sharing.finalize()
    uniq = {n: torch.unique(p[p != 0]).numel() for n, p in model.named_parameters() if n.endswith("weight")}
    assert uniq["0.weight"] <= 8 and uniq["3.weight"] <= 4 and 4 < uniq["5.weight"] <= 16


@pytest.mark.parametrize("bad,msg", [
    (dict(keep={"fc9": 0.1}), "fc9"),
    (dict(keep=1.5), r"\(0, 1\]"),
    (dict(keep=0.5, steps=0), "steps"),
    (dict(), "say how much"),
    (dict(plan={"3": 0.5}), "plan entry"),
    (dict(keep="std:x"), "prune spec"),
])
def test_prune_user_mistakes_are_typed(bad, msg):
    with pytest.raises(DeepcompError, match=msg):
        deepcomp.prune_weights(_net(), **bad)


def test_sharing_trains_centroids_and_keeps_zeros():
    model = _net()
    pruning = deepcomp.prune_weights(model, keep=0.4, start=True)
    pruning.remove()
    zeros = {n: (p == 0).clone() for n, p in pruning.params.items()}
    sharing = deepcomp.share_weights(model, bits={"fc": 3, "conv": 4})
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.endswith("original") for n in names)
    assert len(list(sharing.parameters())) == len(names)
    before = {n: c.detach().clone() for n, c in sharing.codebooks.items()}
    opt = torch.optim.AdamW(sharing.parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, opt, 10)
    assert all(not torch.equal(before[n], c) for n, c in sharing.codebooks.items())
    sharing.finalize()
    w = dict(model.named_parameters())
    for n, z in zeros.items():
        assert torch.equal(w[n] == 0, z), n
    assert torch.unique(w["3.weight"][w["3.weight"] != 0]).numel() <= 8
    assert torch.unique(w["0.weight"][w["0.weight"] != 0]).numel() <= 16


def test_state_dicts_roundtrip_weights_only():
    model = _net()
    pruning = deepcomp.prune_weights(model, keep=0.3, steps=2, start=True)
    pruning.remove()
    sharing = deepcomp.share_weights(model, bits={"fc": 3, "conv": 3})
    _train(model, torch.optim.Adam(sharing.parameters(), lr=1e-2), 3)
    buf = io.BytesIO()
    torch.save({"pruning": pruning.state_dict(), "sharing": sharing.state_dict(),
                "model": plain_state_dict(model)}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = _net()
    other.load_state_dict(state["model"])
    p2 = Pruning(other, keep=0.3, steps=2)
    p2.load_state_dict(state["pruning"])
    p2.remove()
    assert p2.round == 1 and all(torch.equal(p2.masks[n], pruning.masks[n]) for n in pruning.masks)
    s2 = Sharing.from_state_dict(other, state["sharing"])
    x = torch.randn(5, 2, 6, 6)
    assert torch.equal(model(x), other(x))
    for n in sharing.codebooks:
        assert torch.equal(s2.codebooks[n], sharing.codebooks[n])
    assert set(plain_state_dict(other)) == set(_net().state_dict())


def test_wrapped_in_ddp_style_module_is_unwrapped():
    model = _net()
    wrapped = nn.DataParallel(model)  # stands in for DDP: same .module unwrapping
    p = deepcomp.prune_weights(wrapped, keep=0.5, start=True)
    p.remove()
    assert set(p.masks) == {"0.weight", "3.weight", "5.weight"}


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"<!-- readme-example: training -->\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    back = deepcomp.decode(tmp_path / "mine.dcz")
    assert (back["4.weight"] != 0).float().mean().item() == pytest.approx(0.1, abs=0.002)
    assert torch.unique(back["4.weight"]).numel() <= 33  # 32 centroids and 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_and_codebooks_stay_on_device():
    model = _net().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruning = deepcomp.prune_weights(model, keep=0.3, start=True)
    assert all(m.is_cuda for m in pruning.masks.values())
    for x, y in _batches(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x.cuda()), y.cuda()).backward()
        opt.step()
    for n, p in pruning.params.items():
        assert (p[~pruning.masks[n]] == 0).all()
    pruning.remove()
    sharing = deepcomp.share_weights(model, bits={"fc": 3, "conv": 3})
    assert all(c.is_cuda for c in sharing.codebooks.values())
    sharing.finalize()
    assert all(p.is_cuda for p in model.parameters())
