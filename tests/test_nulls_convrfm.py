"""ConvRFM's nulls: edge-likeness, random metrics, shuffled-label machines, learning curves.

Each null is checked against a constructed case that must beat it and one that must not.
"""

import matplotlib
import pytest
import torch

from featlearn import claims, linalg, nulls, plots, rfm

matplotlib.use("Agg")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _metric_from(vectors):
    """A PSD metric whose top eigenvectors are ``vectors`` (rows), in that order."""
    q, _ = torch.linalg.qr(vectors.T.double())
    d = q.shape[0]
    full, _ = torch.linalg.qr(torch.cat([q, torch.eye(d, dtype=torch.float64)], 1))
    evals = torch.cat([torch.tensor([10.0, 9.0, 8.0])[: q.shape[1]], torch.full((d - q.shape[1],), 0.1)])
    full[:, : q.shape[1]] = q
    return (full * evals) @ full.T


def test_edge_likeness_separates_edge_and_blur_metrics():
    dx = torch.tensor([[-1.0, 0, 1]] * 3).flatten()  # horizontal gradient: sums to zero
    dy = torch.tensor([[-1.0, 0, 1]] * 3).T.flatten()
    lap = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]]).flatten()
    edges = _metric_from(torch.stack([dx, dy, lap]))
    assert rfm.edge_likeness(edges, 1, 3) == pytest.approx(1.0, abs=1e-9)
    blur = _metric_from(torch.ones(1, 9))
    assert rfm.edge_likeness(blur, 1, 3, k=1) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"\(9, 9\)"):
        rfm.edge_likeness(torch.eye(8), 1, 3)
    with pytest.raises(ValueError, match="k must be"):
        rfm.edge_likeness(edges, 1, 3, k=10)


def test_random_metrics_null_is_beaten_by_an_edge_metric_and_not_by_its_own_draws():
    r = rfm.random_metrics(9, 400, generator=_gen(1))
    assert r.shape == (400, 9, 9) and torch.allclose(
        r.diagonal(dim1=1, dim2=2).sum(-1), torch.tensor(9.0).double()
    )
    assert torch.linalg.eigvalsh(r[0]).min() > 0 and torch.allclose(r, r.transpose(1, 2))
    assert torch.equal(r[:3], rfm.random_metrics(9, 3, generator=_gen(1)))  # deterministic
    draws = torch.tensor([rfm.edge_likeness(m, 1, 3) for m in r])
    assert draws.mean() == pytest.approx(1 - 1 / 9, abs=0.02)  # uniformly random directions
    base = claims.null("random metric", draws[:20])
    dx = torch.tensor([[-1.0, 0, 1]] * 3)
    edges = _metric_from(torch.stack([dx.flatten(), dx.T.flatten(), torch.tensor([1.0, -2, 1] * 3)]))
    rule = claims.at_least(0.9)
    assert base.beaten_by(rfm.edge_likeness(edges, 1, 3), rule)
    # fresh draws of the null itself beat its 95th percentile only about 5% of the time
    assert sum(base.beaten_by(float(v), rule) for v in draws[20:]) <= 0.15 * 380


def _bar_task(n, seed):
    """Class = which channel carries a vertical bar; the other channel is noise only."""
    g = _gen(seed)
    y = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 2, 8, 8, generator=g)
    cols = torch.randint(1, 7, (n,), generator=g)
    for i in range(n):
        x[i, int(y[i]), :, int(cols[i])] += 1.0
    return x, y


def test_shuffled_label_machines_are_paired_with_the_real_ones_and_lose_the_label_direction():
    x, y = _bar_task(48, 0)
    xv, yv = _bar_task(24, 1)
    kw = dict(n=32, n_draws=10, seed=3, q=3, depth=1, iterations=1, progress=False)
    real = rfm.subset_fits(x, y, xv, yv, **kw)
    shuf = rfm.subset_fits(x, y, xv, yv, shuffle_labels=True, **kw)
    assert len(real) == len(shuf) == 10
    for a, b in zip(real, shuf):  # the same images, labels permuted
        assert torch.equal(a.X_train_, b.X_train_)
    again = rfm.subset_fits(x, y, xv, yv, shuffle_labels=True, **kw)
    assert all(torch.equal(a.learned_metric_, b.learned_metric_) for a, b in zip(shuf, again))
    # A vertical bar is constant down a column: the label-relevant metric weights the
    # bar-shaped direction in both channels. The real machines' metrics are closer to the
    # metric of a real-label machine fitted on all the data than the shuffled ones are.
    ref = rfm.ConvRFM(q=3, depth=1, iterations=1, progress=False).fit(x, y, xv, yv).learned_metric_
    r_real = torch.tensor([linalg.pearson(m.learned_metric_, ref) for m in real])
    r_shuf = torch.tensor([linalg.pearson(m.learned_metric_, ref) for m in shuf])
    base = claims.null("shuffled-label ConvRFM", r_shuf)
    assert base.beaten_by(float(r_real.median()), claims.at_least(0.0))
    assert not base.beaten_by(float(r_shuf.median()), claims.at_least(0.0))


