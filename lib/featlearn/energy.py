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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from featlearn import models, nulls, train
from featlearn.linalg import pearson

__all__ = [
    "PatchCovariance",
    "patch_pca",
    "energy_profile",
    "theory_profile",
    "t_floor",
    "t_ceiling",
    "fit_t",
    "fit_t_batch",
    "theory_correlations",
    "profile_correlations",
    "ProfileNull",
    "decreasing_profile_nulls",
    "strongest_null",
    "LinearCNN",
    "simulate_linear_cnn",
    "LinearCNNRun",
    "simulation_fits",
    "cifar_init",
    "ProfiledRun",
    "train_with_profiles",
    "fit_trend",
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
        """Add every patch of a batch of images (N, C, H, W).

        The batch is processed a few images at a time (about 2M float64 patch entries per
        chunk, so it stays in cache), with one batched matmul per chunk and no transpose of
        the unfolded patches.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(
                f"images must be a 4-D tensor (N, C, H, W), got {getattr(images, 'shape', type(images))}"
            )
        d = images.shape[1] * self.q * self.q
        if self._sum is None:
            self._sum = torch.zeros(d, dtype=torch.float64, device=images.device)
            self._outer = torch.zeros(d, d, dtype=torch.float64, device=images.device)
        elif d != self._sum.shape[0]:
            raise ValueError(f"patch size changed from {self._sum.shape[0]} to {d} (channel count?)")
        assert self._outer is not None
        h, w = ((n + 2 * self.padding - self.q) // self.stride + 1 for n in images.shape[2:])
        positions = max(1, h) * max(1, w)
        chunk = max(1, (1 << 21) // max(1, d * positions))
        for i in range(0, images.shape[0], chunk):
            cols = F.unfold(
                images[i : i + chunk].to(torch.float64), self.q, stride=self.stride, padding=self.padding
            )  # (n, d, positions)
            self._sum += cols.sum((0, 2))
            self._outer += (cols @ cols.transpose(1, 2)).sum(0)
            self.n += cols.shape[0] * cols.shape[2]
        return self

    @property
    def mean(self) -> torch.Tensor:
        """Mean patch."""
        self._check()
        assert self._sum is not None
        return self._sum / self.n

    @property
    def covariance(self) -> torch.Tensor:
        """Covariance of the centred patches, (1/N) Σ (p − mean)(p − mean)^T."""
        self._check()
        assert self._outer is not None
        m = self.mean
        return self._outer / self.n - torch.outer(m, m)

    @property
    def second_moment(self) -> torch.Tensor:
        """Uncentred second moment (1/N) Σ p p^T: the Hessian of a linear first layer's loss."""
        self._check()
        assert self._outer is not None
        return self._outer / self.n

    def _check(self) -> None:
        if self.n == 0:
            raise ValueError("no patches yet: call update() with at least one batch")


def patch_pca(
    images: torch.Tensor | Iterable[torch.Tensor],
    q: int = 3,
    *,
    batch_size: int = 1024,
    center: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of all q×q patches: eigenvalues λ² (decreasing) and eigenvectors U (columns).

    ``images`` is a tensor (N, C, H, W), processed ``batch_size`` images at a time, or an
    iterable of such batches (e.g. a DataLoader yielding images). ``center=False`` uses
    the uncentred second moment instead of the covariance.
    """
    cov = PatchCovariance(q)
    if isinstance(images, torch.Tensor):
        batches: Iterable[torch.Tensor] = (
            images[i : i + batch_size] for i in range(0, len(images), batch_size)
        )
        total = -(-len(images) // batch_size)
    else:
        batches, total = images, None
    for b in tqdm(batches, total=total, desc="patch PCA", disable=not progress):
        cov.update(b[0] if isinstance(b, (tuple, list)) else b)
    evals, evecs = torch.linalg.eigh(cov.covariance if center else cov.second_moment)
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


def t_floor(lam2: torch.Tensor, tol: float = 0.01) -> float:
    """The smallest t the fit searches: where the formula becomes its early-regime limit λ.

    Why: (1 − e^{−tλ²})/λ = tλ·(1 − tλ²/2 + …), so once t·λ²_max ≤ 2·tol every component's
    energy is tλ_i to within ``tol`` (relative) and the max-normalised curve is λ/λ_max:
    every smaller t draws the same curve, the data cannot tell those t apart, and a grid
    that went on towards t → 0 would report an arbitrary tiny t from a flat maximum. A fit
    that lands here is in the early regime, where the formula says only "energy ∝ λ".
    """
    if not 0 < tol < 0.5:
        raise ValueError(f"tol must be in (0, 0.5), got {tol}")
    top = float(torch.as_tensor(lam2, dtype=torch.float64).max())
    if not top > 0:
        raise ValueError("lam2 needs a positive eigenvalue")
    return 2 * tol / top


def t_ceiling(lam2: torch.Tensor) -> float:
    """The largest t the fit searches: every component saturated, the whitening limit 1/λ.

    Why: once t·λ²_min ≥ 50, 1 − e^{−tλ²} = 1 to within e^{−50} for every component and the
    curve is 1/λ; larger t draw the same curve. Eigenvalues below 1e-12·λ²_max count as
    1e-12·λ²_max (a numerically zero direction would otherwise push the ceiling to ∞).
    """
    lam2 = torch.as_tensor(lam2, dtype=torch.float64)
    top = float(lam2.max())
    if not top > 0:
        raise ValueError("lam2 needs a positive eigenvalue")
    return 50.0 / max(float(lam2.min()), 1e-12 * top)


def _theory_curves(lam2: torch.Tensor, ts: torch.Tensor, eta: float | None = None) -> torch.Tensor:
    """Max-normalised theory curves for a batch of t: ``ts`` (...,) → (..., k), float64."""
    lam2 = lam2.clamp_min(1e-300)
    lam = lam2.sqrt()
    t = ts.to(torch.float64).unsqueeze(-1)
    if eta is None:
        e = -torch.expm1(-t * lam2) / lam
    else:
        e = (1 - (1 - eta * lam2) ** t) / (eta * lam)
    return e / e.amax(-1, keepdim=True)


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of every row of ``a`` (..., k) with the matching rows of ``b`` (..., m, k): (..., m).

    NaN where either row is flat (zero norm after centring), as a correlation is undefined.
    """
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    na = a.norm(dim=-1, keepdim=True)
    nb = b.norm(dim=-1)
    r = (b @ a.unsqueeze(-1)).squeeze(-1) / (na * nb)
    return torch.where((na > 0) & (nb > 0), r, torch.full_like(r, float("nan")))


def fit_t_batch(
    profiles: torch.Tensor,
    lam2: torch.Tensor,
    ts: Iterable[float] | None = None,
    *,
    t_min: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_t` for many profiles at once: the fitted t and Pearson r of each row.

    Why: the null of a fit is the same fit applied to hundreds of random profiles; one
    vectorised grid search serves ours and theirs, so they are fitted exactly alike.

    Parameters
    ----------
    profiles
        (n, k) profiles (or one (k,) profile), e.g. from :func:`energy_profile` or
        :func:`featlearn.nulls.random_decreasing_profiles`.
    lam2
        (k,) patch PCA eigenvalues.
    ts
        A grid of t to search instead of the default (then no floor and no refinement).
    t_min
        The default grid's floor (default :func:`t_floor`); it must be positive.

    Returns
    -------
    (t, r)
        Two float64 tensors of shape (n,) (or scalars for one profile). A row whose every
        correlation is undefined (a flat profile) gets t = NaN and r = NaN.
    """
    prof = torch.as_tensor(profiles, dtype=torch.float64)
    lam2 = torch.as_tensor(lam2, dtype=torch.float64)
    single = prof.ndim == 1
    prof = prof.unsqueeze(0) if single else prof
    if prof.ndim != 2 or lam2.ndim != 1 or prof.shape[1] != lam2.shape[0]:
        raise ValueError(
            f"profiles {tuple(torch.as_tensor(profiles).shape)} and eigenvalues {tuple(lam2.shape)} differ in shape"
        )
    if not torch.isfinite(prof).all():
        raise ValueError("profiles must be finite")
    refine = ts is None
    if ts is None:
        lo = t_floor(lam2) if t_min is None else float(t_min)
        hi = t_ceiling(lam2)
        if not 0 < lo < hi:
            raise ValueError(f"t_min must be positive and below the ceiling {hi:.3g}, got {lo}")
        grid = torch.as_tensor(np.geomspace(lo, hi, 400), dtype=torch.float64)
    else:
        grid = torch.as_tensor(np.asarray(list(ts), dtype=float), dtype=torch.float64)
        if grid.ndim != 1 or len(grid) == 0 or not (grid > 0).all():
            raise ValueError("ts must be a non-empty list of positive values")
    rs = _pearson_rows(prof, _theory_curves(lam2, grid))  # (n, G)
    ok = ~torch.isnan(rs).all(1)
    k = torch.nan_to_num(rs, nan=-2.0).argmax(1)
    rows = torch.arange(len(prof))
    t_best, r_best = grid[k], rs[rows, k]
    if refine:  # a finer log grid between each best point's neighbours
        lo_t = grid[(k - 1).clamp_min(0)].log()
        hi_t = grid[(k + 1).clamp_max(len(grid) - 1)].log()
        frac = torch.linspace(0, 1, 201, dtype=torch.float64)
        fine = (lo_t[:, None] + (hi_t - lo_t)[:, None] * frac).exp()  # (n, 201)
        rf = _pearson_rows(prof, _theory_curves(lam2, fine))
        j = torch.nan_to_num(rf, nan=-2.0).argmax(1)
        better = rf[rows, j] > r_best
        t_best = torch.where(better, fine[rows, j], t_best)
        r_best = torch.where(better, rf[rows, j], r_best)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    t_best, r_best = torch.where(ok, t_best, nan), torch.where(ok, r_best, nan)
    return (t_best[0], r_best[0]) if single else (t_best, r_best)


def fit_t(
    profile: torch.Tensor,
    lam2: torch.Tensor,
    ts: Iterable[float] | None = None,
    *,
    t_min: float | None = None,
) -> tuple[float, float]:
    """The t (clean convention) whose theory curve best matches ``profile``: (t, Pearson r).

    A grid search over ``ts``, as the paper grid-searches its single free parameter. By
    default 400 values log-spaced from :func:`t_floor` (below which the curve no longer
    changes: the early-regime limit λ) to :func:`t_ceiling` (above which it is the
    whitening limit 1/λ), then a finer grid between the best value's neighbours. A fit at
    the floor means the profile is best described by "energy ∝ λ", not by a t.
    """
    prof = torch.as_tensor(profile, dtype=torch.float64)
    lam2 = torch.as_tensor(lam2, dtype=torch.float64)
    if prof.shape != lam2.shape or prof.ndim != 1:
        raise ValueError(f"profile {tuple(prof.shape)} and eigenvalues {tuple(lam2.shape)} differ in shape")
    t, r = fit_t_batch(prof, lam2, ts, t_min=t_min)
    if torch.isnan(r):
        raise ValueError("the profile is flat: its correlation with any curve is undefined")
    return float(t), float(r)


def theory_correlations(
    profiles: torch.Tensor, lam2: torch.Tensor, ts: Sequence[float], *, eta: float | None = None
) -> torch.Tensor:
    """Pearson r of each profile with the theory curve at each given t, nothing fitted: (n, m).

    Why: where t is known (the simulated linear CNN, t = η·steps), the formula is tested
    without a free parameter; its null is the same correlation for random profiles.

    Parameters
    ----------
    profiles
        (n, k) profiles, or one (k,) profile (then the result is (m,)).
    lam2
        (k,) eigenvalues.
    ts
        The m values of t (clean convention), or step counts when ``eta`` is given.
    eta
        Step size of the discrete form (see :func:`theory_profile`).
    """
    prof = torch.as_tensor(profiles, dtype=torch.float64)
    lam2 = torch.as_tensor(lam2, dtype=torch.float64)
    if prof.shape[-1] != lam2.shape[0]:
        raise ValueError(f"profiles have {prof.shape[-1]} entries, eigenvalues {lam2.shape[0]}")
    grid = torch.as_tensor(list(ts), dtype=torch.float64)
    if grid.ndim != 1 or len(grid) == 0 or not (grid > 0).all():
        raise ValueError("ts must be a non-empty list of positive values")
    if eta is not None and not 0 < eta * float(lam2.max()) < 2:
        raise ValueError("need 0 < eta * max(lambda^2) < 2 for gradient descent to converge")
    return _pearson_rows(prof, _theory_curves(lam2, grid, eta))


def profile_correlations(profile: torch.Tensor, profiles: torch.Tensor) -> torch.Tensor:
    """Pearson r of one profile with each row of ``profiles`` (n, k): (n,).

    Why: the null of a consistency claim ("two networks learn the same profile") is how
    well the measured profile correlates with random decreasing ones.
    """
    a = torch.as_tensor(profile, dtype=torch.float64)
    b = torch.as_tensor(profiles, dtype=torch.float64)
    if a.ndim != 1 or b.ndim != 2 or b.shape[1] != a.shape[0]:
        raise ValueError(
            f"need a (k,) profile and (n, k) profiles, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return _pearson_rows(a, b)


@dataclass
class ProfileNull:
    """Random decreasing profiles fitted like a measured one (:func:`decreasing_profile_nulls`).

    Attributes
    ----------
    kind
        ``"uniform"`` or ``"exponential"`` (see :func:`featlearn.nulls.random_decreasing_profiles`).
    profiles
        The (n, k) random profiles, max-normalised.
    t, r
        Each profile's fitted t and Pearson r (:func:`fit_t_batch`).
    """

    kind: str
    profiles: torch.Tensor
    t: torch.Tensor
    r: torch.Tensor

    @property
    def label(self) -> str:
        """The null in words, for :func:`featlearn.claims.null`."""
        return f"random decreasing profiles (sorted {self.kind}), t fitted the same way"


def decreasing_profile_nulls(
    lam2: torch.Tensor,
    n_draws: int = 200,
    *,
    seed: int = 0,
    kinds: Sequence[str] = ("uniform", "exponential"),
) -> dict[str, ProfileNull]:
    """Random decreasing profiles, each fitted to the formula exactly as a measured profile.

    Why: any decreasing profile correlates with the formula's early-regime curve (∝ λ);
    the r these reach is what a fit scores for "energy decreases" alone.

    Parameters
    ----------
    lam2
        (k,) patch PCA eigenvalues (the fit's).
    n_draws
        Profiles per kind.
    seed
        Kind number j draws from ``torch.Generator().manual_seed(seed + j)``.
    kinds
        Which :func:`featlearn.nulls.random_decreasing_profiles` kinds to draw.

    Returns
    -------
    dict
        ``{kind: ProfileNull}``.
    """
    lam2 = torch.as_tensor(lam2, dtype=torch.float64)
    out: dict[str, ProfileNull] = {}
    for j, kind in enumerate(kinds):
        gen = torch.Generator().manual_seed(seed + j)
        p = nulls.random_decreasing_profiles(len(lam2), n_draws, kind=kind, generator=gen)
        p = p / p.amax(1, keepdim=True)
        t, r = fit_t_batch(p, lam2)
        out[kind] = ProfileNull(kind=kind, profiles=p, t=t, r=r)
    return out


def strongest_null(draws: Mapping[str, torch.Tensor], *, high: bool = True) -> str:
    """The key of the null whose draws are hardest to beat: highest 95th percentile (or lowest 5th).

    Why: with two kinds of random profile, a claim is judged against the one that scores
    best on its metric, so that passing means beating both.
    """
    if not draws:
        raise ValueError("draws must hold at least one null")
    level = 0.95 if high else 0.05
    q = {k: float(torch.quantile(torch.as_tensor(v, dtype=torch.float64), level)) for k, v in draws.items()}
    return max(q, key=q.__getitem__) if high else min(q, key=q.__getitem__)


class LinearCNN(nn.Module):
    """Depth-2 linear CNN: K q×q filters (no padding, no bias), then a 1×1 linear readout.

    Why: the setting of Chowers & Weiss's theorem, small enough to train by exact
    (full-batch) gradient descent. The readout maps the K filter responses at every
    position to K outputs; with the readout fixed and orthonormal (V^T V = I, the default),
    gradient descent on the first layer is exactly gradient descent on the quadratic
    ½ tr(W M W^T) − tr(W B^T) with M the patch second moment, whose solution is the formula.

    Parameters
    ----------
    in_channels, filters, q
        Input channels c, number of filters K (also the outputs per position), filter side q.
    groups
        The readout is block-diagonal with this many orthonormal K/groups × K/groups blocks
        (still V^T V = I). Many filters average out the randomness of the targets; groups
        keep the readout's cost linear in K.
    init_std
        Standard deviation of the N(0, init_std²) first-layer init: the theorem's ξ term
        vanishes as it goes to 0.
    train_readout
        Also train the readout (a deviation from the theorem's setting, to see what it costs).
    generator
        Random source for both layers' init.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        q: int = 3,
        *,
        groups: int = 1,
        init_std: float = 1e-4,
        train_readout: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if groups < 1 or filters % groups:
            raise ValueError(f"groups must divide filters, got filters={filters}, groups={groups}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.conv = nn.Conv2d(in_channels, filters, q, bias=False)
        self.readout = nn.Conv2d(filters, filters, 1, groups=groups, bias=False)
        k = filters // groups
        with torch.no_grad():
            self.conv.weight.copy_(init_std * torch.randn(self.conv.weight.shape, generator=generator))
            blocks = torch.linalg.qr(torch.randn(groups, k, k, generator=generator))[0]  # orthonormal blocks
            self.readout.weight.copy_(blocks.reshape(filters, k, 1, 1))
        self.readout.weight.requires_grad_(train_readout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.conv(x))


@dataclass
class LinearCNNRun:
    """Result of :func:`simulate_linear_cnn`: first-layer weights at the requested steps."""

    steps: list[int]
    weights: list[torch.Tensor]
    init_weight: torch.Tensor
    eta: float
    losses: list[float] = field(default_factory=list)


def simulate_linear_cnn(
    images: torch.Tensor,
    *,
    filters: int = 512,
    groups: int = 32,
    q: int = 3,
    eta: float = 0.05,
    steps: Sequence[int] = (10, 100, 1000),
    init_std: float = 1e-4,
    train_readout: bool = False,
    targets: torch.Tensor | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> LinearCNNRun:
    """Train a :class:`LinearCNN` by exact gradient descent and keep the filters at ``steps``.

    The loss is the mean over images and positions of ½‖f(x)_pos − y_pos‖². The targets
    default to independent N(0, 1) values at every output and position: random labels,
    the case in which the theorem's expected profile depends on the patches alone.

    Parameters
    ----------
    images
        (N, c, H, W), centred (zero mean patch) for the comparison with a covariance PCA.
    filters, groups, q, init_std, train_readout
        As for :class:`LinearCNN`.
    eta, steps
        Step size and the step counts at which to keep the filters.
    targets
        (N, filters, H − q + 1, W − q + 1) instead of the random ones.
    seed, device, dtype
        Random source for init and targets; where and in which precision to train.

    Returns
    -------
    LinearCNNRun
        The first-layer weights at each of ``steps`` (on the CPU), the init and the losses.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, c, H, W), got {tuple(images.shape)}")
    steps = sorted(int(s) for s in steps)
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative step counts, got {steps}")
    dev = torch.device(device) if device is not None else images.device
    g = torch.Generator().manual_seed(seed)
    net = LinearCNN(
        images.shape[1],
        filters,
        q,
        groups=groups,
        init_std=init_std,
        train_readout=train_readout,
        generator=g,
    ).to(device=dev, dtype=dtype)
    x = images.to(device=dev, dtype=dtype)
    out_shape = (x.shape[0], filters, x.shape[2] - q + 1, x.shape[3] - q + 1)
    if targets is None:
        y = torch.randn(out_shape, generator=g).to(device=dev, dtype=dtype)
    else:
        if tuple(targets.shape) != out_shape:
            raise ValueError(f"targets must have shape {out_shape}, got {tuple(targets.shape)}")
        y = targets.to(device=dev, dtype=dtype)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=eta)
    norm = out_shape[0] * out_shape[2] * out_shape[3]  # images × positions
    run = LinearCNNRun(steps=steps, weights=[], init_weight=net.conv.weight.detach().cpu().clone(), eta=eta)
    keep = set(steps)
    for s in tqdm(range(steps[-1] + 1), desc="linear CNN (GD)", disable=not progress):
        if s in keep:
            run.weights.append(net.conv.weight.detach().cpu().clone())
        if s == steps[-1]:
            break
        opt.zero_grad()
        loss = 0.5 * ((net(x) - y) ** 2).sum() / norm
        loss.backward()
        opt.step()
        run.losses.append(loss.item())
    return run


def simulation_fits(
    runs: Mapping[str, LinearCNNRun], components: torch.Tensor, lam2: torch.Tensor
) -> list[dict[str, float]]:
    """Per recorded step: t = η·steps and, per run, Pearson r of its ΔW profile with the formula.

    Why: the whitening chapter checks the closed form where it is meant to be exact, on
    simulated linear CNNs, with nothing fitted: the discrete formula at each step count.

    Parameters
    ----------
    runs
        ``{label: LinearCNNRun}``, all with the same steps and step size ``eta``.
    components, lam2
        The PCA of the simulation's patches (eigenvectors as columns, and eigenvalues).

    Returns
    -------
    list of dict
        One row per step: ``"steps"``, ``"t = η·steps"`` and ``"r (label)"`` per run.
    """
    if not runs:
        raise ValueError("runs must hold at least one LinearCNNRun")
    first = next(iter(runs.values()))
    for label, run in runs.items():
        if run.steps != first.steps or run.eta != first.eta:
            raise ValueError(f"run {label!r} has other steps or another eta than the first run")
    rows: list[dict[str, float]] = []
    for k, s in enumerate(first.steps):
        formula = theory_profile(lam2, s, eta=first.eta)
        row: dict[str, float] = {"steps": s, "t = η·steps": first.eta * s}
        for label, run in runs.items():
            e = energy_profile(run.weights[k], components, init_weight=run.init_weight)
            row[f"r ({label})"] = pearson(e, formula)
        rows.append(row)
    return rows


def cifar_init(net: nn.Module) -> nn.Module:
    """Initialise ``net`` as the whitening paper's official models are: in place, returned.

    Why: the official code builds VGG11-BN and ResNet20 from chenyaofo/pytorch-cifar-models,
    whose constructors draw every conv weight from kaiming-normal (fan-out, ReLU gain),
    set conv biases to 0, BatchNorm to weight 1 and bias 0, and linear weights from
    N(0, 0.01²) with bias 0. PyTorch's defaults draw larger first-layer filters. Uses the
    global torch RNG, like PyTorch's own initialisers.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


@dataclass
class ProfiledRun:
    """Result of :func:`train_with_profiles`.

    Attributes
    ----------
    profiles
        The first layer's ΔW energy profile after every epoch (empty if it was frozen).
    test_accuracy
        Test accuracy after the last epoch, or ``None`` without test data.
    train_accuracy
        Accuracy on the training set (with the labels trained on) after training.
    filters
        Number of first-layer filters.
    epochs
        Epochs trained (fewer than asked when ``stop_at_train_accuracy`` was reached).
    train_accuracies
        Training accuracy after every epoch, when ``stop_at_train_accuracy`` was given.
    """

    profiles: list[torch.Tensor]
    test_accuracy: float | None
    train_accuracy: float
    filters: int
    epochs: int = 0
    train_accuracies: list[float] = field(default_factory=list)


class _Reached(Exception):
    """Raised from the epoch callback to end training once the target accuracy is reached."""


def train_with_profiles(
    build: Callable[..., nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    components: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    width: float = 1.0,
    num_classes: int = 10,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    freeze_first: bool = False,
    stop_at_train_accuracy: float | None = None,
    init: Callable[[nn.Module], object] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    desc: str = "CNN",
    progress: bool = True,
) -> ProfiledRun:
    """Train a CNN by plain SGD and record its first layer's ΔW energy profile every epoch.

    Why: Chowers & Weiss follow the first layer's filters during training of VGG/ResNet;
    this is one such run, with the paper's setting (SGD, no momentum, cross-entropy).

    ``torch.manual_seed(seed)`` is called, then ``build(C, num_classes, width=width)``
    makes the network (e.g. :func:`featlearn.models.vgg11_bn`), which is trained by
    :func:`featlearn.train.train_classifier` with minibatch order seeded by ``seed``.

    Parameters
    ----------
    build
        Network constructor, called as ``build(in_channels, num_classes, width=width)``.
    x, y
        Training images (N, C, H, W) and integer labels (N,).
    components
        Patch principal components (eigenvectors as columns) from :func:`patch_pca`.
    epochs, lr, batch_size
        As in :func:`featlearn.train.train_classifier` (``epochs``: the most epochs).
    x_test, y_test
        If given, the test accuracy after the last epoch is returned.
    freeze_first
        Keep the first conv at its random init (no profiles are then recorded).
    stop_at_train_accuracy
        If given, training stops after the first epoch whose training accuracy reaches it
        (e.g. 0.9 for a random-label run that must memorise its labels); the run is then
        exactly the first epochs of the run without a stop, as the minibatch order is the
        same. The accuracy after every epoch is kept in ``train_accuracies``.
    init
        Called on the freshly built network (after the seed is set), e.g.
        :func:`cifar_init` for the official models' initialisation.
    seed
        Seeds the init (global torch RNG) and the minibatch order.
    device, desc, progress
        Where to train, and the progress bar's label and switch.
    """
    if stop_at_train_accuracy is not None and not 0 < stop_at_train_accuracy <= 1:
        raise ValueError(f"stop_at_train_accuracy must be in (0, 1], got {stop_at_train_accuracy}")
    torch.manual_seed(seed)
    net = build(x.shape[1], num_classes, width=width)
    if init is not None:
        init(net)
    if device is not None:
        net = net.to(device)
    _, conv = models.first_conv(net)
    w0 = conv.weight.detach().clone()
    conv.weight.requires_grad_(not freeze_first)
    profiles: list[torch.Tensor] = []
    accuracies: list[float] = []
    done = [0]

    def on_epoch_end(epoch: int, model: nn.Module) -> None:
        done[0] = epoch
        if not freeze_first:
            profiles.append(energy_profile(conv.weight, components, init_weight=w0))
        if stop_at_train_accuracy is not None:
            accuracies.append(train.accuracy(model, x, y))
            if accuracies[-1] >= stop_at_train_accuracy:
                raise _Reached

    try:
        train.train_classifier(
            net,
            x,
            y,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer="sgd",
            seed=seed,
            progress=progress,
            desc=desc,
            on_epoch_end=on_epoch_end,
        )
    except _Reached:
        pass
    net.eval()
    test = x_test is not None and y_test is not None
    return ProfiledRun(
        profiles=profiles,
        test_accuracy=train.accuracy(net, x_test, y_test) if test else None,  # type: ignore[arg-type]
        train_accuracy=accuracies[-1] if accuracies else train.accuracy(net, x, y),
        filters=conv.weight.shape[0],
        epochs=done[0],
        train_accuracies=accuracies,
    )


def fit_trend(
    profiles: Mapping[str, Sequence[torch.Tensor]], lam2: torch.Tensor, *, n_tail: int | None = None
) -> list[dict[str, float | int | str]]:
    """Per model and epoch: the fitted formula's t and r, and the high-frequency tail energy.

    Why: a published reproduction found the measured tail well above the formula's and
    blamed under-training; following the fit epoch by epoch tests that explanation.

    Parameters
    ----------
    profiles
        ``{model: [profile after epoch 1, after epoch 2, ...]}``.
    lam2
        Patch PCA eigenvalues, in decreasing order.
    n_tail
        Number of last (smallest-variance) components averaged as the tail; default a
        third of them (at least one).

    Returns
    -------
    list of dict
        Rows with ``"model"``, ``"epoch"``, ``"r (formula fit)"``, ``"fitted t"``,
        ``"PCs with tλ² ≥ 1"`` (how many components the fitted formula has taken past the
        early regime, where e ∝ tλ), ``"tail energy, measured"`` and
        ``"tail energy, formula"``.
    """
    lam2 = torch.as_tensor(lam2, dtype=torch.float64)
    if n_tail is None:
        n_tail = max(1, len(lam2) // 3)
    if not 1 <= n_tail <= len(lam2):
        raise ValueError(f"n_tail must be between 1 and {len(lam2)}, got {n_tail}")
    rows: list[dict[str, float | int | str]] = []
    for model, series in profiles.items():
        for epoch, e in enumerate(series, start=1):
            t, r = fit_t(e, lam2)
            rows.append(
                {
                    "model": model,
                    "epoch": epoch,
                    "r (formula fit)": r,
                    "fitted t": t,
                    "PCs with tλ² ≥ 1": int((t * lam2 >= 1).sum()),
                    "tail energy, measured": float(e[-n_tail:].mean()),
                    "tail energy, formula": float(theory_profile(lam2, t)[-n_tail:].mean()),
                }
            )
    return rows
