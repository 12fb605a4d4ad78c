"""tune.py end to end on the small demo: a study writes a tuned config train.py takes as is, --resume adds trials
to the same study, and bad input stops it before any trial."""
from __future__ import annotations

import optuna
import pandas as pd
import pytest

from src.core.config import config_from_dict, load_config_file
from src.train.config import TrainConfig

from helpers import run_script


def tune(demo, tmp_path, *extra):
    """tune.py on the demo with one-epoch smallcnn trials (flags fix epochs and model, so they are not searched)."""
    return run_script("tune.py", "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]),
                      "--runs-dir", str(tmp_path / "runs"), "--tuned-dir", str(tmp_path / "tuned"), "--name", "t",
                      "--epochs", "1", "--model", "smallcnn", "--batch-size", "32", "--no-tensorboard", "--quiet",
                      "--amp", "off", "--channels-last", "off",
                      *extra)


@pytest.mark.slow
def test_a_study_writes_a_tuned_config_train_py_accepts_and_resume_adds_trials(demo, tmp_path):
    proc = tune(demo, tmp_path, "--trials", "2", "--folds", "0,2", "--holdout-folds", "1")
    assert proc.returncode == 0, proc.stderr
    study_dir = tmp_path / "runs" / "tune" / "t"
    trials = pd.read_csv(study_dir / "trials.csv")
    assert list(trials["trial"]) == [0, 1] and set(trials["state"]) == {"complete"}
    assert trials.loc[0, "lr"] == TrainConfig.lr  # trial 0 is the base config
    assert "tuning on fold(s) 0,2, so the best value is optimistic" in proc.stdout
    header = proc.stdout.splitlines()[0]  # what every trial shares, not only the searched keys a flag removed
    assert "set by flags: amp=off, batch_size=32, channels_last=off, epochs=1," in header and "model=smallcnn" in header
    assert "held-out fold(s) 1: accuracy" in proc.stdout
    for name in ("trials.md", "history.png", "summary.md"):
        assert (study_dir / name).is_file(), name
    summary = (study_dir / "summary.md").read_text()  # the base config in full, one cheap run (--fidelity halving)
    assert "full 1 (1 complete)" in summary and "1/27 of a full run 1 (1 complete)" in summary
    assert "no importance.png: it needs at least 2 complete trials at one fidelity, the study has 1" in summary
    assert not list(study_dir.rglob("trials/**/*.pt"))  # trials keep logs and configs, not weights
    # Each complete trial carries what the near-tie rule needs (one image's worth of the mean accuracy over the tuned
    # folds: one row of their validation rows together); its value is the final epochs', the best epochs' beside it.
    val_rows = int(pd.read_csv(demo["folds"])["fold"].isin([0, 2]).sum())
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{study_dir / 'study.db'}")
    for trial in study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        assert trial.user_attrs["one_image"] == pytest.approx(1 / val_rows)
        assert trial.value <= trial.user_attrs["best_epoch_value"] <= 1

    tuned = tmp_path / "tuned" / "t.yaml"
    text = tuned.read_text()
    assert "optimistic" in text.splitlines()[1] and "held-out fold(s) 1" in text
    cfg = config_from_dict(load_config_file(tuned), TrainConfig, source=str(tuned)).validate()
    assert cfg.exp == "t" and cfg.runs_dir == TrainConfig.runs_dir and cfg.epochs == 1
    assert run_script("train.py", "--config", str(tuned), "--print-config").returncode == 0

    again = tune(demo, tmp_path, "--trials", "1", "--folds", "0,2")
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = tune(demo, tmp_path, "--trials", "1", "--folds", "0,2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert list(pd.read_csv(study_dir / "trials.csv")["trial"]) == [0, 1, 2]
    changed = tune(demo, tmp_path, "--trials", "1", "--folds", "0,2", "--resume", "--batch-size", "16")
    assert changed.returncode == 2 and "made with another batch_size" in changed.stderr


def test_a_bad_space_or_no_end_stops_before_any_trial(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("augment: [light, sparkly]\n")
    proc = run_script("tune.py", "--space", str(space), "--trials", "1", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"{space}: augment: 'sparkly' is refused" in proc.stderr
    assert not (tmp_path / "runs").exists()
    proc = run_script("tune.py", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "--budget" in proc.stderr
