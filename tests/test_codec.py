"""Encode -> decode is bit-exact, picks the cheapest encoding, and exposes compressed forms."""
import os
import warnings

import numpy as np
import pytest
import torch

import deepcomp
from deepcomp.codec import (
    RawTensor,
    SharedDense,
    SharedSparse,
    decode,
    open_dcz,
    save,
    write_state_dict,
)
from deepcomp.codec.tensors import sparse_streams
from deepcomp.models import checkpoint_dir

CHECKPOINTS = checkpoint_dir()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8))


def shared_sparse(shape, density, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(k, generator=g)
    idx = torch.randint(0, k, shape, generator=g)
    keep = torch.rand(shape, generator=g) < density
    return torch.where(keep, book[idx], torch.zeros(()))


def roundtrip(sd, tmp_path, **kw):
    p = tmp_path / "m.dcz"
    kw.setdefault("version", 1)  # these tests pin the Huffman (v1) layout; tests/test_codec_v2.py covers v2
    summary = write_state_dict(sd, p, **kw)
    assert summary["file_bytes"] == p.stat().st_size
    return decode(p), open_dcz(p), summary


def test_bit_exact_on_mixed_state_dict(tmp_path):
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3.0] * 10)
    nan_payload = torch.tensor([0x7FC00001, 0xFFC12345], dtype=torch.int64).to(torch.int32).view(torch.float32)
    sd = {
        "fc1.weight": shared_sparse((300, 784), 0.08, 64),
        "fc2.weight": shared_sparse((100, 300), 0.3, 256, seed=1),
        "conv.weight": shared_sparse((20, 3, 5, 5), 0.5, 200, seed=2),
        "dense.weight": torch.randint(-3, 4, (64, 64), generator=g).float(),
        "random.weight": torch.randn(50, 60, generator=g),
        "special": special,
        "nan_payload": nan_payload,
        "bias": torch.randn(300, generator=g),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 7),
        "steps": torch.tensor(12345, dtype=torch.int64),
        "half": torch.randn(9, generator=g).half(),
        "bf": torch.randn(9, generator=g).bfloat16(),
        "double": torch.randn(3, 3, generator=g).double(),
        "mask": torch.rand(17, generator=g) > 0.5,
        "u8": torch.randint(0, 255, (5,), generator=g, dtype=torch.uint8),
        "i8": torch.randint(-100, 100, (5,), generator=g, dtype=torch.int8),
        "i16": torch.randint(-100, 100, (5,), generator=g, dtype=torch.int16),
        "i32": torch.randint(-100, 100, (5,), generator=g, dtype=torch.int32),
        "noncontig": torch.randn(8, 6, generator=g).t(),
    }
    out, f, _ = roundtrip(sd, tmp_path)
    assert list(out) == list(sd) == f.names
    for k in sd:
        assert same_bits(out[k], sd[k].contiguous()), k
    enc = {r.name: r.encoding for r in f.parsed.tensors}
    assert enc["fc1.weight"] == "shared_sparse"
    assert enc["dense.weight"] == "shared_dense"
    assert enc["random.weight"] == "raw"
    assert enc["special"] == "shared_dense"
    assert enc["bias"] == "raw"


@pytest.mark.parametrize("seed", range(6))
def test_random_tensors_round_trip(tmp_path, seed):
    rng = np.random.default_rng(seed)
    sd = {}
    for i in range(6):
        shape = tuple(int(d) for d in rng.integers(1, 40, int(rng.integers(1, 5))))
        density = float(rng.choice([0.0, 0.001, 0.05, 0.5, 1.0]))
        k = int(rng.integers(1, 257))
        sd[f"t{i}"] = shared_sparse(shape, density, k, seed=seed * 10 + i)
    out, f, _ = roundtrip(sd, tmp_path)
    for k in sd:
        assert same_bits(out[k], sd[k]), k
        c = f.compressed(k)
        dense = f.dense(k)
        if isinstance(c, SharedSparse):
            rows = c.shape[0]
            cols = int(np.prod(c.shape[1:]))
            m = np.zeros((rows, cols), np.float32)
            for r in range(rows):
                s, e = c.indptr[r], c.indptr[r + 1]
                assert np.all(np.diff(c.indices[s:e].astype(np.int64)) > 0)
                m[r, c.indices[s:e]] = c.codebook[c.codes[s:e]]
            assert np.array_equal(m.reshape(-1).view(np.uint32), dense.numpy().reshape(-1).view(np.uint32))
        elif isinstance(c, SharedDense):
            assert np.array_equal(c.codebook[c.codes].view(np.uint32), dense.numpy().reshape(-1).view(np.uint32))
        else:
            assert isinstance(c, RawTensor)


