"""The run directory: runs/<exp>/fold<k>/ with config.json, log.csv, best.pt / last.pt (checksummed) and
oof.csv, and the helpers that read them back."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import numpy as np
import pandas as pd
import torch

from src.core.atomic import atomic_path, write_csv, write_text
from src.core.errors import UserError

CHECKPOINT_FORMAT = 1


def exp_dir(runs_dir: str | Path, exp: str) -> Path:
    return Path(runs_dir) / exp


def fold_dir(runs_dir: str | Path, exp: str, fold: int) -> Path:
    return exp_dir(runs_dir, exp) / f"fold{fold}"


def fold_finished(folder: Path) -> bool:
    """A fold run is finished when it has best.pt (written at the first improving epoch) and oof.csv
    (written only when the fold ends)."""
    return (folder / "best.pt").is_file() and (folder / "oof.csv").is_file()


def write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


CHECKSUMS = "checksums.json"


def _read_checksums(folder: Path) -> dict[str, list[str]]:
    path = folder / CHECKSUMS
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{path}: unreadable checksum manifest; restore it or delete it to skip verification") from None


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically and record its sha256 in checksums.json beside it.

    The manifest first lists the old and the new digest, then only the new one, so a kill at any point
    leaves the file on disk matching one listed digest."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    sums = _read_checksums(path.parent)
    try:
        write_json(path.parent / CHECKSUMS, {**sums, path.name: sums.get(path.name, []) + [digest]})
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        write_json(path.parent / CHECKSUMS, {**sums, path.name: [digest]})
    except OSError as err:
        raise UserError(f"{path}: could not write the checkpoint ({err.strerror}); the previous one, if any, "
                        f"is intact") from None


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint: verify its recorded sha256, load with weights_only=True (no pickled code can
    run) and check its format."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    expected = _read_checksums(path.parent).get(path.name)
    if expected is not None and hashlib.sha256(data).hexdigest() not in expected:
        raise UserError(f"{path}: checksum does not match {CHECKSUMS}; the file changed or is corrupt")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, wrong format, pickled code: all "unusable checkpoint"
        raise UserError(f"{path}: unreadable checkpoint ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a checkpoint written by this kit (format {CHECKPOINT_FORMAT})")
    return state


def write_log(run_dir: Path, rows: list[dict]) -> None:
    write_csv(run_dir / "log.csv", pd.DataFrame(rows))


def prob_columns(classes: list[str]) -> list[str]:
    return [f"prob_{c}" for c in classes]


OOF_BEST, OOF_FINAL = "oof.csv", "oof_final.csv"  # best.pt's predictions; the last epoch's weights'


def write_oof(run_dir: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str],
              fold: int, name: str = OOF_BEST) -> None:
    """oof.csv (or `name`): id, true label, fold, predicted label, one probability column per class."""
    frame = pd.DataFrame({"id": ids, "label": [classes[i] for i in labels], "fold": fold,
                          "pred": [classes[i] for i in probs.argmax(1)]})
    frame = pd.concat([frame, pd.DataFrame(probs, columns=prob_columns(classes))], axis=1)
    write_csv(run_dir / name, frame)


def oof_arrays(frame: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true class indices, probabilities) of an oof.csv frame (or several concatenated)."""
    index = {c: i for i, c in enumerate(classes)}
    return frame["label"].map(index).to_numpy(), frame[prob_columns(classes)].to_numpy()


def read_oof(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(true class indices, probabilities, frame) from an oof.csv."""
    frame = pd.read_csv(path, dtype={"id": str, "label": str, "pred": str})
    return *oof_arrays(frame, classes), frame


