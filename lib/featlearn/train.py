"""Training loops: minibatch SGD/Adam on in-memory tensors, with a progress bar.

Why: every chapter trains small networks the same way, deterministically under a seed,
so differences between chapters come from the science, not from the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from featlearn._validation import check_finite, check_positive_float

__all__ = ["History", "train_classifier", "accuracy", "predict"]


@dataclass
class History:
    """Per-epoch training loss, and test accuracy when test data were given."""

    loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Model outputs on ``x`` in batches, on the model's device."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` whose arg-max output equals the label ``y``."""
    return (predict(model, x, batch_size).argmax(1) == y.cpu()).float().mean().item()


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    optimizer: str = "adam",
    momentum: float = 0.0,
    loss: str = "ce",
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
) -> History:
    """Train ``model`` in place on ``(x, y)`` and return its :class:`History`.

    Parameters
    ----------
    model
        Any classifier; it is trained on the device it is on.
    x, y
        Inputs (N, ...) and integer labels (N,).
    epochs, lr, batch_size
        Passes over the data, learning rate and minibatch size.
    optimizer
        ``"adam"`` or ``"sgd"`` (with ``momentum``, default none).
    loss
        ``"ce"`` (cross-entropy on logits); ``"mse"`` (squared error against one-hot
        targets, summed over outputs and averaged over examples); or ``"mse_mean"`` (the
        same error averaged over outputs as well as examples, as the DNFA paper's official
        training scripts do with ``torch.mean``). With k outputs, ``"mse"`` is k times
        ``"mse_mean"``, so under SGD it trains with k times the learning rate.
    x_test, y_test
        If given, test accuracy is recorded after every epoch.
    seed
        Seeds the minibatch order.
    on_epoch_end
        Called as ``on_epoch_end(epoch, model)`` after every epoch (epoch counts from 1),
        with the model in eval mode; e.g. to measure it during training.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    check_positive_float(lr, "lr (learning rate)")  # inf or NaN would train silently to NaN weights
    check_positive_float(momentum, "momentum", allow_zero=True)
    check_finite(x, "x")  # once here, not per minibatch
    if x_test is not None:
        check_finite(x_test, "x_test")
    dev = next(model.parameters()).device
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if loss not in ("ce", "mse", "mse_mean"):
        raise ValueError(f"loss must be 'ce', 'mse' or 'mse_mean', got {loss!r}")
    g = torch.Generator().manual_seed(seed)
    hist = History()
    model.train()
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            out = model(xb)
            if loss == "ce":
                batch_loss = nn.functional.cross_entropy(out, yb)
            else:
                target = nn.functional.one_hot(yb, out.shape[1]).to(out.dtype)
                sq = (out - target).pow(2)
                batch_loss = sq.sum(1).mean() if loss == "mse" else sq.mean()
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            total += batch_loss.item() * len(idx)
        hist.loss.append(total / len(x))
        if x_test is not None and y_test is not None:
            hist.test_accuracy.append(accuracy(model, x_test, y_test))
            model.train()
        if on_epoch_end is not None:
            model.eval()
            on_epoch_end(epoch + 1, model)
            model.train()
        bar.set_postfix(
            loss=f"{hist.loss[-1]:.3f}",
            **({"test_acc": f"{hist.test_accuracy[-1]:.3f}"} if hist.test_accuracy else {}),
        )
    model.eval()
    return hist
