"""Datasets, loaded through torchvision's own classes wherever torchvision has them.

Why: readers on Colab must get the real data by the real code path, and offline runs
must fail loudly with the fix, never silently substitute other data.

Where data lives: ``$FEATLEARN_DATA`` if set; else ``data/cache`` inside a source
checkout; else ``~/.cache/featlearn``. Set ``FEATLEARN_OFFLINE=1`` to skip download
attempts altogether. Fashion-MNIST is also taken from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), checked against
torchvision's MD5 sums.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DatasetUnavailable",
    "data_root",
    "offline",
    "fashion_mnist",
    "mnist",
    "svhn",
    "cifar10",
    "imagenette",
    "image_folder",
    "to_tensors",
    "load",
    "NATURAL_IMAGES",
    "natural_images",
    "natural_crops",
    "STAR",
    "star_task",
    "paste_in_noise",
    "DEBIAN_FASHION_MNIST",
    "imagenet_images",
    "normalize_imagenet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

#: Where Debian's ``dataset-fashion-mnist`` puts the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: Natural photographs shipped inside scikit-image (``skimage.data``) and scikit-learn.
NATURAL_IMAGES = {
    "astronaut": "skimage",
    "camera": "skimage",
    "chelsea": "skimage",
    "coffee": "skimage",
    "rocket": "skimage",
    "coins": "skimage",
    "brick": "skimage",
    "grass": "skimage",
    "gravel": "skimage",
    "moon": "skimage",
    "clock": "skimage",
    "china.jpg": "sklearn",
    "flower.jpg": "sklearn",
}


class DatasetUnavailable(FileNotFoundError):
    """A dataset is not on this machine and could not be downloaded."""


def data_root(root: str | Path | None = None) -> Path:
    """The folder datasets are read from and cached in (created if needed)."""
    if root is not None:
        path = Path(root)
    elif os.environ.get("FEATLEARN_DATA"):
        path = Path(os.environ["FEATLEARN_DATA"])
    else:
        checkout = Path(__file__).resolve().parents[2] / "data"
        path = (
            checkout / "cache" if (checkout / "README.md").exists() else Path.home() / ".cache" / "featlearn"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def offline() -> bool:
    """True when ``FEATLEARN_OFFLINE`` is set to a true value: never try to download."""
    return os.environ.get("FEATLEARN_OFFLINE", "").lower() in ("1", "true", "yes")


def _unavailable(name: str, where: list[Path], fix: str, cause: BaseException | None) -> DatasetUnavailable:
    looked = ", ".join(str(p) for p in where)
    why = (
        f" The download failed: {type(cause).__name__}: {cause}."
        if cause
        else (" Downloading was not attempted (offline).")
    )
    return DatasetUnavailable(f"{name} is not available. Looked in: {looked}.{why} Fix: {fix}")


def _torchvision(
    name: str, factory: Callable[[bool], Any], where: list[Path], fix: str, download: bool | None
) -> Any:
    """Open a torchvision dataset, downloading only if allowed; wrap failures in a clear error."""
    try:
        return factory(False)
    except (RuntimeError, FileNotFoundError, OSError):
        pass
    if download is False or (download is None and offline()):
        raise _unavailable(name, where, fix, None)
    try:
        return factory(True)
    except Exception as exc:
        raise _unavailable(name, where, fix, exc) from exc


_IDX_SHAPES = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (2049, (10000,)),
}


def _check_idx(path: Path, name: str) -> None:
    """Check an IDX file's magic number, shape and length (Debian recompresses the .gz, so
    torchvision's MD5 sums of the archives do not apply; the content is what matters)."""
    magic, shape = _IDX_SHAPES[name]
    raw = path.read_bytes()
    header = np.frombuffer(raw[: 4 * (1 + len(shape))], dtype=">i4")
    if (
        int(header[0]) != magic
        or tuple(int(d) for d in header[1:]) != shape
        or len(raw) != 4 * (1 + len(shape)) + int(np.prod(shape))
    ):
        raise DatasetUnavailable(
            f"{path} is not the Fashion-MNIST file {name} (bad IDX header or size); reinstall dataset-fashion-mnist"
        )


