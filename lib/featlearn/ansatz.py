"""The neural feature ansatz: does a layer's W^T W match a power of its AGOP?

Why: CNFA (arXiv 2309.00570) and DNFA (arXiv 2212.13881) state their result as a
correlation between the feature matrix W^T W and G^alpha; this module computes that
number, per layer tables of it, and its row-space variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from featlearn import linalg
from featlearn._validation import check_square
from featlearn.agop import OutputSpec, cnfm, patch_agops, weight_matrix

__all__ = ["ansatz_correlation", "ansatz_correlations", "ansatz_table", "row_space_correlation"]


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
