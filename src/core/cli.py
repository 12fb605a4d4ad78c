"""What every script shares: user errors as one line with exit code 2, Ctrl-C as exit code 130."""
from __future__ import annotations

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
