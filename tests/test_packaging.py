"""pyproject.toml and environment.yml name the same dependencies; torch is a range, not a pin."""

import re

import tomllib
import yaml

from conftest import ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].strip().lower()


def test_environment_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {r for r in py["dependencies"]}
    for extra in py["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {r for r in pip if not r.startswith("-e")}
    strip = lambda rs: {re.sub(r"\s*#.*", "", r).replace(" ", "") for r in rs}
    assert strip(listed) == strip(wanted)


def test_torch_is_a_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for d in deps:
        if _name(d) in ("torch", "torchvision"):
            assert "==" not in d, f"{d}: give a range so Colab keeps its own torch"


def test_science_modules_never_import_the_book_pipeline():
    """Imports run one way: featlearn.book may use the science, never the reverse."""
    import ast

    lib = ROOT / "lib" / "featlearn"
    for path in sorted(lib.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            bad = [n for n in names if n == "featlearn.book" or n.startswith("featlearn.book.")]
            assert not bad, f"{path.name} imports {bad[0]}; science modules must not import the pipeline"
