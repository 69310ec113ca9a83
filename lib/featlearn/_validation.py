"""Input checks shared by the science modules, in the manner of scikit-learn's ``utils.validation``.

Why: one place for the messages a user sees on bad input, so every entry point refuses
the same mistakes with the same words, once, before any work starts.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

__all__ = [
    "check_model",
    "check_positive_int",
    "check_positive_float",
    "check_inputs",
    "check_square",
    "check_finite",
    "check_is_fitted",
    "NotFittedError",
]


class NotFittedError(ValueError, AttributeError):
    """A fitted attribute or method used before ``fit`` (scikit-learn's convention).

    Why both bases: ``hasattr(model, "M_")`` must be False before ``fit``, as for
    scikit-learn estimators, while ``except ValueError`` still catches it.
    """


def check_model(model: object) -> nn.Module:
    """The model, if it is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_positive_int(value: object, name: str) -> int:
    """An int >= 1 (bools refused), as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_inputs(images: object, name: str, ndim: int | None) -> torch.Tensor:
    """A non-empty floating batch (N, ...) of finite values, ``ndim``-D when given."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if ndim is not None and images.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D tensor (N, C, H, W), got shape {tuple(images.shape)}")
    if images.ndim < 2:
        raise ValueError(
            f"{name} must have a leading batch dimension and at least one feature dimension, "
            f"got shape {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch dimension is 0); pass at least one example")
    if not torch.is_floating_point(images):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {images.dtype}")
    check_finite(images, name)
    return images


def check_square(a: object, name: str) -> torch.Tensor:
    """A square 2-D tensor."""
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(a).__name__}")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {tuple(a.shape)}")
    return a


def check_positive_float(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse a tensor holding NaN or inf, saying how many entries are bad."""
    if torch.is_floating_point(x) or torch.is_complex(x):
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(
                f"{name} holds {bad} non-finite value(s) (NaN or inf) out of {x.numel()}; "
                "clean or drop them first"
            )
    return x


def check_is_fitted(estimator: object, attribute: str) -> None:
    """Raise :class:`NotFittedError` naming the estimator when ``fit`` has not set ``attribute``."""
    if attribute not in vars(estimator):
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit() before using it")
