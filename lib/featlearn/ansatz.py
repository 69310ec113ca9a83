"""The neural feature ansatz: does a layer's W^T W match a power of its AGOP?

Why: CNFA (arXiv 2309.00570) and DNFA (arXiv 2212.13881) state their result as a
correlation between the feature matrix W^T W and G^alpha; this module computes that
number, per layer tables of it, and its row-space variant. For conv layers it also
computes the centred ansatz of arXiv 2402.05271 and the CNFA nulls (random or trained W
with a Wishart C, fresh initialisations) that a trained value must beat.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from featlearn import claims, isotropy, linalg, train
from featlearn._validation import check_square
from featlearn.agop import OutputSpec, mlp_agops, nfm, patch_output_gops, weight_matrix

__all__ = [
    "ansatz_correlation",
    "ansatz_correlations",
    "ansatz_table",
    "row_space_correlation",
    "dnfa_rows",
    "dnfa_over_training",
    "cnfa_over_training",
    "sandwich_correlations",
    "centered_ansatz_correlations",
    "cnfa_sandwich_null",
    "cnfa_nulls",
    "cnfa_init_null",
    "layer_mean_nulls",
    "METRICS",
]


def ansatz_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """The papers' ansatz metric: Pearson correlation of the entries of two matrices.

    Why: CNFA/DNFA report how well W^T W matches G^alpha by this number; it is
    :func:`featlearn.linalg.pearson` (each matrix minus its scalar mean, float64).
    """
    return linalg.pearson(a, b)


def ansatz_correlations(
    feature_matrix: torch.Tensor, agop: torch.Tensor, alphas: Sequence[float] = (1.0, 0.5)
) -> dict[float, float]:
    """corr(feature_matrix, agop^alpha) for each alpha (default 1 and 1/2).

    Why: the papers' arXiv versions use alpha = 1, the Science version alpha = 1/2; the
    book reports both.
    """
    return {float(al): ansatz_correlation(feature_matrix, linalg.matrix_power_psd(agop, al)) for al in alphas}


def _alpha_label(alpha: float) -> str:
    from fractions import Fraction

    return f"alpha={Fraction(alpha).limit_denominator(16)}"


def ansatz_table(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    outputs: OutputSpec = "all",
    *,
    alphas: Sequence[float] = (1.0, 0.5),
    reference: nn.Module | None = None,
    centred: bool = True,
    chunk_size: int = 10,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[dict[str, float | str]]:
    """Per conv layer: corr(W^T W, G^alpha) for each alpha, from one shared AGOP pass.

    Why: every CNFA table in the book is this; one call keeps chapters free of loops.

    The pass gives each layer's output-gradient moment C (:func:`patch_output_gops`);
    G = W^T C W is never formed: :func:`sandwich_correlations` computes the same
    correlations on W's row space, in float64.

    Parameters
    ----------
    model, images, layers, outputs, chunk_size, batch_size, generator, progress
        As in :func:`featlearn.agop.patch_agops`.
    alphas
        Powers of G to compare with (columns ``"alpha=1"``, ``"alpha=1/2"``, ...).
    reference
        A second model with the same layer names (e.g. the same network at init). Adds the
        column ``"init CNFM vs CNFM"`` = corr(W_ref^T W_ref, W^T W), the paper's baseline,
        and (with ``centred``) the centred ansatz ``"centred alpha=…"`` of
        :func:`centered_ansatz_correlations` with W0 = W_ref.
    centred
        Add the centred columns; false where ``reference`` is not the network this model
        was trained from (a pretrained net against a fresh init), where W - W_ref is no
        weight change.

    Returns
    -------
    list of dict
        One row per layer, in ``layers`` order: ``"layer"``; ``"c_out"``; Pearson
        ``"alpha=…"`` and uncentred cosine ``"cosine alpha=…"`` for each alpha;
        ``"effective rank"`` of W (:func:`featlearn.nulls.effective_rank`); ``"corr(C, I)"``
        (Pearson of C with the identity: 1 iff C is isotropic); and the ``reference``
        columns.
    """
    from featlearn import nulls

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
    rows: list[dict[str, float | str]] = []
    for name, c in cs.items():
        w = weight_matrix(model.get_submodule(name)).detach()
        c = c.detach().to(device=w.device, dtype=torch.float64)
        row: dict[str, float | str] = {"layer": name, "c_out": w.shape[0]}
        both = _sandwich(w, c, alphas, ("pearson", "cosine"))
        row.update({_alpha_label(a): both["pearson", a] for a in alphas})
        row.update({f"cosine {_alpha_label(a)}": both["cosine", a] for a in alphas})
        row["effective rank"] = nulls.effective_rank(w)
        row["corr(C, I)"] = linalg.pearson(c, torch.eye(len(c), dtype=c.dtype, device=c.device))
        if reference is not None:
            w0 = weight_matrix(reference.get_submodule(name)).detach().to(w.device)
            row["init CNFM vs CNFM"] = linalg.gram_pearson(w0, w)
            if centred:
                delta = centered_ansatz_correlations(w, w0, c, alphas)
                row.update({f"centred {_alpha_label(a)}": delta[a] for a in alphas})
        rows.append(row)
    return rows


def row_space_correlation(w: torch.Tensor | nn.Module, g: torch.Tensor, alpha: float = 1.0) -> float:
    """corr(W^T W, G^alpha) with both matrices restricted to the row space of W.

    Why: for a wide-input layer (W of shape d_out × d_in, d_out < d_in), W^T W and
    G = W^T P W both vanish on the null space of W; this asks whether that shared null
    space inflates the correlation. Restricting to the row space (Q^T A Q, Q an
    orthonormal basis of the rows of W) keeps every Frobenius inner product, so the
    uncentred cosine is unchanged; only the Pearson correlation's mean subtraction differs.
    """
    return _row_space_correlations(w, g, (alpha,))[float(alpha)]


def _row_space_correlations(
    w: torch.Tensor | nn.Module, g: torch.Tensor, alphas: Sequence[float]
) -> dict[float, float]:
    """:func:`row_space_correlation` for several alphas from one SVD and one eigendecomposition."""
    wm = weight_matrix(w).to(torch.float64)
    g = check_square(g, "G").detach().to(device=wm.device, dtype=torch.float64)
    if g.shape[0] != wm.shape[1]:
        raise ValueError(f"G must be ({wm.shape[1]}, {wm.shape[1]}) for this weight, got {tuple(g.shape)}")
    _, s, vh = torch.linalg.svd(wm, full_matrices=False)
    q = vh[s > 1e-10 * s.max()].T
    feat = q.T @ (wm.T @ wm) @ q
    gq = q.T @ g @ q
    evals, v = torch.linalg.eigh((gq + gq.T) / 2)
    lam = evals.clamp_min(0)
    out = {}
    for alpha in alphas:
        if float(alpha) < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        power = (v * lam ** float(alpha)) @ v.T
        out[float(alpha)] = ansatz_correlation(feat, (power + power.T) / 2)
    return out


def dnfa_rows(
    model: nn.Module,
    init: nn.Module,
    inputs: torch.Tensor,
    *,
    centered: bool = False,
    delta: bool = True,
    batch_size: int = 256,
    labels: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Per linear layer of an MLP: the DNFA correlations and the isotropy of its P.

    Why: the DNFA chapter tracks, layer by layer and over training, corr(W^T W, G^alpha)
    and how isotropic the pre-activation AGOP P is; one call per checkpoint gives a row
    per layer, all from one :func:`featlearn.agop.mlp_agops` pass.

    Parameters
    ----------
    model
        Bias-free MLP in eval mode (e.g. :class:`featlearn.models.MLP`).
    init
        The same network at initialisation (same layer names), for W0.
    inputs
        (N, ...) inputs the AGOPs average over.
    centered, batch_size
        As in :func:`featlearn.agop.mlp_agops`.
    delta
        Also correlate the paper's (W - W0)^T (W - W0) with G and G^(1/2) (columns
        ``dcorr_a1``, ``dcorr_a05``); needs W ≠ W0, so false at initialisation.
    labels
        Key-value pairs put first in every row (e.g. dataset, width, epoch).

    Returns
    -------
    list of dict
        One row per linear layer, in order: ``labels``, then ``layer`` ("i: name"),
        ``readout``, ``corr_a1`` = corr(W^T W, G), ``corr_a05`` = corr(W^T W, G^(1/2)),
        the :func:`featlearn.isotropy.isotropy_measures` of P on the range of W
        (``iso_corr``, ``iso_dist``, ``spread``, ``left_gram``, ``part_ratio`` the
        participation ratio and ``range_dim`` the rank of W it is out of), for the first layer
        ``rowspace_a1`` and ``rowspace_a05`` (:func:`row_space_correlation`), and with
        ``delta`` ``dcorr_a1`` and ``dcorr_a05``.
    """
    res = mlp_agops(model, inputs, centered=centered, batch_size=batch_size)
    rows: list[dict[str, Any]] = []
    for i, (name, layer) in enumerate(res.items()):
        w, w0 = layer.weight, cast(nn.Linear, init.get_submodule(name)).weight.detach()
        g, p = layer.G, layer.P
        root = linalg.matrix_power_psd(g, 0.5)  # G^(1/2), shared by both feature matrices
        feat = nfm(w)
        iso = isotropy.isotropy_measures(p, w, restrict_to_range=True)
        row: dict[str, Any] = dict(labels or {})
        row.update(
            layer=f"{i}: {name}",
            readout=name == "readout",
            corr_a1=ansatz_correlation(feat, g),
            corr_a05=ansatz_correlation(feat, root),
            iso_corr=iso["corr_identity"],
            iso_dist=iso["isotropy_distance"],
            spread=iso["eigen_spread"],
            left_gram=iso["corr_left_gram"],
            part_ratio=iso["participation_ratio"],
            range_dim=iso["dim"],
        )
        if i == 0:  # the wide-input first layer: agreement on W's row space only
            both = _row_space_correlations(w, g, (1.0, 0.5))
            row["rowspace_a1"], row["rowspace_a05"] = both[1.0], both[0.5]
        if delta:
            dfeat = nfm(w, w0)
            row["dcorr_a1"] = ansatz_correlation(dfeat, g)
            row["dcorr_a05"] = ansatz_correlation(dfeat, root)
        rows.append(row)
    return rows


