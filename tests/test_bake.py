"""Bake the template with pytest-cookies and check the generated projects.

Every bake runs with ``setup_env: False`` except the one end-to-end test
(marked ``slow``; skip it with ``-m "not slow"``).  Temporary files, git
identities and baked projects all live under pytest's temporary folders.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import SEED_ANSWERS, default_answers, load_hook

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

RUFF = Path(sys.executable).with_name("ruff")
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")
PEP508_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)

NO_ENV = {"setup_env": False, "init_git": False}
ORIGINAL_HOME = os.environ.get("HOME")  # before any fixture points HOME at a temporary folder

UNUSUAL = {
    "repo_name": "My.Repo_2",
    "proj_name": "zoo_net",
    "dataset": "blood",  # blood_loading sorts before cifar10 in datasets/__init__.py
    "dataset_loading_class": "ZLoader",
    "readme_project_name": "Café ☕ «modèle»",
    "project_desc": 'He said "hi" \\ ok',
    "author_name": 'Zoë O\'Brien "Bob" \\ Jr',  # git trims a trailing '.' from names
    "author_email": "ob@example.org",
}
NAME_SETS = {"seed": SEED_ANSWERS, "unusual": UNUSUAL}
LINT_SETS = {"defaults": {}, "seed": SEED_ANSWERS, "unusual": UNUSUAL}
LICENSES = ["MIT", "BSD-3-Clause", "Apache-2.0", "Not open source"]


@pytest.fixture(autouse=True)
def _isolated(isolated_tmp, hermetic_git):
    """Every bake: temporary files under pytest's tmp, no git identity of this machine."""


def bake(cookies, **answers):
    result = cookies.bake(extra_context={**NO_ENV, **answers})
    assert result.exit_code == 0, result.exception
    assert result.exception is None
    return result.project_path


