"""Which code cells of a chapter only draw: the cells a record's identity leaves out.

Why: a record is hours of CPU, and its claims depend on what the chapter computes, not
on how its figures are drawn. A caption, a legend or a panel layout may change without
making a record stale, but only where the change provably cannot reach a number. So a
cell counts as *presentation* only when a conservative static check finds that it can
change nothing a later computation reads:

- it is marked as display code (tag ``hide-input``) and parses as Python;
- it binds no name that a later non-presentation cell reads;
- it mutates only objects it created itself (no ``x[k] = ...``, ``x.a = ...``, ``+=``,
  ``inplace=``/``out=``, in-place methods such as ``append``/``update``/``add_``/``eval``
  on anything it did not create);
- it imports only drawing modules (matplotlib, seaborn, ``featlearn.plots``) and calls only
  builtins, drawing and array modules (``plt``, ``sns``, ``plots``, ``np``,
  ``pd``, ``torch``, ``math``, ``display``/``Markdown``) and methods of objects; never a
  chapter name such as a model or a science module (``nlgp.ipr``), which could train,
  sample or cache;
- it draws no random numbers (no ``rand``, ``seed``, ``sample``, ``shuffle``,
  ``Generator``..., nor a name like ``gen``/``rng``), so later draws are unchanged. (A
  drawing library may still use NumPy's global stream, as seaborn's jitter does; no
  featlearn code draws from it, which ``tests/test_cells.py`` checks.)

A cell that fails any of these counts as computation, and so does anything it cannot
parse. The rule errs only towards staleness.

Changing the rule changes which cells existing records were hashed without: after an edit
here, check that every committed record is still current (``records.current_state``), or move
them with ``scripts/rehash_records.py``-style evidence, never by rerunning the hash alone.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Sequence

__all__ = ["PRESENTATION_TAG", "classify_cells", "presentation_cells"]

#: The tag that marks a cell as display code (it also collapses the cell on the site).
PRESENTATION_TAG = "hide-input"

_DRAWING_ROOTS = frozenset({"plt", "sns", "plots", "np", "pd", "torch", "math", "display", "Markdown", "mpl"})
#: Builtins a presentation cell may call: not those that run code they are handed (``map``,
#: ``filter``, ``getattr(model, "train")()``...) or change state.
_BUILTINS = frozenset(dir(builtins)) - {
    "exec", "eval", "compile", "__import__", "setattr", "delattr", "getattr", "globals", "locals", "vars",
    "open", "input", "breakpoint", "map", "filter", "iter", "next", "super", "memoryview",
}  # fmt: skip
_RANDOM = re.compile(
    r"rand|seed|bernoulli|multinomial|shuffle|sample|generator|^(normal|uniform|exponential|geometric|cauchy"
    r"|log_normal|poisson|gen|rng)_?$",
    re.I,
)
#: Calls on these modules that change global state (threads, dtype, determinism) are computation.
_GLOBAL_STATE = re.compile(r"^(set|use_|manual)")
_MUTATING = frozenset(
    {
        "append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault", "sort",
        "reverse", "add", "discard", "fill", "train", "eval", "to", "cuda", "cpu", "zero_grad", "step",
        "backward", "load_state_dict", "fit", "partial_fit", "forward", "apply", "register_buffer",
        "register_parameter", "register_forward_hook", "register_full_backward_hook", "set_index_inplace",
        "resize", "put", "itemset", "setflags", "close_all",
    }
)  # fmt: skip


def _names(node: ast.AST | None, ctx: type) -> set[str]:
    """The names under ``node`` used in context ``ctx`` (``ast.Load`` read, ``ast.Store`` bound)."""
    if node is None:
        return set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _root(node: ast.AST) -> str | None:
    """The name at the bottom of ``a.b[c].d(...)``, or None (a literal, a call's result...)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call, ast.Starred)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _module_path(node: ast.AST) -> list[str] | None:
    """``["torch", "set_num_threads"]`` for ``torch.set_num_threads``; None unless names and attributes only."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _scoped_names(tree: ast.AST) -> set[str]:
    """Names bound by comprehensions and lambdas: local to them, not to the cell."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            for gen in node.generators:
                out |= {n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Lambda):
            out |= {a.arg for a in node.args.args + node.args.kwonlyargs}
    return out


def _fresh_names(tree: ast.Module) -> set[str]:
    """Names the cell binds to a new object: a call's result, a constant, or a literal of constants.

    ``x = outer``, ``x = outer[mask]`` or ``x = [outer]`` may alias an object of an earlier
    cell, so mutating ``x`` afterwards could mutate it: such names are not fresh.
    """

    def new(v: ast.AST) -> bool:
        if isinstance(v, (ast.Call, ast.Constant, ast.JoinedStr, ast.BinOp)):
            return True
        if isinstance(v, (ast.List, ast.Tuple, ast.Set)):
            return all(isinstance(e, ast.Constant) for e in v.elts)
        if isinstance(v, ast.Dict):
            return all(isinstance(e, ast.Constant) for e in [*v.keys, *v.values] if e is not None)
        return False

    fresh: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and new(node.value):
            for t in node.targets:  # x[k] = 1 makes nothing fresh: x is read, not bound
                fresh |= _names(t, ast.Store)
    return fresh


#: Modules a presentation cell may import: drawing only (``featlearn.plots`` is checked to be).
_DRAWING_MODULES = frozenset({"matplotlib", "matplotlib.pyplot", "seaborn", "featlearn.plots"})


def _draws(node: ast.Import | ast.ImportFrom) -> bool:
    """Whether an import brings in drawing modules only (``from featlearn import plots``, ``import seaborn``)."""
    if isinstance(node, ast.Import):
        return all(a.name in _DRAWING_MODULES for a in node.names)
    if node.level or node.module is None:
        return False
    return node.module in _DRAWING_MODULES or all(
        f"{node.module}.{a.name}" in _DRAWING_MODULES for a in node.names
    )


def _why_computation(tree: ast.Module, chapter_names: set[str]) -> str | None:
    """Why the cell may change what later cells compute, or None when it only draws."""
    fresh = _fresh_names(tree)
    scoped = _scoped_names(tree)
    bound = _names(tree, ast.Store)
    # a plain call may call a lambda the cell wrote, never a name that may alias a model
    lambdas = {
        t.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Lambda)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _draws(node):
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal, ast.Delete, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef, ast.Import, ast.ImportFrom, ast.Await, ast.Yield)):  # fmt: skip
            return f"line {line}: {type(node).__name__.lower()}"
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        if name and _RANDOM.search(name):
            return f"line {line}: {name} (random numbers)"
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = [t for t in node.targets if not isinstance(t, ast.Name)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for t in targets:
            parts = (
                [e for e in ast.walk(t) if not isinstance(e, ast.Name)]
                if isinstance(t, (ast.Tuple, ast.List))
                else [t]
            )
            for sub in parts:
                if isinstance(sub, (ast.Attribute, ast.Subscript, ast.Name)) and _root(sub) not in fresh:
                    return f"line {line}: assigns into {_root(sub)}, which it did not create"
        if isinstance(node, ast.Call):
            if any(k.arg in {"inplace", "out"} for k in node.keywords):
                return f"line {line}: inplace=/out="
            root = _root(node.func)
            if isinstance(node.func, ast.Name):  # a plain call: a builtin, or a name of this cell
                if node.func.id not in _BUILTINS | _DRAWING_ROOTS | (lambdas - chapter_names) | scoped:
                    return f"line {line}: calls {node.func.id}"
                continue
            method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            mutates = method in _MUTATING or (method.endswith("_") and not method.startswith("_"))
            path = _module_path(node.func)
            if (
                path
                and path[0] in {"torch", "np", "mpl", "plt", "sns", "pd"}
                and any(_GLOBAL_STATE.match(p) for p in path[1:])
            ):
                return f"line {line}: {'.'.join(path)} (global state)"
            if mutates and root not in fresh:
                return f"line {line}: {root}.{method}() on an object it did not create"
            if (
                root in chapter_names - _DRAWING_ROOTS - bound
                and root is not None
                and _is_module_call(node, root)
            ):
                return f"line {line}: calls {root}.{method or '...'}()"
    return None


def _is_module_call(node: ast.Call, root: str) -> bool:
    """``root.f(...)`` where ``root`` is a name the chapter imported (a science module or function)."""
    func = node.func
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == root


def _imported(trees: Sequence[ast.Module | None]) -> set[str]:
    """Every name the chapter binds by import: its modules and functions."""
    out: set[str] = set()
    for tree in trees:
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:  # IPython magics, shell escapes: not plain Python, so not presentation
        return None


def _free_loads(tree: ast.Module | None) -> set[str]:
    """Names a cell reads before it binds them itself: what it takes from earlier cells.

    Statement by statement, into loops, ``with`` and ``if`` blocks: ``x = f(x)`` reads the
    earlier ``x``; ``fig = ...`` followed by ``fig.show()`` does not, nor does a loop's body
    reading its own loop variable. Within any other statement, every read counts.
    """
    if tree is None:
        return set()
    bound: set[str] = set()
    free: set[str] = set()

    def block(stmts: list[ast.stmt]) -> None:
        nonlocal free
        for stmt in stmts:
            if isinstance(stmt, ast.For):
                free |= _names(stmt.iter, ast.Load) - bound
                bound.update(_names(stmt.target, ast.Store))
                block(stmt.body + stmt.orelse)
            elif isinstance(stmt, (ast.If, ast.While)):
                free |= _names(stmt.test, ast.Load) - bound
                block(stmt.body + stmt.orelse)
            elif isinstance(stmt, ast.With):
                for item in stmt.items:
                    free |= _names(item.context_expr, ast.Load) - bound
                    bound.update(_names(item.optional_vars, ast.Store))
                block(stmt.body)
            else:  # a comprehension's or lambda's own variables are not read from outside
                free |= _names(stmt, ast.Load) - bound - _scoped_names(stmt)
                bound.update(_names(stmt, ast.Store) - _scoped_names(stmt))

    block(tree.body)
    return free


def _stores(tree: ast.Module | None) -> set[str]:
    return _names(tree, ast.Store) - (_scoped_names(tree) if tree is not None else set())


def classify_cells(sources: Sequence[str], tags: Sequence[Sequence[str]]) -> list[str | None]:
    """Per code cell, why it counts as computation, or None for a presentation cell.

    Parameters
    ----------
    sources, tags
        Each code cell's source and tags, in order (code cells only).

    Returns
    -------
    list of str or None
        One entry per cell: None where the cell only draws (see the module docstring for
        the rule), else the first reason found.
    """
    if len(sources) != len(tags):
        raise ValueError(f"{len(sources)} sources but {len(tags)} tag lists")
    trees = [_parse(s) for s in sources]
    imported = _imported(trees)
    why: list[str | None] = []
    for tree, t in zip(trees, tags):
        if PRESENTATION_TAG not in t:
            why.append(f"not tagged {PRESENTATION_TAG}")
        elif tree is None:
            why.append("not plain Python")
        else:
            why.append(_why_computation(tree, imported))
    # a cell whose names a later computation reads is computation itself; repeat until stable
    binds = [_stores(tree) for tree in trees]
    reads = [_free_loads(tree) for tree in trees]
    changed = True
    while changed:
        changed = False
        for i, tree in enumerate(trees):
            if why[i] is not None or tree is None:
                continue
            for j in range(i + 1, len(trees)):
                shared = binds[i] & reads[j] if why[j] is not None else set()
                if shared:
                    why[i] = f"binds {', '.join(sorted(shared))}, read by code cell {j}"
                    changed = True
                    break
    return why


def presentation_cells(sources: Sequence[str], tags: Sequence[Sequence[str]]) -> set[int]:
    """Positions of the code cells that only draw (:func:`classify_cells` found no reason)."""
    return {i for i, w in enumerate(classify_cells(sources, tags)) if w is None}
