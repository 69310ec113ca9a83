"""Shared fixtures: the repository root and a private copy of the fixture book."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_BOOK = Path(__file__).parent / "fixtures" / "book"


@pytest.fixture
def fixture_book(tmp_path: Path) -> Path:
    """A fresh copy of the fixture book, so builds never touch the repository."""
    dest = tmp_path / "book"
    shutil.copytree(FIXTURE_BOOK, dest, ignore=shutil.ignore_patterns("_build"))
    return dest
