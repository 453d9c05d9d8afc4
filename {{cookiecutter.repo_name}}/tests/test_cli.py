"""The command line: --key=value overrides, their types, the error messages, --help and --dry-run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from {{ cookiecutter.proj_name }}.configs import CONFIGS, SELECTORS, ExperimentConfig
from {{ cookiecutter.proj_name }}.engine.cli import ConfigError, describe, load_config
from {{ cookiecutter.proj_name }}.experiment import help_epilog, main_train, parse_and_check
from {{ cookiecutter.proj_name }}.networks import NETWORKS, network_config

REQUIRED_KEYS = ("model", "lr_schedule", "num_epochs", "batch_size", "seed", "device", "data.root")


def parse(*args: str):
    """What ``python bin/train.py ARGS...`` would run with (nothing is written)."""
    return parse_and_check(["train.py", *args])


def config_error(*args: str) -> str:
    """The message of the ConfigError that ``bin/train.py ARGS...`` must refuse with."""
    with pytest.raises(ConfigError) as info:
        parse(*args)
    message = str(info.value)
    assert message and "\n" not in message, "a ConfigError is one readable line"
    return message


# -- overrides ----------------------------------------------------------------------------


def test_plain_command_line_gives_the_base_config():
    command = parse("iris", "runs/x")
    assert command.config_name == "iris"
    assert command.results_dir == "runs/x"
    assert command.overrides == []
    assert not command.dry_run and not command.allow_config_change
    assert OmegaConf.to_container(command.cfg) == OmegaConf.to_container(OmegaConf.structured(CONFIGS["iris"]()))


def test_nested_key_override():
    cfg = parse("iris", "runs/x", "--optimizer.lr=0.5").cfg
    assert cfg.optimizer.lr == 0.5
    assert cfg.optimizer.momentum == CONFIGS["iris"]().optimizer.momentum  # its neighbours are untouched


def test_several_overrides_and_types():
    cfg = parse(
        "iris", "runs/x", "--num_epochs=7", "--data.augment=true", "--optimizer.name=Adam", "--batch_size=3"
    ).cfg
    assert cfg.num_epochs == 7 and isinstance(cfg.num_epochs, int)
    assert cfg.data.augment is True
    assert cfg.optimizer.name == "Adam"
    assert cfg.batch_size == 3


def test_int_given_for_float_key_becomes_float():
    cfg = parse("iris", "runs/x", "--optimizer.lr=1").cfg
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)


def test_lr_schedule_literal_is_parsed():
    cfg = parse("cifar10", "runs/x", "--lr_schedule=[[3, 0.1],[100, 0.01]]").cfg
    assert OmegaConf.to_container(cfg.lr_schedule) == [[3.0, 0.1], [100.0, 0.01]]
    assert all(isinstance(value, float) for pair in cfg.lr_schedule for value in pair)


def test_free_form_optimizer_extra():
    cfg = parse("iris", "runs/x", "--optimizer.extra.nesterov=true").cfg
    assert OmegaConf.to_container(cfg.optimizer.extra) == {"nesterov": True}


def test_model_selector_gives_that_networks_defaults():
    cfg = parse("cifar10", "runs/x", "--model=lenet").cfg
    assert OmegaConf.to_container(cfg.model) == OmegaConf.to_container(OmegaConf.structured(network_config("lenet")))
    assert "n_filters" not in cfg.model


def test_model_argument_sets_the_cifar10_cnn_width():
    cfg = parse("cifar10", "runs/x", "--model.n_filters=10").cfg
    assert cfg.model.name == "cnn"
    assert cfg.model.n_filters == 10


@pytest.mark.parametrize(
    "overrides",
    [
        ("--model=lenet", "--model.output_shape=10"),
        ("--model=mlp", "--model.hidden_size=8", "--model.num_hidden_layers=2"),
        ("--model=cnn", "--model.n_filters=5"),
    ],
)
def test_model_selector_applies_first_whatever_the_order(overrides):
    forward = parse("cifar10", "runs/x", *overrides).cfg
    backward = parse("cifar10", "runs/x", *reversed(overrides)).cfg
    assert OmegaConf.to_container(forward) == OmegaConf.to_container(backward)
    assert forward.model.name == overrides[0].split("=")[1]
    for item in overrides[1:]:
        key, value = item[2:].split("=")
        assert OmegaConf.select(forward, key) == int(value)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_network_can_be_selected(name):
    cfg = parse("cifar10", "runs/x", f"--model={name}").cfg
    assert cfg.model.name == name


def test_flags_are_recognised():
    command = parse("iris", "runs/x", "--dry-run", "--allow-config-change", "--seed=3")
    assert command.dry_run and command.allow_config_change
    assert command.cfg.seed == 3
    assert command.overrides == ["seed=3"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_required_keys_exist(name):
    cfg = OmegaConf.structured(CONFIGS[name]())
    missing = object()
    for key in REQUIRED_KEYS:
        assert OmegaConf.select(cfg, key, default=missing) is not missing, f"config {name} lacks {key}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_base_configs_pass_the_checks(name):
    parse(name, "runs/x")


# -- errors ---------------------------------------------------------------------------------


def test_unknown_key_suggests_the_closest():
    message = config_error("iris", "runs/x", "--optimizer.lrr=1")
    assert "optimizer.lrr" in message
    assert "optimizer.lr'" in message


def test_unknown_top_level_key_suggests_the_closest():
    message = config_error("iris", "runs/x", "--num_epoch=3")
    assert "'num_epochs'" in message


def test_argument_of_another_network_says_which_network_is_selected():
    message = config_error("iris", "runs/x", "--model.n_filters=10")
    assert "model.n_filters" in message
    assert "mlp" in message


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("--num_epochs=abc", "num_epochs", "int"),
        ("--optimizer.lr=fast", "optimizer.lr", "float"),
        ("--data.augment=maybe", "data.augment", "bool"),
        ("--lr_schedule=3", "lr_schedule", "List"),
    ],
)
def test_bad_type_names_the_key_and_the_expected_type(override, key, expected):
    message = config_error("iris", "runs/x", override)
    assert key in message
    assert re.search(rf"\b{expected}\b", message), message


def test_unknown_config():
    message = config_error("irs", "runs/x")
    assert "irs" in message
    for name in CONFIGS:
        assert name in message


def test_unknown_model_name_lists_the_choices():
    absent = "x" + max(NETWORKS, key=len)  # longer than every network's name: not one of them
    message = config_error("iris", "runs/x", f"--model={absent}")
    assert absent in message
    for name in NETWORKS:
        assert name in message


def test_model_selector_needs_a_name():
    message = config_error("iris", "runs/x", "--model=3")
    assert "--model=3" in message


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", ""])
def test_bad_device(device):
    message = config_error("iris", "runs/x", f"--device={device}")
    assert "device" in message


def test_binary_loss_needs_the_binary_task():
    message = config_error("iris", "runs/x", "--loss=BCEWithLogitsLoss")
    assert "BCEWithLogitsLoss" in message and "task=binary" in message


def test_binary_task_with_its_loss_is_accepted():
    cfg = parse("iris", "runs/x", "--task=binary", "--loss=BCEWithLogitsLoss").cfg
    assert cfg.task == "binary"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("--loss=NotALoss", "loss"),
        ("--loss=Linear", "loss"),
        ("--training_model=Nope", "training_model"),
        ("--data.name=nope", "data.name"),
        ("--num_epochs=-1", "num_epochs"),
        ("--batch_size=0", "batch_size"),
        ("--data.validation_split=1.0", "validation_split"),
        ("--lr_schedule=[[0, 0.1]]", "lr_schedule"),
        ("--lr_schedule=[[1.5, 0.1]]", "lr_schedule"),
        ("--lr_schedule=[[1, -0.1]]", "lr_schedule"),
        ("--lr_schedule=[[1, 0.1, 3]]", "lr_schedule"),
        ("--precision=fp8", "precision"),
        ("--nonfinite_loss=ignore", "nonfinite_loss"),
        ("--data.loader=disk", "data.loader"),
        ("--grad_accum_steps=0", "grad_accum_steps"),
        ("--log_every_steps=0", "log_every_steps"),
        ("--checkpoint.keep=0", "checkpoint.keep"),
        ("--checkpoint.every_minutes=-1", "checkpoint.every_minutes"),
        ("--grad_clip_norm=nan", "grad_clip_norm"),
    ],
)
def test_values_that_types_cannot_refuse_are_refused(override, key):
    assert key in config_error("iris", "runs/x", override)


@pytest.mark.parametrize("value", ["[[nan, 0.1]]", "[[inf, 0.1]]", "[[1e400, 0.1]]"])
def test_non_finite_lr_schedule_epoch_is_a_config_error(value):
    assert "lr_schedule" in config_error("iris", "runs/x", f"--lr_schedule={value}")


@pytest.mark.parametrize("item", ["foo", "--foo", "-x=1", "num_epochs=3"])
def test_malformed_override(item):
    message = config_error("iris", "runs/x", item)
    assert item in message
    assert "--key=value" in message


def test_early_stopping_needs_a_validation_set():
    message = config_error("iris", "runs/x", "--early_stopping_patience=3", "--data.validation_split=0")
    assert "early_stopping_patience" in message and "validation_split" in message


def test_empty_key_is_refused():
    config_error("iris", "runs/x", "--=3")


# -- properties ---------------------------------------------------------------------------

KNOWN_KEYS = sorted({row[0] for name in CONFIGS for row in describe(OmegaConf.structured(CONFIGS[name]()))})
ODD_VALUES = [
    "", "null", "~", "[]", "{}", "[[]]", "[1, 2]", "[[1, 2]]", "[[1, 2, 3]]", "[a]", "{a: 1}", "{a: [1]}",
    "-1", "0", "1e400", "-1e400", "nan", ".nan", "inf", ".inf", "0x10", "1_000", "'1'", "true", "yes",
    "${x}", "${oc.env:HOME}", "${oc.env:NO_SUCH_VARIABLE_HERE}", "[[nan, 1]]", "[[1, nan]]", "[[inf, 1]]",
    "[[-1, 1]]", "[[1, -1]]", "cuda:0", "mps", "lenet", "BCEWithLogitsLoss", "'", '"', "[", "]", "=", ":",
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.from_regex(r"[a-z_.]{1,20}=.{0,30}", fullmatch=True)))
def test_any_override_text_is_accepted_or_a_config_error(text):
    try:
        load_config(CONFIGS, "iris", [text], SELECTORS)
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(CONFIGS)),
    st.sampled_from([*KNOWN_KEYS, "model", "data", "optimizer", "checkpoint", "optimizer.extra.betas"]),
    st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=20)),
)
def test_any_value_of_a_known_key_is_accepted_or_a_config_error(config, key, value):
    """The whole command-line path, checks included: bad input is exit code 2, never a traceback."""
    try:
        parse(config, "runs/x", f"--{key}={value}")
    except ConfigError:
        pass


# -- as a user runs it --------------------------------------------------------------------------


def test_help_lists_configs_and_keys_with_types(run_train):
    result = run_train("--help")
    assert result.returncode == 0
    out = result.stdout
    for name in CONFIGS:
        assert re.search(rf"^\s+{name}\s", out, re.MULTILINE), f"config {name} not listed"
    for name in NETWORKS:
        assert re.search(rf"^\s+{name}\s", out, re.MULTILINE), f"network {name} not listed"
    for key, kind, _ in describe(OmegaConf.structured(ExperimentConfig)):
        assert re.search(rf"--{re.escape(key)}\s+{re.escape(kind)}\s", out), f"--{key} ({kind}) not listed"
    assert re.search(r"--num_epochs\s+int\b", out)


def test_dry_run_prints_the_config_and_writes_nothing(run_train, tmp_path):
    results = tmp_path / "results"
    result = run_train("iris", results, "--dry-run", "--num_epochs=7", "--model=linear", "--optimizer.lr=0.25")
    printed = yaml.safe_load(result.stdout)
    assert printed["num_epochs"] == 7
    assert printed["model"]["name"] == "linear"
    assert printed["optimizer"]["lr"] == 0.25
    assert printed["data"]["name"] == CONFIGS["iris"]().data.name
    assert not results.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_override_exits_2_with_one_line_and_writes_nothing(run_train, tmp_path):
    results = tmp_path / "results"
    result = run_train("iris", results, "--num_epochs=abc", check=False)
    assert result.returncode == 2
    assert "num_epochs" in result.stderr and "int" in result.stderr
    assert "Traceback" not in result.stderr
    assert not results.exists()


def test_closest_names_are_suggested():
    assert "'Adam'" in config_error("iris", "runs/x", "--optimizer.name=adam")
    assert "'MSELoss'" in config_error("iris", "runs/x", "--loss=mseloss")
    assert "'optimizer.lr'" in config_error("iris", "runs/x", "--lr=0.1")
    assert "'data.root'" in config_error("iris", "runs/x", "--root=x")
    assert "'iris'" in config_error("Iris", "runs/x")


def test_data_root_of_cifar10_follows_the_data_root_variable(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/datasets/shared")
    assert parse("cifar10", "runs/x").cfg.data.root == "/datasets/shared/cifar10"
    monkeypatch.delenv("DATA_ROOT")
    assert parse("cifar10", "runs/x").cfg.data.root == "data/cifar10"
    assert parse("cifar10", "runs/x", "--data.root=/elsewhere").cfg.data.root == "/elsewhere"


def test_help_columns_fit_long_network_names(monkeypatch):
    """A network named longer than the others keeps the columns of --help aligned (each name, then its text)."""
    long_name = "a_network_with_a_long_name"
    monkeypatch.setitem(NETWORKS, long_name, NETWORKS["mlp"])
    lines = help_epilog().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("models ")))
    rows = [line for line in lines[start + 2 :] if line.startswith("  ") and line.split()[0] in NETWORKS]
    assert {line.split()[0] for line in rows} == set(NETWORKS)
    columns = {len(line) - len(line[2:].split(maxsplit=1)[1]) for line in rows}
    assert len(columns) == 1, rows
    assert columns.pop() > len(long_name) + 2


# -- every key: a value is taken, or refused with one line before anything is written ----------------------

BAD_VALUES = [
    "-1", "0", "1", str(10**40), str(2**63), str(-(2**63) - 1), "10**40", "nan", "inf", "-inf", "1e400",
    "abc", "", "null", "[]", "[-1]",
]  # fmt: skip
ALL_KEYS = sorted({row[0] for name in NETWORKS for row in describe(OmegaConf.structured(network_config(name)))})


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory) -> Path:
    """CIFAR-10 binary files with 10 images each, for the image networks' arguments."""
    root = tmp_path_factory.mktemp("cifar10")
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    records = bytes(range(256)) * (10 * 3073 // 256 + 1)
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        data = bytearray(records[: 10 * 3073])
        data[::3073] = bytes(i % 10 for i in range(10))  # the label bytes
        (folder / name).write_bytes(bytes(data))
    return root


def assert_taken_or_refused(args: list[str], results: Path, capsys) -> None:
    """``bin/train.py ARGS`` in this process: exit 0, or exit 2 with one ``error:`` line and no results directory."""
    code = main_train(["train.py", args[0], str(results), "--num_epochs=0", "--device=cpu", *args[1:]])
    err = capsys.readouterr().err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), f"{args}: {err}"
        assert not results.exists(), f"{args}: refused, but {results} was written"
    else:
        assert code == 0, f"{args} exited {code}: {err}"


