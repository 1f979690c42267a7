"""The conda environment and pyproject list the same packages; the set-up scripts exist and are wired to CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = {_norm(r) for r in meta["dependencies"] + meta["optional-dependencies"]["dev"]}
    yml = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r'^\s+- "([^"]+)"\s*$', yml, flags=re.M)
    got = {_norm(r) for r in pip_lines if not r.startswith("-e")}
    assert got == want, f"only in environment.yml: {got - want}; only in pyproject: {want - got}"
    assert '- "-e ."' in yml and "python=3.11" in yml


def test_ci_calls_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci and "shared/data" in ci
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/run.sh" in readme and "bash scripts/test.sh" in readme
