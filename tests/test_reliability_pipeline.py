"""The book pipeline's reliability (issue 16): no half-run chapter is ever served as fresh.

Each test names the old behaviour it catches. The fast ones run no kernel; those marked
slow execute the fixture chapter (or a tiny one whose kernel dies).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from featlearn.book.cli import main as cli
from featlearn.book.notebooks import ParameterError, read_chapter
from featlearn.book.page import environment
from featlearn.book.runner import (
    Book,
    BuildError,
    ChapterFailed,
    build,
    execute_chapter,
    incomplete_reason,
    provenance_markdown,
)

DYING_CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
    jupytext_version: 1.19.6
kernelspec:
  display_name: Python 3
  language: python
  name: python3
featlearn:
  profiles:
    fast: {}
    paper: {}
---

# A chapter whose kernel dies

```{code-cell} ipython3
:tags: [parameters]

profile = "fast"
```

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
import os

os._exit(1)
```

```{code-cell} ipython3
y = 2
```
"""


def _executed(book: Path) -> Path:
    return book / "_build" / "executed"


def _leftovers(book: Path) -> list[str]:
    return sorted(p.name for p in _executed(book).glob(".*.partial.ipynb"))


def _injected(nb: nbformat.NotebookNode) -> str:
    return next((c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])), "")


def _sleeping_at_seed_1(path: Path) -> bool:
    """True when ``path`` is a notebook of a seed=1 run whose last cell (the sleep) is running."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # being written
        return False
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    return "seed = 1" in _injected(nb) and last.metadata.get("papermill", {}).get("status") == "running"


# --- fast: refused before anything runs ------------------------------------------------


def test_profile_as_an_override_is_refused_not_ignored(fixture_book, capsys):
    """Old: `profile=paper` passed the checks and the chapter silently ran at --profile (fast)."""
    ch = Book(fixture_book).chapter("fixture")
    with pytest.raises(ParameterError, match="--profile paper"):
        ch.resolve("fast", {"profile": "paper"})
    for args in (["run", "fixture", "profile=paper"], ["build", "--no-html", "profile=paper"]):
        assert cli(["--root", str(fixture_book), *args, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "--profile paper" in err and "Traceback" not in err
    with pytest.raises(ParameterError, match="--profile paper"):
        build(fixture_book, "fast", {"fixture.profile": "paper"}, progress=False, html=False)
    assert not _executed(fixture_book).exists()  # nothing ran


def test_broken_front_matter_names_the_file_and_the_yaml_problem(fixture_book, capsys):
    """Old: a raw yaml.scanner/parser error (no chapter, no file) escaped, and the CLI crashed."""
    md = fixture_book / "book" / "fixture.md"
    md.write_text(md.read_text().replace("      n: 1000", "      n: [1000"))
    with pytest.raises(ParameterError) as err:
        read_chapter(md)
    msg = str(err.value)
    assert "'fixture'" in msg and str(md) in msg and "YAML front matter" in msg and "line 17" in msg
    assert cli(["--root", str(fixture_book), "params"]) == 2
    assert "YAML front matter" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["book/fixture.md", "book/intro.md", "book/fixture.ipynb", "notes.md"])
def test_run_refuses_to_write_onto_a_chapter_source_or_markdown(fixture_book, capsys, target):
    """Old: `featlearn run fixture -o book/fixture.md` replaced the chapter with notebook JSON."""
    path = fixture_book / target
    before = path.read_bytes() if path.exists() else None
    assert cli(["--root", str(fixture_book), "run", "fixture", "-o", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refusing to write the executed notebook onto" in err and str(path) in err
    assert (path.read_bytes() if path.exists() else None) == before


def test_run_to_an_unwritable_path_is_a_clear_error(fixture_book, capsys):
    """Old: a FileExistsError/NotADirectoryError traceback from mkdir, naming no chapter."""
    blocker = fixture_book / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "run.ipynb"
    assert cli(["--root", str(fixture_book), "run", "fixture", "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the executed notebook of chapter 'fixture'" in err and str(out) in err
    assert "Traceback" not in err
    folder = fixture_book / "book"
    assert cli(["--root", str(fixture_book), "run", "fixture", "-o", str(folder), "--no-progress"]) == 2
    assert "it is a folder" in capsys.readouterr().err


def test_a_second_build_of_the_same_book_is_refused(fixture_book, capsys):
    """Old: no lock; two builds wrote the same _build/executed and _build/stage at once."""
    lock = fixture_book / "_build" / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        with pytest.raises(BuildError) as err:
            build(fixture_book, "tiny", progress=False, html=False)
        msg = str(err.value)
        assert "another featlearn build (pid 4242) is running on this book" in msg and str(lock) in msg
        assert cli(["--root", str(fixture_book), "build", "--no-html", "--no-progress"]) == 2
        assert "another featlearn build" in capsys.readouterr().err
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    assert not _executed(fixture_book).exists()  # nothing ran while the lock was held


def test_provenance_records_threads_blas_and_cpu():
    """Old: environment() had no thread count, so timings and last digits were unexplained."""
    env = environment(torch.device("cpu"))
    assert {"device", "device_name", "torch", "python", "cuda", "colab"} <= set(env)  # kept
    assert env["threads"] == torch.get_num_threads()
    assert isinstance(env.get("blas", ""), str) and isinstance(env.get("cpu", ""), str)
    ch = read_chapter(Path(__file__).parent / "fixtures" / "book" / "book" / "fixture.md")
    info = {"profile": "tiny", "params": {"n": 8}, "commit": "abc", "date": "today", "wall": 1.0, "env": env}
    assert f"**threads** {env['threads']}" in provenance_markdown(ch, info)
    info["env"] = {k: v for k, v in env.items() if k != "threads"}  # a cache from before: no crash
    assert "**threads**" not in provenance_markdown(ch, info)


def test_incomplete_reason_spots_partial_notebooks():
    """Old: any cached notebook with a matching key was served, however far its run got."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1"), nbformat.v4.new_code_cell("b = 2")]
    nb.metadata["papermill"] = {"exception": None, "end_time": "2024-01-01T00:00:00"}
    for i, c in enumerate(nb.cells):
        c.execution_count = i + 1
    assert incomplete_reason(nb) is None
    nb.cells[1].execution_count = None
    assert incomplete_reason(nb) == "code cell 2 [b = 2] never ran"
    nb.cells[1].execution_count = 2
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="E", evalue="x", traceback=[])]
    assert "has an error" in (incomplete_reason(nb) or "")
    nb.metadata["papermill"]["end_time"] = None
    assert incomplete_reason(nb) == "its run never finished"
    nb.metadata["papermill"]["exception"] = True
    assert incomplete_reason(nb) == "papermill recorded an exception"
    del nb.metadata["papermill"]
    assert incomplete_reason(nb) == "it has no papermill record"


