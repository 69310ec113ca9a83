"""The start of every chapter: device, seeds, claim context and provenance.

Why: a page must say what produced it. :func:`setup` resolves the device, seeds every
generator and emits the kernel-side facts (device, torch version) inside the notebook's
output, where the build finds them and writes the provenance box at the top of the page.
"""

from __future__ import annotations

import math
import numbers
import platform
import re
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


def _cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``, else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or None


def _blas() -> str | None:
    """Which BLAS does the linear algebra: torch's build and, if threadpoolctl is there, numpy's."""
    parts = []
    try:
        m = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        if m:
            parts.append(f"torch: {m.group(1)}")
    except Exception:  # provenance is best effort
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            i = blas[0]
            version = f" {i['version']}" if i.get("version") else ""
            parts.append(f"numpy: {i.get('internal_api')}{version} ({i.get('num_threads')} threads)")
    except Exception:  # threadpoolctl is optional
        pass
    return "; ".join(parts) or None


def environment(device: torch.device) -> dict[str, Any]:
    """Facts about the machine that ran a chapter, for the provenance box.

    Besides device, torch, Python and CUDA, it records torch's CPU thread count
    (``threads``), which changes timings and, through reduction order, the last digits
    of results, the BLAS (``blas``) and the CPU model (``cpu``); the last two are left
    out when they cannot be found.
    """
    blas, cpu = _blas(), _cpu_model()
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": cpu or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "colab": in_colab(),
        "threads": torch.get_num_threads(),
    }
    if blas:
        env["blas"] = blas
    if cpu:
        env["cpu"] = cpu
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
