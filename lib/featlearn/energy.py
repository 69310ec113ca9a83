"""Energy profiles of first-layer filters over the PCA basis of image patches.

Why: Chowers & Weiss (ICML 2023) compare how a filter bank's energy spreads over the
principal components of the input patches with a closed-form curve for depth-2 linear
CNNs, which tends to whitening. This module computes the patch PCA in bounded memory,
the energy profile of a filter bank, the theory curve and the fit of its one parameter.

Conventions
-----------
Patches p_n ∈ R^{c·q·q} are ordered like ``conv.weight.flatten(1)`` and centred. With
Σ = (1/N) Σ_n p_n p_n^T = U diag(λ²) U^T (eigenvalues in decreasing order), the energy of
a filter bank W (K × c·q·q) on component i is e_i = sqrt((1/K) Σ_k (w_k^T u_i)²),
max-normalised.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = [
    "PatchCovariance",
    "patch_pca",
    "energy_profile",
    "theory_profile",
    "fit_t",
]


class PatchCovariance:
    """Streaming mean and covariance of every q×q patch of a stream of image batches.

    Only the running sum (p) and the running sum of outer products (p × p) are kept, so
    memory is bounded by one batch's patches, never by the dataset's.

    Parameters
    ----------
    q
        Patch side length.
    stride, padding
        As for the conv whose inputs the patches are (default: every position, no padding).
    """

    def __init__(self, q: int = 3, stride: int = 1, padding: int = 0) -> None:
        if q < 1 or stride < 1 or padding < 0:
            raise ValueError(f"need q >= 1, stride >= 1, padding >= 0; got {q}, {stride}, {padding}")
        self.q, self.stride, self.padding = q, stride, padding
        self.n = 0
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    def update(self, images: torch.Tensor) -> PatchCovariance:
        """Add every patch of a batch of images (N, C, H, W)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a 4-D tensor (N, C, H, W), got {getattr(images, 'shape', type(images))}")
        cols = F.unfold(images.to(torch.float64), self.q, stride=self.stride, padding=self.padding)
        p = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N * positions, c*q*q)
        if self._sum is None:
            self._sum = torch.zeros(p.shape[1], dtype=torch.float64, device=p.device)
            self._outer = torch.zeros(p.shape[1], p.shape[1], dtype=torch.float64, device=p.device)
        elif p.shape[1] != self._sum.shape[0]:
            raise ValueError(f"patch size changed from {self._sum.shape[0]} to {p.shape[1]} (channel count?)")
        self._sum += p.sum(0)
        self._outer += p.T @ p
        self.n += p.shape[0]
        return self

    @property
    def mean(self) -> torch.Tensor:
        """Mean patch."""
        self._check()
        return self._sum / self.n

    @property
    def covariance(self) -> torch.Tensor:
        """Covariance of the centred patches, (1/N) Σ (p − mean)(p − mean)^T."""
        self._check()
        m = self.mean
        return self._outer / self.n - torch.outer(m, m)

    def _check(self) -> None:
        if self.n == 0:
            raise ValueError("no patches yet: call update() with at least one batch")


