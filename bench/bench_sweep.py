"""Benchmark: a sweep on a local Dask cluster against the same runs one after another.

Why: ``featlearn sweep`` spreads a chapter's grid points over worker processes, each
point in a fresh kernel. This script runs N points of the fixture chapter
(``tests/fixtures/book``) at the ``tiny`` profile both ways in the same run and prints
the ratio, with and without the cluster's start-up, and splits one task's cost into
kernel start (a trivial notebook: parameters and ``pass``), the chapter's import and
setup cell (torch, ``page.setup``, the data it draws) and the remaining cells (compute),
from papermill's per-cell durations.

Usage::

    python bench/bench_sweep.py                      # 4 runs, 2 workers, 1 thread each
    python bench/bench_sweep.py --runs 8 --workers 4 --threads-per-worker 2

Each task and each sequential run gets ``--threads-per-worker`` CPU threads
(``OMP_NUM_THREADS``), so the comparison is of the same work. Times are wall times of
one measurement each: they vary with the machine's load, the ratio less so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_BOOK = ROOT / "tests" / "fixtures" / "book"

TRIVIAL = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
featlearn:
  profiles:
    fast: {}
    paper: {}
---

# Kernel start

```{code-cell} ipython3
:tags: [parameters]

profile = "fast"
seed = 0
```

```{code-cell} ipython3
pass
```
"""


def _cells(nb) -> list[tuple[str, float]]:
    out = []
    for c in nb.cells:
        if c.cell_type == "code":
            first = next((ln.strip() for ln in c.source.splitlines() if ln.strip()), "")
            out.append((first, float(c.metadata.get("papermill", {}).get("duration") or 0.0)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4, help="grid points (seeds 0..runs-1)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--profile", default="tiny")
    opts = p.parse_args()

    from featlearn.book.notebooks import read_chapter
    from featlearn.book.runner import Book, execute_chapter
    from featlearn.book.sweep import connect, plan_points, run_points

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(opts.threads_per_worker)  # the sequential runs' kernels inherit it
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        book_dir = Path(tmp) / "book"
        shutil.copytree(FIXTURE_BOOK, book_dir, ignore=shutil.ignore_patterns("_build"))
        (Path(tmp) / "trivial.md").write_text(TRIVIAL)
        trivial = read_chapter(Path(tmp) / "trivial.md")
        book = Book(book_dir)
        fixture = book.chapter("fixture")
        print(
            f"sweep benchmark: fixture chapter, profile {opts.profile!r}, {opts.runs} runs, "
            f"{opts.workers} workers × {opts.threads_per_worker} thread(s), {os.cpu_count()} CPUs, "
            f"Python {sys.version.split()[0]}",
            flush=True,
        )

        kernel = []
        for i in range(2):
            _, wall = execute_chapter(
                trivial, trivial.resolve("fast"), Path(tmp) / f"trivial{i}.ipynb", progress=False
            )
            kernel.append(wall)

        t0 = time.perf_counter()
        seq_walls, seq_cells = [], []
        for seed in range(opts.runs):
            nb, wall = execute_chapter(
                fixture,
                fixture.resolve(opts.profile, {"seed": seed}),
                Path(tmp) / "seq" / f"seed{seed}.ipynb",
                progress=False,
            )
            seq_walls.append(wall)
            seq_cells.append(_cells(nb))
        t_seq = time.perf_counter() - t0

        points = plan_points(book, "fixture", [opts.profile], list(range(opts.runs)))
        t0 = time.perf_counter()
        client, closers = connect(None, workers=opts.workers)
        client.wait_for_workers(opts.workers)
        t_start = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            report = run_points(
                points,
                Path(tmp) / "sweep",
                client=client,
                threads_per_worker=opts.threads_per_worker,
                progress=False,
            )
            t_run = time.perf_counter() - t1
        finally:
            for c in closers:
                c.close()
        if not report.ok:
            sys.exit(f"the sweep failed: {report.failures}")
        task_walls = [r["wall_s"] for r in report.results.values()]
        peaks = [r["peak_rss_mb"] for r in report.results.values()]

    k = min(kernel)
    setup_cell = statistics.median(
        next(s for first, s in cells if first.startswith("import matplotlib")) for cells in seq_cells
    )
    all_cells = statistics.median(sum(s for _, s in cells) for cells in seq_cells)
    wall = statistics.median(seq_walls)
    print(f"\n{'':<46} {'seconds':>9}")
    print(f"{'one after another (' + str(opts.runs) + ' runs)':<46} {t_seq:>9.1f}")
    print(f"{'sweep: cluster start':<46} {t_start:>9.1f}")
    print(f"{'sweep: the runs':<46} {t_run:>9.1f}")
    print(f"{'sweep: total':<46} {t_start + t_run:>9.1f}")
    print(
        f"speed-up: {t_seq / (t_start + t_run):.2f}x with the cluster's start, {t_seq / t_run:.2f}x without "
        f"(ideal {min(opts.workers, opts.runs)}x)"
    )
    print(f"\none run (median of the sequential runs; total wall {wall:.1f} s):")
    print(f"{'  kernel start + papermill (trivial notebook)':<46} {k:>9.1f}")
    print(f"{'  import + setup cell (torch, page.setup, data)':<46} {setup_cell:>9.1f}")
    print(f"{'  other cells (compute, figure, claims)':<46} {all_cells - setup_cell:>9.1f}")
    print(f"{'  rest (wall − cells − kernel start)':<46} {max(0.0, wall - all_cells - k):>9.1f}")
    print(
        f"\nin the sweep: median task wall {statistics.median(task_walls):.1f} s, "
        f"kernel peak memory {statistics.median(peaks):.0f} MB"
    )
    print(
        "speed-up = sequential time / sweep time; both sides start a fresh kernel per run. Kernel start is the "
        "wall time of a notebook with only a parameters cell and `pass`."
    )


if __name__ == "__main__":
    main()
