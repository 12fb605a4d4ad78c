"""runs.py's table and diff on fake run directories, and the per-experiment diagnostics."""

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from src.compare.run_table import config_diff, run_table, settings_changed, table_text
from src.core.errors import UserError
from src.core.rundir import write_json, write_oof
from src.train.config import TrainConfig
from src.train.diagnostics import most_confident_wrong, per_class_table, write_diagnostics

from helpers import run_script

CLASSES = ["a", "b"]


def fake_run(runs, exp, folds_done, correct, n_folds=2, **changes):
    """An experiment whose finished folds predict `correct` of their 4 validation rows right."""
    config = {**asdict(TrainConfig()), "exp": exp, **changes}
    for k in range(n_folds):
        run = runs / exp / f"fold{k}"
        run.mkdir(parents=True)
        write_json(run / "config.json", {"config": config, "classes": CLASSES, "n_folds": n_folds,
                                         "folds_csv": "folds/x.csv", "git_commit": "abc"})
        pd.DataFrame({"epoch": [0, 1, 2], "seconds": [20.0, 20.0, 20.0],
                      "val_accuracy": [0.5, 1.0, correct / 4]}).to_csv(run / "log.csv", index=False)
        if k < folds_done:
            (run / "best.pt").write_bytes(b"x")
            y = np.array([0, 1, 0, 1])
            probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
            write_oof(run, [f"{exp}{k}_{i}" for i in range(4)], y, probs, CLASSES, k)  # best.pt: all right
            probs[correct:] = probs[correct:, ::-1]
            write_oof(run, [f"{exp}{k}_{i}" for i in range(4)], y, probs, CLASSES, k, "oof_final.csv")


def test_table_sorts_by_oof_shows_changes_folds_and_the_newest_single_experiment_lb(tmp_path):
    runs, subs = tmp_path / "runs", tmp_path / "subs"
    fake_run(runs, "weak", 2, 2, lr=0.01)
    fake_run(runs, "strong", 2, 4, augment="heavy", device="cpu")
    fake_run(runs, "half", 1, 3)
    subs.mkdir()
    for name, exps, score, when in (("old", ["strong"], 0.5, "2026-01"), ("new", ["strong"], 0.8, "2026-02"),
                                    ("blend", ["strong", "weak"], 1.0, "2027-01")):
        write_json(subs / f"{name}_lb.json", {"experiments": exps, "public": 0.9, "private": score, "written": when})
    # A newer --holdout-only run: its holdout score joins the older submission's leaderboard scores.
    write_json(subs / "strong-holdout_lb.json", {"experiments": ["strong"], "holdout_accuracy": 0.75,
                                                 "public": None, "private": None, "written": "2026-03"})
    frame = run_table(runs, "accuracy", subs)
    assert list(frame["exp"]) == ["strong", "half", "weak"]
    assert frame.iloc[0]["holdout_accuracy"] == 0.75 and frame.iloc[0]["private"] == 0.8
    strong = frame.iloc[0]
    assert strong["changes"] == "augment=heavy" and strong["folds"] == "2/2"  # device is not a setting
    assert strong["oof_accuracy"] == 1.0 and strong["private"] == 0.8 and strong["train_minutes"] == 2.0
    assert frame.iloc[1]["folds"] == "1/2" and np.isnan(frame.iloc[1]["oof_accuracy_std"])
    # Sorted and shown by the final weights' OOF; best.pt's (all right in every fake run) beside it, marked.
    assert frame.iloc[2]["changes"] == "lr=0.01" and frame.iloc[2]["oof_accuracy"] == 0.5
    assert frame.iloc[2]["oof_accuracy_best"] == 1.0 and frame.iloc[2]["cv_epochs"] == 2
    text = table_text(frame, "accuracy")
    assert text.iloc[0]["OOF accuracy, final weights"] == "1.0000 ± 0.0000" and text.iloc[2]["public"] == ""
    assert text.iloc[2]["OOF accuracy, best.pt (optimistic)"] == "1.0000 ± 0.0000"
    by_loss = run_table(runs, "log_loss", subs)  # lower is better
    assert by_loss["oof_log_loss"].is_monotonic_increasing


def test_diff_lists_only_what_differs(tmp_path):
    fake_run(tmp_path, "a", 1, 4, lr=0.01)
    fake_run(tmp_path, "b", 1, 4, lr=0.02, epochs=45)
    diff = config_diff(tmp_path, "a", "b")
    assert set(diff["key"]) == {"lr", "epochs"}
    assert diff.set_index("key").loc["lr"].tolist() == ["0.01", "0.02"]
    with pytest.raises(UserError, match="no fold runs; names under"):
        config_diff(tmp_path, "a", "nope")


def test_settings_changed_ignores_where_and_how_fast():
    config = {**asdict(TrainConfig()), "exp": "x", "threads": 1, "runs_dir": "elsewhere", "epochs": 3}
    assert settings_changed(config) == {"epochs": 3}


def test_runs_script_prints_writes_and_refuses_an_empty_folder(tmp_path):
    fake_run(tmp_path / "runs", "only", 2, 3)
    out = tmp_path / "out" / "runs"
    proc = run_script("runs.py", "--runs-dir", str(tmp_path / "runs"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "only" in proc.stdout and "0.7500 ± 0.0000" in proc.stdout
    assert out.with_suffix(".md").read_text().startswith("# Runs, by OOF accuracy")
    assert pd.read_csv(out.with_suffix(".csv"))["exp"].tolist() == ["only"]
    (tmp_path / "empty").mkdir()
    proc = run_script("runs.py", "--runs-dir", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "no experiments" in proc.stderr


def test_per_class_table_and_most_confident_wrong():
    y = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.05, 0.95], [0.6, 0.4], [0.2, 0.8]])
    table = per_class_table(y, probs, CLASSES).set_index("class")
    assert table.loc["a", "recall"] == 0.5 and table.loc["b", "recall"] == pytest.approx(2 / 3)
    assert table.loc["a", "most often predicted as"] == "b (1)" and table.loc["a", "support"] == 2
    wrong = most_confident_wrong(list("vwxyz"), y, probs, CLASSES, top_n=5)
    assert wrong["id"].tolist() == ["w", "y"] and wrong["confidence"].tolist() == [0.7, 0.6]


def test_write_diagnostics_files(tmp_path):
    y = np.array([0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    images = np.zeros((3, 8, 8, 1), np.uint8)
    write_diagnostics(tmp_path, ["p", "q", "r"], y, probs, CLASSES, images)
    for name in ("confusion.png", "per_class.csv", "per_class.md", "wrong.png", "wrong.csv"):
        assert (tmp_path / name).is_file(), name
    assert pd.read_csv(tmp_path / "wrong.csv")["id"].tolist() == ["q"]
