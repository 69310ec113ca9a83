"""Slow, obvious oracles for the AGOPs in :mod:`featlearn.agop`.

Why: tests and the benchmark need an independent implementation that follows the papers'
definition literally (unfold the patches, differentiate every output with respect to every
patch, sum outer products) and does not use the identity G = W^T C W.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["reference_patch_agop", "reference_mlp_agops"]


def _unfold(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Patches the conv reads: (b, c_in*kh*kw, L), padding included (zero or other mode)."""
    if isinstance(conv.padding, str):
        raise NotImplementedError("string padding ('same'/'valid') is not supported by the reference")
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    else:
        padding = conv.padding
    return F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)


def reference_patch_agop(
    model: nn.Module,
    layer: nn.Conv2d,
    images: torch.Tensor,
    outputs: str | Sequence[int] | torch.Tensor = "all",
    *,
    vectorize: bool = True,
) -> torch.Tensor:
    """Patch AGOP by brute force: Jacobian of the outputs w.r.t. explicitly unfolded patches.

    Why: an oracle that shares no code or algebra with ``featlearn.agop``.

    Each image is processed alone. A dry forward records the layer's input at each call;
    the patches (unfold with the layer's stride/padding/dilation) become independent
    leaf variables, the layer's output is replaced by ``W @ patches + b`` folded back to
    the output shape, and ``torch.autograd.functional.jacobian`` gives d f / d patches.
    A layer called several times (weight sharing) is handled one call at a time, the
    other calls running normally, and the results are summed.
    ``outputs`` is ``"all"``, a list of indices, or a floating (m, K) matrix of directions
    (rows d_j: sum over j of the AGOP of d_j^T f).
    """
    w = layer.weight.flatten(1)
    total = None
    for img in images:
        x = img[None]
        calls: list[torch.Tensor] = []

        def record(module, args, output):
            calls.append(args[0].detach())  # noqa: B023 (hook removed before the next image)

        h = layer.register_forward_hook(record)
        try:
            with torch.no_grad():
                model(x)
        finally:
            h.remove()
        for call, inp in enumerate(calls):
            # Only this call is replaced; other calls of a shared layer run normally, so
            # the gradient w.r.t. these patches includes paths through later calls.
            patches0 = _unfold(layer, inp)

            def fn(patches: torch.Tensor, call: int = call) -> torch.Tensor:
                counter = [0]

                def replace(module, args, output):
                    i = counter[0]
                    counter[0] += 1
                    if i != call:
                        return None
                    y = w @ patches
                    if module.bias is not None:
                        y = y + module.bias[None, :, None]
                    return y.reshape(output.shape)

                hh = layer.register_forward_hook(replace)
                try:
                    return model(x).reshape(-1)  # noqa: B023 (called within this iteration)
                finally:
                    hh.remove()

            j = torch.autograd.functional.jacobian(fn, patches0, vectorize=vectorize)
            j = j[:, 0]  # (K, D, L)
            if isinstance(outputs, torch.Tensor):
                j = torch.einsum("mk,kdl->mdl", outputs.to(j.dtype), j)
            elif outputs != "all":
                j = j[list(outputs)]
            g = torch.einsum("kdl,kel->de", j, j)
            total = g if total is None else total + g
    return total / images.shape[0]


def reference_mlp_agops(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: nn.Linear,
    *,
    centered: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, P) of one linear layer by ``torch.func.jacrev`` per example.

    Why: brute-force oracle for ``mlp_agops``. The layer input (for G) or its output (for P)
    is replaced by a free variable through a hook, and the Jacobian of all outputs with
    respect to it is taken directly. ``centered`` uses the covariance of the Jacobians.
    """

    def jac_wrt(x: torch.Tensor, which: str) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def rec(module, args, output):
            captured.append((args[0] if which == "input" else output).detach())

        h = layer.register_forward_hook(rec)
        with torch.no_grad():
            model(x[None])
        h.remove()
        z0 = captured[0]

        def f(z: torch.Tensor) -> torch.Tensor:
            if which == "input":
                hook = layer.register_forward_pre_hook(lambda m, args: (z,))
            else:
                hook = layer.register_forward_hook(lambda m, args, out: z)
            try:
                return model(x[None]).reshape(-1)
            finally:
                hook.remove()

        j = torch.func.jacrev(f)(z0)  # (K, 1, d)
        return j.reshape(j.shape[0], -1)

    out = []
    for which in ("input", "output"):
        js = torch.stack([jac_wrt(x, which) for x in inputs])  # (n, K, d)
        if centered:
            js = js - js.mean(dim=0, keepdim=True)
        out.append((torch.einsum("nkd,nke->de", js, js) / inputs.shape[0]).detach())
    return out[0], out[1]
