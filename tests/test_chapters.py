"""Every chapter of the book runs end to end at its `tiny` profile and records its claims."""

import pytest

from conftest import ROOT
from featlearn import claims
from featlearn.book.runner import Book, execute_chapter

CHAPTERS = Book(ROOT).chapters()

pytestmark = pytest.mark.slow


def test_every_chapter_has_a_tiny_profile():
    for ch in CHAPTERS:
        assert "tiny" in ch.profiles, f"{ch.name} needs a `tiny` profile for this test"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.name)
def test_chapter_runs_at_tiny_parameters(chapter, tmp_path):
    nb, _ = execute_chapter(
        chapter, chapter.resolve("tiny"), tmp_path / f"{chapter.name}.ipynb", progress=False
    )
    recorded = claims.claims_from_notebook(nb)
    assert recorded, f"{chapter.name} recorded no claim"
    assert {c.chapter for c in recorded} == {chapter.name} and {c.profile for c in recorded} == {"tiny"}
    assert len({c.id for c in recorded}) == len(recorded)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images > 0, f"{chapter.name} drew no figure"