def dnfa_over_training(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    inputs: torch.Tensor,
    *,
    checkpoints: Sequence[int],
    epochs: int,
    lr: float,
    batch_size: int,
    centered: bool = False,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    seed: int = 0,
    labels: Mapping[str, Any] | None = None,
    desc: str = "MLP",
    progress: bool = True,
    loss: str = "mse",
) -> tuple[list[dict[str, Any]], train.History]:
    """Train an MLP as in the DNFA paper and measure :func:`dnfa_rows` at checkpoints.

    Why: the paper's setting (plain SGD on the squared loss against one-hot labels) with
    the ansatz measured along the way, so the chapter shows how it develops in training.

    The model is trained in place by :func:`featlearn.train.train_classifier`
    (``optimizer="sgd"``, the squared ``loss``, minibatch order seeded by ``seed``); a
    copy of it taken first serves as W0.

    Parameters
    ----------
    model
        Bias-free MLP, freshly initialised.
    x, y
        Training inputs and integer labels.
    inputs
        Inputs the AGOPs are averaged over, on the model's device.
    checkpoints
        Epochs at which to measure; 0 is the initialisation (no ``dcorr`` columns there).
    epochs, lr, batch_size, x_test, y_test, desc, progress
        As in :func:`featlearn.train.train_classifier`.
    centered
        As in :func:`featlearn.agop.mlp_agops`.
    labels
        Put first in every row, before ``epoch``.
    loss
        ``"mse"`` (summed over outputs; the default, kept for earlier results) or
        ``"mse_mean"`` (averaged over outputs, as the paper's official scripts); see
        :func:`featlearn.train.train_classifier`.

    Returns
    -------
    rows, history
        The rows of :func:`dnfa_rows` at every checkpoint (with ``epoch``), and the
        training :class:`featlearn.train.History`.
    """
    if loss not in ("mse", "mse_mean"):
        raise ValueError(f"loss must be 'mse' or 'mse_mean' (the DNFA paper's squared loss), got {loss!r}")
    init = copy.deepcopy(model).eval()
    rows: list[dict[str, Any]] = []

    def measure(epoch: int, net: nn.Module) -> None:
        if epoch in checkpoints:
            rows.extend(
                dnfa_rows(
                    net,
                    init,
                    inputs,
                    centered=centered,
                    delta=epoch > 0,
                    labels={**(labels or {}), "epoch": epoch},
                )
            )

    measure(0, model.eval())
    hist = train.train_classifier(
        model,
        x,
        y,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer="sgd",
        loss=loss,
        x_test=x_test,
        y_test=y_test,
        seed=seed,
        progress=progress,
        desc=desc,
        on_epoch_end=measure,
    )
    return rows, hist


