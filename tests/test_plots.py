"""featlearn.plots only draws, and draws readably.

Records leave this module out of their hash (``runner._PRESENTATION_MODULES``), which is
sound only if no function here can change a number: each one is run on typical inputs, and
its inputs and the global random generators must come out as they went in. Each figure is
also checked for text a reader would see below 9 pt on the page.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from featlearn import plots

G = torch.Generator().manual_seed(0)


def _frame_iters() -> pd.DataFrame:
    return pd.DataFrame({"test": [0.5, 0.75, 0.8]}, index=pd.RangeIndex(3, name="iteration"))


def _curve() -> pd.DataFrame:
    return pd.DataFrame(
        {"n": [100, 100, 400, 400], "fixed CNTK": [0.5, 0.52, 0.6, 0.61], "ConvRFM": [0.55, 0.5, 0.66, 0.7]}
    )


def _cnfa() -> tuple[pd.DataFrame, pd.DataFrame]:
    values = pd.DataFrame(
        dict(
            net=["a", "a", "b", "b", "c"],
            layer=["l0", "l1", "l0", "l1", "l0"],
            trained=[0.9, 0.8, 0.7, 0.6, 0.5],
        )
    )
    nul = pd.DataFrame(
        [
            dict(net=n, layer=lay, null=k, value=0.5 + 0.01 * d)
            for n, lay in zip(values.net, values.layer)
            for k in ("untrained", "Wishart C")
            for d in range(10)
        ]
    )
    return values, nul


#: Each public function with arguments a chapter would pass (long labels included).
CASES: dict[str, Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]] = {
    "filter_grid": lambda: ((torch.randn(4, 27, generator=G), 3, 3), {}),
    "show_filters": lambda: (
        ({"learned M": torch.randn(8, 9, generator=G), "patch PCA": torch.randn(8, 9, generator=G)}, 1, 3),
        {"title": "Top eigenvectors as 3×3 filters"},
    ),
    "show_filtered": lambda: (
        (torch.rand(3, 1, 12, 12, generator=G), torch.randn(4, 9, generator=G), 1, 3),
        {"filter_labels": [f"eigvec {i + 1}" for i in range(4)]},
    ),
    "plot_layer_correlations": lambda: (
        (
            pd.DataFrame(
                dict(
                    net=["a"] * 4 + ["b"] * 4 + ["c"] * 4,
                    layer=["l0", "l1"] * 6,
                    kind=(["trained"] * 2 + ["init"] * 2) * 3,
                    correlation=np.linspace(0.1, 0.9, 12),
                )
            ),
        ),
        {"panel": "net", "series": "kind", "title": "per layer"},
    ),
    "plot_energy_profiles": lambda: (
        ({"VGG11, ΔW after 4 epochs": torch.linspace(1, 0.1, 9)},),
        {"theory": {"formula, fitted t = 3.1": torch.linspace(1, 0.2, 9)}, "title": "VGG11: r = 0.93"},
    ),
    "plot_spectra": lambda: (
        ({"Fashion-MNIST": torch.logspace(0, -3, 9), "photographs": torch.logspace(0, -2, 9)},),
        {},
    ),
    "plot_iterations": lambda: (
        ({"ConvRFM, fashion_mnist": _frame_iters(), "ConvRFM, noisy mnist": _frame_iters()},),
        {"reference": {"CNN on the same 1000 images": 0.9}, "title": "Test accuracy per iteration"},
    ),
    "plot_metric_nulls": lambda: (
        (
            {
                "edge-likeness (top-3 DC-free fraction)": {
                    "learned": 0.9,
                    "shuffled labels": torch.rand(20, generator=G),
                },
                "corr(M, trained CNN's patch AGOP)": {"learned": 0.5, "random M": [0.1, 0.2] * 10},
                "third metric": {"learned": 0.3, "random": [0.1] * 5},
            },
        ),
        {"title": "The learned metric against its stand-ins"},
    ),
    "plot_learning_curve": lambda: (
        ({"fashion_mnist": _curve(), "noisy mnist": _curve()},),
        {"title": "Fixed CNTK"},
    ),
    "plot_cnfa_nulls": lambda: (
        _cnfa(),
        {"panel": "net", "value_columns": {"trained": "trained"}, "title": "The networks trained here"},
    ),
}
NOT_DRAWING = {"BOOK_STYLE", "COLUMN_PX", "MIN_DISPLAY_PT", "use_book_style", "small_text"}


def test_every_drawing_function_has_a_case():
    """A new function in plots must be added here, so that the checks below cover it."""
    assert set(plots.__all__) - NOT_DRAWING == set(CASES)


def _rng_states() -> tuple[Any, ...]:
    return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, pd.DataFrame | pd.Series):
        return a.equals(b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@pytest.fixture(autouse=True)
def _book_style():
    with matplotlib.rc_context():
        plots.use_book_style()
        yield
    plt.close("all")


@pytest.mark.parametrize("name", sorted(CASES))
def test_function_only_draws(name):
    """Inputs and the global random generators are as they were; the result is a figure, axes or image."""
    args, kwargs = CASES[name]()
    before_args, before_kwargs = copy.deepcopy(args), copy.deepcopy(kwargs)
    before_rng = _rng_states()
    out = getattr(plots, name)(*args, **kwargs)
    after_rng = _rng_states()
    assert _same(args, before_args) and _same(kwargs, before_kwargs), "an input was changed"
    assert torch.equal(before_rng[0], after_rng[0]) and np.array_equal(before_rng[1], after_rng[1])
    assert before_rng[2] == after_rng[2]
    assert isinstance(out, plt.Figure | plt.Axes | np.ndarray)


@pytest.mark.parametrize("name", sorted(set(CASES) - {"filter_grid"}))
def test_figure_text_readable_at_column_width(name):
    """With the book style, no text of the figure displays below 9 pt in the page column."""
    args, kwargs = CASES[name]()
    out = getattr(plots, name)(*args, **kwargs)
    fig = out if isinstance(out, plt.Figure) else out.figure
    assert plots.small_text(fig) == []
    assert fig.get_figwidth() <= 8.0 + 1e-9, "wider than 8 in: text shrinks below the book's size"


def test_small_text_finds_what_a_reader_cannot_read():
    """The readability check itself: 8 pt text, or 11 pt text on a 16-in figure, is too small."""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=96)  # shown at its own size: points are points
    ax.set_title("fine")
    ax.set_xlabel("tiny", fontsize=8)
    assert plots.small_text(fig) == ["'tiny' at 8.0 pt"]
    wide, ax = plt.subplots(figsize=(16, 3), dpi=100)  # 1600 px shown in 688: 43 %
    ax.set_title("title", fontsize=11)
    assert "'title' at 4.9 pt" in plots.small_text(wide)


def test_plots_imports_no_science_module():
    """The drawing module imports nothing that computes results (its hash is left out of records)."""
    tree = ast.parse(Path(plots.__file__).read_text(encoding="utf-8"))
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    mods |= {"." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert not {m for m in mods if m.startswith(("featlearn", "."))}, mods
