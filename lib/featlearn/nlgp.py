"""Non-Gaussian inputs and the emergence of localized receptive fields.

Why: Ingrosso & Goldt (PNAS 2022) found that a two-layer network learns localized receptive
fields from inputs that are non-Gaussian enough, and Lufkin, Saxe & Grant (NeurIPS 2024)
traced it to the sign of 3 − κ (κ: the pixels' marginal kurtosis). This module generates
the data families both papers use, measures localization, trains many small networks in
one batched computation, and evaluates the analytical account.

Conventions
-----------
* Inputs live on a ring of D pixels (1D) or a D×D torus (2D, flattened to D² pixels);
  ``periodic=False`` gives open boundaries.
* A correlation length ξ sets the latent covariance C_ij = exp(−d_ij² / ξ²) (d: the
  circular distance; in 2D, C = kron(C₁, C₁)).
* NLGP gain: x = erf(g z) / Z(g) with z ~ N(0, C) and Z(g)² = (2/π) arcsin(2g² / (1 + 2g²)),
  so Var x_i = 1. The Ingrosso–Goldt code writes erf(g' z / √2): its gains are g' = √2 g.
* Every sampler takes a 1-D tensor of family parameters (gains, k, ...), one per network,
  and returns samples of shape (B, n, pixels), so that B networks train on their own data
  in one batched computation.
* Class 0 has correlation length ξ₀, class 1 has ξ₁ (the longer one in both papers).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import integrate
from torch import nn
from tqdm.auto import tqdm

from featlearn._validation import check_positive_float, check_positive_int
from featlearn.linalg import psd_root

__all__ = [
    "latent_covariance",
    "gain_normaliser",
    "nlgp_covariance",
    "nlgp_kurtosis",
    "kur_scale",
    "kur_kurtosis",
    "Family",
    "NLGP",
    "GaussianControl",
    "Kur",
    "Ising",
    "SinglePulse",
    "BoxPulse",
    "Elliptical",
    "make_family",
    "two_class_batch",
    "ipr",
    "kurtosis",
    "rf_spectrum",
    "peak_frequency",
    "rf_centres",
    "tiling_gaps",
    "TwoLayer",
    "OnlineRun",
    "train_online",
    "amplifier",
    "amplifier_table",
    "effective_dynamics",
    "class_covariances",
    "single_neuron_phase",
    "untrained_ipr",
    "untrained_rank_null",
    "field_correlation",
]


# ---------------------------------------------------------------------------------------
# Covariances and marginal statistics
# ---------------------------------------------------------------------------------------


def _check_xi(xi: float) -> None:
    if not (math.isfinite(float(xi)) and xi > 0):
        raise ValueError(f"the correlation length xi must be a finite number > 0, got {xi}")


def _check_gains(g: torch.Tensor, who: str) -> None:
    """Refuse NaN, ±inf and non-positive gains (``g <= 0`` alone lets NaN through)."""
    bad = ~torch.isfinite(g) | (g <= 0)
    if bad.any():
        raise ValueError(
            f"{who} gains must be finite numbers > 0, got {g.reshape(-1).tolist()} "
            f"(bad: {g[bad].reshape(-1).tolist()}); a NaN or inf gain gives NaN inputs"
        )


def _check_geometry(D: int, xi: float, dim: int) -> None:
    if D < 2:
        raise ValueError(f"need D >= 2 pixels per side, got {D}")
    _check_xi(xi)
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {dim}")


def latent_covariance(D: int, xi: float, *, dim: int = 1, periodic: bool = True) -> torch.Tensor:
    """C_ij = exp(−d_ij² / ξ²) on a ring (or a line) of D pixels; kron(C₁, C₁) in 2D. float64."""
    _check_geometry(D, xi, dim)
    i = torch.arange(D, dtype=torch.float64)
    d = (i[:, None] - i[None, :]).abs()
    if periodic:
        d = torch.minimum(d, D - d)
    c = torch.exp(-(d**2) / xi**2)
    return torch.kron(c, c) if dim == 2 else c


def gain_normaliser(g: torch.Tensor | float) -> torch.Tensor:
    """Z(g) = sqrt((2/π) arcsin(2g² / (1 + 2g²))): the standard deviation of erf(g z), z ~ N(0, 1)."""
    g = torch.as_tensor(g, dtype=torch.float64)
    _check_gains(g, "NLGP")
    return torch.sqrt(2 / math.pi * torch.arcsin(2 * g**2 / (1 + 2 * g**2)))


def nlgp_covariance(c: torch.Tensor, g: float) -> torch.Tensor:
    """Exact covariance of the NLGP with latent covariance ``c`` and gain ``g``.

    E[erf(g z_i) erf(g z_j)] = (2/π) arcsin(2g² C_ij / (1 + 2g²)) for unit-variance z.
    """
    g2 = float(g) ** 2
    return 2 / math.pi * torch.arcsin(2 * g2 * c / (1 + 2 * g2)) / gain_normaliser(g) ** 2


def nlgp_kurtosis(g: float) -> float:
    """Marginal kurtosis E[x⁴] / E[x²]² of the NLGP, by adaptive quadrature over z ~ N(0, 1)."""
    _check_gains(torch.tensor([float(g)], dtype=torch.float64), "NLGP")
    from scipy.special import erf

    dens = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    m4 = 2 * integrate.quad(lambda z: erf(g * z) ** 4 * dens(z), 0, np.inf, limit=200, points=None)[0]
    return m4 / float(gain_normaliser(g)) ** 4


def _kur_quantile(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Q_k at 2p − 1 = u: u / (1 − |u|^k)^(1/k)."""
    a = u.abs().clamp(max=1 - 1e-15)
    return u / torch.exp(torch.log(-torch.expm1(k * torch.log(a.clamp_min(1e-300)))) / k)


