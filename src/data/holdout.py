"""A holdout split of train.csv: rows set aside that no fold trains, selects or tunes on, scored once at the end
like a test set (a local private leaderboard when a competition gives no labelled test).

The fold file marks them with `holdout` in its fold column. Everything that reads a fold file through
`split_holdout` sees the cross-validation rows only; the holdout rows travel beside them (`LabelTable.holdout`)
so guards can refuse them as extra training rows, and so infer.py can score them.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

from src.core.errors import UserError
from src.data.contract import LabelTable, subset

HOLDOUT = -1  # a holdout row's fold in memory
HOLDOUT_LABEL = "holdout"  # ... and in the fold file
MAX_FRACTION = 0.5
GROUPED_PARTS = 10  # a grouped holdout is made of tenths of the groups
SHARE_TOLERANCE = 0.05


def check_fraction(fraction: float) -> float:
    if not 0 < fraction <= MAX_FRACTION:
        raise UserError(f"--holdout {fraction:g}: give the share of train.csv to set aside, above 0 and at most "
                        f"{MAX_FRACTION} (0.2 is typical)")
    return fraction


def assign_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of the holdout rows: stratified by label, and whole groups (duplicates, --group-col) when
    rows must stay together. Grouped: StratifiedGroupKFold into ten parts (fewer groups: one part each), the first
    round(fraction x parts) of them, so the share is approximate."""
    n, n_classes = len(labels), len(np.unique(labels))
    n_groups = len(np.unique(groups))
    if n_groups == n:
        held_rows = math.ceil(fraction * n)  # as scikit-learn rounds it
        if held_rows < n_classes:
            raise UserError(f"--holdout {fraction:g}: {held_rows} of {n} rows cannot hold an image of each of the "
                            f"{n_classes} classes; raise --holdout")
        split = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        _, held = next(split.split(np.zeros(n), labels))
    else:
        parts = min(GROUPED_PARTS, n_groups)
        take = max(1, round(fraction * parts))
        if take >= parts:
            raise UserError(f"--holdout {fraction:g}: only {n_groups} groups of rows that must stay together; "
                            f"lower --holdout or merge fewer rows")
        splitter = StratifiedGroupKFold(n_splits=parts, shuffle=True, random_state=seed)
        held = np.concatenate([rows for _, rows in itertools.islice(splitter.split(np.zeros(n), labels, groups),
                                                                    take)])
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    if abs(mask.mean() - fraction) > SHARE_TOLERANCE:
        print(f"warning: the holdout holds {mask.mean():.1%} of the rows, not {fraction:.0%}: rows that must stay "
              f"together (duplicates, --group-col) move as whole groups")
    return mask


def check_holdout_classes(labels: np.ndarray, held: np.ndarray, classes: list[str], fraction: float,
                          source: str) -> None:
    """Every class needs a holdout image (or its score there is undefined) and training images left."""
    for k, name in enumerate(classes):
        total, kept = int((labels == k).sum()), int((held & (labels == k)).sum())
        if kept == 0 or kept == total:
            where = "none of them" if kept == 0 else "all of them"
            raise UserError(f"{source}: class {name!r} has {total} image(s) and a {fraction:g} holdout gets {where}; "
                            f"add images of it, merge the class, or {'raise' if kept == 0 else 'lower'} --holdout")


def split_holdout(table: LabelTable, fold_of: np.ndarray) -> tuple[LabelTable, np.ndarray]:
    """(the cross-validation rows, their folds): the holdout rows leave the table and ride along as its
    `holdout`, so no fold can train, select or tune on them."""
    held = fold_of == HOLDOUT
    if not held.any():
        return table, fold_of
    cv = subset(table, np.flatnonzero(~held))
    cv.holdout = subset(table, np.flatnonzero(held))
    return cv, fold_of[~held]


def holdout_paths(table: LabelTable) -> list:
    """The image files of a table's holdout rows (none without a holdout)."""
    return [] if table.holdout is None else list(table.holdout.paths)


LABELLED, HELD_OUT = "a labelled training image", "a holdout row of the fold file"


def off_limits(table: LabelTable) -> dict:
    """Every train.csv image by resolved path -> LABELLED or HELD_OUT: no pseudo-labelled or unlabelled row may be
    one of them (its label, or the holdout's pixels, would reach training)."""
    paths = {p.resolve(): LABELLED for p in table.paths}
    return {**paths, **{p.resolve(): HELD_OUT for p in holdout_paths(table)}}
