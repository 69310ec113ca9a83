"""featlearn.models and featlearn.train: shapes, the paper's init, layer choice, learning."""

import pytest
import torch
from torch import nn

from featlearn import models, train


@pytest.mark.parametrize("arch", ["vanilla", "vgg", "resnet"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_small_cnns_shapes(arch, channels, size):
    net = models.build_model(arch, channels, 10, size, width=8)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 10)
    assert models.cnfa_layers(net)


def test_vanilla_cnn_matches_the_paper():
    net = models.VanillaCNN(3, 10, 32, width=64, depth=4, q=3)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.bias is None and c.padding == (1, 1) for c in convs)
    w = torch.cat([c.weight.flatten() for c in convs])
    assert abs(w.std().item() - 5e-3) < 2e-4  # N(0, 0.005^2) init


def test_cnfa_layers_resnet_takes_conv1_of_each_block():
    net = models.ResNetStyle(1, 10, widths=(4, 8))
    assert models.cnfa_layers(net) == ["blocks.0.conv1", "blocks.1.conv1"]
    assert models.cnfa_layers(models.VGGStyle(1, 10, stages=((4,), (8,)))) == ["features.0", "features.3"]


def test_imagenet_model_random_init_and_clear_error_offline(monkeypatch):
    net = models.imagenet_model("alexnet", pretrained=False)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    with pytest.raises(models.WeightsUnavailable, match="Fix:"):
        models.imagenet_model("alexnet", pretrained=True, download=False)
    with pytest.raises(ValueError, match="choose one of alexnet, vgg11, resnet18"):
        models.imagenet_model("vgg19", pretrained=False)
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build_model("mlp", 1, 10, 28)


def test_training_learns_a_separable_task_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > x[:, 0, 4:].sum((1, 2))).long()

    def fit():
        torch.manual_seed(0)
        net = models.build_model("vgg", 1, 2, 8, width=8)
        hist = train.train_classifier(
            net, x, y, epochs=15, lr=3e-3, batch_size=32, x_test=x, y_test=y, progress=False
        )
        return net, hist

    net, hist = fit()
    assert hist.loss[-1] < hist.loss[0] * 0.7 and hist.test_accuracy[-1] > 0.85
    _, hist2 = fit()
    assert hist2.loss == hist.loss
    with pytest.raises(ValueError, match="same length"):
        train.train_classifier(net, x, y[:3], epochs=1)
    with pytest.raises(ValueError, match="optimizer"):
        train.train_classifier(net, x, y, epochs=1, optimizer="lbfgs")


def test_cifar_vgg11_bn_and_resnet20_shapes_and_sizes():
    vgg = models.vgg11_bn(3, 10)
    convs = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and convs[0].weight.shape == (64, 3, 3, 3)  # VGG11: 8 convs + 3 linear
    assert sum(isinstance(m, torch.nn.Linear) for m in vgg.modules()) == 3
    assert vgg(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    res = models.resnet20(1, 10)
    n_conv3 = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in res.modules())
    assert n_conv3 == 19  # stem + 9 blocks × 2, plus the readout: 20 layers
    assert sum(p.numel() for p in models.resnet20(3, 10).parameters()) == pytest.approx(0.27e6, rel=0.03)
    assert res(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    name, conv = models.first_conv(res)
    assert name == "stem.0" and conv.weight.shape == (16, 1, 3, 3)
    assert models.first_conv(models.vgg11_bn(1, 10, width=0.25))[1].weight.shape == (16, 1, 3, 3)
    with pytest.raises(ValueError, match="positive"):
        models.vgg11_bn(width=0)


def test_build_model_seed_gives_the_same_weights():
    a = models.build_model("vgg", 1, 10, 16, width=8, seed=3)
    b = models.build_model("vgg", 1, 10, 16, width=8, seed=3)
    c = models.build_model("vgg", 1, 10, 16, width=8, seed=4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()) if pa.ndim > 1)


class _Planted:
    """Unpickling this creates ``marker``: what a planted weights file could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _hub_in(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "hub"))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    return ckpt


def test_planted_weights_pickle_is_refused_and_never_run(tmp_path, monkeypatch):
    # was: torchvision's builder unpickled the cached file with weights_only=False and ran it
    ckpt = _hub_in(tmp_path, monkeypatch)
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")
    marker = tmp_path / "pwned"
    planted = ckpt / "alexnet-owt-7be5be79.pth"
    torch.save({"features.0.weight": _Planted(marker)}, planted)
    with pytest.raises(models.WeightsUnavailable) as err:
        models.imagenet_model("alexnet", pretrained=True)
    assert not marker.exists()
    msg = str(err.value)
    assert f"{planted} is not a safe state dict" in msg and "Only plain state dicts" in msg


def test_weights_that_are_not_a_state_dict_are_refused(tmp_path, monkeypatch):
    ckpt = _hub_in(tmp_path, monkeypatch)
    torch.save([torch.zeros(3)], ckpt / "alexnet-owt-7be5be79.pth")
    with pytest.raises(models.WeightsUnavailable, match="holds a list, not a state dict"):
        models.imagenet_model("alexnet", pretrained=True, download=False)
    torch.save({"wrong.weight": torch.zeros(3)}, ckpt / "alexnet-owt-7be5be79.pth")
    with pytest.raises(models.WeightsUnavailable, match="not of torchvision's alexnet"):
        models.imagenet_model("alexnet", pretrained=True, download=False)


def test_safe_cached_state_dict_loads_offline(tmp_path, monkeypatch):
    ckpt = _hub_in(tmp_path, monkeypatch)
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")
    torch.manual_seed(0)
    ref = models.imagenet_model("alexnet", pretrained=False)
    torch.save(ref.state_dict(), ckpt / "alexnet-owt-7be5be79.pth")
    net = models.imagenet_model("alexnet", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))
    assert not net.training


def test_missing_weights_message_names_the_file_and_format(tmp_path, monkeypatch):
    _hub_in(tmp_path, monkeypatch)
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")  # offline: never tries to download
    with pytest.raises(models.WeightsUnavailable) as err:
        models.imagenet_model("alexnet", pretrained=True)
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "plain state dict" in msg and "FEATLEARN_OFFLINE" in msg


def test_train_classifier_refuses_non_finite_inputs_and_rates():
    net = models.build_model("vanilla", 1, 2, 4, width=2)
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 2
    w0 = [p.detach().clone() for p in net.parameters()]
    for lr in (float("inf"), float("nan"), 0.0):  # was: trained silently to NaN weights
        with pytest.raises(ValueError, match="lr"):
            train.train_classifier(net, x, y, epochs=1, lr=lr, optimizer="sgd", progress=False)
    bad = x.clone()
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 non-finite value"):
        train.train_classifier(net, bad, y, epochs=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), w0))
