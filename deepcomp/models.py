"""Reference models, addressable by name wherever deepcomp asks for a model.

``deepcomp:lenet300``  LeNet-300-100 (784-300-100-10; fc1, fc2, fc3; 266,610 parameters)
``deepcomp:lenet5``    LeNet-5 as in the Deep Compression paper (conv1 20@5x5, pool,
                       conv2 50@5x5, pool, fc1 500, fc2 10; 431,080 parameters)
``torchvision:NAME``   any torchvision.models builder, untrained (``weights=None``)

``load_checkpoint`` returns the deepcomp models with the dense weights trained on
Fashion-MNIST that ship in ``deepcomp/checkpoints/`` (plain state_dicts, loaded with
``weights_only=True``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deepcomp.errors import ModelError, brief, weights_only_reason


class LeNet300(nn.Module):
    """LeNet-300-100: two hidden fully connected layers of 300 and 100 ReLU units."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 in the Caffe variant the paper prunes (20 and 50 feature maps, 500 hidden)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # accept flattened 784-vectors like LeNet300 does
            x = x.reshape(-1, 1, 28, 28)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


_BUILTIN = {"lenet300": LeNet300, "lenet5": LeNet5}
_CHECKPOINT_FILES = {"lenet300": "lenet300.pt", "lenet5": "lenet5.pt"}


def known_models() -> list[str]:
    return [f"deepcomp:{k}" for k in _BUILTIN] + ["torchvision:NAME (e.g. torchvision:resnet18)"]


def _builtin_key(name: str) -> str | None:
    key = name[len("deepcomp:"):] if name.startswith("deepcomp:") else None
    return key if key in _BUILTIN else None


def get_model(name: str) -> nn.Module:
    """Build an untrained model by name (see the module docstring)."""
    if not isinstance(name, str):
        raise ModelError(f"a model name must be a string, got {type(name).__name__}")
    key = _builtin_key(name)
    if key is not None:
        return _BUILTIN[key]()
    if name.startswith("torchvision:"):
        arch = name[len("torchvision:"):]
        import torchvision

        available = torchvision.models.list_models()
        if arch not in available:
            raise ModelError(
                f"unknown torchvision architecture {arch!r}; torchvision "
                f"{torchvision.__version__} has: {', '.join(sorted(available))}"
            )
        return torchvision.models.get_model(arch, weights=None)
    raise ModelError(f"unknown model {name!r}; known: {', '.join(known_models())}")


def checkpoint_dir() -> Path:
    """Where the shipped dense checkpoints live ($DEEPCOMP_CHECKPOINTS overrides)."""
    env = os.environ.get("DEEPCOMP_CHECKPOINTS")
    if env:
        return Path(env)
    # Shipped inside the package (package data), so a plain `pip install .` has them too.
    return Path(__file__).resolve().parent / "checkpoints"


def checkpoint_path(name: str) -> Path:
    key = _builtin_key(name) or (name if name in _BUILTIN else None)
    if key is None:
        raise ModelError(
            f"no shipped checkpoint for {name!r}; trained checkpoints exist for "
            f"{', '.join('deepcomp:' + k for k in _CHECKPOINT_FILES)}"
        )
    return checkpoint_dir() / _CHECKPOINT_FILES[key]


def load_state_dict_file(path) -> dict:
    """torch.load a plain state_dict with weights_only=True, errors as ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, refused globals ...
        reason = weights_only_reason(e)
        if reason is not None:
            raise ModelError(f"{path} holds pickled Python objects, not only tensors; a weights-only load "
                             f"refuses them because loading them would run code from the file "
                             f"({reason.rstrip('.')}); "
                             "save model.state_dict() instead") from None
        raise ModelError(
            f"cannot read {path} as a weights-only state_dict ({type(e).__name__}: {brief(e)})"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path} does not hold a state_dict (a dict of name -> tensor)")
    return sd


def load_into(model: nn.Module, sd: dict, source: str = "state_dict") -> nn.Module:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelError(
            f"{source} does not match the architecture: {' '.join(x.strip() for x in first[:3])}"
        ) from None
    return model


def load_checkpoint(name: str) -> nn.Module:
    """The named deepcomp model with its shipped dense Fashion-MNIST weights, in eval mode."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise ModelError(
            f"shipped checkpoint {path} is missing; regenerate it with "
            f"'python benchmarks/train_baselines.py'"
        )
    model = get_model(name if name.startswith("deepcomp:") else f"deepcomp:{name}")
    load_into(model, load_state_dict_file(path), str(path))
    return model.eval()