def test_compressed_forms_have_kernel_ready_types(tmp_path):
    sd = {"fc.weight": shared_sparse((30, 40), 0.2, 16), "conv.weight": shared_sparse((16, 8, 3, 3), 0.05, 8),
          "wide": shared_sparse((2, 70000), 0.001, 4), "d": torch.randint(0, 3, (10, 10)).float(),
          "b": torch.randn(30)}
    _, f, _ = roundtrip(sd, tmp_path)
    c = f.compressed("fc.weight")
    assert isinstance(c, SharedSparse)
    assert c.codebook.dtype == np.float32 and c.indptr.dtype == np.int32 and c.codes.dtype == np.uint8
    assert c.indices.dtype == np.uint16 and c.indptr.shape == (31,) and c.indptr[-1] == c.codes.size
    assert all(a.flags.c_contiguous for a in (c.codebook, c.indptr, c.indices, c.codes))
    assert f.compressed("wide").indices.dtype == np.int32
    assert f.compressed("conv.weight").indptr.shape == (17,)
    d = f.compressed("d")
    assert isinstance(d, SharedDense) and d.codes.dtype == np.uint8 and d.codes.shape == (100,)
    r = f.compressed("b")
    assert isinstance(r, RawTensor) and r.array.dtype == np.float32
    with pytest.raises(KeyError, match="no tensor named"):
        f.compressed("missing")


def test_writer_picks_fewest_bytes_and_records_why(tmp_path):
    sd = {"w": shared_sparse((200, 200), 0.1, 32)}
    _, f, summary = roundtrip(sd, tmp_path)
    r = f.parsed.tensors[0]
    why = r.why
    assert set(why) >= {"raw", "shared_dense"} and sum(c.startswith("b") for c in why) == 2
    chosen = f"b{r.fields['index_bits']}" if r.encoding == "shared_sparse" else r.encoding
    assert why[chosen] == r.length == min(why.values())
    # Density 10% means typical gaps near 9: a 2-bit index would need many fillers.
    assert chosen != "b2"


