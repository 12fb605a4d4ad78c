"""The study: the budget, held-out folds, and pruning that really stops a trial's training between epochs."""
from __future__ import annotations

import time

import optuna
import pandas as pd
import pytest

from src.core.errors import UserError
from src.train.config import TrainConfig
from src.tune.pruning import RunningMean, progress_step
from src.tune.space import parse_space
from src.tune.study import TuneJob, check_folds, parse_budget
from src.tune.trials import BudgetStop, report_epoch, run_trials


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400)])
def test_a_budget_reads_as_hours_minutes_and_seconds(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["15", "15 min", "0m", "m", ""])
def test_a_budget_without_a_unit_is_an_error(text):
    with pytest.raises(UserError, match="--budget .*like 90s, 15m"):
        parse_budget(text)


def tiny_job(demo, tmp_path, epochs: int) -> TuneJob:
    base = TrainConfig(data_dir=str(demo["data"]), folds_csv=str(demo["folds"]), runs_dir=str(tmp_path),
                       epochs=epochs, batch_size=32, lr_warmup_epochs=0.5, tensorboard=False)
    return TuneJob("tiny", base, parse_space({"lr": [0.002, 0.001]}, "space.yaml"), [0], tmp_path / "tune")


def test_held_out_folds_must_differ_from_the_tuned_ones(demo):
    base = TrainConfig(data_dir=str(demo["data"]), folds_csv=str(demo["folds"]))
    val_rows = int(pd.read_csv(demo["folds"])["fold"].isin([0, 1]).sum())
    assert check_folds(base, "0,1", "3,4") == ([0, 1], [3, 4], val_rows)
    with pytest.raises(UserError, match="--holdout-folds 1,2: fold 1 is also tuned on"):
        check_folds(base, "0,1", "1,2")


def test_the_deadline_stops_a_running_trial_at_its_next_epoch(demo, tmp_path):
    job = tiny_job(demo, tmp_path, epochs=5)
    job.deadline = time.monotonic() - 1
    study = optuna.create_study(direction="maximize")
    with pytest.raises(BudgetStop, match="stopped by the --budget deadline after fold 0 epoch 2"):
        report_epoch(study.ask(), job, job.base, RunningMean(), [], 0, {"epoch": 2, "val_accuracy": 0.5})
    assert study.trials[0].intermediate_values == {6: 0.5}  # 3 of 5 epochs = 6 tenths, reported before stopping


@pytest.mark.parametrize("epochs", [1, 3, 10, 15, 30, 250])
def test_trials_of_any_length_report_at_the_same_schedule_tenths_once_each(epochs):
    for position in (0, 1):
        reported = [step for epoch in range(epochs) for step, first in [progress_step(position, epoch, epochs)]
                    if first]
        assert reported == sorted(set(reported)) and reported[-1] == 10 * (position + 1)
        if epochs >= 10:  # every tenth of the schedule, whatever its length: trials compare like for like
            assert reported == list(range(10 * position + 1, 10 * position + 11))


@pytest.mark.slow
def test_a_hopeless_trial_is_pruned_after_its_first_epoch(demo, tmp_path):
    """ThresholdPruner(lower=2) finds every accuracy hopeless: the trial must stop after epoch 0 of 3, through the
    trainer's on_epoch hook, and leave its log but no checkpoints."""
    job = tiny_job(demo, tmp_path, epochs=3)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    assert run_trials(study, job, n_trials=1) == 1
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["note"].startswith("the pruner stopped it after fold 0 epoch 0 (accuracy so far ")
    run = job.trials_dir / "trial0"
    assert len(pd.read_csv(run / "fold0" / "log.csv")) == 1
    assert "fold 0 epoch  0" in (run / "train.log").read_text()
    assert not list(run.rglob("*.pt"))
