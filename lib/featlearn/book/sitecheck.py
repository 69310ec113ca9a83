"""Check the built site in a real browser (headless Chromium).

Why: a build can succeed and still ship a page with a broken figure or a traceback. This
opens every page named in ``_toc.yml`` the way a reader would and checks that it loads,
that every image decoded, that no page shows an error output, and that the Scorecard
table lists every claim in ``_build/claims.json``.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featlearn.book.runner import Book

__all__ = ["PageReport", "check_site", "chromium_path", "CHROMIUM_ARGS"]

#: Flags for Chromium on a machine without a GPU, a sandbox or outside network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

_ERROR_SELECTORS = (
    ".output.traceback, .output.error, .output.stderr, div.highlight-ipythontb, .system-message"
)
_PAGE_JS = """() => ({
  title: document.title,
  images: Array.from(document.querySelectorAll('article img, main img')).map(i => ({
      src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
  errors: Array.from(document.querySelectorAll('__ERRORS__')).map(e => e.innerText.slice(0, 200)),
  traceback: document.body.innerText.includes('Traceback (most recent call last)'),
})""".replace("__ERRORS__", _ERROR_SELECTORS)


def chromium_path() -> str:
    """The Chromium executable (Debian's ``chromium``), or a clear error naming the fix."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("Chromium is not installed. Fix: apt-get install chromium")


@dataclass
class PageReport:
    """What the browser saw on one page."""

    page: str
    status: int | None
    problems: list[str] = field(default_factory=list)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no request log on stdout
        pass


def check_site(root: str | Path = ".", screenshots: str | Path | None = None) -> list[PageReport]:
    """Open every page of the built site in headless Chromium and report problems.

    Parameters
    ----------
    root
        The book's folder; the site is read from ``<root>/_build/html``.
    screenshots
        If given, a full-page PNG of each page is saved there.

    Returns
    -------
    list of PageReport
        One per page in ``_toc.yml``; a page is fine when ``problems`` is empty.
    """
    from playwright.sync_api import sync_playwright

    book = Book(Path(root))
    html = book.root / "_build" / "html"
    claims_file = book.root / "_build" / "claims.json"
    if not (html / "index.html").exists():
        raise FileNotFoundError(f"no built site at {html}; run `featlearn build` first")
    claims = json.loads(claims_file.read_text()) if claims_file.exists() else None
    pages = [p.relative_to(book.root).with_suffix(".html").as_posix() for p in book.pages()]
    handler = functools.partial(_Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    shots = Path(screenshots) if screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    reports = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            for rel in pages:
                resp = tab.goto(base + rel, wait_until="load")
                rep = PageReport(rel, resp.status if resp else None)
                if rep.status != 200:
                    rep.problems.append(f"HTTP status {rep.status}")
                    reports.append(rep)
                    continue
                seen = tab.evaluate(_PAGE_JS)
                rep.problems += [f"image did not load: {i['src']}" for i in seen["images"] if not i["ok"]]
                rep.problems += [f"error output on page: {e!r}" for e in seen["errors"]]
                if seen["traceback"]:
                    rep.problems.append("a traceback is shown on the page")
                if rel.endswith("scorecard.html"):
                    rep.problems += _check_scorecard(tab, claims)
                if shots:
                    tab.screenshot(path=str(shots / (rel.replace("/", "_")[:-5] + ".png")), full_page=True)
                reports.append(rep)
            browser.close()
    finally:
        server.shutdown()
    return reports


def _check_scorecard(tab: Any, claims: list[dict] | None) -> list[str]:
    if claims is None:
        return ["_build/claims.json is missing"]
    rows = tab.evaluate("""() => Array.from(document.querySelectorAll('table tbody tr')).map(
        r => Array.from(r.querySelectorAll('td')).map(td => td.innerText.trim()))""")
    shown = sorted(r[1] for r in rows if len(r) > 1)
    problems = [
        f"claim {c['chapter']}/{c['id']} is not in the scorecard table"
        for c in claims
        if c["id"] not in shown
    ]
    if shown != sorted(c["id"] for c in claims):
        problems.append(f"the scorecard table lists {len(shown)} claims, claims.json has {len(claims)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m featlearn.book.sitecheck [ROOT] [--screenshots DIR]``: exit 1 on any problem."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=".")
    ap.add_argument("--screenshots")
    args = ap.parse_args(argv)
    reports = check_site(args.root, args.screenshots)
    bad = 0
    for r in reports:
        mark = "ok " if not r.problems else "BAD"
        print(f"{mark} {r.page}")
        for p in r.problems:
            print(f"    {p}")
        bad += bool(r.problems)
    print(f"{len(reports) - bad} pages fine, {bad} with problems")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
