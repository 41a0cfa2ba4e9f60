"""Opt-in bounded-error snapping of float values (deepcomp.codec.snap, save(snap=...))."""
from __future__ import annotations

import math

import pytest
import torch

import deepcomp
from deepcomp.codec.reader import open_dcz
from deepcomp.codec.snap import grid_step, max_rel_error, snap_state_dict, snap_tensor
from deepcomp.errors import DeepcompError


def span(t: torch.Tensor) -> float:
    lo, hi = float(t.min()), float(t.max())
    return hi - lo if hi > lo else abs(hi)


@pytest.mark.parametrize("scale,offset", [(1e-3, 0.0), (1.0, 0.0), (0.05, 1.0), (300.0, -7.0), (1e-30, 0.0)])
@pytest.mark.parametrize("rel", [1e-3, 1e-2, 0.3])
def test_error_within_bound_and_on_the_grid(scale, offset, rel):
    g = torch.Generator().manual_seed(int(scale * 1e3) % 97)
    t = torch.randn(1000, generator=g) * scale + offset
    s = snap_tensor(t, rel)
    assert s.dtype == torch.float32 and s.shape == t.shape
    err = float((s.double() - t.double()).abs().max())
    assert err <= rel * span(t) * (1 + 1e-12)
    step = grid_step(t, rel)
    k = s.double() / step
    assert torch.equal(k, torch.round(k))  # exactly on the grid: fp32 holds k * step
    assert step > rel * span(t)  # the largest power of two under 2 * rel * span
    assert math.log2(step) == int(math.log2(step))


def test_fewer_bits_to_store():
    t = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    s = snap_tensor(t, 1e-3)
    low = s.view(torch.int32) & ((1 << 12) - 1)  # low mantissa bits of a +-2^11 grid
    assert int((low != 0).sum()) == 0
    assert int((t.view(torch.int32) & ((1 << 12) - 1) != 0).sum()) > 4000


def test_zeros_signs_and_untouched_tensors():
    t = torch.tensor([-0.0, 0.0, 1e-9, -1e-9, 1.0, -1.0])
    s = snap_tensor(t, 1e-3)
    assert not torch.signbit(s[:4]).any()  # every zero (and what rounds to it) is +0.0
    assert s[4] == 1.0 and s[5] == -1.0
    for u in (torch.zeros(5), torch.tensor([1.0, float("nan")]), torch.tensor([float("inf"), 0.0]),
              torch.arange(5), torch.ones(3, dtype=torch.float16), torch.empty(0)):
        assert snap_tensor(u, 1e-3) is u
    # a constant tensor: the bound is relative to its magnitude
    c = torch.full((4,), 0.123456)
    assert float((snap_tensor(c, 1e-3) - c).abs().max()) <= 1e-3 * 0.123456


def test_shared_tensor_keeps_zeros_and_does_not_gain_values():
    g = torch.Generator().manual_seed(2)
    book = torch.randn(32, generator=g)
    w = book[torch.randint(0, 32, (64, 64), generator=g)]
    w = torch.where(torch.rand(64, 64, generator=g) < 0.1, w, torch.zeros(()))
    s = snap_tensor(w, 1e-3)
    assert torch.equal(s == 0, w == 0)
    assert s.unique().numel() <= w.unique().numel()


@pytest.mark.parametrize("bad", [0, -1e-3, 0.5, float("nan"), float("inf"), "1e-3", True])
def test_bad_bound_is_a_user_error(bad, tmp_path):
    with pytest.raises(DeepcompError, match="snap"):
        snap_state_dict({"a": torch.ones(2)}, bad)
    with pytest.raises(DeepcompError, match="snap"):
        deepcomp.save({"a": torch.ones(2)}, tmp_path / "x.dcz", snap=bad)
    assert not (tmp_path / "x.dcz").exists()


def test_save_with_snap_is_smaller_and_decodes_the_snapped_values(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10))
    exact, snapped = tmp_path / "exact.dcz", tmp_path / "snap.dcz"
    deepcomp.save(model, exact, prune="sparsity:0.9", bits={"fc": 5})
    deepcomp.save(model, snapped, prune="sparsity:0.9", bits={"fc": 5}, snap=1e-3)
    assert snapped.stat().st_size < exact.stat().st_size
    a, b = deepcomp.decode(exact), deepcomp.decode(snapped)
    assert max_rel_error(a, b) <= 1e-3
    want = snap_state_dict(a, 1e-3)  # the exact file holds the prepared, unsnapped values
    for k in a:
        assert torch.equal(b[k].view(torch.int32), want[k].view(torch.int32)), k
    assert open_dcz(snapped).meta["snap"] == 1e-3
    assert "snap" not in open_dcz(exact).meta


def test_snap_after_a_one_shot_plan(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    out = tmp_path / "auto.dcz"
    deepcomp.save(model, out, bits="auto", max_rel_error=0.1, snap=1e-3)
    dec = deepcomp.decode(out)
    for k, v in dec.items():
        step = grid_step(model.state_dict()[k], 1e-3)
        assert step is not None
        # every stored value sits on a power-of-two grid no coarser than the bound allows
        # (half the step measured on the snapped values: their range may differ by a step)
        q = v.double() / (grid_step(v, 1e-3) / 2)
        assert torch.equal(q, torch.round(q)), k
    assert open_dcz(out).meta["snap"] == 1e-3
