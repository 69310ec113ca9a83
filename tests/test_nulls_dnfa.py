"""The DNFA chapter's nulls and controls (featlearn.isotropy), and the averaged squared loss.

Each null is checked against a constructed case that beats it and one that does not.
"""

import copy
import math

import pytest
import torch

from featlearn import ansatz, claims, isotropy, linalg, models, nulls, train

DT = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _corr(a, b):
    """Pearson by torch.corrcoef (independent of featlearn.linalg)."""
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])


def _rows(rows, x, feature="WᵀW", alpha=1.0):
    return [r["correlation"] for r in rows if r["X"] == x and r["feature"] == feature and r["alpha"] == alpha]


# --- the averaged squared loss -------------------------------------------------------------


def test_mse_mean_is_mse_over_outputs_and_trains_like_a_k_times_smaller_rate():
    g = _gen(1)
    x, y = torch.randn(24, 7, generator=g, dtype=DT), torch.randint(0, 5, (24,), generator=g)
    torch.manual_seed(0)
    a = models.MLP(7, 6, 2, 5).double()
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    kw = dict(epochs=2, batch_size=8, optimizer="sgd", seed=3, progress=False)
    ha = train.train_classifier(a, x, y, lr=0.05, loss="mse_mean", **kw)
    hb = train.train_classifier(b, x, y, lr=0.05 / 5, loss="mse", **kw)  # 5 outputs
    train.train_classifier(c, x, y, lr=0.05, loss="mse", **kw)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-12)  # the same steps
    assert ha.loss == pytest.approx([v / 5 for v in hb.loss], rel=1e-9)
    assert not all(torch.allclose(p, q) for p, q in zip(a.parameters(), c.parameters()))
    with pytest.raises(ValueError, match="mse_mean"):
        train.train_classifier(a, x, y, epochs=1, loss="l1")


def test_dnfa_over_training_passes_its_loss_through():
    g = _gen(2)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(1)
    net = models.MLP(10, 6, 2, 3)
    twin = copy.deepcopy(net)
    kw = dict(epochs=2, lr=0.05, batch_size=16, seed=3, progress=False)
    rows, hist = ansatz.dnfa_over_training(net, x, y, x[:8], checkpoints=[2], loss="mse_mean", **kw)
    ref = train.train_classifier(twin, x, y, optimizer="sgd", loss="mse_mean", **kw)
    assert hist.loss == ref.loss
    p = rows[0]
    assert 1.0 <= p["part_ratio"] <= p["range_dim"] == 6.0
    with pytest.raises(ValueError, match="mse_mean"):
        ansatz.dnfa_over_training(net, x, y, x[:8], checkpoints=[2], loss="ce", **kw)


# --- sandwich nulls -------------------------------------------------------------------------


def test_sandwich_correlations_equal_direct_powers():
    g = _gen(3)
    w, w0 = torch.randn(5, 9, generator=g, dtype=DT), torch.randn(5, 9, generator=g, dtype=DT)
    z = torch.randn(5, 5, generator=g, dtype=DT)
    x = z @ z.T
    out = isotropy.sandwich_correlations(w, x, w0=w0)
    sand = w.T @ x @ w
    dw = w - w0
    for a in (1.0, 0.5):
        assert out["WᵀW", a] == pytest.approx(_corr(w.T @ w, linalg.matrix_power_psd(sand, a)), abs=1e-9)
        assert out["ΔWᵀΔW", a] == pytest.approx(_corr(dw.T @ dw, linalg.matrix_power_psd(sand, a)), abs=1e-9)
    with pytest.raises(ValueError, match="X must be"):
        isotropy.sandwich_correlations(w, torch.eye(4, dtype=DT))
    with pytest.raises(ValueError, match="W0 must"):
        isotropy.sandwich_correlations(w, x, w0=w0[:, :3])


def test_an_isotropic_p_beats_its_wishart_null_and_a_wishart_p_does_not():
    g = _gen(4)
    d, d_in = 40, 60
    w = torch.randn(d, d_in, generator=g, dtype=DT) / math.sqrt(d_in)
    rows = isotropy.sandwich_draws(w, torch.eye(d, dtype=DT), n_draws=20, generator=_gen(5))
    real = _rows(rows, "P")
    assert len(real) == 1 and real[0] == pytest.approx(1.0)  # P = I: the α = 1 ansatz is exact
    assert _rows(rows, "I") == pytest.approx(real)
    assert _rows(rows, "shuffled P") == pytest.approx([1.0] * 20)  # shuffling I leaves I
    for name in ("Wishart (m = d)", "Wishart (m = 4d)"):
        draws = _rows(rows, name)
        assert len(draws) == 20 and max(draws) < 1.0
        assert claims.null(name, draws).beaten_by(real[0], claims.at_least(0.5))
    # a P drawn from the null itself: its value sits inside the null
    p_null = nulls.wishart(d, d, generator=_gen(6))
    own = isotropy.sandwich_draws(w, p_null, n_draws=20, m_factors=(1,), generator=_gen(7))
    base = claims.null("Wishart", _rows(own, "Wishart (m = d)"))
    assert not base.beaten_by(_rows(own, "P")[0], claims.at_least(0.0))
    assert base.q05 - 0.05 < _rows(own, "P")[0] < base.q95 + 0.05


