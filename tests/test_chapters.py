"""Every chapter of the book runs end to end at its `tiny` profile and records its claims."""

import pytest

from conftest import ROOT
from featlearn import claims
from featlearn.book.runner import DATASET_PARAMS, Book, ChapterFailed, execute_chapter

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


OFFLINE_STOPS = ("DatasetUnavailable", "WeightsUnavailable")

PROTOCOL_PROFILES = [
    pytest.param(ch, p, id=f"{ch.name}-{p}")
    for ch in CHAPTERS
    for p in ch.profiles
    if p not in ("fast", "tiny")
]


@pytest.mark.parametrize("chapter, profile", PROTOCOL_PROFILES)
def test_protocol_profiles_run_at_tiny_sizes(chapter, profile, tmp_path, monkeypatch):
    """Each `paper`/`full` profile's settings (batch sizes, rates, datasets, flags) go through the code.

    Sizes come from the chapter's `tiny` profile, every other setting from the profile under test;
    so a setting the code cannot take (IG's `ig_batch: 1`) fails here. Offline, a chapter may stop
    at its first dataset or weights download, but only with the error that names the fix.
    """
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")
    params = chapter.resolve(profile, dict(chapter.profiles["tiny"]))
    assert params["profile"] == profile
    try:
        nb, _ = execute_chapter(chapter, params, tmp_path / f"{chapter.name}.ipynb", progress=False)
    except ChapterFailed as err:
        if not any(stop in str(err) for stop in OFFLINE_STOPS):
            raise
        assert "Fix" in str(err) or "fix" in str(err), str(err)
        return
    recorded = claims.claims_from_notebook(nb)
    assert recorded and {c.profile for c in recorded} == {profile}


PAPER_DATA = [
    pytest.param(ch, id=ch.name)
    for ch in CHAPTERS
    if "paper" in ch.profiles
    and any(
        ch.resolve("paper").get(k) not in (None, "fashion_mnist", ["fashion_mnist"]) for k in DATASET_PARAMS
    )
]


@pytest.mark.parametrize("chapter", PAPER_DATA)
def test_paper_profile_offline_fails_before_any_cell_runs(chapter, tmp_path, monkeypatch):
    """Old: convrfm computed the star task for 3 minutes before it found MNIST missing."""
    monkeypatch.setenv("FEATLEARN_OFFLINE", "1")
    monkeypatch.setenv("FEATLEARN_DATA", str(tmp_path / "empty"))
    calls = []
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: calls.append(a))
    with pytest.raises(ChapterFailed) as err:
        execute_chapter(chapter, chapter.resolve("paper"), tmp_path / "out.ipynb", progress=False)
    assert not calls, "a cell ran before the missing dataset was found"
    msg = str(err.value)
    assert "nothing was run" in msg and "is not available" in msg and "Fix:" in msg, msg
    assert not (tmp_path / "out.ipynb").exists()
