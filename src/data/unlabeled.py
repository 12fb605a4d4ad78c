"""Unlabelled images inside a competition folder (unlabeled/, and test/ where a user opts in): their listing, the
true labels the demo keeps for measuring pseudo-labels, and the guard that keeps labelled and holdout rows out.
pseudo_label.py labels them; train.py's consistency training learns from them."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.data.cache import cached_images
from src.data.contract import LabelTable
from src.data.holdout import holdout_paths
from src.data.images import IMAGE_EXTS, ImageSpec


def truth_file(folder: str) -> str:
    """Where a competition folder may keep an unlabelled folder's true labels, hidden from training (the demo does):
    solution.csv for test/, <folder>_solution.csv for the others (unlabeled_solution.csv)."""
    return "solution.csv" if folder == "test" else f"{folder}_solution.csv"


def unlabeled_ids(data_dir: Path, folders: list[str], flag: str) -> list[str]:
    """Ids (paths relative to data_dir) of every image in `folders`, sorted per folder; a missing folder or no
    image at all is a one-line error naming `flag`."""
    ids = []
    for name in folders:
        root = data_dir / name
        if not root.is_dir():
            raise UserError(f"{root}: folder of unlabelled images not found (set {flag})")
        ids += sorted(p.relative_to(data_dir).as_posix() for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not ids:
        raise UserError(f"{data_dir}: no images in {', '.join(folders)} ({flag})")
    return ids


def known_labels(data_dir: Path, folders: dict[str, str]) -> dict[str, str] | None:
    """True labels of unlabelled images where the data keeps them: `folders` maps a folder (unlabeled/, test/) to
    its truth file (unlabeled_solution.csv, solution.csv) in data_dir; ids as unlabeled_ids gives them."""
    truth = {}
    for folder, name in folders.items():
        path = data_dir / name
        if path.is_file():
            frame = pd.read_csv(path, dtype=str)
            truth.update({f"{folder}/{i}" if "." in i else f"{folder}/{i}.png": v
                          for i, v in zip(frame.iloc[:, 0], frame.iloc[:, 1])})
    return truth or None


def truth_indices(ids: list[str], truth: dict[str, str] | None, classes: list[str]) -> np.ndarray:
    """Class index of each id's true label, -1 where none is known (or it is not one of `classes`)."""
    truth = truth or {}
    return np.array([classes.index(truth[i]) if truth.get(i) in classes else -1 for i in ids], dtype=np.int64)


def check_unlabeled(ids: list[str], data_dir: Path, table: LabelTable, flag: str) -> None:
    """Refuse an unlabelled image that is a labelled training image or a holdout row: its label would leak into the
    pseudo-labels (or the holdout's pixels into training)."""
    labelled = {p.resolve(): "a labelled training image" for p in table.paths}
    labelled.update({p.resolve(): "a holdout row of the fold file" for p in holdout_paths(table)})
    for image_id in ids:
        what = labelled.get((data_dir / image_id).resolve())
        if what:
            raise UserError(f"{data_dir / image_id}: an unlabelled image ({flag}) that is {what}; keep unlabelled "
                            f"images out of train.csv (their own folder, e.g. unlabeled/)")


@dataclass
class UnlabeledImages:
    """The unlabelled images of a run, decoded at the training images' shape, with what each fold needs."""

    ids: list[str]
    images: object  # CachedImages rows (N, H, W, C) uint8
    truth: np.ndarray  # true class index where known, else -1 (for logging pseudo-label accuracy only)
    hashes: list[str]  # content hash per row: copies of a fold's validation rows are left out of its stream
    folders: list[str]


def load_unlabeled(data_dir: Path, folders: list[str], table: LabelTable, cache_dir: Path, interp: str,
                   spec: ImageSpec, quiet: bool, flag: str) -> UnlabeledImages:
    """List, check and decode (through the disk cache, at `spec`) every image in `folders`."""
    ids = unlabeled_ids(data_dir, folders, flag)
    check_unlabeled(ids, data_dir, table, flag)
    images = cached_images([data_dir / i for i in ids], cache_dir, interp, quiet, spec=spec)
    truth = truth_indices(ids, known_labels(data_dir, {f: truth_file(f) for f in folders}), table.classes)
    return UnlabeledImages(ids, images, truth, row_hashes(images), folders)


def row_hashes(images, chunk: int = 1024) -> list[str]:
    """sha1 of each row's pixels (rows of one shape, so equal bytes mean equal images)."""
    out = []
    for start in range(0, len(images), chunk):
        out += [hashlib.sha1(row.tobytes()).hexdigest() for row in np.asarray(images[start:start + chunk])]
    return out


def without_copies(unlabeled: UnlabeledImages, held_rows) -> np.ndarray:
    """Row numbers of the unlabelled images that are not pixel copies of any of `held_rows` (a fold's validation
    images): such a copy would put validation pixels into that fold's training."""
    held = set(row_hashes(held_rows))
    return np.array([i for i, h in enumerate(unlabeled.hashes) if h not in held], dtype=np.int64)


def ids_sha256(ids: list[str]) -> str:
    """One hash of a list of ids (recorded with a run: a resume with other unlabelled images is refused)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()
