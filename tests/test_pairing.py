"""Each chapter's .md and its output-free .ipynb twin agree; the Colab cell names the repository."""

import shutil

import nbformat
import pytest

from conftest import FIXTURE_BOOK, ROOT
from featlearn.book.notebooks import COLAB_MARKER, is_chapter_file, read_chapter
from featlearn.book.pairing import colab_cell_source, pair_differences, repository_url, sync_book
from featlearn.book.runner import Book

BOOKS = [ROOT, FIXTURE_BOOK]
CHAPTERS = [p for b in BOOKS for p in Book(b).pages() if is_chapter_file(p)]


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_pairs_are_in_sync(md):
    assert pair_differences(md) == [], "run `featlearn sync`"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_layout(md):
    ch = read_chapter(md)  # first code cell tagged parameters, profiles valid
    code = [c for c in ch.notebook.cells if c.cell_type == "code"]
    book_root = next(b for b in BOOKS if md.is_relative_to(b / "book"))
    assert code[1].source == colab_cell_source(repository_url(book_root)), "run `featlearn sync`"
    assert any(f'page.setup("{ch.name}"' in c.source for c in code), "chapters call featlearn.book.page.setup"


def test_pair_check_catches_drift_and_outputs(tmp_path):
    book = tmp_path / "b"
    shutil.copytree(FIXTURE_BOOK, book, ignore=shutil.ignore_patterns("_build"))
    md = book / "book" / "fixture.md"
    md.write_text(md.read_text().replace("n = 50", "n = 51"))
    assert any("differs" in p for p in pair_differences(md))
    sync_book(book)
    assert pair_differences(md) == []
    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nbformat.write(nb, md.with_suffix(".ipynb"))
    assert any("outputs" in p for p in pair_differences(md))
    md.with_suffix(".ipynb").unlink()
    assert any("missing" in p for p in pair_differences(md))


def test_sync_sets_colab_cell_from_config(tmp_path):
    book = tmp_path / "b"
    shutil.copytree(FIXTURE_BOOK, book, ignore=shutil.ignore_patterns("_build"))
    cfg = book / "_config.yml"
    cfg.write_text(
        cfg.read_text().replace("feature-learning-replicated/feature-learning-replicated", "someone/else")
    )
    sync_book(book)
    ch = read_chapter(book / "book" / "fixture.md")
    cell = [c for c in ch.notebook.cells if c.cell_type == "code"][1]
    assert cell.source.startswith(COLAB_MARKER) and "git+https://github.com/someone/else" in cell.source


def test_format_reaches_cells_with_yaml_options(tmp_path):
    """A captioned figure cell (options in a --- block) is formatted, its options left alone."""
    from featlearn.book import pairing

    book = tmp_path / "book"
    book.mkdir()
    src = (FIXTURE_BOOK / "book" / "fixture.md").read_text(encoding="utf-8")
    cell = (
        '\n```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    caption: "A caption: with a colon"\n'
        "    name: fig-x\ntags: [hide-input]\n---\n\nx = {'a':1}\n```\n"
    )
    (book / "fixture.md").write_text(src + cell, encoding="utf-8")
    assert pairing.format_chapters(tmp_path) == [book / "fixture.md"]
    out = (book / "fixture.md").read_text(encoding="utf-8")
    assert (
        'tags: [hide-input]\n---\n\nx = {"a": 1}\n```' in out and 'caption: "A caption: with a colon"' in out
    )
