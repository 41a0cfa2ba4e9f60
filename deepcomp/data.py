"""Fashion-MNIST from its IDX files, as torch datasets.

The files are the ones Debian's ``dataset-fashion-mnist`` package installs
(``/usr/share/datasets/fashion-mnist``); ``$DEEPCOMP_DATA`` or an explicit ``root``
points elsewhere. Nothing is ever downloaded at run time.

Images come out as float32 tensors of shape 1 x 28 x 28, scaled to [0, 1] and then
normalised with the training set's mean and standard deviation
(``(x / 255 - 0.2860) / 0.3530``); labels are int64 class indices 0..9.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from deepcomp.errors import DataError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
MEAN = 0.2860
STD = 0.3530
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

# Data sets the command line accepts by name; others give a DataError listing these.
DATASETS = ("fashion-mnist",)


def default_root() -> Path:
    return Path(os.environ.get("DEEPCOMP_DATA") or DEFAULT_ROOT)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        p = root / name
        if p.is_file():
            return p
    raise DataError(
        f"missing Fashion-MNIST file {root / (stem + '.gz')}; install it with "
        f"'{INSTALL_HINT}' or point --data-dir / DEEPCOMP_DATA at a folder holding it"
    )


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    def corrupt(why: str) -> DataError:
        return DataError(
            f"corrupt Fashion-MNIST file {path}: {why}; reinstall it with "
            f"'apt-get install --reinstall -y dataset-fashion-mnist' ({INSTALL_HINT})"
        )

    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise corrupt(f"cannot read it ({e})") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(f"{len(raw)} bytes is shorter than the IDX header")
    got_magic = struct.unpack(">I", raw[:4])[0]
    if got_magic != magic:
        raise corrupt(f"IDX magic {got_magic:#010x}, expected {magic:#010x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise corrupt(f"{len(raw)} bytes, the header {list(dims)} implies {expected}")
    # A copy: frombuffer over bytes is read-only, and torch wants writable memory.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_arrays(split: str, root=None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 N x 28 x 28, labels int64 N) for split 'train' or 'test'."""
    if split not in _PREFIX:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    root = Path(root) if root is not None else default_root()
    prefix = _PREFIX[split]
    img_path = _find(root, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(img_path, _IMAGES_MAGIC, 3)
    labels = _read_idx(lbl_path, _LABELS_MAGIC, 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"corrupt Fashion-MNIST file {img_path}: images are "
                        f"{images.shape[1]}x{images.shape[2]}, expected 28x28 ({INSTALL_HINT})")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"Fashion-MNIST files disagree: {img_path} has {images.shape[0]} images "
                        f"but {lbl_path} has {labels.shape[0]} labels ({INSTALL_HINT})")
    if labels.size and labels.max() > 9:
        raise DataError(f"corrupt Fashion-MNIST file {lbl_path}: label {int(labels.max())} "
                        f"is out of range 0..9 ({INSTALL_HINT})")
    return images, labels.astype(np.int64)


class TensorImageDataset(Dataset):
    """Whole split held in memory: ``images`` float32 N x 1 x 28 x 28, ``targets`` int64 N.

    Training loops batch straight from these two tensors, which is much faster than
    going through a DataLoader item by item.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, name: str = ""):
        if images.shape[0] != targets.shape[0]:
            raise ValueError("images and targets differ in length")
        self.images = images
        self.targets = targets
        self.name = name

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, i):
        return self.images[i], self.targets[i]

    def take(self, idx: torch.Tensor, name: str = "") -> "TensorImageDataset":
        """The examples at positions ``idx`` (a view-free copy), keeping the source indices."""
        out = TensorImageDataset(self.images[idx], self.targets[idx], name or self.name)
        base = getattr(self, "source_index", None)
        out.source_index = idx.clone() if base is None else base[idx]
        return out

    def subset(self, n: int, seed: int = 0) -> "TensorImageDataset":
        """A seeded random subset of n examples (all of them when n >= len)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n]
        return self.take(idx, f"{self.name}[{n}]")


def split_train_val(dataset, n_val: int, seed: int = 0):
    """(train, validation): a seeded random ``n_val`` examples held out of ``dataset``.

    Both parts carry ``source_index``, their positions in ``dataset``, so a caller (and
    the tests) can check that no example is in both. Any other Dataset is split with
    torch's Subset, whose ``indices`` say the same.
    """
    n = len(dataset)
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 0 < n_val < n:
        raise DataError(f"--val must hold out between 1 and {n - 1} of the {n} training "
                        f"examples, got {n_val!r}")
    g = torch.Generator().manual_seed(int(seed) + 0x5EED)
    order = torch.randperm(n, generator=g)
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    if isinstance(dataset, TensorImageDataset):
        name = dataset.name or "train"
        return (dataset.take(train_idx, f"{name}[train]"), dataset.take(val_idx, f"{name}[val]"))
    from torch.utils.data import Subset

    return Subset(dataset, train_idx.tolist()), Subset(dataset, val_idx.tolist())


def normalise(images_u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32)
    x = (x / 255.0 - MEAN) / STD
    return x.unsqueeze(1).contiguous()


def fashion_mnist(split: str, root=None) -> TensorImageDataset:
    """The Fashion-MNIST 'train' (60,000) or 'test' (10,000) split as a torch Dataset."""
    images, labels = load_arrays(split, root)
    return TensorImageDataset(normalise(images), torch.from_numpy(labels),
                              f"fashion-mnist/{split}")


def get_dataset(name: str, split: str, root=None) -> TensorImageDataset:
    """Look a data set up by the name the command line uses."""
    if name == "fashion-mnist":
        return fashion_mnist(split, root)
    raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
