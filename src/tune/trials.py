"""Running a study's trials: each trains the tuned folds through the normal trainer (src.train.cv.train_folds) and
scores the mean over them of the **final** monitored metric (the last epoch's weights): the best epoch of a 40-epoch
trial is the maximum of 40 noisy looks, of a 10-epoch trial of 10, so a best-epoch objective favours long trials.

How trials end: complete; pruned (the pruner compares running values step by step, or the config was refused or
diverged: TPE learns to avoid it); failed (the budget deadline, Ctrl-C / SIGTERM, a kill, or an error that is not
the config's: TPE ignores failed trials, and --resume trains the cut-short ones again).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from src.core.config import config_from_dict, config_to_dict
from src.core.errors import UserError
from src.train.config import TrainConfig
from src.train.cv import train_folds
from src.tune.fidelity import (
    RUNGS,
    Planner,
    cost_share,
    fidelity_values,
    full_run_s,
    is_full,
    promotions,
    rung_of,
    shortcut,
)
from src.tune.pruning import RunningMean, progress_step
from src.tune.report import best_trial, trial_line
from src.tune.space import sample, trial_config
from src.tune.study import TuneJob, owner

MAX_ERRORS_IN_A_ROW = 3  # the same mistake in every trial (a model that never builds) ends the study early


class BudgetStop(Exception):
    """The --budget deadline came during a run: the trial (or the held-out training) stops at its next epoch."""


def trained_config(trial: optuna.trial.FrozenTrial) -> TrainConfig:
    """The full TrainConfig a finished trial trained with."""
    return config_from_dict(trial.user_attrs["config"], TrainConfig, source=f"trial {trial.number}")


def train_logged(cfg: TrainConfig, folds: list[int], quiet: bool, fold_source: str, on_epoch=None,
                 validate_last_only: bool = False) -> list[dict]:
    """Train `folds` of `cfg` with the trainer's lines in <runs_dir>/<exp>/train.log (the console gets one line
    per trial); each fold's metrics, of best.pt and (final_...) of the final weights."""
    run = Path(cfg.runs_dir) / cfg.exp
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "train.log", "w") as log, contextlib.redirect_stdout(log):
        results = train_folds(cfg, ",".join(map(str, folds)), overwrite=True, quiet=quiet, fold_source=fold_source,
                              on_epoch=on_epoch, validate_last_only=validate_last_only)
    return results


def fold_mean(results: list[dict], metric: str) -> float:
    return float(np.mean([result[metric] for result in results]))


def run_trial(trial: optuna.Trial, job: TuneJob) -> float:
    """The objective: sample, train the tuned folds (at the trial's fidelity; pruned between epochs), score the mean
    final metric, then delete the checkpoints (config.json, log.csv and the OOF files stay)."""
    values = sample(trial, job.space.params, job.base)
    full = trial_config(job.base, values)
    if job.halving:
        rung = rung_of(trial)
        values = fidelity_values(values, job.base, rung)
        trial.set_user_attr("fidelity", cost_share(rung))
    cfg = trial_config(job.base, {**values, "exp": f"trial{trial.number}", "runs_dir": str(job.trials_dir)})
    trial.set_user_attr("config", config_to_dict(cfg))
    try:
        train_s, start = [], time.monotonic()
        # With halving nothing prunes between epochs and the final weights are the score: one validation pass.
        results = train_logged(cfg, job.folds, job.quiet, "--folds", partial(report_epoch, trial, job, cfg,
                                                                            RunningMean(), train_s), job.halving)
        share = (cfg.epochs * cfg.train_fraction) / (full.epochs * full.train_fraction)
        trial.set_user_attr("full_run_s", full_run_s(time.monotonic() - start, sum(train_s), share))
        if cfg.monitor == "accuracy" and job.val_rows:  # what best_trial needs to tell a tie (src/tune/report.py)
            trial.set_user_attr("one_image", 1 / job.val_rows)  # the mean over folds of per-fold accuracies
        trial.set_user_attr("best_epoch_value", fold_mean(results, cfg.monitor))  # optimistic; shown, never used
        return fold_mean(results, f"final_{cfg.monitor}")
    finally:
        for path in (job.trials_dir / cfg.exp).rglob("*.pt"):
            path.unlink()


