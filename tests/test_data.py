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
