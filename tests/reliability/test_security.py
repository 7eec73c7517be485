"""What our code may load, checked over its source: no unpickling, no remote code.

Every `torch.load` passes weights_only=True, every `np.load` allow_pickle=False, every model
`from_pretrained` use_safetensors=True (or reads a GGUF file), nothing passes
trust_remote_code=True, and nothing imports pickle or its relatives or calls yaml.load."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("components", "pipelines") for p in (ROOT / folder).rglob("*.py"))
UNPICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(dotted callee, call) for every call: torch.load, np.load, AutoModel.from_pretrained, ..."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            found.append((".".join(reversed(parts)), node))
    return found


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_unpickles_or_runs_remote_code(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    where = lambda node: f"{path.relative_to(ROOT)}:{node.lineno}"  # noqa: E731
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & UNPICKLERS, where(node)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in UNPICKLERS, where(node)
    for callee, call in calls(tree):
        assert keyword(call, "trust_remote_code") in (None, False), where(call)
        if callee == "torch.load":
            assert keyword(call, "weights_only") is True, f"{where(call)}: torch.load without weights_only=True"
        if callee in ("np.load", "numpy.load"):
            assert keyword(call, "allow_pickle") is False, f"{where(call)}: np.load without allow_pickle=False"
        if callee.endswith(".from_pretrained") and "Model" in callee:  # not tokenizers or configs
            assert keyword(call, "use_safetensors") is True or keyword(call, "gguf_file") is not None, (
                f"{where(call)}: model weights only from safetensors"
            )
        assert callee != "yaml.load", f"{where(call)}: yaml.safe_load"


def test_the_scan_sees_the_loads_it_checks():
    seen = {callee for path in SOURCES for callee, _ in calls(ast.parse(path.read_text()))}
    assert {"torch.load", "np.load", "AutoModelForCausalLM.from_pretrained"} <= seen
