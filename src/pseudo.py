"""Pseudo-labels: which confident predictions on unlabelled images become training rows.

Selection is per fold: fold k's pseudo-labels come from fold k's own model, which never saw fold k's
validation rows, so fold k's OOF score cannot profit from its validation labels through the
pseudo-labels (an ensemble of all folds would carry them in).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.data import ImageSpec, LabelTable, decode_all, file_sha256, resolve_image_path, to_array
from src.errors import UserError
from src.fold_rows import read_fold_meta, resolve_fold_dir
from src.runs import prob_columns

PSEUDO_COLUMNS = ["id", "label", "confidence", "round"]


def select_confident(probs: np.ndarray, threshold: float, max_per_class: int = 0, balanced: bool = False) -> np.ndarray:
    """Row indices whose top probability is >= threshold, most confident first within each class.

    max_per_class > 0 caps every class; balanced takes the same number from each class (the smallest
    class's count), so a dominant class cannot swamp the set."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    per_class = []
    for c in range(probs.shape[1]):
        rows = np.flatnonzero((predicted == c) & (confidence >= threshold))
        rows = rows[np.argsort(-confidence[rows], kind="stable")]
        per_class.append(rows[:max_per_class] if max_per_class > 0 else rows)
    if balanced:
        smallest = min(len(rows) for rows in per_class)
        per_class = [rows[:smallest] for rows in per_class]
    return np.concatenate(per_class).astype(np.int64)


def pseudo_frame(ids: list[str], probs: np.ndarray, chosen: np.ndarray, classes: list[str],
                 round_index: int) -> pd.DataFrame:
    """The pseudo-label CSV rows (id, label, confidence, round, then prob_<class> for soft labels)."""
    frame = pd.DataFrame({"id": [ids[i] for i in chosen], "label": [classes[i] for i in probs[chosen].argmax(1)],
                          "confidence": probs[chosen].max(1).round(6), "round": round_index})
    return pd.concat([frame, pd.DataFrame(probs[chosen].round(6), columns=prob_columns(classes))], axis=1)


def per_round(text: str, rounds: int) -> list[int]:
    """'0', '300' or '100,200,300' -> one per-class cap per round (the last value repeats; 0 = no cap)."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise UserError(f"--max-per-class {text!r}: use a count >= 0, or one per round like 100,200,300")
    return [values[min(r, len(values) - 1)] for r in range(rounds)]


def soft_targets(frame: pd.DataFrame, classes: list[str], source: Path) -> np.ndarray:
    """(N, classes) float32 target distributions from pseudo.csv's prob_<class> columns, each summing to 1."""
    columns = prob_columns(classes)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{source}: no column {missing[0]!r}; soft labels (--pseudo-soft) need the prob_ columns "
                        f"pseudo_label.py writes")
    values = pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce") for c in columns}).to_numpy(np.float64)
    bad = ~np.isfinite(values).all(1) | (values < 0).any(1) | (np.abs(values.sum(1) - 1) > 1e-3)
    if bad.any():
        raise UserError(f"{source} line {int(np.flatnonzero(bad)[0]) + 2}: prob_ columns must be probabilities "
                        f"summing to 1")
    return (values / values.sum(1, keepdims=True)).astype(np.float32)


def selection_table(frame: pd.DataFrame, classes: list[str], truth: dict[str, str] | None = None) -> pd.DataFrame:
    """Per class: rows selected and, where true labels are known (the demo), how many are right."""
    rows = []
    for name in classes + ["all"]:
        part = frame if name == "all" else frame[frame["label"] == name]
        row = {"class": name, "selected": len(part)}
        if truth is not None:
            known = part[part["id"].isin(truth)]
            row["accuracy"] = float((known["id"].map(truth) == known["label"]).mean()) if len(known) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


PSEUDO_CSV = "pseudo.csv"


def resolve_pseudo_dir(path: str | Path, fold: int) -> Path:
    return resolve_fold_dir(path, fold, PSEUDO_CSV, "--pseudo", f"run pseudo_label.py for fold {fold} first")


def read_pseudo_dir(folder: Path, fold: int, table: LabelTable, data_dir: Path,
                    fingerprint: dict) -> tuple[pd.DataFrame, list[Path], dict]:
    """A fold's pseudo-labels after the leak guard: (rows, their image paths, meta). Every id must be an
    image inside data_dir that is not a labelled training image."""
    meta = read_fold_meta(folder, fold, table.classes, fingerprint, "pseudo_label.py")
    path = folder / PSEUDO_CSV
    if not path.is_file():
        raise UserError(f"{path}: missing; run pseudo_label.py again")
    try:  # no rows is a valid outcome: nothing was confident enough
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in PSEUDO_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}")
    labelled = {p.resolve() for p in table.paths}
    seen, paths = set(), []
    for i, (image_id, label) in enumerate(zip(frame["id"], frame["label"])):
        where = f"{path} line {i + 2}"
        if label not in table.classes:
            raise UserError(f"{where}: label {label!r} is not one of the data's classes")
        image = resolve_image_path(image_id, data_dir, where)
        if image.resolve() in labelled:
            raise UserError(f"{where}: {image_id!r} is a labelled training image; pseudo-labels are only for "
                            f"unlabelled (or test) images")
        if image_id in seen:
            raise UserError(f"{where}: duplicate id {image_id!r}")
        seen.add(image_id)
        paths.append(image)
    return frame, paths, meta


def load_pseudo_rows(path: str | Path, fold: int, table: LabelTable, data_dir: str | Path, fingerprint: dict,
                     spec: ImageSpec, interp: str, soft: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None, dict]:
    """(images in the training cache's shape, class indices, ids, soft targets or None, provenance record)
    for one fold."""
    folder = resolve_pseudo_dir(path, fold)
    frame, paths, meta = read_pseudo_dir(folder, fold, table, Path(data_dir), fingerprint)
    images = to_array(decode_all(paths), spec, interp) if paths else \
        np.empty((0, spec.height_px, spec.width_px, spec.in_chans), dtype=np.uint8)
    labels = np.array([table.classes.index(v) for v in frame["label"]], dtype=np.int64)
    targets = soft_targets(frame, table.classes, folder / PSEUDO_CSV) if soft else None
    record = {"folder": str(folder), "csv_sha256": file_sha256(folder / PSEUDO_CSV), "rows": len(frame),
              "per_class": np.bincount(labels, minlength=len(table.classes)).tolist(),
              "sources": meta.get("sources"), "made_by": meta.get("source_exp")}
    return images, labels, list(frame["id"]), targets, record
