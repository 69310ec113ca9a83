"""The neural feature ansatz: does a layer's W^T W match a power of its AGOP?

Why: CNFA (arXiv 2309.00570) and DNFA (arXiv 2212.13881) state their result as a
correlation between the feature matrix W^T W and G^alpha; this module computes that
number, per layer tables of it, and its row-space variant.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from featlearn import isotropy, linalg, train
from featlearn._validation import check_square
from featlearn.agop import OutputSpec, cnfm, mlp_agops, nfm, patch_agops, weight_matrix

__all__ = [
    "ansatz_correlation",
    "ansatz_correlations",
    "ansatz_table",
    "row_space_correlation",
    "dnfa_rows",
    "dnfa_over_training",
    "cnfa_over_training",
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
    chunk_size: int = 10,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[dict[str, float | str]]:
    """Per conv layer: corr(W^T W, G^alpha) for each alpha, from one shared AGOP pass.

    Why: every CNFA table in the book is this; one call keeps chapters free of loops.

    Parameters
    ----------
    model, images, layers, outputs, chunk_size, batch_size, generator, progress
        As in :func:`patch_agops`.
    alphas
        Powers of G to compare with (columns ``"alpha=1"``, ``"alpha=1/2"``, ...).
    reference
        A second model with the same layer names (e.g. the same network at init). Adds the
        column ``"init CNFM vs CNFM"`` = corr(W_ref^T W_ref, W^T W), the paper's baseline.

    Returns
    -------
    list of dict
        One row per layer, in ``layers`` order, with key ``"layer"`` and one float per measure.
    """
    gs = patch_agops(
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
    for name, g in gs.items():
        feat = cnfm(cast(nn.Conv2d, model.get_submodule(name)))
        row: dict[str, float | str] = {"layer": name}
        for alpha, corr in ansatz_correlations(feat, g, alphas).items():
            row[_alpha_label(alpha)] = corr
        if reference is not None:
            ref = cnfm(cast(nn.Conv2d, reference.get_submodule(name))).to(feat.device)
            row["init CNFM vs CNFM"] = ansatz_correlation(ref, feat)
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
    wm = weight_matrix(w).to(torch.float64)
    g = check_square(g, "G").detach().to(device=wm.device, dtype=torch.float64)
    if g.shape[0] != wm.shape[1]:
        raise ValueError(f"G must be ({wm.shape[1]}, {wm.shape[1]}) for this weight, got {tuple(g.shape)}")
    _, s, vh = torch.linalg.svd(wm, full_matrices=False)
    q = vh[s > 1e-10 * s.max()].T
    feat = q.T @ (wm.T @ wm) @ q
    return ansatz_correlation(feat, linalg.matrix_power_psd(q.T @ g @ q, alpha))


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
        (``iso_corr``, ``iso_dist``, ``spread``, ``left_gram``), for the first layer
        ``rowspace_a1`` and ``rowspace_a05`` (:func:`row_space_correlation`), and with
        ``delta`` ``dcorr_a1`` and ``dcorr_a05``.
    """
    res = mlp_agops(model, inputs, centered=centered, batch_size=batch_size)
    rows: list[dict[str, Any]] = []
    for i, (name, layer) in enumerate(res.items()):
        w, w0 = layer.weight, cast(nn.Linear, init.get_submodule(name)).weight.detach()
        g, p = layer.G, layer.P
        feat = nfm(w)
        iso = isotropy.isotropy_measures(p, w, restrict_to_range=True)
        row: dict[str, Any] = dict(labels or {})
        row.update(
            layer=f"{i}: {name}",
            readout=name == "readout",
            corr_a1=ansatz_correlation(feat, g),
            corr_a05=ansatz_correlation(feat, linalg.matrix_power_psd(g, 0.5)),
            iso_corr=iso["corr_identity"],
            iso_dist=iso["isotropy_distance"],
            spread=iso["eigen_spread"],
            left_gram=iso["corr_left_gram"],
        )
        if i == 0:  # the wide-input first layer: agreement on W's row space only
            row["rowspace_a1"] = row_space_correlation(w, g, 1.0)
            row["rowspace_a05"] = row_space_correlation(w, g, 0.5)
        if delta:
            dfeat = nfm(w, w0)
            row["dcorr_a1"] = ansatz_correlation(dfeat, g)
            row["dcorr_a05"] = ansatz_correlation(dfeat, linalg.matrix_power_psd(g, 0.5))
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
) -> tuple[list[dict[str, Any]], train.History]:
    """Train an MLP as in the DNFA paper and measure :func:`dnfa_rows` at checkpoints.

    Why: the paper's setting (plain SGD on the squared loss against one-hot labels) with
    the ansatz measured along the way, so the chapter shows how it develops in training.

    The model is trained in place by :func:`featlearn.train.train_classifier`
    (``optimizer="sgd"``, ``loss="mse"``, minibatch order seeded by ``seed``); a copy of
    it taken first serves as W0.

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

    Returns
    -------
    rows, history
        The rows of :func:`dnfa_rows` at every checkpoint (with ``epoch``), and the
        training :class:`featlearn.train.History`.
    """
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
        loss="mse",
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
        One row per layer: ``labels``, ``layer``, ``"init alpha=…"`` and
        ``"trained alpha=…"`` for each alpha, and ``"init CNFM vs CNFM"``
        (corr(W_0^T W_0, W^T W)); the training :class:`featlearn.train.History`; and the
        network at initialisation (in eval mode).
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
        row["layer"] = a["layer"]
        row.update({f"init {_alpha_label(al)}": b[_alpha_label(al)] for al in alphas})
        row.update({f"trained {_alpha_label(al)}": a[_alpha_label(al)] for al in alphas})
        row["init CNFM vs CNFM"] = a["init CNFM vs CNFM"]
        rows.append(row)
    return rows, hist, init
