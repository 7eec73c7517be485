"""The README's Reliability table names the tests that hold each behaviour: each must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_test_the_readme_cites_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cited = []
    for line in readme.splitlines():
        if not line.startswith("|"):
            continue
        current = None
        # `path.py::name`, `path.py`, and `…::name` (the same file as the citation before it)
        for path, name in re.findall(r"`(?:((?:\w+/)*test_\w+\.py)|…)(?:::(\w+))?`", line):
            current = path or current
            cited.append((current, name, line[:60]))
    assert len(cited) > 50
    missing = []
    for path, name, where in cited:
        file = ROOT / "tests" / path if path else None
        if file is None or not file.is_file():
            missing.append(f"{path} (in: {where})")
        elif name and name not in _tests_in(file):
            missing.append(f"{path}::{name} (in: {where})")
    assert not missing, "README cites tests that do not exist:\n" + "\n".join(missing)
