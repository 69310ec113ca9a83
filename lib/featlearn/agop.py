"""Average gradient outer products (AGOPs) of trained networks, computed cheaply.

Why this module exists: the CNFA (arXiv 2309.00570) and DNFA (arXiv 2212.13881) chapters
compare a layer's weight Gram matrix W^T W with the AGOP of the network output with respect
to the layer's input. The official code builds that AGOP by unfolding patches and running
``vmap(jacrev)`` per layer, which is slow and memory hungry. Here we use the exact identity

    G = W^T C W,    C = (1/n) sum_images sum_positions sum_outputs  df/dy_p  df/dy_p^T,

where y_p = W x_p (+ b) is the layer's output at position p. C only needs ordinary
back-propagation to the layer *output*, so one batched backward pass per chunk of outputs
serves every layer at once and no patch is ever unfolded.

Conventions
-----------
* Models should be in eval mode (``model.eval()``) before calling these functions: in
  training mode BatchNorm mixes images within a batch and Dropout is random, so the
  per-image gradients are not what the papers define. The functions never change the mode;
  they warn if a BatchNorm or Dropout module is in training mode.
* Images/inputs are moved to the device and floating dtype of the model's parameters,
  in chunks of ``batch_size``; results live on that device, in the parameters' dtype.
* Outputs are the model's output tensor flattened per example (logits, pre-softmax).
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union, cast

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge
from tqdm.auto import tqdm

from featlearn._validation import check_inputs, check_model, check_positive_int

__all__ = [
    "OutputSpec",
    "LayerAGOP",
    "patch_agop",
    "patch_agops",
    "patch_output_gops",
    "agop_from_output_gop",
    "weight_matrix",
    "cnfm",
    "nfm",
    "mlp_agops",
    "layer_input_agop",
]

#: What ``outputs`` may be: ``"all"``, a sequence of output indices, an int ``k`` (number of
#: Gaussian random projections) or a 2-D tensor of output directions of shape (m, K).
OutputSpec = Union[str, int, Sequence[int], torch.Tensor]

_TRAIN_SENSITIVE = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


# ----------------------------------------------------------------------------------------
# Validation and layer resolution
# ----------------------------------------------------------------------------------------


def _model_device_dtype(model: nn.Module, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if torch.is_floating_point(p):
            return p.device, p.dtype
    return x.device, x.dtype


def _warn_if_training(model: nn.Module) -> None:
    bad = [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, _TRAIN_SENSITIVE) and m.training
    ]
    if bad:
        warnings.warn(
            f"modules {bad[:3]}{'...' if len(bad) > 3 else ''} are in training mode; "
            "BatchNorm/Dropout then make gradients batch-dependent or random. "
            "Call model.eval() first (this function does not change the mode).",
            stacklevel=3,
        )


def _resolve_layers(
    model: nn.Module,
    layers: object,
    kinds: tuple[type[nn.Module], ...],
    kind_name: str,
) -> dict[str, nn.Module]:
    """Map ``layers`` (None, names, modules or a mix) to ``{name: module}`` in model order."""
    named = list(model.named_modules())
    if layers is None:
        found = {name: m for name, m in named if isinstance(m, kinds)}
        if not found:
            raise ValueError(f"model contains no {kind_name} layer")
        return found
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, Sequence) or len(layers) == 0:
        raise ValueError(
            f"layers must be None or a non-empty sequence of module names or {kind_name} "
            f"modules, got {layers!r}"
        )
    by_name = dict(named)
    by_id: dict[int, str] = {}
    for name, m in named:
        by_id.setdefault(id(m), name)
    out: dict[str, nn.Module] = {}
    for item in layers:
        if isinstance(item, str):
            if item not in by_name:
                raise ValueError(f"model has no submodule named {item!r}")
            name, module = item, by_name[item]
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise ValueError(
                    f"layer {item!r} is not a submodule of the model; pass a module that "
                    "appears in model.named_modules()"
                )
            name, module = by_id[id(item)], item
        else:
            raise TypeError(
                f"each layer must be a module name (str) or an nn.Module, got {type(item).__name__}"
            )
        if not isinstance(module, kinds):
            raise TypeError(f"layer {name!r} is a {type(module).__name__}; expected {kind_name}")
        out[name] = module
    return out


def _output_directions(
    outputs: OutputSpec,
    n_outputs: int,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Rows d_j such that the estimate is sum_j AGOP of d_j^T f (see :func:`patch_agops`)."""
    if isinstance(outputs, str):
        # validated earlier: "all"
        return torch.eye(n_outputs, device=device, dtype=dtype)
    if isinstance(outputs, torch.Tensor) and torch.is_floating_point(outputs):
        if outputs.shape[1] != n_outputs:
            raise ValueError(
                f"outputs direction matrix has {outputs.shape[1]} columns but the model has "
                f"{n_outputs} outputs"
            )
        return outputs.to(device=device, dtype=dtype)
    if isinstance(outputs, numbers.Integral):
        k = int(outputs)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        v = torch.randn(k, n_outputs, generator=generator, device=gen_device, dtype=torch.float64)
        # E[v v^T] = I, so (1/k) sum_j grad(v_j^T f) grad(v_j^T f)^T is unbiased for the
        # sum over all outputs; the 1/k goes into the rows as 1/sqrt(k).
        return (v / math.sqrt(k)).to(device=device, dtype=dtype)
    idx = list(cast(Sequence[int], outputs))  # already validated as ints
    bad = [i for i in idx if not 0 <= i < n_outputs]
    if bad:
        raise ValueError(
            f"output indices {bad} are out of range; the model has {n_outputs} outputs "
            f"(valid indices 0..{n_outputs - 1})"
        )
    eye = torch.eye(n_outputs, device=device, dtype=dtype)
    return eye[idx]


