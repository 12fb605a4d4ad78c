"""make_folds.py --holdout: a stratified (grouped) share of train.csv that no fold trains, selects or tunes on."""
import json

import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.data.contract import changed_data, changed_data_text, data_fingerprint, read_train_table
from src.data.extra_rows import read_pseudo_dir
from src.data.folds import make_fold_file, read_folds
from src.data.holdout import HOLDOUT, check_fraction, split_holdout
from src.train.cv import load_split

from helpers import make_competition, run_script


def folds_with_holdout(root, out, fraction=0.2, seed=0, group_col="", overwrite=False):
    return make_fold_file(str(root), "train.csv", "train", "image", "label", group_col, 3, seed, out,
                          holdout=fraction, overwrite=overwrite)


def test_the_holdout_is_stratified_and_every_reader_of_the_fold_file_sees_only_the_other_rows(tmp_path):
    root = make_competition(tmp_path / "c", per_class=10)
    frame = folds_with_holdout(root, tmp_path / "f.csv")
    held = frame[frame["fold"] == "holdout"]
    assert held["label"].value_counts().to_dict() == {"cat": 2, "dog": 2, "owl": 2}
    assert sorted(frame.loc[frame["fold"] != "holdout", "fold"].astype(int).unique()) == [0, 1, 2]
    table, fold_of, _ = load_split(str(root), "train.csv", "train", "image", "label", str(tmp_path / "f.csv"))
    assert len(table.ids) == 24 and (fold_of >= 0).all() and not set(table.ids) & set(held["image"])
    assert table.holdout.ids == list(held["image"]) and len(table.holdout.paths) == 6
    # The same seed gives the same split; another seed another holdout.
    again = folds_with_holdout(root, tmp_path / "g.csv")
    assert again.equals(frame)
    other = folds_with_holdout(root, tmp_path / "h.csv", seed=1)
    assert set(other.loc[other["fold"] == "holdout", "image"]) != set(held["image"])


def test_a_fold_file_without_holdout_is_unchanged_by_the_feature(tmp_path):
    root = make_competition(tmp_path / "c", per_class=10)
    plain = make_fold_file(str(root), "train.csv", "train", "image", "label", "", 3, 0, tmp_path / "f.csv")
    table = read_train_table(root, "train.csv", "train", "image", "label")
    fold_of = read_folds(tmp_path / "f.csv", table, "image", "label")
    assert split_holdout(table, fold_of)[0] is table and table.holdout is None and plain["fold"].dtype == np.int64
    assert "holdout_sha256" not in data_fingerprint(table, tmp_path / "f.csv", np.zeros((1, 2, 2, 1), np.uint8))


def test_a_grouped_holdout_takes_whole_groups(tmp_path):
    root = make_competition(tmp_path / "c", per_class=12)
    table = pd.read_csv(root / "train.csv")
    table["patient"] = [f"p{i // 3}" for i in range(len(table))]
    table.to_csv(root / "train.csv", index=False)
    frame = folds_with_holdout(root, tmp_path / "f.csv", fraction=0.25, group_col="patient")
    frame["patient"] = table["patient"]
    assert (frame.groupby("patient")["fold"].nunique() == 1).all()
    assert 0.15 <= (frame["fold"] == "holdout").mean() <= 0.35


def test_the_default_fold_file_name_says_holdout_and_a_changed_holdout_is_not_replaced_silently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = make_competition(tmp_path / "data" / "c", per_class=10)
    make_fold_file(str(root), "train.csv", "train", "image", "label", "", 3, 0, None, holdout=0.2)
    (path,) = (tmp_path / "folds").glob("c-*_k3_s0_h20.csv")
    with pytest.raises(UserError, match="exists with other holdout rows"):
        make_fold_file(str(root), "train.csv", "train", "image", "label", "", 3, 0, path, holdout=0.3)
    make_fold_file(str(root), "train.csv", "train", "image", "label", "", 3, 0, path, holdout=0.3, overwrite=True)
    assert (pd.read_csv(path)["fold"] == "holdout").sum() == 9


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.51, 1.0, float("nan")])
def test_a_holdout_share_outside_zero_to_a_half_is_refused(fraction):
    with pytest.raises(UserError, match=r"above 0 and at most 0.5"):
        check_fraction(fraction)


