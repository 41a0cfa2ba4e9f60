"""The compress pipeline and its command: a short real run on a data subset."""
import pytest
import torch

from deepcomp.cli import main
from deepcomp.data import fashion_mnist
from deepcomp.pipeline import PAPER_KEEP, compress


@pytest.fixture(scope="module")
def test_subset():
    return fashion_mnist("test").subset(2000, seed=0)


def test_short_pipeline_keeps_accuracy(tmp_path, test_subset, one_thread):
    out = tmp_path / "lenet300.dcz"
    keep = {"fc1": 0.2, "fc2": 0.3, "fc3": 0.6}
    r = compress("deepcomp:lenet300", out, keep=keep, prune_steps=2, epochs=1,
                 finetune_epochs=0.5, lr=1e-3, bits={"fc": 5}, subset=8000, seed=0,
                 progress=False, log=lambda s: None, test_set=test_subset)
    names = [s.name for s in r.stages]
    assert names == ["dense", "prune 1/2", "prune 2/2", "share (linear)", "share + fine-tune"]
    dense, final = r.stage("dense"), r.stage("share + fine-tune")
    # Validation images come out of the data the shipped checkpoint was trained on, so
    # its validation score is inflated; the test split says what the pipeline keeps.
    assert dense.test_accuracy > 88.0
    assert final.test_accuracy >= dense.test_accuracy - 2.0
    sd = r.model.state_dict()
    for layer, frac in keep.items():
        w = sd[f"{layer}.weight"]
        assert torch.unique(w[w != 0]).numel() <= 32
        # Against the layer's shape before dead-neuron removal, which may drop rows.
        numel = torch.Size(r.shrink.before[layer]).numel()
        assert int((w != 0).sum()) / numel == pytest.approx(frac, abs=1e-3)
    assert r.out.exists() and r.out.stat().st_size > 0
    # The retraining is what keeps it: the same cuts without it lose about 13 points.
    untrained = compress("deepcomp:lenet300", None, keep=keep, prune_steps=2, epochs=0,
                         bits={"fc": 5}, progress=False, log=lambda s: None,
                         test_set=test_subset)
    assert untrained.stage("share + fine-tune").accuracy < final.accuracy - 5.0
    from deepcomp.codec import decode

    back = decode(r.out)
    for k, v in sd.items():
        assert torch.equal(back[k], v), k