def cnfa_over_training(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    agop_images: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    layers: Sequence[str] | None = None,
    alphas: Sequence[float] = (1.0, 0.5),
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    seed: int = 0,
    labels: Mapping[str, Any] | None = None,
    desc: str = "CNN",
    progress: bool = True,
) -> tuple[list[dict[str, Any]], train.History, nn.Module]:
    """The CNFA of a CNN's conv layers at initialisation and after training it.

    Why: the CNFA chapter asks whether training raises corr(W^T W, G^alpha) above its
    value at init; one call per network gives both, and the paper's init baseline.

    In order: a copy of ``model`` is taken as the initialisation, its :func:`ansatz_table`
    is measured, ``model`` is trained in place by :func:`featlearn.train.train_classifier`
    (Adam, cross-entropy, minibatch order seeded by ``seed``), and its table is measured
    again with the copy as ``reference``.

    Parameters
    ----------
    model
        A freshly initialised CNN, on the device to train on.
    x, y
        Training images (N, C, H, W) and integer labels (N,).
    agop_images
        Images the patch AGOPs average over, before and after training.
    epochs, lr, batch_size, x_test, y_test, desc, progress
        As in :func:`featlearn.train.train_classifier`.
    layers
        Conv layers to measure; default :func:`featlearn.models.cnfa_layers` of ``model``.
    alphas
        Powers of G, as in :func:`ansatz_table`.
    seed
        Seeds the training's minibatch order.
    labels
        Key-value pairs put first in every row (e.g. dataset, architecture).

    Returns
    -------
    rows, history, init
        One row per layer: ``labels``, ``layer``, ``c_out``; every measure of
        :func:`ansatz_table` at init and after training, prefixed ``"init "`` and
        ``"trained "`` (``"trained alpha=1"``, ``"init corr(C, I)"``, ``"trained effective
        rank"``, ...); and ``"init CNFM vs CNFM"`` (corr(W_0^T W_0, W^T W)) and the centred
        ansatz ``"centred alpha=…"`` (:func:`centered_ansatz_correlations`); the training
        :class:`featlearn.train.History`; and the network at initialisation (in eval mode).
    """
    from featlearn import models

    init = copy.deepcopy(model).eval()
    names = list(models.cnfa_layers(init) if layers is None else layers)
    before = ansatz_table(init, agop_images, names, alphas=alphas)
    hist = train.train_classifier(
        model,
        x,
        y,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        x_test=x_test,
        y_test=y_test,
        seed=seed,
        progress=progress,
        desc=desc,
    )
    after = ansatz_table(model, agop_images, names, alphas=alphas, reference=init)
    rows: list[dict[str, Any]] = []
    for b, a in zip(before, after):
        row: dict[str, Any] = dict(labels or {})
        row["layer"], row["c_out"] = a["layer"], a["c_out"]
        row.update({f"init {k}": v for k, v in b.items() if k not in ("layer", "c_out")})
        row.update({f"trained {k}": v for k, v in a.items() if k in b and k not in ("layer", "c_out")})
        row.update({k: v for k, v in a.items() if k not in b})  # init CNFM vs CNFM, centred
        rows.append(row)
    return rows, hist, init


