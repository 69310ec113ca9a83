"""Chapters as notebooks: their parameters cell, their profiles and override checks.

Why: papermill only warns about unknown or ill-typed parameters; the book refuses them
before anything runs, with a message that lists the valid choices.

A chapter is a jupytext MyST Markdown notebook ``book/<name>.md``. Its first code cell is
tagged ``parameters`` and holds only ``name = literal`` (or ``name: type = literal``)
lines; those literals are the ``fast`` profile. Other profiles are overrides kept in the
notebook's own metadata, so that a chapter is one self-contained file::

    featlearn:
      profiles:
        fast: {}
        paper: {n_train: 50000, device: cuda}
        tiny: {n_train: 64}
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ParameterError",
    "Parameter",
    "Chapter",
    "REQUIRED_PROFILES",
    "read_chapter",
    "is_chapter_file",
    "parse_parameters",
    "parse_override",
    "parse_overrides",
    "COLAB_MARKER",
]

#: Profiles every chapter must define.
REQUIRED_PROFILES = ("fast", "paper")

#: Comment that marks the Colab install cell (the first cell after the parameters).
COLAB_MARKER = "# Colab: install featlearn"

_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


class ParameterError(ValueError):
    """A parameter, value or profile that a chapter does not accept."""


@dataclass(frozen=True)
class Parameter:
    """One entry of a chapter's parameters cell."""

    name: str
    default: Any
    types: tuple[type, ...]  # accepted types; NoneType included when optional

    @property
    def type_name(self) -> str:
        names = ["None" if t is type(None) else t.__name__ for t in self.types]
        if "float" in names and "int" in names:
            names.remove("int")  # ints are accepted where floats are expected
        return " | ".join(names)

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise :class:`ParameterError`."""
        if value is None and type(None) in self.types:
            return None
        for t in self.types:
            if t is bool:
                if isinstance(value, bool):
                    return value
                continue
            if t is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if t is int and isinstance(value, bool):
                continue
            if t is not type(None) and isinstance(value, t):
                return value
        raise ParameterError(
            f"{where}: parameter {self.name!r} expects {self.type_name}, got {type(value).__name__} {value!r}"
        )


@dataclass
class Chapter:
    """A chapter notebook read from disk, with its parameters and profiles."""

    name: str
    path: Path
    notebook: Any
    parameters: dict[str, Parameter]
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The first ``# heading`` of the chapter."""
        for cell in self.notebook.cells:
            if cell.cell_type == "markdown":
                m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
                if m:
                    return m.group(1).strip()
        return self.name

    def resolve(self, profile: str = "fast", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The full parameter set for ``profile`` plus ``overrides``, checked.

        Raises
        ------
        ParameterError
            For an unknown profile, an unknown parameter name, a value of the wrong type,
            or ``profile`` given as an override (it would be ignored; use ``--profile``).
        """
        if profile not in self.profiles:
            raise ParameterError(
                f"chapter {self.name!r}: unknown profile {profile!r}; "
                f"valid profiles: {', '.join(sorted(self.profiles))}"
            )
        if overrides and "profile" in overrides:
            raise ParameterError(
                f"chapter {self.name!r}: `profile` is chosen with --profile, not as an override; "
                f"use `--profile {overrides['profile']}` instead of `profile={overrides['profile']}`"
            )
        values = {k: p.default for k, p in self.parameters.items()}
        for source, items in (
            (f"profile {profile!r}", self.profiles[profile]),
            ("override", overrides or {}),
        ):
            for key, val in items.items():
                if key not in self.parameters:
                    raise ParameterError(
                        f"chapter {self.name!r}, {source}: unknown parameter {key!r}; "
                        f"valid parameters: {', '.join(self.parameters)}"
                    )
                values[key] = self.parameters[key].check(val, f"chapter {self.name!r}, {source}")
        if "profile" in self.parameters:
            values["profile"] = profile
        return values


def _annotation_types(node: ast.expr | None, default: Any) -> tuple[type, ...]:
    if node is None:
        t = type(default)
        if t is type(None):
            raise ParameterError(
                "a parameter whose default is None needs an annotation, e.g. `x: int | None = None`"
            )
        return (float, int) if t is float else (t,)
    if isinstance(node, ast.Constant) and node.value is None:
        return (type(None),)
    if isinstance(node, ast.Name) and node.id in _TYPE_NAMES:
        t = _TYPE_NAMES[node.id]
        return (float, int) if t is float else (t,)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation_types(node.left, default) + _annotation_types(node.right, default)
    raise ParameterError(
        f"unsupported parameter annotation {ast.unparse(node)!r}; use int, float, str, bool, list, dict or `T | None`"
    )


def parse_parameters(source: str) -> dict[str, Parameter]:
    """Parse a parameters cell: only ``name = literal`` and ``name: type = literal`` lines.

    Raises
    ------
    ParameterError
        If the cell holds anything else (imports, calls, expressions).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"parameters cell is not valid Python: {exc}") from exc
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value_node, ann = stmt.targets[0].id, stmt.value, None
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name, value_node, ann = stmt.target.id, stmt.value, stmt.annotation
        else:
            raise ParameterError(
                f"parameters cell line {stmt.lineno}: only `name = literal` assignments are allowed, "
                f"got {ast.unparse(stmt)!r}"
            )
        try:
            default = ast.literal_eval(value_node)
        except ValueError as exc:
            raise ParameterError(
                f"parameter {name!r}: default must be a literal, got {ast.unparse(value_node)!r}"
            ) from exc
        types = _annotation_types(ann, default)
        p = Parameter(name, default, types)
        p.check(default, "parameters cell")
        params[name] = p
    return params


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is a Python literal or a bare string.

    ``n_train=500`` gives an int, ``lr=1e-3`` a float, ``device=cuda`` the string
    ``"cuda"``, ``flag=true`` the bool ``True``, ``sizes=[8,16]`` a list.
    """
    if "=" not in text:
        raise ParameterError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key.replace(".", "_").isidentifier():
        raise ParameterError(f"override {text!r}: {key!r} is not a parameter name")
    raw = raw.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    if lowered in ("none", "null"):
        return key, None
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse a list of ``key=value`` strings (see :func:`parse_override`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        k, v = parse_override(item)
        out[k] = v
    return out


def is_chapter_file(path: Path) -> bool:
    """True for a jupytext MyST notebook (a ``.md`` with a kernelspec in its front matter)."""
    if path.suffix != ".md" or not path.exists():
        return False
    head = path.read_text(encoding="utf-8")[:4000]
    return head.startswith("---") and "kernelspec:" in head.split("\n---", 1)[0]


def read_chapter(path: str | Path) -> Chapter:
    """Read a chapter notebook and check its parameters cell and profiles.

    Raises
    ------
    ParameterError
        If the YAML front matter does not parse, the first code cell is not tagged
        ``parameters``, the cell is not pure
        literals, a required profile is missing, or a profile names an unknown
        parameter or a value of the wrong type.
    """
    import jupytext
    import yaml

    path = Path(path)
    try:
        nb = jupytext.read(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParameterError(
            f"chapter {path.stem!r} ({path}): its YAML front matter (between the `---` lines) "
            f"is broken{where}: {problem}; fix the YAML there"
        ) from exc
    except KeyError as exc:  # jupytext drops `key: null` front-matter entries and can trip on them
        raise ParameterError(
            f"chapter {path.stem!r}: could not read its front matter (key {exc}); "
            "a profile value may not be null there, use a string such as 'all' instead"
        ) from exc
    name = path.stem
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or "parameters" not in code[0].metadata.get("tags", []):
        raise ParameterError(f"chapter {name!r} ({path}): the first code cell must be tagged `parameters`")
    params = parse_parameters(code[0].source)
    if "profile" not in params:
        raise ParameterError(f'chapter {name!r}: the parameters cell must define `profile = "fast"`')
    if params["profile"].default != "fast":
        raise ParameterError(
            f"chapter {name!r}: the parameters cell holds the fast profile, so `profile` must default to 'fast'"
        )
    meta = nb.metadata.get("featlearn", {}) or {}
    profiles = {k: dict(v or {}) for k, v in (meta.get("profiles", {}) or {}).items()}
    missing = [p for p in REQUIRED_PROFILES if p not in profiles]
    if missing:
        raise ParameterError(
            f"chapter {name!r}: metadata `featlearn.profiles` must define {', '.join(REQUIRED_PROFILES)}; "
            f"missing {', '.join(missing)}"
        )
    ch = Chapter(name=name, path=path, notebook=nb, parameters=params, profiles=profiles)
    for prof, over in profiles.items():
        if "profile" in over:
            raise ParameterError(f"chapter {name!r}: profile {prof!r} must not set `profile` itself")
        ch.resolve(prof)  # checks names and types of every profile up front
    return ch
