"""NNGP and NTK kernels of the CNFA paper's plain conv net, with a Mahalanobis metric on patches.

Why: ConvRFM (Beaglehole et al., arXiv 2309.00570) is kernel regression with the
convolutional kernel of an infinitely wide conv net whose first layer sees patches through
a learned metric M. This module computes that kernel in PyTorch, in blocks of image pairs.

The network
-----------
As in the paper's notebooks (neural-tangents ``stax``: Conv, √2·ReLU, repeated, then Flatten
and Dense): depth × [q×q conv, √2·ReLU], then a linear readout of the flattened last feature
map (no pooling), in the NTK parametrisation:

* h¹_p = W¹ x_p / √d, with x_p the p-th patch (d = c·q·q entries, ordered like
  ``conv.weight.flatten(1)``); with a metric, the patch inner product is x_pᵀ M z_p. As in
  the notebooks (``expand_image`` without padding, then stride-q and stride-1 convs with
  ``padding='VALID'``), the patches are the VALID ones, so every map is q − 1 pixels smaller;
* for ℓ ≥ 1, h^{ℓ+1}_p = Σ_δ W^{ℓ+1}_δ φ(h^ℓ_{p+δ}) / √(C q²), with φ = √2·relu (He scaling);
* f = vᵀ flatten(φ(h^L)) / √(C P), P positions in the last map.

The notebooks' W_std = q multiplies every layer's kernel by q², so their kernel is q^{2·depth}
times this one: a constant that their division by max(K_train) removes.

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

from featlearn._validation import check_finite
from featlearn.linalg import psd_root

__all__ = [
    "relu_expectations",
    "raw_patches",
    "aligned_patch_products",
    "conv_kernels",
    "kernel_from_patches",
    "metric_root",
    "layer1_maps",
    "kernel_from_layer1",
    "position_major",
    "transform_patches",
    "conv_ntk",
    "conv_nngp",
]


def relu_expectations(
    s: torch.Tensor, dx: torch.Tensor, dz: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """He-scaled ReLU moments of a centred Gaussian pair with covariance [[dx, s], [s, dz]].

    Returns (2 E[relu(u) relu(v)], 2 E[relu'(u) relu'(v)]): the arc-cosine kernels of
    degree 1 and 0, √(dx dz)(sin θ + (π − θ) cos θ)/π and (π − θ)/π with cos θ = s/√(dx dz).
    """
    if not (torch.is_grad_enabled() and (s.requires_grad or dx.requires_grad or dz.requires_grad)):
        return _relu_expectations_nograd(s, dx, dz)
    norm = torch.sqrt(
        (dx * dz).clamp_min(torch.finfo(s.dtype).tiny)
    )  # clamp first: no infinite gradient at a zero patch
    cos = s / norm
    # Values are exact; gradients go through a clamped cosine, so parallel pairs (an image with
    # itself, two flat patches), where the arc-cosine's derivative is infinite, contribute 0
    # instead of NaN when the kernel is differentiated (ConvRFM's AGOP).
    eps = 1e-7
    c_safe = cos.clamp(-1 + eps, 1 - eps)
    c_val = cos.clamp(-1.0, 1.0)
    theta = torch.arccos(c_safe) + (torch.arccos(c_val) - torch.arccos(c_safe)).detach()
    sin = (
        torch.sqrt(1 - c_safe * c_safe)
        + (torch.sqrt(1 - c_val * c_val) - torch.sqrt(1 - c_safe * c_safe)).detach()
    )
    k1 = norm * (sin + (math.pi - theta) * c_val) / math.pi
    k0 = (math.pi - theta) / math.pi
    return k1, k0


def _relu_expectations_nograd(
    s: torch.Tensor, dx: torch.Tensor, dz: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same values as :func:`relu_expectations`, in place where possible (no autograd): fewer memory passes."""
    norm = (dx * dz).clamp_min_(torch.finfo(s.dtype).tiny).sqrt_()  # a zero patch gives 0, not NaN
    cos = (s / norm).clamp_(-1.0, 1.0)
    sin = cos.square().neg_().add_(1.0).clamp_min_(0.0).sqrt_()
    rest = torch.acos(cos).neg_().add_(math.pi)  # π − θ
    k0 = rest / math.pi
    k1 = rest.mul_(cos).add_(sin).mul_(norm).div_(math.pi)
    return k1, k0


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    check_finite(x, name)  # a NaN pixel would spread NaN through its whole row of the kernel


