"""Figures the chapters share, and the book's one figure style.

Why: a reader would rather look than read; one style across chapters makes figures comparable.
Every function here only draws: it returns a figure (or an image array) and leaves its inputs
and the random generators as they were, which ``tests/test_plots.py`` checks by running each.
Records therefore do not go stale when this module changes (``runner._PRESENTATION_MODULES``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BOOK_STYLE",
    "COLUMN_PX",
    "MIN_DISPLAY_PT",
    "use_book_style",
    "small_text",
    "filter_grid",
    "show_filters",
    "show_filtered",
    "plot_layer_correlations",
    "plot_energy_profiles",
    "plot_spectra",
    "plot_iterations",
]


#: Width of the book's text column in CSS pixels (1/96 in): a wider image is shrunk to it,
#: and its text with it.
COLUMN_PX = 688
#: The smallest text a reader should meet on the page, in points at displayed size.
MIN_DISPLAY_PT = 9.0
#: A colour-blind-safe cycle (Okabe & Ito), in matplotlib's order of roles: C7 stays grey.
_PALETTE = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#994F00",
    "#7F7F7F",
    "#B8A000",
    "#000000",
]

#: The book's matplotlib settings: text that stays at least :data:`MIN_DISPLAY_PT` on the page
#: for figures up to 8 in wide at 100 dpi (shown at 688 / 800 of their size), light grids, no
#: top or right spines.
BOOK_STYLE: dict[str, Any] = {
    "font.size": 11.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 11.0,
    "xtick.labelsize": 10.5,
    "ytick.labelsize": 10.5,
    "legend.fontsize": 10.5,
    "legend.title_fontsize": 10.5,
    "figure.titlesize": 12.0,
    "axes.prop_cycle": mpl.rcsetup.cycler(color=_PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "figure.dpi": 100.0,
    "savefig.dpi": 100.0,
}


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to every later figure (chapters call it once, after their imports)."""
    mpl.style.use(BOOK_STYLE)


def small_text(fig: plt.Figure, *, column_px: int = COLUMN_PX, min_pt: float = MIN_DISPLAY_PT) -> list[str]:
    """The texts of ``fig`` that a reader would see smaller than ``min_pt`` on the page.

    The figure is saved at its dpi and shown at one image pixel per CSS pixel (1/96 in),
    shrunk to ``column_px`` if wider; so a text of size ``s`` displays at
    ``s * dpi / 96 * min(1, column_px / (width * dpi))``. Returns ``"'label' at 7.3 pt"``
    per such text (visible, non-empty ones only; tick labels included): empty when the
    figure reads well.
    """
    from matplotlib.text import Text

    fig.canvas.draw()  # tick labels exist only once drawn
    dpi = float(fig.dpi)
    scale = dpi / 96 * min(1.0, column_px / (fig.get_figwidth() * dpi))
    out = []
    for t in fig.findobj(Text):
        size = float(t.get_fontsize()) * scale
        if t.get_visible() and t.get_text().strip() and size < min_pt - 1e-9:
            out.append(f"{t.get_text()!r} at {size:.1f} pt")
    return out


def _fit(width: float, height: float, max_width: float = 8.0) -> tuple[float, float]:
    """``(width, height)`` scaled down together to at most ``max_width`` inches wide."""
    k = min(1.0, max_width / width)
    return width * k, height * k


