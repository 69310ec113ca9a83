"""The Scorecard page and the claim boxes of chapter pages, from hand-made claims."""

from __future__ import annotations

import re

import nbformat
import pytest

from featlearn.book import records, runner
from featlearn.book import scorecard as sc
from featlearn.claims import CLAIM_MIME, Claim

TITLES = {"alpha": "Alpha: the first chapter", "beta": "Beta chapter"}


def _claim(chapter: str, cid: str, holds: bool | None, *, value=0.5, note="", reason="") -> Claim:
    return Claim(
        chapter=chapter,
        id=cid,
        claim=f"Claim {cid} of {chapter}.",
        paper="> 0.9",
        value=None if holds is None and not reason else value,
        holds=holds,
        profile="fast",
        rule="holds if value ≥ 0.9",
        note=note,
        reason=reason,
    )


CLAIMS = [
    _claim("alpha", "a-hold-1", True),
    _claim("alpha", "a-hold-2", True),
    _claim("alpha", "a-fail", False),
    _claim("alpha", "a-none", None, note="Needs pretrained weights."),
    _claim("beta", "b-hold", True),
    _claim("beta", "b-nan", None, value="nan", reason="non-finite"),
]

ACROSS = {
    ("alpha", "a-hold-1"): [sc.SeedVerdict("fast", 5, 5, "0.91 ± 0.03 (0.87 to 0.95)", "holds")],
    ("alpha", "a-fail"): [sc.SeedVerdict("fast", 5, 3, "0.8 ± 0.1 (0.7 to 0.95)", "unstable")],
    ("beta", "b-hold"): [
        sc.SeedVerdict("fast", 3, 3, "", "holds", stale="stale (made at abc1234; chapter changed)")
    ],
}

#: What no output may contain: the emoji marks and anything in the emoji planes.
EMOJI = re.compile("[\u2705\u274c\u26a0\u2b50\ufe0f\U0001f000-\U0001faff]")


def _tables(md: str, cls: str) -> list[list[list[str]]]:
    """The rows (header first) of every MyST list-table of class ``cls`` in ``md``, cells as text."""
    out = []
    for block in re.findall(r"```\{list-table\}\n(.*?)\n```", md, flags=re.S):
        opts = dict(re.findall(r"^:([\w-]+): (.*)$", block, flags=re.M))
        if cls not in opts.get("class", "").split():
            continue
        rows: list[list[str]] = []
        for line in block.splitlines():
            if line.startswith("* - "):
                rows.append([line[4:]])
            elif line.startswith("  - "):
                rows[-1].append(line[4:])
            elif line.startswith("    ") and rows:
                rows[-1][-1] += "\n" + line[4:]
        assert all(len(r) == len(rows[0]) for r in rows), f"ragged list-table: {rows}"
        assert opts.get("widths") and len(opts["widths"].split()) == len(rows[0])
        out.append(rows)
    return out


def _sections(md: str) -> list[str]:
    return re.findall(r"^## (.*)$", md, flags=re.M)


def test_one_section_per_chapter_verdict_first_id_small():
    md = sc.scorecard_markdown(CLAIMS, TITLES, ACROSS)
    assert _sections(md) == ["Summary", TITLES["alpha"], TITLES["beta"]]
    assert "(scorecard-alpha)=\n## Alpha" in md and "{doc}`read the chapter <alpha>`" in md
    tables = _tables(md, "fl-claims")
    assert len(tables) == 2  # one per chapter, no chapter column
    for table, chapter in zip(tables, ("alpha", "beta")):
        header, *rows = table
        assert header == ["Verdict", "Claim", "Paper", "Ours", "Across seeds", "Rule"]
        mine = [c for c in CLAIMS if c.chapter == chapter]
        assert len(rows) == len(mine)
        for row, c in zip(rows, mine):
            assert row[0].startswith(
                f'<span class="fl-verdict {sc.VERDICT_CLASS[c.status]}">{c.status}</span>'
            )
            assert row[1].endswith(f'<span class="fl-id">{c.id}</span>')
            assert row[2] == "\\> 0.9"  # escaped: not a block quote
            assert row[5] == "value ≥ 0.9"
    assert "(non-finite)" in tables[1][2][0] and tables[1][2][3] == "nan"
    assert "| Chapter |" not in md and "Chapter" not in tables[0][0]


