"""Datasets, loaded through torchvision's own classes wherever torchvision has them.

Why: readers on Colab must get the real data by the real code path, and offline runs
must fail loudly with the fix, never silently substitute other data.

Where data lives: ``$FEATLEARN_DATA`` if set; else ``data/cache`` inside a source
checkout; else ``~/.cache/featlearn``. Set ``FEATLEARN_OFFLINE=1`` to skip download
attempts altogether. Fashion-MNIST is also taken from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``): unpacked into the
cache with a SHA-256 of every unpacked file in a sidecar (``featlearn-sha256.json``), and
checked on every load (IDX header, size, label range, hash); a damaged cached file is
unpacked again from the package, with a warning. A damaged file of a torchvision
download (MNIST, SVHN, CIFAR-10) raises :class:`DatasetCorrupt`, naming the file to delete.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DatasetUnavailable",
    "DatasetCorrupt",
    "DataRootError",
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
    "Standardize",
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


class DatasetCorrupt(DatasetUnavailable):
    """A dataset file on this machine is damaged (truncated, garbled, wrong checksum).

    The message names the file and says to delete it and retry. A subclass of
    :class:`DatasetUnavailable`, since the dataset cannot be used either way.
    """


class DataRootError(OSError):
    """The data folder is a file, or cannot be created or written to; the message names the fix."""


def _folder_fix(path: Path) -> str:
    """Where the data folder ``path`` came from, and how to choose another one."""
    env = os.environ.get("FEATLEARN_DATA")
    if env and (path == Path(env) or Path(env) in path.parents):
        return (
            f"The folder comes from the environment variable FEATLEARN_DATA={env}. Fix: point "
            "FEATLEARN_DATA at a folder you can write to (it is created if missing), or unset it "
            "to use the default (data/cache in a source checkout, else ~/.cache/featlearn)."
        )
    return (
        "Fix: pass root= a folder you can write to, or set the environment variable FEATLEARN_DATA to one "
        "(it is created if missing)."
    )


def _probe_write(folder: Path) -> None:
    """Create and remove a scratch file in ``folder``; raises OSError if that is not allowed."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def _check_writable(folder: Path, what: str) -> None:
    """Refuse, with the fix, a data folder that ``what`` cannot be written into."""
    try:
        _probe_write(folder)
    except OSError as exc:
        raise DataRootError(
            f"cannot write to the data folder {folder} ({exc.strerror or exc}), so {what} cannot be "
            f"saved there. {_folder_fix(folder)}"
        ) from exc


def data_root(root: str | Path | None = None) -> Path:
    """The folder datasets are read from and cached in (created if needed).

    Raises
    ------
    DataRootError
        If the folder is an existing file or cannot be created, naming where it came from
        (``root``, ``FEATLEARN_DATA``) and the fix.
    """
    if root is not None:
        path = Path(root)
    elif os.environ.get("FEATLEARN_DATA"):
        path = Path(os.environ["FEATLEARN_DATA"])
    else:
        checkout = Path(__file__).resolve().parents[2] / "data"
        path = (
            checkout / "cache" if (checkout / "README.md").exists() else Path.home() / ".cache" / "featlearn"
        )
    if path.exists() and not path.is_dir():
        raise DataRootError(f"the data folder {path} is a file, not a folder. {_folder_fix(path)}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataRootError(
            f"cannot create the data folder {path} ({exc.strerror or exc}). {_folder_fix(path)}"
        ) from exc
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


def _corrupt(name: str, bad: list[tuple[Path, str]], extra: str = "") -> DatasetCorrupt:
    files = "; ".join(f"{path} ({problem})" for path, problem in bad)
    delete = " ".join(str(path) for path, _ in bad)
    return DatasetCorrupt(
        f"{name} is on this machine but corrupt: {files}. Fix: delete {delete} and retry "
        f"(torchvision downloads it again when online){extra}."
    )


