"""The Optuna study: storage, sampler, pruner, the wall-clock budget, and the objective, which trains a trial's folds
through the normal trainer (src.train.cv.train_folds) and scores the mean best monitored metric over them."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError  # Optuna's RDB storage runs on SQLAlchemy

from src.core.config import config_differences, config_from_dict, config_to_dict
from src.core.errors import UserError
from src.core.metrics import metric_mode
from src.data.folds import parse_fold_arg
from src.train.config import TrainConfig
from src.train.cv import load_labelled, train_folds
from src.tune.report import LOCATION_KEYS, best_trial, trial_line
from src.tune.space import SearchSpace, contains, sample, space_record, trial_config

# Trials of different lengths are compared at the same share of their schedule, not the same epoch: at epoch 3 a
# 30-epoch one-cycle run is still near its peak LR and trails a 10-epoch run that is nearly done. Each fold's
# schedule reports at PROGRESS_STEPS points (the first epoch to reach each tenth).
PROGRESS_STEPS = 10
WARMUP_STEPS = 3  # no pruning in the first 30 % of the first fold: early epochs rank configs poorly (warmup, EMA lag)
# A 15-minute budget runs about ten trials, so TPE starts modelling after five random ones (Optuna's default: 10).
STARTUP_TRIALS = 5
MAX_ERRORS_IN_A_ROW = 3  # the same mistake in every trial (a model that never builds) ends the study early
BUDGET = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
PRUNERS = ("median", "hyperband", "none")


@dataclass
class TuneJob:
    """What every trial of one tune.py call shares."""

    name: str
    base: TrainConfig  # defaults < --config < the space's fixed keys < flags
    space: SearchSpace  # the keys still searched (those not set by a flag)
    folds: list[int]  # tuned on: their validation rows choose the config
    tune_dir: Path  # <runs_dir>/tune/<name>
    quiet: bool = True
    deadline: float | None = None  # time.monotonic() at which the budget is spent; None = no budget
    val_rows: int = 0  # validation rows over the tuned folds (one image's worth of accuracy); 0 = unknown

    @property
    def trials_dir(self) -> Path:
        return self.tune_dir / "trials"


def parse_budget(text: str) -> float:
    """'90s', '15m', '1h', '1h30m' -> seconds."""
    match = BUDGET.fullmatch(text.strip())
    if not match or not any(match.groups()) or not any(int(g or 0) for g in match.groups()):
        raise UserError(f"--budget {text!r}: use a duration like 90s, 15m, 1h or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return 3600.0 * hours + 60.0 * minutes + seconds


def check_folds(base: TrainConfig, folds: str, holdout: str) -> tuple[list[int], list[int], int]:
    """Read the data and fold file once (their errors stop tune.py before any trial) and parse the tuned and
    held-out folds, which must not overlap; also how many validation rows the tuned folds hold together."""
    _, fold_of, _ = load_labelled(base)
    n_folds = int(fold_of.max()) + 1
    tuned = parse_fold_arg(folds, n_folds, "--folds")
    held = parse_fold_arg(holdout, n_folds, "--holdout-folds") if holdout else []
    shared = sorted(set(tuned) & set(held))
    if shared:
        raise UserError(f"--holdout-folds {holdout}: fold {shared[0]} is also tuned on (--folds {folds}); a held-out "
                        f"fold must never choose the config")
    return tuned, held, int(np.isin(fold_of, tuned).sum())


def check_name(name: str) -> str:
    """A study name is a folder name (runs/tune/<name>) and the tuned config's exp."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: use a plain folder name")
    return name


def default_storage(tune_dir: Path) -> str:
    tune_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{tune_dir / 'study.db'}"