def raw_patches(x: torch.Tensor, q: int) -> torch.Tensor:
    """Every q×q patch of images (N, C, H, W) as (N, H − q + 1, W − q + 1, C·q·q), conv-weight order."""
    n, _, h, w = x.shape
    return F.unfold(x, q).transpose(1, 2).reshape(n, h - q + 1, w - q + 1, -1)


def transform_patches(p: torch.Tensor, root: torch.Tensor | None) -> torch.Tensor:
    """Patches (…, d) mapped to p L / √d, so that plain inner products are x_pᵀ M z_p / d (M = L Lᵀ)."""
    d = p.shape[-1]
    return (p if root is None else p @ root) / math.sqrt(d)


def _patches(x: torch.Tensor, q: int, m_root: torch.Tensor | None) -> torch.Tensor:
    return transform_patches(raw_patches(x, q), m_root)


def aligned_patch_products(
    x: torch.Tensor, z: torch.Tensor, q: int = 3, M: torch.Tensor | None = None
) -> torch.Tensor:
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
    check_finite(M, "the patch metric M")
    if M.shape != (d, d):
        raise ValueError(
            f"M must be ({d}, {d}) for {like.shape[1]}-channel {int(math.isqrt(d // like.shape[1]))}"
            f"×{int(math.isqrt(d // like.shape[1]))} patches, got {tuple(M.shape)}"
        )
    try:
        return psd_root(M, tol=1e-6)
    except ValueError:
        raise ValueError("M must be positive semi-definite") from None


