"""Sweeps: one chapter over seeds and parameter values, run in parallel on Dask, resumable.

Why: a claim that holds for one seed may not hold for the next. A sweep runs a chapter
at every point of a grid (profile × seeds × parameter values), each point in a fresh
kernel through the same runner and parameter checks as ``featlearn run``, spread over
the workers of a Dask cluster (a :class:`distributed.LocalCluster` by default, or any
scheduler by address: ``dask scheduler`` + ``dask worker``, dask-jobqueue on Slurm). It
then says, per claim, how it fares across seeds.

Every grid point is checked with :meth:`Chapter.resolve` before any task starts. Each
finished point is written at once, atomically, to ``DIR/points/<key>.json`` (claims,
wall time, peak memory) and ``DIR/runs/<chapter>-<profile>-<params>-seed<k>.ipynb``;
``<key>`` hashes the chapter's text, the resolved parameters, the profile and the
library, so a rerun of the same sweep skips finished points and reruns failed or
interrupted ones. At the end it writes ``DIR/claims.csv`` (one row per claim per point),
``DIR/summary.md`` and ``DIR/summary.png``.

Workers must see the book at the same path as the machine that starts the sweep (a
shared file system, as on a cluster); the executed notebooks travel back through Dask.

Examples
--------
::

    featlearn sweep cnfa --profile fast --seeds 0-4 n_train=500,2000 --workers 4
    featlearn sweep cnfa --seeds 0,2,5 --scheduler tcp://10.0.0.5:8786
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featlearn.book.notebooks import ParameterError, parse_override
from featlearn.claims import Claim

__all__ = [
    "SEED_VERDICT_RULE",
    "Point",
    "SweepReport",
    "seed_verdict",
    "parse_seeds",
    "parse_grid",
    "text_hash",
    "text_hashes",
    "point_key",
    "plan_points",
    "connect",
    "run_points",
    "claims_frame",
    "summarize",
    "write_outputs",
    "sweep",
]

#: The fewest seeds that give an across-seed verdict: with one or two, one seed's luck decides.
MIN_SEEDS = 3

#: The across-seed verdict rule, as stated on summary pages.
SEED_VERDICT_RULE = (
    "Across seeds, a claim **holds** if it holds in at least ⌈0.8 n⌉ of its n runs, **fails** "
    "if it holds in at most ⌊0.2 n⌋ of them, and is **unstable** otherwise; a run in which the "
    "claim could not be measured counts as a run where it does not hold. Fewer than "
    f"{MIN_SEEDS} seeds give no verdict (**too few seeds**)."
)

#: Environment variables that set the number of CPU threads in a task's kernel.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def seed_verdict(n_holds: int, n: int) -> str:
    """The across-seed verdict of a claim that held in ``n_holds`` of ``n`` runs.

    ``"too few seeds"`` if ``n < MIN_SEEDS`` (one seed is not a result); else ``"holds"`` if
    ``n_holds >= ceil(0.8 n)``, ``"fails"`` if ``n_holds <= floor(0.2 n)``, else
    ``"unstable"`` (integer arithmetic, so no rounding surprises: n=5 needs 4 to hold and
    fails at 1; n=3 holds only at 3 and fails only at 0).

    Raises
    ------
    ValueError
        If ``n < 1`` or ``n_holds`` is not in ``[0, n]``.
    """
    if n < 1 or not 0 <= n_holds <= n:
        raise ValueError(f"seed_verdict needs 0 <= n_holds <= n and n >= 1, got n_holds={n_holds}, n={n}")
    if n < MIN_SEEDS:
        return "too few seeds"
    if n_holds >= -(-4 * n // 5):  # ceil(0.8 n)
        return "holds"
    if n_holds <= n // 5:  # floor(0.2 n)
        return "fails"
    return "unstable"


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-4"`` (inclusive), ``"0,2,5"`` or a mix such as ``"0-2,7"``.

    Raises
    ------
    ParameterError
        For anything else, an empty range or a seed named twice.
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ParameterError(f"--seeds {text!r}: range {part!r} is empty (write low-high)")
            seeds += range(lo, hi + 1)
        elif re.fullmatch(r"\d+", part):
            seeds.append(int(part))
        else:
            raise ParameterError(
                f"--seeds {text!r}: {part!r} is not a seed; write a range such as 0-4 or a list such as 0,2,5"
            )
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ParameterError(f"--seeds {text!r} names seed {dup[0]} twice")
    return seeds


def _split_top_level(raw: str) -> list[str]:
    """Split at commas that are not inside brackets or quotes (so ``[8,16],[32]`` is two values)."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quote = 0, ""
    for ch in raw:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_grid(items: Sequence[str] | None) -> dict[str, list[Any]]:
    """Parse ``key=v1,v2`` items into ``{key: [v1, v2]}``.

    Each value is parsed like a ``featlearn run`` override (:func:`parse_override`):
    ``n=8,16`` gives ints, ``device=cpu,cuda`` strings, ``sizes=[8,16],[32]`` two lists.
    ``key=v`` (one value) fixes a parameter for the whole sweep.

    Raises
    ------
    ParameterError
        For a malformed item, an empty value, a key given twice, or ``seed``/``profile``
        (those are chosen with ``--seeds`` and ``--profile``).
    """
    grid: dict[str, list[Any]] = {}
    for item in items or []:
        if "=" not in item:
            raise ParameterError(f"sweep parameter {item!r} is not of the form key=value[,value...]")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key == "seed":
            raise ParameterError(f"{item!r}: choose seeds with --seeds (e.g. --seeds 0-4), not seed=")
        if key == "profile":
            raise ParameterError(f"{item!r}: choose profiles with --profile (e.g. --profile fast,paper)")
        if key in grid:
            raise ParameterError(f"sweep parameter {key!r} is given twice; list its values once: {key}=a,b")
        values = []
        for piece in _split_top_level(raw):
            if not piece:
                raise ParameterError(f"sweep parameter {item!r} has an empty value")
            values.append(parse_override(f"{key}={piece}")[1])
        grid[key] = values
    return grid


