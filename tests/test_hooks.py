"""Unit tests of hooks/pre_gen_project.py and hooks/post_gen_project.py, imported from their paths."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HOOKS, PROJECT_TEMPLATE, SEED_ANSWERS, default_answers, emails, load_hook_from, texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def answers_with(**changes) -> dict:
    answers = default_answers()
    answers.update(changes)
    return answers


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


# --------------------------------------------------------------------------- pre_gen_project: accepted answers

ACCEPTED = {
    "defaults": {},
    "seed": SEED_ANSWERS,
    "dotted and underscored folder": {"repo_name": "My.Repo_2"},
    "private package name": {"proj_name": "_iris"},
    "one-letter class": {"dataset_loading_class": "A"},
    "unicode text": {"readme_project_name": "Café ☕ «modèle»", "author_name": "Zoë Ångström"},
    "quotes and backslashes": {"project_desc": 'He said "hi" \\ ok', "author_name": 'O\'Brien "Bob" \\ Jr.'},
    "emoji outside the BMP": {"project_desc": "Zoë 😀 🧪", "author_name": "Zoë 😀", "readme_project_name": "😀"},
    "e-mail specials in the name": {"author_name": 'Smith, John <js@x> ; "J" @ home'},
    "name that is only an emoji": {"author_name": "😀"},
    "line separator in a text": {"project_desc": "one\u2028two"},
    "odd but valid e-mails": {"author_email": "o'brien+{ml}|x~y@exämple.co.uk"},
    "every dot-atom character": {"author_email": "!#$%&'*+-/=?^_`{|}~.a@x-1.y"},
    "numeric domain": {"author_email": "a@1.2"},
    "keyword as dataset": {"dataset": "class"},
    "stdlib name as dataset": {"dataset": "sys"},
    "dependency name as dataset": {"dataset": "yaml"},
    "dunder dataset": {"dataset": "__main__"},
    "class name OmegaConf": {"dataset_loading_class": "OmegaConf"},
    "class name DataLoaderConfig": {"dataset_loading_class": "DataLoaderConfig"},
    "upper-case package": {"proj_name": "Zoo_Net2"},
    "booleans as words": {"init_git": "yes", "setup_env": "No"},
    "booleans as digits": {"init_git": "1", "setup_env": "0"},
    "booleans as True/False": {"init_git": "True", "setup_env": "false"},
    "BSD": {"license": "BSD-3-Clause"},
    "Apache": {"license": "Apache-2.0"},
    "closed": {"license": "Not open source"},
}


@pytest.mark.parametrize("changes", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_validate_accepts(pre_gen, changes):
    assert pre_gen.validate(answers_with(**changes)) is None


# --------------------------------------------------------------------------- pre_gen_project: refused answers

PLAIN_FOLDER = "plain folder name"
IDENTIFIER = "Python identifier"
KEYWORD = "Python keyword"
STDLIB = "would shadow a module of the standard library"
DEPENDENCY = "would shadow a module of a dependency of the project"
INSTALLED = "would shadow the module installed where cookiecutter runs, found at "
RESERVED = "must not start with two underscores"
PYTEST = "name of a test module"
PROJECT_ENTRY = "name of a file or folder of the project"
DEVICE = "device name on Windows"
CLASS = "class name"
BUILTIN = "is a Python builtin"
TAKEN = "already used in the datasets package"
GIT_NAME = "git refuses such a name"
ONE_LINE = "one line of text"
NOT_EMPTY = "must not be empty"
EMAIL = "name@example.org"
CHOICE = "choose one of: MIT, BSD-3-Clause, Apache-2.0, Not open source"
BOOL = "answer true or false"

REFUSED = [
    # repo_name: a plain folder name, created inside the output folder
    ("repo_name", "../x", PLAIN_FOLDER),
    ("repo_name", "..", PLAIN_FOLDER),
    ("repo_name", "a/b", PLAIN_FOLDER),
    ("repo_name", "/tmp/abs", PLAIN_FOLDER),
    ("repo_name", "a\\b", PLAIN_FOLDER),
    ("repo_name", ".hidden", PLAIN_FOLDER),
    ("repo_name", "-x", PLAIN_FOLDER),
    ("repo_name", "has space", PLAIN_FOLDER),
    ("repo_name", "trailing ", PLAIN_FOLDER),
    ("repo_name", "tab\there", PLAIN_FOLDER),
    ("repo_name", "new\nline", PLAIN_FOLDER),
    ("repo_name", "bell\x07", PLAIN_FOLDER),
    ("repo_name", "zero\u200bwidth", PLAIN_FOLDER),
    ("repo_name", "", "1 to 100 characters"),
    ("repo_name", "x" * 101, "1 to 100 characters"),
    ("repo_name", 'quote"d', "nor any of"),
    ("repo_name", "star*", "nor any of"),
    ("repo_name", "c:drive", "nor any of"),
    ("repo_name", None, "1 to 100 characters"),
    ("repo_name", "nul", DEVICE),
    ("repo_name", "CON.x", DEVICE),
    ("repo_name", "com1", DEVICE),
    # proj_name: an importable package that hides nothing
    ("proj_name", "{{ 7*7 }}", IDENTIFIER),
    ("proj_name", "{% if 1 %}x{% endif %}", IDENTIFIER),
    ("proj_name", "my-model", IDENTIFIER),
    ("proj_name", "my.model", IDENTIFIER),
    ("proj_name", "1abc", IDENTIFIER),
    ("proj_name", "café", IDENTIFIER),
    ("proj_name", "", IDENTIFIER),
    ("proj_name", "x" * 101, IDENTIFIER),
    ("proj_name", "class", KEYWORD),
    ("proj_name", "None", KEYWORD),
    ("proj_name", "match", KEYWORD),
    ("proj_name", "_", KEYWORD),
    ("proj_name", "__main__", RESERVED),
    ("proj_name", "__init__", RESERVED),
    ("proj_name", "__x", RESERVED),
    ("proj_name", "os", STDLIB),
    ("proj_name", "json", STDLIB),
    ("proj_name", "typing", STDLIB),
    ("proj_name", "distutils", STDLIB),  # removed in 3.12, still stdlib on 3.10 and 3.11
    ("proj_name", "tomllib", STDLIB),  # added in 3.11
    ("proj_name", "torch", DEPENDENCY),
    ("proj_name", "torchvision", DEPENDENCY),
    ("proj_name", "omegaconf", DEPENDENCY),
    ("proj_name", "yaml", DEPENDENCY),
    ("proj_name", "google", DEPENDENCY),
    ("proj_name", "sympy", DEPENDENCY),
    ("proj_name", "typing_extensions", DEPENDENCY),
    ("proj_name", "nvidia", DEPENDENCY),
    ("proj_name", "_pytest", DEPENDENCY),
    ("proj_name", "pip", DEPENDENCY),
    ("proj_name", "pkg_resources", DEPENDENCY),
    ("proj_name", "colorama", DEPENDENCY),  # tqdm and pytest on Windows
    ("proj_name", "conftest", PYTEST),
    ("proj_name", "test_cli", PYTEST),
    ("proj_name", "model_test", PYTEST),
    ("proj_name", "tests", PROJECT_ENTRY),
    ("proj_name", "bin", PROJECT_ENTRY),
    ("proj_name", "training_scripts", PROJECT_ENTRY),
    ("proj_name", "License", PROJECT_ENTRY),  # the LICENSE file on a case-insensitive file system
    ("proj_name", "Data", PROJECT_ENTRY),
    ("proj_name", "aux", DEVICE),
    ("proj_name", "LPT1", DEVICE),
    # dataset: names the module <dataset>_loading, so any identifier will do
    ("dataset", "my-data", IDENTIFIER),
    ("dataset", "", IDENTIFIER),
    ("dataset", "café", IDENTIFIER),
    ("dataset", "d" * 101, IDENTIFIER),
    # dataset_loading_class: [A-Z][A-Za-z0-9]*, no keyword, no name taken
    ("dataset_loading_class", "irisLoader", CLASS),
    ("dataset_loading_class", "Iris_Loader", CLASS),
    ("dataset_loading_class", "Iris-Loader", CLASS),
    ("dataset_loading_class", "class", CLASS),
    ("dataset_loading_class", "Ïris", CLASS),
    ("dataset_loading_class", "", CLASS),
    ("dataset_loading_class", "None", KEYWORD),
    ("dataset_loading_class", "True", KEYWORD),
    ("dataset_loading_class", "ValueError", BUILTIN),
    ("dataset_loading_class", "Exception", BUILTIN),
    ("dataset_loading_class", "NotImplemented", BUILTIN),
    ("dataset_loading_class", "Ellipsis", BUILTIN),
    ("dataset_loading_class", "FileNotFoundError", BUILTIN),
    ("dataset_loading_class", "ExceptionGroup", BUILTIN),  # new in 3.11
    ("dataset_loading_class", "PythonFinalizationError", BUILTIN),  # new in 3.13
    ("dataset_loading_class", "Cifar10Loader", TAKEN),
    ("dataset_loading_class", "Split", TAKEN),
    ("dataset_loading_class", "Path", TAKEN),
    ("dataset_loading_class", "DATASETS", TAKEN),
    # one-line texts
    ("readme_project_name", "Two\nlines", ONE_LINE),
    ("readme_project_name", "", NOT_EMPTY),
    ("readme_project_name", "   ", NOT_EMPTY),
    ("project_desc", "tab\there", ONE_LINE),
    ("project_desc", "carriage\rreturn", ONE_LINE),
    ("project_desc", "escape \x1b[31m red", ONE_LINE),
    ("author_name", "", NOT_EMPTY),
    ("author_name", None, NOT_EMPTY),
    ("author_name", ".", GIT_NAME),
    ("author_name", "<>", GIT_NAME),
    ("author_name", " ' , \\ ", GIT_NAME),
    ("author_name", "Zoë\u200d😀", ONE_LINE),  # a zero-width joiner is a format character
    # e-mail
    ("author_email", "not-an-email", EMAIL),
    ("author_email", "a@b@c", EMAIL),
    ("author_email", "a b@c.d", EMAIL),
    ("author_email", "", EMAIL),
    ("author_email", None, EMAIL),
    # setuptools refuses these at install time (its schema, then email.headerregistry.Address)
    ("author_email", "root@localhost", EMAIL),
    ("author_email", "a,b@example.org", EMAIL),
    ("author_email", "a>b@example.org", EMAIL),
    ("author_email", "a<b@example.org", EMAIL),
    ("author_email", "a;b@example.org", EMAIL),
    ("author_email", "a:b@example.org", EMAIL),
    ("author_email", "a\\b@example.org", EMAIL),
    ("author_email", "a..b@example.org", EMAIL),
    ("author_email", ".a@example.org", EMAIL),
    ("author_email", "a.@example.org", EMAIL),
    ("author_email", "zoë@example.org", EMAIL),
    ("author_email", "a@example..org", EMAIL),
    ("author_email", "a@example.org.", EMAIL),
    ("author_email", "a(b)c@example.org", EMAIL),
    # setuptools would take these (quoted names, address literals, odd domains): refused to keep the rule short
    ("author_email", '"a,b"@example.org', EMAIL),
    ("author_email", "a@[127.0.0.1]", EMAIL),
    ("author_email", "a@-b.org", EMAIL),
    ("author_email", "a@b_c.org", EMAIL),
    # license
    ("license", "GPL-3.0", CHOICE),
    ("license", "mit", CHOICE),
    ("license", "", CHOICE),
    # booleans
    ("init_git", "maybe", BOOL),
    ("init_git", "", BOOL),
    ("init_git", None, BOOL),
    ("setup_env", "2", BOOL),
    ("setup_env", 1, BOOL),
]


@pytest.mark.parametrize(("prompt", "value", "rule"), REFUSED, ids=[f"{p}={v!r}" for p, v, _ in REFUSED])
def test_validate_refuses_with_prompt_value_and_rule(pre_gen, prompt, value, rule):
    with pytest.raises(pre_gen.AnswerError) as caught:
        pre_gen.validate(answers_with(**{prompt: value}))
    message = str(caught.value)
    assert message.startswith(f"{prompt}={value!r} is not accepted: "), message
    assert rule in message
    assert "\n" not in message  # one line, whatever the value holds (repr escapes it)


def test_validate_refuses_missing_answers_with_answer_error(pre_gen):
    with pytest.raises(pre_gen.AnswerError, match=r"^repo_name=None is not accepted"):
        pre_gen.validate({})


def test_answer_error_is_a_value_error(pre_gen):
    assert issubclass(pre_gen.AnswerError, ValueError)


def test_main_accepts_good_answers_silently(pre_gen, capsys):
    assert pre_gen.main(json.dumps(answers_with(**SEED_ANSWERS))) == 0
    captured = capsys.readouterr()
    assert captured.err == ""


@pytest.mark.parametrize(
    ("prompt", "value"),
    [
        ("repo_name", "../x"),
        ("proj_name", "{{ 7*7 }}"),
        ("proj_name", "my-model"),
        ("license", "GPL"),
        ("readme_project_name", "a\nb"),
    ],
)
def test_main_prints_one_error_line(pre_gen, capsys, prompt, value):
    assert pre_gen.main(json.dumps(answers_with(**{prompt: value}))) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: {prompt}={value!r} is not accepted: ")
    assert captured.out == ""


def test_rendered_hook_prints_one_line_where_stderr_cannot_encode_the_value(tmp_path):
    """A real process whose stderr is ASCII (a redirected Windows console): Python's stderr escapes what it cannot
    encode, so the refusal of an emoji is still the one line."""
    from cookiecutter.environment import StrictEnvironment

    answers = answers_with(proj_name="模型😀")
    source = (HOOKS / "pre_gen_project.py").read_text(encoding="utf-8")
    script = tmp_path / "hook.py"
    script.write_text(StrictEnvironment().from_string(source).render(cookiecutter=answers), encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, env=env, timeout=60)
    assert done.returncode == 1
    assert done.stdout == b""
    lines = done.stderr.decode("ascii").splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "error: proj_name='\\u6a21\\u578b\\U0001f600' is not accepted: must be a Python identifier"
    )


def test_main_ignores_private_keys(pre_gen):
    answers = answers_with(_template="/x", _output_dir="/y", __prompts__={"a": "b"}, __year="2030")
    assert pre_gen.main(json.dumps(answers)) == 0


# --------------------------------------------------------------------------- pre_gen_project: modules of this Python


@pytest.mark.parametrize("kind", ["module", "package", "namespace package"])
def test_proj_name_of_a_module_importable_here_is_refused_with_its_location(pre_gen, tmp_path, monkeypatch, kind):
    """cookiecutter's own Python: a package of the same name would hide it when the project runs there (setup_env)."""
    name = f"zz_planted_{kind.replace(' ', '_')}"
    if kind == "module":
        location = tmp_path / f"{name}.py"
        location.write_text("raise SystemExit('imported')\n")  # find_spec must not import it
    else:
        (tmp_path / name).mkdir()
        location = tmp_path / name
        if kind == "package":
            location = location / "__init__.py"
            location.write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(pre_gen.AnswerError) as caught:
        pre_gen.validate(answers_with(proj_name=name))
    message = str(caught.value)
    assert message == f"proj_name={name!r} is not accepted: {INSTALLED}{str(location)!r}"
    assert name not in sys.modules