def _stage_debian_fashion_mnist(root: Path, source: Path | None = None) -> bool:
    """Unpack Debian's Fashion-MNIST into torchvision's layout, checking every IDX file."""
    from torchvision.datasets import FashionMNIST

    source = DEBIAN_FASHION_MNIST if source is None else source
    raw = root / "FashionMNIST" / "raw"
    todo = []
    for fname, _md5 in FashionMNIST.resources:
        target = raw / fname[:-3]
        if target.exists():
            continue
        src = source / fname
        if not src.exists():
            return False
        todo.append((src, target))
    raw.mkdir(parents=True, exist_ok=True)
    for src, target in todo:
        tmp = target.with_suffix(".part")
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        _check_idx(tmp, target.name)
        tmp.rename(target)
    return True


def fashion_mnist(split: str = "train", root: str | Path | None = None, download: bool | None = None) -> Any:
    """Fashion-MNIST as ``torchvision.datasets.FashionMNIST`` (60k train / 10k test, 28×28).

    Uses the Debian package's files when present, else torchvision's download.
    """
    from torchvision.datasets import FashionMNIST

    split = _check_split(split, ("train", "test"))
    r = data_root(root)
    _stage_debian_fashion_mnist(r)
    return _torchvision(
        "Fashion-MNIST",
        lambda dl: FashionMNIST(str(r), train=split == "train", download=dl),
        [r / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST],
        "`apt-get install dataset-fashion-mnist`, or put the IDX files in "
        f"{r / 'FashionMNIST' / 'raw'}, or run with internet access so torchvision downloads them.",
        download,
    )


def mnist(split: str = "train", root: str | Path | None = None, download: bool | None = None) -> Any:
    """MNIST as ``torchvision.datasets.MNIST``; downloaded by torchvision (needs internet)."""
    from torchvision.datasets import MNIST

    split = _check_split(split, ("train", "test"))
    r = data_root(root)
    return _torchvision(
        "MNIST",
        lambda dl: MNIST(str(r), train=split == "train", download=dl),
        [r / "MNIST" / "raw"],
        f"run with internet access (torchvision downloads it), or put the IDX files in {r / 'MNIST' / 'raw'}.",
        download,
    )


def svhn(split: str = "train", root: str | Path | None = None, download: bool | None = None) -> Any:
    """SVHN (cropped digits) as ``torchvision.datasets.SVHN``; needs internet the first time."""
    from torchvision.datasets import SVHN

    split = _check_split(split, ("train", "test", "extra"))
    r = data_root(root) / "svhn"
    return _torchvision(
        "SVHN",
        lambda dl: SVHN(str(r), split=split, download=dl),
        [r / f"{split}_32x32.mat"],
        f"run with internet access (torchvision downloads it), or put {split}_32x32.mat in {r}.",
        download,
    )


def cifar10(split: str = "train", root: str | Path | None = None, download: bool | None = None) -> Any:
    """CIFAR-10 as ``torchvision.datasets.CIFAR10``; needs internet the first time."""
    from torchvision.datasets import CIFAR10

    split = _check_split(split, ("train", "test"))
    r = data_root(root)
    return _torchvision(
        "CIFAR-10",
        lambda dl: CIFAR10(str(r), train=split == "train", download=dl),
        [r / "cifar-10-batches-py"],
        f"run with internet access (torchvision downloads it), or unpack cifar-10-python.tar.gz into {r}.",
        download,
    )


def imagenette(
    split: str = "train",
    size: str = "320px",
    root: str | Path | None = None,
    download: bool | None = None,
    transform: Callable | None = None,
) -> Any:
    """Imagenette (10 ImageNet classes) as ``torchvision.datasets.Imagenette``; needs internet the first time."""
    from torchvision.datasets import Imagenette

    split = _check_split(split, ("train", "val"))
    r = data_root(root) / "imagenette"
    r.mkdir(parents=True, exist_ok=True)
    return _torchvision(
        "Imagenette",
        lambda dl: Imagenette(str(r), split=split, size=size, download=dl, transform=transform),
        [r],
        f"run with internet access (torchvision downloads it), or unpack imagenette2-{size}.tgz into {r}.",
        download,
    )


