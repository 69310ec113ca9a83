"""featlearn.rfm: the predictor's patch AGOP against brute-force autograd, and fit/predict."""

import pytest
import torch
import torch.nn.functional as F

from featlearn import linalg, rfm
from featlearn._validation import NotFittedError
from kernels_reference import reference_conv_kernels


def test_predictor_agop_matches_brute_force_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 7, 7, generator=g, dtype=torch.float64)
    xt = torch.rand(4, 1, 7, 7, generator=g, dtype=torch.float64)
    alpha = torch.randn(4, 2, generator=g, dtype=torch.float64)
    a = torch.randn(9, 9, generator=g, dtype=torch.float64)
    m = a @ a.T / 9
    fast = rfm.predictor_patch_agop(x, xt, alpha, q=3, depth=2, M=m, block_size=2)  # blocks of x and of xt
    brute = torch.zeros(9, 9, dtype=torch.float64)
    for i in range(len(x)):  # every patch of image i as its own variable, all-pairs kernel, jacrev
        p0 = F.unfold(x[i : i + 1], 3).transpose(1, 2)

        def f(p, i=i):
            return reference_conv_kernels(x[i : i + 1], xt, q=3, depth=2, M=m, px=p)[1] @ alpha

        jac = torch.func.jacrev(f)(p0).reshape(2, -1, 9)  # (outputs, positions, d)
        brute += torch.einsum("cpd,cpe->de", jac, jac)
    brute /= len(x)
    assert torch.allclose(fast, brute, rtol=1e-8, atol=1e-12)


def test_fit_predict_on_a_separable_toy_problem():
    g = torch.Generator().manual_seed(1)
    n = 60
    y = torch.arange(n) % 2
    x = 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    x[y == 1, :, :, 3] += 1.0  # class 1: a vertical bar
    x[y == 0, :, 3, :] += 1.0  # class 0: a horizontal bar
    model = rfm.ConvRFM(q=3, depth=2, iterations=1, progress=False).fit(x[:40], y[:40])
    assert model.score(x[40:], y[40:]) == 1.0
    assert len(model.history_) == 2 and model.history_[1].M.shape == (9, 9)
    assert torch.allclose(model.history_[1].M.trace(), torch.tensor(9.0, dtype=torch.float64))
    expected = model.history_[model.best_iteration_ if model.best_iteration_ > 0 else -1].M
    assert torch.equal(model.learned_metric_, expected)


def test_bad_inputs():
    x, y = torch.rand(10, 1, 8, 8), torch.arange(10) % 2
    with pytest.raises(ValueError, match="λ >= 0"):
        rfm.ConvRFM(regs=(-1.0,)).fit(x, y)
    with pytest.raises(ValueError, match="1-D tensor of 10"):
        rfm.ConvRFM().fit(x, y[:5])
    with pytest.raises(ValueError, match="do not fit"):
        rfm.ConvRFM(q=5, depth=3, progress=False).fit(x, y)
    model = rfm.ConvRFM(depth=2, iterations=0, progress=False).fit(x, y)
    with pytest.raises(ValueError, match="images must be"):
        model.predict(torch.rand(2, 1, 9, 9))
    with pytest.raises(NotFittedError, match="fit"):
        rfm.ConvRFM().predict(x)


def test_fitted_attributes_raise_attribute_error_before_fit():
    """As in scikit-learn: hasattr() is False before fit, and the error names fit()."""
    machine, deep = rfm.ConvRFM(), rfm.DeepConvRFM(depth=2, q=3)
    assert not hasattr(machine, "learned_metric_")
    assert not hasattr(deep, "layer_val_accuracy_")
    with pytest.raises(AttributeError, match="fit"):
        machine.learned_metric_  # noqa: B018 (the property raises)
    with pytest.raises(ValueError, match="not fitted"):
        deep.predict(torch.rand(2, 1, 9, 9))


def test_deep_conv_rfm_takes_named_settings_only():
    deep = rfm.DeepConvRFM(depth=2, n_filters=4, q=5, iterations=2, n_agop=7, progress=False)
    machine = deep._layer_machine(1)
    assert (machine.q, machine.depth, machine.iterations, machine.n_agop) == (5, 1, 2, 7)
    with pytest.raises(TypeError):
        rfm.DeepConvRFM(depth=2, not_a_setting=1)


