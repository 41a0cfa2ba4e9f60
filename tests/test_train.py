"""deepcomp.train: the loop's tqdm progress (on a terminal only) and its return value."""
import io
import sys

import torch
from torch import nn

from deepcomp.data import TensorImageDataset
from deepcomp.plan import sensitivity
from deepcomp.train import progress_bar, train


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 6, 6, generator=g)
    return TensorImageDataset(x, (x.sum((1, 2, 3)) > 0).long())


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 2))


def test_tqdm_bar_on_a_terminal_shows_steps_epochs_loss_throughput(monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    out = train(_net(), _data(), epochs=2, batch_size=32, progress=True, desc="prune 1/4")
    text = tty.getvalue()
    assert out["steps"] == 6
    assert "prune 1/4" in text and "6/6" in text
    last = text.replace("\r", "\n").strip().splitlines()[-1]
    assert "epoch=2/2" in last and "loss=" in last and "img_s=" in last and "step" in last


def test_silent_off_a_terminal_or_when_asked(monkeypatch):
    pipe = io.StringIO()  # isatty() is False: a log file or a pipe
    monkeypatch.setattr(sys, "stderr", pipe)
    train(_net(), _data(), epochs=1, batch_size=32, progress=True)
    assert pipe.getvalue() == ""
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    train(_net(), _data(), epochs=1, batch_size=32, progress=False)
    assert tty.getvalue() == ""


def test_progress_bar_counts_to_total():
    tty = _Tty()
    bar = progress_bar(5, "x", stream=tty, unit="eval")
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert "5/5" in tty.getvalue() and "eval" in tty.getvalue()
    pipe = io.StringIO()
    bar = progress_bar(5, "x", stream=pipe)
    bar.update(5)
    bar.close()
    assert bar.disable and pipe.getvalue() == ""


def test_sensitivity_sweep_has_a_bar_and_keeps_the_callable_form(monkeypatch):
    net, data = _net(), _data()
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    res = sensitivity(net, data, keeps=(0.5, 0.1), bits=(4,), progress=True)
    # 2 layers x (2 kept fractions + 1 bits) evaluations
    assert "sensitivity" in tty.getvalue() and "6/6" in tty.getvalue()
    lines = []
    tty2 = _Tty()
    monkeypatch.setattr(sys, "stderr", tty2)
    res2 = sensitivity(net, data, keeps=(0.5, 0.1), bits=(4,), progress=lines.append)
    assert len(lines) == 4 and tty2.getvalue() == ""
    assert res.keep == res2.keep
