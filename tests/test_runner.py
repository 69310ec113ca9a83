"""The book pipeline end to end on the fixture book: execute, stage, build, check in Chromium."""

import json
import re
import shutil

import nbformat
import pytest

from featlearn.book.cli import main as cli
from featlearn.book.notebooks import ParameterError
from featlearn.book.runner import ChapterFailed, build

pytestmark = pytest.mark.slow


def test_bad_input_is_refused_before_anything_runs(fixture_book, capsys):
    for args, expected in [
        (["--profile", "huge"], "valid profiles: fast, paper, tiny"),
        (["nn=3"], "no chapter has that parameter; valid parameters:"),
        (["fixture.n=lots"], "'n' expects int, got str"),
        (["other.n=3"], "unknown chapter 'other'; chapters: fixture"),
    ]:
        assert cli(["--root", str(fixture_book), "build", "--no-progress", *args]) == 2
        assert expected in capsys.readouterr().err
    assert not (fixture_book / "_build" / "executed").exists()  # nothing ran
    assert cli(["--root", str(fixture_book), "run", "nope"]) == 2
    assert "unknown chapter 'nope'; chapters: fixture" in capsys.readouterr().err


def test_failing_cell_fails_the_build_and_names_chapter_and_cell(fixture_book):
    with pytest.raises(ChapterFailed) as err:
        build(fixture_book, "tiny", {"fail_at_end": True}, progress=False, html=False)
    msg = str(err.value)
    assert "chapter 'fixture'" in msg and "code cell 6 [if fail_at_end:]" in msg
    assert "RuntimeError: asked to fail" in msg
    assert (fixture_book / "_build" / "failed" / "fixture.ipynb").exists()
    executed = fixture_book / "_build" / "executed"
    assert (
        sorted(p.name for p in executed.iterdir() if p.name.startswith("fixture") or p.name.startswith("."))
        == []
    )


def test_build_site_claims_provenance_and_browser_check(fixture_book, tmp_path):
    out = build(fixture_book, "tiny", {"fixture.scale": 3}, progress=False)
    html = out / "html"
    assert (html / "index.html").exists() and (html / "book" / "fixture.html").exists()

    rows = json.loads((out / "claims.json").read_text())
    assert [(r["chapter"], r["id"], r["holds"], r["profile"]) for r in rows] == [
        ("fixture", "mean-small", True, "tiny"),
        ("fixture", "always-fails", False, "tiny"),
        ("fixture", "matched", False, "tiny"),
    ]
    assert rows[2]["reason"] == "matched by null" and rows[2]["baseline"]["n"] == 20

    page = (html / "book" / "fixture.html").read_text()
    assert "How this page was produced" in page
    for fact in (
        "Profile",
        "tiny",
        "device",
        "cpu",
        "threads",
        "torch",
        "commit",
        "wall time",
        "n=8",
        "scale=3.0",
    ):
        assert fact in page, fact
    assert page.index("How this page was produced") < page.index("A tiny chapter that exercises")
    assert "_images/" in page, "the chapter's figure is on the page"
    assert "google.colab" not in page  # the Colab cell is for Colab only
    assert (
        "colab.research.google.com/github/feature-learning-replicated/feature-learning-replicated/blob/main/book/fixture.ipynb"
        in page
    )

    score = (html / "book" / "scorecard.html").read_text()
    assert (
        "always-fails" in score
        and '"fl-verdict fl-verdict-fails">fails<' in score
        and "1 hold, 1 fail, 1 matched by null" in score
        and '"fl-verdict fl-verdict-null">matched by null<' in score
        and "null (z of 20 other samples)" in score
    )

    staged = nbformat.read(out / "stage" / "book" / "fixture.ipynb", as_version=4)
    assert "application/vnd.featlearn" not in json.dumps(staged)

    # unchanged chapters are reused, not re-executed
    before = (out / "executed" / "fixture.json").read_text()
    build(fixture_book, "tiny", {"fixture.scale": 3}, progress=False, html=False)
    assert (out / "executed" / "fixture.json").read_text() == before

    if shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); the site check is CI's")
    from featlearn.book.sitecheck import check_site

    reports = check_site(fixture_book, screenshots=tmp_path / "shots")
    assert [r.page for r in reports] == ["book/intro.html", "book/fixture.html", "book/scorecard.html"]
    assert all(not r.problems for r in reports), [r.problems for r in reports]
    assert (tmp_path / "shots" / "book_fixture.png").stat().st_size > 10_000

    # the check can fail: break an image and drop a claim from the table
    src = re.search(
        r'<img[^>]+src="([^"]*_images/[^"]+)"', (html / "book" / "fixture.html").read_text()
    ).group(1)
    (html / "book" / src).resolve().write_bytes(b"not a png")
    claims_json = json.loads((out / "claims.json").read_text())
    claims_json.append({**claims_json[0], "id": "ghost"})
    (out / "claims.json").write_text(json.dumps(claims_json))
    problems = {r.page: r.problems for r in check_site(fixture_book)}
    assert any("image did not load" in p for p in problems["book/fixture.html"])
    assert any("ghost" in p for p in problems["book/scorecard.html"])


def test_run_one_chapter_with_overrides(fixture_book):
    out = fixture_book / "run.ipynb"
    assert (
        cli(
            [
                "--root",
                str(fixture_book),
                "run",
                "fixture",
                "--profile",
                "tiny",
                "n=5",
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    nb = nbformat.read(out, as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "n = 5" in injected.source and 'profile = "tiny"' in injected.source


def test_unknown_override_in_run_is_refused(fixture_book):
    with pytest.raises(ParameterError):
        build(fixture_book, "fast", {"fixture.nope": 1}, html=False)