def _check_outputs(outputs: object) -> OutputSpec:
    """Validate ``outputs`` before any forward pass (range checks need the model)."""
    if isinstance(outputs, str):
        if outputs != "all":
            raise ValueError(f"outputs must be 'all', an int, or a list of ints; got {outputs!r}")
        return outputs
    if isinstance(outputs, bool):
        raise TypeError("outputs must be 'all', an int k (random projections) or indices, not bool")
    if isinstance(outputs, numbers.Integral):
        if outputs < 1:
            raise ValueError(
                f"outputs={outputs} as an int is the number of random projections and must be "
                ">= 1; to select output index i pass a list, e.g. outputs=[i]"
            )
        return int(outputs)
    if type(outputs).__module__ == "numpy":
        outputs = torch.as_tensor(outputs)
    if isinstance(outputs, torch.Tensor):
        if torch.is_floating_point(outputs):
            if outputs.ndim != 2 or outputs.shape[0] == 0:
                raise ValueError(
                    "a floating outputs tensor must be a non-empty 2-D matrix of directions "
                    f"(m, K), got shape {tuple(outputs.shape)}"
                )
            return outputs
        if outputs.ndim != 1:
            raise ValueError(f"an integer outputs tensor must be 1-D, got shape {tuple(outputs.shape)}")
        outputs = outputs.tolist()
    if not isinstance(outputs, Sequence):
        raise TypeError(
            f"outputs must be 'all', an int, a sequence of ints or a 2-D tensor; got {type(outputs).__name__}"
        )
    if len(outputs) == 0:
        raise ValueError("outputs is an empty list; select at least one output index")
    try:
        idx = [operator.index(i) for i in outputs]
    except TypeError:
        raise TypeError(f"output indices must be ints, got {list(outputs)!r}") from None
    if any(isinstance(i, bool) for i in outputs):
        raise TypeError("output indices must be ints, not bools")
    if len(set(idx)) != len(idx):
        raise ValueError(f"output indices must be distinct, got {idx}")
    return idx