def test_summary_counts_by_chapter_and_across_seeds():
    md = sc.scorecard_markdown(CLAIMS, TITLES, ACROSS)
    # current records only: a-hold-1 holds, a-fail unstable; b-hold's record is stale
    lead = "**Across recorded seeds** (current records only): `fast`: 1 hold, 0 fail, 1 unstable."
    single = "This build's single run (one seed per chapter, not a result on its own): 6 claims: 3 hold"
    assert lead in md and single in md and md.index(lead) < md.index(single)  # the result leads
    assert "**6 claims" not in md  # the single run is not set in bold as if it were the result
    ((header, alpha, beta),) = _tables(md, "fl-summary")
    assert header == [
        "Chapter",
        "Across seeds",
        "Run: holds",
        "Run: matched by null",
        "Run: fails",
        "Run: not measured",
    ]
    assert alpha == [
        "{ref}`Alpha: the first chapter <scorecard-alpha>`",
        "`fast`: 1 holds, 1 unstable",
        "2",
        "0",
        "1",
        "1",
    ]
    assert beta == ["{ref}`Beta chapter <scorecard-beta>`", "stale record", "1", "0", "0", "1"]
    # no records: this run's counts lead, in bold
    assert "**6 claims: 3 hold, 1 fail, 2 not measured.**" in sc.scorecard_markdown(CLAIMS, TITLES)


def test_across_seeds_column_filled_or_not_recorded():
    md = sc.scorecard_markdown(CLAIMS, TITLES, ACROSS)
    alpha, beta = (t[1:] for t in _tables(md, "fl-claims"))
    col = {row[1].rsplit(">", 2)[-2].split("<")[0]: row[4] for row in alpha + beta}
    assert col["a-hold-1"] == (f"{sc.badge('holds')} `fast`, 5 seeds: 0.91 ± 0.03 (0.87 to 0.95), 5/5 hold")
    assert col["a-fail"].startswith(sc.badge("unstable")) and "3/5 hold" in col["a-fail"]
    assert col["b-hold"].startswith(sc.badge("stale")) and "no current verdict" in col["b-hold"]
    assert "hold" not in col["b-hold"].split("</span>", 1)[1]  # no counts from older code
    assert sc.badge("holds") not in col["b-hold"]  # a stale record's verdict is never current
    assert col["a-hold-2"] == col["a-none"] == col["b-nan"] == "not recorded"
    # a chapter no record covers gets no column but a sentence; no record at all: the page says so
    only_alpha = {k: v for k, v in ACROSS.items() if k[0] == "alpha"}
    md = sc.scorecard_markdown(CLAIMS, TITLES, only_alpha)
    assert [t[0][4] if len(t[0]) == 6 else None for t in _tables(md, "fl-claims")] == ["Across seeds", None]
    assert md.count("No claim of this chapter has been recorded across seeds yet.") == 1
    assert md.index("## Beta chapter") < md.index("No claim of this chapter has been recorded")
    assert _tables(md, "fl-summary")[0][2][1] == "not recorded"
    none = sc.scorecard_markdown(CLAIMS, TITLES, {})
    assert "No claim has been recorded across seeds yet" in none and "Across seeds" not in none
    # without records information: no column, no tally line
    plain = sc.scorecard_markdown(CLAIMS, TITLES)
    assert "Across seeds" not in plain and "Across recorded seeds" not in plain
    assert _tables(plain, "fl-claims")[0][0] == ["Verdict", "Claim", "Paper", "Ours", "Rule"]


