"""Records: chapters run over several seeds, kept in the repository, shown on the scorecard.

Why: the site's chapters run at one seed and the ``fast`` profile; a record says how each
claim fares across seeds, and what produced it. ``featlearn record`` (built on
:mod:`featlearn.book.sweep`, so it resumes) writes, per chapter,
``records/<profile>/<chapter>/``:

``claims.json``
    the claims of every seed (each claim's fields plus ``seed``);
``provenance.json``
    commit, library hash, chapter code hash, parameters, seeds, the machine (CPU model,
    BLAS, torch threads, GPU, torch version) and each run's wall time and peak memory;
``<chapter>.ipynb``
    the executed notebook of the first seed, figures included.

A record goes stale when the chapter's text or the library changes after it was made;
:func:`records_markdown` then marks it so and never shows its numbers as current.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featlearn.book.sweep import (
    MIN_SEEDS,
    SEED_VERDICT_RULE,
    _atomic_write,
    claim_from,
    seed_verdict,
    text_hash,
    text_hashes,
)
from featlearn.claims import Claim

__all__ = [
    "RECORDS_DIR",
    "NOTEBOOK_WARN_BYTES",
    "RecordWarning",
    "Record",
    "Staleness",
    "CurrentState",
    "current_state",
    "record",
    "write_record",
    "load_records",
    "list_table",
    "records_markdown",
    "stage_record_pages",
    "add_toc_entries",
    "annotate_claims",
    "fill_record_sections",
    "profiles_markdown",
    "profile_widths",
    "RECORDS_PLACEHOLDER",
]

#: Where records live, relative to the book's root.
RECORDS_DIR = "records"

#: A recorded notebook above this size is reported (it is committed to the repository).
NOTEBOOK_WARN_BYTES = 3 * 2**20

_MARK = {
    "holds": "✅ holds",
    "fails": "❌ fails",
    "unstable": "⚠️ unstable",
    "not measured": "⚠️ not measured",
    "matched by null": "🟰 matched by null",
    "too few seeds": "⚠️ too few seeds",
}


#: Column widths (%) of a record's table: claim, across seeds, verdict. The verdict column
#: holds a "matched by null" badge at 1280 px (tests/test_sitecheck.py checks it).
RECORD_WIDTHS = (48, 30, 22)


class RecordWarning(UserWarning):
    """Something about a record worth knowing (e.g. a large notebook)."""


@dataclass(frozen=True)
class Staleness:
    """Which inputs of a record changed since it was made, and the commit that made it."""

    chapter_changed: bool
    library_changed: bool
    commit: str

    def __bool__(self) -> bool:
        return self.chapter_changed or self.library_changed

    @property
    def reason(self) -> str:
        """``"chapter changed"``, ``"library changed"``, both joined by ``" / "``, or ``""``."""
        return " / ".join(
            w
            for w, c in (("chapter changed", self.chapter_changed), ("library changed", self.library_changed))
            if c
        )

    def describe(self) -> str:
        """``stale (made at <commit>; chapter changed / library changed)``, or ``current``."""
        return f"stale (made at {self.commit}; {self.reason})" if self else "current"


@dataclass(frozen=True)
class CurrentState:
    """The library hash and each chapter's code hash now, to compare records against.

    ``chapter_hashes`` maps a chapter to the hash of its code and every profile,
    ``"<chapter>@<profile>"`` to the hash of its code and that one profile, and
    ``"<chapter>@<profile>/computation"`` to that hash without presentation cells
    (:func:`featlearn.book.sweep.text_hash`): one key per way records have been hashed.
    """

    library_hash: str
    chapter_hashes: Mapping[str, str]
    titles: Mapping[str, str] = field(default_factory=dict)
    #: Per chapter, the hash of only the library modules it imports (``runner.chapter_modules``),
    #: drawing-only modules (``runner._PRESENTATION_MODULES``) left out.
    chapter_library_hashes: Mapping[str, str] = field(default_factory=dict)
    #: The same with the drawing-only modules counted: how records made before that rule were hashed.
    chapter_library_hashes_with_presentation: Mapping[str, str] = field(default_factory=dict)


def current_state(chapters: Iterable[Any], library_hash: str | None = None) -> CurrentState:
    """:class:`CurrentState` of ``chapters`` (:class:`~featlearn.book.notebooks.Chapter` objects).

    ``library_hash`` defaults to the runner's hash of the installed library.
    """
    from featlearn.book.runner import _library_hash

    chs = list(chapters)
    hashes: dict[str, str] = {}
    libs: dict[str, str] = {}
    libs_drawn: dict[str, str] = {}
    for c in chs:
        text = c.path.read_text(encoding="utf-8")
        every = text_hashes(text, [None, *c.profiles], presentation=True)
        hashes[c.name] = every[None]
        hashes.update({f"{c.name}@{p}": every[p] for p in c.profiles})
        hashes.update(
            {f"{c.name}@{p}/computation": h for p, h in text_hashes(text, list(c.profiles)).items()}
        )
        libs[c.name] = library_hash or _library_hash(chapter=text)
        libs_drawn[c.name] = library_hash or _library_hash(chapter=text, presentation=True)
    return CurrentState(
        library_hash=library_hash or _library_hash(presentation=True),  # records before imports-only hashes
        chapter_hashes=hashes,
        titles={c.name: c.title for c in chs},
        chapter_library_hashes=libs,
        chapter_library_hashes_with_presentation=libs_drawn,
    )


@dataclass
class Record:
    """One chapter recorded at one profile over several seeds (a ``records/<profile>/<chapter>/`` folder)."""

    chapter: str
    profile: str
    path: Path
    by_seed: dict[int, list[Claim]]
    provenance: dict[str, Any]

    @property
    def seeds(self) -> list[int]:
        return list(self.by_seed)

    @property
    def claims(self) -> list[Claim]:
        """Every claim of every seed, seed by seed."""
        return [c for cs in self.by_seed.values() for c in cs]

    @property
    def threads(self) -> list[int]:
        """The torch thread counts its runs used (sorted, each once)."""
        return sorted(
            {int(r["torch_threads"]) for r in self.provenance.get("runs", []) if r.get("torch_threads")}
        )

    @property
    def commit(self) -> str:
        return str(self.provenance.get("commit", "unknown"))

    @property
    def notebook(self) -> Path:
        """The executed notebook of the first seed."""
        return self.path / str(self.provenance.get("notebook", f"{self.chapter}.ipynb"))

    def stale(self, current_library_hash: str, current_chapter_hash: str | None) -> Staleness:
        """Which of chapter and library changed since the record was made (``None``: the chapter is gone)."""
        return Staleness(
            chapter_changed=current_chapter_hash != self.provenance.get("chapter_hash"),
            library_changed=current_library_hash != self.provenance.get("library_hash"),
            commit=self.commit,
        )

    @property
    def hash_key(self) -> str:
        """The :class:`CurrentState` key its chapter hash compares with.

        A record made since hashes leave out presentation cells (``chapter_hash_scope:
        computation``) is compared with its profile's hash without them; one made since
        hashes cover one profile (``profile``) with its profile's hash of every code cell; an
        older one with the whole front matter's.
        """
        scope = self.provenance.get("chapter_hash_scope")
        if scope == "computation":
            return f"{self.chapter}@{self.profile}/computation"
        if scope == "profile":
            return f"{self.chapter}@{self.profile}"
        return self.chapter

    def staleness(self, current: CurrentState) -> Staleness:
        """:meth:`stale` against a :class:`CurrentState`.

        A record made since library hashes cover a chapter's imports without drawing-only
        modules (``library_hash_scope: computation``) is compared with that hash; one made
        since they cover its imports (``imports``) with the same counting drawing modules;
        an older one with the whole library's.
        """
        lib = current.library_hash
        scope = self.provenance.get("library_hash_scope")
        if scope == "computation":
            lib = current.chapter_library_hashes.get(self.chapter, "")
        elif scope == "imports":
            lib = current.chapter_library_hashes_with_presentation.get(self.chapter, "")
        return self.stale(lib, current.chapter_hashes.get(self.hash_key))

    def summary(self) -> list[dict[str, Any]]:
        """Per claim id (in first-seen order): mean, sd, min, max, n, holds and verdict across seeds.

        The statistics are over the values that are numbers (not bools, not NaN); ``numeric``
        says how many there were. ``n`` counts every seed that recorded the claim, ``measured``
        those where it could be judged (not "not measured"); with none, the verdict is
        "not measured".
        """
        per: dict[str, list[Claim]] = {}
        for c in self.claims:
            per.setdefault(c.id, []).append(c)
        out = []
        for cid, cs in per.items():
            nums = _numbers(cs)
            n, k = len(cs), sum(c.holds is True for c in cs)
            measured = sum(c.holds is not None for c in cs)
            matched = sum(c.status == "matched by null" for c in cs)
            verdict = seed_verdict(k, n) if measured else "not measured"
            if verdict == "fails" and 2 * matched > n - k:  # most seeds passed the rule, not the null
                verdict = "matched by null"
            out.append(
                {
                    "id": cid,
                    "claim": cs[0].claim,
                    "rule": cs[0].rule,
                    "paper": cs[0].paper,
                    "n": n,
                    "holds": k,
                    "numeric": len(nums),
                    "mean": statistics.fmean(nums) if nums else math.nan,
                    "sd": statistics.stdev(nums) if len(nums) > 1 else math.nan,
                    "min": min(nums) if nums else math.nan,
                    "max": max(nums) if nums else math.nan,
                    "measured": measured,
                    "matched": matched,
                    # a claim no seed could measure is "not measured", never "fails"; one
                    # not measured in some seeds counts those seeds as not holding; one that
                    # fails because most seeds' values were inside their null is "matched by null"
                    "verdict": verdict,
                }
            )
        return out


def _numbers(claims: Iterable[Claim]) -> list[float]:
    """The claims' values that are numbers (not bools), NaN left out."""
    nums = [
        float(c.value) for c in claims if isinstance(c.value, (int, float)) and not isinstance(c.value, bool)
    ]
    return [x for x in nums if not math.isnan(x)]