# ----------------------------------------------------------------------------------------
# CNFA on W's row space: the exact correlations without fan_in × fan_in matrices, the
# centred ansatz, and the nulls built on them (issue 19)
# ----------------------------------------------------------------------------------------

#: The two correlations the official CNFA scripts use: ``"pearson"`` (entries minus their
#: scalar mean; ``cnfa_verification``, ``ansatz_verification/cnns``) and ``"cosine"``
#: (uncentred; ``hyperparam_cnfa_verification/nfa.py``, the shallow-CNN sweep).
METRICS = ("pearson", "cosine")


class _RowSpace(NamedTuple):
    """W = U diag(s) V^T on its nonzero singular values, with V^T 1 and W's fan-in."""

    u: torch.Tensor
    s: torch.Tensor
    ones: torch.Tensor
    fan_in: int


def _row_space(w: torch.Tensor) -> _RowSpace:
    """U, s and V^T 1 of a (c_out, fan_in) matrix from the eigendecomposition of W W^T (float64)."""
    w = w.detach().to(torch.float64)
    evals, evecs = torch.linalg.eigh(w @ w.T)
    keep = evals > evals.max().clamp_min(0) * 1e-12
    if not bool(keep.any()):
        raise ValueError("W is zero: W^T W has no correlation with anything")
    s = evals[keep].sqrt()
    u = evecs[:, keep]
    return _RowSpace(u, s, (u.T @ w.sum(1)) / s, int(w.shape[1]))


