"""Pruning: thresholds against hand-computed values, masks that hold through training."""
import math

import pytest
import torch
from torch import nn

from deepcomp.errors import DeepcompError
from deepcomp.prune import (MaskSet, compute_masks, geometric_schedule, global_threshold,
                            layer_report, mask_sparsity, mask_std, prune_state_dict,
                            std_threshold)


def test_std_threshold_by_hand():
    w = torch.tensor([[1.0, -1.0], [3.0, -3.0]])
    # population std: mean 0, sqrt((1 + 1 + 9 + 9) / 4) = sqrt(5)
    assert std_threshold(w, 0.5) == pytest.approx(0.5 * math.sqrt(5))
    assert mask_std(w, 0.5).tolist() == [[False, False], [True, True]]
    assert mask_std(w, 0.0).all()
    w2 = torch.tensor([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])  # the textbook std of 2
    assert std_threshold(w2, 1.5) == pytest.approx(3.0)
    assert mask_std(w2, 1.5).tolist() == [False, True, True, True, True, True, True, True]


def test_mask_sparsity_by_hand():
    w = torch.tensor([0.1, -0.5, 0.3, -0.2])
    assert mask_sparsity(w, 0.5).tolist() == [False, True, True, False]
    assert mask_sparsity(w, 0.75).tolist() == [False, True, False, False]
    assert mask_sparsity(w, 0.0).all() and not mask_sparsity(w, 1.0).any()
    # Ties are broken by position, so the count is exact.
    assert mask_sparsity(torch.ones(4), 0.5).tolist() == [True, True, False, False]


def test_global_threshold_spans_layers():
    a = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([[10.0, 0.5], [4.0, 5.0]])
    # keep round(0.6 * 7) = 4, so drop the 3 smallest (0.5, 1, 2): the cut is at 2
    t = global_threshold([a, b], 0.4)
    assert t == 2.0
    masks = compute_masks({"a.weight": a.reshape(1, 3), "b.weight": b}, "global:0.4")
    assert masks["a.weight"].tolist() == [[False, False, True]]
    assert masks["b.weight"].tolist() == [[True, False], [True, True]]


def test_prune_state_dict_weights_only():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(20, 10), nn.BatchNorm1d(10), nn.Conv2d(3, 4, 3))
    sd = m.state_dict()
    new, rep = prune_state_dict(sd, "sparsity:0.75")
    assert new["0.bias"] is sd["0.bias"] and new["1.weight"] is sd["1.weight"]
    assert int((new["0.weight"] != 0).sum()) == 50
    assert int((new["2.weight"] != 0).sum()) == 27  # round(0.25 * 108)
    assert [l.name for l in rep.layers] == ["0.weight", "2.weight"]
    assert rep.kept == 77 and rep.numel == 308
    # Kept weights are untouched and pruned ones are +0.0.
    kept = new["0.weight"] != 0
    assert torch.equal(new["0.weight"][kept], sd["0.weight"][kept])
    assert not torch.signbit(new["0.weight"][~kept]).any()


def test_spec_overrides_and_errors():
    sd = {"fc1.weight": torch.randn(10, 10), "fc2.weight": torch.randn(10, 10)}
    new, rep = prune_state_dict(sd, "sparsity:0.9,fc2=0.5")
    assert [l.kept for l in rep.layers] == [10, 50]
    for bad in ["0.5", "foo:1", "sparsity:", "sparsity:1.5", "std:-1", "sparsity:0.5,fc1"]:
        with pytest.raises(DeepcompError):
            prune_state_dict(sd, bad)


def test_dead_unit_report_by_hand():
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0]])
    r = layer_report("fc.weight", w)
    assert (r.kept, r.dead_out, r.dead_in) == (2, 1, 1)
    conv = torch.zeros(3, 2, 2, 2)
    conv[1, 0, 1, 1] = 1.0
    r = layer_report("conv.weight", conv)
    assert (r.kept, r.dead_out, r.dead_in) == (1, 2, 1)


def test_geometric_schedule_hits_target():
    steps = geometric_schedule({"fc1": 0.08, "fc3": 0.26}, 3)
    assert len(steps) == 3 and steps[-1]["fc1"] == pytest.approx(0.08)
    assert steps[0]["fc1"] == pytest.approx(0.08 ** (1 / 3))
    assert steps[0]["fc1"] > steps[1]["fc1"] > steps[2]["fc1"]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _steps(model, opt, n, masks=None):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(32, 8, generator=g)
        y = torch.randint(0, 4, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adam-l2": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_masks_survive_optimizer(opt_name):
    model = _net()
    opt = OPTIMIZERS[opt_name](model.parameters())
    _steps(model, opt, 5)  # warm the momentum / Adam moments with dense gradients
    masks = MaskSet.from_spec(model, "sparsity:0.7")
    pruned = {n: ~m for n, m in masks.masks.items()}
    with masks.attach(opt):
        _steps(model, opt, 20)
        for n, p in masks.params.items():
            assert (p[pruned[n]] == 0).all(), n
            assert (p.grad[pruned[n]] == 0).all(), n
            assert (p[~pruned[n]] != 0).all(), n  # the kept weights still train
    # Detached, the optimizer's state brings pruned weights back: the hooks did the work.
    masks.apply()
    _steps(model, opt, 2)
    assert any((p[pruned[n]] != 0).any() for n, p in masks.params.items())


def test_from_targets_is_monotone():
    model = _net()
    first = MaskSet.from_targets(model, {"0": 0.5, "2": 0.5})
    with first.attach():
        pass
    with torch.no_grad():  # make some pruned weights huge: they must not come back
        for n, p in first.params.items():
            p[~first.masks[n]] = 100.0
    second = MaskSet.from_targets(model, {"0": 0.25, "2": 0.25}, previous=first)
    for n in first.masks:
        assert not (second.masks[n] & ~first.masks[n]).any()
        assert int(second.masks[n].sum()) <= int(first.masks[n].sum())
