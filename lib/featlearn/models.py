"""Networks the chapters train or load: small CNNs, and torchvision's ImageNet models.

Why: each paper's architecture written once, as ordinary ``nn.Module``s, so that every
chapter measures the same thing and the AGOP code can find the conv layers by name.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

__all__ = [
    "MLP",
    "VanillaCNN",
    "VGGStyle",
    "ResNetStyle",
    "vgg11_bn",
    "resnet20",
    "first_conv",
    "BasicBlock",
    "build_model",
    "WeightsUnavailable",
    "imagenet_model",
    "cnfa_layers",
    "init_rule",
    "init_layer",
    "reinitialize",
    "IMAGENET_MODELS",
]


class MLP(nn.Module):
    """The DNFA paper's fully connected net: ``depth`` × [Linear, ReLU], then a Linear readout.

    Bias-free by default, as in the paper. Inputs of any shape are flattened. The linear
    layers are ``layers.0``, ``layers.2``, ... and ``readout``.
    """

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, bias: bool = False) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"need depth >= 1 and width >= 1, got depth={depth}, width={width}")
        mods: list[nn.Module] = []
        d = d_in
        for _ in range(depth):
            mods += [nn.Linear(d, width, bias=bias), nn.ReLU()]
            d = width
        self.layers = nn.Sequential(*mods)
        self.readout = nn.Linear(d, d_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.layers(x.flatten(1)))

    def linear_names(self) -> list[str]:
        """Names of the linear layers, input to output."""
        return [n for n, m in self.named_modules() if isinstance(m, nn.Linear)]


class VanillaCNN(nn.Module):
    """The CNFA paper's shallow CNN: ``depth`` × [conv q×q, pad q//2, no bias, ReLU], flatten, linear.

    Parameters
    ----------
    in_channels, num_classes, image_size
        Input channels, number of outputs, and input side length (for the readout size).
    width, depth, q
        Channels per conv layer, number of conv layers, and filter size.
    init_std
        Standard deviation of the N(0, init_std²) init of conv and readout weights
        (the paper uses 5e-3). ``None`` keeps PyTorch's default init.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: int = 64,
        depth: int = 4,
        q: int = 3,
        init_std: float | None = 5e-3,
    ) -> None:
        super().__init__()
        #: read by :func:`init_rule`, so that fresh draws follow the same init
        self.init_std = init_std
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, q, padding=q // 2, bias=False), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * image_size * image_size, num_classes, bias=False)
        if init_std is not None:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.normal_(m.weight, std=init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class VGGStyle(nn.Module):
    """A VGG: stages of 3×3 conv + ReLU (optionally BatchNorm), each ended by a 2×2 max-pool.

    Then a global average pool and either one linear layer or, with ``hidden``, the CIFAR
    VGG head (Linear-ReLU-Dropout twice, then Linear).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        stages: Sequence[Sequence[int]] = ((32,), (64,), (128, 128)),
        batch_norm: bool = False,
        bias: bool = True,
        hidden: int | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for stage in stages:
            for w in stage:
                layers.append(nn.Conv2d(c, w, 3, padding=1, bias=bias and not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(w))
                layers.append(nn.ReLU())
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if hidden is None:
            self.classifier: nn.Module = nn.Linear(c, num_classes)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(c, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus the (projected) skip path, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, batch_norm: bool = True) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batch_norm), norm(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetStyle(nn.Module):
    """A small ResNet: a 3×3 stem, stages of :class:`BasicBlock`, global average pool, linear."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batch_norm),
            nn.BatchNorm2d(widths[0]) if batch_norm else nn.Identity(),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock(c, w, stride=2 if (i > 0 and b == 0) else 1, batch_norm=batch_norm))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.blocks(self.stem(x))).flatten(1))


def _scaled(widths: Sequence[int], width: float) -> list[int]:
    if width <= 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    return [max(1, round(w * width)) for w in widths]