def _out_features(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    raise TypeError(f"unsupported layer type {type(module).__name__}")


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    if conv.groups != 1:
        raise NotImplementedError(
            f"conv layer {name!r} has groups={conv.groups}; the patch AGOP of a grouped conv "
            "(each group reads its own channels) is not implemented. Use groups=1 layers."
        )


# ----------------------------------------------------------------------------------------
# The engine: second moments of output gradients at chosen modules
# ----------------------------------------------------------------------------------------


def _grad_moments(
    model: nn.Module,
    inputs: torch.Tensor,
    modules: dict[str, nn.Module],
    channel_dim: int,
    outputs: OutputSpec,
    *,
    chunk_size: int,
    batch_size: int,
    generator: torch.Generator | None,
    progress: bool,
    centered: bool,
    desc: str,
) -> dict[str, torch.Tensor]:
    """For each module, (1/n) sum over examples, positions and output directions of g g^T.

    g is the gradient of d_j^T f(x) with respect to the module's output at one position,
    a vector along ``channel_dim`` of the output (1 for conv, -1 for linear). All modules
    share each forward pass and each batched backward pass. With ``centered``, the mean
    gradient over examples (per direction and position) is removed first.
    """
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    outputs = _check_outputs(outputs)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    _warn_if_training(model)
    device, dtype = _model_device_dtype(model, inputs)
    n = inputs.shape[0]
    n_batches = math.ceil(n / batch_size)
    names = list(modules)

    captured: dict[str, list] = {name: [] for name in names}

    def make_hook(name: str):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(output).__name__}, expected a tensor")
            # A gradient edge, not the tensor: later in-place ops (ReLU(inplace=True))
            # would otherwise silently change which gradient we read.
            captured[name].append(get_gradient_edge(output))

        return hook

    acc: dict[str, torch.Tensor] = {}
    sums: dict[tuple[str, int], torch.Tensor] = {}
    directions: torch.Tensor | None = None
    n_outputs: int | None = None
    bar = None
    handles = [m.register_forward_hook(make_hook(name)) for name, m in modules.items()]
    try:
        for b in range(n_batches):
            x = inputs[b * batch_size : (b + 1) * batch_size]
            x = x.detach().to(device=device, dtype=dtype).requires_grad_(True)
            bs = x.shape[0]
            for lst in captured.values():
                lst.clear()
            with torch.enable_grad():
                out = model(x)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model returned {type(out).__name__}; expected a tensor of outputs (N, K)")
            if out.ndim == 0 or out.shape[0] != bs:
                raise ValueError(
                    f"model output has shape {tuple(out.shape)}; expected a leading batch "
                    f"dimension of size {bs}"
                )
            if not out.requires_grad:
                raise RuntimeError("model output does not depend differentiably on its input")
            f = out.reshape(bs, -1)
            missing = [name for name in names if not captured[name]]
            if missing:
                raise RuntimeError(f"layers {missing} were not called during the model's forward pass")
            if directions is None:
                n_outputs = f.shape[1]
                directions = _output_directions(outputs, n_outputs, generator, device, dtype)
                n_chunks = math.ceil(directions.shape[0] / chunk_size)
                bar = tqdm(total=n_batches * n_chunks, desc=desc, disable=not progress)
            elif f.shape[1] != n_outputs:
                raise ValueError(f"model output size changed between batches ({n_outputs} -> {f.shape[1]})")
            edges = [(name, i, e) for name in names for i, e in enumerate(captured[name])]
            m_total = directions.shape[0]
            for start in range(0, m_total, chunk_size):
                d = directions[start : start + chunk_size]
                m = d.shape[0]
                grad_out = d[:, None, :].expand(m, bs, n_outputs).contiguous()
                grads = torch.autograd.grad(
                    f,
                    [e for _, _, e in edges],
                    grad_outputs=grad_out,
                    retain_graph=True,
                    is_grads_batched=True,
                    allow_unused=True,
                )
                for (name, i, _), g in zip(edges, grads):
                    if g is None:  # the outputs do not depend on this layer
                        continue
                    # g: (m, bs, *out_shape); move the channel axis last.
                    cdim = channel_dim if channel_dim < 0 else channel_dim + 1
                    g = g.movedim(cdim, -1)
                    c = g.shape[-1]
                    flat = g.reshape(-1, c)
                    mom = (flat.T @ flat).to(torch.float64)
                    acc[name] = acc[name] + mom if name in acc else mom
                    if centered:
                        # per direction and position: sum over the examples (axis 1)
                        s = g.sum(dim=1).to(torch.float64)
                        key = (name, i)
                        if key not in sums:
                            sums[key] = torch.zeros(
                                (m_total,) + tuple(s.shape[1:]), dtype=torch.float64, device=s.device
                            )
                        sums[key][start : start + m] += s
                    del g, flat
                del grads
                if bar is not None:
                    bar.update(1)
            del out, f, edges
    finally:
        for h in handles:
            h.remove()
        for lst in captured.values():
            lst.clear()
        if bar is not None:
            bar.close()

    result: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        c = _out_features(module)
        mom = acc.get(name, torch.zeros(c, c, dtype=torch.float64, device=device)) / n
        if centered:
            for (key_name, _), s in sums.items():
                if key_name == name:
                    mean = (s / n).reshape(-1, s.shape[-1])
                    mom = mom - mean.T @ mean
        result[name] = (mom + mom.T) / 2
    return result


