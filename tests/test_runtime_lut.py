"""The `lut` path of runtime layers: dense shared (codebook, unpruned) Linear weights run
on their codes, under the compact and exact policies, with nothing new resident."""
import pytest
import torch
import torch.nn as nn

import deepcomp
from deepcomp.codec import decode
from deepcomp.runtime import kernels, load, path_summary, resident_weight_bytes, runtime_layers, set_policy

pytestmark = pytest.mark.skipif(not kernels.native_available(), reason="native kernels missing")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(96, 200), nn.ReLU(), nn.Linear(200, 33)).eval()


@pytest.fixture(scope="module")
def shared_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("lut") / "mlp.dcz"
    deepcomp.save(_mlp(), p, bits={"fc": 8}, graph=False)  # shared, not pruned: dense codes
    return p


def _reference(p):
    m = _mlp()
    m.load_state_dict(decode(p))
    return m


@pytest.mark.parametrize("policy", ["lut", "compact", "exact"])
@pytest.mark.parametrize("batch", [1, 16])
def test_lut_path_matches_the_decoded_model(shared_file, policy, batch):
    m = load(shared_file, model=_mlp(), policy=policy)
    layers = runtime_layers(m)
    assert [l.form.kind for l in layers] == ["codes", "codes"]
    assert all("lut" in l.candidates() for l in layers)
    x = torch.randn(batch, 96, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        out, ref = m(x), _reference(shared_file)(x)
    paths = {p for d in path_summary(m).values() for p in d.values()}
    # 'compact' may take int8 where it fits the memory bar (test_runtime_compact.py), then
    # within int8's stated error; every other path here is exact.
    tol = 0.03 if "int8" in paths else 1e-5
    assert (out - ref).abs().max().item() <= tol * ref.abs().max().item()
    if policy == "lut":
        assert paths == {"lut"}
    else:
        for l in layers:
            (times,) = l.timings.values()
            assert "lut" in times
            if policy == "exact":
                assert "int8" not in times
            if policy == "compact":
                assert "dense" not in times


def test_lut_keeps_nothing_but_the_file_form(shared_file):
    m = load(shared_file, model=_mlp(), policy="lut")
    before = resident_weight_bytes(m)
    m(torch.randn(4, 96))
    assert all(set(l._prepared) == {"lut"} for l in runtime_layers(m))
    assert resident_weight_bytes(m) == before  # the LutWeight holds views of the codes
    set_policy(m, "dense")
    m(torch.randn(4, 96))
    assert resident_weight_bytes(m) > before + 4 * (96 * 200 + 200 * 33) * 0.9


def test_int8_path_from_the_codebook(shared_file):
    m = load(shared_file, model=_mlp(), policy="int8")
    x = torch.randn(8, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out, ref = m(x), _reference(shared_file)(x)
    assert {p for d in path_summary(m).values() for p in d.values()} == {"int8"}
    assert (out - ref).abs().max().item() <= 0.03 * ref.abs().max().item()


def test_cli_offers_every_policy():
    from deepcomp.runtime import layers, run_cmd

    assert run_cmd.POLICIES == layers.POLICIES
