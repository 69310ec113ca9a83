"""featlearn.kernels against a wide finite network (empirical NTK and last-layer features)."""

import math

import pytest
import torch
import torch.nn.functional as F

from featlearn import data, kernels
from kernels_reference import reference_conv_kernels


def finite_net(x, params, q):
    """The plain conv net of the kernels module, written out with conv2d (the oracle)."""
    ws, v = params[:-1], params[-1]
    act = x
    for w in ws:  # every conv (the first one reads the patches) is followed by √2·relu
        fan_in = w[0].numel()
        act = math.sqrt(2) * torch.relu(F.conv2d(act, w) / math.sqrt(fan_in))
    feats = act.flatten(1)
    return feats @ v / math.sqrt(feats.shape[1]), feats


def empirical(x, q, depth, width, seed):
    g = torch.Generator().manual_seed(seed)
    c_in = x.shape[1]
    ws = [torch.randn(width, c_in, q, q, generator=g, dtype=torch.float64)]
    ws += [torch.randn(width, width, q, q, generator=g, dtype=torch.float64) for _ in range(depth - 1)]
    hw = x.shape[-1] - depth * (q - 1)
    v = torch.randn(width * hw * hw, generator=g, dtype=torch.float64)
    params = [p.requires_grad_() for p in ws + [v]]
    grads = []
    for i in range(len(x)):
        out, _ = finite_net(x[i : i + 1], params, q)
        grads.append(torch.cat([gr.flatten() for gr in torch.autograd.grad(out.sum(), params)]))
    jac = torch.stack(grads)
    _, feats = finite_net(x, params, q)
    return jac @ jac.T, feats @ feats.T / feats.shape[1]


@pytest.fixture(scope="module")
def images():
    return data.natural_crops(4, 9, channels=1, seed=3).double()


def test_kernels_match_a_wide_network(images):
    """Infinite-width kernels against a width-1024 network (3 inits): within a few per cent.

    Finite width biases the estimate too: at width 256 the NTK ratio was 0.89-0.95, at 1024
    0.97-1.0 (depths 1-3).

    The error is shared by all entries (the same weights see every image), so it shows as a
    common scale; 10% is about 2.5 standard errors for the NNGP, whose estimate is noisiest.
    """
    q, depth = 3, 3
    nngp, ntk = kernels.conv_kernels(images, q=q, depth=depth, block_size=3)  # uneven blocks
    ntks, nngps = zip(*[empirical(images, q, depth, 1024, s) for s in range(3)])
    ntk_mc, nngp_mc = torch.stack(ntks).mean(0).detach(), torch.stack(nngps).mean(0).detach()
    assert torch.allclose(ntk, ntk_mc, rtol=0.1, atol=0.0), (ntk, ntk_mc)
    assert torch.allclose(nngp, nngp_mc, rtol=0.1, atol=0.0), (nngp, nngp_mc)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_aligned_pairs_equal_the_all_pairs_recursion(images, depth):
    """Only aligned position pairs are needed: same result as keeping every pair (with a metric)."""
    x = torch.cat([images, images.flip(-1)])
    a = torch.randn(9, 9, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    m = a @ a.T / 9
    nngp, ntk = kernels.conv_kernels(x[:3], x[3:], q=3, depth=depth, M=m)
    ref_nngp, ref_ntk = reference_conv_kernels(x[:3], x[3:], q=3, depth=depth, M=m)
    assert torch.allclose(nngp, ref_nngp, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ntk, ref_ntk, rtol=1e-10, atol=1e-12)


def test_metric_equals_transformed_patches(images):
    """x_pᵀ M z_p with M = A Aᵀ equals the plain kernel of patches mapped by Aᵀ (checked at depth 1)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(9, 9, generator=g, dtype=torch.float64)
    m = a @ a.T
    s1 = kernels.aligned_patch_products(images, images, 3, M=m)
    p = F.unfold(images, 3)  # (n, 9, P)
    tp = torch.einsum("de,ndp->nep", a, p)
    direct = torch.einsum("adp,bdp->abp", tp, tp).reshape(s1.shape) / 9
    assert torch.allclose(s1, direct, atol=1e-10)


def test_kernel_is_symmetric_psd_and_blocks_do_not_matter():
    x = torch.rand(7, 1, 10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g_all = kernels.conv_ntk(x, depth=3, block_size=64)
    g_blk = kernels.conv_ntk(x, depth=3, block_size=2)
    assert torch.allclose(g_all, g_blk, atol=1e-12)
    assert torch.allclose(g_all, g_all.T, atol=1e-12)
    assert torch.linalg.eigvalsh(g_all).min() > -1e-10
    cross = kernels.conv_ntk(x[:3], x[3:], depth=3)
    assert torch.allclose(cross, g_all[:3, 3:], atol=1e-12)


def test_bad_inputs():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="same channels and size"):
        kernels.conv_kernels(x, torch.rand(2, 1, 9, 9))
    with pytest.raises(ValueError, match="do not fit"):
        kernels.conv_kernels(x, q=5, depth=2)
    with pytest.raises(ValueError, match=r"\(9, 9\)"):
        kernels.conv_kernels(x, M=torch.eye(4))
    with pytest.raises(ValueError, match="semi-definite"):
        kernels.conv_kernels(x, M=-torch.eye(9))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_images_and_metric_are_refused(bad):
    # was: NaN/inf spread silently through the kernel (a NaN row, or every entry NaN through M)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    xbad = x.clone()
    xbad[1, 0, 2, 2] = bad
    with pytest.raises(ValueError, match=r"x holds 1 non-finite value"):
        kernels.conv_kernels(xbad)
    with pytest.raises(ValueError, match=r"z holds 1 non-finite value"):
        kernels.conv_ntk(x, xbad)
    with pytest.raises(ValueError, match=r"x holds 1 non-finite value"):
        kernels.aligned_patch_products(xbad, x)
    m = torch.eye(9, dtype=torch.float64)
    m[0, 0] = bad
    with pytest.raises(ValueError, match=r"patch metric M holds 1 non-finite value"):
        kernels.conv_kernels(x, M=m)
