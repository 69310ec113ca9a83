"""Figures the chapters share: filters as images, per-layer correlations, filtered images.

Why: a reader would rather look than read; one style across chapters makes figures comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "filter_grid",
    "show_filters",
    "show_filtered",
    "plot_layer_correlations",
    "plot_energy_profiles",
    "plot_spectra",
    "plot_iterations",
]


def filter_grid(vectors: torch.Tensor, c_in: int, q: int) -> np.ndarray:
    """Reshape (k, c_in·q·q) filters into (k, q, q) or (k, q, q, 3) arrays scaled to [0, 1].

    Each filter is scaled on its own: for grey filters symmetric around 0.5 (so 0.5 is
    zero), for RGB filters min–max per filter.
    """
    v = vectors.detach().cpu().double().reshape(-1, c_in, q, q)
    out = []
    for f in v:
        if c_in == 3:
            f = f.permute(1, 2, 0)
            out.append(((f - f.min()) / (f.max() - f.min() + 1e-12)).numpy())
        else:
            f = f.mean(0)
            out.append((0.5 + 0.5 * f / (f.abs().max() + 1e-12)).numpy())
    return np.stack(out)


def show_filters(
    rows: dict[str, torch.Tensor],
    c_in: int,
    q: int,
    *,
    title: str | None = None,
    col_label: str = "eigenvector",
) -> plt.Figure:
    """A grid of filters: one row per entry of ``rows`` (label → (k, c_in·q·q) tensor)."""
    k = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), k, figsize=(1.1 * k + 1.2, 1.2 * len(rows) + 0.4), squeeze=False)
    for r, (label, vecs) in enumerate(rows.items()):
        grid = filter_grid(vecs, c_in, q)
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(grid):
                ax.imshow(
                    grid[c], cmap=None if c_in == 3 else "RdBu_r", vmin=0, vmax=1, interpolation="nearest"
                )
            else:
                ax.axis("off")
            if r == len(rows) - 1:
                ax.set_xlabel(f"{col_label} {c + 1}", fontsize=8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_filtered(
    images: torch.Tensor,
    filters: torch.Tensor,
    c_in: int,
    q: int,
    *,
    filter_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """Images (n, c_in, H, W) in the first column, then each image convolved with each filter."""
    imgs = images.detach().cpu().float()
    w = filters.detach().cpu().float().reshape(-1, c_in, q, q)
    resp = F.conv2d(imgs, w, padding=q // 2)  # (n, k, H, W)
    n, k = imgs.shape[0], w.shape[0]
    fig, axes = plt.subplots(n, k + 1, figsize=(1.6 * (k + 1), 1.6 * n), squeeze=False)
    for i in range(n):
        im = imgs[i].permute(1, 2, 0).numpy()
        im = (im - im.min()) / (im.max() - im.min() + 1e-12)
        axes[i, 0].imshow(im.squeeze(-1) if c_in == 1 else im, cmap="gray")
        for j in range(k):
            r = resp[i, j].numpy()
            lim = np.abs(r).max() + 1e-12
            axes[i, j + 1].imshow(r, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    for j in range(k):
        axes[0, j + 1].set_title(filter_labels[j] if filter_labels else f"filter {j + 1}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_layer_correlations(
    frame,
    *,
    panel: str,
    series: str,
    value: str = "correlation",
    layer: str = "layer",
    title: str | None = None,
    ylim: tuple[float, float] = (-0.1, 1.02),
) -> plt.Figure:
    """One panel per ``panel`` value: correlation against layer, one line per ``series`` value.

    ``frame`` is a pandas DataFrame in long form.
    """
    import seaborn as sns

    panels = list(dict.fromkeys(frame[panel]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], panels):
        sub = frame[frame[panel] == p]
        sns.lineplot(
            data=sub,
            x=layer,
            y=value,
            hue=series,
            style=series,
            markers=True,
            dashes=False,
            ax=ax,
            legend=ax is axes[0, -1],
            sort=False,
        )
        ax.set_title(str(p))
        ax.set_xlabel("conv layer (input to output)")
        ax.set_ylabel("Pearson correlation")
        ax.set_ylim(*ylim)
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.tick_params(axis="x", rotation=45)
    if axes[0, -1].get_legend() is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_energy_profiles(
    profiles: dict[str, torch.Tensor],
    *,
    theory: dict[str, torch.Tensor] | None = None,
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> plt.Axes:
    """Energy profiles over principal components: measured ones as markers, theory as lines.

    ``profiles`` and ``theory`` map a legend label to a max-normalised profile (one value
    per component, in decreasing-variance order). When both hold the same number of
    entries, each theory line takes the colour of the profile in the same position.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    markers = "os^Dv<>ph*"
    theory = theory or {}
    paired = len(theory) == len(profiles)  # then the i-th curve shares the i-th profile's colour
    colours = []
    for i, (label, e) in enumerate(profiles.items()):
        e = torch.as_tensor(e).detach().cpu().double()
        (line,) = ax.plot(
            np.arange(1, len(e) + 1), e.numpy(), marker=markers[i % len(markers)], ls=":", ms=5, label=label
        )
        colours.append(line.get_color())
    for i, (label, e) in enumerate(theory.items()):
        e = torch.as_tensor(e).detach().cpu().double()
        ax.plot(
            np.arange(1, len(e) + 1),
            e.numpy(),
            ls="-",
            lw=1.5,
            alpha=0.8,
            label=label,
            color=colours[i] if paired else None,
        )
    ax.set_xlabel("principal component of the patches (decreasing variance)")
    ax.set_ylabel("energy (max-normalised)")
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_spectra(spectra: dict[str, torch.Tensor], *, ax: plt.Axes | None = None) -> plt.Axes:
    """Patch-PCA spectra λ_i² as fractions of the total variance, on a log scale."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    for label, lam2 in spectra.items():
        lam2 = torch.as_tensor(lam2).detach().cpu().double()
        ax.semilogy(np.arange(1, len(lam2) + 1), (lam2 / lam2.sum()).numpy(), marker="o", ms=4, label=label)
    ax.set_xlabel("principal component")
    ax.set_ylabel("λ² / Σλ² (fraction of patch variance)")
    ax.legend(fontsize=8)
    return ax


def plot_iterations(
    tables: Mapping[str, Any],
    reference: Mapping[str, float] | None = None,
    *,
    column: str = "test",
    title: str = "",
) -> plt.Figure:
    """Accuracy per ConvRFM iteration, one line per machine, a dashed line per reference model.

    Why: the ConvRFM chapter's question is whether learning the patch metric beats the
    fixed kernel (iteration 0), and how it compares with a trained network.

    Parameters
    ----------
    tables
        Label → a table indexed by iteration with an accuracy column in [0, 1], as
        :meth:`featlearn.rfm.ConvRFM.history_frame` returns.
    reference
        Label → an accuracy in [0, 1], drawn as a horizontal dashed line.
    column
        The table column to plot (default ``"test"``).
    title
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, accuracies in percent.
    """
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, t in tables.items():
        ax.plot(t.index, 100 * t[column], marker="o", label=label)
    for label, acc in (reference or {}).items():
        ax.axhline(100 * acc, ls="--", color="gray", label=label)
    ax.set(
        xlabel="ConvRFM iteration (0 = fixed CNTK)",
        ylabel=f"{column} accuracy (%)",
        title=title,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
