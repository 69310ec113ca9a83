"""featlearn.data: offline sources load through torchvision; missing data fails clearly."""

import urllib.error

import pytest
import torch
import torchvision

from featlearn import data

needs_debian_fmnist = pytest.mark.skipif(
    not (data.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


@needs_debian_fmnist
def test_fashion_mnist_from_debian_package_through_torchvision(tmp_path):
    ds = data.fashion_mnist("test", root=tmp_path, download=False)
    assert isinstance(ds, torchvision.datasets.FashionMNIST)
    assert len(ds) == 10_000 and ds.data.shape == (10_000, 28, 28)
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists()
    x, y = data.to_tensors(ds, n=100, seed=1)
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))
    x2, y2 = data.to_tensors(ds, n=100, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # deterministic under the seed
    assert not torch.equal(x, data.to_tensors(ds, n=100, seed=2)[0])
    assert data.load("fashion_mnist", "train", n=10, root=tmp_path)[0].shape == (10, 1, 28, 28)


def test_missing_dataset_names_dataset_place_and_fix(tmp_path):
    with pytest.raises(data.DatasetUnavailable) as err:
        data.svhn("train", root=tmp_path, download=False)
    msg = str(err.value)
    assert "SVHN" in msg and str(tmp_path) in msg and "Fix:" in msg and "internet" in msg


def test_failed_download_is_wrapped_not_replaced(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    with pytest.raises(data.DatasetUnavailable, match="CIFAR-10.*download failed: URLError"):
        data.cifar10("train", root=tmp_path, download=True)


def test_fashion_mnist_missing_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setattr(data, "_stage_debian_fashion_mnist", lambda root: False)
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")
    with pytest.raises(data.DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist("train", root=tmp_path / "root")


def test_data_root_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATLEARN_DATA", str(tmp_path / "d"))
    assert data.data_root() == tmp_path / "d" and (tmp_path / "d").is_dir()
    monkeypatch.delenv("FEATLEARN_DATA")
    assert data.data_root().name == "cache"  # data/cache in a source checkout


def test_bad_split_and_name():
    with pytest.raises(ValueError, match="split must be one of train, test"):
        data.fashion_mnist("validation")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")


def test_natural_crops_are_real_photographs():
    imgs = data.natural_images()
    assert {"astronaut", "coffee", "china.jpg"} <= set(imgs)
    assert all(im.ndim == 3 and im.shape[2] == 3 for im in imgs.values())
    crops = data.natural_crops(16, 32, channels=3, seed=0)
    assert crops.shape == (16, 3, 32, 32) and crops.dtype == torch.float32
    assert torch.equal(crops, data.natural_crops(16, 32, channels=3, seed=0))
    gray = data.natural_crops(8, 17, channels=1, seed=3)
    assert gray.shape == (8, 1, 17, 17) and 0 <= gray.min() and gray.max() <= 1
    # natural images have strongly correlated neighbouring pixels
    a, b = crops[..., :, :-1].flatten(), crops[..., :, 1:].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.8
    with pytest.raises(ValueError, match="larger than the smallest"):
        data.natural_crops(1, 5000)
    with pytest.raises(ValueError, match="channels"):
        data.natural_crops(1, 8, channels=2)


def test_star_task_marks_exactly_the_positives():
    x, y = data.star_task(40, seed=1, noise=0.0)
    assert x.shape == (40, 3, 32, 32) and int(y.sum()) == 20
    assert torch.all(x[y == 0] == 0)
    pos = x[y == 1]
    assert torch.all(pos[:, :2].sum((1, 2, 3)) == 2 * data.STAR.sum()) and torch.all(pos[:, 2] == 0)
    a, _ = data.star_task(10, seed=3)
    b, _ = data.star_task(10, seed=3)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not fit"):
        data.star_task(10, size=20)


def test_paste_in_noise_keeps_the_object():
    x = torch.rand(5, 1, 28, 28)
    out = data.paste_in_noise(x, 42, noise=0.5, seed=0)
    assert out.shape == (5, 1, 42, 42)
    for i in range(5):  # the object appears unchanged at some offset
        win = out[i, 0].unfold(0, 28, 1).unfold(1, 28, 1)
        assert (win - x[i, 0]).abs().amax((-2, -1)).min() == 0
    with pytest.raises(ValueError, match="smaller"):
        data.paste_in_noise(x, 20)


# --- cache integrity (issue 16) -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_debian(tmp_path_factory):
    """A stand-in for /usr/share/datasets/fashion-mnist: the four IDX .gz files, right shapes.

    Labels cycle through 0..9; image i is zero except for its first pixel, i mod 256.
    """
    import gzip

    import numpy as np

    src = tmp_path_factory.mktemp("debian-fashion-mnist")
    for name, (magic, shape) in data._IDX_SHAPES.items():
        n = shape[0]
        if len(shape) == 1:
            body = (np.arange(n) % 10).astype(np.uint8)
        else:
            body = np.zeros(shape, dtype=np.uint8)
            body[:, 0, 0] = np.arange(n) % 256
        head = np.array([magic, *shape], dtype=">i4").tobytes()
        with gzip.open(src / f"{name}.gz", "wb", compresslevel=1) as f:
            f.write(head + body.tobytes())
    return src


@pytest.fixture
def fmnist_env(tmp_path, monkeypatch, fake_debian):
    """FEATLEARN_DATA in a fresh folder, offline, Debian's package replaced by ``fake_debian``."""
    monkeypatch.setenv("FEATLEARN_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", fake_debian)
    return tmp_path / "cache" / "FashionMNIST" / "raw"


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _garbage(path):
    path.write_bytes(b"not an IDX file at all" * 100)


def _label_42(path):
    raw = bytearray(path.read_bytes())
    raw[8 + 17] = 42  # same size, one label out of range
    path.write_bytes(bytes(raw))


def _flip_pixel(path):
    raw = bytearray(path.read_bytes())
    raw[16 + 5 * 784 + 300] ^= 0xFF  # same size, valid header: only the hash can tell
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage,fname",
    [
        (_truncate, "t10k-images-idx3-ubyte"),  # was "not available ... apt-get install"
        (_garbage, "t10k-images-idx3-ubyte"),  # was a bare AssertionError from torchvision
        (_label_42, "t10k-labels-idx1-ubyte"),  # was loaded silently with a label 42
        (_flip_pixel, "t10k-images-idx3-ubyte"),  # was loaded silently
    ],
)
def test_corrupt_fashion_mnist_cache_is_restaged_with_a_warning(fmnist_env, damage, fname):
    data.fashion_mnist("test")
    good = (fmnist_env / fname).read_bytes()
    damage(fmnist_env / fname)
    with pytest.warns(UserWarning, match=f"{fname} is corrupt.*unpacking it again"):
        ds = data.fashion_mnist("test")
    assert (fmnist_env / fname).read_bytes() == good
    assert int(ds.targets.max()) <= 9 and ds.data.shape == (10_000, 28, 28)
    assert ds.data[5, 0, 0] == 5 and int(ds.data[5].sum()) == 5  # the staged content, not the damage


def test_sound_cache_loads_without_warning_and_keeps_hashes(fmnist_env, recwarn):
    import hashlib
    import json

    data.fashion_mnist("test")
    sums = json.loads((fmnist_env / "featlearn-sha256.json").read_text())
    assert set(sums) == set(data._IDX_SHAPES)
    assert all(hashlib.sha256((fmnist_env / n).read_bytes()).hexdigest() == h for n, h in sums.items())
    data.fashion_mnist("test")
    assert not [w for w in recwarn if "corrupt" in str(w.message)]


def test_corrupt_cache_without_the_package_says_delete(fmnist_env, monkeypatch, tmp_path):
    data.fashion_mnist("test")
    _garbage(fmnist_env / "t10k-labels-idx1-ubyte")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(data.DatasetCorrupt) as err:
        data.fashion_mnist("test")
    msg = str(err.value)
    assert "corrupt" in msg and f"delete {fmnist_env / 't10k-labels-idx1-ubyte'}" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "not available" not in msg


def test_missing_debian_package_gives_the_apt_advice(fmnist_env, monkeypatch, tmp_path):
    assert data._stage_debian_fashion_mnist(tmp_path / "root", source=tmp_path / "nowhere") is False
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(data.DatasetUnavailable, match="apt-get install dataset-fashion-mnist") as err:
        data.fashion_mnist("train")
    assert not isinstance(err.value, data.DatasetCorrupt)


def test_corrupt_debian_file_says_reinstall(tmp_path, fake_debian):
    import shutil

    src = tmp_path / "debian"
    shutil.copytree(fake_debian, src)
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(data.DatasetCorrupt, match="reinstall dataset-fashion-mnist"):
        data._stage_debian_fashion_mnist(tmp_path / "root", source=src)


def test_corrupt_torchvision_files_say_delete_and_retry(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")
    # SVHN .mat: was "SVHN is not available"
    (tmp_path / "svhn").mkdir()
    mat = tmp_path / "svhn" / "train_32x32.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(data.DatasetCorrupt, match=f"corrupt.*delete {mat} and retry"):
        data.svhn("train", root=tmp_path)
    # CIFAR-10 pickle: was "CIFAR-10 is not available"
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    (batches / "data_batch_1").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(data.DatasetCorrupt, match=f"delete {batches / 'data_batch_1'} and retry"):
        data.cifar10("train", root=tmp_path)
    # MNIST IDX: garbage was a bare AssertionError, a label of 42 loaded silently
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data._IDX_SHAPES:
        _garbage(raw / name)
    with pytest.raises(data.DatasetCorrupt, match="MNIST is on this machine but corrupt.*delete"):
        data.mnist("test", root=tmp_path)


def test_mnist_label_out_of_range_is_corrupt(tmp_path, fake_debian):
    import gzip

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data._IDX_SHAPES:
        with gzip.open(fake_debian / f"{name}.gz") as f:
            (raw / name).write_bytes(f.read())
    assert len(data.mnist("test", root=tmp_path, download=False)) == 10_000
    _label_42(raw / "t10k-labels-idx1-ubyte")
    with pytest.raises(data.DatasetCorrupt, match="label 42 at index 17"):
        data.mnist("test", root=tmp_path, download=False)


def test_featlearn_data_pointing_at_a_file_is_a_clear_error(tmp_path, monkeypatch):
    f = tmp_path / "a-file"
    f.write_text("x")
    monkeypatch.setenv("FEATLEARN_DATA", str(f))
    with pytest.raises(data.DataRootError, match=f"{f} is a file.*FEATLEARN_DATA={f}.*Fix:"):
        data.data_root()
    with pytest.raises(data.DataRootError, match="FEATLEARN_DATA"):
        data.fashion_mnist("test")
    monkeypatch.setenv("FEATLEARN_DATA", str(f / "sub"))  # was a raw NotADirectoryError
    with pytest.raises(
        data.DataRootError, match=f"cannot create the data folder {f / 'sub'}.*FEATLEARN_DATA"
    ):
        data.data_root()


def test_read_only_featlearn_data_is_a_clear_error(fmnist_env, monkeypatch):
    import errno
    import os

    folder = fmnist_env.parents[1]
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: make the write probe fail as it would

            def refuse(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))

            monkeypatch.setattr(data, "_probe_write", refuse)
        with pytest.raises(data.DataRootError) as err:
            data.fashion_mnist("test")  # staging must write into the folder
        msg = str(err.value)
        assert f"cannot write to the data folder {folder} (Permission denied)" in msg
        assert (
            f"FEATLEARN_DATA={folder}" in msg
            and "Fix: point FEATLEARN_DATA at a folder you can write to" in msg
        )
    finally:
        folder.chmod(0o755)


def test_standardize_pads_then_normalises_per_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 28, 28, generator=g)
    other = torch.rand(4, 3, 28, 28, generator=g)
    prep = data.Standardize.fit(x, size=32)
    assert prep.pad == 2
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    # exactly the whitening chapter's former inline code: pad with 0, then normalise
    assert torch.equal(prep(other), (torch.nn.functional.pad(other, (2, 2, 2, 2)) - mean) / std)
    out = prep(x)
    assert out.shape == (6, 3, 32, 32)
    inner = out[..., 2:-2, 2:-2]  # the statistics are those of the unpadded images
    assert torch.allclose(inner.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(inner.std((0, 2, 3)), torch.ones(3), atol=1e-5)
    assert torch.allclose(out[:, :, 0, 0], (-mean / std).flatten().expand(6, 3))  # padding = background 0
    plain = data.Standardize.fit(x)  # no size: no padding
    assert plain.pad == 0 and torch.equal(plain(x), (x - mean) / std)
    assert data.Standardize.fit(x, size=20).pad == 0  # never crops
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        data.Standardize.fit(x[0])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        prep(x[0])
