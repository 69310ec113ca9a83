"""featlearn.energy against direct computations and the formula's known limits."""

import pytest
import torch
import torch.nn.functional as F

from featlearn import data, energy


def test_streaming_covariance_equals_direct():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(37, 3, 9, 11, generator=g)
    cov = energy.PatchCovariance(3)
    for i in range(0, 37, 8):  # uneven batches
        cov.update(x[i : i + 8])
    p = F.unfold(x.double(), 3).transpose(1, 2).reshape(-1, 27)
    assert cov.n == p.shape[0]
    assert torch.allclose(cov.mean, p.mean(0), atol=1e-12)
    assert torch.allclose(cov.covariance, torch.cov(p.T, correction=0), atol=1e-12)
    with pytest.raises(ValueError, match="4-D"):
        cov.update(x[0])
    with pytest.raises(ValueError, match="no patches"):
        energy.PatchCovariance(3).covariance  # noqa: B018 (the property raises)


def test_patch_pca_of_natural_images_is_decreasing_and_orthonormal():
    x = data.natural_crops(32, 24, channels=1, seed=0)
    lam2, u = energy.patch_pca(x, 3, batch_size=10)
    assert lam2.shape == (9,) and torch.all(lam2[:-1] >= lam2[1:])
    assert torch.allclose(u.T @ u, torch.eye(9, dtype=torch.float64), atol=1e-10)
    # natural patches: the first component is the smooth (all-same-sign) one
    assert (u[:, 0] > 0).all() or (u[:, 0] < 0).all()


def test_energy_profile_of_known_filters():
    g = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(9, 9, generator=g, dtype=torch.float64))
    w = torch.stack([2 * u[:, 3], -2 * u[:, 3]]).reshape(2, 1, 3, 3)  # both filters equal PC 4 (up to sign)
    e = energy.energy_profile(w, u)
    assert e[3] == pytest.approx(1.0) and e.sum() == pytest.approx(1.0)
    w0 = torch.zeros_like(w) + 0.5 * u[:, 0].reshape(1, 1, 3, 3)
    de = energy.energy_profile(w + w0, u, init_weight=w0)  # ΔW removes the init
    assert torch.allclose(de, e)
    with pytest.raises(ValueError, match="rows"):
        energy.energy_profile(w, u[:4])


def test_theory_limits_and_conventions():
    lam2 = torch.tensor([4.0, 1.0, 0.25, 0.01], dtype=torch.float64)
    lam = lam2.sqrt()
    early = energy.theory_profile(lam2, 1e-6)
    assert torch.allclose(early, lam / lam.max(), rtol=1e-4)  # e ∝ t λ early
    late = energy.theory_profile(lam2, 1e6)
    assert torch.allclose(late, (1 / lam) / (1 / lam).max(), rtol=1e-6)  # e ∝ 1/λ: whitening
    eta, steps = 1e-3, 2000  # discrete (official) form equals the clean one at t = η · steps
    assert torch.allclose(
        energy.theory_profile(lam2, steps, eta=eta), energy.theory_profile(lam2, eta * steps), rtol=5e-3
    )
    with pytest.raises(ValueError, match="converge"):
        energy.theory_profile(lam2, 10, eta=1.0)


def test_fit_t_recovers_the_generating_t():
    lam2 = torch.logspace(1, -3, 9, dtype=torch.float64)
    t_true = 3.0
    t, r = energy.fit_t(energy.theory_profile(lam2, t_true), lam2)
    assert r > 0.9999 and t == pytest.approx(t_true, rel=0.1)


