"""Tiny stand-ins, in the real on-disk formats, for the data and weights of the `paper` profiles.

Why: no chapter can download anything in CI, yet the `paper` code paths (torchvision's dataset
classes, the pretrained-weights route, channel counts, image sizes) must run somewhere before a
reader meets them on Colab. These writers put files where ``featlearn.data`` and torchvision look
for the real ones, in the same formats, filled with random content. They are written by test
fixtures into temporary folders and are never data: nothing here is shipped or cached.

Layout under the data root (``FEATLEARN_DATA``), as ``featlearn.data`` passes it to torchvision:

- ``svhn/{train,test}_32x32.mat``: ``torchvision.datasets.SVHN(root/"svhn", split=...)``
- ``cifar-10-batches-py/``: ``torchvision.datasets.CIFAR10(root, train=...)``
- ``MNIST/raw/*-ubyte``: ``torchvision.datasets.MNIST(root, train=...)``
- ``imagenette/imagenette2-320/{train,val}/<wnid>/*.JPEG``:
  ``torchvision.datasets.Imagenette(root/"imagenette", size="320px")``

Weights: ``<TORCH_HOME>/hub/checkpoints/<the file name torchvision's weights URL ends with>``.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np

#: Images per split (per batch file for CIFAR-10: five training batches). Enough for every
#: chapter's `tiny` counts (the whitening chapter draws 256 CIFAR-10 training images for PCA).
SVHN_N = {"train": 96, "test": 96}
CIFAR_PER_BATCH = 64
CIFAR_TEST = 96
#: MNIST must have the real counts: featlearn.data checks the IDX headers against them
#: (60000 / 10000 images of 28×28), so a shorter file is reported as corrupt.
MNIST_N = {"train": 60000, "t10k": 10000}
IMAGENETTE_WNIDS = (
    "n01440764",
    "n02102040",
    "n02979186",
    "n03000684",
    "n03028079",
    "n03394916",
    "n03417042",
    "n03425413",
    "n03445777",
    "n03888257",
)
IMAGENETTE_PER_CLASS = {"train": 2, "val": 1}
IMAGENET_MODELS = ("alexnet", "vgg11", "resnet18")

#: Environment variable that switches on the checksum patch of :func:`write_md5_patch`.
NO_MD5_ENV = "FEATLEARN_STANDINS_NO_MD5"


def write_svhn(root: Path, seed: int = 0) -> Path:
    """``svhn/train_32x32.mat`` and ``test_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) in 1..10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in SVHN_N.items():
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 10 stands for the digit 0
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": rng.permutation(y)})
    return folder


def write_cifar10(root: Path, seed: int = 0) -> Path:
    """``cifar-10-batches-py/``: data_batch_1..5, test_batch, batches.meta, pickled dicts.

    Each batch is ``{"batch_label", "labels": list[int], "data": (N, 3072) uint8 (R, G, B
    planes of 32×32, row-major), "filenames"}``, as in the official archive.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", CIFAR_PER_BATCH) for i in range(1, 6)]
    batches.append(("test_batch", "testing batch 1 of 1", CIFAR_TEST))
    for fname, label, n in batches:
        entry = {
            "batch_label": label,
            "labels": [int(v) for v in rng.permutation(np.arange(n) % 10)],
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "filenames": [f"standin_{fname}_{i}.png" for i in range(n)],
        }
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {
        "num_cases_per_batch": CIFAR_PER_BATCH,
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
        "num_vis": 3072,
    }
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def write_mnist(root: Path, seed: int = 0) -> Path:
    """``MNIST/raw/``: the four uncompressed IDX files (big-endian header, then uint8 bytes)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in MNIST_N.items():
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">iiii", 2051, n, 28, 28))
            f.write(rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8).tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">ii", 2049, n))
            f.write(rng.permutation(np.arange(n) % 10).astype(np.uint8).tobytes())
    return raw


def write_imagenette(root: Path, seed: int = 0, size: str = "320px") -> Path:
    """``imagenette/imagenette2-320/{train,val}/<wnid>/<wnid>_<k>.JPEG``: small random JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "imagenette" / {"320px": "imagenette2-320", "160px": "imagenette2-160"}[size]
    for split, per_class in IMAGENETTE_PER_CLASS.items():
        for wnid in IMAGENETTE_WNIDS:
            d = folder / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                h, w = int(rng.integers(80, 120)), int(rng.integers(80, 120))  # not square, as real photos
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{wnid}_{k}.JPEG", format="JPEG")
    return folder


def write_weights(torch_home: Path, names: tuple[str, ...] = IMAGENET_MODELS) -> dict[str, Path]:
    """A state dict of each torchvision model (``weights=None``: real keys and shapes, random values).

    Saved as ``<torch_home>/hub/checkpoints/<basename of the DEFAULT weights' URL>``, where
    ``torch.hub.load_state_dict_from_url`` (called by ``weights.get_state_dict``) finds it cached.
    """
    import torch
    import torchvision

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None)
        url = torchvision.models.get_model_weights(name).DEFAULT.url
        path = folder / os.path.basename(url)
        torch.save(model.state_dict(), path)
        out[name] = path
    return out


def write_md5_patch(folder: Path) -> Path:
    """A ``sitecustomize.py`` that lets the stand-ins pass torchvision's MD5 checks, in a kernel.

    Why: a chapter runs in a papermill kernel, a separate process, so the test cannot
    monkeypatch it; the test puts ``folder`` on the kernel's ``PYTHONPATH`` and sets
    :data:`NO_MD5_ENV`. Only checksum verification is replaced: ``check_integrity`` in the
    SVHN and CIFAR-10 modules becomes "the file exists" (random stand-ins cannot have the
    real archives' MD5 sums). Every other check and the loaders themselves are torchvision's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sitecustomize.py"
    path.write_text(
        "# Written by tests/standins.py for the paper stand-in tests; never used outside them.\n"
        "import os\n"
        f"if os.environ.get({NO_MD5_ENV!r}) == '1':\n"
        "    import torchvision.datasets.cifar as _cifar\n"
        "    import torchvision.datasets.svhn as _svhn\n"
        "\n"
        "    def _exists(fpath, md5=None):  # checksum verification only: the file must exist\n"
        "        return os.path.isfile(fpath)\n"
        "\n"
        "    _cifar.check_integrity = _exists\n"
        "    _svhn.check_integrity = _exists\n"
    )
    return path


def skip_md5_in_process(monkeypatch) -> None:
    """The same checksum patch as :func:`write_md5_patch`, for loads in the test's own process."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    exists = lambda fpath, md5=None: os.path.isfile(fpath)
    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(svhn, "check_integrity", exists)