def report_epoch(trial: optuna.Trial, job: TuneJob, cfg: TrainConfig, running: RunningMean, train_s: list[float],
                 fold: int, row: dict) -> None:
    """train_folds' on_epoch hook: note the epoch's training seconds, report the running mean of the objective at
    each tenth of a fold's schedule, then stop the trial when the pruner says so (TrialPruned) or the budget is
    spent (BudgetStop); either ends the run with its files intact."""
    train_s.append(row.get("train_seconds", 0.0))
    value = running.update(fold, row[f"val_{cfg.monitor}"])
    step, first = progress_step(job.folds.index(fold), row["epoch"], cfg.epochs)
    if math.isfinite(value) and first:
        trial.report(value, step=step)
    where = f"fold {fold} epoch {row['epoch']}"
    if job.deadline is not None and time.monotonic() >= job.deadline:
        raise BudgetStop(f"stopped by the --budget deadline after {where}")
    if first and trial.should_prune():
        raise optuna.TrialPruned(f"the pruner stopped it after {where} ({cfg.monitor} so far {value:.4f})")


def log_error(job: TuneJob, trial: optuna.Trial) -> None:
    """The traceback of a trial's unexpected error, appended to its train.log (the console gets one line)."""
    log = job.trials_dir / f"trial{trial.number}" / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write("\n" + traceback.format_exc())


def seconds_needed(study: optuna.Study, job: TuneJob, holdout_folds: int) -> float:
    """What the next trial needs, at least: the shortest complete trial so far, plus the held-out training (the
    best trial's time per tuned fold, per held-out fold) that follows the study within the same budget."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.duration]
    if not done:
        return 0.0
    best = best_trial(study)
    per_fold = (best.duration.total_seconds() if best and best.duration else 0.0) / len(job.folds)
    return min(t.duration.total_seconds() for t in done) + per_fold * holdout_folds


class Runner:
    """Ask, train and tell one trial at a time, one line each; stops the study after MAX_ERRORS_IN_A_ROW errors."""

    def __init__(self, study: optuna.Study, job: TuneJob):
        self.study, self.job, self.ran, self.errors_in_a_row = study, job, 0, 0

    def run(self) -> FrozenTrial:
        """One trial: the next queued one (which carries its rung), else a new sample (the cheapest rung). Another
        process of a joined study may have taken the queued trial this one meant: then it runs what it gets."""
        study, job = self.study, self.job
        trial = study.ask()
        if job.halving and "rung" not in trial.user_attrs:
            trial.set_user_attr("rung", 0)
        value, state, note = None, TrialState.COMPLETE, ""
        try:
            trial.set_user_attr("owner", owner())  # first: a kill from here on leaves a trial recover() can tell
            value = run_trial(trial, job)
        except optuna.TrialPruned as stop:
            state, note = TrialState.PRUNED, str(stop)
        except UserError as err:  # a combination TrainConfig or the model refuses, a diverged run
            state, note = TrialState.PRUNED, f"error: {err}"
        except BudgetStop as stop:
            state, note = TrialState.FAIL, str(stop)
        except Exception as err:  # not the config's doing (CUDA out of memory, a full disk): this trial fails
            log_error(job, trial)
            state, note = TrialState.FAIL, f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        except BaseException:  # Ctrl-C, SIGTERM: the trial is failed and queued again on --resume
            trial.set_user_attr("note", "interrupted (Ctrl-C or SIGTERM)")
            study.tell(trial, state=TrialState.FAIL)
            raise
        if value is not None and not math.isfinite(value):
            value, state, note = None, TrialState.FAIL, f"{job.base.monitor} is {value} (undefined on these folds)"
        if note:
            trial.set_user_attr("note", note)
        finished = study.tell(trial, value, state=state)
        print(trial_line(finished, best_trial(study), job.base.monitor), flush=True)
        self.ran += 1
        self.errors_in_a_row = self.errors_in_a_row + 1 if note.startswith("error") else 0
        if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            raise UserError(f"{self.errors_in_a_row} trials in a row stopped with an error; the last: {note}")
        return study.trials[finished.number]


def run_trials(study: optuna.Study, job: TuneJob, n_trials: int | None, holdout_folds: int = 0) -> int:
    """Train trials until `n_trials` have run or the budget cannot fit another; with fidelities by successive
    halving (run_halving), else each at full fidelity. Returns the number of trials run."""
    if job.halving:
        return run_halving(study, job, n_trials, holdout_folds)
    runner = Runner(study, job)
    while n_trials is None or runner.ran < n_trials:
        if job.deadline is not None and time.monotonic() + seconds_needed(study, job, holdout_folds) >= job.deadline:
            break  # no trial could finish (nor the held-out training after it) before the deadline
        runner.run()
    return runner.ran


def run_halving(study: optuna.Study, job: TuneJob, n_trials: int | None, holdout_folds: int = 0) -> int:
    """Asynchronous successive halving: the base config at full fidelity first (queued so by open_study), then
    whatever is due: a promotion (a trial in the best 1/ETA of its rung, highest rung first), else a new cheapest
    trial; under a budget each of them only while one full run still fits after it, and when nothing else fits,
    the best run of the highest rung reached goes straight to full fidelity (src/tune/fidelity.py's shortcut)."""
    runner = Runner(study, job)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    planner = Planner(job.deadline)
    top = RUNGS - 1

    def measure() -> FrozenTrial | None:
        """Size the planner from the runs so far; returns the shortcut's candidate (its estimate is the reserve)."""
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.duration]
        full = [t.duration.total_seconds() for t in done if is_full(t)]
        planner.full_s = max(full) if full else None
        planner.reserve_s = (planner.full_s or 0.0) * holdout_folds / len(job.folds)
        for rung in range(top):
            took = [t.duration.total_seconds() for t in done if rung_of(t) == rung]
            if took:
                planner.observed_s[rung] = float(np.mean(took))
        candidate = shortcut(study, maximize)
        planner.next_full_s = candidate.user_attrs.get("full_run_s") if candidate else None
        return candidate

    def seconds(rung: int, trial: FrozenTrial) -> float | None:
        """A promotion's own estimate in full (None: the rung's size)."""
        return trial.user_attrs.get("full_run_s") if rung == top else None

    def due() -> tuple[int, FrozenTrial] | None:
        for rung in range(top, 0, -1):
            ready = promotions(study, rung, maximize)
            if ready and planner.fits(rung, then_full=True, seconds=seconds(rung, ready[0])):
                return rung, ready[0]
        return None

    while n_trials is None or runner.ran < n_trials:
        jump = measure()  # until a full run completed, full_s is unknown and fits() checks the deadline alone
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:  # the base config, the space's start points, trials to run again: queued first
            if not planner.fits(rung_of(waiting[0]), then_full=True):
                break
        elif promoted := due():
            promote(study, *promoted)
        elif not planner.fits(0, then_full=True):  # no room for a new cheap run and a full one after it
            if jump is None or not planner.fits(top, seconds=seconds(top, jump)):
                break
            promote(study, top, jump)
        runner.run()
    return runner.ran


