"""The competition's file formats: sample submission in, submission out, and scoring against a solution
with a Kaggle `Usage` column (the local leaderboard)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.core.metrics import METRICS, label_accuracy, label_macro_f1
from src.data.contract import read_csv_checked, sort_classes


def read_sample(path: Path) -> pd.DataFrame:
    """sample_submission.csv as strings; its first column is the id, and ids must be unique."""
    frame = read_csv_checked(path, [])
    if frame.shape[1] < 2:
        raise UserError(f"{path}: needs an id column and at least one prediction column")
    ids = frame.iloc[:, 0]
    if ids.duplicated().any():
        raise UserError(f"{path}: id {ids[ids.duplicated()].iloc[0]!r} appears twice")
    return frame


def build_submission(sample: pd.DataFrame, classes: list[str], probs: np.ndarray, labels: list[str],
                     proba: bool, source: Path) -> pd.DataFrame:
    """A frame with the sample's header and row order: labels, or probabilities with --proba.

    With --proba the prediction columns must be the class names (any order), or, for a binary task,
    a single column that receives the probability of the second class."""
    out = sample.copy()
    columns = list(sample.columns[1:])
    if not proba:
        if len(columns) != 1:
            raise UserError(f"{source}: has {len(columns)} prediction columns {columns}; use --proba to write "
                            f"per-class probabilities")
        out[columns[0]] = labels
        return out
    if sorted(columns) == sorted(classes):
        for k, name in enumerate(classes):
            out[name] = probs[:, k]
        return out
    if len(columns) == 1 and len(classes) == 2:
        out[columns[0]] = probs[:, 1]
        return out
    raise UserError(f"{source}: columns {columns} are not the class names {classes}; --proba cannot fill them")


def score_submission(submission: Path, solution: Path, metric: str = "") -> dict[str, float]:
    """Public and private score of a submission file against a solution file with a `Usage` column."""
    return score_frame(read_csv_checked(submission, []), read_solution(solution), metric, submission)


def read_solution(path: Path) -> pd.DataFrame:
    """solution.csv: id, label, Usage; at least one Public or Private row."""
    solution = read_csv_checked(path, ["Usage"])
    if not solution["Usage"].isin(["Public", "Private"]).any():
        raise UserError(f"{path}: column 'Usage' holds {sorted(set(solution['Usage']))[:5]}, "
                        f"no 'Public'/'Private' rows")
    return solution


def score_frame(sub: pd.DataFrame, sol: pd.DataFrame, metric: str = "", source: Path = Path("submission")
                ) -> dict[str, float]:
    """Public and private score; ids must match the solution's exactly.

    metric: 'accuracy' / 'macro_f1' for label submissions, 'log_loss' / 'roc_auc' for probability ones
    (default: accuracy, or log_loss when the submission holds probabilities)."""
    id_col, label_col = sol.columns[0], sol.columns[1]
    if sub.columns[0] != id_col:
        raise UserError(f"{source}: first column is {sub.columns[0]!r}, the solution's id column is {id_col!r}")
    if sub[id_col].duplicated().any() or set(sub[id_col]) != set(sol[id_col]):
        raise UserError(f"{source}: ids do not match the solution's (missing, extra or repeated ids)")
    sub = sub.set_index(id_col).loc[sol[id_col]]
    is_label = list(sub.columns) == [label_col] and not _is_probability_column(sub[label_col])
    metric = metric or ("accuracy" if is_label else "log_loss")
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r}: choose from {list(METRICS)}")
    # The order train.py uses, so a binary column means the same class. A probability submission may name
    # classes the solution happens not to hold; it is read that way only when its rows are distributions
    # over all its columns (so a stray numeric column is refused, not scored as a class).
    classes = sort_classes(sol[label_col])
    if not is_label and set(classes) < set(sub.columns) and list(sub.columns) != [label_col]:
        extra = sorted(set(sub.columns) - set(classes))
        values = sub.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        if not np.allclose(values.sum(axis=1), 1, atol=1e-3):
            raise UserError(f"{source}: columns {extra} are not classes of the solution and the rows do not sum to "
                            f"1 with them; drop them or write one probability per class")
        classes = sort_classes(sub.columns)
    truth = sol[label_col].map({c: i for i, c in enumerate(classes)}).to_numpy()
    if is_label:
        if metric not in ("accuracy", "macro_f1"):
            raise UserError(f"--metric {metric}: a label submission is scored by accuracy or macro_f1")
        index = {c: i for i, c in enumerate(classes)}
        pred = sub[label_col].astype(str).map(lambda v: index.get(v, -1)).to_numpy()  # unknown label: -1, wrong
        score = _label_metric(metric, len(classes))
    else:
        pred = _probability_matrix(sub, classes, label_col, source)
        score = METRICS[metric][0]
    scores = {"metric": metric}
    for part in ("Public", "Private"):
        rows = (sol["Usage"] == part).to_numpy()
        if rows.any():
            scores[part.lower()] = score(truth[rows], pred[rows])
    return scores


def _label_metric(metric: str, num_classes: int):
    if metric == "accuracy":
        return label_accuracy
    return lambda y, pred: label_macro_f1(y, pred, num_classes)


def _is_probability_column(values: pd.Series) -> bool:
    numbers = pd.to_numeric(values, errors="coerce")
    return bool(numbers.notna().all() and numbers.between(0, 1).all() and (numbers % 1 != 0).any())


def _probability_matrix(sub: pd.DataFrame, classes: list[str], label_col: str, source: Path) -> np.ndarray:
    if sorted(sub.columns) == sorted(classes):  # any column order; never compare text to numeric order
        frame = sub[classes]
    elif list(sub.columns) == [label_col] and len(classes) == 2:
        p1 = pd.to_numeric(sub[label_col], errors="coerce")
        frame = pd.DataFrame({classes[0]: 1 - p1, classes[1]: p1})
    else:
        raise UserError(f"{source}: columns {list(sub.columns)} are neither the label column nor the classes {classes}")
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy()
    if np.isnan(values).any():
        raise UserError(f"{source}: non-numeric probability in the submission")
    return values
