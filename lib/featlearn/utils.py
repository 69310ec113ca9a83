"""Small helpers every chapter needs: device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["default_device", "seed_everything", "resolve_device", "show"]


def default_device() -> torch.device:
    """Return CUDA when a GPU is present, else CPU, so chapters use the GPU by default."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a chapter's ``device`` parameter (``"auto"``, ``"cpu"``, ``"cuda"``, ...) into a device.

    Parameters
    ----------
    device
        ``"auto"`` or ``None`` picks :func:`default_device`; anything else is passed to
        :class:`torch.device`.

    Raises
    ------
    ValueError
        If CUDA is requested but not available.
    """
    if device is None or device == "auto":
        return default_device()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was requested but no CUDA GPU is available; "
            "use device='auto' or device='cpu'."
        )
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch so that a chapter rerun gives the same numbers.

    Returns a fresh CPU :class:`torch.Generator` seeded with ``seed`` for code that
    wants its own stream.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (code that uses the global NumPy stream)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def show(bundle: dict, text: str) -> None:
    """Display a MIME bundle in IPython (where the build can read it), else print ``text``."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is always there in the book env
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(bundle, raw=True)