def test_proj_name_beside_the_hook_itself_is_not_taken_for_a_module(tmp_path):
    """cookiecutter runs the hook from a temporary file: whatever lies beside it is no module of the project's Python."""
    copy = tmp_path / "pre_gen_project.py"
    shutil.copy(HOOKS / "pre_gen_project.py", copy)
    (tmp_path / "zz_beside_the_hook.py").write_text("")
    (tmp_path / "zz_folder_beside").mkdir()
    hook = load_hook_from(copy)
    sys.path.insert(0, str(tmp_path))  # as when Python runs a script: its folder comes first
    try:
        assert hook.validate(answers_with(proj_name="zz_beside_the_hook")) is None
        assert hook.validate(answers_with(proj_name="zz_folder_beside")) is None
    finally:
        sys.path.remove(str(tmp_path))


# --------------------------------------------------------------------------- what the hook accepts, setuptools and TOML take


@settings(max_examples=400, deadline=None, database=None)
@given(email=emails(), name=texts())
def test_accepted_email_and_author_name_are_accepted_by_setuptools(pre_gen, email, name):
    """Exactly what setuptools does with project.authors (config/_validate_pyproject, _apply_pyprojecttoml._people)."""
    from email.headerregistry import Address

    from setuptools.config.pyprojecttoml import validate

    try:
        pre_gen.validate(answers_with(author_email=email, author_name=name))
    except pre_gen.AnswerError:
        return
    project = {"name": "x", "version": "0", "authors": [{"name": name, "email": email}]}
    assert validate({"project": project}, "pyproject.toml")
    address = Address(display_name=name, addr_spec=email)  # raises for what setuptools refuses
    assert address.addr_spec == email  # the metadata holds the address as it was typed
    assert str(address)


