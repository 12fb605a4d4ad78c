import argparse
import json

import pytest

from src.core.config import add_config_flags, config_from_args, config_from_dict
from src.core.errors import UserError
from src.train.config import TrainConfig

from helpers import REPO, run_script


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig)
    return config_from_args(parser.parse_args(argv), TrainConfig)


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(UserError, match=r"unknown key 'lrr' \(did you mean 'lr'\?\)"):
        config_from_dict({"lrr": 0.1}, TrainConfig)


def test_wrong_type_in_config_file_is_an_error():
    with pytest.raises(UserError, match="'epochs' must be int"):
        config_from_dict({"epochs": "ten"}, TrainConfig)
    with pytest.raises(UserError, match="'deterministic' must be bool"):
        config_from_dict({"deterministic": 1}, TrainConfig)


def test_command_line_overrides_config_file_overrides_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("lr: 0.01\nepochs: 7\n")
    cfg = parse(["--config", str(path), "--epochs", "3", "--amp", "off"])
    assert (cfg.lr, cfg.epochs, cfg.amp, cfg.batch_size) == (0.01, 3, "off", TrainConfig().batch_size)


def test_json_config_with_unknown_key_is_refused(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"epochs": 3, "warmup": 1}))
    with pytest.raises(UserError, match="exp.json: unknown key 'warmup'"):
        parse(["--config", str(path)])


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0"], r"lr must be in \(0, inf\), got 0.0"),
    (["--lr", "nan"], r"lr must be in \(0, inf\), got nan"),
    (["--label-smoothing", "2"], r"label_smoothing must be in \[0, 1\)"),
    (["--drop-rate", "1.5"], r"drop_rate must be in \[0, 1\)"),
    (["--plateau-factor", "1"], r"plateau_factor must be in \(0, 1\)"),
    (["--num-workers", "-3"], r"num_workers must be in \[-1, inf\)"),
    (["--loss2", "ce"], r"with loss2 set, loss_switch_epoch must be in 1..29"),
])
def test_out_of_range_values_are_refused(argv, message):
    with pytest.raises(UserError, match=message):
        parse(argv)


def test_script_rejects_non_numeric_lr_and_unknown_choice_in_one_line():
    for args in (["--lr", "fast"], ["--scheduler", "linear"]):
        proc = run_script("train.py", *args)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert "invalid" in proc.stderr.strip().splitlines()[-1]


def test_print_config_shows_the_resolved_config():
    proc = run_script("train.py", "--print-config", "--epochs", "4")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["epochs"] == 4


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")))
def test_every_shipped_experiment_config_loads_strictly(path):
    cfg = parse(["--config", str(path)])
    assert isinstance(cfg, TrainConfig)


def test_demo_config_is_the_defaults_but_for_the_batch_and_epochs_its_numbers_were_measured_with():
    assert parse(["--config", str(REPO / "configs" / "demo.yaml")]) == parse(["--batch-size", "64", "--epochs", "15"])


def test_config_differences_fill_missing_keys_with_defaults_and_ignore_logging():
    from dataclasses import asdict

    from src.core.config import config_differences
    now = asdict(TrainConfig())
    older = {k: v for k, v in now.items() if k not in ("sync_batchnorm", "tensorboard")}  # written before they existed
    assert config_differences(older, now, TrainConfig) == []
    assert config_differences({**now, "tensorboard": False}, now, TrainConfig) == []  # logging only
    assert config_differences({**older, "lr": 0.5}, now, TrainConfig) == ["lr"]
    assert config_differences({**now, "sync_batchnorm": True}, older, TrainConfig) == ["sync_batchnorm"]


def test_a_warmup_as_long_as_the_run_is_clipped_to_half_of_it_with_a_note(capsys):
    cfg = config_from_dict({"epochs": 1}, TrainConfig).validate()  # the default warmup is 1 epoch
    assert cfg.lr_warmup_epochs == 0.5
    assert capsys.readouterr().err.strip() == ("note: lr_warmup_epochs 1 is not shorter than epochs 1; warming up "
                                               "for 0.5 epochs instead")
    assert parse(["--epochs", "2", "--lr-warmup-epochs", "2"]).lr_warmup_epochs == 1  # explicit too
    capsys.readouterr()
    assert config_from_dict({"epochs": 3, "lr_warmup_epochs": 0.5}, TrainConfig).validate().lr_warmup_epochs == 0.5
    assert capsys.readouterr().err == ""