def _check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    out = []
    for a in alphas:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
            raise ValueError(f"every alpha must be a finite number > 0, got {a!r}")
        out.append(float(a))
    if not out:
        raise ValueError("alphas is empty; give at least one power, e.g. (1.0, 0.5)")
    return tuple(out)


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str) or not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"metrics must be a non-empty sequence of {METRICS}, got {metrics!r}")
    return tuple(metrics)


def _core_correlations(
    rs: _RowSpace, core: torch.Tensor, alphas: Sequence[float], metrics: Sequence[str]
) -> dict[tuple[str, float], float]:
    """corr(V S² V^T, V core^alpha V^T) for every metric and alpha, from r × r matrices.

    With X = W^T W = V S² V^T and Y = V core^alpha V^T (V orthonormal), the Frobenius
    products are those of the r × r cores, and the sums of all entries are
    (V^T 1)^T S² (V^T 1) and (V^T 1)^T core^alpha (V^T 1); Pearson needs nothing more.
    """
    lam = rs.s**2
    n = float(rs.fan_in) ** 2
    x_sum = float((rs.ones**2) @ lam)
    x_sq = float((lam**2).sum())
    core = (core + core.T) / 2
    eig: tuple[torch.Tensor, torch.Tensor] | None = None
    out: dict[tuple[str, float], float] = {}
    for a in alphas:
        if a == 1.0:
            y = core
        else:
            if eig is None:
                eig = torch.linalg.eigh(core)
            evals, evecs = eig
            y = (evecs * evals.clamp_min(0) ** a) @ evecs.T
        xy = float(lam @ y.diagonal())
        y_sq = float((y * y).sum())
        for metric in metrics:
            if metric == "cosine":
                if y_sq <= 0:
                    raise ValueError("cosine similarity undefined: W^T C W is zero")
                out[metric, a] = xy / math.sqrt(x_sq * y_sq)
                continue
            y_sum = float(rs.ones @ y @ rs.ones)
            vx, vy = x_sq - x_sum**2 / n, y_sq - y_sum**2 / n
            if vx <= 1e-12 * x_sq or vy <= 1e-12 * y_sq:
                raise ValueError(
                    "correlation undefined: a matrix has all entries equal (zero norm after centring)"
                )
            out[metric, a] = (xy - x_sum * y_sum / n) / math.sqrt(vx * vy)
    return out


def _sandwich(
    w: torch.Tensor, c: torch.Tensor, alphas: Sequence[float], metrics: Sequence[str]
) -> dict[tuple[str, float], float]:
    """corr(W^T W, (W^T C W)^alpha) for every metric and alpha, on W's row space."""
    rs = _row_space(w)
    c = c.detach().to(device=rs.u.device, dtype=torch.float64)
    core = rs.s[:, None] * (rs.u.T @ c @ rs.u) * rs.s[None, :]
    return _core_correlations(rs, core, alphas, metrics)