def _bars(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    x[y == 1, :, :, 3] += 1.0
    x[y == 0, :, 3, :] += 1.0
    return x, y


def test_deep_convrfm_layers_and_reuse():
    x, y = _bars(48, 2)
    first = rfm.ConvRFM(q=3, depth=2, iterations=1, progress=False).fit(x[:24], y[:24], x[24:36], y[24:36])
    deep = rfm.DeepConvRFM(depth=2, n_filters=4, q=3, iterations=1, progress=False)
    deep.fit(x[:24], y[:24], x[24:36], y[24:36], first_layer=first)
    assert deep.models_[0] is first and [m.depth for m in deep.models_] == [2, 1]
    assert deep.filters_[0].shape == (4, 1, 3, 3) and deep.models_[1].X_train_.shape == (24, 4, 6, 6)
    assert deep.score(x[36:], y[36:]) == 1.0
    assert deep.score(x[36:], y[36:], layer=0) == first.score(x[36:], y[36:])
    with pytest.raises(ValueError, match="first_layer"):
        rfm.DeepConvRFM(depth=3, q=3).fit(x[:24], y[:24], x[24:36], y[24:36], first_layer=first)
    with pytest.raises(ValueError, match="layers must be"):
        rfm.DeepConvRFM(depth=2, layers=3).fit(x, y)


def test_random_filters_have_the_metric_as_covariance():
    """W = G·M^{1/2}: the rows' covariance is M (checked with many filters)."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(9, 9, generator=g, dtype=torch.float64)
    m = a @ a.T / 9
    root = linalg.matrix_power_psd(m, 0.5)
    w = torch.randn(200_000, 9, generator=g, dtype=torch.float64) @ root
    assert torch.allclose(w.T @ w / len(w), m, atol=0.03 * m.abs().max())
    assert torch.allclose(root @ root, m, atol=1e-10)


def test_filter_helpers():
    m = torch.diag(torch.tensor([3.0, 2.0, 1.0] + [0.0] * 6, dtype=torch.float64))
    f, vals = rfm.top_filters(m, 2, 1, 3)
    assert f.shape == (2, 1, 3, 3) and torch.allclose(vals, torch.tensor([3.0, 2.0], dtype=torch.float64))
    assert f[0].flatten()[0].abs() == 1 and f[1].flatten()[1].abs() == 1
    flat = torch.ones(1, 1, 3, 3)
    edge = torch.tensor([[-1.0, 0, 1]] * 3)[None, None]
    frac = rfm.dc_free_fraction(torch.cat([flat, edge]))
    assert torch.allclose(frac, torch.tensor([0.0, 1.0]), atol=1e-6)
    rand = torch.randn(20000, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    assert abs(rfm.dc_free_fraction(rand).mean().item() - 8 / 9) < 0.01


def test_monitor_set_is_recorded_but_never_chooses():
    x, y = _bars(40, 3)
    xt, yt = _bars(20, 4)
    a = rfm.ConvRFM(q=3, depth=2, iterations=1, progress=False).fit(x[:30], y[:30], x[30:], y[30:])
    b = rfm.ConvRFM(q=3, depth=2, iterations=1, progress=False).fit(
        x[:30], y[:30], x[30:], y[30:], monitor=(xt, 1 - yt)
    )  # flipped labels
    assert all(h.monitor_accuracy is None for h in a.history_)
    assert all(h.monitor_accuracy is not None for h in b.history_)
    assert a.best_iteration_ == b.best_iteration_ and a.reg_ == b.reg_
    with pytest.raises(ValueError, match="power"):
        rfm.ConvRFM(power=0).fit(x, y)
    with pytest.raises(ValueError, match="monitor images"):
        rfm.ConvRFM(depth=2, progress=False).fit(x, y, monitor=(torch.rand(3, 1, 9, 9), yt[:3]))


def _toy(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g, dtype=torch.float64), torch.arange(n) % 2


@pytest.mark.parametrize("cls", [rfm.ConvRFM, rfm.DeepConvRFM])
def test_nan_pixels_are_refused_at_fit(cls):
    x, y = _toy()
    x[3, 0, 1, 1] = float("nan")  # was: NaN kernels, a LinAlgError or NaN predictions
    with pytest.raises(ValueError, match=r"X holds 1 non-finite value"):
        cls(depth=2, iterations=0, progress=False).fit(x, y)
    xv, yv = _toy(4, 1)
    xv[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"X_val holds 1 non-finite value"):
        cls(depth=2, iterations=0, progress=False).fit(_toy()[0], y, xv, yv)


@pytest.mark.parametrize("cls", [rfm.ConvRFM, rfm.DeepConvRFM])
@pytest.mark.parametrize("reg", [float("nan"), float("inf"), -1e-3])
def test_bad_ridge_values_are_refused_before_fitting(cls, reg):
    x, y = _toy()
    # was (NaN, inf): a Cholesky LinAlgError naming no cause
    with pytest.raises(
        ValueError, match=r"regs must be a non-empty list of finite ridge values.*bad: \["
    ) as err:
        cls(depth=2, iterations=0, regs=(1e-3, reg), progress=False).fit(x, y)
    assert str(reg) in str(err.value) and "e.g. regs=" in str(err.value)


def test_predictor_patch_agop_refuses_non_finite_inputs():
    x, _ = _toy(4)
    alpha = torch.ones(4, 2, dtype=torch.float64)
    alpha[0, 0] = float("nan")
    with pytest.raises(ValueError, match="alpha .* holds 1 non-finite"):
        rfm.predictor_patch_agop(x, x, alpha, q=3, depth=2)


def test_history_frame_rows_match_the_fit():
    x, y = _bars(40, 6)
    xt, yt = _bars(20, 7)
    model = rfm.ConvRFM(q=3, depth=2, iterations=2, progress=False)
    model.fit(x[:30], y[:30], x[30:], y[30:], monitor=(xt, yt))
    frame = model.history_frame()
    assert list(frame.index) == [0, 1, 2] and frame.index.name == "iteration"
    assert list(frame.columns) == ["λ (relative)", "train", "validation", "test"]
    assert set(frame["λ (relative)"]) <= set(model.regs)
    best = model.best_iteration_
    # independent: the chosen iteration's row is what score() and the fit's best attributes say
    assert frame.loc[best, "test"] == model.score(xt, yt)
    assert frame.loc[best, "validation"] == model.best_val_accuracy_
    assert frame.loc[best, "λ (relative)"] == model.reg_
    assert frame["validation"].max() == model.best_val_accuracy_
    assert frame.loc[best, "train"] == model.score(x[:30], y[:30])
    unmonitored = rfm.ConvRFM(q=3, depth=2, iterations=0, progress=False).fit(x[:30], y[:30], x[30:], y[30:])
    assert unmonitored.history_frame()["test"].isna().all()
    with pytest.raises(AttributeError, match="fit"):
        rfm.ConvRFM().history_frame()


def test_layers_frame_scores_every_layer():
    x, y = _bars(48, 8)
    deep = rfm.DeepConvRFM(depth=2, n_filters=3, q=3, iterations=1, progress=False)
    deep.fit(x[:24], y[:24], x[24:36], y[24:36])
    frame = deep.layers_frame(x[36:], y[36:])
    assert list(frame.index) == [0, 1] and frame.index.name == "layer"
    assert list(frame["CNTK depth"]) == [2, 1] and list(frame["input channels"]) == [1, 3]
    assert list(frame["validation"]) == deep.layer_val_accuracy_
    # layer 0 by hand: the first machine on the raw images; layer 1: on the convolved images
    assert frame.loc[0, "test"] == deep.models_[0].score(x[36:], y[36:])
    conv = F.conv2d(x[36:].to(deep.filters_[0]), deep.filters_[0])
    assert frame.loc[1, "test"] == deep.models_[1].score(conv, y[36:])
    assert list(frame["best iteration"]) == [m.best_iteration_ for m in deep.models_]


def test_plot_iterations_draws_one_line_per_machine_and_reference():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from featlearn import plots

    a = pd.DataFrame({"test": [0.5, 0.75, 0.8]}, index=pd.RangeIndex(3, name="iteration"))
    b = pd.DataFrame({"test": [0.25, 0.5]}, index=pd.RangeIndex(2, name="iteration"))
    fig = plots.plot_iterations({"A": a, "B": b}, reference={"CNN": 0.9}, title="t")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["A", "B", "CNN"]
    assert list(ax.lines[0].get_ydata()) == [50.0, 75.0, 80.0]
    assert list(ax.lines[1].get_xdata()) == [0, 1]
    assert list(ax.lines[2].get_ydata()) == [90.0, 90.0]
    assert ax.get_xlabel() == "ConvRFM iteration (0 = fixed CNTK)"
    assert ax.get_ylabel() == "test accuracy (%)" and ax.get_title() == "t"
    plt.close(fig)
    fig = plots.plot_iterations({"A": a.rename(columns={"test": "validation"})}, column="validation")
    assert len(fig.axes[0].lines) == 1 and fig.axes[0].get_ylabel() == "validation accuracy (%)"
    plt.close(fig)
