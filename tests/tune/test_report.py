"""The study's reports, from a study of made-up trials (no training): the table, plots, summary and tuned config."""
from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from src.core.config import config_from_dict, config_to_dict, load_config_file
from src.train.config import TrainConfig
from src.tune.report import best_trial, trial_line, write_reports

DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "model": CategoricalDistribution(["a", "b"])}


def made_up_study(values: list[float | None], log_losses: list[float] | None = None,
                  one_image: float = 0.0, seconds: list[float] | None = None) -> optuna.Study:
    """A study whose trial k has lr 1e-3 * (k + 1); None makes a pruned trial with one reported epoch. With
    log_losses, the complete trials carry the attributes the near-tie rule reads; `seconds` sets their durations."""
    study = optuna.create_study(study_name="s", direction="maximize")
    for k, value in enumerate(values):
        params = {"lr": 1e-3 * (k + 1), "model": "ab"[k % 2]}
        attrs = {"config": config_to_dict(TrainConfig(lr=params["lr"], runs_dir="elsewhere", exp=f"trial{k}"))}
        if log_losses and value is not None:
            attrs.update(val_log_loss=log_losses[k], one_image=one_image)
        if value is None:
            attrs["note"] = "the pruner stopped it after fold 0 epoch 0"
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        trial = create_trial(state=state, value=value, params=params, distributions=DISTRIBUTIONS,
                             intermediate_values={0: 0.1} if value is None else {0: value}, user_attrs=attrs)
        if seconds:
            trial.datetime_start = datetime(2026, 1, 1)
            trial.datetime_complete = trial.datetime_start + timedelta(seconds=seconds[k])
        study.add_trial(trial)
    return study


def test_reports_name_the_best_trial_as_optimistic_and_the_tuned_config_trains_as_is(tmp_path):
    study = made_up_study([0.5, 0.9, None, 0.7, 0.6, 0.8])
    tuned = tmp_path / "tuned" / "s.yaml"
    lines = write_reports(study, tmp_path, "sqlite:///x.db", [0], "accuracy", tuned, ([3], 0.85))
    table = pd.read_csv(tmp_path / "trials.csv")
    assert list(table.columns[:6]) == ["trial", "state", "value", "fidelity", "seconds", "note"]
    assert list(table["state"]) == ["complete"] * 2 + ["pruned"] + ["complete"] * 3
    assert "best: trial 1, accuracy 0.9000 is the mean final-epoch value over the tuned fold(s) 0 (optimistic" in lines[3]
    assert "held-out fold(s) 3: accuracy 0.8500 (final epoch; never used to choose the config)" in lines
    for name in ("trials.md", "history.png", "importance.png", "summary.md"):
        assert (tmp_path / name).is_file(), name
    cfg = config_from_dict(load_config_file(tuned), TrainConfig).validate()
    assert (cfg.lr, cfg.exp, cfg.runs_dir) == (2e-3, "s", TrainConfig.runs_dir)


def test_without_a_complete_trial_there_is_no_tuned_config_and_the_line_says_why(tmp_path):
    study = made_up_study([None])
    lines = write_reports(study, tmp_path, "sqlite:///x.db", [0], "accuracy", tmp_path / "t.yaml", None)
    assert "no trial completed" in lines and not (tmp_path / "t.yaml").exists()
    assert any(line.startswith("no importance.png: it needs at least 2 complete trials") for line in lines)
    line = trial_line(study.trials[0], None, "accuracy")
    assert line.startswith("trial 0 pruned: the pruner stopped it after fold 0 epoch 0")
    assert line.endswith("best so far: none complete yet")


def test_a_one_image_lead_is_a_tie_that_goes_to_the_base_config_then_the_faster_trial(tmp_path):
    # 1,600 validation rows: 0.995 is one image above 0.994375 and two above 0.99375.
    values, step = [0.99375, 0.994375, 0.995, 0.994375], 1 / 1600
    # The old rule kept the lowest validation log loss among the tied (trial 1): a label-smoothed or mixup model's
    # log loss has a higher floor, so it chose the least regularised trial. Smoothing does not move time.
    study = made_up_study(values, log_losses=[0.05, 0.11, 0.15, 0.12], one_image=step, seconds=[50, 90, 80, 40])
    assert best_trial(study).number == 3  # the fastest of trials 1-3; trial 0 trails by two images
    lines = write_reports(study, tmp_path, "sqlite:///x.db", [0, 1], "accuracy", tmp_path / "t.yaml", None)
    assert any("trial 2 scored accuracy 0.9950, within one validation image of trial 3's 0.9944: a tie, and trial "
               "3 is kept because it trained faster (40 s vs 80 s)" in line for line in lines)
    assert "lr: 0.004" in (tmp_path / "t.yaml").read_text()
    # Among the tied, the base config wins: there is no evidence to move away from it.
    study.set_user_attr("base_config", config_to_dict(TrainConfig(lr=2e-3, model="b")))
    assert best_trial(study).number == 1
    # Without one image's step (another monitor) the top value wins.
    assert best_trial(made_up_study(values)).number == 2
