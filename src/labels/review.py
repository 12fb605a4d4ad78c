"""Reading human reviews back: several reviewers per item, accuracy on the hidden control items per
reviewer, a majority vote per item, and a recorded merge of accepted labels into a new train CSV."""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.atomic import write_csv
from src.core.errors import UserError
from src.data.contract import read_csv_checked
from src.labels.labelstudio import read_labelstudio_export


def image_ids(queue_key: pd.DataFrame) -> dict[str, str]:
    """Queue item id (what reviewers saw) -> image id. Queues written before items got opaque ids show the
    image id itself."""
    real = queue_key["image_id"] if "image_id" in queue_key else queue_key["id"]
    return dict(zip(queue_key["id"].astype(str), real.astype(str)))


def read_reviews(paths: list[Path], queue_key: pd.DataFrame) -> pd.DataFrame:
    """(id, label, reviewer) for every filled-in row of the review CSVs (columns id, label and optionally
    reviewer; an empty reviewer cell means the file's name) and Label Studio JSON exports, with `id` the
    image id behind each queue item. Empty labels are items not reviewed yet."""
    to_image = image_ids(queue_key)
    known = set(to_image)
    parts = []
    for path in paths:
        if path.suffix.lower() == ".json":  # a Label Studio export; reviewers are its annotators
            frame = read_labelstudio_export(path)
            where = "annotation"
        else:
            frame = read_csv_checked(path, ["id", "label"]).fillna("").astype(str)
            reviewer = frame["reviewer"] if "reviewer" in frame else pd.Series("", index=frame.index)
            frame = frame.assign(reviewer=reviewer.where(reviewer.str.strip() != "", path.stem))
            where = "line"
        for line, image_id in enumerate(frame["id"], start=2 if where == "line" else 1):
            if image_id not in known:
                raise UserError(f"{path} {where} {line}: id {image_id!r} is not in this review queue")
        filled = frame[frame["label"].str.strip() != ""]
        twice = filled[filled.duplicated(["id", "reviewer"])]
        if len(twice):
            raise UserError(f"{path}: reviewer {twice['reviewer'].iloc[0]!r} labelled {twice['id'].iloc[0]!r} "
                            f"twice; keep one row")
        parts.append(filled.assign(label=filled["label"].str.strip(), id=filled["id"].map(to_image))[
            ["id", "label", "reviewer"]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "label", "reviewer"])


def control_accuracy(reviews: pd.DataFrame, controls: pd.DataFrame, suggested: dict[str, str] | None = None
                     ) -> pd.DataFrame:
    """Per reviewer: control items answered, how many correctly, accuracy (NaN when none answered), and, given
    the queue's suggestions, how often the reviewer simply agreed with them (a reviewer copying suggestions
    shows up here even where the controls cannot tell)."""
    truth = dict(zip(controls["id"].astype(str), controls["true_label"].astype(str)))
    rows = []
    for reviewer, mine in reviews.groupby("reviewer", sort=True):
        answered = mine[mine["id"].isin(truth)]
        correct = int((answered["label"] == answered["id"].map(truth)).sum())
        row = {"reviewer": reviewer, "items": len(mine), "controls": len(answered), "correct": correct,
               "control_accuracy": correct / len(answered) if len(answered) else np.nan}
        if suggested is not None:
            row["agrees_with_suggestion"] = float((mine["label"] == mine["id"].map(suggested)).mean())
        rows.append(row)
    columns = ["reviewer", "items", "controls", "correct", "control_accuracy"]
    return pd.DataFrame(rows, columns=columns + (["agrees_with_suggestion"] if suggested is not None else []))


def majority_vote(reviews: pd.DataFrame, trusted: set[str], classes: set[str]) -> pd.DataFrame:
    """Per item: the label most trusted reviewers gave, with its vote count and share; a tie or no trusted
    vote leaves the item unresolved. A label that is not a class is refused (a typo must not make a class)."""
    bad = reviews[~reviews["label"].isin(classes)]
    if len(bad):
        raise UserError(f"review by {bad['reviewer'].iloc[0]!r}: label {bad['label'].iloc[0]!r} for "
                        f"{bad['id'].iloc[0]!r} is not a class ({', '.join(sorted(classes))})")
    rows = []
    for image_id, votes in reviews[reviews["reviewer"].isin(trusted)].groupby("id", sort=False):
        counts = votes["label"].value_counts()
        tie = len(counts) > 1 and counts.iloc[0] == counts.iloc[1]
        rows.append({"id": image_id, "label": "" if tie else counts.index[0], "votes": int(counts.iloc[0]),
                     "reviewers": len(votes), "agreement": counts.iloc[0] / len(votes),
                     "status": "tie" if tie else "accepted"})
    return pd.DataFrame(rows, columns=["id", "label", "votes", "reviewers", "agreement", "status"])


def merge_labels(train_csv: Path, image_dir: Path, new_rows: pd.DataFrame, out_csv: Path, id_col: str,
                 label_col: str, source: str) -> pd.DataFrame:
    """Copy each new row's image (column path) into `image_dir` and append (id, label) to a copy of
    train.csv written to `out_csv`, with <out>.changes.csv recording what was added, when and from where.
    Ids already in train.csv are refused (a review must not silently overwrite a label)."""
    if out_csv.resolve() == train_csv.resolve():
        raise UserError(f"--out {out_csv}: write the merged labels to a new file (the original stays as it is)")
    train = read_csv_checked(train_csv, [id_col, label_col]).astype({id_col: str, label_col: str})
    names = [Path(p).name for p in new_rows["path"]]
    clash = sorted(set(names) & set(train[id_col]) | set(Path(i).stem for i in names) & set(train[id_col]))
    if clash:
        raise UserError(f"{train_csv}: already has id {clash[0]!r}; reviewed images must be new rows")
    for path, name in zip(new_rows["path"], names):
        target = image_dir / name
        if target.exists():
            if target.read_bytes() != Path(path).read_bytes():
                raise UserError(f"{target} exists with other content; rename the reviewed image {path}")
            continue
        shutil.copy2(path, target)  # copies, never moves: the unlabelled folder stays complete
    added = pd.DataFrame({id_col: names, label_col: new_rows["label"].astype(str).to_numpy()})
    write_csv(out_csv, pd.concat([train, added], ignore_index=True))
    record = added.rename(columns={id_col: "id", label_col: "new_label"}).assign(
        old_label="(new row)", when=datetime.now().isoformat(timespec="seconds"), source=source)
    write_csv(out_csv.with_name(out_csv.stem + ".changes.csv"), record[["id", "old_label", "new_label", "when",
                                                                        "source"]])
    return record
