"""The book pipeline: execute chapters with papermill, then build the site.

Why: one command must turn the repository into a checked static site. Chapters run at a
profile (plus ``key=value`` overrides, refused up front when invalid) into a staging
copy; the build then runs ``jupyter-book build -W -n`` with execution off, gathers every
claim into ``_build/claims.json`` and the Scorecard page, and writes a provenance box at
the top of each chapter page.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from featlearn import claims as _claims
from featlearn.book.notebooks import COLAB_MARKER, Chapter, ParameterError, is_chapter_file, read_chapter
from featlearn.book.page import ENV_MIME

__all__ = [
    "BuildError",
    "ChapterFailed",
    "Book",
    "execute_chapter",
    "build",
    "git_commit",
]

_CUSTOM_MIMES = (ENV_MIME, _claims.CLAIM_MIME)


class BuildError(RuntimeError):
    """The book could not be built."""


class ChapterFailed(BuildError):
    """A chapter raised while executing; the message names the chapter and the cell."""


def _toc_files(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                out.append(str(node[key]))
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                out += _toc_files(child)
    elif isinstance(node, list):
        for child in node:
            out += _toc_files(child)
    return out


@dataclass
class Book:
    """A book on disk: ``_config.yml``, ``_toc.yml`` and the pages they name."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        for f in ("_config.yml", "_toc.yml"):
            if not (self.root / f).exists():
                raise BuildError(f"{self.root} is not a book: {f} is missing")

    def pages(self) -> list[Path]:
        """Every page named in ``_toc.yml``, resolved to a source file."""
        toc = yaml.safe_load((self.root / "_toc.yml").read_text())
        pages = []
        for entry in _toc_files(toc):
            base = self.root / entry
            cands = [base] if base.suffix else [base.with_suffix(s) for s in (".md", ".ipynb")]
            found = next((c for c in cands if c.exists()), None)
            if found is None:
                raise BuildError(f"_toc.yml names {entry!r}, but no {entry}.md or .ipynb exists")
            pages.append(found)
        return pages

    def chapters(self) -> list[Chapter]:
        """The executable chapters (jupytext MyST notebooks) named in ``_toc.yml``."""
        return [read_chapter(p) for p in self.pages() if is_chapter_file(p)]

    def chapter(self, name: str) -> Chapter:
        """One chapter by name; the error lists the valid names."""
        chs = {c.name: c for c in self.chapters()}
        if name not in chs:
            raise ParameterError(f"unknown chapter {name!r}; chapters: {', '.join(chs) or '(none)'}")
        return chs[name]


