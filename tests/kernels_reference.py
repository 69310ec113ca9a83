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


def reference_conv_kernels(x, z, q=3, depth=3, M=None, px=None):
    """(NNGP, NTK) matrices by the all-pairs recursion, one image pair at a time.

    ``px`` (n, P, d) replaces x's unfolded patches, so that each patch can be a variable.
    """
    d = x.shape[1] * q * q
    m = torch.eye(d, dtype=x.dtype) if M is None else M.to(x.dtype)
    px = F.unfold(x, q).transpose(1, 2) if px is None else px  # (n, P, d)
    pz = F.unfold(z, q).transpose(1, 2)
    h1 = x.shape[2] - q + 1
    w1 = x.shape[3] - q + 1
    nngp = [[None] * len(z) for _ in range(len(x))]
    ntk = [[None] * len(z) for _ in range(len(x))]
    diag = lambda t: torch.einsum("ijij->ij", t)
    for a in range(len(x)):
        for b in range(len(z)):
            # layer 1: every position pair of x with z, of x with x, of z with z
            s = (px[a] @ m @ pz[b].T / d).reshape(h1, w1, h1, w1)
            sx = (px[a] @ m @ px[a].T / d).reshape(h1, w1, h1, w1)
            sz = (pz[b] @ m @ pz[b].T / d).reshape(h1, w1, h1, w1)
            t = s
            h, w = h1, w1
            ex, ez = diag(sx), diag(sz)
            act, act_dot = _arccos(s, ex[:, :, None, None], ez[None, None])
            actx = _arccos(sx, ex[:, :, None, None], ex[None, None])[0]
            actz = _arccos(sz, ez[:, :, None, None], ez[None, None])[0]
            for _ in range(depth - 1):
                hn, wn = h - q + 1, w - q + 1
                new = [0, 0, 0, 0]
                tk = t * act_dot
                for dy in range(q):
                    for dxo in range(q):
                        sl = (
                            slice(dy, dy + hn),
                            slice(dxo, dxo + wn),
                            slice(dy, dy + hn),
                            slice(dxo, dxo + wn),
                        )
                        new = [new[0] + act[sl], new[1] + actx[sl], new[2] + actz[sl], new[3] + tk[sl]]
                s, sx, sz = new[0] / q**2, new[1] / q**2, new[2] / q**2
                t = s + new[3] / q**2
                ex, ez = diag(sx), diag(sz)
                act, act_dot = _arccos(s, ex[:, :, None, None], ez[None, None])
                actx = _arccos(sx, ex[:, :, None, None], ex[None, None])[0]
                actz = _arccos(sz, ez[:, :, None, None], ez[None, None])[0]
                h, w = hn, wn
            nngp[a][b], ntk[a][b] = diag(act).mean(), diag(act + t * act_dot).mean()
    return torch.stack([torch.stack(r) for r in nngp]), torch.stack([torch.stack(r) for r in ntk])