def render_pyproject(answers: dict) -> str:
    from cookiecutter.environment import StrictEnvironment

    context = {"cookiecutter": answers}
    source = (PROJECT_TEMPLATE / "pyproject.toml").read_text(encoding="utf-8")
    return StrictEnvironment(context=context).from_string(source).render(**context)


@settings(max_examples=300, deadline=None, database=None)
@given(desc=texts(), name=texts(), email=emails())
def test_accepted_texts_are_toml_strings_holding_exactly_the_answer(pre_gen, desc, name, email):
    answers = answers_with(project_desc=desc, author_name=name, author_email=email)
    try:
        pre_gen.validate(answers)
    except pre_gen.AnswerError:
        return
    project = tomllib.loads(render_pyproject(answers))["project"]
    assert project["description"] == desc
    assert project["authors"] == [{"name": name, "email": email}]


@pytest.mark.parametrize(
    "text",
    ["Zoë 😀", '\U0001f600 \\ "', 'a "b" \\ c \\u0041 \\n', "<b>&amp;</b> 'x' {{ }}", "one\u2028two", "🧪" * 50],
)
def test_pyproject_holds_texts_outside_the_bmp_and_escapes(text):
    answers = answers_with(project_desc=text, author_name=text)
    project = tomllib.loads(render_pyproject(answers))["project"]
    assert project["description"] == text
    assert project["authors"][0]["name"] == text


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    repo_name=st.text(max_size=20),
    proj_name=st.text(max_size=12),
    dataset_loading_class=st.text(max_size=12),
    text=st.text(max_size=20),
)
def test_validate_never_fails_otherwise_and_accepted_names_are_safe(
    pre_gen, repo_name, proj_name, dataset_loading_class, text
):
    """Any answer is either accepted or refused with AnswerError; what is accepted is safe to use."""
    import keyword

    answers = answers_with(
        repo_name=repo_name, proj_name=proj_name, dataset_loading_class=dataset_loading_class, project_desc=text
    )
    try:
        pre_gen.validate(answers)
    except pre_gen.AnswerError:
        return
    # a single folder inside the output folder
    assert Path(repo_name).name == repo_name and not Path(repo_name).is_absolute()
    assert repo_name not in (".", "..") and "/" not in repo_name and "\\" not in repo_name
    # importable and not a keyword
    assert proj_name.isidentifier() and proj_name.isascii() and not keyword.iskeyword(proj_name)
    assert dataset_loading_class.isidentifier() and dataset_loading_class[0].isupper()
    # one line: nothing that ends a line in the readme, a docstring or pyproject.toml
    assert "\n" not in text and "\r" not in text


