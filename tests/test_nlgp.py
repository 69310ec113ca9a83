"""featlearn.nlgp against closed forms and hand-derived gradients (no shared code paths)."""

import math

import pytest
import torch

from featlearn import nlgp


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_nlgp_kurtosis_matches_the_published_table():
    # papers.md §5: g = 0.01 → 3.00, 0.3 → 2.50, 0.5 → 2.09, 1 → 1.56, 2 → 1.26, 3 → 1.17
    for g, k in [(0.01, 3.00), (0.3, 2.50), (0.5, 2.09), (1, 1.56), (2, 1.26), (3, 1.17)]:
        assert nlgp.nlgp_kurtosis(g) == pytest.approx(k, abs=0.006)
    # Kur(k): the closed form against direct quadrature of Q_k(U)^p (papers.md quotes 2.90 for k = 6 and
    # ≈ 3.9 for k = 5, which look like finite-sample estimates; the exact values are 2.92 and 4.29)
    from scipy import integrate

    for k in (5.0, 6.0, 10.0):
        m2 = integrate.quad(lambda u, k=k: u**2 * (1 - u**k) ** (-2 / k), 0, 1, limit=500)[0]
        m4 = integrate.quad(lambda u, k=k: u**4 * (1 - u**k) ** (-4 / k), 0, 1, limit=500)[0]
        assert nlgp.kur_kurtosis(k) == pytest.approx(m4 / m2**2, rel=1e-3)
    assert nlgp.kur_kurtosis(10) == pytest.approx(2.07, abs=0.01)
    assert nlgp.kur_kurtosis(6) < 3 < nlgp.kur_kurtosis(5)
    assert nlgp.kur_kurtosis(4) == math.inf


def test_nlgp_samples_unit_variance_kurtosis_and_covariance():
    fam = nlgp.NLGP(torch.tensor([0.5, 3.0]), D=20)
    x = fam.sample(2.0, 40000, _gen())
    assert x.shape == (2, 40000, 20)
    c = nlgp.latent_covariance(20, 2.0)
    for b, g in enumerate([0.5, 3.0]):
        xb = x[b]
        assert xb.var(0).mean() == pytest.approx(1.0, abs=0.02)
        assert nlgp.kurtosis(xb) == pytest.approx(nlgp.nlgp_kurtosis(g), abs=0.03)
        emp = xb.T @ xb / len(xb)  # zero mean by symmetry
        assert (emp - nlgp.nlgp_covariance(c, g)).abs().max() < 0.04  # ~ 4 standard errors at n = 40000


def test_gaussian_control_has_the_nlgp_covariance_and_kurtosis_three():
    ctrl = nlgp.GaussianControl(torch.tensor([3.0]), D=16)
    x = ctrl.sample(3.0, 40000, _gen(1))[0]
    exact = nlgp.nlgp_covariance(nlgp.latent_covariance(16, 3.0), 3.0)
    assert (x.T @ x / len(x) - exact).abs().max() < 0.04
    assert nlgp.kurtosis(x) == pytest.approx(3.0, abs=0.05)


def test_kur_samples():
    x = nlgp.Kur(torch.tensor([10.0]), D=12).sample(1.0, 50000, _gen(2))[0]
    assert x.var(0).mean() == pytest.approx(1.0, abs=0.02)
    assert nlgp.kurtosis(x) == pytest.approx(nlgp.kur_kurtosis(10), abs=0.04)


def test_ising_correlations_are_exact():
    D, xi = 12, 2.0
    s = nlgp.Ising(torch.zeros(1), D=D).sample(xi, 40000, _gen(3))[0]
    t = math.exp(-1 / xi)
    for d in (1, 3, 6):
        expected = (t**d + t ** (D - d)) / (1 + t**D)  # periodic chain, transfer matrix
        assert (s[:, 0] * s[:, d]).mean() == pytest.approx(expected, abs=0.02)
    assert s[:, 5].mean().abs() < 0.02 and nlgp.kurtosis(s) == pytest.approx(1.0, abs=1e-3)


