"""Move records made with whole-book hashes to per-chapter ones, checking first that nothing changed.

Why: a record made before hashes were scoped compares the whole front matter and the whole
library, so adding a profile or editing a module the chapter never imports would mark it stale.
For each record under ``records/`` still on a whole-book hash, this rebuilds the chapter and the
library as they were at the record's commit (``git archive``), checks that they give the stored
hashes (else the record is left alone), and stores the scoped hashes of that same code beside the
old ones. The runs are not touched. Usage: ``python scripts/rescope_records.py [records-dir]``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from featlearn.book.records import load_records
from featlearn.book.runner import _library_hash, chapter_modules
from featlearn.book.sweep import text_hash


def _at(commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def rescope(records_dir: Path) -> None:
    for rec in load_records(records_dir):
        prov = dict(rec.provenance)
        commit = prov.get("commit", "")
        text = _at(commit, f"book/{rec.chapter}.md")
        changed = False
        if prov.get("chapter_hash_scope") != "profile":
            if text_hash(text) != prov.get("chapter_hash"):
                print(f"{rec.chapter}/{rec.profile}: chapter hash does not match commit {commit}; left alone")
                continue
            prov["chapter_hash_all_profiles"] = prov["chapter_hash"]
            prov["chapter_hash"] = text_hash(text, rec.profile)
            prov["chapter_hash_scope"] = "profile"
            changed = True
        if prov.get("library_hash_scope") != "imports":
            with tempfile.TemporaryDirectory() as tmp:
                tar = subprocess.run(
                    ["git", "archive", commit, "lib/featlearn"], capture_output=True, check=True
                ).stdout
                tarfile.open(fileobj=io.BytesIO(tar)).extractall(tmp, filter="data")
                root = Path(tmp) / "lib" / "featlearn"
                if _library_hash(root=root) != prov.get("library_hash"):
                    print(
                        f"{rec.chapter}/{rec.profile}: library hash does not match commit {commit}; left alone"
                    )
                    continue
                prov["library_hash_whole"] = prov["library_hash"]
                prov["library_hash"] = _library_hash(chapter=text, root=root)
                prov["library_hash_scope"] = "imports"
                prov["library_modules"] = chapter_modules(text, root)
                changed = True
        if changed:
            prov["rescoped"] = (
                "hashes rebuilt from the chapter and library at the recorded commit, after checking "
                "they give the stored ones (scripts/rescope_records.py); the runs are unchanged"
            )
            path = rec.path / "provenance.json"
            path.write_text(
                json.dumps(prov, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
            )
            print(f"{rec.chapter}/{rec.profile}: rescoped")
        else:
            print(f"{rec.chapter}/{rec.profile}: already scoped")


if __name__ == "__main__":
    rescope(Path(sys.argv[1] if len(sys.argv) > 1 else "records"))
