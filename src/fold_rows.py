"""Extra training rows kept per fold (synthetic samples, pseudo-labels): where a fold's folder is, and
the leak guard on its meta.json.

Such rows were made by something that saw one fold's training rows only (a generator, a fold model).
Used for another fold, or after train.csv or the fold file changed, they would carry that fold's
validation labels into its training, so they are refused.
"""
from __future__ import annotations

import json
from pathlib import Path

from src.errors import UserError

META = "meta.json"
# What decides which rows sit in which fold; the image cache hash is left out on purpose, because it
# changes with --image-size-px while the split does not.
SPLIT_KEYS = ("train_csv_sha256", "folds_csv_sha256")


def split_of(fingerprint: dict) -> dict:
    return {k: fingerprint[k] for k in SPLIT_KEYS}


def resolve_fold_dir(path: str | Path, fold: int, table: str, flag: str, hint: str) -> Path:
    """`flag` may name one fold's folder (holding `table`) or the experiment folder above fold<k>/."""
    path = Path(path)
    if (path / table).is_file() or (path / META).is_file():
        return path
    if (path / f"fold{fold}").is_dir():
        return path / f"fold{fold}"
    if not path.is_dir():
        raise UserError(f"{flag} {path}: folder not found")
    raise UserError(f"{flag} {path}: no {table} there or in {path}/fold{fold}/; {hint}")


def read_fold_meta(folder: Path, fold: int, classes: list[str], fingerprint: dict, made_by: str) -> dict:
    """meta.json of a fold's row folder, after the leak guard: same fold, same split, same classes."""
    meta_path = folder / META
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing; this is not a complete {made_by} folder (run it again)")
    try:
        meta = json.loads(meta_path.read_text())
        meta_fold, meta_split = int(meta["fold"]), dict(meta["split"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise UserError(f"{meta_path}: not a meta.json written by {made_by}") from None
    if meta_fold != fold:
        raise UserError(f"{folder}: made for fold {meta_fold}, not fold {fold}; what made it saw fold {fold}'s "
                        f"validation rows, so using it would leak them into training")
    changed = [k for k in SPLIT_KEYS if meta_split.get(k) != fingerprint.get(k)]
    if changed:
        raise UserError(f"{folder}: made with another train.csv or fold file ({', '.join(changed)} differ); it may "
                        f"carry this fold's validation labels; make it again for these folds")
    if meta.get("classes") != classes:
        raise UserError(f"{folder}: class list {meta.get('classes')} differs from the data's {classes}")
    return meta
