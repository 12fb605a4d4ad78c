"""Atomic file output: write to a temporary name beside the target, then rename.

A crash or Ctrl-C mid-write leaves the previous version of the file (or nothing), never half a file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pandas as pd

from src.core.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last so libraries that pick a format by extension still work.
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(folder: str | Path, what: str) -> None:
    """Fail early, with a message, when outputs cannot be written to `folder`; creates nothing."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # the folder or its nearest ancestor
    probe = existing / f".write-test-{os.getpid()}"
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{folder}: cannot write {what} there ({err.strerror}); choose another folder") from None


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(path: str | Path, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
