"""Multi-fidelity search (successive halving) on faked training: rung sizes, promotions, the base config at full
fidelity, the pick among full-fidelity runs only, the budget planner and the reports."""
from __future__ import annotations

import dataclasses
import time

import pytest
from test_trials import fake_training

from src.core.errors import UserError
from src.train.config import TrainConfig
from src.tune import trials
from src.tune.fidelity import Planner, fidelity_values, full_run_s, rung_of
from src.tune.report import best_trial, trials_frame, write_reports
from src.tune.space import parse_space, trial_config
from src.tune.study import TuneJob, open_study, stored_schedule
from src.tune.trials import run_trials

from helpers import run_script


def halving_job(tmp_path, halving: bool = True) -> TuneJob:
    cfg = TrainConfig(runs_dir=str(tmp_path / "runs"), epochs=30, lr=1e-3)
    space = parse_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "space.yaml")
    return TuneJob("t", cfg, space, [0], tmp_path / "tune", halving=halving)


def test_cheaper_rungs_shorten_epochs_rows_and_every_epoch_count_alike_and_full_fidelity_is_untouched():
    base = TrainConfig(epochs=30, lr_warmup_epochs=3.0, mixup_alpha=0.2, mixup_off_epoch=24)
    schedule = {"lr_step_epochs": 2, "plateau_patience_epochs": 1}  # 5 and 2 of 30 epochs
    assert fidelity_values({"lr": 1e-3}, base, 1) == {"lr": 1e-3, "epochs": 10, "train_fraction": 0.3333,
                                                      "lr_warmup_epochs": 1.0, "mixup_off_epoch": 8, **schedule}
    assert fidelity_values({"lr": 1e-3}, base, 0) == {"lr": 1e-3, "epochs": 6, "train_fraction": 0.1925,
                                                      "lr_warmup_epochs": 0.6, "mixup_off_epoch": 5,
                                                      "lr_step_epochs": 1, "plateau_patience_epochs": 1}
    # A searched 20 epochs: its full run stops mixup at 16 (dependent_values), the cheap one at 16 * 12 / 20.
    assert fidelity_values({"epochs": 20}, base, 2) == {"epochs": 12, "train_fraction": 0.5774, "lr_warmup_epochs": 1.8,
                                                        "mixup_off_epoch": 10, "lr_step_epochs": 3,
                                                        "plateau_patience_epochs": 1}
    assert fidelity_values({"lr": 1e-3}, base, 3) == {"lr": 1e-3}
    half = dataclasses.replace(base, train_fraction=0.5)  # a base that subsamples: cheap rungs take a share of it
    assert fidelity_values({}, half, 2)["train_fraction"] == pytest.approx(0.2887, abs=1e-4)
    tiny = fidelity_values({}, dataclasses.replace(base, epochs=2, mixup_off_epoch=1), 0)
    assert tiny["epochs"] == 1 and tiny["mixup_off_epoch"] == 0  # no room left for a switch point
    for rung in (0, 1, 2):  # every cheap config still validates
        trial_config(base, fidelity_values({}, base, rung))


