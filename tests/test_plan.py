"""Planning: validation split, sensitivity, byte prices, allocation and the planned pipeline."""
import json

import pytest
import torch

from deepcomp.cli import main
from deepcomp.codec import open_dcz, tensor_bytes, write_state_dict
from deepcomp.data import TensorImageDataset, fashion_mnist, split_train_val
from deepcomp.errors import DataError
from deepcomp.models import LeNet300
from deepcomp.pipeline import compress
from deepcomp.plan import (Plan, Sensitivity, allocate, choose_bits, price_table, sensitivity,
                           tolerance_schedule)
from deepcomp.train import train


@pytest.fixture(scope="module")
def small():
    """A LeNet-300-100 trained briefly on 3,000 images that never include the 1,000
    validation images split_train_val holds out of the same 4,000 (seed 0)."""
    torch.manual_seed(0)
    full = fashion_mnist("train").subset(4000, seed=3)
    tr, va = split_train_val(full, 1000, seed=0)
    net = LeNet300()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train(net, tr, epochs=4, lr=2e-3, seed=0, progress=False)
    torch.set_num_threads(before)
    return net, full, tr, va


# ----------------------------------------------------------------------------- split

def test_split_is_seeded_disjoint_and_complete():
    ds = fashion_mnist("test").subset(3000, seed=1)
    tr, va = split_train_val(ds, 500, seed=4)
    tr2, va2 = split_train_val(ds, 500, seed=4)
    _, va3 = split_train_val(ds, 500, seed=5)
    a, b = set(tr.source_index.tolist()), set(va.source_index.tolist())
    assert len(b) == 500 and not a & b and len(a | b) == 3000
    assert torch.equal(va.source_index, va2.source_index)
    assert not torch.equal(va.source_index, va3.source_index)
    # The subset's own source positions carry through, so they name the original split.
    assert set(va.source_index.tolist()) <= set(ds.source_index.tolist())
    assert torch.equal(va.images, ds.images[[ds.source_index.tolist().index(i)
                                             for i in va.source_index.tolist()]])
    for bad in (0, 3000, -1):
        with pytest.raises(DataError, match="--val"):
            split_train_val(ds, bad)


def test_compress_decides_on_validation_and_tests_twice(tmp_path, one_thread, monkeypatch):
    import deepcomp.pipeline as P

    full = fashion_mnist("train")
    test = fashion_mnist("test").subset(1000, seed=0)
    seen = []
    real = P.evaluate
    monkeypatch.setattr(P, "evaluate", lambda m, ds, *a, **k: seen.append(ds) or real(m, ds, *a, **k))
    r = compress("deepcomp:lenet300", None, keep=0.5, prune_steps=2, epochs=0.05,
                 finetune_epochs=0.05, subset=1500, val=700, seed=3, progress=False,
                 log=lambda s: None, train_set=full, test_set=test)
    tr, va = set(r.train_index.tolist()), set(r.val_index.tolist())
    assert len(va) == 700 and len(tr) == 1500 and not tr & va
    # The test split is read for the dense model and for the final one, never between.
    assert sum(ds is test for ds in seen) == 2
    assert all(len(ds) == 700 for ds in seen if ds is not test)
    with_test = [s.name for s in r.stages if s.test_accuracy is not None]
    assert with_test == ["dense", "share + fine-tune"]
    assert "val top-1" in r.table() and "test top-1" in r.table()


# ----------------------------------------------------------------------------- prices