def load_records(root: str | Path) -> list[Record]:
    """Every record under ``root`` (``<root>/<profile>/<chapter>/provenance.json``), sorted by chapter, profile.

    A missing ``root`` gives an empty list.
    """
    root = Path(root)
    out: list[Record] = []
    if not root.is_dir():
        return out
    for prov_path in sorted(root.glob("*/*/provenance.json")):
        folder = prov_path.parent
        prov = json.loads(prov_path.read_text(encoding="utf-8"))
        rows = json.loads((folder / "claims.json").read_text(encoding="utf-8"))
        by_seed: dict[int, list[Claim]] = {int(s): [] for s in prov.get("seeds", [])}
        for row in rows:
            by_seed.setdefault(int(row["seed"]), []).append(claim_from(row))
        out.append(
            Record(
                chapter=str(prov.get("chapter", folder.name)),
                profile=str(prov.get("profile", folder.parent.name)),
                path=folder,
                by_seed=by_seed,
                provenance=prov,
            )
        )
    return sorted(out, key=lambda r: (r.chapter, r.profile))


def _machine(env: Mapping[str, Any]) -> dict[str, Any]:
    gpu = env.get("device_name") if str(env.get("device", "")).startswith("cuda") else None
    return {
        "cpu": env.get("cpu"),
        "blas": env.get("blas"),
        "torch_threads": env.get("threads"),
        "gpu": gpu,
        "device": env.get("device"),
        "torch": env.get("torch"),
        "cuda": env.get("cuda"),
        "python": env.get("python"),
    }


