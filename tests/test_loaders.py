"""Reading user model files: formats by content, safe by default, clear errors otherwise."""
import json
import struct

import pytest
import torch

from deepcomp.errors import ModelError
from deepcomp.loaders import load_model_file, read_safetensors
from deepcomp.models import get_model
from safetensors_writer import safetensors_bytes


def mixed_sd():
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 4, generator=g), "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 2, generator=g).bfloat16(), "f64": torch.randn(2, generator=g).double(),
        "i64": torch.arange(4), "i32": torch.arange(3, dtype=torch.int32), "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.tensor([250], dtype=torch.uint8), "b": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3), "scalar": torch.tensor(1.5),
    }


def test_safetensors_all_dtypes(tmp_path):
    sd = mixed_sd()
    p = tmp_path / "m.safetensors"
    p.write_bytes(safetensors_bytes(sd, metadata={"format": "pt"}))
    out = read_safetensors(p)
    assert list(out) == list(sd)
    for k in sd:
        assert out[k].dtype == sd[k].dtype and out[k].shape == sd[k].shape and torch.equal(out[k], sd[k]), k
    r = load_model_file(p)
    assert r.kind == "safetensors" and set(r.obj) == set(sd)


def _st(header: dict, body: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


@pytest.mark.parametrize("header,body,match", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16, "offset"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 16, "offset for tensor `w`"),
    ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "unsupported safetensors dtype"),
    ({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown variant `X9`"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "integer `-1`"),
    ({"w": {"shape": [1]}}, b"\0" * 4, "missing field `dtype`"),
    ({"w": 3}, b"", "not a valid safetensors file"),
])
def test_safetensors_malformed(tmp_path, header, body, match):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(_st(header, body))
    with pytest.raises(ModelError, match=match) as e:
        load_model_file(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p)) and len(msg) < 400


def test_safetensors_header_past_end(tmp_path):
    p = tmp_path / "bad.safetensors"
    data = _st({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    for cut in (20, 40, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="truncated or damaged"):
            read_safetensors(p)


def test_safetensors_written_by_the_library_round_trips(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v for k, v in mixed_sd().items()}
    p = tmp_path / "lib.safetensors"
    save_file(sd, str(p), metadata={"format": "pt"})
    r = load_model_file(p)
    assert r.kind == "safetensors" and set(r.obj) == set(sd)
    assert all(torch.equal(r.obj[k], sd[k]) and r.obj[k].dtype == sd[k].dtype for k in sd)


def test_state_dict_and_nested_checkpoint(tmp_path):
    sd = get_model("deepcomp:lenet300").state_dict()
    p = tmp_path / "sd.pt"
    torch.save(sd, p)
    r = load_model_file(p)
    assert r.kind == "state_dict" and set(r.obj) == set(sd)
    torch.save({"state_dict": sd, "epoch": 3}, p)
    assert set(load_model_file(p).obj) == set(sd)
    torch.save({"w": torch.ones(2), "note": "text"}, p)
    with pytest.raises(ModelError, match="not a tensor"):
        load_model_file(p)
    torch.save([torch.ones(2)], p)
    with pytest.raises(ModelError, match="does not hold a state_dict"):
        load_model_file(p)


def test_arch_pairs_state_dict(tmp_path):
    sd = get_model("deepcomp:lenet5").state_dict()
    p = tmp_path / "sd.pt"
    torch.save(sd, p)
    r = load_model_file(p, arch="deepcomp:lenet5")
    assert isinstance(r.obj, torch.nn.Module) and not r.obj.training
    with pytest.raises(ModelError, match="does not match"):
        load_model_file(p, arch="deepcomp:lenet300")


def test_torchscript_and_export(tmp_path):
    m = get_model("deepcomp:lenet300").eval()
    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(m), ts)
    r = load_model_file(ts)
    assert r.kind == "torchscript" and torch.equal(r.obj["fc1.weight"], m.fc1.weight)
    ep = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(1, 784),)), ep)
    r = load_model_file(ep)
    assert r.kind == "torch.export" and torch.equal(r.obj["fc2.weight"], m.fc2.weight)
    assert isinstance(load_model_file(ts, arch="deepcomp:lenet300").obj, torch.nn.Module)


class _Cumprod(torch.nn.Module):  # cumprod is outside the graph's allow-list
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).cumprod(1)


def test_export_with_an_unsupported_op_keeps_the_weights(tmp_path):
    m = torch.nn.Sequential(_Cumprod()).eval()
    ep = tmp_path / "sig.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(2, 4),)), ep)
    with pytest.warns(UserWarning, match="weights only"):
        r = load_model_file(ep)
    assert r.graph is None and torch.equal(r.obj["0.fc.weight"], m[0].fc.weight)


def test_pickled_module_refused_unless_opted_in(tmp_path):
    p = tmp_path / "full.pt"
    torch.save(get_model("deepcomp:lenet300"), p)
    with pytest.raises(ModelError, match="unsafe-pickle"):
        load_model_file(p)
    r = load_model_file(p, unsafe_pickle=True)
    assert r.kind == "pickled module" and isinstance(r.obj, torch.nn.Module)
    with pytest.raises(ModelError, match="--arch pairs"):
        load_model_file(p, arch="deepcomp:lenet300", unsafe_pickle=True)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model_file(tmp_path / "nope.pt")
    with pytest.raises(ModelError, match="directory"):
        load_model_file(tmp_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="not a model file"):
        load_model_file(junk)
    z = tmp_path / "z.pt"
    import zipfile
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("archive/readme.txt", "hello")
    with pytest.raises(ModelError):
        load_model_file(z)