def test_no_emoji_anywhere_and_badges_replace_marks():
    recorded = "## Recorded runs\n\n| `a`: claim | `fast`, 5 seeds | ✅ holds |\n| `b` | x | ❌ fails |\n| `c` | y | ⚠️ unstable |\n"
    md = sc.scorecard_markdown(CLAIMS, TITLES, ACROSS, recorded_runs=recorded)
    assert not EMOJI.search(md), EMOJI.findall(md)
    assert md.endswith(f"| `c` | y | {sc.badge('unstable')} |\n")
    assert md.index("## Beta chapter") < md.index("## Recorded runs")
    assert sc.font_safe("Claim `x`: ⚠️ not measured (non-finite)") == (
        f"Claim `x`: {sc.badge('not measured')} (non-finite)"
    )
    assert not EMOJI.search(sc.font_safe("odd ✅ and ⚠️ marks ❌"))
    assert not EMOJI.search(sc.scorecard_markdown([], TITLES, {}))


def _output(c: Claim) -> nbformat.NotebookNode:
    return nbformat.v4.new_output(
        "display_data", data={"text/markdown": c.markdown(), "text/plain": repr(c), CLAIM_MIME: c.to_dict()}
    )


def _chapter_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    alpha = [c for c in CLAIMS if c.chapter == "alpha"]
    extra = [_claim("alpha", f"a-none-{k}", None, note=f"Reason {k}.") for k in range(3)]
    one = nbformat.v4.new_code_cell("record a few")
    one.outputs = [_output(c) for c in alpha]  # holds, holds, fails, not measured
    loop = nbformat.v4.new_code_cell("for k in range(3): record(...)")
    loop.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")] + [
        _output(c) for c in extra
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Alpha"), one, loop]
    return nb


def test_claim_boxes_font_safe_and_not_measured_collapsed_to_one_table():
    nb = _chapter_notebook()
    rec_lines = {("alpha", "a-hold-1"): [sc.SeedVerdict("fast", 5, 5, "0.91 ± 0.03 (0.87 to 0.95)", "holds")]}
    before = [o for c in nb.cells for o in c.get("outputs", []) if CLAIM_MIME in o.get("data", {})]
    assert sum("⚠️ not measured" in o.data["text/markdown"] for o in before) == 4  # four orange boxes

    records.annotate_claims(nb, "alpha", rec_lines)
    outs = [o for c in nb.cells for o in c.get("outputs", [])]
    mds = [o.data["text/markdown"] for o in outs if "text/markdown" in o.get("data", {})]
    assert len(mds) == 4  # 3 boxes of measured claims + 1 table for the 4 not measured
    assert not any(EMOJI.search(m) for m in mds)
    assert [o.output_type for o in nb.cells[2].outputs] == ["stream"]  # the loop's boxes are gone

    boxes, (table_md,) = mds[:3], mds[3:]
    assert boxes[0].startswith(f":::{{admonition}} Claim `a-hold-1`: {sc.badge('holds')}")
    assert (
        f"Across seeds: {sc.badge('holds')} `fast`, 5 seeds: 0.91 ± 0.03 (0.87 to 0.95), 5/5 hold."
        in boxes[0]
    )
    assert boxes[2].startswith(f":::{{admonition}} Claim `a-fail`: {sc.badge('fails')}")
    assert "Across seeds: not recorded yet" in boxes[1]

    assert table_md.startswith(f"::::{{admonition}} {sc.badge('not measured')} 4 claims at profile `fast`")
    ((header, *rows),) = _tables(table_md, "fl-nm")
    assert header == ["Claim", "Paper", "Why not measured"]
    ids = [re.search(r'fl-id">(.*?)<', r[0]).group(1) for r in rows]
    assert ids == ["a-none", "a-none-0", "a-none-1", "a-none-2"]
    assert [r[2] for r in rows] == [
        "Needs pretrained weights.",
        "Reason 0.",
        "Reason 1.",
        "Reason 2.",
    ]
    assert "Across seeds" not in table_md  # no record covers them


def test_not_measured_table_says_why_for_non_finite_and_shows_records():
    c = _claim("beta", "b-nan", None, value="nan", reason="non-finite")
    md = sc.not_measured_markdown([c], {("beta", "b-nan"): [sc.SeedVerdict("paper", 3, 3, "", "holds")]})
    ((header, row),) = _tables(md, "fl-nm")
    assert header[-1] == "Across seeds" and row[2] == "The measured value was nan (non-finite)."
    assert row[3] == f"{sc.badge('holds')} `paper`, 3 seeds: 3/3 hold"
    assert "1 claim at profile" in md and not EMOJI.search(md)


