"""Leave presentation out of each record's hashes, from the chapter and library it was made from.

Why: records hashed every code cell and every imported module, so retitling a figure or
restyling ``featlearn.plots`` marked hours of runs stale although no number could change. For
each record under ``records/``, this reads ``book/<chapter>.md`` and ``lib/featlearn`` at the
record's commit (``git show``, ``git archive``), checks that they give the stored hashes (else
the record is left alone and reported), and stores the hashes without presentation cells
(:mod:`featlearn.book.cells`) and drawing-only modules (``runner._PRESENTATION_MODULES``)
beside the old ones. The runs are not touched. Usage: ``python scripts/rehash_records.py [records-dir]``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from featlearn.book.records import Record, load_records, rehash_computation
from featlearn.book.runner import _library_hash


def _library(rec: Record, prov: dict[str, Any], text: str) -> dict[str, Any]:
    """``prov`` with the library hash moved to the ``computation`` scope, checked against the commit's code."""
    if prov.get("library_hash_scope") != "imports":
        return prov
    with tempfile.TemporaryDirectory() as tmp:
        tar = subprocess.run(
            ["git", "archive", rec.commit, "lib/featlearn"], capture_output=True, check=True
        ).stdout
        tarfile.open(fileobj=io.BytesIO(tar)).extractall(tmp, filter="data")
        root = Path(tmp) / "lib" / "featlearn"
        if _library_hash(chapter=text, root=root, presentation=True) != prov.get("library_hash"):
            raise ValueError(f"{rec.path}: the library at {rec.commit} does not give the stored hash")
        new = dict(prov)
        new["library_hash_with_presentation"] = prov["library_hash"]
        new["library_hash"] = _library_hash(chapter=text, root=root)
        new["library_hash_scope"] = "computation"
        return new


def main(root: str = "records") -> int:
    bad = 0
    for rec in load_records(root):
        if rec.provenance.get("chapter_hash_scope") not in {"profile", "computation"}:
            continue
        text = subprocess.run(
            ["git", "show", f"{rec.commit}:book/{rec.chapter}.md"], capture_output=True, text=True, check=True
        ).stdout
        try:
            prov = _library(rec, rehash_computation(rec, text), text)
        except ValueError as exc:
            print(f"left alone: {exc}")
            bad += 1
            continue
        if prov == rec.provenance:
            continue
        (rec.path / "provenance.json").write_text(
            json.dumps(prov, indent=2, ensure_ascii=False, default=str) + "\n"
        )
        print(f"rehashed: {rec.path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