def test_a_class_too_small_for_the_holdout_is_named(tmp_path):
    root = make_competition(tmp_path / "c", per_class=30)
    table = pd.read_csv(root / "train.csv")
    table = table[~table["image"].isin([f"owl_{i}" for i in range(3, 30)])]  # owl keeps 3 images
    table.to_csv(root / "train.csv", index=False)
    with pytest.raises(UserError, match=r"class 'owl' has 3 image\(s\) and a 0.05 holdout gets none of them"):
        folds_with_holdout(root, tmp_path / "f.csv", fraction=0.05)
    # Half of owl's 3 images in the holdout leaves too few for three folds: that is named too.
    with pytest.raises(UserError, match=r"without its holdout rows: class 'owl' has 1 image\(s\), fewer than 3 folds"):
        folds_with_holdout(root, tmp_path / "f.csv", fraction=0.5)


def test_a_holdout_too_small_for_one_image_of_every_class_is_named(tmp_path):
    root = make_competition(tmp_path / "c", classes=tuple("abcdef"), per_class=5, size_px=24)
    with pytest.raises(UserError, match=r"--holdout 0.1: 3 of 30 rows cannot hold an image of each of the 6 classes"):
        folds_with_holdout(root, tmp_path / "f.csv", fraction=0.1)


def test_make_folds_script_refuses_a_bad_share_in_one_line_and_writes_nothing(tmp_path):
    root = make_competition(tmp_path / "c", per_class=10)
    proc = run_script("make_folds.py", "--data-dir", str(root), "--holdout", "0.7", "--out", str(tmp_path / "f.csv"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--holdout 0.7" in proc.stderr
    assert not (tmp_path / "f.csv").exists()


def test_a_fold_value_that_is_neither_a_number_nor_holdout_is_refused(tmp_path):
    root = make_competition(tmp_path / "c", per_class=10)
    frame = folds_with_holdout(root, tmp_path / "f.csv")
    frame.loc[0, "fold"] = "hold-out"
    frame.to_csv(tmp_path / "f.csv", index=False)
    table = read_train_table(root, "train.csv", "train", "image", "label")
    with pytest.raises(UserError, match="fold numbers or 'holdout'; found 'hold-out'"):
        read_folds(tmp_path / "f.csv", table, "image", "label")
    assert HOLDOUT < 0


def test_a_changed_holdout_is_named_as_such_in_the_fingerprint_check(tmp_path):
    root = make_competition(tmp_path / "c", per_class=10)
    folds_with_holdout(root, tmp_path / "f.csv")
    folds_with_holdout(root, tmp_path / "g.csv", seed=3)
    images = np.zeros((1, 2, 2, 1), np.uint8)
    prints = []
    for name in ("f.csv", "g.csv"):
        table, _, path = load_split(str(root), "train.csv", "train", "image", "label", str(tmp_path / name))
        prints.append(data_fingerprint(table, path, images))
    changed = changed_data(*prints)
    assert "holdout_sha256" in changed and "trained on rows that are now held out" in changed_data_text(changed)
    assert changed_data(prints[0], {k: v for k, v in prints[0].items() if k != "holdout_sha256"}) == ["holdout_sha256"]


def test_pseudo_labels_on_a_holdout_image_are_refused(tmp_path):
    root = make_competition(tmp_path / "c", per_class=10)
    frame = folds_with_holdout(root, tmp_path / "f.csv")
    table, _, path = load_split(str(root), "train.csv", "train", "image", "label", str(tmp_path / "f.csv"))
    fingerprint = data_fingerprint(table, path, np.zeros((1, 2, 2, 1), np.uint8))
    folder = tmp_path / "pseudo" / "fold0"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"fold": 0, "classes": table.classes, "split": {
        k: fingerprint[k] for k in ("train_csv_sha256", "folds_csv_sha256")}}))
    held = frame.loc[frame["fold"] == "holdout", "image"].iloc[0]
    pd.DataFrame({"id": [f"train/{held}.png"], "label": ["cat"], "confidence": [0.99], "round": [1]}).to_csv(
        folder / "pseudo.csv", index=False)
    with pytest.raises(UserError, match="is a holdout row of the fold file; no fold may train on it"):
        read_pseudo_dir(folder, 0, table, root, fingerprint)
