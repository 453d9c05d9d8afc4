"""Finish the generated project: license, answers file, git, environment and smoke test.

Runs inside the new project.  Only invalid answers (pre_gen_project.py) abort
generation: if git, the install or the smoke test fails here, the project is
kept and the failing command is printed with how to rerun it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LICENSE_DIR = "licenses"
RESULT_FILES = (
    "config.json",
    "meta.json",
    "history.csv",
    "model.pt",
    "loop_state.json",
    "stdout.txt",
    "stderr.txt",
    "train.py",
)


def as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "y", "1", "on")
    return bool(value)


def choose_license(project: Path, license_name: str) -> None:
    """Keep the chosen license as LICENSE and remove the others."""
    chosen = project / LICENSE_DIR / f"{license_name}.txt"
    if chosen.is_file():
        shutil.move(str(chosen), project / "LICENSE")
    shutil.rmtree(project / LICENSE_DIR, ignore_errors=True)


def write_answers(project: Path, answers: dict) -> None:
    """Save the answers (public ones and ``_template``), to know later how the project was made."""
    kept = {key: value for key, value in answers.items() if not key.startswith("_") or key == "_template"}
    (project / ".cookiecutter.json").write_text(json.dumps(kept, indent=2) + "\n")


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    print(f"$ {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=cwd, **kwargs)


def init_git(project: Path, author: str, email: str) -> str:
    """``git init`` and a first commit; returns what happened, in words."""
    git = shutil.which("git")
    if git is None:
        return "git not found: no repository was created (run `git init` later)"
    identity: list[str] = []
    configured = subprocess.run([git, "config", "user.email"], cwd=project, capture_output=True, text=True)
    if not configured.stdout.strip():  # no identity on this machine: use the author's for this commit only
        identity = ["-c", f"user.name={author}", "-c", f"user.email={email}"]
    steps = [
        [git, "init", "-q"],
        [git, "add", "-A"],
        [git, *identity, "commit", "-q", "-m", "Initial commit from the PyTorch experiment template"],
    ]
    for command in steps:
        if run(command, project).returncode != 0:
            return f"git step failed: {' '.join(command)} (the project is kept; run it again by hand)"
    return "git repository initialised with a first commit"


def parent_site_dirs() -> list[str]:
    """site-packages folders where this Python finds torch and torchvision (to reuse them)."""
    found = []
    for name in ("torch", "torchvision"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            folder = str(Path(spec.origin).resolve().parents[1])
            if folder not in found:
                found.append(folder)
    return found


def setup_env(project: Path) -> list[str]:
    """Create .venv, install the project with its dev extras, run a smoke test.

    Returns the failed command (as a shell line) or an empty list when all went well.
    """
    venv_python = project / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if run([sys.executable, "-m", "venv", ".venv"], project).returncode != 0:
        return [f"{sys.executable} -m venv .venv"]
    site_dirs = parent_site_dirs()
    if site_dirs:
        # A .pth file adds the folders to the new environment's path, so pip sees
        # torch and torchvision as installed and downloads no second copy.
        purelib = subprocess.run(
            [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        Path(purelib, "_reuse_parent_torch.pth").write_text("\n".join(site_dirs) + "\n")
        print(f"Reusing torch and torchvision from {', '.join(site_dirs)}")
    install = [str(venv_python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".[dev]"]
    if run(install, project).returncode != 0:
        return [" ".join(install)]
    with tempfile.TemporaryDirectory(prefix="smoke-") as tmp:
        results = Path(tmp) / "run"
        smoke = [str(venv_python), "bin/train.py", "iris", str(results), "--num_epochs=1"]
        if run(smoke, project).returncode != 0:
            return [" ".join(smoke)]
        missing = [name for name in RESULT_FILES if not (results / name).exists()]
        if not any(results.glob("events.out.tfevents.*")):
            missing.append("events.out.tfevents.*")
        if missing:
            print(f"The smoke test left no {', '.join(missing)}", file=sys.stderr)
            return [" ".join(smoke)]
    print("Smoke test passed: one epoch on Iris left every results file.")
    return []


def main(answers: dict) -> int:
    project = Path.cwd()
    choose_license(project, answers["license"])
    write_answers(project, answers)
    done = []
    if as_bool(answers["init_git"]):
        done.append(init_git(project, answers["author_name"], answers["author_email"]))
    env_ok = True
    if as_bool(answers["setup_env"]):
        failed = setup_env(project)
        if failed:
            env_ok = False
            done.append(f"setup failed at: {failed[0]}\n  the project is kept; to retry: cd {project} && {failed[0]}")
        else:
            done.append("created .venv, installed the project with its dev extras, smoke test passed")
    print(f"\nCreated {project}")
    for line in done:
        print(f"  - {line}")
    activate = "source .venv/bin/activate && " if as_bool(answers["setup_env"]) and env_ok else ""
    print("\nNext:")
    print(f"  cd {project}")
    if not activate:
        print('  python -m venv .venv && source .venv/bin/activate && pip install -e ".[dev]"')
        print("  (no torch yet? pip then takes a CUDA build of several GB: readme.md shows the CPU one)")
    print(f"  {activate}python bin/train.py iris runs/first")
    print("  python bin/evaluate.py runs/first")
    print("  pytest")
    return 0


if __name__ == "__main__":
    # cookiecutter renders the next line into a JSON string literal holding every answer.
    sys.exit(main(json.loads({{cookiecutter | tojson | tojson}})))  # noqa: F821