def test_halving_runs_the_base_config_in_full_first_promotes_the_best_and_never_picks_a_cheap_run(tmp_path,
                                                                                                    monkeypatch):
    calls = []
    # Cheap runs score far higher than any full one: a pick among all runs would take one of them.
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [
        {"accuracy": 0.5, "final_accuracy": min(0.99, 10 * cfg.lr + (0.4 if cfg.train_fraction < 1 else 0))}],
        calls))
    job = halving_job(tmp_path)
    study = open_study(job, f"sqlite:///{tmp_path / 'study.db'}", resume=False, pruner="none")
    assert run_trials(study, job, n_trials=41) == 41
    runs = study.trials
    assert (rung_of(runs[0]), runs[0].params["lr"], calls[0].epochs, calls[0].train_fraction) == (3, 1e-3, 30, 1.0)
    rungs = [rung_of(t) for t in runs]
    counts = [rungs.count(r) for r in range(4)]  # asynchronous: a run in the best third so far is promoted at once
    assert counts[0] > counts[1] > counts[2] >= 1 and counts[3] >= 2  # the base and at least one promoted in full
    for t in runs[1:]:
        if "promoted_from" in t.user_attrs:
            source = study.trials[t.user_attrs["promoted_from"]]
            assert source.params == t.params and rung_of(source) == rung_of(t) - 1
            below = [s.value for s in runs[:t.number] if rung_of(s) == rung_of(source)]
            assert source.value >= sorted(below)[-(len(below) // 3)]  # in the best third when promoted
    assert [c.epochs for c, t in zip(calls, runs) if rung_of(t) == 2] == [17] * counts[2]
    assert [c.epochs for c, t in zip(calls, runs) if rung_of(t) == 1] == [10] * counts[1]
    best = best_trial(study)
    assert rung_of(best) == 3 and best.value < max(t.value for t in runs)
    frame = trials_frame(study)
    assert list(frame["fidelity"][:2]) == ["full", "1/27"]
    lines = write_reports(study, tmp_path / "tune", "sqlite://", [0], "accuracy", tmp_path / "tuned.yaml", None)
    assert any(f"{counts[0] + 1} configurations; runs at each fidelity: 1/27 of a full run {counts[0]} ({counts[0]} "
               f"complete), 1/9 of a full run {counts[1]} ({counts[1]} complete), 1/3 of a full run {counts[2]} "
               f"({counts[2]} complete), full {counts[3]} ({counts[3]} complete)" in line for line in lines)
    assert "| fidelity |" in (tmp_path / "tune" / "trials.md").read_text()


def test_the_planner_starts_a_cheap_run_only_when_a_full_run_still_fits_after_it():
    planner = Planner(deadline=time.monotonic() + 100)
    planner.full_s = 90.0
    assert planner.fits(3) and planner.fits(0) and planner.fits(2)
    assert planner.fits(0, then_full=True)  # 3.3 + 90 s < 100 s
    planner.next_full_s = 120.0  # the leading candidate is slower in full than the base config
    assert not planner.fits(0, then_full=True) and not planner.fits(2, then_full=True)
    assert planner.fits(3, then_full=True)  # a full run needs no full run after it
    assert not planner.fits(3, seconds=101.0)  # a promotion sized by its own estimate
    planner.reserve_s = 97.0  # the held-out folds after the study
    assert not planner.fits(0)
    assert Planner(deadline=None).fits(0, then_full=True)


def test_a_cheap_runs_full_estimate_scales_its_training_seconds_alone():
    assert full_run_s(seconds=20.0, train_s=12.0, images_share=1 / 27) == pytest.approx(8.0 + 12.0 * 27)
    assert full_run_s(seconds=229.0, train_s=220.0, images_share=1.0) == pytest.approx(229.0)


def test_each_trial_records_its_estimate_in_full_from_the_epochs_training_seconds(tmp_path, monkeypatch):
    def train_logged(cfg, folds, quiet, fold_source, on_epoch=None, validate_last_only=False):
        for epoch in range(cfg.epochs):
            on_epoch(folds[0], {"epoch": epoch, "val_accuracy": 0.5, "train_seconds": 1.0})
        return [{"accuracy": 0.5, "final_accuracy": 0.5}]

    monkeypatch.setattr(trials, "train_logged", train_logged)
    job = halving_job(tmp_path)
    study = open_study(job, f"sqlite:///{tmp_path / 'study.db'}", resume=False, pruner="none")
    run_trials(study, job, n_trials=2)
    base, cheap = study.trials
    assert base.user_attrs["full_run_s"] == pytest.approx(0.0, abs=1.0)  # 30 s of training, as long in full
    share = (6 * 0.1925) / 30  # 6 of 30 epochs on 19.25 % of the rows
    assert cheap.user_attrs["full_run_s"] == pytest.approx(6.0 / share - 6.0, abs=1.0)


def test_near_the_deadline_the_best_cheap_run_goes_straight_to_full_fidelity_instead_of_new_ones(tmp_path,
                                                                                                   monkeypatch):
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [
        {"accuracy": 0.5, "final_accuracy": 10 * cfg.lr}]))
    job = halving_job(tmp_path)
    study = open_study(job, f"sqlite:///{tmp_path / 'study.db'}", resume=False, pruner="none")
    run_trials(study, job, n_trials=3)  # the base in full, two cheap ones: too few for a promotion by rank
    assert [rung_of(t) for t in study.trials] == [3, 0, 0]
    planner_fits = Planner.fits
    monkeypatch.setattr(Planner, "fits", lambda self, rung, then_full=False, seconds=None: not then_full and
                        planner_fits(self, rung, seconds=seconds))  # no room for a cheap run and a full one after
    job.deadline = time.monotonic() + 3600
    run_trials(study, job, n_trials=3)
    later = study.trials[3:]
    assert [rung_of(t) for t in later] == [3, 3]  # each cheap run in full, the better one first; then none fits
    better = max(study.trials[1:3], key=lambda t: t.value)
    assert later[0].user_attrs["promoted_from"] == better.number and later[0].params == better.params


