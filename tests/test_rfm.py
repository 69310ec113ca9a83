"""featlearn.rfm: the predictor's patch AGOP against brute-force autograd, and fit/predict."""

import pytest
import torch
import torch.nn.functional as F
from kernels_reference import reference_conv_kernels

from featlearn import rfm


def test_predictor_agop_matches_brute_force_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 7, 7, generator=g, dtype=torch.float64)
    xt = torch.rand(4, 1, 7, 7, generator=g, dtype=torch.float64)
    alpha = torch.randn(4, 2, generator=g, dtype=torch.float64)
    a = torch.randn(9, 9, generator=g, dtype=torch.float64)
    m = a @ a.T / 9
    fast = rfm.predictor_patch_agop(x, xt, alpha, q=3, depth=2, M=m, block_size=3)
    brute = torch.zeros(9, 9, dtype=torch.float64)
    for i in range(len(x)):  # every patch of image i as its own variable, all-pairs kernel, jacrev
        p0 = F.unfold(x[i:i + 1], 3).transpose(1, 2)

        def f(p, i=i):
            return reference_conv_kernels(x[i:i + 1], xt, q=3, depth=2, M=m, px=p)[1] @ alpha

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
    with pytest.raises(RuntimeError, match="fit"):
        rfm.ConvRFM().predict(x)