def text_hash(text: str, profile: str | None = None, *, presentation: bool = False) -> str:
    """sha256 of what a chapter computes, so that editing its prose or figures keeps its records current.

    The hash covers the code cells (source and tags) and the ``featlearn`` front matter;
    Markdown cells are left out, and so are presentation cells, code that provably only
    draws (:func:`featlearn.book.cells.presentation_cells`), unless ``presentation=True``
    (how records made before that rule were hashed). With ``profile``, only that
    profile's entry of ``featlearn.profiles`` counts (adding or editing another profile,
    e.g. ``full``, keeps a ``fast`` record current); without it, every profile counts. A
    text that jupytext cannot read is hashed whole.
    """
    return text_hashes(text, [profile], presentation=presentation)[profile]


def text_hashes(
    text: str, profiles: Sequence[str | None], *, presentation: bool = False
) -> dict[str | None, str]:
    """:func:`text_hash` of ``text`` for each of ``profiles``, from one parse of the chapter.

    Why: parsing a chapter and classifying its cells costs far more than hashing, and the
    record checks want every profile's hash of every chapter.
    """
    import jupytext

    from featlearn.book.cells import presentation_cells

    try:
        nb = jupytext.reads(text, fmt="md:myst")
    except Exception:  # not a chapter: hash the text itself
        whole = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return dict.fromkeys(profiles, whole)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    tags = [sorted(c.metadata.get("tags", [])) for c in cells]
    drawn = set() if presentation else presentation_cells([c.source for c in cells], tags)
    code = [[c.source, t] for i, (c, t) in enumerate(zip(cells, tags)) if i not in drawn]
    out: dict[str | None, str] = {}
    for profile in profiles:
        meta = dict(nb.metadata.get("featlearn", {}))
        if profile is not None:
            every = meta.pop("profiles", {}) or {}
            meta["profile"] = [profile, every.get(profile)]
        blob = json.dumps([code, meta], sort_keys=True, default=str)
        out[profile] = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return out