def test_elliptical_covariance_and_kurtosis():
    fam = nlgp.Elliptical(torch.zeros(1), D=10)
    x = fam.sample(2.0, 40000, _gen(4))[0]
    assert (x.T @ x / len(x) - nlgp.latent_covariance(10, 2.0)).abs().max() < 0.04
    assert nlgp.kurtosis(x) == pytest.approx(30 / 12, abs=0.05)


def test_2d_latent_covariance_is_a_kronecker_product():
    fam = nlgp.NLGP(torch.tensor([1.0]), D=6, dim=2)
    z = fam.latent(1.5, 30000, _gen(5))[0]
    c1 = nlgp.latent_covariance(6, 1.5)
    assert (z.T @ z / len(z) - torch.kron(c1, c1)).abs().max() < 0.05


def test_two_class_batch_labels_and_shapes():
    fam = nlgp.NLGP(torch.tensor([1.0, 2.0, 3.0]), D=8)
    x, y = nlgp.two_class_batch(fam, (1.0, 3.0), 10, _gen())
    assert x.shape == (3, 10, 8) and y.sum() == 5


def test_ipr_of_known_vectors():
    assert nlgp.ipr(torch.eye(5)[2]) == pytest.approx(1.0)
    assert nlgp.ipr(torch.ones(40)) == pytest.approx(1 / 40)
    assert nlgp.ipr(torch.tensor([1.0, 1.0, 0, 0])) == pytest.approx(0.5)


