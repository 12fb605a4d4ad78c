"""The study's biases and failure modes, fixed, on trials whose training is faked (no training runs): the final-epoch
objective, like-for-like pruning on later folds, interrupts, kills, the budget, foreign errors, held-out runs per
process, conditional keys, and configs whose epoch points clash with a searched `epochs`."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from src.core.config import config_from_dict, config_to_dict, load_config_file
from src.core.errors import UserError
from src.train.config import TrainConfig
from src.tune import trials
from src.tune.pruning import StepMedianPruner
from src.tune.space import base_config, check_space, load_space, parse_space, sample, trial_config
from src.tune.study import TuneJob, open_study, recover
from src.tune.trials import holdout_runs_dir, run_trials

from helpers import REPO, run_script


def job_for(tmp_path, space: dict | None = None, folds=(0,), **base) -> TuneJob:
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), epochs=4, **base)
    return TuneJob("t", cfg, parse_space(space or {"lr": [0.002, 0.001]}, "space.yaml"), list(folds),
                   tmp_path / "tune")


def fake_training(results_for, calls: list | None = None):
    """A stand-in for trials.train_logged: reports each epoch of each fold through on_epoch, then returns the results
    `results_for(cfg)` gives (a list per fold of {metric: value}), or raises what it returns."""
    def train_logged(cfg, folds, quiet, fold_source, on_epoch=None, validate_last_only=False):
        outcome = results_for(cfg)
        if calls is not None:
            calls.append(cfg)
        if isinstance(outcome, BaseException):
            raise outcome
        for fold, result in zip(folds, outcome):
            for epoch in range(cfg.epochs):
                if on_epoch is not None:
                    on_epoch(fold, {"epoch": epoch, "val_accuracy": result["final_accuracy"]})
        return outcome
    return train_logged


def test_the_objective_is_the_mean_final_epoch_metric_not_the_best_epoch(tmp_path, monkeypatch):
    job = job_for(tmp_path, folds=(0, 1))
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [
        {"accuracy": 0.99, "final_accuracy": 0.90, "log_loss": 0.1}, {"accuracy": 0.97, "final_accuracy": 0.80,
                                                                       "log_loss": 0.2}]))
    study = optuna.create_study(direction="maximize")
    run_trials(study, job, n_trials=1)
    trial = study.trials[0]
    assert trial.value == pytest.approx(0.85) and trial.user_attrs["best_epoch_value"] == pytest.approx(0.98)


def test_pruning_on_a_later_fold_compares_the_same_step_not_a_trial_s_best_so_far():
    """Three complete trials reported 0.70 at step 12 (fold 1, 2 tenths in). A trial that peaked at 0.90 on fold 0
    but stands at 0.60 at step 12 is worse there: Optuna's MedianPruner keeps it (its best over all steps, 0.90,
    beats the median), the step-wise pruner stops it."""
    study = optuna.create_study(direction="maximize")
    dist = {"lr": FloatDistribution(1e-4, 1e-2)}
    for k in range(3):
        study.add_trial(create_trial(value=0.7, params={"lr": 1e-3}, distributions=dist,
                                     intermediate_values={8: 0.7, 12: 0.7}))
    running = create_trial(state=TrialState.RUNNING, params={"lr": 2e-3}, distributions=dist,
                           intermediate_values={8: 0.9, 12: 0.6})
    assert not optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3).prune(study, running)
    assert StepMedianPruner().prune(study, running)
    running.intermediate_values[12] = 0.75
    assert not StepMedianPruner().prune(study, running)


def test_the_running_mean_reported_on_a_second_fold_starts_from_the_first_fold_s_final_value(tmp_path, monkeypatch):
    job = job_for(tmp_path, folds=(0, 1))
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [
        {"accuracy": 0.9, "final_accuracy": 0.9}, {"accuracy": 0.5, "final_accuracy": 0.5}]))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    run_trials(study, job, n_trials=1)
    steps = study.trials[0].intermediate_values
    assert steps[10] == pytest.approx(0.9) and steps[20] == pytest.approx(0.7)  # mean(0.9, 0.5) on fold 1


def test_an_error_that_is_not_the_kits_fails_that_trial_and_the_study_goes_on(tmp_path, monkeypatch):
    job = job_for(tmp_path)
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: RuntimeError(
        "CUDA out of memory. Tried to allocate 2.00 GiB") if cfg.lr == 0.002 else [{"accuracy": 0.8,
                                                                                 "final_accuracy": 0.8}]))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"lr": 0.002})
    study.enqueue_trial({"lr": 0.001})
    assert run_trials(study, job, n_trials=2) == 2
    failed, done = study.trials
    assert failed.state == TrialState.FAIL and done.state == TrialState.COMPLETE
    assert failed.user_attrs["note"] == "error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "Traceback" in (job.trials_dir / "trial0" / "train.log").read_text()


def test_a_budget_stopped_trial_is_failed_with_its_reason_not_pruned(tmp_path, monkeypatch):
    job = job_for(tmp_path)
    job.deadline = time.monotonic() + 3600

    def spend_the_budget(cfg):
        job.deadline = time.monotonic() - 1  # spent while the trial trains: its next epoch report stops it
        return [{"accuracy": 0.8, "final_accuracy": 0.8}]

    monkeypatch.setattr(trials, "train_logged", fake_training(spend_the_budget))
    study = optuna.create_study(direction="maximize")
    job.deadline = time.monotonic() + 3600
    assert run_trials(study, job, n_trials=1) == 1
    trial = study.trials[0]
    # TPE ignores failed trials; a pruned one would teach it that these values are bad.
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["note"] == "stopped by the --budget deadline after fold 0 epoch 0"


def test_no_trial_starts_that_cannot_finish_before_the_deadline(tmp_path, monkeypatch):
    job = job_for(tmp_path)
    calls = []
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [{"accuracy": 0.8, "final_accuracy": 0.8}], calls))
    study = optuna.create_study(direction="maximize")
    slow = create_trial(value=0.8, params={"lr": 0.002}, distributions={"lr": optuna.distributions.
                                                                         CategoricalDistribution([0.002, 0.001])})
    slow.datetime_start = datetime(2026, 1, 1)
    slow.datetime_complete = slow.datetime_start + timedelta(seconds=100)  # the shortest trial so far: 100 s
    study.add_trial(slow)
    job.deadline = time.monotonic() + 10
    assert run_trials(study, job, n_trials=None) == 0 and not calls and len(study.trials) == 1
    job.deadline = time.monotonic() + 120  # 100 s fit; 100 s plus a 100 s held-out fold do not
    assert run_trials(study, job, n_trials=None, holdout_folds=1) == 0
    assert run_trials(study, job, n_trials=1) == 1 and len(calls) == 1


def test_held_out_runs_of_processes_that_joined_one_study_go_to_their_own_folders(tmp_path):
    job = job_for(tmp_path)
    best = create_trial(value=0.8, params={}, distributions={})
    assert holdout_runs_dir(job, best, "host:1") != holdout_runs_dir(job, best, "host:2")


def test_an_interrupt_is_recorded_and_resume_trains_the_interrupted_trial_again(tmp_path, monkeypatch):
    job = job_for(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(job, storage, resume=False, pruner="none")  # queues the base config: trial 0
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, job, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["note"].startswith("interrupted")
    calls = []
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [{"accuracy": 0.8, "final_accuracy": 0.8}], calls))
    resumed = open_study(job, storage, resume=True, pruner="none")
    run_trials(resumed, job, n_trials=1)
    again = resumed.trials[1]
    assert again.state == TrialState.COMPLETE and again.user_attrs["retry_of"] == 0
    assert calls[0].lr == job.base.lr  # the base config, not lost to the interrupt
    assert recover(resumed) == []  # queued again once, not on every resume


def test_a_trial_whose_process_was_killed_is_failed_and_queued_again_on_resume(tmp_path):
    job = job_for(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(job, storage, resume=False, pruner="none")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trial = study.ask()
    trial.set_user_attr("owner", f"{__import__('socket').gethostname()}:{int(dead.stdout)}")  # SIGKILLed mid-trial
    other = study.ask()
    other.set_user_attr("owner", "another-host:1")  # may still be running there: left alone
    lines = recover(optuna.load_study(study_name="t", storage=storage))
    states = [t.state for t in optuna.load_study(study_name="t", storage=storage).trials]
    assert states[:2] == [TrialState.FAIL, TrialState.RUNNING] and states[2] == TrialState.WAITING
    assert any("left running by a process that no longer exists" in line for line in lines)


def test_keys_that_change_nothing_given_the_others_are_not_sampled():
    space = parse_space({"augment": ["photo"], "flips": ["none", "h"], "loss": ["ce"],
                         "label_smoothing": {"low": 0.0, "high": 0.2}, "lr": [0.001, 0.002]}, "space.yaml")
    trial = optuna.create_study().ask()
    values = sample(trial, space.params, TrainConfig())
    # photo always mirrors (none trains as h); ce has no smoothing: neither key spends a dimension
    assert set(values) == {"augment", "loss", "lr"} and set(trial.params) == {"augment", "loss", "lr"}
    light = sample(optuna.create_study().ask(), parse_space({"augment": ["light"], "flips": ["none", "h"]},
                                                            "s.yaml").params, TrainConfig())
    assert set(light) == {"augment", "flips"}


def test_a_mixing_config_is_tunable_and_epoch_points_keep_their_share_of_a_searched_epochs(tmp_path):
    config = tmp_path / "photo.yaml"  # the photo recipe configs/photo.yaml held until the dev suite retired it
    config.write_text("model: smallresnet\naugment: photo\nmixup_alpha: 0.2\nmixup_off_epoch: 16\nepochs: 20\n")
    base, space = base_config(str(config), load_space(REPO / "configs" / "search" / "default.yaml"), {})
    check_space(space, base)  # refused before the fix: mixup_alpha 0 clashed with the base's mixup_off_epoch
    assert trial_config(base, {"mixup_alpha": 0.0}).mixup_off_epoch == 0
    assert trial_config(base, {"epochs": 10}).mixup_off_epoch == round(base.mixup_off_epoch * 10 / base.epochs)
    with pytest.raises(UserError, match=r"mixup_off_epoch \(16\) must be below epochs \(12\)"):
        config_from_dict({"epochs": 12}, TrainConfig, base=base).validate()


def test_report_writes_an_existing_study_s_files_and_runs_nothing(demo, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [{"accuracy": 0.9, "final_accuracy": 0.8,
                                                                            "log_loss": 0.3}], calls))
    common = ["--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]), "--runs-dir", str(tmp_path / "runs"),
              "--tuned-dir", str(tmp_path / "tuned"), "--name", "r", "--quiet"]
    missing = run_script("tune.py", *common, "--report")
    assert missing.returncode == 2 and "no study 'r'" in missing.stderr
    assert run_script("tune.py", *common, "--trials", "2").returncode == 0 and len(calls) == 2
    (tmp_path / "runs" / "tune" / "r" / "summary.md").unlink()
    (tmp_path / "tuned" / "r.yaml").unlink()
    proc = run_script("tune.py", *common, "--report")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2 and (tmp_path / "runs" / "tune" / "r" / "summary.md").is_file()
    assert config_to_dict(config_from_dict(load_config_file(tmp_path / "tuned" / "r.yaml"), TrainConfig))


def test_an_interrupted_tune_py_still_writes_its_reports(demo, tmp_path, monkeypatch):
    outcomes = iter([[{"accuracy": 0.9, "final_accuracy": 0.8, "log_loss": 0.3}], KeyboardInterrupt()])
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: next(outcomes)))
    proc = run_script("tune.py", "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]), "--runs-dir",
                      str(tmp_path / "runs"), "--tuned-dir", str(tmp_path / "tuned"), "--name", "i", "--trials", "5",
                      "--quiet")
    assert proc.returncode == 130, proc.stderr
    summary = (tmp_path / "runs" / "tune" / "i" / "summary.md").read_text()
    assert "1 complete" in summary and "1 fail" in summary and "tune.py --resume trains them again" in summary
    assert (tmp_path / "tuned" / "i.yaml").is_file()


def test_a_study_whose_trials_never_started_still_gets_its_reports(tmp_path):
    from src.tune.report import write_reports
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"lr": 0.002})  # the base config, queued; the budget ran out before it started
    lines = write_reports(study, tmp_path, "sqlite:///x.db", [0], "accuracy", tmp_path / "t.yaml", None)
    assert "no trial completed" in lines and (tmp_path / "summary.md").is_file()


def test_a_study_scored_under_the_old_best_epoch_objective_cannot_be_resumed(tmp_path):
    job = job_for(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(job, storage, resume=False, pruner="none")
    assert study.user_attrs["objective"].startswith("mean final-epoch")
    study._storage.set_study_user_attr(study._study_id, "objective", None)  # as a study made before the change
    with pytest.raises(UserError, match="scored with another objective"):
        open_study(job, storage, resume=True, pruner="none")


def test_report_keeps_the_held_out_score_an_earlier_call_computed(demo, tmp_path, monkeypatch):
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [{"accuracy": 0.9, "final_accuracy": 0.7,
                                                                            "log_loss": 0.3}] * 2))
    common = ["--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]), "--runs-dir", str(tmp_path / "runs"),
              "--tuned-dir", str(tmp_path / "tuned"), "--name", "h", "--quiet"]
    assert run_script("tune.py", *common, "--trials", "1", "--holdout-folds", "1").returncode == 0
    proc = run_script("tune.py", *common, "--report")
    assert proc.returncode == 0, proc.stderr
    assert "held-out fold(s) 1: accuracy 0.7000 (final epoch" in proc.stdout
