"""Pseudo-labels: which confident predictions on unlabelled images become training rows.

Selection is per fold: fold k's pseudo-labels come from fold k's own model, which never saw fold k's
validation rows, so fold k's OOF score cannot profit from its validation labels through the
pseudo-labels (an ensemble of all folds would carry them in).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.core.rundir import prob_columns


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