# --------------------------------------------------------------------------- the rendered hooks


@pytest.mark.parametrize("hook", ["pre_gen_project", "post_gen_project"])
def test_rendered_hook_receives_every_answer_as_data(hook):
    """The double ``tojson`` gives a Python string literal holding the answers' JSON, whatever they contain."""
    from cookiecutter.environment import StrictEnvironment

    nasty = {
        "repo_name": "x",
        "project_desc": 'He said "hi" \\ ok \'\'\' """ </script> & {{ 7*7 }} {% raw %} ☕ \u2028',
        "author_name": "O'Brien\\",
        "init_git": True,
        "__prompts__": {"a": "b"},
    }
    source = (HOOKS / f"{hook}.py").read_text()
    rendered = StrictEnvironment(context={"cookiecutter": nasty}).from_string(source).render(cookiecutter=nasty)
    tree = ast.parse(rendered)  # the rendered hook is valid Python
    literals = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("{"):
            try:
                literals.append(json.loads(node.value))
            except ValueError:
                pass
    assert literals == [nasty]


# --------------------------------------------------------------------------- post_gen_project


LICENSE_NAMES = ["MIT", "BSD-3-Clause", "Apache-2.0"]


@pytest.fixture
def project_with_licenses(tmp_path) -> Path:
    project = tmp_path / "proj"
    (project / "licenses").mkdir(parents=True)
    for name in LICENSE_NAMES:
        (project / "licenses" / f"{name}.txt").write_text(f"text of {name}\n")
    return project


