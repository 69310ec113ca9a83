"""Isotropy of pre-activation AGOPs, and the "sandwich" baselines of the DNFA critique.

Why: G = W^T P W, so the alpha = 1 ansatz holds iff P is isotropic on range(W) and the
alpha = 1/2 one iff P is proportional to W W^T there; these measures and baselines say
how much of an ansatz correlation P explains and how much W alone does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from featlearn import linalg
from featlearn._validation import check_square
from featlearn.agop import weight_matrix

__all__ = ["isotropy_measures", "sandwich_baselines"]


def isotropy_measures(
    p: torch.Tensor,
    w: torch.Tensor | nn.Module | None = None,
    *,
    restrict_to_range: bool = False,
    rtol: float = 1e-10,
) -> dict[str, float]:
    """How far a pre-activation AGOP P is from isotropic (P ∝ I), and from P ∝ W W^T.

    Why: G = W^T P W, so the alpha=1 ansatz W^T W ∝ G holds iff P ∝ I on range(W), and the
    alpha=1/2 ansatz iff P ∝ W W^T on range(W); these numbers say how close each is.

    Parameters
    ----------
    p
        Symmetric PSD (d, d) matrix (a C or P from this module).
    w
        Optional weight (d, d_in) (or layer) of the same layer, so that P lives in its output
        space. Enables ``corr_left_gram`` and ``restrict_to_range``.
    restrict_to_range
        If True (needs ``w``), replace P by Q^T P Q and W W^T by Q^T W W^T Q, where Q is an
        orthonormal basis of range(W) (left singular vectors with singular value >
        ``rtol`` * largest). Only that part of P affects G = W^T P W.
    rtol
        Relative threshold for "positive" eigenvalues and for the rank of W.

    Returns
    -------
    dict[str, float]
        ``dim``: dimension d (or rank of W when restricted).
        ``corr_identity``: :func:`featlearn.linalg.pearson` (P, I) (1 iff P = cI, c > 0).
        ``isotropy_distance``: |P - (tr P / d) I|_F / |P|_F, 0 iff isotropic, at most
        sqrt(1 - 1/d) for PSD P (attained by rank 1).
        ``eigen_spread``: lambda_max / lambda_min over eigenvalues > rtol * lambda_max
        (1 for any multiple of a projector, including rank 1).
        ``condition_number``: lambda_max / lambda_min over all eigenvalues (inf if
        lambda_min <= rtol * lambda_max).
        ``participation_ratio``: (sum lambda)^2 / sum lambda^2, in [1, d]; d iff isotropic.
        ``corr_left_gram`` (only with ``w``): linalg.pearson(P, W W^T).
    """
    p = check_square(p, "P").detach().to(torch.float64)
    p = (p + p.T) / 2
    d = p.shape[0]
    wm = None
    if w is not None:
        wm = weight_matrix(w).to(device=p.device, dtype=torch.float64)
        if wm.shape[0] != d:
            raise ValueError(f"W must have {d} rows (the dimension of P), got shape {tuple(wm.shape)}")
    if restrict_to_range:
        if wm is None:
            raise ValueError("restrict_to_range=True needs the weight w")
        u, s, _ = torch.linalg.svd(wm, full_matrices=False)
        rank = int((s > rtol * s.max()).sum()) if s.numel() and s.max() > 0 else 0
        if rank == 0:
            raise ValueError("W is zero; its range is empty")
        q = u[:, :rank]
        p = q.T @ p @ q
        wm = q.T @ wm
        d = rank
    pnorm = p.norm()
    if pnorm == 0:
        raise ValueError("P is zero; isotropy measures are undefined")
    evals = torch.linalg.eigvalsh(p)
    lmax = evals.max()
    eye = torch.eye(d, dtype=torch.float64, device=p.device)
    positive = evals[evals > rtol * lmax]
    lmin_all = evals.min()
    result = {
        "dim": float(d),
        "corr_identity": linalg.pearson(p, eye) if d > 1 else float("nan"),
        "isotropy_distance": float((p - (torch.trace(p) / d) * eye).norm() / pnorm),
        "eigen_spread": float(lmax / positive.min()) if positive.numel() else float("nan"),
        "condition_number": float(lmax / lmin_all) if lmin_all > rtol * lmax else float("inf"),
        "participation_ratio": float(evals.clamp_min(0).sum() ** 2 / (evals.clamp_min(0) ** 2).sum()),
    }
    if wm is not None:
        result["corr_left_gram"] = linalg.pearson(p, wm @ wm.T)
    return result


def sandwich_baselines(
    w: torch.Tensor | nn.Module,
    p: torch.Tensor,
    alphas: Sequence[float] = (1.0, 0.5),
    *,
    n_draws: int = 5,
    generator: torch.Generator | None = None,
) -> dict[str, dict[float, float]]:
    """corr(W^T W, (W^T X W)^alpha) for the real P and for stand-ins X.

    Why: G = W^T P W is a "sandwich" of W, so part of any ansatz correlation comes from W
    alone. This measures how much, with X = P (the real thing), X = I, X a random Wishart
    matrix (Z Z^T / d, Z Gaussian d×d) and X = P with its rows and columns shuffled by a
    random permutation (same spectrum and diagonal values, alignment with W destroyed).
    Random stand-ins are averaged over ``n_draws`` draws. Each power is taken through a
    factor B with B^T B = W^T X W, on the smaller side (no d_in × d_in eigendecomposition).

    Returns
    -------
    dict
        ``{"P": {alpha: corr}, "I": ..., "Wishart": ..., "shuffled P": ...}``.
    """
    wm = weight_matrix(w).to(torch.float64)
    p = check_square(p, "P").detach().to(device=wm.device, dtype=torch.float64)
    d = wm.shape[0]
    if p.shape[0] != d:
        raise ValueError(f"P must be ({d}, {d}) for a weight with {d} rows, got {tuple(p.shape)}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    feat = wm.T @ wm
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    root_p = linalg.matrix_power_psd(p, 0.5)

    def corr(b: torch.Tensor) -> dict[float, float]:
        """b is a factor with b^T b = W^T X W."""
        return {float(a): linalg.pearson(feat, linalg.gram_power(b, a)) for a in alphas}

    def averaged(make_factor: Callable[[], torch.Tensor]) -> dict[float, float]:
        draws = [corr(make_factor()) for _ in range(n_draws)]
        return {a: sum(dr[a] for dr in draws) / n_draws for a in draws[0]}

    def wishart() -> torch.Tensor:  # X = Z Z^T / d, factor Z^T W / sqrt(d)
        z = torch.randn(d, d, generator=gen, dtype=torch.float64).to(wm.device)
        return z.T @ wm / math.sqrt(d)

    def shuffled() -> torch.Tensor:  # X = P[perm][:, perm], factor P^(1/2)[perm][:, perm] W
        perm = torch.randperm(d, generator=gen).to(wm.device)
        return root_p[perm][:, perm] @ wm

    return {
        "P": corr(root_p @ wm),
        "I": corr(wm),
        "Wishart": averaged(wishart),
        "shuffled P": averaged(shuffled),
    }
