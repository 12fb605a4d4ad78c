import shutil

import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.data.contract import read_train_table
from src.data.folds import (
    assign_folds,
    connected_groups,
    default_folds_path,
    make_fold_file,
    parse_fold_arg,
    read_folds,
)

from helpers import make_competition


def test_folds_are_stratified_and_deterministic():
    labels = np.repeat(np.arange(4), 25)
    a = assign_folds(labels, n_folds=5, seed=1)
    b = assign_folds(labels, n_folds=5, seed=1)
    assert (a == b).all()
    assert not (a == assign_folds(labels, n_folds=5, seed=2)).all()
    counts = pd.crosstab(a, labels).to_numpy()
    assert (counts == 5).all()  # every fold holds 5 of each class


def test_connected_groups_merge_rows_sharing_any_key():
    hashes = ["a", "b", "a", "c", "d"]
    groups = ["g1", "g2", "g3", "g3", "g5"]
    g = connected_groups(hashes, groups)
    assert g[0] == g[2] == g[3]  # 0~2 by hash, 2~3 by group
    assert len({g[0], g[1], g[4]}) == 3


def test_exact_duplicate_images_land_in_the_same_fold(tmp_path):
    root = make_competition(tmp_path / "c", per_class=10)
    table = pd.read_csv(root / "train.csv")
    # Copy three images under new ids: same pixels, so they must share a fold with their originals.
    for src in ("cat_0", "dog_3", "owl_7"):
        shutil.copy(root / "train" / f"{src}.png", root / "train" / f"{src}_copy.png")
        table.loc[len(table)] = [f"{src}_copy", src.split("_")[0]]
    table.to_csv(root / "train.csv", index=False)
    frame = make_fold_file(str(root), "train.csv", "train", "image", "label", "", 3, 0, tmp_path / "f.csv")
    fold = dict(zip(frame["image"], frame["fold"]))
    for src in ("cat_0", "dog_3", "owl_7"):
        assert fold[src] == fold[f"{src}_copy"]


def test_group_column_keeps_groups_together(tmp_path):
    root = make_competition(tmp_path / "c", per_class=12)
    table = pd.read_csv(root / "train.csv")
    table["patient"] = [f"p{i // 3}" for i in range(len(table))]
    table.to_csv(root / "train.csv", index=False)
    frame = make_fold_file(str(root), "train.csv", "train", "image", "label", "patient", 3, 0, tmp_path / "f.csv")
    frame["patient"] = table["patient"]
    assert (frame.groupby("patient")["fold"].nunique() == 1).all()


def test_fold_file_must_match_train_csv(tmp_path, competition):
    table = read_train_table(competition, "train.csv", "train", "image", "label")
    frame = make_fold_file(str(competition), "train.csv", "train", "image", "label", "", 3, 0, tmp_path / "f.csv")
    assert (read_folds(tmp_path / "f.csv", table, "image", "label") == frame["fold"].to_numpy()).all()
    frame.drop(index=4).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(UserError, match="missing.*re-run make_folds.py"):
        read_folds(tmp_path / "missing.csv", table, "image", "label")
    relabelled = frame.copy()
    relabelled.loc[0, "label"] = "owl"
    relabelled.to_csv(tmp_path / "relabelled.csv", index=False)
    with pytest.raises(UserError, match="has label 'owl' there"):
        read_folds(tmp_path / "relabelled.csv", table, "image", "label")


def test_class_with_fewer_images_than_folds_is_refused(tmp_path):
    root = make_competition(tmp_path / "c", per_class=2)
    with pytest.raises(UserError, match="class 'cat' has 2 image.*fewer than 3 folds"):
        make_fold_file(str(root), "train.csv", "train", "image", "label", "", 3, 0, tmp_path / "f.csv")
    assert not (tmp_path / "f.csv").exists()


def test_fold_argument_parsing_and_range_check():
    assert parse_fold_arg("all", 3) == [0, 1, 2]
    assert parse_fold_arg("0,2", 3) == [0, 2]
    with pytest.raises(UserError, match="out of range"):
        parse_fold_arg("5", 5)
    with pytest.raises(UserError, match="comma list"):
        parse_fold_arg("first", 5)


