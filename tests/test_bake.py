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
from conftest import (
    SEED_ANSWERS,
    class_names,
    default_answers,
    emails,
    load_hook,
    module_names,
    repo_names,
    texts,
    valid_emails,
)
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

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
# Accepted answers as far from the defaults as the rules allow: characters outside the BMP, quotes,
# backslashes and e-mail specials in every text, an odd e-mail, a keyword as dataset and a loader class
# named like something the generated tests import (git keeps the name: no < > and nothing it trims at the ends).
HOSTILE = {
    "repo_name": "Zoo.Net-2_x",
    "proj_name": "_Zoo_Net2",
    "dataset": "class",
    "dataset_loading_class": "OmegaConf",
    "readme_project_name": "Café ☕ «modèle» 😀 <b>&amp;</b> # [x](y)",
    "project_desc": 'Emoji 😀 🧪, "quotes", \\backslash\\ \\u0041, <tags> & a@b; c: d',
    "author_name": 'Zoë "Z" O\'Brien, Jr. @home \\ 😀',
    "author_email": "o'brien+{ml}|x~y@exämple.co.uk",
}
NAME_SETS = {"seed": SEED_ANSWERS, "unusual": UNUSUAL, "hostile": HOSTILE}
LINT_SETS = {"defaults": {}, "seed": SEED_ANSWERS, "unusual": UNUSUAL, "hostile": HOSTILE}
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


@pytest.mark.parametrize("names", [UNUSUAL, HOSTILE], ids=["unusual", "hostile"])
def test_saved_answers_bake_the_same_project(cookies, tmp_path, names):
    """.cookiecutter.json holds every answer as it was given (emoji included) and bakes the same project again."""
    first = bake(cookies, **names, license="Apache-2.0")
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
    ("proj_name", "yaml"),
    ("proj_name", "__main__"),
    ("proj_name", "tests"),
    ("proj_name", "test_cli"),
    ("dataset", "my-data"),
    ("dataset_loading_class", "irisLoader"),
    ("dataset_loading_class", "Cifar10Loader"),
    ("dataset_loading_class", "ValueError"),
    ("readme_project_name", "two\nlines"),
    ("author_name", "<.>"),
    ("author_email", "not-an-email"),
    ("author_email", "root@localhost"),
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


