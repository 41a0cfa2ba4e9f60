"""Per-stage checkpoints and --resume: an interrupted run ends where an uninterrupted one does."""
import random

import numpy as np
import pytest
import torch

import deepcomp.pipeline as pipeline
from deepcomp import checkpoint as ckpt
from deepcomp.cli import main
from deepcomp.codec import decode
from deepcomp.data import fashion_mnist
from deepcomp.errors import DeepcompError

KW = dict(keep={"fc1": 0.2, "fc2": 0.3, "fc3": 0.6}, prune_steps=2, epochs=0.2,
          finetune_epochs=0.2, bits={"fc": 4}, subset=1500, seed=3, progress=False,
          log=lambda s: None, device="cpu")


@pytest.fixture(scope="module")
def test_subset():
    return fashion_mnist("test").subset(1000, seed=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, test_subset):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("whole") / "a.dcz"
    return pipeline.compress("deepcomp:lenet300", out, test_set=test_subset, **KW)


@pytest.mark.parametrize("fail_at", [2, 3])  # in prune 2/2's training; in the fine-tuning
def test_resume_reaches_the_uninterrupted_result(tmp_path, monkeypatch, test_subset,
                                                 uninterrupted, fail_at, one_thread):
    real, calls = pipeline.train, [0]

    def failing(*a, **k):
        calls[0] += 1
        if calls[0] == fail_at:
            raise KeyboardInterrupt("injected")
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "train", failing)
    out, ck = tmp_path / "b.dcz", tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        pipeline.compress("deepcomp:lenet300", out, checkpoint_dir=ck, test_set=test_subset, **KW)
    assert not out.exists()
    done = fail_at - 1 if fail_at == 2 else 3  # the stage before the one that failed
    assert [p.name for p in ck.iterdir()] == [f"stage-{done:02d}.pt"]
    monkeypatch.setattr(pipeline, "train", real)
    r = pipeline.compress("deepcomp:lenet300", out, checkpoint_dir=ck, resume=True,
                          test_set=test_subset, **KW)
    a, b = uninterrupted.model.state_dict(), r.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [(s.name, s.accuracy, s.kept) for s in r.stages] == \
           [(s.name, s.accuracy, s.kept) for s in uninterrupted.stages]
    da, db = decode(uninterrupted.out), decode(out)
    assert all(torch.equal(da[k], db[k]) for k in da)


def test_checkpoint_is_plain_tensors(tmp_path, test_subset, one_thread):
    ck = tmp_path / "ck"
    pipeline.compress("deepcomp:lenet300", None, checkpoint_dir=ck, test_set=test_subset,
                      **{**KW, "prune_steps": 1, "share": False})
    path = ckpt.latest(ck)
    state = torch.load(path, weights_only=True)  # refuses anything but plain data
    assert state["stage_name"] == "prune 1/1" and len(state["stages"]) == 2
    assert state["pruning"]["round"] == 1
    assert state["pruning"]["masks"]["fc1.weight"].dtype == torch.bool
    assert state["optimizer"]["state"]  # Adam moments of the last stage
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}


def test_rng_state_roundtrip():
    s = ckpt.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(s)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


class _RunsCode:
    def __reduce__(self):  # unpickling would call print(...): weights_only must refuse it
        return (print, ("this must never run",))


def test_resume_mistakes(tmp_path, test_subset, one_thread):
    ck = tmp_path / "ck"
    pipeline.compress("deepcomp:lenet300", None, checkpoint_dir=ck, test_set=test_subset,
                      **{**KW, "prune_steps": 1, "share": False})
    with pytest.raises(ckpt.CheckpointError, match="seed: 3 there, 4 now"):
        pipeline.compress("deepcomp:lenet300", None, checkpoint_dir=ck, resume=True,
                          test_set=test_subset, **{**KW, "prune_steps": 1, "share": False, "seed": 4})
    path = ckpt.latest(ck)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="cannot read checkpoint"):
        pipeline.compress("deepcomp:lenet300", None, checkpoint_dir=ck, resume=True,
                          test_set=test_subset, **{**KW, "prune_steps": 1, "share": False})
    evil = tmp_path / "evil" / "stage-00.pt"
    evil.parent.mkdir()
    torch.save({"format": "deepcomp-checkpoint", "x": _RunsCode()}, evil)
    with pytest.raises(ckpt.CheckpointError, match="cannot read checkpoint"):
        ckpt.read(evil)
    with pytest.raises(DeepcompError, match="--resume needs --checkpoint-dir"):
        pipeline.compress("deepcomp:lenet300", None, resume=True, test_set=test_subset, **KW)


def test_cli_device_mistake_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["compress", "deepcomp:lenet300", "o.dcz", "--data", "fashion-mnist", "--quiet",
               "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1