def _weight_and_c(w: torch.Tensor | nn.Module, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    wm = weight_matrix(w).detach()
    c = check_square(c, "C")
    if c.shape[0] != wm.shape[0]:
        raise ValueError(
            f"C must be ({wm.shape[0]}, {wm.shape[0]}) for a weight with {wm.shape[0]} rows, got {tuple(c.shape)}"
        )
    return wm, c


def sandwich_correlations(
    w: torch.Tensor | nn.Module,
    c: torch.Tensor,
    alphas: Sequence[float] = (1.0, 0.5),
    *,
    metric: str = "pearson",
) -> dict[float, float]:
    """corr(W^T W, (W^T C W)^alpha) for each alpha, computed exactly on W's row space.

    Why: a conv layer's patch AGOP is G = W^T C W (:func:`featlearn.agop.agop_from_output_gop`).
    On the r ≤ c_out dimensional row space of W both matrices are r × r, so the
    correlation of the fan_in × fan_in matrices costs O(c_out² fan_in) instead of an
    eigendecomposition of G (about a minute for one 4608-wide VGG11 layer on a CPU
    thread), and the nulls below can draw hundreds of C's.

    Equals ``ansatz_correlations(W^T W, W^T C W, alphas)`` (or the cosine) up to rounding,
    computed in float64; directions with singular value below 1e-6 × the largest are
    treated as W's null space.

    Parameters
    ----------
    w
        A conv or linear layer, or its weight (flattened to c_out × fan_in).
    c
        The (c_out, c_out) symmetric PSD output-gradient moment.
    alphas
        Powers of W^T C W, each > 0.
    metric
        ``"pearson"`` (default) or ``"cosine"`` (uncentred), see :data:`METRICS`.
    """
    wm, c = _weight_and_c(w, c)
    alphas = _check_alphas(alphas)
    metric = _check_metrics((metric,))[0]
    both = _sandwich(wm, c, alphas, (metric,))
    return {a: both[metric, a] for a in alphas}


def centered_ansatz_correlations(
    w: torch.Tensor | nn.Module,
    w0: torch.Tensor | nn.Module,
    c: torch.Tensor,
    alphas: Sequence[float] = (1.0, 0.5),
    *,
    metric: str = "pearson",
) -> dict[float, float]:
    """The centred ansatz: corr(ΔW^T ΔW, (ΔW^T C ΔW)^alpha) with ΔW = W - W0.

    Why: Beaglehole, Mitliagkas & Agarwala (*Feature learning as alignment*, arXiv
    2402.05271) split the ansatz into the part W carries from its initialisation and the
    part training added; their centred NFA keeps only the change ΔW in both matrices, with
    the current network's output-gradient moment C in the middle. Their code
    (``dmbeaglehole/centered_NFA``) uses alpha = 1 and the Pearson correlation; alpha =
    1/2 is the same construction with the revised ansatz's power.

    Parameters
    ----------
    w, w0
        The trained layer and the same layer at initialisation (or their weights).
    c
        The trained network's (c_out, c_out) output-gradient moment of this layer.
    alphas, metric
        As in :func:`sandwich_correlations`.

    Raises
    ------
    ValueError
        ``W == W0`` (nothing was learned, the centred matrices are zero), or bad shapes.
    """
    wm, c = _weight_and_c(w, c)
    w0m = weight_matrix(w0).detach().to(device=wm.device, dtype=wm.dtype)
    if w0m.shape != wm.shape:
        raise ValueError(f"W and W0 must have the same shape, got {tuple(wm.shape)} and {tuple(w0m.shape)}")
    return sandwich_correlations(wm - w0m, c, alphas, metric=metric)


def cnfa_sandwich_null(
    weights: torch.Tensor | nn.Module | Callable[[], torch.Tensor],
    *,
    m: int,
    alphas: Sequence[float] = (1.0, 0.5),
    n_draws: int = 20,
    generator: torch.Generator | None = None,
    metrics: Sequence[str] = ("pearson",),
) -> dict[tuple[str, float], torch.Tensor]:
    """:func:`featlearn.nulls.sandwich_null` for several alphas and metrics at once, on W's row space.

    Why: the same null, drawn so that it is affordable for ImageNet layers: the same
    Wishart draws (the generator is used exactly as ``nulls.sandwich_null`` uses it, so
    ``result["pearson", a]`` equals ``nulls.sandwich_null(weights, m=m, alpha=a,
    generator=<the same seed>)``), with each correlation computed by
    :func:`sandwich_correlations` instead of from fan_in × fan_in matrices. Every alpha
    and metric shares one C per draw.

    Parameters
    ----------
    weights
        A weight, a layer (fixed W: "trained W, random C"), or a function returning a
        fresh weight per call (e.g. :func:`featlearn.nulls.init_weights`: "random W").
    m
        Degrees of freedom of the Wishart C = A A^T / m.
    alphas, metrics
        Powers of W^T C W (each > 0) and correlations (:data:`METRICS`).
    n_draws, generator
        Number of draws; the generator of the Wishart matrices (default seed 0).

    Returns
    -------
    dict
        ``{(metric, alpha): tensor of n_draws float64 correlations}``.
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be >= 1, got {m!r}")
    alphas, metrics = _check_alphas(alphas), _check_metrics(metrics)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    fresh = callable(weights) and not isinstance(weights, (torch.Tensor, nn.Module))
    fixed = None if fresh else _row_space(weight_matrix(cast(Any, weights)).detach().cpu())
    out = {(k, a): torch.empty(n_draws, dtype=torch.float64) for k in metrics for a in alphas}
    for i in range(n_draws):
        rs = fixed if fixed is not None else _row_space(weight_matrix(cast(Any, weights)()).detach().cpu())
        a_mat = torch.randn(len(rs.u), m, generator=gen, dtype=torch.float64)
        b = rs.s[:, None] * (rs.u.T @ a_mat) / math.sqrt(m)  # core = S U^T C U S = B B^T
        for key, value in _core_correlations(rs, b @ b.T, alphas, metrics).items():
            out[key][i] = value
    return out


def _m_label(factor: int) -> str:
    return "m = c_out" if factor == 1 else f"m = {factor}·c_out"


def cnfa_nulls(
    model: nn.Module,
    layers: Sequence[str] | None = None,
    *,
    reference: nn.Module | None = None,
    alphas: Sequence[float] = (1.0, 0.5),
    m_factors: Sequence[int] = (1, 4),
    n_draws: int = 20,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
    trained: bool = True,
    labels: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Sandwich nulls of every conv layer: what W alone scores, with a C that knows nothing.

    Why: corr(W^T W, (W^T C W)^alpha) is high for many C, because W is on both sides;
    a trained value means something only above these draws (issue 19). For each layer and
    each Wishart size m = factor × c_out, three nulls:

    - ``"random init W, Wishart C (m = …)"``: a fresh W from the model's own init
      (:func:`featlearn.models.init_layer` and :func:`featlearn.nulls.init_weights`) per draw;
    - ``"trained W, Wishart C (m = …)"``: the model's own W with a random C, which asks
      whether the gradients' C adds anything to the trained W;
    - with ``reference`` (the network at init), ``"trained ΔW, Wishart C (m = …)"``: the
      same for the centred ansatz (:func:`centered_ansatz_correlations`), variant
      ``"centred"``.

    ``trained=False`` keeps only the first: for a model that is itself at its
    initialisation, "its W with a random C" is one more draw of the same null.

    Each (layer, null, m) gets its own generators, seeded ``seed + k`` with k counting
    from 1 in that order, so the draws are reproducible and independent of the device.

    Returns
    -------
    pandas.DataFrame
        Long form, one row per draw: ``labels``, ``layer``, ``null``, ``variant``
        (``"ansatz"`` or ``"centred"``), ``alpha`` (``"alpha=1"``, ...), ``metric``,
        ``draw``, ``value``.
    """
    from featlearn import models, nulls

    names = list(models.cnfa_layers(model) if layers is None else layers)
    alphas, metrics = _check_alphas(alphas), _check_metrics(metrics)
    if not m_factors or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in m_factors):
        raise ValueError(f"m_factors must be positive ints, got {m_factors!r}")
    records: list[dict[str, Any]] = []
    k = 0

    def gen() -> torch.Generator:
        nonlocal k
        k += 1
        return torch.Generator().manual_seed(seed + k)

    for name in tqdm(names, desc="CNFA nulls", disable=not progress, leave=False):
        w = weight_matrix(model.get_submodule(name)).detach().cpu()
        c_out = int(w.shape[0])
        for f in m_factors:
            fresh = nulls.init_weights(models.init_layer(model, name), generator=gen())
            sources: list[tuple[str, str, Any]] = [
                (f"random init W, Wishart C ({_m_label(f)})", "ansatz", fresh)
            ]
            if trained:
                sources.append((f"trained W, Wishart C ({_m_label(f)})", "ansatz", w))
            if trained and reference is not None:
                w0 = weight_matrix(reference.get_submodule(name)).detach().cpu().to(w.dtype)
                sources.append((f"trained ΔW, Wishart C ({_m_label(f)})", "centred", w - w0))
            for kind, variant, weights in sources:
                draws = cnfa_sandwich_null(
                    weights, m=f * c_out, alphas=alphas, n_draws=n_draws, generator=gen(), metrics=metrics
                )
                for (metric, a), values in draws.items():
                    for i, v in enumerate(values.tolist()):
                        records.append(
                            {
                                **(labels or {}),
                                "layer": name,
                                "null": kind,
                                "variant": variant,
                                "alpha": _alpha_label(a),
                                "metric": metric,
                                "draw": i,
                                "value": v,
                            }
                        )
    return pd.DataFrame.from_records(records)


