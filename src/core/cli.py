"""What every script shares: user errors as one line with exit code 2, Ctrl-C as exit code 130."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from src.core.errors import UserError


def run_main(main: Callable[[], None], interrupt_hint: str = "") -> None:
    """Call `main`; a UserError prints `error: ...` (no traceback) and exits 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted{interrupt_hint}", file=sys.stderr)
        sys.exit(130)


def quiet_default() -> bool:
    """Progress bars only on an interactive terminal (not in CI logs or pipes)."""
    return not sys.stderr.isatty()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the script docstring's line breaks and appends a flag's default where it says something: not for
    None, empty or a switch's True/False, nor when the help text already explains its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        silent = default is None or isinstance(default, bool) or default == "" or default is argparse.SUPPRESS
        if silent or not action.option_strings or "default" in text:
            return text
        return text + " (default: %(default)s)"


def add_table_flags(parser: argparse.ArgumentParser) -> None:
    """--train-csv, --image-dir, --id-col, --label-col: where a competition's labelled images are listed."""
    parser.add_argument("--train-csv", default="train.csv", help="labels file inside --data-dir")
    parser.add_argument("--image-dir", default="train", help="image folder inside --data-dir")
    parser.add_argument("--id-col", default="image", help="id / file name column")
    parser.add_argument("--label-col", default="label", help="label column")


def build_parser(description: str | None) -> argparse.ArgumentParser:
    """The argument parser every script starts from (one help style for all)."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
