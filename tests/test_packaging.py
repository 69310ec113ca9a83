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