def test_rf_measures():
    D = 32
    w = torch.zeros(2, D)
    w[0, 5], w[1, 30] = 1.0, 1.0
    assert torch.allclose(nlgp.rf_centres(w), torch.tensor([5.0, 30.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(
        nlgp.tiling_gaps(torch.tensor([0.0, 8, 16, 24]), D), torch.ones(4, dtype=torch.float64)
    )
    cos = torch.cos(2 * math.pi * 3 * torch.arange(D) / D)
    assert int(nlgp.peak_frequency(cos)) == 3


def test_amplifier_is_linear_for_gaussian_marginals():
    x = torch.randn(400000, generator=_gen(6), dtype=torch.float64)
    a = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    phi, se = nlgp.amplifier(x, a)
    assert torch.all((phi - math.sqrt(2 / math.pi) * a).abs() < 4 * se + 1e-4)
    # a platykurtic marginal (±1) bends it upwards: the (3 − κ) a³ term
    s = torch.where(x > 0, 1.0, -1.0).to(torch.float64)
    assert nlgp.amplifier(s, torch.tensor([0.5]))[0] > math.sqrt(2 / math.pi) * 0.5
    table = nlgp.amplifier_table(x, 101)
    assert torch.allclose(table(a), math.sqrt(2 / math.pi) * a, atol=3e-3)
    assert torch.allclose(table(-a), -table(a))


def test_one_sgd_step_matches_the_hand_derived_gradient():
    fam = nlgp.NLGP(torch.tensor([1.0, 3.0]), D=10)
    torch.manual_seed(0)
    net = nlgp.TwoLayer(2, 3, 10, activation="erf", convention="ig", generator=_gen(7))
    w0, b0 = net.w.detach().clone(), net.b.detach().clone()
    lr = 0.2
    nlgp.train_online(net, fam, (1.0, 3.0), steps=1, batch=6, lr=lr, seed=11, progress=False)
    x, y = nlgp.two_class_batch(fam, (1.0, 3.0), 6, torch.Generator().manual_seed(11))
    s = 1 / math.sqrt(10)
    for b in range(2):
        h = s * x[b] @ w0[b].T + b0[b]  # (n, K)
        f = (torch.erf(h / math.sqrt(2)) / 3).sum(1)
        dsig = math.sqrt(2 / math.pi) * torch.exp(-(h**2) / 2)  # d/dh erf(h/√2)
        delta = (f - y)[:, None] * dsig / 3 / len(y)  # (n, K)
        gw = s * delta.T @ x[b]
        gb = delta.sum(0)
        assert torch.allclose(net.w[b], w0[b] - lr * gw, atol=1e-12)
        assert torch.allclose(net.b[b], b0[b] - lr / 10 * gb, atol=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="xi"):
        nlgp.latent_covariance(10, 0.0)
    with pytest.raises(ValueError, match="k > 2"):
        nlgp.Kur(torch.tensor([2.0]), D=10)
    with pytest.raises(ValueError, match="D >= 2"):
        nlgp.NLGP(torch.tensor([1.0]), D=1)
    with pytest.raises(ValueError, match="xi"):
        nlgp.NLGP(torch.tensor([1.0]), D=5).sample(-1.0, 3, _gen())
    with pytest.raises(ValueError, match="unknown family"):
        nlgp.make_family("cauchy", [1.0], D=5)
    with pytest.raises(ValueError, match="activation"):
        nlgp.TwoLayer(1, 1, 5, activation="tanh")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0])
def test_non_finite_gains_are_refused(bad):
    # was: `gains > 0` let NaN through (NaN inputs); inf passed too
    for make in (
        lambda: nlgp.NLGP(torch.tensor([1.0, bad]), D=8),
        lambda: nlgp.GaussianControl(torch.tensor([bad]), D=8),
        lambda: nlgp.make_family("nlgp", [bad], D=8),
        lambda: nlgp.gain_normaliser(bad),
        lambda: nlgp.nlgp_kurtosis(bad),
    ):
        with pytest.raises(ValueError, match="gains must be finite numbers > 0"):
            make()
    with pytest.raises(ValueError, match="finite k > 2"):
        nlgp.Kur(torch.tensor([math.inf]), D=8)


@pytest.mark.parametrize("lr", [math.inf, math.nan, 0.0, -0.1])
def test_train_online_refuses_bad_learning_rates(lr):
    fam = nlgp.NLGP(torch.tensor([1.0]), D=6)
    net = nlgp.TwoLayer(1, 2, 6, generator=_gen())
    w0 = net.w.detach().clone()
    with pytest.raises(ValueError, match="lr"):  # was: lr=inf trained to NaN weights
        nlgp.train_online(net, fam, (1.0, 3.0), steps=2, batch=4, lr=lr, progress=False)
    assert torch.equal(net.w, w0)
    with pytest.raises(ValueError, match="bias_lr"):
        nlgp.train_online(net, fam, (1.0, 3.0), steps=2, batch=4, lr=0.1, bias_lr=math.nan, progress=False)
    with pytest.raises(ValueError, match="batch"):
        nlgp.train_online(net, fam, (1.0, 3.0), steps=2, batch=0, lr=0.1, progress=False)


def test_single_example_batches_draw_both_classes():
    # was: batch=1 refused (the paper profile's ig_batch), and halves would give class 0 every time
    fam = nlgp.NLGP(torch.tensor([1.0]), D=16)
    g = _gen(8)
    xs, ys = zip(*(nlgp.two_class_batch(fam, (1.0, 4.0), 1, g) for _ in range(400)))
    x, y = torch.cat(xs, 1)[0], torch.cat(ys)
    assert x.shape == (400, 16) and set(y.tolist()) == {0.0, 1.0}
    assert 0.4 < y.mean() < 0.6
    neighbour = (x * x.roll(1, -1)).mean(-1)  # ≈ the lag-1 correlation: larger for ξ = 4 than ξ = 1
    assert neighbour[y == 1].mean() > neighbour[y == 0].mean() + 0.2


def test_batch_one_sgd_step_matches_the_hand_derived_gradient():
    fam = nlgp.NLGP(torch.tensor([1.0, 3.0]), D=10)
    net = nlgp.TwoLayer(2, 3, 10, activation="erf", convention="ig", generator=_gen(7))
    w0, b0 = net.w.detach().clone(), net.b.detach().clone()
    lr = 0.2
    run = nlgp.train_online(net, fam, (1.0, 3.0), steps=1, batch=1, lr=lr, seed=11, progress=False)
    x, y = nlgp.two_class_batch(fam, (1.0, 3.0), 1, torch.Generator().manual_seed(11))
    assert x.shape == (2, 1, 10) and y.shape == (1,)
    s = 1 / math.sqrt(10)
    for b in range(2):
        h = s * x[b, 0] @ w0[b].T + b0[b]  # (K,): one example, no batch mean
        f = (torch.erf(h / math.sqrt(2)) / 3).sum()
        delta = (f - y[0]) * math.sqrt(2 / math.pi) * torch.exp(-(h**2) / 2) / 3
        assert torch.allclose(net.w[b], w0[b] - lr * s * delta[:, None] * x[b, 0], atol=1e-12)
        assert torch.allclose(net.b[b], b0[b] - lr / 10 * delta, atol=1e-12)
    assert len(run.losses) == 1 and math.isfinite(run.losses[0])


def test_class_covariances_exact_for_the_nlgp_and_sampled_otherwise():
    g = _gen(3)
    state = g.get_state()
    exact = nlgp.class_covariances("nlgp", 2.0, D=12, xis=[1.0, 3.0], generator=g)
    assert torch.equal(g.get_state(), state)  # nothing drawn for the closed form
    for xi, c in zip([1.0, 3.0], exact):
        assert torch.allclose(c, nlgp.nlgp_covariance(nlgp.latent_covariance(12, xi), 2.0), rtol=0, atol=0)
        assert torch.allclose(c.diagonal(), torch.ones(12, dtype=torch.float64), atol=1e-12)
    # sampled: the same draws, in the same order, as sampling the classes by hand
    est = nlgp.class_covariances("kur", 6.0, D=12, xis=[1.0, 3.0], generator=_gen(4), n_samples=500)
    fam, g2 = nlgp.Kur(torch.tensor([6.0]), D=12), _gen(4)
    for xi, c in zip([1.0, 3.0], est):
        xs = fam.sample(xi, 500, g2)[0]
        assert torch.allclose(c, xs.T @ xs / 500, rtol=0, atol=1e-15)
    # the estimate converges on the Gaussian control's known covariance (the NLGP's)
    ctrl = nlgp.class_covariances("gaussian", 2.0, D=12, xis=[3.0], generator=_gen(5), n_samples=20000)[0]
    assert torch.allclose(ctrl, exact[1], atol=0.05)
    with pytest.raises(ValueError, match="n_samples"):
        nlgp.class_covariances("kur", 6.0, D=12, xis=[1.0], generator=_gen(), n_samples=0)


def test_single_neuron_phase_matches_runs_by_hand():
    families = {"NLGP": ("nlgp", [0.5, 3.0]), "single pulse": ("pulse", [0.0])}
    kw = dict(steps=3, batch=8, lr=0.05)
    phase, init, final = nlgp.single_neuron_phase(
        families,
        D=10,
        xis=[1.0, 3.0],
        seeds=2,
        init_seed=5,
        train_seed=6,
        generator=_gen(7),
        n_check=200,
        **kw,
    )
    assert list(phase.columns) == ["family", "parameter", "seed", "kappa", "kappa_empirical", "ipr"]
    assert list(phase.family) == ["NLGP"] * 4 + ["single pulse"] * 2
    assert list(phase.parameter) == [0.5, 0.5, 3.0, 3.0, 0.0, 0.0] and list(phase.seed) == [0, 1] * 3
    g = _gen(7)  # the kurtosis samples come from it, family after family
    for label, (kind, params) in families.items():
        fam = nlgp.make_family(kind, torch.tensor(params, dtype=torch.float64).repeat_interleave(2), D=10)
        net = nlgp.TwoLayer(
            4 if kind == "nlgp" else 2,
            1,
            10,
            activation="relu",
            convention="lufkin",
            bias=False,
            init_std=0.1,
            generator=_gen(5),
        )
        assert torch.equal(init[label], net.w.detach()[:, 0])
        run = nlgp.train_online(net, fam, (1.0, 3.0), record=[3], seed=6, progress=False, **kw)
        assert torch.equal(final[label], run.weights[-1][:, 0])
        x, _ = nlgp.two_class_batch(fam, (1.0, 3.0), 200, g)
        rows = phase[phase.family == label]
        assert list(rows.kappa_empirical) == [nlgp.kurtosis(xs) for xs in x]
        assert list(rows.ipr) == pytest.approx(nlgp.ipr(final[label]).tolist(), abs=0)
    nl = phase[phase.family == "NLGP"]
    assert list(nl.kappa) == pytest.approx([nlgp.nlgp_kurtosis(g) for g in nl.parameter], rel=1e-9)
    pulse = phase[phase.family == "single pulse"]  # no closed form: the empirical value
    assert list(pulse.kappa) == list(pulse.kappa_empirical)
