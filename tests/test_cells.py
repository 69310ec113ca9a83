"""Presentation cells: the code a record's identity leaves out must not change any later result.

The oracle is execution: each case runs a small notebook (setup, the cell under test, a
computation after it) with and without the cell. A cell the rule calls presentation must
leave the computation's result unchanged; the unsafe cases each change it, so the rule
must call them computation.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from featlearn.book.cells import PRESENTATION_TAG, classify_cells, presentation_cells
from featlearn.book.sweep import text_hash

SETUP = """
import numpy as np
import pandas as pd
import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from featlearn import nlgp
gen = torch.Generator().manual_seed(0)
df = pd.DataFrame({"a": [3.0, 1.0, 2.0], "b": [1.0, 2.0, 3.0]})
w = torch.ones(4)
model = torch.nn.BatchNorm1d(2)
items = [1, 2]
"""
AFTER = (
    "result = (df.a.tolist(), df.columns.tolist(), w.tolist(), torch.randn(2, generator=gen).tolist(),"
    " items, model.training, model.running_mean.tolist(), np.random.rand(), torch.rand(1).item())"
)

SAFE = {
    "a figure": "fig, ax = plt.subplots()\nax.plot(df.a, df.b, marker='o')\nax.set(xlabel='a', title='t')\nplt.close(fig)",
    "a copy it mutates": "long = df.melt(id_vars=['a'])\nlong['value'] = long['value'] * 2\nfig, axes = plt.subplots(1, 2)\nfor ax in axes:\n    ax.hist(long.value)\nplt.close(fig)",
    "a loop over axes": "fig, axes = plt.subplots(1, 2)\nfor ax, col in zip(axes, df.columns):\n    ax.plot(df[col].to_numpy())\n    ax.set_title(col)\nplt.close(fig)",
    "a comprehension": "labels = [f'{c}!' for c in df.columns]\nprint(labels, df.round(1))",
    "a lambda it wrote": "pct = lambda v: f'{100 * v:.0f}%'\nprint(pct(0.5), sorted(df.a))",
    "the book style": "from featlearn import plots\nimport seaborn as sns\n\nplots.use_book_style()",
    "tensor maths": "lim = w.abs().max().item()\nprint(torch.argsort(w), np.log(lim + 1))",
}
UNSAFE = {
    "assigns into a frame": "df['a'] = 0.0",
    "an alias it mutates": "d = df\nd['a'] = 0.0",
    "an element of its own list": "x = [items]\nx[0].append(3)",
    "an element it assigns into": "x = [df]\nx[0]['a'] = 0.0",
    "inplace=": "torch.nn.functional.hardtanh(w, -0.5, 0.5, inplace=True)",
    "a list append": "items.append(3)",
    "an in-place tensor op": "w.mul_(2)",
    "a model's mode": "model.eval()",
    "the shared generator": "torch.randn(3, generator=gen)",
    "numpy's global RNG": "np.random.rand()",
    "torch's global seed": "torch.manual_seed(5)",
    "a name computation reads": "df = df.assign(a=df.a * 0)",
    "a call of a chapter object": "model(torch.ones(3, 2))",
    "a call through an alias": "f = model\nf(torch.ones(3, 2))",
    "a call handed to a builtin": "list(map(model, [torch.ones(3, 2)]))",
    "a method found by name": "getattr(model, 'eval')()",
    "a science module's import": "from featlearn.nlgp import ipr as mean\ndf = df.assign(a=mean(w[None]).item())",
}


def _run(cells: list[str]) -> object:
    """Execute the cells in one namespace, with the global RNGs seeded, and return ``result``."""
    import torch

    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - the global RNG is what a cell could disturb
    random.seed(0)
    ns: dict[str, object] = {}
    for src in cells:
        exec(compile(src, "<cell>", "exec"), ns)
    return copy.deepcopy(ns["result"])


@pytest.mark.parametrize("name", sorted(SAFE))
def test_presentation_cell_changes_no_result(name):
    """A cell judged presentation leaves the later computation's result unchanged (run both ways)."""
    cells = [SETUP, SAFE[name], AFTER]
    why = classify_cells(cells, [[], [PRESENTATION_TAG], []])
    assert why[1] is None, why[1]
    assert why[0] and why[2], "untagged cells are computation"
    assert _run(cells) == _run([SETUP, AFTER])


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_cell_that_changes_a_result_is_computation(name):
    """Each unsafe cell does change the later result, and the rule calls it computation."""
    cells = [SETUP, UNSAFE[name], AFTER]
    assert _run(cells) != _run([SETUP, AFTER]), "the case must really change the result"
    why = classify_cells(cells, [[], [PRESENTATION_TAG], []])
    assert why[1] is not None


