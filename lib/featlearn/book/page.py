"""The start of every chapter: device, seeds, claim context and provenance.

Why: a page must say what produced it. :func:`setup` resolves the device, seeds every
generator and emits the kernel-side facts (device, torch version) inside the notebook's
output, where the build finds them and writes the provenance box at the top of the page.
"""

from __future__ import annotations

import math
import numbers
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch

from featlearn import claims
from featlearn.book.notebooks import ParameterError
from featlearn.utils import resolve_device, seed_everything, show

__all__ = ["ENV_MIME", "Page", "setup", "in_colab", "environment", "positive", "within"]

#: MIME type under which the kernel's environment travels inside a notebook output.
ENV_MIME = "application/vnd.featlearn.env+json"


def in_colab() -> bool:
    """True when running inside Google Colab."""
    import sys

    return "google.colab" in sys.modules


def environment(device: torch.device) -> dict[str, Any]:
    """Facts about the machine that ran a chapter, for the provenance box."""
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "colab": in_colab(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


@dataclass
class Page:
    """What :func:`setup` returns: the resolved device, the seed and a generator."""

    chapter: str
    profile: str
    device: torch.device
    seed: int
    generator: torch.Generator
    started: float

    def elapsed(self) -> float:
        """Seconds since :func:`setup` ran."""
        return time.time() - self.started


def setup(chapter: str, profile: str, *, device: str = "auto", seed: int = 0) -> Page:
    """Start a chapter: pick the device, seed everything, and start recording claims.

    Parameters
    ----------
    chapter
        The chapter's name (its file name without extension).
    profile
        The profile the chapter runs at (``"fast"``, ``"paper"``, ...).
    device
        ``"auto"`` (GPU when there is one), ``"cpu"`` or ``"cuda"``.
    seed
        Seed for Python, NumPy and torch.
    """
    dev = resolve_device(device)
    gen = seed_everything(seed)
    claims.clear()
    claims.set_context(chapter, profile)
    env = environment(dev)
    text = f"featlearn: chapter {chapter!r}, profile {profile!r}, device {dev} ({env['device_name']}), torch {env['torch']}, seed {seed}"
    show({"text/plain": text, ENV_MIME: env}, text)
    return Page(chapter, profile, dev, seed, gen, time.time())


def positive(**values: object) -> None:
    """Refuse a chapter parameter that is not a number > 0 (or a list holding one).

    Why: a chapter's first cell checks its sizes once, so ``epochs=0`` or ``n_agop=-1``
    stop at once with the parameter named, like a mistyped parameter does.
    ``None`` values (meaning "all" or "off" in some chapters) are skipped.

    Examples
    --------
    >>> positive(epochs=10, n_train=[100, 200])
    """
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if v is None:
                continue
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and float(v) > 0
            if not ok:
                raise ParameterError(f"parameter {name!r} must be a finite number > 0, got {value!r}")


def within(name: str, values: object, low: float, high: float) -> None:
    """Refuse a chapter parameter (a number or a list) with a value outside [low, high].

    Why: e.g. checkpoints past the last epoch would silently record NaN claims.
    """
    items = values if isinstance(values, (list, tuple)) else [values]
    bad = [
        v
        for v in items
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not low <= float(v) <= high
    ]
    if bad:
        raise ParameterError(f"parameter {name!r} must lie in [{low}, {high}], got {values!r} (bad: {bad})")
