"""CNFA on W's row space, the centred ansatz, and the CNFA nulls (issue 19).

Each null is checked against constructed cases: an AGOP that satisfies the ansatz beats it,
one drawn from the null does not, and a rank-one W is matched by it whatever C is.
"""

import copy
import math

import matplotlib
import pandas as pd
import pytest
import torch
from torch import nn

from featlearn import agop, ansatz, claims, linalg, models, nulls, plots

matplotlib.use("Agg")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _dense(w, c, alpha, metric=linalg.pearson):
    """corr(WᵀW, (WᵀCW)^α) the direct way, on fan_in × fan_in matrices."""
    return metric(w.T @ w, linalg.matrix_power_psd(w.T @ c @ w, alpha))


@pytest.mark.parametrize("shape", [(6, 20), (20, 6), (9, 9)])
def test_sandwich_correlations_equal_the_dense_computation(shape):
    g = _gen(1)
    w = torch.randn(*shape, generator=g, dtype=torch.float64)
    a = torch.randn(shape[0], 2 * shape[0], generator=g, dtype=torch.float64)
    c = a @ a.T
    for metric, fn in (("pearson", linalg.pearson), ("cosine", linalg.cosine_similarity_matrices)):
        got = ansatz.sandwich_correlations(w, c, (1.0, 0.5), metric=metric)
        assert got[1.0] == pytest.approx(_dense(w, c, 1.0, fn), abs=1e-10)
        assert got[0.5] == pytest.approx(_dense(w, c, 0.5, fn), abs=1e-8)
    conv = nn.Conv2d(2, 5, 3).double()  # a layer is flattened as weight.flatten(1)
    c5 = torch.eye(5, dtype=torch.float64) + 0.1
    assert ansatz.sandwich_correlations(conv, c5)[1.0] == pytest.approx(
        _dense(conv.weight.detach().flatten(1), c5, 1.0), abs=1e-10
    )


def test_sandwich_correlations_refuse_bad_input():
    w = torch.randn(4, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="C must be"):
        ansatz.sandwich_correlations(w, torch.eye(5))
    with pytest.raises(ValueError, match="alpha"):
        ansatz.sandwich_correlations(w, torch.eye(4), (0.0,))
    with pytest.raises(ValueError, match="metrics"):
        ansatz.sandwich_correlations(w, torch.eye(4), metric="spearman")
    with pytest.raises(ValueError, match="zero"):
        ansatz.sandwich_correlations(torch.zeros(4, 7), torch.eye(4))


def test_rank_one_w_gives_one_for_any_c_and_the_null_matches_it():
    """Why effective rank matters: W = σ u vᵀ makes WᵀCW = (uᵀCu) WᵀW."""
    u, v = torch.randn(8, 1, dtype=torch.float64), torch.randn(1, 30, dtype=torch.float64)
    w = u @ v
    c = nulls.wishart(8, 3, generator=_gen(4))
    assert ansatz.sandwich_correlations(w, c)[1.0] == pytest.approx(1.0, abs=1e-9)
    draws = ansatz.cnfa_sandwich_null(w, m=8, n_draws=10, generator=_gen(2))
    base = claims.null("trained W, Wishart C", draws["pearson", 1.0])
    assert base.q05 == pytest.approx(1.0, abs=1e-9)
    assert not base.beaten_by(1.0, claims.at_least(0.9))  # a perfect value, matched by the null
    assert nulls.effective_rank(w) == pytest.approx(1.0)


def test_centred_ansatz_is_the_sandwich_of_the_weight_change():
    g = _gen(3)
    w0 = torch.randn(7, 18, generator=g, dtype=torch.float64)
    w = w0 + 0.3 * torch.randn(7, 18, generator=g, dtype=torch.float64)
    c = nulls.wishart(7, 12, generator=g)
    d = w - w0
    got = ansatz.centered_ansatz_correlations(w, w0, c, (1.0, 0.5))
    assert got[1.0] == pytest.approx(_dense(d, c, 1.0), abs=1e-10)
    assert got[0.5] == pytest.approx(_dense(d, c, 0.5), abs=1e-8)
    # differs from the uncentred ansatz: W0 is on both sides of that one
    assert got[1.0] != pytest.approx(ansatz.sandwich_correlations(w, c)[1.0], abs=1e-3)
    with pytest.raises(ValueError, match="zero"):
        ansatz.centered_ansatz_correlations(w, w, c)
    with pytest.raises(ValueError, match="same shape"):
        ansatz.centered_ansatz_correlations(w, w0[:, :5], c)