# ----------------------------------------------------------------------------------------
# Convolutional patch AGOPs (CNFA)
# ----------------------------------------------------------------------------------------


def patch_output_gops(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str | nn.Conv2d] | None = None,
    outputs: OutputSpec = "all",
    *,
    chunk_size: int = 10,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Output-gradient moments C of conv layers: the "pre-activation AGOP" of each layer.

    Why: C (c_out x c_out) is what the patch AGOP is made of (G = W^T C W); the DNFA/CNFA
    isotropy chapter asks how close C is to a multiple of the identity.

    Returns, for each layer, C = (1/n) sum_images sum_positions sum_j  g g^T with
    g = d(d_j^T f)/d y_p the gradient at position p of the conv output y (pre-bias and
    post-bias give the same gradient). Arguments are as in :func:`patch_agops`.

    Returns
    -------
    dict[str, torch.Tensor]
        ``{layer name: C}`` with C symmetric, of shape (c_out, c_out), in the model's dtype.
    """
    check_model(model)
    check_inputs(images, "images", 4)
    convs = _resolve_layers(model, layers, (nn.Conv2d,), "nn.Conv2d")
    for name, conv in convs.items():
        _check_conv(name, cast(nn.Conv2d, conv))
    cs = _grad_moments(
        model,
        images,
        convs,
        1,
        outputs,
        chunk_size=chunk_size,
        batch_size=batch_size,
        generator=generator,
        progress=progress,
        centered=False,
        desc="patch AGOP",
    )
    return {name: c.to(cast(nn.Conv2d, convs[name]).weight.dtype) for name, c in cs.items()}


def agop_from_output_gop(layer: nn.Conv2d | nn.Linear, c: torch.Tensor) -> torch.Tensor:
    """Turn an output-gradient moment C into the AGOP w.r.t. the layer input: W^T C W.

    Why: lets a chapter compute C once (:func:`patch_output_gops`) and get G without a
    second pass. W is ``layer.weight.flatten(1)``; the product is done in the weight's
    dtype (it dominates the cost for wide layers and small images) and symmetrised.
    """
    w = weight_matrix(layer)
    if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape != (w.shape[0], w.shape[0]):
        raise ValueError(
            f"C must be a ({w.shape[0]}, {w.shape[0]}) tensor for this layer, got "
            f"{tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__}"
        )
    w = w.to(device=c.device)
    g = (w.T @ c.to(w.dtype)) @ w
    return (g + g.T) / 2


def patch_agops(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str | nn.Conv2d] | None = None,
    outputs: OutputSpec = "all",
    *,
    chunk_size: int = 10,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Patch AGOPs of several conv layers from shared forward/backward passes.

    Why: the CNFA ansatz compares each conv layer's CNFM W^T W with this G; one batched
    backward per output chunk serves all layers, with no unfolding (bench/bench_agop.py
    measures the gain over the unfold + Jacobian route).

    G = (1/n) sum_images sum_positions sum_outputs  grad_{x_p} f_c  grad_{x_p} f_c^T,
    where x_p ranges over the patches the conv actually reads (its own stride, padding,
    padding mode and dilation; padded entries are part of the patch). It is computed
    exactly as W^T C W (see :func:`patch_output_gops`), never unfolding patches.
    A conv called several times per forward (weight sharing) gets the sum over calls;
    each call's patches are differentiated through the whole network as it runs
    (including later calls of the same conv).

    Parameters
    ----------
    model
        The network, in eval mode. Its output, flattened per example, gives the K outputs f.
    images
        (N, C, H, W) floating tensor; moved batch by batch to the model's device and dtype.
    layers
        Conv layers as names from ``model.named_modules()`` or modules; default all
        ``nn.Conv2d`` (grouped convs raise ``NotImplementedError``).
    outputs
        ``"all"``: every output. A sequence of indices: those outputs only. An int ``k``:
        k Gaussian random projections v ~ N(0, I_K), returning (1/k) sum_j AGOP(v_j^T f),
        an unbiased estimate of the ``"all"`` result (seeded by ``generator``; the same
        directions are used for every image). A floating (m, K) tensor: the sum over its
        rows d_j of AGOP(d_j^T f).
    chunk_size
        Output directions per batched backward; peak memory grows linearly with it.
    batch_size
        Images per forward pass.
    generator
        Random generator for ``outputs=k`` (ignored otherwise); the draw is made on the
        generator's device, in float64, so a CPU generator gives the same directions
        whatever the model's device.
    progress
        Show a tqdm bar over (image batch, output chunk) pairs.

    Returns
    -------
    dict[str, torch.Tensor]
        ``{layer name: G}``, G of shape (c_in*q*q, c_in*q*q), rows/columns ordered like
        ``layer.weight.flatten(1)`` ((c_in, kh, kw) order), in the layer's dtype and device.

    Raises
    ------
    TypeError
        ``model`` is not a module, a layer is not an ``nn.Conv2d``, bad ``outputs`` type.
    ValueError
        ``images`` not 4-D or empty, a layer not in the model, empty/out-of-range/duplicate
        output indices, non-positive chunk or batch sizes.
    NotImplementedError
        A selected conv has ``groups > 1``.
    """
    cs = patch_output_gops(
        model,
        images,
        layers,
        outputs,
        chunk_size=chunk_size,
        batch_size=batch_size,
        generator=generator,
        progress=progress,
    )
    modules = dict(model.named_modules())
    return {name: agop_from_output_gop(modules[name], c) for name, c in cs.items()}


