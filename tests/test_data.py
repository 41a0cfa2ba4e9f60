"""Fashion-MNIST loading: shapes, normalisation, and errors that name the file."""
import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from deepcomp.data import (DEFAULT_ROOT, INSTALL_HINT, MEAN, STD, fashion_mnist, get_dataset,
                           load_arrays)
from deepcomp.errors import DataError


def test_test_split_arrays():
    images, labels = load_arrays("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    # Fashion-MNIST's test split is balanced: 1000 of each of the 10 classes.
    assert np.bincount(labels).tolist() == [1000] * 10


def test_train_split_dataset_normalised():
    ds = fashion_mnist("train")
    assert len(ds) == 60000
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    # The module's constants are the training set's own statistics.
    assert abs(float(ds.images.mean())) < 1e-3
    assert abs(float(ds.images.std()) - 1.0) < 1e-2
    raw, _ = load_arrays("train")
    assert torch.allclose(ds.images[5, 0], (torch.from_numpy(raw[5]).float() / 255 - MEAN) / STD)


def test_subset_is_seeded():
    ds = fashion_mnist("test")
    a, b, c = ds.subset(100, seed=1), ds.subset(100, seed=1), ds.subset(100, seed=2)
    assert len(a) == 100 and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)


def _copy_test_split(dst):
    for stem in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(f"{DEFAULT_ROOT}/{stem}", dst / stem)


def test_missing_file_names_file_and_install_command(tmp_path):
    with pytest.raises(DataError) as e:
        load_arrays("test", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in msg
    assert INSTALL_HINT in msg


def test_env_var_overrides_root(tmp_path, monkeypatch):
    _copy_test_split(tmp_path)
    monkeypatch.setenv("DEEPCOMP_DATA", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_arrays("test")


@pytest.mark.parametrize("damage", ["not_gzip", "truncated", "bad_magic", "bad_label"])
def test_corrupt_file_names_file(tmp_path, damage):
    _copy_test_split(tmp_path)
    # The small labels file keeps the rewrite cheap; the images file is checked the same way.
    target = tmp_path / ("t10k-images-idx3-ubyte.gz" if damage == "not_gzip"
                         else "t10k-labels-idx1-ubyte.gz")
    if damage == "not_gzip":
        target.write_bytes(b"this is not a gzip stream at all")
    elif damage == "truncated":
        with gzip.open(target, "rb") as f:
            raw = f.read()
        with gzip.open(target, "wb") as f:
            f.write(raw[: len(raw) // 2])
    elif damage == "bad_magic":
        with gzip.open(target, "rb") as f:
            raw = f.read()
        with gzip.open(target, "wb") as f:
            f.write(struct.pack(">I", 0x0803) + raw[4:])
    else:
        with gzip.open(target, "wb") as f:
            f.write(struct.pack(">II", 0x0801, 10000) + bytes([12]) * 10000)
    with pytest.raises(DataError) as e:
        load_arrays("test", tmp_path)
    assert str(target) in str(e.value)
    assert "dataset-fashion-mnist" in str(e.value)


def test_uncompressed_files_also_read(tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(f"{DEFAULT_ROOT}/{stem}.gz", "rb") as f:
            (tmp_path / stem).write_bytes(f.read())
    images, labels = load_arrays("test", tmp_path)
    ref_images, ref_labels = load_arrays("test")
    assert np.array_equal(images, ref_images) and np.array_equal(labels, ref_labels)


def test_unknown_names():
    with pytest.raises(DataError, match="unknown data set 'mnist'.*fashion-mnist"):
        get_dataset("mnist", "test")
    with pytest.raises(DataError, match="split"):
        load_arrays("validation")