def test_fillers_cover_long_gaps():
    positions = np.array([0, 3, 40, 41, 300], np.int64)
    codes = np.array([1, 0, 2, 2, 1])
    rel, cod = sparse_streams(positions, codes, 3, 3)
    # replay the format's rule: each entry steps by rel + 1, fillers carry code k = 3
    pos, real = -1, []
    for r_, c_ in zip(rel.tolist(), cod.tolist()):
        pos += r_ + 1
        if c_ == 3:
            assert r_ == 7
        else:
            real.append((pos, c_))
    assert real == list(zip(positions.tolist(), codes.tolist()))
    assert (cod == 3).sum() == (36 // 8) + (258 // 8)


def test_single_value_and_all_zero_tensors(tmp_path):
    sd = {"ones": torch.ones(1000, 10), "zeros": torch.zeros(64, 64), "negzero": torch.full((5, 5), -0.0),
          "one_nz": torch.zeros(100, 100)}
    sd["one_nz"][99, 99] = 1.0
    out, f, _ = roundtrip(sd, tmp_path)
    for k in sd:
        assert same_bits(out[k], sd[k]), k
    assert f.parsed.tensors[0].length < 64  # one codebook entry and a single-symbol stream
    assert f.compressed("zeros").codes.size == 0 or f.parsed.tensors[1].encoding == "shared_dense"


def test_fp16_only_on_request_and_only_for_unshareable(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd = {"w": torch.randn(20, 20, generator=g), "d": torch.randint(0, 4, (20, 20), generator=g).float()}
    out, f, _ = roundtrip(sd, tmp_path, fp16=True)
    r = {x.name: x for x in f.parsed.tensors}
    assert r["w"].fields["storage"] == "float16" and out["w"].dtype == torch.float32
    assert torch.equal(out["w"], sd["w"].half().float())
    assert same_bits(out["d"], sd["d"])


def test_graph_and_meta_sections(tmp_path):
    graph = {"nodes": [{"op": "linear", "name": "fc"}], "note": "stored as given ü"}
    p = tmp_path / "g.dcz"
    write_state_dict({"w": torch.ones(2)}, p, graph=graph, meta={"source": "test"})
    f = open_dcz(p)
    assert f.graph == graph and f.meta == {"source": "test"}
    write_state_dict({"w": torch.ones(2)}, p)
    f = open_dcz(p)
    assert f.graph is None and f.meta == {}


def test_sections_are_aligned_for_mapping(tmp_path):
    _, f, _ = roundtrip({"a": torch.randn(3), "b": torch.randn(100, 3), "c": torch.randn(7)}, tmp_path)
    for r in f.parsed.tensors:
        assert r.offset % 64 == 0


def test_failed_write_leaves_nothing(tmp_path):
    p = tmp_path / "out.dcz"
    with pytest.raises(deepcomp.DeepcompError):
        write_state_dict({"ok": torch.ones(3), "bad": "not a tensor"}, p)
    with pytest.raises(deepcomp.DeepcompError):
        write_state_dict({"c": torch.ones(3, dtype=torch.complex64)}, p)
    assert os.listdir(tmp_path) == []
    p.write_bytes(b"previous")
    with pytest.raises(deepcomp.DeepcompError):
        write_state_dict({"bad": 3}, p)
    assert p.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.dcz"]


def test_interrupted_write_removes_temp_file(tmp_path, monkeypatch):
    import deepcomp.codec.writer as w

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(w.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_state_dict({"a": torch.ones(3)}, tmp_path / "x.dcz")
    assert os.listdir(tmp_path) == []


def test_save_without_bits_keeps_few_valued_tensors_and_shares_others(tmp_path):
    g = torch.Generator().manual_seed(5)
    few = shared_sparse((40, 50), 0.3, 200)
    many = torch.randn(30, 20, generator=g)
    conv = torch.randn(8, 3, 3, 3, generator=g)
    bias = torch.randn(30, generator=g)
    p = tmp_path / "s.dcz"
    save({"few.weight": few, "many.weight": many, "conv.weight": conv, "many.bias": bias}, p)
    out = decode(p)
    assert same_bits(out["few.weight"], few)
    assert same_bits(out["many.bias"], bias)
    assert torch.unique(out["many.weight"]).numel() <= 32
    assert torch.unique(out["conv.weight"]).numel() <= 256
    assert (out["many.weight"] - many).abs().max() < 0.5


def test_save_with_prune_and_bits(tmp_path):
    g = torch.Generator().manual_seed(6)
    sd = {"fc.weight": torch.randn(100, 80, generator=g), "fc.bias": torch.randn(100, generator=g),
          "conv.weight": torch.randn(6, 2, 3, 3, generator=g)}
    p = tmp_path / "pb.dcz"
    save(sd, p, prune="sparsity:0.9", bits={"fc": 4, "conv": 6})
    f = open_dcz(p)
    out = decode(p)
    w = out["fc.weight"]
    assert (w != 0).float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert torch.unique(w[w != 0]).numel() <= 16
    assert torch.unique(out["conv.weight"]).numel() <= 65
    assert same_bits(out["fc.bias"], sd["fc.bias"])
    assert {r.name: r.encoding for r in f.parsed.tensors}["fc.weight"] in ("shared_sparse", "ac_shared")
    with pytest.raises(deepcomp.DeepcompError, match="unknown layer kind"):
        save(sd, p, bits={"attention": 4})


def test_save_module_stores_graph_or_weights_only(tmp_path):
    from deepcomp.models import get_model

    m = get_model("deepcomp:lenet300")
    p = tmp_path / "m.dcz"
    save(m, p, graph=False)
    f = open_dcz(p)
    assert f.graph is None and set(f.names) == set(m.state_dict())
    save(m, p)
    f = open_dcz(p)
    assert isinstance(f.graph, dict)


def test_save_module_with_unsupported_op_warns_and_stores_weights(tmp_path):

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return torch.fft.fft(self.fc(x)).real

    p = tmp_path / "o.dcz"
    with pytest.warns(UserWarning, match="weights only"):
        save(Odd(), p)
    assert open_dcz(p).graph is None
    with pytest.raises(deepcomp.UnsupportedOpError):
        save(Odd(), p, graph=True)


@pytest.mark.parametrize("name,layers", [
    ("lenet300", {"fc1.weight": 0.08, "fc2.weight": 0.09, "fc3.weight": 0.26}),
    ("lenet5", {"conv1.weight": 0.66, "conv2.weight": 0.12, "fc1.weight": 0.08, "fc2.weight": 0.19}),
])
def test_real_pruned_shared_lenet_round_trips(tmp_path, name, layers):
    from deepcomp.models import get_model
    from deepcomp.prune import mask_sparsity
    from deepcomp.share import share_tensor

    path = CHECKPOINTS / f"{name}.pt"
    if path.is_file():
        sd = torch.load(path, weights_only=True)
    else:
        torch.manual_seed(0)
        sd = get_model(f"deepcomp:{name}").state_dict()
    sd = dict(sd)
    for k, density in layers.items():
        w = sd[k]
        w = torch.where(mask_sparsity(w, 1 - density), w, torch.zeros(()))
        sd[k] = share_tensor(w, 8 if w.dim() == 4 else 5)
    p = tmp_path / f"{name}.dcz"
    summary = write_state_dict(sd, p)
    out = decode(p)
    for k in sd:
        assert same_bits(out[k], sd[k]), k
    assert summary["ratio"] > 15
    for k in (k for k, d in layers.items() if d < 0.3):
        assert {r.name: r.encoding for r in open_dcz(p).parsed.tensors}[k] in ("shared_sparse", "ac_shared")
    # version 2 is never larger than the Huffman-only version 1, tensor by tensor
    v1 = write_state_dict(sd, tmp_path / "v1.dcz", version=1)
    assert summary["file_bytes"] < v1["file_bytes"]
    for k in sd:
        assert summary["tensors"][k]["bytes"] <= v1["tensors"][k]["bytes"], k


def test_public_api(tmp_path):
    p = tmp_path / "api.dcz"
    sd = {"a.weight": shared_sparse((10, 10), 0.5, 4)}
    summary = deepcomp.save(sd, p)
    assert summary["file_bytes"] == p.stat().st_size
    assert same_bits(deepcomp.decode(p)["a.weight"], sd["a.weight"])
    with pytest.raises(deepcomp.DeepcompError, match="no such file"):
        deepcomp.decode(tmp_path / "missing.dcz")
    warnings.simplefilter("error")


def test_tensors_too_long_for_a_stream_stay_raw(tmp_path, monkeypatch):
    import deepcomp.codec.tensors as tensors

    monkeypatch.setattr(tensors, "MAX_STREAM_COUNT", 10)
    sd = {"small": torch.zeros(3, 3), "long": torch.zeros(4, 5)}
    _, f, _ = roundtrip(sd, tmp_path)
    enc = {r.name: r.encoding for r in f.parsed.tensors}
    assert enc == {"small": "shared_dense", "long": "raw"}


def test_unwritable_destinations_are_user_errors(tmp_path):
    with pytest.raises(deepcomp.DeepcompError, match="is a directory"):
        write_state_dict({"a": torch.ones(2)}, tmp_path)
    with pytest.raises(deepcomp.DeepcompError, match="does not exist"):
        write_state_dict({"a": torch.ones(2)}, tmp_path / "no" / "x.dcz")