def conv_kernels(
    x: torch.Tensor,
    z: torch.Tensor | None = None,
    *,
    q: int = 3,
    depth: int = 3,
    M: torch.Tensor | None = None,
    block_size: int = 64,
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
        Filter size and number of conv + ReLU layers, the first of which reads the patches
        through the metric (every layer shrinks the map by q − 1 pixels).
    M
        Metric on first-layer patches (d × d, PSD; d = C·q·q); ``None`` means the identity.
    block_size
        Images per block on each side: memory is about 6 · block_size² · H · W numbers; small
        blocks (about 64) stay in cache and are fastest on a CPU. On top of that, z's
        metric-transformed patches (Nz · H' · W' · d numbers) are kept for reuse by every
        block row.
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
        raise ValueError(
            f"x and z must have the same channels and size, got {tuple(x.shape[1:])} and {tuple(z.shape[1:])}"
        )
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
    tz = [position_major(_patches(z[j : j + block_size], q, root)) for j in range(0, len(z), block_size)]
    bar = tqdm(total=len(tz) * -(-len(x) // block_size), desc="conv kernel blocks", disable=not progress)
    with torch.no_grad():
        for i in range(0, len(x), block_size):
            tx = position_major(_patches(x[i : i + block_size], q, root))
            for j, tzj in zip(range(0, len(z), block_size), tz):
                nngp[i : i + block_size, j : j + block_size], ntk[i : i + block_size, j : j + block_size] = (
                    _kernel_from_transformed(tx, tzj, q, depth)
                )
                bar.update()
    bar.close()
    return nngp, ntk


def kernel_from_patches(
    px: torch.Tensor, pz: torch.Tensor, *, q: int, depth: int, root: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(NNGP, NTK) between two sets of images given as raw patch maps (N, H', W', d); differentiable.

    ``root`` is L with M = L Lᵀ (None: M = I). The same computation as :func:`conv_kernels`
    does block by block; differentiable with respect to the patches (the tests check
    ConvRFM's AGOP against autograd through it).
    """
    tx, tz = transform_patches(px, root), transform_patches(pz, root)
    return _kernel_from_transformed(position_major(tx), position_major(tz), q, depth)


def position_major(t: torch.Tensor) -> torch.Tensor:
    """(N, H, W, d) patches → contiguous (H, W, N, d): layer 1 becomes one fast batched matmul."""
    return t.permute(1, 2, 0, 3).contiguous()


def _kernel_from_transformed(
    tx: torch.Tensor, tz: torch.Tensor, q: int, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # Patches come position-major (H, W, N, d) and maps are laid out (H, W, Nx, Nz): pooling
    # then adds contiguous slabs, and layer 1 is one batched matmul over positions.
    return kernel_from_layer1(*layer1_maps(tx, tz), q, depth)


def layer1_maps(tx: torch.Tensor, tz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-layer maps from position-major transformed patches (H, W, N, d): (Σ, dx, dz).

    Σ (H, W, Nx, Nz) holds the aligned patch products, dx (H, W, Nx, 1) and dz (H, W, 1, Nz)
    the patches' squared norms. The kernel depends on the images only through these maps,
    which is what lets ConvRFM's AGOP take one backward pass for every output.
    """
    h, w, a, d = tx.shape
    sigma = torch.bmm(tx.view(h * w, a, d), tz.view(h * w, -1, d).transpose(1, 2)).view(h, w, a, -1)
    dx = tx.pow(2).sum(-1)[..., None]  # (H, W, Nx, 1): He scaling keeps variances
    dz = tz.pow(2).sum(-1)[:, :, None]  # (H, W, 1, Nz)
    return sigma, dx, dz


def kernel_from_layer1(
    sigma: torch.Tensor, dx: torch.Tensor, dz: torch.Tensor, q: int, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(NNGP, NTK) (Nx, Nz) from the first-layer maps of :func:`layer1_maps`; differentiable.

    ``dx`` may also be given per pair, (H, W, Nx, Nz), so that a backward pass returns each
    pair's sensitivity to its own copy of it.
    """
    theta = sigma
    act, act_dot = relu_expectations(sigma, dx, dz)  # every conv, the patch layer included, has a ReLU
    for _ in range(depth - 1):
        sigma = _pool(act, q)
        theta = sigma + _pool(theta * act_dot, q)
        dx, dz = _pool(dx, q), _pool(dz, q)
        act, act_dot = relu_expectations(sigma, dx, dz)
    return act.mean((0, 1)), (act + theta * act_dot).mean((0, 1))


def _box_mean(t: torch.Tensor, q: int) -> torch.Tensor:
    """q×q mean over the two leading (spatial) axes, stride 1, VALID, by adding shifted slabs."""
    for axis in (0, 1):
        n = t.shape[axis] - q + 1
        out = t.narrow(axis, 0, n) + t.narrow(axis, 1, n)
        for i in range(2, q):
            out.add_(t.narrow(axis, i, n))
        t = out
    return t.div_(q * q)


class _BoxMeanFn(torch.autograd.Function):
    """The box mean with its adjoint as backward (a FULL box mean of the zero-padded gradient).

    Autograd through the slices would allocate and fill a full-size zero tensor per slice.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor, q: int) -> torch.Tensor:
        ctx.q = q
        return _box_mean(t, q)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        q = ctx.q
        padded = g.new_zeros(g.shape[0] + 2 * (q - 1), g.shape[1] + 2 * (q - 1), *g.shape[2:])
        padded[q - 1 : q - 1 + g.shape[0], q - 1 : q - 1 + g.shape[1]] = g
        return _box_mean(padded, q), None


def _pool(t: torch.Tensor, q: int) -> torch.Tensor:
    """q×q mean over the two leading (spatial) axes, stride 1, VALID; differentiable."""
    if q == 1:
        return t
    if torch.is_grad_enabled() and t.requires_grad:
        return _BoxMeanFn.apply(t, q)
    return _box_mean(t, q)


def conv_ntk(x: torch.Tensor, z: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The NTK matrix only (see :func:`conv_kernels`)."""
    return conv_kernels(x, z, **kwargs)[1]


def conv_nngp(x: torch.Tensor, z: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The NNGP matrix only (see :func:`conv_kernels`)."""
    return conv_kernels(x, z, **kwargs)[0]
