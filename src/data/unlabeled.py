"""Unlabelled images inside a competition folder (unlabeled/, and test/ where a user opts in): their listing, the
true labels the demo keeps for measuring pseudo-labels, and the guards that keep train.csv rows (and copies of
validation or holdout images) out. pseudo_label.py labels them; train.py's consistency training learns from them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.data.cache import cached_images
from src.data.contract import LabelTable
from src.data.holdout import holdout_paths, off_limits
from src.data.images import ImageSpec, array_sha1, image_files, pixel_hash
from src.data.rows import RowView

# The demo keeps the true labels of unlabeled/ and test/ beside them, hidden from training like solution.csv.
UNLABELED_TRUTH, TEST_TRUTH = "unlabeled_solution.csv", "solution.csv"


def unlabeled_ids(data_dir: Path, folders: list[str], flag: str) -> list[str]:
    """Ids (paths relative to data_dir) of every image in `folders` (hidden files left out), sorted per folder; a
    folder outside data_dir, a missing one or no image at all is a one-line error naming `flag`."""
    ids = []
    for name in folders:
        root = data_dir / name
        if not root.resolve().is_relative_to(data_dir.resolve()):
            raise UserError(f"{root}: {flag} must name a folder inside {data_dir}")
        if not root.is_dir():
            raise UserError(f"{root}: folder of unlabelled images not found (set {flag})")
        ids += [p.relative_to(data_dir).as_posix() for p in image_files(root, [])]
    if not ids:
        raise UserError(f"{data_dir}: no images in {', '.join(folders)} ({flag})")
    return ids


def known_labels(data_dir: Path, folders: dict[str, str]) -> dict[str, str] | None:
    """True labels of unlabelled images where the data keeps them: `folders` maps a folder (unlabeled/, test/) to
    its truth file in data_dir (UNLABELED_TRUTH, TEST_TRUTH); ids as unlabeled_ids gives them."""
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
    """Refuse an unlabelled image that is a train.csv row (labelled or holdout)."""
    taken = off_limits(table)
    for image_id in ids:
        what = taken.get((data_dir / image_id).resolve())
        if what:
            raise UserError(f"{data_dir / image_id}: an unlabelled image ({flag}) that is {what}; keep unlabelled "
                            f"images out of train.csv (their own folder, e.g. unlabeled/)")


@dataclass
class UnlabeledImages:
    """The unlabelled images of a run, decoded at the training images' shape, with what each fold needs."""

    ids: list[str]
    images: object  # CachedImages rows (N, H, W, C) uint8, holdout copies left out
    truth: np.ndarray  # true class index where known, else -1 (for logging pseudo-label accuracy only)
    hashes: list[str]  # pixel hash per row: copies of a fold's validation rows are left out of its stream
    folders: list[str]
    holdout_copies: int  # images left out of every fold's stream: copies of holdout rows
    sha1: str  # of the decoded pixels (a resume with other pixels is refused)


def load_unlabeled(data_dir: Path, folders: list[str], table: LabelTable, cache_dir: Path, interp: str,
                   spec: ImageSpec, quiet: bool, flag: str) -> UnlabeledImages:
    """List, check and decode (through the disk cache, at `spec`) every image in `folders`; copies of holdout images
    (another name, the same pixels) are left out: no fold may train on a holdout image, even unlabelled."""
    ids = unlabeled_ids(data_dir, folders, flag)
    check_unlabeled(ids, data_dir, table, flag)
    images = cached_images([data_dir / i for i in ids], cache_dir, interp, quiet, spec=spec)
    hashes = row_hashes(images)
    held = holdout_paths(table)
    held_hashes = set(row_hashes(cached_images(held, cache_dir, interp, quiet, spec=spec))) if held else set()
    keep = [i for i, h in enumerate(hashes) if h not in held_hashes]
    truth = truth_indices(ids, known_labels(data_dir, {f: TEST_TRUTH if f == "test" else UNLABELED_TRUTH
                                                       for f in folders}), table.classes)
    rows = images if len(keep) == len(ids) else RowView(images, keep)
    return UnlabeledImages([ids[i] for i in keep], rows, truth[keep], [hashes[i] for i in keep], folders,
                           len(ids) - len(keep), array_sha1(images))


def row_hashes(images, chunk: int = 1024) -> list[str]:
    """pixel_hash of every row, read in chunks."""
    return [pixel_hash(row) for start in range(0, len(images), chunk) for row in np.asarray(images[start:start + chunk])]


def without_copies(unlabeled: UnlabeledImages, held_rows) -> np.ndarray:
    """Row numbers of the unlabelled images that are not pixel copies of any of `held_rows` (a fold's validation
    images): such a copy would put validation pixels into that fold's training."""
    held = set(row_hashes(held_rows))
    return np.array([i for i, h in enumerate(unlabeled.hashes) if h not in held], dtype=np.int64)
