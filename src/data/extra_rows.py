"""Extra training rows kept per fold, from synthetic sample folders (gen_synthetic.py) and pseudo-label
folders (pseudo_label.py): where a fold's folder is, the leak guard on its meta.json, and the rows that join
that fold's training split.

Such rows were made by something that saw one fold's training rows only (a generator, a fold model).
Used for another fold, or after train.csv or the fold file changed, they would carry that fold's
validation labels into its training, so they are refused.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.core.rundir import prob_columns
from src.data.contract import LabelTable, changed_data_text, file_sha256, resolve_image_path
from src.data.holdout import HELD_OUT, LABELLED, off_limits
from src.data.images import ImageSpec, decode_all, to_array

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
        raise UserError(f"{folder}: made with another train.csv or fold file ({changed_data_text(changed)}); it may "
                        f"carry this fold's validation or holdout labels; make it again for these folds")
    if meta.get("classes") != classes:
        raise UserError(f"{folder}: class list {meta.get('classes')} differs from the data's {classes}")
    return meta


MANIFEST = "manifest.csv"


MANIFEST_COLUMNS = ["file", "label", "guidance", "seed", "confidence", "predicted", "kept"]


def manifest_sha256(folder: Path) -> str:
    return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()


def resolve_sample_dir(path: str | Path, fold: int) -> Path:
    return resolve_fold_dir(path, fold, MANIFEST, "--synthetic", f"run gen_synthetic.py sample for fold {fold} first")


def read_sample_dir(folder: Path, fold: int, classes: list[str], fingerprint: dict) -> tuple[pd.DataFrame, dict]:
    """The manifest and meta of a sample folder, after the leak guard and consistency checks."""
    manifest_path = folder / MANIFEST
    meta = read_fold_meta(folder, fold, classes, fingerprint, "gen_synthetic.py sample")
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: missing; this is not a complete gen_synthetic.py sample folder "
                        f"(re-run sample)")
    try:
        manifest = pd.read_csv(manifest_path, dtype={"file": str, "label": str, "predicted": str},
                               keep_default_na=False, na_values={"confidence": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{manifest_path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise UserError(f"{manifest_path}: missing column(s) {missing}")
    for i, (file, label, kept) in enumerate(zip(manifest["file"], manifest["label"], manifest["kept"])):
        where = f"{manifest_path} line {i + 2}"
        if label not in classes:
            raise UserError(f"{where}: label {label!r} is not one of the data's classes")
        if str(kept) not in ("True", "False"):
            raise UserError(f"{where}: kept must be True or False, got {kept!r}")
        if Path(file).is_absolute() or ".." in Path(file).parts or not (folder / file).is_file():
            raise UserError(f"{where}: image {file!r} not found inside {folder}; re-run gen_synthetic.py sample")
    manifest["kept"] = manifest["kept"].astype(str) == "True"
    return manifest, meta


def select_rows(manifest: pd.DataFrame, classes: list[str], real_labels: np.ndarray, ratio: float, per_class: int,
                unfiltered: bool, source: Path) -> pd.DataFrame:
    """Which synthetic rows join training: per class `per_class` rows (-1 = all), else round(ratio x the
    class's real training rows); the first rows in manifest order, kept rows only unless `unfiltered`."""
    pool = manifest if unfiltered else manifest[manifest["kept"]]
    parts = []
    real_counts = np.bincount(real_labels, minlength=len(classes))
    for c, name in enumerate(classes):
        rows = pool[pool["label"] == name]
        want = len(rows) if per_class == -1 else per_class if per_class > 0 else round(ratio * real_counts[c])
        if want > len(rows):
            raise UserError(f"{source}: class {name!r} needs {want} synthetic rows but has {len(rows)} "
                            f"{'' if unfiltered else 'kept '}samples; sample more (--per-class) or lower "
                            f"--synthetic-ratio / --synthetic-per-class")
        parts.append(rows.iloc[:want])
    return pd.concat(parts)


def load_synthetic_rows(path: str | Path, fold: int, classes: list[str], fingerprint: dict, spec: ImageSpec,
                        interp: str, real_labels: np.ndarray, ratio: float, per_class: int,
                        unfiltered: bool) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(images in the training cache's shape, class indices, ids, provenance record) for one fold."""
    folder = resolve_sample_dir(path, fold)
    manifest, meta = read_sample_dir(folder, fold, classes, fingerprint)
    rows = select_rows(manifest, classes, real_labels, ratio, per_class, unfiltered, folder / MANIFEST)
    images = to_array(decode_all([folder / f for f in rows["file"]]), spec, interp) if len(rows) else \
        np.empty((0, spec.height_px, spec.width_px, spec.in_chans), dtype=np.uint8)
    labels = np.array([classes.index(v) for v in rows["label"]], dtype=np.int64)
    ids = [f"{folder}/{f}" for f in rows["file"]]
    record = {"folder": str(folder), "manifest_sha256": manifest_sha256(folder), "rows": len(rows),
              "per_class": np.bincount(labels, minlength=len(classes)).tolist(),
              "generator_sha256": meta.get("generator_sha256")}
    return images, labels, ids, record


PSEUDO_COLUMNS = ["id", "label", "confidence", "round"]


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


PSEUDO_CSV = "pseudo.csv"


def resolve_pseudo_dir(path: str | Path, fold: int) -> Path:
    return resolve_fold_dir(path, fold, PSEUDO_CSV, "--pseudo", f"run pseudo_label.py for fold {fold} first")


def read_pseudo_dir(folder: Path, fold: int, table: LabelTable, data_dir: Path,
                    fingerprint: dict) -> tuple[pd.DataFrame, list[Path], dict]:
    """A fold's pseudo-labels after the leak guard: (rows, their image paths, meta). Every id must be an
    image inside data_dir that is neither a labelled training image nor a holdout row."""
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
    taken = off_limits(table)
    seen, paths = set(), []
    for i, (image_id, label) in enumerate(zip(frame["id"], frame["label"])):
        where = f"{path} line {i + 2}"
        if label not in table.classes:
            raise UserError(f"{where}: label {label!r} is not one of the data's classes")
        image = resolve_image_path(image_id, data_dir, where)
        if taken.get(image.resolve()) == LABELLED:
            raise UserError(f"{where}: {image_id!r} is a labelled training image; pseudo-labels are only for "
                            f"unlabelled (or test) images")
        if taken.get(image.resolve()) == HELD_OUT:
            raise UserError(f"{where}: {image_id!r} is a holdout row of the fold file; no fold may train on it "
                            f"(with any label), so leave it out of the pseudo-label pool")
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