def write_record(
    dest: str | Path,
    chapter: Any,
    results: Sequence[Mapping[str, Any]],
    notebook: Path,
    *,
    commit: str,
    library_hash: str,
    previous: Record | None = None,
) -> Path:
    """Write one chapter's record into ``dest`` from its points' saved results, seed by seed.

    Parameters
    ----------
    dest
        ``records/<profile>/<chapter>``.
    chapter
        The :class:`~featlearn.book.notebooks.Chapter`.
    results
        The saved point JSONs of :func:`featlearn.book.sweep.run_points`, first seed first.
    notebook
        The executed notebook of the first seed, copied as ``<chapter>.ipynb``.
    previous
        A current record of the same chapter and profile to extend: its seeds' claims, runs
        and notebook are kept, ``results`` (other seeds) are added, and ``extended`` says when.
    """
    from featlearn.book.runner import chapter_modules

    dest = Path(dest)
    first = results[0]
    rows = [{**c, "seed": r["seed"]} for r in results for c in r.get("claims", [])]
    params = {k: v for k, v in first["params"].items() if k != "seed"}
    prov = {
        "chapter": chapter.name,
        "title": chapter.title,
        "profile": first["profile"],
        "seeds": [r["seed"] for r in results],
        "commit": commit,
        "library_hash": library_hash,
        "chapter_hash": first["chapter_hash"],
        "chapter_hash_scope": "computation",  # code cells but presentation ones, this profile's front matter
        "library_hash_scope": "computation",  # the modules the chapter imports, transitively, but plots
        "library_modules": chapter_modules(chapter.path.read_text(encoding="utf-8")),
        "parameters": params,
        "machine": _machine(first.get("env", {})),
        "runs": [
            {
                "seed": r["seed"],
                "wall_s": round(float(r.get("wall_s", math.nan)), 2),
                "kernel_and_overhead_s": round(float(r.get("overhead_s", math.nan)), 2),
                "peak_rss_mb": round(float(r.get("peak_rss_mb", math.nan)), 1),
                "host": r.get("host"),
                "torch_threads": r.get("env", {}).get("threads"),
                "device": r.get("env", {}).get("device"),
                "finished": r.get("finished"),
            }
            for r in results
        ],
        "notebook": f"{chapter.name}.ipynb",
        "notebook_seed": first["seed"],
        "recorded": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"featlearn record {chapter.name} --profile {first['profile']} "
        f"--seeds {','.join(str(r['seed']) for r in results)}",
    }
    if previous is not None:
        if previous.profile != prov["profile"] or set(previous.seeds) & set(prov["seeds"]):
            raise ValueError(f"{dest}: a record is extended only with other seeds of its own profile")
        old_rows = json.loads((previous.path / "claims.json").read_text(encoding="utf-8"))
        rows = old_rows + rows
        kept = dict(previous.provenance)
        new_seeds = prov["seeds"]
        kept["seeds"] = sorted(kept.get("seeds", []) + new_seeds)
        kept["runs"] = sorted(kept.get("runs", []) + prov["runs"], key=lambda r: r["seed"])
        kept["extended"] = kept.get("extended", []) + [
            {"seeds": new_seeds, "commit": commit, "recorded": prov["recorded"], "machine": prov["machine"]}
        ]
        kept["command"] = (
            f"featlearn record {chapter.name} --profile {prov['profile']} --seeds {','.join(map(str, kept['seeds']))}"
        )
        prov = kept
        notebook = previous.notebook
    text = Path(notebook).read_text(encoding="utf-8")
    _atomic_write(dest / f"{chapter.name}.ipynb", text)
    _atomic_write(dest / "claims.json", json.dumps(rows, indent=2, ensure_ascii=False, default=str) + "\n")
    _atomic_write(
        dest / "provenance.json", json.dumps(prov, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    size = len(text.encode("utf-8"))
    if size > NOTEBOOK_WARN_BYTES:
        warnings.warn(
            f"{dest / f'{chapter.name}.ipynb'} is {size / 2**20:.1f} MB (over "
            f"{NOTEBOOK_WARN_BYTES / 2**20:.0f} MB) and is committed to the repository; consider fewer "
            "or smaller figures at this profile",
            RecordWarning,
            stacklevel=2,
        )
    return dest


def rehash_computation(rec: Record, text_at_commit: str) -> dict[str, Any]:
    """The provenance of ``rec`` with its chapter hash moved to the ``computation`` scope.

    Why: the hash that leaves out presentation cells is a function of the chapter text the
    record was made from, so it can be computed later from that text (the chapter file at
    the record's commit) without rerunning anything. The text is first checked to give the
    stored hash under the record's own scope; the old hash is kept.

    Raises
    ------
    ValueError
        When ``text_at_commit`` does not give the record's stored hash (not the text it was
        made from), or the record's scope is neither ``profile`` nor ``computation``.
    """
    prov = dict(rec.provenance)
    scope = prov.get("chapter_hash_scope")
    if scope == "computation":
        return prov
    if scope != "profile":
        raise ValueError(f"{rec.path}: only a record hashed per profile can be rehashed (scope {scope!r})")
    if text_hash(text_at_commit, rec.profile, presentation=True) != prov.get("chapter_hash"):
        raise ValueError(f"{rec.path}: the text given is not the chapter this record was made from")
    prov["chapter_hash_with_presentation"] = prov["chapter_hash"]
    prov["chapter_hash"] = text_hash(text_at_commit, rec.profile)
    prov["chapter_hash_scope"] = "computation"
    prov["rehashed"] = (
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}: presentation cells left out of the chapter hash "
        f"(featlearn.book.cells), computed from book/{rec.chapter}.md at {rec.commit}, which gives the old hash"
    )
    return prov


@dataclass
class RecordReport:
    """What :func:`record` wrote, and the sweep under it."""

    written: list[Path]
    failed: dict[str, list[str]]  # chapter -> failure messages
    sweep: Any


def record(
    root: str | Path,
    chapters: Sequence[str] | None,
    *,
    profile: str = "fast",
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    records_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    **run: Any,
) -> RecordReport:
    """Record ``chapters`` (None: every chapter) at ``profile`` over ``seeds``.

    Every point is checked before anything runs; all chapters' runs share one Dask
    cluster. A chapter whose record at ``profile`` is current runs only the seeds it lacks,
    and its record is extended with them. The runs themselves go to ``work_dir`` (default
    ``<root>/_build/sweeps/record-<profile>``), so a second call resumes; a chapter's
    record is (re)written in ``records_dir`` (default ``<root>/records``) once all its
    seeds have finished. Other keyword arguments go to
    :func:`featlearn.book.sweep.run_points`.
    """
    from featlearn.book.runner import Book, git_commit
    from featlearn.book.sweep import plan_points, run_points, write_outputs

    book = Book(Path(root))
    names = list(chapters) if chapters else [c.name for c in book.chapters()]
    dest_root = Path(records_dir) if records_dir else book.root / RECORDS_DIR
    # a current record of the same chapter and profile keeps its seeds: only new ones run
    now = current_state([book.chapter(n) for n in names])
    libs = now.chapter_library_hashes  # each chapter's modules, hashed once
    kept = {
        r.chapter: r
        for r in load_records(dest_root)
        if r.chapter in names and r.profile == profile and not r.staleness(now)
    }
    plans = {}
    for n in names:
        todo = [s for s in seeds if n not in kept or s not in kept[n].by_seed]
        plans[n] = plan_points(book, n, [profile], todo, {}, library_hash=libs[n]) if todo else []
    work = Path(work_dir) if work_dir else book.root / "_build" / "sweeps" / f"record-{profile}"
    commit = git_commit(book.root)
    report = run_points([p for ps in plans.values() for p in ps], work, commit=commit, **run)
    write_outputs(report)
    written, failed = [], {}
    for name, pts in plans.items():
        if not pts:  # every seed asked for is in the current record already
            continue
        missing = [p for p in pts if p.key not in report.results]
        if missing:
            failed[name] = [report.failures.get(p.key, f"{p.label()} did not finish") for p in missing]
            continue
        results = [report.results[p.key] for p in pts]
        written.append(
            write_record(
                dest_root / profile / name,
                book.chapter(name),
                results,
                report.out_dir / results[0]["notebook"],
                commit=results[0].get("commit", commit),
                library_hash=libs[name],
                previous=kept.get(name),
            )
        )
    return RecordReport(written=written, failed=failed, sweep=report)


# --------------------------------------------------------------------------- the scorecard


def _num(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.4g}"


def _mean_sd(mean: float, sd: float) -> str:
    """``"0.928 ± 0.012"``: the sd to 2 significant digits and the mean to the same decimal place."""
    if math.isnan(mean) or math.isnan(sd) or sd <= 0:
        return f"{_num(mean)} ± {_num(sd)}"
    places = max(0, 1 - math.floor(math.log10(sd)))
    return f"{mean:.{places}f} ± {sd:.{places}f}"


def n_seeds(n: int) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _seeds_text(seeds: Sequence[int]) -> str:
    s = list(seeds)
    if len(s) > 2 and s == list(range(s[0], s[0] + len(s))):
        return f"seeds {s[0]}–{s[-1]}"
    return ("seed " if len(s) == 1 else "seeds ") + ", ".join(map(str, s))


def _cell(s: Any) -> str:
    """One line of markdown; ``<`` escaped so that claim text cannot open an HTML tag."""
    return " ".join(str(s).split()).replace("<", "&lt;")


def list_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str, widths: Sequence[int]) -> str:
    """A MyST ``list-table`` (cells are markdown; a cell may hold several paragraphs).

    Tables of claims use it rather than pipe tables: ``cls`` (e.g. ``fl-claims``) lets
    ``_static/featlearn.css`` fit them to the column and turn rows into cards on a phone.
    """
    out = [
        "```{list-table}",
        ":header-rows: 1",
        f":class: {cls}",
        f":widths: {' '.join(map(str, widths))}",
        "",
    ]
    for row in [list(header), *rows]:
        for i, cell in enumerate(row):
            paras = (cell or "—").split("\n\n")
            out.append(("* - " if i == 0 else "  - ") + paras[0])
            out += [line for p in paras[1:] for line in ("", "    " + p)]
    out.append("```")
    return "\n".join(out)