def test_centred_ansatz_removes_what_w_keeps_from_its_init():
    """A large init plus a learned change aligned with C: the centred ansatz sees the change.

    W0 is random and large, ΔW = (C^½ Q)ᵀ-shaped so that ΔWᵀCΔW ∝ (ΔWᵀΔW)² exactly:
    the centred ansatz at α = 1/2 is 1, while the uncentred one is dominated by W0.
    """
    g = _gen(5)
    c_out, d = 6, 24
    w0 = 10 * torch.randn(c_out, d, generator=g, dtype=torch.float64)
    dw = torch.randn(c_out, d, generator=g, dtype=torch.float64)
    c = dw @ dw.T  # then ΔWᵀCΔW = (ΔWᵀΔW)²
    assert ansatz.centered_ansatz_correlations(w0 + dw, w0, c, (0.5,))[0.5] == pytest.approx(1.0, abs=1e-9)
    assert ansatz.sandwich_correlations(w0 + dw, c, (0.5,))[0.5] < 0.99


@pytest.mark.parametrize("m", [5, 20])
def test_cnfa_sandwich_null_draws_equal_nulls_sandwich_null(m):
    layer = nn.Conv2d(3, 5, 3)
    for alpha in (1.0, 0.5):
        for metric, fn in (("pearson", linalg.pearson), ("cosine", linalg.cosine_similarity_matrices)):
            mine = ansatz.cnfa_sandwich_null(layer, m=m, n_draws=6, generator=_gen(7), metrics=(metric,))
            ref = nulls.sandwich_null(layer, m=m, alpha=alpha, n_draws=6, generator=_gen(7), metric=fn)
            assert torch.allclose(mine[metric, alpha], ref, atol=1e-9)
            fresh = ansatz.cnfa_sandwich_null(
                nulls.init_weights(layer, generator=_gen(8)), m=m, n_draws=6, generator=_gen(7)
            )
            ref = nulls.sandwich_null(
                nulls.init_weights(layer, generator=_gen(8)), m=m, alpha=alpha, n_draws=6, generator=_gen(7)
            )
            assert torch.allclose(fresh["pearson", alpha], ref, atol=1e-9)
    with pytest.raises(ValueError, match="n_draws"):
        ansatz.cnfa_sandwich_null(layer, m=5, n_draws=0)
    with pytest.raises(ValueError, match="m must"):
        ansatz.cnfa_sandwich_null(layer, m=0)


def test_an_aligned_c_beats_the_sandwich_null_and_a_random_c_does_not():
    g = _gen(11)
    c_out, d = 16, 36
    w = torch.randn(c_out, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    draws = ansatz.cnfa_sandwich_null(w, m=4 * c_out, n_draws=40, generator=_gen(12))
    base = claims.null("trained W, Wishart C (m = 4·c_out)", draws["pearson", 0.5])
    aligned = ansatz.sandwich_correlations(w, w @ w.T, (0.5,))[0.5]  # G = (WᵀW)², so G^½ = WᵀW
    assert aligned == pytest.approx(1.0, abs=1e-9)
    assert base.beaten_by(aligned, claims.at_least(0.9))
    stand_ins = [
        ansatz.sandwich_correlations(w, nulls.wishart(c_out, 4 * c_out, generator=_gen(100 + k)), (0.5,))[0.5]
        for k in range(20)
    ]
    assert sum(base.beaten_by(v, claims.at_least(0.0)) for v in stand_ins) <= 4


def test_init_layer_draws_from_the_models_own_init():
    van = models.VanillaCNN(1, 3, 8, width=16, init_std=5e-3)
    kept = van.features[2].weight.detach().clone()
    twin = models.init_layer(van, "features.2")
    draw = nulls.init_weights(twin, generator=_gen(1))
    w = torch.cat([draw().flatten() for _ in range(5)])
    # N(0, 0.005²); PyTorch's default (kaiming-uniform on fan-in 144) would have sd 0.048
    assert w.std().item() == pytest.approx(5e-3, rel=0.05)
    assert torch.equal(van.features[2].weight, kept)  # the model is not touched
    plain = models.build_model("vgg", 1, 3, 8, width=8, seed=0)
    bound = 1 / math.sqrt(1 * 9)
    w2 = nulls.init_weights(models.init_layer(plain, "features.0"), generator=_gen(2))()
    assert w2.abs().max().item() <= bound + 1e-7  # default kaiming-uniform(a=√5)
    assert models.init_rule(van) == ("normal", 5e-3) and models.init_rule(plain) == ("default",)
    with pytest.raises(TypeError, match="Conv2d"):
        models.init_layer(van, "classifier")


def test_init_layer_follows_torchvision_kaiming_normal_fan_out():
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    assert models.init_rule(net) == ("torchvision", "ResNet")
    draw = nulls.init_weights(models.init_layer(net, "layer4.1.conv1"), generator=_gen(3))
    w = draw()
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.02)