def point_key(chapter_text: str, params: Mapping[str, Any], profile: str, library_hash: str) -> str:
    """The identity of one grid point: sha256 of (chapter code, resolved parameters, profile, library)."""
    blob = json.dumps(
        [text_hash(chapter_text, profile), dict(params), profile, library_hash], sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _slug_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return re.sub(r"[^A-Za-z0-9.+-]+", "", s) or "x"


@dataclass
class Point:
    """One grid point: a chapter at a profile, a seed and the swept parameter values."""

    chapter: str
    chapter_path: str
    chapter_hash: str
    profile: str
    seed: int
    swept: dict[str, Any]
    params: dict[str, Any]
    key: str
    library_hash: str
    notebook_name: str = ""

    def label(self) -> str:
        """``chapter 'x' (profile 'fast', seed=0, n=8)``: how failures name the point."""
        vals = ", ".join([f"seed={self.seed}"] + [f"{k}={v!r}" for k, v in self.swept.items()])
        return f"chapter {self.chapter!r} (profile {self.profile!r}, {vals})"

    def swept_json(self) -> str:
        """The swept (non-seed) values as sorted JSON: the ``params`` column of claims.csv."""
        return json.dumps(self.swept, sort_keys=True, default=str)


def plan_points(
    book: Any,
    chapter: str,
    profiles: Sequence[str],
    seeds: Sequence[int],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    library_hash: str | None = None,
) -> list[Point]:
    """Every point of profile × parameter values × seeds, each checked with :meth:`Chapter.resolve`.

    Parameters
    ----------
    book
        A :class:`featlearn.book.runner.Book`.
    chapter
        The chapter's name.
    profiles, seeds
        Non-empty lists; the chapter must have a ``seed`` parameter.
    grid
        ``{parameter: [values]}`` (see :func:`parse_grid`).

    Raises
    ------
    ParameterError
        For an unknown chapter, profile or parameter, or a value a chapter refuses: before
        anything runs.
    """
    from featlearn.book.runner import _library_hash

    grid = dict(grid or {})
    ch = book.chapter(chapter)
    if not profiles:
        raise ParameterError("a sweep needs at least one profile")
    if not seeds:
        raise ParameterError("a sweep needs at least one seed")
    if "seed" not in ch.parameters:
        raise ParameterError(f"chapter {ch.name!r} has no `seed` parameter, so it cannot be swept over seeds")
    text = ch.path.read_text(encoding="utf-8")
    lib = library_hash or _library_hash(chapter=text)  # only the modules this chapter imports
    keys = list(grid)
    points: list[Point] = []
    seen: dict[str, Point] = {}
    for profile in profiles:
        for combo in itertools.product(*(grid[k] for k in keys)):
            for seed in seeds:
                params = ch.resolve(profile, {**dict(zip(keys, combo)), "seed": seed})
                swept = {k: params[k] for k in keys}
                p = Point(
                    chapter=ch.name,
                    chapter_path=str(ch.path.resolve()),
                    chapter_hash=text_hash(text, profile),
                    profile=profile,
                    seed=int(seed),
                    swept=swept,
                    params=params,
                    key=point_key(text, params, profile, lib),
                    library_hash=lib,
                )
                if p.key in seen:
                    raise ParameterError(
                        f"the sweep names the same point twice: {p.label()} and {seen[p.key].label()}"
                    )
                seen[p.key] = p
                points.append(p)
    _name_notebooks(points)
    return points


def _name_notebooks(points: Sequence[Point]) -> None:
    """``<chapter>-<profile>-<k1-v1_k2-v2>-seed<k>.ipynb``; a hash keeps clashing names apart."""
    names: dict[str, list[Point]] = {}
    for p in points:
        slug = "_".join(f"{k}-{_slug_value(v)}" for k, v in p.swept.items())
        if len(slug) > 80:
            slug = "p" + hashlib.sha256(p.swept_json().encode()).hexdigest()[:10]
        parts = [p.chapter, p.profile] + ([slug] if slug else []) + [f"seed{p.seed}"]
        p.notebook_name = "-".join(parts) + ".ipynb"
        names.setdefault(p.notebook_name, []).append(p)
    for clash in (ps for ps in names.values() if len(ps) > 1):
        for p in clash:
            tag = hashlib.sha256(p.swept_json().encode()).hexdigest()[:8]
            p.notebook_name = p.notebook_name[: -len(".ipynb")] + f"-{tag}.ipynb"


# --------------------------------------------------------------------------- the task


class _PeakMemory:
    """Peak resident memory of the processes a task starts (its kernel), sampled with psutil.

    Without psutil, the worker's ``RUSAGE_CHILDREN`` high-water mark is used: the largest
    child it has ever reaped, so an upper bound when a worker runs several tasks.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil

            self._proc: Any = psutil.Process()
            self._before = {c.pid for c in self._proc.children(recursive=True)}
        except Exception:  # psutil is optional
            self._proc = None

    def _sample(self) -> None:
        total = 0
        for c in self._proc.children(recursive=True):
            if c.pid in self._before:
                continue
            try:
                total += c.memory_info().rss
            except Exception:  # the process ended between listing and reading
                pass
        self.peak = max(self.peak, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> _PeakMemory:
        if self._proc is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> tuple[float, str]:
        """(peak MiB, how it was measured)."""
        if self.peak > 0:
            return self.peak / 2**20, "psutil: resident set of the task's kernel, sampled every 0.1 s"
        import resource
        import sys

        scale = 1 if sys.platform == "darwin" else 1024
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
        return rss / 2**20, "getrusage(RUSAGE_CHILDREN).ru_maxrss of the worker: its largest finished child"


def _first_line(src: str) -> str:
    return next((ln.strip()[:80] for ln in src.splitlines() if ln.strip()), "(empty cell)")


def _env_facts(nb: Any) -> dict[str, Any]:
    from featlearn.book.page import ENV_MIME

    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if ENV_MIME in o.get("data", {}):
                return dict(o["data"][ENV_MIME])
    return {}


def _run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point on a worker; returns its claims, notebook text, wall time and memory.

    A failing chapter is returned as ``{"ok": False, "error": <ChapterFailed message>}``;
    anything else raises and reaches the driver through Dask.
    """
    import socket

    from featlearn import claims as _claims
    from featlearn.book.notebooks import read_chapter
    from featlearn.book.runner import ChapterFailed, execute_chapter

    # papermill kernels inherit this process's environment; Dask's nanny sets these to 1.
    for var in _THREAD_VARS:
        os.environ[var] = str(spec["threads"])
    worker_name: Any = None
    try:
        from distributed import get_worker

        worker_name = get_worker().name
    except Exception:  # run outside a worker (tests, benchmarks)
        pass
    gpu_ids = spec.get("gpu_ids")
    if gpu_ids and isinstance(worker_name, int):
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids[worker_name % len(gpu_ids)])
    path = Path(spec["chapter_path"])
    if not path.exists():
        return {"ok": False, "error": f"the worker cannot see the chapter at {path} (no shared file system?)"}
    if text_hash(path.read_text(encoding="utf-8"), spec["profile"]) != spec["chapter_hash"]:
        return {"ok": False, "error": f"{path} changed after the sweep was planned; rerun the sweep"}
    chapter = read_chapter(path)
    base = {"host": socket.gethostname(), "worker": str(worker_name), "threads": spec["threads"]}
    with tempfile.TemporaryDirectory(prefix="featlearn-sweep-") as tmp:
        out = Path(tmp) / spec["notebook_name"]
        t0 = time.time()
        with _PeakMemory() as mem:
            try:
                nb, wall = execute_chapter(
                    chapter,
                    spec["params"],
                    out,
                    progress=False,
                    failed_dir=Path(spec["failed_dir"]) if spec.get("failed_dir") else None,
                )
            except ChapterFailed as exc:
                return {**base, "ok": False, "error": str(exc), "wall_s": time.time() - t0}
        text = out.read_text(encoding="utf-8")
    peak, how = mem.result()
    cells = [
        (_first_line(c.source), float(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0))
        for c in nb.cells
        if c.cell_type == "code"
    ]
    return {
        **base,
        "ok": True,
        "notebook": text,
        "claims": [c.to_dict() for c in _claims.claims_from_notebook(nb)],
        "wall_s": wall,
        "cells_s": cells,
        "overhead_s": max(0.0, wall - sum(s for _, s in cells)),
        "peak_rss_mb": peak,
        "peak_rss_method": how,
        "env": _env_facts(nb),
    }