@pytest.mark.parametrize("license_name", [*LICENSE_NAMES, "Not open source"])
def test_choose_license(post_gen, project_with_licenses, license_name):
    post_gen.choose_license(project_with_licenses, license_name)
    license_file = project_with_licenses / "LICENSE"
    if license_name == "Not open source":
        assert not license_file.exists()
    else:
        assert license_file.read_text() == f"text of {license_name}\n"
    assert not (project_with_licenses / "licenses").exists()
    assert sorted(p.name for p in project_with_licenses.iterdir()) == (["LICENSE"] if license_file.exists() else [])


def test_choose_license_in_the_shipped_templates():
    """Every choice but 'Not open source' has its text in the template, with the author and the year."""
    folder = HOOKS.parent / "{{cookiecutter.repo_name}}" / "licenses"
    assert sorted(p.stem for p in folder.glob("*.txt")) == sorted(LICENSE_NAMES)
    for path in folder.glob("*.txt"):
        text = path.read_text()
        assert "{{ cookiecutter.author_name }}" in text and "{{ cookiecutter.__year }}" in text, path.name


def test_write_answers_drops_private_keys(post_gen, tmp_path):
    answers = {
        "repo_name": "r",
        "proj_name": "p",
        "init_git": False,
        "_template": "/templates/x",
        "_output_dir": "/out",
        "_repo_dir": "/templates/x",
        "_checkout": None,
        "__prompts__": {"repo_name": "Folder"},
        "__year": "2030",
        "__dataset_module": "dataset_loading",
    }
    post_gen.write_answers(tmp_path, answers)
    text = (tmp_path / ".cookiecutter.json").read_text()
    assert text.endswith("\n")
    assert json.loads(text) == {"repo_name": "r", "proj_name": "p", "init_git": False, "_template": "/templates/x"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("yes", True),
        ("Y", True),
        ("on", True),
        ("1", True),
        ("no", False),
        ("0", False),
        ("False", False),
    ],
)
def test_post_gen_as_bool(post_gen, value, expected):
    assert post_gen.as_bool(value) is expected