def test_science_calls_count_as_computation():
    """The rule errs towards staleness: a call into a science module is computation even when pure."""
    cells = [SETUP, "print(nlgp.ipr(w[None]))", AFTER]
    assert _run(cells) == _run([SETUP, AFTER])
    assert classify_cells(cells, [[], [PRESENTATION_TAG], []])[1] == "line 1: calls nlgp.ipr()"


def test_only_tagged_parsable_cells_count():
    """Untagged display code and IPython magics are computation; a later rebinding of a name is not a read."""
    draw = "fig, ax = plt.subplots()\nplt.close(fig)"
    assert presentation_cells([SETUP, draw], [[], []]) == set()
    assert classify_cells(["%matplotlib inline"], [[PRESENTATION_TAG]]) == ["not plain Python"]
    later = "fig, ax = plt.subplots()\nax.plot([1])\nresult = 1"
    assert presentation_cells([SETUP, draw, later], [[], [PRESENTATION_TAG], []]) == {1}
    reads = "result = fig.number"
    why = classify_cells([SETUP, draw, reads], [[], [PRESENTATION_TAG], []])
    assert why[1] == "binds ax, fig, read by code cell 2" or why[1].startswith("binds ")
    with pytest.raises(ValueError, match="2 sources but 1 tag"):
        classify_cells(["a", "b"], [[]])


CHAPTER = """---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
featlearn:
  profiles:
    tiny: {{n: 2}}
---

# A chapter

```{{code-cell}} ipython3
import matplotlib.pyplot as plt
values = [1, 2, 3]
```

```{{code-cell}} ipython3
:tags: [hide-input]
fig, ax = plt.subplots()
ax.plot(values)
ax.set_title("{title}")
```

```{{code-cell}} ipython3
:tags: [{tag}]
total = sum(values){extra}
```
"""


def test_hash_ignores_presentation_edits_only():
    """Retitling a figure keeps a record's hash; any edit of a computation, or of an untagged cell, changes it."""
    base = CHAPTER.format(title="Figure 1", tag="x", extra="")
    retitled = CHAPTER.format(title="energy against PC index", tag="x", extra="")
    assert text_hash(retitled, "tiny") == text_hash(base, "tiny")
    assert text_hash(retitled, "tiny", presentation=True) != text_hash(base, "tiny", presentation=True)
    assert text_hash(CHAPTER.format(title="Figure 1", tag="x", extra=" + 1"), "tiny") != text_hash(
        base, "tiny"
    )
    # a tagged cell that mutates what the computation reads is computation, and counts
    mutating = base.replace('ax.set_title("Figure 1")', "values.append(4)")
    assert text_hash(mutating, "tiny") != text_hash(base, "tiny")


def test_rehash_needs_the_recorded_text(tmp_path):
    """A record moves to the computation scope only from the text that gives its stored hash."""
    from featlearn.book import records as rec

    base = CHAPTER.format(title="Figure 1", tag="x", extra="")
    prov = {
        "chapter_hash_scope": "profile",
        "chapter_hash": text_hash(base, "tiny", presentation=True),
        "commit": "abc",
    }
    record = rec.Record(chapter="ch", profile="tiny", path=tmp_path, by_seed={}, provenance=prov)
    new = rec.rehash_computation(record, base)
    assert new["chapter_hash"] == text_hash(base, "tiny") != prov["chapter_hash"]
    assert (
        new["chapter_hash_with_presentation"] == prov["chapter_hash"]
        and new["chapter_hash_scope"] == "computation"
    )
    # now a retitled figure keeps it current; the text of another computation is refused
    assert new["chapter_hash"] == text_hash(CHAPTER.format(title="Energy", tag="x", extra=""), "tiny")
    with pytest.raises(ValueError, match="not the chapter this record was made from"):
        rec.rehash_computation(record, CHAPTER.format(title="Figure 1", tag="x", extra=" + 1"))


def test_library_never_draws_from_the_global_numpy_or_python_generators():
    """Drawing libraries may consume NumPy's global stream (seaborn's strip-plot jitter does).

    That cannot reach a result only because no featlearn code draws from the global NumPy or
    Python generators (it seeds them, in utils.seed_everything, and uses its own generators).
    """
    import ast
    from pathlib import Path

    import featlearn

    bad = []
    for path in Path(featlearn.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                inner = node.value
                if (
                    isinstance(inner.value, ast.Name)
                    and inner.value.id in {"np", "numpy"}
                    and inner.attr == "random"
                ):
                    if node.attr not in {"default_rng", "Generator", "SeedSequence", "PCG64", "seed"}:
                        bad.append(f"{path.name}:{node.lineno} np.random.{node.attr}")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
            ):
                if node.attr != "seed":
                    bad.append(f"{path.name}:{node.lineno} random.{node.attr}")
    assert bad == []