# --------------------------------------------------------------------------- the driver


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _point_json(out: Path, p: Point) -> Path:
    return out / "points" / f"{p.key}.json"


def _load_finished(out: Path, p: Point) -> dict[str, Any] | None:
    """The saved result of ``p`` if its JSON and the notebook it names (in ``runs/``) are there, else None."""
    js = _point_json(out, p)
    if not js.exists():
        return None
    try:
        res = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if res.get("key") != p.key or not (out / str(res.get("notebook", ""))).is_file():
        return None
    return res


@dataclass
class SweepReport:
    """What a sweep did: every point, the saved results, the failures."""

    out_dir: Path
    points: list[Point]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> saved point JSON
    failures: dict[str, str] = field(default_factory=dict)  # key -> message naming the point
    executed: int = 0
    reused: int = 0

    @property
    def ok(self) -> bool:
        """True when every point finished."""
        return not self.failures and len(self.results) == len(self.points)


def connect(
    scheduler: str | None = None,
    *,
    workers: int = 2,
    timeout: float = 5.0,
    gpus: bool = False,
) -> tuple[Any, list[Any]]:
    """A Dask client: on ``scheduler`` (an address) or on a new local cluster of ``workers`` processes.

    Returns the client and the objects to close when done (client, and the cluster if one
    was started here). Local workers run one task at a time (``threads_per_worker=1``).

    Raises
    ------
    BuildError
        If no scheduler answers at ``scheduler`` within ``timeout`` seconds.
    """
    from distributed import Client, LocalCluster

    from featlearn.book.runner import BuildError

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, ValueError, TimeoutError) as exc:
            raise BuildError(
                f"no Dask scheduler answered at {scheduler} within {timeout:g} s ({exc}). Start one with "
                f"`dask scheduler` and workers with `dask worker {scheduler}`, or leave out --scheduler "
                "to use a local cluster"
            ) from None
        return client, [client]
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        resources={"GPU": 1} if gpus else None,
    )
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return client, [client, cluster]