def vgg11_bn(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> VGGStyle:
    """The CIFAR VGG11 with BatchNorm (first conv c→64, 3×3), as in the whitening paper's code.

    Five stages (64 | 128 | 256, 256 | 512, 512 | 512, 512), each ended by a max-pool, so
    inputs need at least 32×32 pixels (pad 28×28 images by 2). ``width`` scales every
    channel count (``width=0.25`` gives a 16-filter first layer), for CPU-sized runs.
    """
    a, b, c, d = _scaled((64, 128, 256, 512), width)
    return VGGStyle(
        in_channels, num_classes, stages=((a,), (b,), (c, c), (d, d), (d, d)), batch_norm=True, hidden=d
    )


def resnet20(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> ResNetStyle:
    """The CIFAR ResNet20: a 3×3 stem (c→16), three stages of three basic blocks (16, 32, 64).

    ``width`` scales every channel count. Any input size works (global average pool).
    """
    return ResNetStyle(in_channels, num_classes, widths=_scaled((16, 32, 64), width), blocks_per_stage=3)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The model's first conv layer (in registration order), by name: what sees the image patches."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def build_model(
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: int = 64,
    *,
    seed: int | None = None,
) -> nn.Module:
    """One of the book's small CNNs by name: ``vanilla``, ``vgg`` or ``resnet``.

    Why: chapters train the same three shapes; one name-based builder keeps them alike.

    ``width`` is the vanilla CNN's channel count; the VGG and ResNet stages scale with it
    (``width/2, width, 2·width``). With ``seed``, torch's global generator is seeded with
    it first (as ``torch.manual_seed(seed)``), so the same seed gives the same weights.
    """
    if seed is not None:
        torch.manual_seed(seed)
    w = int(width)
    if arch == "vanilla":
        return VanillaCNN(in_channels, num_classes, image_size, width=w)
    if arch == "vgg":
        return VGGStyle(in_channels, num_classes, stages=((w // 2,), (w,), (2 * w, 2 * w)))
    if arch == "resnet":
        return ResNetStyle(in_channels, num_classes, widths=(w // 2, w, 2 * w))
    raise ValueError(f"unknown architecture {arch!r}; choose vanilla, vgg or resnet")


#: torchvision ImageNet models used by the CNFA chapter.
IMAGENET_MODELS = ("alexnet", "vgg11", "resnet18")


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be loaded (no internet and no cached copy, or an unsafe file)."""


def _load_weights_safely(name: str, weights: Any, cached: str) -> dict[str, torch.Tensor]:
    """torchvision's own ``weights.get_state_dict`` route, unpickling with ``weights_only=True``.

    Why: torchvision's builders load the cached file with ``weights_only=False``, so a file
    planted at the cache path could run code. Here only plain state dicts (names → tensors)
    are accepted; anything else raises :class:`WeightsUnavailable` naming the file.
    """
    import pickle

    refuse = (
        f"Fix: delete {cached} and run once with internet access (torchvision downloads it again), "
        f"or replace it with torchvision's {os.path.basename(cached)} from {weights.url}"
    )
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsUnavailable(
            f"{cached} is not a safe state dict: torch.load(weights_only=True) refused it "
            f"({str(exc).splitlines()[0]}). Only plain state dicts (parameter names → tensors) are "
            f"accepted, never arbitrary pickles. {refuse}."
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsUnavailable(
            f"{cached} holds a {type(state).__name__}, not a state dict of tensors: only plain state "
            f"dicts are accepted as {name} weights. {refuse}."
        )
    return dict(state)


def imagenet_model(name: str, pretrained: bool, download: bool | None = None) -> nn.Module:
    """A torchvision ImageNet model, with its default pretrained weights or at random init.

    Pretrained weights come from torch hub's cache (``torch.hub.get_dir()/checkpoints``),
    downloaded there by torchvision if missing and ``download`` allows it (default: unless
    ``FEATLEARN_OFFLINE`` is set). The file is read with ``torch.load(weights_only=True)``:
    only a plain state dict is accepted, never an arbitrary pickle.

    Raises
    ------
    WeightsUnavailable
        If ``pretrained`` and the weights are neither cached nor downloadable, or the cached
        file is not a safe state dict of this model; the message names the file and the fix.
    """
    import torchvision

    from featlearn.data import offline

    if name not in IMAGENET_MODELS:
        raise ValueError(f"unknown ImageNet model {name!r}; choose one of {', '.join(IMAGENET_MODELS)}")
    builder = getattr(torchvision.models, name)
    if not pretrained:
        return builder(weights=None).eval()
    weights = torchvision.models.get_model_weights(name).DEFAULT
    fname = os.path.basename(weights.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", fname)
    if download is None:
        download = not offline()
    if not download and not os.path.exists(cached):
        raise WeightsUnavailable(
            f"pretrained {name} weights are not cached at {cached}; download was not allowed"
            f"{' (FEATLEARN_OFFLINE is set)' if offline() else ''}. Fix: run once with internet access "
            f"(e.g. on Colab), or copy torchvision's {fname} (from {weights.url}; a plain state dict, the "
            "only format accepted) to that path."
        )
    try:
        state = _load_weights_safely(name, weights, cached)
    except WeightsUnavailable:
        raise
    except Exception as exc:
        raise WeightsUnavailable(
            f"could not load pretrained {name} weights ({weights}) from {cached}: {type(exc).__name__}: {exc}. "
            f"Fix: run with internet access (torchvision downloads {weights.url} into "
            f"{os.path.dirname(cached)}), or copy torchvision's {fname} (a plain state dict) there, "
            "or use pretrained=False for random-init numbers."
        ) from exc
    model = builder(weights=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsUnavailable(
            f"{cached} is a state dict but not of torchvision's {name} ({str(exc).splitlines()[0]}). "
            f"Fix: delete it and run once with internet access, or copy torchvision's {fname} there."
        ) from exc
    return model.eval()


def cnfa_layers(model: nn.Module) -> list[str]:
    """The conv layers the CNFA paper measures: every conv, except in ResNets only each block's ``conv1``."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    blocks = [n for n, m in model.named_modules() if hasattr(m, "conv1") and hasattr(m, "conv2") and n]
    if blocks:
        return [f"{b}.conv1" for b in blocks]
    return names


# ----------------------------------------------------------------------------------------
# Fresh draws from a model's own initialisation (for nulls)
# ----------------------------------------------------------------------------------------

#: An init rule: ``("default",)`` (each layer's ``reset_parameters``), ``("normal", std)``
#: for conv and linear weights, or ``("torchvision", family)`` for torchvision's VGG/ResNet.
InitRule = tuple[Any, ...]


def init_rule(model: nn.Module) -> InitRule:
    """How ``model`` drew its weights when it was built.

    Why: a null built from "a random W" must use the distribution the network started
    from; PyTorch's ``reset_parameters`` is that distribution only for models that keep
    the default init. :class:`VanillaCNN` draws N(0, init_std²); torchvision's VGG and
    ResNet draw their convs with Kaiming-normal (fan-out, ReLU) gain.
    """
    if isinstance(model, VanillaCNN) and model.init_std is not None:
        return ("normal", float(model.init_std))
    cls = type(model)
    if cls.__module__.startswith("torchvision.models") and cls.__name__ in ("VGG", "ResNet"):
        return ("torchvision", cls.__name__)
    return ("default",)


def _redraw(module: nn.Module, rule: InitRule) -> None:
    """Redraw ``module``'s own parameters (not its children's) by ``rule``, from torch's global RNG."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
    _apply_rule(module, rule)


def _apply_rule(module: nn.Module, rule: InitRule) -> None:
    """Overwrite what ``reset_parameters`` drew where ``rule`` says the model draws otherwise."""
    if rule[0] == "default":
        return
    with torch.no_grad():
        if rule[0] == "normal" and isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, std=rule[1])
        elif rule[0] == "torchvision" and isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif rule[0] == "torchvision" and isinstance(module, nn.Linear) and rule[1] == "VGG":
            nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class _RuleConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose ``reset_parameters`` follows the init rule of the model it came from.

    Made only by :func:`init_layer` (by changing a copy's class), never constructed.
    """

    featlearn_init_rule: InitRule = ("default",)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _apply_rule(self, self.featlearn_init_rule)


def init_layer(model: nn.Module, name: str) -> nn.Conv2d:
    """A copy of conv layer ``name`` whose ``reset_parameters()`` draws from ``model``'s own init.

    Why: :func:`featlearn.nulls.init_weights` draws fresh weights by ``reset_parameters``;
    handing it this copy makes "a random W" mean the model's init (:func:`init_rule`),
    e.g. N(0, 0.005²) for the CNFA paper's vanilla CNN. The model is not touched.
    """
    layer = model.get_submodule(name)
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"{name!r} is a {type(layer).__name__}, not an nn.Conv2d")
    twin = copy.deepcopy(layer)
    twin.__class__ = _RuleConv2d
    cast(_RuleConv2d, twin).featlearn_init_rule = init_rule(model)
    return twin


def reinitialize(model: nn.Module, *, seed: int) -> nn.Module:
    """A copy of ``model`` with every parameter drawn afresh from its own init, under ``seed``.

    Why: "the same network at initialisation" as a null needs many independent inits of
    one architecture, not the single copy the training started from. Buffers (BatchNorm
    running statistics) are reset too; the copy keeps ``model``'s mode, device and dtype.
    Torch's global RNG state is left as it was; the draws are made on the CPU, so a seed
    gives the same weights on any device.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rule = init_rule(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    twin = copy.deepcopy(model).cpu()  # drawn on the CPU: the same weights on any device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in twin.modules():
            _redraw(module, rule)
    return twin.to(device)