# --- slow: the fixture chapter runs ----------------------------------------------------


@pytest.mark.slow
def test_a_dying_kernel_fails_like_a_failing_cell(fixture_book, capsys):
    """Old: a raw nbclient DeadKernelError traceback, no chapter or cell named, nothing kept."""
    (fixture_book / "book" / "dies.md").write_text(DYING_CHAPTER)
    toc = fixture_book / "_toc.yml"
    toc.write_text(
        toc.read_text().replace("  - file: book/fixture\n", "  - file: book/fixture\n  - file: book/dies\n")
    )
    out = fixture_book / "_build" / "runs" / "dies.ipynb"
    assert cli(["--root", str(fixture_book), "run", "dies", "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "chapter 'dies' (dies.md) failed in code cell 3 [import os]: the kernel died" in err, err
    assert "DeadKernelError" in err and "Traceback" not in err
    kept = fixture_book / "_build" / "failed" / "dies.ipynb"
    assert kept.exists() and f"is at {kept}" in err
    assert not out.exists() and not list(out.parent.glob(".*"))  # no output, no temp file

    with pytest.raises(ChapterFailed, match=r"code cell 3 \[import os\]: the kernel died"):
        execute_chapter(read_chapter(fixture_book / "book" / "dies.md"), {}, out, progress=False)


@pytest.mark.slow
def test_interrupted_or_incomplete_runs_are_never_reused(fixture_book, monkeypatch, capsys):
    """Old: the partial notebook was written where the finished one lives while the old key stayed."""
    import papermill

    build(fixture_book, "tiny", progress=False, html=False)
    cache = _executed(fixture_book)
    first = json.loads((cache / "fixture.json").read_text())
    assert first["params"]["seed"] == 0

    # 1. a cached notebook whose last cell never ran (e.g. left by a killed older build)
    nb = nbformat.read(cache / "fixture.ipynb", as_version=4)
    [c for c in nb.cells if c.cell_type == "code"][-1].execution_count = None  # the last code cell
    nbformat.write(nb, cache / "fixture.ipynb")
    capsys.readouterr()
    build(fixture_book, "tiny", progress=False, html=False)
    said = capsys.readouterr().out
    assert "is incomplete (code cell 6 [if fail_at_end:] never ran)" in said and "executing fixture" in said
    assert incomplete_reason(nbformat.read(cache / "fixture.ipynb", as_version=4)) is None

    # 2. Ctrl-C while `build fixture.seed=1` runs, after papermill wrote part of the notebook
    def interrupted(input_path, output_path, **kwargs):
        partial = nbformat.read(input_path, as_version=4)
        partial.cells.insert(
            1, nbformat.v4.new_code_cell("seed = 1", metadata={"tags": ["injected-parameters"]})
        )
        nbformat.write(partial, output_path)
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(fixture_book, "tiny", {"fixture.seed": 1}, progress=False, html=False)
    assert not (cache / "fixture.json").exists(), "a stale cache key survived the interrupted run"
    assert not (cache / "fixture.ipynb").exists(), "a notebook survived the interrupted run"
    assert _leftovers(fixture_book) == []
    monkeypatch.undo()

    # 3. the next plain build runs seed 0 again instead of serving seed 1's half run
    capsys.readouterr()
    build(fixture_book, "tiny", progress=False, html=False)
    assert "executing fixture" in capsys.readouterr().out
    nb = nbformat.read(cache / "fixture.ipynb", as_version=4)
    assert "seed = 0" in _injected(nb) and incomplete_reason(nb) is None
    assert json.loads((cache / "fixture.json").read_text())["params"]["seed"] == 0


@pytest.mark.slow
def test_build_killed_halfway_is_re_executed_at_the_right_seed(fixture_book, capsys):
    """Old: `build fixture.seed=1` killed mid-chapter, then plain `build` reused seed 1's partial notebook."""
    md = fixture_book / "book" / "fixture.md"
    md.write_text(
        md.read_text()
        + "\n```{code-cell} ipython3\nif seed == 1:\n    import time\n\n    time.sleep(300)\n```\n"
    )
    build(fixture_book, "tiny", progress=False, html=False)
    cache = _executed(fixture_book)

    proc = subprocess.Popen(
        [sys.executable, "-m", "featlearn.book.cli", "--root", str(fixture_book)]
        + ["build", "--profile", "tiny", "--no-html", "--no-progress", "fixture.seed=1"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not any(_sleeping_at_seed_1(p) for p in cache.glob("*.ipynb")):  # partial files too
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("the seed=1 build never reached its sleeping cell")
            time.sleep(0.5)
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # killed outright: no finally, no cleanup
        proc.wait()

    capsys.readouterr()
    build(fixture_book, "tiny", progress=False, html=False)
    assert "executing fixture" in capsys.readouterr().out
    nb = nbformat.read(cache / "fixture.ipynb", as_version=4)
    assert "seed = 0" in _injected(nb) and incomplete_reason(nb) is None
    assert _leftovers(fixture_book) == []


def test_provenance_says_a_page_run_at_other_threads_is_not_a_recorded_seed():
    """A page built with 2 threads showed a verdict its record's seed 0 (1 thread) did not."""
    ch = read_chapter(Path(__file__).parent / "fixtures" / "book" / "book" / "fixture.md")
    env = {"device": "cpu", "torch": "2.x", "threads": 2}
    info = {
        "profile": "tiny",
        "params": {"n": 8, "seed": 0},
        "commit": "abc",
        "date": "d",
        "wall": 1.0,
        "env": env,
    }
    box = provenance_markdown(ch, info, [1, 1, 1])
    assert "**One run** (seed 0): the verdicts that count are those across seeds" in box
    assert (
        "This run used 2 CPU threads and the `tiny` record 1, so it is not one of the recorded seeds" in box
    )
    assert "not one of the recorded seeds" not in provenance_markdown(ch, info, [2, 2])  # same count
    assert "not one of the recorded seeds" not in provenance_markdown(ch, info)  # no record
