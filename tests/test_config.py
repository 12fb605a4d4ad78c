import argparse
import json

import pytest

from conftest import run_script
from src.config import TrainConfig, UserError, add_config_flags, config_from_args, config_from_dict


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv))


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(UserError, match=r"unknown key 'lrr' \(did you mean 'lr'\?\)"):
        config_from_dict({"lrr": 0.1})


def test_wrong_type_in_config_file_is_an_error():
    with pytest.raises(UserError, match="'epochs' must be int"):
        config_from_dict({"epochs": "ten"})
    with pytest.raises(UserError, match="'amp' must be bool"):
        config_from_dict({"amp": 1})


def test_command_line_overrides_config_file_overrides_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("lr: 0.01\nepochs: 7\n")
    cfg = parse(["--config", str(path), "--epochs", "3", "--no-amp"])
    assert (cfg.lr, cfg.epochs, cfg.amp, cfg.batch_size) == (0.01, 3, False, TrainConfig().batch_size)


def test_json_config_with_unknown_key_is_refused(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"epochs": 3, "warmup": 1}))
    with pytest.raises(UserError, match="exp.json: unknown key 'warmup'"):
        parse(["--config", str(path)])


def test_invalid_values_are_refused():
    with pytest.raises(UserError, match="lr must be > 0"):
        parse(["--lr", "0"])
    with pytest.raises(UserError, match="lr_warmup_epochs"):
        parse(["--epochs", "2", "--lr-warmup-epochs", "2"])


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
