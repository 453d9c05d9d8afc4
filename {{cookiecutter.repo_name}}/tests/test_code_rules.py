"""Rules the project's own code must keep: nothing in a results directory may ever run code when loaded."""

from __future__ import annotations

import ast

import pytest
from conftest import PROJECT_ROOT

FOLDERS = ("{{ cookiecutter.proj_name }}", "bin", "training_scripts")
SOURCES = sorted(path for folder in FOLDERS for path in (PROJECT_ROOT / folder).rglob("*.py"))


def unsafe_calls(source: str) -> list[str]:
    """``pickle.load(s)``, and ``torch.load`` without ``weights_only=True``, in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        if owner == "pickle" and node.func.attr in ("load", "loads", "Unpickler"):
            found.append(f"line {node.lineno}: pickle.{node.func.attr}")
        if owner == "torch" and node.func.attr == "load":
            safe = any(
                kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                for kw in node.keywords
            )
            if not safe:
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
    return found


def test_the_rule_finds_unsafe_loads():
    code = "import pickle, torch\npickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
    assert len(unsafe_calls(code)) == 3
    assert unsafe_calls("import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n") == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_no_unsafe_load_in_the_project(path):
    assert unsafe_calls(path.read_text()) == []


def test_sources_were_found():
    assert any(path.name == "checkpoint.py" for path in SOURCES)
