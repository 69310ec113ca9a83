"""The book pipeline: execute chapters with papermill, then build the site.

Why: one command must turn the repository into a checked static site. Chapters run at a
profile (plus ``key=value`` overrides, refused up front when invalid) into a staging
copy; the build then runs ``jupyter-book build -W -n`` with execution off, gathers every
claim into ``_build/claims.json`` and the Scorecard page, and writes a provenance box at
the top of each chapter page.

Reliability: a chapter executes into a temporary file next to its destination and is
renamed into place only when every cell ran, so an interrupted or killed run never leaves
a half-executed notebook where a finished one is expected; the cache key is removed before
executing and written last; a reused notebook is checked to be complete; one build at a
time holds ``_build/.lock``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from featlearn import claims as _claims
from featlearn.book import records as _records
from featlearn.book import scorecard as _scorecard
from featlearn.book.notebooks import COLAB_MARKER, Chapter, ParameterError, is_chapter_file, read_chapter
from featlearn.book.page import ENV_MIME

__all__ = [
    "BuildError",
    "ChapterFailed",
    "Book",
    "execute_chapter",
    "check_output_path",
    "incomplete_reason",
    "build",
    "git_commit",
]

_CUSTOM_MIMES = (ENV_MIME, _claims.CLAIM_MIME)

#: Suffix of the temporary file a chapter executes into before it is renamed into place.
PARTIAL_SUFFIX = ".partial.ipynb"

#: Lock file that keeps two builds of one book apart, inside ``_build/``.
LOCK_NAME = ".lock"


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


#: Modules of ``featlearn.book`` that only orchestrate, render or check: they cannot change a
#: chapter's numbers, so editing them leaves records and sweep points current. ``page`` (seeding,
#: threads, value checks) and ``notebooks`` (parameter resolution) do count.
_PIPELINE_ONLY = frozenset(
    {"cli.py", "pairing.py", "records.py", "runner.py", "scorecard.py", "sitecheck.py", "sweep.py"}
)


#: Library modules that only draw: every function returns a figure or an image array and
#: leaves its inputs and the random generators as they were (``tests/test_plots.py`` checks
#: each one by running it). A record's hash leaves them out, so restyling the book's figures
#: keeps records current; the build's cache of executed chapters counts them.
_PRESENTATION_MODULES = frozenset({"plots.py"})


#: Modules every chapter's results depend on whatever it imports: the package itself,
#: ``page`` (seeding, threads, value checks) and ``notebooks`` (parameter resolution).
_ALWAYS = ("__init__.py", "book/__init__.py", "book/page.py", "book/notebooks.py")


def _module_file(root: Path, dotted: str) -> Path | None:
    """``featlearn.a.b`` -> ``<root>/a/b.py`` or ``<root>/a/b/__init__.py``; None if neither exists."""
    parts = dotted.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    for cand in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if cand is not None and cand.is_file():
            return cand
    return None


def _featlearn_imports(source: str, package: str | None = None) -> set[str]:
    """Dotted ``featlearn`` modules (or candidates) that ``source`` imports anywhere, lazily too.

    ``package`` is the dotted package ``source`` lives in (for relative imports); a chapter's
    code has none. ``from featlearn import a`` yields ``featlearn`` and ``featlearn.a``:
    whether ``a`` is a module is decided by :func:`_module_file`.
    """
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:  # a chapter cell with IPython magics or shell escapes
        lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        tree = ast.parse("\n".join(lines))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "featlearn"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from ..y import z, relative to ``package``
                if package is None:
                    continue
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] != "featlearn":
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def chapter_modules(chapter_text: str, root: Path | None = None) -> list[str]:
    """The library files (relative to the package) a chapter's results can depend on, sorted.

    The modules its code cells import, the modules those import, transitively (imports inside
    functions count), and :data:`_ALWAYS`; never the pipeline-only ones (:data:`_PIPELINE_ONLY`).
    """
    import jupytext

    root = root or Path(__file__).parent.parent
    try:
        nb = jupytext.reads(chapter_text, fmt="md:myst")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    except Exception:  # not a chapter: its text is its code
        code = chapter_text
    files: set[Path] = {root / a for a in _ALWAYS if (root / a).is_file()}
    todo = sorted(_featlearn_imports(code))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(root, name)
        if path is None or (path.parent.name == "book" and path.name in _PIPELINE_ONLY):
            continue
        files.add(path)
        parts = name.split(".")
        for k in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
            parent = _module_file(root, ".".join(parts[:k]))
            if parent is not None and parent.name == "__init__.py":
                files.add(parent)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += sorted(_featlearn_imports(path.read_text(encoding="utf-8"), package))
    return sorted(p.relative_to(root).as_posix() for p in files)


def _library_hash(
    *,
    with_runner: bool = False,
    chapter: str | None = None,
    root: Path | None = None,
    presentation: bool | None = None,
) -> str:
    """sha256 of the library code that computes results (science modules, ``page``, ``notebooks``).

    ``with_runner=True`` hashes this module too: the build's cache of executed chapters uses
    it, so a change to how chapters are executed re-runs them, while a change to how results
    are rendered or checked (Scorecard, records, site check) does not. With ``chapter`` (a
    chapter's text), only the files :func:`chapter_modules` finds count: a record of one
    chapter stays current when a module it never imports changes. ``root``: the package folder
    to hash (default: this installed package). ``presentation``: whether the drawing-only
    modules (:data:`_PRESENTATION_MODULES`) count; by default they do for the build's cache
    (``with_runner``) and not for records.
    """
    root = root or Path(__file__).parent.parent
    skip = _PIPELINE_ONLY - {"runner.py"} if with_runner else _PIPELINE_ONLY
    drawing = set() if (with_runner if presentation is None else presentation) else _PRESENTATION_MODULES
    only = set(chapter_modules(chapter, root)) if chapter is not None else None
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if (rel.parts[0] == "book" and rel.name in skip) or rel.as_posix() in drawing:
            continue
        if (
            only is not None
            and rel.as_posix() not in only
            and not (with_runner and rel.as_posix() == "book/runner.py")
        ):
            continue
        h.update(rel.as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _first_line(src: str) -> str:
    for line in src.splitlines():
        if line.strip():
            return line.strip()[:120]
    return "(empty cell)"


def _runs(cell: Any) -> bool:
    """True for a code cell that nbclient executes (not empty, not tagged skip-execution)."""
    return (
        cell.cell_type == "code"
        and bool(cell.source.strip())
        and "skip-execution" not in cell.metadata.get("tags", [])
    )


def _chapter_cell_number(nb: nbformat.NotebookNode, index: int) -> int:
    """Number (from 1) of cell ``index`` among the chapter's own code cells (papermill's injected cell left out)."""
    return sum(
        1
        for c in nb.cells[: index + 1]
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    )


def incomplete_reason(nb: nbformat.NotebookNode) -> str | None:
    """Why an executed notebook is not a finished, error-free papermill run, or None if it is.

    Checks papermill's notebook metadata (an exception, no end time) and that every
    code cell ran (has an execution count) without an error output.
    """
    pm_meta = nb.metadata.get("papermill")
    if not pm_meta:
        return "it has no papermill record"
    if pm_meta.get("exception"):
        return "papermill recorded an exception"
    if not pm_meta.get("end_time"):
        return "its run never finished"
    for i, cell in enumerate(nb.cells):
        if not _runs(cell):
            continue
        n = _chapter_cell_number(nb, i)
        if cell.get("execution_count") is None:
            return f"code cell {n} [{_first_line(cell.source)}] never ran"
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return f"code cell {n} [{_first_line(cell.source)}] has an error"
        status = cell.metadata.get("papermill", {}).get("status")
        if status not in (None, "completed"):
            return f"code cell {n} [{_first_line(cell.source)}] is {status}"
    return None


def _running_cell(partial: Path) -> tuple[int, str] | None:
    """The code cell a run stopped in: the last one papermill started, from its saved notebook."""
    try:
        nb = nbformat.read(partial, as_version=4)
    except Exception:  # a missing or torn file just means "unknown"
        return None
    last = None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.metadata.get("papermill", {}).get("start_time"):
            last = i
    if last is None:
        return None
    return _chapter_cell_number(nb, last), _first_line(nb.cells[last].source)


def check_output_path(output: Path, chapters: Iterable[Chapter]) -> None:
    """Refuse an executed notebook's destination that is a chapter source, a ``.md`` file or a folder.

    Raises
    ------
    BuildError
        Naming the path and what to use instead.
    """
    output = Path(output)
    target = output.resolve()
    sources = {c.path.resolve() for c in chapters} | {
        c.path.with_suffix(".ipynb").resolve() for c in chapters
    }
    if target.suffix.lower() == ".md" or target in sources:
        raise BuildError(
            f"refusing to write the executed notebook onto {output}: it is a chapter source or a "
            "Markdown page, and would be overwritten; write it to an .ipynb path outside the "
            "sources instead (default: _build/runs/<chapter>-<profile>.ipynb)"
        )
    if target.is_dir():
        raise BuildError(
            f"cannot write the executed notebook to {output}: it is a folder; give a file name such as "
            f"{output / 'out.ipynb'}"
        )


def _os_reason(exc: OSError) -> str:
    """``"File exists: /a/b"``: the OS's reason and the path it concerns."""
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def _keep_failed(partial: Path, failed_dir: Path | None, name: str) -> str:
    """Copy a partly executed notebook into ``failed_dir``; the sentence that says where, or ''."""
    if failed_dir is None or not partial.exists():
        return ""
    try:
        failed_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(partial, failed_dir / name)
    except OSError as exc:
        return f"\n(The partly executed notebook could not be kept in {failed_dir}: {exc}.)"
    return f"\nThe partly executed notebook is at {failed_dir / name}."


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt meanwhile, so that cleanup code (finally) runs.

    nbclient installs its own SIGINT/SIGTERM handlers while a kernel runs (it shuts the
    kernel down, which ends the run); this covers the time around that.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename, so it is never half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: Parameters whose values name the datasets a chapter loads (names of :func:`featlearn.data.load`).