def promote(study: optuna.Study, rung: int, trial: FrozenTrial) -> None:
    """Queue `trial`'s values again at `rung`."""
    study.enqueue_trial(trial.params, user_attrs={"rung": rung, "promoted_from": trial.number})


def holdout_runs_dir(job: TuneJob, best: optuna.trial.FrozenTrial, tag: str) -> Path:
    """Where this process trains the best trial on the held-out folds: its own folder, so processes that joined
    one study never overwrite each other's runs."""
    return job.tune_dir / "holdout" / f"trial{best.number}-{tag.replace(':', '-')}"


def train_holdout(best: optuna.trial.FrozenTrial, job: TuneJob, folds: list[int]) -> float | None:
    """Train the best trial's config on folds the study never validated on (a score not chosen on its own rows):
    the mean final metric, or None when the budget deadline stopped it."""
    cfg = dataclasses.replace(trained_config(best), exp=job.name, runs_dir=str(holdout_runs_dir(job, best, owner())))

    def stop_at_deadline(fold: int, row: dict) -> None:
        if job.deadline is not None and time.monotonic() >= job.deadline:
            raise BudgetStop(f"the --budget deadline stopped the held-out training after fold {fold} epoch "
                             f"{row['epoch']}")

    try:
        return fold_mean(train_logged(cfg, folds, job.quiet, "--holdout-folds", stop_at_deadline),
                         f"final_{cfg.monitor}")
    except BudgetStop as stop:
        print(stop)
        return None
