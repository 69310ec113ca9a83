"""Isotropy of pre-activation AGOPs, and the "sandwich" nulls of the DNFA critique.

Why: G = W^T P W, so the alpha = 1 ansatz holds iff P is isotropic on range(W) and the
alpha = 1/2 one iff P is proportional to W W^T there; these measures and nulls say how
much of an ansatz correlation P explains and how much the (trained) W around it does.
Every random stand-in returns its draws, not a mean, so that a claim can be judged
against the null's 95th percentile (:func:`featlearn.claims.null`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from featlearn import linalg, nulls
from featlearn._validation import check_square
from featlearn.agop import weight_matrix

__all__ = [
    "isotropy_measures",
    "wishart_isotropy",
    "sandwich_correlations",
    "sandwich_draws",
    "sandwich_baselines",
    "swapped_layers",
    "paired_permutation_null",
]


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


def wishart_isotropy(
    d: int, m: int, *, n_draws: int = 10, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """corr(C, I) and the participation ratio of ``n_draws`` Wishart matrices C (d × d, m dof).

    Why: "P is far from isotropic" needs a yardstick; a Wishart matrix is the gradient
    second moment of a layer whose pre-activation gradients are i.i.d. Gaussian, so its
    isotropy measures say what a P without any structure would give at the same d.

    Returns
    -------
    dict
        ``corr_identity`` and ``participation_ratio``: float64 tensors of ``n_draws`` values
        (:func:`isotropy_measures` of each draw).
    """
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    corr, pr = torch.empty(n_draws, dtype=torch.float64), torch.empty(n_draws, dtype=torch.float64)
    for k in range(n_draws):
        meas = isotropy_measures(nulls.wishart(d, m, generator=gen))
        corr[k], pr[k] = meas["corr_identity"], meas["participation_ratio"]
    return {"corr_identity": corr, "participation_ratio": pr}


def _features(
    w: torch.Tensor | nn.Module, w0: torch.Tensor | nn.Module | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """W as float64 and the feature matrices: ``"WᵀW"``, and ``"ΔWᵀΔW"`` when W0 is given."""
    wm = weight_matrix(w).detach().to(torch.float64)
    feats = {"WᵀW": wm.T @ wm}
    if w0 is not None:
        w0m = weight_matrix(w0).detach().to(device=wm.device, dtype=torch.float64)
        if w0m.shape != wm.shape:
            raise ValueError(f"W0 must have W's shape {tuple(wm.shape)}, got {tuple(w0m.shape)}")
        dw = wm - w0m
        feats["ΔWᵀΔW"] = dw.T @ dw
    return wm, feats


def _check_alphas(alphas: Sequence[float]) -> list[float]:
    out = [float(a) for a in alphas]
    if not out or any(not math.isfinite(a) or a <= 0 for a in out):
        raise ValueError(f"alphas must be positive finite powers, got {list(alphas)}")
    return out


def sandwich_correlations(
    w: torch.Tensor | nn.Module,
    x: torch.Tensor,
    *,
    w0: torch.Tensor | nn.Module | None = None,
    alphas: Sequence[float] = (1.0, 0.5),
) -> dict[tuple[str, float], float]:
    """corr(F, (W^T X W)^alpha) for the feature matrices F of W, for one PSD matrix X.

    Why: with X the layer's own P this is the ansatz correlation itself (G = W^T P W);
    with X = I, the correlation W alone gives; with another network's W and this
    network's P, the W-swap control (is P matched to *this* W?).

    Parameters
    ----------
    w
        Weight (d × d_in) or layer; X lives in its d-dimensional output space.
    x
        Symmetric PSD (d, d) matrix.
    w0
        The same layer at initialisation: adds the paper's F = (W − W0)^T (W − W0).
    alphas
        Powers of the sandwich.

    Returns
    -------
    dict
        ``{(feature, alpha): correlation}`` with feature ``"WᵀW"`` and, with ``w0``,
        ``"ΔWᵀΔW"`` (Pearson, :func:`featlearn.linalg.pearson`).
    """
    alphas = _check_alphas(alphas)
    wm, feats = _features(w, w0)
    x = check_square(x, "X").detach().to(device=wm.device, dtype=torch.float64)
    if x.shape[0] != wm.shape[0]:
        raise ValueError(
            f"X must be ({wm.shape[0]}, {wm.shape[0]}) for a weight with {wm.shape[0]} rows, got {tuple(x.shape)}"
        )
    b = linalg.psd_root(x).T @ wm  # B^T B = W^T X W
    powers = linalg.gram_powers(b, alphas)
    return {(f, a): linalg.pearson(feat, powers[a]) for f, feat in feats.items() for a in alphas}


def sandwich_draws(
    w: torch.Tensor | nn.Module,
    p: torch.Tensor,
    *,
    w0: torch.Tensor | nn.Module | None = None,
    alphas: Sequence[float] = (1.0, 0.5),
    n_draws: int = 20,
    m_factors: Sequence[int] = (1, 4),
    shuffled: bool = True,
    generator: torch.Generator | None = None,
    labels: Mapping[str, Any] | None = None,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Any]]:
    """The sandwich W^T X W with the real P and with stand-ins X, draw by draw.

    Why: G = W^T P W, so part of any ansatz correlation comes from W. Replacing P by a
    stand-in that knows nothing about the task's gradients keeps that part: the gap
    between P and its stand-ins is what P adds *given this W*. The W here is the trained
    one, itself shaped by the gradients, so the stand-ins are nulls for P, not for
    learning. Each random stand-in is drawn ``n_draws`` times, so a table can show its
    mean and 95th percentile, and a claim can use the draws as its null.

    Stand-ins X: ``"P"`` (the real one), ``"I"`` (W alone), ``"Wishart (m = kd)"`` for
    each k in ``m_factors`` (C = A A^T / m, A a d × m Gaussian, as
    :func:`featlearn.nulls.wishart`), and with ``shuffled`` ``"shuffled P"`` (P with its
    rows and columns permuted: the same spectrum and diagonal, alignment with W
    destroyed). Powers go through a factor B with B^T B = W^T X W on its smaller side.

    Parameters
    ----------
    w
        The layer (or its weight, d × d_in) whose output space P lives in.
    p
        Symmetric PSD (d, d): the AGOP with respect to the layer's pre-activations.
    w0
        The layer at initialisation: adds the paper's ΔWᵀΔW feature matrix.
    alphas
        Powers of the sandwich (1 and 1/2 in the papers).
    n_draws
        Draws of each random stand-in (at least 10 for a claim's null).
    m_factors
        Wishart degrees of freedom as multiples of d.
    generator
        Seeds every draw (default: a generator seeded with 0).
    labels
        Key-value pairs put first in every row (e.g. network, layer).
    progress
        Show a progress bar over the random draws.
    dtype
        Arithmetic of the random stand-ins (float32 by default: a null's correlations need
        about six digits, and it halves the cost); the real P and I use float64.

    Returns
    -------
    list of dict
        One row per (stand-in, draw, feature, alpha): ``labels``, ``X``, ``draw`` (0 for
        the deterministic ``P`` and ``I``), ``feature`` (``"WᵀW"`` or ``"ΔWᵀΔW"``),
        ``alpha`` and ``correlation``.
    """
    alphas = _check_alphas(alphas)
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    if any(not isinstance(k, int) or k < 1 for k in m_factors):
        raise ValueError(f"m_factors must be positive ints, got {list(m_factors)}")
    wm, feats = _features(w, w0)
    p = check_square(p, "P").detach().to(device=wm.device, dtype=torch.float64)
    d = wm.shape[0]
    if p.shape[0] != d:
        raise ValueError(f"P must be ({d}, {d}) for a weight with {d} rows, got {tuple(p.shape)}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []

    def add(x_name: str, draw: int, b: torch.Tensor) -> None:
        powers = linalg.gram_powers(b, alphas)
        for f, feat in feats.items():
            for a in alphas:
                rows.append(
                    {
                        **(labels or {}),
                        "X": x_name,
                        "draw": draw,
                        "feature": f,
                        "alpha": a,
                        "correlation": linalg.pearson(feat, powers[a]),
                    }
                )

    root_p = linalg.psd_root(p).T  # root_p^T root_p = P
    add("P", 0, root_p @ wm)
    add("I", 0, wm)
    jobs = [(f"Wishart (m = {'' if k == 1 else k}d)", k) for k in m_factors]
    if shuffled:
        jobs.append(("shuffled P", 0))
    wl, rl = wm.to(dtype), root_p.to(dtype)
    bar = tqdm(total=len(jobs) * n_draws, desc="sandwich nulls", disable=not progress)
    for x_name, k in jobs:
        for i in range(n_draws):
            if k:  # X = A A^T / m: factor A^T W / sqrt(m)
                a = torch.randn(d, k * d, generator=gen, dtype=dtype).to(wm.device)
                b = a.T @ wl / math.sqrt(k * d)
            else:  # X = P[perm][:, perm] = (root_p[:, perm])^T root_p[:, perm]
                perm = torch.randperm(d, generator=gen).to(wm.device)
                b = rl[:, perm] @ wl
            add(x_name, i, b)
            bar.update()
    bar.close()
    return rows


def sandwich_baselines(
    w: torch.Tensor | nn.Module,
    p: torch.Tensor,
    alphas: Sequence[float] = (1.0, 0.5),
    *,
    n_draws: int = 20,
    generator: torch.Generator | None = None,
) -> dict[str, dict[float, float]]:
    """corr(W^T W, (W^T X W)^alpha) for the real P and stand-ins X, random ones averaged.

    Why: a one-line summary of :func:`sandwich_draws` (feature W^T W, Wishart with
    m = d, shuffled P) for callers that need only the means; the book's tables use the
    draws themselves, so that each null shows its spread.

    Returns
    -------
    dict
        ``{"P": {alpha: corr}, "I": ..., "Wishart": ..., "shuffled P": ...}``, random
        stand-ins averaged over ``n_draws`` draws.
    """
    rows = sandwich_draws(
        w, p, alphas=alphas, n_draws=n_draws, m_factors=(1,), generator=generator, dtype=torch.float64
    )
    out: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        name = "Wishart" if r["X"].startswith("Wishart") else r["X"]
        out.setdefault(name, {}).setdefault(r["alpha"], []).append(r["correlation"])
    return {x: {a: sum(v) / len(v) for a, v in by_a.items()} for x, by_a in out.items()}


def swapped_layers(
    features: Mapping[str, torch.Tensor],
    agops: Mapping[str, torch.Tensor],
    alphas: Sequence[float] = (1.0, 0.5),
) -> list[dict[str, Any]]:
    """corr(F_i, G_j^alpha) for every pair of different layers i, j with the same shape.

    Why: a control for the ansatz metric: a layer's feature matrix against another
    layer's AGOP. Both come from the same trained network, so whatever the two share
    because of training in general (scale, a dominant diagonal) survives the swap; what
    is specific to the layer does not.

    Parameters
    ----------
    features
        Feature matrix per layer name (e.g. ΔWᵀΔW).
    agops
        AGOP G per layer name (the same names).

    Returns
    -------
    list of dict
        ``feature_layer``, ``agop_layer``, ``alpha``, ``correlation``; empty if no two
        layers share a shape.
    """
    alphas = _check_alphas(alphas)
    if set(features) != set(agops):
        raise ValueError(
            f"features and agops need the same layers, got {sorted(features)} and {sorted(agops)}"
        )
    powers = {
        n: {a: linalg.matrix_power_psd(g.detach().to(torch.float64), a) for a in alphas}
        for n, g in agops.items()
    }
    rows: list[dict[str, Any]] = []
    for i, f in features.items():
        for j in agops:
            if i != j and f.shape == agops[j].shape:
                for a in alphas:
                    rows.append(
                        {
                            "feature_layer": i,
                            "agop_layer": j,
                            "alpha": a,
                            "correlation": linalg.pearson(f.to(torch.float64), powers[j][a]),
                        }
                    )
    return rows


def paired_permutation_null(
    x: Sequence[float] | torch.Tensor,
    y: Sequence[float] | torch.Tensor,
    *,
    groups: Sequence[Any] | None = None,
    n_draws: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pearson r of ``x`` with ``y`` re-paired at random (within ``groups``), n_draws times.

    Why: a correlation across points says "this measure tracks that one" only if it beats
    the same points paired at random. Shuffling only within groups (e.g. the points of
    one checkpoint) keeps what the groups share, such as a common trend over training,
    so the null says how much of r the grouping alone gives.

    Parameters
    ----------
    x, y
        Paired values at the same points (finite, at least 3).
    groups
        A label per point; pairs are shuffled only among points with the same label.
        ``None``: one group.
    n_draws
        Number of re-pairings.
    generator
        Seeds the permutations.

    Returns
    -------
    torch.Tensor
        ``n_draws`` correlations (float64); NaN where a re-paired y is constant.
    """
    xt = torch.as_tensor(x, dtype=torch.float64).flatten()
    yt = torch.as_tensor(y, dtype=torch.float64).flatten()
    n = xt.numel()
    if yt.numel() != n or n < 3:
        raise ValueError(f"x and y need the same length >= 3, got {n} and {yt.numel()}")
    if not (torch.isfinite(xt).all() and torch.isfinite(yt).all()):
        raise ValueError("x and y must be finite")
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    if groups is None:
        gid = torch.zeros(n, dtype=torch.float64)
    else:
        labels = list(groups)
        if len(labels) != n:
            raise ValueError(f"groups needs one label per point ({n}), got {len(labels)}")
        codes = {g: k for k, g in enumerate(dict.fromkeys(labels))}
        gid = torch.tensor([codes[g] for g in labels], dtype=torch.float64)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    # points sorted by group; within each group a random order per draw: the k-th point of
    # a group in `home` is paired with the k-th point of the same group in `shuffled`
    home = torch.argsort(gid, stable=True)
    shuffled = torch.argsort(2 * gid + torch.rand(n_draws, n, generator=gen, dtype=torch.float64), dim=1)
    y_perm = torch.empty(n_draws, n, dtype=torch.float64)
    y_perm[:, home] = yt[shuffled]
    xc = xt - xt.mean()
    yc = y_perm - y_perm.mean(dim=1, keepdim=True)
    return (yc @ xc) / (yc.norm(dim=1) * xc.norm())
