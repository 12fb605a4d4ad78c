"""The OOF side of infer.py: each fold model scores its own validation rows under every TTA view, the views and
blend weights are chosen there (and scored by a nested scheme, so the choice does not flatter its own score), and
the report says what was chosen."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.errors import UserError
from src.core.metrics import accuracy, eer_point, logloss
from src.core.tables import markdown_table
from src.data.contract import LabelTable, changed_data, changed_data_text, data_fingerprint, read_train_table
from src.data.folds import read_folds
from src.data.holdout import split_holdout
from src.data.rows import RowView
from src.infer.ensemble import blend, fit_weights, nested_blend, nested_fit
from src.infer.predictor import Predictor
from src.infer.tta import greedy_views


@dataclass
class OofData:
    """The labelled rows all experiments were validated on, in fold-file order; `table.holdout` holds the fold
    file's holdout rows (None without), which no fold trained or validated on."""

    ids: list[str]
    y: np.ndarray
    fold_of: np.ndarray
    table: LabelTable
    folds_path: Path


def load_oof_data(predictors: list[Predictor], quiet: bool) -> OofData:
    """Training rows and folds of the experiments: one fold file and class list, unchanged since training."""
    cfg = predictors[0].cfg
    for p in predictors[1:]:
        if (p.cfg.data_dir, p.folds_csv) != (cfg.data_dir, predictors[0].folds_csv):
            raise UserError(f"{p.exp_dir} and {predictors[0].exp_dir} used different data or fold files; "
                            f"OOF rows would not line up")
    table = read_train_table(cfg.data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col)
    if table.classes != predictors[0].classes:
        raise UserError(f"{table.source}: classes changed since {predictors[0].exp_dir} was trained")
    folds_path = Path(predictors[0].folds_csv)
    table, fold_of = split_holdout(table, read_folds(folds_path, table, cfg.id_col, cfg.label_col))
    return OofData(table.ids, table.labels, fold_of, table, folds_path)


def oof_by_view(p: Predictor, data: OofData, views: list[str], quiet: bool, all_folds: bool = True
                ) -> dict[str, np.ndarray]:
    """Each fold model predicts its own validation rows under each view: {view: (N, classes)}. With
    all_folds=False `p` may hold only some folds; the other folds' rows stay zero."""
    images = p.cached(data.table.paths, quiet)
    changed = changed_data(p.fingerprint, data_fingerprint(data.table, data.folds_path, images))
    if changed or all_folds and int(data.fold_of.max()) + 1 != len(p.folds):
        # A changed fold file would score rows with a model that trained on them.
        raise UserError(f"{p.exp_dir}: train.csv, the fold file or the images changed since training "
                        f"({changed_data_text(changed) if changed else 'fold count differs'}); its OOF and holdout "
                        f"rows cannot be trusted")
    out = {v: np.zeros((len(data.y), len(p.classes)), dtype=np.float32) for v in views}
    for fold in p.folds:
        rows = np.flatnonzero(data.fold_of == fold.fold)
        probs = p.predict_views(RowView(images, rows), views, folds=[fold], quiet=quiet)[0]
        for i, v in enumerate(views):
            out[v][rows] = probs[i]
    return out


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    return {"oof_accuracy": accuracy(y, probs), "oof_log_loss": logloss(y, probs)}


def select_views(p: Predictor, data: OofData, greedy: bool, quiet: bool
                 ) -> tuple[np.ndarray, pd.DataFrame, object]:
    """Score every candidate view on OOF rows, choose the views (all, or greedy), return their mean OOF, the
    table, and what the nested blend needs: the mean OOF, or with greedy a function of the fitting rows that
    chooses the views on those rows only."""
    by_view = oof_by_view(p, data, p.views, quiet)
    rows = [{"views": v, **scores(data.y, probs)} for v, probs in by_view.items()]
    rows.append({"views": f"mean of all {len(by_view)}", **scores(data.y, np.mean(list(by_view.values()), axis=0))})
    nested_input = None
    if greedy:
        p.views = greedy_views(data.y, by_view)

        def nested_input(fit_rows: np.ndarray) -> np.ndarray:
            views = greedy_views(data.y[fit_rows], {v: b[fit_rows] for v, b in by_view.items()})
            return np.mean([by_view[v] for v in views], axis=0)

        nested, _ = nested_fit(data.fold_of, fit=nested_input, apply=lambda probs, held: probs[held])
        rows.append({"views": "greedy, nested (each fold scored with views chosen on the others)",
                     **scores(data.y, nested)})
    chosen = np.mean([by_view[v] for v in p.views], axis=0)
    rows.append({"views": "chosen: " + "+".join(p.views), **scores(data.y, chosen)})
    return chosen, pd.DataFrame(rows), chosen if nested_input is None else nested_input


def blend_weights(names: list[str], data: OofData, oofs: list[np.ndarray], mode: str, nested_inputs: list,
                  greedy: bool) -> tuple[np.ndarray, pd.DataFrame]:
    """Weights per experiment (equal, or fitted on all OOF rows) and a table with each alone, the mean,
    and fitted weights scored by the nested scheme (with greedy TTA, the views are chosen inside it too)."""
    rows = [{"blend": n, **scores(data.y, o)} for n, o in zip(names, oofs)]
    rows.append({"blend": "mean", **scores(data.y, np.mean(oofs, axis=0))})
    nested, _ = nested_blend(data.y, data.fold_of, nested_inputs)
    chosen = "weights and greedy TTA views" if greedy else "weights"
    rows.append({"blend": f"fitted weights, nested (each fold scored with {chosen} chosen on the others)",
                 **scores(data.y, nested)})
    weights = fit_weights(data.y, oofs) if mode == "fitted" else np.full(len(oofs), 1 / len(oofs))
    return weights, pd.DataFrame(rows)


def oof_report(predictors: list[Predictor], data: OofData, name: str, tta: str, blend_mode: str, threshold: str,
               quiet: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The OOF part of the report (TTA views per experiment, the blend, an EER threshold), the blend weights
    and the blended OOF probabilities; chooses each predictor's views and threshold on the way."""
    report, oofs, nested_inputs = [f"# Submission {name}\n"], [], []
    for p in predictors:
        oof, table, nested_input = select_views(p, data, tta == "greedy", quiet)
        oofs.append(oof)
        nested_inputs.append(nested_input)
        report.append(f"## TTA on OOF rows: {p.exp_dir.name}\n\n{markdown_table(table)}\n")
    weights, table = blend_weights([p.exp_dir.name for p in predictors], data, oofs, blend_mode, nested_inputs,
                                   tta == "greedy")
    blended_oof = blend(oofs, weights)
    if len(predictors) > 1:
        report.append(f"## Blend on OOF rows\n\n{markdown_table(table)}\n\nweights used ({blend_mode}): "
                      + ", ".join(f"{p.exp_dir.name}={w:.3f}" for p, w in zip(predictors, weights)) + "\n")
    if threshold == "eer":  # from the same (ensembled, TTA, blended) probabilities it is applied to
        predictors[0].threshold = eer_point(data.y, blended_oof[:, 1])[1]
        report.append(f"Decision threshold (OOF equal error rate): {predictors[0].threshold:.4f}\n")
    return report, weights, blended_oof