def _panels(
    n: int, width: float, height: float, *, ncols: int = 2, below: float = 0.0, **kw: Any
) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``n`` panels of ``width`` × ``height`` in, at most ``ncols`` a row (two keep text
    readable), ``below`` in of room under them; the grid's unused cells hidden. Returns the
    figure and the ``n`` panels in reading order."""
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + below), squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


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
    fig, axes = plt.subplots(len(rows), k, figsize=_fit(1.1 * k + 1.6, 1.2 * len(rows) + 0.6), squeeze=False)
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
                ax.set_xlabel(f"{col_label} {c + 1}")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
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
    fig, axes = plt.subplots(n, k + 1, figsize=_fit(1.6 * (k + 1), 1.6 * n + 0.3), squeeze=False)
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
    axes[0, 0].set_title("image")
    for j in range(k):
        axes[0, j + 1].set_title(filter_labels[j] if filter_labels else f"filter {j + 1}")
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
    fig, axes = _panels(len(panels), 4.0, 3.4, sharey=True)
    last = axes[-1]
    for ax, p in zip(axes, panels):
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
            legend=ax is last,
            sort=False,
        )
        ax.set_title(str(p))
        ax.set_xlabel("conv layer (input to output)")
        ax.set_ylabel("Pearson correlation")
        ax.set_ylim(*ylim)
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.tick_params(axis="x", rotation=45)
    if last.get_legend() is not None:
        sns.move_legend(last, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
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
    ax.legend()
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
    ax.legend()
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
    ax.legend()
    fig.tight_layout()
    return fig


def plot_metric_nulls(
    panels: Mapping[str, Mapping[str, Any]],
    *,
    xlabels: Mapping[str, str] | None = None,
    title: str = "",
) -> plt.Figure:
    """ConvRFM's metric against its nulls: one strip per stand-in, one panel per metric.

    Why: a learned metric's score means something only beside what shuffled labels, random
    metrics and untrained networks score on the same measure; this puts them on one axis.

    Parameters
    ----------
    panels
        Panel title → (row label → a number, drawn as one large marker, or a 1-d sequence of
        null draws, drawn as dots with their 5–95th percentile range as a bar). At most 3
        panels, two a row; rows are drawn top to bottom in the given order.
    xlabels
        Panel title → x-axis label (default: the title).
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not 1 <= len(panels) <= 3:
        raise ValueError(f"plot_metric_nulls draws 1 to 3 panels, got {len(panels)}")
    n_rows = max(len(rows) for rows in panels.values())
    fig, axes = _panels(len(panels), 4.0, 0.55 * n_rows + 1.6)
    rng = np.random.default_rng(0)  # jitter only: a generator of its own, the global ones untouched
    for ax, (name, rows) in zip(axes, panels.items()):
        labels = list(rows)
        for i, label in enumerate(labels):
            y = len(labels) - 1 - i
            v = np.atleast_1d(torch.as_tensor(rows[label]).detach().cpu().double().numpy())
            if v.size == 1:
                ax.plot(v, [y], marker="D", ms=8, color="C3", ls="none", zorder=3)
            else:
                ax.plot(v, y + rng.uniform(-0.15, 0.15, v.size), "o", ms=4, alpha=0.6, color="C0")
                lo, hi = np.quantile(v, [0.05, 0.95])
                ax.plot([lo, hi], [y - 0.3, y - 0.3], color="k", lw=2)
        ax.set_yticks(range(len(labels)), labels[::-1])
        ax.set_xlabel((xlabels or {}).get(name, name))
        ax.set_title(name)
        ax.set_ylim(-0.7, len(labels) - 0.4)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_learning_curve(curves: Mapping[str, Any], *, title: str = "") -> plt.Figure:
    """Test accuracy of the fixed CNTK and of ConvRFM against training-set size, per task.

    Why: whether the learned metric beats the fixed kernel depends on n; the curve shows
    where (if anywhere) the two separate.

    Parameters
    ----------
    curves
        Panel title → a table as :func:`featlearn.rfm.learning_curve` returns (columns
        ``n``, ``fixed CNTK``, ``ConvRFM`` and, if present, ``last metric``, accuracies in
        [0, 1]). Several draws at one n are drawn as dots and joined at their mean. At most 3
        panels, two a row.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Accuracies in percent, n on a log axis.
    """
    if not 1 <= len(curves) <= 3:
        raise ValueError(f"plot_learning_curve draws 1 to 3 panels, got {len(curves)}")
    fig, axes = _panels(len(curves), 4.0, 3.6)
    for ax, (name, frame) in zip(axes, curves.items()):
        styles = [("fixed CNTK", "C7", "s", "-"), ("ConvRFM", "C0", "o", "-")]
        if "last metric" in frame:
            styles.append(("last metric", "C1", "^", "--"))
        for col, color, marker, ls in styles:
            ax.plot(frame["n"], 100 * frame[col], marker, color=color, alpha=0.35, ms=4)
            mean = frame.groupby("n")[col].mean()
            label = {"ConvRFM": "ConvRFM (chosen on validation)", "last metric": "last learned metric"}
            ax.plot(
                mean.index, 100 * mean.values, marker=marker, ls=ls, color=color, label=label.get(col, col)
            )
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(frame["n"])), [str(n) for n in sorted(set(frame["n"]))])
        ax.minorticks_off()
        ax.set(xlabel="training images n (log scale)", ylabel="test accuracy (%)", title=name)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_metric_nulls", "plot_learning_curve"]