def build_pruner(name: str, max_steps: int) -> optuna.pruners.BasePruner:
    """median: stop a trial whose best value so far is worse than the median of earlier trials at the same epoch;
    hyperband: successive halving over epochs in brackets."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=WARMUP_STEPS)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min(WARMUP_STEPS, max_steps), max_resource=max_steps)
    return optuna.pruners.NopPruner()


def max_steps(job: TuneJob) -> int:
    """Pruning steps in a trial: PROGRESS_STEPS per tuned fold."""
    return PROGRESS_STEPS * len(job.folds)


def progress_step(fold_position: int, epoch: int, epochs: int) -> tuple[int, bool]:
    """(step, is_first_epoch_at_it): the schedule share reached after `epoch` (0-based) of `epochs`, in tenths,
    counted on from the folds before; only the first epoch reaching a new tenth reports."""
    tenth = PROGRESS_STEPS * (epoch + 1) // epochs
    first = tenth > PROGRESS_STEPS * epoch // epochs
    return fold_position * PROGRESS_STEPS + tenth, first


def study_record(job: TuneJob) -> dict:
    """What makes trials comparable: stored with the study, checked when it is resumed or joined (as JSON)."""
    base = {k: v for k, v in config_to_dict(job.base).items() if k not in LOCATION_KEYS}
    return json.loads(json.dumps({"space": space_record(job.space), "base_config": base, "folds": job.folds}))


def open_study(job: TuneJob, storage: str, resume: bool, pruner: str) -> optuna.Study:
    """Create the study (or, with --resume, load or join it); a new study tries the base config first, then the
    space's start points."""
    direction = "maximize" if metric_mode(job.base.monitor) == "max" else "minimize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines would double run_trials' line
    try:
        study = optuna.create_study(storage=storage, study_name=job.name, direction=direction,
                                    pruner=build_pruner(pruner, max_steps(job)), load_if_exists=resume)
    except optuna.exceptions.DuplicatedStudyError:
        raise UserError(f"study {job.name!r} already exists in {storage}; pass --resume to continue it (or choose "
                        f"another --name)") from None
    except (ImportError, ValueError, SQLAlchemyError) as err:  # a bad URL, a missing driver, an unreachable database
        raise UserError(f"--storage {storage}: cannot open it ({str(err).splitlines()[0]})") from None
    # A seeded sampler restarts its random stream: offset by the trials done, or a resumed study repeats them.
    study.sampler = optuna.samplers.TPESampler(seed=job.base.seed + len(study.trials),
                                               n_startup_trials=STARTUP_TRIALS)
    check_record(study, study_record(job), storage)
    if not study.trials:
        first = {k: getattr(job.base, k) for k, p in job.space.params.items() if contains(p, getattr(job.base, k))}
        for point in ([first] if first else []) + [{**first, **p} for p in job.space.starts if p]:
            study.enqueue_trial(point, skip_if_exists=True)
    return study


def check_record(study: optuna.Study, record: dict, storage: str) -> None:
    """Store the record on a new study; a resumed one must have been made with the same space, config and folds."""
    saved = study.user_attrs
    if not saved:
        for key, value in record.items():
            study.set_user_attr(key, value)
        return
    changed = [key for key in ("space", "folds") if saved.get(key) != record[key]]
    changed += config_differences(saved.get("base_config", {}), record["base_config"], TrainConfig)
    if changed:
        raise UserError(f"study {study.study_name!r} in {storage} was made with another {', '.join(changed)}; resume "
                        f"it with the same space, config and --folds, or choose another --name")


def trained_config(trial: optuna.trial.FrozenTrial) -> TrainConfig:
    """The full TrainConfig a finished trial trained with."""
    return config_from_dict(trial.user_attrs["config"], TrainConfig, source=f"trial {trial.number}")


def train_logged(cfg: TrainConfig, folds: list[int], quiet: bool, fold_source: str, on_epoch=None) -> list[dict]:
    """Train `folds` of `cfg` with the trainer's lines in <runs_dir>/<exp>/train.log (the console gets one line
    per trial); each fold's metrics at its best epoch."""
    run = Path(cfg.runs_dir) / cfg.exp
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "train.log", "w") as log, contextlib.redirect_stdout(log):
        results = train_folds(cfg, ",".join(map(str, folds)), overwrite=True, quiet=quiet, fold_source=fold_source,
                              on_epoch=on_epoch)
    return results