def test_cli_compress_from_state_dict(tmp_path, capsys, one_thread):
    ck = tmp_path / "dense.pt"
    from deepcomp.models import checkpoint_path

    torch.save(torch.load(checkpoint_path("deepcomp:lenet300"), weights_only=True), ck)
    out = tmp_path / "o.dcz"
    rc = main(["compress", str(ck), str(out), "--arch", "deepcomp:lenet300",
               "--data", "fashion-mnist", "--subset", "500", "--prune-steps", "1",
               "--keep", "fc1=0.5,fc2=0.5,fc3=0.9", "--epochs", "0.2", "--bits", "fc=4",
               "--init", "density", "--quiet", "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "share + fine-tune" in text and "fc1.weight" in text
    assert "wrote" in text


def test_std_schedule_raises_threshold(test_subset, one_thread):
    r = compress("deepcomp:lenet300", None, keep="std:1.0", prune_steps=2, epochs=0.25,
                 finetune_epochs=0, subset=2000, progress=False, log=lambda s: None,
                 test_set=test_subset)
    d1, d2 = r.stage("prune 1/2").density, r.stage("prune 2/2").density
    # For a roughly Gaussian layer, |w| > 0.5 std keeps ~60 %, then > 1 std of what is
    # left (zeros included in the std) cuts further.
    assert 0.4 < d1 < 0.8 and d2 < d1
    # A sanity bound only: a quarter epoch on 2,000 images recovers part of the cut
    # (the subset is drawn from the training images left after the validation split).
    assert r.stage("share + fine-tune").test_accuracy > r.stage("dense").test_accuracy - 8.0


@pytest.mark.parametrize("argv,msg", [
    (["deepcomp:lenet300", "o.dcz", "--data", "cifar10"], "unknown data set 'cifar10'"),
    (["x.pt", "o.dcz", "--data", "fashion-mnist"], "--arch"),
    (["deepcomp:lenet300", "o.dcz", "--data", "fashion-mnist", "--bits", "fc=12"], "bits"),
    (["deepcomp:lenet300", "o.dcz", "--data", "fashion-mnist", "--keep", "fc9=0.1"], "fc9"),
    (["deepcomp:lenet300", "o.dcz", "--data", "fashion-mnist", "--keep", "std:x"], "std:S"),
    (["deepcomp:lenet300", "o.dcz", "--data", "fashion-mnist", "--data-dir", "/nonexistent"],
     "/nonexistent/train-images-idx3-ubyte.gz"),
])
def test_cli_user_mistakes_are_one_line(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["compress", *argv, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_paper_targets_keep_at_most_8_percent():
    from deepcomp.models import get_model

    for fam, keep in PAPER_KEEP.items():
        m = get_model(f"deepcomp:{fam}")
        total = kept = 0
        for n, p in m.named_parameters():
            if n.endswith("weight"):
                total += p.numel()
                kept += round(keep[n.rsplit(".", 1)[0]] * p.numel())
        assert kept / total <= 0.08, fam


@pytest.mark.slow
def test_lenet300_default_pipeline_meets_bar(one_thread):
    r = compress("deepcomp:lenet300", None, prune_steps=4, epochs=3, lr=2e-3,
                 progress=False, log=lambda s: None)
    final = r.stage("share + fine-tune")
    assert final.density <= 0.08
    # The bar was within half a point of the dense net; since the validation
    # split takes 5,000 images out of retraining this fixed recipe measures -0.64 on the
    # AMD machine and -0.74 / -0.76 on the Intel one (issue 10, benchmarks/RESULTS.md,
    # README; the figure moves with the CPU), so the bound here is 0.8.
    assert final.test_accuracy >= r.stage("dense").test_accuracy - 0.8


def test_dead_units_are_removed_and_the_file_runs_alone(tmp_path, test_subset, one_thread):
    import deepcomp
    from deepcomp.codec import decode, open_dcz

    out = tmp_path / "shrunk.dcz"
    # 1 % of fc2 is 300 weights over 100 rows and 300 columns: many units lose all their
    # inputs or all their outputs.
    r = compress("deepcomp:lenet300", out, keep={"fc1": 0.1, "fc2": 0.01, "fc3": 0.5},
                 prune_steps=1, epochs=0, finetune_epochs=0, bits={"fc": 5}, subset=500,
                 progress=False, log=lambda s: None, test_set=test_subset)
    changed = r.shrink.changed
    assert changed["fc2"][1][0] < 100 and changed["fc2"][1][1] < 300
    assert r.unshrunk_bytes == 1_066_440  # ratios are against the model as given
    assert changed["fc1"][1][0] == changed["fc2"][1][1]
    meta = open_dcz(out).meta["pipeline"]
    assert meta["shapes"]["fc2"] == [[100, 300], list(r.model.fc2.weight.shape)]
    sd = decode(out)
    assert tuple(sd["fc1.weight"].shape) == tuple(r.model.fc1.weight.shape)
    x = test_subset.images[:200]
    with torch.no_grad():
        got, want = deepcomp.load(out)(x), r.model(x)
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
    # The unshrunk run: the same final accuracy (only the shapes differ).
    same = compress("deepcomp:lenet300", None, keep={"fc1": 0.1, "fc2": 0.01, "fc3": 0.5},
                    prune_steps=1, epochs=0, finetune_epochs=0, bits={"fc": 5}, subset=500,
                    progress=False, log=lambda s: None, test_set=test_subset, shrink=False)
    assert same.model.fc2.weight.shape == (100, 300) and same.shrink is None
    with torch.no_grad():
        ref = same.model(x)
    assert float((ref - want).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max()))
