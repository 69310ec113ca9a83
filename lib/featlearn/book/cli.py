"""The ``featlearn`` command: build the book, run one chapter, list parameters, sync pairs.

Why: one command for a newcomer, and papermill's parameter warnings turned into errors.

Examples
--------
::

    featlearn build                          # every chapter at the fast profile, then the site
    featlearn build --profile paper          # the paper's settings (GPU, internet)
    featlearn build cnfa.n_images=64         # override one chapter's parameter
    featlearn run cnfa --profile paper       # execute one chapter into _build/runs/
    featlearn run cnfa n_images=8 seed=1 -o my.ipynb
    featlearn params cnfa                    # parameters, types and profiles
    featlearn sync                           # rewrite each chapter's .ipynb from its .md
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
    from featlearn.book.runner import Book, execute_chapter

    book = Book(Path(args.root))
    ch = book.chapter(args.chapter)
    params = ch.resolve(args.profile, parse_overrides(args.overrides))
    out = (
        Path(args.output)
        if args.output
        else book.root / "_build" / "runs" / f"{ch.name}-{args.profile}.ipynb"
    )
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

    args, extra = ap.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if unknown:
        ap.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = list(args.overrides) + extra  # key=value after options
    from featlearn.book.runner import BuildError

    try:
        args.func(args)
    except (ParameterError, BuildError) as exc:
        print(f"featlearn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
