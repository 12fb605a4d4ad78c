"""infer.py's holdout score: the fold file's holdout rows (make_folds.py --holdout) predicted exactly like the test
set (every fold model, the TTA views and blend weights chosen on OOF rows, the threshold) and scored against their
labels. Nothing was trained, selected or tuned on these rows, so this is the number to trust."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import write_csv, write_text
from src.core.metrics import eer, label_accuracy, logloss
from src.core.rundir import prob_columns
from src.core.tables import markdown_table
from src.data.contract import LabelTable
from src.infer.ensemble import blend
from src.infer.predictor import Predictor
from src.infer.tta import chosen_mean, ensemble_variants, with_identity

SUMMARY = "holdout_summary"


def holdout_scores(p: Predictor, y: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy of the labels infer.py would submit (argmax, or the decision threshold), log loss, and EER on
    binary tasks."""
    pred = np.array([p.classes.index(label) for label in p.labels_from_probs(probs)])
    out = {"accuracy": label_accuracy(y, pred), "log_loss": logloss(y, probs)}
    if probs.shape[1] == 2:
        out["eer"] = eer(y, probs)
    return out


def predict_holdout(predictors: list[Predictor], held: LabelTable, weights: np.ndarray, quiet: bool
                    ) -> tuple[pd.DataFrame, np.ndarray]:
    """(table, blended probabilities): fold 0 alone, the fold ensemble without and with TTA for the first
    experiment, then the blend infer.py submits."""
    per_exp = [p.predict_views(p.cached(held.paths, quiet), with_identity(p.views), quiet=quiet) for p in predictors]
    final = blend([chosen_mean(p, v) for p, v in zip(predictors, per_exp)], weights)
    lead = predictors[0]
    variants = {f"{lead.exp_dir.name}: {label}": probs for label, probs in ensemble_variants(lead, per_exp[0]).items()}
    variants["submission (what infer.py writes)"] = final
    rows = [{"predictions": label, "n": len(held.ids), **holdout_scores(lead, held.labels, probs)}
            for label, probs in variants.items()]
    return pd.DataFrame(rows), final


def holdout_section(table: pd.DataFrame, held: LabelTable, weights_name: str) -> str:
    return (f"## Holdout ({len(held.ids)} rows of the fold file that no fold trained, selected or tuned on)\n\n"
            f"Weights: each fold's {'best.pt' if weights_name == 'best' else 'final weights'}; TTA views, blend "
            f"weights and any threshold were chosen on OOF rows only.\n\n{markdown_table(table)}\n")


def write_holdout(out: Path, name: str, held: LabelTable, probs: np.ndarray, classes: list[str],
                  predictors: list[Predictor], table: pd.DataFrame, section: str) -> None:
    """<out>/<name>_holdout_probs.csv, and for one experiment its holdout_summary.csv/.md beside its OOF summary."""
    frame = pd.DataFrame({"id": held.ids, "label": [classes[k] for k in held.labels]})
    write_csv(out / f"{name}_holdout_probs.csv", pd.concat([frame, pd.DataFrame(probs, columns=prob_columns(classes))],
                                                          axis=1))
    if len(predictors) == 1:
        exp = predictors[0].exp_dir
        write_csv(exp / f"{SUMMARY}.csv", table)
        write_text(exp / f"{SUMMARY}.md", f"# Holdout score: {exp.name}\n\nWritten by infer.py ({name}), "
                                          f"{datetime.now().isoformat(timespec='seconds')}.\n\n{section}")