def test_seed_verdicts_count_holds_and_mark_stale_records(tmp_path):
    rec = records.Record(
        chapter="alpha",
        profile="fast",
        path=tmp_path,
        by_seed={s: [_claim("alpha", "a-hold-1", s != 2, value=0.9 + s / 100)] for s in range(5)},
        provenance={"commit": "abc1234", "chapter_hash": "h", "library_hash": "L"},
    )
    current = records.CurrentState(library_hash="L", chapter_hashes={"alpha": "h"})
    ((sv,),) = sc.seed_verdicts([rec], current).values()
    assert (sv.n, sv.holds, sv.verdict, sv.stale) == (5, 4, "holds", "")
    assert sv.describe() == "`fast`, 5 seeds: 0.920 ± 0.016 (0.9 to 0.94), 4/5 hold"
    assert sv.describe(profile=False) == "5 seeds: 0.920 ± 0.016 (0.9 to 0.94), 4/5 hold"
    stale = records.CurrentState(library_hash="other", chapter_hashes={"alpha": "h"})
    ((sv,),) = sc.seed_verdicts([rec], stale).values()
    assert sv.stale.startswith("stale (made at abc1234; library changed")


@pytest.mark.parametrize("text", ["> 0.9", "- a", "1. b", "a | b", "*x* $y$ <b> {ref}`z`", "`c`_"])
def test_cells_are_escaped_plain_text(text):
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render(sc._text(text))
    assert html.startswith("<p>") and html.count("<") == 2 and "<br" not in html, html


def test_scorecard_module_is_pipeline_only():
    assert "scorecard.py" in runner._PIPELINE_ONLY


def test_build_stages_css_scorecard_sections_and_font_safe_boxes(fixture_book):
    (fixture_book / "_static" / "sub").mkdir(parents=True, exist_ok=True)
    (fixture_book / "_static" / "sub" / "test-only.css").write_text(".fl-verdict { color: red; }\n")
    out = runner.build(fixture_book, profile="tiny", progress=False, html=False)
    stage = out / "stage"
    assert (stage / "_static" / "sub" / "test-only.css").read_text() == ".fl-verdict { color: red; }\n"
    md = (stage / "book" / "scorecard.md").read_text()
    assert _sections(md) == ["Summary", "A fixture chapter", "Recorded runs"]
    ((_, row),) = _tables(md, "fl-summary")
    assert row[1:] == ["1", "1", "1", "0"] and "No claim has been recorded across seeds yet" in md
    ((_, *rows),) = _tables(md, "fl-claims")
    assert [r[0] for r in rows] == [sc.badge("holds"), sc.badge("fails"), sc.badge("matched by null")]
    page = (stage / "book" / "fixture.ipynb").read_text()
    assert not EMOJI.search(md) and not EMOJI.search(page)
    assert page.count('class=\\"fl-verdict ') == 3 and CLAIM_MIME not in page


def test_replication_summary_counts_each_profile_and_says_what_is_missing():
    across = dict(ACROSS)
    across[("alpha", "a-hold-2")] = [
        sc.SeedVerdict("fast", 5, 0, "", "fails"),
        sc.SeedVerdict("full", 1, 1, "0.95", "too few seeds"),
    ]
    ((header, alpha, beta),) = _tables(sc.replication_summary_markdown(TITLES, across), "fl-summary")
    assert header == ["Chapter", "`fast`", "`full`", "`paper`"]
    assert alpha == [
        "{doc}`Alpha: the first chapter <alpha>`",
        "1 holds, 1 fails, 1 unstable",
        "1 seed so far: no verdict yet",
        "not run here (the paper's data and a GPU)",
    ]
    # a stale record gives no counts, and says so
    assert beta[1:3] == ["stale record", "not recorded yet"]