def _close(objs: Sequence[Any]) -> None:
    for o in objs:
        if o is None:
            continue
        try:
            o.close()
        except Exception:  # closing is best effort
            pass


def run_points(
    points: Sequence[Point],
    out_dir: str | Path,
    *,
    workers: int = 2,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    timeout: float = 5.0,
    gpus: bool = False,
    client: Any = None,
    commit: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SweepReport:
    """Run the points not finished yet in ``out_dir`` on Dask; save each as soon as it finishes.

    Parameters
    ----------
    points
        From :func:`plan_points` (one or several chapters).
    out_dir
        Where ``runs/``, ``points/`` and ``failed/`` go; finished points found there are reused.
    workers
        Local worker processes (ignored with ``scheduler`` or ``client``); at most one per
        point left to run is started.
    threads_per_worker
        CPU threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) in each task's kernel.
    scheduler
        Address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
    timeout
        Seconds to wait for ``scheduler`` to answer.
    gpus
        One GPU per task: local workers get ``CUDA_VISIBLE_DEVICES`` = their index (into the
        driver's ``CUDA_VISIBLE_DEVICES`` when set), and every task asks for the Dask
        resource ``GPU=1`` (start remote workers with ``--resources GPU=1``).
    client
        An existing :class:`distributed.Client` to use (not closed here).
    commit
        Recorded in each point's JSON (default: the commit of the first chapter's book).

    A point whose chapter raises, or whose worker dies, is reported in ``failures`` (the
    message names the chapter, the parameters and the cell); the others still run.
    """
    from tqdm.auto import tqdm

    from featlearn.book.runner import git_commit

    say = log or tqdm.write
    out = Path(out_dir).resolve()
    report = SweepReport(out_dir=out, points=list(points))
    todo = []
    for p in points:
        res = _load_finished(out, p)
        if res is None:
            todo.append(p)
        else:
            report.results[p.key] = res
            report.reused += 1
    if not todo:
        return report
    commit = commit or git_commit(Path(todo[0].chapter_path).parent)
    closers: list[Any] = []
    if client is None:
        n_local = min(workers, len(todo))
        where = scheduler or f"a local cluster of {n_local} worker process(es)"
        say(f"running {len(todo)} point(s) on {where} ({report.reused} finished earlier, reused)")
        client, closers = connect(scheduler, workers=n_local, timeout=timeout, gpus=gpus)
        if scheduler and not client.scheduler_info().get("workers"):
            say(f"the scheduler at {scheduler} has no workers yet; tasks wait until one joins")
    gpu_ids: list[str] | None = None
    if gpus and scheduler is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpu_ids = [g.strip() for g in visible.split(",") if g.strip()] if visible else None
        gpu_ids = gpu_ids or [str(i) for i in range(max(1, workers))]
    try:
        from distributed import as_completed

        futures = {}
        for i, p in enumerate(todo):
            spec = {
                "chapter_path": p.chapter_path,
                "chapter_hash": p.chapter_hash,
                "profile": p.profile,
                "params": p.params,
                "notebook_name": p.notebook_name,
                "threads": int(threads_per_worker),
                "failed_dir": str(out / "failed"),
                "gpu_ids": gpu_ids,
            }
            fut = client.submit(
                _run_point,
                spec,
                key=f"featlearn-{p.chapter}-{p.key[:16]}-{time.time_ns()}",
                pure=False,
                priority=len(todo) - i,
                resources={"GPU": 1} if gpus else None,
            )
            futures[fut] = p
        bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)
        try:
            for fut in as_completed(futures):
                p = futures[fut]
                try:
                    res = fut.result()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # KilledWorker, CancelledError, ...
                    res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                if res.get("ok"):
                    report.results[p.key] = _save_point(out, p, res, commit)
                    report.executed += 1
                else:
                    msg = f"{p.label()} failed: {res.get('error')}"
                    report.failures[p.key] = msg
                    say(msg)
                bar.update()
        finally:
            bar.close()
    finally:
        _close(closers)
    return report


