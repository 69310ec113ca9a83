"""Nulls: what a model that learned nothing scores on the same metric as a trained one.

Why: a correlation of 0.95 between W^T W and G^alpha is evidence of feature learning only
if random, untrained or shuffled-label stand-ins score lower. Each function here draws a
null ``n_draws`` times under one seeded generator and returns every draw (a 1-d float64
tensor), so that :func:`featlearn.claims.null` can judge a claim against its 95th
percentile.

The sandwich nulls exploit the form of the ansatz: the AGOP of a layer is G = W^T C W for
the gradient second moment C at its output (``agop.agop_from_output_gop``), so part of any
corr(W^T W, G^alpha) comes from W alone. Replacing C by a random Wishart matrix keeps that
part and removes everything the gradients know.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from featlearn import linalg
from featlearn.agop import weight_matrix

__all__ = [
    "wishart",
    "sandwich_null",
    "init_weights",
    "shuffled_labels",
    "random_decreasing_profiles",
    "effective_rank",
]


def _check_draws(n_draws: int) -> None:
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")


def _gen(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def wishart(d: int, m: int, *, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """A d×d Wishart matrix C = A A^T / m, A a d×m standard Gaussian matrix.

    Why: the stand-in for a gradient second moment that carries no information; m sets
    its rank and how far it is from isotropic (m → ∞ gives the identity).
    """
    if d < 1 or m < 1:
        raise ValueError(f"wishart needs d >= 1 and m >= 1, got d={d}, m={m}")
    a = torch.randn(d, m, generator=_gen(generator), dtype=dtype)
    return a @ a.T / m


def init_weights(layer: nn.Module, *, generator: torch.Generator | None = None) -> Callable[[], torch.Tensor]:
    """A function returning fresh draws of ``layer``'s weight from its own initialisation.

    Why: "a random W" must mean the distribution the network started from (PyTorch's
    ``reset_parameters``), not an arbitrary Gaussian. The layer itself is not touched; the
    draws are deterministic under ``generator`` (each reseeds a private RNG from it).
    """
    if not hasattr(layer, "reset_parameters") or not hasattr(layer, "weight"):
        raise TypeError(
            f"init_weights needs a layer with reset_parameters() and weight, got {type(layer).__name__}"
        )
    gen = _gen(generator)
    twin = copy.deepcopy(layer).cpu()

    def draw() -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (), generator=gen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            twin.reset_parameters()  # type: ignore[operator]
        return twin.weight.detach().clone()  # type: ignore[operator]

    return draw


def sandwich_null(
    weights: torch.Tensor | nn.Module | Callable[[], torch.Tensor],
    *,
    m: int,
    alpha: float = 1.0,
    n_draws: int = 20,
    generator: torch.Generator | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] = linalg.pearson,
) -> torch.Tensor:
    """corr(W^T W, (W^T C W)^alpha) for Wishart C with m degrees of freedom, n_draws times.

    Why: this is the ansatz correlation that W alone produces, with gradients that know
    nothing. A fixed ``weights`` (a trained layer or its weight) gives the "trained W,
    random C" null: it tests whether the gradients add anything to the trained W. A callable
    (:func:`init_weights`) gives a fresh W per draw: the "random W, random C" null.

    Parameters
    ----------
    weights
        A weight (c_out × fan_in after :func:`featlearn.agop.weight_matrix`), a layer, or a
        function returning a fresh weight per call.
    m
        Degrees of freedom of the Wishart C (the papers' nulls use m = c_out and 4·c_out).
    alpha
        Power of the AGOP (1 or 1/2 in the papers).
    metric
        The correlation (default Pearson, :func:`featlearn.linalg.pearson`).

    Returns
    -------
    torch.Tensor
        ``n_draws`` correlations (float64).
    """
    _check_draws(n_draws)
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    gen = _gen(generator)
    fixed = None if callable(weights) and not isinstance(weights, (torch.Tensor, nn.Module)) else weights
    out = torch.empty(n_draws, dtype=torch.float64)
    for i in range(n_draws):
        w = weight_matrix(fixed if fixed is not None else weights())  # type: ignore[operator]
        w = w.detach().to(device="cpu", dtype=torch.float64)
        c_out = w.shape[0]
        a = torch.randn(c_out, m, generator=gen, dtype=torch.float64)
        # W^T C W = B^T B with B = A^T W / sqrt(m): powers through the small side
        b = a.T @ w / math.sqrt(m)
        g = b.T @ b if alpha == 1 else linalg.gram_power(b, alpha)  # alpha = 1: no eigh needed
        out[i] = metric(w.T @ w, g)
    return out


def shuffled_labels(y: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``y`` with its rows permuted: the same label marginals, no relation to the inputs.

    Why: the null of an estimator that might learn from the inputs' statistics alone; fit
    it to these labels and measure the same thing.
    """
    if not isinstance(y, torch.Tensor) or y.ndim < 1:
        raise TypeError("y must be a tensor with at least one dimension")
    perm = torch.randperm(y.shape[0], generator=_gen(generator)).to(y.device)
    return y[perm]


def random_decreasing_profiles(
    k: int, n_draws: int, *, kind: str = "uniform", generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n_draws`` random decreasing profiles of length ``k``, each summing to one.

    Why: the null of an energy-profile fit. Any decreasing profile correlates with a
    decreasing theory curve; this says how well "decreasing" alone scores. ``kind`` is
    ``"uniform"`` (sorted U(0, 1)) or ``"exponential"`` (sorted Exp(1), heavier head).
    """
    _check_draws(n_draws)
    if k < 2:
        raise ValueError(f"a profile needs k >= 2 entries, got {k}")
    gen = _gen(generator)
    if kind == "uniform":
        x = torch.rand(n_draws, k, generator=gen, dtype=torch.float64)
    elif kind == "exponential":
        x = -torch.log1p(-torch.rand(n_draws, k, generator=gen, dtype=torch.float64))
    else:
        raise ValueError(f"kind must be 'uniform' or 'exponential', got {kind!r}")
    x = x.sort(dim=1, descending=True).values
    return x / x.sum(dim=1, keepdim=True)


def effective_rank(w: torch.Tensor | nn.Module) -> float:
    """Participation ratio of W's squared singular values: (Σσ²)² / Σσ⁴.

    Why: a rank-1 W makes W^T C W ∝ W^T W for any C, so a high ansatz correlation from a
    collapsed W says nothing about the gradients; this number shows the collapse.
    """
    s2 = torch.linalg.svdvals(weight_matrix(w).detach().to(torch.float64)) ** 2
    if float(s2.sum()) == 0.0:
        return 0.0
    return float(s2.sum() ** 2 / (s2**2).sum())
