"""Headline claims of a chapter: the paper's value, ours, and whether it holds.

Why: the scorecard must be computed from what the chapters measured, never typed in.
A chapter calls :func:`record` with a :class:`Rule`; ``holds`` is the rule applied to
our measured value. Each record is shown in the notebook and carried, inside the
notebook's own output, to the build, which gathers every claim into
``_build/claims.json`` and the Scorecard page.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLAIM_MIME",
    "Baseline",
    "Claim",
    "Rule",
    "null",
    "at_least",
    "at_most",
    "between",
    "is_true",
    "record",
    "recorded",
    "clear",
    "set_context",
    "claims_from_notebook",
    "write_claims_json",
]

#: MIME type under which a claim travels inside a notebook output.
CLAIM_MIME = "application/vnd.featlearn.claim+json"

#: How each verdict is labelled on the page and the scorecard.
_MARK = {
    "holds": "✅ holds",
    "fails": "❌ fails",
    "not measured": "⚠️ not measured",
    "matched by null": "🟰 matched by null",
}

#: The reason a claim whose value passes its rule is nevertheless not a hold.
MATCHED = "matched by null"

#: The fewest draws a null needs before its 95th percentile means anything.
MIN_NULL_DRAWS = 10

_CONTEXT: dict[str, str] = {"chapter": "unknown", "profile": "unknown"}
_RECORDED: list[Claim] = []


def set_context(chapter: str, profile: str) -> None:
    """Name the chapter and profile that later :func:`record` calls belong to."""
    _CONTEXT["chapter"] = str(chapter)
    _CONTEXT["profile"] = str(profile)


@dataclass(frozen=True)
class Rule:
    """A stated test that decides whether a measured value supports a claim.

    Build rules with :func:`at_least`, :func:`at_most`, :func:`between` or :func:`is_true`.
    """

    kind: str
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        # A NaN bound compares false with everything, so `v < nan` never fails the value:
        # every value would hold. Refuse it when the rule is made, not when it is applied.
        for name, bound in (("low", self.low), ("high", self.high)):
            if bound is not None and math.isnan(bound):
                raise ValueError(
                    f"rule bound {name} is NaN, which no value can be compared with (every value would "
                    "hold); give a number, e.g. at_least(0.9)"
                )
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"rule needs low <= high, got low={self.low:g} > high={self.high:g}")

    def __call__(self, value: Any) -> bool:
        if self.kind == "true":
            if not isinstance(value, bool):
                raise TypeError(f"rule 'is true' needs a bool value, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"rule {self.describe()!r} needs a real number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):  # NaN or ±inf is no measurement: it never holds
            return False
        if self.low is not None and v < self.low:
            return False
        if self.high is not None and v > self.high:
            return False
        return True

    def describe(self) -> str:
        """The rule in words, shown next to the claim."""
        if self.kind == "true":
            return "holds if true"
        if self.low is not None and self.high is not None:
            return f"holds if {self.low:g} ≤ value ≤ {self.high:g}"
        if self.low is not None:
            return f"holds if value ≥ {self.low:g}"
        return f"holds if value ≤ {self.high:g}"


def at_least(threshold: float) -> Rule:
    """Rule: the value must be at least ``threshold`` (not NaN)."""
    return Rule("range", low=float(threshold))


def at_most(threshold: float) -> Rule:
    """Rule: the value must be at most ``threshold`` (not NaN)."""
    return Rule("range", high=float(threshold))


def between(low: float, high: float) -> Rule:
    """Rule: the value must lie in ``[low, high]`` (neither NaN, ``low <= high``)."""
    low, high = float(low), float(high)
    if not math.isnan(low) and not math.isnan(high) and low > high:
        raise ValueError(f"between(low, high) needs low <= high, got {low:g} > {high:g}")
    return Rule("range", low=low, high=high)


def is_true() -> Rule:
    """Rule: the (boolean) value must be true."""
    return Rule("true")


@dataclass(frozen=True)
class Baseline:
    """What a model that learned nothing scores on a claim's metric: seeded draws of a null.

    Why: a value that passes its threshold means nothing if a random, untrained or
    shuffled-label stand-in passes it too. Make one with :func:`null`; give it to
    :func:`record` as ``baseline``.
    """

    kind: str
    draws: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind.strip():
            raise ValueError("a null needs a kind: one phrase saying what was drawn")
        if len(self.draws) < MIN_NULL_DRAWS:
            raise ValueError(
                f"a null needs at least {MIN_NULL_DRAWS} draws for its 95th percentile, got "
                f"{len(self.draws)}; draw more (n_draws={MIN_NULL_DRAWS} or more)"
            )
        if not all(math.isfinite(d) for d in self.draws):
            raise ValueError(f"null {self.kind!r} has non-finite draws: {self.draws}")

    @property
    def n(self) -> int:
        """Number of draws."""
        return len(self.draws)

    @property
    def mean(self) -> float:
        """Mean of the draws."""
        return math.fsum(self.draws) / self.n

    @property
    def sd(self) -> float:
        """Sample standard deviation of the draws."""
        m = self.mean
        return math.sqrt(math.fsum((d - m) ** 2 for d in self.draws) / (self.n - 1))

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the draws (linear interpolation, as ``numpy.quantile``)."""
        xs = sorted(self.draws)
        pos = q * (self.n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, self.n - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def q05(self) -> float:
        """5th percentile of the draws."""
        return self.quantile(0.05)

    @property
    def q95(self) -> float:
        """95th percentile of the draws."""
        return self.quantile(0.95)

    def pass_rate(self, rule: Rule) -> float:
        """Fraction of the null's draws that ``rule`` would call a hold."""
        if rule.kind == "true":
            return sum(bool(d) for d in self.draws) / self.n
        return sum(rule(d) for d in self.draws) / self.n

    def beaten_by(self, value: float | bool, rule: Rule) -> bool:
        """Whether ``value`` beats the null on the side ``rule`` asks.

        ``at_least``: above the null's 95th percentile. ``at_most``: below its 5th.
        ``between`` and ``is_true``: at most 5% of the null's draws pass the rule.
        """
        if rule.kind == "range" and rule.low is not None and rule.high is None:
            return float(value) > self.q95
        if rule.kind == "range" and rule.high is not None and rule.low is None:
            return float(value) < self.q05
        return self.pass_rate(rule) <= 0.05

    def to_dict(self, rule: Rule | None = None) -> dict[str, Any]:
        """The summary written to ``claims.json`` (with the null's pass rate under ``rule``)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "mean": self.mean,
            "sd": self.sd,
            "q05": self.q05,
            "q95": self.q95,
            "n": self.n,
        }
        if rule is not None:
            out["pass_rate"] = self.pass_rate(rule)
        return out


def null(kind: str, draws: Iterable[Any]) -> Baseline:
    """A :class:`Baseline` from ``draws`` (numbers, bools, or a 1-d tensor/array of them).

    Parameters
    ----------
    kind
        What was drawn, in one phrase, e.g. ``"random init W, Wishart C (m = 4·c_out)"``.
    draws
        At least 10 values of the claim's metric, each from one seeded draw of the null.
    """
    if hasattr(draws, "tolist"):
        draws = draws.tolist()
    vals = []
    for d in draws:
        d = _jsonable(d)
        if isinstance(d, bool):
            d = float(d)
        if not isinstance(d, (int, float)):
            raise TypeError(f"null draws must be numbers or bools, got {d!r}")
        vals.append(float(d))
    return Baseline(kind, tuple(vals))


def _jsonable(value: Any) -> Any:
    """Turn NumPy/torch scalars into plain Python so a claim serialises to JSON."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError) as exc:
            raise TypeError(f"claim values must be scalars, got an array {value!r}") from exc
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"claim values must be numbers, bools, strings or None, got {value!r}")


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _finite_or_text(value: Any) -> Any:
    """A non-finite float as the text "inf", "-inf" or "nan" (JSON has no such numbers)."""
    return str(value) if _nonfinite(value) else value


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class Claim:
    """One recorded claim, as it appears in ``claims.json`` and on the Scorecard."""

    chapter: str
    id: str
    claim: str
    paper: Any
    value: Any
    holds: bool | None
    profile: str
    rule: str
    note: str = field(default="")
    #: Why a claim is not measured, when the value says it: ``"non-finite"`` for NaN or ±inf;
    #: or ``"matched by null"`` for a value that passes its rule but not its null.
    reason: str = field(default="")
    #: The null the value was judged against (:meth:`Baseline.to_dict`), or ``None``.
    baseline: dict[str, Any] | None = field(default=None)

    @property
    def status(self) -> str:
        """``"holds"``, ``"fails"``, ``"matched by null"`` or ``"not measured"``."""
        if self.holds is None:
            return "not measured"
        if self.holds:
            return "holds"
        return MATCHED if self.reason == MATCHED else "fails"

    @property
    def verdict(self) -> str:
        """The verdict as shown: the status's mark, with the reason when there is one."""
        why = f" ({self.reason})" if self.reason and self.reason != MATCHED else ""
        return _MARK[self.status] + why

    def null_text(self) -> str:
        """The null in words: "null (kind): 0.95 ± 0.01, 95th pct 0.96, n = 20", or ""."""
        b = self.baseline
        if not b:
            return ""
        text = (
            f"null ({b['kind']}): {_fmt(b['mean'])} ± {_fmt(b['sd'])}, 5–95th pct "
            f"{_fmt(b['q05'])}–{_fmt(b['q95'])}, n = {b['n']}"
        )
        if "pass_rate" in b:
            text += f"; {b['pass_rate']:.0%} of draws pass the rule"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``claims.json``."""
        return asdict(self)

    def markdown(self) -> str:
        """The claim as a MyST admonition box."""
        kind = {"holds": "tip", "fails": "error", "not measured": "warning", MATCHED: "warning"}[self.status]
        mark = self.verdict
        lines = [
            f":::{{admonition}} Claim `{self.id}`: {mark}",
            f":class: {kind}",
            "",
            f"{self.claim}",
            "",
            f"Paper: **{_fmt(self.paper)}** · ours: **{_fmt(self.value)}** "
            f"({self.rule}; profile `{self.profile}`)",
        ]
        if self.baseline:
            if self.status == MATCHED:
                beaten = "not beaten: the null does as well"
            elif self.baseline.get("beaten") is False:
                beaten = "not beaten either"
            elif self.baseline.get("beaten"):
                beaten = "beaten"
            else:
                beaten = "not compared (no measured value)"
            lines += ["", f"Against its {self.null_text()}: {beaten}."]
        if self.note:
            lines += ["", self.note]
        lines.append(":::")
        return "\n".join(lines)

    def __repr__(self) -> str:
        status = self.status + (f" ({self.reason})" if self.reason else "")
        return (
            f"Claim({self.chapter}/{self.id}: {status}; paper={_fmt(self.paper)}, "
            f"ours={_fmt(self.value)}, {self.rule})"
        )


def record(
    id: str,
    claim: str,
    *,
    paper: Any,
    value: Any,
    rule: Rule,
    note: str = "",
    baseline: Baseline | None = None,
    display: bool = True,
) -> None:
    """Record a headline claim, judge it by ``rule`` and show it in the notebook.

    Nothing is returned, so that a ``record`` call at the end of a cell does not show the
    claim twice; :func:`recorded` lists the claims recorded so far.

    Parameters
    ----------
    id
        Short identifier, unique within the chapter (letters, digits, ``-``, ``_``).
    claim
        The claim in one sentence.
    paper
        The paper's value (a number, or a string such as ``"> 0.9"``).
    value
        Our measured value. ``None`` means the claim could not be measured at this
        profile (say why in ``note``); it is then reported as *not measured*. A NaN or
        ±inf is reported as *not measured (non-finite)*, never as holding, and kept as
        the text ``"nan"``, ``"inf"`` or ``"-inf"`` (JSON has no such numbers).
    rule
        How the claim is judged, e.g. ``at_least(0.9)``. ``holds = rule(value)``.
    note
        Optional sentence shown under the claim (e.g. why it failed).
    baseline
        The same metric on a null (:func:`null`): a random, untrained or shuffled-label
        stand-in. A value that passes ``rule`` but does not beat the null on the side the
        rule asks (:meth:`Baseline.beaten_by`) is not a hold: its status is
        ``"matched by null"``.
    display
        Show the claim as a box in the notebook (default true).
    """
    if not isinstance(id, str) or not id or not all(c.isalnum() or c in "-_" for c in id):
        raise ValueError(f"claim id must be a non-empty string of letters, digits, '-', '_'; got {id!r}")
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError("claim must be a non-empty sentence")
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a featlearn.claims.Rule (e.g. at_least(0.9)), got {rule!r}")
    chapter = _CONTEXT["chapter"]
    if any(c.id == id and c.chapter == chapter for c in _RECORDED):
        raise ValueError(f"claim id {id!r} was already recorded in chapter {chapter!r}")
    value = _jsonable(value)
    paper = _finite_or_text(_jsonable(paper))
    if baseline is not None and not isinstance(baseline, Baseline):
        raise TypeError(f"baseline must be a featlearn.claims.Baseline (claims.null(...)), got {baseline!r}")
    reason = "non-finite" if _nonfinite(value) else ""
    holds = None if value is None or reason else bool(rule(value))
    if holds and baseline is not None and not baseline.beaten_by(value, rule):
        holds, reason = False, MATCHED
    value = _finite_or_text(value)
    c = Claim(
        chapter=chapter,
        id=id,
        claim=claim.strip(),
        paper=paper,
        value=value,
        holds=holds,
        profile=_CONTEXT["profile"],
        rule=rule.describe(),
        note=note,
        reason=reason,
        baseline=None
        if baseline is None
        else baseline.to_dict(rule) | {"beaten": None if holds is None else baseline.beaten_by(value, rule)},
    )
    _RECORDED.append(c)
    if display:
        from featlearn.utils import show

        show({"text/markdown": c.markdown(), "text/plain": repr(c), CLAIM_MIME: c.to_dict()}, repr(c))


def recorded() -> list[Claim]:
    """Claims recorded so far in this process."""
    return list(_RECORDED)


def clear() -> None:
    """Forget the claims recorded in this process (used when a chapter starts)."""
    _RECORDED.clear()


def claims_from_notebook(nb: Any) -> list[Claim]:
    """Collect the claims that an executed notebook displayed.

    Parameters
    ----------
    nb
        An ``nbformat`` notebook node (or anything with ``cells`` of that shape).
    """
    out: list[Claim] = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if CLAIM_MIME in data:
                d = data[CLAIM_MIME]
                if isinstance(d, str):
                    d = json.loads(d)
                out.append(Claim(**d))
    return out


def write_claims_json(claims: Iterable[Claim], path: str | Path) -> Path:
    """Write claims as the list of objects the scorecard and CI read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [c.to_dict() for c in claims]
    # allow_nan=False: a NaN or inf would write invalid JSON (record keeps them as text)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return path