def _save_point(out: Path, p: Point, res: Mapping[str, Any], commit: str) -> dict[str, Any]:
    """Write the notebook, then the point's JSON (its presence means the point is finished)."""
    import datetime as _dt

    _atomic_write(out / "runs" / p.notebook_name, res["notebook"])
    saved = {
        "key": p.key,
        "chapter": p.chapter,
        "profile": p.profile,
        "seed": p.seed,
        "swept": p.swept,
        "params": p.params,
        "notebook": f"runs/{p.notebook_name}",
        "chapter_hash": p.chapter_hash,
        "library_hash": p.library_hash,
        "commit": commit,
        "finished": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **{k: v for k, v in res.items() if k not in ("ok", "notebook")},
    }
    _atomic_write(_point_json(out, p), json.dumps(saved, indent=1, default=str) + "\n")
    return saved


# --------------------------------------------------------------------------- summaries

_COLUMNS = ["chapter", "profile", "seed", "params", "claim", "value", "verdict", "holds", "key"]


def claims_frame(report: SweepReport) -> Any:
    """One row per claim per finished point (the rows of ``claims.csv``), in grid order."""
    import pandas as pd

    rows = []
    for p in report.points:
        res = report.results.get(p.key)
        if res is None:
            continue
        for c in res.get("claims", []):
            holds = c.get("holds")
            rows.append(
                {
                    "chapter": p.chapter,
                    "profile": p.profile,
                    "seed": p.seed,
                    "params": p.swept_json(),
                    "claim": c["id"],
                    "value": c.get("value"),
                    "verdict": claim_from(c).status,  # as the page shows it, "matched by null" too
                    "holds": holds,
                    "key": p.key,
                }
            )
    return pd.DataFrame(rows, columns=_COLUMNS)


def claim_from(d: Mapping[str, Any]) -> Claim:
    """A :class:`~featlearn.claims.Claim` from its JSON object (unknown keys ignored)."""
    known = set(Claim.__dataclass_fields__)
    return Claim(**{k: v for k, v in d.items() if k in known})