def page_name(rec: Record) -> str:
    """The staged page of a record, relative to the book folder: ``records/<profile>-<chapter>``."""
    return f"records/{rec.profile}-{rec.chapter}"


def records_markdown(records: Sequence[Record], current: CurrentState, *, link_pages: bool = False) -> str:
    """A "Recorded runs" section for the Scorecard page (level-2 heading).

    Per chapter, per claim: "`fast`, n seeds: mean ± sd, k/n hold" and the across-seed
    verdict (:func:`featlearn.book.sweep.seed_verdict`). A record whose chapter or library
    changed since is headed "stale (made at <commit>; chapter changed / library changed)"
    and its verdicts are shown as stale, never as current. ``link_pages``: link each record
    to the page :func:`stage_record_pages` writes (scorecard in ``book/``).
    """
    lines = [
        "## Recorded runs",
        "",
        "Claims re-measured over several seeds with `featlearn record`; the files are in "
        "`records/<profile>/<chapter>/` of the repository. " + SEED_VERDICT_RULE + " A record "
        "made before its chapter or the library last changed is marked stale: its numbers "
        "describe older code and are not a current result.",
        "",
    ]
    if not records:
        lines.append(
            "No chapter has been recorded yet (`featlearn record <chapter> --profile fast --seeds 0-4`)."
        )
        return "\n".join(lines) + "\n"
    for rec in records:
        st = rec.staleness(current)
        title = current.titles.get(rec.chapter) or rec.provenance.get("title") or rec.chapter
        n = len(rec.seeds)
        lines += [f"### {title} (`{rec.chapter}`, `{rec.profile}`)", ""]
        where = (
            f"{{doc}}`the notebook of seed {rec.provenance.get('notebook_seed', rec.seeds[0] if rec.seeds else 0)}"
            f" <{page_name(rec)}>`"
            if link_pages
            else f"`{rec.notebook.name}`"
        )
        facts = (
            f"`{rec.profile}`, {n} seeds ({_seeds_text(rec.seeds)}), commit `{rec.commit}`, "
            f"recorded {rec.provenance.get('recorded', '?')}; {where}."
        )
        if st:
            lines += [
                "```{warning}",
                f"**{st.describe()}**: these numbers are not a current result. Rerun "
                f"`featlearn record {rec.chapter} --profile {rec.profile} --seeds "
                f"{','.join(map(str, rec.seeds))}` to refresh it.",
                "```",
                "",
            ]
        rows = []
        for s in rec.summary():
            stats = f"{_mean_sd(s['mean'], s['sd'])}, " if s["numeric"] else ""
            if 0 < s["numeric"] < s["n"]:
                stats = f"{stats[:-2]} (of {s['numeric']} numeric values), "
            text = f"`{rec.profile}`, {s['n']} seeds: {stats}{_holds_text(s)}"
            verdict = f"stale (was: {s['verdict']})" if st else _MARK[s["verdict"]]
            claim = f'{_cell(s["claim"])} <span class="fl-id">{_cell(s["id"])}</span>'
            rows.append([claim, text, verdict])
        header = ["Claim", "Across seeds", "Verdict"]
        lines += [facts, "", list_table(header, rows, "fl-claims fl-rec", RECORD_WIDTHS), ""]
    return "\n".join(lines)


def _spread(s: Mapping[str, Any]) -> str:
    """ "0.91 ± 0.03 (0.87 to 0.95)" for a numeric claim, "" for a yes/no one."""
    if not s["numeric"]:
        return ""
    if s["numeric"] == 1:  # one value: no spread to show
        return _num(s["mean"]) + ", "
    text = _mean_sd(s["mean"], s["sd"])
    if s["numeric"] > 1:
        text += f" ({_num(s['min'])} to {_num(s['max'])})"
    return text + ", "