def _torchvision(
    name: str,
    factory: Callable[[bool], Any],
    where: list[Path],
    fix: str,
    download: bool | None,
    check: Callable[[], list[tuple[Path, str]]] | None = None,
) -> Any:
    """Open a torchvision dataset, downloading only if allowed; wrap failures in a clear error.

    ``check`` lists the files on disk that are damaged, as (path, problem); it runs when
    opening fails, so that a damaged file is reported as corrupt (delete it), not as missing.
    """
    try:
        return factory(False)
    except Exception as exc:
        bad = check() if check is not None else []
        if bad:
            raise _corrupt(name, bad) from exc
        if not isinstance(exc, (RuntimeError, OSError)):  # FileNotFoundError is an OSError
            raise
    if download is False or (download is None and offline()):
        raise _unavailable(name, where, fix, None)
    _check_writable(where[0] if where[0].is_dir() else _existing_parent(where[0]), f"the {name} download")
    try:
        return factory(True)
    except Exception as exc:
        raise _unavailable(name, where, fix, exc) from exc


def _existing_parent(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def _md5_problems(files: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The files that exist but do not match torchvision's MD5 sum."""
    from torchvision.datasets.utils import check_integrity

    return [
        (path, "its MD5 sum differs from torchvision's")
        for path, md5 in files
        if path.is_file() and not check_integrity(str(path), md5)
    ]


#: (magic number, shape) of the four MNIST-format IDX files (MNIST and Fashion-MNIST alike).
_IDX_SHAPES = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (2049, (10000,)),
}

#: The sidecar, next to the unpacked Fashion-MNIST files, holding their SHA-256 sums.
_SUMS_FILE = "featlearn-sha256.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _idx_problem(path: Path, name: str, sha256: str | None = None) -> str | None:
    """What is wrong with the IDX file ``path`` (to be ``name``), or None if it is sound.

    Checks the magic number and dimensions in the header, that the size is what the header
    promises, that labels lie in 0..9, and, when ``sha256`` is given, the content hash.
    Cheap: a header read, a stat, the labels (at most 60 kB), and one hash pass.
    """
    magic, shape = _IDX_SHAPES[name]
    head_len = 4 * (1 + len(shape))
    with open(path, "rb") as f:
        head = f.read(head_len)
    if len(head) < head_len:
        return f"truncated: {len(head)} bytes, shorter than the {head_len}-byte IDX header"
    header = [int(v) for v in np.frombuffer(head, dtype=">i4")]
    if header[0] != magic or tuple(header[1:]) != shape:
        return f"bad IDX header: magic {header[0]}, dimensions {tuple(header[1:])}; expected {magic}, {shape}"
    size, expected = path.stat().st_size, head_len + int(np.prod(shape))
    if size != expected:
        return f"{'truncated' if size < expected else 'too long'}: {size} bytes, the IDX header promises {expected}"
    if len(shape) == 1:
        labels = np.frombuffer(path.read_bytes()[head_len:], dtype=np.uint8)
        if labels.max() > 9:
            i = int(np.argmax(labels > 9))
            return f"label {int(labels[i])} at index {i} is outside 0..9"
    if sha256 is not None and _sha256(path) != sha256:
        return f"content differs from the SHA-256 recorded when it was unpacked ({_SUMS_FILE})"
    return None


def _idx_problems(raw: Path, names: list[str]) -> list[tuple[Path, str]]:
    """The IDX files among ``raw/names`` that exist but are damaged."""
    out = []
    for n in names:
        path = raw / n
        if path.is_file():
            problem = _idx_problem(path, n)
            if problem:
                out.append((path, problem))
    return out


def _read_sums(raw: Path) -> dict[str, str]:
    try:
        sums = json.loads((raw / _SUMS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in sums.items()} if isinstance(sums, dict) else {}


def _unpack(src: Path, target: Path) -> str:
    """Unpack the .gz ``src`` to ``target`` atomically, checking it; returns its SHA-256."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as fout, gzip.open(src, "rb") as fin:
            for chunk in iter(lambda: fin.read(1 << 22), b""):
                h.update(chunk)
                fout.write(chunk)
        problem = _idx_problem(tmp, target.name)
        if problem:
            raise DatasetCorrupt(
                f"{src}, from the Debian package, is not the Fashion-MNIST file {target.name} ({problem}). "
                "Fix: `apt-get install --reinstall dataset-fashion-mnist`."
            )
        os.replace(tmp, target)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # a damaged archive
        raise DatasetCorrupt(
            f"cannot unpack {src} from the Debian package ({type(exc).__name__}: {exc}). "
            "Fix: `apt-get install --reinstall dataset-fashion-mnist`."
        ) from exc
    except OSError as exc:
        if isinstance(exc, DatasetUnavailable) or exc.errno is None:
            raise
        raise DataRootError(
            f"cannot write {target} ({exc.strerror or exc}). {_folder_fix(target.parent)}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest()


def _stage_debian_fashion_mnist(root: Path, source: Path | None = None) -> bool:
    """Unpack Debian's Fashion-MNIST into torchvision's layout; check the cached files.

    Every call checks the four cached files (IDX header, size, label range, and the SHA-256
    recorded in the sidecar when they were unpacked). A damaged one is unpacked again from
    ``source`` (default: :data:`DEBIAN_FASHION_MNIST`) with a warning naming it; if the
    package is missing, a damaged file raises :class:`DatasetCorrupt`. Returns False when
    a file is missing from both the cache and ``source`` (torchvision may then download).
    """
    from torchvision.datasets import FashionMNIST

    source = DEBIAN_FASHION_MNIST if source is None else source
    raw = root / "FashionMNIST" / "raw"
    sums = _read_sums(raw)
    todo: list[tuple[Path, Path]] = []
    missing = False
    for fname, _md5 in FashionMNIST.resources:
        target, src = raw / fname[:-3], source / fname
        if target.exists():
            problem = _idx_problem(target, target.name, sums.get(target.name))
            if problem is None:
                if target.name not in sums and src.exists() and os.access(raw, os.W_OK):
                    todo.append((src, target))  # unpacked before sums were kept: record one now
                continue
            if not src.exists():
                raise _corrupt(
                    "Fashion-MNIST",
                    [(target, problem)],
                    f", or `apt-get install dataset-fashion-mnist` so that it is unpacked again from {source}",
                )
            warnings.warn(
                f"cached Fashion-MNIST file {target} is corrupt ({problem}); unpacking it again from {src}",
                stacklevel=3,
            )
            todo.append((src, target))
        elif src.exists():
            todo.append((src, target))
        else:
            missing = True
    if missing:
        return False
    if todo:
        _check_writable(_existing_parent(raw), "the unpacked Fashion-MNIST files")
        try:
            raw.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataRootError(f"cannot create {raw} ({exc.strerror or exc}). {_folder_fix(root)}") from exc
        for src, target in todo:
            sums[target.name] = _unpack(src, target)
        fd, tmp_name = tempfile.mkstemp(dir=raw, prefix=_SUMS_FILE, suffix=".part")
        with os.fdopen(fd, "w") as f:
            json.dump(sums, f, indent=1, sort_keys=True)
        os.replace(tmp_name, raw / _SUMS_FILE)
    return True


def fashion_mnist(split: str = "train", root: str | Path | None = None, download: bool | None = None) -> Any:
    """Fashion-MNIST as ``torchvision.datasets.FashionMNIST`` (60k train / 10k test, 28×28).

    Uses the Debian package's files when present, else torchvision's download. The cached
    files are checked on every load (see :func:`_stage_debian_fashion_mnist`).
    """
    from torchvision.datasets import FashionMNIST

    split = _check_split(split, ("train", "test"))
    r = data_root(root)
    _stage_debian_fashion_mnist(r)
    raw = r / "FashionMNIST" / "raw"
    return _torchvision(
        "Fashion-MNIST",
        lambda dl: FashionMNIST(str(r), train=split == "train", download=dl),
        [raw, DEBIAN_FASHION_MNIST],
        "`apt-get install dataset-fashion-mnist`, or put the IDX files in "
        f"{raw}, or run with internet access so torchvision downloads them.",
        download,
        lambda: _idx_problems(raw, list(_IDX_SHAPES)),
    )


def mnist(split: str = "train", root: str | Path | None = None, download: bool | None = None) -> Any:
    """MNIST as ``torchvision.datasets.MNIST``; downloaded by torchvision (needs internet)."""
    from torchvision.datasets import MNIST

    split = _check_split(split, ("train", "test"))
    r = data_root(root)
    raw = r / "MNIST" / "raw"
    bad = _idx_problems(raw, list(_IDX_SHAPES))  # torchvision reads MNIST's files unchecked
    if bad:
        raise _corrupt("MNIST", bad)
    return _torchvision(
        "MNIST",
        lambda dl: MNIST(str(r), train=split == "train", download=dl),
        [raw],
        f"run with internet access (torchvision downloads it), or put the IDX files in {raw}.",
        download,
        lambda: _idx_problems(raw, list(_IDX_SHAPES)),
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
        lambda: _md5_problems([(r / SVHN.split_list[split][1], SVHN.split_list[split][2])]),
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
        lambda: _md5_problems(
            [
                (r / CIFAR10.base_folder / f, md5)
                for f, md5 in [
                    *CIFAR10.train_list,
                    *CIFAR10.test_list,
                    (CIFAR10.meta["filename"], CIFAR10.meta["md5"]),
                ]
            ]
        ),
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
    try:
        r.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataRootError(f"cannot create {r} ({exc.strerror or exc}). {_folder_fix(r.parent)}") from exc
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


#: The star of the ConvRFM star task: 7 × 7 pixels, the shape the official generator
#: (``draw_star`` in aradha/agop_feature_learning's ``star_dataset.py``) draws, row by row.
STAR = torch.tensor(
    [
        [0, 0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 0, 1, 1, 0],
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
    Unlike the official generator, which draws a balanced pool and splits it (so a
    50-image training set has a random class balance), every call here is exactly balanced.
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

    Why: the noisy-MNIST task of the ConvRFM notebooks (28×28 digits, 42×42 frame), where an
    object must be found before it can be recognised. As there, the frame is drawn in code
    as ``noise``·N(0, 1) (the notebooks' 0.5·σ^½ with σ = 1: std 0.5), and the image
    replaces the frame's pixels at an offset drawn uniformly in [0, frame − side − 1] on
    each axis (the notebooks' ``randint(high=frame - side)``).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if frame < max(h, w):
        raise ValueError(f"frame={frame} is smaller than the {h}×{w} images")
    g = torch.Generator().manual_seed(seed)
    out = noise * torch.randn(n, c, frame, frame, generator=g)
    offs = torch.randint(0, max(1, frame - max(h, w)), (n, 2), generator=g)
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


@dataclass(frozen=True)
class Standardize:
    """Pad images to a square side with zeros, then normalise each channel by fitted statistics.

    Why: the whitening chapter feeds 28×28 Fashion-MNIST to CIFAR networks (32×32, five
    pooling stages) normalised per channel like the paper's CIFAR-10 constants; one fitted
    object applies the same padding and statistics to training, test and PCA images.

    Attributes
    ----------
    mean, std
        (1, C, 1, 1) per-channel mean and standard deviation, fitted on unpadded images.
    pad
        Zero padding added on each side (0: none).

    Examples
    --------
    >>> prep = Standardize.fit(torch.rand(10, 1, 28, 28), size=32)
    >>> prep(torch.rand(4, 1, 28, 28)).shape
    torch.Size([4, 1, 32, 32])
    """

    mean: torch.Tensor
    std: torch.Tensor
    pad: int = 0

    @classmethod
    def fit(cls, x: torch.Tensor, size: int | None = None) -> Standardize:
        """Fit per-channel mean and std on ``x`` (N, C, H, W); pad to ``size`` when given.

        The padding is ``max(0, (size - W) // 2)`` on every side (the background value 0),
        added before the normalisation; the statistics are those of the unpadded ``x``.
        """
        if x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W), got {tuple(x.shape)}")
        pad = 0 if size is None else max(0, (int(size) - x.shape[-1]) // 2)
        return cls(x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True), pad)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` (N, C, H, W) and normalise it: ``(pad(x) - mean) / std``."""
        if x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W), got {tuple(x.shape)}")
        if self.pad:
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
        return (x - self.mean) / self.std