@needs_git
def test_init_git_without_a_global_identity(post_gen, tmp_path, hermetic_git):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "readme.md").write_text("# hi\n")
    (project / ".gitignore").write_text("runs/\n")
    (project / "runs").mkdir()
    (project / "runs" / "ignored.txt").write_text("x\n")
    assert subprocess.run(["git", "config", "user.email"], cwd=project, capture_output=True, timeout=60).returncode != 0

    message = post_gen.init_git(project, "Ada Lovelace", "ada@example.org")

    assert message == "git repository initialised with a first commit"
    assert (project / ".git").is_dir()
    assert git("rev-list", "--count", "HEAD", cwd=project) == "1"
    assert git("log", "-1", "--format=%an <%ae>", cwd=project) == "Ada Lovelace <ada@example.org>"
    assert git("status", "--porcelain", cwd=project) == ""
    assert git("ls-files", cwd=project).splitlines() == [".gitignore", "readme.md"]
    # the identity was used for this commit only, not saved in the repository
    assert subprocess.run(["git", "config", "user.email"], cwd=project, capture_output=True, timeout=60).returncode != 0


@needs_git
def test_init_git_keeps_an_existing_identity(post_gen, tmp_path, hermetic_git, monkeypatch):
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Global Person\n\temail = global@example.org\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    project = tmp_path / "proj"
    project.mkdir()
    (project / "a.txt").write_text("a\n")
    assert (
        post_gen.init_git(project, "Ada Lovelace", "ada@example.org")
        == "git repository initialised with a first commit"
    )
    assert git("log", "-1", "--format=%an <%ae>", cwd=project) == "Global Person <global@example.org>"