def test_reinitialize_is_seeded_leaves_the_model_and_rng_alone():
    net = models.build_model("resnet", 1, 3, 8, width=8, seed=0)
    before = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        net.stem[1].running_mean.fill_(3.0)
    state = torch.random.get_rng_state()
    a, b = models.reinitialize(net, seed=5), models.reinitialize(net, seed=5)
    c = models.reinitialize(net, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key in before:
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)
    assert not torch.equal(a.stem[0].weight, net.stem[0].weight)
    assert torch.equal(a.stem[1].running_mean, torch.zeros_like(a.stem[1].running_mean))
    van = models.VanillaCNN(1, 3, 8, width=32)
    assert models.reinitialize(van, seed=1).features[2].weight.std().item() == pytest.approx(5e-3, rel=0.05)
    with pytest.raises(TypeError, match="seed"):
        models.reinitialize(net, seed=1.5)


@pytest.fixture
def tiny_cnn():
    net = models.build_model("vgg", 1, 3, 8, width=4, seed=0).double().eval()
    x = torch.randn(6, 1, 8, 8, generator=_gen(9), dtype=torch.float64)
    return net, x


def test_ansatz_table_columns_equal_direct_measures(tiny_cnn):
    net, x = tiny_cnn
    ref = models.reinitialize(net, seed=3).eval()
    rows = ansatz.ansatz_table(net, x, reference=ref)
    cs = agop.patch_output_gops(net, x)
    for row in rows:
        layer = net.get_submodule(row["layer"])
        w = layer.weight.detach().flatten(1)
        w0 = ref.get_submodule(row["layer"]).weight.detach().flatten(1)
        c = cs[row["layer"]]
        g = agop.agop_from_output_gop(layer, c)
        assert row["c_out"] == w.shape[0]
        assert row["alpha=1/2"] == pytest.approx(
            linalg.pearson(w.T @ w, linalg.matrix_power_psd(g, 0.5)), abs=1e-8
        )
        assert row["cosine alpha=1"] == pytest.approx(
            linalg.cosine_similarity_matrices(w.T @ w, g), abs=1e-10
        )
        assert row["effective rank"] == pytest.approx(nulls.effective_rank(w))
        assert row["corr(C, I)"] == pytest.approx(linalg.pearson(c, torch.eye(len(c), dtype=c.dtype)))
        assert row["init CNFM vs CNFM"] == pytest.approx(linalg.pearson(w0.T @ w0, w.T @ w), abs=1e-10)
        assert row["centred alpha=1"] == pytest.approx(_dense(w - w0, c, 1.0), abs=1e-10)
    plain = ansatz.ansatz_table(net, x, reference=ref, centred=False)
    assert not any(k.startswith("centred") for k in plain[0])


def test_cnfa_nulls_frame_is_seeded_and_has_every_kind(tiny_cnn):
    net, _ = tiny_cnn
    ref = models.reinitialize(net, seed=3).eval()
    frame = ansatz.cnfa_nulls(net, reference=ref, n_draws=10, seed=4, labels={"arch": "vgg"})
    assert list(frame.columns) == ["arch", "layer", "null", "variant", "alpha", "metric", "draw", "value"]
    kinds = set(frame["null"])
    assert kinds == {
        f"{who}, Wishart C ({m})"
        for who in ("random init W", "trained W", "trained ΔW")
        for m in ("m = c_out", "m = 4·c_out")
    }
    n_layers = len(models.cnfa_layers(net))
    assert len(frame) == n_layers * 6 * 2 * 2 * 10  # layers × kinds × alphas × metrics × draws
    assert set(frame[frame["null"].str.startswith("trained ΔW")]["variant"]) == {"centred"}
    again = ansatz.cnfa_nulls(net, reference=ref, n_draws=10, seed=4, labels={"arch": "vgg"})
    pd.testing.assert_frame_equal(frame, again)
    other = ansatz.cnfa_nulls(net, reference=ref, n_draws=10, seed=5, labels={"arch": "vgg"})
    assert not frame["value"].equals(other["value"])
    only = ansatz.cnfa_nulls(net, n_draws=10, trained=False)
    assert set(only["null"]) == {
        "random init W, Wishart C (m = c_out)",
        "random init W, Wishart C (m = 4·c_out)",
    }