def test_subset_fits_refuses_bad_sizes_and_unknown_settings():
    x, y = _bar_task(10, 0)
    with pytest.raises(ValueError, match="between 2 and 10"):
        rfm.subset_fits(x, y, x, y, n=11, n_draws=1)
    with pytest.raises(ValueError, match="n_draws"):
        rfm.subset_fits(x, y, x, y, n=5, n_draws=0)
    with pytest.raises(TypeError, match="iteratons"):  # a misspelt ConvRFM setting
        rfm.subset_fits(x, y, x, y, n=5, n_draws=1, q=3, depth=1, iteratons=1)


def test_learning_curve_rows_come_from_the_fits_monitor_accuracies():
    x, y = _bar_task(40, 0)
    xv, yv = _bar_task(16, 1)
    xt, yt = _bar_task(20, 2)
    full = rfm.ConvRFM(q=3, depth=1, iterations=1, progress=False).fit(x, y, xv, yv, monitor=(xt, yt))
    frame = rfm.learning_curve(
        x, y, xv, yv, (xt, yt), [8, 16], n_draws=2, q=3, depth=1, iterations=1, progress=False, fitted=[full]
    )
    assert list(frame["n"]) == [8, 8, 16, 16, 40] and list(frame["draw"]) == [0, 1, 0, 1, 0]
    row = frame.iloc[-1]
    assert row["fixed CNTK"] == full.history_[0].monitor_accuracy
    assert row["ConvRFM"] == pytest.approx(full.score(xt, yt))
    assert torch.allclose(
        torch.tensor(frame["gain"].values), torch.tensor((frame["ConvRFM"] - frame["fixed CNTK"]).values)
    )
    assert frame.iloc[-1]["best iteration"] == full.best_iteration_  # the fit's own choice
    two = rfm.ConvRFM(q=3, depth=1, iterations=2, progress=False).fit(x, y, xv, yv, monitor=(xt, yt))
    first = rfm.curve_point(two, iterations=0)  # truncated to the fixed kernel
    assert first["best iteration"] == 0 and first["ConvRFM"] == first["fixed CNTK"] and first["gain"] == 0
    with pytest.raises(ValueError, match="monitor"):
        rfm.curve_point(rfm.ConvRFM(q=3, depth=1, iterations=0, progress=False).fit(x, y, xv, yv))
    fig = plots.plot_learning_curve({"bars": frame})
    assert len(fig.axes) == 1 and fig.axes[0].get_xscale() == "log"


def test_plot_metric_nulls_draws_one_panel_per_metric():
    fig = plots.plot_metric_nulls(
        {
            "edge": {"learned": 0.9, "shuffled": torch.rand(10)},
            "corr": {"learned": 0.5, "random": [0.1] * 10},
        },
        xlabels={"edge": "DC-free fraction"},
    )
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "DC-free fraction"
    with pytest.raises(ValueError, match="1 to 3"):
        plots.plot_metric_nulls({str(i): {"a": 1.0} for i in range(4)})


def test_first_metrics_are_what_a_one_iteration_fit_to_those_labels_learns():
    x, y = _bar_task(30, 0)
    xv, yv = _bar_task(12, 1)
    model = rfm.ConvRFM(q=3, depth=2, iterations=2, n_agop=8, progress=False).fit(x, y, xv, yv)
    same = model.first_metrics([(model.y_train_, model.y_val_)])[0]
    assert torch.allclose(same, model.history_[1].M, rtol=1e-6, atol=1e-9)
    null = rfm.shuffled_label_metrics(model, 2, seed=5, progress=False)
    g = _gen(5)
    ys, yvs = nulls.shuffled_labels(y, generator=g), nulls.shuffled_labels(yv, generator=g)
    refit = rfm.ConvRFM(q=3, depth=2, iterations=1, n_agop=8, progress=False).fit(x, ys, xv, yvs)
    assert torch.allclose(null[0], refit.history_[1].M, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(null[0], same, atol=1e-3)  # other labels, another metric
    with pytest.raises(ValueError, match="labels must be"):
        model.first_metrics([(y[:5], yv)])
    with pytest.raises(ValueError, match="n_draws"):
        rfm.shuffled_label_metrics(model, 0)


def test_synthetic_tasks_follow_the_official_generators():
    from featlearn import data

    x = torch.ones(400, 1, 28, 28)
    out = data.paste_in_noise(x, 42, seed=0)
    ones = (out == 1).all(1)
    rows = ones.any(2).float().argmax(1)  # first row of the pasted block
    cols = ones.any(1).float().argmax(1)
    assert rows.max() == 13 and cols.max() == 13 and rows.min() == 0  # randint(high=42 - 28)
    noise = out[~ones.unsqueeze(1).expand_as(out)]
    assert abs(float(noise.std()) - 0.5) < 0.01  # 0.5·N(0, 1), drawn in code
    assert data.STAR[5].tolist() == [0, 1, 1, 1, 1, 1, 0] and data.STAR[6].tolist() == [0, 1, 1, 0, 1, 1, 0]
    assert int(data.STAR.sum()) == 28