def test_init_git_without_git(post_gen, tmp_path, monkeypatch):
    monkeypatch.setattr(post_gen.shutil, "which", lambda name: None)
    message = post_gen.init_git(tmp_path, "A", "a@example.org")
    assert message.startswith("git not found")
    assert not (tmp_path / ".git").exists()


def test_parent_site_dirs_holds_torch(post_gen):
    import torch
    import torchvision

    found = post_gen.parent_site_dirs()
    assert str(Path(torch.__file__).resolve().parents[1]) in found
    assert str(Path(torchvision.__file__).resolve().parents[1]) in found
    assert len(found) == len(set(found))
    assert all(Path(folder).is_dir() for folder in found)


def test_setup_env_reports_the_failed_command(post_gen, tmp_path, monkeypatch):
    calls = []

    def failing_run(command, cwd, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(post_gen, "run", failing_run)
    assert post_gen.setup_env(tmp_path) == [f"{sys.executable} -m venv .venv"]
    assert len(calls) == 1


def test_main_keeps_the_project_when_setup_fails(post_gen, project_with_licenses, monkeypatch, capsys):
    monkeypatch.setattr(post_gen, "setup_env", lambda project: ["python -m venv .venv"])
    monkeypatch.chdir(project_with_licenses)
    answers = answers_with(init_git=False, setup_env=True, _template="/t", _output_dir="/o")
    assert post_gen.main(answers) == 0
    out = capsys.readouterr().out
    assert "setup failed at: python -m venv .venv" in out
    assert f"cd {Path.cwd()} && python -m venv .venv" in out
    # the next steps start by making the environment, not by activating a broken one
    assert '  python -m venv .venv && source .venv/bin/activate && pip install -e ".[dev]"' in out.splitlines()
    assert "  python bin/train.py iris runs/first" in out.splitlines()
    assert (project_with_licenses / "LICENSE").is_file()
    assert json.loads((project_with_licenses / ".cookiecutter.json").read_text())["_template"] == "/t"


def test_main_without_git_and_environment(post_gen, project_with_licenses, monkeypatch, capsys):
    monkeypatch.chdir(project_with_licenses)
    assert post_gen.main(answers_with(init_git="no", setup_env="no", license="Not open source")) == 0
    out = capsys.readouterr().out
    assert f"Created {project_with_licenses}" in out
    assert 'pip install -e ".[dev]"' in out
    assert not (project_with_licenses / ".git").exists()
    assert not (project_with_licenses / ".venv").exists()
    assert not (project_with_licenses / "LICENSE").exists()
    assert sorted(os.listdir(project_with_licenses)) == [".cookiecutter.json"]
