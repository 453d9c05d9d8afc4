"""Every network builds from its config and maps a batch to [batch, outputs]; training models init and step."""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Callable, Optional, Sequence

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from {{ cookiecutter.proj_name }}.configs import CONFIGS, SELECTORS, check
from {{ cookiecutter.proj_name }}.engine.cli import ConfigError, describe, load_config
from {{ cookiecutter.proj_name }}.networks import NETWORKS, build_network, network_config
from {{ cookiecutter.proj_name }}.training_models import TRAINING_MODELS
from {{ cookiecutter.proj_name }}.training_models.base import BaseModel
from {{ cookiecutter.proj_name }}.training_models.xavier_init import XavierInitModel

FLAT = [4]  # Iris
IMAGE = [3, 32, 32]  # CIFAR-10
SHAPES = {"table rows": FLAT, "images": IMAGE}  # the shipped data
BATCH = 2


def build(name: str, data_shape, outputs: int, **overrides):
    """Network ``name`` with its defaults changed by ``overrides``, for data of shape ``data_shape``."""
    cfg = OmegaConf.structured(network_config(name))
    for key, value in overrides.items():
        cfg[key] = value
    return build_network(cfg, data_shape, outputs)


def experiment(*overrides: str):
    return load_config(CONFIGS, "iris", list(overrides), SELECTORS)


@pytest.mark.parametrize("name", list(NETWORKS))  # a network added to NETWORKS is tested here at once
@pytest.mark.parametrize("outputs", [1, 10])
def test_forward_gives_batch_by_outputs(name, outputs):
    """On each shipped kind of data it takes, a network maps a batch to [batch, outputs]; it takes at least one.

    A network that cannot take some data (a CNN given table rows) may fail to
    build or to run on it: the trainer turns that into one line before anything
    is written (``experiment.check_fit``).
    """
    taken = []
    for kind, input_shape in SHAPES.items():
        torch.manual_seed(0)
        try:
            network = build(name, input_shape, outputs)
            network.eval()
            with torch.no_grad():
                out = network(torch.randn(BATCH, *input_shape))
        except (ConfigError, RuntimeError):
            continue
        assert isinstance(network, torch.nn.Module)
        assert out.shape == (BATCH, outputs), kind
        assert out.dtype == torch.float32, kind
        assert torch.isfinite(out).all(), kind
        taken.append(kind)
    assert taken, f"{name} takes none of the shipped kinds of data: {', '.join(SHAPES)}"


@pytest.mark.parametrize("name", ["lenet", "cnn"])  # resnet18 is slow on a CPU; its forward pass is tested above
def test_image_networks_train_mode_backward(name):
    torch.manual_seed(0)
    network = build(name, IMAGE, 10)
    network.train()
    out = network(torch.randn(BATCH, *IMAGE))
    out.sum().backward()
    assert all(p.grad is not None for p in network.parameters() if p.requires_grad)


def test_config_output_shape_wins_over_the_data():
    network = build("mlp", FLAT, 3, output_shape=1)
    assert network(torch.randn(BATCH, *FLAT)).shape == (BATCH, 1)


