"""ImageFolder data (--data imagefolder:PATH) and any Dataset through compress()."""
import pytest
import torch
from PIL import Image
from torch import nn

import deepcomp
from deepcomp.cli import main
from deepcomp.data import IMAGENET_MEAN, IMAGENET_STD, get_dataset, num_classes
from deepcomp.errors import DataError, ModelError
from deepcomp.pipeline import compress

CLASSES = ("ant", "bee", "cat")
COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220))


def _write_folder(root, per_class=(8, 3), size=(14, 10)):
    """A tiny ImageFolder: each class a noisy image of its own colour, PNG files."""
    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "val"), per_class):
        for c, (name, rgb) in enumerate(zip(CLASSES, COLOURS)):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(-30, 31, (size[1], size[0], 3), generator=g)
                px = (torch.tensor(rgb) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(px, "RGB").save(d / f"{i}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return _write_folder(tmp_path / "imgs")


class SmallCNN(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def test_imagefolder_shapes_resize_and_normalisation(folder):
    raw = get_dataset(f"imagefolder:{folder}", "train", normalize="none")
    assert len(raw) == 24 and raw.classes == list(CLASSES) and num_classes(raw) == 3
    x, y = raw[0]
    assert x.shape == (3, 10, 14) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and y == 0
    ds = get_dataset(f"imagefolder:{folder}", "train", image_size=8, normalize="imagenet")
    x8, _ = ds[0]
    assert x8.shape == (3, 8, 8)
    small = get_dataset(f"imagefolder:{folder}", "train", image_size=8, normalize="none")[0][0]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x8, (small - mean) / std, atol=1e-6)
    val = get_dataset(f"imagefolder:{folder}", "test", image_size=8)
    assert len(val) == 9 and val.classes == list(CLASSES)


def test_imagefolder_layout_errors_name_what_is_missing(tmp_path, folder):
    with pytest.raises(DataError, match="does not exist"):
        get_dataset(f"imagefolder:{tmp_path / 'nope'}", "train")
    with pytest.raises(DataError, match="needs a folder"):
        get_dataset("imagefolder:", "train")
    only_train = tmp_path / "t"
    (only_train / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no val/ subfolder"):
        get_dataset(f"imagefolder:{only_train}", "test")
    with pytest.raises(DataError, match="Found no valid file"):
        get_dataset(f"imagefolder:{only_train}", "train")
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="class folder"):
        get_dataset(f"imagefolder:{flat}", "train")
    (folder / "val" / "dog").mkdir()
    Image.new("RGB", (4, 4)).save(folder / "val" / "dog" / "0.png")
    with pytest.raises(DataError, match="different class folders"):
        get_dataset(f"imagefolder:{folder}", "train")
    with pytest.raises(DataError, match="--image-size"):
        get_dataset(f"imagefolder:{folder}", "train", image_size=0)


def test_compress_imagefolder_end_to_end(tmp_path, folder, one_thread):
    out = tmp_path / "cnn.dcz"
    torch.manual_seed(0)
    r = compress(SmallCNN(), out, data=f"imagefolder:{folder}", image_size=8, val=6,
                 keep=0.5, prune_steps=1, epochs=2, finetune_epochs=1, bits={"conv": 6, "fc": 5},
                 batch_size=8, lr=5e-3, progress=False, log=lambda s: None)
    assert [s.name for s in r.stages] == ["dense", "prune 1/1", "share (linear)", "share + fine-tune"]
    assert r.val_size == 6 and r.stage("prune 1/1").density < 0.6
    assert r.stages[-1].test_accuracy is not None
    back = deepcomp.decode(out)
    assert set(back) >= {"conv.weight", "fc.weight"}
    assert back["fc.weight"].shape == (3, 128)
    assert len(torch.unique(back["fc.weight"])) <= 2 ** 5 + 1


class ColourBlobs(torch.utils.data.Dataset):
    """A user's own Dataset: no .images / .targets / .subset, tensors made on the fly."""

    def __init__(self, n, seed):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        y = i % 3
        x = torch.randn(3, 12, 12, generator=g) * 0.3
        x[y] += 1.0
        return x, y


def test_any_dataset_through_the_api_with_validation_split(tmp_path, one_thread):
    out = tmp_path / "blobs.dcz"
    torch.manual_seed(0)  # a 600-weight net on 40 images: its init decides, not test order
    r = compress(SmallCNN(), out, train_set=ColourBlobs(60, 1), test_set=ColourBlobs(15, 2),
                 val=12, subset=40, keep=0.5, prune_steps=1, epochs=2, finetune_epochs=0.5,
                 batch_size=10, progress=False, log=lambda s: None)
    assert r.val_size == 12
    # The split and the subset are torch Subsets of the user's Dataset: disjoint.
    tr, va = set(r.train_index.tolist()), set(r.val_index.tolist())
    assert len(tr) == 40 and len(va) == 12 and not tr & va and max(tr | va) < 60
    assert r.stages[-1].accuracy > 60.0  # the classes are separable by colour channel
    assert deepcomp.decode(out)["conv.weight"].shape == (8, 3, 3, 3)


def test_model_that_does_not_fit_the_data_is_one_clear_error(folder):
    with pytest.raises(ModelError, match=r"inputs of shape 3 x 8 x 8"):
        compress(nn.Sequential(nn.Flatten(), nn.Linear(784, 3)), None,
                 data=f"imagefolder:{folder}", image_size=8, val=6, prune_steps=0, share=False,
                 progress=False, log=lambda s: None)
    with pytest.raises(ModelError, match="num_classes=3"):
        compress(SmallCNN(classes=2), None, data=f"imagefolder:{folder}", image_size=8, val=6,
                 prune_steps=0, share=False, progress=False, log=lambda s: None)


def test_cli_imagefolder_mistake_is_one_line(tmp_path, capsys):
    (tmp_path / "x" / "train" / "a").mkdir(parents=True)
    rc = main(["compress", "torchvision:resnet18", str(tmp_path / "o.dcz"),
               "--data", f"imagefolder:{tmp_path / 'x'}", "--image-size", "8", "--quiet"])
    err = capsys.readouterr().err
    # A note about the untrained torchvision model may come first; the error is one line.
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note:")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1
    assert "Found no valid file" in lines[0] and "val/<class>" in lines[0]


@pytest.mark.slow
def test_cli_compress_imagefolder_writes_a_file(tmp_path, folder, capsys):
    out = tmp_path / "sq.dcz"
    rc = main(["compress", "torchvision:squeezenet1_1", str(out), "--data", f"imagefolder:{folder}",
               "--image-size", "32", "--normalize", "none", "--val", "6", "--prune-steps", "1",
               "--epochs", "1", "--finetune-epochs", "0.5", "--keep", "0.5", "--threads", "1",
               "--batch-size", "8", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "share + fine-tune" in text and out.stat().st_size > 0
    w = deepcomp.decode(out)["classifier.1.weight"]
    assert 0.45 < float((w != 0).float().mean()) < 0.55
