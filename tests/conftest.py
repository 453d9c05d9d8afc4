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
    return load_hook_from(HOOKS / f"{name}.py")


def load_hook_from(path: Path) -> ModuleType:
    """Import a hook from any path (a copy of it, say)."""
    spec = importlib.util.spec_from_file_location(f"template_hook_{path.stem}", path)
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


# --------------------------------------------------------------------------- Hypothesis strategies for answers
#
# They reach where answers have broken the baked project before: characters outside the BMP,
# quotes, backslashes and the e-mail specials in texts, e-mails setuptools refuses, names of
# modules the project imports, builtins and names of the generated code as class names.

# What cookiecutter renders as Jinja in an answer given with --no-input, before the hook sees it.
JINJA_MARKS = ("{{", "{%", "{#")
TRICKY_CHARACTERS = [
    *"\"\\'<>@,;:()[]`|~ .=?!#$%&*+/^_-",
    "😀",  # outside the Basic Multilingual Plane (a surrogate pair in JSON and UTF-16)
    "🧪",
    "é",
    "e\u0301",  # a combining accent
    "ß",
    "中",
    "Ω",
    "\u00a0",  # no-break space
    "\u2028",  # line separator (category Zl: accepted)
    "\u200d",  # zero-width joiner (category Cf: refused)
    "\t",
    "\x7f",
    "\\u0041",  # reads as an escape in TOML, JSON and Python
    "\\n",
]
WEIRD_EMAILS = [
    "root@localhost",
    "a,b@example.org",
    '"ab"@example.org',
    '"a,b"@example.org',
    "a>b@example.org",
    "<a@example.org>",
    "Zoë <z@example.org>",
    "zoë@example.org",
    "a@exämple.org",
    "a..b@example.org",
    "a.@example.org",
    "a@example.org.",
    "a@[127.0.0.1]",
    "a(b)@example.org",
    "o'brien+{ml}|x~y@exämple.co.uk",
    "a@1.2",
    "a@b_c.org",
    "a@-b.org",
]
EMAIL_PIECES = [*"aZ9!#$%&'*+/=?^_`{|}~-.\"(),:;<>[]\\ @", "é", "😀", "中", "\u00a0", "ab", "x1"]
DOMAIN_LABELS = ["example", "org", "exämple", "localhost", "1", "b-c", "-b", "b_", "例え", "😀", "", "[1.2.3.4]"]
CLASS_NAMES_OF_THE_PROJECT = ["DataSetLoading", "IrisDataLoader", "OmegaConf", "DataConfig", "Cifar10Loader", "Split"]
PYTEST_AND_PROJECT_NAMES = ["conftest", "test_cli", "test_x", "model_test", "tests", "bin", "License", "data", "nul"]
DUNDER_NAMES = ["__main__", "__init__", "__x", "__builtins__", "_", "__"]


def texts(jinja: bool = True):
    """One-line-ish texts full of the characters that broke renderings before (no Jinja marks unless ``jinja``)."""
    import string

    from hypothesis import strategies as st

    pieces = st.one_of(
        st.sampled_from(TRICKY_CHARACTERS), st.characters(), st.text(string.ascii_letters, min_size=1, max_size=4)
    )
    drawn = st.one_of(st.text(max_size=16), st.lists(pieces, max_size=8).map("".join))
    return drawn if jinja else drawn.filter(lambda text: not any(mark in text for mark in JINJA_MARKS))


def emails():
    from hypothesis import strategies as st

    local = st.lists(st.sampled_from(EMAIL_PIECES), max_size=6).map("".join)
    domain = st.lists(
        st.one_of(st.sampled_from(DOMAIN_LABELS), st.lists(st.sampled_from(EMAIL_PIECES), max_size=3).map("".join)),
        min_size=1,
        max_size=3,
    ).map(".".join)
    return st.one_of(
        st.sampled_from(WEIRD_EMAILS),
        st.builds("{}@{}".format, local, domain),
        valid_emails(),
        st.text(max_size=12),
    ).filter(lambda text: not any(mark in text for mark in JINJA_MARKS))


def valid_emails():
    """Addresses the hook accepts, with the rarer characters: every dot-atom character, letters of any script."""
    from hypothesis import strategies as st

    atext = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
    local = st.from_regex(rf"{atext}{{1,5}}(\.{atext}{{1,3}})?", fullmatch=True)
    label = st.one_of(
        st.sampled_from(["example", "exämple", "x-1", "例え", "b--c", "1", "org", "co", "ÆØÅ"]),
        st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True),
    )
    domain = st.lists(label, min_size=2, max_size=3).map(".".join)
    return st.builds("{}@{}".format, local, domain).filter(lambda text: not any(m in text for m in JINJA_MARKS))


def module_names(pre_gen: ModuleType):
    """Identifiers, and names of modules that exist: keywords, dunders, stdlib, dependencies, installed ones."""
    import keyword
    import pkgutil

    from hypothesis import strategies as st

    installed = sorted({module.name for module in pkgutil.iter_modules() if module.name.isidentifier()})
    return st.one_of(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True),
        st.sampled_from([*keyword.kwlist, *keyword.softkwlist, *DUNDER_NAMES, *PYTEST_AND_PROJECT_NAMES]),
        st.sampled_from(sorted(sys.stdlib_module_names)),
        st.sampled_from(sorted(pre_gen.DEPENDENCY_MODULES)),
        st.sampled_from(installed),
        st.text(max_size=8),
    ).filter(lambda text: not any(mark in text for mark in JINJA_MARKS))


def class_names(pre_gen: ModuleType):
    """Class-like names, builtins, and names the generated datasets modules and tests use."""
    import builtins

    from hypothesis import strategies as st

    builtin_classes = sorted(name for name in dir(builtins) if pre_gen.CLASS_NAME.fullmatch(name))
    return st.one_of(
        st.from_regex(r"[A-Z][A-Za-z0-9]{0,10}", fullmatch=True),
        st.sampled_from(builtin_classes),
        st.sampled_from([*CLASS_NAMES_OF_THE_PROJECT, *sorted(pre_gen.DATASET_NAMES_TAKEN), "True", "None"]),
        st.text(max_size=6),
    ).filter(lambda text: not any(mark in text for mark in JINJA_MARKS))


def repo_names():
    from hypothesis import strategies as st

    return st.one_of(
        st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?", fullmatch=True),
        st.sampled_from(["nul", "CON.x", "../x", ".hidden", "a b", "café", "x" * 101]),
        st.text(max_size=8),
    ).filter(lambda text: not any(mark in text for mark in JINJA_MARKS))
