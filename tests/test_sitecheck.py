"""The site check's browser checks, each shown to pass on a good page and fail on a bad one.

The pages are small hand-written HTML files served from a temporary folder, laid out like
sphinx-book-theme's (an ``article.bd-article`` main column), so no book is built here.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)"
)

_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ margin: 0; font: 16px sans-serif; }}
article.bd-article {{ max-width: 800px; margin: 0 auto; }} .holder {{ overflow-x: auto; }}
.fl-verdict {{ display: inline-block; padding: 0 4px; }}
.fl-verdict::before {{ content: ""; display: inline-block; width: 8px; height: 8px; background: green; }}
.fl-verdict.nomark::before {{ width: 0; }}
.fl-verdict.bare {{ display: inline; padding: 0; }} .fl-verdict.bare::before {{ content: none; }}</style></head>
<body><main><article class="bd-article"><section><h1>{title}</h1>
{body}
</section></article></main></body></html>"""

_LONG = "x = " + " + ".join(f"term_{i}" for i in range(60))
_WIDE_TABLE = (
    "<div class='holder'><table style='width: 600px'><tbody><tr>"
    + "".join(f"<td>cell {i}</td>" for i in range(6))
    + "<td><span class='fl-id'>claim-a</span></td></tr></tbody></table></div>"
)
PAGES = {
    "good.html": (
        "<p>A formula: <span class='math notranslate'><span class='mjx-chtml'>x²</span></span>, "
        "a verdict <span class='fl-verdict'>holds</span>.</p>"
        "<div class='highlight'><pre>print('$$ and \\\\( in code are fine')</pre></div>"
        "<div class='holder'><table style='width: 700px'><tr><td>fits</td></tr></table></div>"
    ),
    # math: one formula never typeset (no MathJax here), and raw TeX in the prose
    "math.html": (
        "<p>Unrendered: <span class='math notranslate'>\\(W^\\top W\\)</span>.</p>"
        "<p>Raw display math left as text: $$ G = W^\\top C W $$</p>"
    ),
    # overflow at 1280 px: a code block that scrolls sideways, a table that sticks out of
    # the column, a box that cuts its content off
    "overflow.html": (
        f"<div class='highlight'><pre style='overflow-x: auto'>{_LONG}</pre></div>"
        "<table style='width: 1100px'><tr><td>a table wider than the column</td></tr></table>"
        "<div style='overflow-x: hidden'><div style='width: 1000px'>cut off</div></div>"
    ),
    # verdict marks: an empty mark (0 px wide) and one whose drawn mark is 0 px wide
    "verdicts.html": (
        "<p><span class='fl-verdict bare'></span> and "
        "<span class='fl-verdict nomark'>fails</span> and <span class='fl-verdict'>holds</span></p>"
        # a badge that cannot wrap, in a column narrower than it: it covers the claim beside it
        "<table style='table-layout: fixed; width: 400px'><tr><td style='width: 40px'>"
        "<span class='fl-verdict' style='white-space: nowrap'>not measured</span></td>"
        "<td>the claim's text</td></tr></table>"
    ),
    # the Scorecard: its table fits 1280 px but not 390 px
    # ... and a record's table, whose (older) claim ids are not this build's claims
    "scorecard.html": _WIDE_TABLE
    + "<table class='fl-claims fl-rec'><tbody><tr><td>Old. <span class='fl-id'>claim-old</span>"
    + "</td></tr></tbody></table>",
}


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    if shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from featlearn.book.sitecheck import check_pages

    site = tmp_path_factory.mktemp("site")
    for name, body in PAGES.items():
        (site / name).write_text(_PAGE.format(title=name[:-5], body=body), encoding="utf-8")
    shots = tmp_path_factory.mktemp("shots")
    reports = check_pages(
        site,
        list(PAGES),
        claims=[{"chapter": "c", "id": "claim-a"}, {"chapter": "c", "id": "claim-ghost"}],
        scorecard="scorecard.html",
        screenshots=shots,
    )
    return {r.page: r.problems for r in reports}, shots


def test_a_good_page_passes(checked):
    problems, _ = checked
    assert problems["good.html"] == []