DATASET_PARAMS = ("dataset", "datasets", "noisy_dataset")


def check_datasets(chapter: Chapter, params: Mapping[str, Any]) -> None:
    """Open every dataset the run's parameters name before any cell runs.

    Why: a chapter that loads its data late (convrfm computes the synthetic star task for
    minutes before it reads MNIST) would fail offline only after that work; this fails in
    seconds with the loader's own message, which names the dataset, the place and the fix.

    Raises
    ------
    ChapterFailed
        With the :class:`featlearn.data.DatasetUnavailable` message of the first dataset
        that cannot be opened.
    """
    from featlearn import data

    names: list[str] = []
    for key in DATASET_PARAMS:
        value = params.get(key)
        names += [value] if isinstance(value, str) else list(value or [])
    for name in dict.fromkeys(names):
        loader = data._LOADERS.get(name)
        if loader is None:
            continue  # the chapter's own check names the choices
        try:
            loader("train")
        except data.DatasetUnavailable as exc:
            raise ChapterFailed(
                f"chapter {chapter.name!r} needs the dataset {name!r} (parameter values "
                f"{', '.join(f'{k}={params[k]!r}' for k in DATASET_PARAMS if k in params)}), "
                f"and it cannot be opened, so nothing was run. DatasetUnavailable: {exc}"
            ) from None


