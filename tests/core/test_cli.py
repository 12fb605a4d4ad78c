"""The script front door: help text that renders, shows defaults only where they say something, and one-line
errors."""
from dataclasses import dataclass
from typing import ClassVar

import pytest

from src.core.cli import build_parser
from src.core.config import add_config_flags

from helpers import run_subprocess


@dataclass
class PercentConfig:
    CHOICES: ClassVar[dict] = {}
    HELP: ClassVar[dict] = {"shift": "random shift ±10 % of the side"}
    shift: float = 0.1


def test_config_help_with_a_percent_sign_renders():
    parser = build_parser("doc")
    add_config_flags(parser, PercentConfig)
    text = parser.format_help()  # argparse %-formats help: a bare % used to raise ValueError here
    assert "±10 % of the side (default: 0.1)" in " ".join(text.split())


def test_help_shows_a_default_only_where_it_says_something():
    parser = build_parser("doc")
    parser.add_argument("--fold", default=None, help="fold index")
    parser.add_argument("--k", type=int, default=10, help="neighbours")
    parser.add_argument("--name", default="", help="report name")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--out", default="x", help="where (default: next to the data)")
    text = " ".join(parser.format_help().split())
    assert "neighbours (default: 10)" in text and "where (default: next to the data)" in text
    for noise in ("(default: None)", "(default: )", "(default: False)", "(default: x)"):
        assert noise not in text


@pytest.mark.slow
def test_train_help_in_a_fresh_process_exits_0_and_lists_its_flags():
    proc = run_subprocess("train.py", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--lr-warmup-epochs" in proc.stdout and "--fold" in proc.stdout and "(default: None)" not in proc.stdout