def _check_k(k: float) -> None:
    if not (math.isfinite(k) and k > 2):
        raise ValueError(f"Kur(k) needs a finite k > 2 (finite variance), got k={k}")


def _kur_moment(k: float, p: int) -> float:
    """E|Q_k(U)|^p = ∫₀¹ u^p (1 − u^k)^(−p/k) du = B((p + 1)/k, 1 − p/k) / k (a Beta integral)."""
    from scipy.special import beta

    return float(beta((p + 1) / k, 1 - p / k) / k)


def kur_scale(k: float) -> float:
    """s_k: the standard deviation of Q_k(U), U uniform on (0, 1), so that Kur(k) has unit variance."""
    _check_k(k)
    return math.sqrt(_kur_moment(k, 2))


def kur_kurtosis(k: float) -> float:
    """Marginal kurtosis of Kur(k), in closed form: infinite for k <= 4.

    Exact values: k = 5 → 4.29, k = 6 → 2.92, k = 10 → 2.07. (Finite-sample estimates
    come out lower for k = 5, whose eighth moment is infinite.)
    """
    _check_k(k)
    if k <= 4:
        return math.inf
    return _kur_moment(k, 4) / _kur_moment(k, 2) ** 2


# ---------------------------------------------------------------------------------------
# Data families
# ---------------------------------------------------------------------------------------


