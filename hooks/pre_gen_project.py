"""Validate every answer before cookiecutter writes anything.

The answers arrive as one JSON document and are only ever read as data: no
answer is pasted into Python source or evaluated.  A bad answer stops
generation with one line naming the prompt, the value and the rule.
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import keyword
import os
import re
import sys
import unicodedata

# repo_name is also the distribution name in pyproject.toml, so it must be a valid one (PEP 508).
DISTRIBUTION_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 100  # a folder or file name; file systems allow 255 bytes
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
# What setuptools accepts for project.authors[].email, made portable: its schema wants
# ``^[^@]+@[^@]+\.[^@]+\Z`` and it builds ``email.headerregistry.Address(addr_spec=...)``, which
# refuses ',', '<', '>', ';', ':', spaces, stray dots and a non-ASCII name before the @.  This is
# the dot-atom part of that (RFC 5322), with letters of any script in the domain.
EMAIL_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
EMAIL_LABEL = r"[^\W_]+(?:-+[^\W_]+)*"  # letters and digits, hyphens inside
EMAIL = re.compile(EMAIL_LOCAL + "@" + EMAIL_LABEL + r"(?:\." + EMAIL_LABEL + ")+")
LICENSES = ("MIT", "BSD-3-Clause", "Apache-2.0", "Not open source")
# Top-level import names of every distribution the generated project installs, transitively:
# its dependencies, its dev extras, setuptools (build-system) and pip, as resolved on Linux
# (tests/test_bake.py recomputes this from the installed metadata and fails when one is missing),
# plus those of other platforms, other Pythons and older versions the pins allow
# (colorama, exceptiongroup, tomli, six, pytz, antlr4, pkg_resources, wheel, attrs and tensorboard's
# former google-auth and requests stack).  cookiecutter's Python need not have them installed.
DEPENDENCY_MODULES = frozenset(
    """
    PIL _distutils_hack _hypothesis_ftz_detector _hypothesis_globals _hypothesis_pytestplugin _pytest _yaml
    absl cfgv cuda dateutil distlib execnet filelock fsspec functorch google grpc hypothesis identify iniconfig
    isympy jinja2 markdown markupsafe mpmath networkx nodeenv numpy nvidia omegaconf packaging pandas pip
    platformdirs pluggy pre_commit py pygments pytest python_discovery ruff setuptools sortedcontainers sympy
    tensorboard tensorboard_data_server torch torchgen torchmetrics lightning_utilities torchvision tqdm triton
    submitit cloudpickle
    optuna alembic colorlog mako sqlalchemy greenlet matplotlib mpl_toolkits pylab contourpy cycler fontTools
    kiwisolver pyparsing scipy selenium h11 outcome sniffio socks sockshandler trio trio_websocket websocket wsproto
    typing_extensions tzdata
    virtualenv werkzeug xdist yaml
    colorama exceptiongroup tomli six pytz antlr4 pkg_resources wheel attr attrs
    cachetools certifi charset_normalizer google_auth_oauthlib idna oauthlib pyasn1 pyasn1_modules requests
    requests_oauthlib rsa tensorboard_plugin_wit urllib3
    """.split()
)
# Standard-library modules of the Pythons the project supports (3.10 to 3.14) that the running
# Python may lack (sys.stdlib_module_names covers only itself): removed in 3.12 and 3.13, added since 3.10.
STDLIB_OTHER_PYTHONS = frozenset(
    """
    asynchat asyncore distutils imp smtpd aifc audioop cgi cgitb chunk crypt imghdr lib2to3 mailcap msilib nis
    nntplib ossaudiodev pipes sndhdr spwd sunau telnetlib uu xdrlib binhex tomllib annotationlib compression
    _colorize _pyrepl _pydatetime _pylong _tokenize _typing _sysconfig _suggestions _opcode_metadata _wmi
    _interpreters _interpchannels _interpqueues _ios_support _android_support _sha2 _zstd
    """.split()
)
# Files and folders at the top of the generated project (compared without case: LICENSE and a
# package named license are one path on macOS and Windows).
# Modules of the project's tests/ folder that are not test_*.py (pytest puts the folder on sys.path).
TEST_MODULES = {"conftest", "fault_helpers", "faulty_train"}
PROJECT_ENTRIES = {"bin", "data", "etc", "experiments", "license", "licenses", "runs", "tests", "training_scripts"}
# Names bound or used in datasets/__init__.py and datasets/<dataset>_loading.py, where the loader
# class is defined and registered, that a class name could take (builtins are refused apart).
# tests/test_bake.py parses a baked project and checks that this is exactly that list.
DATASET_NAMES_TAKEN = {"Cifar10Loader", "ConfigError", "DATASETS", "DataConfig", "ImageFolderLoader", "Path", "Split"}
# Builtins of other supported Pythons that a class name could take.
BUILTINS_OTHER_PYTHONS = {"BaseExceptionGroup", "EncodingWarning", "ExceptionGroup", "PythonFinalizationError"}
WINDOWS_FORBIDDEN = set('<>:"|?*')
WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
# git refuses an author name made only of these (and spaces)
GIT_NAME_CRUD = set(".,:;<>\"\\'")
BOOLEAN_WORDS = {"true", "false", "yes", "no", "y", "n", "1", "0", "on", "off"}


class AnswerError(ValueError):
    """An answer that breaks a rule; the message is the one line shown to the user."""


def _fail(prompt: str, value: object, rule: str) -> AnswerError:
    return AnswerError(f"{prompt}={value!r} is not accepted: {rule}")


def check_folder_name(prompt: str, value: str) -> None:
    rule = "use a plain folder name without '/', '\\', '..', a leading '.' or '-', spaces or control characters"
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise _fail(prompt, value, rule + f" (1 to {MAX_NAME} characters)")
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
    if value.split(".")[0].lower() in WINDOWS_DEVICES:
        raise _fail(prompt, value, "is a device name on Windows (CON, PRN, AUX, NUL, COM0-9, LPT0-9)")


def check_identifier(prompt: str, value: str) -> None:
    """An ASCII identifier short enough to be a file name."""
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value) or len(value) > MAX_NAME:
        raise _fail(
            prompt,
            value,
            "must be a Python identifier: ASCII letters, digits and _, not starting with a digit,"
            f" at most {MAX_NAME} characters (e.g. iris_model)",
        )


def installed_location(name: str) -> str | None:
    """Where this Python would import the top-level module ``name`` from, or None; imports nothing.

    The folder of this script is left out: cookiecutter runs the hook from a temporary file.
    """
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None) or "built into Python"
    own_folder = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [entry for entry in saved if os.path.abspath(entry or os.curdir) != own_folder]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as err:  # a finder that fails still says the name is taken
        return f"a module finder that failed on it ({type(err).__name__})"
    finally:
        sys.path[:] = saved
    if spec is None:
        return None
    if spec.has_location and spec.origin:
        return spec.origin
    locations = list(spec.submodule_search_locations or [])  # a namespace package
    return locations[0] if locations else spec.origin or "built into Python"


def check_package_name(prompt: str, value: str) -> None:
    """proj_name: a top-level package, first on sys.path when the project runs: it must hide no module."""
    check_identifier(prompt, value)
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        raise _fail(prompt, value, "is a Python keyword")
    if value.startswith("__"):
        raise _fail(prompt, value, "must not start with two underscores (names Python reserves, such as __main__)")
    if value in sys.stdlib_module_names or value in STDLIB_OTHER_PYTHONS:
        raise _fail(prompt, value, "would shadow a module of the standard library")
    if value in DEPENDENCY_MODULES:
        raise _fail(
            prompt, value, "would shadow a module of a dependency of the project (torch, pytest and what they install)"
        )
    if value in TEST_MODULES or value.startswith("test_") or value.endswith("_test"):
        raise _fail(prompt, value, f"is the name of a test module ({', '.join(sorted(TEST_MODULES))}, test_*, *_test)")
    if value.lower() in PROJECT_ENTRIES:
        raise _fail(
            prompt, value, f"is the name of a file or folder of the project ({', '.join(sorted(PROJECT_ENTRIES))})"
        )
    if value.lower() in WINDOWS_DEVICES:
        raise _fail(prompt, value, "is a device name on Windows (CON, PRN, AUX, NUL, COM0-9, LPT0-9)")
    location = installed_location(value)
    if location is not None:
        raise _fail(prompt, value, f"would shadow the module installed where cookiecutter runs, found at {location!r}")


def check_class_name(prompt: str, value: str) -> None:
    if not isinstance(value, str) or not CLASS_NAME.fullmatch(value):
        raise _fail(
            prompt,
            value,
            "must be a class name: an ASCII letter in upper case, then letters and digits (e.g. IrisDataLoader)",
        )
    if keyword.iskeyword(value):
        raise _fail(prompt, value, "is a Python keyword")
    if value in dir(builtins) or value in BUILTINS_OTHER_PYTHONS:
        raise _fail(prompt, value, "is a Python builtin (such as ValueError or NotImplemented)")
    if value in DATASET_NAMES_TAKEN:
        raise _fail(
            prompt, value, f"is already used in the datasets package ({', '.join(sorted(DATASET_NAMES_TAKEN))})"
        )


def check_text(prompt: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(prompt, value, "must not be empty")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise _fail(prompt, value, "must be one line of text without control characters")


def check_author_name(prompt: str, value: str) -> None:
    check_text(prompt, value)
    if all(ch in GIT_NAME_CRUD or ch.isspace() for ch in value):
        raise _fail(prompt, value, "must hold more than spaces and . , : ; < > \" ' \\ (git refuses such a name)")


def check_email(prompt: str, value: str) -> None:
    if not isinstance(value, str) or not EMAIL.fullmatch(value):
        raise _fail(
            prompt,
            value,
            "must look like name@example.org: ASCII letters, digits and !#$%&'*+-/=?^_`{|}~ before the @,"
            " letters, digits and inner hyphens after it, single dots between parts and at least one after the @",
        )


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
    check_package_name("proj_name", answers.get("proj_name"))
    check_class_name("dataset_loading_class", answers.get("dataset_loading_class"))
    # dataset only names the module <dataset>_loading inside the package's datasets folder: that
    # name is an identifier whenever dataset is one, and no module of that folder ends in _loading.
    check_identifier("dataset", answers.get("dataset"))
    check_text("readme_project_name", answers.get("readme_project_name"))
    check_text("project_desc", answers.get("project_desc"))
    check_author_name("author_name", answers.get("author_name"))
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
