"""torchrun + DDP on 2 CPU processes (gloo): agreement checks, failures, a real compress run."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepcomp.distributed import resolve_device, setup, tensors_crc
from deepcomp.errors import DeepcompError

ROOT = Path(__file__).resolve().parent.parent


def _torchrun(args, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_crc_sees_names_shapes_dtypes_and_bytes():
    a = {"x": torch.arange(6.0)}
    assert tensors_crc(a) == tensors_crc({"x": torch.arange(6.0)})
    assert tensors_crc(a) != tensors_crc({"y": torch.arange(6.0)})
    assert tensors_crc(a) != tensors_crc({"x": torch.arange(6.0).reshape(2, 3)})
    assert tensors_crc(a) != tensors_crc({"x": torch.arange(6.0, dtype=torch.float64)})
    b = torch.arange(6.0)
    b[3] = -b[3]
    assert tensors_crc(a) != tensors_crc({"x": b})
    assert tensors_crc({"m": torch.tensor([True, False])}) != tensors_crc({"m": torch.tensor([False, True])})


def test_single_process_and_devices():
    d = setup("cpu")
    assert (d.rank, d.world_size, d.enabled, d.is_main) == (0, 1, False, True)
    d.barrier("nothing to wait for")
    assert d.check_identical({"w": {"a": torch.ones(2)}}, "x")["w"] == tensors_crc({"a": torch.ones(2)})
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeepcompError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeepcompError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(DeepcompError, match="dist-timeout"):
        setup("cpu", timeout_s=0)


def test_ranks_agree_disagree_and_a_stalled_rank_fails(tmp_path):
    r = _torchrun([str(ROOT / "tests" / "dist_worker.py")], tmp_path, timeout=180)
    out, err = r.stdout, r.stderr
    crcs = re.findall(r"agree rank (\d) crc (\w+)", out)
    assert sorted(c[0] for c in crcs) == ["0", "1"] and crcs[0][1] == crcs[1][1]
    for rank in "01":
        assert f"differ rank {rank} raised: differ: the codebooks differ between ranks" in out
    # Rank 1 never reaches the barrier: rank 0 says so and the run ends with an error.
    assert "stall rank 0 raised: rank 0/2: stall: another process failed or did not answer " \
           "within 3 s" in err
    assert "Ranks 1 failed to pass monitoredBarrier" in err
    assert r.returncode != 0


def test_torchrun_compress_two_processes(tmp_path):
    r = _torchrun(["-m", "deepcomp", "compress", "deepcomp:lenet300", "out.dcz",
                   "--data", "fashion-mnist", "--subset", "600", "--prune-steps", "2",
                   "--epochs", "0.3", "--finetune-epochs", "0.2", "--keep", "fc1=0.3,fc2=0.5,fc3=0.8",
                   "--bits", "fc=4", "--quiet", "--device", "cpu", "--checkpoint-dir", "ck"],
                  tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    err = r.stderr
    assert "[ddp] 2 processes (gloo), device cpu" in err
    # After every stage all ranks' checksums were gathered and found equal.
    for stage in ["dense", "prune 1/2", "prune 2/2", "share (linear)", "share + fine-tune"]:
        assert f"[sync {stage}] identical on 2 ranks" in err, stage
    assert re.search(r"\[sync prune 2/2\] .*masks crc32 [0-9a-f]{8}", err)
    assert re.search(r"\[sync share \(linear\)\] .*codebooks crc32 [0-9a-f]{8}", err)
    # Only rank 0 reports and writes: one table, one file, no temporary left behind.
    assert r.stdout.count("share + fine-tune") == 1 and r.stdout.count("wrote out.dcz") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "out.dcz"]
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["stage-04.pt"]
    from deepcomp.codec import decode

    sd = decode(tmp_path / "out.dcz")
    for layer, frac in {"fc1": 0.3, "fc2": 0.5, "fc3": 0.8}.items():
        w = sd[f"{layer}.weight"]
        assert (w != 0).float().mean().item() == pytest.approx(frac, abs=2e-3)
        assert torch.unique(w[w != 0]).numel() <= 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compress_pipeline(tmp_path):
    from deepcomp.data import fashion_mnist
    from deepcomp.pipeline import compress

    r = compress("deepcomp:lenet300", tmp_path / "o.dcz", keep={"fc1": 0.3, "fc2": 0.5, "fc3": 0.8},
                 prune_steps=1, epochs=0.3, finetune_epochs=0.2, bits={"fc": 4}, subset=2000,
                 progress=False, log=lambda s: None, device="cuda", amp=True,
                 test_set=fashion_mnist("test").subset(1000, seed=0))
    assert r.stage("share + fine-tune").accuracy > 70.0
    assert r.out.exists()