@pytest.mark.parametrize("names", list(NAME_SETS.values()), ids=list(NAME_SETS))
def test_pyproject_is_valid_for_setuptools(cookies, names):
    """The schema, then what setuptools builds from it (authors: email.headerregistry.Address)."""
    from setuptools.config.pyprojecttoml import apply_configuration, validate
    from setuptools.dist import Distribution

    project = bake(cookies, **names)
    path = project / "pyproject.toml"
    assert validate(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
    answers = {**default_answers(), **names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools' notes on license files and the like
        dist = apply_configuration(Distribution(), str(path))
    assert dist.metadata.description == answers["project_desc"]
    assert answers["author_email"] in dist.metadata.author_email


def names_bound_or_used(source: str) -> set[str]:
    """Every name a module binds or reads: names, import aliases, def and class names, arguments, except targets."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def test_loader_class_cannot_take_a_name_of_the_datasets_package(cookies):
    """The loader class is bound in datasets/__init__.py and its own module: it must not take a name either
    binds or reads (an import, a function, an argument, a builtin such as ValueError), nor any builtin."""
    import builtins

    pre_gen = load_hook("pre_gen_project")
    project = bake(cookies, dataset_loading_class="ZzLoader", dataset="zz")
    taken = set(dir(builtins))
    for module in ("__init__.py", "zz_loading.py"):
        taken |= names_bound_or_used((project / "deep_model" / "datasets" / module).read_text())
    taken.discard("ZzLoader")  # the loader itself
    assert {"Path", "Split", "ValueError", "DATASETS", "torch"} <= taken  # the parse found what is there
    candidates = sorted(name for name in taken if pre_gen.CLASS_NAME.fullmatch(name))
    # the hook's list is exactly what the modules use now (builtins apart), so that it neither misses nor keeps a name
    used = set(candidates) - set(dir(builtins))
    assert pre_gen.DATASET_NAMES_TAKEN == used, f"set DATASET_NAMES_TAKEN in hooks/pre_gen_project.py to {sorted(used)}"
    accepted = []
    for name in candidates:
        try:
            pre_gen.validate({**default_answers(), "dataset_loading_class": name})
        except pre_gen.AnswerError:
            continue
        accepted.append(name)
    assert accepted == [], f"accepted as dataset_loading_class, but already bound or used in datasets/: {accepted}"


def refused_by_the_shipped_rules(pre_gen, prompt: str, name: str) -> bool:
    """Refused whatever cookiecutter's Python has installed (not only because this venv has it)."""
    try:
        pre_gen.validate({**default_answers(), prompt: name})
    except pre_gen.AnswerError as err:
        return "installed where cookiecutter runs" not in str(err)
    return False


def dependency_closure(requirements: list[str]) -> tuple[dict, set[str]]:
    """Installed distributions required by ``requirements``, transitively (markers of this machine, extras
    followed); and the names of those that are not installed."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, missing, extras_of = {}, set(), {}
    queue = [Requirement(line) for line in requirements]
    while queue:
        requirement = queue.pop()
        key = canonicalize_name(requirement.name)
        if key in extras_of and set(requirement.extras) <= extras_of[key]:
            continue
        extras_of.setdefault(key, set()).update(requirement.extras)
        try:
            found[key] = dist = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.add(key)
            continue
        for line in dist.requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in ["", *extras_of[key]]):
                queue.append(needed)
    return found, missing


def top_level_names(dist) -> set[str]:
    """Import names a distribution puts on sys.path: top_level.txt and the first part of each file it installed."""
    names = set()
    listed = dist.read_text("top_level.txt") or ""
    names.update(line.strip().split("/")[0] for line in listed.splitlines() if line.strip())
    for file in dist.files or []:
        first = file.parts[0]
        if first in ("..", "__pycache__") or first.endswith((".dist-info", ".data", ".egg-info")):
            continue
        if len(file.parts) > 1:
            names.add(first)  # a package, or a namespace package such as nvidia/ or google/
        elif first.endswith(".py"):
            names.add(first[: -len(".py")])
        elif first.endswith((".so", ".pyd")):
            names.add(first.split(".")[0])  # an extension module, _yaml.cpython-311-x86_64-linux-gnu.so
    return {name for name in names if name.isidentifier()}


def test_proj_name_shadowing_any_module_of_the_dependency_closure_is_refused(cookies):
    """The hook's shipped list must cover every import name installed with the project (closure of its
    dependencies, dev extras, build requirements and pip, from this venv's metadata), so it cannot go stale."""
    pre_gen = load_hook("pre_gen_project")
    project = bake(cookies)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    roots = [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["dev"],
        *pyproject["build-system"]["requires"],
        "pip",  # `python -m pip install -e .` from the project folder imports it from there first
    ]
    found, missing = dependency_closure(roots)
    assert missing == set(), f"not installed here (pip install -r requirements-dev.txt): {sorted(missing)}"
    names = set().union(*(top_level_names(dist) for dist in found.values()))
    assert {"torch", "yaml", "google", "sympy", "typing_extensions", "_pytest", "xdist", "pre_commit"} <= names
    not_refused = sorted(name for name in names if not refused_by_the_shipped_rules(pre_gen, "proj_name", name))
    assert not_refused == [], f"import names of the project's dependencies that proj_name may take: {not_refused}"


def test_proj_name_cannot_take_a_top_level_entry_or_a_test_module_name(cookies):
    """The package sits at the top of the project, beside these (in any case: one path on a case-insensitive file
    system); pytest imports tests/*.py as top-level modules, and puts tests/ before the project folder."""
    pre_gen = load_hook("pre_gen_project")
    project = bake(cookies, license="MIT")
    entries = {path.name for path in project.iterdir() if path.name.isidentifier() and path.name != "deep_model"}
    test_modules = {path.stem for path in (project / "tests").glob("*.py")}
    assert {"bin", "tests", "LICENSE", "training_scripts"} <= entries
    assert {"conftest", "test_training"} <= test_modules
    names = test_modules | {variant for name in entries for variant in (name, name.lower(), name.upper(), name.title())}
    not_refused = sorted(name for name in names if not refused_by_the_shipped_rules(pre_gen, "proj_name", name))
    assert not_refused == []


def test_proj_name_of_a_module_of_cookiecutters_python_is_refused(cookies, tmp_path, monkeypatch, capfd):
    """The hook runs in cookiecutter's Python (a real process here): a module it can import is refused, with where."""
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "zz_planted_module.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(planted))
    result = cookies.bake(extra_context={**NO_ENV, "proj_name": "zz_planted_module"})
    assert result.exit_code != 0 and result.project_path is None
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: proj_name='zz_planted_module' is not accepted: would shadow the module installed where cookiecutter"
        f" runs, found at {str(planted / 'zz_planted_module.py')!r}"
    ]


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


# --------------------------------------------------------------------------- any accepted answer installs and trains (slow)

PROMPTS = [
    "repo_name",
    "proj_name",
    "dataset_loading_class",
    "dataset",
    "readme_project_name",
    "project_desc",
    "author_name",
    "author_email",
    "license",
]
PRE_GEN = load_hook("pre_gen_project")
POST_GEN = load_hook("post_gen_project")
LIKELY_TEXT = (
    st.lists(
        st.one_of(
            st.sampled_from([*"\"\\'<>@,;:()[]& .#", "😀", "🧪", "é", "中", "Ω", "\u2028", "\\u0041"]),
            st.characters(exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn"]),
            st.text("abcXYZ", min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=8,
    )
    .map("".join)
    .filter(lambda text: not any(mark in text for mark in ("{{", "{%", "{#")))
)


def made_before_the_hook_runs(repo_name: str) -> bool:
    """cookiecutter creates the project folder before the pre-gen hook and removes it when the hook fails: a name
    that is absolute, empty, has a '.' or '..' part or a NUL fails there first (or removes a folder that was there:
    'a/..' is the output folder).  The hook never sees those; the property is about what it sees."""
    parts = repo_name.replace("\\", "/").split("/")
    return repo_name.startswith("/") or "\0" in repo_name or any(part in ("", ".", "..") for part in parts)


# For each prompt: answers the hook is likely to accept (yet unusual), and anything.
PROMPT_STRATEGIES = {
    "repo_name": (
        st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?", fullmatch=True),
        repo_names().filter(lambda name: not made_before_the_hook_runs(name)),
    ),
    "proj_name": (st.from_regex(r"_?[a-zA-Z][a-zA-Z0-9_]{2,9}", fullmatch=True), module_names(PRE_GEN)),
    "dataset_loading_class": (st.from_regex(r"[A-Z][A-Za-z0-9]{0,8}", fullmatch=True), class_names(PRE_GEN)),
    "dataset": (module_names(PRE_GEN), texts(jinja=False)),  # any identifier: keywords, dunders, module names
    "readme_project_name": (LIKELY_TEXT, texts(jinja=False)),
    "project_desc": (LIKELY_TEXT, texts(jinja=False)),
    "author_name": (LIKELY_TEXT, texts(jinja=False)),
    "author_email": (valid_emails(), emails()),
    # cookiecutter itself refuses a license outside the choices, before the hook
    "license": (st.sampled_from(["MIT", "BSD-3-Clause", "Apache-2.0", "Not open source"]),) * 2,
}


@st.composite
def answer_sets(draw) -> dict:
    """One prompt (or none) gets anything, the others a likely answer: whole sets are accepted often enough to
    be installed, and every rule still meets what it must refuse."""
    wild_prompt = draw(st.sampled_from([*[None] * 5, *PROMPTS]))  # about half the sets are accepted
    return {prompt: draw(PROMPT_STRATEGIES[prompt][prompt == wild_prompt]) for prompt in PROMPTS}


def answers_of(**changes) -> dict:
    return {key: value for key, value in {**default_answers(), **changes}.items() if key in PROMPTS}


def install_and_train(project: Path, folder: Path, proj_name: str) -> None:
    """pip install -e . into a fresh venv that reuses this venv's packages (as setup_env does, with a .pth file),
    without build isolation and without an index: nothing is downloaded; then one epoch of Iris."""
    venv = folder / "venv"
    done = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], folder)  # pip comes with the .pth
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], folder).stdout
    Path(purelib.strip(), "_reuse_template_env.pth").write_text("\n".join(POST_GEN.parent_site_dirs()) + "\n")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    pip = [str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index", "--no-cache-dir", "-e", "."]
    done = run(pip, project, timeout=600, env=env)
    assert done.returncode == 0, f"pip install -e . failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    # the editable install is what an import finds outside the project folder
    where = [
        str(python),
        "-c",
        "import importlib, sys; print(importlib.import_module(sys.argv[1]).__file__)",
        proj_name,
    ]
    done = run(where, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()).resolve() == (project / proj_name / "__init__.py").resolve()
    results = folder / "results"
    train = [str(python), "bin/train.py", "iris", str(results), "--num_epochs=1", "--device=cpu"]
    done = run(train, project, timeout=600)
    assert done.returncode == 0, f"training failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert (results / "history.csv").is_file()


ACCEPTED_EXAMPLES = [
    # characters outside the BMP, quotes, backslashes, e-mail specials; a keyword as dataset; a loader class
    # named like what the generated tests import; an odd e-mail
    answers_of(**HOSTILE, license="Apache-2.0"),
    answers_of(
        repo_name="x",
        proj_name="Zoo_Net2",
        dataset="__main__",
        dataset_loading_class="DataConfig",
        readme_project_name="😀",
        project_desc='one\u2028two \\ "',
        author_name='Smith, John <js@x> ; "J" @ home',
        author_email="!#$%&'*+-/=?^_`{|}~.a@例え.jp",
        license="Not open source",
    ),
    answers_of(dataset="yaml", author_name="😀", author_email="a@1.2", license="BSD-3-Clause"),
]
REFUSED_EXAMPLES = [
    answers_of(author_email="root@localhost"),
    answers_of(author_email="a,b@example.org"),
    answers_of(author_email='"ab"@example.org'),
    answers_of(author_email="a>b@example.org"),
    answers_of(author_name="<.>"),
    answers_of(proj_name="yaml"),
    answers_of(proj_name="google"),
    answers_of(proj_name="sympy"),
    answers_of(proj_name="typing_extensions"),
    answers_of(proj_name="__main__"),
    answers_of(proj_name="test_cli"),
    answers_of(dataset_loading_class="ValueError"),
    answers_of(dataset_loading_class="NotImplemented"),
    answers_of(dataset_loading_class="Split"),
]


def with_examples(test):
    for answers in [*ACCEPTED_EXAMPLES, *REFUSED_EXAMPLES]:
        test = example(answers=answers)(test)
    return test


@pytest.mark.slow
@settings(
    max_examples=20,  # with the explicit examples: about 2.5 minutes on 2 cores
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each accepted example installs and trains (8 s)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@with_examples
@given(answers=answer_sets())
def test_every_answer_is_refused_in_one_line_or_installs_and_trains(cookies, capfd, tmpdir, tmp_path_factory, answers):
    """The pre-gen hook either refuses an answer set with one line, baking nothing, or the project it lets
    through installs with pip and trains an epoch."""
    capfd.readouterr()
    output_root = Path(tmpdir) / "cookies"  # pytest-cookies bakes into <tmpdir>/cookies/bakeNN
    before = set(output_root.rglob("*"))
    result = cookies.bake(extra_context={**answers, **NO_ENV})
    err = capfd.readouterr().err
    if result.exit_code != 0:
        from cookiecutter.exceptions import FailedHookException

        event(f"refused: {err.partition('error: ')[2].partition('=')[0] or 'not by the hook'}")
        assert isinstance(result.exception, FailedHookException), repr(result.exception)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err
        assert any(
            errors[0].startswith(f"error: {prompt}={answers[prompt]!r} is not accepted: ") for prompt in PROMPTS
        ), errors[0]
        assert result.project_path is None
        # Only folders holding nothing but folders may be left: cookiecutter makes the project folder, and the
        # parents a repo_name with '/' names, before the hook runs, and removes only the project folder.
        new = set(output_root.rglob("*")) - before
        left = [p for p in new if not (p.is_dir() and all(q.is_dir() for q in p.rglob("*")))]
        assert left == [], left
        return
    assert result.exception is None
    project = Path(result.project_path)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert pyproject["description"] == answers["project_desc"]
    assert pyproject["authors"] == [{"name": answers["author_name"], "email": answers["author_email"]}]
    event("accepted: installed and trained")
    install_and_train(project, tmp_path_factory.mktemp("install"), answers["proj_name"])


# --------------------------------------------------------------------------- end to end (slow)


@pytest.mark.slow
@needs_git
def test_end_to_end_setup_env_and_project_tests(cookies, capfd, isolated_tmp, monkeypatch):
    """setup_env: .venv reusing this torch, pip install -e .[dev], smoke training; then the project's tests.

    With the HOSTILE answers: every text far outside ASCII, an odd e-mail, a keyword as dataset, a loader
    class named like something the generated tests import; the project still passes its own test suite.
    """
    monkeypatch.setenv("PIP_CACHE_DIR", str(isolated_tmp / "pip-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_tmp / "cache"))
    if ORIGINAL_HOME is not None:  # pip reads its index settings (user pip.conf) from the real HOME
        monkeypatch.setenv("HOME", ORIGINAL_HOME)
    result = cookies.bake(extra_context={**HOSTILE, "setup_env": True, "init_git": True})
    out = capfd.readouterr().out
    assert result.exit_code == 0, result.exception
    project = result.project_path
    venv_python = project / ".venv" / "bin" / "python"
    assert venv_python.is_file()
    assert "Smoke test passed" in out, out[-4000:]
    assert "setup failed" not in out, out[-4000:]
    assert run(["git", "rev-list", "--count", "HEAD"], project).stdout.strip() == "1"
    assert run(["git", "status", "--porcelain"], project).stdout == ""  # .venv is ignored
    author = run(["git", "log", "-1", "--format=%an <%ae>"], project).stdout.strip()
    assert author == f"{HOSTILE['author_name']} <{HOSTILE['author_email']}>"
    assert project.name == HOSTILE["repo_name"]
    assert (project / HOSTILE["proj_name"] / "datasets" / f"{HOSTILE['dataset']}_loading.py").is_file()

    done = run([str(venv_python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], project, timeout=1800)
    summary = (done.stdout + done.stderr)[-6000:]
    assert done.returncode != 5, "the generated project has no tests (pytest exit code 5):\n" + summary
    assert done.returncode == 0, summary