def git_commit(root: Path) -> str:
    """Short commit hash of ``root``, with ``-dirty`` when tracked files have changed."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "diff", "--quiet", "HEAD"], capture_output=True
        ).returncode
        return sha + ("-dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def _library_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.parent.rglob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _first_line(src: str) -> str:
    for line in src.splitlines():
        if line.strip():
            return line.strip()[:120]
    return "(empty cell)"


def execute_chapter(
    chapter: Chapter,
    params: Mapping[str, Any],
    output: Path,
    *,
    progress: bool = True,
    failed_dir: Path | None = None,
) -> tuple[nbformat.NotebookNode, float]:
    """Execute one chapter with papermill, writing the executed notebook to ``output``.

    Returns the executed notebook and the wall time in seconds.

    Raises
    ------
    ChapterFailed
        If a cell raises. The message names the chapter, the cell (its number among
        the chapter's code cells and its first line) and the error; the partially
        executed notebook is kept in ``failed_dir``.
    """
    import logging

    import papermill as pm

    # Parameters were checked by Chapter.resolve; papermill's own guesser misreads
    # annotations such as `x: int | None` and would warn about valid names.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    nb = copy.deepcopy(chapter.notebook)
    nb.metadata.pop("jupytext", None)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{chapter.name}.ipynb"
        nbformat.write(nb, src)
        t0 = time.time()
        # A non-interactive MPLBACKEND (e.g. Agg) in the environment would stop the
        # kernel's inline backend, and figures would silently vanish from the page.
        saved_backend = os.environ.pop("MPLBACKEND", None)
        try:
            pm.execute_notebook(
                str(src),
                str(output),
                parameters=dict(params),
                kernel_name="python3",
                progress_bar=progress,
                cwd=str(chapter.path.parent),
                log_output=False,
            )
        except pm.PapermillExecutionError as exc:
            code_cells = [c.source for c in chapter.notebook.cells if c.cell_type == "code"]
            number = next(
                (i + 1 for i, src in enumerate(code_cells) if src.strip() == exc.source.strip()), "?"
            )
            kept = ""
            if failed_dir is not None:
                failed_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(output, failed_dir / output.name)
                kept = f"\nThe partly executed notebook is at {failed_dir / output.name}."
            output.unlink(missing_ok=True)
            raise ChapterFailed(
                f"chapter {chapter.name!r} ({chapter.path.name}) failed in code cell {number} "
                f"[{_first_line(exc.source)}]:\n    {exc.ename}: {exc.evalue}{kept}"
            ) from None
        finally:
            if saved_backend is not None:
                os.environ["MPLBACKEND"] = saved_backend
    wall = time.time() - t0
    return nbformat.read(output, as_version=4), wall


def _env_of(nb: nbformat.NotebookNode, name: str) -> dict[str, Any]:
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if ENV_MIME in o.get("data", {}):
                return dict(o["data"][ENV_MIME])
    raise BuildError(
        f"chapter {name!r} never called featlearn.book.page.setup(), so its page cannot say what produced it"
    )


def _fmt_wall(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


def provenance_markdown(chapter: Chapter, info: Mapping[str, Any]) -> str:
    """The box at the top of a chapter page: what produced it and how to rerun it."""
    env = info["env"]
    params = ", ".join(f"`{k}={v!r}`" for k, v in info["params"].items() if k != "profile")
    other = [p for p in chapter.profiles if p != info["profile"] and p != "tiny"]
    rerun = "; ".join(f"`featlearn run {chapter.name} --profile {p}`" for p in other)
    device = env["device"] + (f" ({env['device_name']})" if env.get("device_name") else "")
    return "\n".join(
        [
            "```{admonition} How this page was produced",
            ":class: note provenance",
            "",
            f"**Profile** `{info['profile']}` · **device** {device} · **torch** {env['torch']} · "
            f"**commit** `{info['commit']}` · **date** {info['date']} · **wall time** {_fmt_wall(info['wall'])}",
            "",
            f"**Parameters:** {params}",
            "",
            f"**Rerun** at another profile: {rerun}, or with other values: "
            f"`featlearn run {chapter.name} --profile {info['profile']} key=value`.",
            "```",
        ]
    )


def _stage_notebook(
    nb: nbformat.NotebookNode, chapter: Chapter, info: Mapping[str, Any]
) -> nbformat.NotebookNode:
    """Prepare an executed chapter for the site.

    Inserts the provenance box after the title, drops featlearn's private outputs, the
    Colab install cell and the parameters cell that papermill's injected cell replaced.
    """
    nb = copy.deepcopy(nb)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    injected = any("injected-parameters" in t for t in tags)
    nb.cells = [
        c
        for c, t in zip(nb.cells, tags)
        if not (injected and "parameters" in t)
        and not (c.cell_type == "code" and c.source.startswith(COLAB_MARKER))
    ]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            data = o.get("data")
            if data is not None and any(m in data for m in _CUSTOM_MIMES):
                if ENV_MIME in data:
                    continue  # the box says it
                for m in _CUSTOM_MIMES:
                    data.pop(m, None)
            kept.append(o)
        cell.outputs = kept
    box = nbformat.v4.new_markdown_cell(provenance_markdown(chapter, info))
    box.metadata["tags"] = ["provenance"]
    idx = next(
        (
            i
            for i, c in enumerate(nb.cells)
            if c.cell_type == "markdown" and c.source.lstrip().startswith("# ")
        ),
        None,
    )
    if idx is None:
        nb.cells.insert(0, box)
    else:
        title, _, rest = nb.cells[idx].source.lstrip().partition("\n")
        nb.cells[idx].source = title
        new = [box] + ([nbformat.v4.new_markdown_cell(rest.strip())] if rest.strip() else [])
        nb.cells[idx + 1 : idx + 1] = new
    return nb


def _split_overrides(chapters: list[Chapter], overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Route ``chapter.key=value`` to one chapter and bare ``key=value`` to every chapter that has ``key``."""
    names = {c.name: c for c in chapters}
    per: dict[str, dict[str, Any]] = {c.name: {} for c in chapters}
    for key, val in overrides.items():
        if "." in key:
            ch, param = key.split(".", 1)
            if ch not in names:
                raise ParameterError(
                    f"override {key!r}: unknown chapter {ch!r}; chapters: {', '.join(names) or '(none)'}"
                )
            per[ch][param] = val
        else:
            targets = [c.name for c in chapters if key in c.parameters]
            if not targets:
                valid = sorted({p for c in chapters for p in c.parameters})
                raise ParameterError(
                    f"override {key!r}: no chapter has that parameter; valid parameters: {', '.join(valid)}"
                )
            for t in targets:
                per[t][key] = val
    return per


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if not found:
        raise BuildError("jupyter-book is not installed; install the book extra: pip install -e '.[book]'")
    return [found]


def build(
    root: str | Path = ".",
    profile: str = "fast",
    overrides: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    html: bool = True,
) -> Path:
    """Execute every chapter at ``profile`` and build the site into ``<root>/_build/html``.

    Parameters
    ----------
    root
        The book's folder (with ``_config.yml`` and ``_toc.yml``).
    profile
        Profile for every chapter.
    overrides
        ``{"key": value}`` for every chapter with that parameter, or
        ``{"chapter.key": value}`` for one chapter.
    force
        Re-execute chapters even when an identical earlier run is cached.
    progress
        Show progress bars.
    html
        Run ``jupyter-book build`` after executing (false: stage only).

    Returns
    -------
    Path
        ``<root>/_build``, holding ``html/``, ``claims.json`` and ``stage/``.
    """
    from tqdm.auto import tqdm

    book = Book(Path(root))
    out = book.root / "_build"
    chapters = book.chapters()
    per = _split_overrides(chapters, overrides or {})
    resolved = {c.name: c.resolve(profile, per[c.name]) for c in chapters}  # refuse bad input before running

    stage = out / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    chapter_files = {c.path.resolve() for c in chapters} | {
        c.path.with_suffix(".ipynb").resolve() for c in chapters
    }
    stage.mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(book.root / f, stage / f)
    src_book = book.root / "book"
    for p in sorted(src_book.rglob("*")):
        if (
            p.is_file()
            and p.resolve() not in chapter_files
            and "__pycache__" not in p.parts
            and ".ipynb_checkpoints" not in p.parts
        ):
            dest = stage / p.relative_to(book.root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest)

    commit = git_commit(book.root)
    lib = _library_hash()
    cache = out / "executed"
    cache.mkdir(parents=True, exist_ok=True)
    gathered: list[_claims.Claim] = []
    bar = tqdm(chapters, desc="chapters", unit="chapter", disable=not progress)
    for ch in bar:
        bar.set_postfix_str(ch.name)
        params = resolved[ch.name]
        key = hashlib.sha256(
            json.dumps(
                [ch.path.read_text(encoding="utf-8"), params, profile, lib], sort_keys=True, default=str
            ).encode()
        ).hexdigest()
        cached_nb, cached_info = cache / f"{ch.name}.ipynb", cache / f"{ch.name}.json"
        info = json.loads(cached_info.read_text()) if cached_info.exists() else {}
        if force or info.get("key") != key or not cached_nb.exists():
            tqdm.write(f"executing {ch.name} at profile {profile!r}")
            nb, wall = execute_chapter(ch, params, cached_nb, progress=progress, failed_dir=out / "failed")
            info = {
                "key": key,
                "profile": profile,
                "params": params,
                "wall": wall,
                "commit": commit,
                "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "env": _env_of(nb, ch.name),
            }
            cached_info.write_text(json.dumps(info, indent=2, default=str))
        else:
            tqdm.write(f"{ch.name}: unchanged since its last run, reusing it")
            nb = nbformat.read(cached_nb, as_version=4)
        gathered += _claims.claims_from_notebook(nb)
        nbformat.write(
            _stage_notebook(nb, ch, info), stage / ch.path.relative_to(book.root).with_suffix(".ipynb")
        )

    _claims.write_claims_json(gathered, out / "claims.json")
    titles = {c.name: c.title for c in chapters}
    (stage / "book").mkdir(parents=True, exist_ok=True)
    (stage / "book" / "scorecard.md").write_text(
        _claims.scorecard_markdown(gathered, titles), encoding="utf-8"
    )

    if html:
        cmd = _jupyter_book() + [
            "build",
            str(stage),
            "--path-output",
            str(book.root),
            "-W",
            "-n",
            "--keep-going",
            "--all",
        ]
        print("building the site:", " ".join(cmd[1:]), flush=True)
        res = subprocess.run(cmd, cwd=book.root)
        if res.returncode != 0:
            raise BuildError(
                f"jupyter-book build failed (exit {res.returncode}); its warnings are printed above"
            )
    return out