def test_tensor_bytes_is_the_section_the_writer_writes(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(120, 90, generator=g)
    w[torch.rand(120, 90, generator=g) < 0.9] = 0
    from deepcomp.share import share_tensor

    sd = {"a.weight": share_tensor(w, 4), "b.weight": torch.randn(7, 5, generator=g),
          "a.bias": torch.randn(120, generator=g)}
    s = write_state_dict(sd, tmp_path / "x.dcz")
    f = open_dcz(tmp_path / "x.dcz")
    for name, t in sd.items():
        assert tensor_bytes(name, t) == f.record(name).length == s["tensors"][name]["bytes"]


def test_price_table_is_exact_and_falls_with_keep_and_bits(small):
    net = small[0]
    p = price_table(net, keeps=(1.0, 0.3, 0.05), bits=(6, 3))
    assert set(p) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    for n, row in p.items():
        assert row[(0.05, 3)] < row[(0.3, 3)] < row[(1.0, 3)]
        assert row[(0.3, 3)] < row[(0.3, 6)]
    from deepcomp.plan import _pruned, _shared

    w = _shared("fc2.weight", _pruned(net.fc2.weight, 0.3), 3, 0)
    assert p["fc2.weight"][(0.3, 3)] == tensor_bytes("fc2.weight", w)


# ----------------------------------------------------------------------------- allocation

def _synthetic():
    # 'big' is large and robust, 'small' is tiny and fragile.
    keeps, bits = (1.0, 0.5, 0.1, 0.02), (8, 4, 2)
    sens = Sensitivity(90.0, 0.3)
    sens.keep = {"big": [(k, 90.0 - d, 0) for k, d in zip(keeps, (0, 0.1, 0.5, 6.0))],
                 "small": [(k, 90.0 - d, 0) for k, d in zip(keeps, (0, 2.0, 10.0, 30.0))]}
    sens.bits = {"big": [(b, 90.0 - d, 0) for b, d in zip(bits, (0, 0.05, 1.0))],
                 "small": [(b, 90.0 - d, 0) for b, d in zip(bits, (0, 0.5, 5.0))]}
    prices = {"big": {(k, b): int(100000 * k * (b + 4)) + 10 for k in keeps for b in bits},
              "small": {(k, b): int(1000 * k * (b + 4)) + 10 for k in keeps for b in bits}}
    return sens, prices


def test_allocate_spends_tolerance_where_bytes_are():
    sens, prices = _synthetic()
    plan = allocate(sens, prices, tolerance=1.0)
    assert plan.est_drop <= 1.0
    assert plan.keep == {"big": 0.1, "small": 1.0}
    assert plan.bits["big"] == 4 and plan.bits["small"] == 8
    assert plan.tensor_bytes == prices["big"][(0.1, 4)] + prices["small"][(1.0, 8)]
    # A looser tolerance never costs more bytes.
    loose = allocate(sens, prices, tolerance=8.0)
    assert loose.tensor_bytes < plan.tensor_bytes and loose.est_drop <= 8.0


def test_allocate_to_a_target_and_never_regrows():
    sens, prices = _synthetic()
    plan = allocate(sens, prices, target_bytes=50000)
    assert plan.tensor_bytes <= 50000
    capped = allocate(sens, prices, tolerance=0.0, max_keep={"big": 0.1})
    assert capped.keep["big"] == 0.1
    frozen = allocate(sens, prices, tolerance=8.0, frozen_keep={"big"})
    assert frozen.keep["big"] == 1.0 and frozen.keep["small"] < 1.0 and frozen.bits["big"] < 8


def test_tolerance_schedule_rises_from_half_the_budget():
    t = tolerance_schedule(0.5)
    assert t[0] == 0.25 and all(b > a for a, b in zip(t, t[1:])) and t[-1] <= 100


def test_plan_round_trips_as_data():
    p = Plan({"fc1.weight": 0.05, "fc2.weight": 0.1}, {"fc1.weight": 4, "fc2.weight": 5},
             {"fc1.weight": 100, "fc2.weight": 50}, budget={"max_drop": 0.5}, seed=3,
             history=[{"tolerance": 0.25, "val": 88.1, "kept": True}])
    d = json.loads(json.dumps(p.to_dict()))
    q = Plan.from_dict(d)
    assert q.to_dict() == p.to_dict() and q.tensor_bytes == 150
    assert "fc1.weight" in p.table()


# ----------------------------------------------------------------------------- measured pieces

def test_sensitivity_measures_one_layer_at_a_time(small):
    net, _, _, va = small
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = sensitivity(net, va, keeps=(1.0, 0.2, 0.01), bits=(8, 2))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    from deepcomp.plan import evaluate_loss

    base = evaluate_loss(net, va)
    assert (s.base_acc, s.base_loss) == base
    for n in s.keep:
        assert s.keep[n][0][1] == base[0]              # 100 % kept is the model itself
        assert s.keep[n][-1][1] < base[0] - 5          # 1 % kept of any layer hurts
        assert s.keep[n][-1][2] > base[1]
    # The first layer holds 88 % of the weights; cutting it to 1 % costs more than
    # cutting the classifier to 1 % costs... either way, each row is one layer alone:
    # pruning fc1 to 20 % changes no other layer's curve.
    assert len(s.bits["fc1.weight"]) == 2


def test_choose_bits_holds_the_budget_it_measures(small):
    net, _, _, va = small
    from deepcomp.plan import evaluate_loss

    base = evaluate_loss(net, va)[0]
    bits, sizes, acc = choose_bits(net, va, base_acc=base, max_drop=0.5, bits=(8, 6, 4, 3, 2))
    assert base - acc <= 0.5
    assert min(bits.values()) < 8
    from deepcomp.share import quantize_model, finalize
    import copy

    q = copy.deepcopy(net)
    quantize_model(q, bits, "linear", 0)
    finalize(q)
    assert evaluate_loss(q, va)[0] == acc
    for n, p in q.named_parameters():
        if n in sizes:
            assert sizes[n] == tensor_bytes(n, p.detach())
    tight = choose_bits(net, va, base_acc=base, target_bytes=sum(sizes.values()) // 2,
                        bits=(8, 6, 4, 3, 2))
    assert sum(tight[1].values()) <= sum(sizes.values()) // 2 or min(tight[0].values()) == 2


def test_distill_pulls_the_pruned_model_to_the_teacher(small, one_thread):
    import copy

    import torch.nn.functional as F

    from deepcomp.plan import distill
    from deepcomp.prune import MaskSet

    net, _, tr, va = small
    student = copy.deepcopy(net)
    masks = MaskSet.from_targets(student, {"fc1": 0.05, "fc2": 0.1})
    masks.apply()

    def kl():
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(student(va.images), 1),
                                  F.log_softmax(net(va.images), 1), log_target=True,
                                  reduction="batchmean"))

    before = kl()
    distill(student, net, tr, epochs=2, lr=1e-3, masks=masks, seed=0, alpha=1.0)
    for n, m in masks.masks.items():
        assert not dict(student.named_parameters())[n].detach()[~m].any(), n
    assert not masks._handles                      # hooks removed afterwards
    assert kl() < 0.7 * before


