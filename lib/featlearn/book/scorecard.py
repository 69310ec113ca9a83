"""The Scorecard page and the verdict marks of the site, in a form any font renders.

Why: a verdict a reader cannot see is no verdict. The Scorecard gives one section per
chapter, each row leading with its verdict, and a summary on top; it fits the page at
1280 px and stacks its rows at phone width (``_static/featlearn.css``). Verdicts are
shown as badges (a coloured box with the word, a CSS-drawn mark before it), never as
emoji, which show as empty boxes where no emoji font is installed. The same badges
replace the emoji marks of the claim boxes on chapter pages, and a chapter's
not-measured claims are shown as one compact table (:func:`not_measured_markdown`).

Everything here is markdown (MyST) for a staged page; nothing here measures anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from featlearn.book import records as _records
from featlearn.claims import (
    Claim,
    _fmt,  # the one formatting of values, as claim boxes show them
)

__all__ = [
    "VERDICT_CLASS",
    "SeedVerdict",
    "badge",
    "font_safe",
    "seed_verdicts",
    "scorecard_markdown",
    "not_measured_markdown",
    "replication_summary_markdown",
    "SUMMARY_PLACEHOLDER",
]

#: The CSS class of each verdict's badge (``_static/featlearn.css`` styles them);
#: every badge also has the class ``fl-verdict``.
VERDICT_CLASS = {
    "holds": "fl-verdict-holds",
    "fails": "fl-verdict-fails",
    "not measured": "fl-verdict-none",
    "matched by null": "fl-verdict-null",
    "unstable": "fl-verdict-unstable",
    "stale": "fl-verdict-stale",
    "not recorded": "fl-verdict-none",
    "too few seeds": "fl-verdict-none",
}

#: The emoji marks that :mod:`featlearn.claims` and :mod:`featlearn.book.records` write,
#: and the verdict each one stands for.
_EMOJI_MARKS = {
    "✅ holds": "holds",
    "❌ fails": "fails",
    "⚠️ not measured": "not measured",
    "⚠ not measured": "not measured",
    "⚠️ unstable": "unstable",
    "⚠ unstable": "unstable",
    "🟰 matched by null": "matched by null",
    "⚠️ too few seeds": "too few seeds",
    "⚠ too few seeds": "too few seeds",
}
_STRAY_EMOJI = re.compile("[\u2705\u274c\u26a0\U0001f7f0]\ufe0f? ?")

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|{}$~&!])")
_MD_LEADING = re.compile(r"^([-+=:](?=\s|$)|\d+(?=[.)](?:\s|$)))")


def badge(verdict: str) -> str:
    """The verdict as an inline HTML badge: ``<span class="fl-verdict ...">holds</span>``.

    Parameters
    ----------
    verdict
        A key of :data:`VERDICT_CLASS` (``"holds"``, ``"fails"``, ``"unstable"``,
        ``"too few seeds"``, ``"stale"``, …); the badge shows this word.
    """
    return f'<span class="fl-verdict {VERDICT_CLASS[verdict]}">{verdict}</span>'


def font_safe(text: str) -> str:
    """``text`` with the emoji verdict marks (✅ holds, ❌ fails, ⚠️ …) replaced by badges.

    A stray ✅, ❌ or ⚠️ without a known verdict word after it is dropped.
    """
    for mark, verdict in _EMOJI_MARKS.items():
        text = text.replace(mark, badge(verdict))
    return _STRAY_EMOJI.sub("", text)


def _text(value: object) -> str:
    """Plain text for a markdown cell, on one line, its markdown characters escaped.

    A paper value such as ``"> 0.9"`` would otherwise start a block quote, a leading
    ``-`` or ``1.`` a list, and a ``|``, ``*`` or ``$`` change the table, emphasis or math.
    """
    s = " ".join((value if isinstance(value, str) else _fmt(value)).split())
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return _MD_LEADING.sub(lambda m: m.group(1) + "\\" if m.group(1)[0].isdigit() else "\\" + m.group(1), s)


def _id(claim_id: str) -> str:
    return f'<span class="fl-id">{_text(claim_id)}</span>'


def _rule(rule: str) -> str:
    """The rule without its leading "holds if " (the column says it)."""
    return _text(rule.removeprefix("holds if "))


@dataclass(frozen=True)
class SeedVerdict:
    """How one claim fares across the seeds of one record (one profile)."""

    profile: str
    #: Seeds that recorded the claim, and in how many of them it held.
    n: int
    holds: int
    #: ``"0.91 ± 0.03 (0.87 to 0.95)"`` for a numeric claim, ``""`` for a yes/no one.
    spread: str
    #: ``"holds"``, ``"fails"``, ``"unstable"`` or ``"too few seeds"``
    #: (:func:`featlearn.book.sweep.seed_verdict`), or
    #: ``"not measured"`` when no seed could judge the claim.
    verdict: str
    #: ``""`` for a current record, else why it is stale (``"stale (made at …; …)"``).
    stale: str = ""
    #: Seeds whose value passed the rule but not the claim's null.
    matched: int = 0

    def _head(self, profile: bool) -> str:
        return f"`{self.profile}`, {_records.n_seeds(self.n)}" if profile else _records.n_seeds(self.n)

    def describe(self, profile: bool = True) -> str:
        """``"`fast`, 5 seeds: 0.91 ± 0.03 (0.87 to 0.95), 5/5 hold"`` (markdown).

        ``profile=False`` leaves out the profile (for a column already headed by it).
        """
        spread = f"{_text(self.spread)}, " if self.spread else ""
        head = self._head(profile)
        if self.verdict == "not measured":
            return f"{head}: {spread}not measured in any seed"
        matched = f" ({self.matched} matched by null)" if self.matched else ""
        return f"{head}: {spread}{self.holds}/{self.n} hold{matched}"

    def markdown(self, profile: bool = True) -> str:
        """The badge and :meth:`describe`; a stale record gives no counts and no verdict.

        Its numbers describe older code, so beside this run's verdict they would read as a
        result; the Recorded runs section keeps them, marked stale.
        """
        if self.stale:
            return f"{badge('stale')} {self._head(profile)}: {_text(self.stale)}; no current verdict"
        return f"{badge(self.verdict)} {self.describe(profile)}"


def seed_verdicts(
    records: Sequence[_records.Record], current: _records.CurrentState
) -> dict[tuple[str, str], list[SeedVerdict]]:
    """Per ``(chapter, claim id)``, one :class:`SeedVerdict` per record that covers the claim.

    The build computes them once and shows them in the claim boxes
    (:func:`featlearn.book.records.annotate_claims`), the not-measured tables and the Scorecard.
    """
    out: dict[tuple[str, str], list[SeedVerdict]] = {}
    for rec in records:
        st = rec.staleness(current)
        for s in rec.summary():
            out.setdefault((rec.chapter, s["id"]), []).append(
                SeedVerdict(
                    profile=rec.profile,
                    n=int(s["n"]),
                    holds=int(s["holds"]),
                    spread=_records._spread(s).removesuffix(", "),
                    verdict=str(s["verdict"]),
                    stale=st.describe() if st else "",
                    matched=int(s.get("matched", 0)),
                )
            )
    return out


def _count(n: int, verdict: str) -> str:
    """``"1 holds"``, ``"3 hold"``, ``"2 fail"``, ``"1 not measured"``: a count and its verb."""
    if verdict == "too few seeds":
        return f"{n} without a verdict (too few seeds)"
    return f"{n} {verdict.removesuffix('s') if verdict in ('holds', 'fails') and n != 1 else verdict}"


def _role_text(s: str) -> str:
    """Text that can stand inside a role's explicit title (no backquote or angle bracket)."""
    return re.sub(r"[`<>]", "", s)