def cnfa_init_null(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    outputs: OutputSpec = "all",
    *,
    n_draws: int = 10,
    seed: int = 0,
    alphas: Sequence[float] = (1.0, 0.5),
    labels: Mapping[str, Any] | None = None,
    chunk_size: int = 10,
    batch_size: int = 32,
    progress: bool = False,
) -> pd.DataFrame:
    """The ansatz of the same architecture at ``n_draws`` fresh initialisations.

    Why: "training raised the correlation" needs the spread over inits, not the one init
    this run started from, whose value depends on the seed (issue 19). Each draw is
    :func:`featlearn.models.reinitialize` (seed ``seed + k``, k = 1, 2, ...) measured by
    :func:`ansatz_table` on the same images; with ``outputs`` an int, the random
    projections are seeded by ``seed`` and shared by every draw.

    Returns
    -------
    pandas.DataFrame
        Long form like :func:`cnfa_nulls`: ``labels``, ``layer``, ``null`` (``"same
        network, fresh inits"``), ``variant`` (``"ansatz"``), ``alpha``, ``metric``
        (Pearson and cosine), ``draw``, ``value``.
    """
    from featlearn import models

    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    alphas = _check_alphas(alphas)
    names = list(models.cnfa_layers(model) if layers is None else layers)
    records: list[dict[str, Any]] = []
    for i in tqdm(range(n_draws), desc="fresh inits", disable=not progress, leave=False):
        twin = models.reinitialize(model, seed=seed + i + 1).eval()
        table = ansatz_table(
            twin,
            images,
            names,
            outputs,
            alphas=alphas,
            chunk_size=chunk_size,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed),
        )
        for row in table:
            for metric, prefix in (("pearson", ""), ("cosine", "cosine ")):
                for a in alphas:
                    records.append(
                        {
                            **(labels or {}),
                            "layer": row["layer"],
                            "null": "same network, fresh inits",
                            "variant": "ansatz",
                            "alpha": _alpha_label(a),
                            "metric": metric,
                            "draw": i,
                            "value": row[prefix + _alpha_label(a)],
                        }
                    )
    return pd.DataFrame.from_records(records)


