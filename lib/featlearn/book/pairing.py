"""Each chapter's ``.md`` and its output-free ``.ipynb`` twin for Colab.

Why: the site is built from the ``.md``; Colab opens the ``.ipynb``. They must say the
same thing, and the Colab install cell must name the one repository in ``_config.yml``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import yaml

from featlearn.book.notebooks import COLAB_MARKER, is_chapter_file

__all__ = [
    "repository_url",
    "colab_cell_source",
    "paired_cells",
    "pair_differences",
    "sync_book",
    "format_chapters",
]


def repository_url(root: Path) -> str:
    """The book's repository, named once in ``_config.yml`` (``repository.url``)."""
    cfg = yaml.safe_load((Path(root) / "_config.yml").read_text()) or {}
    url = (cfg.get("repository") or {}).get("url")
    if not url:
        raise ValueError("_config.yml must name the book's repository under repository.url")
    return str(url).rstrip("/")


def colab_cell_source(url: str) -> str:
    """The install cell that every chapter has right after its parameters cell."""
    return "\n".join(
        [
            f"{COLAB_MARKER} from the book's repository (does nothing outside Colab).",
            "import sys",
            "",
            'if "google.colab" in sys.modules:',
            "    import subprocess",
            "",
            "    subprocess.run(",
            "        [",
            "            sys.executable,",
            '            "-m",',
            '            "pip",',
            '            "install",',
            '            "-q",',
            f'            "featlearn @ git+{url}",',
            "        ],",
            "        check=True,",
            "    )",
        ]
    )


def paired_cells(nb: Any) -> list[tuple[str, str, list[str]]]:
    """The parts of a notebook that the pair must agree on: type, source and tags."""
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


def pair_differences(md_path: Path) -> list[str]:
    """Why a chapter's ``.ipynb`` is out of sync with its ``.md`` (empty when in sync)."""
    import jupytext

    ipynb = md_path.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{ipynb.name} is missing; run `featlearn sync`"]
    md = jupytext.read(md_path)
    nb = nbformat.read(ipynb, as_version=4)
    problems = []
    a, b = paired_cells(md), paired_cells(nb)
    if len(a) != len(b):
        problems.append(f"{md_path.name} has {len(a)} cells, {ipynb.name} has {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            problems.append(f"cell {i + 1} differs between {md_path.name} and {ipynb.name}")
            break
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None):
            problems.append(f"{ipynb.name} cell {i + 1} has outputs; the Colab copy must be output-free")
            break
    if nb.metadata.get("featlearn") != md.metadata.get("featlearn"):
        problems.append(f"the featlearn profiles differ between {md_path.name} and {ipynb.name}")
    return problems


def sync_book(root: Path) -> list[Path]:
    """Set each chapter's Colab cell from ``_config.yml`` and rewrite its ``.ipynb`` from the ``.md``."""
    import jupytext

    url = repository_url(root)
    written = []
    for md_path in sorted((Path(root) / "book").rglob("*.md")):
        if not is_chapter_file(md_path):
            continue
        nb = jupytext.read(md_path)
        code = [c for c in nb.cells if c.cell_type == "code"]
        want = colab_cell_source(url)
        if len(code) > 1 and code[1].source.startswith(COLAB_MARKER) and code[1].source != want:
            text = md_path.read_text(encoding="utf-8")
            md_path.write_text(text.replace(code[1].source, want, 1), encoding="utf-8")
            written.append(md_path)
        out = jupytext.read(md_path)
        out.metadata.pop("jupytext", None)
        for i, c in enumerate(out.cells):
            # stable ids, so that re-syncing an unchanged chapter changes nothing in git
            c.id = hashlib.sha1(f"{i}:{c.source}".encode()).hexdigest()[:8]
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        nbformat.write(out, md_path.with_suffix(".ipynb"))
        written.append(md_path.with_suffix(".ipynb"))
    return written


#: A code cell of a MyST chapter: its fence, its options (``:tags: ...`` lines or a ``---`` YAML
#: block, e.g. a figure's caption), its code and its closing fence.
_CODE_CELL = re.compile(
    r"(```\{code-cell\}[^\n]*\n)((?:---\n(?:(?!---\n)[^\n]*\n)*---\n|(?::[^\n]*\n)*)\n?)(.*?)(\n```)", re.S
)


def _ruff_format(code: str, filename: Path) -> str:
    """``code`` as ``ruff format`` writes it, under the configuration that governs ``filename``."""
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(filename), "-"],
        input=code + "\n",
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise ValueError(f"ruff cannot format a code cell of {filename.name}: {res.stderr.strip()}")
    return res.stdout.rstrip("\n")


def format_chapters(root: Path) -> list[Path]:
    """Format every chapter's code cells in place with ruff (the ``.md`` is the source).

    Why: the ``.ipynb`` twins are written from the ``.md``, so formatting the twins alone
    would be undone by the next sync; run :func:`sync_book` afterwards.
    """
    changed = []
    for md_path in sorted((Path(root) / "book").rglob("*.md")):
        if not is_chapter_file(md_path):
            continue
        text = md_path.read_text(encoding="utf-8")

        def one(m: re.Match[str], md_path: Path = md_path) -> str:
            return m.group(1) + m.group(2) + _ruff_format(m.group(3), md_path.with_suffix(".py")) + m.group(4)

        new = _CODE_CELL.sub(one, text)
        if new != text:
            md_path.write_text(new, encoding="utf-8")
            changed.append(md_path)
    return changed
