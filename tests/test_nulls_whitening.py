"""The whitening chapter's nulls: random decreasing profiles fitted like a measured one.

Each test can fail: a profile that follows the formula where it is more than "decreasing"
beats the null; a random decreasing profile does not.
"""

import pytest
import torch
from torch import nn

from featlearn import claims, energy, linalg, nulls

#: A Fashion-MNIST-like patch spectrum (9 components, one dominant).
LAM2 = torch.tensor([6.84, 0.644, 0.466, 0.2, 0.129, 0.0923, 0.0448, 0.0403, 0.0201], dtype=torch.float64)


def test_batch_fit_is_the_single_fit_row_by_row():
    p = nulls.random_decreasing_profiles(9, 12, kind="uniform", generator=torch.Generator().manual_seed(3))
    t, r = energy.fit_t_batch(p, LAM2)
    for i in range(len(p)):
        ti, ri = energy.fit_t(p[i], LAM2)
        assert ti == pytest.approx(float(t[i]), rel=1e-12) and ri == pytest.approx(float(r[i]), abs=1e-12)
        assert ri == pytest.approx(linalg.pearson(p[i], energy.theory_profile(LAM2, ti)), abs=1e-12)


def test_fit_is_bounded_below_by_the_early_regime_floor():
    floor = energy.t_floor(LAM2)
    assert floor * float(LAM2.max()) == pytest.approx(0.02)
    # the early-regime limit itself (energy ∝ λ) is fitted at the floor, not at t -> 0
    t, r = energy.fit_t(LAM2.sqrt() / LAM2.sqrt().max(), LAM2)
    assert r > 0.9999 and t == pytest.approx(floor, rel=1e-9)
    # below the floor the curve no longer changes: it is λ/λ_max within 1%
    early = energy.theory_profile(LAM2, floor)
    assert torch.allclose(early, LAM2.sqrt() / LAM2.sqrt().max(), rtol=0.011)
    # a profile from the formula past the early regime is recovered, with its t
    t_true = 5.0 / float(LAM2[3])
    t, r = energy.fit_t(energy.theory_profile(LAM2, t_true), LAM2)
    assert r > 0.99999 and t == pytest.approx(t_true, rel=0.02)
    with pytest.raises(ValueError, match="t_min"):
        energy.fit_t(LAM2, LAM2, t_min=0.0)
    with pytest.raises(ValueError, match="flat"):
        energy.fit_t(torch.ones(9), LAM2)


def test_decreasing_null_is_beaten_by_the_formula_past_the_early_regime_not_by_a_decreasing_profile():
    null = energy.decreasing_profile_nulls(LAM2, 200, seed=0)
    assert set(null) == {"uniform", "exponential"}
    assert all(n.r.shape == (200,) and torch.isfinite(n.r).all() for n in null.values())
    kind = energy.strongest_null({k: n.r for k, n in null.items()})
    base = claims.null(null[kind].label, null[kind].r)
    rule = claims.at_least(0.9)
    # decreasing alone passes r >= 0.9 most of the time: the null has teeth
    assert base.pass_rate(rule) > 0.5
    # the formula's own curve where it turns toward whitening: r = 1, beats the null
    whitened = energy.theory_profile(LAM2, 2.0 / float(LAM2[4]))
    assert whitened.argmax() > 0  # not decreasing
    _, r = energy.fit_t(whitened, LAM2)
    assert base.beaten_by(r, rule)
    # a fresh random decreasing profile (another seed) does not beat it
    other = nulls.random_decreasing_profiles(9, 1, kind=kind, generator=torch.Generator().manual_seed(99))[0]
    _, r_other = energy.fit_t(other, LAM2)
    assert not base.beaten_by(r_other, rule)
    # the regime metric: decreasing profiles are fitted in the early regime past PC 1
    tl2 = energy.strongest_null({k: n.t * LAM2[1] for k, n in null.items()})
    assert torch.quantile(null[tl2].t * LAM2[1], 0.95) < 1
    t_w, _ = energy.fit_t(whitened, LAM2)
    assert t_w * float(LAM2[1]) > 1


def test_theory_correlations_at_known_steps_separate_the_formula_from_decreasing():
    eta, steps = 0.9 / float(LAM2.max()), [1, 10, 100, 300]
    curves = torch.stack([energy.theory_profile(LAM2, s, eta=eta) for s in steps])
    r = energy.theory_correlations(curves, LAM2, steps, eta=eta)
    assert torch.allclose(r.diagonal(), torch.ones(4, dtype=torch.float64))
    # a random decreasing profile cannot match both the early (∝ λ) and the late (whitened) curves
    p = energy.decreasing_profile_nulls(LAM2, 50, seed=1)["exponential"].profiles
    worst = energy.theory_correlations(p, LAM2, steps, eta=eta).min(1).values
    assert (worst < 0).all()
    assert r.diagonal().min() > torch.quantile(worst, 0.95)
    with pytest.raises(ValueError, match="converge"):
        energy.theory_correlations(p, LAM2, steps, eta=1.0)


def test_profile_correlations_and_strongest_null():
    p = nulls.random_decreasing_profiles(9, 8, generator=torch.Generator().manual_seed(5))
    e = LAM2.sqrt()
    r = energy.profile_correlations(e, p)
    assert torch.allclose(r, torch.tensor([linalg.pearson(e, q) for q in p], dtype=torch.float64))
    assert energy.strongest_null({"a": torch.zeros(20), "b": torch.ones(20)}) == "b"
    assert energy.strongest_null({"a": torch.zeros(20), "b": torch.ones(20)}, high=False) == "a"
    with pytest.raises(ValueError, match="profiles"):
        energy.profile_correlations(e, p[:, :4])


class _Tiny(nn.Module):
    def __init__(self, c: int, k: int, width: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, max(1, int(8 * width)), 3)
        self.head = nn.Linear(max(1, int(8 * width)) * 36, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_training_stops_once_random_labels_are_memorised():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (48,), generator=g)
    u = torch.linalg.qr(torch.randn(9, 9, generator=g, dtype=torch.float64))[0]
    kw = dict(lr=0.5, batch_size=8, num_classes=4, seed=1, progress=False)
    full = energy.train_with_profiles(_Tiny, x, y, u, epochs=40, **kw)
    run = energy.train_with_profiles(_Tiny, x, y, u, epochs=40, stop_at_train_accuracy=0.9, **kw)
    assert run.train_accuracy >= 0.9 and run.epochs < 40
    assert len(run.profiles) == len(run.train_accuracies) == run.epochs
    assert all(a < 0.9 for a in run.train_accuracies[:-1])
    # the stopped run is the first epochs of the full one (same init, same minibatch order)
    assert torch.allclose(run.profiles[-1], full.profiles[run.epochs - 1])
    # a target it cannot reach in the epochs given: it trains them all and says so
    short = energy.train_with_profiles(_Tiny, x, y, u, epochs=1, stop_at_train_accuracy=1.0, **kw)
    assert short.epochs == 1 and short.train_accuracy < 1.0
    with pytest.raises(ValueError, match="stop_at"):
        energy.train_with_profiles(_Tiny, x, y, u, epochs=1, stop_at_train_accuracy=1.5, **kw)