def _this_build(claims: Sequence[Claim]) -> dict[str, int]:
    t = {"holds": 0, "matched by null": 0, "fails": 0, "not measured": 0}
    for c in claims:
        t[c.status] += 1
    return t


#: The across-seed verdicts the Scorecard counts, in the order it names them.
_TALLIED = ("holds", "fails", "unstable", "matched by null", "not measured", "too few seeds")


def _across_tally(
    claims: Sequence[Claim], across: Mapping[tuple[str, str], Sequence[SeedVerdict]]
) -> dict[str, dict[str, int]]:
    """Per profile, how many of ``claims`` hold, fail or are unstable in current records."""
    return _tally(sv for c in claims for sv in across.get((c.chapter, c.id), ()))


def _tally(verdicts: Iterable[SeedVerdict]) -> dict[str, dict[str, int]]:
    """Per profile, the count of each verdict among the current (not stale) ``verdicts``."""
    t: dict[str, dict[str, int]] = {}
    for sv in verdicts:
        if not sv.stale:
            t.setdefault(sv.profile, dict.fromkeys(_TALLIED, 0))[sv.verdict] += 1
    return t


def _tally_text(t: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(
        f"`{p}`: {v['holds']} hold, {v['fails']} fail, {v['unstable']} unstable"
        + (f", {v['matched by null']} matched by null" if v.get("matched by null") else "")
        + (f", {v['not measured']} not measured" if v.get("not measured") else "")
        + (f", {v['too few seeds']} without a verdict (too few seeds)" if v.get("too few seeds") else "")
        for p, v in t.items()
    )


def _null_cell(c: Claim) -> str:
    """The claim's null for a table cell: "null (kind): 0.905; 5–95%: 0.89–0.91; n = 20"."""
    b = c.baseline
    if b:
        return f"null ({b['kind']}): {b['mean']:.3g}; 5–95%: {b['q05']:.3g}–{b['q95']:.3g}; n = {b['n']}"
    if c.status == "not measured" or isinstance(c.value, bool) or not isinstance(c.value, (int, float)):
        return ""
    return "no null: the chapter says why"


def _label(chapter: str) -> str:
    return "scorecard-" + re.sub(r"[^a-z0-9-]+", "-", chapter.lower()).strip("-")


def scorecard_markdown(
    claims: Sequence[Claim],
    titles: Mapping[str, str] | None = None,
    across: Mapping[tuple[str, str], Sequence[SeedVerdict]] | None = None,
    *,
    recorded_runs: str = "",
    link_chapters: bool = True,
) -> str:
    """The Scorecard page: a summary per chapter, then one section per chapter.

    Parameters
    ----------
    claims
        The claims of this build, in chapter order (as ``_build/claims.json``).
    titles
        Chapter name -> title, for the headings (a chapter without one is headed by its name).
    across
        Per ``(chapter, claim id)``, how the claim fares in the recorded runs
        (:func:`seed_verdicts`). A chapter with a recorded claim gets an "Across seeds"
        column (its other claims say "not recorded"), and so does the summary; given but
        with no record at all, the page says that no claim is recorded yet.
    recorded_runs
        Markdown appended at the end (the "Recorded runs" section of
        :func:`featlearn.book.records.records_markdown`); its emoji marks become badges.
    link_chapters
        Link each section to its chapter's page (``{doc}`<chapter>```; the Scorecard and
        the chapters are in the same folder).

    Returns
    -------
    str
        MyST markdown. Verdicts are HTML badges (:func:`badge`) styled by
        ``_static/featlearn.css``: class ``fl-summary`` on the summary table (and
        ``fl-with-seeds`` when it has the across-seeds column), ``fl-claims``
        on each chapter's table, ``fl-id`` on each claim id.
    """
    titles = titles or {}
    t = _this_build(claims)
    lines = [
        "# Scorecard",
        "",
        "Every headline claim the chapters test, gathered by the build from the executed "
        "chapters. *Paper* is the published value, *ours* is what the chapter measured at "
        "the profile shown, and the verdict applies the rule stated next to each claim. "
        "A claim measured at the `fast` profile tests the paper's mechanism at small scale "
        "and on offline data; rerun the chapter at the `paper` profile for the paper's "
        "setting. The same rows are in `_build/claims.json`.",
        "",
    ]
    this_run = (
        f"{len(claims)} claims: {t['holds']} hold, {t['fails']} fail, "
        + (f"{t['matched by null']} matched by null, " if t["matched by null"] else "")
        + f"{t['not measured']} not measured"
    )
    tally = _across_tally(claims, across) if across is not None else {}
    if tally:  # the result leads; this build's one run follows as what it is
        lines += [
            f"**Across recorded seeds** (current records only): {_tally_text(tally)}.",
            "",
            f"This build's single run (one seed per chapter, not a result on its own): {this_run}.",
            "",
        ]
    else:
        lines += [f"**{this_run}.**", ""]
    lines += [
        "A claim whose value passes its rule but not its null (what a random, untrained or "
        "shuffled-label stand-in scores on the same metric, beside each value) is "
        f"{badge('matched by null')}: not a hold."
        + (
            " Across seeds, a claim that fails is matched by null when most of its failing seeds "
            "passed the rule but not the null."
            if tally
            else ""
        ),
        "",
    ]
    if not claims:
        lines.append("No chapter has recorded a claim yet.")
        return "\n".join(lines) + "\n" + (f"\n{font_safe(recorded_runs)}" if recorded_runs else "")

    chapters: dict[str, list[Claim]] = {}
    for c in claims:
        chapters.setdefault(c.chapter, []).append(c)

    recorded = across is not None and any(across.get((c.chapter, c.id)) for c in claims)
    header = ["Chapter", "Holds", "Matched by null", "Fails", "Not measured"]
    widths = [40, 12, 16, 12, 20]
    if recorded:  # the across-seed verdicts first; the counts are of this build's one run
        header = [
            "Chapter",
            "Across seeds",
            "Run: holds",
            "Run: matched by null",
            "Run: fails",
            "Run: not measured",
        ]
        widths = [24, 29, 12, 13, 9, 13]  # "Matched" and "measured" fit at 1280 px (site check)
    rows = []
    for ch, cs in chapters.items():
        tc = _this_build(cs)
        row = [
            f"{{ref}}`{_role_text(titles.get(ch, ch))} <{_label(ch)}>`",
            str(tc["holds"]),
            str(tc["matched by null"]),
            str(tc["fails"]),
            str(tc["not measured"]),
        ]
        if across is not None and recorded:
            ta = _across_tally(cs, across)
            stale = any(sv.stale for c in cs for sv in across.get((c.chapter, c.id), ()))
            text = "; ".join(
                f"`{p}`: " + ", ".join(_count(v[k], k) for k in _TALLIED if v.get(k)) for p, v in ta.items()
            )
            row.insert(1, text or ("stale record" if stale else "not recorded"))
        rows.append(row)
    cls = "fl-summary fl-with-seeds" if recorded else "fl-summary"
    lines += ["## Summary", "", _records.list_table(header, rows, cls, widths), ""]
    if across is not None and not recorded:
        lines += [
            "No claim has been recorded across seeds yet: each verdict below is one run at one "
            "seed, not a result on its own (`featlearn record <chapter> --profile fast --seeds 0-4`).",
            "",
        ]

    for ch, cs in chapters.items():
        tc = _this_build(cs)
        profiles = ", ".join(f"`{p}`" for p in dict.fromkeys(c.profile for c in cs))
        facts = [
            f"Profile {profiles}",
            ", ".join(
                _count(tc[k], k) for k in ("holds", "matched by null", "fails", "not measured") if tc[k]
            ),
        ]
        if link_chapters and ch in titles:
            facts.append(f"{{doc}}`read the chapter <{ch}>`")
        lines += [f"({_label(ch)})=", f"## {titles.get(ch, ch)}", "", " · ".join(facts) + ".", ""]
        header = ["Verdict", "Claim", "Paper", "Ours", "Rule"]
        widths = [15, 38, 13, 20, 14]
        with_across = across is not None and any(across.get((c.chapter, c.id)) for c in cs)
        if with_across:
            header.insert(4, "Across seeds")
            widths = [15, 25, 10, 17, 21, 12]  # the verdict column holds a "not measured" badge
        elif across is not None and recorded:
            lines += ["No claim of this chapter has been recorded across seeds yet.", ""]
        rows = []
        for c in cs:
            why = c.reason if c.reason and c.status != "matched by null" else ""
            verdict = badge(c.status) + (f" <small>({_text(why)})</small>" if why else "")
            claim = f"{_text(c.claim)} {_id(c.id)}"
            null = _null_cell(c)
            ours = _text(c.value) + (f"\n\n<small>{_text(null)}</small>" if null else "")
            row = [verdict, claim, _text(c.paper), ours, _rule(c.rule)]
            if across is not None and with_across:
                found = across.get((c.chapter, c.id))
                row.insert(4, "\n\n".join(sv.markdown() for sv in found) if found else "not recorded")
            rows.append(row)
        lines += [_records.list_table(header, rows, "fl-claims", widths), ""]
    text = "\n".join(lines) + "\n"
    if recorded_runs:
        text += "\n" + font_safe(recorded_runs)
    return text


#: A line of a staged page (the intro) that the build replaces by :func:`replication_summary_markdown`.
SUMMARY_PLACEHOLDER = "<!-- featlearn: replication summary -->"

#: The columns of the replication summary, and what an empty cell says.
_SUMMARY_PROFILES = {
    "fast": "not recorded yet",
    "full": "not recorded yet",
    "paper": "not run here (the paper's data and a GPU)",
}


def replication_summary_markdown(
    titles: Mapping[str, str],
    across: Mapping[tuple[str, str], Sequence[SeedVerdict]],
) -> str:
    """Per chapter and profile, how its claims fare across recorded seeds: the intro's summary.

    Why: a reader who opens the book wants to know first what replicates and at which
    scale; each cell counts the claims' across-seed verdicts in that profile's current
    record (a stale record says so; a profile without one says why).
    """
    rows = []
    for ch, title in titles.items():
        svs = [sv for (chapter, _), found in across.items() if chapter == ch for sv in found]
        tally = _tally(svs)
        stale = {sv.profile for sv in svs if sv.stale}
        seeds = {p: max(sv.n for sv in svs if sv.profile == p and not sv.stale) for p in tally}
        row = [f"{{doc}}`{_role_text(title)} <{ch}>`"]
        for p, empty in _SUMMARY_PROFILES.items():
            if p in tally and tally[p]["too few seeds"] == sum(tally[p].values()):
                row.append(f"{_records.n_seeds(seeds[p])} so far: no verdict yet")
            elif p in tally:
                row.append(", ".join(_count(n, k) for k, n in tally[p].items() if n))
            else:
                row.append("stale record" if p in stale else empty)
        rows.append(row)
    header = ["Chapter"] + [f"`{p}`" for p in _SUMMARY_PROFILES]
    return _records.list_table(header, rows, "fl-summary fl-replication", [28, 24, 24, 24]) + "\n"


def not_measured_markdown(
    claims: Sequence[Claim], across: Mapping[tuple[str, str], Sequence[SeedVerdict]] | None = None
) -> str:
    """One box with a table of a chapter's not-measured claims, and why each is not measured.

    Parameters
    ----------
    claims
        The chapter's claims whose status is ``"not measured"``.
    across
        :func:`seed_verdicts`; when a record covers one of these claims, the table gets an
        "Across seeds" column.
    """
    across = across or {}
    profiles = ", ".join(f"`{p}`" for p in dict.fromkeys(c.profile for c in claims))
    n = len(claims)
    header = ["Claim", "Paper", "Why not measured"]
    widths = [50, 16, 34]
    found = [across.get((c.chapter, c.id)) for c in claims]
    if any(found):
        header.append("Across seeds")
        widths = [38, 12, 28, 22]
    rows = []
    for c, lines in zip(claims, found):
        why = c.note or (
            f"The measured value was {_fmt(c.value)} ({c.reason})." if c.reason else "No reason given."
        )
        row = [f"{_text(c.claim)} {_id(c.id)}", _text(c.paper), _text(why)]
        if any(found):
            row.append("\n\n".join(sv.markdown() for sv in lines) if lines else "not recorded")
        rows.append(row)
    return "\n".join(
        [
            f"::::{{admonition}} {badge('not measured')} {n} claim{'s' if n != 1 else ''} at profile "
            f"{profiles}",
            ":class: fl-not-measured",
            "",
            "Recorded by this chapter but not measured in this run; the Scorecard lists them too.",
            "",
            _records.list_table(header, rows, "fl-claims fl-nm", widths),
            "::::",
            "",
        ]
    )