def test_a_study_cannot_be_resumed_under_another_fidelity_schedule(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(halving_job(tmp_path, halving=False), storage, resume=False, pruner="median")
    with pytest.raises(UserError, match=r"--fidelity \(it has full\)"):
        open_study(halving_job(tmp_path), storage, resume=True, pruner="none")


def test_a_study_halving_over_three_rungs_cannot_be_resumed_under_four(tmp_path):
    import optuna
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(halving_job(tmp_path), storage, resume=False, pruner="none")
    study.set_user_attr("fidelity", {"schedule": "halving", "rungs": 3, "eta": 3})  # as tune.py wrote it before
    assert optuna.load_study(study_name="t", storage=storage).user_attrs["fidelity"]["rungs"] == 3
    with pytest.raises(UserError, match=r"--fidelity \(it has halving, 3 rungs\)"):
        open_study(halving_job(tmp_path), storage, resume=True, pruner="none")


def test_without_fidelity_a_resumed_study_keeps_its_own_schedule_and_a_new_one_halves(tmp_path):
    assert stored_schedule(f"sqlite:///{tmp_path / 'none.db'}", "t") == ""  # no study yet: tune.py then halves
    for halving, schedule in ((False, "full"), (True, "halving")):
        storage = f"sqlite:///{tmp_path / f'{schedule}.db'}"
        open_study(halving_job(tmp_path, halving=halving), storage, resume=False, pruner="none")
        assert stored_schedule(storage, "t") == schedule


def test_the_full_schedule_keeps_every_trial_at_full_fidelity(tmp_path, monkeypatch):
    monkeypatch.setattr(trials, "train_logged", fake_training(lambda cfg: [
        {"accuracy": 0.5, "final_accuracy": 10 * cfg.lr}]))
    job = halving_job(tmp_path, halving=False)
    study = open_study(job, f"sqlite:///{tmp_path / 'study.db'}", resume=False, pruner="none")
    run_trials(study, job, n_trials=3)
    assert all(rung_of(t) == 3 for t in study.trials) and set(trials_frame(study)["fidelity"]) == {"full"}


def test_a_pruner_with_halving_is_refused_in_one_line(demo, tmp_path):
    proc = run_script("tune.py", "--data-dir", str(demo["data"]), "--folds-csv", str(demo["folds"]), "--runs-dir",
                      str(tmp_path / "runs"), "--trials", "1", "--pruner", "median")
    assert proc.returncode == 2 and "--fidelity halving already stops weak configs" in proc.stderr
    assert not (tmp_path / "runs" / "tune").exists() or not list((tmp_path / "runs" / "tune").rglob("trial*"))


def test_the_planner_sizes_a_rung_by_what_its_runs_took_when_that_is_more_than_its_share():
    planner = Planner(deadline=time.monotonic() + 100)
    planner.full_s = 90.0
    assert planner.fits(0) and planner.seconds(0) == pytest.approx(90.0 / 27)
    planner.observed_s[0] = 30.0  # fixed costs per run: a 1/27 run took a third of a full one
    assert planner.seconds(0) == 30.0 and planner.seconds(2) == pytest.approx(30.0)
    planner.observed_s[0] = 1.0  # cheaper than its share: the share stands
    assert planner.seconds(0) == pytest.approx(90.0 / 27)


def test_halving_trials_validate_their_last_epoch_alone_and_full_schedule_trials_every_epoch(tmp_path, monkeypatch):
    for halving in (True, False):
        modes = []

        def train_logged(cfg, folds, quiet, fold_source, on_epoch=None, validate_last_only=False):
            modes.append(validate_last_only)
            return [{"accuracy": 0.5, "final_accuracy": 0.5}]

        monkeypatch.setattr(trials, "train_logged", train_logged)
        job = halving_job(tmp_path / str(halving), halving=halving)
        study = open_study(job, f"sqlite:///{tmp_path / f'{halving}.db'}", resume=False,
                           pruner="none" if halving else "median")
        run_trials(study, job, n_trials=2)
        assert modes == [halving, halving]
