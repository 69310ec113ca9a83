"""Parameters cells, profiles and override checks: refused before anything runs."""

import pytest

from conftest import FIXTURE_BOOK
from featlearn.book.notebooks import (
    ParameterError,
    parse_override,
    parse_overrides,
    parse_parameters,
    read_chapter,
)

CHAPTER = FIXTURE_BOOK / "book" / "fixture.md"


def test_parse_parameters_types_and_annotations():
    p = parse_parameters(
        'profile = "fast"\nn = 3  # comment\nlr = 1e-3\nflag = False\nsizes = [1, 2]\nk: int | None = None\n'
    )
    assert p["n"].default == 3 and p["n"].types == (int,)
    assert p["lr"].check(2, "t") == 2.0  # ints are accepted for floats
    assert p["k"].check(None, "t") is None and p["k"].check(4, "t") == 4
    with pytest.raises(ParameterError, match="expects int"):
        p["n"].check(1.5, "t")
    with pytest.raises(ParameterError, match="expects bool"):
        p["flag"].check(1, "t")
    with pytest.raises(ParameterError, match="expects int"):
        p["n"].check(True, "t")


@pytest.mark.parametrize("src", ["import os", "n = f(3)", "x, y = 1, 2", "n = None"])
def test_parse_parameters_refuses_non_literals(src):
    with pytest.raises(ParameterError):
        parse_parameters(src)


def test_parse_override_values():
    assert parse_override("n=5") == ("n", 5)
    assert parse_override("lr=1e-3") == ("lr", 0.001)
    assert parse_override("device=cuda") == ("device", "cuda")
    assert parse_override("flag=true") == ("flag", True)
    assert parse_override("k=None") == ("k", None)
    assert parse_override("sizes=[8, 16]") == ("sizes", [8, 16])
    assert parse_overrides(["a=1", "cnfa.b=x"]) == {"a": 1, "cnfa.b": "x"}
    with pytest.raises(ParameterError, match="key=value"):
        parse_override("n5")


def test_chapter_profiles_resolve():
    ch = read_chapter(CHAPTER)
    assert ch.name == "fixture" and ch.title == "A fixture chapter"
    assert set(ch.profiles) == {"fast", "paper", "tiny"}
    assert ch.resolve("fast")["n"] == 50
    assert ch.resolve("paper") == {**ch.resolve("fast"), "n": 1000, "profile": "paper"}
    assert ch.resolve("tiny", {"scale": 3})["scale"] == 3.0


def test_unknown_profile_parameter_and_type_are_refused_with_choices():
    ch = read_chapter(CHAPTER)
    with pytest.raises(ParameterError, match="valid profiles: fast, paper, tiny"):
        ch.resolve("huge")
    with pytest.raises(ParameterError, match=r"unknown parameter 'nn'; valid parameters: profile, n, scale"):
        ch.resolve("fast", {"nn": 3})
    with pytest.raises(ParameterError, match="'n' expects int, got str"):
        ch.resolve("fast", {"n": "many"})


def test_chapter_without_parameters_tag_or_profiles_is_refused(tmp_path):
    text = CHAPTER.read_text()
    bad = tmp_path / "bad.md"
    bad.write_text(text.replace(":tags: [parameters]\n", ""))
    with pytest.raises(ParameterError, match="tagged `parameters`"):
        read_chapter(bad)
    bad.write_text(text.replace("    paper:\n      n: 1000\n", ""))
    with pytest.raises(ParameterError, match="missing paper"):
        read_chapter(bad)
    bad.write_text(text.replace("      n: 1000", "      n: lots"))
    with pytest.raises(ParameterError, match="profile 'paper'.*expects int"):
        read_chapter(bad)


def test_cli_help_names_only_parameters_that_exist():
    """The examples in `featlearn --help` must use real parameters of the chapters they name."""
    import re

    from conftest import ROOT
    from featlearn.book import cli
    from featlearn.book.runner import Book

    chapters = {c.name: c for c in Book(ROOT).chapters()}
    used = re.findall(r"featlearn (?:build|run) (\w+)[ .](\w+)=", cli.__doc__ or "")
    assert used, "the help shows override examples"
    for chapter, param in used:
        assert param in chapters[chapter].parameters, f"help names {chapter}.{param}, which does not exist"
