"""Search-space files: every mistake is one line naming the file and key before any trial runs, and sampling
keeps to the declared types and ranges."""
from __future__ import annotations

import optuna
import pytest

from src.core.errors import UserError
from src.train.config import TrainConfig
from src.tune.space import Choice, Range, base_config, check_space, load_space, parse_space, sample

from helpers import REPO


def space_file(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, fragments", [
    ("lrr: {low: 1.0e-4, high: 1.0e-2}\n", ["lrr", "did you mean 'lr'"]),
    ("lr: [0.001]\nfixed: {epoch: 3}\n", ["fixed: unknown key 'epoch'", "did you mean 'epochs'"]),
    ("lr: {low: 0.01, high: 0.001}\n", ["lr", "empty range"]),
    ("epochs: {low: 10, high: 10}\n", ["epochs", "empty range"]),
    ("epochs: {low: 1.5, high: 3}\n", ["epochs", "whole number"]),
    ("lr: {low: fast, high: 0.1}\n", ["lr", "must be a number"]),
    ("lr: 0.001\n", ["lr", "give a range", "fixed:"]),
    ("augment: {low: 0, high: 1}\n", ["augment", "numeric key"]),
    ("lr: {low: 0, high: 0.1, log: true}\n", ["lr", "low > 0"]),
    ("lr: {low: 0.001, high: 0.1, lo: 3}\n", ["lr", "unknown range key 'lo'"]),
    ("seed: [1, 2]\n", ["seed", "cannot be searched"]),
    ("model: []\n", ["model", "empty"]),
    ("fixed: {epochs: 3}\n", ["no key to search"]),
    ("lr: [0.001, 0.002]\nstart: [{epochs: 30}]\n", ["start[0]", "'epochs' is not a searched key"]),
    ("lr: [0.001, 0.002]\nstart: [{lr: 0.5}]\n", ["start[0]", "lr=0.5 lies outside"]),
    ("lr: [0.001, 0.002]\nstart: {lr: 0.001}\n", ["start must be a list"]),
], ids=["unknown-key", "unknown-fixed-key", "low-above-high", "low-equals-high", "float-for-int", "text-bound",
        "bare-value", "range-on-text", "log-from-zero", "range-typo", "seed", "no-choices", "nothing-searched",
        "start-unsearched-key", "start-outside", "start-not-a-list"])
def test_a_malformed_space_is_one_line_naming_file_and_key(tmp_path, text, fragments):
    path = space_file(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_space(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("text, fragments", [
    ("augment: [light, sparkly]\n", ["augment", "'sparkly' is refused", "not one of"]),
    ("drop_rate: {low: 0, high: 1.5}\n", ["drop_rate", "1.5 is refused"]),
    ("model: [smallcnn, 3]\n", ["model", "3 is refused", "must be str"]),
    ("mixup_alpha: [0, 0.2]\nfixed: {loss: focal}\n", ["mixup_alpha", "0.2 is refused", "focal"]),
], ids=["unknown-augment", "range-end-out-of-bounds", "wrong-type-choice", "combination-with-fixed"])
def test_a_value_the_config_refuses_is_named_before_any_trial(tmp_path, text, fragments):
    path = space_file(tmp_path, text)
    space = load_space(path)
    base, space = base_config(None, space, {})
    with pytest.raises(UserError) as err:
        check_space(space, base)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_the_default_space_is_valid_and_an_exponent_without_a_dot_is_a_number(tmp_path):
    default = load_space(REPO / "configs" / "search" / "default.yaml")
    check_space(default, TrainConfig())
    # PyYAML reads 1e-4 (no dot) as a string; the issue's own example writes it that way.
    space = load_space(space_file(tmp_path, "lr: {low: 1e-4, high: 1e-2, log: true}\nmixup_alpha: [0, 2e-1]\n"))
    assert space.params["lr"] == Range(1e-4, 1e-2, log=True)
    assert space.params["mixup_alpha"] == Choice((0.0, 0.2))


def test_flags_beat_fixed_keys_which_beat_the_config_file_and_a_flag_leaves_the_search(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text("batch_size: 16\nlr_warmup_epochs: 0.5\nweight_decay: 0.2\n")
    space = parse_space({"epochs": {"low": 2, "high": 4}, "lr": [0.001, 0.002],
                         "fixed": {"weight_decay": 0.01, "drop_rate": 0.2}}, "space.yaml")
    base, left = base_config(str(config), space, {"epochs": 3, "drop_rate": 0.3, "quiet": True})
    assert (base.batch_size, base.weight_decay, base.drop_rate, base.epochs) == (16, 0.01, 0.3, 3)
    assert list(left.params) == ["lr"]


def test_samples_keep_to_the_declared_types_and_ranges():
    space = parse_space({"lr": {"low": 3e-4, "high": 5e-3, "log": True}, "epochs": {"low": 10, "high": 30, "step": 5},
                         "label_smoothing": {"low": 0, "high": 0.2}, "model": ["smallcnn", "smallresnet"],
                         "ema_decay": [0, 0.99]}, "space.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        values = sample(study.ask(), space.params)
        assert isinstance(values["lr"], float) and 3e-4 <= values["lr"] <= 5e-3
        assert isinstance(values["epochs"], int) and values["epochs"] in (10, 15, 20, 25, 30)
        assert isinstance(values["label_smoothing"], float) and 0 <= values["label_smoothing"] <= 0.2
        assert values["model"] in ("smallcnn", "smallresnet")
        assert values["ema_decay"] in (0.0, 0.99) and isinstance(values["ema_decay"], float)
    assert sample(optuna.trial.FixedTrial({"lr": 1e-3, "epochs": 15, "label_smoothing": 0.1, "model": "smallcnn",
                                           "ema_decay": 0.99}), space.params)["epochs"] == 15