def test_unrendered_formulas_and_raw_tex_are_reported(checked):
    problems, _ = checked
    p = problems["math.html"]
    assert any("1 of 1 formulas did not render" in x and "MathJax did not load" in x for x in p), p
    assert any("raw TeX" in x and "$$" in x for x in p), p
    assert any("raw TeX" in x and "\\\\(" in x for x in p), p  # the unrendered formula's \(


def test_overflow_in_the_main_column_is_reported_with_the_element(checked):
    problems, _ = checked
    p = problems["overflow.html"]
    assert any("at 1280 px" in x and "pre" in x and "scrolls sideways" in x for x in p), p
    assert any("table" in x and "sticks out of the 800 px column" in x for x in p), p
    assert any("is cut off" in x for x in p), p
    assert not any("scrolls sideways" in x for x in problems["scorecard.html"] if "1280" in x)


def test_verdict_marks_must_have_width(checked):
    problems, _ = checked
    p = [x for x in problems["verdicts.html"] if "verdict mark" in x]
    assert len(p) == 2, p
    assert not any("verdict" in x for x in problems["good.html"])


def test_a_verdict_badge_must_stay_in_its_table_cell(checked):
    problems, _ = checked
    p = [x for x in problems["verdicts.html"] if "spills out of its table cell" in x]
    assert len(p) == 1 and "not measured" in p[0], problems["verdicts.html"]
    assert not any("spills" in x for x in problems["scorecard.html"] + problems["good.html"])


def test_scorecard_tables_must_fit_a_phone_and_list_every_claim(checked):
    problems, _ = checked
    p = problems["scorecard.html"]
    assert any("at 390 px, table overflows" in x for x in p), p
    assert not any("at 1280 px" in x for x in p), p
    assert any("claim-ghost" in x for x in p), p
    assert not any("c/claim-a " in x for x in p), p
    assert "the scorecard table lists 1 claims, claims.json has 2" in p, p  # records not counted


def test_screenshots_of_every_page_and_the_scorecard_on_a_phone(checked):
    _, shots = checked
    names = sorted(p.name for p in Path(shots).iterdir())
    assert names == sorted([n.replace(".html", ".png") for n in PAGES] + ["scorecard-390.png"])
    from PIL import Image

    assert Image.open(shots / "scorecard-390.png").width == 390
    assert Image.open(shots / "good.png").width == 1280


@needs_chromium
def test_the_site_is_checked_offline(tmp_path):
    """A page that needs the network (here, MathJax from a CDN) fails, as it would for a reader offline."""
    from featlearn.book.sitecheck import check_pages

    body = (
        "<script src='https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js'></script>"
        "<p><span class='math'>\\(x\\)</span></p>"
    )
    (tmp_path / "cdn.html").write_text(_PAGE.format(title="cdn", body=body), encoding="utf-8")
    (problems,) = [r.problems for r in check_pages(tmp_path, ["cdn.html"])]
    assert any("did not render" in x for x in problems), problems


def _mathjax_offline():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import mathjax_offline
    finally:
        sys.path.pop(0)
    return mathjax_offline


def test_mathjax_extension_serves_mathjax_2_or_falls_back_with_a_notice(monkeypatch, capsys, tmp_path):
    mo = _mathjax_offline()
    app, config = SimpleNamespace(), SimpleNamespace(mathjax_path="cdn", mathjax2_config=None)
    monkeypatch.setattr(mo, "find_mathjax", lambda: None)
    mo._configure(app, config)
    assert config.mathjax_path == "cdn" and app.featlearn_mathjax is None
    assert "apt-get install libjs-mathjax fonts-mathjax" in capsys.readouterr().err

    monkeypatch.setattr(mo, "find_mathjax", lambda: tmp_path)
    mo._configure(app, config)
    assert config.mathjax_path == "mathjax/MathJax.js?config=TeX-AMS_CHTML"
    assert "math" in config.mathjax2_config["tex2jax"]["processClass"]


