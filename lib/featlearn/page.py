"""The start of every chapter: device, seeds, claim context and provenance.

Why: a page must say what produced it. :func:`setup` resolves the device, seeds every
generator and emits the kernel-side facts (device, torch version) inside the notebook's
output, where the build finds them and writes the provenance box at the top of the page.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Any

import torch

from featlearn import claims
from featlearn.utils import resolve_device, seed_everything, show

__all__ = ["ENV_MIME", "Page", "setup", "in_colab", "environment"]

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
