"""Label-error finder: planted flips rank first, confident-learning flags, recall against a truth file,
explicit corrections with a record, and the script end to end on a tiny experiment."""
import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.labels.issues import apply_corrections, label_issue_table, rank_label_issues, truth_recall

from helpers import copy_run, run_script


def noisy_probs(n=200, k=4, flips=(3, 50, 120), seed=0):
    """A good classifier's OOF probabilities for labels where `flips` rows were given a wrong label."""
    rng = np.random.default_rng(seed)
    true = np.arange(n) % k
    probs = rng.dirichlet(np.ones(k) * 0.3, size=n) * 0.2
    probs[np.arange(n), true] += 0.8
    probs = probs / probs.sum(1, keepdims=True)
    probs[list(flips)] = np.where(np.eye(k)[true[list(flips)]] > 0, 0.97, 0.01)  # confidently their true class
    given = true.copy()
    given[list(flips)] = (true[list(flips)] + 1) % k
    return given, probs, true


def test_planted_flips_rank_first_and_are_confident_learning_issues():
    given, probs, true = noisy_probs()
    ranked = rank_label_issues(given, probs)
    assert set(ranked["row"][:3]) == {3, 50, 120}
    assert ranked.set_index("row").loc[[3, 50, 120], "cl_issue"].all()
    assert ranked["cl_issue"].sum() == 3  # clean rows sit above their class threshold
    assert (ranked.set_index("row").loc[[3, 50, 120], "suggested"].to_numpy() == true[[3, 50, 120]]).all()
    assert ranked["margin"].is_monotonic_increasing


def test_table_and_truth_recall(tmp_path):
    given, probs, true = noisy_probs()
    classes = ["a", "b", "c", "d"]
    oof = pd.DataFrame({"id": [f"i{r}" for r in range(200)], "label": [classes[g] for g in given], "fold": 0})
    oof = pd.concat([oof, pd.DataFrame(probs, columns=[f"prob_{c}" for c in classes])], axis=1)
    table, _ = label_issue_table(oof, classes)
    assert list(table["id"][:3].sort_values()) == ["i120", "i3", "i50"] and table["score"].between(0, 1).all()
    truth = tmp_path / "flips.csv"
    pd.DataFrame({"image": ["i3", "i50", "i120"], "true_label": [classes[true[r]] for r in (3, 50, 120)]}).to_csv(
        truth, index=False)
    result = truth_recall(table, truth)
    assert result["recall_top10pct"] == 1.0 and result["suggestion_is_truth"] == 1.0
    assert result["cl_precision"] == 1.0 and result["median_rank_of_flipped"] == 2


def test_corrections_are_explicit_recorded_and_checked(tmp_path):
    train_csv = tmp_path / "train.csv"
    pd.DataFrame({"image": ["x", "y", "z"], "label": ["cat", "dog", "cat"]}).to_csv(train_csv, index=False)
    fixes = tmp_path / "fixes.csv"
    pd.DataFrame({"id": ["y"], "label": ["cat"]}).to_csv(fixes, index=False)
    out = tmp_path / "train_v2.csv"
    changes = apply_corrections(train_csv, fixes, out, "image", "label")
    assert pd.read_csv(out)["label"].tolist() == ["cat", "cat", "cat"]
    assert pd.read_csv(train_csv)["label"].tolist() == ["cat", "dog", "cat"]  # the original is untouched
    record = pd.read_csv(tmp_path / "train_v2.changes.csv")
    assert record[["id", "old_label", "new_label"]].values.tolist() == [["y", "dog", "cat"]] and len(changes) == 1
    for rows, message in (({"id": ["w"], "label": ["cat"]}, "line 2: id 'w' is not in"),
                          ({"id": ["x"], "label": ["kat"]}, "line 2: label 'kat' is not a class"),
                          ({"id": ["x", "x"], "label": ["dog", "cat"]}, "corrected twice")):
        pd.DataFrame(rows).to_csv(fixes, index=False)
        with pytest.raises(UserError, match=message):
            apply_corrections(train_csv, fixes, tmp_path / "bad.csv", "image", "label")
    assert not (tmp_path / "bad.csv").exists()
    with pytest.raises(UserError, match="new file"):
        apply_corrections(train_csv, fixes, train_csv, "image", "label")


@pytest.mark.slow
def test_label_errors_script_on_a_tiny_experiment(tiny_run, tmp_path):
    partial = copy_run(tiny_run, tmp_path / "runs")
    for k in (2, 3, 4):
        (partial / "tiny" / f"fold{k}" / "oof.csv").unlink()
    proc = run_script("label_errors.py", "--exp", "tiny", "--runs-dir", str(partial), "--out-dir", str(tmp_path))
    assert proc.returncode == 2 and "not finished" in proc.stderr  # folds 2-4 have no OOF yet
    proc = run_script("label_errors.py", "--exp", "tiny", "--runs-dir", str(tiny_run), "--out-dir", str(tmp_path),
                      "--top", "8")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "label_errors_tiny.csv", dtype={"id": str})
    assert len(table) == 200 and table["rank"].tolist() == list(range(1, 201)) and table["id"].is_unique
    assert (tmp_path / "label_errors_tiny.png").is_file() and "Label-error candidates" in proc.stdout
