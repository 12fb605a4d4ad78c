"""bench/few_labels.py: a few-labels competition from a labelled one, with its holdout fold file."""
import pandas as pd

from helpers import make_competition, run_script


def test_few_labels_splits_every_image_once_and_hides_the_unlabelled_labels(tmp_path):
    source = make_competition(tmp_path / "full", per_class=20)  # 60 images, 3 classes
    out = tmp_path / "few"
    proc = run_script("bench/few_labels.py", "--data-dir", str(source), "--labelled", "0.25", "--holdout", "0.2",
                      "--n-folds", "3", "--out-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    train = pd.read_csv(out / "train.csv")
    folds = pd.read_csv(next((tmp_path / "folds").glob("few-*_k3_s42_h20.csv")))
    hidden = pd.read_csv(out / "unlabeled_solution.csv")
    unlabeled = sorted(p.name for p in (out / "unlabeled").iterdir())
    assert (folds["fold"] == "holdout").sum() == 12 and (folds["fold"] != "holdout").sum() == 15  # 20 %, 25 % of 60
    assert sorted(train["image"]) == sorted(folds["image"]) and len(train) + len(unlabeled) == 60
    assert sorted(hidden["image"]) == unlabeled and not set(unlabeled) & set(train["image"])
    original = pd.read_csv(source / "train.csv").set_index("image")["label"]
    truth = original[[name.removesuffix(".png") for name in hidden["image"]]].values
    assert (hidden["label"] == truth).all()
    assert folds[folds["fold"] != "holdout"].groupby("fold")["label"].nunique().eq(3).all()  # stratified
    again = run_script("bench/few_labels.py", "--data-dir", str(source), "--out-dir", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr
