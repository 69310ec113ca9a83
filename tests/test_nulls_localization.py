"""Localization chapter: Lufkin's box pulse, target codings, paired inits and the chapter's nulls.

Each null is checked both ways: a constructed field or run that has the property beats it,
and one that lacks it does not (so the test can fail).
"""

import math

import pytest
import torch

from featlearn import claims, linalg, nlgp


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- box pulse


def test_box_pulse_is_a_signed_box_on_a_pm1_background_with_the_official_widths():
    fam = nlgp.make_family("box", [0.0, 0.0], D=40)
    assert isinstance(fam, nlgp.BoxPulse)
    # the official code's widths at D = 40: (0.05, 0.10)·D → {3, 4}, (0.20, 0.25)·D → {9, 10}
    assert fam.widths(1.0) == (3, 4) and fam.widths(3.0) == (9, 10)
    for xi, allowed in [(1.0, {3, 4}), (3.0, {9, 10})]:
        x = fam.sample(xi, 3000, _gen(1))
        assert x.shape == (2, 3000, 40)
        assert set(x.unique().tolist()) == {-1.0, 1.0}
        # the box is the minority sign; its length is the width, and it is one circular run
        minority = torch.where(x.sum(-1, keepdim=True) > 0, -x, x) > 0
        assert set(minority.sum(-1).unique().tolist()) <= allowed
        assert set(minority.sum(-1).unique().tolist()) == allowed  # both widths occur
        edges = (minority != torch.roll(minority, 1, dims=-1)).sum(-1)
        assert bool((edges == 2).all())
        # random sign: the box is +1 about half the time; every pixel is covered alike
        box_plus = (x * minority).sum(-1) > 0
        assert box_plus.double().mean().item() == pytest.approx(0.5, abs=0.03)
        cover = minority.double().mean((0, 1))
        assert cover.std().item() < 0.15 * cover.mean().item()
    x = fam.sample(3.0, 20000, _gen(2))[0]
    assert nlgp.kurtosis(x) == pytest.approx(1.0, abs=2e-3)
    assert torch.equal(fam.kurtosis(), torch.ones(2, dtype=torch.float64))


def test_box_pulse_open_boundaries_do_not_wrap_and_bad_settings_are_refused():
    fam = nlgp.BoxPulse(torch.zeros(1), D=12, periodic=False, scale=2.0, jitter=0)
    x = fam.sample(2.0, 2000, _gen(3))[0]
    minority = torch.where(x.sum(-1, keepdim=True) > 0, -x, x) > 0
    assert bool((minority.sum(-1) == 4).all())
    starts = minority.double().argmax(-1)
    assert int(starts.max()) == 12 - 4  # the last start where the box fits, never a wrap
    assert bool(minority[torch.arange(2000), starts.long() + 3].all())
    with pytest.raises(ValueError, match="no background"):
        nlgp.BoxPulse(torch.zeros(1), D=10).sample(3.0, 2, _gen())
    with pytest.raises(ValueError, match="1D"):
        nlgp.BoxPulse(torch.zeros(1), D=10, dim=2)
    with pytest.raises(ValueError, match="jitter"):
        nlgp.BoxPulse(torch.zeros(1), D=10, jitter=-1)
    with pytest.raises(ValueError, match="scale"):
        nlgp.BoxPulse(torch.zeros(1), D=10, scale=0.0)


# --------------------------------------------------------------------------- targets and inits


def test_pm1_targets_step_matches_the_hand_derived_gradient():
    fam = nlgp.NLGP(torch.tensor([1.0, 3.0]), D=10)
    net = nlgp.TwoLayer(2, 3, 10, activation="erf", convention="ig", generator=_gen(7))
    w0, b0 = net.w.detach().clone(), net.b.detach().clone()
    lr = 0.2
    nlgp.train_online(net, fam, (1.0, 3.0), steps=1, batch=6, lr=lr, seed=11, progress=False, targets="pm1")
    x, y = nlgp.two_class_batch(fam, (1.0, 3.0), 6, _gen(11))
    t = 2 * y - 1
    assert set(t.tolist()) == {-1.0, 1.0}
    s = 1 / math.sqrt(10)
    for b in range(2):
        h = s * x[b] @ w0[b].T + b0[b]
        f = (torch.erf(h / math.sqrt(2)) / 3).sum(1)
        delta = (f - t)[:, None] * math.sqrt(2 / math.pi) * torch.exp(-(h**2) / 2) / 3 / len(t)
        assert torch.allclose(net.w[b], w0[b] - lr * s * delta.T @ x[b], atol=1e-12)
        assert torch.allclose(net.b[b], b0[b] - lr / 10 * delta.sum(0), atol=1e-12)


def test_per_network_codings_train_as_separate_runs_and_differ():
    fam = nlgp.NLGP(torch.tensor([2.0, 2.0]), D=12)
    kw = dict(steps=5, batch=8, lr=0.5, record=[5], seed=4, progress=False)
    mixed = nlgp.TwoLayer(2, 2, 12, init_seeds=[3, 3])
    run = nlgp.train_online(mixed, fam, (1.0, 3.0), targets=["pm1", "01"], **kw)
    for b, code in enumerate(["pm1", "01"]):
        alone = nlgp.TwoLayer(2, 2, 12, init_seeds=[3, 3])
        ref = nlgp.train_online(alone, fam, (1.0, 3.0), targets=code, **kw)
        assert torch.allclose(run.weights[-1][b], ref.weights[-1][b], atol=1e-12)
    assert not torch.allclose(
        run.weights[-1][0], run.weights[-1][1]
    )  # same init and data: the coding matters
    # the default is {0, 1}, the coding of the earlier chapter and of Lufkin et al.
    default = nlgp.train_online(nlgp.TwoLayer(2, 2, 12, init_seeds=[3, 3]), fam, (1.0, 3.0), **kw)
    assert torch.equal(default.weights[-1][1], run.weights[-1][1])
    with pytest.raises(ValueError, match="'01' or 'pm1'"):
        nlgp.train_online(nlgp.TwoLayer(2, 2, 12), fam, (1.0, 3.0), targets="pm", **kw)
    with pytest.raises(ValueError, match="one coding per network"):
        nlgp.train_online(nlgp.TwoLayer(2, 2, 12), fam, (1.0, 3.0), targets=["pm1"], **kw)


def test_init_seeds_make_a_networks_init_independent_of_the_batch():
    small = nlgp.TwoLayer(2, 3, 9, init_std=0.5, init_seeds=[10, 11])
    big = nlgp.TwoLayer(4, 3, 9, init_std=0.5, init_seeds=[12, 11, 10, 13])
    assert torch.equal(small.w[0], big.w[2]) and torch.equal(small.w[1], big.w[1])
    assert not torch.equal(big.w[0], big.w[3])
    assert big.w.std().item() == pytest.approx(0.5, rel=0.3)
    with pytest.raises(ValueError, match="either generator or init_seeds"):
        nlgp.TwoLayer(2, 3, 9, generator=_gen(), init_seeds=[1, 2])
    with pytest.raises(ValueError, match="one seed per network"):
        nlgp.TwoLayer(2, 3, 9, init_seeds=[1])


def test_single_neuron_phase_gives_a_family_its_own_seed_count():
    fams = {"control": ("gaussian", [2.0], 4), "box": ("box", [0.0])}
    phase, init, final = nlgp.single_neuron_phase(
        fams,
        D=12,
        xis=[1.0, 3.0],
        seeds=2,
        steps=2,
        batch=8,
        lr=0.05,
        generator=_gen(1),
        n_check=50,
        progress=False,
    )
    assert list(phase.family) == ["control"] * 4 + ["box"] * 2
    assert list(phase.seed) == [0, 1, 2, 3, 0, 1]
    assert init["control"].shape == (4, 12) and final["box"].shape == (2, 12)
    assert list(phase[phase.family == "box"].kappa) == [1.0, 1.0]  # analytic, not sampled


def test_batched_effective_dynamics_equal_one_field_at_a_time():
    s0, s1 = nlgp.class_covariances("nlgp", 3.0, D=12, xis=[1.0, 3.0], generator=_gen())
    phi = nlgp.amplifier_table(nlgp.NLGP(torch.tensor([3.0]), D=12).sample(3.0, 2000, _gen(2)).flatten())
    w0 = 0.1 * torch.randn(3, 12, generator=_gen(3), dtype=torch.float64)
    batch = nlgp.effective_dynamics(w0, s0, s1, phi, tau=0.05, steps=40, record=[10])
    for i in range(3):
        one = nlgp.effective_dynamics(w0[i], s0, s1, phi, tau=0.05, steps=40, record=[10])
        for a, b in zip(batch, one):
            assert torch.allclose(a[i], b, atol=1e-12)
    with pytest.raises(ValueError, match="one field"):
        nlgp.effective_dynamics(w0[None], s0, s1, phi, tau=0.05, steps=1)


# --------------------------------------------------------------------------- nulls