@dataclass
class Family:
    """A family of input distributions, one member per network: ``params`` (B,).

    Subclasses implement :meth:`sample`; ``D``, ``dim`` and ``periodic`` fix the geometry.
    """

    params: torch.Tensor
    D: int = 40
    dim: int = 1
    periodic: bool = True
    name: str = ""
    _roots: dict = field(default_factory=dict, repr=False)
    label: ClassVar[str] = "family"

    def __post_init__(self) -> None:
        self.name = self.name or self.label
        self.params = torch.as_tensor(self.params, dtype=torch.float64).reshape(-1)
        _check_geometry(self.D, 1.0, self.dim)

    @property
    def pixels(self) -> int:
        return self.D**self.dim

    @property
    def B(self) -> int:
        return len(self.params)

    def _root1(self, xi: float) -> torch.Tensor:
        """Cached square root of the 1D (per-axis) latent covariance at correlation length ξ."""
        key = ("axis", float(xi))
        if key not in self._roots:
            self._roots[key] = psd_root(latent_covariance(self.D, xi, periodic=self.periodic))
        return self._roots[key]

    def root(self, xi: float) -> torch.Tensor:
        """Square root of the latent covariance at correlation length ξ (pixels × pixels)."""
        l1 = self._root1(xi)
        return torch.kron(l1, l1) if self.dim == 2 else l1  # kron(L₁, L₁) is a root of kron(C₁, C₁)

    def latent(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        """z ~ N(0, C_ξ), shape (B, n, pixels), float64."""
        _check_xi(xi)
        l1 = self._root1(xi)
        if self.dim == 2:  # vec(L₁ W L₁ᵀ) = (L₁ ⊗ L₁) vec(W): 2D³ instead of D⁴ operations per sample
            w = torch.randn(self.B, n, self.D, self.D, generator=generator, dtype=torch.float64)
            return (l1 @ w @ l1.T).reshape(self.B, n, self.pixels)
        w = torch.randn(self.B, n, self.pixels, generator=generator, dtype=torch.float64)
        return w @ l1.T

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def kurtosis(self) -> torch.Tensor:
        """Analytic marginal kurtosis per member (NaN where no closed form is implemented)."""
        return torch.full((self.B,), float("nan"), dtype=torch.float64)


class _GainFamily(Family):
    """A family whose members are NLGP gains, which must be positive."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_gains(self.params, type(self).__name__)


class NLGP(_GainFamily):
    """Non-linear Gaussian process x = erf(g z) / Z(g); ``params`` are the gains g."""

    label = "NLGP"

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        g = self.params[:, None, None]
        return torch.erf(g * self.latent(xi, n, generator)) / gain_normaliser(g)

    def kurtosis(self) -> torch.Tensor:
        return torch.tensor([nlgp_kurtosis(float(g)) for g in self.params], dtype=torch.float64)


class GaussianControl(_GainFamily):
    """The Gaussian process with the NLGP's exact covariance; ``params`` are the NLGP gains matched."""

    label = "Gaussian control"

    def covariance(self, xi: float) -> torch.Tensor:
        """(B, pixels, pixels): the NLGP covariance for each gain."""
        c = latent_covariance(self.D, xi, dim=self.dim, periodic=self.periodic)
        return torch.stack([nlgp_covariance(c, float(g)) for g in self.params])

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        key = ("control", float(xi))
        if key not in self._roots:
            self._roots[key] = torch.stack([psd_root(c) for c in self.covariance(xi)])
        w = torch.randn(self.B, n, self.pixels, generator=generator, dtype=torch.float64)
        return w @ self._roots[key].transpose(1, 2)

    def kurtosis(self) -> torch.Tensor:
        return torch.full((self.B,), 3.0, dtype=torch.float64)


class Kur(Family):
    """Lufkin et al.'s Kur(k): x = Q_k(Φ(z)) / s_k elementwise on a GP z; ``params`` are k > 2."""

    label = "Kur(k)"

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in self.params:
            _check_k(float(k))
        self._scale = torch.tensor([kur_scale(float(k)) for k in self.params], dtype=torch.float64)

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.erf(self.latent(xi, n, generator) / math.sqrt(2))  # 2Φ(z) − 1
        k = self.params[:, None, None]
        return _kur_quantile(u, k) / self._scale[:, None, None]

    def kurtosis(self) -> torch.Tensor:
        return torch.tensor([kur_kurtosis(float(k)) for k in self.params], dtype=torch.float64)


class Ising(Family):
    """±1 Ising chains (1D only), ⟨s_i s_(i+d)⟩ = tanh(J)^d (open; periodic adds the way round).

    ``params`` only count the members (one per network).

    tanh(J) = exp(−1/ξ), so ξ is the correlation length in pixels. Samples are exact and
    independent: each chain is drawn site by site from the exact conditional of the
    transfer-matrix solution (periodic: conditioned on the first spin through the closing
    bond), so no Markov-chain decorrelation is needed. Marginals are ±1 (κ = 1).
    """

    label = "Ising"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim != 1:
            raise ValueError("Ising chains are 1D; use dim=1")

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        _check_xi(xi)
        t = math.exp(-1.0 / xi)
        D = self.D
        s = torch.empty(self.B, n, D, dtype=torch.float64)
        s[..., 0] = torch.where(torch.rand(self.B, n, generator=generator) < 0.5, -1.0, 1.0)
        for i in range(1, D):
            prev, first = s[..., i - 1], s[..., 0]
            # weight of s_i = +1 vs −1: T(prev, s) · T^(D − i)(s, first) (periodic) or T(prev, s) (open)
            t_close = t ** (D - i) if self.periodic else 0.0  # an open chain has no closing bond
            w_plus = (1 + t * prev) * (1 + t_close * first)
            w_minus = (1 - t * prev) * (1 - t_close * first)
            p = w_plus / (w_plus + w_minus)
            s[..., i] = torch.where(
                torch.rand(self.B, n, generator=generator, dtype=torch.float64) < p, 1.0, -1.0
            )
        return s

    def kurtosis(self) -> torch.Tensor:
        return torch.ones(self.B, dtype=torch.float64)


class SinglePulse(Family):
    """One Gaussian bump exp(−d²/ξ²) of random sign at a uniformly random pixel, standardised.

    Heavy-tailed marginals (most pixels near 0): κ > 3. ``params`` are unused (one member
    per network). Standardised by the exact per-pixel variance, (1/D) Σ_d bump(d)².
    This is *not* Lufkin et al.'s single pulse, which is a box on a ±1 background
    (:class:`BoxPulse`, κ = 1).
    """

    label = "single pulse"

    def _bump(self, xi: float) -> torch.Tensor:
        return latent_covariance(self.D, xi, dim=self.dim, periodic=self.periodic)  # row j: bump centred at j

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        bumps = self._bump(xi)
        scale = bumps[0].pow(2).mean().sqrt()
        centre = torch.randint(0, self.pixels, (self.B, n), generator=generator)
        sign = torch.where(torch.rand(self.B, n, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
        return sign[..., None] * bumps[centre] / scale


@dataclass
class BoxPulse(Family):
    """Lufkin et al.'s single pulse: a box of +1 on a background of −1, times a random sign (1D).

    Why: the single-pulse data of Lufkin, Saxe & Grant (``SinglePulseDataset`` with support
    (−1, 1) in their code) are boxes, not the Gaussian bumps of :class:`SinglePulse`. Every
    pixel is ±1, so κ = 1: the box sits on the other side of κ = 3 from the bump.

    A sample is a run of w consecutive pixels starting at a uniformly random pixel (on a
    ring it may wrap round; with ``periodic=False`` it starts where it fits), +1 on the box
    and −1 elsewhere, the whole multiplied by a random sign (their code's random complement
    x → 1 − x before {0, 1} is mapped to {−1, +1}). The width w is uniform over the integers
    round(``scale``·ξ), ..., round(``scale``·ξ) + ``jitter``. The defaults turn ξ = (1, 3)
    into widths {3, 4} and {9, 10}: the official code's at D = 40, whose class intervals are
    (0.05, 0.10)·D and (0.20, 0.25)·D. ``params`` only count the members (one per network).
    """

    scale: float = 3.0
    jitter: int = 1
    label: ClassVar[str] = "box pulse"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim != 1:
            raise ValueError("box pulses are 1D; use dim=1")
        self.scale = check_positive_float(self.scale, "scale (box width per unit of xi)")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, numbers.Integral) or self.jitter < 0:
            raise ValueError(f"jitter must be an int >= 0, got {self.jitter!r}")

    def widths(self, xi: float) -> tuple[int, int]:
        """The smallest and largest box width at correlation length ξ (pixels, inclusive)."""
        _check_xi(xi)
        low = max(1, round(self.scale * xi))
        high = low + int(self.jitter)
        if high >= self.D:
            raise ValueError(
                f"box widths up to {high} pixels at xi={xi:g} leave no background on D={self.D} pixels; "
                "lower xi or scale, or raise D"
            )
        return low, high

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        low, high = self.widths(xi)
        D = self.D
        width = torch.randint(low, high + 1, (self.B, n, 1), generator=generator)
        span = D if self.periodic else D - width + 1  # open: the box must fit
        start = (torch.rand(self.B, n, 1, generator=generator, dtype=torch.float64) * span).floor().long()
        offset = torch.arange(D) - start
        if self.periodic:
            offset = offset % D
        inside = (offset >= 0) & (offset < width)
        sign = torch.where(torch.rand(self.B, n, 1, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
        return sign * torch.where(inside, 1.0, -1.0).to(torch.float64)

    def kurtosis(self) -> torch.Tensor:
        return torch.ones(self.B, dtype=torch.float64)


class Elliptical(Family):
    """Elliptical inputs x = L √P u/|u| with u ~ N(0, I_P), L Lᵀ = C: uniform on an ellipsoid.

    Same covariance as the GP, marginal kurtosis 3P/(P + 2) (just below 3), yet
    elliptically symmetric, so the analytical account predicts no localization.
    """

    label = "elliptical"

    def sample(self, xi: float, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.randn(self.B, n, self.pixels, generator=generator, dtype=torch.float64)
        u = u * math.sqrt(self.pixels) / u.norm(dim=-1, keepdim=True)
        return u @ self.root(xi).T

    def kurtosis(self) -> torch.Tensor:
        p = self.pixels
        return torch.full((self.B,), 3 * p / (p + 2), dtype=torch.float64)


_FAMILIES: dict[str, type[Family]] = {
    "nlgp": NLGP,
    "gaussian": GaussianControl,
    "kur": Kur,
    "ising": Ising,
    "pulse": SinglePulse,
    "box": BoxPulse,
    "elliptical": Elliptical,
}


def make_family(
    name: str, params: Sequence[float] | torch.Tensor, *, D: int, dim: int = 1, periodic: bool = True
) -> Family:
    """A family by name: ``nlgp`` (gains), ``gaussian`` (gains matched), ``kur`` (k), ``ising``,
    ``pulse`` (Gaussian bump), ``box`` (Lufkin's box pulse), ``elliptical`` (params only count
    the members)."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(_FAMILIES)}")
    return _FAMILIES[name](torch.as_tensor(params, dtype=torch.float64), D=D, dim=dim, periodic=periodic)


def two_class_batch(
    family: Family, xis: tuple[float, float], n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh examples per network: the first n − n//2 from ξ₀ (label 0), the rest from ξ₁ (label 1).

    Returns x (B, n, pixels) float64 and y (n,) in {0, 1}, shared by the networks. Not
    shuffled: a minibatch gradient is a mean, so the order is irrelevant. With n = 1
    (Ingrosso–Goldt's single-sample SGD) the one example's class is drawn at random, each
    with probability ½, from ``generator``; the halves above would give class 0 every time.
    """
    n = check_positive_int(n, "n (examples per batch)")
    if n == 1:
        label = int(torch.rand((), generator=generator, dtype=torch.float64) < 0.5)
        x = family.sample(xis[label], 1, generator)
        return x, torch.full((1,), float(label), dtype=torch.float64)
    n1 = n // 2
    x = torch.cat([family.sample(xis[0], n - n1, generator), family.sample(xis[1], n1, generator)], dim=1)
    y = torch.cat([torch.zeros(n - n1), torch.ones(n1)]).to(torch.float64)
    return x, y


# ---------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------


def ipr(w: torch.Tensor) -> torch.Tensor:
    """Inverse participation ratio Σ w_i⁴ / (Σ w_i²)² over the last dim: 1/D (spread) to 1 (one pixel)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return w.pow(4).sum(-1) / w.pow(2).sum(-1).pow(2)


def kurtosis(x: torch.Tensor) -> float:
    """Empirical marginal kurtosis E[(x − m)⁴] / E[(x − m)²]², pooled over all pixels (per-pixel means)."""
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, x.shape[-1])
    xc = x - x.mean(0)
    return float(xc.pow(4).mean() / xc.pow(2).mean() ** 2)


def rf_spectrum(w: torch.Tensor) -> torch.Tensor:
    """Power |FFT(w)|² over the non-negative frequencies of 1D receptive fields, normalised per field."""
    p = torch.fft.rfft(torch.as_tensor(w, dtype=torch.float64), dim=-1).abs() ** 2
    return p / p.sum(-1, keepdim=True)


def peak_frequency(w: torch.Tensor) -> torch.Tensor:
    """The frequency (cycles per D pixels) with the most power, per receptive field."""
    return rf_spectrum(w).argmax(-1)


def rf_centres(w: torch.Tensor) -> torch.Tensor:
    """Circular centre of mass of w² for 1D receptive fields on a ring, in pixels [0, D)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    D = w.shape[-1]
    phase = torch.exp(2j * math.pi * torch.arange(D, dtype=torch.float64) / D)
    z = (w.pow(2).to(torch.complex128) * phase).sum(-1)
    return (torch.angle(z) / (2 * math.pi) * D) % D


def tiling_gaps(centres: torch.Tensor, D: int) -> torch.Tensor:
    """Gaps between consecutive receptive-field centres around the ring, divided by D/K.

    Perfect tiling gives all ones; fields piled on one spot give one gap of K and zeros.
    """
    c = torch.sort(torch.as_tensor(centres, dtype=torch.float64), dim=-1).values
    gaps = torch.diff(torch.cat([c, c[..., :1] + D], dim=-1), dim=-1)
    return gaps / (D / c.shape[-1])


# ---------------------------------------------------------------------------------------
# Networks and online SGD
# ---------------------------------------------------------------------------------------

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "erf": lambda h: torch.erf(h / math.sqrt(2)),
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
}


class TwoLayer(nn.Module):
    """B independent two-layer networks f(x) = Σ_k a_k σ(s · w_kᵀx + b_k), trained together.

    Parameters
    ----------
    B, K, pixels
        Number of networks, hidden units per network, input size.
    activation
        ``"erf"`` (σ(h) = erf(h/√2), Ingrosso–Goldt), ``"sigmoid"`` or ``"relu"``.
    convention
        ``"ig"``: s = 1/√pixels (Ingrosso–Goldt); ``"lufkin"``: s = 1.
    train_readout
        Train a (initialised at 1/K) instead of fixing it at 1/K.
    bias
        Trainable biases, initialised alternately at +1 and −1 (Ingrosso–Goldt), else none.
    init_std
        Standard deviation of the N(0, init_std²) first-layer init (0.1 in Ingrosso–Goldt).
    generator
        Random source for the init (all B networks in one draw).
    init_seeds
        Instead of ``generator``: one seed per network, network b's weights drawn from a
        generator seeded with ``init_seeds[b]``. A network's init then depends on its seed
        only, not on B or its place in the batch, so runs of different sizes (a paired
        comparison, a null of fresh networks) can share some inits exactly.
    """

    def __init__(
        self,
        B: int,
        K: int,
        pixels: int,
        *,
        activation: str = "erf",
        convention: str = "ig",
        train_readout: bool = False,
        bias: bool = True,
        init_std: float = 0.1,
        generator: torch.Generator | None = None,
        init_seeds: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {activation!r}")
        if convention not in ("ig", "lufkin"):
            raise ValueError(f"convention must be 'ig' or 'lufkin', got {convention!r}")
        if B < 1 or K < 1 or pixels < 2:
            raise ValueError(f"need B >= 1, K >= 1, pixels >= 2; got {B}, {K}, {pixels}")
        self.act = _ACTIVATIONS[activation]
        self.scale = 1 / math.sqrt(pixels) if convention == "ig" else 1.0
        if init_seeds is None:
            w0 = torch.randn(B, K, pixels, generator=generator, dtype=torch.float64)
        else:
            if generator is not None:
                raise ValueError("give either generator or init_seeds, not both")
            seeds = [int(s) for s in init_seeds]
            if len(seeds) != B:
                raise ValueError(f"init_seeds needs one seed per network: {B}, got {len(seeds)}")
            w0 = torch.stack(
                [
                    torch.randn(K, pixels, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                    for s in seeds
                ]
            )
        self.w = nn.Parameter(init_std * w0)
        signs = torch.where(torch.arange(K) % 2 == 0, 1.0, -1.0).to(torch.float64)
        self.b = nn.Parameter(signs.repeat(B, 1), requires_grad=bias) if bias else None
        self.a = nn.Parameter(torch.full((B, K), 1.0 / K, dtype=torch.float64), requires_grad=train_readout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n, pixels) → outputs (B, n)."""
        h = self.scale * torch.einsum("bkp,bnp->bnk", self.w, x)
        if self.b is not None:
            h = h + self.b[:, None, :]
        return (self.act(h) * self.a[:, None, :]).sum(-1)


_TARGET_CODES: dict[str, tuple[float, float]] = {"01": (0.0, 1.0), "pm1": (-1.0, 1.0)}


def _target_codes(targets: str | Sequence[str], B: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1) tensors of the targets given to class 0 and class 1, one row per network."""
    codes = [targets] * B if isinstance(targets, str) else list(targets)
    if len(codes) != B:
        raise ValueError(f"targets needs one coding per network ({B}), got {len(codes)}")
    bad = [c for c in codes if c not in _TARGET_CODES]
    if bad:
        raise ValueError(f"targets must be '01' or 'pm1' (per network), got {bad[0]!r}")
    pairs = torch.tensor([_TARGET_CODES[c] for c in codes], dtype=torch.float64)
    return pairs[:, :1], pairs[:, 1:]


@dataclass
class OnlineRun:
    """Result of :func:`train_online`: times (steps / pixels) and first-layer weights at those times."""

    times: list[float]
    weights: list[torch.Tensor]
    losses: list[float]


def train_online(
    model: TwoLayer,
    family: Family,
    xis: tuple[float, float],
    *,
    steps: int,
    batch: int,
    lr: float,
    bias_lr: float | None = None,
    record: Sequence[int] = (),
    seed: int = 0,
    progress: bool = True,
    desc: str = "online SGD",
    targets: str | Sequence[str] = "01",
) -> OnlineRun:
    """Online SGD on fresh two-class batches, all B networks in one batched computation.

    The loss of each network is the batch mean of ½(f(x) − t)²; the losses are summed over
    networks, so each network's gradient is its own. Both papers' code omits the ½ (their
    mean squared error), so their step at rate η is ours at rate 2η. ``bias_lr`` defaults
    to lr / pixels (Ingrosso–Goldt). ``record`` lists the steps at which to keep the
    weights; time is reported as steps / pixels. ``batch=1`` is single-sample SGD
    (Ingrosso–Goldt's protocol): each step's one example comes from a class drawn at random
    (see :func:`two_class_batch`).

    ``targets`` codes the class y ∈ {0, 1} (class 1: the longer ξ) as the target t:
    ``"01"``, t = y (Lufkin et al.), or ``"pm1"``, t = 2y − 1 ∈ {−1, +1} (Ingrosso–Goldt,
    whose code gives +1 to the *shorter* ξ; flipping the sign of every weight and bias maps
    one convention onto the other, and the init is symmetric under it). A sequence gives
    one coding per network, so both codings can train side by side in one batch.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    batch = check_positive_int(batch, "batch")
    lr = check_positive_float(lr, "lr (learning rate)")
    if bias_lr is not None:
        bias_lr = check_positive_float(bias_lr, "bias_lr (bias learning rate)", allow_zero=True)
    lo, hi = _target_codes(targets, model.w.shape[0])
    g = torch.Generator().manual_seed(seed)
    pixels = model.w.shape[-1]
    groups = [{"params": [model.w], "lr": lr}]
    if model.b is not None and model.b.requires_grad:
        groups.append({"params": [model.b], "lr": lr / pixels if bias_lr is None else bias_lr})
    if model.a.requires_grad:
        groups.append({"params": [model.a], "lr": lr})
    opt = torch.optim.SGD(groups, lr=lr)
    keep = set(int(r) for r in record)
    run = OnlineRun(times=[], weights=[], losses=[])
    for step in tqdm(range(steps + 1), desc=desc, disable=not progress, mininterval=1.0):
        if step in keep:
            run.times.append(step / pixels)
            run.weights.append(model.w.detach().clone())
        if step == steps:
            break
        x, y = two_class_batch(family, xis, batch, g)  # drawn on the CPU (seeded), trained where the model is
        x, y = x.to(model.w.device), y.to(model.w.device)
        t = lo.to(y.device) + (hi - lo).to(y.device) * y  # (B, n): each network's targets
        loss = 0.5 * ((model(x) - t) ** 2).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, steps // 100) == 0:
            run.losses.append(loss.item() / model.w.shape[0])
    return run


# ---------------------------------------------------------------------------------------
# Theory (Lufkin, Saxe & Grant)
# ---------------------------------------------------------------------------------------


def amplifier(marginal: torch.Tensor, a: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """φ(a) = E_x[x · erf(a x / √(2(1 − a²)))] by Monte Carlo over samples of the pixel marginal.

    Returns (φ(a), standard error), elementwise in ``a`` (|a| < 1). For Gaussian x,
    φ(a) = √(2/π) a exactly; non-Gaussian marginals bend it by ≈ √(2/π)(3 − κ)a³/6.
    """
    x = torch.as_tensor(marginal, dtype=torch.float64).reshape(-1)
    a = torch.as_tensor(a, dtype=torch.float64)
    if (a.abs() >= 1).any():
        raise ValueError("need |a| < 1")
    shape = a.shape
    a = a.reshape(-1, 1)
    vals = x * torch.erf(a * x / torch.sqrt(2 * (1 - a**2)))
    return vals.mean(1).reshape(shape), (vals.std(1) / math.sqrt(x.numel())).reshape(shape)


def amplifier_table(marginal: torch.Tensor, n_grid: int = 401) -> Callable[[torch.Tensor], torch.Tensor]:
    """φ tabulated on a grid over (−1, 1) from marginal samples, returned as a vectorised function.

    Linear interpolation between grid points; φ is odd, so the table is built on a ≥ 0.
    """
    grid = torch.linspace(0, 1 - 1e-6, n_grid, dtype=torch.float64)
    phi = torch.cat([amplifier(marginal, grid[i : i + 32])[0] for i in range(0, n_grid, 32)])

    def fn(a: torch.Tensor) -> torch.Tensor:
        a = torch.as_tensor(a, dtype=torch.float64)
        s = a.sign()
        pos = a.abs().clamp(max=float(grid[-1])) / float(grid[-1]) * (n_grid - 1)
        i = pos.floor().long().clamp(max=n_grid - 2)
        frac = pos - i
        return s * (phi[i] * (1 - frac) + phi[i + 1] * frac)

    return fn


def effective_dynamics(
    w0: torch.Tensor,
    sigma0: torch.Tensor,
    sigma1: torch.Tensor,
    phi: Callable[[torch.Tensor], torch.Tensor],
    *,
    tau: float,
    steps: int,
    record: Sequence[int] = (),
) -> list[torch.Tensor]:
    """Integrate w ← w + τ[φ(Σ₁w / √(wᵀΣ₁w)) − (Σ₀ + Σ₁)w], the single-neuron dynamics.

    Derived for a ReLU neuron f = (wᵀx)₊ without bias, trained on the balanced mean of
    ½(f − y)² with y = 1 for class 1: for inputs symmetric under x → −x,
    E[(wᵀx)₊ x] = ½Σw exactly, and E₁[1(wᵀx > 0) x_i] = ½φ(a_i) when wᵀx given x_i is
    Gaussian (the approximation that defines φ). The expected gradient step is then this
    map with τ = lr/4. Lufkin et al. write the decay as ½(Σ₀ + Σ₁)w; that changes only the
    scale of w by 2 (a is scale-free), not the shape of the receptive field.
    ``w0`` is one field (D,) or a batch (B, D), integrated together (vectorised).
    Returns w at each of ``record`` and at the last step.
    """
    w = torch.as_tensor(w0, dtype=torch.float64).clone()
    if w.ndim not in (1, 2):
        raise ValueError(f"w0 must be one field (D,) or a batch (B, D), got shape {tuple(w.shape)}")
    total = sigma0 + sigma1
    keep, out = set(int(r) for r in record) | {steps}, []
    for s in range(steps + 1):
        if s in keep:
            out.append(w.clone())
        if s == steps:
            break
        if w.ndim == 1:
            v = sigma1 @ w
            w = w + tau * (phi(v / torch.sqrt(w @ v)) - total @ w)
        else:  # Σ symmetric: row-wise Σw is w Σ
            v = w @ sigma1
            w = w + tau * (phi(v / torch.sqrt((w * v).sum(-1, keepdim=True))) - w @ total)
    return out


def class_covariances(
    kind: str,
    param: float,
    *,
    D: int,
    xis: Sequence[float],
    generator: torch.Generator,
    n_samples: int = 20000,
) -> list[torch.Tensor]:
    """The covariance Σ_ξ of each class, exact for the NLGP, estimated from samples otherwise.

    Why: the effective single-neuron dynamics (:func:`effective_dynamics`) need the two
    classes' covariances; the NLGP's is known in closed form, the other families' are
    estimated by the second moment xᵀx/n (their means are zero).

    Parameters
    ----------
    kind
        A family name of :func:`make_family` (``"nlgp"``, ``"gaussian"``, ``"kur"``, ...).
    param
        The family's parameter (the gain for ``nlgp`` and ``gaussian``, k for ``kur``).
    D
        Pixels on the ring.
    xis
        Correlation lengths, one per class.
    generator
        Draws the samples (not used for ``nlgp``). The classes are sampled in the order
        of ``xis``, ``n_samples`` each.
    n_samples
        Samples per class for the estimate.

    Returns
    -------
    list of torch.Tensor
        One (D, D) float64 matrix per entry of ``xis``.
    """
    if kind == "nlgp":
        return [nlgp_covariance(latent_covariance(D, xi), param) for xi in xis]
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    fam = make_family(kind, [param], D=D)
    out = []
    for xi in xis:
        xs = fam.sample(xi, n_samples, generator)[0]
        out.append(xs.T @ xs / len(xs))
    return out


def single_neuron_phase(
    families: Mapping[str, tuple[str, Sequence[float]] | tuple[str, Sequence[float], int]],
    *,
    D: int,
    xis: Sequence[float],
    seeds: int,
    steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
    init_std: float = 0.1,
    init_seed: int = 0,
    train_seed: int = 0,
    n_check: int = 4000,
    progress: bool = True,
) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Lufkin et al.'s phase diagram: a single ReLU neuron trained on every family, its final IPR and κ.

    Why: the claim that κ decides localization needs the final IPR of many runs against
    the marginal kurtosis of their data, family by family; this is that experiment, one
    batched training per family.

    For each family in order: its members (every parameter value, ``seeds`` times) train
    from the same initial weights (a :class:`TwoLayer` with one ReLU unit and no bias,
    ``init_std``, generator seeded with ``init_seed``) by :func:`train_online` (seed
    ``train_seed``); then ``n_check`` fresh samples of both classes, drawn from
    ``generator``, give the empirical kurtosis.

    Parameters
    ----------
    families
        Label → (family name for :func:`make_family`, parameter values), or
        (name, values, seeds) to give that family its own number of networks per value
        (e.g. more for a control whose spread serves as a null).
    D, xis
        Pixels on the ring, and the two classes' correlation lengths.
    seeds
        Networks per parameter value (unless the family gives its own).
    steps, batch, lr
        As in :func:`train_online`.
    generator
        Draws the samples for the empirical kurtosis (and nothing else).
    init_std, init_seed, train_seed
        The initial weights' scale and seed, and the training batches' seed.
    n_check
        Samples (both classes together) per member for the empirical kurtosis.
    progress
        Progress bars.

    Returns
    -------
    phase, init, final
        A pandas DataFrame with one row per network (``family``, ``parameter``, ``seed``,
        ``kappa``: analytic where a closed form exists, else the empirical value,
        ``kappa_empirical`` and ``ipr`` of the final weights), and per family label the
        initial and final weights, (members, D).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    init: dict[str, torch.Tensor] = {}
    final: dict[str, torch.Tensor] = {}
    pair = (float(xis[0]), float(xis[1]))
    for label, spec in families.items():
        kind, params = spec[0], spec[1]
        n_seeds = check_positive_int(spec[2], f"seeds of {label}") if len(spec) > 2 else seeds
        p = torch.tensor(params, dtype=torch.float64).repeat_interleave(n_seeds)
        fam = make_family(kind, p, D=D)
        net = TwoLayer(
            len(p),
            1,
            D,
            activation="relu",
            convention="lufkin",
            bias=False,
            init_std=init_std,
            generator=torch.Generator().manual_seed(init_seed),
        )
        init[label] = net.w.detach().clone()[:, 0]
        run = train_online(
            net,
            fam,
            pair,
            steps=steps,
            batch=batch,
            lr=lr,
            record=[steps],
            seed=train_seed,
            progress=progress,
            desc=f"single neuron, {label}",
        )
        final[label] = run.weights[-1][:, 0]
        x_check, _ = two_class_batch(fam, pair, n_check, generator)  # both classes: the marginal SGD sees
        kappa_emp = [kurtosis(xs) for xs in x_check]
        kappa = fam.kurtosis()  # analytic; NaN where there is no closed form (Gaussian-bump pulse)
        for i in range(len(p)):
            k_an = float(kappa[i])
            rows.append(
                {
                    "family": label,
                    "parameter": float(p[i]),
                    "seed": i % n_seeds,
                    "kappa": kappa_emp[i] if math.isnan(k_an) else k_an,
                    "kappa_empirical": kappa_emp[i],
                    "ipr": float(ipr(final[label][i])),
                }
            )
    return pd.DataFrame(rows), init, final


# ---------------------------------------------------------------------------------------
# Nulls: what untrained or uninformed stand-ins score on the chapter's metrics
# ---------------------------------------------------------------------------------------


def untrained_ipr(
    n_draws: int, shape: int | Sequence[int], pixels: int, *, generator: torch.Generator
) -> torch.Tensor:
    """IPR of fresh Gaussian weight vectors, as a network has at init: shape (n_draws, *shape).

    Why: a localization claim means something only if trained fields beat what random
    fields score; a Gaussian vector has IPR ≈ 3/pixels. The IPR does not depend on the
    vector's scale, so one draw serves every ``init_std``.

    Parameters
    ----------
    n_draws
        Number of draws (the leading dimension).
    shape
        The shape of one draw's set of fields, e.g. (networks, units).
    pixels
        Length of each field.
    generator
        Random source.
    """
    n_draws = check_positive_int(n_draws, "n_draws")
    pixels = check_positive_int(pixels, "pixels")
    dims = (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)
    w = torch.randn(n_draws, *dims, pixels, generator=generator, dtype=torch.float64)
    return ipr(w)


def untrained_rank_null(
    kappa: Sequence[float] | torch.Tensor,
    *,
    seeds: int,
    pixels: int,
    n_draws: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Spearman ρ(κ, IPR) across data sets when no network is trained: (n_draws,) draws.

    Why: the phase-diagram claim is a rank correlation between the data sets' κ and their
    mean final IPR. Scoring untrained networks the same way (each data set's IPR the mean
    over ``seeds`` fresh random fields) gives the ρ that arises without learning, which
    the trained ρ must beat. Ties in κ are ranked as ``scipy.stats.spearmanr`` ranks them.
    """
    from scipy.stats import spearmanr

    k = torch.as_tensor(kappa, dtype=torch.float64).reshape(-1)
    if k.numel() < 3 or not bool(torch.isfinite(k).all()):
        raise ValueError(f"need at least 3 finite kappa values, got {k.tolist()}")
    fields = untrained_ipr(
        n_draws, (k.numel(), check_positive_int(seeds, "seeds")), pixels, generator=generator
    )
    means = fields.mean(-1).numpy()
    return torch.tensor([spearmanr(k.numpy(), m).statistic for m in means], dtype=torch.float64)


def field_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of receptive fields along the last dimension, broadcasting the rest.

    Why: the theory-versus-SGD claim and its null compare one SGD field with many
    predicted ones; this is :func:`featlearn.linalg.pearson` row by row, vectorised.
    """
    x = torch.as_tensor(a, dtype=torch.float64)
    y = torch.as_tensor(b, dtype=torch.float64)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"fields must have the same length, got {x.shape[-1]} and {y.shape[-1]}")
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    den = x.norm(dim=-1) * y.norm(dim=-1)
    if bool((den == 0).any()):
        raise ValueError("correlation undefined: a field is constant")
    return (x * y).sum(-1) / den
