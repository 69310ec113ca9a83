"""featlearn.claims: rules, records, JSON and the scorecard."""

import json
import math

import numpy as np
import pytest
import torch

from featlearn import claims
from featlearn.book.scorecard import badge, scorecard_markdown


@pytest.fixture(autouse=True)
def _fresh():
    claims.clear()
    claims.set_context("ch", "fast")
    yield
    claims.clear()


def test_rules_judge_values():
    assert claims.at_least(0.9)(0.95) and not claims.at_least(0.9)(0.89)
    assert claims.at_most(-0.9)(-0.95) and not claims.at_most(-0.9)(-0.5)
    assert claims.between(1, 2)(1.5) and not claims.between(1, 2)(2.5)
    assert claims.is_true()(True) and not claims.is_true()(False)
    assert not claims.at_least(0.0)(math.nan)  # NaN never holds
    with pytest.raises(TypeError):
        claims.at_least(1)("high")
    with pytest.raises(TypeError):
        claims.is_true()(1.0)
    with pytest.raises(ValueError):
        claims.between(2, 1)


def test_record_computes_holds_from_rule_and_context():
    claims.record("a", "Holds.", paper=0.9, value=np.float32(0.95), rule=claims.at_least(0.9), display=False)
    claims.record("b", "Fails.", paper=0.9, value=torch.tensor(0.5), rule=claims.at_least(0.9), display=False)
    claims.record("c", "Unmeasured.", paper="> 0.9", value=None, rule=claims.at_least(0.9), display=False)
    a, b, c = claims.recorded()
    assert (a.holds, b.holds, c.holds) == (True, False, None)
    assert (a.status, b.status, c.status) == ("holds", "fails", "not measured")
    assert a.chapter == "ch" and a.profile == "fast" and isinstance(a.value, float)
    assert "≥ 0.9" in a.rule


def test_record_rejects_bad_input():
    with pytest.raises(ValueError, match="claim id"):
        claims.record("bad id!", "x", paper=1, value=1, rule=claims.at_least(0), display=False)
    with pytest.raises(TypeError, match="Rule"):
        claims.record("x", "x", paper=1, value=1, rule=">= 0", display=False)
    claims.record("x", "x", paper=1, value=1, rule=claims.at_least(0), display=False)
    with pytest.raises(ValueError, match="already recorded"):
        claims.record("x", "x", paper=1, value=1, rule=claims.at_least(0), display=False)
    with pytest.raises(TypeError, match="scalars"):
        claims.record("y", "y", paper=1, value=np.ones(3), rule=claims.at_least(0), display=False)


def test_json_and_scorecard(tmp_path):
    claims.record("good", "Good | piped.", paper=0.96, value=0.97, rule=claims.at_least(0.9), display=False)
    claims.record("bad", "Bad.", paper=0.96, value=0.42, rule=claims.at_least(0.9), display=False)
    path = claims.write_claims_json(claims.recorded(), tmp_path / "claims.json")
    rows = json.loads(path.read_text())
    assert [r["id"] for r in rows] == ["good", "bad"]
    assert {"chapter", "id", "claim", "paper", "value", "holds", "profile"} <= set(rows[0])
    md = scorecard_markdown(claims.recorded(), {"ch": "Chapter title"})
    assert "1 hold, 1 fail" in md and "## Chapter title" in md
    assert f"* - {badge('fails')}\n  - Bad. <span" in md
    assert "Good \\| piped." in md  # a pipe in a claim does not break the table
    assert "No chapter has recorded" in scorecard_markdown([])


def test_claims_round_trip_through_notebook_outputs():
    claims.record("z", "Z.", paper=1, value=2, rule=claims.at_least(1), display=False)
    c = claims.recorded()[0]
    nb = type("NB", (), {})()
    nb.cells = [{"outputs": [{"data": {claims.CLAIM_MIME: c.to_dict(), "text/plain": "x"}}]}, {"outputs": []}]
    assert claims.claims_from_notebook(nb) == [c]


@pytest.mark.parametrize("make", [lambda: claims.at_least(math.nan), lambda: claims.at_most(math.nan)])
def test_rule_with_a_nan_bound_is_refused_when_made(make):
    with pytest.raises(ValueError, match="NaN"):  # was: a rule that every value holds
        make()


def test_between_refuses_nan_bounds_and_reversed_bounds():
    with pytest.raises(ValueError, match="NaN"):  # was: between(nan, nan) held for any value
        claims.between(math.nan, math.nan)
    with pytest.raises(ValueError, match="NaN"):
        claims.between(0.0, math.nan)
    with pytest.raises(ValueError, match="low <= high"):
        claims.between(1.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        claims.Rule("range", low=math.nan)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, np.float64("inf"), torch.tensor(math.nan)])
def test_non_finite_value_is_not_measured_and_shown(bad):
    # was: inf "held" under at_least(0.9)
    assert not claims.at_least(0.9)(math.inf) and not claims.at_most(0.9)(-math.inf)
    assert not claims.between(-math.inf, math.inf)(math.nan)
    claims.record("k", "Kernel accuracy.", paper=0.9, value=bad, rule=claims.at_least(0.9), display=False)
    (c,) = claims.recorded()
    assert c.holds is None and c.status == "not measured" and c.reason == "non-finite"
    assert c.value == str(float(bad)) and c.value in ("inf", "-inf", "nan")
    assert "not measured (non-finite)" in c.markdown() and f"ours: **{c.value}**" in c.markdown()
    assert "not measured (non-finite)" in repr(c)
    md = scorecard_markdown([c])
    assert f"{badge('not measured')} <small>(non-finite)</small>" in md
    assert "0 hold, 0 fail, 1 not measured" in md


