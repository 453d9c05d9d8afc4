"""Shared helpers of the template's own tests (hooks and baking).

Everything a test writes goes under pytest's temporary folders: baked projects
(pytest-cookies), git identities (``hermetic_git``), temporary files of
cookiecutter and of the hooks (``isolated_tmp``), and no ``__pycache__`` is
written next to the hooks when they are imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
HOOKS = TEMPLATE_ROOT / "hooks"
PROJECT_TEMPLATE = TEMPLATE_ROOT / "{{cookiecutter.repo_name}}"

# Answers of the seed project (seed-004) that the template reproduces.
SEED_ANSWERS = {
    "repo_name": "iris-classification",
    "proj_name": "iris_model",
    "dataset_loading_class": "IrisDataLoader",
    "dataset": "dataset",
    "readme_project_name": "Iris Classifier",
    "project_desc": "A project for building Iris classification with PyTorch",
}


def default_answers() -> dict:
    """The answers cookiecutter takes with --no-input (first choice of each list)."""
    context = json.loads((TEMPLATE_ROOT / "cookiecutter.json").read_text())
    answers = {}
    for key, value in context.items():
        if key.startswith("_"):
            continue
        answers[key] = value[0] if isinstance(value, list) else value
    return answers


def load_hook(name: str) -> ModuleType:
    """Import hooks/<name>.py from its path (its Jinja line is inside ``if __name__ == "__main__"``)."""
    path = HOOKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"template_hook_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no hooks/__pycache__ in the template
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


@pytest.fixture(scope="session")
def pre_gen() -> ModuleType:
    return load_hook("pre_gen_project")


@pytest.fixture(scope="session")
def post_gen() -> ModuleType:
    return load_hook("post_gen_project")


@pytest.fixture
def hermetic_git(tmp_path_factory, monkeypatch) -> Path:
    """No global or system git configuration, hence no git identity, and HOME in a temporary folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
        "GIT_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def isolated_tmp(tmp_path_factory, monkeypatch) -> Path:
    """Temporary files of this process and of its children (hooks, smoke test) go under pytest's tmp."""
    folder = tmp_path_factory.mktemp("systmp")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_home(tmp_path_factory):
    """Hypothesis keeps its caches (unicode tables) under pytest's tmp, not in ./.hypothesis."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end test that builds a virtual environment (about a minute)")
    # pytest-cookies bakes the template named by --template (default: the current folder);
    # make `pytest tests` work from any folder.
    template = getattr(config.option, "template", None)
    if template is not None and not (Path(template) / "cookiecutter.json").is_file():
        config.option.template = str(TEMPLATE_ROOT)
