"""The ``featlearn`` command: build the book, run one chapter, list parameters, sync pairs.

Why: one command for a newcomer, and papermill's parameter warnings turned into errors.

Examples
--------
::

    featlearn build                          # every chapter at the fast profile, then the site
    featlearn build --profile paper          # the paper's settings (GPU, internet)
    featlearn build cnfa.n_imagenet_images=64  # override one chapter's parameter
    featlearn run cnfa --profile paper       # execute one chapter into _build/runs/
    featlearn run cnfa n_train=500 seed=1 -o my.ipynb
    featlearn params cnfa                    # parameters, types and profiles
    featlearn sync                           # rewrite each chapter's .ipynb from its .md
    featlearn sweep cnfa --seeds 0-4 n_train=500,2000 --workers 4   # seeds x values on Dask
    featlearn record cnfa --profile fast --seeds 0-4   # records/fast/cnfa/, committed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featlearn.book.notebooks import ParameterError, parse_overrides

__all__ = ["main"]


def _cmd_build(args: argparse.Namespace) -> None:
    from featlearn.book.runner import build

    out = build(
        args.root,
        args.profile,
        parse_overrides(args.overrides),
        force=args.force,
        progress=not args.no_progress,
        html=not args.no_html,
    )
    print(f"site: {out / 'html' / 'index.html'}\nclaims: {out / 'claims.json'}")


def _cmd_run(args: argparse.Namespace) -> None:
    from featlearn.book.runner import Book, check_output_path, execute_chapter

    book = Book(Path(args.root))
    ch = book.chapter(args.chapter)
    params = ch.resolve(args.profile, parse_overrides(args.overrides))
    out = (
        Path(args.output)
        if args.output
        else book.root / "_build" / "runs" / f"{ch.name}-{args.profile}.ipynb"
    )
    # Refuse a chapter source, a .md page or a folder before spending the run; the
    # notebook is written to a temporary file and renamed onto `out` only on success.
    check_output_path(out, book.chapters())
    _, wall = execute_chapter(
        ch, params, out.resolve(), progress=not args.no_progress, failed_dir=book.root / "_build" / "failed"
    )
    print(f"executed {ch.name} at profile {args.profile!r} in {wall:.1f} s -> {out}")


def _cmd_params(args: argparse.Namespace) -> None:
    from featlearn.book.runner import Book

    book = Book(Path(args.root))
    chapters = [book.chapter(args.chapter)] if args.chapter else book.chapters()
    for ch in chapters:
        print(f"{ch.name}: {ch.title}")
        for p in ch.parameters.values():
            print(f"  {p.name}: {p.type_name} = {p.default!r}")
        for prof, over in ch.profiles.items():
            shown = ", ".join(f"{k}={v!r}" for k, v in over.items()) or "(the defaults above)"
            print(f"  profile {prof}: {shown}")


def _cmd_sync(args: argparse.Namespace) -> None:
    from featlearn.book.notebooks import is_chapter_file
    from featlearn.book.pairing import format_chapters, pair_differences, sync_book
    from featlearn.book.runner import BuildError

    if args.check:
        problems = [
            p
            for md in sorted((Path(args.root) / "book").rglob("*.md"))
            if is_chapter_file(md)
            for p in pair_differences(md)
        ]
        if problems:
            raise BuildError("chapters out of sync (run `make sync`):\n  " + "\n  ".join(problems))
        print("every chapter's .ipynb matches its .md")
        return
    if args.format:
        for path in format_chapters(Path(args.root)):
            print(f"formatted {path}")
    for path in sync_book(Path(args.root)):
        print(f"wrote {path}")


def _run_options(args: argparse.Namespace) -> dict:
    return {
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "scheduler": args.scheduler,
        "timeout": args.timeout,
        "gpus": args.gpus,
        "progress": not args.no_progress,
    }


def _cmd_sweep(args: argparse.Namespace) -> int:
    from featlearn.book.runner import Book
    from featlearn.book.sweep import parse_grid, parse_seeds, plan_points, run_points, write_outputs

    book = Book(Path(args.root))
    profiles = [p.strip() for p in args.profile.split(",") if p.strip()]
    points = plan_points(book, args.chapter, profiles, parse_seeds(args.seeds), parse_grid(args.overrides))
    out = Path(args.output) if args.output else book.root / "_build" / "sweeps" / args.chapter
    try:
        report = run_points(points, out, **_run_options(args))
    except KeyboardInterrupt:
        print(f"featlearn: interrupted; finished points are kept in {out}; rerun to resume", file=sys.stderr)
        return 130
    paths = write_outputs(report)
    print(
        f"swept {args.chapter}: {len(points)} points, {report.executed} run now, {report.reused} reused, "
        f"{len(report.failures)} failed\nsummary: {paths['summary']}\nclaims: {paths['claims']}"
    )
    if report.failures:
        print(f"featlearn: {len(report.failures)} point(s) failed:", file=sys.stderr)
        for msg in report.failures.values():
            print("  " + msg.replace("\n", "\n  "), file=sys.stderr)
        return 1
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from featlearn.book.records import record
    from featlearn.book.runner import Book
    from featlearn.book.sweep import parse_seeds

    if bool(args.chapters) == bool(args.all):
        raise ParameterError("name the chapters to record, or give --all (not both)")
    book = Book(Path(args.root))
    try:
        rep = record(
            book.root,
            None if args.all else args.chapters,
            profile=args.profile,
            seeds=parse_seeds(args.seeds),
            records_dir=args.records_dir,
            **_run_options(args),
        )
    except KeyboardInterrupt:
        print("featlearn: interrupted; finished runs are kept and reused next time", file=sys.stderr)
        return 130
    for path in rep.written:
        print(f"recorded {path}")
    if rep.failed:
        for name, msgs in rep.failed.items():
            print(f"featlearn: {name} not recorded:", file=sys.stderr)
            for msg in msgs:
                print("  " + msg.replace("\n", "\n  "), file=sys.stderr)
        return 1
    return 0


def _add_run_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--profile", default="fast", help="profile (sweep: a comma list, e.g. fast,paper)")
    sp.add_argument("--workers", type=int, default=2, help="local worker processes (default: 2)")
    sp.add_argument(
        "--threads-per-worker", type=int, default=1, help="CPU threads in each run's kernel (default: 1)"
    )
    sp.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for --scheduler (default: 5)")
    sp.add_argument("--gpus", action="store_true", help="one GPU per run (--workers = number of GPUs)")
    sp.add_argument("--no-progress", action="store_true")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``featlearn`` command; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="featlearn",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--root", default=".", help="the book's folder (default: .)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="execute every chapter, then build the site into _build/html")
    b.add_argument("--profile", default="fast", help="profile for every chapter (default: fast)")
    b.add_argument("--force", action="store_true", help="re-execute chapters even if unchanged")
    b.add_argument("--no-html", action="store_true", help="execute and stage only; skip jupyter-book")
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b.add_argument("overrides", nargs="*", metavar="[chapter.]key=value")
    b.set_defaults(func=_cmd_build)

    r = sub.add_parser("run", help="execute one chapter with papermill")
    r.add_argument("chapter")
    r.add_argument("--profile", default="fast")
    r.add_argument(
        "-o", "--output", help="executed notebook (default: _build/runs/<chapter>-<profile>.ipynb)"
    )
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("overrides", nargs="*", metavar="key=value")
    r.set_defaults(func=_cmd_run)

    p = sub.add_parser("params", help="list chapters' parameters and profiles")
    p.add_argument("chapter", nargs="?")
    p.set_defaults(func=_cmd_params)

    s = sub.add_parser("sync", help="rewrite each chapter's output-free .ipynb from its .md")
    s.add_argument("--format", action="store_true", help="first format the chapters' code cells with ruff")
    s.add_argument("--check", action="store_true", help="write nothing; exit 2 if a pair differs")
    s.set_defaults(func=_cmd_sync)

    w = sub.add_parser("sweep", help="run one chapter over seeds and parameter values on Dask")
    w.add_argument("chapter")
    w.add_argument("--seeds", default="0", help="0-4, or 0,2,5 (default: 0)")
    w.add_argument("-o", "--output", help="folder of the sweep (default: _build/sweeps/<chapter>)")
    _add_run_options(w)
    w.add_argument("overrides", nargs="*", metavar="key=v1,v2")
    w.set_defaults(func=_cmd_sweep)

    rc = sub.add_parser("record", help="record chapters over seeds into records/<profile>/<chapter>/")
    rc.add_argument("chapters", nargs="*", metavar="chapter")
    rc.add_argument("--all", action="store_true", help="every chapter")
    rc.add_argument("--seeds", default="0-4", help="0-4, or 0,2,5 (default: 0-4)")
    rc.add_argument("--records-dir", help="where records go (default: <root>/records)")
    _add_run_options(rc)
    rc.set_defaults(func=_cmd_record)

    args, extra = ap.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if unknown:
        ap.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = list(args.overrides) + extra  # key=value after options
    from featlearn.book.runner import BuildError

    try:
        status = args.func(args)  # sweep and record return 1 when a run failed
    except (ParameterError, BuildError) as exc:
        print(f"featlearn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "featlearn: interrupted; the chapter that was running left no executed notebook behind "
            "and runs again next time",
            file=sys.stderr,
        )
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