def execute_chapter(
    chapter: Chapter,
    params: Mapping[str, Any],
    output: Path,
    *,
    progress: bool = True,
    failed_dir: Path | None = None,
) -> tuple[nbformat.NotebookNode, float]:
    """Execute one chapter with papermill, writing the executed notebook to ``output``.

    The chapter runs into a temporary file in ``output``'s folder, which is renamed to
    ``output`` only when every cell has run; if the run fails or is interrupted
    (Ctrl-C, SIGTERM) the temporary file is removed and ``output`` is left as it was.

    Returns the executed notebook and the wall time in seconds.

    Raises
    ------
    ChapterFailed
        If a dataset the parameters name cannot be opened (:func:`check_datasets`, before
        any cell runs), or a cell raises or the kernel dies (``os._exit``, a crash, out of
        memory).
        The message names the chapter, the cell (its number among the chapter's code
        cells and its first line) and the error; the partially executed notebook is
        kept in ``failed_dir``.
    BuildError
        If ``output`` is a chapter source, a ``.md`` file, a folder, or cannot be written.
    """
    import logging

    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    # Parameters were checked by Chapter.resolve; papermill's own guesser misreads
    # annotations such as `x: int | None` and would warn about valid names.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    output = Path(output)
    check_output_path(output, [chapter])
    check_datasets(chapter, params)
    partial = output.parent / f".{output.stem}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial.touch(exist_ok=False)
    except OSError as exc:
        raise BuildError(
            f"cannot write the executed notebook of chapter {chapter.name!r} to {output}: "
            f"{_os_reason(exc)}; choose a writable path"
        ) from None
    where = f"chapter {chapter.name!r} ({chapter.path.name})"
    nb = copy.deepcopy(chapter.notebook)
    nb.metadata.pop("jupytext", None)
    try:
        with tempfile.TemporaryDirectory() as tmp, _sigterm_interrupts():
            src = Path(tmp) / f"{chapter.name}.ipynb"
            nbformat.write(nb, src)
            t0 = time.time()
            # A non-interactive MPLBACKEND (e.g. Agg) in the environment would stop the
            # kernel's inline backend, and figures would silently vanish from the page.
            saved_backend = os.environ.pop("MPLBACKEND", None)
            try:
                pm.execute_notebook(
                    str(src),
                    str(partial),
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
                kept = _keep_failed(partial, failed_dir, output.name)
                raise ChapterFailed(
                    f"{where} failed in code cell {number} "
                    f"[{_first_line(exc.source)}]:\n    {exc.ename}: {exc.evalue}{kept}"
                ) from None
            except (DeadKernelError, CellTimeoutError) as exc:
                cell = _running_cell(partial)
                in_cell = f"code cell {cell[0]} [{cell[1]}]" if cell else "an unknown cell"
                kept = _keep_failed(partial, failed_dir, output.name)
                what = (
                    "timed out"
                    if isinstance(exc, CellTimeoutError)
                    else "the kernel died (a cell called os._exit, the interpreter crashed, the "
                    "machine ran out of memory, or the run was interrupted)"
                )
                raise ChapterFailed(
                    f"{where} failed in {in_cell}: {what}:\n    {type(exc).__name__}: {exc}\n"
                    f"If memory ran out, try a smaller profile (e.g. --profile tiny) or smaller "
                    f"parameters.{kept}"
                ) from None
            finally:
                if saved_backend is not None:
                    os.environ["MPLBACKEND"] = saved_backend
            wall = time.time() - t0
            executed = nbformat.read(partial, as_version=4)
            try:
                os.replace(partial, output)
            except OSError as exc:
                raise BuildError(
                    f"cannot write the executed notebook of chapter {chapter.name!r} to {output}: "
                    f"{_os_reason(exc)}; choose a writable path"
                ) from None
    finally:
        partial.unlink(missing_ok=True)
    return executed, wall


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


def provenance_markdown(chapter: Chapter, info: Mapping[str, Any], record_threads: Sequence[int] = ()) -> str:
    """The box at the top of a chapter page: what produced it and how to rerun it.

    ``record_threads``: the torch thread counts of this profile's record of the chapter. When
    this run used another count, the box says that the page is not one of the recorded seeds
    (float sums in another order: last digits, and near a threshold a verdict, can differ).
    """
    env = info["env"]
    params = ", ".join(f"`{k}={v!r}`" for k, v in info["params"].items() if k != "profile")
    other = [p for p in chapter.profiles if p != info["profile"] and p != "tiny"]
    rerun = "; ".join(f"`featlearn run {chapter.name} --profile {p}`" for p in other)
    device = env["device"] + (f" ({env['device_name']})" if env.get("device_name") else "")
    threads = f" · **threads** {env['threads']}" if env.get("threads") is not None else ""
    return "\n".join(
        [
            "```{admonition} How this page was produced",
            ":class: note provenance",
            "",
            f"**Profile** `{info['profile']}` · **device** {device}{threads} · **torch** {env['torch']} · "
            f"**commit** `{info['commit']}` · **date** {info['date']} · **wall time** {_fmt_wall(info['wall'])}",
            "",
            f"**Parameters:** {params}",
            "",
            *_one_run_note(info, env, record_threads),
            f"**Rerun** at another profile: {rerun}, or with other values: "
            f"`featlearn run {chapter.name} --profile {info['profile']} key=value`.",
            "```",
        ]
    )


def _one_run_note(
    info: Mapping[str, Any], env: Mapping[str, Any], record_threads: Sequence[int]
) -> list[str]:
    """The box's line on what this run is: one seed, and whether it can be a recorded seed."""
    seed = info["params"].get("seed")
    note = f"**One run**{f' (seed {seed})' if seed is not None else ''}: the verdicts that count are "
    note += "those across seeds, in each claim box and in the last section."
    threads = env.get("threads")
    if record_threads and threads is not None and set(record_threads) != {threads}:
        rec = "/".join(map(str, sorted(set(record_threads))))
        note += (
            f" This run used {threads} CPU thread{'s' if threads != 1 else ''} and the "
            f"`{info['profile']}` record {rec}, so it is not one of the recorded seeds: sums run "
            "in another order, and a value near its threshold can take the other verdict."
        )
    return [note, ""]


def strip_for_site(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of an executed chapter without what a reader should not see.

    Why: chapter pages and recorded-run pages drop the same things: featlearn's private
    outputs (environment, claim payloads), the Colab install cell, and the parameters
    cell that papermill's injected cell replaced.
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
    return nb


def _stage_notebook(
    nb: nbformat.NotebookNode, chapter: Chapter, info: Mapping[str, Any], record_threads: Sequence[int] = ()
) -> nbformat.NotebookNode:
    """Prepare an executed chapter for the site.

    Inserts the provenance box after the title, drops featlearn's private outputs, the
    Colab install cell and the parameters cell that papermill's injected cell replaced.
    """
    nb = strip_for_site(nb)
    box = nbformat.v4.new_markdown_cell(provenance_markdown(chapter, info, record_threads))
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


def _write_scorecard(
    gathered: list[_claims.Claim],
    titles: dict[str, str],
    recs: list[_records.Record],
    current: _records.CurrentState,
    stage: Path,
    across: Mapping[tuple[str, str], Sequence[_scorecard.SeedVerdict]],
) -> None:
    """Write the Scorecard (this build beside the committed records) and stage the records' pages."""
    scorecard = _scorecard.scorecard_markdown(
        gathered,
        titles,
        across,
        recorded_runs=_records.records_markdown(recs, current, link_pages=True),
    )
    (stage / "book" / "scorecard.md").write_text(scorecard, encoding="utf-8")
    summary = _scorecard.replication_summary_markdown(titles, across)
    for page in (stage / "book").glob("*.md"):  # the intro: "what replicates" table, record quotes
        text = page.read_text(encoding="utf-8")
        filled = _records.fill_quotes(
            text.replace(_scorecard.SUMMARY_PLACEHOLDER, summary), None, recs, current
        )
        if filled != text:
            page.write_text(filled, encoding="utf-8")
    _records.add_toc_entries(stage / "_toc.yml", _records.stage_record_pages(recs, stage, current))


def _split_overrides(chapters: list[Chapter], overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Route ``chapter.key=value`` to one chapter and bare ``key=value`` to every chapter that has ``key``."""
    names = {c.name: c for c in chapters}
    per: dict[str, dict[str, Any]] = {c.name: {} for c in chapters}
    for key, val in overrides.items():
        if key.rsplit(".", 1)[-1] == "profile":
            raise ParameterError(
                f"override {key}={val!r}: the profile is chosen with --profile, not as an override "
                f"(it would be ignored); use `featlearn build --profile {val}`"
            )
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


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>/.lock`` (non-blocking ``flock``) so that two builds of one book never overlap.

    Raises
    ------
    BuildError
        If another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on Windows; builds there are unguarded
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise BuildError(
                f"another featlearn build{who} is running on this book (lock file {path}); wait for it "
                f"to finish or stop it. The lock is released when that process ends; if no build is "
                f"running, remove {path}"
            ) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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

    Raises
    ------
    ParameterError
        For a bad profile or override (before anything runs).
    ChapterFailed
        When a chapter's cell raises or its kernel dies.
    BuildError
        When another build of this book is running, or jupyter-book fails.
    """
    book = Book(Path(root))
    out = book.root / "_build"
    chapters = book.chapters()
    per = _split_overrides(chapters, overrides or {})
    resolved = {c.name: c.resolve(profile, per[c.name]) for c in chapters}  # refuse bad input before running
    with _build_lock(out):
        return _build_locked(
            book, out, chapters, resolved, profile, force=force, progress=progress, html=html
        )


def _build_locked(
    book: Book,
    out: Path,
    chapters: list[Chapter],
    resolved: Mapping[str, dict[str, Any]],
    profile: str,
    *,
    force: bool,
    progress: bool,
    html: bool,
) -> Path:
    from tqdm.auto import tqdm

    stage = out / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    chapter_files = {c.path.resolve() for c in chapters} | {
        c.path.with_suffix(".ipynb").resolve() for c in chapters
    }
    stage.mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(book.root / f, stage / f)
    if (book.root / "_static").is_dir():  # the book's CSS: Jupyter Book adds every _static/*.css
        shutil.copytree(book.root / "_static", stage / "_static")
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
    cache = out / "executed"
    cache.mkdir(parents=True, exist_ok=True)
    for leftover in cache.glob(f".*{PARTIAL_SUFFIX}"):  # left by a run killed outright (SIGKILL)
        leftover.unlink(missing_ok=True)
    gathered: list[_claims.Claim] = []
    recs = _records.load_records(book.root / _records.RECORDS_DIR)
    current = _records.current_state(chapters)  # per chapter: the modules it imports
    across = _scorecard.seed_verdicts(recs, current)
    bar = tqdm(chapters, desc="chapters", unit="chapter", disable=not progress)
    for ch in bar:
        bar.set_postfix_str(ch.name)
        params = resolved[ch.name]
        text = ch.path.read_text(encoding="utf-8")
        lib = _library_hash(with_runner=True, chapter=text)  # a module it never imports: no re-run
        key = hashlib.sha256(
            json.dumps([text, params, profile, lib], sort_keys=True, default=str).encode()
        ).hexdigest()
        cached_nb, cached_info = cache / f"{ch.name}.ipynb", cache / f"{ch.name}.json"
        info = _read_json(cached_info)
        stale = force or info.get("key") != key or not cached_nb.exists()
        if not stale:
            try:
                nb = nbformat.read(cached_nb, as_version=4)
                problem = incomplete_reason(nb)
            except Exception as exc:  # a torn file is re-executed, whatever the error
                problem = f"it cannot be read ({type(exc).__name__})"
            if problem is not None:
                tqdm.write(f"{ch.name}: the cached notebook {cached_nb} is incomplete ({problem})")
                stale = True
        if stale:
            tqdm.write(f"executing {ch.name} at profile {profile!r}")
            # The key goes first and is written last: a run that stops halfway leaves no
            # key, and the next build executes the chapter again.
            cached_info.unlink(missing_ok=True)
            cached_nb.unlink(missing_ok=True)
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
            _write_text_atomic(cached_info, json.dumps(info, indent=2, default=str))
        else:
            tqdm.write(f"{ch.name}: unchanged since its last run, reusing it")
        gathered += _claims.claims_from_notebook(nb)
        nbformat.write(
            _stage_notebook(
                _records.fill_record_sections(
                    _records.annotate_claims(copy.deepcopy(nb), ch.name, across),
                    ch.name,
                    recs,
                    across,
                    list(ch.profiles),
                    current,
                ),
                ch,
                info,
                [t for rec in recs if rec.chapter == ch.name and rec.profile == profile for t in rec.threads],
            ),
            stage / ch.path.relative_to(book.root).with_suffix(".ipynb"),
        )

    _claims.write_claims_json(gathered, out / "claims.json")
    titles = {c.name: c.title for c in chapters}
    (stage / "book").mkdir(parents=True, exist_ok=True)
    _write_scorecard(gathered, titles, recs, current, stage, across)

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