def plot_cnfa_nulls(
    values: Any,
    nulls: Any,
    *,
    panel: str,
    value_columns: Mapping[str, str],
    layer: str = "layer",
    ylabel: str = "Pearson correlation",
    title: str | None = None,
    ncols: int = 2,
) -> plt.Figure:
    """Per layer: measured ansatz correlations as lines, each null's 5–95% range as a bar.

    Why: a correlation of 0.95 says nothing until it sits beside what untrained or random
    stand-ins score on the same metric (issue 19); this puts them on one axis per network.

    Parameters
    ----------
    values
        pandas DataFrame, one row per (``panel``, ``layer``), with the measured columns.
    nulls
        pandas DataFrame in long form: ``panel``, ``layer``, ``null`` (the kind) and
        ``value`` (one draw per row), for the same metric and power as ``values``.
    panel
        Column naming the network; one panel each, ``ncols`` per row.
    value_columns
        Column of ``values`` → legend label (e.g. ``{"trained alpha=1": "trained"}``).
    layer, ylabel, title
        Layer column, y-axis label, figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Bars: 5th–95th percentile of each null per layer, a dot at its mean; lines: values.
    """
    panels = list(dict.fromkeys(values[panel]))
    if not panels:
        raise ValueError("values is empty: nothing to draw")
    kinds = list(dict.fromkeys(nulls["null"]))
    legend = 0.25 * -(-(len(kinds) + len(value_columns)) // 2) + 0.3  # inches under the panels
    fig, axes = _panels(len(panels), 4.0, 3.6, ncols=ncols, below=legend, sharey=True)
    height = fig.get_figheight()
    width = 0.6 / max(1, len(kinds))
    for ax, p in zip(axes, panels):
        vals = values[values[panel] == p]
        names = list(vals[layer])
        x = np.arange(len(names))
        sub = nulls[nulls[panel] == p]
        for j, kind in enumerate(kinds):
            stats = sub[sub["null"] == kind].groupby(layer)["value"]
            if stats.ngroups == 0:
                continue
            q = stats.quantile([0.05, 0.95]).unstack().reindex(names)
            mean = stats.mean().reindex(names)
            off = x - 0.3 + width * (j + 0.5)
            ax.vlines(off, q[0.05], q[0.95], color=f"C{j + 2}", lw=3, alpha=0.55, label=f"null: {kind}")
            ax.plot(off, mean, "_", color=f"C{j + 2}", ms=7)
        for k, (col, label) in enumerate(value_columns.items()):
            ax.plot(x, vals[col], marker="os^D"[k % 4], color=f"C{k}" if k < 2 else f"C{k + 6}", label=label)
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_title(str(p))
        ax.set_xlabel("conv layer (input to output)")
        ax.set_ylabel(ylabel)
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, legend / height, 1, 1))
    return fig


__all__ += ["plot_cnfa_nulls"]
