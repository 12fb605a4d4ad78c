"""The data contract: read a competition's labels, find every labelled image, and validate both; plus the
hashes that tell a run whether it still sees the same data.

A competition folder holds `train.csv` (id column + label column) and `train/` with the images, or an
ImageFolder layout `train/<class>/*.png` with no CSV. Decoding the images is src/data/images.py's part.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.data.images import IMAGE_EXTS, array_sha1


@dataclass(eq=False)
class LabelTable:
    """Labelled images: parallel lists of ids, file paths and class indices into `classes`. `holdout` holds the
    rows a fold file sets aside (src/data/holdout.py) once they have been taken out of this table."""

    ids: list[str]
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    source: Path
    holdout: LabelTable | None = None


def subset(table: LabelTable, rows: np.ndarray) -> LabelTable:
    """The given rows of a table, in that order (same classes and source)."""
    return LabelTable([table.ids[i] for i in rows], [table.paths[i] for i in rows], table.labels[rows],
                      table.classes, table.source)


def sort_classes(names) -> list[str]:
    """Sorted class names; numerically when every name is an integer (so '10' follows '9')."""
    names = sorted(set(names))
    if all(n.lstrip("-").isdecimal() for n in names):
        return sorted(names, key=int)
    return names


def read_csv_checked(path: Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV as strings; one-line errors for a missing, empty or column-less file."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: file is empty; it needs a header row with {required}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)} "
                        f"(set --id-col/--label-col)")
    if frame.empty:
        raise UserError(f"{path}: has a header but no rows")
    return frame


def _check_ids(frame: pd.DataFrame, id_col: str, path: Path) -> None:
    for i, value in enumerate(frame[id_col]):
        if not value.strip():
            raise UserError(f"{path} line {i + 2}: empty {id_col!r}")
    dup = frame[id_col].duplicated(keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(f"{path} line {i + 2}: duplicate {id_col} {frame[id_col].iloc[i]!r}; ids must be unique")


def _check_labels(values: pd.Series, label_col: str, path: Path) -> None:
    for i, value in enumerate(values):
        if not value.strip() or value.strip().lower() == "nan":
            raise UserError(f"{path} line {i + 2}: empty {label_col!r}; every training row needs a label")
        if value != value.strip():
            raise UserError(f"{path} line {i + 2}: label {value!r} has leading/trailing whitespace; remove it")
    by_folded = {}
    for name in sorted(set(values)):
        other = by_folded.setdefault(name.lower(), name)
        if other != name:
            raise UserError(f"{path}: labels {other!r} and {name!r} differ only in case; make them one class")


def resolve_image_path(image_id: str, root: Path, where: str) -> Path:
    """Map an id (file name, relative path, or name without extension) to a file inside `root`."""
    candidate = Path(image_id)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise UserError(f"{where}: id {image_id!r} points outside {root}; use paths relative to it")
    options = [root / candidate]
    if candidate.suffix.lower() not in IMAGE_EXTS:
        options = [root / f"{image_id}{ext}" for ext in IMAGE_EXTS] + options
    for path in options:
        if path.is_file():
            if not path.resolve().is_relative_to(root.resolve()):
                raise UserError(f"{where}: {path} links outside {root}; copy the file in instead")
            return path
    raise UserError(f"{where}: image for id {image_id!r} not found in {root}")


def read_train_table(data_dir: str | Path, train_csv: str, image_dir: str, id_col: str, label_col: str) -> LabelTable:
    """Load and validate train.csv (or an ImageFolder layout) into a LabelTable."""
    data_dir = Path(data_dir)
    csv_path, root = data_dir / train_csv, data_dir / image_dir
    if not csv_path.exists() and root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        return imagefolder_table(root)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found (set --data-dir / --image-dir)")
    frame = read_csv_checked(csv_path, [id_col, label_col])
    _check_ids(frame, id_col, csv_path)
    _check_labels(frame[label_col], label_col, csv_path)
    paths = [resolve_image_path(v, root, f"{csv_path} line {i + 2}") for i, v in enumerate(frame[id_col])]
    classes = sort_classes(frame[label_col])
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[v] for v in frame[label_col]], dtype=np.int64)
    return LabelTable(list(frame[id_col]), paths, labels, classes, csv_path)


def imagefolder_table(root: Path) -> LabelTable:
    """Turn train/<class>/*.png into a LabelTable; ids are the paths relative to `root`."""
    # Skip hidden and tool folders (.ipynb_checkpoints, __MACOSX): they are not classes.
    classes = sort_classes(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    ids, paths, labels = [], [], []
    for k, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir()
                       if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
        if not files:
            raise UserError(f"{root / name}: class folder holds no images ({', '.join(IMAGE_EXTS)})")
        for path in files:
            ids.append(f"{name}/{path.name}")
            paths.append(path)
            labels.append(k)
    return LabelTable(ids, paths, np.array(labels, dtype=np.int64), classes, root)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def holdout_sha256(table: LabelTable) -> dict:
    """{'holdout_sha256': ...} over the holdout's ids and labels when the table has one, else {} (so the records
    of runs on fold files without a holdout stay as they were)."""
    if table.holdout is None:
        return {}
    held = table.holdout
    rows = sorted(f"{i}\t{held.classes[k]}" for i, k in zip(held.ids, held.labels))
    return {"holdout_sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()}


def data_fingerprint(table: LabelTable, folds_path: Path, images: np.ndarray) -> dict:
    """Hashes that tell whether a resumed, summarised or predicted run sees the data it was trained on."""
    return {"train_csv_sha256": file_sha256(table.source) if table.source.is_file() else None,
            "folds_csv_sha256": file_sha256(folds_path),
            "image_cache_sha1": array_sha1(images), **holdout_sha256(table)}


def changed_data(recorded: dict, now: dict) -> list[str]:
    """The fingerprint keys that differ between a run's record and the data now (a key only one side has
    counts: a holdout added or dropped)."""
    return [k for k in dict.fromkeys([*now, *recorded]) if recorded.get(k) != now.get(k)]


def changed_data_text(changed: list[str]) -> str:
    """What a list of changed fingerprint keys means, for an error message."""
    if "holdout_sha256" in changed:
        return ("the fold file's holdout rows changed since training (make_folds.py --holdout): the run may have "
                "trained on rows that are now held out")
    return f"{', '.join(changed)} differ"
