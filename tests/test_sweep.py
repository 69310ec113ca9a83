"""Sweeps and records on the fixture book: Dask clusters, resume, failures, summaries, scorecard."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import socket
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import FIXTURE_BOOK
from featlearn.book import records as rec
from featlearn.book import runner
from featlearn.book import scorecard as sc
from featlearn.book.cli import main as cli
from featlearn.book.notebooks import ParameterError
from featlearn.book.runner import Book, BuildError
from featlearn.book.scorecard import badge
from featlearn.book.sweep import (
    SEED_VERDICT_RULE,
    _load_finished,
    connect,
    parse_grid,
    parse_seeds,
    plan_points,
    seed_verdict,
    sweep,
)
from featlearn.claims import Claim

# Keys hash the library; pin it so that a library file edited during the test run does
# not turn a resume into a rerun.
PINNED_LIB = "pinned-library-hash"
REAL_LIBRARY_HASH = runner._library_hash


# --------------------------------------------------------------------------- no cluster


@pytest.mark.parametrize(
    "n, holds, fails",
    [
        (3, {3}, {0}),
        (5, {4, 5}, {0, 1}),
        (10, {8, 9, 10}, {0, 1, 2}),
        (35, set(range(28, 36)), set(range(0, 8))),  # 0.8 * 35 = 28.000000000000004 in floats
    ],
)
def test_seed_verdict_boundaries(n, holds, fails):
    for k in range(n + 1):
        expected = "holds" if k in holds else "fails" if k in fails else "unstable"
        assert seed_verdict(k, n) == expected, (k, n)
        assert expected == (
            "holds"
            if k >= math.ceil(0.8 * n - 1e-9)
            else "fails"
            if k <= math.floor(0.2 * n + 1e-9)
            else "unstable"
        )
    assert [seed_verdict(k, 5) for k in (1, 2, 3, 4)] == ["fails", "unstable", "unstable", "holds"]
    for k, m in ((0, 1), (1, 1), (0, 2), (2, 2)):  # one or two seeds are not a result
        assert seed_verdict(k, m) == "too few seeds"
    with pytest.raises(ValueError):
        seed_verdict(0, 0)
    with pytest.raises(ValueError):
        seed_verdict(n + 1, n)


def test_parse_seeds_and_grid():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,5") == [0, 2, 5]
    assert parse_seeds("0-1, 7") == [0, 1, 7]
    for bad in ("", "a", "3-1", "0,0", "-1"):
        with pytest.raises(ParameterError):
            parse_seeds(bad)
    assert parse_grid(["n=8,16", "device=cpu", "sizes=[8,16],[32]", "flag=true,false"]) == {
        "n": [8, 16],
        "device": ["cpu"],
        "sizes": [[8, 16], [32]],
        "flag": [True, False],
    }
    for bad, msg in [
        (["seed=1,2"], "--seeds"),
        (["profile=fast"], "--profile"),
        (["n=1", "n=2"], "given twice"),
        (["n=1,,2"], "empty value"),
        (["n"], "key=value"),
    ]:
        with pytest.raises(ParameterError, match=msg):
            parse_grid(bad)


def test_every_grid_point_is_checked_before_anything_runs(fixture_book, capsys):
    for args, expected in [
        (["nope"], "unknown chapter 'nope'; chapters: fixture"),
        (["fixture", "--profile", "tiny,huge"], "unknown profile 'huge'"),
        (["fixture", "nn=1,2"], "unknown parameter 'nn'"),
        (["fixture", "n=8,lots"], "'n' expects int, got str 'lots'"),
        (["fixture", "--seeds", "2-1"], "range '2-1' is empty"),
        (["fixture", "seed=1"], "--seeds"),
    ]:
        assert cli(["--root", str(fixture_book), "sweep", "--no-progress", *args]) == 2, args
        assert expected in capsys.readouterr().err, args
    assert not (fixture_book / "_build").exists()  # nothing ran, no cluster started

    points = plan_points(Book(fixture_book), "fixture", ["tiny", "fast"], [0, 3], {"n": [8, 16]})
    assert len(points) == 8 and len({p.key for p in points}) == 8
    assert points[0].notebook_name == "fixture-tiny-n-8-seed0.ipynb"
    assert {p.notebook_name for p in points} >= {"fixture-fast-n-16-seed3.ipynb"}
    with pytest.raises(ParameterError, match="same point twice"):
        plan_points(Book(fixture_book), "fixture", ["tiny"], [0], {"scale": [1, 1.0]})


def test_unreachable_scheduler_is_a_clear_error_within_seconds():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.time()
    with pytest.raises(BuildError) as err:
        connect(address, timeout=2)
    assert time.time() - t0 < 15
    assert f"no Dask scheduler answered at {address} within 2 s" in str(err.value)
    assert "dask scheduler" in str(err.value)


def _claim(cid, value, holds, chapter="ch"):
    return Claim(chapter, cid, f"claim {cid}", None, value, holds, "fast", "holds if value ≥ 1")


def test_records_markdown_statistics_and_stale_marking(tmp_path):
    by_seed = {
        s: [
            _claim("a", float(s), s >= 1),
            _claim("b", [True, True, False, True, True][s], None),
            _claim("c", math.nan, False),
        ]
        for s in range(5)
    }
    prov = {
        "chapter": "ch",
        "profile": "fast",
        "seeds": list(range(5)),
        "commit": "abc1234",
        "chapter_hash": "h1",
    }
    prov |= {"library_hash": "L1", "title": "A chapter", "recorded": "2026-12-01 10:00 UTC"}
    r = rec.Record("ch", "fast", tmp_path, by_seed, prov)
    current = rec.CurrentState("L1", {"ch": "h1"}, {"ch": "A chapter"})
    md = rec.records_markdown([r], current)
    assert "### A chapter (`ch`, `fast`)" in md and "seeds 0–4" in md and "commit `abc1234`" in md
    row = '* - claim {} <span class="fl-id">{}</span>\n  - `fast`, 5 seeds: {}\n  - {}'
    assert row.format("a", "a", "2.0 ± 1.6, 4/5 hold", "✅ holds") in md  # the sd to 2 digits
    # holds=None in every seed: "not measured", never "fails" (bools: no mean either)
    assert row.format("b", "b", "not measured in any seed", "⚠️ not measured") in md
    # the Scorecard's tally, over one build's claims (seed 0's, as a build gathers them)
    assert sc._across_tally(r.by_seed[0], sc.seed_verdicts([r], current)) == {
        "fast": {
            "holds": 1,
            "fails": 1,
            "unstable": 0,
            "matched by null": 0,
            "not measured": 1,
            "too few seeds": 0,
        }
    }
    assert row.format("c", "c", "0/5 hold", "❌ fails") in md  # NaN: no statistics
    assert ":class: fl-claims fl-rec" in md  # fitted to the column by _static/featlearn.css
    assert "stale" not in md.split("### ")[1]
    for cur, reason in [
        (rec.CurrentState("L2", {"ch": "h1"}), "library changed"),
        (rec.CurrentState("L1", {}), "chapter changed"),
        (rec.CurrentState("L2", {"ch": "h2"}), "chapter changed / library changed"),
    ]:
        md = rec.records_markdown([r], cur)
        assert f"stale (made at abc1234; {reason})" in md
        assert "✅ holds" not in md and "❌ fails" not in md and "stale (was: holds)" in md
    assert rec.records_markdown([], current).count("No chapter has been recorded yet") == 1


def test_a_claim_matched_by_its_null_in_most_seeds_is_matched_across_seeds(tmp_path):
    def seed_claims(s):
        holds, reason = (True, "") if s == 0 else (False, "matched by null" if s < 4 else "")
        return [Claim("ch", "m", "claim m", None, 0.9, holds, "fast", "holds if value ≥ 0.5", reason=reason)]

    prov = {"chapter": "ch", "profile": "fast", "seeds": list(range(5)), "commit": "abc1234"}
    prov |= {"chapter_hash": "h1", "library_hash": "L1"}
    r = rec.Record("ch", "fast", tmp_path, {s: seed_claims(s) for s in range(5)}, prov)
    current = rec.CurrentState("L1", {"ch": "h1"})
    (s,) = r.summary()
    assert (s["holds"], s["matched"], s["verdict"]) == (1, 3, "matched by null")
    md = rec.records_markdown([r], current)
    assert "1/5 hold (3 matched by null)" in md and "🟰 matched by null" in md
    tally = sc._across_tally(r.by_seed[0], sc.seed_verdicts([r], current))
    assert tally["fast"] == {
        "holds": 0,
        "fails": 0,
        "unstable": 0,
        "matched by null": 1,
        "not measured": 0,
        "too few seeds": 0,
    }


# --------------------------------------------------------------------------- clusters


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep of the fixture on a local cluster of 2 workers: 2 seeds × n ∈ {8, 16}."""
    book = tmp_path_factory.mktemp("sweep") / "book"
    shutil.copytree(FIXTURE_BOOK, book, ignore=shutil.ignore_patterns("_build"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "_library_hash", lambda **_: PINNED_LIB)
        out = book / "_build" / "sweep-a"
        report = sweep(
            book, "fixture", profiles=["tiny"], seeds=[0, 1], grid={"n": [8, 16]}, out_dir=out, progress=False
        )
        yield book, out, report


@pytest.fixture
def pinned(monkeypatch):
    monkeypatch.setattr(runner, "_library_hash", lambda **_: PINNED_LIB)


@pytest.mark.slow
def test_local_cluster_sweep_writes_runs_claims_and_summary(swept):
    book, out, report = swept
    assert report.ok and report.executed == 4 and report.reused == 0, report.failures
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == [f"fixture-tiny-n-{n}-seed{s}.ipynb" for n in (16, 8) for s in (0, 1)]
    assert len(list((out / "points").glob("*.json"))) == 4

    point = json.loads(next((out / "points").glob("*.json")).read_text())
    assert point["wall_s"] > 0 and point["peak_rss_mb"] > 10 and point["threads"] == 1
    assert point["env"]["threads"] == 1  # torch in the kernel saw threads-per-worker

    df = pd.read_csv(out / "claims.csv")
    assert list(df.columns) == [
        "chapter",
        "profile",
        "seed",
        "params",
        "claim",
        "value",
        "verdict",
        "holds",
        "key",
    ]
    assert len(df) == 12 and set(df["claim"]) == {"mean-small", "always-fails", "matched"}
    assert set(df[df.claim == "matched"]["verdict"]) == {"matched by null"}  # as the page says
    assert set(df["params"]) == {'{"n": 8}', '{"n": 16}'}
    assert df.groupby("params")["seed"].nunique().to_dict() == {'{"n": 16}': 2, '{"n": 8}': 2}

    # the summary's statistics, computed by hand from claims.csv
    md = (out / "summary.md").read_text()
    assert SEED_VERDICT_RULE in md
    for (params, claim), g in df.groupby(["params", "claim"]):
        v = g["value"].astype(float)
        k = int(g["holds"].sum())
        verdict = (
            "too few seeds"  # two seeds per point: no across-seed verdict
            if len(g) < 3
            else "holds"
            if k >= math.ceil(0.8 * len(g))
            else "fails"
            if k <= math.floor(0.2 * len(g))
            else "unstable"
        )
        sd = "—" if math.isnan(v.std()) else f"{v.std():.4g}"
        row = (
            f"| fixture | `tiny` | `{params}` | `{claim}` | {v.mean():.4g} | {sd} | {v.min():.4g} | "
            f"{v.max():.4g} | {len(g)} | {k}/{len(g)} | {verdict} |"
        )
        assert row in md, row
    assert "| `always-fails` | 0 | 0 | 0 | 0 | 2 | 0/2 | too few seeds |" in md
    assert (out / "summary.png").stat().st_size > 1000


@pytest.mark.slow
def test_resume_skips_finished_points(swept, pinned):
    book, out, first = swept
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    csv = (out / "claims.csv").read_text()
    t0 = time.time()
    again = sweep(
        book, "fixture", profiles=["tiny"], seeds=[0, 1], grid={"n": [8, 16]}, out_dir=out, progress=False
    )
    assert again.executed == 0 and again.reused == 4 and again.ok
    assert time.time() - t0 < 20  # no cluster was started
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == before
    assert (out / "claims.csv").read_text() == csv
    # a point whose notebook went missing is not finished
    (out / "runs" / "fixture-tiny-n-8-seed1.ipynb").rename(out / "moved.ipynb")
    missing = [p for p in again.points if p.notebook_name == "fixture-tiny-n-8-seed1.ipynb"]
    assert _load_finished(out, missing[0]) is None
    (out / "moved.ipynb").rename(out / "runs" / "fixture-tiny-n-8-seed1.ipynb")


@pytest.mark.slow
def test_failing_point_on_a_scheduler_started_by_hand(swept, pinned, capsys):
    """A sweep against an external scheduler; one point raises, the other still finishes."""
    from distributed import LocalCluster

    book, _, _ = swept
    out = book / "_build" / "sweep-b"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        args = ["--root", str(book), "sweep", "fixture", "--profile", "tiny", "--seeds", "0"]
        args += [
            "--scheduler",
            cluster.scheduler_address,
            "-o",
            str(out),
            "--no-progress",
            "fail_at_end=false,true",
        ]
        assert cli(args) == 1
    err = capsys.readouterr().err
    assert "1 point(s) failed" in err
    assert "chapter 'fixture' (profile 'tiny', seed=0, fail_at_end=True) failed" in err
    assert "code cell 6 [if fail_at_end:]" in err and "RuntimeError: asked to fail" in err
    assert [p.name for p in (out / "runs").iterdir()] == ["fixture-tiny-fail_at_end-false-seed0.ipynb"]
    assert len(list((out / "points").glob("*.json"))) == 1  # the failed point reruns next time
    md = (out / "summary.md").read_text()
    assert "## Failed points" in md and "fail_at_end=True" in md
    assert len(pd.read_csv(out / "claims.csv")) == 3  # one seed, three claims


@pytest.mark.slow
def test_record_round_trip_and_stale_marking(swept, pinned, capsys, tmp_path):
    book, out, report = swept
    # `featlearn record` runs in _build/sweeps/record-tiny; the sweep's n=8 points are the
    # same points (same chapter, parameters, profile, library), so nothing runs again.
    work = book / "_build" / "sweeps" / "record-tiny"
    shutil.copytree(out / "points", work / "points")
    shutil.copytree(out / "runs", work / "runs")
    assert cli(["--root", str(book), "record", "fixture", "--profile", "tiny", "--seeds", "0-1"]) == 0
    assert "recorded" in capsys.readouterr().out
    folder = book / "records" / "tiny" / "fixture"
    assert sorted(p.name for p in folder.iterdir()) == ["claims.json", "fixture.ipynb", "provenance.json"]

    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["seeds"] == [0, 1] and prov["library_hash"] == PINNED_LIB
    assert prov["parameters"]["n"] == 8 and "seed" not in prov["parameters"]
    assert prov["machine"]["torch_threads"] == 1 and prov["machine"]["torch"]
    assert [r["seed"] for r in prov["runs"]] == [0, 1] and all(r["wall_s"] > 0 for r in prov["runs"])
    first = next(p for p in report.points if p.swept == {"n": 8} and p.seed == 0)
    assert (folder / "fixture.ipynb").read_text() == (out / "runs" / first.notebook_name).read_text()

    # write -> load -> the same claims
    (loaded,) = rec.load_records(book / "records")
    assert (loaded.chapter, loaded.profile, loaded.seeds) == ("fixture", "tiny", [0, 1])
    for seed in (0, 1):
        p = next(p for p in report.points if p.swept == {"n": 8} and p.seed == seed)
        assert loaded.by_seed[seed] == [Claim(**c) for c in report.results[p.key]["claims"]]

    current = rec.current_state(Book(book).chapters(), PINNED_LIB)
    assert not loaded.staleness(current)
    md = rec.records_markdown([loaded], current)
    assert "## Recorded runs" in md and "stale (" not in md and "{warning}" not in md
    mean_small = [c.value for c in loaded.claims if c.id == "mean-small"]
    m, sd = pd.Series(mean_small).mean(), pd.Series(mean_small).std()
    places = max(0, 1 - math.floor(math.log10(sd)))  # the sd to 2 significant digits, the mean alike
    assert f"`tiny`, 2 seeds: {m:.{places}f} ± {sd:.{places}f}, 2/2 hold" in md
    # two seeds give no across-seed verdict, whatever they say
    assert "0/2 hold\n  - ⚠️ too few seeds\n" in md and "2/2 hold\n  - ⚠️ too few seeds\n" in md
    assert "✅ holds" not in md and "❌ fails" not in md

    # the build shows the record beside its own run: a Scorecard column and each claim box
    out_dir = runner.build(book, profile="tiny", progress=False, html=False)
    scorecard = (out_dir / "stage" / "book" / "scorecard.md").read_text()
    assert "  - Across seeds\n" in scorecard and "## Recorded runs" in scorecard
    assert "**Across recorded seeds** (current records only): `tiny`:" in scorecard
    # the claim's row (a list-table: claim, paper, ours, then across seeds) shows the record's verdict
    row = scorecard[scorecard.index('<span class="fl-id">mean-small</span>') :].splitlines()
    across = next(line for line in row[1:8] if line.startswith('  - <span class="fl-verdict'))
    assert across.startswith(f"  - {badge('too few seeds')} `tiny`, 2 seeds: ") and across.endswith(
        " 2/2 hold"
    ), row
    chapter_page = (out_dir / "stage" / "book" / "fixture.ipynb").read_text()
    # after a badge: once in each claim box; the "across profiles" table's column names the profile
    assert chapter_page.count("</span> `tiny`, 2 seeds:") == len(loaded.summary())
    assert chapter_page.count("</span> 2 seeds:") == len(loaded.summary())
    assert chapter_page.count("Across seeds: <span class=") == len(loaded.summary())
    assert "book/records/tiny-fixture" in (out_dir / "stage" / "_toc.yml").read_text()
    # the chapter's "across profiles" cell: its claims per recorded profile, and what is not recorded
    staged = json.loads(chapter_page)
    (section,) = [c for c in staged["cells"] if "class: fl-claims fl-prof" in "".join(c["source"])]
    text = "".join(section["source"])
    assert rec.RECORDS_PLACEHOLDER not in chapter_page
    assert "{doc}`tiny <records/tiny-fixture>`" in text and "* - Claim\n  - `tiny`" in text
    assert text.count('<span class="fl-id">') == len(loaded.summary())
    assert f"{badge('too few seeds')} 2 seeds:" in text and "`tiny`, 2 seeds" not in text
    assert "No `fast` record yet: `featlearn record fixture --profile fast --seeds 0-4`" in text

    # prose edits keep the record current; a code edit makes it stale, naming the commit
    reworded = tmp_path / "reworded"
    shutil.copytree(book, reworded, ignore=shutil.ignore_patterns("_build", "records"))
    with open(reworded / "book" / "fixture.md", "a") as fh:
        fh.write("\nOne more sentence.\n")
    assert not loaded.staleness(rec.current_state(Book(reworded).chapters(), PINNED_LIB))
    # a record covers its own profile: adding or editing another one keeps it current...
    other = tmp_path / "other-profile"
    shutil.copytree(book, other, ignore=shutil.ignore_patterns("_build", "records"))
    text = (other / "book" / "fixture.md").read_text()
    (other / "book" / "fixture.md").write_text(
        text.replace("    paper:\n      n: 1000\n", "    paper:\n      n: 999\n    full:\n      n: 500\n")
    )
    assert (other / "book" / "fixture.md").read_text() != text
    with_full = rec.current_state(Book(other).chapters(), PINNED_LIB)
    assert loaded.provenance["chapter_hash_scope"] == "computation" and not loaded.staleness(with_full)
    assert loaded.provenance["library_hash_scope"] == "computation"
    # a record whose library hash counted drawing modules compares with the hash that does
    drawn = dataclasses.replace(
        loaded,
        provenance={
            **loaded.provenance,
            "library_hash_scope": "imports",
            "library_hash": current.chapter_library_hashes_with_presentation["fixture"],
        },
    )
    assert not drawn.staleness(current)
    assert drawn.staleness(
        dataclasses.replace(current, chapter_library_hashes_with_presentation={})
    ).library_changed
    assert {"claims.py", "book/page.py"} <= set(loaded.provenance["library_modules"])
    assert "rfm.py" not in loaded.provenance["library_modules"]  # the fixture never imports it
    # ...while a record made before hashes covered one profile compares the whole front matter
    legacy = dataclasses.replace(
        loaded,
        provenance={
            **loaded.provenance,
            "chapter_hash_scope": None,
            "chapter_hash": current.chapter_hashes["fixture"],
        },
    )
    assert not legacy.staleness(current) and legacy.staleness(with_full).chapter_changed
    # ...and one made before hashes left out presentation cells compares every code cell of its profile
    per_profile = dataclasses.replace(
        loaded,
        provenance={
            **loaded.provenance,
            "chapter_hash_scope": "profile",
            "chapter_hash": current.chapter_hashes["fixture@tiny"],
        },
    )
    assert per_profile.hash_key == "fixture@tiny" and not per_profile.staleness(with_full)
    edited = tmp_path / "edited"
    shutil.copytree(book, edited, ignore=shutil.ignore_patterns("_build", "records"))
    with open(edited / "book" / "fixture.md", "a") as fh:
        fh.write("\n```{code-cell} ipython3\nextra = 1\n```\n")
    now = rec.current_state(Book(edited).chapters(), PINNED_LIB)
    st = loaded.staleness(now)
    assert st.chapter_changed and not st.library_changed and st.commit == loaded.commit
    md = rec.records_markdown([loaded], now)
    assert f"stale (made at {loaded.commit}; chapter changed)" in md
    assert "⚠️ too few seeds" not in md and "stale (was: too few seeds)" in md
    lib_changed = loaded.stale("another-library", now.chapter_hashes["fixture"]).describe()
    assert lib_changed == f"stale (made at {loaded.commit}; chapter changed / library changed)"

    # each record staged as a page of its own
    stage = tmp_path / "stage"
    entries = rec.stage_record_pages([loaded], stage, now)
    assert entries == [{"file": "book/records/index", "sections": [{"file": "book/records/tiny-fixture"}]}]
    page = (stage / "book" / "records" / "tiny-fixture.ipynb").read_text()
    assert "# Recorded: A fixture chapter" in page and "chapter changed" in page
    assert "application/vnd.featlearn" not in page and "image/png" in page
    assert "{doc}`introduction <../intro>`" in page  # one folder below its chapter
    (stage / "_toc.yml").write_text((book / "_toc.yml").read_text())
    rec.add_toc_entries(stage / "_toc.yml", entries)
    assert "book/records/tiny-fixture" in (stage / "_toc.yml").read_text()


def test_chapter_hash_follows_code_not_prose():
    """Editing a chapter's prose keeps its records current; editing code or profiles does not."""
    from featlearn.book.sweep import text_hash

    text = (FIXTURE_BOOK / "book" / "fixture.md").read_text(encoding="utf-8")
    prose = text.replace("\n# ", "\n# Retitled: ", 1)
    assert prose != text and text_hash(prose) == text_hash(text)
    lines = text.splitlines(keepends=True)
    fence = next(i for i, line in enumerate(lines) if line.startswith("```{code-cell}"))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
    code = "".join(lines[:end] + ["extra_line = 1\n"] + lines[end:])
    assert text_hash(code) != text_hash(text)
    profile = text.replace("profiles:\n", "profiles:\n    extra: {}\n", 1)
    assert profile != text and text_hash(profile) != text_hash(text)
    # with a profile named, only that profile's entry counts
    assert text_hash(profile, "tiny") == text_hash(text, "tiny") != text_hash(text, "paper")
    tiny_edit = text.replace("      n: 8\n", "      n: 9\n", 1)
    assert tiny_edit != text and text_hash(tiny_edit, "tiny") != text_hash(text, "tiny")
    assert text_hash(tiny_edit, "paper") == text_hash(text, "paper")


def test_library_hash_ignores_pipeline_modules_only(tmp_path, monkeypatch):
    """Records go stale when result-computing code changes, not when the renderer does."""
    import featlearn

    pkg = tmp_path / "featlearn"
    shutil.copytree(featlearn.__path__[0], pkg, ignore=shutil.ignore_patterns("__pycache__"))
    fake = pkg / "book" / "runner.py"
    monkeypatch.setattr(runner, "__file__", str(fake))
    library_hash = REAL_LIBRARY_HASH  # other tests of this module pin runner._library_hash
    before, before_run = library_hash(), library_hash(with_runner=True)
    (pkg / "book" / "records.py").write_text("# edited renderer\n", encoding="utf-8")
    assert library_hash() == before
    assert library_hash(with_runner=True) == before_run  # rendering: no chapter re-executed
    fake.write_text("# edited executor\n", encoding="utf-8")
    assert library_hash() == before
    assert library_hash(with_runner=True) != before_run  # execution: the build re-runs chapters
    for changed in ("book/page.py", "agop.py"):
        (pkg / changed).write_text("# edited\n", encoding="utf-8")
        assert library_hash() != before
        before = library_hash()
    # a drawing-only module: records stay current, the build re-runs chapters (their figures change)
    before_run, before_drawn = library_hash(with_runner=True), library_hash(presentation=True)
    (pkg / "plots.py").write_text("# restyled\n", encoding="utf-8")
    # ...and a chapter that starts to import plots keeps its record's hash
    assert library_hash() == before
    assert library_hash(chapter="from featlearn import plots\n") == library_hash(chapter="import numpy\n")
    assert library_hash(with_runner=True) != before_run and library_hash(presentation=True) != before_drawn


def test_a_chapter_library_hash_covers_what_it_imports_transitively(tmp_path):
    """A record goes stale when a module its chapter imports (or those import, lazily or relatively)
    changes, and stays current when any other science module does."""
    import featlearn

    pkg = tmp_path / "featlearn"
    shutil.copytree(featlearn.__path__[0], pkg, ignore=shutil.ignore_patterns("__pycache__"))
    chapter = (
        "```{code-cell} ipython3\nimport numpy as np\nfrom featlearn import nlgp\n%matplotlib inline\n```\n"
    )
    mods = runner.chapter_modules(chapter, pkg)
    assert {"nlgp.py", "__init__.py", "book/page.py", "book/notebooks.py"} <= set(mods)
    assert "rfm.py" not in mods and "kernels.py" not in mods and "book/records.py" not in mods
    direct = runner._featlearn_imports((pkg / "nlgp.py").read_text(), "featlearn")
    assert direct and {
        f"{m.split('.')[1]}.py" for m in direct if (pkg / f"{m.split('.')[-1]}.py").is_file()
    } <= set(mods)

    def h() -> str:
        return REAL_LIBRARY_HASH(chapter=chapter, root=pkg)

    before = h()
    (pkg / "rfm.py").write_text("# edited, never imported by this chapter\n", encoding="utf-8")
    assert h() == before and REAL_LIBRARY_HASH(root=pkg) != REAL_LIBRARY_HASH()
    (pkg / "book" / "sitecheck.py").write_text("# edited renderer\n", encoding="utf-8")
    assert h() == before
    with open(pkg / "nlgp.py", "a") as fh:  # a lazy import, and a relative one, join the closure
        fh.write("\n\ndef _lazy():\n    from featlearn import kernels\n    from . import rfm\n")
    after = h()
    assert after != before and {"kernels.py", "rfm.py"} <= set(runner.chapter_modules(chapter, pkg))
    (pkg / "kernels.py").write_text("# edited\n", encoding="utf-8")
    assert h() != after
    after = h()
    (pkg / "book" / "page.py").write_text("# edited\n", encoding="utf-8")
    assert h() != after  # every chapter depends on page


@pytest.mark.slow
def test_a_current_record_is_extended_with_new_seeds_only(swept, pinned, tmp_path):
    """Recording seeds 0-2 over a current record of seeds 0-1 runs seed 2 alone and keeps 0-1."""
    src, out, _ = swept
    book = tmp_path / "book"
    shutil.copytree(src, book, ignore=shutil.ignore_patterns("_build", "records"))
    work = book / "_build" / "sweeps" / "record-tiny"
    shutil.copytree(out / "points", work / "points")
    shutil.copytree(out / "runs", work / "runs")
    first = rec.record(book, ["fixture"], profile="tiny", seeds=[0, 1], progress=False)
    assert first.sweep.executed == 0 and not first.failed  # the sweep's points, reused
    (before,) = rec.load_records(book / "records")
    notebook = before.notebook.read_text()
    shutil.rmtree(work)  # nothing to reuse: seeds 0 and 1 must come from the record itself
    again = rec.record(book, ["fixture"], profile="tiny", seeds=[0, 1, 2], progress=False)
    assert again.sweep.executed == 1 and not again.failed
    (after,) = rec.load_records(book / "records")
    assert after.seeds == [0, 1, 2] and [r["seed"] for r in after.provenance["runs"]] == [0, 1, 2]
    assert after.by_seed[0] == before.by_seed[0] and after.by_seed[1] == before.by_seed[1]
    assert after.notebook.read_text() == notebook  # still the first seed's notebook
    assert after.provenance["extended"][0]["seeds"] == [2]
    assert "--seeds 0,1,2" in after.provenance["command"]
    assert rec.record(book, ["fixture"], profile="tiny", seeds=[1, 2], progress=False).written == []


@pytest.mark.slow
def test_the_build_judges_a_record_by_its_own_chapters_modules(swept, tmp_path, monkeypatch):
    """With real hashes (none pinned): a record made with its chapter's module hash is current in
    the build (which once compared it with the whole library's hash, and called it stale)."""
    src, out, report = swept
    monkeypatch.setattr(runner, "_library_hash", REAL_LIBRARY_HASH)  # `swept` pins it
    book = tmp_path / "book"
    shutil.copytree(src, book, ignore=shutil.ignore_patterns("_build", "records"))
    chapter = Book(book).chapter("fixture")
    results = [
        report.results[p.key] for p in report.points if p.swept == {"n": 8}
    ]  # seeds 0 and 1 of the module's sweep
    rec.write_record(
        book / "records" / "tiny" / "fixture",
        chapter,
        results,
        out / results[0]["notebook"],
        commit="abc1234",
        library_hash=REAL_LIBRARY_HASH(chapter=chapter.path.read_text(encoding="utf-8")),
    )
    (loaded,) = rec.load_records(book / "records")
    assert not loaded.staleness(rec.current_state(Book(book).chapters()))
    out_dir = runner.build(book, profile="tiny", progress=False, html=False)
    scorecard = (out_dir / "stage" / "book" / "scorecard.md").read_text()
    assert "`tiny`, 2 seeds:" in scorecard and "stale (made at" not in scorecard


def _fixture_record(profile, seeds, holds_by_claim, tmp_path):
    """A record of chapter "ch" whose claim ``cid`` holds in the seeds ``holds_by_claim[cid]``."""
    by_seed = {s: [_claim(cid, float(s), s in held) for cid, held in holds_by_claim.items()] for s in seeds}
    prov = {
        "chapter": "ch",
        "profile": profile,
        "seeds": list(seeds),
        "commit": "abc1234",
        "chapter_hash": "h1",
        "library_hash": "L1",
        "machine": {"cpu": "AMD EPYC", "gpu": None},
        "runs": [{"seed": s, "wall_s": 1500.0 + 120 * s, "torch_threads": 1} for s in seeds],
    }
    return rec.Record("ch", profile, tmp_path / profile, by_seed, prov)


def test_the_full_section_compares_with_fast_and_gives_no_verdict_from_one_seed(tmp_path):
    fast = _fixture_record("fast", range(3), {"a": {0, 1, 2}, "b": set(), "c": {0}}, tmp_path)
    current = rec.CurrentState("L1", {"ch": "h1"}, {"ch": "A chapter"})

    # no full record: the chapter says how to make one, and no "At the full profile" section
    md = rec.profiles_markdown("ch", [fast], sc.seed_verdicts([fast], current), defined=("fast", "full"))
    assert "No `full` record yet: `featlearn record ch --profile full --seeds 0-2`" in md
    assert "At the `full` profile" not in md

    # one full seed: values, no verdict; b and c (weak at fast) listed with it, a (failed there) too
    one = _fixture_record("full", [0], {"a": set(), "b": {0}, "c": {0}}, tmp_path)
    md = rec.profiles_markdown("ch", [fast, one], sc.seed_verdicts([fast, one], current), ("fast", "full"))
    head, _, section = md.partition("### At the `full` profile")
    assert section and "No `full` record yet" not in md
    assert "seed 0, 25 min per seed on 1 CPU thread (AMD EPYC)" in section
    assert "{doc}`the record's executed notebook <records/full-ch>`" in section
    assert "fewer than 3 seeds, so it gives values but no verdict" in section
    weak, _, lost = section.partition("Claims that hold at `fast` but not in every `full` seed so far:")
    for cid in ("b", "c"):
        assert f'<span class="fl-id">{cid}</span>' in weak and f'<span class="fl-id">{cid}</span>' not in lost
    assert f"{badge('fails')} `fast`, 3 seeds: 1.0 ± 1.0 (0 to 2), 0/3 hold" in weak
    assert f"{badge('too few seeds')} `full`, 1 seed: 0, 1/1 hold" in weak
    assert '<span class="fl-id">a</span>' in lost and "`full`, 1 seed: 0, 0/1 hold" in lost

    # three full seeds: verdicts; b now holds, a fails at full and is listed as lost
    three = _fixture_record("full", range(3), {"a": set(), "b": {0, 1, 2}, "c": {0}}, tmp_path)
    md = rec.profiles_markdown(
        "ch", [fast, three], sc.seed_verdicts([fast, three], current), ("fast", "full")
    )
    section = md.partition("### At the `full` profile")[2]
    assert "fewer than 3 seeds" not in section and "25–29 min per seed" in section
    assert f"{badge('holds')} `full`, 3 seeds: 1.0 ± 1.0 (0 to 2), 3/3 hold" in section
    assert (
        f"{badge('fails')} `full`, 3 seeds: 1.0 ± 1.0 (0 to 2), 0/3 hold"
        in section.partition("but not at")[2]
    )

    # every claim holding at fast and at full: said in one line, nothing listed
    good = _fixture_record("fast", range(3), {"a": {0, 1, 2}}, tmp_path)
    full_good = _fixture_record("full", range(3), {"a": {0, 1, 2}}, tmp_path)
    md = rec.profiles_markdown(
        "ch", [good, full_good], sc.seed_verdicts([good, full_good], current), ("fast", "full")
    )
    assert "Every claim holds at `fast` across seeds." in md and "but not at" not in md


def test_prose_quotes_numbers_from_the_records_and_never_a_wrong_one(tmp_path):
    fast = _fixture_record("fast", range(3), {"a": {0, 1, 2}, "b": set()}, tmp_path)
    for s, cs in fast.by_seed.items():
        cs[0] = dataclasses.replace(cs[0], baseline={"q95": 0.25 + s})
    current = rec.CurrentState("L1", {"ch": "h1"}, {"ch": "A chapter"})
    cell = {
        "cell_type": "markdown",
        "source": "a: [[fast:a]], null [[fast:a:q95]], held [[fast:a:holds]]; b held [[fast:b:holds]]; "
        "full [[full:a]].",
    }
    nb = rec.fill_record_sections(SimpleNamespace(cells=[cell]), "ch", [fast], {}, (), current)
    # values 0, 1, 2 -> mean 1; q95 0.25, 1.25, 2.25 -> 1.25
    assert nb.cells[0]["source"] == "a: 1, null 1.25, held 3/3; b held 0/3; full (no `full` record)."
    stale = rec.CurrentState("L2", {"ch": "h1"}, {"ch": "A chapter"})
    cell["source"] = "[[fast:a]]"
    rec.fill_record_sections(SimpleNamespace(cells=[cell]), "ch", [fast], {}, (), stale)
    assert cell["source"] == "(stale `fast` record)"
    cell["source"] = "[[fast:typo]]"
    with pytest.raises(ValueError, match="has no claim 'typo'; its claims: a, b"):
        rec.fill_record_sections(SimpleNamespace(cells=[cell]), "ch", [fast], {}, (), current)
    # a page that is no chapter (the intro) names the chapter; lowest and highest seed, signs as minus
    text = "from [[fast:ch/a:min]] to [[fast:ch/a:max]] (mean [[fast:ch/a]])"
    assert rec.fill_quotes(text, None, [fast], current) == "from 0 to 2 (mean 1)"
    neg = _fixture_record("fast", [0], {"a": {0}}, tmp_path)
    neg.by_seed[0][0] = dataclasses.replace(neg.by_seed[0][0], value=-1.7)
    assert rec.fill_quotes("[[fast:ch/a]]", None, [neg], current) == "−1.7"
    with pytest.raises(ValueError, match="names no chapter"):
        rec.fill_quotes("[[fast:a]]", None, [fast], current)


def test_a_captioned_figure_cell_keeps_only_its_images_and_record_pages_rename_labels():
    """Old: a figure cell that also showed a table labelled both; records repeated the labels (-W)."""
    import nbformat

    png = {
        "output_type": "display_data",
        "data": {"image/png": "iVBO", "text/plain": "<Figure>"},
        "metadata": {},
    }
    table = {
        "output_type": "execute_result",
        "data": {"text/html": "<table/>"},
        "metadata": {},
        "execution_count": 1,
    }
    cell = nbformat.v4.new_code_cell(
        "plot()", metadata={"mystnb": {"figure": {"caption": "C", "name": "fig-a"}}}
    )
    cell.outputs = [png, table]
    prose = "{numref}`fig-a` and {numref}`Fig. %s <fig-a>` and {numref}`other`"
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell(prose)])
    rec.site_figures(nb)
    assert [c.cell_type for c in nb.cells] == ["code", "code", "markdown"]
    assert nb.cells[0].outputs == [png] and nb.cells[1].outputs == [table]
    assert nb.cells[1].metadata["tags"] == ["remove-input"] and "mystnb" not in nb.cells[1].metadata
    rec.site_figures(nb, "full-")
    assert nb.cells[0].metadata["mystnb"]["figure"]["name"] == "full-fig-a" and len(nb.cells) == 3
    assert nb.cells[2].source == "{numref}`full-fig-a` and {numref}`Fig. %s <full-fig-a>` and {numref}`other`"


