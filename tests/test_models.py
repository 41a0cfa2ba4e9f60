"""Reference models: architecture, parameter counts, name lookup, shipped checkpoints."""
import pickle

import pytest
import torch

from deepcomp.data import fashion_mnist
from deepcomp.errors import ModelError
from deepcomp.models import checkpoint_path, get_model, load_checkpoint, load_state_dict_file
from deepcomp.train import evaluate


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_lenet300_shape_and_count():
    m = get_model("deepcomp:lenet300")
    assert _count(m) == 266_610
    assert [n for n, _ in m.named_children()] == ["fc1", "fc2", "fc3"]
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    x = torch.randn(2, 784)
    assert torch.allclose(m(x), m(x.reshape(2, 1, 28, 28)))


def test_lenet5_shape_and_count():
    m = get_model("deepcomp:lenet5")
    assert _count(m) == 431_080
    assert [n for n, _ in m.named_children()] == ["conv1", "conv2", "fc1", "fc2"]
    assert m.conv1.weight.shape == (20, 1, 5, 5) and m.conv2.weight.shape == (50, 20, 5, 5)
    assert m.fc1.weight.shape == (500, 800)
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_by_name():
    m = get_model("torchvision:resnet18")
    assert m.fc.out_features == 1000 and _count(m) == 11_689_512


def test_unknown_names_list_known():
    with pytest.raises(ModelError, match="deepcomp:lenet300.*deepcomp:lenet5"):
        get_model("deepcomp:alexnet")
    with pytest.raises(ModelError, match="resnet18"):
        get_model("torchvision:resnet_nonexistent")


@pytest.mark.parametrize("name,floor", [("deepcomp:lenet300", 89.0), ("deepcomp:lenet5", 90.5)])
def test_shipped_checkpoint_is_trained(name, floor, one_thread):
    # Plain state_dicts: weights_only loading must work on the raw file.
    sd = torch.load(checkpoint_path(name), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    acc = evaluate(load_checkpoint(name), fashion_mnist("test"))
    assert acc >= floor


class Evil:
    """Any class outside torch's weights-only allow-list."""


def test_state_dict_file_refuses_pickled_objects(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": Evil()}, p)
    with pytest.raises(ModelError, match="weights-only"):
        load_state_dict_file(p)
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ModelError):
        load_state_dict_file(tmp_path / "junk.pt")
    with pytest.raises(ModelError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pt")
