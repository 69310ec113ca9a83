"""Check the built site in a real browser (headless Chromium), as a reader would see it.

Why: a build can succeed and still ship a page with a broken figure, a traceback, a table
that runs off the column, or formulas shown as raw TeX. This opens every page named in
``_toc.yml`` with no network (every request that leaves the site is blocked, as for a
reader offline) and checks, on every page:

- it loads, every image decoded, and no error output or traceback is shown;
- at 1280 px, no element of the main column overflows it sideways: nothing scrolls
  sideways (code cells, outputs, tables), is cut off, or sticks out of the column;
- formulas render: a page with math has MathJax output in every formula, and no raw
  ``\\(``, ``\\[`` or ``$$`` is left in its text (code excluded);
- every verdict mark (:data:`VERDICT_SELECTOR`) has a non-zero width;

and on the Scorecard, that its tables list every claim in ``_build/claims.json`` and
that at 390 px (a phone) none of its tables overflows sideways. With ``screenshots`` it
saves a full-page screenshot of every page at 1280 px (``<page>.png``) and of the
Scorecard at 390 px (``<page>-390.png``).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featlearn.book.runner import Book

__all__ = ["PageReport", "check_site", "check_pages", "chromium_path", "CHROMIUM_ARGS"]

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

#: The reading width, and the phone width the Scorecard must also fit.
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: The verdict marks of the Scorecard and the claim boxes (see ``featlearn.book.scorecard``).
VERDICT_SELECTOR = ".fl-verdict"
#: The main column of a page: sphinx-book-theme's article, else ``main``, else the body.
MAIN_SELECTORS = ("article.bd-article", "main", "body")
#: How long to wait for MathJax to typeset a page, in milliseconds.
MATH_TIMEOUT_MS = 20_000
#: Elements named per page and check (the rest are counted).
MAX_REPORTED = 8

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

# Shared by the checks below: the main column, and a readable name for an element
# (tag#id.class, the section it is in, the start of its text).
_HELPERS_JS = r"""
const mainOf = (sels) => {
  for (const s of sels) { const m = document.querySelector(s); if (m) return m; }
  return document.body;
};
const describe = (el) => {
  let name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '');
  const cls = Array.from(el.classList).slice(0, 3);
  if (cls.length) name += '.' + cls.join('.');
  const sec = el.closest('section');
  const h = sec && sec.querySelector('h1, h2, h3, h4');
  const where = h ? ` in section "${h.textContent.replace(/[#¶]/g, '').trim().slice(0, 60)}"` : '';
  const text = (el.innerText || el.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 70);
  return name + where + (text ? ` ("${text}")` : '');
};
"""

# Every element of the main column that overflows sideways, in one of three ways: it
# scrolls sideways (overflow-x auto/scroll with content wider than its box), it is cut off
# (overflow-x hidden/clip with wider content), or it sticks out of the column while
# nothing clips it. Only the outermost of nested offenders is named. ``onlyTables``
# keeps tables and the boxes that hold one.
_OVERFLOW_JS = (
    "([mainSels, onlyTables, maxN]) => {"
    + _HELPERS_JS
    + r"""
  const main = mainOf(mainSels);
  const col = main.getBoundingClientRect();
  const reported = new Set();
  const under = (el) => {
    for (let a = el.parentElement; a; a = a.parentElement) if (reported.has(a)) return true;
    return false;
  };
  const clipped = (el) => {
    for (let a = el.parentElement; a && a !== main; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== 'visible') return true;
    return false;
  };
  const shown = [];
  let total = 0;
  for (const el of main.querySelectorAll('*')) {
    if (onlyTables && !(el.tagName === 'TABLE' || el.querySelector('table'))) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || under(el)) continue;
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden') continue;
    const extra = el.scrollWidth - el.clientWidth;
    let what = null;
    if ((st.overflowX === 'auto' || st.overflowX === 'scroll') && extra > 1) {
      what = `scrolls sideways: ${el.scrollWidth} px of content in a ${el.clientWidth} px box`;
    } else if ((st.overflowX === 'hidden' || st.overflowX === 'clip') && extra > 1) {
      what = `is cut off: ${el.scrollWidth} px of content in a ${el.clientWidth} px box`;
    } else if ((r.right > col.right + 1 || r.left < col.left - 1) && !clipped(el)) {
      const by = Math.round(Math.max(r.right - col.right, col.left - r.left));
      what = `sticks out of the ${Math.round(col.width)} px column by ${by} px`;
    }
    if (what === null) continue;
    reported.add(el);
    total += 1;
    if (shown.length < maxN) shown.push(describe(el) + ' ' + what);
  }
  const page = document.documentElement.scrollWidth - window.innerWidth;
  return {shown, total, page};
}"""
)

# Sphinx writes each formula as an element of class "math" holding \(..\) or \[..\];
# MathJax 2 (CommonHTML) puts .mjx-chtml output in it, MathJax 3 an mjx-container.
_RENDERED_JS = (
    "el => el.querySelector('.mjx-chtml, .MathJax_CHTML, .MathJax, .MathJax_SVG, mjx-container') !== null"
)
_MATH_DONE_JS = (
    "(mainSels) => {"
    + _HELPERS_JS
    + f"const rendered = {_RENDERED_JS};"
    + r"""
  if (typeof window.MathJax === 'undefined') return true;  // nothing will typeset them
  return Array.from(mainOf(mainSels).querySelectorAll('span.math, div.math')).every(rendered);
}"""
)
_MATH_JS = (
    "([mainSels, maxN]) => {"
    + _HELPERS_JS
    + f"const rendered = {_RENDERED_JS};"
    + r"""
  const main = mainOf(mainSels);
  const formulas = Array.from(main.querySelectorAll('span.math, div.math'));
  const bad = formulas.filter(f => !rendered(f));
  const raw = [];
  const skip = 'script, style, pre, code, textarea, .highlight, .MathJax_Preview, .MJX_Assistive_MathML';
  const walk = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  for (let t = walk.nextNode(); t; t = walk.nextNode()) {
    const p = t.parentElement;
    if (!p || p.closest(skip)) continue;
    const m = t.data.match(/\\\(|\\\[|\$\$/);
    if (m) raw.push(describe(p.closest('p, li, td, th, div, section') || p) + ': '
                    + JSON.stringify(t.data.slice(Math.max(0, m.index - 15), m.index + 35)));
  }
  return {
    formulas: formulas.length,
    mathjax: typeof window.MathJax === 'undefined' ? null : String(window.MathJax.version || '?'),
    unrendered: bad.length,
    unrenderedShown: bad.slice(0, maxN).map(f => (f.textContent || '').trim().slice(0, 60)),
    raw: raw.length,
    rawShown: raw.slice(0, maxN),
  };
}"""
)

# A verdict mark is invisible when its box, or the drawn mark before it, is 0 px wide; a badge
# wider than its table cell is drawn over the neighbouring cell.
_VERDICT_JS = (
    "([sel, maxN]) => {"
    + _HELPERS_JS
    + r"""
  const marks = Array.from(document.querySelectorAll(sel));
  const zero = marks.filter(m => {
    if (m.getBoundingClientRect().width <= 0) return true;
    const b = getComputedStyle(m, '::before');
    const drawn = b.content && b.content !== 'none' && b.content !== 'normal' && b.display !== 'none';
    return drawn && b.width !== 'auto' && parseFloat(b.width) === 0;
  });
  // a badge wider than its table cell runs over the neighbouring cell's text
  const spill = [];
  for (const m of marks) {
    const cell = m.closest('td, th');
    if (!cell) continue;
    const c = cell.getBoundingClientRect(), r = m.getBoundingClientRect();
    const by = Math.round(Math.max(r.right - c.right, c.left - r.left));
    if (by > 1) spill.push(describe(m) + ` by ${by} px`);
  }
  return {marks: marks.length, zero: zero.length, shown: zero.slice(0, maxN).map(describe),
          spill: spill.length, spillShown: spill.slice(0, maxN)};
}"""
)


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


def _shot_name(rel: str, suffix: str = "") -> str:
    return rel.replace("/", "_").removesuffix(".html") + suffix + ".png"


def _more(total: int, shown: int) -> str:
    return f" (and {total - shown} more)" if total > shown else ""


def _overflow_problems(tab: Any, width: int, *, only_tables: bool = False) -> list[str]:
    seen = tab.evaluate(_OVERFLOW_JS, [list(MAIN_SELECTORS), only_tables, MAX_REPORTED])
    what = "table" if only_tables else "element"
    problems = [f"at {width} px, {what} overflows the main column: {s}" for s in seen["shown"]]
    if problems and seen["total"] > len(problems):
        problems[-1] += _more(seen["total"], len(problems))
    if seen["page"] > 1 and not problems and not only_tables:
        problems.append(f"at {width} px, the page scrolls sideways by {seen['page']} px")
    return problems


def _math_problems(tab: Any) -> list[str]:
    try:
        tab.wait_for_function(_MATH_DONE_JS, arg=list(MAIN_SELECTORS), timeout=MATH_TIMEOUT_MS)
    except Exception:  # a timeout: what did not render is reported below
        pass
    seen = tab.evaluate(_MATH_JS, [list(MAIN_SELECTORS), MAX_REPORTED])
    problems = []
    if seen["unrendered"]:
        loaded = (
            f"MathJax {seen['mathjax']} loaded"
            if seen["mathjax"]
            else "MathJax did not load (is it served from the site? see book/_ext/mathjax_offline.py)"
        )
        examples = "; ".join(repr(t) for t in seen["unrenderedShown"])
        problems.append(
            f"{seen['unrendered']} of {seen['formulas']} formulas did not render ({loaded}): {examples}"
            + _more(seen["unrendered"], len(seen["unrenderedShown"]))
        )
    problems += [f"raw TeX shown as text in {s}" for s in seen["rawShown"]]
    if seen["raw"] > len(seen["rawShown"]):
        problems[-1] += _more(seen["raw"], len(seen["rawShown"]))
    return problems


def _verdict_problems(tab: Any) -> list[str]:
    seen = tab.evaluate(_VERDICT_JS, [VERDICT_SELECTOR, MAX_REPORTED])
    zero = [f"verdict mark has zero width: {s}" for s in seen["shown"]] + (
        [f"... {seen['zero'] - len(seen['shown'])} more zero-width verdict marks"]
        if seen["zero"] > len(seen["shown"])
        else []
    )
    spill = [f"verdict badge spills out of its table cell over the next one: {s}" for s in seen["spillShown"]]
    if spill:
        spill[-1] += _more(seen["spill"], len(spill))
    return zero + spill


def check_pages(
    html: str | Path,
    pages: Sequence[str],
    *,
    claims: list[dict] | None = None,
    scorecard: str | None = None,
    screenshots: str | Path | None = None,
) -> list[PageReport]:
    """Open ``pages`` of the site in folder ``html`` in headless Chromium, offline, and check them.

    Parameters
    ----------
    html
        The built site (``_build/html``), served over HTTP from a local port.
    pages
        Page paths relative to ``html`` (``"book/intro.html"``).
    claims
        The claims of ``_build/claims.json``; given, the ``scorecard`` page must list them all.
    scorecard
        The page (one of ``pages``) checked as the Scorecard: its claims and its tables at 390 px.
    screenshots
        If given, a full-page PNG of each page at 1280 px, and of the Scorecard at 390 px, is
        saved there.

    Returns
    -------
    list of PageReport
        One per page, in order; a page is fine when ``problems`` is empty.
    """
    from playwright.sync_api import sync_playwright

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
            context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
            # A reader offline: whatever does not come from the site itself never arrives.
            context.route(
                "**/*",
                lambda route: route.continue_() if route.request.url.startswith(base) else route.abort(),
            )
            tab = context.new_page()
            for rel in pages:
                tab.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
                resp = tab.goto(base + rel, wait_until="load")
                rep = PageReport(rel, resp.status if resp else None)
                reports.append(rep)
                if rep.status != 200:
                    rep.problems.append(f"HTTP status {rep.status}")
                    continue
                seen = tab.evaluate(_PAGE_JS)
                rep.problems += [f"image did not load: {i['src']}" for i in seen["images"] if not i["ok"]]
                rep.problems += [f"error output on page: {e!r}" for e in seen["errors"]]
                if seen["traceback"]:
                    rep.problems.append("a traceback is shown on the page")
                rep.problems += _math_problems(tab)
                rep.problems += _overflow_problems(tab, DESKTOP["width"])
                rep.problems += _verdict_problems(tab)
                if shots:
                    tab.screenshot(path=str(shots / _shot_name(rel)), full_page=True)
                if rel == scorecard:
                    if claims is not None:
                        rep.problems += _check_scorecard(tab, claims)
                    tab.set_viewport_size(PHONE)  # type: ignore[arg-type]
                    tab.wait_for_timeout(200)  # let the layout settle
                    rep.problems += _overflow_problems(tab, PHONE["width"], only_tables=True)
                    if shots:
                        tab.screenshot(
                            path=str(shots / _shot_name(rel, f"-{PHONE['width']}")), full_page=True
                        )
            browser.close()
    finally:
        server.shutdown()
    return reports


def check_site(root: str | Path = ".", screenshots: str | Path | None = None) -> list[PageReport]:
    """Open every page of the built site in headless Chromium and report problems.

    Parameters
    ----------
    root
        The book's folder; the site is read from ``<root>/_build/html``.
    screenshots
        If given, a full-page PNG of each page is saved there (see :func:`check_pages`).

    Returns
    -------
    list of PageReport
        One per page in ``_toc.yml``; a page is fine when ``problems`` is empty.
    """
    book = Book(Path(root))
    html = book.root / "_build" / "html"
    claims_file = book.root / "_build" / "claims.json"
    if not (html / "index.html").exists():
        raise FileNotFoundError(f"no built site at {html}; run `featlearn build` first")
    pages = [p.relative_to(book.root).with_suffix(".html").as_posix() for p in book.pages()]
    scorecard = next((p for p in pages if p.endswith("scorecard.html")), None)
    if scorecard is not None and not claims_file.exists():
        reports = check_pages(html, pages, scorecard=scorecard, screenshots=screenshots)
        next(r for r in reports if r.page == scorecard).problems.append("_build/claims.json is missing")
        return reports
    claims = json.loads(claims_file.read_text()) if scorecard is not None else None
    return check_pages(html, pages, claims=claims, scorecard=scorecard, screenshots=screenshots)


def _check_scorecard(tab: Any, claims: list[dict]) -> list[str]:
    # The claim ids (each once): the small id marks (class fl-id) where the tables have
    # them, else the second cell of each row. The records' tables (fl-rec) list the claims
    # of older runs and are not this build's.
    shown = sorted(
        set(
            tab.evaluate("""() => {
        const ids = Array.from(document.querySelectorAll('table:not(.fl-rec) .fl-id'))
            .map(e => e.innerText.trim());
        if (ids.length) return ids;
        return Array.from(document.querySelectorAll('table tbody tr'))
            .map(r => Array.from(r.querySelectorAll('td')).map(td => td.innerText.trim()))
            .filter(r => r.length > 1).map(r => r[1]);
    }""")
        )
    )
    problems = [
        f"claim {c['chapter']}/{c['id']} is not in the scorecard table"
        for c in claims
        if c["id"] not in shown
    ]
    if shown != sorted({c["id"] for c in claims}):
        problems.append(f"the scorecard table lists {len(shown)} claims, claims.json has {len(claims)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m featlearn.book.sitecheck [ROOT] [--screenshots DIR]``: exit 1 on any problem.

    The screenshots go to ``ROOT/_build/screenshots`` unless ``--screenshots`` says otherwise.
    """
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=".")
    ap.add_argument("--screenshots", help="folder for the screenshots (default: ROOT/_build/screenshots)")
    args = ap.parse_args(argv)
    shots = args.screenshots or Path(args.root) / "_build" / "screenshots"
    reports = check_site(args.root, shots)
    bad = 0
    for r in reports:
        mark = "ok " if not r.problems else "BAD"
        print(f"{mark} {r.page}")
        for p in r.problems:
            print(f"    {p}")
        bad += bool(r.problems)
    print(f"{len(reports) - bad} pages fine, {bad} with problems; screenshots in {shots}")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