def patch_agop(
    model: nn.Module,
    layer: nn.Conv2d | str,
    images: torch.Tensor,
    outputs: OutputSpec = "all",
    *,
    chunk_size: int = 10,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Patch AGOP of one conv layer (thin wrapper over :func:`patch_agops`).

    Why: the common single-layer case, e.g. the first layer of a shallow CNN.

    Parameters are as in :func:`patch_agops`; ``layer`` is an ``nn.Conv2d`` inside
    ``model`` or its name. Returns G of shape (c_in*q*q, c_in*q*q).
    """
    if not isinstance(layer, (nn.Module, str)):
        raise TypeError(f"layer must be an nn.Conv2d or a module name, got {type(layer).__name__}")
    result = patch_agops(
        model,
        images,
        [layer],
        outputs,
        chunk_size=chunk_size,
        batch_size=batch_size,
        generator=generator,
        progress=progress,
    )
    return next(iter(result.values()))


# ----------------------------------------------------------------------------------------
# Weight Gram matrices
# ----------------------------------------------------------------------------------------


def weight_matrix(layer: nn.Module | torch.Tensor) -> torch.Tensor:
    """A layer's weight as a detached matrix (d_out, d_in), i.e. ``weight.flatten(1)``.

    Why: W^T W and W^T C W use the same (c_in, kh, kw) column order as the patch AGOP.
    """
    if isinstance(layer, torch.Tensor):
        w = layer
    elif isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)):
        w = layer.weight
    else:
        raise TypeError(f"expected an nn.Linear, an nn.Conv*d or a weight tensor, got {type(layer).__name__}")
    if w.ndim < 2:
        raise ValueError(f"weight must have at least 2 dimensions, got shape {tuple(w.shape)}")
    return w.detach().flatten(1)


def cnfm(layer: nn.Conv2d | nn.Linear | torch.Tensor) -> torch.Tensor:
    """Convolutional neural feature matrix W^T W with W = ``weight.flatten(1)``.

    Why: the left-hand side of the CNFA ansatz (the 1/c_out factor is omitted; it does not
    change correlations). Works for conv and linear layers or a raw weight tensor.
    """
    w = weight_matrix(layer)
    return w.T @ w


def nfm(layer: nn.Linear | nn.Conv2d | torch.Tensor, init_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Neural feature matrix W^T W, or (W - W0)^T (W - W0) when ``init_weight`` is given.

    Why: the DNFA measures the NFM with the initial weights removed.
    """
    w = weight_matrix(layer)
    if init_weight is not None:
        w0 = weight_matrix(init_weight)
        if w0.shape != w.shape:
            raise ValueError(
                f"init_weight has shape {tuple(w0.shape)} after flattening, expected {tuple(w.shape)}"
            )
        w = w - w0.to(device=w.device, dtype=w.dtype)
    return w.T @ w


# ----------------------------------------------------------------------------------------
# MLP AGOPs (DNFA)
# ----------------------------------------------------------------------------------------


@dataclass
class LayerAGOP:
    """AGOPs of one linear layer: w.r.t. its input (G) and its pre-activation (P).

    Attributes
    ----------
    G
        (d_in, d_in) AGOP of the outputs w.r.t. the layer input h; G = W^T P W.
    P
        (d_out, d_out) AGOP of the outputs w.r.t. the pre-activation a = W h (+ b).
    weight
        The layer's weight (d_out, d_in), detached, at the time of computation.
    """

    G: torch.Tensor
    P: torch.Tensor
    weight: torch.Tensor


def mlp_agops(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str | nn.Linear] | None = None,
    outputs: OutputSpec = "all",
    *,
    centered: bool = False,
    chunk_size: int = 10,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, LayerAGOP]:
    """AGOPs G_i (w.r.t. layer inputs) and P_i (w.r.t. pre-activations) of linear layers.

    Why: the DNFA chapter compares W_i^T W_i with G_i, and its isotropy critique needs
    P_i, related exactly by G_i = W_i^T P_i W_i (h_i enters f only through a = W_i h_i).

    All layers come from one forward pass per input batch and one batched backward per
    chunk of outputs. If a layer's input has extra dimensions (e.g. tokens), they are
    summed over like positions of a conv.

    Parameters
    ----------
    model
        Network in eval mode containing ``nn.Linear`` layers (e.g. an ``nn.Sequential``).
    inputs
        (N, ...) floating tensor of inputs.
    layers
        Linear layers (names or modules); default every ``nn.Linear`` in the model.
    outputs
        As in :func:`patch_agops`: ``"all"``, indices, int k random projections, or a
        direction matrix.
    centered
        If True, subtract the mean gradient over inputs (per output direction) before the
        outer product: P is then the covariance of the gradients, not the second moment.
        G = W^T P W still holds.
    chunk_size, batch_size, generator, progress
        As in :func:`patch_agops`. Note ``centered`` with random projections is still
        unbiased for the centred ``"all"`` result.

    Returns
    -------
    dict[str, LayerAGOP]
        ``{layer name: LayerAGOP(G, P, weight)}``.
    """
    check_model(model)
    check_inputs(inputs, "inputs", None)
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be a bool, got {type(centered).__name__}")
    linears = _resolve_layers(model, layers, (nn.Linear,), "nn.Linear")
    ps = _grad_moments(
        model,
        inputs,
        linears,
        -1,
        outputs,
        chunk_size=chunk_size,
        batch_size=batch_size,
        generator=generator,
        progress=progress,
        centered=centered,
        desc="MLP AGOP",
    )
    out: dict[str, LayerAGOP] = {}
    for name, p in ps.items():
        layer = cast(nn.Linear, linears[name])
        w = layer.weight.detach()
        out[name] = LayerAGOP(
            G=agop_from_output_gop(layer, p),
            P=p.to(w.dtype),
            weight=w.clone(),
        )
    return out