def test_cnfa_init_null_measures_fresh_inits(tiny_cnn):
    net, x = tiny_cnn
    frame = ansatz.cnfa_init_null(net, x, n_draws=3, seed=2)
    layers = models.cnfa_layers(net)
    direct = ansatz.ansatz_table(models.reinitialize(net, seed=4).eval(), x, layers)  # draw 1: seed + 2
    got = frame[(frame["draw"] == 1) & (frame["metric"] == "pearson") & (frame["alpha"] == "alpha=1")]
    assert got["value"].tolist() == pytest.approx([r["alpha=1"] for r in direct])
    assert frame.groupby("draw")["value"].mean().nunique() == 3  # three different networks


def test_layer_mean_nulls_average_one_draw_per_layer_strictest_first():
    rows = []
    for layer, shift in (("a", 0.0), ("b", 0.2)):
        for kind, base in (("low", 0.1), ("high", 0.5)):
            for d in range(10):
                rows.append(
                    dict(
                        layer=layer,
                        null=kind,
                        variant="ansatz",
                        alpha="alpha=1",
                        metric="pearson",
                        draw=d,
                        value=base + shift + 0.01 * d,
                    )
                )
    frame = pd.DataFrame(rows)
    out = ansatz.layer_mean_nulls(frame, alpha=1.0)
    assert [b.kind for b in out] == ["high", "low"]
    assert out[0].draws == pytest.approx(tuple(0.6 + 0.01 * d for d in range(10)))
    with pytest.raises(ValueError, match="one draw per layer"):
        ansatz.layer_mean_nulls(frame.drop(index=0), alpha=1.0)
    with pytest.raises(ValueError, match="no null draws"):
        ansatz.layer_mean_nulls(frame, alpha=0.5)


def test_cnfa_over_training_reports_rank_isotropy_and_centred(tiny_cnn):
    _, x = tiny_cnn
    net = models.build_model("vanilla", 1, 3, 8, width=4, seed=1)
    y = torch.arange(6) % 3
    rows, _, init = ansatz.cnfa_over_training(
        net, x.float(), y, x.float(), epochs=1, lr=1e-2, batch_size=3, seed=0, progress=False
    )
    keys = set(rows[0])
    for k in (
        "init effective rank",
        "trained effective rank",
        "init corr(C, I)",
        "trained corr(C, I)",
        "trained cosine alpha=1",
        "centred alpha=1",
        "centred alpha=1/2",
        "init CNFM vs CNFM",
    ):
        assert k in keys, k
    assert rows[0]["trained effective rank"] == pytest.approx(nulls.effective_rank(net.features[0]))


def test_plot_cnfa_nulls_draws_one_panel_per_network():
    values = pd.DataFrame(
        dict(net=["a", "a", "b"], layer=["l0", "l1", "l0"], trained=[0.9, 0.8, 0.7], init=[0.5, 0.6, 0.4])
    )
    nul = pd.DataFrame(
        [
            dict(net=n, layer=lay, null=k, value=0.5 + 0.01 * d)
            for n, lay in (("a", "l0"), ("a", "l1"), ("b", "l0"))
            for k in ("x", "y")
            for d in range(10)
        ]
    )
    fig = plots.plot_cnfa_nulls(
        values, nul, panel="net", value_columns={"trained": "trained", "init": "at init"}
    )
    assert sum(ax.get_visible() for ax in fig.axes) == 2
    with pytest.raises(ValueError, match="empty"):
        plots.plot_cnfa_nulls(values.iloc[:0], nul, panel="net", value_columns={"trained": "t"})
