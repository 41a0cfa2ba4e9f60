"""Dead-neuron removal (deepcomp.shrink): shapes shrink, outputs stay, files run alone."""
import copy

import pytest
import torch
from torch import nn

import deepcomp
from deepcomp.models import LeNet5, LeNet300
from deepcomp.shrink import remove_dead_units


def _prune_random(model, keep, seed=0, skip=()):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("weight") and p.dim() >= 2 and n not in skip:
                p.mul_((torch.rand(p.shape, generator=g) < keep).to(p.dtype))


def _close(a, b):
    scale = max(1.0, float(b.abs().max()))
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= 1e-6 * scale * 10


def test_mlp_units_without_inputs_or_outputs_go_and_outputs_stay():
    torch.manual_seed(0)
    net = LeNet300()
    with torch.no_grad():
        net.fc1.weight[[3, 7, 250]] = 0                  # no inputs: constant ReLU(bias)
        net.fc1.bias[3] = 0.7                            # positive: a real constant to fold
        net.fc1.bias[7] = -0.4                           # negative: ReLU gives 0
        net.fc2.weight[:, [11, 12]] = 0                  # fc1 units 11, 12 feed nothing
        net.fc2.weight[[5, 60]] = 0                      # fc2 units with no inputs
        net.fc3.weight[:, 99] = 0                        # fc2 unit 99 feeds nothing
    ref = copy.deepcopy(net).eval()
    x = torch.randn(64, 1, 28, 28)
    rep = remove_dead_units(net, x[:32])
    assert net.fc1.weight.shape == (300 - 5, 784)
    assert net.fc1.bias.shape == (295,)
    assert net.fc2.weight.shape == (100 - 3, 295)
    assert net.fc3.weight.shape == (10, 97)
    assert net.fc1.out_features == 295 and net.fc2.in_features == 295
    assert rep.before["fc1"] == [300, 784] and rep.after["fc1"] == [295, 784]
    assert rep.to_dict() == {"fc1": [[300, 784], [295, 784]], "fc2": [[100, 300], [97, 295]],
                             "fc3": [[10, 100], [10, 97]]}
    with torch.no_grad():
        _close(net.eval()(x), ref(x))  # also on inputs the removal never saw


def test_positive_bias_without_inputs_is_folded_into_the_next_bias():
    a, b = nn.Linear(3, 2), nn.Linear(2, 2)
    net = nn.Sequential(a, nn.ReLU(), b)
    with torch.no_grad():
        a.weight[1] = 0
        a.bias[1] = 0.5
        b.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -4.0]]))
        b.bias.copy_(torch.tensor([0.1, 0.2]))
    remove_dead_units(net, torch.randn(8, 3))
    assert a.weight.shape == (1, 3) and b.weight.shape == (2, 1)
    assert torch.allclose(b.bias.detach(), torch.tensor([0.1 + 2.0 * 0.5, 0.2 - 4.0 * 0.5]))
    assert torch.equal(b.weight.detach(), torch.tensor([[1.0], [3.0]]))


def test_lenet5_channels_and_units_shrink_and_outputs_stay():
    torch.manual_seed(1)
    net = LeNet5()
    _prune_random(net, 0.3, skip=("fc2.weight",))  # random zeros in fc2 would empty columns
    with torch.no_grad():
        net.conv1.weight[[2, 9]] = 0            # conv1 channels with no inputs (constant maps)
        net.conv1.bias[2] = 0.3
        net.conv2.weight[[0, 17, 30]] = 0       # conv2 channels: constant, folded into fc1
        net.conv2.bias[17] = 0.25
        net.fc2.weight[:, [4, 400]] = 0         # fc1 units that feed nothing
    ref = copy.deepcopy(net).eval()
    x = torch.randn(16, 1, 28, 28)
    rep = remove_dead_units(net, x)
    assert net.conv1.weight.shape == (18, 1, 5, 5)
    assert net.conv2.weight.shape == (47, 18, 5, 5)
    assert net.fc1.weight.shape == (498, 47 * 16)
    assert net.fc2.weight.shape == (10, 498)
    assert rep.removed == {"conv1": 2, "conv2": 3, "fc1": 2}
    with torch.no_grad():
        y = torch.randn(16, 1, 28, 28) * 3
        _close(net(y), ref(y))


def test_a_padded_conv_consumer_keeps_a_channel_it_cannot_fold():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    with torch.no_grad():
        net[0].weight[1] = 0
        net[0].bias[1] = 0.8
    ref = copy.deepcopy(net)
    x = torch.randn(4, 1, 9, 9)
    remove_dead_units(net, x)
    assert net[0].weight.shape[0] == 4  # its constant map is zero-padded at the border
    with torch.no_grad():
        _close(net(x), ref(x))


def test_a_skip_connection_is_rolled_back():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h) + h  # h is used twice: folding only into b would be wrong

    torch.manual_seed(2)
    net = Skip()
    with torch.no_grad():
        net.a.weight[2] = 0
        net.a.bias[2] = 0.9
    ref = copy.deepcopy(net)
    x = torch.randn(8, 6)
    rep = remove_dead_units(net, x)
    assert net.a.weight.shape == (6, 6) and not rep.changed
    with torch.no_grad():
        _close(net(x), ref(x))


def test_shrunk_file_runs_from_the_file_alone(tmp_path):
    from deepcomp.share import finalize, quantize_model

    torch.manual_seed(3)
    net = LeNet300().eval()
    _prune_random(net, 0.05)
    with torch.no_grad():
        net.fc1.weight[:40] = 0
        net.fc1.bias[:40] = 0.2
    # Shared first, as the pipeline does: the file then stores these weights exactly.
    quantize_model(net, {"fc": 5}, "linear", 0)
    finalize(net)
    ref = copy.deepcopy(net)
    x = torch.randn(32, 1, 28, 28)
    remove_dead_units(net, x)
    assert net.fc1.weight.shape[0] <= 260
    path = tmp_path / "s.dcz"
    deepcomp.save(net, path)
    m = deepcomp.load(path)
    with torch.no_grad():
        _close(m(x), ref(x))
    sd = deepcomp.decode(path)
    assert tuple(sd["fc1.weight"].shape) == tuple(net.fc1.weight.shape)


def test_nothing_to_remove_leaves_the_model_alone():
    net = LeNet300()
    w = net.fc1.weight.detach().clone()
    rep = remove_dead_units(net, torch.randn(4, 784))
    assert not rep.changed and torch.equal(net.fc1.weight.detach(), w)
    assert "shapes unchanged" in rep.table()
