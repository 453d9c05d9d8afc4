"""A baked project extended as its readme says keeps passing its own tests.

The readme tells a user how to add a network (a module with an ``nn.Module``
whose typed, defaulted arguments are its config, registered in ``NETWORKS``).
The project's tests must pick it up by themselves: none may list the networks
by hand or use a name a user may add as an example of an unknown one.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import default_answers

NETWORK_NAME = "transformer_classifier"  # longer than every shipped name: --help's columns must still line up
NETWORK_MODULE = '''"""A small transformer encoder over the features of a sample, one token per feature."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import num_features


class Transformer(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: int, width: int = 8, heads: int = 2):
        super().__init__()
        self.tokens = num_features(input_shape)
        self.embed = nn.Linear(1, width)
        self.encoder = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, batch_first=True)
        self.output = nn.Linear(width, output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1).unsqueeze(-1))
        return self.output(self.encoder(tokens).mean(1))
'''


@pytest.fixture(autouse=True)
def _isolated(isolated_tmp, hermetic_git):
    """Temporary files under pytest's tmp, no git identity of this machine."""


def test_a_network_added_as_the_readme_says_passes_the_projects_own_tests(cookies):
    result = cookies.bake(extra_context={"setup_env": False, "init_git": False})
    assert result.exit_code == 0, result.exception
    project = result.project_path
    package = project / default_answers()["proj_name"]
    readme = (project / "readme.md").read_text()
    assert "add the class to `NETWORKS`" in readme, "the readme's recipe changed: update this test"

    (package / "networks" / "transformer.py").write_text(NETWORK_MODULE)
    registry = package / "networks" / "__init__.py"
    text = registry.read_text()
    text = text.replace(
        "from .resnet import ResNet18\n",
        "from .resnet import ResNet18\nfrom .transformer import Transformer\n",
    )
    assert "from .transformer import Transformer" in text, "the registry's imports changed: update this test"
    text, added = re.subn(
        r"(NETWORKS: .*? = \{\n(?:    .*\n)*?)\}",
        rf'\1    "{NETWORK_NAME}": Transformer,\n}}',
        text,
    )
    assert added == 1, "NETWORKS is no longer a literal dict: update this test"
    registry.write_text(text)

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_networks.py", "tests/test_cli.py"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tests.returncode == 0, (tests.stdout + tests.stderr)[-6000:]
    tested = [line for line in tests.stdout.splitlines() if NETWORK_NAME in line and "PASSED" in line]
    assert len(tested) >= 3, "the project's tests did not pick the new network up"

    command = ["bin/train.py", "iris", "runs/x", f"--model={NETWORK_NAME}", "--model.width=4", "--num_epochs=1"]
    trained = subprocess.run(
        [sys.executable, *command],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
