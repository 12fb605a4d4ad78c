"""pseudo_label.py end to end on the small demo: per-fold pseudo-labels that only ever join training."""
import json

import pandas as pd
import pytest

from helpers import blank_final_weights, copy_run, run_script, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rounds(demo, tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo")
    runs = copy_run(tiny_run, root / "runs")  # round 0 is the shared tiny run
    blank_final_weights(runs / "tiny" / "fold0")  # fold 0's best.pt stays confident; its final weights are not
    proc = run_script("pseudo_label.py", "--exp", "tiny", "--runs-dir", str(runs), "--rounds", "1",
                      "--threshold", "0", "--max-per-class", "3", "--unlabeled-dir", "unlabeled_small",
                      "--tta", "none", "--out-dir", str(root / "pseudo"), "--report-dir", str(root / "reports"),
                      "--submissions-dir", str(root / "subs"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return root


def test_round_writes_per_fold_pseudo_labels_report_and_submission(rounds):
    report = pd.read_csv(rounds / "reports" / "pseudo_tiny.csv")
    assert report["round"].tolist() == [0, 1] and report["exp"].tolist() == ["tiny", "tiny-pl1"]
    assert report["oof_accuracy_final"].between(0, 1).all() and report["private"].between(0, 1).all()
    assert report["pseudo_accuracy"].iloc[1] >= 0  # the demo knows the unlabelled digits' labels
    assert (rounds / "reports" / "pseudo_tiny.md").read_text().startswith("# Pseudo-labelling")
    assert (rounds / "subs" / "tiny-pl1.csv").is_file()
    for name in ("tiny", "tiny-pl1"):  # scored from the weights that label, not best.pt's
        assert json.loads((rounds / "subs" / f"{name}_lb.json").read_text())["weights"] == "final"
    for k in range(5):
        frame = pd.read_csv(rounds / "pseudo" / "tiny-pl1" / f"fold{k}" / "pseudo.csv", dtype=str)
        assert frame["id"].str.startswith("unlabeled_small/").all()
        assert frame["label"].value_counts().max() <= 3
        meta = json.loads((rounds / "pseudo" / "tiny-pl1" / f"fold{k}" / "meta.json").read_text())
        assert meta["weights"].startswith("last.pt")


def test_pseudo_labels_come_from_the_final_weights_not_best_pt(rounds):
    # best.pt's epoch was chosen on the fold's validation labels; the blanked final weights predict 0.1 for
    # every class, so every fold-0 pseudo-label must carry confidence 0.1.
    frame = pd.read_csv(rounds / "pseudo" / "tiny-pl1" / "fold0" / "pseudo.csv")
    assert len(frame) == 3 and (frame["confidence"] == 0.1).all()
    other = pd.read_csv(rounds / "pseudo" / "tiny-pl1" / "fold1" / "pseudo.csv")
    assert (other["confidence"] > 0.1).all()


def test_pseudo_rows_train_the_fold_and_are_never_validated(demo, rounds):
    folds = pd.read_csv(demo["folds"], dtype=str)
    for k in range(5):
        run = rounds / "runs" / "tiny-pl1" / f"fold{k}"
        pseudo = set(pd.read_csv(rounds / "pseudo" / "tiny-pl1" / f"fold{k}" / "pseudo.csv", dtype=str)["id"])
        trained = set(pd.read_csv(run / "train_rows.csv", dtype=str)["id"])
        validated = set(pd.read_csv(run / "oof.csv", dtype=str)["id"])
        assert pseudo <= trained and not pseudo & validated
        assert validated == set(folds.loc[folds["fold"] == str(k), "image"])
        record = json.loads((run / "config.json").read_text())["extra_rows"]["pseudo"]
        assert record["rows"] == len(pseudo) and record["sources"] == ["unlabeled_small"]


def test_train_refuses_pseudo_labels_of_another_fold(demo, rounds):
    proc = train(demo, "pl-leak", "--fold", "1", "--pseudo", str(rounds / "pseudo" / "tiny-pl1" / "fold0"),
                 runs=rounds / "runs")
    assert proc.returncode == 2 and "made for fold 0, not fold 1" in proc.stderr


def test_bad_arguments_end_in_one_line(tmp_path):
    proc = run_script("pseudo_label.py", "--exp", "nope", "--runs-dir", str(tmp_path), "--quiet")
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "no trained folds" in proc.stderr
    proc = run_script("pseudo_label.py", "--exp", "nope", "--rounds", "0", "--quiet")
    assert proc.returncode == 2 and "--rounds must be >= 1" in proc.stderr


def test_soft_pseudo_labels_train_and_are_recorded(demo, rounds):
    proc = train(demo, "pl-soft", "--fold", "0", "--pseudo", str(rounds / "pseudo" / "tiny-pl1"),
                 "--pseudo-soft", runs=rounds / "runs")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((rounds / "runs" / "pl-soft" / "fold0" / "config.json").read_text())
    assert record["config"]["pseudo_soft"] is True and record["extra_rows"]["pseudo"]["rows"] > 0
    proc = train(demo, "pl-soft-focal", "--fold", "0", "--pseudo", str(rounds / "pseudo" / "tiny-pl1"),
                 "--pseudo-soft", "--loss", "focal", runs=rounds / "runs")
    assert proc.returncode == 2 and "pseudo_soft needs" in proc.stderr
