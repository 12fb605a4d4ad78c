"""Pseudo-label selection: threshold, per-class cap, class balance, and the report."""
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.data.contract import LabelTable
from src.data.extra_rows import load_pseudo_rows, read_pseudo_dir, soft_targets
from src.data.images import ImageSpec
from src.pseudo.select import per_round, pseudo_frame, select_confident, selection_table

PROBS = np.array([[0.95, 0.05], [0.70, 0.30], [0.99, 0.01], [0.10, 0.90], [0.92, 0.08], [0.40, 0.60]])


def test_threshold_keeps_confident_rows_most_confident_first_per_class():
    assert select_confident(PROBS, 0.9).tolist() == [2, 0, 4, 3]
    assert select_confident(PROBS, 0.0).tolist() == [2, 0, 4, 1, 3, 5]


def test_per_class_cap_and_class_balance():
    assert select_confident(PROBS, 0.0, max_per_class=2).tolist() == [2, 0, 3, 5]
    # Class 0 has three confident rows, class 1 one: balanced keeps one of each.
    assert select_confident(PROBS, 0.9, balanced=True).tolist() == [2, 3]
    counts = np.bincount(PROBS[select_confident(PROBS, 0.5, balanced=True)].argmax(1))
    assert counts[0] == counts[1]


def test_frame_and_report_count_and_score_against_known_labels():
    chosen = select_confident(PROBS, 0.9)
    frame = pseudo_frame([f"u{i}" for i in range(6)], PROBS, chosen, ["a", "b"], 1)
    assert list(frame.columns) == ["id", "label", "confidence", "round", "prob_a", "prob_b"]
    assert np.allclose(soft_targets(frame, ["a", "b"], Path("p.csv")), PROBS[chosen], atol=1e-5)
    assert frame["label"].tolist() == ["a", "a", "a", "b"] and frame["round"].eq(1).all()
    table = selection_table(frame, ["a", "b"], {"u0": "a", "u2": "b", "u3": "b"}).set_index("class")
    assert table.loc["a", "selected"] == 3 and table.loc["a", "accuracy"] == 0.5
    assert table.loc["b", "accuracy"] == 1.0 and table.loc["all", "selected"] == 4
    assert pd.isna(selection_table(frame, ["a", "b"], {}).loc[0, "accuracy"])


# --- pseudo-label folders as train.py reads them ----------------------------------------------------------
SPLIT = {"train_csv_sha256": "t", "folds_csv_sha256": "f"}


def pseudo_setup(tmp_path, rows, fold=0):
    data = tmp_path / "data"
    for folder in ("train", "unlabeled"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    for name in ("train/a.png", "unlabeled/u0.png", "unlabeled/u1.png"):
        cv2.imwrite(str(data / name), np.full((8, 8), 200, dtype=np.uint8))
    table = LabelTable(["a"], [data / "train/a.png"], np.array([0]), ["x", "y"], data / "train.csv")
    folder = tmp_path / "pseudo" / f"fold{fold}"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"fold": fold, "classes": ["x", "y"], "split": SPLIT,
                                                  "sources": ["unlabeled"]}))
    pd.DataFrame(rows, columns=["id", "label", "confidence", "round"]).to_csv(folder / "pseudo.csv", index=False)
    return data, table


def test_pseudo_rows_load_for_their_fold_only(tmp_path):
    data, table = pseudo_setup(tmp_path, [("unlabeled/u0.png", "y", 0.99, 1), ("unlabeled/u1", "x", 0.9, 1)])
    images, labels, ids, _, record = load_pseudo_rows(tmp_path / "pseudo", 0, table, data, SPLIT, ImageSpec(8, 8, 1),
                                                   "area")
    assert images.shape == (2, 8, 8, 1) and labels.tolist() == [1, 0] and ids == ["unlabeled/u0.png", "unlabeled/u1"]
    assert record["rows"] == 2 and record["sources"] == ["unlabeled"] and len(record["csv_sha256"]) == 64
    with pytest.raises(UserError, match="made for fold 0, not fold 1"):
        read_pseudo_dir(tmp_path / "pseudo" / "fold0", 1, table, data, SPLIT)


@pytest.mark.parametrize("row, message", [
    (("train/a.png", "x", 0.99, 1), "is a labelled training image"),
    (("unlabeled/u9.png", "x", 0.99, 1), "not found"),
    (("unlabeled/u0.png", "z", 0.99, 1), "label 'z'"),
    (("../data/unlabeled/u0.png", "x", 0.99, 1), "points outside"),
])
def test_bad_pseudo_rows_are_refused(tmp_path, row, message):
    data, table = pseudo_setup(tmp_path, [row])
    with pytest.raises(UserError, match=message):
        read_pseudo_dir(tmp_path / "pseudo" / "fold0", 0, table, data, SPLIT)


def test_no_confident_rows_is_a_valid_empty_set(tmp_path):
    data, table = pseudo_setup(tmp_path, [])
    images, labels, ids, _, record = load_pseudo_rows(tmp_path / "pseudo", 0, table, data, SPLIT, ImageSpec(8, 8, 1),
                                                   "area")
    assert len(images) == len(labels) == len(ids) == record["rows"] == 0


def test_per_round_caps_and_soft_target_errors():
    assert per_round("0", 2) == [0, 0] and per_round("100,200", 3) == [100, 200, 200]
    with pytest.raises(UserError, match="--max-per-class"):
        per_round("10,x", 2)
    frame = pd.DataFrame({"id": ["u0"], "label": ["a"], "prob_a": [0.7], "prob_b": [0.7]})
    with pytest.raises(UserError, match="p.csv line 2: prob_ columns must be probabilities"):
        soft_targets(frame, ["a", "b"], Path("p.csv"))
    with pytest.raises(UserError, match="no column 'prob_b'"):
        soft_targets(frame.drop(columns="prob_b"), ["a", "b"], Path("p.csv"))
