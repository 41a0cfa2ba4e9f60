"""Fashion-MNIST from its IDX files, and image folders, as torch datasets.

The files are the ones Debian's ``dataset-fashion-mnist`` package installs
(``/usr/share/datasets/fashion-mnist``); ``$DEEPCOMP_DATA`` or an explicit ``root``
points elsewhere. Nothing is ever downloaded at run time.

Images come out as float32 tensors of shape 1 x 28 x 28, scaled to [0, 1] and then
normalised with the training set's mean and standard deviation
(``(x / 255 - 0.2860) / 0.3530``); labels are int64 class indices 0..9.

``imagefolder:PATH`` names a torchvision ImageFolder with ``train/`` and ``val/``
subfolders (one folder per class), decoded as RGB with optional resize and ImageNet
normalisation. Any other ``torch.utils.data.Dataset`` of (image, label) works through
the Python API.
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
DATASETS = ("fashion-mnist", "imagefolder:PATH")
# torchvision's ImageNet statistics, what models pretrained there expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE = ("imagenet", "none")
# The ImageFolder split each of deepcomp's splits reads.
_FOLDER_SPLIT = {"train": "train", "test": "val"}


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


def take_subset(dataset, n: int | None, seed: int = 0):
    """A seeded random ``n`` examples of any Dataset (all of it when n >= len)."""
    if hasattr(dataset, "subset"):
        return dataset.subset(n, seed)
    if n is None or n >= len(dataset):
        return dataset
    from torch.utils.data import Subset

    g = torch.Generator().manual_seed(seed)
    return Subset(dataset, torch.randperm(len(dataset), generator=g)[:n].sort().values.tolist())


def source_indices(dataset) -> torch.Tensor | None:
    """Positions of ``dataset``'s examples in the data it was split from (through Subsets)."""
    idx = getattr(dataset, "source_index", None)
    if idx is not None:
        return idx
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        own = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
        base = source_indices(dataset.dataset)
        return own if base is None else base[own]
    return None


def num_classes(dataset) -> int | None:
    """How many classes ``dataset`` labels (through Subsets), or None when it does not say."""
    while hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    if classes is not None and not isinstance(dataset, TensorImageDataset):
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, torch.Tensor) and targets.numel():
        return int(targets.max()) + 1
    if isinstance(targets, (list, tuple)) and targets:
        return int(max(targets)) + 1
    return None


def image_folder(root, split: str, *, image_size: int | None = None,
                 normalize: str = "imagenet"):
    """``root/train`` ('train') or ``root/val`` ('test') as a torchvision ImageFolder.

    One subfolder per class, the same class folders in both. Images are decoded as RGB,
    resized (shorter side) and centre-cropped to ``image_size`` when it is given (else
    they must all share one size), turned into float tensors in [0, 1] and, with
    ``normalize='imagenet'``, normalised with the ImageNet mean and standard deviation.
    """
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    if split not in _FOLDER_SPLIT:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    if normalize not in NORMALIZE:
        raise DataError(f"--normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f"--image-size must be a positive number of pixels, got {image_size!r}")
    root = Path(root)
    layout = (f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image> "
              f"(torchvision ImageFolder layout)")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; {layout}")
    folder = root / _FOLDER_SPLIT[split]
    if not folder.is_dir():
        raise DataError(f"image folder {root} has no {_FOLDER_SPLIT[split]}/ subfolder; {layout}")
    steps = []
    if image_size is not None:
        steps += [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    steps.append(transforms.ToTensor())
    if normalize == "imagenet":
        steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    try:
        ds = ImageFolder(str(folder), transform=transforms.Compose(steps))
    except (FileNotFoundError, OSError) as e:
        # ImageFolder says "Couldn't find any class folder" or "Found no valid file for the
        # classes ..."; the first line is the useful part.
        raise DataError(f"image folder {folder}: {str(e).splitlines()[0]}; {layout}") from None
    other = root / _FOLDER_SPLIT["test" if split == "train" else "train"]
    if other.is_dir():
        theirs = sorted(d.name for d in other.iterdir() if d.is_dir())
        if theirs != ds.classes:
            raise DataError(f"image folder {root}: train/ and val/ hold different class folders "
                            f"({', '.join(ds.classes) if split == 'train' else ', '.join(theirs)} vs "
                            f"{', '.join(theirs) if split == 'train' else ', '.join(ds.classes)}); "
                            f"the labels are the sorted class names, so both need the same ones")
    ds.name = f"imagefolder:{root}/{_FOLDER_SPLIT[split]}"
    return ds


def get_dataset(name: str, split: str, root=None, *, image_size: int | None = None,
                normalize: str = "imagenet"):
    """Look a data set up by the name the command line uses.

    ``imagefolder:PATH`` reads PATH/train and PATH/val (see image_folder); ``image_size``
    and ``normalize`` apply to it only.
    """
    if name == "fashion-mnist":
        return fashion_mnist(split, root)
    if isinstance(name, str) and name.startswith("imagefolder:"):
        path = name[len("imagefolder:"):]
        if not path:
            raise DataError("--data imagefolder:PATH needs a folder, e.g. imagefolder:/data/pets")
        return image_folder(path, split, image_size=image_size, normalize=normalize)
    raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