def test_untrained_ipr_is_that_of_random_vectors_and_a_localized_field_beats_it():
    draws = nlgp.untrained_ipr(4000, (), 40, generator=_gen(5))
    assert draws.shape == (4000,)
    assert draws.mean().item() == pytest.approx(3 / 42, rel=0.03)  # E IPR = 3/(D + 2) for a Gaussian vector
    null = claims.null("random init field", draws)
    bump = torch.exp(-((torch.arange(40.0) - 20) ** 2) / 4)  # a field a few pixels wide
    assert null.beaten_by(float(nlgp.ipr(bump)), claims.at_least(0.1))
    random_field = torch.randn(40, generator=_gen(6), dtype=torch.float64)
    assert not null.beaten_by(float(nlgp.ipr(random_field)), claims.at_least(0.0))
    assert nlgp.untrained_ipr(3, (2, 5), 10, generator=_gen()).shape == (3, 2, 5)


def test_untrained_rank_null_is_beaten_by_a_monotone_trend_not_by_noise():
    kappa = [1.0, 1.0, 1.2, 1.6, 2.1, 2.5, 2.9, 3.0, 3.0, 4.3]
    null = claims.null(
        "untrained", nlgp.untrained_rank_null(kappa, seeds=3, pixels=40, n_draws=300, generator=_gen(7))
    )
    assert abs(null.mean) < 0.1 and null.q05 > -0.75
    rule = claims.at_most(-0.9)
    trend = [1 / k for k in kappa]  # IPR falling with κ
    from scipy.stats import spearmanr

    rho = spearmanr(kappa, trend).statistic
    assert rho <= -0.9 and null.beaten_by(rho, rule)
    noise = nlgp.untrained_ipr(1, 10, 40, generator=_gen(8))[0].tolist()
    assert not null.beaten_by(spearmanr(kappa, noise).statistic, rule)
    with pytest.raises(ValueError, match="at least 3"):
        nlgp.untrained_rank_null([1.0, 2.0], seeds=1, pixels=5, n_draws=2, generator=_gen())


def test_field_correlation_is_pearson_row_by_row():
    a = torch.randn(5, 11, generator=_gen(9), dtype=torch.float64)
    b = torch.randn(11, generator=_gen(10), dtype=torch.float64)
    r = nlgp.field_correlation(a, b)
    assert r.shape == (5,)
    for i in range(5):
        assert r[i].item() == pytest.approx(linalg.pearson(a[i], b), abs=1e-12)
    with pytest.raises(ValueError, match="constant"):
        nlgp.field_correlation(torch.ones(3, 4), torch.arange(4.0))
    with pytest.raises(ValueError, match="same length"):
        nlgp.field_correlation(torch.ones(3, 4), torch.ones(5))


def test_theory_from_the_same_init_beats_theory_from_fresh_inits():
    """The null of section 4: the effective dynamics started elsewhere must not predict this run."""
    D, steps, lr = 16, 300, 0.05
    s0, s1 = nlgp.class_covariances("nlgp", 100.0, D=D, xis=[1.0, 3.0], generator=_gen())
    phi = nlgp.amplifier_table(nlgp.NLGP(torch.tensor([100.0]), D=D).sample(3.0, 2000, _gen(2)).flatten())
    net = nlgp.TwoLayer(1, 1, D, activation="relu", convention="lufkin", bias=False, init_seeds=[0])
    w0 = net.w.detach()[0, 0].clone()
    sgd = nlgp.train_online(
        net,
        nlgp.NLGP(torch.tensor([100.0]), D=D),
        (1.0, 3.0),
        steps=steps,
        batch=500,
        lr=lr,
        record=[steps],
        seed=1,
        progress=False,
    ).weights[-1][0, 0]
    same = nlgp.effective_dynamics(w0, s0, s1, phi, tau=lr / 4, steps=steps)[-1]
    fresh = nlgp.TwoLayer(
        12, 1, D, activation="relu", convention="lufkin", bias=False, init_seeds=range(1, 13)
    )
    others = nlgp.effective_dynamics(fresh.w.detach()[:, 0], s0, s1, phi, tau=lr / 4, steps=steps)[-1]
    null = claims.null("theory from fresh inits", nlgp.field_correlation(others, sgd))
    assert null.beaten_by(float(nlgp.field_correlation(same, sgd)), claims.at_least(0.5))
    # a field unrelated to this run (another fresh init's prediction) does not beat it
    assert not null.beaten_by(float(nlgp.field_correlation(others[0], sgd)), claims.at_least(-1.0))


def test_untrained_rank_null_draws_are_scipy_spearman_of_the_same_fields():
    from scipy.stats import spearmanr

    kappa = [1.0, 1.0, 2.0, 3.0, 3.0, 4.0]  # ties, as the Ising chain and the box pulse have
    draws = nlgp.untrained_rank_null(kappa, seeds=2, pixels=20, n_draws=5, generator=_gen(3))
    fields = nlgp.untrained_ipr(5, (6, 2), 20, generator=_gen(3)).mean(-1)
    for d, f in zip(draws, fields):
        assert d.item() == pytest.approx(spearmanr(kappa, f.numpy()).statistic, abs=1e-12)