def fold_mean(results: list[dict], metric: str) -> float:
    return float(np.mean([result[metric] for result in results]))


def run_trial(trial: optuna.Trial, job: TuneJob) -> float:
    """The objective: sample, train the tuned folds (pruned between epochs), then delete the checkpoints (config.json,
    log.csv and oof.csv stay)."""
    values = sample(trial, job.space.params)
    cfg = trial_config(job.base, {**values, "exp": f"trial{trial.number}", "runs_dir": str(job.trials_dir)})
    trial.set_user_attr("config", config_to_dict(cfg))
    try:
        results = train_logged(cfg, job.folds, job.quiet, "--folds", partial(report_epoch, trial, job, cfg))
        # What best_trial needs to break near-ties (src/tune/report.py).
        trial.set_user_attr("val_log_loss", fold_mean(results, "log_loss"))
        if cfg.monitor == "accuracy" and job.val_rows:
            trial.set_user_attr("one_image", 1 / job.val_rows)  # the mean over folds of per-fold accuracies
        return fold_mean(results, cfg.monitor)
    finally:
        for path in (job.trials_dir / cfg.exp).rglob("*.pt"):
            path.unlink()


def report_epoch(trial: optuna.Trial, job: TuneJob, cfg: TrainConfig, fold: int, row: dict) -> None:
    """train_folds' on_epoch hook: report the epoch's validation metric, then stop the trial (TrialPruned, which
    ends the run with its files intact) when the pruner says so or the budget is spent."""
    value = row[f"val_{cfg.monitor}"]
    step, first = progress_step(job.folds.index(fold), row["epoch"], cfg.epochs)
    if math.isfinite(value) and first:
        trial.report(value, step=step)
    where = f"fold {fold} epoch {row['epoch']}"
    if job.deadline is not None and time.monotonic() >= job.deadline:
        raise optuna.TrialPruned(f"the --budget deadline stopped it after {where}")
    if first and trial.should_prune():
        raise optuna.TrialPruned(f"the pruner stopped it after {where} ({cfg.monitor} {value:.4f})")


def run_trials(study: optuna.Study, job: TuneJob, n_trials: int | None) -> int:
    """Ask, train, tell until `n_trials` have run or the budget is spent; one line per finished trial. A trial
    whose sampled config is refused or diverges is pruned with its reason (TPE learns to avoid it; a failed trial
    would teach it nothing). Returns the number of trials run."""
    ran, errors_in_a_row = 0, 0
    while (n_trials is None or ran < n_trials) and (job.deadline is None or time.monotonic() < job.deadline):
        trial = study.ask()
        value, state, note = None, TrialState.COMPLETE, ""
        try:
            value = run_trial(trial, job)
        except optuna.TrialPruned as stop:
            state, note = TrialState.PRUNED, str(stop)
        except UserError as err:  # a combination TrainConfig or the model refuses, a diverged run
            state, note = TrialState.PRUNED, f"error: {err}"
        except BaseException:  # Ctrl-C or a bug: the trial is marked failed, the study stays usable
            study.tell(trial, state=TrialState.FAIL)
            raise
        if value is not None and not math.isfinite(value):
            value, state, note = None, TrialState.FAIL, f"{job.base.monitor} is {value} (undefined on these folds)"
        if note:
            trial.set_user_attr("note", note)
        finished = study.tell(trial, value, state=state)
        print(trial_line(finished, best_trial(study), job.base.monitor), flush=True)
        ran += 1
        errors_in_a_row = errors_in_a_row + 1 if note.startswith("error") else 0
        if errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            raise UserError(f"{errors_in_a_row} trials in a row stopped with an error; the last: {note}")
    return ran


def train_holdout(best: optuna.trial.FrozenTrial, job: TuneJob, folds: list[int]) -> float:
    """Train the best trial's config on folds the study never validated on: a score not chosen on its own rows."""
    cfg = dataclasses.replace(trained_config(best), exp=job.name, runs_dir=str(job.tune_dir / "holdout"))
    return fold_mean(train_logged(cfg, folds, job.quiet, "--holdout-folds"), cfg.monitor)
