"""deepcomp.progress: tqdm bars for long encodes, drawn only on a terminal and when asked."""
import io
import sys
import threading

import torch
from torch import nn

import deepcomp
from deepcomp.cli import main
from deepcomp.progress import element_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def _final(text: str, desc: str) -> str:
    """The last redraw of the bar named ``desc``."""
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.startswith(desc)]
    assert lines, f"no {desc!r} bar in {text!r}"
    return lines[-1]


def test_save_draws_share_and_encode_bars_on_a_terminal(monkeypatch, tmp_path):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    deepcomp.save(_model(), tmp_path / "a.dcz", prune="sparsity:0.5", bits={"fc": 4}, progress=True)
    text = tty.getvalue()
    # share counts the two weight matrices; encode every tensor, biases included.
    assert "3.55k/3.55k" in _final(text, "share")
    assert "3.61k/3.61k" in _final(text, "encode")


def test_bars_do_not_change_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stderr", _Tty())
    deepcomp.save(_model(), tmp_path / "a.dcz", bits={"fc": 5}, progress=True)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    deepcomp.save(_model(), tmp_path / "b.dcz", bits={"fc": 5})
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()


def test_silent_in_a_log_or_when_not_asked(monkeypatch, tmp_path):
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    deepcomp.save(_model(), tmp_path / "a.dcz", bits={"fc": 5}, progress=True)
    assert pipe.getvalue() == ""
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    deepcomp.save(_model(), tmp_path / "b.dcz", bits={"fc": 5})
    assert tty.getvalue() == ""


def test_one_shot_search_has_its_bar(monkeypatch, tmp_path):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    deepcomp.save(_model(), tmp_path / "a.dcz", bits="auto", max_rel_error=0.05, progress=True)
    assert "3.55k/3.55k" in _final(tty.getvalue(), "bits auto")


def test_cli_encode_bars_and_quiet(monkeypatch, tmp_path):
    src = tmp_path / "m.pt"
    torch.save(_model().state_dict(), src)
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["encode", str(src), str(tmp_path / "a.dcz"), "--bits", "fc=5"]) == 0
    assert "3.61k/3.61k" in _final(tty.getvalue(), "encode")
    quiet = _Tty()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main(["encode", str(src), str(tmp_path / "b.dcz"), "--bits", "fc=5", "--quiet"]) == 0
    assert "encode" not in quiet.getvalue()


def test_element_bar_counts_from_worker_threads():
    tty = _Tty()
    sizes = [torch.empty(n) for n in (1000, 2000, 3000) * 30]  # a lost update shows as 17xk
    old = sys.stderr
    sys.stderr = tty
    try:
        with element_bar(sizes, "work", True) as done:
            threads = [threading.Thread(target=lambda t=t: done(None, t)) for t in sizes]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
    finally:
        sys.stderr = old
    assert "180k/180k" in _final(tty.getvalue(), "work")