def patch_pca(
    images: torch.Tensor | Iterable[torch.Tensor],
    q: int = 3,
    *,
    batch_size: int = 1024,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of all q×q patches: eigenvalues λ² (decreasing) and eigenvectors U (columns).

    ``images`` is a tensor (N, C, H, W), processed ``batch_size`` images at a time, or an
    iterable of such batches (e.g. a DataLoader yielding images).
    """
    cov = PatchCovariance(q)
    if isinstance(images, torch.Tensor):
        batches: Iterable[torch.Tensor] = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
        total = -(-len(images) // batch_size)
    else:
        batches, total = images, None
    for b in tqdm(batches, total=total, desc="patch PCA", disable=not progress):
        cov.update(b[0] if isinstance(b, (tuple, list)) else b)
    evals, evecs = torch.linalg.eigh(cov.covariance)
    order = torch.argsort(evals, descending=True)
    return evals[order].clamp_min(0), evecs[:, order]


def energy_profile(
    weight: torch.Tensor,
    components: torch.Tensor,
    init_weight: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Energy of a filter bank on each principal component: sqrt(mean_k (w_k^T u_i)²).

    Parameters
    ----------
    weight
        Conv weight (K, c, q, q) or a matrix (K, c·q·q).
    components
        Eigenvectors as columns, (c·q·q, m), e.g. from :func:`patch_pca`.
    init_weight
        If given, the profile of ΔW = W − W0 (what training changed).
    normalize
        Divide by the maximum (the papers' convention).
    """
    w = weight.detach().flatten(1).to(torch.float64)
    if init_weight is not None:
        w0 = init_weight.detach().flatten(1).to(torch.float64)
        if w0.shape != w.shape:
            raise ValueError(f"init_weight shape {tuple(w0.shape)} does not match weight {tuple(w.shape)}")
        w = w - w0
    u = components.to(torch.float64)
    if u.shape[0] != w.shape[1]:
        raise ValueError(f"components have {u.shape[0]} rows but filters have {w.shape[1]} entries")
    e = ((w @ u) ** 2).mean(0).sqrt()
    if normalize:
        if e.max() == 0:
            raise ValueError("all energies are zero (ΔW = 0?)")
        e = e / e.max()
    return e


def theory_profile(lam2: torch.Tensor, t: float, *, eta: float | None = None) -> torch.Tensor:
    """The depth-2 linear-CNN energy profile, max-normalised.

    With ``eta=None`` (our clean, continuous-time convention)
    e_i ∝ (1 − exp(−t λ_i²)) / λ_i. With a step size ``eta`` (the discrete form of the
    official code) e_i ∝ (1 − (1 − η λ_i²)^t) / (η λ_i). The two agree when t_clean = η t
    and η λ² is small. Early in training e_i ∝ t λ_i; as t → ∞, e_i ∝ 1/λ_i (whitening).
    """
    lam2 = torch.as_tensor(lam2, dtype=torch.float64).clamp_min(1e-300)
    lam = lam2.sqrt()
    if t <= 0:
        raise ValueError(f"t must be positive, got {t}")
    if eta is None:
        e = -torch.expm1(-t * lam2) / lam
    else:
        if not 0 < eta * float(lam2.max()) < 2:
            raise ValueError("need 0 < eta * max(lambda^2) < 2 for gradient descent to converge")
        e = (1 - (1 - eta * lam2) ** t) / (eta * lam)
    return e / e.max()


def fit_t(profile: torch.Tensor, lam2: torch.Tensor, ts: Iterable[float] | None = None) -> tuple[float, float]:
    """The t (clean convention) whose theory curve best matches ``profile``: (t, Pearson r).

    A grid search over ``ts``, as the paper grid-searches its single free parameter. By
    default 400 values log-spaced over 12 decades around 1/mean(λ²), then a finer grid
    between the best value's neighbours.
    """
    prof = torch.as_tensor(profile, dtype=torch.float64)
    lam2 = torch.as_tensor(lam2, dtype=torch.float64)
    if prof.shape != lam2.shape:
        raise ValueError(f"profile {tuple(prof.shape)} and eigenvalues {tuple(lam2.shape)} differ in shape")
    def r_of(t: float) -> float:
        return float(torch.corrcoef(torch.stack([prof, theory_profile(lam2, t)]))[0, 1])

    refine = ts is None
    if ts is None:
        centre = 1.0 / float(lam2.mean())
        ts = centre * np.logspace(-6, 6, 400)
    ts = np.asarray(list(ts), dtype=float)
    rs = np.array([r_of(float(t)) for t in ts])
    k = int(np.nanargmax(rs))
    if refine:  # a finer log grid between the best point's neighbours
        lo, hi = ts[max(k - 1, 0)], ts[min(k + 1, len(ts) - 1)]
        fine = np.geomspace(lo, hi, 201)
        rf = np.array([r_of(float(t)) for t in fine])
        j = int(np.nanargmax(rf))
        if rf[j] > rs[k]:
            return float(fine[j]), float(rf[j])
    return float(ts[k]), float(rs[k])
