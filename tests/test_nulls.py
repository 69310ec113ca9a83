"""Nulls against constructed cases: a model that satisfies the ansatz beats its null, a random one does not."""

import math

import pytest
import torch
from torch import nn

from featlearn import claims, linalg, nulls


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_wishart_is_psd_with_rank_m_and_tends_to_identity():
    c = nulls.wishart(30, 5, generator=_gen())
    evals = torch.linalg.eigvalsh(c)
    assert torch.allclose(c, c.T) and evals.min() > -1e-10
    assert int((evals > 1e-8).sum()) == 5
    big = nulls.wishart(10, 200_000, generator=_gen())
    assert torch.allclose(big, torch.eye(10, dtype=big.dtype), atol=0.02)


def test_init_weights_draws_from_the_layer_init_and_leaves_it_alone():
    layer = nn.Conv2d(3, 16, 3)
    before = layer.weight.detach().clone()
    draw = nulls.init_weights(layer, generator=_gen(1))
    w1, w2 = draw(), draw()
    assert w1.shape == layer.weight.shape and not torch.equal(w1, w2)
    assert torch.equal(layer.weight, before)
    bound = 1 / math.sqrt(3 * 9)  # kaiming_uniform(a=√5) on a 27-wide fan-in
    assert w1.abs().max() <= bound + 1e-7 and w1.abs().max() > 0.8 * bound
    again = nulls.init_weights(layer, generator=_gen(1))
    assert torch.equal(again(), w1)  # deterministic under the generator
    with pytest.raises(TypeError, match="reset_parameters"):
        nulls.init_weights(nn.ReLU())


def test_sandwich_null_is_beaten_by_a_gradient_aligned_agop_and_not_by_a_random_one():
    g = _gen(0)
    c_out, d = 32, 60
    w = torch.randn(c_out, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    draws = nulls.sandwich_null(w, m=c_out, n_draws=30, generator=_gen(1))
    assert draws.shape == (30,) and draws.dtype == torch.float64
    base = claims.null("trained W, Wishart C", draws)
    # an AGOP that satisfies the ansatz exactly: G = (W^T W)^2 (C = W W^T), corr(W^T W, G^½) = 1
    aligned = linalg.pearson(w.T @ w, linalg.gram_power(w.T @ w, 0.5))  # factor B = WᵀW
    assert aligned > 0.999 and base.beaten_by(aligned, claims.at_least(0.9))
    # a C drawn from the null itself does not beat it (a draw far below the 95th pct)
    own = nulls.sandwich_null(w, m=c_out, n_draws=1, generator=_gen(99))[0]
    lucky = float(own)
    assert lucky < base.q95 + 0.05
    below = sorted(base.draws)[len(base.draws) // 2]
    assert not base.beaten_by(below, claims.at_least(0.0))


def test_sandwich_null_with_a_rank_one_w_is_perfect_whatever_c():
    u = torch.randn(8, 1, dtype=torch.float64)
    v = torch.randn(1, 20, dtype=torch.float64)
    draws = nulls.sandwich_null(u @ v, m=8, alpha=1.0, n_draws=10, generator=_gen())
    assert torch.allclose(draws, torch.ones(10, dtype=torch.float64))  # why rank matters
    assert nulls.effective_rank(u @ v) == pytest.approx(1.0)
    assert nulls.effective_rank(torch.eye(6)) == pytest.approx(6.0)


def test_sandwich_null_with_fresh_weights_draws_a_new_w_each_time():
    layer = nn.Linear(12, 6)
    fresh = nulls.sandwich_null(
        nulls.init_weights(layer, generator=_gen(2)), m=6, n_draws=10, generator=_gen(3)
    )
    fixed = nulls.sandwich_null(layer, m=6, n_draws=10, generator=_gen(3))
    assert not torch.allclose(fresh, fixed)
    with pytest.raises(ValueError, match="n_draws"):
        nulls.sandwich_null(layer, m=6, n_draws=0)
    with pytest.raises(ValueError, match="m must"):
        nulls.sandwich_null(layer, m=0)


def test_shuffled_labels_keep_the_marginals_and_break_the_pairing():
    y = torch.arange(100) % 7
    s = nulls.shuffled_labels(y, generator=_gen())
    assert torch.equal(torch.bincount(s), torch.bincount(y)) and (s != y).float().mean() > 0.5


@pytest.mark.parametrize("kind", ["uniform", "exponential"])
def test_random_decreasing_profiles_decrease_and_sum_to_one(kind):
    p = nulls.random_decreasing_profiles(9, 50, kind=kind, generator=_gen())
    assert p.shape == (50, 9) and torch.allclose(p.sum(1), torch.ones(50, dtype=p.dtype))
    assert (p[:, 1:] <= p[:, :-1]).all()
    with pytest.raises(ValueError, match="kind"):
        nulls.random_decreasing_profiles(9, 5, kind="beta")


def test_wishart_isotropy_matches_its_closed_form():
    from featlearn import isotropy

    # corr(C, I) of a d×d Wishart with m dof → 1/sqrt(1 + d/m) for large d
    few = isotropy.wishart_isotropy(32, 32, n_draws=10, generator=_gen(1))["corr_identity"]
    many = isotropy.wishart_isotropy(32, 128, n_draws=10, generator=_gen(1))["corr_identity"]
    assert few.shape == (10,) and float(few.mean()) == pytest.approx(1 / math.sqrt(2), abs=0.05)
    assert float(many.mean()) == pytest.approx(1 / math.sqrt(1.25), abs=0.05)


@pytest.mark.parametrize("shape", [(5, 12), (12, 5)])
def test_gram_powers_and_gram_pearson_match_the_dense_computation(shape):
    b = torch.randn(*shape, generator=_gen(4), dtype=torch.float64)
    dense = b.T @ b
    evals, v = torch.linalg.eigh(dense)
    for a, p in linalg.gram_powers(b, (1.0, 0.5, 2.0)).items():
        want = (v * evals.clamp_min(0) ** a) @ v.T
        assert torch.allclose(p, want, atol=1e-9), a
    assert torch.allclose(linalg.gram_power(b, 0.5), linalg.matrix_power_psd(dense, 0.5), atol=1e-9)
    a2 = torch.randn(*shape, generator=_gen(5), dtype=torch.float64)
    assert linalg.gram_pearson(a2, b) == pytest.approx(linalg.pearson(a2.T @ a2, dense), abs=1e-12)