def layer_mean_nulls(
    frame: pd.DataFrame, *, alpha: float, metric: str = "pearson", variant: str = "ansatz"
) -> list[claims.Baseline]:
    """Each null in ``frame`` as a claim baseline on the mean over layers, strictest first.

    Why: the CNFA claims are on the layer-averaged correlation, so their null is the
    layer average of one draw per layer; "strictest" (highest 95th percentile, the side
    an ``at_least`` rule is judged on) is the one a claim must beat to count.

    Parameters
    ----------
    frame
        Rows of :func:`cnfa_nulls` / :func:`cnfa_init_null` for one network.
    alpha, metric, variant
        Which draws to use.

    Returns
    -------
    list of featlearn.claims.Baseline
        One per null kind, sorted by decreasing 95th percentile.
    """
    sel = frame[
        (frame["alpha"] == _alpha_label(alpha)) & (frame["metric"] == metric) & (frame["variant"] == variant)
    ]
    if sel.empty:
        raise ValueError(f"no null draws for alpha={alpha}, metric={metric!r}, variant={variant!r}")
    n_layers = sel["layer"].nunique()
    out = []
    for kind, rows in sel.groupby("null", sort=False):
        per_draw = rows.groupby("draw")["value"]
        if (per_draw.size() != n_layers).any():
            raise ValueError(f"null {kind!r} does not have one draw per layer for every draw index")
        out.append(claims.null(str(kind), torch.tensor(per_draw.mean().to_numpy())))
    return sorted(out, key=lambda b: b.q95, reverse=True)
