"""NNGP and NTK kernels of the CNFA paper's plain conv net, with a Mahalanobis metric on patches.

Why: ConvRFM (Beaglehole et al., arXiv 2309.00570) is kernel regression with the
convolutional kernel of an infinitely wide conv net whose first layer sees patches through
a learned metric M. This module computes that kernel in PyTorch, in blocks of image pairs.

The network
-----------
``depth`` VALID q×q conv layers with ReLU, then a linear readout of the flattened last
feature map (no pooling), in the NTK parametrisation with He scaling:

* h¹_p = W¹ x_p / √d, with x_p the p-th patch (d = c·q·q entries, ordered like
  ``conv.weight.flatten(1)``); with a metric, the patch inner product is x_pᵀ M z_p;
* h^{ℓ+1}_p = √2 Σ_δ W^{ℓ+1}_δ relu(h^ℓ_{p+δ}) / √(C q²);
* f = √2 vᵀ flatten(relu(h^L)) / √(C P), P positions in the last map.

Which position pairs are needed
-------------------------------
The readout sums over positions with independent weights, so only *aligned* pairs
(position p of x with position p of z) enter the output kernel; and an aligned pair at layer
ℓ + 1 needs only aligned pairs at layer ℓ (p + δ with p + δ). So each layer is an
elementwise arc-cosine map followed by a q×q average pool over the map of aligned pairs:
O(P) per image pair and layer instead of O(P²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["relu_expectations", "aligned_patch_products", "conv_kernels", "conv_ntk", "conv_nngp"]


def relu_expectations(s: torch.Tensor, dx: torch.Tensor, dz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """He-scaled ReLU moments of a centred Gaussian pair with covariance [[dx, s], [s, dz]].

    Returns (2 E[relu(u) relu(v)], 2 E[relu'(u) relu'(v)]): the arc-cosine kernels of
    degree 1 and 0, √(dx dz)(sin θ + (π − θ) cos θ)/π and (π − θ)/π with cos θ = s/√(dx dz).
    """
    norm = torch.sqrt(dx * dz).clamp_min(1e-30)
    cos = (s / norm).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    k1 = norm * (torch.sqrt(1 - cos * cos) + (math.pi - theta) * cos) / math.pi  # sin θ = √(1 − cos² θ)
    k0 = (math.pi - theta) / math.pi
    return k1, k0


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")


def _patches(x: torch.Tensor, q: int, m_root: torch.Tensor | None) -> torch.Tensor:
    """Patches (N, H', W', d), transformed by Lᵀ where M = L Lᵀ, and divided by √d."""
    n, _, h, w = x.shape
    cols = F.unfold(x, q)  # (N, d, P)
    d = cols.shape[1]
    if m_root is not None:
        cols = torch.einsum("de,ndp->nep", m_root, cols)
    return (cols / math.sqrt(d)).transpose(1, 2).reshape(n, h - q + 1, w - q + 1, -1)


def aligned_patch_products(x: torch.Tensor, z: torch.Tensor, q: int = 3, M: torch.Tensor | None = None) -> torch.Tensor:
    """Σ¹ at aligned positions: (x_pᵀ M z_p) / d for every image pair, shape (Nx, Nz, H', W')."""
    _check_images(x, "x")
    _check_images(z, "z")
    root = _metric_root(M, x.shape[1] * q * q, x)
    return torch.einsum("ahwd,bhwd->abhw", _patches(x, q, root), _patches(z, q, root))


def _metric_root(M: torch.Tensor | None, d: int, like: torch.Tensor) -> torch.Tensor | None:
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
        Filter size and number of conv layers (each VALID, so every layer shrinks the map
        by q − 1 pixels).
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
    root = _metric_root(M, x.shape[1] * q * q, x)
    diag_x, diag_z = _self_maps(x, q, depth, root, block_size), _self_maps(z, q, depth, root, block_size)
    nngp = torch.empty(len(x), len(z), dtype=dtype, device=dev)
    ntk = torch.empty_like(nngp)
    blocks = [(i, j) for i in range(0, len(x), block_size) for j in range(0, len(z), block_size)]
    for i, j in tqdm(blocks, desc="conv kernel blocks", disable=not progress):
        px = _patches(x[i:i + block_size], q, root)
        pz = _patches(z[j:j + block_size], q, root)
        sigma = torch.einsum("ahwd,bhwd->abhw", px, pz)
        theta = sigma
        for layer in range(depth):
            dx = diag_x[layer][i:i + block_size, None]
            dz = diag_z[layer][None, j:j + block_size]
            k1, k0 = relu_expectations(sigma, dx, dz)
            if layer < depth - 1:  # next conv layer: average over the q×q window of aligned pairs
                sigma_next = _pool(k1, q)
                theta = sigma_next + _pool(theta * k0, q)
                sigma = sigma_next
            else:  # readout over all positions
                nngp[i:i + block_size, j:j + block_size] = k1.mean((2, 3))
                ntk[i:i + block_size, j:j + block_size] = (k1 + theta * k0).mean((2, 3))
    return nngp, ntk


def _pool(t: torch.Tensor, q: int) -> torch.Tensor:
    a, b, h, w = t.shape
    return F.avg_pool2d(t.reshape(a * b, 1, h, w), q, stride=1).reshape(a, b, h - q + 1, w - q + 1)


def _self_maps(x: torch.Tensor, q: int, depth: int, root: torch.Tensor | None,
               block_size: int) -> list[torch.Tensor]:
    """Per-image variance maps Σ^ℓ(x, x) at aligned positions, for each layer (He scaling keeps them)."""
    maps = []
    cur = torch.cat([_patches(x[i:i + block_size], q, root).pow(2).sum(-1) for i in range(0, len(x), block_size)])
    for layer in range(depth):
        maps.append(cur)
        if layer < depth - 1:
            cur = F.avg_pool2d(cur[:, None], q, stride=1)[:, 0]
    return maps


def conv_ntk(x: torch.Tensor, z: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The NTK matrix only (see :func:`conv_kernels`)."""
    return conv_kernels(x, z, **kwargs)[1]


def conv_nngp(x: torch.Tensor, z: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The NNGP matrix only (see :func:`conv_kernels`)."""
    return conv_kernels(x, z, **kwargs)[0]