def test_fold_numbers_with_a_gap_are_refused(tmp_path, competition):
    table = read_train_table(competition, "train.csv", "train", "image", "label")
    frame = make_fold_file(str(competition), "train.csv", "train", "image", "label", "", 3, 0, tmp_path / "f.csv")
    frame.loc[frame["fold"] == 1, "fold"] = 3
    frame.to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(UserError, match=r"numbered 0..K-1.*found \[0, 2, 3\]"):
        read_folds(tmp_path / "gap.csv", table, "image", "label")


def test_repeated_folds_run_once():
    assert parse_fold_arg("1,0,1", 3) == [1, 0]


def test_blank_group_values_are_separate_groups_and_too_few_groups_are_refused(tmp_path):
    root = make_competition(tmp_path / "c", per_class=12)
    table = pd.read_csv(root / "train.csv")
    table["site"] = ""
    table.loc[:5, "site"] = "s1"
    table.to_csv(root / "train.csv", index=False)
    frame = make_fold_file(str(root), "train.csv", "train", "image", "label", "site", 3, 0, tmp_path / "f.csv")
    assert frame.loc[:5, "fold"].nunique() == 1 and frame["fold"].value_counts().max() <= 14
    table["site"] = np.where(np.arange(len(table)) % 2, "a", "b")
    table.to_csv(root / "train.csv", index=False)
    with pytest.raises(UserError, match="only 2 groups .* for 3 folds"):
        make_fold_file(str(root), "train.csv", "train", "image", "label", "site", 3, 0, tmp_path / "g.csv")


def test_two_competitions_in_folders_of_the_same_name_get_their_own_fold_files(tmp_path):
    first = make_competition(tmp_path / "a" / "data", classes=("cat", "dog", "owl"))
    second = make_competition(tmp_path / "b" / "data", classes=("ant", "bee", "fly"))
    folds_dir = tmp_path / "folds"
    for root in (first, second):
        make_fold_file(str(root), "train.csv", "train", "image", "label", "", 3, 0, None, folds_dir=folds_dir)
    written = sorted(p.name for p in folds_dir.glob("*.csv"))
    assert len(written) == 2 and all(name.startswith("data-") and name.endswith("_k3_s0.csv") for name in written)
    for root in (first, second):  # each finds its own, and it matches its train.csv
        table = read_train_table(root, "train.csv", "train", "image", "label")
        read_folds(default_folds_path(folds_dir, root, table), table, "image", "label")


def test_a_fold_file_made_from_another_train_csv_is_not_replaced_unless_asked(tmp_path):
    first = make_competition(tmp_path / "a", classes=("cat", "dog", "owl"))
    second = make_competition(tmp_path / "b", classes=("ant", "bee", "fly"))
    out = tmp_path / "folds.csv"
    make_fold_file(str(first), "train.csv", "train", "image", "label", "", 3, 0, out)
    before = out.read_bytes()
    make_fold_file(str(first), "train.csv", "train", "image", "label", "", 3, 0, out)  # same data: fine
    with pytest.raises(UserError, match="made from another train.csv.*--overwrite"):
        make_fold_file(str(second), "train.csv", "train", "image", "label", "", 3, 0, out)
    assert out.read_bytes() == before
    make_fold_file(str(second), "train.csv", "train", "image", "label", "", 3, 0, out, overwrite=True)
    assert out.read_bytes() != before


def test_a_fold_file_named_before_the_id_key_is_still_found(tmp_path, competition):
    table = read_train_table(competition, "train.csv", "train", "image", "label")
    legacy = tmp_path / "folds" / f"{competition.name}_k3_s0.csv"
    legacy.parent.mkdir()
    make_fold_file(str(competition), "train.csv", "train", "image", "label", "", 3, 0, legacy)
    assert default_folds_path(tmp_path / "folds", competition, table) == legacy
