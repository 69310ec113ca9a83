"""All-position-pairs reference for featlearn.kernels (used by the tests and bench/bench_kernels.py).

It keeps the full covariance between every position of x and every position of z at every
layer (P² numbers per image pair), image pair by image pair, and only at the readout takes
the aligned pairs. It shares nothing with featlearn.kernels but the arc-cosine formulas,
written out again here.
"""

import math

import torch
import torch.nn.functional as F


def _arccos(s, dx, dz):
    norm = torch.sqrt(dx * dz)
    cos = (s / norm).clamp(-1, 1)
    th = torch.arccos(cos)
    return norm * (torch.sin(th) + (math.pi - th) * cos) / math.pi, (math.pi - th) / math.pi


def reference_conv_kernels(x, z, q=3, depth=3, M=None):
    """(NNGP, NTK) matrices by the all-pairs recursion, one image pair at a time."""
    d = x.shape[1] * q * q
    m = torch.eye(d, dtype=x.dtype) if M is None else M.to(x.dtype)
    px = F.unfold(x, q).transpose(1, 2)  # (n, P, d)
    pz = F.unfold(z, q).transpose(1, 2)
    h1 = x.shape[2] - q + 1
    w1 = x.shape[3] - q + 1
    nngp = torch.zeros(len(x), len(z), dtype=x.dtype)
    ntk = torch.zeros_like(nngp)
    for a in range(len(x)):
        for b in range(len(z)):
            s = (px[a] @ m @ pz[b].T / d).reshape(h1, w1, h1, w1)  # every position pair
            sx = (px[a] @ m @ px[a].T / d).reshape(h1, w1, h1, w1)
            sz = (pz[b] @ m @ pz[b].T / d).reshape(h1, w1, h1, w1)
            t = s.clone()
            h, w = h1, w1
            for layer in range(depth):
                dx = torch.einsum("ijij->ij", sx)[:, :, None, None]
                dz = torch.einsum("ijij->ij", sz)[None, None]
                k1, k0 = _arccos(s, dx, dz)
                if layer == depth - 1:
                    nngp[a, b] = torch.einsum("ijij->ij", k1).mean()
                    ntk[a, b] = torch.einsum("ijij->ij", k1 + t * k0).mean()
                    break
                kx = _arccos(sx, torch.einsum("ijij->ij", sx)[:, :, None, None], torch.einsum("ijij->ij", sx)[None, None])[0]
                kz = _arccos(sz, torch.einsum("ijij->ij", sz)[:, :, None, None], torch.einsum("ijij->ij", sz)[None, None])[0]
                hn, wn = h - q + 1, w - q + 1
                new_s = torch.zeros(hn, wn, hn, wn, dtype=x.dtype)
                new_t = torch.zeros_like(new_s)
                new_sx, new_sz = torch.zeros_like(new_s), torch.zeros_like(new_s)
                for dy in range(q):
                    for dxo in range(q):
                        sl = (slice(dy, dy + hn), slice(dxo, dxo + wn), slice(dy, dy + hn), slice(dxo, dxo + wn))
                        new_s += k1[sl]
                        new_t += (t * k0)[sl]
                        new_sx += kx[sl]
                        new_sz += kz[sl]
                s, sx, sz = new_s / q ** 2, new_sx / q ** 2, new_sz / q ** 2
                t = s + new_t / q ** 2
                h, w = hn, wn
    return nngp, ntk