def run(command, cwd, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def project_files(project: Path):
    for path in sorted(project.rglob("*")):
        if path.is_file() and ".git" not in path.relative_to(project).parts:
            yield path


def read_text_or_none(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------- defaults and the seed tree


def test_bake_defaults(cookies):
    result = cookies.bake(extra_context=NO_ENV)
    assert result.exit_code == 0, result.exception
    assert result.exception is None
    project = result.project_path
    assert project.name == "project-repo"
    assert (project / "deep_model" / "datasets" / "dataset_loading.py").is_file()
    assert "class DataSetLoading" in (project / "deep_model" / "datasets" / "dataset_loading.py").read_text()
    assert not (project / ".git").exists()
    assert not (project / ".venv").exists()


SEED_TREE = [
    "experiments/baseline_experiments.sh",
    "iris_model/datasets/__init__.py",
    "iris_model/datasets/dataset_loading.py",
    "iris_model/networks/__init__.py",
    "iris_model/networks/linear.py",
    "iris_model/networks/mlp.py",
    "iris_model/networks/mlp_fixed.py",
    "iris_model/training_models/__init__.py",
    "iris_model/training_models/base.py",
    "iris_model/training_models/xavier_init.py",
    "readme.md",
    "training_scripts/__init__.py",
    "training_scripts/run_experiment.py",
]
ADDITIONS = [
    "bin/train.py",
    "bin/evaluate.py",
    "env.sh.example",
    "pyproject.toml",
    ".gitignore",
    ".github/workflows/ci.yml",
    ".pre-commit-config.yaml",
    ".cookiecutter.json",
    "LICENSE",
]


def test_seed_answers_give_the_seed_tree(cookies):
    project = bake(cookies, **SEED_ANSWERS)
    assert project.name == "iris-classification"
    missing = [name for name in SEED_TREE + ADDITIONS if not (project / name).is_file()]
    assert missing == []
    for folder in ("etc", "tests", "bin", "iris_model"):
        assert (project / folder).is_dir(), folder

    loader = (project / "iris_model/datasets/dataset_loading.py").read_text()
    assert re.search(r"^class IrisDataLoader\b", loader, re.MULTILINE)
    assert "IrisDataLoader" in (project / "iris_model/datasets/__init__.py").read_text()
    assert "from iris_model" in (project / "training_scripts/run_experiment.py").read_text()
    assert "from iris_model" in (project / "bin/train.py").read_text()
    readme = (project / "readme.md").read_text()
    assert readme.startswith("# Iris Classifier\n")
    assert "A project for building Iris classification with PyTorch" in readme

    ignored = (project / ".gitignore").read_text().splitlines()
    for pattern in ("runs/", "env.sh", ".venv"):
        assert any(line.strip().strip("/") == pattern.strip("/") for line in ignored), pattern

    saved = json.loads((project / ".cookiecutter.json").read_text())
    expected = {**default_answers(), **NO_ENV, **SEED_ANSWERS}
    assert {key: value for key, value in saved.items() if key != "_template"} == expected
    assert Path(saved["_template"]).resolve() == Path(__file__).resolve().parents[1]


def test_scripts_are_executable(cookies):
    project = bake(cookies)
    for script in [*project.glob("bin/*.py"), *project.glob("experiments/*.sh")]:
        assert os.access(script, os.X_OK), script
        assert script.read_text().startswith("#!"), script


def test_saved_answers_bake_the_same_project(cookies, tmp_path):
    first = bake(cookies, **UNUSUAL, license="Apache-2.0")
    saved = json.loads((first / ".cookiecutter.json").read_text())
    saved.pop("_template")
    second = bake(cookies, **saved)
    assert first != second and first.name == second.name

    def tree(project):
        return {str(p.relative_to(project)): p.read_bytes() for p in project_files(project)}

    assert tree(first) == tree(second)


# --------------------------------------------------------------------------- the option matrix


@pytest.mark.parametrize("names", list(NAME_SETS.values()), ids=list(NAME_SETS))
@pytest.mark.parametrize("init_git", [True, False], ids=["git", "nogit"])
@pytest.mark.parametrize("license_name", LICENSES)
def test_option_matrix(cookies, license_name, init_git, names):
    if init_git and GIT is None:
        pytest.skip("git is not installed")
    answers = {**default_answers(), **names, "license": license_name, "init_git": init_git, "setup_env": False}
    result = cookies.bake(extra_context=answers)
    assert result.exit_code == 0, result.exception
    project = result.project_path
    assert project.name == answers["repo_name"]

    # license
    license_file = project / "LICENSE"
    assert not (project / "licenses").exists()
    if license_name == "Not open source":
        assert not license_file.exists()
    else:
        text = license_file.read_text()
        assert answers["author_name"] in text
        assert str(dt.datetime.now(dt.timezone.utc).year) in text

    # git: one commit of the whole project, by the author when the machine has no identity
    if init_git:
        assert (project / ".git").is_dir()
        assert run(["git", "rev-list", "--count", "HEAD"], project).stdout.strip() == "1"
        author = run(["git", "log", "-1", "--format=%an <%ae>"], project).stdout.strip()
        assert author == f"{answers['author_name']} <{answers['author_email']}>"
        assert run(["git", "status", "--porcelain"], project).stdout == ""  # .cookiecutter.json included
    else:
        assert not (project / ".git").exists()

    # nothing left of Jinja
    leftovers = []
    for path in project_files(project):
        text = read_text_or_none(path)
        if text is not None and any(mark in text for mark in ("{{", "{%", "{#")):
            leftovers.append(str(path.relative_to(project)))
    assert leftovers == []
    assert [p for p in project.rglob("*") if "{{" in p.name or "}}" in p.name] == []

    # pyproject.toml: valid TOML holding the answers as data
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert pyproject["name"] == answers["repo_name"]
    assert pyproject["description"] == answers["project_desc"]
    assert pyproject["authors"] == [{"name": answers["author_name"], "email": answers["author_email"]}]
    if license_name == "Not open source":  # no license, or a custom reference (PEP 639)
        assert pyproject.get("license", "LicenseRef-").startswith("LicenseRef-")
    else:
        assert pyproject["license"] == license_name
    assert (project / answers["proj_name"] / "datasets" / f"{answers['dataset']}_loading.py").is_file()


# --------------------------------------------------------------------------- refused answers

REFUSED = [
    ("repo_name", "../x"),
    ("repo_name", ".hidden"),
    ("repo_name", "has space"),
    ("proj_name", "{{ 7*7 }}"),
    ("proj_name", "my-model"),
    ("proj_name", "class"),
    ("proj_name", "torch"),
    ("proj_name", "tests"),
    ("dataset", "sys"),
    ("dataset_loading_class", "irisLoader"),
    ("dataset_loading_class", "Cifar10Loader"),
    ("readme_project_name", "two\nlines"),
    ("author_email", "not-an-email"),
    ("license", "GPL-3.0"),
    ("init_git", "maybe"),
]


@pytest.mark.parametrize(("prompt", "value"), REFUSED, ids=[f"{p}={v!r}" for p, v in REFUSED])
def test_refused_answers_create_nothing(cookies, tmpdir, capfd, prompt, value):
    result = cookies.bake(extra_context={**NO_ENV, prompt: value})
    assert result.exit_code != 0
    assert result.exception is not None
    assert result.project_path is None
    # pytest-cookies bakes into <tmpdir>/cookies/bakeNN: only empty bake folders may be left,
    # nothing beside them (repo_name=../x would land there)
    output_root = Path(tmpdir) / "cookies"
    left = [str(p.relative_to(output_root)) for p in output_root.rglob("*") if not re.fullmatch(r"bake\d\d", p.name)]
    assert left == []
    from cookiecutter.exceptions import FailedHookException

    if isinstance(result.exception, FailedHookException):  # refused by hooks/pre_gen_project.py
        errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1
        assert errors[0].startswith(f"error: {prompt}=")


# --------------------------------------------------------------------------- the baked project works


@pytest.mark.parametrize("names", list(LINT_SETS.values()), ids=list(LINT_SETS))
def test_ruff_passes_in_baked_project(cookies, names):
    project = bake(cookies, **names)
    check = run([str(RUFF), "check", "--no-cache", "."], project)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run([str(RUFF), "format", "--no-cache", "--check", "."], project)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize("names", list(LINT_SETS.values()), ids=list(LINT_SETS))
def test_python_files_compile_without_warnings(cookies, names):
    project = bake(cookies, **names)
    problems = []
    for path in project_files(project):
        if path.suffix != ".py":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                compile(path.read_text(), str(path), "exec")
            except (SyntaxError, SyntaxWarning, DeprecationWarning) as err:
                problems.append(f"{path.relative_to(project)}: {err}")
    assert problems == []


@pytest.mark.parametrize("repo_name", ["My.Repo_2", "iris-classification", "x"])
def test_accepted_repo_name_gives_a_valid_project_name(cookies, repo_name):
    """pip refuses a pyproject.toml whose project.name is not a PEP 508 name (setup_env, CI)."""
    project = bake(cookies, repo_name=repo_name)
    name = tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"]
    assert PEP508_NAME.fullmatch(name), f"project.name={name!r} is not a valid distribution name"


@pytest.mark.parametrize("repo_name", ["café-models", "models!", "models_", "a.b-"])
def test_repo_name_that_is_no_distribution_name_is_refused(cookies, repo_name):
    result = cookies.bake(extra_context={"repo_name": repo_name, "setup_env": False, "init_git": False})
    assert result.exit_code != 0
    assert result.project_path is None or not Path(result.project_path).exists()


@pytest.mark.parametrize("names", [SEED_ANSWERS, UNUSUAL], ids=["seed", "unusual"])
def test_pyproject_is_valid_for_setuptools(cookies, names):
    from setuptools.config.pyprojecttoml import validate

    project = bake(cookies, **names)
    path = project / "pyproject.toml"
    assert validate(tomllib.loads(path.read_text()), str(path))


def test_loader_class_cannot_take_a_name_of_the_datasets_package(cookies):
    """A loader class named like something the datasets modules import or define would replace it."""
    pre_gen = load_hook("pre_gen_project")
    project = bake(cookies)
    taken = set()
    for module in ("__init__.py", "dataset_loading.py"):
        tree = ast.parse((project / "deep_model" / "datasets" / module).read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                taken.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                taken.add(node.name)
            elif isinstance(node, ast.Assign):
                taken.update(t.id for t in node.targets if isinstance(t, ast.Name))
    taken.discard("DataSetLoading")  # the loader itself
    candidates = sorted(name for name in taken if pre_gen.CLASS_NAME.fullmatch(name))
    accepted = []
    for name in candidates:
        try:
            pre_gen.validate({**default_answers(), "dataset_loading_class": name})
        except pre_gen.AnswerError:
            continue
        accepted.append(name)
    assert accepted == [], f"accepted as dataset_loading_class, but already bound in datasets/: {accepted}"


@pytest.mark.parametrize("names", [{}, UNUSUAL], ids=["defaults", "unusual"])
def test_train_help_lists_the_configs(cookies, names):
    project = bake(cookies, **names)
    done = run([sys.executable, "bin/train.py", "--help"], project)
    assert done.returncode == 0, done.stderr
    assert "iris" in done.stdout and "cifar10" in done.stdout


def test_evaluate_and_json_script_help(cookies):
    project = bake(cookies)
    for script in ("bin/evaluate.py", "training_scripts/run_experiment.py"):
        done = run([sys.executable, script, "--help"], project)
        assert done.returncode == 0, f"{script}: {done.stderr}"
        assert done.stdout.strip(), script


# --------------------------------------------------------------------------- end to end (slow)


@pytest.mark.slow
@needs_git
def test_end_to_end_setup_env_and_project_tests(cookies, capfd, isolated_tmp, monkeypatch):
    """setup_env: .venv reusing this torch, pip install -e .[dev], smoke training; then the project's tests."""
    monkeypatch.setenv("PIP_CACHE_DIR", str(isolated_tmp / "pip-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_tmp / "cache"))
    if ORIGINAL_HOME is not None:  # pip reads its index settings (user pip.conf) from the real HOME
        monkeypatch.setenv("HOME", ORIGINAL_HOME)
    result = cookies.bake(extra_context={"setup_env": True, "init_git": True})
    out = capfd.readouterr().out
    assert result.exit_code == 0, result.exception
    project = result.project_path
    venv_python = project / ".venv" / "bin" / "python"
    assert venv_python.is_file()
    assert "Smoke test passed" in out, out[-4000:]
    assert "setup failed" not in out, out[-4000:]
    assert run(["git", "rev-list", "--count", "HEAD"], project).stdout.strip() == "1"
    assert run(["git", "status", "--porcelain"], project).stdout == ""  # .venv is ignored

    done = run([str(venv_python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], project, timeout=900)
    summary = (done.stdout + done.stderr)[-6000:]
    assert done.returncode != 5, "the generated project has no tests (pytest exit code 5):\n" + summary
    assert done.returncode == 0, summary
