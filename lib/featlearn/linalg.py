"""Linear algebra the chapters share: PSD powers and roots, and matrix correlations.

Why: one implementation of each, so that every chapter's number means the same thing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from featlearn._validation import check_square

__all__ = [
    "matrix_power_psd",
    "psd_root",
    "gram_power",
    "gram_powers",
    "gram_pearson",
    "pearson",
    "cosine_similarity_matrices",
]


def matrix_power_psd(a: torch.Tensor, alpha: float) -> torch.Tensor:
    """A^alpha of a symmetric PSD matrix via eigendecomposition, negative eigenvalues -> 0.

    Why: the Science-version ansatz compares W^T W with G^{1/2}; G is PSD up to rounding.

    The matrix is symmetrised, ``torch.linalg.eigh`` is applied, eigenvalues are clipped
    at 0 and raised to ``alpha`` (``alpha >= 0``; 0^0 = 1), and V diag(lambda^alpha) V^T
    is returned in the input dtype.
    """
    a = check_square(a, "A")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
        raise TypeError(f"alpha must be a finite real number, got {alpha!r}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (negative powers of a PSD matrix are undefined), got {alpha}")
    sym = (a + a.T) / 2
    evals, evecs = torch.linalg.eigh(sym)
    powered = evals.clamp_min(0) ** alpha
    out = (evecs * powered) @ evecs.T
    return (out + out.T) / 2


def psd_root(c: torch.Tensor, *, tol: float | None = None) -> torch.Tensor:
    """A factor L with L L^T = C of a symmetric PSD matrix (negative eigenvalues -> 0).

    Why: samplers draw L z with z ~ N(0, I), and kernels map patches through a metric's
    root; L = V diag(sqrt(lambda)) from one symmetric eigendecomposition.

    With ``tol``, a matrix whose smallest eigenvalue is below -tol x (largest |eigenvalue|)
    is refused as not PSD (``ValueError``) instead of being clipped.
    """
    c = check_square(c, "C")
    evals, evecs = torch.linalg.eigh((c + c.T) / 2)
    if tol is not None and evals.min() < -tol * evals.abs().max().clamp_min(1e-30):
        raise ValueError("the matrix must be positive semi-definite (a negative eigenvalue is not rounding)")
    return evecs * evals.clamp_min(0).sqrt()


def _pair(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Two same-shaped tensors as flat float64 vectors on ``a``'s device."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"expected two torch.Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"tensors must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError("matrices are empty")
    return (
        a.detach().to(torch.float64).flatten(),
        b.detach().to(device=a.device, dtype=torch.float64).flatten(),
    )


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the entries of two same-shaped tensors (matrices or profiles).

    Why: the papers' ansatz metric, the whitening profile fit and the localization
    theory-vs-SGD comparison are all this number; one implementation serves them.

    a' = A - mean(A), b' = B - mean(B) (scalar means over all entries), then
    <a', b'> / (|a'| |b'|), computed in float64.

    Raises
    ------
    ValueError
        Different shapes, or a matrix whose entries are all equal (zero norm after centring).
    """
    x, y = _pair(a, b)
    x = x - x.mean()
    y = y - y.mean()
    nx, ny = x.norm(), y.norm()
    if nx == 0 or ny == 0:
        raise ValueError("correlation undefined: a matrix has all entries equal (zero norm after centring)")
    return float((x @ y) / (nx * ny))


def cosine_similarity_matrices(a: torch.Tensor, b: torch.Tensor) -> float:
    """Uncentred cosine <A, B>_F / (|A|_F |B|_F).

    Why: some follow-up papers report the uncentred version; chapters show both.
    """
    x, y = _pair(a, b)
    nx, ny = x.norm(), y.norm()
    if nx == 0 or ny == 0:
        raise ValueError("cosine similarity undefined: a matrix is zero")
    return float((x @ y) / (nx * ny))


def gram_power(b: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B^T B)^alpha through the smaller of B B^T and B^T B (negative eigenvalues -> 0).

    Why: sandwich baselines need powers of W^T X W without a d_in x d_in eigendecomposition.
    """
    return gram_powers(b, (alpha,))[float(alpha)]


def gram_powers(b: torch.Tensor, alphas: Sequence[float]) -> dict[float, torch.Tensor]:
    """(B^T B)^alpha for every alpha from one eigendecomposition on B's smaller side.

    Why: the ansatz compares W^T W with G^alpha for several alpha, and G = B^T B often has
    a thin factor B; alpha = 1 is B^T B itself (no eigendecomposition needed for it).
    Negative eigenvalues (rounding) are set to 0.
    """
    out: dict[float, torch.Tensor] = {}
    rest = [float(a) for a in alphas if float(a) != 1.0]
    if len(rest) < len(alphas):
        out[1.0] = b.T @ b
    if not rest:
        return out
    if b.shape[0] >= b.shape[1]:
        evals, v = torch.linalg.eigh(b.T @ b)
        lam = evals.clamp_min(0)
        for a in rest:
            m = (v * lam**a) @ v.T
            out[a] = (m + m.T) / 2
        return out
    evals, u = torch.linalg.eigh(b @ b.T)  # B^T B = V S^2 V^T with V = B^T U S^-1
    keep = evals > evals.max().clamp_min(0) * 1e-12
    bu, lam = b.T @ u[:, keep], evals[keep]
    for a in rest:
        m = (bu * lam ** (a - 1)) @ bu.T
        out[a] = (m + m.T) / 2
    return out


def gram_pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson(A^T A, B^T B) of two (k, d) matrices without forming the d × d Grams.

    Why: comparing two layers' W^T W (d = fan_in, up to 4608) costs O(k² d) this way.
    """
    a, b = a.detach().to(torch.float64), b.detach().to(device=a.device, dtype=torch.float64)
    n = float(a.shape[1]) ** 2
    ab = float(((a @ b.T) ** 2).sum())
    aa, bb = float(((a @ a.T) ** 2).sum()), float(((b @ b.T) ** 2).sum())
    sa, sb = float((a.sum(1) ** 2).sum()), float((b.sum(1) ** 2).sum())
    va, vb = aa - sa**2 / n, bb - sb**2 / n
    if va <= 1e-12 * aa or vb <= 1e-12 * bb:
        raise ValueError("correlation undefined: a matrix has all entries equal (zero norm after centring)")
    return (ab - sa * sb / n) / math.sqrt(va * vb)