def test_outcomes_tell_what_replicates_from_the_records(tmp_path):
    """The replication summary names holding and failing claims per profile, and no verdict from one seed or a stale record."""
    fast = _fixture_record("fast", range(3), {"a": {0, 1, 2}, "b": set(), "c": {0}}, tmp_path)
    one = _fixture_record("full", [0], {"a": {0}, "b": {0}, "c": {0}}, tmp_path)
    current = rec.CurrentState("L1", {"ch": "h1"}, {"ch": "A chapter"})
    md = rec.outcomes_markdown("ch", [one, fast], sc.seed_verdicts([fast, one], current))
    at_fast, _, at_full = md.partition("- **At `full`**")
    assert at_fast.index("**At `fast`**, {doc}`3 seeds <records/fast-ch>`") < len(at_fast)  # fast first
    holds, _, rest = at_fast.partition("**fails**")
    b, c = "claim b (`b`)", "claim c (`c`)"
    assert "**holds**: claim a (`a`)" in holds and b not in holds
    assert b in rest.partition("**unstable**")[0] and c in rest.partition("**unstable**")[2]
    assert (
        "3 measured on too few seeds for a verdict (a verdict needs 3)" in at_full
        and "**holds**" not in at_full
    )
    # a stale record: no verdict, said once
    stale = rec.CurrentState("L2", {"ch": "h1"}, {"ch": "A chapter"})
    md = rec.outcomes_markdown("ch", [fast], sc.seed_verdicts([fast], stale))
    assert "stale (made at abc1234; library changed)" in md and "**holds**" not in md
    assert rec.outcomes_markdown("other", [fast], {}).startswith("No run of this chapter is recorded yet")