def test_non_finite_claims_write_valid_json_and_round_trip(tmp_path):
    claims.record("a", "A.", paper=math.inf, value=math.nan, rule=claims.at_least(0.9), display=False)
    claims.record("b", "B.", paper=1, value=math.inf, rule=claims.at_least(0.9), display=False)
    path = claims.write_claims_json(claims.recorded(), tmp_path / "claims.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = json.loads(text, parse_constant=lambda name: pytest.fail(f"invalid JSON constant {name}"))
    assert [(r["value"], r["holds"], r["reason"]) for r in rows] == [
        ("nan", None, "non-finite"),
        ("inf", None, "non-finite"),
    ]
    assert rows[0]["paper"] == "inf"
    nb = type("NB", (), {})()
    nb.cells = [
        {"outputs": [{"data": {claims.CLAIM_MIME: json.dumps(c.to_dict(), allow_nan=False)}}]}
        for c in claims.recorded()
    ]
    assert claims.claims_from_notebook(nb) == claims.recorded()
    old = {k: v for k, v in claims.recorded()[1].to_dict().items() if k != "reason"}  # a notebook from before
    nb.cells = [{"outputs": [{"data": {claims.CLAIM_MIME: old}}]}]
    assert claims.claims_from_notebook(nb)[0].reason == ""


# --------------------------------------------------------------------------- nulls


def test_null_summary_matches_numpy_and_needs_ten_finite_draws():
    draws = np.random.default_rng(0).normal(size=25)
    b = claims.null("normal", torch.tensor(draws))
    assert b.n == 25 and b.mean == pytest.approx(draws.mean()) and b.sd == pytest.approx(draws.std(ddof=1))
    assert b.q95 == pytest.approx(np.quantile(draws, 0.95)) and b.q05 == pytest.approx(
        np.quantile(draws, 0.05)
    )
    with pytest.raises(ValueError, match="at least 10 draws"):
        claims.null("few", [0.1] * 9)
    with pytest.raises(ValueError, match="non-finite"):
        claims.null("nan", [0.1] * 10 + [math.nan])
    with pytest.raises(ValueError, match="kind"):
        claims.null(" ", [0.1] * 10)


def test_a_value_inside_its_null_is_matched_not_held(tmp_path):
    noise = claims.null("noise", np.linspace(0.90, 0.99, 20))  # 95th pct 0.9855
    claims.record(
        "inside", "I.", paper=0.9, value=0.95, rule=claims.at_least(0.9), baseline=noise, display=False
    )
    claims.record(
        "above", "A.", paper=0.9, value=0.995, rule=claims.at_least(0.9), baseline=noise, display=False
    )
    claims.record(
        "below", "B.", paper=0.9, value=0.5, rule=claims.at_least(0.9), baseline=noise, display=False
    )
    low = claims.null("low", np.linspace(0.2, 0.4, 10))
    claims.record("small", "S.", paper=0.1, value=0.1, rule=claims.at_most(0.3), baseline=low, display=False)
    claims.record(
        "smaller", "T.", paper=0.1, value=0.25, rule=claims.at_most(0.3), baseline=low, display=False
    )
    inside, above, below, small, smaller = claims.recorded()
    assert (inside.status, inside.holds, inside.reason) == ("matched by null", False, "matched by null")
    assert above.status == "holds" and below.status == "fails" and below.reason == ""
    assert small.status == "holds" and smaller.status == "matched by null"  # at_most: beat the 5th pct
    assert inside.baseline["n"] == 20 and inside.baseline["pass_rate"] == pytest.approx(1.0)
    assert "matched by null" in inside.markdown() and "the null does as well" in inside.markdown()
    assert "0.9855" in inside.null_text()
    assert "not beaten either" in below.markdown() and ": beaten." in above.markdown()
    assert (inside.baseline["beaten"], above.baseline["beaten"], below.baseline["beaten"]) == (
        False,
        True,
        False,
    )
    rows = json.loads(claims.write_claims_json(claims.recorded(), tmp_path / "c.json").read_text())
    assert rows[0]["baseline"]["q95"] == pytest.approx(0.9855) and rows[0]["holds"] is False
    assert claims.Claim(**rows[0]) == inside  # round trip, baseline included
    md = scorecard_markdown(claims.recorded())
    assert badge("matched by null") in md and "null (noise)" in md


def test_two_sided_and_yes_no_rules_compare_pass_rates():
    often = claims.null("coin", [True, False] * 10)
    rarely = claims.null("rare", [True] + [False] * 19)
    claims.record("c1", "C.", paper=True, value=True, rule=claims.is_true(), baseline=often, display=False)
    claims.record("c2", "D.", paper=True, value=True, rule=claims.is_true(), baseline=rarely, display=False)
    band = claims.null("band", np.linspace(0.0, 1.0, 21))  # 3 of 21 in [0.45, 0.55]
    claims.record(
        "c3", "E.", paper=0.5, value=0.5, rule=claims.between(0.45, 0.55), baseline=band, display=False
    )
    c1, c2, c3 = claims.recorded()
    assert c1.status == "matched by null" and c2.status == "holds" and c3.status == "matched by null"
    with pytest.raises(TypeError, match="Baseline"):
        claims.record(
            "c4", "F.", paper=1, value=1, rule=claims.at_least(0), baseline=[0.1] * 10, display=False
        )