def test_second_moment_is_the_uncentred_covariance():
    x = torch.rand(5, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    cov = energy.PatchCovariance(3).update(x)
    assert torch.allclose(cov.second_moment, cov.covariance + torch.outer(cov.mean, cov.mean), atol=1e-12)


def test_linear_cnn_readout_is_orthonormal_and_only_the_first_layer_trains():
    net = energy.LinearCNN(1, 32, groups=4, generator=torch.Generator().manual_seed(0))
    v = torch.block_diag(*net.readout.weight.reshape(4, 8, 8))  # block-diagonal (K, K)
    assert torch.allclose(v.T @ v, torch.eye(32), atol=1e-5)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["conv.weight"]
    with pytest.raises(ValueError, match="divide"):
        energy.LinearCNN(1, 30, groups=4)


def test_simulated_linear_cnn_follows_the_formula():
    """Exact GD on the depth-2 linear CNN, small init and step: the formula holds at every t (r >= 0.99)."""
    x = data.natural_crops(32, 12, channels=1, seed=0)
    x = x - x.mean()
    lam2, u = energy.patch_pca(x, 3, center=False)  # the loss's Hessian is the uncentred moment
    eta = 0.9 / float(lam2.max())
    run = energy.simulate_linear_cnn(x, eta=eta, steps=[1, 30, 300], init_std=1e-6, seed=0)
    for s, w in zip(run.steps, run.weights):
        e = energy.energy_profile(w, u, init_weight=run.init_weight)
        r = torch.corrcoef(torch.stack([e, energy.theory_profile(lam2, s, eta=eta)]))[0, 1]
        assert r >= 0.99, (s, float(r))
    # early the profile follows λ (e ∝ tλ), late it has moved toward 1/λ: the formula is not trivially met
    e_early = energy.energy_profile(run.weights[0], u, init_weight=run.init_weight)
    e_late = energy.energy_profile(run.weights[-1], u, init_weight=run.init_weight)
    lam = lam2.sqrt()
    assert torch.corrcoef(torch.stack([e_early, lam]))[0, 1] > 0.99
    assert torch.corrcoef(torch.stack([e_late, lam]))[0, 1] < 0.5
    assert run.losses[-1] < run.losses[0]


def test_simulation_fits_equal_direct_correlations():
    x = data.natural_crops(8, 10, channels=1, seed=0)
    x = x - x.mean()
    lam2, u = energy.patch_pca(x, 3, center=False)
    eta = 0.9 / float(lam2.max())
    gd = dict(filters=32, groups=2, eta=eta, steps=[1, 20], init_std=1e-6, seed=0)
    fixed = energy.simulate_linear_cnn(x, **gd)
    free = energy.simulate_linear_cnn(x, train_readout=True, **gd)
    rows = energy.simulation_fits({"fixed": fixed, "free": free}, u, lam2)
    assert [r["steps"] for r in rows] == [1, 20]
    for k, (row, s) in enumerate(zip(rows, fixed.steps)):
        assert row["t = η·steps"] == eta * s
        th = energy.theory_profile(lam2, s, eta=eta)
        for key, run in [("r (fixed)", fixed), ("r (free)", free)]:
            e = energy.energy_profile(run.weights[k], u, init_weight=run.init_weight)
            assert row[key] == pytest.approx(float(torch.corrcoef(torch.stack([e, th]))[0, 1]), abs=1e-12)
    other = energy.simulate_linear_cnn(x, **{**gd, "steps": [1]})
    with pytest.raises(ValueError, match="other steps"):
        energy.simulation_fits({"fixed": fixed, "other": other}, u, lam2)
    with pytest.raises(ValueError, match="at least one"):
        energy.simulation_fits({}, u, lam2)


def _tiny_cnn(in_channels: int, num_classes: int, width: float = 1.0) -> torch.nn.Module:
    c = max(1, round(4 * width))
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, c, 3, bias=False),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(c, num_classes),
    )


def test_train_with_profiles_equals_a_hand_written_run():
    from featlearn import train

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 8, 8, generator=g), torch.randint(0, 3, (24,), generator=g)
    xt, yt = torch.randn(10, 1, 8, 8, generator=g), torch.randint(0, 3, (10,), generator=g)
    _, u = energy.patch_pca(x, 3)
    # the whitening chapter's former train_cnn, written out
    torch.manual_seed(5)
    net = _tiny_cnn(1, 3, width=2.0)
    conv = net[0]
    w0 = conv.weight.detach().clone()
    profiles: list[torch.Tensor] = []
    hist = train.train_classifier(
        net,
        x,
        y,
        epochs=2,
        lr=0.1,
        batch_size=8,
        optimizer="sgd",
        x_test=xt,
        y_test=yt,
        seed=5,
        progress=False,
        on_epoch_end=lambda e, m: profiles.append(energy.energy_profile(conv.weight, u, init_weight=w0)),
    )
    sgd = dict(epochs=2, lr=0.1, batch_size=8, width=2.0, num_classes=3, seed=5, progress=False)
    run = energy.train_with_profiles(_tiny_cnn, x, y, u, x_test=xt, y_test=yt, **sgd)
    assert len(run.profiles) == 2 and all(torch.equal(a, b) for a, b in zip(run.profiles, profiles))
    assert run.test_accuracy == hist.test_accuracy[-1]
    assert run.train_accuracy == train.accuracy(net, x, y)
    assert run.filters == 8
    built: list[torch.nn.Module] = []

    def build(in_channels: int, num_classes: int, width: float = 1.0) -> torch.nn.Module:
        built.append(_tiny_cnn(in_channels, num_classes, width))
        return built[-1]

    frozen = energy.train_with_profiles(build, x, y, u, freeze_first=True, **sgd)
    assert frozen.profiles == [] and frozen.test_accuracy is None and 0 <= frozen.train_accuracy <= 1
    assert torch.equal(built[0][0].weight, w0)  # same init, first layer never moved
    assert not torch.equal(built[0][-1].weight, net[-1].weight)  # the rest did train


def test_fit_trend_rows_per_model_and_epoch():
    lam2 = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)
    early, late = energy.theory_profile(lam2, 0.3), energy.theory_profile(lam2, 3.0)
    rows = energy.fit_trend({"m": [early, late], "n": [late]}, lam2)
    assert [(r["model"], r["epoch"]) for r in rows] == [("m", 1), ("m", 2), ("n", 1)]
    for row, p, t in zip(rows, [early, late, late], [0.3, 3.0, 3.0]):
        assert row["r (formula fit)"] > 0.9999
        assert row["fitted t"] == pytest.approx(t, rel=0.05)
        assert row["tail energy, measured"] == pytest.approx(float(p[4] + p[5]) / 2)  # default: last third
        th = energy.theory_profile(lam2, float(row["fitted t"]))
        assert row["tail energy, formula"] == pytest.approx(float(th[4] + th[5]) / 2)
    one = energy.fit_trend({"m": [early]}, lam2, n_tail=1)
    assert one[0]["tail energy, measured"] == pytest.approx(float(early[-1]))
    with pytest.raises(ValueError, match="n_tail"):
        energy.fit_trend({"m": [early]}, lam2, n_tail=0)
