"""The study's reports, from a study of made-up trials (no training): the table, plots, summary and tuned config."""
from __future__ import annotations

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from src.core.config import config_from_dict, config_to_dict, load_config_file
from src.train.config import TrainConfig
from src.tune.report import best_trial, trial_line, write_reports

DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "model": CategoricalDistribution(["a", "b"])}


def made_up_study(values: list[float | None], log_losses: list[float] | None = None,
                  one_image: float = 0.0) -> optuna.Study:
    """A study whose trial k has lr 1e-3 * (k + 1); None makes a pruned trial with one reported epoch. With
    log_losses, the complete trials carry the attributes the near-tie rule reads."""
    study = optuna.create_study(study_name="s", direction="maximize")
    for k, value in enumerate(values):
        params = {"lr": 1e-3 * (k + 1), "model": "ab"[k % 2]}
        attrs = {"config": config_to_dict(TrainConfig(lr=params["lr"], runs_dir="elsewhere", exp=f"trial{k}"))}
        if log_losses and value is not None:
            attrs.update(val_log_loss=log_losses[k], one_image=one_image)
        if value is None:
            attrs["note"] = "the pruner stopped it after fold 0 epoch 0"
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        study.add_trial(create_trial(state=state, value=value, params=params, distributions=DISTRIBUTIONS,
                                     intermediate_values={0: 0.1} if value is None else {0: value}, user_attrs=attrs))
    return study


def test_reports_name_the_best_trial_as_optimistic_and_the_tuned_config_trains_as_is(tmp_path):
    study = made_up_study([0.5, 0.9, None, 0.7, 0.6, 0.8])
    tuned = tmp_path / "tuned" / "s.yaml"
    lines = write_reports(study, tmp_path, "sqlite:///x.db", [0], "accuracy", tuned, ([3], 0.85))
    table = pd.read_csv(tmp_path / "trials.csv")
    assert list(table.columns[:5]) == ["trial", "state", "value", "seconds", "note"]
    assert list(table["state"]) == ["complete"] * 2 + ["pruned"] + ["complete"] * 3
    assert "best: trial 1, accuracy 0.9000 is the mean over the tuned fold(s) 0 (optimistic" in lines[2]
    assert "held-out fold(s) 3: accuracy 0.8500 (never used to choose the config)" in lines
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


def test_a_one_image_lead_is_a_tie_broken_by_validation_log_loss(tmp_path):
    # 1,600 validation rows: 0.995 is one image above 0.994375 and two above 0.99375.
    values, step = [0.99375, 0.994375, 0.995, 0.994375], 1 / 1600
    study = made_up_study(values, log_losses=[0.05, 0.11, 0.15, 0.12], one_image=step)
    assert best_trial(study).number == 1  # trial 0 has the lowest log loss but trails by two images
    lines = write_reports(study, tmp_path, "sqlite:///x.db", [0, 1], "accuracy", tmp_path / "t.yaml", None)
    assert any("trial 2 scored accuracy 0.9950, within one validation image; trial 1 has the lower validation log "
               "loss (0.1100 vs 0.1500)" in line for line in lines)
    assert "lr: 0.002" in (tmp_path / "t.yaml").read_text()
    # Without the attributes (another monitor, or a study from before the rule) the top value wins as before.
    assert best_trial(made_up_study(values)).number == 2