def _number(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return math.nan


def summarize(frame: Any) -> Any:
    """Per chapter, profile, swept values and claim: mean, sd, min, max, n, holds, verdict.

    ``sd`` is the sample standard deviation (n − 1); non-numeric values are left out of the
    statistics but counted in ``n``. ``verdict`` is :func:`seed_verdict` (holds, n).
    """
    import pandas as pd

    cols = ["chapter", "profile", "params", "claim", "mean", "sd", "min", "max", "n", "holds", "verdict"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    f = frame.assign(
        _x=frame["value"].map(_number), _h=frame["holds"].map(lambda h: h is True or h == "True")
    )
    g = f.groupby(["chapter", "profile", "params", "claim"], sort=False)
    s = g.agg(
        mean=("_x", "mean"),
        sd=("_x", "std"),
        min=("_x", "min"),
        max=("_x", "max"),
        n=("_x", "size"),
        holds=("_h", "sum"),
    ).reset_index()
    s["holds"] = s["holds"].astype(int)
    s["verdict"] = [seed_verdict(int(h), int(n)) for h, n in zip(s["holds"], s["n"])]
    return s[cols]


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "—" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _summary_markdown(report: SweepReport, stats: Any) -> str:
    chapters = sorted({p.chapter for p in report.points})
    profiles = list(dict.fromkeys(p.profile for p in report.points))
    seeds = list(dict.fromkeys(p.seed for p in report.points))
    swept: dict[str, list[Any]] = {}
    for p in report.points:
        for k, v in p.swept.items():
            if v not in swept.setdefault(k, []):
                swept[k].append(v)
    lines = [
        f"# Sweep of {', '.join(f'`{c}`' for c in chapters)}",
        "",
        f"Profiles {', '.join(f'`{p}`' for p in profiles)}; seeds {', '.join(map(str, seeds))}"
        + (
            "; swept: " + "; ".join(f"`{k}` ∈ {{{', '.join(map(repr, v))}}}" for k, v in swept.items())
            if swept
            else ""
        )
        + ".",
        "",
        f"**{len(report.points)} points: {len(report.results)} finished "
        f"({report.executed} run now, {report.reused} reused), {len(report.failures)} failed.** "
        "Every run's claims are in `claims.csv`, its notebook in `runs/`.",
        "",
        SEED_VERDICT_RULE,
        "",
    ]
    if not stats.empty:
        lines += [
            "| chapter | profile | parameters | claim | mean | sd | min | max | n | holds | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in stats.itertuples(index=False):
            lines.append(
                f"| {r.chapter} | `{r.profile}` | `{r.params}` | `{r.claim}` | {_fmt(r.mean)} | {_fmt(r.sd)} | "
                f"{_fmt(r.min)} | {_fmt(r.max)} | {r.n} | {r.holds}/{r.n} | {r.verdict} |"
            )
    if report.failures:
        lines += ["", "## Failed points", "", "They run again when the same sweep is started again.", ""]
        lines += [
            f"- {m.splitlines()[0]}" + "".join(f"\n  {ln}" for ln in m.splitlines()[1:])
            for m in report.failures.values()
        ]
    return "\n".join(lines) + "\n"


def _summary_figure(frame: Any, stats: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f = frame.assign(_x=frame["value"].map(_number))
    groups = [
        (k, d) for k, d in f.groupby(["chapter", "profile", "claim"], sort=False) if d["_x"].notna().any()
    ]
    n = max(1, len(groups))
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    if not groups:
        fig.text(0.5, 0.5, "no numeric claim values", ha="center")
    for i, ((chapter, profile, claim), d) in enumerate(groups):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        combos = list(dict.fromkeys(d["params"]))
        for j, combo in enumerate(combos):
            dd = d[d["params"] == combo]
            colors = ["tab:green" if h is True else "tab:red" for h in dd["holds"]]
            ax.scatter([j] * len(dd), dd["_x"], c=colors, s=18, alpha=0.7, zorder=3)
            m, s = dd["_x"].mean(), dd["_x"].std()
            ax.errorbar([j + 0.15], [m], yerr=[0 if math.isnan(s) else s], fmt="o", color="black", capsize=3)
        labels = [", ".join(f"{k}={v}" for k, v in json.loads(c).items()) or "defaults" for c in combos]
        ax.set_xticks(range(len(combos)), labels, rotation=20, fontsize=7)
        ax.set_xlim(-0.5, len(combos) - 0.5)
        ax.set_title(f"{chapter} · {claim} ({profile})", fontsize=9)
        ax.set_ylabel("value")
    fig.suptitle("claims across seeds: dots = runs (green holds, red not), black = mean ± sd", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def write_outputs(report: SweepReport) -> dict[str, Path]:
    """Write ``claims.csv``, ``summary.md`` and ``summary.png`` into the sweep's folder."""
    out = report.out_dir
    frame = claims_frame(report)
    stats = summarize(frame)
    paths = {"claims": out / "claims.csv", "summary": out / "summary.md", "figure": out / "summary.png"}
    _atomic_write(paths["claims"], frame.to_csv(index=False))
    _atomic_write(paths["summary"], _summary_markdown(report, stats))
    _summary_figure(frame, stats, paths["figure"])
    return paths


def sweep(
    root: str | Path,
    chapter: str,
    *,
    profiles: Sequence[str] = ("fast",),
    seeds: Sequence[int] = (0,),
    grid: Mapping[str, Sequence[Any]] | None = None,
    out_dir: str | Path | None = None,
    **run: Any,
) -> SweepReport:
    """Plan (checking every point), run what is not finished, and write the summaries.

    ``out_dir`` defaults to ``<root>/_build/sweeps/<chapter>``; the other keyword
    arguments go to :func:`run_points` (``workers``, ``threads_per_worker``,
    ``scheduler``, ``timeout``, ``gpus``, ``client``, ``progress``).
    """
    from featlearn.book.runner import Book

    book = Book(Path(root))
    points = plan_points(book, chapter, list(profiles), list(seeds), grid)
    out = Path(out_dir) if out_dir is not None else book.root / "_build" / "sweeps" / chapter
    report = run_points(points, out, **run)
    write_outputs(report)
    return report