def image_folder(path: str | Path, transform: Callable | None = None) -> Any:
    """An ImageNet-style folder of class subfolders as ``torchvision.datasets.ImageFolder``."""
    from torchvision.datasets import ImageFolder

    p = Path(path)
    if not p.is_dir():
        raise DatasetUnavailable(
            f"image folder {p} does not exist. Fix: pass the path of a folder with one subfolder per class."
        )
    return ImageFolder(str(p), transform=transform)


def _check_split(split: str, valid: tuple[str, ...]) -> str:
    if split not in valid:
        raise ValueError(f"split must be one of {', '.join(valid)}; got {split!r}")
    return split


def to_tensors(dataset: Any, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random subset of ``n`` examples (all if ``None``) as float images in [0, 1] and labels.

    Returns ``X`` of shape (n, C, H, W), float32, and ``y`` (n,), int64. The subset is
    drawn without replacement with its own generator seeded by ``seed``.
    """
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if data is None or targets is None:
        raise TypeError(
            f"to_tensors needs a dataset with .data and .targets/.labels, got {type(dataset).__name__}"
        )
    total = len(data)
    if n is not None and not (0 < n <= total):
        raise ValueError(f"n must be between 1 and {total} for this dataset, got {n}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(total, generator=g)[:n] if n is not None else torch.arange(total)
    x = torch.as_tensor(np.asarray(data))[idx]
    if x.ndim == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW (CIFAR)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    y = torch.as_tensor(np.asarray(targets))[idx].long()
    return x.contiguous(), y


_LOADERS: dict[str, Callable[..., Any]] = {
    "fashion_mnist": fashion_mnist,
    "mnist": mnist,
    "svhn": svhn,
    "cifar10": cifar10,
}


def load(
    name: str, split: str = "train", n: int | None = None, seed: int = 0, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset by name as tensors (see :func:`to_tensors`).

    ``name`` is one of ``fashion_mnist``, ``mnist``, ``svhn``, ``cifar10``.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_LOADERS)}")
    return to_tensors(_LOADERS[name](split, **kwargs), n=n, seed=seed)


def natural_images(gray: bool = False) -> dict[str, np.ndarray]:
    """The bundled natural photographs as float arrays in [0, 1].

    With ``gray=False`` only the colour photographs, (H, W, 3); with ``gray=True`` all
    of them converted to luminance, (H, W).
    """
    import skimage.data
    from skimage.color import rgb2gray
    from sklearn.datasets import load_sample_images

    sk = load_sample_images()
    sklearn_imgs = {Path(f).name: im for f, im in zip(sk.filenames, sk.images)}
    out: dict[str, np.ndarray] = {}
    for name, source in NATURAL_IMAGES.items():
        im = getattr(skimage.data, name)() if source == "skimage" else sklearn_imgs[name]
        im = np.asarray(im)
        im = im.astype(np.float64) / 255.0 if im.dtype == np.uint8 else im.astype(np.float64)
        if gray:
            out[name] = rgb2gray(im) if im.ndim == 3 else im
        elif im.ndim == 3 and im.shape[2] == 3:
            out[name] = im
    return out


def natural_crops(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """``n`` random ``size``×``size`` crops of the bundled natural photographs.

    Crops are drawn uniformly over photographs, then positions, with a generator seeded
    by ``seed``. Returns float32 of shape (n, channels, size, size) in [0, 1].
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if n < 1 or size < 1:
        raise ValueError(f"n and size must be positive, got n={n}, size={size}")
    imgs = list(natural_images(gray=channels == 1).values())
    small = min(min(im.shape[:2]) for im in imgs)
    if size > small:
        raise ValueError(f"size={size} is larger than the smallest photograph ({small} px)")
    rng = np.random.default_rng(seed)
    out = np.empty((n, channels, size, size), dtype=np.float32)
    for k in range(n):
        im = imgs[rng.integers(len(imgs))]
        i = rng.integers(im.shape[0] - size + 1)
        j = rng.integers(im.shape[1] - size + 1)
        crop = im[i : i + size, j : j + size]
        out[k] = crop[None] if channels == 1 else crop.transpose(2, 0, 1)
    return torch.from_numpy(out)


#: The star of the ConvRFM star task: 7 × 7 pixels (our drawing; the official one is similar).
STAR = torch.tensor(
    [
        [0, 0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 1, 1, 0, 1, 1, 0],
        [1, 1, 0, 0, 0, 1, 1],
    ],
    dtype=torch.float32,
)


def star_task(
    n: int, seed: int = 0, size: int = 32, noise: float = 0.3, max_offset: int = 17
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ConvRFM paper's synthetic star task: is there a star somewhere in the noise?

    ``n`` images (3, size, size) of Gaussian noise (std ``noise``); half of them (label 1)
    carry :data:`STAR` with value 1 in channels 0 and 1, at a random offset in
    [0, max_offset]² from (3, 7), as in the official generator. Labels are shuffled.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 (half positives, half negatives), got {n}")
    if 3 + max_offset + 7 > size or 7 + max_offset + 7 > size:
        raise ValueError(f"a star at offsets up to {max_offset} does not fit {size}×{size} images")
    g = torch.Generator().manual_seed(seed)
    x = noise * torch.randn(n, 3, size, size, generator=g)
    y = (torch.arange(n) < n // 2).long()
    offs = torch.randint(0, max_offset + 1, (n, 2), generator=g)
    for i in torch.nonzero(y).flatten().tolist():
        r, c = 3 + int(offs[i, 0]), 7 + int(offs[i, 1])
        box = x[i, :2, r : r + 7, c : c + 7]
        x[i, :2, r : r + 7, c : c + 7] = torch.where(STAR.bool(), torch.ones_like(box), box)
    perm = torch.randperm(n, generator=g)
    return x[perm], y[perm]


def paste_in_noise(x: torch.Tensor, frame: int = 42, noise: float = 0.5, seed: int = 0) -> torch.Tensor:
    """Each image pasted at a random offset into a ``frame``×``frame`` Gaussian-noise frame.

    The noisy-MNIST construction of the ConvRFM notebooks (28×28 digits, 42×42 frame); the
    noise std is our choice (the official frames are files with their own scale).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if frame < max(h, w):
        raise ValueError(f"frame={frame} is smaller than the {h}×{w} images")
    g = torch.Generator().manual_seed(seed)
    out = noise * torch.randn(n, c, frame, frame, generator=g)
    offs = torch.randint(0, frame - max(h, w) + 1, (n, 2), generator=g)
    for i in range(n):
        r, cc = int(offs[i, 0]), int(offs[i, 1])
        out[i, :, r : r + h, cc : cc + w] = x[i]
    return out


#: ImageNet normalisation used by torchvision's pretrained models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_images(
    n: int,
    *,
    folder: str | Path | None = None,
    seed: int = 2323,
    size: int = 224,
    download: bool | None = None,
) -> torch.Tensor:
    """``n`` ImageNet-class images, preprocessed as for torchvision's pretrained models.

    Resize(256·size/224), CenterCrop(size), ImageNet normalisation, drawn in a shuffled
    order seeded by ``seed`` (the CNFA code uses 2323). From ``folder`` (an ImageNet-style
    class folder) if given, else from Imagenette's train split (downloaded by torchvision).
    """
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.Resize(round(256 * size / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    ds = (
        image_folder(folder, transform=tf)
        if folder is not None
        else imagenette("train", transform=tf, download=download)
    )
    if not 0 < n <= len(ds):
        raise ValueError(f"n must be between 1 and {len(ds)}, got {n}")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([ds[int(i)][0] for i in order])


def normalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """Apply the ImageNet mean/std normalisation to (N, 3, H, W) images in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