def test_sandwich_draws_measure_delta_w_and_the_left_gram_case():
    g = _gen(8)
    d, d_in = 12, 20
    w0 = torch.randn(d, d_in, generator=g, dtype=DT)
    w = w0 + 0.5 * torch.randn(d, d_in, generator=g, dtype=DT)
    p = w @ w.T  # the α = 1/2 ansatz is exact for WᵀW
    rows = isotropy.sandwich_draws(w, p, w0=w0, n_draws=10, generator=_gen(9), labels={"layer": "x"})
    assert {r["feature"] for r in rows} == {"WᵀW", "ΔWᵀΔW"} and all(r["layer"] == "x" for r in rows)
    assert _rows(rows, "P", alpha=0.5)[0] == pytest.approx(1.0, abs=1e-9)
    dw = w - w0
    direct = _corr(dw.T @ dw, linalg.matrix_power_psd(w.T @ p @ w, 0.5))
    assert _rows(rows, "P", "ΔWᵀΔW", 0.5)[0] == pytest.approx(direct, abs=1e-9)
    assert max(_rows(rows, "shuffled P", alpha=0.5)) < 1.0 - 1e-6
    # 2 features x 2 alphas x (P, I + 3 random stand-ins x 10 draws)
    assert len(rows) == 4 * (2 + 30)
    again = isotropy.sandwich_draws(w, p, w0=w0, n_draws=10, generator=_gen(9), labels={"layer": "x"})
    assert again == rows  # deterministic under the generator
    with pytest.raises(ValueError, match="n_draws"):
        isotropy.sandwich_draws(w, p, n_draws=0)
    with pytest.raises(ValueError, match="P must be"):
        isotropy.sandwich_draws(w, torch.eye(3, dtype=DT))


def test_sandwich_baselines_average_the_draws():
    g = _gen(10)
    w = torch.randn(6, 8, generator=g, dtype=DT)
    z = torch.randn(6, 6, generator=g, dtype=DT)
    p = z @ z.T
    means = isotropy.sandwich_baselines(w, p, n_draws=10, generator=_gen(11))
    rows = isotropy.sandwich_draws(w, p, n_draws=10, m_factors=(1,), generator=_gen(11), dtype=DT)
    for a in (1.0, 0.5):
        assert means["Wishart"][a] == pytest.approx(sum(_rows(rows, "Wishart (m = d)", alpha=a)) / 10)
        assert means["P"][a] == pytest.approx(_rows(rows, "P", alpha=a)[0])


def test_swapped_layers_pair_only_equal_shapes():
    g = _gen(12)
    f = {n: torch.randn(k, k, generator=g, dtype=DT) for n, k in [("a", 4), ("b", 4), ("c", 5)]}
    feats = {n: m @ m.T for n, m in f.items()}
    agops = {n: m @ m.T + torch.eye(m.shape[0], dtype=DT) for n, m in f.items()}
    rows = isotropy.swapped_layers(feats, agops, alphas=(1.0,))
    assert [(r["feature_layer"], r["agop_layer"]) for r in rows] == [("a", "b"), ("b", "a")]
    assert rows[0]["correlation"] == pytest.approx(_corr(feats["a"], agops["b"]), abs=1e-12)
    assert isotropy.swapped_layers({"c": feats["c"]}, {"c": agops["c"]}) == []
    with pytest.raises(ValueError, match="same layers"):
        isotropy.swapped_layers(feats, {"a": agops["a"]})


# --- the isotropy yardstick and the permutation null ---------------------------------------


def test_wishart_isotropy_tends_to_the_identity_with_m():
    near = isotropy.wishart_isotropy(20, 20_000, n_draws=10, generator=_gen(13))
    far = isotropy.wishart_isotropy(20, 20, n_draws=10, generator=_gen(13))
    rank1 = isotropy.wishart_isotropy(20, 1, n_draws=10, generator=_gen(13))
    assert near["corr_identity"].shape == (10,)
    assert near["corr_identity"].min() > 0.95 and near["participation_ratio"].min() > 19
    assert far["corr_identity"].max() < near["corr_identity"].min()
    # Marchenko-Pastur: E tr C² / (E tr C)² / d -> 1 + d/m, so the ratio is about d/2 at m = d
    assert 7 < far["participation_ratio"].mean() < 13
    assert torch.allclose(rank1["participation_ratio"], torch.ones(10, dtype=DT))


def test_permutation_null_beats_a_real_pairing_and_keeps_a_shared_trend():
    g = _gen(14)
    x = torch.randn(30, generator=g, dtype=DT)
    null = isotropy.paired_permutation_null(x, 2 * x + 1, n_draws=200, generator=_gen(15))
    assert null.shape == (200,) and null.abs().max() < 0.8
    assert claims.null("re-paired", null).beaten_by(1.0, claims.at_least(0.5))
    # both measures follow a group trend (e.g. training time) and nothing else
    groups = [k // 5 for k in range(30)]
    trend = torch.tensor(groups, dtype=DT)
    a = trend + 0.1 * torch.randn(30, generator=g, dtype=DT)
    b = trend + 0.1 * torch.randn(30, generator=g, dtype=DT)
    r = _corr(a, b)
    free = claims.null("re-paired", isotropy.paired_permutation_null(a, b, n_draws=200, generator=_gen(16)))
    within = claims.null(
        "re-paired within groups",
        isotropy.paired_permutation_null(a, b, groups=groups, n_draws=200, generator=_gen(16)),
    )
    assert r > 0.95 and free.beaten_by(r, claims.at_least(0.5))
    # the trend alone gives r: the within-group null is centred on it, far above the free one
    assert abs(r - within.mean) < 3 * within.sd and within.q05 > free.q95
    with pytest.raises(ValueError, match="same length"):
        isotropy.paired_permutation_null(x, x[:5])
    with pytest.raises(ValueError, match="one label per point"):
        isotropy.paired_permutation_null(x, x, groups=[0, 1])