def test_mathjax_extension_copies_only_what_mathjax_needs(tmp_path, monkeypatch):
    mo = _mathjax_offline()
    src = mo.find_mathjax()
    if src is None:
        pytest.skip("no MathJax 2 here (apt-get install libjs-mathjax fonts-mathjax)")
    size = mo.copy_mathjax(src, tmp_path / "mathjax")
    assert (tmp_path / "mathjax" / "MathJax.js").exists()
    assert (tmp_path / "mathjax" / "config" / "TeX-AMS_CHTML.js").exists()
    assert size < 4_000_000, f"{size} bytes of MathJax copied; keep the site small"
    monkeypatch.setenv("FEATLEARN_MATHJAX", str(tmp_path / "mathjax"))
    assert mo.find_mathjax() == tmp_path / "mathjax"  # a copy is a complete MathJax for the extension


@needs_chromium
@pytest.mark.parametrize(
    "verdict, table",
    [(v, "fl-rec") for v in ("matched by null", "not measured", "unstable")]
    + [("matched by null", f"fl-prof-{n}") for n in (1, 2, 3)],
)
def test_a_record_table_fits_the_column_with_the_books_own_css(tmp_path, verdict, table):
    """A record's table, rendered as the build renders it (MyST list-table, the themes' CSS and
    ``_static/featlearn.css``), fits the 688 px column at 1280 px, even with the widest verdict
    badge in every row (CI once failed on 'matched by null', 701 px): the Scorecard's recorded
    runs (``fl-rec``) and a chapter's claims across 1, 2 or 3 recorded profiles (``fl-prof``)."""
    from docutils.core import publish_parts
    from myst_parser.parsers.docutils_ import Parser

    from featlearn.book import records
    from featlearn.book.scorecard import badge
    from featlearn.book.sitecheck import check_pages

    pst = pytest.importorskip("pydata_sphinx_theme")
    sbt = pytest.importorskip("sphinx_book_theme")
    css = [
        Path(pst.__file__).parent / "theme/pydata_sphinx_theme/static/styles/pydata-sphinx-theme.css",
        Path(sbt.__file__).parent / "theme/sphinx_book_theme/static/styles/sphinx-book-theme.css",
        ROOT / "_static" / "featlearn.css",
    ]
    for i, f in enumerate(css):
        shutil.copy(f, tmp_path / f"{i}.css")
    claim = "In a vgg CNN trained on fashion_mnist, corr(WᵀW, G^½) exceeds 0.9. "
    seeds = "`fast`, 5 seeds: 0.9275 ± 0.01234 (0.9101 to 0.9432), 0/5 hold (5 matched by null)"
    if table == "fl-rec":  # the Scorecard's recorded runs: claim, across seeds, verdict
        rows = [[f'{claim}<span class="fl-id">claim-id-{i}</span>', seeds, badge(verdict)] for i in range(3)]
        header = ["Claim", "Across seeds", "Verdict"]
        md = records.list_table(header, rows, "fl-claims fl-rec", records.RECORD_WIDTHS)
    else:  # a chapter's claims across n recorded profiles: a badge then the numbers, per profile
        n = int(table.rsplit("-", 1)[1])
        rows = [
            [f'{claim}<span class="fl-id">claim-id-{i}</span>'] + [f"{badge(verdict)} {seeds}"] * n
            for i in range(3)
        ]
        header = ["Claim"] + [f"`p{k}`" for k in range(n)]
        md = records.list_table(header, rows, "fl-claims fl-prof", records.profile_widths(n))
    settings = {"raw_enabled": True}
    html = publish_parts(md, parser=Parser(), writer_name="html5", settings_overrides=settings)["body"]
    html = html.replace('<table class="fl-claims', '<table class="table fl-claims')
    assert 'class="fl-verdict' in html and "table fl-claims" in html  # badges survived as HTML
    links = "".join(f"<link rel='stylesheet' href='{i}.css'>" for i in range(len(css)))
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{links}</head><body><main>"
        "<article class='bd-article' style='max-width: 688px; margin: 0 auto'><section><h1>Records</h1>"
        f"<div class='pst-scrollable-table-container'>{html}</div></section></article></main></body></html>"
    )
    (tmp_path / "records.html").write_text(page, encoding="utf-8")
    (problems,) = [r.problems for r in check_pages(tmp_path, ["records.html"], scorecard="records.html")]
    assert not [p for p in problems if "overflow" in p or "scrolls" in p or "sticks out" in p], problems
