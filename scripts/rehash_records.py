"""Leave presentation cells out of each record's chapter hash, from the chapter text it was made from.

Why: records hashed every code cell, so retitling a figure or moving a legend marked hours of
runs stale although no number could change. For each record under ``records/`` still hashed per
profile, this reads ``book/<chapter>.md`` at the record's commit (``git show``), checks that it
gives the stored hash (else the record is left alone and reported), and stores the hash without
presentation cells (:mod:`featlearn.book.cells`) beside the old one. The runs are not touched.
Usage: ``python scripts/rehash_records.py [records-dir]``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from featlearn.book.records import load_records, rehash_computation


def main(root: str = "records") -> int:
    bad = 0
    for rec in load_records(root):
        if rec.provenance.get("chapter_hash_scope") != "profile":
            continue
        text = subprocess.run(
            ["git", "show", f"{rec.commit}:book/{rec.chapter}.md"], capture_output=True, text=True, check=True
        ).stdout
        try:
            prov = rehash_computation(rec, text)
        except ValueError as exc:
            print(f"left alone: {exc}")
            bad += 1
            continue
        (rec.path / "provenance.json").write_text(
            json.dumps(prov, indent=2, ensure_ascii=False, default=str) + "\n"
        )
        print(f"rehashed: {rec.path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
