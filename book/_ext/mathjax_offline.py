"""Sphinx extension: serve MathJax 2 from the built site, so that formulas render offline.

Why: Sphinx loads MathJax from a CDN by default, so a reader without a network (and the
site check, which blocks every request that leaves the site) sees raw TeX. This copies
the few files MathJax 2 needs for TeX input and CommonHTML output (about 1.5 MB, out of
the 50 MB a full MathJax holds) into ``_static/mathjax`` and points ``mathjax_path`` at it.

Where the files come from, first found wins:

1. ``$FEATLEARN_MATHJAX``: a MathJax 2.7 folder (the one holding ``MathJax.js``);
2. Debian's ``libjs-mathjax`` + ``fonts-mathjax``: ``/usr/share/javascript/mathjax``
   (``scripts/system-deps.sh`` installs them);
3. the PyPI wheel ``jupyter-server-mathjax`` (``pip install jupyter-server-mathjax``).

If none is found, the site falls back to the CDN (MathJax 3) and the build prints a
notice saying how to fix it (a notice, not a Sphinx warning: the book builds with ``-W``,
and a site that needs a network for its formulas is still a usable site). The site check
then reports the pages whose formulas do not render offline.

Loaded from ``_config.yml`` (``sphinx: local_extensions``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

#: What MathJax 2 needs for ``config=TeX-AMS_CHTML``, relative to its root folder.
NEEDED = (
    "MathJax.js",
    "config/TeX-AMS_CHTML.js",
    "extensions",
    "jax/input/TeX",
    "jax/element/mml",
    "jax/output/CommonHTML",
    "fonts/HTML-CSS/TeX/woff",
)
#: Relative to the site's ``_static`` folder.
MATHJAX_PATH = "mathjax/MathJax.js?config=TeX-AMS_CHTML"
_TEX_EXTENSIONS = ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"]
#: MathJax 2's TeX input, told to typeset only what Sphinx and MyST mark as math (MyST puts
#: ``tex2jax_ignore`` on every section, so code and prose with ``$`` are left alone).
MATHJAX2_CONFIG: dict[str, Any] = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "processEnvironments": True,
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
        "ignoreClass": "tex2jax_ignore|mathjax_ignore",
    },
    "TeX": {"extensions": _TEX_EXTENSIONS},
    "CommonHTML": {"linebreaks": {"automatic": True}},
    "showMathMenu": False,
    "messageStyle": "none",
}


def _wheel_dir() -> Path | None:
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def find_mathjax() -> Path | None:
    """The first MathJax 2 folder that holds every file in :data:`NEEDED`, or None."""
    env = os.environ.get("FEATLEARN_MATHJAX")
    cands: list[Path | None] = [
        Path(env) if env else None,
        Path("/usr/share/javascript/mathjax"),
        Path("/usr/share/mathjax"),
        _wheel_dir(),
    ]
    for c in cands:
        if c is not None and all((c / n).exists() for n in NEEDED):
            return c
    return None


def copy_mathjax(src: Path, dest: Path) -> int:
    """Copy :data:`NEEDED` from ``src`` into ``dest``; returns the bytes copied."""
    total = 0
    for n in NEEDED:
        s, d = src / n, dest / n
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
            total += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        else:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(s, d)
            total += d.stat().st_size
    return total


def _configure(app: Any, config: Any) -> None:
    src = find_mathjax()
    app.featlearn_mathjax = src
    if src is None:
        print(
            "\nNOTICE: MathJax 2 was not found, so formulas load MathJax from a CDN and do not "
            "render offline.\n  Fix: apt-get install libjs-mathjax fonts-mathjax "
            "(or bash scripts/system-deps.sh), or pip install jupyter-server-mathjax, "
            "or set FEATLEARN_MATHJAX to a MathJax 2.7 folder.\n",
            file=sys.stderr,
            flush=True,
        )
        return
    config.mathjax_path = MATHJAX_PATH
    config.mathjax2_config = config.mathjax2_config or MATHJAX2_CONFIG


def _copy(app: Any, exception: Exception | None) -> None:
    src = getattr(app, "featlearn_mathjax", None)
    if exception is not None or src is None or app.builder.format != "html":
        return
    copy_mathjax(src, Path(app.outdir) / "_static" / "mathjax")


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _configure)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