def test_network_arguments_are_passed():
    narrow = build("cnn", IMAGE, 10, n_filters=4)
    wide = build("cnn", IMAGE, 10, n_filters=8)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters())
    deep = build("mlp", FLAT, 3, num_hidden_layers=3, hidden_size=5)
    linears = [m for m in deep.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4
    assert [m.out_features for m in linears] == [5, 5, 5, 3]


def test_input_shape_that_contradicts_the_data_is_a_config_error():
    with pytest.raises(ConfigError, match="input_shape"):
        build("mlp", FLAT, 3, input_shape=[5])
    assert build("mlp", FLAT, 3, input_shape=[4])(torch.randn(BATCH, 4)).shape == (BATCH, 3)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_config_is_the_constructors_arguments(name):
    """A setting is declared once: a network's config has exactly its constructor's arguments and defaults."""
    parameters = list(inspect.signature(NETWORKS[name].__init__).parameters.values())[3:]  # after the shapes
    cfg = network_config(name)
    assert dataclasses.asdict(cfg) == {
        "name": name, "input_shape": None, "output_shape": None, **{p.name: p.default for p in parameters}
    }  # fmt: skip
    assert type(network_config(name)) is type(cfg), "derived once, then cached"
    assert network_config(name, output_shape=2).output_shape == 2


class Tunable(nn.Module):
    """A network with the kinds of arguments a user may write."""

    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: int,
        width: int = 3,
        scale: Optional[float] = None,
        sizes: Sequence[int] = (2, 3),  # OmegaConf has no Sequence: any value
        *,
        activation: str = "relu",
    ):
        super().__init__()
        self.seen = {"width": width, "scale": scale, "sizes": sizes, "activation": activation}
        self.fc = nn.Linear(math.prod(input_shape), output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_a_new_networks_arguments_are_typed_keys(monkeypatch):
    monkeypatch.setitem(NETWORKS, "tunable", Tunable)
    kinds = {key: kind for key, kind, _ in describe(OmegaConf.structured(network_config("tunable")))}
    assert kinds == {
        "name": "str", "input_shape": "Optional[List[int]]", "output_shape": "Optional[int]",
        "width": "int", "scale": "Optional[float]", "sizes": "Any", "activation": "str",
    }  # fmt: skip
    cfg = experiment("model=tunable", "model.width=5", "model.scale=0.5", "model.sizes=[4, 5]", "model.activation=tanh")
    seen = build_network(cfg.model, FLAT, 3).seen
    assert seen == {"width": 5, "scale": 0.5, "sizes": seen["sizes"], "activation": "tanh"}
    assert type(seen["sizes"]) in (list, tuple) and list(seen["sizes"]) == [4, 5], "plain values, not OmegaConf's"
    assert list(build_network(OmegaConf.structured(network_config("tunable")), FLAT, 3).seen["sizes"]) == [2, 3]
    for override in ("model.width=abc", "model.scale=abc", "model.width=1.5"):
        with pytest.raises(ConfigError, match=rf"^--{override}: expected \w"):
            experiment("model=tunable", override)


@pytest.mark.parametrize("name", ["mlp", "mlp_fixed", "cnn"])
def test_a_shipped_networks_arguments_are_type_checked(name):
    key = next(f.name for f in dataclasses.fields(network_config(name)) if f.type is int and f.name != "output_shape")
    with pytest.raises(ConfigError, match=rf"^--model.{key}=abc: expected int \("):
        experiment(f"model={name}", f"model.{key}=abc")


class NoDefault(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: int, width: int):
        super().__init__()


class ForwardsEverything(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: int, **kwargs):
        super().__init__()


class OddDefault(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: int, activation: Callable = torch.relu):
        super().__init__()


@pytest.mark.parametrize(
    ("network", "expected"),
    [(NoDefault, "'width' needs a default"), (ForwardsEverything, "declare each argument by name"),
     (OddDefault, "the default of 'activation'")],
)  # fmt: skip
def test_a_constructor_that_cannot_be_a_config_is_named(monkeypatch, network, expected):
    monkeypatch.setitem(NETWORKS, "odd", network)
    with pytest.raises(TypeError, match=expected) as info:
        network_config("odd")
    assert network.__qualname__ in str(info.value)


def test_mlp_fixed_trains_only_its_output_layer():
    torch.manual_seed(0)
    cfg = experiment("model=mlp_fixed", "optimizer.weight_decay=0.1")
    network = build_network(cfg.model, FLAT, 3)
    model = TRAINING_MODELS[cfg.training_model](network, cfg)
    assert isinstance(model, BaseModel)
    before = {key: value.clone() for key, value in network.state_dict().items()}
    hidden = [key for key in before if key.startswith("hidden.")]
    output = [key for key in before if key.startswith("output.")]
    assert hidden and output
    model.set_epoch(1)
    model.train_step([(torch.randn(8, 4), torch.randint(0, 3, (8,)))])
    after = network.state_dict()
    for key in hidden:
        assert torch.equal(before[key], after[key]), f"{key} changed"
    assert any(not torch.equal(before[key], after[key]) for key in output)


def test_mlp_trains_its_hidden_layers():
    """The contrast to mlp_fixed: the same step with a plain MLP changes the hidden weights."""
    torch.manual_seed(0)
    cfg = experiment("model=mlp")
    network = build_network(cfg.model, FLAT, 3)
    model = BaseModel(network, cfg)
    before = {key: value.clone() for key, value in network.state_dict().items()}
    model.set_epoch(1)
    model.train_step([(torch.randn(8, 4), torch.randint(0, 3, (8,)))])
    assert any(not torch.equal(before[key], value) for key, value in network.state_dict().items() if "hidden" in key)


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_xavier_init_differs_from_the_default_with_the_same_seed(name):
    cfg = experiment(f"model={name}")
    input_shape = FLAT if name == "mlp" else IMAGE

    def initial_weights(training_model):
        torch.manual_seed(0)
        network = build_network(cfg.model, input_shape, 3)
        training_model(network, cfg)
        return {key: value.clone() for key, value in network.state_dict().items()}

    base, base_again, xavier = initial_weights(BaseModel), initial_weights(BaseModel), initial_weights(XavierInitModel)
    assert all(torch.equal(base[key], base_again[key]) for key in base), "same seed, same init"
    assert any(not torch.equal(base[key], xavier[key]) for key in base)
    biases = [key for key in xavier if key.endswith("bias")]
    assert biases and all(torch.count_nonzero(xavier[key]) == 0 for key in biases)


def test_training_models_are_registered():
    assert TRAINING_MODELS["BaseModel"] is BaseModel
    assert TRAINING_MODELS["XavierInitModel"] is XavierInitModel
    cfg = experiment()
    cfg.training_model = "Nope"
    with pytest.raises(ConfigError, match="Nope"):
        check(cfg)


@pytest.mark.parametrize(("epoch", "lr"), [(1, 0.05), (2, 0.05), (3, 0.1), (99, 0.1), (100, 0.01), (500, 0.01)])
def test_lr_schedule(epoch, lr):
    cfg = experiment("lr_schedule=[[100, 0.01], [3, 0.1]]")
    model = BaseModel(build_network(cfg.model, FLAT, 3), cfg)
    assert model.set_epoch(epoch) == pytest.approx(lr)
    assert all(group["lr"] == pytest.approx(lr) for group in model.optimizer.param_groups)


def test_binary_step_with_one_logit():
    torch.manual_seed(0)
    cfg = experiment("task=binary")
    model = BaseModel(build_network(cfg.model, FLAT, 1), cfg)
    model.set_epoch(1)
    y = torch.tensor([0, 1, 1, 0])
    x = torch.randn(4, 4)
    with torch.no_grad():  # the step's own forward pass: same weights, same random numbers (dropout)
        torch.manual_seed(1)
        logits = model.network(x).squeeze(1)
    torch.manual_seed(1)
    loss, outputs, count = model.train_step([(x, y)])
    assert loss.ndim == 0 and torch.isfinite(loss) and count == len(y)
    assert torch.equal(outputs.squeeze(1), logits) and not outputs.requires_grad
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
    assert loss.item() == pytest.approx(expected.item())  # one logit per sample, class 1 against 0
