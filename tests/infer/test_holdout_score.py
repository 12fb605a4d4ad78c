"""The holdout end to end on the small demo: make_folds.py --holdout, train.py (never sees the rows), infer.py (scores
them like a test set, beside the OOF table), and a fold file whose holdout changed afterwards (refused)."""
import pandas as pd
import pytest

from helpers import run_script, train


@pytest.fixture(scope="module")
def held_run(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout")
    folds = root / "folds_h20.csv"
    proc = run_script("make_folds.py", "--data-dir", str(demo["data"]), "--holdout", "0.2", "--out", str(folds),
                      "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "40 holdout rows" in proc.stdout  # 20 % of the 200 labelled digits
    proc = train(demo, "held", "--fold", "all", "--folds-csv", str(folds), runs=root / "runs")
    assert proc.returncode == 0, proc.stderr
    return root, folds, proc


@pytest.mark.slow
def test_no_fold_trains_or_validates_on_the_holdout_rows(held_run):
    root, folds, proc = held_run
    frame = pd.read_csv(folds, dtype=str)
    held = set(frame.loc[frame["fold"] == "holdout", "image"])
    assert len(held) == 40 and "+ 40 holdout rows set aside" in proc.stdout
    for k in range(5):
        run = root / "runs" / "held" / f"fold{k}"
        used = set(pd.read_csv(run / "train_rows.csv", dtype=str)["id"])
        used |= set(pd.read_csv(run / "oof.csv", dtype=str)["id"]) | set(pd.read_csv(run / "oof_final.csv", dtype=str)["id"])
        assert not used & held and len(used) == 160


@pytest.mark.slow
def test_infer_scores_the_holdout_like_a_test_set_and_writes_it_beside_the_oof_table(held_run, tmp_path):
    root, _, _ = held_run
    proc = run_script("infer.py", "--exp", "held", "--runs-dir", str(root / "runs"), "--out-dir", str(tmp_path),
                      "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "## Holdout (40 rows of the fold file that no fold trained, selected or tuned on)" in proc.stdout
    summary = pd.read_csv(root / "runs" / "held" / "holdout_summary.csv")
    assert summary["n"].eq(40).all() and summary["accuracy"].between(0, 1).all()
    assert summary["predictions"].iloc[-1] == "submission (what infer.py writes)"
    probs = pd.read_csv(tmp_path / "held_holdout_probs.csv", dtype={"id": str, "label": str})
    assert len(probs) == 40 and probs.filter(like="prob_").sum(axis=1).round(4).eq(1).all()
    assert (tmp_path / "held.csv").is_file()  # the submission as well
    alone = run_script("infer.py", "--exp", "held", "--runs-dir", str(root / "runs"), "--out-dir", str(tmp_path),
                       "--quiet", "--holdout-only", "--weights", "final")
    assert alone.returncode == 0, alone.stderr
    assert "No submission: --holdout-only" in alone.stdout and "each fold's final weights" in alone.stdout
    assert (tmp_path / "held-holdout_lb.json").is_file() and not (tmp_path / "held-holdout.csv").exists()


@pytest.mark.slow
def test_a_fold_file_whose_holdout_changed_after_training_is_refused_in_one_line(held_run, demo, tmp_path):
    root, folds, _ = held_run
    original = folds.read_text()
    frame = pd.read_csv(folds, dtype=str)
    moved = frame.index[frame["fold"] == "holdout"][0], frame.index[frame["fold"] == "0"][0]
    frame.loc[moved[0], "fold"], frame.loc[moved[1], "fold"] = "0", "holdout"  # one row swapped in, one out
    try:
        frame.to_csv(folds, index=False)  # as make_folds.py --overwrite with another holdout would leave it
        proc = run_script("infer.py", "--exp", "held", "--runs-dir", str(root / "runs"), "--out-dir",
                          str(tmp_path / "s"), "--quiet", "--holdout-only")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "holdout rows changed since training" in proc.stderr and not (tmp_path / "s").exists()
        resume = train(demo, "held", "--fold", "0", "--folds-csv", str(folds), "--resume", runs=root / "runs")
        assert resume.returncode == 2 and "holdout rows changed since training" in resume.stderr
    finally:
        folds.write_text(original)