# ----------------------------------------------------------------------------- the planned pipeline

def test_max_drop_run_respects_budget_and_prices_the_file(small, tmp_path, one_thread):
    net, full, _, _ = small
    out = tmp_path / "p.dcz"
    test = fashion_mnist("test").subset(1000, seed=0)
    lines = []
    r = compress(net, out, train_set=full, test_set=test, val=1000, seed=0, max_drop=1.0,
                 epochs=0.5, finetune_epochs=0.3, prune_steps=4, progress=False,
                 log=lines.append, record_hist=True)
    dense, final = r.stage("dense"), r.stages[-1]
    # On 1,000 images the drop is measured to about half a point: the run says so.
    noted = [s for s in lines if "within two standard errors" in s]
    assert bool(noted) == (2 * r.paired_drop("val")[1] > 1.0)
    assert dense.accuracy - final.accuracy <= 1.0
    assert final.density < 0.9                    # it did prune
    # The drop is also reported paired, image by image: recount it from the two models.
    _, va = split_train_val(full, 1000, seed=0)
    for split, data, d_acc, f_acc in (("val", va, dense.accuracy, final.accuracy),
                                      ("test", test, dense.test_accuracy, final.test_accuracy)):
        with torch.no_grad():
            a = net.eval()(data.images).argmax(1) == data.targets
            b = r.model.eval()(data.images).argmax(1) == data.targets
        lost, won = int((a & ~b).sum()), int((~a & b).sum())
        assert r.paired[split] == (len(data), lost, won)
        drop, se = r.paired_drop(split)
        assert drop == pytest.approx(d_acc - f_acc, abs=1e-9)
        n = len(data)
        assert se == pytest.approx(100 * ((lost + won) - (lost - won) ** 2 / n) ** 0.5 / n)
        assert 0 < se < 100 * ((lost + won) ** 0.5) / n + 1e-12
    assert "paired standard error" in r.table()
    f = open_dcz(out)
    meta_plan = f.meta["pipeline"]["plan"]
    # The file's meta holds the compact plan (kept fraction and bits per layer, budget,
    # seed); the section bytes are the file's own records.
    assert meta_plan == r.plan.to_dict(compact=True)
    back = Plan.from_dict(meta_plan)
    assert back.bits == r.plan.bits
    assert back.keep == {n: round(k, 4) for n, k in r.plan.keep.items()}
    for n, b in r.plan.bytes.items():
        assert f.record(n).length == b, n         # priced bytes are the file's bytes
        # Dead-neuron removal drops the rows of units that feed nothing and the columns
        # of units whose constant output went into a bias: measured against the shape
        # before, never more than planned.
        numel = torch.Size(r.shrink.before[n.rsplit(".", 1)[0]]).numel()
        kept = int((r.model.state_dict()[n] != 0).sum()) / numel
        assert kept <= r.plan.keep[n] + 1e-9
    assert meta_plan["budget"] == {"max_drop": 1.0}
    # Reproducible from the seed: the same plan again.
    r2 = compress(net, None, train_set=full, test_set=test, val=1000, seed=0, max_drop=1.0,
                  epochs=0.5, finetune_epochs=0.3, prune_steps=4, progress=False,
                  log=lambda s: None)
    assert r2.plan.to_dict() == r.plan.to_dict()
    png = tmp_path / "info.png"
    assert main(["info", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(f.meta["pipeline"]["weight_hist"]) == set(r.plan.keep)


@pytest.mark.parametrize("coder", ["auto", "huffman"])
def test_target_size_fits(small, tmp_path, one_thread, coder):
    # A small target cuts fc1 to a few percent: hidden units empty out, dead-neuron
    # removal shrinks the shapes, and the plan's bytes are priced again on the tensors
    # the file then holds, with the coder it is written with.
    net, full, _, _ = small
    out = tmp_path / "t.dcz"
    r = compress(net, out, train_set=full, test_set=fashion_mnist("test").subset(500, seed=0),
                 val=1000, seed=0, target_size=9000, epochs=0.3, finetune_epochs=0.2,
                 prune_steps=2, progress=False, log=lambda s: None, coder=coder)
    assert out.stat().st_size <= 9000
    assert r.plan.budget == {"target_size": 9000}
    assert r.shrink is not None and r.shrink.changed, "the cut left no dead unit to remove"
    f = open_dcz(out)
    for name, price in r.plan.bytes.items():
        rec = f.record(name)
        assert tuple(rec.shape) == tuple(r.model.state_dict()[name].shape)
        assert rec.length == price
        if coder == "huffman":
            assert not rec.encoding.startswith("ac_")


def test_target_size_out_of_reach_is_one_line(capsys, tmp_path):
    rc = main(["compress", "deepcomp:lenet300", str(tmp_path / "o.dcz"), "--data",
               "fashion-mnist", "--target-size", "600", "--subset", "500", "--val", "500",
               "--quiet", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--target-size 600" in err and "Traceback" not in err


def test_sensitivity_command_writes_table_json_and_png(tmp_path, capsys, one_thread):
    j, png = tmp_path / "s.json", tmp_path / "s.png"
    rc = main(["sensitivity", "deepcomp:lenet300", "--data", "fashion-mnist", "--val", "500",
               "--keeps", "1,0.1", "--bits", "8,3", "--json", str(j), "--plot", str(png),
               "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "fc1.weight" in out and "layer / kept" in out
    d = json.loads(j.read_text())
    assert set(d["layers"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert [e["keep"] for e in d["layers"]["fc2.weight"]["keep"]] == [1.0, 0.1]
    assert png.read_bytes()[:4] == b"\x89PNG"
    rc = main(["sensitivity", "deepcomp:lenet300", "--data", "fashion-mnist", "--bits", "9"])
    assert rc == 2 and "--bits" in capsys.readouterr().err


# ----------------------------------------------------------------------------- gradual pruning

def test_gradual_prune_reaches_the_targets_and_keeps_the_best_point(small, one_thread):
    import copy

    from deepcomp.plan import evaluate_loss, gradual_prune

    net, _, tr, va = small
    net = copy.deepcopy(net)
    keep1 = {"fc1": 0.3, "fc2": 0.5, "fc3": 0.8}
    m1, acc1, at1 = gradual_prune(net, keep1, tr, va, epochs=0.5, recover_epochs=0.5, lr=1e-3,
                                  evals_per_epoch=4)
    for n, m in m1.masks.items():
        frac = float(m.float().mean())
        assert frac == pytest.approx(keep1[n.rsplit(".", 1)[0]], abs=2e-3), n
        w = dict(net.named_parameters())[n].detach()
        assert not w[~m].any(), n                        # pruned weights are zero
    assert evaluate_loss(net, va)[0] == pytest.approx(acc1)   # left at the best point
    assert 0.5 <= at1 <= 1.0 + 1e-9                       # measured in the recovery only
    # A second round goes on from the first's masks: nothing pruned comes back.
    keep2 = {"fc1": 0.1, "fc2": 0.2, "fc3": 0.5}
    m2, acc2, _ = gradual_prune(net, keep2, tr, va, previous=m1, epochs=0.5,
                                recover_epochs=0.25, lr=1e-3, seed=1)
    for n, m in m2.masks.items():
        assert not (m & ~m1.masks[n]).any(), n
        assert float(m.float().mean()) == pytest.approx(keep2[n.rsplit(".", 1)[0]], abs=2e-3)


@pytest.mark.parametrize("search,allocation", [("bisect", "global"), ("false-position", "global"),
                                               ("bisect", "sensitivity")])
def test_gradual_search_bisects_and_keeps_the_smallest_passing_trial(small, one_thread, search,
                                                                     allocation):
    import copy

    from deepcomp.plan import PRUNE_SHARE, _price_at, evaluate_loss, gradual_search

    net, _, tr, va = small
    net = copy.deepcopy(net)
    base = evaluate_loss(net, va)[0]
    grid = (1.0, 0.5, 0.25, 0.12, 0.05, 0.02)
    sens = sensitivity(net, va, keeps=grid, bits=(4,))
    prices = price_table(net, keeps=grid, bits=(4,))
    rounds, plan, masks = gradual_search(net, sens, prices, tr, va, base_acc=base,
                                         max_drop=1.0, epochs=0.2, lr=1e-3, trials=3,
                                         search=search, allocation=allocation)
    assert len(rounds) == 3
    # Every trial is a different cut (an allocation already measured is not rerun).
    if search == "false-position":
        # Every searched trial is a different cut (one already measured is not rerun);
        # only the safe-cut fallback after a search where nothing passed may repeat one.
        keys = [tuple(sorted(r.keep.items())) for r in rounds]
        searched = keys if any(r.accepted for r in rounds[:-1]) else keys[:-1]
        assert len(set(searched)) == len(searched)
    for r in rounds:
        assert r.accepted == (base - r.val_acc <= PRUNE_SHARE * 1.0 + 1e-9)
    # Bisection: after a pass the next target is smaller, after a failure larger.
    for a, b in zip(rounds, rounds[1:]):
        assert (b.target_bytes < a.target_bytes) == a.accepted
    passing = [r for r in rounds if r.accepted]
    assert passing, "a 1-point budget on a briefly trained MLP passes at half its bytes"

    def size(keep):   # the global allocation's kept fractions lie between the grid's
        return sum(_price_at(prices[n], keep[n], 4) for n in prices)

    smallest = min(passing, key=lambda r: size(r.keep))
    assert plan.keep == smallest.keep
    # The model is that trial's: its accuracy, its masks, its kept fractions.
    assert evaluate_loss(net, va)[0] == pytest.approx(smallest.val_acc)
    for n, m in masks.masks.items():
        w = dict(net.named_parameters())[n].detach()
        assert not w[~m].any()
        assert float(m.float().mean()) == pytest.approx(plan.keep[n], abs=2e-3)


def test_global_allocation_is_one_threshold_that_fits_the_bytes(small):
    from deepcomp.plan import _price_at, global_allocation

    net = small[0]
    grid = (1.0, 0.5, 0.25, 0.12, 0.05, 0.02, 0.01)
    prices = price_table(net, keeps=grid, bits=(4,))
    dense = sum(prices[n][(1.0, 4)] for n in prices)
    smaller = None
    for share in (0.5, 0.2, 0.08):
        plan = global_allocation(net, prices, int(share * dense))
        assert sum(_price_at(prices[n], plan.keep[n], 4) for n in plan.keep) <= share * dense
        # One threshold: the smallest weight kept anywhere is larger than the largest
        # weight cut anywhere (magnitudes of the layers' own top-k sets).
        kept_min, cut_max = [], []
        for n, p in dict(net.named_parameters()).items():
            if n not in plan.keep:
                continue
            w = p.detach().abs().flatten().sort(descending=True).values
            k = int(round(plan.keep[n] * w.numel()))
            kept_min.append(float(w[k - 1]))
            if k < w.numel():
                cut_max.append(float(w[k]))
        assert min(kept_min) >= max(cut_max) - 1e-7
        total = sum(plan.keep[n] * dict(net.named_parameters())[n].numel() for n in plan.keep)
        if smaller is not None:
            assert total < smaller
        smaller = total
    # The last layer (few, large weights) keeps the largest share.
    assert plan.keep["fc3.weight"] > plan.keep["fc1.weight"]
    # The grid prices interpolate: at a grid point they are exact.
    assert _price_at(prices["fc1.weight"], 0.25, 4) == prices["fc1.weight"][(0.25, 4)]


def test_gradual_prune_average_keeps_masks_and_measures_the_mean(small, one_thread):
    import copy

    from deepcomp.plan import evaluate_loss, gradual_prune

    net0, _, tr, va = small
    keep = {"fc1": 0.2, "fc2": 0.4, "fc3": 0.8}
    runs = {}
    for avg in (0.5, 1e-6):
        net = copy.deepcopy(net0)
        m, acc, at = gradual_prune(net, keep, tr, va, epochs=0.5, recover_epochs=1.0, lr=1e-3,
                                   seed=3, average=avg)
        for n, mk in m.masks.items():
            w = dict(net.named_parameters())[n].detach()
            assert not w[~mk].any(), n                   # the mean keeps the masks
            assert float(mk.float().mean()) == pytest.approx(keep[n.rsplit(".", 1)[0]], abs=2e-3)
        assert evaluate_loss(net, va)[0] == pytest.approx(acc)   # the model returned
        assert 0.5 <= at <= 1.5 + 1e-9                   # inside the recovery
        runs[avg] = (copy.deepcopy(net.state_dict()), at)
    # Half the recovery averaged is a different model from the last point alone (the
    # tiny window), and its middle lies earlier in the round.
    a, b = runs[0.5][0], runs[1e-6][0]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert runs[0.5][1] < runs[1e-6][1]


def test_gradual_prune_average_refreshes_batchnorm(one_thread):
    from torch import nn

    from deepcomp.plan import gradual_prune

    torch.manual_seed(0)
    x = torch.randn(600, 1, 4, 4)
    y = (x.flatten(1).sum(1) > 0).long()
    data = TensorImageDataset(x, y)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(),
                        nn.Linear(32, 2))
    gradual_prune(net, {"1": 0.5, "4": 0.5}, data, data, epochs=1, recover_epochs=2, lr=1e-2,
                  batch_size=50, average=0.5)
    bn = net[2]
    # Recomputed for the averaged weights: the cumulative mean over the training batches
    # equals the batch statistics of the averaged first layer on the whole set (every
    # batch the same size, one pass).
    with torch.no_grad():
        h = net[1](net[0](x))
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert bn.momentum == 0.1                              # restored


def test_gradual_prune_label_smoothing_shapes_the_outputs(small, one_thread):
    import copy

    import torch.nn.functional as F

    from deepcomp.plan import gradual_prune

    net0, _, tr, va = small
    keep = {"fc1": 0.3, "fc2": 0.5, "fc3": 0.9}
    conf = {}
    for s in (0.0, 0.6):
        net = copy.deepcopy(net0)
        m, _, _ = gradual_prune(net, keep, tr, va, epochs=0.5, recover_epochs=1.0, lr=2e-3,
                                seed=3, label_smoothing=s)
        for n, mk in m.masks.items():
            assert not dict(net.named_parameters())[n].detach()[~mk].any(), n
        with torch.no_grad():
            conf[s] = float(F.softmax(net(tr.images[:1000]), 1).max(1).values.mean())
    # Smoothed targets put 0.6 of their mass evenly on the 10 classes: the most a
    # smoothed fit would say of any class is 0.46, where plain cross-entropy goes
    # towards 1 on its training images.
    assert conf[0.0] > 0.8
    assert conf[0.6] < 0.6


def test_gradual_prune_dropout_is_seeded_trains_only_and_leaves_no_hooks(small, one_thread):
    import copy

    from deepcomp.plan import evaluate_loss, gradual_prune

    net0, _, tr, va = small
    keep = {"fc1": 0.3, "fc2": 0.5, "fc3": 0.9}
    out = []
    for p in (0.3, 0.3, 0.0):
        net = copy.deepcopy(net0)
        seen = []
        # What fc2 receives while the trial trains: dropped units are exact zeros.
        probe = net.fc2.register_forward_hook(   # sees the input the pre-hooks passed on
            lambda m, inp, o: seen.append(float((inp[0] == 0).float().mean())) if m.training else None)
        m, acc, _ = gradual_prune(net, keep, tr, va, epochs=0.3, recover_epochs=0.3, lr=1e-3,
                                  seed=5, dropout=p)
        probe.remove()
        assert not any(mod._forward_pre_hooks for mod in net.modules())   # none left behind
        assert evaluate_loss(net, va)[0] == pytest.approx(acc)             # eval: no dropout
        out.append((copy.deepcopy(net.state_dict()), sum(seen) / len(seen)))
    # fc2's inputs: 30 % of what the ReLU leaves non-zero is zeroed as well.
    assert out[0][1] > out[2][1] + 0.3 * (1 - out[2][1]) - 0.03
    # Seeded by the trial's seed: the same run twice is the same model; without dropout
    # another one.
    a, b, c = (o[0] for o in out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_label_smoothing_and_dropout_reach_the_trials(small, tmp_path, one_thread, monkeypatch):
    import copy

    from deepcomp import plan as P

    class Seen(Exception):
        pass

    def spy(*a, **k):          # the arguments are all this test needs
        raise Seen(k.get("label_smoothing"), k.get("dropout"))

    # compress -> run_planned ...
    monkeypatch.setattr(P, "run_planned", spy)
    for s, want in ((None, None), (0.25, 0.25)):
        with pytest.raises(Seen) as e:
            compress("deepcomp:lenet300", tmp_path / "x.dcz", data="fashion-mnist", subset=1500,
                     val=500, max_drop=0.5, progress=False, label_smoothing=s,
                     trial_dropout=s, log=lambda m: None)
        assert e.value.args == (want, want)
    # ... -> gradual_search -> each trial's gradual_prune (None: the module's default).
    monkeypatch.setattr(P, "gradual_prune", spy)
    net, _, tr, va = small
    net = copy.deepcopy(net)
    grid = (1.0, 0.25, 0.05)
    prices = P.price_table(net, keeps=grid, bits=(4,))
    for s, want, d, dwant in ((None, P.LABEL_SMOOTHING, None, P.TRIAL_DROPOUT),
                              (0.0, 0.0, 0.0, 0.0), (0.3, 0.3, 0.2, 0.2)):
        with pytest.raises(Seen) as e:
            P.gradual_search(net, None, prices, tr, va, base_acc=90.0, target_bytes=20000,
                             epochs=0.1, lr=1e-3, label_smoothing=s, dropout=d)
        assert e.value.args == (want, dwant)


@pytest.mark.parametrize("bad", [-0.1, 1.0, "some"])
@pytest.mark.parametrize("option", ["label_smoothing", "trial_dropout"])
def test_bad_label_smoothing_or_dropout_is_a_clear_error(bad, option, tmp_path):
    from deepcomp.errors import DeepcompError

    flag = "--" + option.replace("_", "-")
    with pytest.raises(DeepcompError, match=flag):
        compress("deepcomp:lenet300", tmp_path / "x.dcz", max_drop=0.5, progress=False,
                 **{option: bad})


def test_next_target_false_position_within_the_bracket():
    import math

    from deepcomp.plan import NEXT_MIN, next_target

    # No measured failure yet: the log midpoint.
    assert next_target(40000, 10000, 0.0, None, 0.35) == 20000
    # Measured on both sides: where the line through the drops meets the budget, in log bytes.
    t = (0.35 - 0.25) / (0.65 - 0.25)
    want = int(math.exp(math.log(40000) + t * (math.log(10000) - math.log(40000))))
    assert next_target(40000, 10000, 0.25, 0.65, 0.35) == want
    assert 10000 < want < 40000
    # A crossing next to a bracket is held inside the middle of the interval.
    near_hi = next_target(40000, 10000, 0.34, 5.0, 0.35)
    assert near_hi == int(math.exp(math.log(40000) + NEXT_MIN * math.log(10000 / 40000)))
    near_lo = next_target(40000, 10000, 0.0, 0.36, 0.35)
    assert near_lo == int(math.exp(math.log(40000) + (1 - NEXT_MIN) * math.log(10000 / 40000)))
    # Noise that inverts the drops falls back to the midpoint.
    assert next_target(40000, 10000, 0.4, 0.3, 0.35) == 20000


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half"])
def test_average_out_of_range_is_a_clear_error(bad, tmp_path):
    from deepcomp.errors import DeepcompError

    with pytest.raises(DeepcompError, match="--average"):
        compress("deepcomp:lenet300", tmp_path / "x.dcz", max_drop=0.5, average=bad,
                 progress=False)


@pytest.mark.parametrize("bad", [0, -1e-3, "fast"])
def test_bad_learning_rate_is_a_clear_error(bad, tmp_path):
    from deepcomp.errors import DeepcompError

    with pytest.raises(DeepcompError, match="--lr"):
        compress("deepcomp:lenet300", tmp_path / "x.dcz", max_drop=0.5, lr=bad, progress=False)


def test_unknown_search_is_a_clear_error(tmp_path):
    from deepcomp.errors import DeepcompError

    with pytest.raises(DeepcompError, match="--search"):
        compress("deepcomp:lenet300", tmp_path / "x.dcz", max_drop=0.5, search="golden",
                 progress=False)


def test_unknown_coder_is_refused_before_any_training(tmp_path, monkeypatch):
    from deepcomp import pipeline
    from deepcomp.errors import DeepcompError

    def no_data(*a, **k):
        raise AssertionError("data was loaded before the coder was checked")

    monkeypatch.setattr(pipeline, "get_dataset", no_data)
    with pytest.raises(DeepcompError, match="coder must be one of auto, huffman"):
        compress("deepcomp:lenet300", tmp_path / "x.dcz", coder="rans", progress=False)
    assert not (tmp_path / "x.dcz").exists()


# ----------------------------------------------------------------------------- float rounding

def test_planned_run_rounds_floats_and_ships_what_it_measured(small, tmp_path, one_thread):
    import deepcomp
    from deepcomp.codec import decode
    from deepcomp.codec.snap import max_rel_error
    from deepcomp.pipeline import PLANNED_SNAP

    net, full, _, _ = small
    test = fashion_mnist("test").subset(500, seed=0)
    kw = dict(train_set=full, test_set=test, val=1000, seed=0, max_drop=1.0, epochs=0.3,
              finetune_epochs=0.2, prune_steps=2, progress=False, log=lambda s: None)
    exact = compress(net, tmp_path / "exact.dcz", snap="off", **kw)
    r = compress(net, tmp_path / "snap.dcz", **kw)   # planned: rounds by default
    assert exact.snap is None and r.snap == PLANNED_SNAP
    assert r.stages[-1].name == f"snap {PLANNED_SNAP:g}"
    assert open_dcz(tmp_path / "snap.dcz").meta["snap"] == PLANNED_SNAP
    assert "snap" not in open_dcz(tmp_path / "exact.dcz").meta
    # The same run up to the rounding (runs are reproducible from the seed): every value
    # moved by at most the bound, and the file got smaller.
    assert r.plan.keep == exact.plan.keep and r.plan.bits == exact.plan.bits
    before, after = exact.model.state_dict(), r.model.state_dict()
    err = max_rel_error(before, after)
    assert 0 < err <= PLANNED_SNAP
    assert (tmp_path / "snap.dcz").stat().st_size < (tmp_path / "exact.dcz").stat().st_size
    # The file holds the rounded model exactly, so it scores what the run reported.
    _, va = split_train_val(full, 1000, seed=0)
    sd = decode(tmp_path / "snap.dcz")
    assert all(torch.equal(sd[k], v) for k, v in after.items())
    with torch.no_grad():
        got = deepcomp.load(tmp_path / "snap.dcz")(va.images).argmax(1)
    assert 100 * float((got == va.targets).float().mean()) == pytest.approx(r.stages[-1].accuracy)
    assert r.stages[-1].test_accuracy is not None
    assert r.stage("dense").accuracy - r.stages[-1].accuracy <= 1.0


def test_rounding_that_costs_validation_is_put_back(small):
    from deepcomp.pipeline import CompressResult, Stage, _snap_floats
    from deepcomp.train import evaluate

    net0, _, _, va = small
    net = LeNet300()
    net.load_state_dict(net0.state_dict())
    acc = evaluate(net, va)
    result = CompressResult(model=net, stages=[Stage("dense", acc, 1, 1, "32", 0.0),
                                               Stage("final", acc, 1, 1, "32", 0.0)])
    keep = {k: v.clone() for k, v in net.state_dict().items()}
    lines = []
    # 0.4 of each tensor's range: a grid of two or three values wrecks the model
    assert not _snap_floats(net, result, va, 0.4, None, lines.append, "auto")
    assert all(torch.equal(keep[k], v) for k, v in net.state_dict().items())
    assert "values kept exact" in lines[-1] and "validation top-1" in lines[-1]
    # a bound the model does not notice is kept, within the bound
    assert _snap_floats(net, result, va, 1e-4, None, lines.append, "auto")
    for k, v in net.state_dict().items():
        span = float(keep[k].max() - keep[k].min())
        assert float((v - keep[k]).abs().max()) <= 1e-4 * span + 1e-12, k
    assert evaluate(net, va) >= acc - 0.1


@pytest.mark.parametrize("bad", ["x", "0.7", 0, -1e-3])
def test_bad_snap_is_refused_before_any_training(bad, tmp_path, monkeypatch):
    from deepcomp import pipeline
    from deepcomp.errors import DeepcompError

    def no_data(*a, **k):
        raise AssertionError("data was loaded before --snap was checked")

    monkeypatch.setattr(pipeline, "get_dataset", no_data)
    with pytest.raises(DeepcompError, match="snap"):
        compress("deepcomp:lenet300", tmp_path / "x.dcz", snap=bad, max_drop=1.0, progress=False)


def test_fixed_recipe_does_not_round_unless_asked(capsys, tmp_path):
    from deepcomp.pipeline import _snap_setting

    assert _snap_setting("auto", False) is None and _snap_setting("off", True) is None
    assert _snap_setting("1e-3", False) == 1e-3
    rc = main(["compress", "deepcomp:lenet300", str(tmp_path / "o.dcz"), "--data", "fashion-mnist",
               "--snap", "big", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--snap" in err and "Traceback" not in err
