"""NNGP and NTK kernels of the CNFA paper's plain conv net, with a Mahalanobis metric on patches.

Why: ConvRFM (Beaglehole et al., arXiv 2309.00570) is kernel regression with the
convolutional kernel of an infinitely wide conv net whose first layer sees patches through
a learned metric M. This module computes that kernel in PyTorch, in blocks of image pairs.

The network
-----------
As in the paper's notebooks: a linear patch layer, then (depth − 1) × [VALID q×q conv,
ReLU], then a linear readout of the flattened last feature map (no pooling), in the NTK
parametrisation (He scaling after ReLUs):

* h¹_p = W¹ x_p / √d, with x_p the p-th patch (d = c·q·q entries, ordered like
  ``conv.weight.flatten(1)``); with a metric, the patch inner product is x_pᵀ M z_p. The
  paper's code expands the image into patches with padding ("SAME"); here the patches are
  the VALID ones, so every map is q − 1 pixels smaller;
* h² = Σ_δ W²_δ h¹_{p+δ} / √(C q²) (no ReLU before the first conv), and for ℓ ≥ 2
  h^{ℓ+1}_p = √2 Σ_δ W^{ℓ+1}_δ relu(h^ℓ_{p+δ}) / √(C q²);
* f = √2 vᵀ flatten(relu(h^L)) / √(C P), P positions in the last map (for depth 1 the
  readout reads h¹ directly, without √2: a linear kernel).

Which position pairs are needed
-------------------------------
The readout sums over positions with independent weights, so only *aligned* pairs
(position p of x with position p of z) enter the output kernel; and an aligned pair at layer
ℓ + 1 needs only aligned pairs at layer ℓ (p + δ with p + δ). So each layer is a q×q
average pool over the map of aligned pairs followed by an elementwise arc-cosine map:
O(P) per image pair and layer instead of O(P²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["relu_expectations", "raw_patches", "aligned_patch_products", "conv_kernels", "kernel_from_patches",
           "metric_root", "conv_ntk", "conv_nngp"]


def relu_expectations(s: torch.Tensor, dx: torch.Tensor, dz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """He-scaled ReLU moments of a centred Gaussian pair with covariance [[dx, s], [s, dz]].

    Returns (2 E[relu(u) relu(v)], 2 E[relu'(u) relu'(v)]): the arc-cosine kernels of
    degree 1 and 0, √(dx dz)(sin θ + (π − θ) cos θ)/π and (π − θ)/π with cos θ = s/√(dx dz).
    """
    norm = torch.sqrt((dx * dz).clamp_min(1e-60))  # clamp first: no infinite gradient at a zero patch
    cos = s / norm
    # Values are exact; gradients go through a clamped cosine, so parallel pairs (an image with
    # itself, two flat patches), where the arc-cosine's derivative is infinite, contribute 0
    # instead of NaN when the kernel is differentiated (ConvRFM's AGOP).
    eps = 1e-7
    c_safe = cos.clamp(-1 + eps, 1 - eps)
    c_val = cos.clamp(-1.0, 1.0)
    theta = torch.arccos(c_safe) + (torch.arccos(c_val) - torch.arccos(c_safe)).detach()
    sin = torch.sqrt(1 - c_safe * c_safe) + (torch.sqrt(1 - c_val * c_val) - torch.sqrt(1 - c_safe * c_safe)).detach()
    k1 = norm * (sin + (math.pi - theta) * c_val) / math.pi
    k0 = (math.pi - theta) / math.pi
    return k1, k0


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")


def raw_patches(x: torch.Tensor, q: int) -> torch.Tensor:
    """Every q×q patch of images (N, C, H, W) as (N, H − q + 1, W − q + 1, C·q·q), conv-weight order."""
    n, _, h, w = x.shape
    return F.unfold(x, q).transpose(1, 2).reshape(n, h - q + 1, w - q + 1, -1)


def _transform(p: torch.Tensor, root: torch.Tensor | None) -> torch.Tensor:
    """Patches mapped so that plain inner products are x_pᵀ M z_p / d (M = L Lᵀ)."""
    d = p.shape[-1]
    return (p if root is None else p @ root) / math.sqrt(d)


def _patches(x: torch.Tensor, q: int, m_root: torch.Tensor | None) -> torch.Tensor:
    return _transform(raw_patches(x, q), m_root)


def aligned_patch_products(x: torch.Tensor, z: torch.Tensor, q: int = 3, M: torch.Tensor | None = None) -> torch.Tensor:
    """Σ¹ at aligned positions: (x_pᵀ M z_p) / d for every image pair, shape (Nx, Nz, H', W')."""
    _check_images(x, "x")
    _check_images(z, "z")
    root = metric_root(M, x.shape[1] * q * q, x)
    return torch.einsum("ahwd,bhwd->abhw", _patches(x, q, root), _patches(z, q, root))


def metric_root(M: torch.Tensor | None, d: int, like: torch.Tensor) -> torch.Tensor | None:
    """L with M = L Lᵀ (M symmetric PSD, d × d), or None for M = I."""
    if M is None:
        return None
    M = torch.as_tensor(M, dtype=like.dtype, device=like.device)
    if M.shape != (d, d):
        raise ValueError(f"M must be ({d}, {d}) for {like.shape[1]}-channel {int(math.isqrt(d // like.shape[1]))}"
                         f"×{int(math.isqrt(d // like.shape[1]))} patches, got {tuple(M.shape)}")
    evals, evecs = torch.linalg.eigh((M + M.T) / 2)
    if evals.min() < -1e-6 * evals.abs().max().clamp_min(1e-30):
        raise ValueError("M must be positive semi-definite")
    return evecs * evals.clamp_min(0).sqrt()


def conv_kernels(
    x: torch.Tensor,
    z: torch.Tensor | None = None,
    *,
    q: int = 3,
    depth: int = 3,
    M: torch.Tensor | None = None,
    block_size: int = 256,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (NNGP, NTK) kernel matrices between images ``x`` and ``z`` (default: ``x``).

    Parameters
    ----------
    x, z
        Images (N, C, H, W) of the same channel count and size.
    q, depth
        Filter size and number of layers: the patch layer and depth − 1 VALID convs with
        ReLU (every layer shrinks the map by q − 1 pixels).
    M
        Metric on first-layer patches (d × d, PSD; d = C·q·q); ``None`` means the identity.
    block_size
        Images per block on each side: memory is about block_size² · H · W numbers.
    device, dtype
        Where and in which precision to compute (default: x's device, float64).

    Returns
    -------
    (nngp, ntk)
        Two (Nx, Nz) tensors on ``device``.
    """
    _check_images(x, "x")
    z = x if z is None else z
    _check_images(z, "z")
    if x.shape[1:] != z.shape[1:]:
        raise ValueError(f"x and z must have the same channels and size, got {tuple(x.shape[1:])} and {tuple(z.shape[1:])}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    h, w = x.shape[2:]
    if q < 1 or h - depth * (q - 1) < 1 or w - depth * (q - 1) < 1:
        raise ValueError(f"{depth} VALID {q}×{q} layers do not fit {h}×{w} images")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    dev = torch.device(device) if device is not None else x.device
    x, z = x.to(dev, dtype), z.to(dev, dtype)
    root = metric_root(M, x.shape[1] * q * q, x)
    nngp = torch.empty(len(x), len(z), dtype=dtype, device=dev)
    ntk = torch.empty_like(nngp)
    blocks = [(i, j) for i in range(0, len(x), block_size) for j in range(0, len(z), block_size)]
    for i, j in tqdm(blocks, desc="conv kernel blocks", disable=not progress):
        k_nngp, k_ntk = kernel_from_patches(raw_patches(x[i:i + block_size], q), raw_patches(z[j:j + block_size], q),
                                            q=q, depth=depth, root=root)
        nngp[i:i + block_size, j:j + block_size] = k_nngp
        ntk[i:i + block_size, j:j + block_size] = k_ntk
    return nngp, ntk


def kernel_from_patches(px: torch.Tensor, pz: torch.Tensor, *, q: int, depth: int,
                        root: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(NNGP, NTK) between two sets of images given as raw patch maps (N, H', W', d); differentiable.

    ``root`` is L with M = L Lᵀ (None: M = I). Used by :func:`conv_kernels` block by block,
    and by ConvRFM to differentiate the predictor with respect to each patch.
    """
    tx, tz = _transform(px, root), _transform(pz, root)
    sigma = torch.einsum("ahwd,bhwd->abhw", tx, tz)  # layer 1: the (linear) patch layer
    dx, dz = tx.pow(2).sum(-1), tz.pow(2).sum(-1)  # per-image variance maps (He scaling keeps them)
    theta = sigma
    act, act_dot = sigma, None  # the first layer's output enters the next conv without a ReLU
    for _ in range(depth - 1):
        sigma = _pool(act, q)
        theta = sigma + _pool(theta if act_dot is None else theta * act_dot, q)
        dx = F.avg_pool2d(dx[:, None], q, stride=1)[:, 0]
        dz = F.avg_pool2d(dz[:, None], q, stride=1)[:, 0]
        act, act_dot = relu_expectations(sigma, dx[:, None], dz[None])
    if act_dot is None:  # depth 1: a linear kernel
        return act.mean((2, 3)), (act + theta).mean((2, 3))
    return act.mean((2, 3)), (act + theta * act_dot).mean((2, 3))


def _pool(t: torch.Tensor, q: int) -> torch.Tensor:
    a, b, h, w = t.shape
    return F.avg_pool2d(t.reshape(a * b, 1, h, w), q, stride=1).reshape(a, b, h - q + 1, w - q + 1)


def conv_ntk(x: torch.Tensor, z: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The NTK matrix only (see :func:`conv_kernels`)."""
    return conv_kernels(x, z, **kwargs)[1]


def conv_nngp(x: torch.Tensor, z: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The NNGP matrix only (see :func:`conv_kernels`)."""
    return conv_kernels(x, z, **kwargs)[0]