def _holds_text(s: Mapping[str, Any]) -> str:
    """ "4/5 hold", or "not measured in any seed" for a claim no seed could judge."""
    if not s.get("measured", s["n"]):
        return "not measured in any seed"
    matched = s.get("matched", 0)
    return f"{s['holds']}/{s['n']} hold" + (f" ({matched} matched by null)" if matched else "")


def annotate_claims(nb: Any, chapter: str, verdicts: Mapping[tuple[str, str], Sequence[Any]]) -> Any:
    """Make a chapter's claim boxes ready for the site (at staging time; the run is not touched).

    - Each claim box says how the claim fares across recorded seeds (``verdicts`` is
      :func:`featlearn.book.scorecard.seed_verdicts`' output); a claim no record covers says
      so: one seed is not a result.
    - The verdict marks are badges any font renders (:func:`featlearn.book.scorecard.font_safe`),
      not emoji.
    - The chapter's not-measured claims become one compact table in place of the first of
      their boxes (:func:`featlearn.book.scorecard.not_measured_markdown`); their other
      outputs are dropped.

    Changes ``nb`` in place and returns it.
    """
    from featlearn.book.scorecard import font_safe, not_measured_markdown
    from featlearn.claims import CLAIM_MIME

    unmeasured: list[tuple[Any, Any, Claim]] = []  # (cell, output, claim)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if CLAIM_MIME not in data or "text/markdown" not in data:
                continue
            claim = _claim_of_output(data[CLAIM_MIME])
            if claim is not None and claim.status == "not measured":
                unmeasured.append((cell, out, claim))
                continue
            cid = claim.id if claim is not None else None
            found = verdicts.get((chapter, cid)) if cid is not None else None
            if found:
                note = "Across seeds: " + "; ".join(sv.markdown() for sv in found) + "."
            else:
                note = "Across seeds: not recorded yet; this single run is not a result on its own."
            md = data["text/markdown"]
            md = "".join(md) if isinstance(md, list) else str(md)
            body, sep, tail = md.rstrip().rpartition("\n:::")
            md = (f"{body}\n\n{note}{sep}{tail}" if sep else f"{md}\n\n{note}") + "\n"
            data["text/markdown"] = font_safe(md)
    if unmeasured:
        _, first, _ = unmeasured[0]
        first["data"]["text/markdown"] = not_measured_markdown([c for _, _, c in unmeasured], verdicts)
        first["data"]["text/plain"] = f"{len(unmeasured)} claims not measured"
        drop = {id(out) for _, out, _ in unmeasured[1:]}
        for cell in nb.cells:
            if "outputs" in cell:
                cell["outputs"] = [o for o in cell["outputs"] if id(o) not in drop]
    return nb


#: A chapter's Markdown cell that holds only this line is replaced, when the build stages the
#: chapter, by the chapter's claims across its recorded profiles (:func:`profiles_markdown`).
#: Markdown cells are not part of a chapter's hash, so adding it keeps records current.
RECORDS_PLACEHOLDER = "<!-- featlearn: recorded profiles -->"

#: The order profiles are shown in; others follow alphabetically.
_PROFILE_ORDER = ("fast", "full", "paper")


def _profile_rank(profile: str) -> tuple[int, str]:
    """Sort key: :data:`_PROFILE_ORDER` first, then any other profile alphabetically."""
    return (_PROFILE_ORDER.index(profile) if profile in _PROFILE_ORDER else len(_PROFILE_ORDER), profile)