def layer_input_agop(
    model: nn.Module, layer: str, inputs: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """AGOP w.r.t. a linear layer's input, by plain autograd: one backward per output.

    Why: an independent check of G = W^T P W (it never forms P). The layer's input is
    replaced by a leaf tensor with a forward pre-hook, and each output's gradient with
    respect to it is taken separately. Slow; meant for checks on few inputs.
    """
    check_model(model)
    x_all = check_inputs(inputs, "inputs", None)
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, nn.Linear):
        raise ValueError(f"{layer!r} is not an nn.Linear inside the model")
    device, dtype = _model_device_dtype(model, x_all)
    leaf: list[torch.Tensor] = []

    def pre_hook(mod: nn.Module, args: tuple) -> tuple:
        h = args[0].detach().requires_grad_(True)
        leaf.append(h)
        return (h,)

    total: torch.Tensor | None = None
    handle = module.register_forward_pre_hook(pre_hook)
    try:
        for start in range(0, x_all.shape[0], batch_size):
            leaf.clear()
            x = x_all[start : start + batch_size].to(device=device, dtype=dtype)
            with torch.enable_grad():
                f = model(x).reshape(x.shape[0], -1)
            h = leaf[0]
            for k in range(f.shape[1]):
                (g,) = torch.autograd.grad(f[:, k].sum(), h, retain_graph=True)
                g = g.reshape(-1, g.shape[-1]).to(torch.float64)
                total = g.T @ g if total is None else total + g.T @ g
    finally:
        handle.remove()
    assert total is not None  # inputs are non-empty and the model has an output
    return (total / x_all.shape[0]).to(dtype)