@pytest.mark.parametrize("key", sorted({row[0] for row in describe(OmegaConf.structured(CONFIGS["iris"]()))}))
def test_every_key_takes_a_value_or_refuses_it_with_one_line(key, tmp_path, capsys):
    """The whole session, build included (num_epochs=0), for odd values of every key of the iris config."""
    for index, value in enumerate(BAD_VALUES):
        assert_taken_or_refused(["iris", f"--{key}={value}"], tmp_path / f"run_{index}", capsys)


@pytest.mark.parametrize("key", [key for key in ALL_KEYS if key not in ("name", "input_shape", "output_shape")])
def test_every_network_argument_takes_a_value_or_refuses_it_with_one_line(key, tiny_images, tmp_path, capsys):
    for name in NETWORKS:
        if key not in OmegaConf.structured(network_config(name)):
            continue
        for index, value in enumerate(BAD_VALUES):
            args = ["cifar10", f"--data.root={tiny_images}", f"--model={name}", f"--model.{key}={value}"]
            assert_taken_or_refused(args, tmp_path / f"{name}_{index}", capsys)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--seed=-1", "seed=-1 must be >= 0"),
        (f"--seed={2**70}", "seed"),
        (f"--model.hidden_size={10**40}", "model.hidden_size"),
        ("--model.hidden_size=-3", "model mlp cannot be built"),
        ("--model.output_shape=2", "model.output_shape=2 does not fit task=classification"),
        ("--model.output_shape=1", "which needs 3 output(s)"),
        ("--model.input_shape=[5]", "model.input_shape=[5]"),
        ("--loss=MSELoss", "loss=MSELoss does not fit task=classification"),
        ("--task=regression", "must be numeric"),
        ("--optimizer.lr=-1", "optimizer SGD rejected"),
        ("--data.validation_split=0.999", "leaves no training samples"),
        ("--data.root=/no/such/file.csv", "/no/such/file.csv"),
    ],
)
def test_bad_value_exits_2_with_one_line_and_writes_nothing(run_train, tmp_path, override, expected):
    """Also values that only the data, the network or the optimizer can refute: refused before anything is written."""
    results = tmp_path / "runs" / "x"
    result = run_train("iris", results, "--device=cpu", override, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "runs").exists(), "the folders made for the run are removed again"