def profile_widths(n: int) -> list[int]:
    """Column widths (%) of :func:`profiles_markdown`'s table: the claim, then ``n`` profiles.

    A profile's column (22%, or a third of 66% from three profiles on) holds a wrapped
    "matched by null" badge and a line of numbers at 1280 px (tests/test_sitecheck.py).
    """
    first = 100 - 22 * n if n <= 2 else 34
    return [first] + [(100 - first) // max(1, n)] * n


#: A chapter's Markdown cell holding only this becomes :func:`outcomes_markdown`.
OUTCOMES_PLACEHOLDER = "<!-- featlearn: outcomes -->"
#: The order verdict groups are told in: what replicates first, then what does not.
_OUTCOME_ORDER = ("holds", "fails", "matched by null", "unstable", "too few seeds", "not measured")


def outcomes_markdown(
    chapter: str, records: Sequence[Record], verdicts: Mapping[tuple[str, str], Sequence[Any]]
) -> str:
    """What a chapter's records say, profile by profile, in words: its replication summary's outcome.

    Why: a reader opening a chapter wants first what was reproduced and what was not, and at
    which profile; one seed is not a result, so this is told from the records' across-seed
    verdicts (``verdicts``: :func:`featlearn.book.scorecard.seed_verdicts`), not from the
    page's own run. Holding claims are named, then failing, matched-by-null and unstable ones;
    not-measured claims and claims on too few seeds are counted. A stale record gives no verdict.
    """
    recs = sorted((r for r in records if r.chapter == chapter), key=lambda r: _profile_rank(r.profile))
    if not recs:
        return "No run of this chapter is recorded yet: the claims below rest on this page's one seed.\n"
    lines = [
        "What the recorded runs show, each claim judged across a record's seeds (this page's own "
        "run, one seed, is in the claim boxes):",
        "",
    ]
    for r in recs:
        found = {
            cid: sv
            for (ch, cid), svs in verdicts.items()
            if ch == chapter
            for sv in svs
            if sv.profile == r.profile
        }
        head = f"- **At `{r.profile}`**, {{doc}}`{n_seeds(len(r.seeds))} <{page_name(r)}>`"
        stale = next((sv.stale for sv in found.values() if sv.stale), "")
        if stale:
            lines.append(
                f"{head}: the record is {_cell(stale)}, so it gives no verdict until it is made again."
            )
            continue
        groups: dict[str, list[str]] = {}
        for s in r.summary():
            sv = found.get(s["id"])
            verdict = sv.verdict if sv is not None else str(s["verdict"])
            groups.setdefault(verdict, []).append(f"{_cell(s['claim'])} (`{s['id']}`)")
        parts = []
        for verdict in sorted(groups, key=lambda v: _OUTCOME_ORDER.index(v) if v in _OUTCOME_ORDER else 99):
            items = groups[verdict]
            if verdict == "not measured":
                parts.append(f"{len(items)} not measured at this profile (the box below says why)")
            elif verdict == "too few seeds":
                parts.append(
                    f"{len(items)} measured on too few seeds for a verdict (a verdict needs {MIN_SEEDS})"
                )
            else:
                parts.append(f"**{verdict}**: " + "; ".join(items))
        lines.append(f"{head}: " + ". ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def profiles_markdown(
    chapter: str,
    records: Sequence[Record],
    verdicts: Mapping[tuple[str, str], Sequence[Any]],
    defined: Sequence[str] = (),
) -> str:
    """One table of a chapter's claims across its recorded profiles, for its "At the `full` profile" section.

    A row per claim any record of ``chapter`` covers, a column per recorded profile: the
    across-seed badge, mean ± sd and how many seeds hold (``verdicts`` is
    :func:`featlearn.book.scorecard.seed_verdicts`' output; a stale record shows no verdict).
    Each profile links to its record's page. A profile in ``defined`` (the chapter's own
    profiles) without a record is named, with the command that records it.
    """
    recs = [r for r in records if r.chapter == chapter]
    profiles = sorted({r.profile for r in recs}, key=_profile_rank)
    lines: list[str] = []
    if recs:
        links = ", ".join(f"{{doc}}`{r.profile} <{page_name(r)}>`" for r in recs)
        lines += [
            "Each column is one profile's record of this chapter over several seeds. "
            f"{SEED_VERDICT_RULE} The executed notebooks, with their figures: {links}.",
            "",
        ]
        order: dict[str, str] = {}
        for r in recs:
            for s in r.summary():
                order.setdefault(s["id"], s["claim"])
        rows = []
        for cid, text in order.items():
            found = {sv.profile: sv for sv in verdicts.get((chapter, cid), [])}
            row = [f'{_cell(text)} <span class="fl-id">{_cell(cid)}</span>']
            row += [
                found[p].markdown(profile=False) if p in found else "not in this record" for p in profiles
            ]
            rows.append(row)
        header = ["Claim"] + [f"`{p}`" for p in profiles]
        lines += [list_table(header, rows, "fl-claims fl-prof", profile_widths(len(profiles))), ""]
    if "full" in profiles:
        lines += [profile_comparison_markdown(chapter, recs, verdicts), ""]
    missing = [p for p in _PROFILE_ORDER if p in defined and p not in profiles and p != "paper"]
    for p in missing:
        n = "0-2" if p == "full" else "0-4"
        lines += [
            f"No `{p}` record yet: `featlearn record {chapter} --profile {p} --seeds {n}` makes one.",
            "",
        ]
    if not lines:
        lines = ["This chapter has not been recorded yet.", ""]
    return "\n".join(lines)


def _run_minutes(rec: Record) -> str:
    """ "28–31 min per seed on 1 CPU thread (AMD EPYC)": how long the record's runs took."""
    runs = rec.provenance.get("runs", [])
    walls = sorted(float(r["wall_s"]) / 60 for r in runs if r.get("wall_s"))
    if not walls:
        return "no run times recorded"
    span = f"{walls[0]:.0f}" if round(walls[0]) == round(walls[-1]) else f"{walls[0]:.0f}–{walls[-1]:.0f}"
    machine = rec.provenance.get("machine", {})
    threads = rec.threads
    where = machine.get("gpu") or machine.get("cpu") or "unknown machine"
    on = f"{'/'.join(map(str, threads))} CPU thread{'s' if threads != [1] else ''}" if threads else "CPU"
    if machine.get("gpu"):
        on = "a GPU"
    return f"{span} min per seed on {on} ({where})"


def profile_comparison_markdown(
    chapter: str,
    records: Sequence[Record],
    verdicts: Mapping[tuple[str, str], Sequence[Any]],
    base: str = "fast",
    other: str = "full",
) -> str:
    """The "At the `full` profile" subsection: what the larger protocol changes.

    Why: a reader who saw a claim fail at ``base`` wants to know whether the paper's scale
    rescues it. Lists every claim that does not hold at ``base`` across seeds with its
    ``other`` verdict, then every claim that holds at ``base`` but not at ``other``; says
    how long a seed of ``other`` took and links its record (whose notebook has the figures).
    """
    recs = {r.profile: r for r in records if r.chapter == chapter}
    if other not in recs:
        return ""
    rec = recs[other]
    lines = [
        f"### At the `{other}` profile",
        "",
        f"The `{other}` record: {_seeds_text(rec.seeds)}, {_run_minutes(rec)}. Its figures are in "
        f"{{doc}}`the record's executed notebook <{page_name(rec)}>`.",
        "",
    ]
    if base not in recs:
        return "\n".join(lines + [f"There is no `{base}` record to compare it with."])

    def found(cid: str, profile: str) -> Any:
        return next((sv for sv in verdicts.get((chapter, cid), []) if sv.profile == profile), None)

    def item(cid: str, text: str) -> str:
        parts = []
        for p in (base, other):
            sv = found(cid, p)
            parts.append(sv.markdown() if sv is not None else f"`{p}`: not in this record")
        return f'- {_cell(text)} <span class="fl-id">{_cell(cid)}</span>\n' + "\n".join(
            f"  - {p}" for p in parts
        )

    claims = {s["id"]: s["claim"] for s in recs[base].summary()}
    for s in rec.summary():
        claims.setdefault(s["id"], s["claim"])
    weak = [c for c in claims if getattr(found(c, base), "verdict", None) != "holds"]

    def slips(sv: Any) -> bool:  # fails at ``other``, or failed in one of its too few seeds
        if sv is None or sv.stale:
            return False
        return sv.verdict != "holds" and (sv.verdict != "too few seeds" or sv.holds < sv.n)

    lost = [c for c in claims if c not in weak and slips(found(c, other))]
    if any(getattr(found(c, other), "verdict", None) == "too few seeds" for c in claims):
        lines += [
            f"The `{other}` record has fewer than {MIN_SEEDS} seeds, so it gives values but no "
            "verdict yet; read its counts as what those seeds showed, not as a result.",
            "",
        ]
    if weak:
        lines += [f"Claims that do not hold at `{base}` across seeds, and how they fare at `{other}`:", ""]
        lines += [item(c, claims[c]) for c in weak] + [""]
    else:
        lines += [f"Every claim holds at `{base}` across seeds.", ""]
    if lost:
        few = getattr(found(lost[0], other), "verdict", None) == "too few seeds"
        where = f"in every `{other}` seed so far" if few else f"at `{other}`"
        lines += [f"Claims that hold at `{base}` but not {where}:", ""]
        lines += [item(c, claims[c]) for c in lost] + [""]
    return "\n".join(lines).rstrip() + "\n"


#: A number from a record in prose: ``[[full:claim-id]]`` (the claim's mean value across the
#: record's seeds), ``[[full:claim-id:q95]]`` (its null's mean 95th percentile),
#: ``[[fast:claim-id:min]]`` / ``:max`` (the lowest / highest seed) or ``[[fast:claim-id:holds]]``
#: ("4/5"). A page that is not the claim's chapter (the intro) names it:
#: ``[[fast:convrfm/star]]``. Prose that discusses a record quotes it this way, so that its
#: numbers come from the record, never typed.
RECORD_VALUE = re.compile(r"\[\[([a-z]+):(?:([a-z_]+)/)?([A-Za-z0-9_.-]+)(?::(value|q95|holds|min|max))?\]\]")


def fill_quotes(
    text: str, chapter: str | None, records: Sequence[Record], current: CurrentState | None
) -> str:
    """``text`` with every :data:`RECORD_VALUE` quote replaced by the number it names.

    ``chapter``: the page's own chapter, which quotes without a chapter name refer to (None
    for a page that is no chapter: then every quote must name one).
    """
    return RECORD_VALUE.sub(lambda m: _record_value(m, chapter, records, current), text)


def _record_value(
    match: re.Match[str], chapter: str | None, records: Sequence[Record], current: CurrentState | None
) -> str:
    profile, named, cid, field_ = match.group(1), match.group(2), match.group(3), match.group(4) or "value"
    chapter = named or chapter
    if chapter is None:
        raise ValueError(
            f"{match.group(0)} names no chapter; outside a chapter write [[{profile}:<chapter>/{cid}]]"
        )
    rec = next((r for r in records if r.chapter == chapter and r.profile == profile), None)
    if rec is None:
        return f"(no `{profile}` record)"
    if current is not None and rec.staleness(current):
        return f"(stale `{profile}` record)"
    found = [c for c in rec.claims if c.id == cid]
    if not found:
        raise ValueError(
            f"{match.group(0)} quotes the {profile} record of {chapter!r}, which has no claim {cid!r}; "
            f"its claims: {', '.join(dict.fromkeys(c.id for c in rec.claims))}"
        )
    if field_ == "holds":
        return f"{sum(c.holds is True for c in found)}/{len(found)}"
    if field_ == "q95":
        nums = [float(c.baseline["q95"]) for c in found if c.baseline and c.baseline.get("q95") is not None]
    else:
        nums = _numbers(found)
    nums = [x for x in nums if math.isfinite(x)]
    if not nums:
        return "—"
    x = {"min": min, "max": max}.get(field_, statistics.fmean)(nums)
    return f"{x:.3g}".replace("-", "−")


def site_figures(nb: Any, label_prefix: str = "") -> Any:
    """Give each captioned figure cell (``mystnb.figure`` metadata) only its images, for the site.

    Why: myst-nb puts the caption and label on every output of such a cell, so a cell that
    draws a figure and then shows a table would label two things alike (a ``-W`` build
    fails); its other outputs move to a cell of their own right after it, input hidden.
    ``label_prefix`` renames the labels (a record's page holds the same figures as its
    chapter, and a label may exist once in the book). Changes ``nb`` in place; returns it.
    """
    import nbformat

    cells = []
    renamed: set[str] = set()
    for cell in nb.cells:
        cells.append(cell)
        fig = (cell.get("metadata", {}).get("mystnb") or {}).get("figure")
        if cell.get("cell_type") != "code" or not isinstance(fig, dict):
            continue
        if label_prefix and fig.get("name"):
            renamed.add(fig["name"])
            fig["name"] = f"{label_prefix}{fig['name']}"
        outs = cell.get("outputs", [])
        is_image = [any(k.startswith("image/") for k in o.get("data", {})) for o in outs]
        images = [o for o, i in zip(outs, is_image) if i]
        rest = [o for o, i in zip(outs, is_image) if not i]
        if images and rest:
            cell["outputs"] = images
            cells.append(nbformat.v4.new_code_cell("", metadata={"tags": ["remove-input"]}, outputs=rest))
    nb.cells = cells
    if renamed:  # the prose's {numref} references follow their labels

        def relabel(m: re.Match[str]) -> str:
            name = m.group(2)
            return m.group(1) + (label_prefix + name if name in renamed else name) + m.group(3)

        for cell in nb.cells:
            if cell.get("cell_type") == "markdown":
                cell["source"] = _NUMREF.sub(relabel, cell["source"])
    return nb


#: A ``{numref}`` role, bare (``{numref}`label```) or titled (``{numref}`Fig. %s <label>```).
_NUMREF = re.compile(r"(\{numref\}`(?:[^`<]*<)?)([^`<>]+)(>?`)")


def fill_record_sections(
    nb: Any,
    chapter: str,
    records: Sequence[Record],
    verdicts: Mapping[tuple[str, str], Sequence[Any]],
    defined: Sequence[str] = (),
    current: CurrentState | None = None,
) -> Any:
    """Fill a chapter's Markdown cells from its records, at staging time.

    A cell that is :data:`RECORDS_PLACEHOLDER` becomes :func:`profiles_markdown`, one that is
    :data:`OUTCOMES_PLACEHOLDER` :func:`outcomes_markdown`; every
    :data:`RECORD_VALUE` quote becomes the number it names (from a ``current`` record only: a
    stale or missing one says so). Captioned figure cells keep only their images
    (:func:`site_figures`). Called on a copy of the executed notebook; returns ``nb``.

    Raises
    ------
    ValueError
        If a quote names a claim its record does not have (a typo would print a wrong number).
    """
    for cell in nb.cells:
        if cell.get("cell_type") != "markdown":
            continue
        if cell.get("source", "").strip() == RECORDS_PLACEHOLDER:
            cell["source"] = profiles_markdown(chapter, records, verdicts, defined)
        elif cell.get("source", "").strip() == OUTCOMES_PLACEHOLDER:
            cell["source"] = outcomes_markdown(chapter, records, verdicts)
        elif "[[" in cell.get("source", ""):
            cell["source"] = fill_quotes(cell["source"], chapter, records, current)
    return site_figures(nb)


def _claim_of_output(payload: Any) -> Claim | None:
    """The :class:`Claim` an output carries (its claim MIME data, a dict or JSON text), or None."""
    try:
        d = json.loads(payload) if isinstance(payload, str) else payload
        return claim_from(d)
    except (TypeError, ValueError):
        return None


_DOC_TITLED = re.compile(r"\{doc\}`([^`<]*)<(?!/)([^>`]+)>`")
_DOC_BARE = re.compile(r"\{doc\}`(?!/)([^`<>]+)`")


def _links_up(text: str) -> str:
    """A chapter's relative ``{doc}`` links, rewritten for a page one folder further down.

    A record's page is ``book/records/<profile>-<chapter>``, its chapter ``book/<chapter>``:
    ``{doc}`CNFA <cnfa>``` becomes ``{doc}`CNFA <../cnfa>```; absolute targets are kept.
    """
    text = _DOC_TITLED.sub(lambda m: f"{{doc}}`{m.group(1)}<../{m.group(2)}>`", text)
    return _DOC_BARE.sub(lambda m: f"{{doc}}`../{m.group(1)}`", text)


def _record_notebook(rec: Record, current: CurrentState | None, records: Sequence[Record] = ()) -> Any:
    """A record's notebook made into a page: title says "recorded", a box says what produced it.

    Its prose's :data:`RECORD_VALUE` quotes are filled from ``records`` (default: ``rec`` alone).
    """
    import nbformat

    from featlearn.book.runner import strip_for_site

    nb = site_figures(strip_for_site(nbformat.read(rec.notebook, as_version=4)), f"{rec.profile}-")
    quoted = list(records) or [rec]
    for cell in nb.cells:  # the page sits one folder below its chapter: relative links move up
        if cell.cell_type == "markdown":
            cell.source = _links_up(fill_quotes(cell.source, rec.chapter, quoted, current))
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown")
            if md is not None:
                out["data"]["text/markdown"] = _links_up("".join(md) if isinstance(md, list) else md)
    st = rec.staleness(current) if current is not None else None
    runs = rec.provenance.get("runs", [])
    machine = rec.provenance.get("machine", {})
    box = [
        "```{admonition} A recorded run",
        ":class: note provenance",
        "",
        f"The executed notebook of seed {rec.provenance.get('notebook_seed', '?')} of `featlearn record` "
        f"at profile `{rec.profile}` over {_seeds_text(rec.seeds)}; commit `{rec.commit}`, recorded "
        f"{rec.provenance.get('recorded', '?')}. Machine: {machine.get('cpu') or '?'}, "
        f"device {machine.get('device') or '?'}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f", torch {machine.get('torch') or '?'} with {machine.get('torch_threads') or '?'} threads. "
        + (
            "Wall time per run: " + ", ".join(f"{r.get('wall_s', math.nan):.1f} s" for r in runs) + ". "
            if runs
            else ""
        )
        + "The Scorecard's *Recorded runs* section gives every seed's verdicts.",
        "```",
    ]
    if st:
        box += ["", "```{warning}", f"This record is {st.describe()}; it is not a current result.", "```"]
    new = nbformat.v4.new_markdown_cell("\n".join(box))
    idx = next(
        (
            i
            for i, c in enumerate(nb.cells)
            if c.cell_type == "markdown" and c.source.lstrip().startswith("# ")
        ),
        None,
    )
    heading = f"# Recorded: {rec.provenance.get('title') or rec.chapter} (`{rec.profile}`, {n_seeds(len(rec.seeds))})"
    if idx is None:
        nb.cells[0:0] = [nbformat.v4.new_markdown_cell(heading), new]
    else:
        _, _, rest = nb.cells[idx].source.lstrip().partition("\n")
        nb.cells[idx].source = heading
        nb.cells[idx + 1 : idx + 1] = [new] + (
            [nbformat.v4.new_markdown_cell(rest.strip())] if rest.strip() else []
        )
    return nb


def stage_record_pages(
    records: Sequence[Record], stage_dir: str | Path, current: CurrentState | None = None
) -> list[dict[str, Any]]:
    """Stage each record's notebook as a page of its own; return the ``_toc.yml`` entries to add.

    Writes ``<stage_dir>/book/records/<profile>-<chapter>.ipynb`` (title "Recorded: ...",
    a provenance box, a stale warning when ``current`` says so, featlearn's private
    outputs dropped) and ``<stage_dir>/book/records/index.md``, and returns
    ``[{"file": "book/records/index", "sections": [{"file": "book/records/<profile>-<chapter>"}, ...]}]``
    (``[]`` when there are no records).

    :func:`featlearn.book.runner.build` calls it (through ``runner._write_scorecard``) after
    the chapters are staged and before ``jupyter-book build``, and passes the entries to
    :func:`add_toc_entries`.
    """
    import nbformat

    stage = Path(stage_dir)
    if not records:
        return []
    folder = stage / "book" / "records"
    folder.mkdir(parents=True, exist_ok=True)
    sections = []
    index = [
        "# Recorded runs",
        "",
        "Chapters executed over several seeds with `featlearn record`; each page is the "
        "executed notebook of the first seed. The Scorecard summarises every seed.",
        "",
    ]
    for rec in records:
        nbformat.write(_record_notebook(rec, current, records), folder / f"{rec.profile}-{rec.chapter}.ipynb")
        sections.append({"file": f"book/{page_name(rec)}"})
        mark = (
            f" ({rec.staleness(current).describe()})"
            if current is not None and rec.staleness(current)
            else ""
        )
        index.append(f"- {{doc}}`{rec.chapter} at {rec.profile} <{rec.profile}-{rec.chapter}>`{mark}")
    (folder / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return [{"file": "book/records/index", "sections": sections}]


def add_toc_entries(toc_path: str | Path, entries: Sequence[Mapping[str, Any]]) -> None:
    """Add ``entries`` to a (staged) ``_toc.yml``: after the Scorecard, else at the end of the chapters."""
    import yaml

    if not entries:
        return
    toc_path = Path(toc_path)
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8")) or {}
    if "parts" in toc and toc["parts"]:
        chapters = toc["parts"][-1].setdefault("chapters", [])
    else:
        chapters = toc.setdefault("chapters", [])
    # right after the Scorecard, which summarises the records, when the book has one
    at = next(
        (i + 1 for i, c in enumerate(chapters) if str(c.get("file", "")).endswith("scorecard")), len(chapters)
    )
    chapters[at:at] = [dict(e) for e in entries]
    toc_path.write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True), encoding="utf-8")
