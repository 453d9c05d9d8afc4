"""Validate every answer before cookiecutter writes anything.

The answers arrive as one JSON document and are only ever read as data: no
answer is pasted into Python source or evaluated.  A bad answer stops
generation with one line naming the prompt, the value and the rule.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
import unicodedata

# repo_name is also the distribution name in pyproject.toml, so it must be a valid one (PEP 508).
DISTRIBUTION_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
LICENSES = ("MIT", "BSD-3-Clause", "Apache-2.0", "Not open source")
# Packages the project imports: a package of the same name would hide them.
DEPENDENCIES = {"torch", "torchvision", "numpy", "pandas", "omegaconf", "tqdm", "tensorboard", "pytest", "setuptools"}
# Folders at the top of the generated project: a package of the same name would collide.
PROJECT_FOLDERS = {"bin", "etc", "experiments", "tests", "training_scripts", "licenses", "runs", "data"}
# Names already used inside the generated datasets package.
DATASET_CLASSES_TAKEN = {"Cifar10Loader", "ConfigError", "DATASETS", "Path", "Split"}
WINDOWS_FORBIDDEN = set('<>:"|?*')
BOOLEAN_WORDS = {"true", "false", "yes", "no", "y", "n", "1", "0", "on", "off"}


class AnswerError(ValueError):
    """An answer that breaks a rule; the message is the one line shown to the user."""


def _fail(prompt: str, value: object, rule: str) -> AnswerError:
    return AnswerError(f"{prompt}={value!r} is not accepted: {rule}")


def check_folder_name(prompt: str, value: str) -> None:
    rule = "use a plain folder name without '/', '\\', '..', a leading '.' or '-', spaces or control characters"
    if not isinstance(value, str) or not value or len(value) > 100:
        raise _fail(prompt, value, rule + " (1 to 100 characters)")
    if "/" in value or "\\" in value or ".." in value or value[0] in ".-":
        raise _fail(prompt, value, rule)
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value):
        raise _fail(prompt, value, rule)
    if WINDOWS_FORBIDDEN & set(value):
        raise _fail(prompt, value, rule + ' (nor any of < > : " | ? *)')
    if not DISTRIBUTION_NAME.fullmatch(value):
        raise _fail(
            prompt,
            value,
            "must also be a package name: ASCII letters, digits, '.', '_', '-', starting and ending with a letter or digit",
        )


def check_module_name(prompt: str, value: str) -> None:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise _fail(
            prompt,
            value,
            "must be a Python identifier: ASCII letters, digits and _, not starting with a digit (e.g. iris_model)",
        )
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        raise _fail(prompt, value, "is a Python keyword")
    if value in sys.stdlib_module_names or value in DEPENDENCIES:
        raise _fail(
            prompt, value, "would shadow a module of the standard library, torch, torchvision or another dependency"
        )
    if value in PROJECT_FOLDERS:
        raise _fail(prompt, value, f"is the name of a folder of the project ({', '.join(sorted(PROJECT_FOLDERS))})")


def check_class_name(prompt: str, value: str) -> None:
    if not isinstance(value, str) or not CLASS_NAME.fullmatch(value):
        raise _fail(
            prompt,
            value,
            "must be a class name: an ASCII letter in upper case, then letters and digits (e.g. IrisDataLoader)",
        )
    if keyword.iskeyword(value):
        raise _fail(prompt, value, "is a Python keyword")
    if value in DATASET_CLASSES_TAKEN:
        raise _fail(
            prompt, value, f"is already used in the datasets package ({', '.join(sorted(DATASET_CLASSES_TAKEN))})"
        )


def check_text(prompt: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(prompt, value, "must not be empty")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise _fail(prompt, value, "must be one line of text without control characters")


def check_email(prompt: str, value: str) -> None:
    if not isinstance(value, str) or not EMAIL.fullmatch(value):
        raise _fail(prompt, value, "must look like name@example.org")


def check_choice(prompt: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(prompt, value, f"choose one of: {', '.join(choices)}")


def as_bool(prompt: str, value: object) -> bool:
    """cookiecutter gives booleans, or strings when answered on the command line."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS:
        return value.strip().lower() in ("true", "yes", "y", "1", "on")
    raise _fail(prompt, value, "answer true or false")


def validate(answers: dict) -> None:
    """Raise AnswerError for the first answer that breaks its rule."""
    check_folder_name("repo_name", answers.get("repo_name"))
    check_module_name("proj_name", answers.get("proj_name"))
    check_class_name("dataset_loading_class", answers.get("dataset_loading_class"))
    check_module_name("dataset", answers.get("dataset"))
    check_text("readme_project_name", answers.get("readme_project_name"))
    check_text("project_desc", answers.get("project_desc"))
    check_text("author_name", answers.get("author_name"))
    check_email("author_email", answers.get("author_email"))
    check_choice("license", answers.get("license"), LICENSES)
    as_bool("init_git", answers.get("init_git"))
    as_bool("setup_env", answers.get("setup_env"))


def main(answers_json: str) -> int:
    try:
        validate(json.loads(answers_json))
    except AnswerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # cookiecutter renders the next line into a JSON string literal holding every answer.
    sys.exit(main({{cookiecutter | tojson | tojson}}))  # noqa: F821
