"""Which training labels are probably wrong? Confident-learning style ranking from out-of-fold probabilities,
and an explicit, recorded way to apply corrections (never automatic)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import write_csv, write_text
from src.core.errors import UserError
from src.core.rundir import oof_arrays, read_oof
from src.core.tables import markdown_table
from src.data.contact_sheet import contact_sheet
from src.data.contract import LabelTable, read_csv_checked
from src.data.images import decode_image


def experiment_oof(exp: Path) -> tuple[pd.DataFrame, list[str], dict]:
    """Every fold's oof.csv of `exp` (all must be finished, each id once); (frame, classes, run record)."""
    from src.infer.predictor import read_experiment

    record = read_experiment(exp)
    classes = record["classes"]
    frame = pd.concat([read_oof(exp / f"fold{k}" / "oof.csv", classes)[2] for k in range(int(record["n_folds"]))],
                      ignore_index=True)
    repeated = frame["id"][frame["id"].duplicated()]
    if len(repeated):
        raise UserError(f"{exp}: id {repeated.iloc[0]!r} has out-of-fold predictions in two folds; the folds "
                        f"overlap, retrain with one fold file")
    return frame, classes, record


def rank_label_issues(given: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Per row: suggested class, self-confidence p[given], margin p[given] - max other p, and whether confident
    learning counts it as a label issue; sorted most suspicious (lowest margin) first.

    Confident learning (Northcutt et al.): class j's threshold is the mean p[j] over rows labelled j; a row
    is an issue when the class with the largest p among those above their thresholds is not its label."""
    n, k = probs.shape
    thresholds = np.array([probs[given == j, j].mean() if (given == j).any() else 1.0 for j in range(k)])
    above = np.where(probs >= thresholds[None, :], probs, -1.0)
    confident = above.argmax(1)
    has_confident = above.max(1) >= 0
    others = probs.copy()
    others[np.arange(n), given] = -1.0
    suggested = others.argmax(1)
    self_conf = probs[np.arange(n), given]
    margin = self_conf - others.max(1)
    frame = pd.DataFrame({"row": np.arange(n), "suggested": suggested, "self_confidence": self_conf,
                          "margin": margin, "cl_issue": has_confident & (confident != given)})
    return frame.sort_values(["margin", "row"], kind="stable").reset_index(drop=True)


def label_issue_table(oof: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The ranked CSV table (rank, id, given_label, suggested_label, score, ...) and the thresholds."""
    given, probs = oof_arrays(oof, classes)
    ranked = rank_label_issues(given, probs)
    rows = ranked["row"].to_numpy()
    table = pd.DataFrame({"rank": np.arange(1, len(ranked) + 1), "id": oof["id"].to_numpy()[rows],
                          "given_label": oof["label"].to_numpy()[rows],
                          "suggested_label": [classes[j] for j in ranked["suggested"]],
                          "score": (1 - ranked["margin"]) / 2,  # 0 = surely right .. 1 = surely wrong
                          "self_confidence": ranked["self_confidence"], "margin": ranked["margin"],
                          "cl_issue": ranked["cl_issue"], "fold": oof["fold"].to_numpy()[rows]})
    return table, rows


def truth_recall(table: pd.DataFrame, truth_csv: Path) -> dict:
    """For planted label noise (prepare_demo.py --flip-fraction): where the flipped rows rank."""
    truth = read_csv_checked(truth_csv, ["image", "true_label"])
    flipped = set(truth["image"].astype(str))
    unknown = sorted(flipped - set(table["id"].astype(str)))
    if unknown:
        raise UserError(f"{truth_csv}: id {unknown[0]!r} (and {len(unknown) - 1} more) is not a ranked training row; "
                        f"is this the truth file of this experiment's data?")
    top10 = table.head(int(np.ceil(0.1 * len(table))))
    is_flipped = table["id"].astype(str).isin(flipped)
    found_flips = table[is_flipped]
    true_of = dict(zip(truth["image"].astype(str), truth["true_label"].astype(str)))
    return {"flipped": len(flipped), "rows": len(table),
            "recall_top10pct": float(top10["id"].astype(str).isin(flipped).sum() / max(len(flipped), 1)),
            "recall_at_k_flipped": float(table.head(len(flipped))["id"].astype(str).isin(flipped).mean())
            if flipped else float("nan"),
            "cl_flagged": int(table["cl_issue"].sum()),
            "cl_recall": float((found_flips["cl_issue"]).mean()) if len(found_flips) else float("nan"),
            "cl_precision": float(is_flipped[table["cl_issue"]].mean()) if table["cl_issue"].any() else float("nan"),
            "suggestion_is_truth": float((found_flips["suggested_label"].astype(str)
                                          == found_flips["id"].astype(str).map(true_of)).mean())
            if len(found_flips) else float("nan"),
            "median_rank_of_flipped": float(found_flips["rank"].median()) if len(found_flips) else float("nan")}


def write_label_report(out: Path, exp_name: str, table: pd.DataFrame, labels: LabelTable, top_n: int,
                       truth: dict | None) -> Path:
    """<out>.csv (every row, ranked), <out>.png (contact sheet of the top suspects), <out>.md (summary)."""
    write_csv(out.with_suffix(".csv"), table)
    top = table.head(top_n)
    path_of = dict(zip(labels.ids, labels.paths))
    images = [decode_image(path_of[i]) for i in top["id"]]
    captions = [f"{r.id}\ngiven {r.given_label} → {r.suggested_label}? {r.score:.2f}" for r in top.itertuples()]
    contact_sheet(out.with_suffix(".png"), images, captions,
                  f"{exp_name}: most likely label errors (given → suggested, score)", columns=8)
    lines = [f"# Label-error candidates: {exp_name}", "",
             f"{len(table)} training rows ranked by out-of-fold margin (probability of the given label minus the "
             f"largest other); score = (1 − margin) / 2. Confident learning flags {int(table['cl_issue'].sum())} "
             f"rows ({table['cl_issue'].mean():.1%}). Nothing was changed: review `{out.with_suffix('.csv').name}`, "
             "put the corrections you accept in a CSV (id,label) and run `label_errors.py --apply`.",
             f"Written {datetime.now().isoformat(timespec='seconds')}.", ""]
    if truth:
        lines += ["## Against the planted label flips", "", markdown_table(pd.DataFrame([truth])), ""]
    lines += [f"## Top {len(top)}", "", markdown_table(top.drop(columns=["fold"])), "",
              f"![top suspects]({out.with_suffix('.png').name})", ""]
    write_text(out.with_suffix(".md"), "\n".join(lines))
    return out.with_suffix(".md")


def apply_corrections(train_csv: Path, corrections_csv: Path, out_csv: Path, id_col: str,
                      label_col: str) -> pd.DataFrame:
    """Write a corrected copy of train.csv and <out>.changes.csv (id, old, new, when, source); returns the changes.

    Every correction must name an existing id once and a label; a new label (a class the data does not have)
    is refused unless it already exists in train.csv, so a typo cannot create a class."""
    if out_csv.resolve() == train_csv.resolve():
        raise UserError(f"--out {out_csv}: write the corrected labels to a new file (the original stays as it is)")
    train = read_csv_checked(train_csv, [id_col, label_col]).astype({id_col: str, label_col: str})
    fixes = read_csv_checked(corrections_csv, ["id", "label"]).astype({"id": str, "label": str})
    known, classes = set(train[id_col]), set(train[label_col])
    for line, (image_id, label) in enumerate(zip(fixes["id"], fixes["label"]), start=2):
        if image_id not in known:
            raise UserError(f"{corrections_csv} line {line}: id {image_id!r} is not in {train_csv}")
        if label not in classes:
            raise UserError(f"{corrections_csv} line {line}: label {label!r} is not a class of {train_csv} "
                            f"({', '.join(sorted(classes))}); fix the typo")
    repeated = fixes["id"][fixes["id"].duplicated()]
    if len(repeated):
        raise UserError(f"{corrections_csv}: id {repeated.iloc[0]!r} is corrected twice; keep one row")
    new = dict(zip(fixes["id"], fixes["label"]))
    old = train[label_col].copy()
    train[label_col] = [new.get(i, v) for i, v in zip(train[id_col], train[label_col])]
    changed = train[label_col] != old
    changes = pd.DataFrame({"id": train.loc[changed, id_col], "old_label": old[changed],
                            "new_label": train.loc[changed, label_col],
                            "when": datetime.now().isoformat(timespec="seconds"), "source": str(corrections_csv)})
    # The record first: a failure in between leaves a record of a change that was not written, never a
    # changed CSV without its record.
    write_csv(out_csv.with_name(out_csv.stem + ".changes.csv"), changes)
    write_csv(out_csv, train)
    return changes
